local circuit_breaker = require "celers.circuit_breaker"

local function fake_clock(start)
  local c = { now = start or 1000 }
  c.fn = function() return c.now end
  return c
end

local function ok_fn(...) return "ok", ... end
local function fail_fn() return nil, "boom" end
local function raise_fn() error("kaput", 0) end

describe("celers.circuit_breaker", function()
  local clock, cb, changes

  before_each(function()
    clock = fake_clock()
    cb = circuit_breaker.new { name = "db", failure_threshold = 3, success_threshold = 2,
                               open_timeout = 10, clock = clock.fn }
    changes = {}
    cb:on_change(function(from, to) changes[#changes + 1] = from .. ">" .. to end)
  end)

  local function trip()
    for _ = 1, 3 do cb:call(fail_fn) end
    assert.equals("open", cb:state())
  end

  describe("new", function()
    it("has defaults", function()
      local b = circuit_breaker.new()
      assert.equals("closed", b:state())
      assert.equals(5, b.failure_threshold)
      assert.equals(2, b.success_threshold)
      assert.equals(30, b.open_timeout)
      assert.equals(1, b.half_open_max_calls)
      assert.equals("default", b.name)
      assert.is_number(b.clock())
    end)

    it("validates options, naming them", function()
      local cases = {
        { { failure_threshold = 0 }, "'failure_threshold' must be a positive integer" },
        { { success_threshold = 1.5 }, "'success_threshold' must be a positive integer" },
        { { half_open_max_calls = "2" }, "'half_open_max_calls' must be a positive integer" },
        { { open_timeout = -1 }, "'open_timeout' must be a non%-negative number" },
        { { clock = 5 }, "'clock' must be a function" },
        { { is_failure = {} }, "'is_failure' must be a function" },
        { { name = 3 }, "'name' must be a string" },
        { { nmae = "x" }, "unknown option 'nmae'" },
      }
      for _, c in ipairs(cases) do
        local ok, err = pcall(circuit_breaker.new, c[1])
        assert.is_false(ok)
        assert.matches("circuit_breaker.new: " .. c[2], err)
      end
      assert.has_error(function() circuit_breaker.new(1) end, "circuit_breaker.new: 'opts' must be a table")
      assert.has_error(function() cb:call("x") end, "cb:call: 'fn' must be a function")
      assert.has_error(function() cb:on_change(1) end, "cb:on_change: 'fn' must be a function")
    end)
  end)

  describe("closed", function()
    it("passes calls and their results through", function()
      local a, b, c = cb:call(ok_fn, 1, nil)
      assert.equals("ok", a)
      assert.equals(1, b)
      assert.is_nil(c)
      assert.is_nil(select(4, cb:call(ok_fn, 1, nil)))
      assert.equals(3, select("#", cb:call(ok_fn, 1, nil)))
    end)

    it("returns nil, err results unchanged", function()
      local v, err = cb:call(fail_fn)
      assert.is_nil(v)
      assert.equals("boom", err)
    end)

    it("converts raised errors to nil, err", function()
      local v, err = cb:call(raise_fn)
      assert.is_nil(v)
      assert.equals("kaput", err)
      local t = {}
      local _, e2 = cb:call(function() error(t) end)
      assert.equals(t, e2)
    end)

    it("opens after failure_threshold consecutive failures", function()
      cb:call(fail_fn)
      cb:call(raise_fn)
      assert.equals("closed", cb:state())
      cb:call(fail_fn)
      assert.equals("open", cb:state())
      assert.same({ "closed>open" }, changes)
    end)

    it("a success resets the consecutive count", function()
      cb:call(fail_fn)
      cb:call(fail_fn)
      cb:call(ok_fn)
      cb:call(fail_fn)
      cb:call(fail_fn)
      assert.equals("closed", cb:state())
      assert.equals(2, cb:stats().consecutive_failures)
    end)

    it("a bare nil return is a success", function()
      for _ = 1, 5 do cb:call(function() end) end
      assert.equals("closed", cb:state())
    end)
  end)

  describe("open", function()
    it("refuses calls with a circuit_open error without calling fn", function()
      trip()
      local called = false
      local v, err = cb:call(function() called = true end)
      assert.is_nil(v)
      assert.is_false(called)
      assert.equals("circuit_open", err.code)
      assert.equals("circuit 'db' is open", err.message)
      assert.is_true(err.retryable)
      assert.equals("celers: circuit_open: circuit 'db' is open", tostring(err))
    end)

    it("stays open until open_timeout has passed", function()
      trip()
      clock.now = clock.now + 9.99
      assert.equals("open", cb:state())
      assert.is_nil((cb:call(ok_fn)))
      clock.now = clock.now + 0.01
      assert.equals("half_open", cb:state())
      assert.same({ "closed>open", "open>half_open" }, changes)
    end)

    it("moves to half_open lazily on the next call", function()
      trip()
      clock.now = clock.now + 10
      assert.equals("ok", cb:call(ok_fn))
      assert.same({ "closed>open", "open>half_open" }, changes)
    end)
  end)

  describe("half_open", function()
    before_each(function()
      trip()
      clock.now = clock.now + 10
    end)

    it("closes after success_threshold successes", function()
      assert.equals("ok", cb:call(ok_fn))
      assert.equals("half_open", cb:state())
      assert.equals("ok", cb:call(ok_fn))
      assert.equals("closed", cb:state())
      assert.same({ "closed>open", "open>half_open", "half_open>closed" }, changes)
      -- closed again with a clean failure count
      cb:call(fail_fn)
      cb:call(fail_fn)
      assert.equals("closed", cb:state())
    end)

    it("re-opens on any failure and restarts the timeout", function()
      cb:call(ok_fn)
      local _, err = cb:call(raise_fn)
      assert.equals("kaput", err)
      assert.equals("open", cb:state())
      clock.now = clock.now + 5
      assert.equals("open", cb:state())
      clock.now = clock.now + 5
      assert.equals("half_open", cb:state())
      assert.same({ "closed>open", "open>half_open", "half_open>open", "open>half_open" }, changes)
    end)

    it("allows one probe in flight at a time", function()
      local inner
      local outer_result = { cb:call(function()
        -- a second call while the probe is still running is refused
        inner = { cb:call(ok_fn) }
        return "probe"
      end) }
      assert.equals("probe", outer_result[1])
      assert.is_nil(inner[1])
      assert.equals("circuit_open", inner[2].code)
      assert.matches("half%-open", inner[2].message)
      -- after the probe finished, the next call is let through
      assert.equals("ok", cb:call(ok_fn))
      assert.equals("closed", cb:state())
    end)

    it("half_open_max_calls allows more concurrent probes", function()
      local b = circuit_breaker.new { failure_threshold = 1, half_open_max_calls = 2,
                                      open_timeout = 1, clock = clock.fn }
      b:call(fail_fn)
      clock.now = clock.now + 1
      local r2, r3
      b:call(function()
        r2 = { b:call(function()
          r3 = { b:call(ok_fn) }
          return "second"
        end) }
      end)
      assert.equals("second", r2[1])
      assert.is_nil(r3[1])
      assert.equals("circuit_open", r3[2].code)
    end)

    it("works with coroutines: a probe suspended mid-call blocks others", function()
      local co = coroutine.create(function()
        return cb:call(function() return coroutine.yield("waiting") end)
      end)
      assert.same({ true, "waiting" }, { coroutine.resume(co) })
      local v, err = cb:call(ok_fn)
      assert.is_nil(v)
      assert.equals("circuit_open", err.code)
      assert.same({ true, "done" }, { coroutine.resume(co, "done") })
      assert.equals("half_open", cb:state())
      cb:call(ok_fn)
      assert.equals("closed", cb:state())
    end)
  end)

  describe("late results", function()
    it("a call that finishes after the state changed does not count", function()
      local co = coroutine.create(function()
        return cb:call(function() coroutine.yield() return nil, "late" end)
      end)
      coroutine.resume(co)         -- started while closed
      cb:trip()                    -- opened meanwhile
      clock.now = clock.now + 10
      assert.equals("half_open", cb:state())
      coroutine.resume(co)         -- its failure belongs to the old closed period
      assert.equals("half_open", cb:state())
      assert.equals(1, cb:stats().failures)
    end)
  end)

  describe("is_failure", function()
    it("decides what counts as a failure", function()
      local b = circuit_breaker.new {
        failure_threshold = 2, clock = clock.fn,
        -- only lost connections count; a not_found answer is a healthy server
        is_failure = function(ok, _, err)
          if not ok then return true end
          return type(err) == "table" and err.code == "lost"
        end,
      }
      for _ = 1, 5 do b:call(function() return nil, { code = "not_found" } end) end
      assert.equals("closed", b:state())
      b:call(function() return nil, { code = "lost" } end)
      b:call(function() return nil, { code = "lost" } end)
      assert.equals("open", b:state())
    end)

    it("can treat a plain value as failure", function()
      local b = circuit_breaker.new { failure_threshold = 1, clock = clock.fn,
                                      is_failure = function(ok, v) return not ok or v == false end }
      assert.is_false(b:call(function() return false end))
      assert.equals("open", b:state())
    end)
  end)

  describe("reset, trip, stats", function()
    it("reset closes and clears counters", function()
      trip()
      cb:reset()
      assert.equals("closed", cb:state())
      assert.same({ "closed>open", "open>closed" }, changes)
      cb:call(fail_fn)
      cb:call(fail_fn)
      cb:reset()
      cb:call(fail_fn)
      cb:call(fail_fn)
      assert.equals("closed", cb:state())
    end)

    it("trip opens at once", function()
      cb:trip()
      assert.equals("open", cb:state())
      assert.equals(clock.now, cb:stats().opened_at)
    end)

    it("stats counts calls, outcomes and rejections", function()
      cb:call(ok_fn)
      trip()
      cb:call(ok_fn)
      cb:call(ok_fn)
      local s = cb:stats()
      assert.equals("db", s.name)
      assert.equals("open", s.state)
      assert.equals(4, s.calls)
      assert.equals(1, s.successes)
      assert.equals(3, s.failures)
      assert.equals(2, s.rejected)
      assert.equals(1, s.opened)
      assert.equals(1000, s.opened_at)
    end)

    it("on_change chains and listeners see the breaker", function()
      local seen
      assert.equals(cb, cb:on_change(function(_, _, b) seen = b end))
      trip()
      assert.equals(cb, seen)
      assert.equals("circuit_breaker(db: open)", tostring(cb))
    end)
  end)

  describe("wrap", function()
    -- a plain object standing in for a broker; fails while `down` is set
    local function fake_broker()
      local b = { down = false, queue = "emails", log = {} }
      function b:enqueue(name, payload)
        if self.down then return nil, { code = "lost", message = "gone" } end
        self.log[#self.log + 1] = name
        return "id-" .. #self.log, payload
      end
      function b:queue_size()
        if self.down then error("socket closed") end
        return #self.log
      end
      return b
    end

    it("routes method calls through the breaker with the real object as self", function()
      local b = fake_broker()
      local p, breaker = circuit_breaker.wrap(b, { failure_threshold = 2, open_timeout = 5, clock = clock.fn })
      local id, payload = p:enqueue("send", { to = "x" })
      assert.equals("id-1", id)
      assert.same({ to = "x" }, payload)
      assert.equals(1, p:queue_size())
      assert.same({ "send" }, b.log)
      assert.equals(2, breaker:stats().calls)
    end)

    it("opens on failures and refuses until the timeout, then recovers", function()
      local b = fake_broker()
      local p, breaker = circuit_breaker.wrap(b, { failure_threshold = 2, open_timeout = 5, clock = clock.fn })
      b.down = true
      local _, e1 = p:enqueue("a")
      assert.equals("lost", e1.code)
      local _, e2 = p:queue_size()
      assert.matches("socket closed", e2)
      assert.equals("open", breaker:state())
      local _, e3 = p:enqueue("b")
      assert.equals("circuit_open", e3.code)
      b.down = false
      assert.is_nil((p:enqueue("c")))
      clock.now = clock.now + 5
      assert.equals("id-1", p:enqueue("d"))
      assert.equals(1, p:queue_size())
      assert.equals("closed", breaker:state())
      assert.same({ "d" }, b.log)
    end)

    it("shares one breaker across proxies", function()
      local shared = circuit_breaker.new { failure_threshold = 1, clock = clock.fn }
      local b1, b2 = fake_broker(), fake_broker()
      local p1 = circuit_breaker.wrap(b1, shared)
      local p2 = circuit_breaker.wrap(b2, shared)
      b1.down = true
      p1:enqueue("x")
      local _, err = p2:enqueue("y")
      assert.equals("circuit_open", err.code)
    end)

    it("reads and writes plain fields through, and caches wrappers", function()
      local b = fake_broker()
      local p = circuit_breaker.wrap(b)
      assert.equals("emails", p.queue)
      p.queue = "reports"
      assert.equals("reports", b.queue)
      assert.equals(p.enqueue, p.enqueue)
      assert.is_nil(p.missing)
      assert.matches("^circuit_breaker.wrap%(", tostring(p))
    end)

    it("wraps dot-called functions without substituting self", function()
      local mod = { add = function(a, b) return a + b end }
      local p = circuit_breaker.wrap(mod)
      assert.equals(5, p.add(2, 3))
    end)

    it("wraps methods reached through a metatable __index (as userdata methods are)", function()
      local Class = {}
      Class.__index = Class
      function Class:name() return self.n end
      local obj = setmetatable({ n = "inst" }, Class)
      local p = circuit_breaker.wrap(obj)
      assert.equals("inst", p:name())
    end)

    it("wraps userdata objects", function()
      -- io file handles are userdata whose methods come from __index
      local f = io.tmpfile()
      local p = circuit_breaker.wrap(f)
      assert.truthy(p:write("hello"))  -- f in 5.2+, true in 5.1
      p:seek("set", 0)
      assert.equals("hello", p:read("*a"))
      f:close()
      local _, err = p:write("x")  -- raises on a closed file: converted
      assert.is_string(err)
    end)

    it("validates arguments", function()
      assert.has_error(function() circuit_breaker.wrap(5) end,
        "circuit_breaker.wrap: 'obj' must be a table or userdata")
      assert.has_error(function() circuit_breaker.wrap({}, "x") end,
        "circuit_breaker.wrap: 'cb' must be a circuit breaker or an options table")
    end)
  end)
end)
