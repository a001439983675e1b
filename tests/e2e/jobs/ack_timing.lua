-- A job that is quick for every message but "slow", which sleeps for a
-- few seconds, so a test can see when the quick ones are acked.

local function handle(msg, host)
  if msg.body.op == "slow" then
    host.log("info", "slow_started", {})
    os.execute("sleep 5")
  end
  -- "level" is one of the line's own keys: the host renames the job's.
  host.log("info", "job_done", { id = msg.properties.message_id,
    level = "mine" })
  return true
end


return { handle = handle }
