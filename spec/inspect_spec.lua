-- Task inspection: list_tasks, get_statistics, count_by_task_name, scheduled/processing
-- lists, per-worker lists, set_worker_id, update_error_message. Checked against what the
-- database holds (spec.helper talks to it through the mariadb client).
local helper = require "spec.helper"
local celers = require "celers"

local dsn = helper.fresh_dsn("inspect")
local q = helper.sql_string

local function count(where)
  return tonumber(helper.scalar(dsn, "SELECT COUNT(*) FROM celers_tasks WHERE " .. where))
end

describe("inspection", function()
  local a, b -- brokers on queues ia and ib, same connection

  setup(function()
    a = assert(celers.connect(dsn .. "&queue=ia"))
    assert(a:migrate())
    b = a:with_queue("ib")
  end)

  before_each(function()
    helper.query(dsn, "DELETE FROM celers_tasks; DELETE FROM celers_dead_letter_queue")
  end)

  teardown(function() if a then a:close() end end)

  describe("list_tasks", function()
    it("lists the queue's tasks in id order, filtered by state, with limit and offset", function()
      local ids = {}
      for i = 1, 5 do ids[i] = assert(a:enqueue("job", { n = i })) end
      b:enqueue("other", "x")
      local t = assert(a:dequeue())
      assert(a:ack(t))
      local all = assert(a:list_tasks())
      assert.equals(5, #all)
      for i, task in ipairs(all) do
        assert.equals(ids[i], task.id)
        assert.equals("ia", task.queue)
        assert.same({ n = i }, task.payload)
      end
      local done = assert(a:list_tasks { state = "completed" })
      assert.equals(1, #done)
      assert.equals(helper.scalar(dsn, "SELECT id FROM celers_tasks WHERE state='completed'"), done[1].id)
      local page = assert(a:list_tasks { limit = 2, offset = 1 })
      assert.same({ ids[2], ids[3] }, { page[1].id, page[2].id })
      assert.same({}, a:list_tasks { limit = 0 })
    end)

    it("pages by after_id through every task of the queue exactly once", function()
      local batch = {}
      for i = 1, 250 do batch[i] = { name = "bulk", payload = tostring(i) } end
      assert(a:enqueue_batch(batch))
      b:enqueue_batch { { name = "noise", payload = "1" }, { name = "noise", payload = "2" } }
      local seen, after, pages = {}, nil, 0
      repeat
        local page = assert(a:list_tasks { after_id = after, limit = 100 })
        for _, t in ipairs(page) do
          assert.is_nil(seen[t.id])
          assert.equals("ia", t.queue)
          if after then assert.is_true(t.id > after) end
          seen[t.id] = true
          after = t.id
        end
        pages = pages + 1
      until #page < 100
      assert.equals(3, pages)
      local n = 0
      for _ in pairs(seen) do n = n + 1 end
      assert.equals(count("queue='ia'"), n)
      assert.equals(250, n)
    end)

    it("combines state and after_id", function()
      local first = a:enqueue("s", "1")
      a:enqueue("s", "2")
      local third = a:enqueue("s", "3")
      assert(a:cancel(third))
      local got = assert(a:list_tasks { state = "pending", after_id = first })
      assert.equals(1, #got)
      assert.equals("2", got[1].payload)
    end)

    it("raises on bad arguments", function()
      assert.has_error(function() a:list_tasks("pending") end)
      assert.error_matches(function() a:list_tasks { limit = -1 } end, "limit")
      assert.error_matches(function() a:list_tasks { limit = 1.5 } end, "limit")
      assert.error_matches(function() a:list_tasks { state = 3 } end, "state")
      assert.error_matches(function() a:list_tasks { after_id = {} } end, "after_id")
      assert.error_matches(function() a:list_tasks { bogus = 1 } end, "bogus")
    end)
  end)

  describe("get_statistics", function()
    it("counts each state of the queue and nothing of another queue", function()
      for i = 1, 4 do a:enqueue("job", tostring(i)) end
      a:enqueue_after("later", "x", 3600)
      a:enqueue_after("later", "y", 3600)
      local t1 = assert(a:dequeue())
      local t2 = assert(a:dequeue())
      a:dequeue()
      a:ack(t1)
      a:cancel(a:enqueue("gone", "z"))
      a:reject(t2, { requeue = false })
      for i = 1, 7 do b:enqueue("noise", tostring(i)) end
      helper.query(dsn, "INSERT INTO celers_tasks (id, task_name, payload, state, queue) VALUES "
        .. "(UUID(), 'old', 'p', 'failed', 'ia')")
      local s = assert(a:get_statistics())
      assert.same({
        pending = count("queue='ia' AND state='pending' AND scheduled_at <= NOW(6)"),
        processing = count("queue='ia' AND state='processing'"),
        completed = count("queue='ia' AND state='completed'"),
        failed = count("queue='ia' AND state='failed'"),
        cancelled = count("queue='ia' AND state='cancelled'"),
        scheduled = count("queue='ia' AND (state='scheduled' OR (state='pending' AND scheduled_at > NOW(6)))"),
        dlq = tonumber(helper.scalar(dsn, "SELECT COUNT(*) FROM celers_dead_letter_queue WHERE queue='ia'")),
        total = count("queue='ia'"),
      }, s)
      assert.same({ 1, 1, 1, 1, 1, 2, 1, 7 },
        { s.pending, s.processing, s.completed, s.failed, s.cancelled, s.scheduled, s.dlq, s.total })
      local sb = assert(b:get_statistics())
      assert.equals(7, sb.pending)
      assert.equals(7, sb.total)
      assert.equals(0, sb.dlq)
    end)

    it("counts through indexes: EXPLAIN names a key for every part", function()
      for i = 1, 30 do a:enqueue("job", tostring(i)) end
      helper.query(dsn, "ANALYZE TABLE celers_tasks, celers_dead_letter_queue")
      -- the statement get_statistics runs (csrc/inspect.c SQL_STATS) and count_scheduled_tasks
      local stats = "SELECT state, COUNT(*) FROM celers_tasks WHERE queue = 'ia' GROUP BY state "
        .. "UNION ALL SELECT '#early', COUNT(*) FROM celers_tasks WHERE queue = 'ia' "
        .. "AND state = 'pending' AND scheduled_at > NOW(6) "
        .. "UNION ALL SELECT '#dlq', COUNT(*) FROM celers_dead_letter_queue WHERE queue = 'ia'"
      local rows = helper.query(dsn, "EXPLAIN " .. stats)
      assert.equals(3, #rows)
      for _, r in ipairs(rows) do
        -- id, select_type, table, type, possible_keys, key, key_len, ref, rows, Extra
        assert.not_equals("ALL", r[4], table.concat(r, " "))
        assert.not_equals("NULL", r[6], table.concat(r, " "))
        assert.matches("Using index", r[10], 1, true)
      end
    end)
  end)

  describe("count_by_task_name", function()
    it("counts pending and processing tasks by name, or one given state", function()
      a:enqueue("send", "1"); a:enqueue("send", "2"); a:enqueue("resize", "3")
      local t = assert(a:dequeue()) -- the first "send"
      a:cancel(a:enqueue("send", "4"))
      b:enqueue("send", "5"); b:enqueue("elsewhere", "6")
      assert.same({ send = 2, resize = 1 }, a:count_by_task_name())
      assert.same({ send = 1 }, a:count_by_task_name("cancelled"))
      assert.same({ send = 1 }, a:count_by_task_name("processing"))
      assert.same({ send = 1, elsewhere = 1 }, b:count_by_task_name())
      assert(a:ack(t))
      assert.same({ send = 1, resize = 1 }, a:count_by_task_name())
      assert.error_matches(function() a:count_by_task_name(1) end, "state")
    end)
  end)

  describe("scheduled tasks", function()
    it("lists and counts tasks whose time has not come, soonest first", function()
      a:enqueue("now", "n")
      local late = a:enqueue_after("s", "late", 7200)
      local soon = a:enqueue_after("s", "soon", 60)
      b:enqueue_after("s", "other", 60)
      assert.equals(2, a:count_scheduled_tasks())
      assert.equals(count("queue='ia' AND state='scheduled'"), a:count_scheduled_tasks())
      local list = assert(a:list_scheduled_tasks())
      assert.same({ soon, late }, { list[1].id, list[2].id })
      assert.is_true(list[1].scheduled_at < list[2].scheduled_at)
      local second = assert(a:list_scheduled_tasks { limit = 1, offset = 1 })
      assert.same({ late }, { second[1].id })
      assert.equals(1, b:count_scheduled_tasks())
      assert.error_matches(function() a:list_scheduled_tasks { offset = -2 } end, "offset")
      assert.error_matches(function() a:list_scheduled_tasks { state = "x" } end, "state")
    end)
  end)

  describe("processing tasks and workers", function()
    it("lists what is being processed, and by which worker", function()
      for i = 1, 3 do a:enqueue("job", tostring(i)) end
      b:enqueue("job", "b")
      local t1 = assert(a:dequeue { worker_id = "w1" })
      local t2 = assert(a:dequeue { worker_id = "w2" })
      local t3 = assert(a:dequeue { worker_id = "w1" })
      local tb = assert(b:dequeue { worker_id = "w1" })
      assert(a:ack(t3))
      local p = assert(a:get_processing_tasks())
      assert.same({ t1.id, t2.id }, { p[1].id, p[2].id })
      assert.equals(2, #p)
      assert.same({ t2.id }, { a:get_processing_tasks { offset = 1 }[1].id })
      local w1 = assert(a:get_tasks_by_worker("w1"))
      assert.equals(1, #w1)
      assert.equals(t1.id, w1[1].id)
      assert.same({}, a:get_tasks_by_worker("nobody"))
      assert.equals(tb.id, b:get_tasks_by_worker("w1")[1].id)
      assert.error_matches(function() a:get_tasks_by_worker(nil) end, "worker_id")
    end)

    it("sets worker_id and error_message of a task of the queue only", function()
      local id = a:enqueue("job", "1")
      local other = b:enqueue("job", "2")
      assert.is_true(a:set_worker_id(id, "w9"))
      assert.equals("w9", helper.scalar(dsn, "SELECT worker_id FROM celers_tasks WHERE id=" .. q(id)))
      assert.is_true(a:set_worker_id(id, "w9")) -- unchanged, still found
      assert.is_true(a:update_error_message(id, "boom"))
      assert.equals("boom", helper.scalar(dsn, "SELECT error_message FROM celers_tasks WHERE id=" .. q(id)))
      assert.is_true(a:update_error_message(id, nil))
      assert.equals("NULL", helper.scalar(dsn, "SELECT error_message FROM celers_tasks WHERE id=" .. q(id)))
      assert.is_false(a:set_worker_id(other, "w9"))
      assert.is_false(a:update_error_message(other, "no"))
      assert.equals("NULL",
        helper.scalar(dsn, "SELECT COALESCE(worker_id, 'NULL') FROM celers_tasks WHERE id=" .. q(other)))
      assert.is_false(a:set_worker_id("00000000-0000-0000-0000-000000000000", "w"))
      assert.error_matches(function() a:set_worker_id(1, "w") end, "'id'")
      assert.error_matches(function() a:update_error_message(id, 5) end, "message")
    end)
  end)

  describe("failures", function()
    it("return nil, err from the server", function()
      local c = assert(celers.connect(helper.fresh_dsn("inspect_fail") .. "&queue=ia"))
      assert(c:migrate())
      helper.query(helper.with_database(dsn, "celers_t_inspect_fail"), "DROP TABLE celers_tasks")
      for _, call in ipairs {
        function() return c:list_tasks() end,
        function() return c:get_statistics() end,
        function() return c:count_by_task_name() end,
        function() return c:list_scheduled_tasks() end,
        function() return c:count_scheduled_tasks() end,
        function() return c:get_processing_tasks() end,
        function() return c:get_tasks_by_worker("w") end,
        function() return c:set_worker_id("x", "w") end,
        function() return c:update_error_message("x", "m") end,
      } do
        local res, err = call()
        assert.is_nil(res)
        assert.equals("sql", err.code)
        assert.matches("celers_tasks", tostring(err))
      end
      c:close()
      assert.error_matches(function() c:list_tasks() end, "closed")
    end)
  end)
end)
