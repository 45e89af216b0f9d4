--- The default celers.worker against the module's own fastest drain, in the same run:
--   raw:    dequeue_batch(100) + ack_batch in a loop
--   worker: celers.worker with its defaults and a trivial handler
-- each with 1 and 2 processes, alternating, best of BENCH_ROUNDS (2). Then the pickup latency
-- of an idle default worker (enqueue -> handler start), p50 and p99 over BENCH_PICKUPS (100).
-- Bounded: BENCH_TASKS (5000) per drain.  Run: scripts/bench.sh-style paths, e.g.
--   LUA_PATH="$PWD/?.lua;$PWD/lua/?.lua;$PWD/lua/?/init.lua;;" LUA_CPATH="$PWD/build/lua5.4/?.so;;" \
--   CELERS_TEST_DSN=$(scripts/db.sh dsn) lua5.4 bench/worker.lua
local celers = require "celers"
local core = require "celers.core"
local worker = require "celers.worker"
local helper = require "spec.helper"

local ROUNDS = tonumber(os.getenv("BENCH_ROUNDS") or "2")
local N = tonumber(os.getenv("BENCH_TASKS") or "5000")
local PICKUPS = tonumber(os.getenv("BENCH_PICKUPS") or "100")
local dsn = helper.fresh_dsn("bench_worker")

local broker = assert(celers.connect(dsn))
assert(broker:migrate())

local function fill(n)
  helper.query(dsn, "TRUNCATE TABLE celers_tasks")
  local batch = {}
  for i = 1, n do
    batch[#batch + 1] = { name = "t", payload = '{"n":1}' }
    if #batch == 500 or i == n then
      assert(broker:enqueue_batch(batch))
      batch = {}
    end
  end
end

local drains = {
  raw = function()
    local b = assert(celers.connect(dsn))
    while true do
      local list = assert(b:dequeue_batch(100))
      if #list == 0 then break end
      assert(b:ack_batch(list) == #list)
    end
    b:close()
  end,
  worker = function()
    local w = assert(worker.new { connect = dsn, log = false, report_every = false,
                                  batch_size = tonumber(os.getenv("BENCH_BATCH")),
                                  handlers = { t = function() return true end } })
    w:run { idle_exit = 0 }
    w:close()
  end,
}

-- tasks/second for `procs` processes draining n tasks with `kind`
local function drain(kind, procs)
  fill(N)
  local t0 = core.monotonic()
  local pids = {}
  for i = 1, procs do
    io.stdout:flush()
    local pid = core.fork()
    if pid == 0 then
      local ok, err = pcall(drains[kind])
      if not ok then io.stderr:write(tostring(err), "\n") end
      os.exit(ok and 0 or 1, false)
    end
    pids[i] = pid
  end
  for _, pid in ipairs(pids) do
    local _, how, code = core.wait(pid)
    assert(how == "exited" and code == 0, kind .. " drain failed")
  end
  local secs = core.monotonic() - t0
  local left = tonumber(helper.scalar(dsn, "SELECT COUNT(*) FROM celers_tasks WHERE state <> 'completed'"))
  assert(left == 0, left .. " tasks not completed")
  return N / secs
end

print(("celers.worker (defaults) against dequeue_batch(100)+ack_batch, %d tasks, best of %d"):format(N, ROUNDS))
print(("%-10s %12s %12s %7s"):format("processes", "raw/s", "worker/s", "ratio"))
for _, procs in ipairs { 1, 2 } do
  local best = { raw = 0, worker = 0 }
  for _ = 1, ROUNDS do
    for _, kind in ipairs { "raw", "worker" } do
      best[kind] = math.max(best[kind], drain(kind, procs))
    end
  end
  print(("%-10d %12.0f %12.0f %7.2f"):format(procs, best.raw, best.worker, best.worker / best.raw))
end

-- pickup latency at idle: one default worker waits; tasks arrive 20-120 ms apart
helper.query(dsn, "TRUNCATE TABLE celers_tasks")
local out = os.tmpname()
io.stdout:flush()
local pid = core.fork()
if pid == 0 then
  local f = assert(io.open(out, "w"))
  local w = assert(worker.new { connect = dsn, log = false, report_every = false, handlers = {
    pick = function(_, ctx)
      f:write(ctx.task.id, " ", string.format("%.6f", core.monotonic()), "\n")
      f:flush()
    end,
  } })
  w:run()
  f:close()
  os.exit(0, false)
end
core.sleep(0.5)
-- from the moment enqueue returned (its commit time is the producer's, not the worker's)
local enqueued = {}
for _ = 1, PICKUPS do
  core.sleep(0.02 + 0.1 * math.random())
  local id = assert(broker:enqueue("pick", "x"))
  enqueued[id] = core.monotonic()
end
core.sleep(0.5)
core.kill(pid, core.SIGTERM)
core.wait(pid)
local lat = {}
for line in io.lines(out) do
  local id, t = line:match("^(%S+) (%S+)$")
  lat[#lat + 1] = math.max(0, tonumber(t) - enqueued[id]) * 1000
end
os.remove(out)
table.sort(lat)
local function pct(p) return lat[math.max(1, math.ceil(p / 100 * #lat))] end
print(("pickup latency at idle, default worker, %d tasks: p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms"):format(
  #lat, pct(50), pct(90), pct(99), lat[#lat]))
broker:close()
