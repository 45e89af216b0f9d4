--- make bench: each broker operation's tasks/second through the module, beside the raw-SQL
-- floor (bench/floor.c: the same minimal statements straight through libmysqlclient), run
-- alternately on the same server in the same run. Prints the ratio module / floor.
local celers = require "celers"
local core = require "celers.core"
local helper = require "spec.helper"

local ROUNDS = tonumber(os.getenv("BENCH_ROUNDS") or "3")
local SCALE = tonumber(os.getenv("BENCH_SCALE") or "1")
local FLOOR = os.getenv("BENCH_FLOOR") or "build/bench/floor"

local dsn = helper.fresh_dsn("bench")
local parts = helper.parse_dsn(dsn)
local QUEUE = "bench"

local broker = assert(celers.connect(dsn .. "&queue=" .. QUEUE))
assert(broker:migrate())

local function wipe()
  helper.query(dsn, "TRUNCATE TABLE celers_tasks")
end

local function fill(n)
  wipe()
  local batch = {}
  for i = 1, n do
    batch[#batch + 1] = { name = "bench", payload = '{"n":1}' }
    if #batch == 500 or i == n then
      assert(broker:enqueue_batch(batch))
      batch = {}
    end
  end
end

local function run_floor(op, n, arg)
  local cmd = table.concat({
    FLOOR, helper.shell_quote(parts.socket or ""), helper.shell_quote(parts.user or ""),
    helper.shell_quote(parts.password or ""), helper.shell_quote(parts.database),
    QUEUE, op, tostring(n), tostring(arg or 1),
  }, " ")
  local p = assert(io.popen(cmd))
  local out = p:read("*a")
  p:close()
  local done, secs = out:match("(%d+) ([%d.]+)")
  assert(done, "floor failed: " .. cmd)
  return tonumber(done) / tonumber(secs)
end

local function timed(n, fn)
  local t0 = core.monotonic()
  fn()
  return n / (core.monotonic() - t0)
end

local function drain_single(b)
  local n = 0
  while true do
    local t = b:dequeue()
    if not t then return n end
    assert(b:ack(t))
    n = n + 1
  end
end

local function drain_handoff(b)
  local n = 0
  local _, t = b:ack_and_dequeue(nil)
  while t do
    n = n + 1
    local acked
    acked, t = b:ack_and_dequeue(t)
    assert(acked)
  end
  return n
end

-- Children connect on their own: a forked process must not share the parent's socket.
local function in_workers(workers, fn)
  local pids = {}
  for i = 1, workers do
    local pid = core.fork()
    if pid == 0 then
      local b = assert(celers.connect(dsn .. "&queue=" .. QUEUE))
      fn(b)
      b:close()
      os.exit(0, false)
    end
    pids[i] = pid
  end
  for _, pid in ipairs(pids) do core.wait(pid) end
end

local ops = {
  {
    name = "enqueue", n = 3000,
    module = function(n)
      wipe()
      return timed(n, function()
        for _ = 1, n do assert(broker:enqueue("bench", '{"n":1}')) end
      end)
    end,
    floor = function(n) wipe(); return run_floor("enqueue", n) end,
  },
  {
    name = "enqueue_batch(100)", n = 30000,
    module = function(n)
      wipe()
      local batch = {}
      for i = 1, 100 do batch[i] = { name = "bench", payload = '{"n":1}' } end
      return timed(n, function()
        for _ = 1, n / 100 do assert(broker:enqueue_batch(batch)) end
      end)
    end,
    floor = function(n) wipe(); return run_floor("enqueue_batch", n, 100) end,
  },
  {
    name = "dequeue+ack, 1 worker", n = 3000,
    module = function(n)
      fill(n)
      return timed(n, function() assert(drain_single(broker) == n) end)
    end,
    floor = function(n) fill(n); return run_floor("claim_ack", n, 1) end,
  },
  {
    name = "dequeue+ack, 2 workers", n = 4000,
    module = function(n)
      fill(n)
      local rate = timed(n, function() in_workers(2, drain_single) end)
      assert(tonumber(helper.scalar(dsn, "SELECT COUNT(*) FROM celers_tasks WHERE state='completed'")) == n)
      return rate
    end,
    floor = function(n) fill(n); return run_floor("claim_ack", n, 2) end,
  },
  {
    name = "dequeue_batch(100)+ack_batch", n = 30000,
    module = function(n)
      fill(n)
      return timed(n, function()
        while true do
          local ts = assert(broker:dequeue_batch(100))
          if #ts == 0 then break end
          assert(broker:ack_batch(ts) == #ts)
        end
      end)
    end,
    floor = function(n) fill(n); return run_floor("claim_ack_batch", n, 100) end,
  },
  {
    name = "ack_and_dequeue (one round trip), 1 worker", n = 3000,
    floor_of = "dequeue+ack, 1 worker",
    module = function(n)
      fill(n)
      return timed(n, function() assert(drain_handoff(broker) == n) end)
    end,
    floor = function(n) fill(n); return run_floor("claim_ack", n, 1) end,
  },
}

local function best(list)
  local b = 0
  for _, v in ipairs(list) do if v > b then b = v end end
  return b
end

print(("%-44s %12s %12s %7s"):format("operation", "module/s", "floor/s", "ratio"))
for _, op in ipairs(ops) do
  local n = math.floor(op.n * SCALE)
  local m, f = {}, {}
  for r = 1, ROUNDS do
    -- alternate which side goes first, so drift on a shared machine hits both
    if r % 2 == 1 then
      m[#m + 1] = op.module(n); f[#f + 1] = op.floor(n)
    else
      f[#f + 1] = op.floor(n); m[#m + 1] = op.module(n)
    end
  end
  local bm, bf = best(m), best(f)
  print(("%-44s %12.0f %12.0f %7.2f"):format(op.name, bm, bf, bm / bf))
  io.stdout:flush()
end
broker:close()
