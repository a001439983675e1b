-- Configuration findings and the memory budget for the worker host.
--
-- The host calls check(cfg) once at start-up (and with `--check-config`)
-- with every setting that shapes load and memory. It answers with findings,
-- each { severity, code, message }: an "error" stops start-up, a "warning"
-- is logged once, an "info" says what the check assumed. Codes are stable
-- identifiers for alerts and tests; messages name the variable to change.
--
-- The memory budget adds up what the worker may hold at worst, term by term,
-- so an operator whose worker does not fit sees which term to shrink.
--
-- Nothing here may raise: a value of the wrong type, out of range or missing
-- becomes a cfg.invalid_value error naming the field, and the rules that
-- need it are skipped. The module does no I/O and keeps no state.

local KIB = 1024
local MIB = 1024 * KIB
local GIB = 1024 * MIB

-- Seed (Python worker): above 20 threads per process, threads contend for
-- the same connections and cores; more replicas scale better.
local CONCURRENCY_WARN_ABOVE = 20

-- Seed (Python worker): past 200 connections PostgreSQL spends its memory
-- on backends (each several MiB) rather than on queries; a pooler is due.
local DB_TOTAL_WARN_ABOVE = 200

-- Peak Lua heap while one body is held as a string and decoded by lua-cjson,
-- divided by the body size. Measured with a counting allocator around
-- push_msg's steps (lua_pushlstring, then cjson.safe.decode) and cross-checked
-- with collectgarbage("count") under lua5.4 with the collector stopped, on
-- 2 MiB bodies: one 1.99 MB string field (case 019) 2.00x; corpus turns in
-- one conversation_log 3.38x; whole corpus messages in an array 3.49x. So 4.
-- Bodies of tiny elements go further (an array of 1s 9.0x, of {} 27.7x);
-- those are bounded per thread by the Lua ceiling, not by this factor.
local DECODE_FACTOR = 4

-- Idle RSS of the moonrabbit binary with the default policies, job script
-- and settings (8 threads, pool of 8, prefetch 16), read from
-- /proc/<pid>/status 3 s after start against the local broker and server,
-- three runs each: 9700 to 9808 kB before the alert and metrics threads
-- (1 thread and 1 connection: 8.9 MB), 13252 to 13356 kB with them. Rounded
-- up to 14 MiB. Idle Lua states and connections are in it, a small overlap
-- with the terms above that keeps the sum on the safe side.
local BASELINE_BYTES = 14 * MIB

-- What one libpq connection holds besides its buffers: measured 38,571 bytes
-- per connection with mallinfo2 over 16 connections to the local server
-- without TLS, rounded up to 64 KiB. libpq grows its buffers to the largest
-- message a connection carried and keeps them, so each connection is also
-- charged one message of max_message_bytes (a job may store its body).
local DB_CONNECTION_BYTES = 64 * KIB

-- All Lua states together get a quarter of the limit (limits.lua), and the
-- prefetched bodies, libpq and the C heap the next quarter. The half that is
-- left is what the memory governor works in (warn 70 %, pause 80 %).
local PREFETCH_SHARE_DIVISOR = 4
local BUDGET_WARN_RATIO = 0.5

-- After the drain deadline the worker still settles what finished, closes
-- the broker connection and the pool, and logs its summary.
local CLOSE_SECONDS = 2

-- Upper bounds that keep every product below 2^63 in integer arithmetic;
-- AMQP's prefetch-count is 16 bits, so nothing sane is above them.
local COUNT_MAX = 65535
local BYTES_MAX = 1 << 40
local MEMORY_MAX = 1 << 53
local SECONDS_MAX = 7 * 86400
local MS_MAX = SECONDS_MAX * 1000


-- Shows a value in a message so that the string "8" and the number 8
-- differ; a table or function is shown by its type, not its address.
local function show(value)
  local kind = type(value)
  if kind == "string" then
    return string.format("%q", value)
  end
  if kind == "number" or kind == "boolean" or kind == "nil" then
    return tostring(value)
  end
  return kind
end


-- Formats bytes for people: whole units when exact, else three figures
-- (1.01 GiB, 25.6 MiB), so that near misses still show.
local function size(bytes)
  local units = { { GIB, "GiB" }, { MIB, "MiB" }, { KIB, "KiB" } }
  for _, unit in ipairs(units) do
    local scale, name = unit[1], unit[2]
    if bytes >= scale then
      if bytes % scale == 0 then
        return string.format("%d %s", bytes // scale, name)
      end
      local fmt = bytes < 10 * scale and "%.2f %s" or "%.1f %s"
      return string.format(fmt, bytes / scale, name)
    end
  end
  return string.format("%d B", bytes)
end


local function finding(severity, code, message)
  return { severity = severity, code = code, message = message }
end


-- Settings the host reads from the environment, with the variable's name
-- for messages; limits come from limits.lua and are named by their field.
local FIELDS = {
  { key = "concurrency", env = "WORKER_CONCURRENCY_PER_WORKER", min = 1,
    max = COUNT_MAX, required = true },
  { key = "db_pool_size", env = "DB_POOL_SIZE", min = 1, max = COUNT_MAX,
    required = true },
  { key = "db_max_overflow", env = "DB_MAX_OVERFLOW", min = 0,
    max = COUNT_MAX, default = 0 },
  { key = "replicas", env = "WORKER_REPLICAS", min = 1, max = COUNT_MAX,
    default = 1 },
  { key = "shutdown_grace_seconds", env = "SHUTDOWN_GRACE_SECONDS", min = 0,
    max = SECONDS_MAX },
  { key = "stop_grace_period_seconds", env = "STOP_GRACE_PERIOD_SECONDS",
    min = 0, max = SECONDS_MAX },
  { key = "consumer_timeout_ms", min = 1, max = MS_MAX },
  { key = "memory_limit_bytes", min = 1, max = MEMORY_MAX },
  { key = "server_max_connections", min = 1, max = COUNT_MAX * COUNT_MAX },
}

local LIMIT_FIELDS = {
  { key = "max_message_bytes", min = 1, max = BYTES_MAX, required = true },
  { key = "lua_memory_bytes", min = 1, max = BYTES_MAX, required = true },
  { key = "job_timeout_ms", min = 1, max = MS_MAX, required = true },
  { key = "max_json_depth", min = 1, max = COUNT_MAX },
}


-- Returns the field's name as messages show it: "concurrency
-- (WORKER_CONCURRENCY_PER_WORKER)" for a setting, the path otherwise.
local function label(name, env)
  if env then
    return name .. " (" .. env .. ")"
  end
  return name
end


-- Takes a value and its bounds; returns it as an integer when it is a
-- number with a whole value in [min, max], else nil. Strings are refused
-- even when they hold digits: the host passes numbers.
local function whole(value, min, max)
  if type(value) ~= "number" then
    return nil
  end
  local n = math.tointeger(value)
  if n == nil or n < min or n > max then
    return nil
  end
  return n
end


-- Reads field spec f of table t into out[f.key]; appends an error to
-- findings when the value is unusable or a required one is missing.
local function read_field(t, f, name, out, findings)
  local value = t[f.key]
  if value == nil and not f.required then
    out[f.key] = f.default
    return
  end

  local n = whole(value, f.min, f.max)
  if n == nil then
    findings[#findings + 1] = finding("error", "cfg.invalid_value",
      string.format("%s must be a whole number from %d to %d, got %s",
        label(name, f.env), f.min, f.max, show(value)))
  end
  out[f.key] = n
end


-- Prefetch 0 means "no limit" to the broker, so it gets its own code; any
-- other unusable value is an invalid one.
local function read_prefetch(cfg, out, findings)
  local value = cfg.prefetch
  if value == nil or value == 0 then
    findings[#findings + 1] = finding("error", "cfg.prefetch_unbounded",
      "prefetch (AMQP_PREFETCH) is " .. (value == nil and "unset" or "0")
      .. ", which the broker reads as unbounded: it pushes the whole "
      .. "backlog into memory; set AMQP_PREFETCH to at least "
      .. "WORKER_CONCURRENCY_PER_WORKER")
    return
  end
  read_field(cfg, { key = "prefetch", env = "AMQP_PREFETCH", min = 1,
    max = COUNT_MAX, required = true }, "prefetch", out, findings)
end


-- Reads limits.fields into a list sorted by name, so findings come in a
-- stable order.
local function read_field_limits(fields, out, findings)
  if fields == nil then
    return
  end
  if type(fields) ~= "table" then
    findings[#findings + 1] = finding("error", "cfg.invalid_value",
      "limits.fields must be a table, got " .. show(fields))
    return
  end

  local names = {}
  for name in pairs(fields) do
    names[#names + 1] = name
  end
  table.sort(names, function(a, b) return tostring(a) < tostring(b) end)

  for _, name in ipairs(names) do
    local prefix = "limits.fields." .. tostring(name)
    local entry = fields[name]
    if type(name) ~= "string" then
      findings[#findings + 1] = finding("error", "cfg.invalid_value",
        "limits.fields keys must be field names, got " .. show(name))
    elseif type(entry) ~= "table" then
      findings[#findings + 1] = finding("error", "cfg.invalid_value",
        prefix .. " must be a table { warn_bytes, max_bytes }, got "
        .. show(entry))
    else
      local limit = { name = name }
      read_field(entry, { key = "max_bytes", min = 1, max = BYTES_MAX,
        required = true }, prefix .. ".max_bytes", limit, findings)
      read_field(entry, { key = "warn_bytes", min = 0, max = BYTES_MAX },
        prefix .. ".warn_bytes", limit, findings)
      out[#out + 1] = limit
    end
  end
end


-- Reads cfg.limits into out.limits; nil when it is not a table.
local function read_limits(limits, out, findings)
  if type(limits) ~= "table" then
    findings[#findings + 1] = finding("error", "cfg.invalid_value",
      "limits must be a table, got " .. show(limits))
    return
  end

  local lim = { fields = {} }
  for _, f in ipairs(LIMIT_FIELDS) do
    read_field(limits, f, "limits." .. f.key, lim, findings)
  end
  read_field_limits(limits.fields, lim.fields, findings)
  out.limits = lim
end


-- Takes the cfg as the host passes it; returns the values the rules may
-- trust (nil where unusable) and the error findings for the rest.
local function read_config(cfg)
  local v, findings = {}, {}
  if type(cfg) ~= "table" then
    findings[1] = finding("error", "cfg.invalid_value",
      "the configuration must be a table, got " .. show(cfg))
    return v, findings
  end

  for _, f in ipairs(FIELDS) do
    read_field(cfg, f, f.key, v, findings)
  end
  read_prefetch(cfg, v, findings)

  local source = cfg.memory_limit_source
  if source ~= nil and type(source) ~= "string" then
    findings[#findings + 1] = finding("error", "cfg.invalid_value",
      "memory_limit_source must be a string, got " .. show(source))
  elseif type(source) == "string" then
    v.memory_limit_source = source
  end

  read_limits(cfg.limits, v, findings)
  return v, findings
end


-- Returns the limits table or an empty one, so rules may index it.
local function limits_of(v)
  return v.limits or { fields = {} }
end


-- Connections one replica may open: the pool plus what may overflow it.
local function connections(v)
  if v.db_pool_size == nil or v.db_max_overflow == nil then
    return nil
  end
  return v.db_pool_size + v.db_max_overflow
end


-- Returns the text "WORKER_REPLICAS=r × (DB_POOL_SIZE=p + DB_MAX_OVERFLOW=o)
-- = n database connections", or nil when a term is unusable.
local function db_total(v)
  local per = connections(v)
  if per == nil or v.replicas == nil then
    return nil
  end
  local total = v.replicas * per
  return total, string.format("WORKER_REPLICAS=%d × (DB_POOL_SIZE=%d + "
    .. "DB_MAX_OVERFLOW=%d) = %d database connections", v.replicas,
    v.db_pool_size, v.db_max_overflow, total)
end


-- ---- the budget ----------------------------------------------------------

-- Each term returns bytes and the arithmetic, or nil and what is missing.
local TERMS = {
  { term = "lua", bytes = function(v)
      local lua = limits_of(v).lua_memory_bytes
      if v.concurrency == nil or lua == nil then
        return nil, "concurrency or limits.lua_memory_bytes"
      end
      return v.concurrency * lua, string.format("%d threads × %s Lua ceiling",
        v.concurrency, size(lua))
    end },
  { term = "prefetch", bytes = function(v)
      local max = limits_of(v).max_message_bytes
      if v.prefetch == nil or max == nil then
        return nil, "prefetch or limits.max_message_bytes"
      end
      return v.prefetch * max * DECODE_FACTOR,
        string.format("%d deliveries × %s max message × %d decode factor",
          v.prefetch, size(max), DECODE_FACTOR)
    end },
  { term = "db", bytes = function(v)
      local max = limits_of(v).max_message_bytes
      local n = connections(v)
      if n == nil or max == nil then
        return nil, "db_pool_size, db_max_overflow or limits.max_message_bytes"
      end
      return n * (DB_CONNECTION_BYTES + max),
        string.format("%d connections × (%s + %s largest message)", n,
          size(DB_CONNECTION_BYTES), size(max))
    end },
  { term = "baseline", bytes = function()
      return BASELINE_BYTES, "idle RSS measured with the default settings"
    end },
}


-- Takes the trusted values; returns the budget table of the answer.
local function budget_for(v)
  local lines, total = {}, 0
  for _, t in ipairs(TERMS) do
    local bytes, formula = t.bytes(v)
    if bytes == nil then
      bytes, formula = 0, "not computed: " .. formula .. " is unusable"
    end
    lines[#lines + 1] = { term = t.term, bytes = bytes, formula = formula }
    total = total + bytes
  end

  local limit = v.memory_limit_bytes or 0
  return {
    lines = lines,
    total_bytes = total,
    limit_bytes = limit,
    ratio = limit > 0 and total / limit or 0.0,
  }
end


-- Returns the largest line of the budget.
local function largest(budget)
  local top = budget.lines[1]
  for _, line in ipairs(budget.lines) do
    if line.bytes > top.bytes then
      top = line
    end
  end
  return top
end


-- ---- rules ---------------------------------------------------------------
-- Each takes the trusted values and the budget and returns its findings,
-- if any; a rule whose inputs are unusable stays quiet (their error is out).

local function concurrency_high(v)
  local n = v.concurrency
  if n and n > CONCURRENCY_WARN_ABOVE then
    return finding("warning", "cfg.concurrency_high", string.format(
      "WORKER_CONCURRENCY_PER_WORKER=%d is above %d: threads contend for "
      .. "the same connections and cores; run more replicas instead", n,
      CONCURRENCY_WARN_ABOVE))
  end
end


-- The host's pool is fixed at DB_POOL_SIZE, so overflow does not help here.
local function pool_lt_concurrency(v)
  local pool, n = v.db_pool_size, v.concurrency
  if pool and n and pool < n then
    return finding("warning", "cfg.pool_lt_concurrency", string.format(
      "DB_POOL_SIZE=%d is below WORKER_CONCURRENCY_PER_WORKER=%d: threads "
      .. "wait for a connection while their messages stay unacked; set "
      .. "DB_POOL_SIZE to at least %d", pool, n, n))
  end
end


local function db_total_high(v)
  local total, text = db_total(v)
  if total and total > DB_TOTAL_WARN_ABOVE then
    return finding("warning", "cfg.db_total_high", string.format(
      "%s, above %d: put a pooler such as PgBouncer in front of PostgreSQL "
      .. "or shrink the pools", text, DB_TOTAL_WARN_ABOVE))
  end
end


local function db_exceeds_server(v)
  local total, text = db_total(v)
  local server = v.server_max_connections
  if total and server and total > server then
    return finding("warning", "cfg.db_exceeds_server", string.format(
      "%s, above the server's max_connections=%d: the last connections "
      .. "are refused (SQLSTATE 53300); shrink the pools or raise "
      .. "max_connections", text, server))
  end
end


local function overflow_unused(v)
  local overflow = v.db_max_overflow
  if overflow and overflow > 0 and v.db_pool_size then
    return finding("info", "cfg.overflow_unused", string.format(
      "DB_MAX_OVERFLOW=%d is counted in the connection totals, but the host "
      .. "opens a fixed pool of DB_POOL_SIZE=%d connections and never more",
      overflow, v.db_pool_size))
  end
end


local function prefetch_lt_concurrency(v)
  local prefetch, n = v.prefetch, v.concurrency
  if prefetch and n and prefetch < n then
    return finding("warning", "cfg.prefetch_lt_concurrency", string.format(
      "AMQP_PREFETCH=%d is below WORKER_CONCURRENCY_PER_WORKER=%d: at most "
      .. "%d of the threads ever have work; set AMQP_PREFETCH to at least %d",
      prefetch, n, prefetch, n))
  end
end


local function prefetch_memory_high(v)
  local max, limit = limits_of(v).max_message_bytes, v.memory_limit_bytes
  if not (v.prefetch and max and limit) then
    return nil
  end

  local bytes = v.prefetch * max * DECODE_FACTOR
  local share = limit // PREFETCH_SHARE_DIVISOR
  if bytes > share then
    local fits = math.max(1, share // (max * DECODE_FACTOR))
    return finding("warning", "cfg.prefetch_memory_high", string.format(
      "AMQP_PREFETCH=%d × %s max message × %d decode factor = %s, above a "
      .. "quarter of the %s memory limit: lower AMQP_PREFETCH to at most %d",
      v.prefetch, size(max), DECODE_FACTOR, size(bytes), size(limit), fits))
  end
end


local function memory_budget(v, budget)
  local limit = v.memory_limit_bytes
  if not limit or budget.ratio <= BUDGET_WARN_RATIO then
    return nil
  end

  local top = largest(budget)
  local head = string.format("memory budget %s is %.1f %% of the %s memory "
    .. "limit (%s)", size(budget.total_bytes), 100 * budget.ratio,
    size(limit), v.memory_limit_source or "unknown source")
  if budget.ratio > 1 then
    return finding("warning", "cfg.memory_budget_exceeded", head
      .. ": a worst-case burst does not fit, and only the memory governor "
      .. "stands between it and an OOM kill; shrink the largest term, "
      .. top.term .. " (" .. size(top.bytes) .. ")")
  end
  return finding("warning", "cfg.memory_budget_high", head
    .. ", above 50 %: little is left for the governor to work in; the "
    .. "largest term is " .. top.term .. " (" .. size(top.bytes) .. ")")
end


local function message_exceeds_memory(v)
  local max, limit = limits_of(v).max_message_bytes, v.memory_limit_bytes
  if not (max and limit) then
    return nil
  end

  local need = max * DECODE_FACTOR + BASELINE_BYTES
  if need > limit then
    return finding("error", "cfg.message_exceeds_memory", string.format(
      "limits.max_message_bytes (%s) × %d decode factor + %s baseline = "
      .. "%s, above the %s memory limit: one message of the accepted size "
      .. "cannot be processed; lower max_message_bytes in limits.lua",
      size(max), DECODE_FACTOR, size(BASELINE_BYTES), size(need),
      size(limit)))
  end
end


local function lua_memory_lt_message(v)
  local lim = limits_of(v)
  local lua, max = lim.lua_memory_bytes, lim.max_message_bytes
  if lua and max and lua < max * DECODE_FACTOR then
    return finding("warning", "cfg.lua_memory_lt_message", string.format(
      "limits.lua_memory_bytes (%s) is below limits.max_message_bytes (%s) "
      .. "× %d decode factor = %s: the largest messages the gates accept "
      .. "cannot be decoded and fail as job_error", size(lua), size(max),
      DECODE_FACTOR, size(max * DECODE_FACTOR)))
  end
end


-- Returns one finding per contradicting field limit, in name order.
local function field_limits(v)
  local lim, found = limits_of(v), {}
  local message = lim.max_message_bytes
  for _, f in ipairs(lim.fields) do
    local name = "limits.fields." .. f.name
    if f.max_bytes and message and f.max_bytes > message then
      found[#found + 1] = finding("warning", "cfg.field_exceeds_message",
        string.format("%s.max_bytes (%s) is above limits.max_message_bytes "
          .. "(%s): the field limit can never apply", name,
          size(f.max_bytes), size(message)))
    end
    if f.max_bytes and f.warn_bytes and f.warn_bytes > f.max_bytes then
      found[#found + 1] = finding("warning", "cfg.field_warn_above_max",
        string.format("%s.warn_bytes (%s) is above its max_bytes (%s): the "
          .. "warning never fires before the refusal", name,
          size(f.warn_bytes), size(f.max_bytes)))
    end
  end
  return table.unpack(found)
end


local function job_timeout_exceeds_grace(v)
  local job, grace = limits_of(v).job_timeout_ms, v.shutdown_grace_seconds
  if job and grace and job > grace * 1000 then
    return finding("warning", "cfg.job_timeout_exceeds_grace", string.format(
      "limits.job_timeout_ms=%d is longer than SHUTDOWN_GRACE_SECONDS=%d: a "
      .. "job running at SIGTERM may be abandoned and its message "
      .. "redelivered; set SHUTDOWN_GRACE_SECONDS to at least %d", job,
      grace, (job + 999) // 1000))
  end
end


local function grace_exceeds_stop_grace(v)
  local grace, stop = v.shutdown_grace_seconds, v.stop_grace_period_seconds
  if grace and stop and grace + CLOSE_SECONDS > stop then
    return finding("warning", "cfg.grace_exceeds_stop_grace", string.format(
      "SHUTDOWN_GRACE_SECONDS=%d plus %d s to close does not fit "
      .. "STOP_GRACE_PERIOD_SECONDS=%d: the orchestrator kills the worker "
      .. "before it drains; set SHUTDOWN_GRACE_SECONDS to at most %d or the "
      .. "stop grace period to at least %ds", grace, CLOSE_SECONDS, stop,
      math.max(0, stop - CLOSE_SECONDS), grace + CLOSE_SECONDS))
  end
end


-- A delivery is acked only when its job ends; one that waits behind busy
-- threads waits a whole job budget per round.
local function consumer_timeout(v)
  local job, timeout = limits_of(v).job_timeout_ms, v.consumer_timeout_ms
  if not (job and timeout) then
    return nil
  end
  if job >= timeout then
    return finding("warning", "cfg.job_timeout_exceeds_consumer_timeout",
      string.format("limits.job_timeout_ms=%d is not below the broker's "
        .. "consumer_timeout of %d ms: a long job makes RabbitMQ close the "
        .. "channel and redeliver every unacked message; lower "
        .. "job_timeout_ms or raise consumer_timeout", job, timeout))
  end

  local prefetch, n = v.prefetch, v.concurrency
  if not (prefetch and n) then
    return nil
  end
  local rounds = (prefetch + n - 1) // n
  if rounds * job > timeout then
    return finding("warning", "cfg.ack_wait_exceeds_consumer_timeout",
      string.format("AMQP_PREFETCH=%d over WORKER_CONCURRENCY_PER_WORKER=%d "
        .. "makes a delivery wait up to %d × limits.job_timeout_ms=%d = %d "
        .. "ms for its ack, over the broker's consumer_timeout of %d ms; "
        .. "lower AMQP_PREFETCH to at most %d", prefetch, n, rounds, job,
        rounds * job, timeout, n * (timeout // job)))
  end
end


local function memory_limit_source(v)
  local limit = v.memory_limit_bytes
  if limit == nil then
    return finding("info", "cfg.memory_limit_unknown",
      "memory limit unknown: the budget is not compared with anything")
  end
  if v.memory_limit_source == "meminfo" then
    return finding("info", "cfg.memory_limit_machine", string.format(
      "no container memory limit found: the budget is compared with the "
      .. "machine's %s (meminfo); set DOCKER_MEMORY_LIMIT to the "
      .. "container's limit", size(limit)))
  end
end


local RULES = {
  concurrency_high,
  pool_lt_concurrency,
  db_total_high,
  db_exceeds_server,
  overflow_unused,
  prefetch_lt_concurrency,
  prefetch_memory_high,
  message_exceeds_memory,
  memory_budget,
  lua_memory_lt_message,
  field_limits,
  job_timeout_exceeds_grace,
  grace_exceeds_stop_grace,
  consumer_timeout,
  memory_limit_source,
}


-- Accepts cfg = { concurrency, prefetch, db_pool_size, db_max_overflow,
-- replicas, shutdown_grace_seconds, stop_grace_period_seconds,
-- consumer_timeout_ms, memory_limit_bytes, memory_limit_source,
-- server_max_connections?, limits = { max_message_bytes, max_json_depth,
-- lua_memory_bytes, job_timeout_ms, fields } }, any of it possibly missing
-- or wrong. Returns a new table owned by the caller: { findings = { {
-- severity, code, message } ... }, budget = { lines = { { term, bytes,
-- formula } ... }, total_bytes, limit_bytes, ratio } }.
local function check(cfg)
  local v, findings = read_config(cfg)
  local budget = budget_for(v)

  for _, rule in ipairs(RULES) do
    for _, found in ipairs({ rule(v, budget) }) do
      findings[#findings + 1] = found
    end
  end
  return { findings = findings, budget = budget }
end


return {
  check = check,
}
