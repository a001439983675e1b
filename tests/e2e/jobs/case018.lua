-- Job script for case 018 and the time budget: each message names a
-- script from the case's data folder, or a runaway loop, or a probe of
-- how much memory the state holds when a job starts.

local CASE_DATA = os.getenv("CASE_DATA") or "../shared/cases/data/018"


local OPS = {
  hog = function()
    return dofile(CASE_DATA .. "/hog.lua")
  end,
  gc_bomb = function()
    return dofile(CASE_DATA .. "/gc_bomb.lua")
  end,
  catch = function()
    local ok = dofile(CASE_DATA .. "/catch_and_continue.lua")
    return true, ok
  end,
  loop = function()
    local n = 0
    while true do
      n = n + 1
    end
  end,
  -- Catches the budget error and loops on: the budget must still end it.
  loop_catch = function()
    while true do
      pcall(function()
        while true do
        end
      end)
    end
  end,
  -- Overruns inside the database: the statement is cancelled.
  sleep_sql = function(host)
    host.db.query("SELECT pg_sleep(20)")
    return true
  end,
  count = function(host)
    host.log("info", "state_kib", { kib = math.floor(collectgarbage("count")) })
    return true
  end,
  normal = function(host, msg)
    host.log("info", "normal_done", { id = msg.properties.message_id })
    return true
  end,
}


local function handle(msg, host)
  local op = OPS[msg.body.op]
  if not op then
    return false, "unknown op"
  end
  local ok = op(host, msg)
  return ok == true
end


return { handle = handle }
