local helpers = require "helpers"
local config = require "config"

local ABSENT, config_of, limits_of = helpers.ABSENT, helpers.config,
  helpers.config_limits
local KIB = 1024
local MIB = 1024 * KIB
local GIB = 1024 * MIB
-- The measured idle RSS config.lua charges as the budget's last term.
local BASELINE = 14 * MIB


local function warning(code, message)
  return { severity = "warning", code = code, message = message }
end


local function err(code, message)
  return { severity = "error", code = code, message = message }
end


local function info(code, message)
  return { severity = "info", code = code, message = message }
end


local function codes(result)
  local list = {}
  for _, f in ipairs(result.findings) do
    list[#list + 1] = f.code
  end
  return list
end


-- Runs rows of { name, overrides, expected findings } as one `it` each.
local function run_rows(rows)
  for _, row in ipairs(rows) do
    local name, over, expected = table.unpack(row, 1, 3)
    it(name, function()
      assert.same(expected, config.check(config_of(over)).findings)
    end)
  end
end


describe("config", function()
  describe("check on the defaults", function()
    it("finds nothing in the builder's configuration", function()
      assert.same({}, config.check(config_of()).findings)
    end)

    it("loads and runs with only the sandbox globals", function()
      local sandboxed = helpers.sandbox_load("policies/config.lua")
      assert.same(config.check(config_of()), sandboxed.check(config_of()))
    end)

    it("leaves the cfg untouched", function()
      local cfg = config_of({ concurrency = 40, prefetch = 0 })
      config.check(cfg)
      assert.same(config_of({ concurrency = 40, prefetch = 0 }), cfg)
    end)

    it("returns new tables on every call", function()
      local first, second = config.check(config_of()),
        config.check(config_of())
      assert.are_not.equal(first, second)
      assert.are_not.equal(first.budget.lines, second.budget.lines)
    end)
  end)


  -- Case 020: connection totals the database or the pool cannot serve.
  describe("case 020 rows", function()
    -- concurrency, pool, replicas, server max_connections -> findings.
    -- 8 GiB and a prefetch of twice the threads keep the other rules quiet.
    local rows = {
      { "accepts 20 threads, a pool of 20 and one replica", 20, 20, 1, 100,
        {} },
      { "warns about 21 threads", 21, 21, 1, 100, {
        warning("cfg.concurrency_high", "WORKER_CONCURRENCY_PER_WORKER=21 is "
          .. "above 20: threads contend for the same connections and cores; "
          .. "run more replicas instead") } },
      { "warns about a pool of 4 for 8 threads", 8, 4, 1, 100, {
        warning("cfg.pool_lt_concurrency", "DB_POOL_SIZE=4 is below "
          .. "WORKER_CONCURRENCY_PER_WORKER=8: threads wait for a connection "
          .. "while their messages stay unacked; set DB_POOL_SIZE to at "
          .. "least 8") } },
      { "warns about 225 connections over 9 replicas", 20, 25, 9, 300, {
        warning("cfg.db_total_high", "WORKER_REPLICAS=9 × (DB_POOL_SIZE=25 "
          .. "+ DB_MAX_OVERFLOW=0) = 225 database connections, above 200: "
          .. "put a pooler such as PgBouncer in front of PostgreSQL or "
          .. "shrink the pools") } },
      { "warns about 120 connections for a server of 100", 20, 20, 6, 100, {
        warning("cfg.db_exceeds_server", "WORKER_REPLICAS=6 × "
          .. "(DB_POOL_SIZE=20 + DB_MAX_OVERFLOW=0) = 120 database "
          .. "connections, above the server's max_connections=100: the last "
          .. "connections are refused (SQLSTATE 53300); shrink the pools or "
          .. "raise max_connections") } },
      { "refuses 0 threads", 0, 8, 1, nil, {
        err("cfg.invalid_value", "concurrency "
          .. "(WORKER_CONCURRENCY_PER_WORKER) must be a whole number from 1 "
          .. "to 65535, got 0") } },
      { "refuses -1 threads", -1, 8, 1, nil, {
        err("cfg.invalid_value", "concurrency "
          .. "(WORKER_CONCURRENCY_PER_WORKER) must be a whole number from 1 "
          .. "to 65535, got -1") } },
    }
    for _, row in ipairs(rows) do
      local name, concurrency, pool, replicas, server, expected =
        table.unpack(row, 1, 6)
      it(name, function()
        local result = config.check(config_of({
          concurrency = concurrency,
          prefetch = math.max(16, 2 * concurrency),
          db_pool_size = pool,
          replicas = replicas,
          server_max_connections = server,
          memory_limit_bytes = 8 * GIB,
        }))
        assert.same(expected, result.findings)
      end)
    end

    it("says nothing about the server while max_connections is unknown",
      function()
        local result = config.check(config_of({ concurrency = 20,
          prefetch = 40, db_pool_size = 20, replicas = 6,
          memory_limit_bytes = 8 * GIB }))
        assert.same({}, result.findings)
      end)
  end)


  -- Case 019: prefetch × message size against the container's memory.
  -- The Lua ceiling is what limits.lua gives for 2 GiB over the threads.
  describe("case 019 configurations", function()
    local function case019(prefetch, concurrency)
      return config_of({ prefetch = prefetch, concurrency = concurrency,
        db_pool_size = concurrency, limits = limits_of({
          lua_memory_bytes = math.min(64 * MIB,
            2 * GIB // (4 * concurrency)) }) })
    end

    it("refuses A, prefetch 0 with 8 threads, as unbounded", function()
      assert.same({
        err("cfg.prefetch_unbounded", "prefetch (AMQP_PREFETCH) is 0, which "
          .. "the broker reads as unbounded: it pushes the whole backlog into "
          .. "memory; set AMQP_PREFETCH to at least "
          .. "WORKER_CONCURRENCY_PER_WORKER"),
      }, config.check(case019(0, 8)).findings)
    end)

    it("refuses A with prefetch unset as unbounded", function()
      assert.same({ "cfg.prefetch_unbounded" },
        codes(config.check(case019(ABSENT, 8))))
    end)

    it("warns about B, prefetch 1 with 8 threads, leaving threads idle",
      function()
        assert.same({
          warning("cfg.prefetch_lt_concurrency", "AMQP_PREFETCH=1 is below "
            .. "WORKER_CONCURRENCY_PER_WORKER=8: at most 1 of the threads "
            .. "ever have work; set AMQP_PREFETCH to at least 8"),
        }, config.check(case019(1, 8)).findings)
      end)

    it("warns about C, prefetch 200 with 20 threads, in 2 GiB", function()
      assert.same({
        warning("cfg.prefetch_memory_high", "AMQP_PREFETCH=200 × 2 MiB max "
          .. "message × 4 decode factor = 1.56 GiB, above a quarter of the "
          .. "2 GiB memory limit: lower AMQP_PREFETCH to at most 64"),
        warning("cfg.memory_budget_exceeded", "memory budget 2.12 GiB is "
          .. "105.8 % of the 2 GiB memory limit (cgroup_v2): a worst-case "
          .. "burst does not fit, and only the memory governor stands "
          .. "between it and an OOM kill; shrink the largest term, prefetch "
          .. "(1.56 GiB)"),
      }, config.check(case019(200, 20)).findings)
    end)

    it("prints C's budget term by term", function()
      local total = 20 * 26843545 + 200 * 2 * MIB * 4
        + 20 * (64 * KIB + 2 * MIB) + BASELINE
      assert.same({
        lines = {
          { term = "lua", bytes = 20 * 26843545,
            formula = "20 threads × 25.6 MiB Lua ceiling" },
          { term = "prefetch", bytes = 200 * 2 * MIB * 4,
            formula = "200 deliveries × 2 MiB max message × 4 decode factor" },
          { term = "db", bytes = 20 * (64 * KIB + 2 * MIB),
            formula = "20 connections × (64 KiB + 2 MiB largest message)" },
          { term = "baseline", bytes = BASELINE,
            formula = "idle RSS measured with the default settings" },
        },
        total_bytes = total,
        limit_bytes = 2 * GIB,
        ratio = total / (2 * GIB),
      }, config.check(case019(200, 20)).budget)
    end)
  end)


  describe("rules", function()
    run_rows({
      { "accepts exactly 20 threads", { concurrency = 20, prefetch = 20,
        db_pool_size = 20, memory_limit_bytes = 8 * GIB }, {} },
      { "does not count overflow toward the fixed pool",
        { db_pool_size = 4, db_max_overflow = 4 }, {
          warning("cfg.pool_lt_concurrency", "DB_POOL_SIZE=4 is below "
            .. "WORKER_CONCURRENCY_PER_WORKER=8: threads wait for a "
            .. "connection while their messages stay unacked; set "
            .. "DB_POOL_SIZE to at least 8"),
          info("cfg.overflow_unused", "DB_MAX_OVERFLOW=4 is counted in the "
            .. "connection totals, but the host opens a fixed pool of "
            .. "DB_POOL_SIZE=4 connections and never more"),
        } },
      { "accepts exactly 200 connections", { replicas = 25 }, {} },
      { "counts overflow in the connection total",
        { replicas = 3, db_max_overflow = 60 }, {
          warning("cfg.db_total_high", "WORKER_REPLICAS=3 × (DB_POOL_SIZE=8 "
            .. "+ DB_MAX_OVERFLOW=60) = 204 database connections, above 200: "
            .. "put a pooler such as PgBouncer in front of PostgreSQL or "
            .. "shrink the pools"),
          info("cfg.overflow_unused", "DB_MAX_OVERFLOW=60 is counted in the "
            .. "connection totals, but the host opens a fixed pool of "
            .. "DB_POOL_SIZE=8 connections and never more"),
        } },
      { "accepts a total equal to the server's max_connections",
        { replicas = 5, server_max_connections = 40 }, {} },
      { "warns one connection past the server's max_connections",
        { replicas = 5, server_max_connections = 39 }, {
          warning("cfg.db_exceeds_server", "WORKER_REPLICAS=5 × "
            .. "(DB_POOL_SIZE=8 + DB_MAX_OVERFLOW=0) = 40 database "
            .. "connections, above the server's max_connections=39: the last "
            .. "connections are refused (SQLSTATE 53300); shrink the pools "
            .. "or raise max_connections"),
        } },
      { "refuses an unset prefetch as unbounded", { prefetch = ABSENT }, {
        err("cfg.prefetch_unbounded", "prefetch (AMQP_PREFETCH) is unset, "
          .. "which the broker reads as unbounded: it pushes the whole "
          .. "backlog into memory; set AMQP_PREFETCH to at least "
          .. "WORKER_CONCURRENCY_PER_WORKER"),
      } },
      { "warns about a prefetch one below the threads", { prefetch = 7 }, {
        warning("cfg.prefetch_lt_concurrency", "AMQP_PREFETCH=7 is below "
          .. "WORKER_CONCURRENCY_PER_WORKER=8: at most 7 of the threads ever "
          .. "have work; set AMQP_PREFETCH to at least 8"),
      } },
      { "accepts prefetched bodies of exactly a quarter of the limit",
        { prefetch = 128, memory_limit_bytes = 4 * GIB }, {} },
      { "warns about prefetched bodies past a quarter of the limit",
        { prefetch = 129, memory_limit_bytes = 4 * GIB }, {
          warning("cfg.prefetch_memory_high", "AMQP_PREFETCH=129 × 2 MiB max "
            .. "message × 4 decode factor = 1.01 GiB, above a quarter of the "
            .. "4 GiB memory limit: lower AMQP_PREFETCH to at most 128"),
        } },
      { "warns about a budget over half the limit",
        { concurrency = 16, db_pool_size = 16 }, {
          warning("cfg.memory_budget_high", "memory budget 1.17 GiB is 58.5 "
            .. "% of the 2 GiB memory limit (cgroup_v2), above 50 %: little "
            .. "is left for the governor to work in; the largest term is lua "
            .. "(1 GiB)"),
        } },
      { "warns about a budget over the limit, naming the largest term",
        { memory_limit_bytes = 512 * MIB }, {
          warning("cfg.memory_budget_exceeded", "memory budget 670.5 MiB is "
            .. "131.0 % of the 512 MiB memory limit (cgroup_v2): a worst-case "
            .. "burst does not fit, and only the memory governor stands "
            .. "between it and an OOM kill; shrink the largest term, lua "
            .. "(512 MiB)"),
        } },
      { "refuses a message size that cannot be processed in the limit",
        { concurrency = 1, prefetch = 1, db_pool_size = 1,
          memory_limit_bytes = 40 * MIB,
          limits = limits_of({ max_message_bytes = 8 * MIB }) }, {
          warning("cfg.prefetch_memory_high", "AMQP_PREFETCH=1 × 8 MiB max "
            .. "message × 4 decode factor = 32 MiB, above a quarter of the "
            .. "40 MiB memory limit: lower AMQP_PREFETCH to at most 1"),
          err("cfg.message_exceeds_memory", "limits.max_message_bytes (8 MiB) "
            .. "× 4 decode factor + 14 MiB baseline = 46 MiB, above the 40 "
            .. "MiB memory limit: one message of the accepted size cannot be "
            .. "processed; lower max_message_bytes in limits.lua"),
          warning("cfg.memory_budget_exceeded", "memory budget 118.1 MiB is "
            .. "295.2 % of the 40 MiB memory limit (cgroup_v2): a worst-case "
            .. "burst does not fit, and only the memory governor stands "
            .. "between it and an OOM kill; shrink the largest term, lua "
            .. "(64 MiB)"),
        } },
      { "accepts a Lua ceiling of exactly one decoded maximal message",
        { limits = limits_of({ lua_memory_bytes = 8 * MIB }) }, {} },
      { "warns about a Lua ceiling below one decoded maximal message",
        { limits = limits_of({ lua_memory_bytes = 8 * MIB - 1 }) }, {
          warning("cfg.lua_memory_lt_message", "limits.lua_memory_bytes "
            .. "(8.00 MiB) is below limits.max_message_bytes (2 MiB) × 4 "
            .. "decode factor = 8 MiB: the largest messages the gates accept "
            .. "cannot be decoded and fail as job_error"),
        } },
      { "warns about field limits that contradict others, in name order",
        { limits = limits_of({ fields = {
          log = { warn_bytes = 2 * MIB, max_bytes = 3 * MIB },
          attachments = { warn_bytes = 2 * MIB, max_bytes = 1536 * KIB },
        } }) }, {
          warning("cfg.field_warn_above_max", "limits.fields.attachments"
            .. ".warn_bytes (2 MiB) is above its max_bytes (1.50 MiB): the "
            .. "warning never fires before the refusal"),
          warning("cfg.field_exceeds_message", "limits.fields.log.max_bytes "
            .. "(3 MiB) is above limits.max_message_bytes (2 MiB): the field "
            .. "limit can never apply"),
        } },
      { "accepts a job budget equal to the drain deadline",
        { shutdown_grace_seconds = 30 }, {} },
      { "warns about a job budget longer than the drain deadline",
        { limits = limits_of({ job_timeout_ms = 30001 }) }, {
          warning("cfg.job_timeout_exceeds_grace", "limits.job_timeout_ms="
            .. "30001 is longer than SHUTDOWN_GRACE_SECONDS=30: a job running "
            .. "at SIGTERM may be abandoned and its message redelivered; set "
            .. "SHUTDOWN_GRACE_SECONDS to at least 31"),
        } },
      { "warns about no drain at all when jobs have a budget",
        { shutdown_grace_seconds = 0 }, {
          warning("cfg.job_timeout_exceeds_grace", "limits.job_timeout_ms="
            .. "30000 is longer than SHUTDOWN_GRACE_SECONDS=0: a job running "
            .. "at SIGTERM may be abandoned and its message redelivered; set "
            .. "SHUTDOWN_GRACE_SECONDS to at least 30"),
        } },
      { "accepts a drain that fits the stop grace period with 2 s to close",
        { stop_grace_period_seconds = 32 }, {} },
      { "warns about a drain one second too long for the stop grace period",
        { stop_grace_period_seconds = 31 }, {
          warning("cfg.grace_exceeds_stop_grace", "SHUTDOWN_GRACE_SECONDS=30 "
            .. "plus 2 s to close does not fit STOP_GRACE_PERIOD_SECONDS=31: "
            .. "the orchestrator kills the worker before it drains; set "
            .. "SHUTDOWN_GRACE_SECONDS to at most 29 or the stop grace period "
            .. "to at least 32s"),
        } },
      { "warns about the default drain under Compose's 10 s stop grace",
        { stop_grace_period_seconds = 10 }, {
          warning("cfg.grace_exceeds_stop_grace", "SHUTDOWN_GRACE_SECONDS=30 "
            .. "plus 2 s to close does not fit STOP_GRACE_PERIOD_SECONDS=10: "
            .. "the orchestrator kills the worker before it drains; set "
            .. "SHUTDOWN_GRACE_SECONDS to at most 8 or the stop grace period "
            .. "to at least 32s"),
        } },
      { "warns about a job budget as long as the broker's consumer timeout",
        { shutdown_grace_seconds = 1800, stop_grace_period_seconds = 1802,
          limits = limits_of({ job_timeout_ms = 1800000 }) }, {
          warning("cfg.job_timeout_exceeds_consumer_timeout",
            "limits.job_timeout_ms=1800000 is not below the broker's "
            .. "consumer_timeout of 1800000 ms: a long job makes RabbitMQ "
            .. "close the channel and redeliver every unacked message; lower "
            .. "job_timeout_ms or raise consumer_timeout"),
        } },
      { "warns when prefetched deliveries wait past the consumer timeout",
        { prefetch = 32, shutdown_grace_seconds = 600,
          stop_grace_period_seconds = 602,
          limits = limits_of({ job_timeout_ms = 600000 }) }, {
          warning("cfg.ack_wait_exceeds_consumer_timeout", "AMQP_PREFETCH=32 "
            .. "over WORKER_CONCURRENCY_PER_WORKER=8 makes a delivery wait up "
            .. "to 4 × limits.job_timeout_ms=600000 = 2400000 ms for its ack, "
            .. "over the broker's consumer_timeout of 1800000 ms; lower "
            .. "AMQP_PREFETCH to at most 24"),
        } },
      { "accepts deliveries that wait exactly the consumer timeout",
        { prefetch = 24, shutdown_grace_seconds = 600,
          stop_grace_period_seconds = 602,
          limits = limits_of({ job_timeout_ms = 600000 }) }, {} },
      { "says when the limit is the machine's memory",
        { memory_limit_source = "meminfo" }, {
          info("cfg.memory_limit_machine", "no container memory limit found: "
            .. "the budget is compared with the machine's 2 GiB (meminfo); "
            .. "set DOCKER_MEMORY_LIMIT to the container's limit"),
        } },
      { "says when the memory limit is unknown",
        { memory_limit_bytes = ABSENT }, {
          info("cfg.memory_limit_unknown", "memory limit unknown: the budget "
            .. "is not compared with anything"),
        } },
    })
  end)


  describe("the memory budget", function()
    it("adds the four terms for the defaults", function()
      local budget = config.check(config_of()).budget
      assert.same({ "lua", "prefetch", "db", "baseline" }, {
        budget.lines[1].term, budget.lines[2].term, budget.lines[3].term,
        budget.lines[4].term })
      assert.equal(512 * MIB + 128 * MIB + 8 * (64 * KIB + 2 * MIB)
        + BASELINE, budget.total_bytes)
      assert.equal(2 * GIB, budget.limit_bytes)
      assert.equal(budget.total_bytes / (2 * GIB), budget.ratio)
    end)

    it("returns every byte count as an integer", function()
      local budget = config.check(config_of({ limits = limits_of({
        lua_memory_bytes = 26843545 }) })).budget
      for _, line in ipairs(budget.lines) do
        assert.equal("integer", math.type(line.bytes), line.term)
      end
      assert.equal("integer", math.type(budget.total_bytes))
      assert.equal("integer", math.type(budget.limit_bytes))
    end)

    it("counts overflow connections in the db term", function()
      local line = config.check(config_of({ db_max_overflow = 2 }))
        .budget.lines[3]
      assert.same({ term = "db", bytes = 10 * (64 * KIB + 2 * MIB),
        formula = "10 connections × (64 KiB + 2 MiB largest message)" }, line)
    end)

    it("leaves out a term whose inputs are unusable and says why", function()
      local budget = config.check(config_of({ concurrency = "8" })).budget
      assert.same({ term = "lua", bytes = 0, formula = "not computed: "
        .. "concurrency or limits.lua_memory_bytes is unusable" },
        budget.lines[1])
      assert.equal(128 * MIB + 8 * (64 * KIB + 2 * MIB) + BASELINE,
        budget.total_bytes)
    end)

    it("reports a ratio of 0 against an unknown limit", function()
      local budget = config.check(config_of({
        memory_limit_bytes = ABSENT })).budget
      assert.equal(0, budget.limit_bytes)
      assert.equal(0, budget.ratio)
    end)
  end)


  describe("odd input", function()
    local CONCURRENCY = "concurrency (WORKER_CONCURRENCY_PER_WORKER) must be "
      .. "a whole number from 1 to 65535, got "
    run_rows({
      { "refuses concurrency as the string \"20\"", { concurrency = "20" },
        { err("cfg.invalid_value", CONCURRENCY .. "\"20\"") } },
      { "refuses concurrency as JSON null", { concurrency = helpers.null },
        { err("cfg.invalid_value", CONCURRENCY .. "userdata") } },
      { "refuses a missing concurrency", { concurrency = ABSENT },
        { err("cfg.invalid_value", CONCURRENCY .. "nil") } },
      { "refuses a fractional concurrency", { concurrency = 8.5 },
        { err("cfg.invalid_value", CONCURRENCY .. "8.5") } },
      { "refuses concurrency as a boolean", { concurrency = true },
        { err("cfg.invalid_value", CONCURRENCY .. "true") } },
      { "refuses concurrency as a table", { concurrency = {} },
        { err("cfg.invalid_value", CONCURRENCY .. "table") } },
      { "refuses a pool size given as a string", { db_pool_size = "8" }, {
        err("cfg.invalid_value", "db_pool_size (DB_POOL_SIZE) must be a whole "
          .. "number from 1 to 65535, got \"8\"") } },
      { "refuses 0 replicas", { replicas = 0 }, {
        err("cfg.invalid_value", "replicas (WORKER_REPLICAS) must be a whole "
          .. "number from 1 to 65535, got 0") } },
      { "refuses a prefetch given as a string", { prefetch = "16" }, {
        err("cfg.invalid_value", "prefetch (AMQP_PREFETCH) must be a whole "
          .. "number from 1 to 65535, got \"16\"") } },
      { "refuses a stop grace period that is not a number",
        { stop_grace_period_seconds = "abc" }, {
          err("cfg.invalid_value", "stop_grace_period_seconds "
            .. "(STOP_GRACE_PERIOD_SECONDS) must be a whole number from 0 to "
            .. "604800, got \"abc\"") } },
      { "refuses a memory limit given as text and compares nothing",
        { memory_limit_bytes = "2g" }, {
          err("cfg.invalid_value", "memory_limit_bytes must be a whole number "
            .. "from 1 to 9007199254740992, got \"2g\""),
          info("cfg.memory_limit_unknown", "memory limit unknown: the budget "
            .. "is not compared with anything") } },
      { "refuses a memory limit source that is not a string",
        { memory_limit_source = 2 }, {
          err("cfg.invalid_value", "memory_limit_source must be a string, "
            .. "got 2") } },
      { "refuses missing limits", { limits = ABSENT }, {
        err("cfg.invalid_value", "limits must be a table, got nil") } },
      { "refuses a message limit given as text",
        { limits = limits_of({ max_message_bytes = "2MB" }) }, {
          err("cfg.invalid_value", "limits.max_message_bytes must be a whole "
            .. "number from 1 to 1099511627776, got \"2MB\"") } },
      { "refuses field limits that are not a table",
        { limits = limits_of({ fields = 3 }) }, {
          err("cfg.invalid_value", "limits.fields must be a table, got 3") } },
      { "refuses a field limit that is not a table",
        { limits = limits_of({ fields = { log = "big" } }) }, {
          err("cfg.invalid_value", "limits.fields.log must be a table "
            .. "{ warn_bytes, max_bytes }, got \"big\"") } },
      { "refuses a field limit under a number",
        { limits = limits_of({ fields = { { max_bytes = 1 } } }) }, {
          err("cfg.invalid_value", "limits.fields keys must be field names, "
            .. "got 1") } },
      { "refuses a field limit without max_bytes",
        { limits = limits_of({ fields = { log = { warn_bytes = 1 } } }) }, {
          err("cfg.invalid_value", "limits.fields.log.max_bytes must be a "
            .. "whole number from 1 to 1099511627776, got nil") } },
    })

    it("refuses a cfg that is not a table", function()
      assert.same({
        err("cfg.invalid_value", "the configuration must be a table, got "
          .. "\"cfg\""),
        info("cfg.memory_limit_unknown", "memory limit unknown: the budget "
          .. "is not compared with anything"),
      }, config.check("cfg").findings)
    end)

    it("refuses NaN and infinity without raising", function()
      for _, value in ipairs({ 0 / 0, math.huge, -math.huge, 1e300 }) do
        local result = config.check(config_of({ concurrency = value }))
        assert.same({ "cfg.invalid_value" }, codes(result))
        assert.is_truthy(result.findings[1].message:find(CONCURRENCY, 1,
          true))
      end
    end)

    -- Every numeric field with every kind of nonsense: never a raise, always
    -- an error finding that names the field.
    local NONSENSE = { "8", true, {}, -1, 0.5, 1e300, math.huge, 0 / 0,
      helpers.null, print }
    local KEYS = { "concurrency", "prefetch", "db_pool_size",
      "db_max_overflow", "replicas", "shutdown_grace_seconds",
      "stop_grace_period_seconds", "consumer_timeout_ms",
      "memory_limit_bytes", "server_max_connections" }
    local LIMIT_KEYS = { "max_message_bytes", "lua_memory_bytes",
      "job_timeout_ms", "max_json_depth" }

    local function names_field(result, name)
      for _, f in ipairs(result.findings) do
        if f.severity == "error" and f.message:find(name, 1, true) then
          return true
        end
      end
      return false
    end

    for _, key in ipairs(KEYS) do
      it("refuses every kind of nonsense in " .. key, function()
        for _, value in ipairs(NONSENSE) do
          local result = config.check(config_of({ [key] = value }))
          assert.is_true(names_field(result, key), tostring(value))
        end
      end)
    end

    for _, key in ipairs(LIMIT_KEYS) do
      it("refuses every kind of nonsense in limits." .. key, function()
        for _, value in ipairs(NONSENSE) do
          local result = config.check(config_of({
            limits = limits_of({ [key] = value }) }))
          assert.is_true(names_field(result, "limits." .. key),
            tostring(value))
        end
      end)
    end
  end)
end)
