-- One-line builders for specs: a limits context, a memory sample, a job
-- message, a fake host that records what the job asks of it, and a loader
-- that runs a file in the same restricted environment the host gives
-- policies.

local cjson = require "cjson"

local helpers = {}

-- Stands for "leave this field out" in the overrides given to the builders.
helpers.ABSENT = setmetatable({}, {
  __tostring = function() return "ABSENT" end,
})

helpers.null = cjson.null

-- The globals the host's sandbox offers; everything else is absent.
helpers.SANDBOX_GLOBALS = {
  "string", "table", "math", "utf8",
  "pairs", "ipairs", "next", "select", "type", "tostring", "tonumber",
  "error", "assert", "pcall",
  "setmetatable", "getmetatable", "rawget", "rawset", "rawequal", "rawlen",
}

-- Where the shared corpus sits next to the repository, here and in CI.
helpers.CORPUS = os.getenv("MOONRABBIT_CORPUS")
  or "../shared/corpus/conversations.jsonl"


local function merge(base, over)
  for key, value in pairs(over or {}) do
    if value == helpers.ABSENT then
      base[key] = nil
    else
      base[key] = value
    end
  end
  return base
end


-- Copies over's fields onto base (helpers.ABSENT deletes one); returns
-- base. Specs use it to vary one field of a built example.
helpers.merge = merge


-- Returns a ctx for limits.for_context: memory limit unknown, concurrency
-- 8, prefetch 16, with the fields of over replacing those.
function helpers.context(over)
  return merge({ concurrency = 8, prefetch = 16 }, over)
end


-- Returns a memory sample as the probe takes it in a cgroup v2 container
-- with a 1 GiB limit and a working set of 300 MiB (29 %), no OOM kill and
-- no pressure, with the fields of over replacing those.
function helpers.sample(over)
  return merge({
    rss_bytes = 280 * 1048576,
    limit_bytes = 1024 * 1048576,
    limit_source = "cgroup_v2",
    usage_bytes = 420 * 1048576,
    working_set_bytes = 300 * 1048576,
    cgroup_version = 2,
    oom_kill_events = 0,
    psi_some_avg10 = 0.0,
    psi_full_avg10 = 0.0,
  }, over)
end


-- Returns the limits part of a config.check table: the shipped defaults
-- (2 MiB bodies, 64 MiB Lua ceiling, 30 s jobs), over replacing fields.
function helpers.config_limits(over)
  return merge({
    max_message_bytes = 2 * 1048576,
    max_json_depth = 128,
    lua_memory_bytes = 64 * 1048576,
    job_timeout_ms = 30000,
    fields = {
      conversation_log = { warn_bytes = 500 * 1024, max_bytes = 1536 * 1024 },
    },
  }, over)
end


-- Returns a config.check table that yields no finding: defaults of the
-- host, a 2 GiB cgroup v2 limit and a stop grace period of 40 s, with the
-- fields of over replacing those (limits as a whole: use config_limits).
function helpers.config(over)
  return merge({
    concurrency = 8,
    prefetch = 16,
    db_pool_size = 8,
    db_max_overflow = 0,
    replicas = 1,
    shutdown_grace_seconds = 30,
    stop_grace_period_seconds = 40,
    consumer_timeout_ms = 1800000,
    memory_limit_bytes = 2048 * 1048576,
    memory_limit_source = "cgroup_v2",
    limits = helpers.config_limits(),
  }, over)
end


function helpers.turn(role, content)
  return { role = role, content = content }
end


-- Returns a decoded body with two English turns; over replaces fields.
function helpers.body(over)
  return merge({
    conversation_id = "english-greetings-0001",
    language = "english",
    topic = "greetings",
    conversation_log = {
      helpers.turn("user", "Hello, how are you?"),
      helpers.turn("assistant", "I am fine. How are you?"),
    },
  }, over)
end


-- Returns a message as the host hands it to handle(): body built from
-- body_over, properties from properties_over.
function helpers.message(body_over, properties_over)
  return {
    body = helpers.body(body_over),
    properties = merge({
      message_id = "msg-0001",
      content_type = "application/json",
      redelivered = false,
      delivery_tag = 1,
    }, properties_over),
  }
end


-- Returns a host whose db.query and db.exec record { sql, params } in
-- host.queries and whose log records { level, event, fields } in host.logs.
-- opts.affected is the row count they report (default 1); opts.sent_ahead
-- makes exec report nothing, as the host's does inside a batch;
-- opts.db_error makes them raise that string instead, as the real host
-- does on a database error.
function helpers.fake_host(opts)
  opts = opts or {}
  local host = { queries = {}, logs = {} }

  host.db = {
    query = function(sql, ...)
      host.queries[#host.queries + 1] = { sql = sql, params = table.pack(...) }
      if opts.db_error then
        error(opts.db_error, 0)
      end
      return {}, opts.affected or 1
    end,
  }
  host.db.exec = function(sql, ...)
    local _, affected = host.db.query(sql, ...)
    if opts.sent_ahead then
      return nil
    end
    return affected
  end
  host.log = function(level, event, fields)
    host.logs[#host.logs + 1] = { level = level, event = event,
      fields = fields }
  end
  host.json_encode = cjson.encode
  host.now = function() return 1700000000.25 end
  return host
end


-- Loads the Lua file at path with only SANDBOX_GLOBALS visible; a read of
-- any other global or a write of any global raises. Returns the module.
function helpers.sandbox_load(path)
  local env = {}
  for _, name in ipairs(helpers.SANDBOX_GLOBALS) do
    env[name] = _G[name]
  end
  setmetatable(env, {
    __index = function(_, name)
      error("sandbox: read of global " .. tostring(name), 2)
    end,
    __newindex = function(_, name)
      error("sandbox: write of global " .. tostring(name), 2)
    end,
  })

  local chunk = assert(loadfile(path, "t", env))
  return chunk()
end


-- Returns the error message fn raises with its arguments, without the
-- "file:line: " prefix, or nil when fn returns normally.
function helpers.error_of(fn, ...)
  local ok, err = pcall(fn, ...)
  if ok then
    return nil
  end
  return (tostring(err):gsub("^[^:]*:%d+: ", ""))
end


-- Returns the first n lines of the corpus decoded; fails when the corpus
-- is not where helpers.CORPUS says.
function helpers.corpus(n)
  local file = assert(io.open(helpers.CORPUS, "r"),
    "corpus not found at " .. helpers.CORPUS .. " (set MOONRABBIT_CORPUS)")
  local bodies = {}
  for line in file:lines() do
    bodies[#bodies + 1] = cjson.decode(line)
    if #bodies == n then
      break
    end
  end
  file:close()
  return bodies
end


return helpers
