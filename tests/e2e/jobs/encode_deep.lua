-- Builds a table nested 2000 deep and asks the host to encode it: the
-- encoder must answer with an error the job can catch, not abort.

local function handle(_, host)
  local t = {}
  local inner = t
  for _ = 1, 2000 do
    inner[1] = {}
    inner = inner[1]
  end
  local ok, err = pcall(host.json_encode, t)
  host.log("info", "encode_deep", { ok = tostring(ok), err = err })
  return true
end


return { handle = handle }
