--- celers.retry: backoff policies for failed tasks and for client-side calls.
--
-- Attempt numbering: attempt 1 is the first *retry* (the call after the first
-- failure). max_attempts therefore counts retries, and retry.call() invokes fn
-- at most max_attempts + 1 times.

local retry = {}

local Policy = {}
Policy.__index = Policy

local STRATEGIES = { fixed = true, linear = true, exponential = true }
local JITTERS = { none = true, full = true, equal = true, decorrelated = true }

local DEFAULTS = {
  strategy = "exponential",
  base = 1,
  factor = 2,
  max_delay = 3600,
  max_attempts = 5,
  jitter = "none",
}

local function is_number(v)
  return type(v) == "number" and v == v -- rejects NaN
end

local function check_nonneg(name, v)
  if not is_number(v) or v < 0 then
    error(("retry.policy: '%s' must be a non-negative number"):format(name), 3)
  end
end

-- Errors that say of themselves that they are not retryable (celers error
-- tables carry retryable=false, e.g. a duplicate key) are not retried by default.
local function default_retry_on(err)
  return not (type(err) == "table" and err.retryable == false)
end

--- Build a policy from an options table (every field optional).
function retry.policy(opts)
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then
    error("retry.policy: 'opts' must be a table", 2)
  end
  for k in pairs(opts) do
    if DEFAULTS[k] == nil and k ~= "retry_on" and k ~= "random" then
      error(("retry.policy: unknown option '%s'"):format(tostring(k)), 2)
    end
  end
  local p = {}
  for k, v in pairs(DEFAULTS) do
    if opts[k] == nil then p[k] = v else p[k] = opts[k] end
  end
  if not STRATEGIES[p.strategy] then
    error("retry.policy: 'strategy' must be one of fixed, linear, exponential", 2)
  end
  if not JITTERS[p.jitter] then
    error("retry.policy: 'jitter' must be one of none, full, equal, decorrelated", 2)
  end
  check_nonneg("base", p.base)
  check_nonneg("factor", p.factor)
  check_nonneg("max_delay", p.max_delay)
  if p.strategy == "exponential" and p.factor < 1 then
    error("retry.policy: 'factor' must be >= 1 for exponential backoff", 2)
  end
  local ma = p.max_attempts
  if not is_number(ma) or ma < 0 or math.floor(ma) ~= ma then
    error("retry.policy: 'max_attempts' must be a non-negative integer", 2)
  end
  p.retry_on = opts.retry_on or default_retry_on
  if type(p.retry_on) ~= "function" then
    error("retry.policy: 'retry_on' must be a function", 2)
  end
  p.random = opts.random or math.random
  if type(p.random) ~= "function" then
    error("retry.policy: 'random' must be a function", 2)
  end
  return setmetatable(p, Policy)
end

--- A copy of this policy with some options replaced.
function Policy:with(overrides)
  local o = {}
  for k in pairs(DEFAULTS) do o[k] = self[k] end
  o.retry_on, o.random = self.retry_on, self.random
  for k, v in pairs(overrides or {}) do o[k] = v end
  return retry.policy(o)
end

-- The delay before jitter, already capped at max_delay.
function Policy:base_delay(attempt)
  local d
  if self.strategy == "fixed" then
    d = self.base
  elseif self.strategy == "linear" then
    d = self.base + self.factor * (attempt - 1)
  elseif self.base == 0 then
    d = 0 -- avoids 0 * inf = NaN for huge attempts
  else
    d = self.base * self.factor ^ (attempt - 1) -- may overflow to inf; capped below
  end
  return math.min(d, self.max_delay)
end

-- Decorrelated jitter's walk is cut after this many steps: by then any base has reached
-- max_delay (the expected growth is 1.5x a step), and a huge attempt number costs nothing.
local MAX_WALK = 100

--- Seconds to wait before retry number `attempt` (1 = first retry).
-- Decorrelated jitter ignores the strategy and draws from [base, 3 * prev_delay), then caps
-- at max_delay, as in AWS's "Exponential Backoff And Jitter". Without prev_delay (a worker
-- does not know it: the task row keeps no earlier delay) the earlier delays are drawn too,
-- from base on, so the delay before retry n is distributed as the n-th step of the walk and
-- grows with the attempt towards max_delay.
function Policy:delay(attempt, prev_delay)
  if not is_number(attempt) or attempt < 1 or math.floor(attempt) ~= attempt then
    error("policy:delay: 'attempt' must be a positive integer", 2)
  end
  if prev_delay ~= nil and (not is_number(prev_delay) or prev_delay < 0) then
    error("policy:delay: 'prev_delay' must be a non-negative number", 2)
  end
  local j = self.jitter
  if j == "decorrelated" then
    local lo = self.base
    local function step(prev)
      local hi = math.max(lo, 3 * prev)
      return math.min(self.max_delay, lo + self.random() * (hi - lo))
    end
    local prev = prev_delay
    if prev == nil then
      prev = lo
      for _ = 1, math.min(attempt - 1, MAX_WALK) do prev = step(prev) end
    end
    return step(prev)
  end
  local d = self:base_delay(attempt)
  if j == "full" then
    return self.random() * d
  elseif j == "equal" then
    return d / 2 + self.random() * (d / 2)
  end
  return d
end

--- May retry number `attempt` happen after error `err`?
function Policy:should_retry(attempt, err)
  if not is_number(attempt) or attempt < 1 then
    error("policy:should_retry: 'attempt' must be a positive integer", 2)
  end
  if attempt > self.max_attempts then return false end
  return self.retry_on(err) and true or false
end

local pack = table.pack or function(...) return { n = select("#", ...), ... } end

-- Default sleep: LuaSocket or ngx when present (sub-second, non-blocking in
-- nginx), else the shell's sleep. Callers in tests inject opts.sleep instead.
local function default_sleep(s)
  local ngx = rawget(_G, "ngx")
  if ngx and ngx.sleep then return ngx.sleep(s) end
  local ok, socket = pcall(require, "socket")
  if ok and type(socket) == "table" and socket.sleep then return socket.sleep(s) end
  os.execute(("sleep %.3f"):format(s))
end

--- Call fn(call_number) until it succeeds or the policy gives up.
-- fn fails when it raises or returns nil plus a non-nil error; a bare nil (or
-- nothing) counts as success. Raised errors are caught and returned, not re-raised.
-- opts: sleep = function(seconds), on_retry = function(attempt, delay, err).
-- Returns value, nil, calls on success (value: fn's first result; return a table for more)
-- and nil, last_err, calls when the policy gives up: calls is the number of calls made.
function retry.call(policy, fn, opts)
  if getmetatable(policy) ~= Policy then
    if type(policy) ~= "table" and policy ~= nil then
      error("retry.call: 'policy' must be a policy or an options table", 2)
    end
    policy = retry.policy(policy)
  end
  if type(fn) ~= "function" then
    error("retry.call: 'fn' must be a function", 2)
  end
  opts = opts or {}
  if type(opts) ~= "table" then error("retry.call: 'opts' must be a table", 2) end
  local sleep = opts.sleep or default_sleep
  if type(sleep) ~= "function" then error("retry.call: 'opts.sleep' must be a function", 2) end
  local on_retry = opts.on_retry
  if on_retry ~= nil and type(on_retry) ~= "function" then
    error("retry.call: 'opts.on_retry' must be a function", 2)
  end

  local calls, prev = 0, nil
  while true do
    calls = calls + 1
    local r = pack(pcall(fn, calls))
    local err
    if not r[1] then
      err = r[2]
    elseif r[2] == nil and r[3] ~= nil then
      err = r[3]
    else
      return r[2], nil, calls
    end
    if not policy:should_retry(calls, err) then
      return nil, err, calls
    end
    local d = policy:delay(calls, prev)
    prev = d
    if on_retry then on_retry(calls, d, err) end
    if d > 0 then sleep(d) end
  end
end

function Policy:call(fn, opts)
  return retry.call(self, fn, opts)
end

Policy.__tostring = function(p)
  return ("retry.policy(%s base=%g factor=%g max_delay=%g max_attempts=%g jitter=%s)"):format(
    p.strategy, p.base, p.factor, p.max_delay, p.max_attempts, p.jitter)
end

-- Named policies; derive variants with preset:with{...}.
retry.presets = {
  -- the broker's task default: 1, 2, 4 ... s up to an hour, five retries
  default = retry.policy(),
  -- no retries at all
  none = retry.policy { max_attempts = 0 },
  -- client-side calls to a flaky service: quick and spread out, gives up within ~3 s
  fast = retry.policy { base = 0.1, factor = 2, max_delay = 5, max_attempts = 5, jitter = "full" },
  -- many workers hitting one resource: decorrelated jitter avoids herds
  network = retry.policy { base = 0.5, max_delay = 30, max_attempts = 8, jitter = "decorrelated" },
  -- long-running background work: slow growth, keeps at least half the delay
  patient = retry.policy { base = 10, factor = 3, max_delay = 6 * 3600, max_attempts = 10, jitter = "equal" },
  -- the same pause every time
  fixed = retry.policy { strategy = "fixed", base = 5, max_attempts = 3 },
  -- 5, 15, 25 ... s
  linear = retry.policy { strategy = "linear", base = 5, factor = 10, max_delay = 300, max_attempts = 5 },
}

return retry
