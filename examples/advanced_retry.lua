-- Retry policies: backoff sequences, jitter, client-side retries, and a worker whose
-- handlers have their own policies.       lua5.4 examples/advanced_retry.lua
local env = dofile((arg[0]:match("^(.*)/") or ".") .. "/common.lua")
local core = require "celers.core"
local retry = require "celers.retry"
local worker = require "celers.worker"

-- 1. Delay sequences (seconds before retry 1, 2, 3, ...)
local function show(label, policy)
  local d = {}
  for attempt = 1, 6 do d[#d + 1] = ("%.2f"):format(policy:delay(attempt)) end
  print(("%-28s %s"):format(label, table.concat(d, "  ")))
end
show("fixed 5 s", retry.policy { strategy = "fixed", base = 5 })
show("linear 5 + 10n", retry.policy { strategy = "linear", base = 5, factor = 10 })
show("exponential x2, max 20", retry.policy { base = 1, factor = 2, max_delay = 20 })
show("exponential, full jitter", retry.policy { base = 1, factor = 2, jitter = "full" })
show("exponential, equal jitter", retry.policy { base = 1, factor = 2, jitter = "equal" })

-- 2. A client-side call retried with a policy (sleep injected to keep the demo fast)
local calls = 0
local value, err, n = retry.call(retry.presets.fast, function()
  calls = calls + 1
  if calls < 3 then return nil, "timeout talking to the API" end
  return "response after " .. calls .. " calls"
end, { sleep = function() end, on_retry = function(attempt, delay, e)
  print(("  retry %d in %.2f s after: %s"):format(attempt, delay, e))
end })
print("client call:", value or err, n or "")

-- 3. A worker: handler policies decide the delay; non-retryable errors go to the DLQ at once
local broker = env.connect { dsn = env.dsn(), queue = "retry_demo" }
assert(broker:purge_all())
local w = assert(worker.new {
  broker = broker, log = false, poll_max = 0.1,
  retry = retry.policy { strategy = "fixed", base = 0.2 },          -- the worker's default
  handlers = {
    flaky_upload = {
      retry = retry.policy { base = 0.1, factor = 2, max_attempts = 5 },
      fn = function(p, ctx)
        if ctx.attempt < 3 then error("upload of " .. p.file .. " timed out") end
        return "uploaded " .. p.file
      end,
    },
    parse_order = function(p)
      if not p.order_id then error({ code = "bad_input", message = "order_id missing", retryable = false }) end
      return p.order_id
    end,
  },
})
local up = assert(broker:enqueue("flaky_upload", { file = "report.pdf" }, { max_retries = 5 }))
local bad = assert(broker:enqueue("parse_order", { note = "no id" }))
local deadline = core.monotonic() + 10
repeat w:run { idle_exit = 0.5 } until (broker:get_task(up) or {}).state == "completed" or core.monotonic() > deadline
local t = broker:get_task(up)
print(("flaky_upload: %s after %d attempts"):format(t.state, t.retry_count))
local dlq = broker:list_dlq { limit = 10 }
for _, d in ipairs(dlq) do
  if d.task_id == bad then print("parse_order: dead-lettered at once:", d.error) end
end
broker:close()
