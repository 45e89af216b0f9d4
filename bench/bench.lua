--- make bench: what each broker operation costs through the module, as ratios against floors
-- measured in the same run on the same server, and what users feel at scale.
--
-- 1. Throughput (tasks/s, best of BENCH_ROUNDS, sides alternating):
--    module | floor (bench/floor.c: the module's own statements on its schema, prepared) |
--    minimal (bench/floor.c min_*: a hand-written queue with the fewest columns and indexes,
--    text protocol, the same round trips). celers.worker rows are against the module's own
--    dequeue_batch(100)+ack_batch; the peer row is kombu's SQL transport (bench/kombu_peer.py).
-- 2. Scale: the same operation with 1,000,000 completed and 300,000 scheduled rows in the
--    queue, as a ratio of the empty-table figure; index entries read by an empty poll.
-- 3. Latency: delay precision while busy, pickup at idle through celers.worker.
--
-- Environment: BENCH_ROUNDS (2), BENCH_SCALE (1: task counts), BENCH_BIG (1: the scale rows'
-- 1,000,000 / 300,000; 0.1 for a quick run), BENCH_LABEL (printed in the heading).
local celers = require "celers"
local core = require "celers.core"
local worker = require "celers.worker"
local helper = require "spec.helper"

local ROUNDS = tonumber(os.getenv("BENCH_ROUNDS") or "2")
local SCALE = tonumber(os.getenv("BENCH_SCALE") or "1")
local BIG = tonumber(os.getenv("BENCH_BIG") or "1")
local FLOOR = os.getenv("BENCH_FLOOR") or "build/bench/floor"
local PYTHON = os.getenv("BENCH_PYTHON") or "/usr/bin/python3"

local dsn = helper.fresh_dsn("bench")
local parts = helper.parse_dsn(dsn)
local QUEUE = "bench"
local PAYLOAD = '{"n":1}'
-- rows of the scale section have ids below every UUIDv7 the module makes ('00000000-...')
local MODULE_IDS = "id > '00000002'"

local broker = assert(celers.connect(dsn .. "&queue=" .. QUEUE))
assert(broker:migrate())
helper.query(dsn, "CREATE TABLE bench_min (id CHAR(36) NOT NULL, queue VARCHAR(64) NOT NULL, "
  .. "state TINYINT NOT NULL DEFAULT 0, payload BLOB NOT NULL, claim_id CHAR(36) NULL, "
  .. "PRIMARY KEY (id), KEY bench_min_claim (queue, state, id)) ENGINE=InnoDB")

local function sql(s) return helper.query(dsn, s) end
local function scalar(s) return helper.scalar(dsn, s) end

-- d: another database of the run (the scale section's empty one); default the main one
local function wipe(d)
  if d then
    helper.query(d, "DELETE FROM celers_tasks WHERE " .. MODULE_IDS)
  else
    sql("DELETE FROM celers_tasks WHERE " .. MODULE_IDS .. "; TRUNCATE TABLE bench_min")
  end
end

local function fill(n, b, d)
  wipe(d)
  local batch = {}
  for i = 1, n do
    batch[#batch + 1] = { name = "bench", payload = PAYLOAD }
    if #batch == 500 or i == n then
      assert((b or broker):enqueue_batch(batch))
      batch = {}
    end
  end
end

local function fill_min(n)
  wipe()
  sql(("INSERT INTO bench_min (id, queue, payload) SELECT CONCAT('01', LPAD(HEX(n), 34, '0')), "
    .. "'%s', '%s' FROM bench_seq WHERE n < %d"):format(QUEUE, PAYLOAD, n))
end

local function run_cmd(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("*a")
  p:close()
  local done, secs = out:match("(%d+) ([%d.]+)")
  assert(done, "failed: " .. cmd .. "\n" .. out)
  return tonumber(done) / tonumber(secs)
end

local function run_floor(op, n, arg)
  return run_cmd(table.concat({
    FLOOR, helper.shell_quote(parts.socket or ""), helper.shell_quote(parts.user or ""),
    helper.shell_quote(parts.password or ""), helper.shell_quote(parts.database),
    QUEUE, op, tostring(n), tostring(arg or 1),
  }, " "))
end

-- Server-wide counters, read around a measured side (only this bench uses the server):
-- redo bytes written, rows/index entries read, and rows/index entries written.
local function counters()
  local c = { redo = 0, reads = 0, writes = 0 }
  for _, r in ipairs(helper.query(dsn, "SHOW GLOBAL STATUS WHERE Variable_name IN ('Innodb_os_log_written', "
    .. "'Handler_read_first', 'Handler_read_key', 'Handler_read_last', 'Handler_read_next', "
    .. "'Handler_read_prev', 'Handler_read_rnd', 'Handler_read_rnd_next', 'Handler_write', "
    .. "'Handler_update', 'Handler_delete')")) do
    local v = tonumber(r[2])
    if r[1] == "Innodb_os_log_written" then c.redo = v
    elseif r[1]:find("^Handler_read") then c.reads = c.reads + v
    else c.writes = c.writes + v end
  end
  return c
end

-- n / seconds of fn(); with probe, the server counters around fn are handed to it
local function timed(n, fn, probe)
  local c0 = probe and counters()
  local t0 = core.monotonic()
  fn()
  local rate = n / (core.monotonic() - t0)
  if probe then probe(c0) end
  return rate
end

local function drain_single(b)
  while true do
    local t = b:dequeue()
    if not t then return end
    assert(b:ack(t))
  end
end

local function drain_handoff(b)
  local _, t = b:ack_and_dequeue(nil)
  while t do
    local acked
    acked, t = b:ack_and_dequeue(t)
    assert(acked)
  end
end

local function drain_batches(b)
  while true do
    local ts = assert(b:dequeue_batch(100))
    if #ts == 0 then return end
    assert(b:ack_batch(ts) == #ts)
  end
end

local function drain_batch_handoff(b)
  local _, ts = b:ack_batch_and_dequeue({}, 100)
  while #ts > 0 do
    local n
    n, ts = b:ack_batch_and_dequeue(ts, 100)
    assert(n)
  end
end

-- Children connect on their own: a forked process must not share the parent's socket.
local function in_workers(workers, fn, d)
  local pids = {}
  for i = 1, workers do
    local pid = core.fork()
    if pid == 0 then
      local ok = pcall(function()
        local b = assert(celers.connect((d or dsn) .. "&queue=" .. QUEUE))
        fn(b, i)
        b:close()
      end)
      os.exit(ok and 0 or 1, false)
    end
    pids[i] = pid
  end
  for _, pid in ipairs(pids) do core.wait(pid) end
end

local function completed_module_rows()
  return tonumber(scalar("SELECT COUNT(*) FROM celers_tasks WHERE state = 'completed' AND " .. MODULE_IDS))
end

-- celers.worker with default settings in `procs` processes; the rate is taken from the
-- database's own times (first claim to last completion), so process start-up is not in it.
local function worker_rate(n, procs)
  fill(n)
  in_workers(procs, function(b)
    local w = worker.new { broker = b, handlers = { bench = function() end }, log = false }
    w:run { idle_exit = 0.5, trap_signals = false }
  end)
  assert(completed_module_rows() == n, "celers.worker left tasks behind")
  local secs = tonumber(scalar("SELECT TIMESTAMPDIFF(MICROSECOND, MIN(started_at), MAX(completed_at)) / 1e6 "
    .. "FROM celers_tasks WHERE " .. MODULE_IDS))
  return n / secs
end

local function best(list)
  local b = 0
  for _, v in ipairs(list) do if v > b then b = v end end
  return b
end

-- best of ROUNDS for each side, alternating which goes first; also the counters per task of
-- each side's last round (fill and wipe excluded: each side fills before it starts its clock,
-- so the counters are read inside the side through `probe`)
local function measure(sides, n)
  local got, per = {}, {}
  for k = 1, #sides do got[k] = {} end
  for r = 1, ROUNDS do
    for j = 1, #sides do
      local k = (r % 2 == 1) and j or (#sides - j + 1)
      if sides[k] then
        got[k][#got[k] + 1] = sides[k](n, function(c0)
          local c1 = counters()
          per[k] = { redo = (c1.redo - c0.redo) / n, reads = (c1.reads - c0.reads) / n,
                     writes = (c1.writes - c0.writes) / n }
        end)
      end
    end
  end
  local out = {}
  for k = 1, #sides do out[k] = sides[k] and best(got[k]) or nil end
  return out, per
end

local function ratio(a, b) return (a and b and b > 0) and ("%.2f"):format(a / b) or "-" end
local function num(v) return v and ("%.0f"):format(v) or "-" end

local function percentile(list, p)
  table.sort(list)
  if #list == 0 then return 0 / 0 end
  return list[math.max(1, math.ceil(#list * p))]
end

-- sequence table for fast row generation (INSERT ... SELECT, never a million round trips)
sql("CREATE TABLE bench_seq (n INT NOT NULL PRIMARY KEY) ENGINE=InnoDB; "
  .. "INSERT INTO bench_seq WITH d (v) AS (SELECT 0 UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL "
  .. "SELECT 3 UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL "
  .. "SELECT 8 UNION ALL SELECT 9) SELECT a.v + 10 * b.v + 100 * c.v + 1000 * e.v + 10000 * f.v "
  .. "+ 100000 * g.v FROM d a, d b, d c, d e, d f, d g")

------------------------------------------------------------------------------------------------
-- 1. throughput

local N1, NB = math.floor(1000 * SCALE), math.floor(10000 * SCALE)
local rates = {}

local function min_side(op, fill_fn, arg)
  return function(n, probe)
    if fill_fn then fill_min(n) else wipe() end
    local c0 = counters()
    local rate = run_floor(op, n, arg)
    probe(c0)
    return rate
  end
end

local ops = {
  { name = "enqueue", n = N1,
    module = function(n, probe)
      wipe()
      return timed(n, function() for _ = 1, n do assert(broker:enqueue("bench", PAYLOAD)) end end, probe)
    end,
    floor = function(n) wipe(); return run_floor("enqueue", n) end,
    minimal = min_side("min_enqueue", false) },
  { name = "enqueue_batch(100)", n = NB,
    module = function(n, probe)
      wipe()
      local batch = {}
      for i = 1, 100 do batch[i] = { name = "bench", payload = PAYLOAD } end
      return timed(n, function() for _ = 1, n / 100 do assert(broker:enqueue_batch(batch)) end end, probe)
    end,
    floor = function(n) wipe(); return run_floor("enqueue_batch", n, 100) end,
    minimal = min_side("min_enqueue_batch", false, 100) },
  { name = "dequeue+ack, 1 process", n = N1,
    module = function(n, probe) fill(n); return timed(n, function() drain_single(broker) end, probe) end,
    floor = function(n) fill(n); return run_floor("claim_ack", n, 1) end,
    minimal = min_side("min_claim_ack", true, 1) },
  { name = "dequeue+ack, 2 processes", n = 2 * N1,
    module = function(n, probe)
      fill(n)
      local rate = timed(n, function() in_workers(2, drain_single) end, probe)
      assert(completed_module_rows() == n)
      return rate
    end,
    floor = function(n) fill(n); return run_floor("claim_ack", n, 2) end,
    minimal = min_side("min_claim_ack", true, 2) },
  { name = "dequeue_batch(100)+ack_batch", n = NB,
    module = function(n, probe) fill(n); return timed(n, function() drain_batches(broker) end, probe) end,
    floor = function(n) fill(n); return run_floor("claim_ack_batch", n, 100) end,
    minimal = min_side("min_claim_ack_batch", true, 100) },
  { name = "ack_and_dequeue, 1 process", n = N1,
    module = function(n, probe) fill(n); return timed(n, function() drain_handoff(broker) end, probe) end,
    floor = function(n) fill(n); return run_floor("claim_ack", n, 1) end,
    minimal = min_side("min_claim_ack", true, 1) },
  { name = "ack_batch_and_dequeue(100)", n = NB,
    module = function(n, probe) fill(n); return timed(n, function() drain_batch_handoff(broker) end, probe) end,
    floor = function(n) fill(n); return run_floor("claim_ack_batch", n, 100) end,
    minimal = min_side("min_claim_ack_batch", true, 100) },
}

print(("%-40s %10s %10s %6s %10s %6s"):format("operation (tasks/s)", "module", "floor", "ratio",
  "minimal", "ratio"))
local per_task = {}
for _, op in ipairs(ops) do
  local n = op.n
  local r, per = measure({ op.module, op.floor, op.minimal }, n)
  rates[op.name] = r[1]
  per_task[#per_task + 1] = { op.name, per[1], per[3] }
  print(("%-40s %10s %10s %6s %10s %6s"):format(op.name, num(r[1]), num(r[2]), ratio(r[1], r[2]),
    num(r[3]), ratio(r[1], r[3])))
  io.stdout:flush()
end
print()
print("server work per task, module vs minimal (SHOW GLOBAL STATUS around the timed part):")
print(("%-40s %17s %17s %17s"):format("operation", "redo bytes", "rows/entries read", "rows written"))
for _, p in ipairs(per_task) do
  local m, q = p[2] or {}, p[3] or {}
  local function pair(k, fmt) return (fmt .. " / " .. fmt):format(m[k] or 0 / 0, q[k] or 0 / 0) end
  print(("%-40s %17s %17s %17s"):format(p[1], pair("redo", "%.0f"), pair("reads", "%.1f"),
    pair("writes", "%.1f")))
end

-- celers.worker, default settings, trivial handler: against the module's batch drain
local batch_rate = rates["dequeue_batch(100)+ack_batch"]
for _, procs in ipairs { 1, 2 } do
  local r = measure({ function(n) return worker_rate(n, procs) end }, 2 * N1)
  print(("%-40s %10s %10s %6s   (floor: the module's dequeue_batch(100)+ack_batch)"):format(
    ("celers.worker defaults, %d process%s"):format(procs, procs > 1 and "es" or ""), num(r[1]),
    num(batch_rate), ratio(r[1], batch_rate)))
  io.stdout:flush()
end

-- a limited name: the batch drain with a concurrency limit on the task name (set high enough
-- never to hold a task back), against the same drain without it: what the limited claim costs
do
  local function drain(limit)
    return function(n)
      if limit then assert(broker:set_limit("bench", { concurrency = 1000000 })) end
      fill(n)
      local rate = timed(n, function() drain_batches(broker) end)
      if limit then assert(broker:remove_limit("bench")) end
      return rate
    end
  end
  local r = measure({ drain(true), drain(false) }, NB)
  print(("%-40s %10s %10s %6s   (floor: the same drain, no limit)"):format(
    "dequeue_batch(100)+ack_batch, limited", num(r[1]), num(r[2]), ratio(r[1], r[2])))
  io.stdout:flush()
end

-- the peer: the same drain through Celery's kombu SQL transport
do
  local n = math.floor(500 * SCALE)
  local ok, kombu = pcall(run_cmd, table.concat({ PYTHON, "bench/kombu_peer.py",
    helper.shell_quote(parts.socket or ""), helper.shell_quote(parts.user or ""),
    helper.shell_quote(parts.password or ""), helper.shell_quote(parts.database), tostring(n) }, " ")
    .. " 2>&1")
  local mod = rates["dequeue+ack, 1 process"]
  if ok then
    print(("%-40s %10s %10s %6s   (module dequeue+ack, 1 process / kombu)"):format(
      "peer: kombu sqla+mysql drain, 1 process", num(mod), num(kombu), ratio(mod, kombu)))
  else
    print("peer: kombu sqla+mysql: not measured (" .. tostring(kombu):gsub("\n.*", "") .. ")")
  end
  io.stdout:flush()
end

------------------------------------------------------------------------------------------------
-- 2. scale: the same operations with 1,000,000 completed and 300,000 scheduled rows

local COMPLETED, SCHEDULED = math.floor(1000000 * BIG), math.floor(300000 * BIG)

local function handler_reads()
  local n = 0
  for _, r in ipairs(sql("SHOW GLOBAL STATUS LIKE 'Handler_read%'")) do n = n + tonumber(r[2]) end
  return n
end

-- The empty side is a second database of the same server, measured alternately with the
-- loaded one, so drift on a shared machine hits both.
local empty_dsn = helper.fresh_dsn("bench_empty")
local empty_broker = assert(celers.connect(empty_dsn .. "&queue=" .. QUEUE))
assert(empty_broker:migrate())
local sides = { { dsn = empty_dsn, broker = empty_broker }, { dsn = dsn, broker = broker } }

-- polls of an empty queue: mean latency (ms) and index entries read per poll
local function poll_figures(side, polls)
  wipe(side.dsn)
  local b0 = handler_reads()
  local base = handler_reads() - b0 -- what one status read costs by itself
  local r0 = handler_reads()
  local t0 = core.monotonic()
  for _ = 1, polls do assert(side.broker:dequeue() == nil) end
  local ms = (core.monotonic() - t0) * 1000 / polls
  local reads = (handler_reads() - r0 - base) / polls
  return ms, reads
end

local function enqueue_rate(side)
  return function(n)
    wipe(side.dsn)
    return timed(n, function() for _ = 1, n do assert(side.broker:enqueue("bench", PAYLOAD)) end end)
  end
end

local function claim2_rate(side)
  return function(n)
    fill(n, side.broker, side.dsn)
    return timed(n, function() in_workers(2, drain_single, side.dsn) end)
  end
end

local POLLS = math.floor(500 * SCALE)

local t_gen = core.monotonic()
sql(("INSERT INTO celers_tasks (id, task_name, payload, state, queue, retry_count, created_at, "
  .. "scheduled_at, started_at, completed_at) SELECT CONCAT('00000000-0000-7000-8000-', "
  .. "LPAD(HEX(n), 12, '0')), 'old', '%s', 'completed', '%s', 1, NOW(6) - INTERVAL 1 DAY, "
  .. "NOW(6) - INTERVAL 1 DAY, NOW(6) - INTERVAL 1 DAY, NOW(6) - INTERVAL 1 DAY FROM bench_seq "
  .. "WHERE n < %d"):format(PAYLOAD, QUEUE, COMPLETED))
sql(("INSERT INTO celers_tasks (id, task_name, payload, state, queue, scheduled_at) SELECT "
  .. "CONCAT('00000001-0000-7000-8000-', LPAD(HEX(n), 12, '0')), 'later', '%s', 'scheduled', '%s', "
  .. "NOW(6) + INTERVAL 1 DAY + INTERVAL n SECOND FROM bench_seq WHERE n < %d"):format(PAYLOAD, QUEUE,
    SCHEDULED))
-- statistics, and the load's dirty pages written out, so its I/O is not billed to what follows
sql("ANALYZE TABLE celers_tasks; FLUSH TABLES celers_tasks FOR EXPORT; UNLOCK TABLES")
local gen_secs = core.monotonic() - t_gen

local empty, big = {}, {}
do
  local c = measure({ claim2_rate(sides[1]), claim2_rate(sides[2]) }, 2 * N1)
  local e = measure({ enqueue_rate(sides[1]), enqueue_rate(sides[2]) }, N1)
  empty.claim, big.claim, empty.enqueue, big.enqueue = c[1], c[2], e[1], e[2]
  empty.poll_ms, empty.poll_reads = poll_figures(sides[1], POLLS)
  big.poll_ms, big.poll_reads = poll_figures(sides[2], POLLS)
end

print()
print(("scale: %d completed + %d scheduled rows in the queue (made in %.0f s by INSERT ... SELECT)"):format(
  COMPLETED, SCHEDULED, gen_secs))
print(("%-40s %10s %10s %6s"):format("operation", "empty", "at scale", "ratio"))
print(("%-40s %10s %10s %6s   (target >= 0.8)"):format("dequeue+ack, 2 processes (tasks/s)",
  num(empty.claim), num(big.claim), ratio(big.claim, empty.claim)))
print(("%-40s %10s %10s %6s   (target >= 0.8)"):format("enqueue (tasks/s)", num(empty.enqueue),
  num(big.enqueue), ratio(big.enqueue, empty.enqueue)))
print(("%-40s %10.2f %10.2f %6s   (at scale / empty)"):format("empty poll latency (ms)", empty.poll_ms,
  big.poll_ms, ratio(big.poll_ms, empty.poll_ms)))
print(("%-40s %10.1f %10.1f %6s   (target < 10; Handler_read_*)"):format("empty poll: index entries read",
  empty.poll_reads, big.poll_reads, ""))
io.stdout:flush()

------------------------------------------------------------------------------------------------
-- 3. latency (with the scale rows still in place)

-- delay precision: tasks enqueued with delay = 2 while two processes drain a steady stream
do
  wipe()
  local stop_at = core.monotonic() + 5
  local pid = core.fork()
  if pid == 0 then
    local ok = pcall(function()
      in_workers(2, function(b)
        while core.monotonic() < stop_at do
          local t = b:dequeue()
          if t then assert(b:ack(t)) else core.sleep(0.005) end
        end
      end)
    end)
    os.exit(ok and 0 or 1, false)
  end
  local probes = 0
  local t0 = core.monotonic()
  while core.monotonic() < stop_at - 2.6 do
    assert(broker:enqueue("busy", PAYLOAD))
    local since = core.monotonic() - t0
    if since > 0.3 and probes < 20 and since > 0.3 + probes * 0.08 then
      assert(broker:enqueue("probe", PAYLOAD, { delay = 2 }))
      probes = probes + 1
    end
    core.sleep(0.004)
  end
  core.wait(pid)
  local late, missed = {}, 0
  for _, r in ipairs(sql("SELECT TIMESTAMPDIFF(MICROSECOND, scheduled_at, started_at) FROM celers_tasks "
    .. "WHERE task_name = 'probe'")) do
    if r[1] == "NULL" then missed = missed + 1 else late[#late + 1] = tonumber(r[1]) / 1000 end
  end
  print()
  print(("%-40s p50 %6.1f ms  p99 %6.1f ms  (%d tasks, %d not handed out; target p99 < 250 ms)"):format(
    "delay=2 handed out after its time", percentile(late, 0.5), percentile(late, 0.99), #late, missed))
  io.stdout:flush()
end

-- pickup latency at idle: enqueue to handler start through celers.worker (defaults)
do
  wipe()
  local out = os.tmpname()
  local K = 15
  local pid = core.fork()
  if pid == 0 then
    local ok = pcall(function()
      local b = assert(celers.connect(dsn .. "&queue=" .. QUEUE))
      local f = assert(io.open(out, "w"))
      local w = worker.new { broker = b, log = false, handlers = { pick = function(p)
        f:write(("%.6f\n"):format(core.monotonic() - p.t))
        f:flush()
      end } }
      w:run { max_tasks = K, idle_exit = 10, trap_signals = false }
      f:close()
      b:close()
    end)
    os.exit(ok and 0 or 1, false)
  end
  core.sleep(1.0)
  for i = 1, K do
    core.sleep(0.15 + (i % 4) * 0.1) -- idle gaps of 150-450 ms
    assert(broker:enqueue("pick", { t = core.monotonic() }))
  end
  core.wait(pid)
  local lat = {}
  for line in io.lines(out) do lat[#lat + 1] = tonumber(line) * 1000 end
  os.remove(out)
  print(("%-40s p50 %6.1f ms  p99 %6.1f ms  (%d tasks)"):format("pickup at idle, celers.worker defaults",
    percentile(lat, 0.5), percentile(lat, 0.99), #lat))
end

broker:close()
empty_broker:close()
sql("DROP DATABASE " .. parts.database)
helper.query(empty_dsn, "DROP DATABASE " .. helper.parse_dsn(empty_dsn).database)
