-- Health and upkeep: check_health, get_table_sizes, optimize/analyze, archive_completed_tasks,
-- recover_stuck_tasks and the purges.
local helper = require "spec.helper"
local celers = require "celers"

local dsn = helper.fresh_dsn("maint")
local q = helper.sql_string

local function count(sql) return tonumber(helper.scalar(dsn, sql)) end
local function tasks(where)
  return count("SELECT COUNT(*) FROM celers_tasks" .. (where and (" WHERE " .. where) or ""))
end

-- n tasks of queue in state, straight into the table
local function seed(queue, state, n, name, extra)
  helper.query(dsn, ("INSERT INTO celers_tasks (id, task_name, payload, state, queue, completed_at) "
    .. "SELECT UUID(), %s, 'p', %s, %s, %s FROM seq_1_to_%d"):format(
      q(name or "seeded"), q(state), q(queue), extra or "NULL", n))
end

describe("maintenance", function()
  local a, b
  setup(function()
    a = assert(celers.connect(dsn .. "&queue=ma"))
    assert(a:migrate())
    b = a:with_queue("mb")
  end)
  before_each(function()
    helper.query(dsn, "DELETE FROM celers_tasks; DELETE FROM celers_dead_letter_queue; "
      .. "DELETE FROM celers_results; DELETE FROM celers_task_history")
  end)
  teardown(function() if a then a:close() end end)

  describe("check_health", function()
    it("reports the server, the round trip and the queue's counts", function()
      a:enqueue("x", "1"); a:enqueue("x", "2")
      a:dequeue()
      b:enqueue("y", "3")
      local h = a:check_health()
      assert.is_true(h.healthy)
      assert.equals(helper.scalar(dsn, "SELECT VERSION()"), h.server_version)
      assert.is_number(h.latency_ms)
      assert.is_true(h.latency_ms >= 0)
      assert.same({ 1, 1, 0 }, { h.pending, h.processing, h.dlq })
      assert.is_nil(h.error)
    end)

    it("returns healthy=false with the error when a query fails", function()
      local fdsn = helper.fresh_dsn("maint_health")
      local c = assert(celers.connect(fdsn))
      assert(c:migrate())
      helper.query(fdsn, "DROP TABLE celers_dead_letter_queue")
      local h = c:check_health()
      assert.is_false(h.healthy)
      assert.equals("sql", h.error.code)
      assert.matches("celers: sql: ", tostring(h.error))
      c:close()
    end)

    it("returns healthy=false, never raises, when the server cannot be reached", function()
      local fdsn = helper.fresh_dsn("maint_dead")
      local c = assert(celers.connect { dsn = fdsn, reconnect_tries = 1, reconnect_backoff = 0.01 })
      assert(c:migrate())
      assert.is_true(c:check_health().healthy)
      -- the link dies and the database it connects to is gone: every reconnect fails
      local ids = helper.query(dsn, "SELECT ID FROM information_schema.PROCESSLIST "
        .. "WHERE DB = 'celers_t_maint_dead' AND ID <> CONNECTION_ID()")
      assert.equals(1, #ids)
      helper.query(dsn, "DROP DATABASE celers_t_maint_dead; KILL " .. ids[1][1])
      local ok, h = pcall(c.check_health, c)
      assert.is_true(ok, tostring(h))
      assert.is_false(h.healthy)
      assert.is_table(h.error)
      assert.is_string(h.error.code)
      assert.is_nil(h.server_version)
      c:close()
    end)
  end)

  describe("tables", function()
    it("get_table_sizes reports every celers table of the database", function()
      seed("ma", "pending", 50)
      helper.query(dsn, "ANALYZE TABLE celers_tasks")
      local sizes = assert(a:get_table_sizes())
      local names = helper.query(dsn, "SELECT table_name FROM information_schema.tables "
        .. "WHERE table_schema = DATABASE() AND table_name LIKE 'celers\\_%'")
      assert.is_true(#names >= 8)
      for _, r in ipairs(names) do
        local s = sizes[r[1]]
        assert.is_table(s, r[1])
        assert.is_true(s.data_bytes > 0 and s.index_bytes >= 0 and s.rows >= 0, r[1])
      end
      assert.is_true(sizes.celers_tasks.index_bytes > 0)
      assert.is_true(sizes.celers_tasks.rows > 0)
    end)

    it("optimize_tables and analyze_tables run over every celers table", function()
      for _, m in ipairs { "optimize_tables", "analyze_tables" } do
        local out = assert(a[m](a))
        local seen = {}
        for _, r in ipairs(out) do
          assert.not_equals("error", r.msg_type, r.table .. ": " .. tostring(r.msg_text))
          seen[r.table:match("%.(.*)$")] = true
        end
        for _, t in ipairs { "celers_tasks", "celers_dead_letter_queue", "celers_results",
                             "celers_task_history" } do
          assert.is_true(seen[t], m .. " " .. t)
        end
      end
      assert.equals(0, tasks())
    end)
  end)

  describe("archive_completed_tasks", function()
    it("moves the queue's old completed tasks to history, in chunks", function()
      seed("ma", "completed", 2300, "old", "NOW(6) - INTERVAL 2 DAY")
      seed("ma", "completed", 5, "recent", "NOW(6)")
      seed("ma", "pending", 7)
      seed("mb", "completed", 11, "old", "NOW(6) - INTERVAL 2 DAY")
      assert.equals(2300, a:archive_completed_tasks(86400))
      assert.equals(0, tasks("queue='ma' AND task_name='old'"))
      assert.equals(12, tasks("queue='ma'"))
      assert.equals(11, tasks("queue='mb'"))
      assert.equals(2300, count("SELECT COUNT(*) FROM celers_task_history WHERE queue='ma' "
        .. "AND state='completed' AND task_name='old' AND completed_at < NOW(6) - INTERVAL 1 DAY"))
      assert.equals(2300, count("SELECT COUNT(DISTINCT task_id) FROM celers_task_history"))
      assert.equals(0, a:archive_completed_tasks(86400))
    end)

    it("keeps what the history needs of a real task", function()
      local id = a:enqueue("real", "p", { priority = 3 })
      local t = a:dequeue { worker_id = "w7" }
      a:ack(t)
      assert.equals(1, a:archive_completed_tasks(0))
      local r = helper.query(dsn, "SELECT task_name, state, worker_id, queue, priority, retry_count, "
        .. "task_created_at IS NOT NULL, started_at IS NOT NULL, completed_at IS NOT NULL "
        .. "FROM celers_task_history WHERE task_id = " .. q(id))[1]
      assert.same({ "real", "completed", "w7", "ma", "3", "1", "1", "1", "1" }, r)
      assert.is_nil(a:get_task(id))
    end)
  end)

  describe("recover_stuck_tasks", function()
    it("requeues tasks held past the threshold and dead-letters spent ones", function()
      local keep = a:enqueue("k", "1", { max_retries = 3 })
      local spent = a:enqueue("s", "2", { max_retries = 0 })
      local fresh = a:enqueue("f", "3")
      b:enqueue("o", "4")
      for _ = 1, 3 do assert(a:dequeue { lease = 3600 }) end
      assert(b:dequeue { lease = 3600 })
      helper.query(dsn, "UPDATE celers_tasks SET started_at = NOW(6) - INTERVAL 1 HOUR WHERE id IN ("
        .. q(keep) .. "," .. q(spent) .. ") OR queue = 'mb'")
      local requeued, dead = a:recover_stuck_tasks(600)
      assert.same({ 1, 1 }, { requeued, dead })
      assert.equals("pending", helper.scalar(dsn, "SELECT state FROM celers_tasks WHERE id=" .. q(keep)))
      assert.equals("processing", helper.scalar(dsn, "SELECT state FROM celers_tasks WHERE id=" .. q(fresh)))
      assert.equals(0, tasks("id=" .. q(spent)))
      assert.equals(1, count("SELECT COUNT(*) FROM celers_dead_letter_queue WHERE task_id=" .. q(spent)))
      assert.equals(1, tasks("queue='mb' AND state='processing'"))
      assert.error_matches(function() a:recover_stuck_tasks() end, "threshold_s")
      assert.error_matches(function() a:recover_stuck_tasks(-5) end, "threshold_s")
    end)
  end)

  describe("purges", function()
    it("purge_by_state and its shorthands delete only that state of the queue, in chunks", function()
      seed("ma", "completed", 2100)
      seed("ma", "failed", 3)
      seed("ma", "cancelled", 4)
      seed("ma", "pending", 5)
      seed("mb", "completed", 6)
      assert.equals(2100, a:purge_completed())
      assert.equals(3, a:purge_failed())
      assert.equals(4, a:purge_cancelled())
      assert.equals(0, a:purge_completed())
      assert.equals(5, tasks("queue='ma'"))
      assert.equals(6, tasks("queue='mb'"))
      assert.equals(5, a:purge_by_state("pending"))
      assert.equals(0, tasks("queue='ma'"))
      assert.equals(6, tasks("queue='mb'"))
    end)

    it("purge_by_task_name deletes that name in the queue, any state", function()
      seed("ma", "pending", 3, "gone")
      seed("ma", "completed", 2, "gone")
      seed("ma", "pending", 4, "kept")
      seed("mb", "pending", 5, "gone")
      assert.equals(5, a:purge_by_task_name("gone"))
      assert.equals(4, tasks("queue='ma'"))
      assert.equals(5, tasks("queue='mb' AND task_name='gone'"))
    end)

    it("purge_all empties tasks of every queue, the DLQ and results", function()
      seed("ma", "pending", 1500)
      seed("mb", "completed", 3)
      local id = a:enqueue("d", "x", { max_retries = 0 })
      a:reject(assert(a:dequeue()), { requeue = false })
      b:store_result(id, { result = "r" })
      helper.query(dsn, "INSERT INTO celers_task_history (task_id, task_name, state) VALUES (UUID(), 'h', 'completed')")
      local t, d, r = a:purge_all()
      assert.same({ 1503, 1, 1 }, { t, d, r })
      assert.equals(0, tasks())
      assert.equals(0, count("SELECT COUNT(*) FROM celers_dead_letter_queue"))
      assert.equals(0, count("SELECT COUNT(*) FROM celers_results"))
      assert.equals(1, count("SELECT COUNT(*) FROM celers_task_history"))
    end)

    it("raise on bad arguments", function()
      assert.error_matches(function() a:purge_by_state("complete") end, "state")
      assert.error_matches(function() a:purge_by_state(nil) end, "state")
      assert.error_matches(function() a:purge_by_task_name("") end, "task_name")
      assert.error_matches(function() a:purge_by_task_name(1) end, "task_name")
      assert.error_matches(function() a:archive_completed_tasks(nil) end, "older_than_s")
      assert.error_matches(function() a.purge_all(nil) end, "self")
    end)
  end)

  it("returns nil, err when the server fails", function()
    local fdsn = helper.fresh_dsn("maint_fail")
    local c = assert(celers.connect(fdsn))
    assert(c:migrate())
    helper.query(fdsn, "DROP TABLE celers_tasks")
    for name, call in pairs {
      archive = function() return c:archive_completed_tasks(1) end,
      recover = function() return c:recover_stuck_tasks(1) end,
      purge_all = function() return c:purge_all() end,
      by_state = function() return c:purge_by_state("failed") end,
      completed = function() return c:purge_completed() end,
      by_name = function() return c:purge_by_task_name("n") end,
    } do
      local res, err = call()
      assert.is_nil(res, name)
      assert.equals("sql", err.code, name)
    end
    local out = assert(c:optimize_tables()) -- reports the missing table in its rows
    local missing = false
    for _, r in ipairs(out) do
      if r.table:match("celers_tasks$") and r.msg_type:lower() == "error" then missing = true end
    end
    assert.is_true(missing)
    c:close()
  end)
end)
