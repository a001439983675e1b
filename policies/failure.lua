-- What happens to a job that failed: run it again later, or dead-letter
-- it. The host calls decide() on the loop thread for every job_error, with
-- the number of earlier attempts read from the message itself (header
-- x-moonrabbit-attempts), so the count survives a worker restart.
--
-- Only failures of the environment are retried: a database that is down
-- or restarting, a connection pool that is exhausted, a serialisation
-- conflict. They go away by themselves. A script error, a memory ceiling
-- or a time budget would fail the same way every time; retrying them only
-- delays the dead letter and burns capacity, so they go there at once.

-- Six attempts with delays 1, 4, 16, 64 and 256 s span about five and a
-- half minutes: long enough for PostgreSQL to restart or fail over, short
-- enough that a message stuck behind a real outage is dead-lettered
-- within the hour an operator would look.
local MAX_ATTEMPTS = 6
local FIRST_DELAY_MS = 1000
local DELAY_FACTOR = 4
local MAX_DELAY_MS = 300000

-- A message that was in flight when the worker died this many times is
-- taken for the cause and dead-lettered on its next delivery unrun. Two
-- crashes can be bad luck (an OOM kill caused by a neighbour); three in a
-- row with the same message in flight are not.
local QUARANTINE_AFTER_CRASHES = 3

-- Error texts that name a passing condition. SQLSTATE classes 08
-- (connection), 53 (insufficient resources), 57P01-57P03 (server shutting
-- down or starting), 40001/40P01 (serialisation failure, deadlock).
-- Matched anywhere: a script's error carries its file and line in front.
local TRANSIENT_PATTERNS = {
  "database unavailable",
  "no database connection free",
  "SQLSTATE 08%d%d%d",
  "SQLSTATE 53%d%d%d",
  "SQLSTATE 57P0[123]",
  "SQLSTATE 40001",
  "SQLSTATE 40P01",
  "server closed the connection unexpectedly",
  "SQLSTATE %?%?%?%?%?: no connection to the server",
  -- libpq's own words for a socket the server closed under a statement;
  -- a batch's pipelined sends meet "Broken pipe" when PostgreSQL stops.
  "could not send data to server",
  "could not receive data from server",
}


local function is_transient(reason)
  if type(reason) ~= "string" then
    return false
  end
  for _, pattern in ipairs(TRANSIENT_PATTERNS) do
    if reason:find(pattern) then
      return true
    end
  end
  return false
end


local function delay_for(attempts)
  local delay = FIRST_DELAY_MS * DELAY_FACTOR ^ attempts
  return math.floor(math.min(delay, MAX_DELAY_MS))
end


-- Takes failure = { reason = string, attempts = integer (earlier
-- attempts, 0 on the first) } and returns { action = "retry" or
-- "dead_letter", delay_ms = integer (retry only), why = string }.
local function decide(failure)
  if type(failure) ~= "table" then
    error("failure.decide: failure must be a table, got " .. type(failure), 2)
  end

  local attempts = math.tointeger(failure.attempts) or 0
  if not is_transient(failure.reason) then
    return { action = "dead_letter", why = "not a transient failure" }
  end
  if attempts + 1 >= MAX_ATTEMPTS then
    return {
      action = "dead_letter",
      why = string.format("transient, but %d attempts made", attempts + 1),
    }
  end
  return {
    action = "retry",
    delay_ms = delay_for(attempts),
    why = "transient failure",
  }
end


local function settings()
  return { quarantine_after_crashes = QUARANTINE_AFTER_CRASHES }
end


return {
  decide = decide,
  settings = settings,
  is_transient = is_transient,
}
