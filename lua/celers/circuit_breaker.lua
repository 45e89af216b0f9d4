--- celers.circuit_breaker: stop calling a failing dependency for a while.
--
--   closed    calls pass; failure_threshold *consecutive* failures -> open
--   open      calls are refused with a circuit_open error until open_timeout
--             seconds have passed -> half_open
--   half_open up to half_open_max_calls (default 1) probe calls may be in
--             flight at once; others are refused. success_threshold successes
--             -> closed; any failure -> open (the timeout starts over)
--
-- Probes are limited because under OpenResty cosockets or coroutines several
-- calls can be in flight at once, and a recovering service should not get the
-- whole backlog at the moment it comes back.
--
-- A call fails when fn raises or returns nil plus a non-nil error (override
-- with is_failure). Raised errors are caught and returned as nil, err.

local M = {}

local Breaker = {}
Breaker.__index = Breaker

local pack = table.pack or function(...) return { n = select("#", ...), ... } end
local unpack = table.unpack or unpack -- luacheck: ignore 143

local OPTIONS = {
  failure_threshold = true, success_threshold = true, open_timeout = true,
  half_open_max_calls = true, clock = true, is_failure = true, name = true,
}

local OpenError = {}
OpenError.__index = OpenError
OpenError.__tostring = function(e) return "celers: " .. e.code .. ": " .. e.message end

-- Wall-clock seconds with sub-second precision where available.
local function default_clock()
  local ngx = rawget(_G, "ngx")
  if ngx and ngx.now then return ngx.now end
  local ok, socket = pcall(require, "socket")
  if ok and type(socket) == "table" and socket.gettime then return socket.gettime end
  return os.time
end

local function default_is_failure(ok, first, second)
  return not ok or (first == nil and second ~= nil)
end

local function check_count(name, v)
  if type(v) ~= "number" or v < 1 or math.floor(v) ~= v then
    error(("circuit_breaker.new: '%s' must be a positive integer"):format(name), 3)
  end
end

--- A new breaker (closed). opts: see the module comment (thresholds, open timeout, clock,
-- is_failure).
function M.new(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("circuit_breaker.new: 'opts' must be a table", 2) end
  for k in pairs(opts) do
    if not OPTIONS[k] then
      error(("circuit_breaker.new: unknown option '%s'"):format(tostring(k)), 2)
    end
  end
  local cb = setmetatable({
    name = opts.name or "default",
    failure_threshold = opts.failure_threshold or 5,
    success_threshold = opts.success_threshold or 2,
    open_timeout = opts.open_timeout or 30,
    half_open_max_calls = opts.half_open_max_calls or 1,
    clock = opts.clock or default_clock(),
    is_failure = opts.is_failure or default_is_failure,
    _state = "closed",
    _gen = 0,            -- bumped on every transition; late results of older generations are ignored
    _fails = 0,          -- consecutive failures while closed
    _successes = 0,      -- successes while half_open
    _probes = 0,         -- calls in flight while half_open
    _opened_at = nil,
    _listeners = {},
    _stats = { calls = 0, successes = 0, failures = 0, rejected = 0, opened = 0 },
  }, Breaker)
  if type(cb.name) ~= "string" then error("circuit_breaker.new: 'name' must be a string", 2) end
  check_count("failure_threshold", cb.failure_threshold)
  check_count("success_threshold", cb.success_threshold)
  check_count("half_open_max_calls", cb.half_open_max_calls)
  local t = cb.open_timeout
  if type(t) ~= "number" or t ~= t or t < 0 then
    error("circuit_breaker.new: 'open_timeout' must be a non-negative number", 2)
  end
  if type(cb.clock) ~= "function" then error("circuit_breaker.new: 'clock' must be a function", 2) end
  if type(cb.is_failure) ~= "function" then
    error("circuit_breaker.new: 'is_failure' must be a function", 2)
  end
  return cb
end

function Breaker:_transition(to)
  local from = self._state
  if from == to then return end
  self._state = to
  self._gen = self._gen + 1
  self._fails, self._successes, self._probes = 0, 0, 0
  if to == "open" then
    self._opened_at = self.clock()
    self._stats.opened = self._stats.opened + 1
  end
  -- listeners run after the state is consistent, so they may inspect or reset it
  for _, fn in ipairs(self._listeners) do fn(from, to, self) end
end

--- Current state: "closed", "open" or "half_open" (moves open -> half_open
-- when the timeout has passed, so reading the state can fire on_change).
function Breaker:state()
  if self._state == "open" and self.clock() - self._opened_at >= self.open_timeout then
    self:_transition("half_open")
  end
  return self._state
end

function Breaker:_reject(message)
  self._stats.rejected = self._stats.rejected + 1
  return nil, setmetatable({ code = "circuit_open", message = message, retryable = true }, OpenError)
end

function Breaker:_record(gen, failed)
  local s = self._stats
  if failed then s.failures = s.failures + 1 else s.successes = s.successes + 1 end
  if gen ~= self._gen then return end -- state moved on while fn ran
  if self._state == "half_open" then
    self._probes = self._probes - 1
    if failed then
      self:_transition("open")
    else
      self._successes = self._successes + 1
      if self._successes >= self.success_threshold then self:_transition("closed") end
    end
  elseif failed then
    self._fails = self._fails + 1
    if self._fails >= self.failure_threshold then self:_transition("open") end
  else
    self._fails = 0
  end
end

--- Call fn(...) through the breaker. Returns fn's results, nil + fn's error
-- (raised or returned), or nil + a circuit_open error when refused.
function Breaker:call(fn, ...)
  if type(fn) ~= "function" then error("cb:call: 'fn' must be a function", 2) end
  local state = self:state()
  if state == "open" then
    return self:_reject(("circuit '%s' is open"):format(self.name))
  elseif state == "half_open" then
    if self._probes >= self.half_open_max_calls then
      return self:_reject(("circuit '%s' is half-open and its probe is in flight"):format(self.name))
    end
    self._probes = self._probes + 1
  end
  self._stats.calls = self._stats.calls + 1
  local gen = self._gen
  local r = pack(pcall(fn, ...))
  self:_record(gen, self.is_failure(unpack(r, 1, r.n)) and true or false)
  if not r[1] then return nil, r[2] end
  return unpack(r, 2, r.n)
end

--- Back to closed with clean counters (cumulative stats are kept).
function Breaker:reset()
  self:_transition("closed")
  self._fails, self._successes, self._probes = 0, 0, 0
end

--- Force the breaker open now (e.g. on a maintenance signal).
function Breaker:trip()
  if self._state == "open" then self._opened_at = self.clock() end
  self:_transition("open")
end

--- Counters: state, calls (let through), successes, failures, rejected,
-- opened (times it opened), consecutive_failures, half_open_successes, opened_at.
function Breaker:stats()
  local s = self._stats
  return {
    name = self.name, state = self:state(),
    calls = s.calls, successes = s.successes, failures = s.failures,
    rejected = s.rejected, opened = s.opened,
    consecutive_failures = self._fails, half_open_successes = self._successes,
    opened_at = self._opened_at,
  }
end

--- fn(from, to, cb) runs on every state change. Returns cb for chaining.
function Breaker:on_change(fn)
  if type(fn) ~= "function" then error("cb:on_change: 'fn' must be a function", 2) end
  self._listeners[#self._listeners + 1] = fn
  return self
end

Breaker.__tostring = function(cb)
  return ("circuit_breaker(%s: %s)"):format(cb.name, cb._state)
end

M.Breaker = Breaker

--- A proxy for obj (table or userdata) whose function-valued fields go
-- through the breaker: proxy:enqueue(...) runs obj:enqueue(...) via cb:call.
-- Other fields read (and write) through to obj. Returns proxy, cb.
function M.wrap(obj, cb_or_opts)
  local to = type(obj)
  if to ~= "table" and to ~= "userdata" then
    error("circuit_breaker.wrap: 'obj' must be a table or userdata", 2)
  end
  local cb = cb_or_opts
  if getmetatable(cb) ~= Breaker then
    if cb ~= nil and type(cb) ~= "table" then
      error("circuit_breaker.wrap: 'cb' must be a circuit breaker or an options table", 2)
    end
    cb = M.new(cb)
  end
  local proxy = {}
  local cache = setmetatable({}, { __mode = "k" }) -- method -> wrapper
  setmetatable(proxy, {
    __index = function(_, key)
      local v = obj[key]
      if type(v) ~= "function" then return v end
      local w = cache[v]
      if not w then
        w = function(self, ...)
          -- method call on the proxy: the real object is self; plain call: pass args as given
          if self == proxy then return cb:call(v, obj, ...) end
          return cb:call(v, self, ...)
        end
        cache[v] = w
      end
      return w
    end,
    __newindex = function(_, key, value) obj[key] = value end,
    __tostring = function() return "circuit_breaker.wrap(" .. tostring(obj) .. ")" end,
  })
  return proxy, cb
end

return M
