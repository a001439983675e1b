-- Size limits, probe cadence and backlog threshold for the worker host.
--
-- The host calls for_context(ctx) once at start-up and at each reload, checks
-- every field of the result and caches the numbers in C, so nothing here runs
-- on the hot path. The module is loaded in a sandbox with no I/O and no
-- require; it keeps no state between calls.
--
-- Only lua_memory_bytes follows the context. The message and field limits
-- are a contract with the producers: if they moved with each replica's
-- memory, one message could be accepted by one replica and dead-lettered by
-- another. Prefetch does not shape anything here; the config policy weighs
-- prefetch x max_message_bytes against the memory limit and warns.

local KIB = 1024
local MIB = 1024 * KIB

-- Case 001: bodies "over 2 MB" are refused, so exactly 2 MiB still passes.
-- The host compares with ">", before buffering the body.
local MAX_MESSAGE_BYTES = 2 * MIB

-- Real messages nest 3 or 4 levels; lua-cjson's own ceiling is 1000, far
-- past what the C and Lua stacks should spend on a single body (case 006).
local MAX_JSON_DEPTH = 128

-- The largest conversation_log in the sample corpus is under 8 KB, so a log
-- of 500 KiB is already unusual and worth a warning in the log.
local CONVERSATION_LOG_WARN_BYTES = 500 * KIB

-- Leaves room under MAX_MESSAGE_BYTES for the other fields of the body while
-- keeping the log, the one field that grows without bound, well below it.
local CONVERSATION_LOG_MAX_BYTES = 1536 * KIB

-- A body at the field limit, held, decoded and analysed by the default job,
-- peaks near 10 MiB of Lua heap (measured on corpus turns and on 230,000
-- distinct words); 64 MiB leaves room for scripts that do more.
local LUA_MEMORY_BYTES = 64 * MIB

-- Below this the largest message the gates accept could not be analysed,
-- and every large but valid message would become a job_error.
local MIN_LUA_MEMORY_BYTES = 16 * MIB

-- All Lua states together may take a quarter of the memory limit. The
-- config policy warns past half, and the other quarter is for prefetched
-- bodies, libpq results and the C heap.
local LUA_SHARE_DIVISOR = 4

-- The upsert takes milliseconds; 30 s only trips on a stuck database or a
-- runaway script, and stays under the broker's consumer timeout.
local JOB_TIMEOUT_MS = 30000

-- A memory sample reads a few /proc and cgroup files (well under a
-- millisecond); every 30 messages or 10 s catches growth from a burst of
-- 2 MiB bodies before it adds up, while an idle worker is still watched.
local PROBE_EVERY_MESSAGES = 30
local PROBE_EVERY_SECONDS = 10
-- ...but the message count asks for a sample at most every 250 ms: at
-- thousands of small messages a second, 30 messages is no time at all for
-- memory to grow, and each sample is a log line.
local PROBE_MIN_INTERVAL_MS = 250

-- Prefetch bounds what is in flight; fifty jobs waiting for a thread means
-- the pool is far behind the broker and somebody should look.
local BACKLOG_ALERT = 50

-- After a message whose body is larger than this, its worker runs a full
-- Lua collection and malloc_trim, so a burst of large bodies does not leave
-- its peak behind as the new floor. Below 1 MiB the trim would cost more
-- than the few pages it returns.
local TRIM_AFTER_BYTES = 1 * MIB


-- Shows a value in an error so that the string "8" and the number 8 differ.
local function show(value)
  if type(value) == "string" then
    return string.format("%q", value)
  end
  return tostring(value)
end


-- Raises for a context the host should never build: it validates the
-- configuration before asking for limits.
local function check_context(ctx)
  if type(ctx) ~= "table" then
    error("limits.for_context: ctx must be a table, got " .. type(ctx), 3)
  end

  local limit = ctx.memory_limit_bytes
  if limit ~= nil and (type(limit) ~= "number" or limit <= 0) then
    error("limits.for_context: memory_limit_bytes must be a positive "
      .. "number or nil, got " .. show(limit), 3)
  end

  local concurrency = ctx.concurrency
  if type(concurrency) ~= "number" or concurrency < 1 then
    error("limits.for_context: concurrency must be a number >= 1, got "
      .. show(concurrency), 3)
  end
end


-- Takes memory_limit_bytes (nil when unknown) and concurrency; returns the
-- per-state ceiling: the default, lowered when a quarter of the limit split
-- across the worker states is smaller, never below MIN_LUA_MEMORY_BYTES.
local function lua_memory_for(memory_limit_bytes, concurrency)
  if memory_limit_bytes == nil then
    return LUA_MEMORY_BYTES
  end

  local states = math.floor(concurrency)
  local share = math.floor(memory_limit_bytes / (LUA_SHARE_DIVISOR * states))
  return math.max(MIN_LUA_MEMORY_BYTES, math.min(LUA_MEMORY_BYTES, share))
end


-- Accepts ctx = { memory_limit_bytes = int or nil, concurrency = int,
-- prefetch = int } and returns a new table of limits owned by the caller.
local function for_context(ctx)
  check_context(ctx)

  return {
    max_message_bytes = MAX_MESSAGE_BYTES,
    max_json_depth = MAX_JSON_DEPTH,
    fields = {
      conversation_log = {
        warn_bytes = CONVERSATION_LOG_WARN_BYTES,
        max_bytes = CONVERSATION_LOG_MAX_BYTES,
      },
    },
    lua_memory_bytes = lua_memory_for(ctx.memory_limit_bytes,
      ctx.concurrency),
    job_timeout_ms = JOB_TIMEOUT_MS,
    probe_every_messages = PROBE_EVERY_MESSAGES,
    probe_every_seconds = PROBE_EVERY_SECONDS,
    probe_min_interval_ms = PROBE_MIN_INTERVAL_MS,
    backlog_alert = BACKLOG_ALERT,
    trim_after_bytes = TRIM_AFTER_BYTES,
  }
end


return {
  for_context = for_context,
}
