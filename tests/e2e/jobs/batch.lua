-- A batchable job: inserts one row per message, and for some messages
-- fails after its insert, so the test can see that a failure is rolled
-- back alone while its batch-mates commit.

local function init(host)
  -- k is checked only at COMMIT, so two messages of one batch that share
  -- a k make the whole transaction fail there.
  host.db.query([[CREATE TABLE IF NOT EXISTS b (id text PRIMARY KEY,
    k text UNIQUE DEFERRABLE INITIALLY DEFERRED)]])
  host.db.query([[CREATE TABLE IF NOT EXISTS nums (id text PRIMARY KEY,
    n bigint, x double precision)]])
end


local function handle(msg, host)
  local body = msg.body
  if body.via == "nums" then
    -- JSON numbers arrive as floats; whole ones must reach an integer
    -- column as integers.
    host.db.query("INSERT INTO nums (id, n, x) VALUES ($1, $2, $3)",
      body.id, body.n, body.x)
    return true
  end
  if body.via == "exec" then
    -- Sent ahead inside a batch: a duplicate's failure is known only at
    -- the batch's end, and must still land on this job alone.
    host.db.exec("INSERT INTO b (id, k) VALUES ($1, $2)", body.id, body.k)
    if body.fail == "dup" then
      host.db.exec("INSERT INTO b (id) VALUES ($1)", body.id)
    elseif body.fail == "raise" then
      error("failing on purpose after the insert")
    end
    return true
  end
  if body.fail == "skip" then
    return true -- no statement at all: its savepoint is never made
  elseif body.fail == "deallocate" then
    -- Drops the connection's prepared statements: the host must notice
    -- and prepare the insert again for the jobs after this one.
    host.db.query("DEALLOCATE ALL")
  elseif body.fail == "swallow" then
    -- A failed statement caught by the script leaves the transaction
    -- failed; claiming success must not hide that.
    host.db.query("INSERT INTO b (id) VALUES ($1)", body.id)
    pcall(host.db.query, "SELECT 1/0")
    return true
  end
  host.db.query("INSERT INTO b (id, k) VALUES ($1, $2)", body.id, body.k)
  if body.fail == "raise" then
    error("failing on purpose after the insert")
  elseif body.fail == "refuse" then
    return false, "refused on purpose after the insert"
  elseif body.fail == "dup" then
    host.db.query("INSERT INTO b (id) VALUES ($1)", body.id)
  end
  return true
end


return { init = init, handle = handle, batchable = true }
