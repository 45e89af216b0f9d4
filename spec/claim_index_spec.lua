-- The claim reads an ascending index in order on every supported server: MariaDB before 10.8
-- ignores DESC in an index definition, so the claim index (migration 015) has none; the
-- "priority DESC" order is the ascending order of claim_rank = -priority. No filesort, and
-- SKIP LOCKED locks only the rows a claim returns: concurrent claims each get a row.
-- luacheck: max line length 160
local helper = require "spec.helper"
local celers = require "celers"
local core = require "celers.core"

local sqls = helper.sql_string

-- The claim of csrc/task.c (SQL_CLAIM), reduced to what decides the plan and the locks.
local CLAIM = "SELECT id FROM celers_tasks FORCE INDEX (idx_celers_tasks_claim) "
   .. "WHERE queue = '%s' AND state = 'pending' AND scheduled_at <= NOW(6) "
   .. "AND NOT EXISTS (SELECT 1 FROM celers_queue_pauses WHERE queue = '%s') "
   .. "ORDER BY claim_rank, scheduled_at, id LIMIT %d FOR UPDATE SKIP LOCKED"

describe("ascending claim index", function()
   local dsn, broker, ids, queue
   local round = 0

   -- the module's claim statement on this test's queue
   local function claim_sql(n) return CLAIM:format(queue, queue, n) end

   local function scalar(sql) return helper.scalar(dsn, sql) end
   local function explain_json(sql)
      local lines = {}
      for _, r in ipairs(helper.query(dsn, "EXPLAIN FORMAT=JSON " .. sql)) do lines[#lines + 1] = table.concat(r, "\t") end
      return table.concat(lines, "\n")
   end

   local end_holder -- defined below

   -- A second connection that claims n rows with the module's statement and keeps its
   -- transaction open for `secs` seconds (a mariadb client in the background); the specs end it
   -- sooner with end_holder. Returns the rows it locked, from INNODB_TRX. On a loaded machine a
   -- holder is sometimes never seen holding its locks (started late, or its count read as 0):
   -- that attempt is ended and the hold started again, up to three times.
   local function hold_claim(n, secs)
      local d = helper.parse_dsn(dsn)
      local out = os.tmpname()
      for _ = 1, 3 do
         local sql = os.tmpname()
         local f = assert(io.open(sql, "w"))
         -- at READ COMMITTED, as the module's sessions (REPEATABLE READ would add gap locks)
         f:write("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED;\nSTART TRANSACTION;\n", claim_sql(n), ";\nSELECT SLEEP(", secs, ");\nCOMMIT;\n")
         f:close()
         local args = { "mariadb", "--no-defaults", "--batch", "--default-character-set=utf8mb4",
                        "--user=" .. d.user, "--database=" .. d.database }
         if d.socket then args[#args + 1] = "--socket=" .. d.socket end
         if d.host and not d.socket then args[#args + 1] = "--host=" .. d.host end
         if d.port then args[#args + 1] = "--port=" .. d.port end
         for i, a in ipairs(args) do args[i] = helper.shell_quote(a) end
         local env = d.password and ("MYSQL_PWD=" .. helper.shell_quote(d.password) .. " ") or ""
         os.execute(("(%s%s <%s >%s 2>&1; rm -f %s) &"):format(env, table.concat(args, " "),
            helper.shell_quote(sql), helper.shell_quote(out), helper.shell_quote(sql)))
         -- wait until its locks are taken
         local deadline = core.monotonic() + 20
         while core.monotonic() < deadline do
            local locked = tonumber(scalar("SELECT COALESCE(SUM(trx_rows_locked), 0) FROM information_schema.INNODB_TRX"))
            if locked > 0 then return locked end
            core.sleep(0.02)
         end
         end_holder()
      end
      local o = io.open(out)
      error("the holding transaction never locked a row: " .. (o and o:read("*a") or ""))
   end

   local function holder_open()
      return tonumber(scalar("SELECT COUNT(*) FROM information_schema.INNODB_TRX")) > 0
   end

   local function wait_holder_gone()
      local deadline = core.monotonic() + 15
      while tonumber(scalar("SELECT COUNT(*) FROM information_schema.INNODB_TRX")) > 0 do
         assert(core.monotonic() < deadline, "holding transaction did not end")
         core.sleep(0.1)
      end
   end

   -- end the holding session (its transaction rolls back: nothing was changed)
   function end_holder()
      local tid = scalar("SELECT trx_mysql_thread_id FROM information_schema.INNODB_TRX LIMIT 1")
      if tid then pcall(helper.query, dsn, "KILL " .. tid) end
      wait_holder_gone()
   end

   setup(function()
      dsn = helper.fresh_dsn("spec_claim_index")
      broker = assert(celers.connect({ dsn = dsn, recover_interval = 3600 }))
      assert(broker:migrate())
      -- What MariaDB 10.6/10.7 build: every index ascending. Rebuild the claim index by hand
      -- without DESC, so this spec holds whatever the server does with DESC.
      helper.query(dsn, "DROP INDEX idx_celers_tasks_claim ON celers_tasks; "
         .. "CREATE INDEX idx_celers_tasks_claim ON celers_tasks (queue, state, claim_rank, scheduled_at, id)")
   end)

   teardown(function()
      if broker then broker:close() end
   end)

   before_each(function()
      wait_holder_gone()
      -- a queue of its own per test: entries of deleted rows that purge has not removed yet
      -- would sit in the range and be counted as locked
      round = round + 1
      queue = "ci" .. round
      local b = broker:with_queue(queue)
      ids = {}
      -- priorities 9..0, plus completed and scheduled rows that must not be read
      for p = 9, 0, -1 do ids[#ids + 1] = assert(b:enqueue("t", tostring(p), { priority = p })) end
      helper.query(dsn, "INSERT INTO celers_tasks (id, task_name, payload, state, priority, queue) "
         .. "SELECT UUID(), 'done', 'x', 'completed', 100, queue FROM celers_tasks WHERE queue = " .. sqls(queue))
      for _ = 1, 5 do assert(b:enqueue_after("later", "x", 3600, { priority = 1000 })) end
      helper.query(dsn, "ANALYZE TABLE celers_tasks")
   end)

   it("has no descending index part anywhere on celers_tasks", function()
      assert.equal("0", scalar("SELECT COUNT(*) FROM information_schema.STATISTICS WHERE table_schema = DATABASE() "
         .. "AND table_name = 'celers_tasks' AND collation = 'D'"))
      assert.same({ { "queue" }, { "state" }, { "claim_rank" }, { "scheduled_at" }, { "id" } }, helper.query(dsn,
         "SELECT column_name FROM information_schema.STATISTICS WHERE table_schema = DATABASE() AND table_name = "
         .. "'celers_tasks' AND index_name = 'idx_celers_tasks_claim' ORDER BY seq_in_index"))
      assert.equal("1", scalar("SELECT COUNT(*) = SUM(claim_rank = -priority) FROM celers_tasks"))
   end)

   it("EXPLAIN: the claim reads idx_celers_tasks_claim in order, with no filesort", function()
      local plan = explain_json(claim_sql(1))
      assert.matches('"key": "idx_celers_tasks_claim"', plan, 1, true)
      assert.is_nil(plan:find("filesort", 1, true), plan)
      plan = explain_json(claim_sql(100))
      assert.is_nil(plan:find("filesort", 1, true), plan)
      -- the control: the old order over ascending parts needs a sort, so this check can fail
      local old = explain_json("SELECT id FROM celers_tasks WHERE queue = " .. sqls(queue) .. " AND state = 'pending' "
         .. "ORDER BY priority DESC, scheduled_at, id LIMIT 1 FOR UPDATE SKIP LOCKED")
      assert.matches("filesort", old, 1, true)
   end)

   it("claims by priority (highest first) across the whole INT range", function()
      local b = broker:with_queue("extremes")
      local lo = assert(b:enqueue("lo", "x", { priority = -2147483648 }))
      local hi = assert(b:enqueue("hi", "x", { priority = 2147483647 }))
      local mid = assert(b:enqueue("mid", "x", { priority = 0 }))
      local got = assert(b:dequeue_batch(3))
      assert.same({ hi, mid, lo }, { got[1].id, got[2].id, got[3].id })
      assert.equal("2147483648", scalar("SELECT claim_rank FROM celers_tasks WHERE id = " .. sqls(lo)))
   end)

   it("locks only the row it returns: a claim holding its transaction open leaves the rest to others", function()
      -- InnoDB counts a row's claim-index entry and its clustered record: 2 per row returned
      -- (a sorting claim would lock all 10 ready rows)
      assert.equal(2, hold_claim(1, 60))
      -- the holder took the top-priority task; every other claim kind still gets the next ones
      local b = broker:with_queue(queue)
      local t = assert(b:dequeue())
      assert.equal(ids[2], t.id)
      local acked, t2 = b:ack_and_dequeue(t)
      assert.is_true(acked)
      assert.equal(ids[3], assert(t2).id)
      local n, batch = b:ack_batch_and_dequeue({ t2 }, 3)
      assert.equal(1, n)
      assert.same({ ids[4], ids[5], ids[6] }, { batch[1].id, batch[2].id, batch[3].id })
      assert.is_true(holder_open(), "the claims waited for the holder's locks")
      end_holder()
      assert.equal("pending", scalar("SELECT state FROM celers_tasks WHERE id = " .. sqls(ids[1])))
   end)

   it("two open claims of several rows each get their own rows", function()
      assert.equal(6, hold_claim(3, 60))
      local b = broker:with_queue(queue)
      local batch = assert(b:dequeue_batch(3))
      assert.same({ ids[4], ids[5], ids[6] }, { batch[1].id, batch[2].id, batch[3].id })
      assert.is_true(holder_open(), "the claim waited for the holder's locks")
      end_holder()
      -- the holder committed without claiming: its rows are still there, first in line
      assert.equal(ids[1], assert(b:dequeue()).id)
   end)
end)
