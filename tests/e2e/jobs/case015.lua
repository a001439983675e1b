-- Job script for case 015: each message names an operation that leaves
-- the pooled connection in one of the states a careless job can leave it.

local function setup(host)
  host.db.query("CREATE TABLE IF NOT EXISTS t (id int PRIMARY KEY, v text)")
  host.db.query("INSERT INTO t VALUES (1, 'x') ON CONFLICT DO NOTHING")
end


local OPS = {
  -- A unique violation inside BEGIN, not rolled back by the job.
  dup = function(host)
    host.db.query("BEGIN")
    host.db.query("INSERT INTO t VALUES (1, 'dup')")
    return true
  end,
  -- An update left uncommitted, and a claim of success.
  open = function(host)
    host.db.query("BEGIN")
    host.db.query("UPDATE t SET v = 'y' WHERE id = 1")
    return true
  end,
  read = function(host)
    local rows = host.db.query("SELECT v FROM t WHERE id = 1")
    local stuck = host.db.query([[
      SELECT count(*) AS n FROM pg_stat_activity
      WHERE state LIKE 'idle in transaction%'
        AND application_name = 'moonrabbit']])
    host.log("info", "read_value", { v = rows[1].v, stuck = stuck[1].n })
    return true
  end,
  -- The backend dies under the job's feet.
  kill = function(host)
    host.db.query("SELECT pg_terminate_backend(pg_backend_pid())")
    return true
  end,
}


local function handle(msg, host)
  local op = OPS[msg.body.op]
  if not op then
    return false, "unknown op"
  end
  return op(host)
end


return { init = setup, handle = handle }
