-- The broker methods behind the dashboard (csrc/dashboard.c, csrc/ldashboard.c): list_queues,
-- throughput, list_recurring, task_history, retry_now, connection_id. Checked against what
-- the database holds, misuse first.
local helper = require "spec.helper"
local celers = require "celers"

describe("dashboard reads", function()
  local dsn, b

  before_each(function()
    dsn = helper.fresh_dsn("dashboard_reads")
    b = assert(celers.connect(dsn))
    assert(b:migrate())
  end)

  after_each(function()
    if b then b:close() end
  end)

  it("raises on misuse, naming the argument", function()
    assert.has_error(function() b:throughput(0) end, "celers: throughput: 'minutes' must be within 1..1440")
    assert.has_error(function() b:throughput(1441) end)
    assert.has_error(function() b:throughput(-1) end)
    assert.has_error(function() b:throughput("x") end)
    assert.has_error(function() b:throughput(1 / 0) end)
    for _, bad in ipairs { 1, {}, true } do
      assert.has_error(function() b:retry_now(bad) end)
      assert.has_error(function() b:task_history(bad) end)
    end
    assert.has_error(function() b:retry_now("") end)
    local closed = assert(celers.connect(dsn))
    closed:close()
    for _, m in ipairs { "list_queues", "throughput", "list_recurring", "connection_id" } do
      assert.has_error(function() closed[m](closed) end)
    end
  end)

  it("lists every queue that has tasks, dead letters or a pause", function()
    assert.same({}, b:list_queues())
    assert(b:with_queue("b-tasks"):enqueue("t", "x"))
    local dq = b:with_queue("a-dead")
    assert(dq:enqueue("t", "x", { max_retries = 0 }))
    assert(dq:reject(assert(dq:dequeue()), { requeue = false, error = "e" }))
    assert.equal("0", helper.scalar(dsn, "SELECT COUNT(*) FROM celers_tasks WHERE queue = 'a-dead'"))
    assert(b:with_queue("c-paused"):pause())
    -- a NUL byte is refused, never cut (the queue would otherwise become "q")
    assert.has_error(function() b:with_queue("q\0with nul") end,
      "celers: with_queue: 'queue' must not contain NUL bytes")
    local odd = "q with 'quotes', \\ and \u{1F600}"
    assert(b:with_queue(odd):enqueue("t", "x"))
    local got = {}
    for _, q in ipairs(b:list_queues()) do got[q.queue] = q.paused end
    assert.same({ ["a-dead"] = false, ["b-tasks"] = false, ["c-paused"] = true, [odd] = false }, got)
    assert(b:with_queue("b-tasks"):pause())
    for _, q in ipairs(b:list_queues()) do
      if q.queue == "b-tasks" then assert.is_true(q.paused) end
    end
  end)

  it("counts enqueued, completed and failed per minute from the rows", function()
    local q = b:with_queue("tp")
    for i = 1, 5 do assert(q:enqueue("t", tostring(i), { max_retries = 0 })) end
    assert(q:ack(assert(q:dequeue())))
    assert(q:ack(assert(q:dequeue())))
    assert(q:reject(assert(q:dequeue()), { requeue = false, error = "x" }))
    assert(b:with_queue("elsewhere"):enqueue("t", "x"))
    -- one completed task archived: still counted, from celers_task_history
    assert.equal(1, q:archive_completed_tasks(0) >= 1 and 1 or 0)
    local totals = { enqueued = 0, completed = 0, failed = 0 }
    for _, r in ipairs(assert(q:throughput(60))) do
      assert.equal(0, r.minute % 60)
      totals[r.kind] = totals[r.kind] + r.count
    end
    local db = function(sql) return tonumber(helper.scalar(dsn, sql)) end
    assert.equal(db("SELECT COUNT(*) FROM celers_tasks WHERE queue = 'tp'"), totals.enqueued)
    assert.equal(db("SELECT COUNT(*) FROM celers_tasks WHERE queue = 'tp' AND state = 'completed'")
      + db("SELECT COUNT(*) FROM celers_task_history WHERE queue = 'tp' AND state = 'completed'"),
      totals.completed)
    assert.equal(2, totals.completed)
    assert.equal(1, totals.failed)
    -- rows older than the window are not counted
    helper.query(dsn, "UPDATE celers_tasks SET created_at = NOW(6) - INTERVAL 2 HOUR WHERE queue = 'tp'")
    for _, r in ipairs(assert(q:throughput(60))) do assert.is_not.equal("enqueued", r.kind) end
  end)

  it("lists each recurring schedule's latest run and the one before", function()
    assert.same({}, b:list_recurring())
    assert(b:enqueue_recurring("every-minute", 1800000000, "tick", "x"))
    assert(b:enqueue_recurring("every-minute", 1800000060, "tick", "x"))
    assert(b:enqueue_recurring("once", 1800000000, "tick", "x"))
    assert(b:with_queue("other"):enqueue_recurring("every-minute-other", 1800000000, "tick", "x"))
    local rs = b:list_recurring()
    assert.equal(2, #rs)
    assert.equal("every-minute", rs[1].schedule)
    assert.equal(1800000060, rs[1].last_run)
    assert.equal(1800000000, rs[1].previous_run)
    assert.equal(2, rs[1].runs)
    assert.equal(helper.scalar(dsn, "SELECT task_id FROM celers_recurring_runs WHERE run_at = 1800000060"),
      rs[1].task_id)
    assert.equal("once", rs[2].schedule)
    assert.is_nil(rs[2].previous_run)
  end)

  it("makes a waiting task due now, and nothing else", function()
    local later = assert(b:enqueue_after("later", "x", 3600))
    local now_id = assert(b:enqueue("now", "x"))
    local other = assert(b:with_queue("other"):enqueue_after("later", "x", 3600))
    assert.is_true(b:retry_now(later))
    assert.equal("1", helper.scalar(dsn,
      "SELECT scheduled_at <= NOW(6) AND state = 'pending' FROM celers_tasks WHERE id = " .. helper.sql_string(later)))
    assert.is_false(b:retry_now(now_id)) -- due already
    assert.is_false(b:retry_now(other))  -- another queue's
    assert.is_false(b:retry_now("no-such-id"))
    assert.equal("0", helper.scalar(dsn,
      "SELECT scheduled_at <= NOW(6) FROM celers_tasks WHERE id = " .. helper.sql_string(other)))
    assert(b:cancel(now_id))
    assert.is_true(b:retry_now(now_id))
    assert.equal("pending",
      helper.scalar(dsn, "SELECT state FROM celers_tasks WHERE id = " .. helper.sql_string(now_id)))
  end)

  it("reads a task's archived copies", function()
    local id = assert(b:enqueue("t", "x"))
    assert.same({}, b:task_history(id))
    local t = assert(b:dequeue { worker_id = "w-1" })
    assert(b:ack(t))
    assert(b:archive_completed_tasks(0))
    local h = b:task_history(id)
    assert.equal(1, #h)
    assert.equal("completed", h[1].state)
    assert.equal("w-1", h[1].worker_id)
    assert.equal(1, h[1].retry_count)
    assert.is_number(h[1].completed_at)
    assert.is_true(h[1].archived_at >= h[1].completed_at)
    assert.same({}, b:with_queue("other"):task_history(id))
  end)

  it("reports the server's id of its connection, and a new one after a reconnect", function()
    local id = b:connection_id()
    assert.equal(tostring(id), helper.scalar(dsn, "SELECT ID FROM information_schema.PROCESSLIST WHERE ID = " .. id))
    assert.equal(id, b:with_queue("x"):connection_id()) -- siblings share the connection
    helper.query(dsn, "KILL " .. id)
    assert(b:get_statistics())
    assert.is_not.equal(id, b:connection_id())
  end)
end)
