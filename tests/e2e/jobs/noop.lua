-- A job that accepts every message and says so in the log, so a test can
-- tell which messages reached a job script at all.

local function handle(msg, host)
  host.log("info", "job_ran", { id = msg.properties.message_id })
  return true
end


return { handle = handle }
