local helpers = require "helpers"
local memory = require "memory"

local ABSENT = helpers.ABSENT
local MIB = 1024 * 1024

-- A 1000 MiB limit makes every whole percentage a whole number of MiB, so
-- the rows below sit exactly on the thresholds or one byte under them.
local LIMIT = 1000 * MIB


-- Returns the bytes that are percent % of LIMIT.
local function pct(percent)
  return math.floor(percent * LIMIT / 100 + 0.5)
end


local function merge(base, over)
  for key, value in pairs(over or {}) do
    base[key] = value
  end
  return base
end


-- Returns a cgroup v2 sample whose working set is used bytes of LIMIT, with
-- 64 MiB of page cache on top; over replaces fields (ABSENT removes one).
local function sample_at(used, over)
  return helpers.sample(merge({
    limit_bytes = LIMIT,
    usage_bytes = used + 64 * MIB,
    working_set_bytes = used,
  }, over))
end


-- Returns the state the host passes: previous level, paused, prefetch 16
-- and no OOM kill so far; over replaces fields (ABSENT removes one).
local function state(level, paused, over)
  local fields = merge({ level = level, paused = paused, prefetch = 16,
    oom_kill_events = 0 }, over)
  for key, value in pairs(fields) do
    if value == ABSENT then
      fields[key] = nil
    end
  end
  return fields
end


-- Returns what a row asserts of a decision.
local function outcome(result)
  return {
    level = result.level,
    pause = result.pause,
    recycle = result.recycle,
    severity = result.alert and result.alert.severity,
  }
end


describe("memory", function()
  describe("decide", function()
    -- name, used, previous level, paused -> level, pause, recycle, severity
    local rows = {
      { "stays ok at 50 %", pct(50), "ok", false,
        "ok", false, false, nil },
      { "stays ok one byte under 70 %", pct(70) - 1, "ok", false,
        "ok", false, false, nil },
      { "warns at 70 %", pct(70), "ok", false,
        "warning", false, false, "warning" },
      { "keeps warning quietly at 72 %", pct(72), "warning", false,
        "warning", false, false, nil },
      { "stays at warning one byte under 80 %", pct(80) - 1, "warning",
        false, "warning", false, false, nil },
      { "raises the alert and pauses at 80 %", pct(80), "warning", false,
        "alert", true, false, "critical" },
      { "raises the alert from ok at 80 %", pct(80), "ok", false,
        "alert", true, false, "critical" },
      { "stays at alert one byte under 90 %", pct(90) - 1, "alert", true,
        "alert", true, false, nil },
      { "turns critical and recycles at 90 %", pct(90), "alert", true,
        "critical", true, true, "critical" },
      { "goes from ok to critical in one sample at 95 %", pct(95), "ok",
        false, "critical", true, true, "critical" },
      { "keeps critical quietly and still recycles at 95 %", pct(95),
        "critical", true, "critical", true, true, nil },
      { "is critical past the limit", pct(120), "ok", false,
        "critical", true, true, "critical" },
      { "stays paused at 75 %", pct(75), "alert", true,
        "alert", true, false, nil },
      { "stays paused at exactly 70 %", pct(70), "alert", true,
        "warning", true, false, nil },
      { "resumes one byte under 70 %", pct(70) - 1, "warning", true,
        "warning", false, false, nil },
      { "does not pause at 75 % when not paused", pct(75), "alert", false,
        "alert", false, false, nil },
      { "keeps warning at exactly 65 %", pct(65), "warning", false,
        "warning", false, false, nil },
      { "drops to ok one byte under 65 %", pct(65) - 1, "warning", false,
        "ok", false, false, "resolved" },
      { "keeps alert at exactly 75 %", pct(75), "alert", true,
        "alert", true, false, nil },
      { "drops to warning one byte under 75 %", pct(75) - 1, "alert", true,
        "warning", true, false, nil },
      { "keeps critical at exactly 85 %", pct(85), "critical", true,
        "critical", true, true, nil },
      { "drops to alert one byte under 85 %", pct(85) - 1, "critical", true,
        "alert", true, false, nil },
      { "keeps warning at 66 % after an alert", pct(66), "alert", true,
        "warning", false, false, nil },
      { "drops from critical to ok at 40 %", pct(40), "critical", true,
        "ok", false, false, "resolved" },
      { "stays ok quietly at 0 %", 0, "ok", false,
        "ok", false, false, nil },
    }
    for _, row in ipairs(rows) do
      local name, used, previous, paused = table.unpack(row, 1, 4)
      local level, pause, recycle, severity = table.unpack(row, 5, 8)
      it(name, function()
        local result = memory.decide(sample_at(used),
          state(previous, paused))
        assert.same({ level = level, pause = pause, recycle = recycle,
          severity = severity }, outcome(result))
      end)
    end
  end)


  describe("decide over a run of samples", function()
    -- Each sample gets the state the previous decision left behind.
    local function run(percents)
      local current = state("ok", false)
      local seen = {}
      for _, percent in ipairs(percents) do
        local result = memory.decide(sample_at(pct(percent)), current)
        seen[#seen + 1] = outcome(result)
        current = state(result.level, result.pause)
      end
      return seen
    end

    it("pauses once and does not flap around 80 %", function()
      assert.same({
        { level = "warning", pause = false, recycle = false,
          severity = "warning" },
        { level = "alert", pause = true, recycle = false,
          severity = "critical" },
        { level = "alert", pause = true, recycle = false },
        { level = "alert", pause = true, recycle = false },
        { level = "warning", pause = true, recycle = false },
        { level = "warning", pause = false, recycle = false },
        { level = "warning", pause = false, recycle = false },
      }, run({ 79, 81, 79, 81, 72, 69, 72 }))
    end)

    it("sends the resolved alert once", function()
      assert.same({
        { level = "alert", pause = true, recycle = false,
          severity = "critical" },
        { level = "ok", pause = false, recycle = false,
          severity = "resolved" },
        { level = "ok", pause = false, recycle = false },
        { level = "ok", pause = false, recycle = false },
      }, run({ 85, 40, 40, 30 }))
    end)
  end)


  describe("prefetch", function()
    -- name, used, configured prefetch -> prefetch
    local rows = {
      { "is the full 101 at 50 %", pct(50), 101, 101 },
      { "is the full 101 at 70 %", pct(70), 101, 101 },
      { "is 76 of 101 a quarter of the way to the pause", pct(72.5), 101,
        76 },
      { "is 51 of 101 halfway to the pause", pct(75), 101, 51 },
      { "is 2 of 101 at 79.9 %", pct(79.9), 101, 2 },
      { "is 1 of 101 one byte under 80 %", pct(80) - 1, 101, 1 },
      { "is 1 of 101 at the pause", pct(80), 101, 1 },
      { "is 1 of 101 past the limit", pct(120), 101, 1 },
      { "is 1 of 1 at 0 %", 0, 1, 1 },
      { "is 1 of 1 at 75 %", pct(75), 1, 1 },
      { "is 1 of 1 at 95 %", pct(95), 1, 1 },
      { "is 1000 of 1000 at 50 %", pct(50), 1000, 1000 },
      { "is 501 of 1000 halfway to the pause", pct(75), 1000, 501 },
      { "is 101 of 1000 at 79 %", pct(79), 1000, 101 },
      { "is 1 of 1000 at the pause", pct(80), 1000, 1 },
    }
    for _, row in ipairs(rows) do
      local name, used, ceiling, expected = table.unpack(row)
      it(name, function()
        local result = memory.decide(sample_at(used),
          state("ok", false, { prefetch = ceiling }))
        assert.equal(expected, result.prefetch)
        assert.equal("integer", math.type(result.prefetch))
      end)
    end

    for _, ceiling in ipairs({ 1, 16, 1000 }) do
      it("stays an integer in 1.." .. ceiling .. " and never grows as "
        .. "memory does", function()
          local last = ceiling
          for tenth = 0, 1200 do
            local result = memory.decide(sample_at(pct(tenth / 10)),
              state("ok", false, { prefetch = ceiling }))
            assert.equal("integer", math.type(result.prefetch))
            assert.is_true(result.prefetch >= 1 and result.prefetch <= last)
            last = result.prefetch
          end
        end)
    end

    it("follows the figure, not the pause", function()
      local paused = memory.decide(sample_at(pct(75)), state("alert", true))
      local running = memory.decide(sample_at(pct(75)),
        state("alert", false))
      assert.equal(9, paused.prefetch)
      assert.equal(9, running.prefetch)
    end)
  end)


  describe("alerts", function()
    it("describes a warning in full", function()
      local used = pct(72.5)
      local result = memory.decide(sample_at(used), state("ok", false))
      assert.same({
        kind = "memory",
        severity = "warning",
        summary = "memory warning: working set at 72.5 % of limit, "
          .. "725.0 MiB of 1000.0 MiB (limit from cgroup_v2)",
        key = "memory:warning",
        facts = {
          level = "warning",
          previous_level = "ok",
          ratio = 0.725,
          figure = "working_set",
          used_bytes = used,
          limit_bytes = LIMIT,
          limit_source = "cgroup_v2",
          rss_bytes = 280 * MIB,
          usage_bytes = used + 64 * MIB,
          working_set_bytes = used,
          cgroup_version = 2,
          prefetch = 12,
          oom_kills = 0,
          oom_kill_events = 0,
          psi_some_avg10 = 0.0,
          psi_full_avg10 = 0.0,
        },
      }, result.alert)
    end)

    -- name, sample, state -> key, summary
    local rows = {
      { "names the previous level when resolved",
        sample_at(pct(40)), state("alert", true),
        "memory:ok", "memory ok (was alert): working set at 40.0 % of "
          .. "limit, 400.0 MiB of 1000.0 MiB (limit from cgroup_v2)" },
      { "names RSS and the env limit",
        sample_at(pct(95), { usage_bytes = 0, cgroup_version = 0,
          rss_bytes = pct(95), limit_source = "env" }),
        state("alert", true),
        "memory:critical", "memory critical: RSS at 95.0 % of limit, "
          .. "950.0 MiB of 1000.0 MiB (limit from env)" },
      { "counts the OOM kills since the last sample",
        sample_at(pct(30), { oom_kill_events = 7 }),
        state("ok", false, { oom_kill_events = 5 }),
        "memory:alert", "memory alert: working set at 30.0 % of limit, "
          .. "300.0 MiB of 1000.0 MiB (limit from cgroup_v2); 2 OOM kills "
          .. "since last sample" },
      { "says kill, not kills, for one",
        sample_at(pct(30), { oom_kill_events = 1 }),
        state("ok", false),
        "memory:alert", "memory alert: working set at 30.0 % of limit, "
          .. "300.0 MiB of 1000.0 MiB (limit from cgroup_v2); 1 OOM kill "
          .. "since last sample" },
    }
    for _, row in ipairs(rows) do
      local name, sample, current, key, summary = table.unpack(row)
      it(name, function()
        local alert = memory.decide(sample, current).alert
        assert.equal(key, alert.key)
        assert.equal(summary, alert.summary)
      end)
    end

    it("keeps the summary to one line that fits the host's buffer",
      function()
        local sample = helpers.sample({ limit_bytes = 1024 * 1024 * MIB,
          working_set_bytes = 1023 * 1024 * MIB, limit_source = "meminfo",
          oom_kill_events = 123456789 })
        local alert = memory.decide(sample, state("ok", false)).alert
        assert.is_nil(alert.summary:find("\n", 1, true))
        assert.is_true(#alert.summary < 256)
        assert.is_true(#alert.key < 64)
      end)

    it("carries only strings and numbers in its facts", function()
      local alert = memory.decide(sample_at(pct(91)), state("ok", false))
        .alert
      for name, value in pairs(alert.facts) do
        local kind = type(value)
        assert.is_true(kind == "string" or kind == "number", name)
      end
    end)
  end)


  describe("the figure", function()
    it("is the working set when the cgroup reports usage", function()
      local result = memory.decide(sample_at(pct(40),
        { rss_bytes = pct(95) }), state("ok", false))
      assert.equal("ok", result.level)
      assert.equal(0.4, result.ratio)
    end)

    it("leaves out page cache the kernel can drop", function()
      local result = memory.decide(sample_at(pct(60),
        { usage_bytes = pct(99) }), state("ok", false))
      assert.equal("ok", result.level)
      assert.equal(0.6, result.ratio)
    end)

    it("is RSS when there is no cgroup usage", function()
      local result = memory.decide(sample_at(pct(40), {
        usage_bytes = 0, cgroup_version = 0, limit_source = "meminfo",
        rss_bytes = pct(95) }), state("ok", false))
      assert.equal("critical", result.level)
      assert.equal(0.95, result.ratio)
      assert.equal("rss", result.alert.facts.figure)
    end)

    it("gives a finite ratio past the limit", function()
      local result = memory.decide(sample_at(pct(150)), state("ok", false))
      assert.equal(1.5, result.ratio)
    end)
  end)


  describe("pressure signals", function()
    -- name, sample over, state over -> outcome
    local rows = {
      { "raises ok to alert and pauses when the OOM-kill count rose",
        { oom_kill_events = 3 }, { oom_kill_events = 1 },
        { level = "alert", pause = true, recycle = false,
          severity = "critical" } },
      { "ignores the count on the first sample", { oom_kill_events = 3 },
        { oom_kill_events = ABSENT },
        { level = "ok", pause = false, recycle = false } },
      { "ignores a sample without a count", { oom_kill_events = ABSENT },
        { oom_kill_events = 3 },
        { level = "ok", pause = false, recycle = false } },
      { "ignores a count that went down", { oom_kill_events = 0 },
        { oom_kill_events = 5 },
        { level = "ok", pause = false, recycle = false } },
      { "resumes and resolves once the count holds still",
        { oom_kill_events = 3 },
        { oom_kill_events = 3, level = "alert", paused = true },
        { level = "ok", pause = false, recycle = false,
          severity = "resolved" } },
      { "decides on the figure alone when PSI is missing",
        { psi_some_avg10 = ABSENT, psi_full_avg10 = ABSENT }, {},
        { level = "ok", pause = false, recycle = false } },
      { "does not act on PSI", { psi_some_avg10 = 95.0,
        psi_full_avg10 = 80.0 }, {},
        { level = "ok", pause = false, recycle = false } },
    }
    for _, row in ipairs(rows) do
      local name, sample_over, state_over, expected = table.unpack(row)
      it(name, function()
        local result = memory.decide(sample_at(pct(30), sample_over),
          state("ok", false, state_over))
        assert.same(expected, outcome(result))
      end)
    end

    it("keeps critical and recycles when an OOM kill comes at 95 %",
      function()
        local result = memory.decide(
          sample_at(pct(95), { oom_kill_events = 2 }),
          state("alert", true, { oom_kill_events = 1 }))
        assert.same({ level = "critical", pause = true, recycle = true,
          severity = "critical" }, outcome(result))
      end)

    it("leaves PSI out of the facts when the sample has none", function()
      local result = memory.decide(sample_at(pct(72), {
        psi_some_avg10 = ABSENT, psi_full_avg10 = ABSENT,
        oom_kill_events = ABSENT }), state("ok", false))
      assert.equal("warning", result.alert.severity)
      assert.is_nil(result.alert.facts.psi_some_avg10)
      assert.is_nil(result.alert.facts.psi_full_avg10)
      assert.is_nil(result.alert.facts.oom_kill_events)
    end)
  end)


  describe("results", function()
    it("are new tables on every call", function()
      local first = memory.decide(sample_at(pct(72)), state("ok", false))
      local second = memory.decide(sample_at(pct(72)), state("ok", false))
      assert.are_not.equal(first, second)
      assert.are_not.equal(first.alert, second.alert)
      assert.are_not.equal(first.alert.facts, second.alert.facts)
    end)

    it("leave the sample and the state untouched", function()
      local sample = sample_at(pct(91))
      local current = state("warning", false)
      memory.decide(sample, current)
      assert.same(sample_at(pct(91)), sample)
      assert.same(state("warning", false), current)
    end)

    it("load and run with only the sandbox globals", function()
      local sandboxed = helpers.sandbox_load("policies/memory.lua")
      local result = sandboxed.decide(sample_at(pct(80)),
        state("warning", false))
      assert.same({ level = "alert", pause = true, recycle = false,
        severity = "critical" }, outcome(result))
    end)
  end)


  describe("caller bugs", function()
    -- name, sample, state -> message
    local rows = {
      { "raises when the sample is a string", "sample", state("ok", false),
        "memory.decide: sample must be a table, got string" },
      { "raises when the sample is nil", nil, state("ok", false),
        "memory.decide: sample must be a table, got nil" },
      { "raises when the state is nil", sample_at(0), nil,
        "memory.decide: state must be a table, got nil" },
      { "raises when limit_bytes is 0", sample_at(0, { limit_bytes = 0 }),
        state("ok", false),
        "memory.decide: limit_bytes must be a positive number, got 0" },
      { "raises when limit_bytes is negative",
        sample_at(0, { limit_bytes = -1 }), state("ok", false),
        "memory.decide: limit_bytes must be a positive number, got -1" },
      { "raises when limit_bytes is missing",
        sample_at(0, { limit_bytes = ABSENT }), state("ok", false),
        "memory.decide: limit_bytes must be a positive number, got nil" },
      { "raises when limit_bytes is a string",
        sample_at(0, { limit_bytes = "1g" }), state("ok", false),
        "memory.decide: limit_bytes must be a positive number, "
          .. "got \"1g\"" },
      { "raises when the working set is missing",
        sample_at(0, { working_set_bytes = ABSENT }), state("ok", false),
        "memory.decide: working_set_bytes must be a number >= 0, got nil" },
      { "raises when the previous level is unknown", sample_at(0),
        state("panic", false),
        "memory.decide: state.level must be ok, warning, alert or "
          .. "critical, got \"panic\"" },
      { "raises when prefetch is 0", sample_at(0),
        state("ok", false, { prefetch = 0 }),
        "memory.decide: state.prefetch must be an integer >= 1, got 0" },
      { "raises when prefetch is not an integer", sample_at(0),
        state("ok", false, { prefetch = 1.5 }),
        "memory.decide: state.prefetch must be an integer >= 1, got 1.5" },
    }
    for _, row in ipairs(rows) do
      local name, sample, current, message = table.unpack(row, 1, 4)
      it(name, function()
        assert.equal(message, helpers.error_of(memory.decide, sample,
          current))
      end)
    end

    it("names the caller's line, not the policy's, in the error", function()
      local ok, err = pcall(function()
        local result = memory.decide(sample_at(0, { limit_bytes = 0 }),
          state("ok", false))
        return result
      end)
      assert.is_false(ok)
      assert.is_truthy(err:find("^spec/memory_spec%.lua:%d+: "))
    end)
  end)
end)
