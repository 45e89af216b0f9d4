-- celers.worker against a real server: handlers, retries, DLQ, leases, signals, pools.
local helper = require "spec.helper"
local proc = require "spec.proc_helper"
local celers = require "celers"
local core = require "celers.core"
local worker = require "celers.worker"
local retry = require "celers.retry"

local dsn = helper.fresh_dsn("worker")
local q = helper.sql_string

local function scalar(sql) return helper.scalar(dsn, sql) end
local function count(where)
  return tonumber(scalar("SELECT COUNT(*) FROM celers_tasks WHERE " .. where))
end

describe("celers.worker", function()
  local broker

  setup(function()
    broker = assert(celers.connect(dsn))
    assert(broker:migrate())
  end)

  before_each(function()
    helper.query(dsn, "DELETE FROM celers_tasks; DELETE FROM celers_dead_letter_queue;"
      .. " DELETE FROM celers_results; DELETE FROM celers_queue_pauses")
  end)

  teardown(function()
    if broker then broker:close() end
  end)

  local function new_worker(opts)
    opts.broker = opts.broker or broker
    opts.log = false
    return assert(worker.new(opts))
  end

  it("runs handlers by task name in batches and acks what succeeded", function()
    local seen = {}
    local w = new_worker { batch_size = 4, prefetch_window = false, handlers = {
      add = function(p, ctx)
        seen[#seen + 1] = ctx.task.id
        assert.equal(1, ctx.attempt)
        return p.a + p.b
      end,
    } }
    for i = 1, 10 do broker:enqueue("add", { a = i, b = 1 }) end
    local counts = w:run { idle_exit = 0 }
    assert.equal(10, counts.processed)
    assert.equal(10, counts.succeeded)
    assert.equal(10, #seen)
    -- 10 tasks in batches of 4: 3 claims with work, 1 empty
    assert.equal(4, counts.polls)
    assert.equal(10, count("state = 'completed' AND completed_at IS NOT NULL AND retry_count = 1"))
    assert.equal(0, count("state <> 'completed'"))
  end)

  it("a failed ack_and_dequeue is a failed claim, not a task to run", function()
    local w = new_worker { batch_size = 1, handlers = { t = function() return true end } }
    broker:enqueue("t", "x")
    helper.query(dsn, "RENAME TABLE celers_queue_pauses TO celers_queue_pauses_away")
    local ok, got, err = pcall(w.step, w, 1)
    helper.query(dsn, "RENAME TABLE celers_queue_pauses_away TO celers_queue_pauses")
    assert.is_true(ok, got)
    assert.is_nil(got)
    assert.equal("sql", err.code)
    assert.equal(0, w.counts.processed)
    assert.equal(1, count("state = 'pending'"))
  end)

  it("one task at a time: each claim acks the previous task in the same round trip", function()
    local w = new_worker { batch_size = 1, handlers = { one = function(p) return p end } }
    for i = 1, 5 do broker:enqueue("one", tostring(i)) end
    local counts = w:run { idle_exit = 0 }
    assert.equal(5, counts.succeeded)
    assert.equal(6, counts.polls) -- 5 claims + the empty one that acks the last task
    assert.equal(5, count("state = 'completed' AND completed_at IS NOT NULL"))
    -- stopping with max_tasks acks the last task too
    for i = 1, 3 do broker:enqueue("one", tostring(i)) end
    counts = new_worker { batch_size = 1, handlers = { one = function(p) return p end } }:run { max_tasks = 2 }
    assert.equal(2, counts.succeeded)
    assert.equal(7, count("state = 'completed'"))
    assert.equal(1, count("state = 'pending'"))
  end)

  -- the real broker, with every method call counted
  local function counting(b)
    local calls = {}
    return setmetatable({}, { __index = function(_, k)
      local v = b[k]
      if type(v) ~= "function" then return v end
      return function(_, ...)
        calls[k] = (calls[k] or 0) + 1
        return v(b, ...)
      end
    end }), calls
  end

  it("by default settles in batches: 500 tasks cost a few claims and a few acks", function()
    local batch = {}
    for i = 1, 500 do batch[i] = { name = "t", payload = tostring(i) } end
    assert(broker:enqueue_batch(batch))
    local b, calls = counting(broker)
    local counts = new_worker { broker = b, handlers = { t = function() return true end } }:run { idle_exit = 0 }
    assert.equal(500, counts.succeeded)
    local claims = (calls.dequeue_batch or 0) + (calls.ack_batch_and_dequeue or 0)
    local acks = (calls.ack or 0) + (calls.ack_batch or 0) + (calls.ack_batch_and_dequeue or 0)
    -- one claim of 1 to learn the pace, then claims of 100, and the empty one
    assert.is_true(claims <= 8, claims)
    assert.is_true(acks <= 8, acks)
    assert.equal(500, count("state = 'completed' AND retry_count = 1"))
  end)

  it("acks a finished task before running a next one that would keep it waiting past ack_flush", function()
    local seen = {}
    for i = 1, 3 do assert(broker:enqueue("slowish", tostring(i))) end
    local w = new_worker { batch_size = 3, prefetch_window = false, handlers = {
      slowish = function(p)
        local i = tonumber(p)
        -- what the database says of the tasks before this one, while this one runs
        seen[i] = count("state = 'completed'")
        require("celers.core").sleep(0.05)
        return i
      end,
    } }
    w:run { idle_exit = 0 }
    assert.same({ 0, 1, 2 }, seen)
    assert.equal(3, count("state = 'completed'"))
  end)

  it("slow handlers: a claim takes about prefetch_window seconds of work, not batch_size tasks", function()
    for i = 1, 8 do broker:enqueue("slow", tostring(i)) end
    local held = {}
    local w = new_worker { prefetch_window = 0.25, handlers = {
      slow = function()
        held[#held + 1] = count("state = 'processing'")
        require("celers.core").sleep(0.1)
      end,
    } }
    w:run { idle_exit = 0 }
    assert.equal(1, held[1]) -- the first claim takes one, to learn the pace
    for _, n in ipairs(held) do assert.is_true(n <= 2, n) end
    assert.is_true(w:claim_size() <= 2) -- 0.25 s of work at 0.1 s (and a client call) a task
    assert.equal(8, count("state = 'completed'"))
  end)

  it("sends unknown task names to the dead-letter queue with a clear error", function()
    local w = new_worker { handlers = { known = function() return true end } }
    local id = broker:enqueue("mystery", "x")
    local counts = w:run { idle_exit = 0 }
    assert.equal(1, counts.unknown)
    assert.equal(0, count("1 = 1"))
    local msg = scalar("SELECT error_message FROM celers_dead_letter_queue WHERE task_id = " .. q(id))
    assert.matches("no handler for task 'mystery'", msg, 1, true)
    assert.matches("known", msg, 1, true)
  end)

  it("retries a failing handler with the policy's delay, then dead-letters it", function()
    local calls = 0
    local w = new_worker {
      retry = { strategy = "fixed", base = 30, max_attempts = 10 },
      handlers = { flaky = function() calls = calls + 1; error("flaky failure " .. calls) end },
    }
    local id = broker:enqueue("flaky", "p", { max_retries = 3 })
    w:run { idle_exit = 0 }
    assert.equal(1, calls)
    -- back to scheduled, 30 s out (the policy), with the error kept
    assert.equal("scheduled", scalar("SELECT state FROM celers_tasks WHERE id = " .. q(id)))
    assert.equal("1", scalar("SELECT scheduled_at > NOW(6) + INTERVAL 25 SECOND AND scheduled_at < "
      .. "NOW(6) + INTERVAL 35 SECOND FROM celers_tasks WHERE id = " .. q(id)))
    assert.matches("flaky failure 1",
      scalar("SELECT error_message FROM celers_tasks WHERE id = " .. q(id)), 1, true)
    -- make it due again twice: attempts 2 and 3 (max_retries = 3 attempts) then the DLQ
    for attempt = 2, 3 do
      helper.query(dsn, "UPDATE celers_tasks SET scheduled_at = NOW(6), state = 'pending' WHERE id = " .. q(id))
      w:run { idle_exit = 0 }
      assert.equal(attempt, calls)
    end
    assert.equal(0, count("id = " .. q(id)))
    assert.equal("3", scalar("SELECT retry_count FROM celers_dead_letter_queue WHERE task_id = " .. q(id)))
    assert.matches("flaky failure 3", scalar(
      "SELECT error_message FROM celers_dead_letter_queue WHERE task_id = " .. q(id)), 1, true)
  end)

  it("decorrelated jitter grows with the attempt inside a worker", function()
    -- every draw at the top of its range: retries wait 1.5, 4.5, 13.5, 30, 30 ... s
    local w = new_worker {
      retry = retry.presets.network:with { random = function() return 1 end },
      handlers = { flaky = function() error("upstream down") end },
    }
    local id = broker:enqueue("flaky", "p", { max_retries = 10 })
    helper.query(dsn, "UPDATE celers_tasks SET retry_count = 2 WHERE id = " .. q(id)) -- third attempt next
    w:run { idle_exit = 0 }
    assert.equal("3", scalar("SELECT retry_count FROM celers_tasks WHERE id = " .. q(id)))
    assert.equal("1", scalar("SELECT scheduled_at > NOW(6) + INTERVAL 12 SECOND AND scheduled_at < "
      .. "NOW(6) + INTERVAL 14 SECOND FROM celers_tasks WHERE id = " .. q(id)))
  end)

  it("dead-letters at once when the policy refuses (non-retryable error or per-handler policy)", function()
    local w = new_worker { handlers = {
      fatal = function() error({ code = "bad_input", message = "cannot parse", retryable = false }) end,
      once = { fn = function() return nil, "returned error" end, retry = retry.presets.none },
    } }
    local a = broker:enqueue("fatal", "x", { max_retries = 5 })
    local b = broker:enqueue("once", "y", { max_retries = 5 })
    local counts = w:run { idle_exit = 0 }
    assert.equal(2, counts.dead_lettered)
    assert.equal(0, count("1 = 1"))
    assert.equal("bad_input: cannot parse", scalar(
      "SELECT error_message FROM celers_dead_letter_queue WHERE task_id = " .. q(a)))
    assert.equal("returned error", scalar(
      "SELECT error_message FROM celers_dead_letter_queue WHERE task_id = " .. q(b)))
  end)

  it("keeps a long handler's lease alive with ctx:heartbeat()", function()
    local other = assert(celers.connect { dsn = dsn, recover_interval = 0 })
    local stolen
    local w = new_worker { lease = 0.6, handlers = {
      long = function(_, ctx)
        for _ = 1, 15 do
          core.sleep(0.1)
          assert.is_true(ctx:heartbeat())
        end
        stolen = other:dequeue() -- another worker looks for work after the first lease ran out
        return "done"
      end,
    } }
    local id = broker:enqueue("long", "x")
    local counts = w:run { idle_exit = 0 }
    other:close()
    assert.is_nil(stolen)
    assert.equal(1, counts.succeeded)
    assert.equal(0, counts.lost)
    assert.equal("completed", scalar("SELECT state FROM celers_tasks WHERE id = " .. q(id)))
    assert.equal("1", scalar("SELECT retry_count FROM celers_tasks WHERE id = " .. q(id)))
  end)

  it("heartbeats between the tasks of a batch", function()
    local other = assert(celers.connect { dsn = dsn, recover_interval = 0 })
    local stolen = {}
    local w = new_worker { lease = 0.9, batch_size = 3, prefetch_window = false, handlers = {
      step = function()
        core.sleep(0.5)
        stolen[#stolen + 1] = other:dequeue() or false
        return true
      end,
    } }
    for i = 1, 3 do broker:enqueue("step", tostring(i)) end
    local counts = w:run { idle_exit = 0 }
    other:close()
    assert.same({ false, false, false }, stolen)
    assert.equal(3, counts.succeeded)
    assert.equal(3, count("state = 'completed' AND retry_count = 1"))
  end)

  it("a handler that outlives its lease loses the task to another worker; its late ack is refused", function()
    local other = assert(celers.connect { dsn = dsn, recover_interval = 0 })
    local w = new_worker { handlers = {
      slow = function()
        core.sleep(1.2) -- the task's timeout (lease) is 0.5 s and nobody heartbeats
        local t = assert(other:dequeue())
        assert.equal(2, t.retry_count)
        assert.is_true(other:ack(t))
        return "late"
      end,
    } }
    local id = broker:enqueue("slow", "x", { timeout = 0.5 })
    local counts = w:run { idle_exit = 0 }
    other:close()
    assert.equal(1, counts.lost)
    assert.equal(0, counts.succeeded)
    assert.equal("completed", scalar("SELECT state FROM celers_tasks WHERE id = " .. q(id)))
    assert.equal("2", scalar("SELECT retry_count FROM celers_tasks WHERE id = " .. q(id)))
  end)

  it("stores results on request when the broker supports it", function()
    if not broker.store_result then
      pending("broker:store_result is not in the core yet")
      return
    end
    local w = new_worker { store_results = true, handlers = {
      sum = function(p) return { total = p[1] + p[2] } end,
      bad = { fn = function() error({ message = "no", retryable = false }) end },
    } }
    local ok_id = broker:enqueue("sum", { 2, 3 })
    local bad_id = broker:enqueue("bad", "x")
    w:run { idle_exit = 0 }
    assert.equal("success", scalar("SELECT state FROM celers_results WHERE task_id = " .. q(ok_id)))
    assert.matches('"total"%s*:%s*5', scalar("SELECT result FROM celers_results WHERE task_id = " .. q(ok_id)))
    assert.equal("failure", scalar("SELECT state FROM celers_results WHERE task_id = " .. q(bad_id)))
  end)

  it("run{max_tasks=} claims no more than asked and leaves the rest pending", function()
    local w = new_worker { batch_size = 10, handlers = { t = function() return 1 end } }
    for i = 1, 7 do broker:enqueue("t", tostring(i)) end
    local counts = w:run { max_tasks = 5 }
    assert.equal(5, counts.processed)
    assert.equal(5, count("state = 'completed'"))
    assert.equal(2, count("state = 'pending' AND retry_count = 0"))
  end)

  it("checks its options", function()
    assert.has_error(function() worker.new { broker = broker, bogus = 1 } end,
      "worker.new: unknown option 'bogus'")
    assert.has_error(function() worker.new { handlers = {} } end,
      "worker.new: 'broker' or 'connect' is required")
    assert.has_error(function() worker.new { broker = broker, handlers = { x = 5 } } end)
    assert.has_error(function() worker.pool { processes = 2, connect = broker, worker = {} } end)
  end)

  it("stops on SIGTERM after the tasks in hand, claims nothing new and exits 0", function()
    for i = 1, 5 do broker:enqueue("slow", { seconds = 1, n = i }) end
    local h = proc.spawn(helper.root .. "/spec/fixtures/worker_child.lua", { dsn, "single" })
    local pid = assert(proc.pid(h))
    -- the first batch (2 tasks) is in hand
    assert.truthy(proc.wait_for(function() return count("state = 'processing'") == 2 end, 20, 0.05))
    proc.kill(pid, "TERM")
    local code, out = proc.wait(h, 30)
    assert.equal(0, code, out)
    assert.matches("processed=2 reason=SIGTERM", out, 1, true)
    assert.equal(2, count("state = 'completed'"))
    assert.equal(3, count("state = 'pending' AND retry_count = 0"))
  end)

  it("a pool restarts a worker killed with SIGKILL mid-task; another completes the task after the lease", function()
    local id = broker:enqueue("slow", { seconds = 3 })
    local h = proc.spawn(helper.root .. "/spec/fixtures/worker_child.lua", { dsn, "pool" })
    local pool_pid = assert(proc.pid(h))
    local holder = proc.wait_for(function()
      return scalar("SELECT worker_id FROM celers_tasks WHERE state = 'processing' AND id = " .. q(id))
    end, 20, 0.05)
    assert.truthy(holder, proc.output(h))
    local victim = tonumber(holder:match(":(%d+):w%d+$"))
    assert.truthy(victim, holder)
    proc.kill(victim, "KILL")
    -- nothing lost: after the 2 s lease another worker claims it (attempt 2) and completes it
    local done = proc.wait_for(function()
      return scalar("SELECT state FROM celers_tasks WHERE id = " .. q(id)) == "completed"
    end, 30, 0.2)
    assert.truthy(done, proc.output(h))
    assert.equal("2", scalar("SELECT retry_count FROM celers_tasks WHERE id = " .. q(id)))
    assert.are_not.equal(holder, scalar("SELECT worker_id FROM celers_tasks WHERE id = " .. q(id)))
    assert.equal(0, tonumber(scalar("SELECT COUNT(*) FROM celers_dead_letter_queue")))
    -- the pool noticed and restarted the killed worker: wait for 2 live workers, then stop it
    proc.sleep(0.5)
    proc.kill(pool_pid, "TERM")
    local code, out = proc.wait(h, 40)
    assert.equal(0, code, out)
    assert.matches("was killed by signal 9; restarting it", out, 1, true)
    -- three exits: the killed one, then both workers stopping cleanly on SIGTERM
    local exits = {}
    for line in out:gmatch("exit [^\n]*") do exits[#exits + 1] = line end
    assert.equal(3, #exits, out)
    assert.matches("killed 9", out, 1, true)
    local clean = 0
    for _, e in ipairs(exits) do if e:match("exited 0$") then clean = clean + 1 end end
    assert.equal(2, clean, out)
  end)
end)
