-- The dead-letter queue: list_dlq, requeue_from_dlq, purge_dlq, purge_all_dlq.
local helper = require "spec.helper"
local celers = require "celers"

local dsn = helper.fresh_dsn("dlq")
local q = helper.sql_string

local function dlq_count(where)
  return tonumber(helper.scalar(dsn, "SELECT COUNT(*) FROM celers_dead_letter_queue"
    .. (where and (" WHERE " .. where) or "")))
end

-- enqueue and fail a task for good; returns its task id and its DLQ row id
local function dead(broker, name, payload, opts)
  opts = opts or {}
  opts.max_retries = 0
  local id = assert(broker:enqueue(name, payload, opts))
  local t = assert(broker:dequeue())
  assert.equals(id, t.id)
  local ok, how = broker:reject(t, { requeue = false, error = "boom " .. name })
  assert.is_true(ok)
  assert.equals("dead_letter", how)
  return id, helper.scalar(dsn, "SELECT id FROM celers_dead_letter_queue WHERE task_id = " .. q(id))
end

describe("dead-letter queue", function()
  local a, b
  setup(function()
    a = assert(celers.connect(dsn .. "&queue=da"))
    assert(a:migrate())
    b = a:with_queue("db")
  end)
  before_each(function() helper.query(dsn, "DELETE FROM celers_tasks; DELETE FROM celers_dead_letter_queue") end)
  teardown(function() if a then a:close() end end)

  it("lists the queue's entries, oldest failure first", function()
    local t1, d1 = dead(a, "first", { k = 1 }, { priority = 5, metadata = { who = "me" } })
    local _, d2 = dead(a, "second", "raw")
    dead(b, "other", "x")
    local list = assert(a:list_dlq())
    assert.equals(2, #list)
    assert.same({ d1, d2 }, { list[1].id, list[2].id })
    local e = list[1]
    assert.equals(t1, e.task_id)
    assert.equals("first", e.name)
    assert.same({ k = 1 }, e.payload)
    assert.equals('{"k":1}', e.body)
    assert.equals("json", e.payload_type)
    assert.equals(5, e.priority)
    assert.equals(0, e.max_retries)
    assert.equals(1, e.retry_count)
    assert.equals("da", e.queue)
    assert.equals("boom first", e.error)
    assert.same({ who = "me" }, e.metadata)
    assert.is_number(e.failed_at)
    assert.equals("raw", list[2].payload)
    assert.same({ d2 }, { a:list_dlq { offset = 1, limit = 5 }[1].id })
    assert.equals(1, #b:list_dlq())
  end)

  it("requeues an entry as a fresh pending task in one step", function()
    local old, d = dead(a, "again", { k = 2 }, { priority = 7, metadata = { m = 1 } })
    local id = assert(a:requeue_from_dlq(d))
    assert.not_equals(old, id)
    assert.equals(0, dlq_count())
    local r = helper.query(dsn, "SELECT task_name, payload, payload_type, priority, retry_count, max_retries, "
      .. "queue, state, JSON_COMPACT(metadata), scheduled_at <= NOW(6) FROM celers_tasks WHERE id = " .. q(id))[1]
    assert.same({ "again", '{"k":2}', "json", "7", "0", "0", "da", "pending", '{"m":1}', "1" }, r)
    local t = assert(a:dequeue())
    assert.equals(id, t.id)
    assert.same({ k = 2 }, t.payload)
  end)

  it("never touches another queue's entries", function()
    local _, d = dead(b, "theirs", "x")
    dead(a, "ours", "y")
    local id, err = a:requeue_from_dlq(d)
    assert.is_false(id)
    assert.is_nil(err)
    assert.is_false(a:purge_dlq(d))
    assert.equals(1, a:purge_all_dlq())
    assert.equals(1, dlq_count("queue='db'"))
    assert.equals(0, dlq_count("queue='da'"))
    assert.equals(0, tonumber(helper.scalar(dsn, "SELECT COUNT(*) FROM celers_tasks WHERE queue='da'")))
  end)

  it("purges one entry or all of the queue's, in chunks", function()
    local _, d = dead(a, "one", "1")
    assert.is_true(a:purge_dlq(d))
    assert.is_false(a:purge_dlq(d))
    helper.query(dsn, "INSERT INTO celers_dead_letter_queue (id, task_id, task_name, payload, queue) "
      .. "SELECT UUID(), UUID(), 'bulk', 'p', IF(seq % 10 = 0, 'db', 'da') FROM seq_1_to_2500")
    assert.equals(2250, a:purge_all_dlq())
    assert.equals(0, dlq_count("queue='da'"))
    assert.equals(250, dlq_count("queue='db'"))
  end)

  it("raises on bad arguments and returns nil, err on failures", function()
    assert.error_matches(function() a:requeue_from_dlq(1) end, "dlq_id")
    assert.error_matches(function() a:purge_dlq() end, "dlq_id")
    assert.error_matches(function() a:list_dlq { limit = "x" } end, "limit")
    assert.error_matches(function() a:list_dlq { queue = "x" } end, "queue")
    local id, err = a:requeue_from_dlq("nope")
    assert.is_false(id)
    assert.is_nil(err)
    local fdsn = helper.fresh_dsn("dlq_fail")
    local c = assert(celers.connect(fdsn))
    assert(c:migrate())
    helper.query(fdsn, "DROP TABLE celers_dead_letter_queue")
    for _, call in ipairs {
      function() return c:list_dlq() end,
      function() return c:requeue_from_dlq("x") end,
      function() return c:purge_dlq("x") end,
      function() return c:purge_all_dlq() end,
    } do
      local res, e = call()
      assert.is_nil(res)
      assert.equals("sql", e.code)
    end
    c:close()
  end)

  -- The task's own columns, as the DLQ holds them.
  local KEPT = "SELECT task_name, timeout_seconds, idempotency_key, state, worker_id, claim_id IS NOT NULL, "
    .. "started_at IS NOT NULL, scheduled_at IS NOT NULL, lease_expires_at IS NOT NULL, created_at IS NOT NULL, "
    .. "retry_count, max_retries, priority FROM celers_dead_letter_queue WHERE task_id = "

  it("keeps every column of a task it takes by reject, and requeue brings the task back as it was", function()
    local id = assert(a:enqueue("long", "p", { timeout = 3600, idempotency_key = "once", priority = 3,
      max_retries = 0 }))
    local created = helper.scalar(dsn, "SELECT created_at FROM celers_tasks WHERE id = " .. q(id))
    local t = assert(a:dequeue { worker_id = "w-1" })
    assert.same({ true, "dead_letter" }, { a:reject(t, { requeue = false, error = "no" }) })
    assert.same({ "long", "3600", "once", "processing", "w-1", "1", "1", "1", "1", "1", "1", "0", "3" },
      helper.query(dsn, KEPT .. q(id))[1])
    local e = a:list_dlq()[1]
    assert.same({ 3600, "once", "w-1" }, { e.timeout, e.idempotency_key, e.worker_id })
    assert.is_number(e.started_at)
    local nid = assert(a:requeue_from_dlq(e.id))
    assert.same({ "3600", "once", created, "pending", "0" }, helper.query(dsn, "SELECT timeout_seconds, "
      .. "idempotency_key, created_at, state, retry_count FROM celers_tasks WHERE id = " .. q(nid))[1])
    -- the key is the task's again: enqueueing with it finds the requeued task
    local again, fresh = a:enqueue("long", "p", { idempotency_key = "once" })
    assert.same({ nid, false }, { again, fresh })
    -- and its claim gets the task's own lease, not the broker's default
    local t2 = assert(a:dequeue())
    assert.equals(nid, t2.id)
    assert.near(3600, t2.lease_expires_at - t2.started_at, 1)
  end)

  it("keeps every column of a task the lease sweeps move: on dequeue and in recover_stuck_tasks", function()
    local c = assert(celers.connect(dsn .. "&queue=dsweep&recover_interval=0"))
    local id1 = assert(c:enqueue("swept", "p", { timeout = 1800, idempotency_key = "k1", max_retries = 0 }))
    local id2 = assert(c:enqueue("stuck", "p", { timeout = 7200, idempotency_key = "k2", max_retries = 0 }))
    assert(c:dequeue { worker_id = "w-a" })
    assert(c:dequeue { worker_id = "w-b" })
    helper.query(dsn, "UPDATE celers_tasks SET lease_expires_at = NOW(6) - INTERVAL 1 SECOND WHERE id = " .. q(id1))
    assert.is_nil(c:dequeue()) -- its sweep moves id1
    assert.same({ "swept", "1800", "k1", "processing", "w-a", "1", "1", "1", "1", "1", "1", "0", "0" },
      helper.query(dsn, KEPT .. q(id1))[1])
    helper.query(dsn, "UPDATE celers_tasks SET started_at = NOW(6) - INTERVAL 1 HOUR WHERE id = " .. q(id2))
    assert.same({ 0, 1 }, { c:recover_stuck_tasks(60) })
    assert.same({ "stuck", "7200", "k2", "processing", "w-b", "1", "1", "1", "1", "1", "1", "0", "0" },
      helper.query(dsn, KEPT .. q(id2))[1])
    local d2 = helper.scalar(dsn, "SELECT id FROM celers_dead_letter_queue WHERE task_id = " .. q(id2))
    local nid = assert(c:requeue_from_dlq(d2))
    assert.equals("7200", helper.scalar(dsn, "SELECT timeout_seconds FROM celers_tasks WHERE id = " .. q(nid)))
    c:close()
  end)

  it("requeue refuses, keeping the entry, when the task's idempotency key was taken meanwhile", function()
    local _, d = dead(a, "keyed", "p", { idempotency_key = "dup" })
    local other = assert(a:enqueue("keyed", "p2", { idempotency_key = "dup" }))
    local res, err = a:requeue_from_dlq(d)
    assert.is_nil(res)
    assert.equals("duplicate", err.code)
    assert.equals(1, dlq_count("id = " .. q(d)))
    assert.equals(1, tonumber(helper.scalar(dsn, "SELECT COUNT(*) FROM celers_tasks WHERE idempotency_key = 'dup'")))
    assert.is_true(a:purge_dlq(d))
    assert.truthy(other)
  end)
end)
