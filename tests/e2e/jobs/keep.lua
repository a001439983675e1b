-- Keeps the first message's msg table and reads its body during the
-- second job, after the first job's body has been freed: the host must
-- answer nil there, never bytes from freed memory.

local kept


local function handle(msg, host)
  if not kept then
    kept = msg
    return true
  end
  host.log("info", "kept_body", { seen = tostring(kept.body) })
  return true
end


return { handle = handle }
