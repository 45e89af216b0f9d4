-- The scheduled state and its staging step (csrc/staging.c): not-yet-due tasks wait in
-- 'scheduled' outside the claim's index range; claims promote the due ones, oldest first, a
-- bounded number at a time. Never early, never lost, in order, also while paused.
-- luacheck: max line length 160
local helper = require "spec.helper"
local celers = require "celers"
local core = require "celers.core"

local sqls = helper.sql_string

describe("staging", function()
   local dsn, broker

   local function scalar(sql) return helper.scalar(dsn, sql) end
   local function count(where) return tonumber(scalar("SELECT COUNT(*) FROM celers_tasks WHERE " .. where)) end
   local function state(id) return scalar("SELECT state FROM celers_tasks WHERE id = " .. sqls(id)) end
   local function db_now() return tonumber(scalar("SELECT UNIX_TIMESTAMP(NOW(6))")) end

   -- n rows straight into the table in one statement, as another writer (or a backlog) would
   local function insert_rows(n, state_, sched_sql, queue)
      helper.query(dsn, ("SET SESSION max_recursive_iterations = 1000000; INSERT INTO celers_tasks (id, task_name, payload, state, queue, scheduled_at) "
         .. "WITH RECURSIVE s (i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < %d) "
         .. "SELECT UUID(), CONCAT('bulk', i), CAST(i AS CHAR), %s, %s, %s FROM s")
         :format(n, sqls(state_), sqls(queue or "default"), sched_sql))
   end

   setup(function()
      dsn = helper.fresh_dsn("spec_staging")
      broker = assert(celers.connect({ dsn = dsn, recover_interval = 3600 }))
      assert(broker:migrate())
   end)

   teardown(function()
      if broker then broker:close() end
   end)

   before_each(function()
      helper.query(dsn, "DELETE FROM celers_tasks; DELETE FROM celers_queue_pauses")
   end)

   it("enqueue parks a task that is not due in 'scheduled' and a due one in 'pending'", function()
      local later = assert(broker:enqueue("a", "x", { delay = 60 }))
      local at = assert(broker:enqueue_at("a", "x", db_now() + 60))
      local now = assert(broker:enqueue("a", "x", { delay = 0 }))
      local past = assert(broker:enqueue_at("a", "x", db_now() - 60))
      local ids = assert(broker:enqueue_batch { { name = "b", payload = "1", delay = 30 }, { name = "b", payload = "2" } })
      assert.same({ "scheduled", "scheduled", "pending", "pending", "scheduled", "pending" },
         { state(later), state(at), state(now), state(past), state(ids[1]), state(ids[2]) })
      assert.equal(3, broker:count_scheduled_tasks())
      local s = assert(broker:get_statistics())
      assert.same({ 3, 3, 6 }, { s.scheduled, s.pending, s.total })
      assert.equal(6, broker:queue_size())
   end)

   it("never hands a task out before its time, and hands it out soon after", function()
      local id = assert(broker:enqueue_after("soon", "x", 1.0))
      local due = tonumber(scalar("SELECT UNIX_TIMESTAMP(scheduled_at) FROM celers_tasks WHERE id = " .. sqls(id)))
      local got
      repeat
         got = broker:dequeue()
         if got then break end
         assert.equal("scheduled", state(id)) -- promoted only once due
         core.sleep(0.05)
      until db_now() > due + 2
      assert.is_table(got, "the task was never handed out")
      assert.equal(id, got.id)
      -- the database's own clock: claimed at or after scheduled_at, and promptly
      assert.equal("1", scalar("SELECT started_at >= scheduled_at AND started_at < scheduled_at + INTERVAL 1 SECOND "
         .. "FROM celers_tasks WHERE id = " .. sqls(id)))
   end)

   it("never hands out a Rust broker's future 'pending' row early, and leaves it pending", function()
      insert_rows(3, "pending", "NOW(6) + INTERVAL 1 HOUR")
      assert.is_nil(broker:dequeue())
      assert.same({}, broker:dequeue_batch(10))
      assert.equal(0, broker:promote_scheduled())
      assert.equal(3, count("state = 'pending'"))
      local s = assert(broker:get_statistics())
      assert.same({ 0, 3 }, { s.pending, s.scheduled })
      assert.equal(3, broker:count_scheduled_tasks())
      assert.equal(3, #broker:list_scheduled_tasks())
   end)

   it("promotes due tasks oldest first, a bounded number per step, and leaves later ones alone", function()
      -- inserted newest first, so id order and scheduled_at order disagree
      for i = 5, 1, -1 do
         helper.query(dsn, ("SET SESSION max_recursive_iterations = 1000000; INSERT INTO celers_tasks (id, task_name, payload, state, scheduled_at) VALUES "
            .. "(UUID(), 't%d', 'x', 'scheduled', NOW(6) - INTERVAL %d SECOND)"):format(i, 60 - i))
      end
      insert_rows(4, "scheduled", "NOW(6) + INTERVAL 1 HOUR")
      assert.equal(2, broker:promote_scheduled(2))
      assert.same({ { "t1" }, { "t2" } }, helper.query(dsn,
         "SELECT task_name FROM celers_tasks WHERE state = 'pending' ORDER BY task_name"))
      assert.equal(3, broker:promote_scheduled())
      assert.equal(0, broker:promote_scheduled())
      assert.equal(5, count("state = 'pending'"))
      assert.equal(4, count("state = 'scheduled' AND scheduled_at > NOW(6)"))
      -- claims take them in scheduled_at order (same priority)
      local names = {}
      for _, t in ipairs(assert(broker:dequeue_batch(10))) do names[#names + 1] = t.name end
      assert.same({ "t1", "t2", "t3", "t4", "t5" }, names)
   end)

   it("loses nothing: a backlog larger than one step is all handed out by claims alone", function()
      insert_rows(1234, "scheduled", "NOW(6) - INTERVAL 1 SECOND")
      local seen, n = {}, 0
      for _ = 1, 200 do
         local batch = assert(broker:dequeue_batch(100))
         for _, t in ipairs(batch) do
            assert.is_nil(seen[t.id])
            seen[t.id] = true
            n = n + 1
         end
         assert.equal(#batch, broker:ack_batch(batch))
         if n == 1234 then break end
         if #batch == 0 then core.sleep(0.12) end -- the next staging step
      end
      assert.equal(1234, n)
      assert.equal(1234, count("state = 'completed'"))
   end)

   it("works while the queue is paused: due tasks become pending, none is handed out until resume", function()
      assert(broker:pause())
      local id = assert(broker:enqueue_after("p", "x", 0.3))
      local due = tonumber(scalar("SELECT UNIX_TIMESTAMP(scheduled_at) FROM celers_tasks WHERE id = " .. sqls(id)))
      while db_now() < due + 0.05 do core.sleep(0.05) end
      core.sleep(0.15)
      assert.is_nil(broker:dequeue())
      assert.equal("pending", state(id))
      assert.is_nil(broker:dequeue())
      assert(broker:resume())
      assert.equal(id, assert(broker:dequeue()).id)
   end)

   it("retry and reject with a delay park the task in 'scheduled'; staging brings it back", function()
      local id = assert(broker:enqueue("r", "x", { max_retries = 5 }))
      assert.is_true((broker:retry(assert(broker:dequeue()), 0.3, "again")))
      assert.equal("scheduled", state(id))
      assert.is_nil(broker:dequeue())
      core.sleep(0.5)
      local t = assert(broker:dequeue())
      assert.equal(id, t.id)
      assert.is_true((broker:reject(t, { delay = 3600 })))
      assert.equal("scheduled", state(id))
      assert.equal(1, broker:count_scheduled_tasks())
      assert.is_true(broker:cancel(id))
      assert.equal("cancelled", state(id))
   end)

   it("keeps a queue's staging to that queue", function()
      insert_rows(3, "scheduled", "NOW(6) - INTERVAL 1 SECOND", "other")
      assert.equal(0, broker:promote_scheduled())
      assert.is_nil(broker:dequeue())
      assert.equal(3, count("queue = 'other' AND state = 'scheduled'"))
      assert.equal(3, broker:with_queue("other"):promote_scheduled())
   end)

   it("reads its own index: EXPLAIN of the step names idx_celers_tasks_staging", function()
      insert_rows(2000, "scheduled", "NOW(6) + INTERVAL 1 HOUR")
      insert_rows(2000, "completed", "NOW(6) - INTERVAL 1 HOUR")
      helper.query(dsn, "ANALYZE TABLE celers_tasks")
      -- the statement of csrc/staging.c
      local rows = helper.query(dsn, "EXPLAIN UPDATE celers_tasks SET state = 'pending' WHERE queue = 'default' "
         .. "AND state = 'scheduled' AND scheduled_at <= NOW(6) ORDER BY queue, state, scheduled_at LIMIT 500")
      assert.equal("idx_celers_tasks_staging", rows[1][6], table.concat(rows[1], " "))
      assert.is_nil(rows[1][10]:find("filesort", 1, true), table.concat(rows[1], " "))
      -- and it reads only what is due: one index entry past the due ones
      local before = tonumber(helper.query(dsn, "SHOW GLOBAL STATUS LIKE 'Handler_read_next'")[1][2])
      assert.equal(0, broker:promote_scheduled())
      local reads = tonumber(helper.query(dsn, "SHOW GLOBAL STATUS LIKE 'Handler_read_next'")[1][2]) - before
      assert.is_true(reads < 10, reads .. " index entries read by an empty staging step")
   end)

   it("migration 016 moves existing future 'pending' rows to 'scheduled'", function()
      insert_rows(4, "pending", "NOW(6) + INTERVAL 1 HOUR")
      insert_rows(2, "pending", "NOW(6) - INTERVAL 1 HOUR")
      helper.query(dsn, "DELETE FROM celers_migrations WHERE version = 'lua-016'")
      assert.same({ "lua-016_scheduled_state" }, assert(broker:migrate()))
      assert.equal(4, count("state = 'scheduled'"))
      assert.equal(2, count("state = 'pending'"))
   end)

   it("refuses bad arguments to promote_scheduled", function()
      assert.error_matches(function() broker:promote_scheduled(-1) end, "limit")
      assert.error_matches(function() broker:promote_scheduled("x") end, "limit")
      assert.error_matches(function() broker:promote_scheduled(2 ^ 40) end, "limit")
   end)
end)
