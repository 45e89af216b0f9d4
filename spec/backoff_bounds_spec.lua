-- Retry backoff settings of any size: the delay is bounded in C (at most ten years, like
-- every other delay) and the server never computes a power or a date that overflows.
local helper = require "spec.helper"
local celers = require "celers"

local dsn = helper.fresh_dsn("backoff")
local q = helper.sql_string
local TEN_YEARS = 315360000

-- seconds from now to the task's scheduled_at, as the server sees it
local function due_in(id)
  return tonumber(helper.scalar(dsn, "SELECT TIMESTAMPDIFF(MICROSECOND, NOW(6), scheduled_at) / 1000000 "
    .. "FROM celers_tasks WHERE id = " .. q(id)))
end

-- fail the task `times` times through reject; returns the outcomes
local function fail(b, id, times)
  local outcomes = {}
  for i = 1, times do
    -- due now (a retried task waits in 'scheduled' until staging promotes it)
    helper.query(dsn, "UPDATE celers_tasks SET scheduled_at = NOW(6), state = 'pending' WHERE id = " .. q(id))
    local t = assert(b:dequeue())
    assert.equals(id, t.id)
    local ok, how = b:reject(t, { error = "e" .. i })
    assert.is_true(ok, tostring(how))
    outcomes[i] = how
  end
  return outcomes
end

describe("retry backoff bounds", function()
  setup(function()
    local b = assert(celers.connect(dsn))
    assert(b:migrate())
    b:close()
  end)
  before_each(function() helper.query(dsn, "DELETE FROM celers_tasks") end)

  for _, case in ipairs {
    { name = "factor = 1e6", retry = { base = 1, factor = 1e6, max = 3600 }, expect = { 1, 3600, 3600, 3600 } },
    { name = "factor = 1e300", retry = { base = 2, factor = 1e300, max = 1e12 }, expect = { 2, TEN_YEARS, TEN_YEARS } },
    { name = "base and max of 1e12", retry = { base = 1e12, factor = 2, max = 1e12 },
      expect = { TEN_YEARS, TEN_YEARS } },
    { name = "max of 1e12", retry = { base = 1, factor = 1e3, max = 1e12 }, expect = { 1, 1000, 1e6, TEN_YEARS } },
    { name = "factor below 1", retry = { base = 8, factor = 0.5, max = 60 }, expect = { 8, 4, 2 } },
    { name = "base 0", retry = { base = 0, factor = 1e6, max = 60 }, expect = { 0, 0, 0 } },
  } do
    it("reject with " .. case.name .. " retries with a bounded delay", function()
      local b = assert(celers.connect { dsn = dsn, retry = case.retry })
      local id = assert(b:enqueue("t", "x", { max_retries = 1000 }))
      for i, want in ipairs(case.expect) do
        assert.same({ "retry" }, fail(b, id, 1))
        local got = due_in(id)
        assert.near(want, got, 2, case.name .. " attempt " .. i)
        assert.equals(want > 0 and "scheduled" or "pending",
          helper.scalar(dsn, "SELECT state FROM celers_tasks WHERE id = " .. q(id)))
      end
      b:close()
    end)
  end

  it("keeps the backoff exact below the bound (base 1, factor 2, max 3600)", function()
    local b = assert(celers.connect { dsn = dsn, retry = { base = 1, factor = 2, max = 3600 } })
    local id = assert(b:enqueue("t", "x", { max_retries = 20 }))
    for i, want in ipairs { 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 3600, 3600 } do
      fail(b, id, 1)
      assert.near(want, due_in(id), 1, "attempt " .. i)
    end
    b:close()
  end)
end)
