local cjson = require "cjson"
local helpers = require "helpers"
local alerts = require "alerts"

local ABSENT = helpers.ABSENT

-- 2023-11-14T22:13:20Z and a minute later.
local STARTED = 1700000000
local RAISED = 1700000060


local merge = helpers.merge


-- Returns the alert the host passes for a memory alert at 85 % on host
-- worker-1; over replaces fields (ABSENT removes one).
local function alert(over)
  return merge({
    kind = "memory",
    severity = "critical",
    summary = "memory alert: working set at 85.0 % of limit",
    key = "memory",
    host = "worker-1",
    started_at = STARTED,
    raised_at = RAISED,
    facts = { level = "alert", limit_source = "cgroup_v2", used_bytes = 850,
      limit_bytes = 1000, ratio = 0.85 },
  }, over)
end


-- Loads policies/alerts.lua with each Lua pattern of edits replaced once,
-- in the same restricted environment as helpers.sandbox_load, the way an
-- operator edits a constant.
local function load_edited(edits)
  local file = assert(io.open("policies/alerts.lua", "r"))
  local text = file:read("a")
  file:close()
  for pattern, replacement in pairs(edits) do
    local count
    text, count = text:gsub(pattern, replacement)
    assert(count == 1, pattern)
  end
  local env = {}
  for _, name in ipairs(helpers.SANDBOX_GLOBALS) do
    env[name] = _G[name]
  end
  setmetatable(env, { __index = function(_, name)
    error("sandbox: read of global " .. tostring(name), 2)
  end })
  return assert(load(text, "=policies/alerts.lua", "t", env))()
end


-- Returns the generic body of alert(over), decoded.
local function generic(over)
  return cjson.decode(alerts.formats.generic(alert(over)).body)
end


-- Returns the JSON text with every string emptied.
local function outside_strings(text)
  local out, i = {}, 1
  while i <= #text do
    local c = text:sub(i, i)
    if c == '"' then
      i = i + 1
      while i <= #text and text:sub(i, i) ~= '"' do
        i = i + (text:sub(i, i) == "\\" and 2 or 1)
      end
      c = '""'
    end
    out[#out + 1] = c
    i = i + 1
  end
  return table.concat(out)
end


-- True when text has no bare NaN or Infinity token outside strings,
-- which a strict JSON parser would refuse.
local function no_bare_non_finite(text)
  local outside = outside_strings(text):lower()
  return not outside:find("nan") and not outside:find("inf")
end


describe("alerts", function()
  describe("settings", function()
    it("returns the shipped defaults", function()
      assert.same({
        format = "generic",
        connect_timeout_ms = 2000,
        total_timeout_ms = 3000,
        max_attempts = 4,
        backoff_base_ms = 1000,
        backoff_max_ms = 60000,
        queue_capacity = 64,
      }, alerts.settings())
    end)

    it("returns integers, which the host reads with lua_isinteger",
      function()
        for name, value in pairs(alerts.settings()) do
          if name ~= "format" then
            assert.equal("integer", math.type(value), name)
          end
        end
      end)

    it("keeps the total timeout under case 017's 3 s plus 1 s", function()
      local s = alerts.settings()
      assert.is_true(s.connect_timeout_ms <= s.total_timeout_ms)
      assert.is_true(s.total_timeout_ms <= 3000)
    end)

    it("raises when FORMAT names no format", function()
      local edited = load_edited({ ['local FORMAT = "generic"'] =
        'local FORMAT = "slak"' })
      assert.equal("alerts.settings: FORMAT must be generic, slack or "
        .. "alertmanager, got \"slak\"", helpers.error_of(edited.settings))
    end)

    it("loads and runs with only the sandbox globals", function()
      local sandboxed = helpers.sandbox_load("policies/alerts.lua")
      assert.same(alerts.settings(), sandboxed.settings())
      assert.equal(alerts.format(alert()).body,
        sandboxed.format(alert()).body)
    end)
  end)


  describe("route", function()
    -- name, alert over -> key, repeat_seconds, send
    local rows = {
      { "keys every memory alert by its kind, whatever its own key",
        { key = "memory:warning", severity = "warning" },
        "memory", 3600, true },
      { "keeps a critical alert quiet for 15 minutes",
        { key = "memory:alert" }, "memory", 900, true },
      { "gives a resolve the same key and no interval",
        { key = "memory:ok", severity = "resolved" }, "memory", 0, true },
      { "keeps the alert's own key for other kinds",
        { kind = "worker_failures", key = "workers:17" },
        "workers:17", 900, true },
      { "uses the kind when the alert has no key",
        { kind = "backlog", key = ABSENT, severity = "info" },
        "backlog", 3600, true },
      { "uses the kind when the key is empty",
        { kind = "backlog", key = "" }, "backlog", 900, true },
      { "keys a quarantine by the message it stops, quiet for 15 minutes",
        { kind = "quarantine", key = "id:poison" }, "id:poison", 900, true },
    }
    for _, row in ipairs(rows) do
      local name, over, key, repeat_seconds, send = table.unpack(row)
      it(name, function()
        assert.same({ key = key, repeat_seconds = repeat_seconds,
          send = send }, alerts.route(alert(over)))
      end)
    end

    it("does not send muted kinds", function()
      local edited = load_edited({ ["local MUTED_KINDS = {}"] =
        "local MUTED_KINDS = { memory = true }" })
      assert.is_false(edited.route(alert()).send)
    end)

    -- name, alert -> message
    local bugs = {
      { "raises when the alert is nil", nil,
        "alerts.route: alert must be a table, got nil" },
      { "raises when the kind is missing", alert({ kind = ABSENT }),
        "alerts.route: alert.kind must be a non-empty string, got nil" },
      { "raises when the severity is unknown",
        alert({ severity = "panic" }),
        "alerts.route: alert.severity must be warning, critical, info or "
          .. "resolved, got \"panic\"" },
    }
    for _, row in ipairs(bugs) do
      local name, input, message = table.unpack(row, 1, 3)
      it(name, function()
        assert.equal(message, helpers.error_of(alerts.route, input))
      end)
    end
  end)


  describe("the encoder", function()
    -- Case 009's inputs, as literal tables: name, value -> JSON, notes.
    local rows = {
      { "A: keys a sparse table by strings, without padding nulls",
        { kind = "worker_failures", failed = { [17] = "lua_oom" } },
        '{"failed":{"17":"lua_oom"},"kind":"worker_failures"}', {} },
      { "B: writes an infinite ratio as null with a note",
        { kind = "memory", usage_bytes = 1900000000, limit_bytes = 0,
          ratio = 1900000000 / 0 },
        '{"kind":"memory","limit_bytes":0,"ratio":null,'
          .. '"usage_bytes":1900000000}', { "non_finite:ratio" } },
      { "B: writes a NaN ratio as null with a note",
        { kind = "memory", usage_bytes = 0, limit_bytes = 0, ratio = 0 / 0 },
        '{"kind":"memory","limit_bytes":0,"ratio":null,"usage_bytes":0}',
        { "non_finite:ratio" } },
      { "C: writes an undeclared empty table as an object",
        { kind = "info", tags = {} }, '{"kind":"info","tags":{}}', {} },
      { "writes a dense table as an array", { 3, "x", true },
        '[3,"x",true]', {} },
      { "writes a table with a hole as an object", { [1] = "a", [3] = "c" },
        '{"1":"a","3":"c"}', {} },
      { "writes mixed keys as an object with sorted keys",
        { "a", b = 2 }, '{"1":"a","b":2}', {} },
      { "keeps the string key when a number key has the same text",
        { [1] = "number", ["1"] = "string" }, '{"1":"string"}',
        { "dropped_key:1" } },
      { "writes -inf in a nested list as null",
        { list = { 1, -1 / 0 } }, '{"list":[1,null]}',
        { "non_finite:list[2]" } },
      { "writes a function as null with a note", { f = print },
        '{"f":null}', { "unencodable:f" } },
      { "escapes quotes, backslashes and control characters",
        { s = 'a"b\\c\n\t\1\127' }, '{"s":"a\\"b\\\\c\\n\\t\\u0001\\u007f"}',
        {} },
      { "replaces bytes that are not UTF-8", { s = "ok\255\254é" },
        '{"s":"ok\u{FFFD}\u{FFFD}é"}', {} },
      { "writes numbers JSON can read back exactly",
        { 0.1, 1e300, 3.0, 2 ^ 53, math.maxinteger, -0.5 },
        '[0.1,1e+300,3,9007199254740992,9223372036854775807,-0.5]', {} },
    }
    for _, row in ipairs(rows) do
      local name, value, json, notes = table.unpack(row)
      it(name, function()
        local text, got = alerts.encode_json(value)
        assert.equal(json, text)
        assert.same(notes, got)
      end)
    end

    it("cuts a table that contains itself, with a note", function()
      local t = {}
      t.self = t
      local text, notes = alerts.encode_json(t)
      assert.is_truthy(text:find('{"self":null}', 1, true))
      assert.equal(1, #notes)
      assert.is_truthy(notes[1]:find("^too_deep:self"))
    end)

    it("never raises and writes JSON a parser reads back", function()
      local odd = { 0 / 0, 1 / 0, -1 / 0, {}, { [17] = "x" }, "\255",
        { [true] = 1, [1.5] = 2 }, print }
      for _, value in ipairs(odd) do
        local ok, text = pcall(alerts.encode_json, { v = value })
        assert.is_true(ok)
        assert.is_true(no_bare_non_finite(text))
        assert.is_table(cjson.decode(text))
      end
    end)
  end)


  describe("the generic format", function()
    local BASE_BODY = '{"facts":{"level":"alert","limit_bytes":1000,'
      .. '"limit_source":"cgroup_v2","ratio":0.85,"used_bytes":850},'
      .. '"host":"worker-1","key":"memory","kind":"memory","notes":[],'
      .. '"raised_at":"2023-11-14T22:14:20Z","service":"moonrabbit",'
      .. '"severity":"critical","started_at":"2023-11-14T22:13:20Z",'
      .. '"status":"firing","summary":"memory alert: working set at 85.0 '
      .. '% of limit","tags":[],"used_ratio":0.85,"version":1}'

    it("writes every field of the alert", function()
      assert.same({
        content_type = "application/json",
        headers = { ["X-Moonrabbit-Alert-Key"] = "memory" },
        body = BASE_BODY,
      }, alerts.formats.generic(alert()))
    end)

    it("is the format the shipped policy sends", function()
      assert.equal(BASE_BODY, alerts.format(alert()).body)
    end)

    -- Case 009 through the format, each input as the host would pass it:
    -- the case's extra fields are facts. name, alert over -> body.
    local common = ',"host":"worker-1","key":"k","kind":"%s",'
    local tail = '"raised_at":"2023-11-14T22:14:20Z","service":"moonrabbit",'
      .. '"severity":"warning","started_at":"2023-11-14T22:13:20Z",'
      .. '"status":"firing","summary":"s","tags":%s,"version":1}'
    local rows = {
      { "A: delivers failed workers keyed by string",
        { kind = "worker_failures", facts = { failed = { [17] = "lua_oom" } } },
        '{"facts":{"failed":{"17":"lua_oom"}}'
          .. common:format("worker_failures") .. '"notes":[],'
          .. tail:format("[]") },
      { "B: omits the ratio of a zero limit and notes limit_unknown",
        { facts = { usage_bytes = 1900000000, limit_bytes = 0 } },
        '{"facts":{"limit_bytes":0,"usage_bytes":1900000000}'
          .. common:format("memory") .. '"notes":["limit_unknown"],'
          .. tail:format("[]") },
      { "B: writes a NaN fact as null, noting both",
        { facts = { usage_bytes = 0, limit_bytes = 0, ratio = 0 / 0 } },
        '{"facts":{"limit_bytes":0,"ratio":null,"usage_bytes":0}'
          .. common:format("memory")
          .. '"notes":["limit_unknown","non_finite:facts.ratio"],'
          .. tail:format("[]") },
      { "C: sends empty tags as []",
        { kind = "info", facts = {}, tags = {} },
        '{"facts":{}' .. common:format("info") .. '"notes":[],'
          .. tail:format("[]") },
      { "C: sends tags in order, without gaps",
        { kind = "info", facts = {}, tags = { [1] = "a", [3] = "b" } },
        '{"facts":{}' .. common:format("info") .. '"notes":[],'
          .. tail:format('["a","b"]') },
    }
    for _, row in ipairs(rows) do
      local name, over, body = table.unpack(row)
      it(name, function()
        local input = alert(merge({ severity = "warning", summary = "s",
          key = "k" }, over))
        local text = alerts.format(input).body
        assert.equal(body, text)
        assert.is_true(no_bare_non_finite(text))
      end)
    end

    it("writes a quarantine with the message and its crash count",
      function()
        local body = generic({ kind = "quarantine", key = "id:poison",
          summary = "quarantined: in flight at 3 crashes of the worker",
          facts = { message_id = "poison", crashes = 3,
            quarantine_after = 3 } })
        assert.same({ "quarantine", "critical", "id:poison", "firing",
          "quarantined: in flight at 3 crashes of the worker" },
          { body.kind, body.severity, body.key, body.status, body.summary })
        assert.same({ message_id = "poison", crashes = 3,
          quarantine_after = 3 }, body.facts)
        assert.same({}, body.notes)
        assert.is_nil(body.used_ratio)
      end)

    it("says what a resolve resolves", function()
      local body = generic({ severity = "resolved",
        previous_severity = "critical" })
      assert.equal("resolved", body.status)
      assert.equal("resolved", body.severity)
      assert.equal("critical", body.previous_severity)
      assert.equal("2023-11-14T22:13:20Z", body.started_at)
    end)

    it("carries the operator's tags", function()
      local edited = load_edited({ ["local TAGS = {}"] =
        'local TAGS = { "prod", "eu" }' })
      local body = cjson.decode(edited.format(alert({ tags = { "x" } })).body)
      assert.same({ "prod", "eu", "x" }, body.tags)
    end)

    -- unix seconds -> RFC 3339, checked against Python's datetime.
    local times = {
      { 0, "1970-01-01T00:00:00Z" },
      { -1, "1969-12-31T23:59:59Z" },
      { 951782400, "2000-02-29T00:00:00Z" },
      { 1709251199, "2024-02-29T23:59:59Z" },
      { 4102444800, "2100-01-01T00:00:00Z" },
    }
    for _, row in ipairs(times) do
      local seconds, text = table.unpack(row)
      it("writes " .. seconds .. " as " .. text, function()
        assert.equal(text, generic({ started_at = seconds }).started_at)
      end)
    end

    it("writes Go's zero time when a timestamp is missing", function()
      assert.equal("0001-01-01T00:00:00Z",
        generic({ started_at = ABSENT }).started_at)
    end)

    it("keeps CR and LF out of the key header", function()
      local request = alerts.formats.generic(alert({ kind = "other",
        key = "a\r\nX-Evil: 1" }))
      assert.equal("a  X-Evil: 1",
        request.headers["X-Moonrabbit-Alert-Key"])
    end)
  end)


  describe("the slack format", function()
    it("is sent when FORMAT says slack", function()
      local edited = load_edited({ ['local FORMAT = "generic"'] =
        'local FORMAT = "slack"' })
      assert.equal(alerts.formats.slack(alert()).body,
        edited.format(alert()).body)
    end)

    it("has no extra headers", function()
      local request = alerts.formats.slack(alert())
      assert.equal("application/json", request.content_type)
      assert.same({}, request.headers)
    end)

    it("builds the message field by field", function()
      local body = cjson.decode(alerts.formats.slack(alert()).body)
      assert.equal("[CRITICAL] memory on worker-1: memory alert: working "
        .. "set at 85.0 % of limit", body.text)
      assert.equal(4, #body.blocks)

      local header = body.blocks[1]
      assert.equal("header", header.type)
      assert.same({ type = "plain_text",
        text = "[CRITICAL] memory on worker-1" }, header.text)

      local summary = body.blocks[2]
      assert.equal("section", summary.type)
      assert.same({ type = "mrkdwn",
        text = "memory alert: working set at 85.0 % of limit" },
        summary.text)

      local facts = body.blocks[3]
      assert.equal("section", facts.type)
      assert.same({
        { type = "mrkdwn", text = "*used*\n85.0 % of limit" },
        { type = "mrkdwn", text = "*level*\nalert" },
        { type = "mrkdwn", text = "*limit_bytes*\n1000" },
        { type = "mrkdwn", text = "*limit_source*\ncgroup_v2" },
        { type = "mrkdwn", text = "*ratio*\n0.85" },
        { type = "mrkdwn", text = "*used_bytes*\n850" },
      }, facts.fields)

      local context = body.blocks[4]
      assert.equal("context", context.type)
      assert.same({ { type = "mrkdwn",
        text = "key memory · since 2023-11-14T22:13:20Z" } },
        context.elements)
    end)

    it("says RESOLVED and what it was", function()
      local body = cjson.decode(alerts.formats.slack(alert({
        severity = "resolved", previous_severity = "critical" })).body)
      assert.equal("[RESOLVED] memory on worker-1",
        body.blocks[1].text.text)
      assert.equal("key memory · since 2023-11-14T22:13:20Z · was critical",
        body.blocks[4].elements[1].text)
    end)

    it("escapes &, < and > where Slack reads markup", function()
      local body = cjson.decode(alerts.formats.slack(alert({
        summary = "a < b & c > d", facts = { ["x<y"] = "<!channel>" } }))
        .body)
      assert.equal("a &lt; b &amp; c &gt; d", body.blocks[2].text.text)
      assert.equal("*x&lt;y*\n&lt;!channel&gt;",
        body.blocks[3].fields[1].text)
      assert.is_truthy(body.text:find("a &lt; b &amp; c &gt; d", 1, true))
    end)

    it("puts at most ten fields in a section", function()
      local facts = {}
      for i = 1, 23 do
        facts[string.format("f%02d", i)] = i
      end
      local body = cjson.decode(alerts.formats.slack(alert({
        facts = facts })).body)
      assert.equal(10, #body.blocks[3].fields)
      assert.equal(10, #body.blocks[4].fields)
      assert.equal(3, #body.blocks[5].fields)
      assert.equal("*f01*\n1", body.blocks[3].fields[1].text)
      assert.equal("context", body.blocks[6].type)
    end)

    it("cuts the header to Slack's 150 characters", function()
      local body = cjson.decode(alerts.formats.slack(alert({
        kind = string.rep("é", 200) })).body)
      local text = body.blocks[1].text.text
      assert.equal(150, utf8.len(text))
      assert.equal("…", text:sub(-3))
    end)

    it("shows case 009's values without breaking the JSON", function()
      local text = alerts.formats.slack(alert({ facts = {
        failed = { [17] = "lua_oom" }, ratio = 0 / 0,
        usage_bytes = 1900000000, limit_bytes = 0 } })).body
      local body = cjson.decode(text)
      assert.is_true(no_bare_non_finite(text))
      assert.same({
        { type = "mrkdwn", text = '*failed*\n{"17":"lua_oom"}' },
        { type = "mrkdwn", text = "*limit_bytes*\n0" },
        { type = "mrkdwn", text = "*ratio*\nnull" },
        { type = "mrkdwn", text = "*usage_bytes*\n1900000000" },
      }, body.blocks[3].fields)
      assert.equal("key memory · since 2023-11-14T22:13:20Z · notes: "
        .. "limit_unknown, non_finite:facts.ratio",
        body.blocks[4].elements[1].text)
    end)
  end)


  describe("the alertmanager format", function()
    -- FNV-1a over the sorted labels as Prometheus computes it, checked
    -- with an independent Python version.
    local FINGERPRINT = "5bc5cb9a6c04cb30"
    local LABELS = {
      alertname = "memory",
      severity = "critical",
      instance = "worker-1",
      service = "moonrabbit",
      limit_source = "cgroup_v2",
    }
    local ANNOTATIONS = {
      summary = "memory alert: working set at 85.0 % of limit",
      key = "memory",
      used_ratio = "0.8500",
      level = "alert",
      limit_bytes = "1000",
      limit_source = "cgroup_v2",
      ratio = "0.85",
      used_bytes = "850",
    }

    it("is sent when FORMAT says alertmanager", function()
      local edited = load_edited({ ['local FORMAT = "generic"'] =
        'local FORMAT = "alertmanager"' })
      assert.equal(alerts.formats.alertmanager(alert()).body,
        edited.format(alert()).body)
    end)

    it("builds the webhook payload field by field", function()
      local request = alerts.formats.alertmanager(alert())
      assert.equal("application/json", request.content_type)
      local body = cjson.decode(request.body)
      assert.equal("4", body.version)
      assert.equal('{}:{alertname="memory"}', body.groupKey)
      assert.equal(0, body.truncatedAlerts)
      assert.equal("firing", body.status)
      assert.equal("moonrabbit", body.receiver)
      assert.same({ alertname = "memory" }, body.groupLabels)
      assert.same(LABELS, body.commonLabels)
      assert.same(ANNOTATIONS, body.commonAnnotations)
      assert.equal("", body.externalURL)
      assert.equal(1, #body.alerts)
    end)

    it("builds its one alert field by field", function()
      local one = cjson.decode(alerts.formats.alertmanager(alert()).body)
        .alerts[1]
      assert.equal("firing", one.status)
      assert.same(LABELS, one.labels)
      assert.same(ANNOTATIONS, one.annotations)
      assert.equal("2023-11-14T22:13:20Z", one.startsAt)
      assert.equal("0001-01-01T00:00:00Z", one.endsAt)
      assert.equal("", one.generatorURL)
      assert.equal(FINGERPRINT, one.fingerprint)
    end)

    it("resolves with the labels and fingerprint of what it ends",
      function()
        local body = cjson.decode(alerts.formats.alertmanager(alert({
          severity = "resolved", previous_severity = "critical" })).body)
        local one = body.alerts[1]
        assert.equal("resolved", body.status)
        assert.equal("resolved", one.status)
        assert.same(LABELS, one.labels)
        assert.equal(FINGERPRINT, one.fingerprint)
        assert.equal("2023-11-14T22:13:20Z", one.startsAt)
        assert.equal("2023-11-14T22:14:20Z", one.endsAt)
      end)

    it("gives another severity another fingerprint", function()
      local one = cjson.decode(alerts.formats.alertmanager(alert({
        severity = "warning" })).body).alerts[1]
      assert.equal("warning", one.labels.severity)
      assert.equal("41b167ffd8000453", one.fingerprint)
    end)

    it("makes fact names valid annotation names", function()
      local one = cjson.decode(alerts.formats.alertmanager(alert({
        facts = { ["psi some.avg10"] = 1.5, ["9lives"] = "x" } })).body)
        .alerts[1]
      assert.equal("1.5", one.annotations.psi_some_avg10)
      assert.equal("x", one.annotations._9lives)
    end)

    it("shows case 009's values as strings, noting what changed",
      function()
        local text = alerts.formats.alertmanager(alert({ facts = {
          failed = { [17] = "lua_oom" }, ratio = 1 / 0,
          usage_bytes = 1900000000, limit_bytes = 0 } })).body
        local annotations = cjson.decode(text).alerts[1].annotations
        assert.is_true(no_bare_non_finite(text))
        assert.equal('{"17":"lua_oom"}', annotations.failed)
        assert.equal("null", annotations.ratio)
        assert.is_nil(annotations.used_ratio)
        assert.equal("limit_unknown, non_finite:facts.ratio",
          annotations.notes)
      end)
  end)


  describe("results", function()
    it("are new tables on every call", function()
      local first = alerts.format(alert())
      local second = alerts.format(alert())
      assert.are_not.equal(first, second)
      assert.are_not.equal(first.headers, second.headers)
      assert.are_not.equal(alerts.route(alert()), alerts.route(alert()))
    end)

    it("leave the alert untouched", function()
      local input = alert({ facts = { failed = { [17] = "x" },
        ratio = 0.5 } })
      for _, fn in pairs(alerts.formats) do
        fn(input)
      end
      alerts.route(input)
      assert.same(alert({ facts = { failed = { [17] = "x" },
        ratio = 0.5 } }), input)
      assert.is_nil(getmetatable(input.facts))
    end)
  end)
end)
