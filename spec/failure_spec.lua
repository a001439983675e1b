local failure = require "failure"


describe("failure", function()
  describe("decide", function()
    local rows = {
      { "SQLSTATE 08006: connection failure", 0, "retry", 1000 },
      { "SQLSTATE 57P01: terminating connection", 1, "retry", 4000 },
      { "database unavailable: failed to reconnect", 2, "retry", 16000 },
      { "scripts/analyze_conversation.lua:504: database unavailable: x", 0,
        "retry", 1000 },
      { "no database connection free within 30000 ms", 3, "retry", 64000 },
      { "SQLSTATE 40P01: deadlock detected", 4, "retry", 256000 },
      { "SQLSTATE ?????: could not send data to server: Broken pipe", 0,
        "retry", 1000 },
      { "SQLSTATE ?????: could not receive data from server: Connection "
        .. "reset by peer", 1, "retry", 4000 },
      { "SQLSTATE 08006: connection failure", 5, "dead_letter", nil },
      { "SQLSTATE 23505: duplicate key value", 0, "dead_letter", nil },
      { "job exceeded its time budget of 500 ms", 0, "dead_letter", nil },
      { "job reached the Lua memory ceiling of 67108864 bytes", 0,
        "dead_letter", nil },
      { "scripts/x.lua:3: attempt to index a nil value", 0, "dead_letter",
        nil },
    }
    for _, row in ipairs(rows) do
      local reason, attempts, action, delay = row[1], row[2], row[3], row[4]
      it(string.format("answers %s for %q after %d attempts", action,
        reason, attempts), function()
        local d = failure.decide({ reason = reason, attempts = attempts })
        assert.equal(action, d.action)
        assert.equal(delay, d.delay_ms)
      end)
    end

    it("treats a missing attempt count as the first attempt", function()
      local d = failure.decide({ reason = "SQLSTATE 53300: too many" })
      assert.same({ "retry", 1000 }, { d.action, d.delay_ms })
    end)

    it("says why it dead-letters after the last attempt", function()
      local d = failure.decide({ reason = "SQLSTATE 08006: x", attempts = 5 })
      assert.equal("transient, but 6 attempts made", d.why)
    end)

    it("raises for a caller that passes no table", function()
      assert.has_error(function() failure.decide("x") end,
        "failure.decide: failure must be a table, got string")
    end)
  end)

  describe("settings", function()
    it("quarantines after three crashes", function()
      assert.equal(3, failure.settings().quarantine_after_crashes)
    end)
  end)
end)
