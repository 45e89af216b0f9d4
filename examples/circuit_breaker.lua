-- Circuit breaker: stop calling a failing dependency for a while, and guard a broker.
--                                    lua5.4 examples/circuit_breaker.lua
local env = dofile((arg[0]:match("^(.*)/") or ".") .. "/common.lua")
local circuit_breaker = require "celers.circuit_breaker"

-- 1. A flaky service behind a breaker. The clock is injected so the demo needs no waiting.
local now = 0
local service_up = false
local function payment_api(amount)
  if not service_up then return nil, "payment API: 503 Service Unavailable" end
  return { charged = amount }
end

local cb = circuit_breaker.new {
  name = "payments", failure_threshold = 3, success_threshold = 2, open_timeout = 30,
  clock = function() return now end,
}
cb:on_change(function(from, to) print(("  breaker %s -> %s"):format(from, to)) end)

print("service down:")
for i = 1, 5 do
  local ok, err = cb:call(payment_api, 10 * i)
  print(("  call %d: %s"):format(i, ok and "ok" or tostring(err)))
end
print("30 s later the service is back; the breaker lets probes through:")
now, service_up = 30, true
for i = 6, 8 do
  local res, err = cb:call(payment_api, 10 * i)
  print(("  call %d: %s (state %s)"):format(i, res and ("charged " .. res.charged) or tostring(err), cb:state()))
end
local s = cb:stats()
print(("stats: calls %d, failures %d, rejected while open %d, opened %d time(s)"):format(
  s.calls, s.failures, s.rejected, s.opened))

-- 2. A whole broker behind a breaker: after repeated database failures, calls fail fast with
-- nil, err (err.code == "circuit_open") instead of waiting on a dead server.
local broker = env.connect()
local guarded, bcb = circuit_breaker.wrap(broker, { name = "database", failure_threshold = 2 })
local id = assert(guarded:enqueue("cb_demo", { note = "enqueued through the breaker" }))
print("enqueued through the guarded broker:", id, "breaker", bcb:state())
broker:close()
