-- No-op job for the benchmark (bench/run.sh): accepts every message and
-- touches nothing, so a run measures the host alone (AMQP, gates, JSON
-- decode, the thread pool and the Lua call) without the database.

local function handle()
  return true
end


return { handle = handle }
