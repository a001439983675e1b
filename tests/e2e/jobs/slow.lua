-- A job that takes about 20 ms of CPU, so a single thread falls behind a
-- large prefetch and jobs queue up in the pool.

local function handle()
  local until_ = os.clock() + 0.02
  while os.clock() < until_ do -- luacheck: ignore 563
  end
  return true
end


return { handle = handle }
