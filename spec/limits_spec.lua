local helpers = require "helpers"
local limits = require "limits"

local context = helpers.context
local MIB = 1024 * 1024
local GIB = 1024 * MIB

local DEFAULTS = {
  max_message_bytes = 2097152,
  max_json_depth = 128,
  fields = {
    conversation_log = { warn_bytes = 512000, max_bytes = 1572864 },
  },
  lua_memory_bytes = 67108864,
  job_timeout_ms = 30000,
  probe_every_messages = 30,
  probe_every_seconds = 10,
  probe_min_interval_ms = 250,
  backlog_alert = 50,
  trim_after_bytes = 1048576,
}


describe("limits", function()
  describe("for_context defaults", function()
    it("returns exactly the default limits when the memory limit is unknown",
      function()
        assert.same(DEFAULTS, limits.for_context(context()))
      end)

    it("returns integers, which the host reads with lua_tointegerx",
      function()
        local result = limits.for_context(context({ memory_limit_bytes = GIB }))
        local log = result.fields.conversation_log
        for _, value in ipairs({ result.max_message_bytes,
          result.max_json_depth, log.warn_bytes, log.max_bytes,
          result.lua_memory_bytes, result.job_timeout_ms,
          result.probe_every_messages, result.probe_every_seconds,
          result.probe_min_interval_ms,
          result.backlog_alert, result.trim_after_bytes }) do
          assert.equal("integer", math.type(value))
        end
      end)

    it("loads and runs with only the sandbox globals", function()
      local sandboxed = helpers.sandbox_load("policies/limits.lua")
      assert.same(DEFAULTS, sandboxed.for_context(context()))
    end)
  end)


  describe("for_context results", function()
    it("are new tables on every call", function()
      local first = limits.for_context(context())
      local second = limits.for_context(context())
      assert.are_not.equal(first, second)
      assert.are_not.equal(first.fields, second.fields)
      assert.are_not.equal(first.fields.conversation_log,
        second.fields.conversation_log)
    end)

    it("do not carry a caller's change into the next call", function()
      local first = limits.for_context(context())
      first.max_message_bytes = 1
      first.fields.conversation_log.max_bytes = 1
      first.fields.extra = { warn_bytes = 1, max_bytes = 2 }

      assert.same(DEFAULTS, limits.for_context(context()))
    end)

    it("leave the ctx untouched", function()
      local ctx = context({ memory_limit_bytes = 512 * MIB })
      limits.for_context(ctx)
      assert.same(context({ memory_limit_bytes = 512 * MIB }), ctx)
    end)
  end)


  describe("field limits", function()
    local memory_limits = { helpers.ABSENT, 256 * MIB, 2 * GIB, 64 * GIB }
    for _, memory in ipairs(memory_limits) do
      it("warn below the maximum, within the body limit, for memory limit "
        .. tostring(memory), function()
          local result = limits.for_context(
            context({ memory_limit_bytes = memory }))
          for name, field in pairs(result.fields) do
            assert.is_true(field.warn_bytes < field.max_bytes, name)
            assert.is_true(field.max_bytes <= result.max_message_bytes, name)
          end
        end)
    end
  end)


  describe("lua_memory_bytes", function()
    local rows = {
      { "stays at 64 MiB when the memory limit is unknown",
        helpers.ABSENT, 8, 64 * MIB },
      { "stays at 64 MiB for 8 states in 2 GiB", 2 * GIB, 8, 64 * MIB },
      { "stays at 64 MiB on a large machine", 64 * GIB, 4, 64 * MIB },
      { "shrinks to a quarter of 512 MiB over 4 states", 512 * MIB, 4,
        32 * MIB },
      { "halves for 16 states in 2 GiB", 2 * GIB, 16, 32 * MIB },
      { "stops at 16 MiB for 8 states in 256 MiB", 256 * MIB, 8, 16 * MIB },
      { "stops at 16 MiB for one state in 8 MiB", 8 * MIB, 1, 16 * MIB },
      { "rounds a share down to whole bytes", 100000007, 1, 25000001 },
      { "takes a float memory limit and returns an integer", 1e9, 5,
        50000000 },
      { "uses the whole states of a fractional concurrency", 2 * GIB, 8.5,
        64 * MIB },
    }
    for _, row in ipairs(rows) do
      local name, memory, concurrency, expected = table.unpack(row)
      it(name, function()
        local result = limits.for_context(context({
          memory_limit_bytes = memory, concurrency = concurrency }))
        assert.equal(expected, result.lua_memory_bytes)
        assert.equal("integer", math.type(result.lua_memory_bytes))
      end)
    end

    it("does not depend on prefetch", function()
      for _, prefetch in ipairs({ 0, 1, 16, 10000 }) do
        local result = limits.for_context(context({
          memory_limit_bytes = 512 * MIB, concurrency = 4,
          prefetch = prefetch }))
        assert.equal(32 * MIB, result.lua_memory_bytes)
      end
    end)
  end)


  describe("caller bugs", function()
    local rows = {
      { "raises when ctx is a string", "ctx",
        "limits.for_context: ctx must be a table, got string" },
      { "raises when ctx is nil", nil,
        "limits.for_context: ctx must be a table, got nil" },
      { "raises when concurrency is missing",
        context({ concurrency = helpers.ABSENT }),
        "limits.for_context: concurrency must be a number >= 1, got nil" },
      { "raises when concurrency is 0", context({ concurrency = 0 }),
        "limits.for_context: concurrency must be a number >= 1, got 0" },
      { "raises when concurrency is a string", context({ concurrency = "8" }),
        "limits.for_context: concurrency must be a number >= 1, got \"8\"" },
      { "raises when memory_limit_bytes is 0",
        context({ memory_limit_bytes = 0 }),
        "limits.for_context: memory_limit_bytes must be a positive number "
          .. "or nil, got 0" },
      { "raises when memory_limit_bytes is a string",
        context({ memory_limit_bytes = "2g" }),
        "limits.for_context: memory_limit_bytes must be a positive number "
          .. "or nil, got \"2g\"" },
    }
    for _, row in ipairs(rows) do
      local name, ctx, message = table.unpack(row, 1, 3)
      it(name, function()
        assert.equal(message, helpers.error_of(limits.for_context, ctx))
      end)
    end

    it("names the caller's line, not the policy's, in the error", function()
      local ok, err = pcall(function()
        local result = limits.for_context("ctx")
        return result
      end)
      assert.is_false(ok)
      assert.is_truthy(err:find("^spec/limits_spec%.lua:%d+: "))
    end)
  end)
end)
