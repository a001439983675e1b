-- A batchable job for edge cases of statements sent ahead (host.db.exec):
-- one that drops the connection's prepared statements, and one whose
-- statement outlives the job's time budget. And the text the host makes
-- of number parameters, read back from the server, and a COMMIT slowed
-- by a deferred trigger.

local function init(host)
  host.db.query("CREATE TABLE IF NOT EXISTS p (id text PRIMARY KEY)")
  host.db.query("CREATE SEQUENCE IF NOT EXISTS kills")
  -- A deferred trigger runs at COMMIT, after every job of the batch: it
  -- sleeps for one id and fails as a serialisation conflict for another.
  host.db.query([[
    CREATE OR REPLACE FUNCTION p_slow() RETURNS trigger LANGUAGE plpgsql
    AS $$ BEGIN
      IF NEW.id LIKE 'slow%' THEN PERFORM pg_sleep(30); END IF;
      IF NEW.id LIKE 'conflict%' THEN
        RAISE EXCEPTION 'conflict (asked for)' USING ERRCODE = '40001';
      END IF;
      RETURN NULL;
    END $$]])
  host.db.query("DROP TRIGGER IF EXISTS p_slow ON p")
  host.db.query([[
    CREATE CONSTRAINT TRIGGER p_slow AFTER INSERT ON p
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION p_slow()]])
end


local function handle(msg, host)
  local body = msg.body
  if body.op == "deallocate" then
    -- After the job's own insert: an exec of a prepared statement behind
    -- a DEALLOCATE in the same round trip would fail on its own.
    host.db.exec("INSERT INTO p (id) VALUES ($1)", body.id)
    host.db.exec("DEALLOCATE ALL")
    return true
  elseif body.op == "own_prepare" then
    -- A script's own prepared statement, dropped by name: the host's
    -- statements are still there and must not be prepared again.
    host.db.query("PREPARE mine AS SELECT 1")
    host.db.query("DEALLOCATE mine")
  elseif body.op == "kill" then
    -- Ends its own connection with the batch's statements still queued,
    -- once only: a sequence is not rolled back.
    host.db.exec("INSERT INTO p (id) VALUES ($1)", body.id)
    local rows = host.db.query("SELECT nextval('kills') AS n")
    if rows[1].n == "1" then
      host.db.query("SELECT pg_terminate_backend(pg_backend_pid())")
    end
    return true
  elseif body.op == "numbers" then
    local rows = host.db.query("SELECT concat_ws(',', $1::text, $2::text, "
      .. "$3::text, $4::text, $5::text, $6::text, $7::text, $8::text, "
      .. "$9::text) AS t", 0, -7, math.mininteger, math.maxinteger, 3.0,
      -2.0, 2.5, 0.1, 2.0 ^ 53)
    host.db.exec("INSERT INTO p (id) VALUES ($1)", rows[1].t)
    return true
  elseif body.op == "query" then
    -- Read at once, so the batch's COMMIT has nothing left to read.
    host.db.query("INSERT INTO p (id) VALUES ($1)", body.id)
    return true
  elseif body.op == "sleep" then
    host.db.exec("SELECT pg_sleep(30)")
  end
  host.db.exec("INSERT INTO p (id) VALUES ($1)", body.id)
  return true
end


return { init = init, handle = handle, batchable = true }
