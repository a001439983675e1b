-- Job script for inbound.sh: a message whose id starts with "fail-"
-- fails, so that its retry is published while deliveries stream in;
-- every other message succeeds without reading its body.

local function handle(msg)
  if msg.properties.message_id:sub(1, 5) == "fail-" then
    -- failure.lua retries only what looks like a passing outage.
    error("database unavailable (asked to fail)")
  end
  return true
end


return { handle = handle }
