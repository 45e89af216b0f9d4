local retry = require "celers.retry"

-- A random source that replays the given values (cycling).
local function seq(...)
  local vals, i = { ... }, 0
  return function()
    i = i % #vals + 1
    return vals[i]
  end
end

local function delays(p, n)
  local out = {}
  for a = 1, n do out[a] = p:delay(a) end
  return out
end

describe("celers.retry", function()
  describe("policy construction", function()
    it("has the documented defaults", function()
      local p = retry.policy()
      assert.equals("exponential", p.strategy)
      assert.equals(1, p.base)
      assert.equals(2, p.factor)
      assert.equals(3600, p.max_delay)
      assert.equals(5, p.max_attempts)
      assert.equals("none", p.jitter)
    end)

    it("rejects bad arguments naming them", function()
      local cases = {
        { { base = -1 }, "'base' must be a non%-negative number" },
        { { base = "1" }, "'base' must be a non%-negative number" },
        { { base = 0 / 0 }, "'base' must be a non%-negative number" },
        { { factor = -2 }, "'factor' must be a non%-negative number" },
        { { factor = 0.5 }, "'factor' must be >= 1" },
        { { max_delay = false }, "'max_delay' must be a non%-negative number" },
        { { max_attempts = 1.5 }, "'max_attempts' must be a non%-negative integer" },
        { { max_attempts = -1 }, "'max_attempts' must be a non%-negative integer" },
        { { strategy = "quadratic" }, "'strategy' must be one of" },
        { { jitter = "some" }, "'jitter' must be one of" },
        { { retry_on = true }, "'retry_on' must be a function" },
        { { random = 4 }, "'random' must be a function" },
        { { bsae = 1 }, "unknown option 'bsae'" },
      }
      for _, c in ipairs(cases) do
        assert.has_error(function() retry.policy(c[1]) end)
        local ok, err = pcall(retry.policy, c[1])
        assert.is_false(ok)
        assert.matches("retry.policy: " .. c[2], err)
      end
      assert.has_error(function() retry.policy("x") end, "retry.policy: 'opts' must be a table")
    end)

    it("allows a factor below 1 for linear (a shrinking step is just a slower linear)", function()
      assert.equals(0.5, retry.policy { strategy = "linear", factor = 0.5 }.factor)
    end)

    it("validates delay and should_retry arguments", function()
      local p = retry.policy()
      assert.has_error(function() p:delay(0) end, "policy:delay: 'attempt' must be a positive integer")
      assert.has_error(function() p:delay(1.5) end, "policy:delay: 'attempt' must be a positive integer")
      assert.has_error(function() p:delay("1") end, "policy:delay: 'attempt' must be a positive integer")
      assert.has_error(function() p:delay(1, -1) end, "policy:delay: 'prev_delay' must be a non-negative number")
      assert.has_error(function() p:should_retry(0) end, "policy:should_retry: 'attempt' must be a positive integer")
    end)

    it("with() derives a new policy and leaves the original alone", function()
      local p = retry.policy { base = 2 }
      local q = p:with { max_attempts = 1, jitter = "full" }
      assert.equals(2, q.base)
      assert.equals(1, q.max_attempts)
      assert.equals("full", q.jitter)
      assert.equals(5, p.max_attempts)
      assert.equals("none", p.jitter)
      assert.has_error(function() p:with { base = -3 } end)
    end)

    it("has a readable tostring", function()
      assert.matches("retry.policy%(exponential base=1 factor=2", tostring(retry.policy()))
    end)
  end)

  describe("delay sequences without jitter", function()
    it("fixed", function()
      assert.same({ 3, 3, 3, 3 }, delays(retry.policy { strategy = "fixed", base = 3 }, 4))
    end)

    it("linear adds factor each attempt", function()
      assert.same({ 1, 3, 5, 7, 9 }, delays(retry.policy { strategy = "linear", base = 1, factor = 2 }, 5))
      assert.same({ 0, 10, 20 }, delays(retry.policy { strategy = "linear", base = 0, factor = 10 }, 3))
    end)

    it("exponential multiplies by factor", function()
      assert.same({ 1, 2, 4, 8, 16, 32 }, delays(retry.policy(), 6))
      assert.same({ 0.5, 1.5, 4.5, 13.5 }, delays(retry.policy { base = 0.5, factor = 3 }, 4))
      assert.same({ 2, 2, 2 }, delays(retry.policy { base = 2, factor = 1 }, 3))
    end)

    it("caps at max_delay", function()
      assert.same({ 1, 2, 4, 8, 10, 10 }, delays(retry.policy { max_delay = 10 }, 6))
      assert.same({ 1, 3, 4, 4 }, delays(retry.policy { strategy = "linear", factor = 2, max_delay = 4 }, 4))
      assert.same({ 2, 2 }, delays(retry.policy { strategy = "fixed", base = 5, max_delay = 2 }, 2))
    end)

    it("stays finite for huge attempt numbers", function()
      assert.equals(3600, retry.policy():delay(100000))
      assert.equals(0, retry.policy { base = 0 }:delay(100000))
    end)
  end)

  describe("jitter", function()
    it("full draws from [0, d)", function()
      local p = retry.policy { jitter = "full", random = seq(0, 0.5, 0.999) }
      assert.equals(0, p:delay(4))       -- d = 8
      assert.equals(4, p:delay(4))
      assert.near(7.992, p:delay(4), 1e-9)
    end)

    it("equal draws from [d/2, d)", function()
      local p = retry.policy { jitter = "equal", random = seq(0, 0.5, 0.999) }
      assert.equals(4, p:delay(4))
      assert.equals(6, p:delay(4))
      assert.near(7.996, p:delay(4), 1e-9)
    end)

    it("full and equal apply after the cap", function()
      local p = retry.policy { jitter = "equal", max_delay = 10, random = seq(0.999) }
      assert.is_true(p:delay(20) < 10)
      assert.is_true(p:delay(20) >= 5)
    end)

    it("decorrelated draws from [base, 3 * prev) and caps", function()
      local p = retry.policy { jitter = "decorrelated", base = 1, max_delay = 20, random = seq(0, 0.5, 0.999) }
      assert.equals(1, p:delay(1))              -- prev defaults to base: [1, 3)
      assert.equals(2, p:delay(1))              -- 1 + 0.5 * 2
      assert.near(2.998, p:delay(1), 1e-9)
      assert.equals(1, p:delay(2, 4))           -- [1, 12)
      assert.equals(6.5, p:delay(2, 4))
      assert.equals(20, p:delay(3, 100))        -- 1 + 0.999 * 299 capped
    end)

    it("decorrelated grows with the attempt when no previous delay is given (as in a worker)", function()
      -- every draw at the top of its range: 0.5 -> 1.5 -> 4.5 -> 13.5 -> 30 (capped)
      local top = retry.presets.network:with { random = function() return 1 end }
      assert.same({ 1.5, 4.5, 13.5, 30, 30 }, { top:delay(1), top:delay(2), top:delay(3), top:delay(4), top:delay(5) })
      -- with math.random: the preset "network" nears its 30 s max by its last attempts
      math.randomseed(11)
      local p = retry.presets.network
      local function median(attempt)
        local d = {}
        for i = 1, 301 do d[i] = p:delay(attempt) end
        table.sort(d)
        return d[151], d[301]
      end
      local m1, top1 = median(1)
      local m8, top8 = median(8)
      assert.is_true(m1 < 1.5 and top1 < 1.5)  -- first retry: [0.5, 1.5)
      assert.is_true(m8 > 5, m8)                 -- grown well past the first range
      assert.equals(30, top8)                    -- some draws reach the cap
      -- a huge attempt number is cheap and stays within the bounds
      local d = p:delay(1e9)
      assert.is_true(d >= 0.5 and d <= 30)
    end)

    it("decorrelated stays within bounds over a long seeded run", function()
      math.randomseed(42)
      local p = retry.policy { jitter = "decorrelated", base = 0.5, max_delay = 30 }
      local prev
      for a = 1, 500 do
        local d = p:delay(a, prev)
        assert.is_true(d >= 0.5 and d <= 30)
        if prev then assert.is_true(d < math.max(0.5, 3 * prev) + 1e-9) end
        prev = d
      end
    end)

    it("full and equal stay within bounds with math.random", function()
      math.randomseed(7)
      local full = retry.policy { jitter = "full", max_delay = 100 }
      local equal = retry.policy { jitter = "equal", max_delay = 100 }
      for a = 1, 12 do
        local d = full:base_delay(a)
        for _ = 1, 50 do
          local f, e = full:delay(a), equal:delay(a)
          assert.is_true(f >= 0 and f < d)
          assert.is_true(e >= d / 2 and e < d)
        end
      end
    end)
  end)

  describe("should_retry", function()
    it("stops after max_attempts retries", function()
      local p = retry.policy { max_attempts = 3 }
      assert.is_true(p:should_retry(1, "e"))
      assert.is_true(p:should_retry(3, "e"))
      assert.is_false(p:should_retry(4, "e"))
      assert.is_false(retry.policy { max_attempts = 0 }:should_retry(1, "e"))
    end)

    it("asks the predicate", function()
      local p = retry.policy {
        retry_on = function(err) return type(err) == "string" and err:find("timeout") ~= nil end,
      }
      assert.is_true(p:should_retry(1, "read timeout"))
      assert.is_false(p:should_retry(1, "syntax error"))
      assert.is_false(p:should_retry(1, nil))
    end)

    it("normalises the predicate's answer to a boolean", function()
      local p = retry.policy { retry_on = function() return 1 end }
      assert.equals(true, p:should_retry(1, "x"))
      p = retry.policy { retry_on = function() return nil end }
      assert.equals(false, p:should_retry(1, "x"))
    end)

    it("by default skips errors marked retryable = false", function()
      local p = retry.policy()
      assert.is_true(p:should_retry(1, "boom"))
      assert.is_true(p:should_retry(1, { code = "lost", retryable = true }))
      assert.is_true(p:should_retry(1, { code = "sql" }))
      assert.is_false(p:should_retry(1, { code = "duplicate", retryable = false }))
    end)
  end)

  describe("call", function()
    local function recorder()
      local slept = {}
      return slept, function(s) slept[#slept + 1] = s end
    end

    -- fn that fails `n` times (returning nil, err), then returns the given values
    local function flaky(n, ...)
      local result, calls = { ... }, 0
      return function()
        calls = calls + 1
        if calls <= n then return nil, "fail " .. calls end
        return (table.unpack or unpack)(result) -- luacheck: ignore 143
      end
    end

    it("returns value, nil, calls at once on success, without sleeping", function()
      local slept, sleep = recorder()
      local r = { retry.call(retry.policy(), function() return 1, 2 end, { sleep = sleep }) }
      assert.same({ 1, nil, 1 }, r) -- the documented shape: value, err, calls
      assert.same({}, slept)
    end)

    it("retries nil, err results, records the delays and counts the calls on success too", function()
      local slept, sleep = recorder()
      local v, err, calls = retry.call(retry.policy(), flaky(3, "ok", "more"), { sleep = sleep })
      assert.equals("ok", v)
      assert.is_nil(err)
      assert.equals(4, calls)
      assert.same({ 1, 2, 4 }, slept)
    end)

    it("gives up after max_attempts retries with nil, last_err, calls", function()
      local slept, sleep = recorder()
      local p = retry.policy { strategy = "linear", base = 1, factor = 1, max_attempts = 2 }
      local v, err, calls = p:call(flaky(10, "never"), { sleep = sleep })
      assert.is_nil(v)
      assert.equals("fail 3", err)
      assert.equals(3, calls)
      assert.same({ 1, 2 }, slept)
    end)

    it("treats raised errors as failures and returns them", function()
      local slept, sleep = recorder()
      local n = 0
      local v, err, calls = retry.call(retry.policy { max_attempts = 1 }, function()
        n = n + 1
        error({ code = "lost", n = n })
      end, { sleep = sleep })
      assert.is_nil(v)
      assert.same({ code = "lost", n = 2 }, err)
      assert.equals(2, calls)
      assert.same({ 1 }, slept)
    end)

    it("passes the call number to fn", function()
      local seen = {}
      retry.call(retry.policy { max_attempts = 2 }, function(n)
        seen[#seen + 1] = n
        return nil, "x"
      end, { sleep = function() end })
      assert.same({ 1, 2, 3 }, seen)
    end)

    it("counts a bare nil as success", function()
      local calls = 0
      local v, err, n = retry.call(retry.policy(), function() calls = calls + 1 end, { sleep = error })
      assert.equals(1, calls)
      assert.is_nil(v)
      assert.is_nil(err)
      assert.equals(1, n)
    end)

    it("stops when the predicate says no", function()
      local slept, sleep = recorder()
      local p = retry.policy { retry_on = function(e) return e ~= "fatal" end }
      local i = 0
      local v, err, calls = p:call(function()
        i = i + 1
        return nil, i < 3 and "transient" or "fatal"
      end, { sleep = sleep })
      assert.is_nil(v)
      assert.equals("fatal", err)
      assert.equals(3, calls)
      assert.same({ 1, 2 }, slept)
    end)

    it("feeds the previous delay to decorrelated jitter", function()
      local slept, sleep = recorder()
      local p = retry.policy { jitter = "decorrelated", base = 1, max_delay = 100, max_attempts = 3, random = seq(0.5) }
      p:call(flaky(10), { sleep = sleep })
      -- 1 + .5*(3-1) = 2; 1 + .5*(6-1) = 3.5; 1 + .5*(10.5-1) = 5.75
      assert.same({ 2, 3.5, 5.75 }, slept)
    end)

    it("calls on_retry before each sleep and skips zero sleeps", function()
      local events, slept = {}, {}
      retry.call({ strategy = "linear", base = 0, factor = 1, max_attempts = 2 }, flaky(5), {
        sleep = function(s) slept[#slept + 1] = s end,
        on_retry = function(a, d, e) events[#events + 1] = { a, d, e } end,
      })
      assert.same({ { 1, 0, "fail 1" }, { 2, 1, "fail 2" } }, events)
      assert.same({ 1 }, slept)
    end)

    it("accepts an options table instead of a policy", function()
      local slept, sleep = recorder()
      assert.equals("y", retry.call({ strategy = "fixed", base = 7 }, flaky(1, "y"), { sleep = sleep }))
      assert.same({ 7 }, slept)
    end)

    it("validates its arguments", function()
      assert.has_error(function() retry.call(retry.policy(), "f") end, "retry.call: 'fn' must be a function")
      assert.has_error(function() retry.call(5, print) end,
        "retry.call: 'policy' must be a policy or an options table")
      assert.has_error(function() retry.call(nil, print, { sleep = 1 }) end,
        "retry.call: 'opts.sleep' must be a function")
      assert.has_error(function() retry.call(nil, print, { on_retry = 1 }) end,
        "retry.call: 'opts.on_retry' must be a function")
      assert.has_error(function() retry.call(nil, print, 3) end, "retry.call: 'opts' must be a table")
    end)

    it("sleeps for real by default (tiny delay)", function()
      local p = retry.policy { strategy = "fixed", base = 0.01, max_attempts = 1 }
      assert.equals("done", p:call(flaky(1, "done")))
    end)
  end)

  describe("presets", function()
    it("are valid policies", function()
      for name, p in pairs(retry.presets) do
        assert.is_number(p:delay(1), name)
        assert.is_true(p:delay(1) >= 0, name)
      end
      assert.is_false(retry.presets.none:should_retry(1, "x"))
      assert.same({ 5, 15, 25 }, delays(retry.presets.linear, 3))
      assert.same({ 1, 2, 4 }, delays(retry.presets.default, 3))
    end)
  end)
end)
