-- Alert delivery policy for the worker host.
--
-- The host raises an alert (kinds memory, backlog, policy_reload and
-- quarantine) and hands it to its alerts thread, which asks this module
-- three things:
--
--   settings()      how to send: the payload format, the timeouts, how
--                   often to retry and how many alerts may wait. Read and
--                   checked at start-up and at each reload (SIGHUP); a
--                   reload that fails the check keeps the module in force.
--   route(alert)    which condition the alert is about (the de-duplication
--                   key), how long the same alert stays quiet after it was
--                   sent, and whether to send it at all.
--   format(alert)   the HTTP request: content type, extra headers, body.
--
-- The alert the host passes is { kind, severity, summary, key?, facts,
-- started_at, raised_at, host, previous_severity? }: severity is warning,
-- critical, info or resolved; facts is a flat table of strings and numbers;
-- raised_at is when this alert was raised, in unix seconds. route() sees
-- the caller's key and started_at = raised_at. The host then de-duplicates
-- by route's key and calls format() only for alerts that go out, with key
-- set to route's key, started_at to when that condition began (so repeats
-- and the resolve carry the first alert's start) and, for a resolve,
-- previous_severity to the severity it ends.
--
-- Bodies are JSON built here by a small encoder, because the sandbox has
-- no cjson and because cjson refuses exactly the values an alert about a
-- failure tends to carry (case 009): NaN and infinite numbers become null
-- with a note, tables keyed by sparse numbers become objects with string
-- keys, and fields that are lists are always arrays, even when empty. The
-- encoder never raises; if format() raises anyway, the host logs
-- alert_encode_failed and sends a minimal body it builds itself.
--
-- The module keeps nothing between calls and does no I/O.


-- Which payload the receivers get: "generic" (this host's own JSON),
-- "slack" (Slack incoming webhook) or "alertmanager" (the JSON Prometheus
-- Alertmanager posts to its webhook receivers, for tools that take it).
-- Every URL in ALERT_WEBHOOK_URL gets the same format.
local FORMAT = "generic"

-- A receiver on the same network accepts a TCP connection in
-- milliseconds; 2 s also covers a slow DNS answer (the lookup counts
-- toward this timeout).
local CONNECT_TIMEOUT_MS = 2000

-- One attempt, lookup to last response byte. An alert body is a few KiB,
-- so a receiver that needs more than 3 s is unwell, and waiting longer only
-- delays the alerts queued behind this one.
local TOTAL_TIMEOUT_MS = 3000

-- A receiver answering 429 or 5xx, or not answering, is tried this many
-- times in all; other answers (400, 404, ...) are not retried. Waits
-- double from the base (1, 2, 4 s), never exceed the maximum, and the
-- host takes between half and all of each at random, so replicas that
-- failed together do not retry together. A Retry-After is waited out in
-- full; one longer than the maximum ends the retries rather than being
-- cut short, since the receiver asked for that wait.
local MAX_ATTEMPTS = 4
local BACKOFF_BASE_MS = 1000
local BACKOFF_MAX_MS = 60000

-- Alerts waiting for the sender. When it is full the oldest is dropped and
-- counted: during an outage the newest state matters most, and memory
-- must not grow with alerts nobody receives.
local QUEUE_CAPACITY = 64

-- How long the same alert (same key, same severity) stays quiet after it
-- was sent. A change of severity is news and is always sent; a resolve is
-- sent once, when its key is active.
local REPEAT_SECONDS = {
  critical = 15 * 60,
  warning = 60 * 60,
  info = 60 * 60,
  resolved = 0,
}

-- Kinds whose alerts all describe one condition, whatever their own key
-- says. memory.lua keys its alerts by level (memory:warning,
-- memory:alert), but it is one process's memory: an escalation replaces
-- the warning, and the resolve closes whichever level was active.
local ONE_CONDITION_KINDS = { memory = true }

-- Kinds that are logged but never sent, e.g. { memory = true } while a
-- noisy host is investigated.
local MUTED_KINDS = {}

-- Tags every generic payload carries, e.g. { "prod", "eu-west" }.
local TAGS = {}

-- Facts copied into Alertmanager labels. Labels identify an alert, so
-- only facts that stay the same while the condition lasts belong here.
local LABEL_FACTS = { "limit_source" }

-- The service name in payloads and the receiver name Alertmanager's
-- payload carries.
local SERVICE = "moonrabbit"

-- Nesting deeper than this is cut (with a note) rather than followed, so a
-- table that contains itself cannot hang the encoder.
local MAX_DEPTH = 16

-- Slack refuses a header over 150 characters, section text over 3,000, a
-- field over 2,000 and more than 10 fields in one section.
local SLACK_HEADER_CHARS = 150
local SLACK_TEXT_CHARS = 3000
local SLACK_FIELD_CHARS = 2000
local SLACK_FIELDS_PER_SECTION = 10
local SLACK_MAX_FACTS = 40


local SEVERITIES = { warning = true, critical = true, info = true,
  resolved = true }

-- Marks a cleaned table as a JSON array or object, and stands for null.
local LIST = {}
local OBJECT = {}
local NULL = setmetatable({}, { __tostring = function() return "null" end })

-- Go's zero time, which Alertmanager sends as endsAt while an alert fires.
local ZERO_TIME = "0001-01-01T00:00:00Z"


-- Shows a value in an error so that the string "8" and the number 8 differ.
local function show(value)
  if type(value) == "string" then
    return string.format("%q", value)
  end
  return tostring(value)
end


-- Raises for an alert the host should never build.
local function check_alert(alert, fn)
  if type(alert) ~= "table" then
    error("alerts." .. fn .. ": alert must be a table, got " .. type(alert),
      3)
  end
  if type(alert.kind) ~= "string" or alert.kind == "" then
    error("alerts." .. fn .. ": alert.kind must be a non-empty string, got "
      .. show(alert.kind), 3)
  end
  if not SEVERITIES[alert.severity] then
    error("alerts." .. fn .. ": alert.severity must be warning, critical, "
      .. "info or resolved, got " .. show(alert.severity), 3)
  end
end


---------------------------------------------------------------------------
-- JSON
---------------------------------------------------------------------------

-- Returns s with every byte sequence that is not UTF-8 replaced by U+FFFD,
-- because a strict parser refuses the whole body over one bad byte.
local function valid_utf8(s)
  if utf8.len(s) then
    return s
  end
  local parts, at = {}, 1
  while at <= #s do
    local ok, bad = utf8.len(s, at)
    if ok then
      parts[#parts + 1] = s:sub(at)
      break
    end
    parts[#parts + 1] = s:sub(at, bad - 1) .. "\u{FFFD}"
    at = bad + 1
  end
  return table.concat(parts)
end


local ESCAPES = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b",
  ["\f"] = "\\f", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }

local function escape_char(c)
  return ESCAPES[c] or string.format("\\u%04x", c:byte())
end


local function string_json(s)
  return '"' .. valid_utf8(s):gsub('[%c"\\]', escape_char) .. '"'
end


-- Returns the shortest of %.14g and %.17g that reads back as v; both
-- print finite numbers in a form JSON accepts.
local function number_json(v)
  if math.type(v) == "integer" then
    return string.format("%d", v)
  end
  local short = string.format("%.14g", v)
  if tonumber(short) == v then
    return short
  end
  return string.format("%.17g", v)
end


local function is_finite(v)
  return v == v and v ~= math.huge and v ~= -math.huge
end


-- Returns the JSON object key for a Lua key, or nil for keys that have
-- none (tables, functions).
local function key_text(key)
  local kind = type(key)
  if kind == "string" then
    return key
  elseif kind == "number" then
    return number_json(key)
  elseif kind == "boolean" then
    return tostring(key)
  end
  return nil
end


-- Returns the largest key when the keys of t are exactly 1..n (n >= 1),
-- or nil.
local function sequence_length(t)
  local count, max = 0, 0
  for key in next, t do
    if math.type(key) ~= "integer" or key < 1 then
      return nil
    end
    count = count + 1
    max = math.max(max, key)
  end
  if count > 0 and count == max then
    return max
  end
  return nil
end


local clean


-- Cleans the values at t[1..n] into a LIST table.
local function clean_list(t, n, path, notes, depth)
  local out = setmetatable({}, LIST)
  for i = 1, n do
    out[i] = clean(t[i], path .. "[" .. i .. "]", notes, depth + 1)
  end
  return out
end


-- Cleans t into an OBJECT table with string keys. Numeric keys become
-- their decimal text ({[17] = x} is {"17": x}); a key whose text another
-- key already has, or that has no text, is left out with a note. Keys are
-- taken in sorted text order, strings before numbers, so the result does
-- not depend on table iteration order.
local function clean_object(t, path, notes, depth)
  local keys = {}
  for key in next, t do
    keys[#keys + 1] = key
  end
  table.sort(keys, function(a, b)
    local ta, tb = type(a) == "string", type(b) == "string"
    if ta ~= tb then
      return ta
    end
    return tostring(a) < tostring(b)
  end)

  local out = setmetatable({}, OBJECT)
  for _, key in ipairs(keys) do
    local text = key_text(key)
    local where = path == "" and tostring(text) or path .. "." .. tostring(text)
    if text == nil or out[text] ~= nil then
      notes[#notes + 1] = "dropped_key:" .. where
    else
      out[text] = clean(t[key], where, notes, depth + 1)
    end
  end
  return out
end


-- Takes any Lua value; returns a tree the encoder can always write: NULL
-- for nil, NaN, infinities and values JSON has no form for, LIST and
-- OBJECT tables for tables. Appends a note to notes for each change that
-- loses information, naming the path.
clean = function(value, path, notes, depth)
  local kind = type(value)
  if kind == "string" or kind == "boolean" then
    return value
  elseif kind == "number" then
    if is_finite(value) then
      return value
    end
    notes[#notes + 1] = "non_finite:" .. path
    return NULL
  elseif value == nil or value == NULL then
    return NULL
  elseif kind ~= "table" then
    notes[#notes + 1] = "unencodable:" .. path
    return NULL
  elseif depth > MAX_DEPTH then
    notes[#notes + 1] = "too_deep:" .. path
    return NULL
  end

  local mt = getmetatable(value)
  if mt == LIST then
    return clean_list(value, #value, path, notes, depth)
  elseif mt == OBJECT then
    return clean_object(value, path, notes, depth)
  end
  local n = sequence_length(value)
  if n then
    return clean_list(value, n, path, notes, depth)
  end
  return clean_object(value, path, notes, depth)
end


local write


local function write_list(t, parts)
  parts[#parts + 1] = "["
  for i = 1, #t do
    if i > 1 then
      parts[#parts + 1] = ","
    end
    write(t[i], parts)
  end
  parts[#parts + 1] = "]"
end


local function write_object(t, parts)
  local keys = {}
  for key in next, t do
    keys[#keys + 1] = key
  end
  table.sort(keys)
  parts[#parts + 1] = "{"
  for i, key in ipairs(keys) do
    if i > 1 then
      parts[#parts + 1] = ","
    end
    parts[#parts + 1] = string_json(key)
    parts[#parts + 1] = ":"
    write(t[key], parts)
  end
  parts[#parts + 1] = "}"
end


-- Appends the JSON text of a cleaned value to parts.
write = function(value, parts)
  local kind = type(value)
  if value == NULL then
    parts[#parts + 1] = "null"
  elseif kind == "string" then
    parts[#parts + 1] = string_json(value)
  elseif kind == "number" then
    parts[#parts + 1] = number_json(value)
  elseif kind == "boolean" then
    parts[#parts + 1] = tostring(value)
  elseif getmetatable(value) == LIST then
    write_list(value, parts)
  else
    write_object(value, parts)
  end
end


-- Takes any Lua value; returns its JSON text (object keys sorted) and the
-- list of notes on what had to change. Never raises.
local function encode_json(value)
  local notes = {}
  local parts = {}
  write(clean(value, "", notes, 0), parts)
  return table.concat(parts), notes
end


-- Returns a copy of the values of t (a table; anything else is empty)
-- that sit at positive
-- whole-number keys, in key order and without gaps, marked as a list so
-- that it is [] when empty.
local function list(t)
  if type(t) ~= "table" then
    t = {}
  end
  local keys = {}
  for key in next, t do
    if math.type(key) == "integer" and key >= 1 then
      keys[#keys + 1] = key
    end
  end
  table.sort(keys)
  local out = setmetatable({}, LIST)
  for i, key in ipairs(keys) do
    out[i] = t[key]
  end
  return out
end


-- Appends the values of each list argument to a new LIST table.
local function concat_lists(...)
  local out = setmetatable({}, LIST)
  for i = 1, select("#", ...) do
    for _, value in ipairs(list((select(i, ...)))) do
      out[#out + 1] = value
    end
  end
  return out
end


---------------------------------------------------------------------------
-- Shared pieces of the formats
---------------------------------------------------------------------------

-- Takes unix seconds; returns RFC 3339 UTC text. Pure arithmetic, since
-- os.date is outside the sandbox: days since the epoch become a civil date
-- counting in 400-year eras whose years start on 1 March, so the leap day
-- is the last day of its year.
local function rfc3339(seconds)
  local t = math.floor(seconds)
  local days, secs = t // 86400, t % 86400
  local z = days + 719468
  local era = z // 146097
  local doe = z - era * 146097
  local yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
  local doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
  local mp = (5 * doy + 2) // 153
  local day = doy - (153 * mp + 2) // 5 + 1
  local month = mp < 10 and mp + 3 or mp - 9
  local year = yoe + era * 400 + (month <= 2 and 1 or 0)
  return string.format("%04d-%02d-%02dT%02d:%02d:%02dZ", year, month, day,
    secs // 3600, secs % 3600 // 60, secs % 60)
end


-- Returns the time for a timestamp field, or Go's zero time when the host
-- left it out or it is not a finite number.
local function time_text(seconds)
  if type(seconds) == "number" and is_finite(seconds) then
    return rfc3339(seconds)
  end
  return ZERO_TIME
end


-- Takes the facts; returns the share of the limit in use, or nil and the
-- note "limit_unknown" when there is no positive, finite limit to divide
-- by (a limit of 0 would give inf, or NaN with nothing used: case 009 B).
local function used_ratio(facts)
  local used = facts.used_bytes
  if used == nil then
    used = facts.usage_bytes
  end
  local limit = facts.limit_bytes
  if type(used) ~= "number" or not is_finite(used) then
    return nil
  end
  if type(limit) ~= "number" or not is_finite(limit) or limit <= 0 then
    return nil, "limit_unknown"
  end
  return used / limit
end


local function facts_of(alert)
  if type(alert.facts) == "table" then
    return alert.facts
  end
  return {}
end


-- Returns the alert's key, or its kind when it has none.
local function key_of(alert)
  if type(alert.key) == "string" and alert.key ~= "" then
    return alert.key
  end
  return alert.kind
end


local function status_of(alert)
  return alert.severity == "resolved" and "resolved" or "firing"
end


local function host_of(alert)
  return type(alert.host) == "string" and alert.host or ""
end


-- Returns a header value with control characters replaced, since a CR or
-- LF in a header would end it early.
local function header_value(s)
  return (valid_utf8(tostring(s)):gsub("%c", " "))
end


-- Returns s cut to at most n characters (code points, not bytes), with an
-- ellipsis when something was cut.
local function cut(s, n)
  s = valid_utf8(s)
  if utf8.len(s) <= n then
    return s
  end
  return s:sub(1, utf8.offset(s, n) - 1) .. "…"
end


-- Returns the JSON text of value, cleaned at path; notes gather there.
local function json_at(value, path, notes)
  local parts = {}
  write(clean(value, path, notes, 1), parts)
  return table.concat(parts)
end


-- Returns the text of one fact for people: integers in full, other
-- numbers to six digits, a non-finite number as "null" with a note,
-- tables as compact JSON.
local function fact_text(value, path, notes)
  local kind = type(value)
  if kind == "string" then
    return valid_utf8(value)
  elseif kind == "number" and not is_finite(value) then
    notes[#notes + 1] = "non_finite:" .. path
    return "null"
  elseif math.type(value) == "integer" then
    return string.format("%d", value)
  elseif kind == "number" then
    return string.format("%.6g", value)
  elseif kind == "boolean" then
    return tostring(value)
  end
  return json_at(value, path, notes)
end


-- Returns the names of the facts that are strings, sorted.
local function fact_names(facts)
  local names = {}
  for name in next, facts do
    if type(name) == "string" then
      names[#names + 1] = name
    end
  end
  table.sort(names)
  return names
end


local function summary_of(alert)
  if type(alert.summary) == "string" and alert.summary ~= "" then
    return alert.summary
  end
  return "(no summary)"
end


-- Returns the request the host sends for a body table whose values are
-- already what the receiver should see.
local function request(body, headers)
  local parts = {}
  write(clean(body, "", {}, 0), parts)
  return {
    content_type = "application/json",
    headers = headers or {},
    body = table.concat(parts),
  }
end


---------------------------------------------------------------------------
-- Formats
---------------------------------------------------------------------------

-- This host's own payload: every field of the alert, the facts as given,
-- times in RFC 3339, and tags and notes that are arrays even when empty.
local function generic(alert)
  local facts = facts_of(alert)
  local ratio, why = used_ratio(facts)
  local notes = { why }
  local body = clean({
    version = 1,
    service = SERVICE,
    status = status_of(alert),
    kind = alert.kind,
    severity = alert.severity,
    previous_severity = alert.previous_severity,
    summary = alert.summary,
    key = key_of(alert),
    host = alert.host,
    started_at = time_text(alert.started_at),
    raised_at = time_text(alert.raised_at),
    used_ratio = ratio,
    facts = facts,
    tags = concat_lists(TAGS, alert.tags),
  }, "", notes, 0)
  body.notes = list(notes)

  local parts = {}
  write(body, parts)
  return {
    content_type = "application/json",
    headers = { ["X-Moonrabbit-Alert-Key"] = header_value(key_of(alert)) },
    body = table.concat(parts),
  }
end


local SLACK_ESCAPES = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;" }

-- Slack reads &, < and > in mrkdwn as markup (links, mentions).
local function slack_escape(s)
  return (valid_utf8(s):gsub("[&<>]", SLACK_ESCAPES))
end


local function title_of(alert)
  local title = "[" .. alert.severity:upper() .. "] " .. alert.kind
  if host_of(alert) ~= "" then
    title = title .. " on " .. host_of(alert)
  end
  return title
end


-- Returns the facts as Slack section blocks of at most ten fields each,
-- the share of the limit first. Facts past SLACK_MAX_FACTS are left out
-- with a note.
local function slack_sections(alert, notes)
  local facts = facts_of(alert)
  local items = {}
  local ratio, why = used_ratio(facts)
  if ratio then
    items[1] = { "used", string.format("%.1f %% of limit", 100 * ratio) }
  end
  notes[#notes + 1] = why
  local names = fact_names(facts)
  for i, name in ipairs(names) do
    if i > SLACK_MAX_FACTS then
      notes[#notes + 1] = "facts_left_out:" .. (#names - SLACK_MAX_FACTS)
      break
    end
    items[#items + 1] = { name, fact_text(facts[name], "facts." .. name,
      notes) }
  end

  local sections = {}
  for i, item in ipairs(items) do
    local at = (i - 1) // SLACK_FIELDS_PER_SECTION + 1
    sections[at] = sections[at] or { type = "section", fields = list() }
    local fields = sections[at].fields
    fields[#fields + 1] = { type = "mrkdwn", text = cut("*"
      .. slack_escape(item[1]) .. "*\n" .. slack_escape(item[2]),
      SLACK_FIELD_CHARS) }
  end
  return sections
end


-- Returns the context line: key, start time, what a resolve resolves,
-- and the notes.
local function slack_context(alert, notes)
  local parts = { "key " .. key_of(alert),
    "since " .. time_text(alert.started_at) }
  if alert.severity == "resolved" and type(alert.previous_severity)
      == "string" then
    parts[#parts + 1] = "was " .. alert.previous_severity
  end
  if #notes > 0 then
    parts[#parts + 1] = "notes: " .. table.concat(notes, ", ")
  end
  return cut(slack_escape(table.concat(parts, " · ")), SLACK_TEXT_CHARS)
end


-- A Slack incoming-webhook message: text for notifications, then blocks
-- for the channel (header, summary, facts, context).
local function slack(alert)
  local notes = {}
  local title = title_of(alert)
  local summary = summary_of(alert)
  local blocks = list({
    { type = "header", text = { type = "plain_text",
      text = cut(title, SLACK_HEADER_CHARS) } },
    { type = "section", text = { type = "mrkdwn",
      text = cut(slack_escape(summary), SLACK_TEXT_CHARS) } },
  })
  for _, section in ipairs(slack_sections(alert, notes)) do
    blocks[#blocks + 1] = section
  end
  blocks[#blocks + 1] = { type = "context", elements = list({
    { type = "mrkdwn", text = slack_context(alert, notes) } }) }

  return request({
    text = cut(slack_escape(title .. ": " .. summary), SLACK_TEXT_CHARS),
    blocks = blocks,
  })
end


-- Prometheus label and annotation names: letters, digits and _, not
-- starting with a digit.
local function label_name(name)
  local s = name:gsub("[^%w_]", "_")
  if s == "" or s:match("^%d") then
    s = "_" .. s
  end
  return s
end


-- 64-bit FNV-1a; Lua integers wrap on overflow as the hash needs.
local FNV_OFFSET = 0xcbf29ce484222325
local FNV_PRIME = 0x100000001b3

-- Returns an alert's fingerprint as Prometheus computes it from the
-- labels: FNV-1a over the sorted names and their values, each followed by
-- the byte 255, printed as 16 hex digits. Receivers use it to match a
-- resolve with the alert it ends.
local function fingerprint(labels)
  local names = {}
  for name in next, labels do
    names[#names + 1] = name
  end
  table.sort(names)
  local h = FNV_OFFSET
  local function add(s)
    for i = 1, #s do
      h = (h ~ s:byte(i)) * FNV_PRIME
    end
  end
  for _, name in ipairs(names) do
    add(name)
    add("\255")
    add(labels[name])
    add("\255")
  end
  return string.format("%016x", h)
end


-- Returns the labels: they identify the alert, so a resolve carries the
-- severity it resolves and the same facts as the alert it ends.
local function am_labels(alert, notes)
  local severity = alert.severity
  if severity == "resolved" then
    severity = type(alert.previous_severity) == "string"
      and alert.previous_severity or "none"
  end
  local labels = { alertname = alert.kind, severity = severity,
    service = SERVICE }
  if host_of(alert) ~= "" then
    labels.instance = host_of(alert)
  end
  local facts = facts_of(alert)
  for _, name in ipairs(LABEL_FACTS) do
    if facts[name] ~= nil then
      labels[label_name(name)] = fact_text(facts[name], "facts." .. name,
        notes)
    end
  end
  return labels
end


-- Returns the annotations: summary, key, the share of the limit, every
-- fact as text and the notes, all strings as Alertmanager has them.
local function am_annotations(alert, notes)
  local facts = facts_of(alert)
  local out = { summary = summary_of(alert), key = key_of(alert) }
  local ratio, why = used_ratio(facts)
  if ratio then
    out.used_ratio = string.format("%.4f", ratio)
  end
  notes[#notes + 1] = why
  for _, name in ipairs(fact_names(facts)) do
    local text = fact_text(facts[name], "facts." .. name, notes)
    local aname = label_name(name)
    if out[aname] == nil then
      out[aname] = text
    end
  end
  if #notes > 0 then
    out.notes = table.concat(notes, ", ")
  end
  return out
end


-- Quotes a label value the way Alertmanager writes it in a group key.
local function go_quote(s)
  return '"' .. s:gsub('[\\"]', "\\%0") .. '"'
end


-- The body Prometheus Alertmanager posts to a webhook receiver (version
-- 4), holding this one alert, for receivers built to take it.
local function alertmanager(alert)
  local notes = {}
  local labels = am_labels(alert, notes)
  local annotations = am_annotations(alert, notes)
  local status = status_of(alert)
  local ends = status == "resolved" and time_text(alert.raised_at)
    or ZERO_TIME
  return request({
    version = "4",
    groupKey = "{}:{alertname=" .. go_quote(alert.kind) .. "}",
    truncatedAlerts = 0,
    status = status,
    receiver = SERVICE,
    groupLabels = { alertname = alert.kind },
    commonLabels = labels,
    commonAnnotations = annotations,
    externalURL = "",
    alerts = list({ {
      status = status,
      labels = labels,
      annotations = annotations,
      startsAt = time_text(alert.started_at),
      endsAt = ends,
      generatorURL = "",
      fingerprint = fingerprint(labels),
    } }),
  })
end


local FORMATS = {
  generic = generic,
  slack = slack,
  alertmanager = alertmanager,
}


---------------------------------------------------------------------------
-- The host's entry points
---------------------------------------------------------------------------

-- Returns a new table of how to send, which the host checks:
-- { format, connect_timeout_ms, total_timeout_ms, max_attempts,
-- backoff_base_ms, backoff_max_ms, queue_capacity }. Raises when FORMAT
-- names no format, so a typo stops start-up.
local function settings()
  if FORMATS[FORMAT] == nil then
    error("alerts.settings: FORMAT must be generic, slack or alertmanager, "
      .. "got " .. show(FORMAT), 2)
  end
  return {
    format = FORMAT,
    connect_timeout_ms = CONNECT_TIMEOUT_MS,
    total_timeout_ms = TOTAL_TIMEOUT_MS,
    max_attempts = MAX_ATTEMPTS,
    backoff_base_ms = BACKOFF_BASE_MS,
    backoff_max_ms = BACKOFF_MAX_MS,
    queue_capacity = QUEUE_CAPACITY,
  }
end


-- Accepts an alert; returns a new table { key, repeat_seconds, send }:
-- the condition it is about, how long the same alert stays quiet after
-- it was sent, and whether it goes to the receivers at all.
local function route(alert)
  check_alert(alert, "route")
  local key = key_of(alert)
  if ONE_CONDITION_KINDS[alert.kind] then
    key = alert.kind
  end
  return {
    key = key,
    repeat_seconds = REPEAT_SECONDS[alert.severity],
    send = not MUTED_KINDS[alert.kind],
  }
end


-- Accepts an alert; returns a new table { content_type, headers, body }
-- in the format FORMAT names. Whatever the facts hold, the body is JSON a
-- strict parser accepts.
local function format(alert)
  check_alert(alert, "format")
  return FORMATS[FORMAT](alert)
end


return {
  settings = settings,
  route = route,
  format = format,
  -- For specs: every format by name, and the encoder.
  formats = FORMATS,
  encode_json = encode_json,
}
