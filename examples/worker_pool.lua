-- Worker pool: N processes share the queue; the parent prints health once a second,
-- restarts a worker that dies, and on SIGTERM/SIGINT (Ctrl-C) stops them gracefully: each
-- finishes the tasks in hand and claims nothing new.
--
--   lua5.4 examples/worker_pool.lua              enqueue 30 demo tasks, run until drained
--   lua5.4 examples/worker_pool.lua --forever    keep running until Ctrl-C / SIGTERM
local env = dofile((arg[0]:match("^(.*)/") or ".") .. "/common.lua")
local core = require "celers.core"
local worker = require "celers.worker"
local dsn = env.dsn()
local forever = arg[1] == "--forever"

-- Handlers run in the child processes. ctx:heartbeat() extends the lease of long work.
local handlers = {
  resize_image = function(p, ctx)
    core.sleep(0.15)
    ctx:heartbeat()
    return { image = p.image, width = p.width, resized = true }
  end,
  send_email = function(p) return "sent to " .. tostring(p.to) end,
}

-- Producer side: enqueue, then close - a pool's parent must hold no connection while it forks.
local queue = "pool_demo"
do
  local b = env.connect { dsn = dsn, queue = queue }
  if not forever then
    local list = {}
    for i = 1, 30 do list[i] = { name = "resize_image", payload = { image = "img-" .. i, width = 320 } } end
    assert(b:enqueue_batch(list))
  end
  b:close()
end

local pool = worker.pool {
  processes = 3,
  connect = { dsn = dsn, queue = queue },              -- each process connects itself
  worker = { handlers = handlers, batch_size = 5, poll_max = 0.5, store_results = true, log = false },
}
pool:start()

-- the parent's own connection for health output, opened after the children were forked
local monitor = env.connect { dsn = dsn, queue = queue }
local function drained()
  local st = monitor:get_statistics()
  return not forever and st and st.pending == 0 and st.processing == 0
end
pool:run {
  tick = 1,
  on_tick = function(p)
    local st = monitor:get_statistics()
    local h = monitor:check_health()
    print(("workers alive %d | pending %d processing %d completed %d dlq %d | db %s %.1f ms"):format(
      p:alive(), st.pending, st.processing, st.completed, st.dlq,
      h.healthy and "healthy" or "UNHEALTHY", h.latency_ms or -1))
  end,
  until_fn = drained,
}
local st = monitor:get_statistics()
print(("done: completed %d, pending %d, dead-lettered %d"):format(st.completed, st.pending, st.dlq))
monitor:close()
