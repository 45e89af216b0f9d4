-- The connection-level defects of issue 7, one spec each, against the real server.
-- luacheck: max line length 160
local helper = require "spec.helper"
local celers = require "celers"
local core = require "celers.core"

local sqls = helper.sql_string

describe("failure model", function()
   local dsn, db

   setup(function()
      dsn = helper.fresh_dsn("spec_fault_defects")
      db = helper.parse_dsn(dsn).database
      local b = assert(celers.connect(dsn))
      assert(b:migrate())
      b:close()
   end)

   before_each(function()
      core._inject_fault()
      helper.query(dsn, "DELETE FROM celers_tasks")
   end)

   local function state(id)
      return helper.scalar(dsn, "SELECT state FROM celers_tasks WHERE id = " .. sqls(id))
   end

   -- the sessions of our database other than the client's own
   local function kill_idle_sessions()
      local rows = helper.query(dsn, "SELECT id FROM information_schema.processlist WHERE db = " .. sqls(db)
         .. " AND id <> CONNECTION_ID() AND command = 'Sleep'")
      for _, r in ipairs(rows) do pcall(helper.query, dsn, "KILL " .. r[1]) end
      return #rows
   end

   it("an ack after the server killed the idle session lands and returns true", function()
      local b = assert(celers.connect(dsn))
      local id = assert(b:enqueue("k", "x"))
      local t = assert(b:dequeue())
      assert.is_true(kill_idle_sessions() >= 1)
      core.sleep(0.05)
      local ok, err = b:ack(t)
      assert.is_nil(err)
      assert.is_true(ok)
      assert.equal("completed", state(id))
      b:close()
   end)

   it("a statement whose link was cut before sending is sent again, not reported lost", function()
      local b = assert(celers.connect(dsn))
      local id = assert(b:enqueue("k", "x"))
      local t = assert(b:dequeue())
      core._inject_fault{ at = "before_send", op = "state = 'completed'" }
      assert.is_true(b:ack(t))
      assert.equal(0, core._inject_fault())
      assert.equal("completed", state(id))
      b:close()
   end)

   it("after lost, repeating ack, reject and retry gives the true outcome", function()
      local b = assert(celers.connect(dsn))
      for _, case in ipairs{
         { op = "state = 'completed'", call = function(t) return b:ack(t) end, want = "completed" },
         { op = "'scheduled', 'pending')", call = function(t) return b:retry(t, 60, "e") end, want = "scheduled" },
         { op = "'scheduled', 'pending')", call = function(t) return b:reject(t, { error = "e" }) end, want = "scheduled" },
      } do
         local id = assert(b:enqueue("k", "x", { max_retries = 5 }))
         local t = assert(b:dequeue())
         core._inject_fault{ at = "after_send", op = case.op }
         local ok, err = case.call(t)
         assert.is_nil(ok)
         assert.equal("lost", err.code)
         assert.equal(case.want, state(id))
         assert.is_true((case.call(t)))
         assert.equal(case.want, state(id))
         helper.query(dsn, "DELETE FROM celers_tasks")
      end
      b:close()
   end)

   it("ack_and_dequeue reports the ack when the call fails after it", function()
      local b = assert(celers.connect(dsn))
      local id = assert(b:enqueue("k", "x"))
      local t = assert(b:dequeue())
      assert(b:enqueue("k", "y"))
      core._inject_fault{ at = "after_send", op = "CALL celers_ack_and_claim" }
      local acked, next_task, err = b:ack_and_dequeue(t)
      assert.is_true(acked)
      assert.is_nil(next_task)
      assert.equal("lost", err.code)
      assert.equal("completed", state(id))
      b:close()
   end)

   -- a stand-in for celers_ack_and_claim whose body is given
   local function replace_procedure(body)
      helper.query(dsn, [[
DROP PROCEDURE IF EXISTS celers_ack_and_claim;
DELIMITER //
CREATE PROCEDURE celers_ack_and_claim(a CHAR(36), b CHAR(36), c VARCHAR(255), d VARCHAR(255), e CHAR(36), f DOUBLE)
BEGIN
]] .. body .. [[

END//
DELIMITER ;
]])
   end

   local function restore_procedure(b)
      helper.query(dsn, "DELETE FROM celers_migrations WHERE version = '010'")
      assert(b:migrate())
   end

   it("a CALL that fails part-way leaves the link and the statement usable", function()
      local b = assert(celers.connect(dsn))
      local id = assert(b:enqueue("k", "x"))
      local t = assert(b:dequeue())
      for _, body in ipairs{
         -- the error arrives in the middle of the rows of a result set
         "SELECT EXP(1000 * n) FROM (SELECT 0 AS n UNION ALL SELECT 1) AS t;",
         "SELECT 1; SELECT EXP(1000 * n) FROM (SELECT 0 AS n UNION ALL SELECT 1) AS t; SELECT 2;",
         "SELECT 1; SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'failed after a result set';",
      } do
         replace_procedure(body)
         -- twice: the second run of the cached statement must neither hang nor be out of sync
         for _ = 1, 2 do
            local t0 = core.monotonic()
            local acked, err = b:ack_and_dequeue(t)
            assert.is_nil(acked)
            assert.equal("sql", err.code)
            assert.is_nil(err.message:find("unexpected result", 1, true), err.message)
            assert.is_true(core.monotonic() - t0 < 5)
            assert.equal(0, b:queue_size())
         end
      end
      restore_procedure(b)
      assert.is_true(b:ack(t))
      assert.equal("completed", state(id))
      b:close()
   end)

   it("a statement timeout is reported as timeout without a reconnect or a repeat", function()
      local b = assert(celers.connect(dsn))
      core._inject_fault{ at = "error", errno = 1969, op = "SELECT COUNT(*)", count = 2 }
      local n, err = b:queue_size()
      assert.is_nil(n)
      assert.equal("timeout", err.code)
      assert.equal(1969, err.errno)
      -- not repeated: the second firing is still pending
      assert.equal(1, core._inject_fault())
      assert.equal(0, b:queue_size())
      b:close()
   end)

   it("the prepared-statement limit (1461) flushes the cache and runs again, else says too_many_statements", function()
      local b = assert(celers.connect(dsn))
      core._inject_fault{ at = "error", errno = 1461, op = "SELECT COUNT(*)" }
      assert.equal(0, b:queue_size())
      assert.equal(0, core._inject_fault())
      core._inject_fault{ at = "error", errno = 1461, op = "SELECT COUNT(*)", count = 2 }
      local n, err = b:queue_size()
      assert.is_nil(n)
      assert.equal("too_many_statements", err.code)
      assert.is_true(err.retryable)
      assert.equal(0, core._inject_fault())
      assert.equal(0, b:queue_size())
      b:close()
   end)

   -- run sql in a mariadb client in the background (it holds its locks while it sleeps)
   local function background_sql(sql)
      local d = helper.parse_dsn(dsn)
      local cmd = ("MYSQL_PWD=%s mariadb --no-defaults --user=%s %s --database=%s -e %s >/dev/null 2>&1 &"):format(
         helper.shell_quote(d.password or ""), helper.shell_quote(d.user or "root"),
         d.socket and ("--host=localhost --socket=" .. helper.shell_quote(d.socket)) or ("--host=" .. helper.shell_quote(d.host or "127.0.0.1")
            .. " --port=" .. (d.port or 3306) .. " --protocol=TCP"),
         helper.shell_quote(d.database), helper.shell_quote(sql))
      assert(os.execute(cmd))
   end

   it("no call waits forever: the read timeout ends a statement stuck on a lock, reported lost", function()
      if not helper.private_server() then
         pending("needs the private server (CELERS_TEST_PRIVATE=1)")
         return
      end
      local b = assert(celers.connect({ dsn = dsn, read_timeout = 1 }))
      local id = assert(b:enqueue("k", "x"))
      background_sql("START TRANSACTION; SELECT id FROM celers_tasks WHERE id = " .. sqls(id) .. " FOR UPDATE; SELECT SLEEP(3); ROLLBACK;")
      core.sleep(0.5)
      local t0 = core.monotonic()
      local ok, err = b:cancel(id)
      local waited = core.monotonic() - t0
      assert.is_nil(ok)
      -- it was sent and may still run when the lock goes: "lost", not "timeout"
      assert.equal("lost", err.code)
      assert.is_true(err.retryable)
      assert.is_true(waited < 2.5, "waited " .. waited .. " s")
      core.sleep(3)
      assert.equal(1, #assert(b:list_tasks{}))
      -- and the call is safe to make again
      local again = b:cancel(id)
      assert.is_boolean(again)
      assert.equal("cancelled", state(id))
      b:close()
   end)

   it("a statement that failed part-way does not hang the next run of it", function()
      local b = assert(celers.connect(dsn))
      -- a failure while the server produces the rows of a cached statement
      helper.query(dsn, "INSERT INTO celers_workers (worker_id, queue, hostname, pid, processed, failed, info, "
         .. "started_at, last_seen) VALUES ('w', 'default', 'h', 1, 0, 0, NULL, NOW(6), NOW(6))")
      assert(b:list_workers{ stale_after = 5 })
      -- math.huge reached the server as "DOUBLE value is out of range"; argument checks may
      -- refuse it first, which is fine: either way the next run must answer
      pcall(b.list_workers, b, { stale_after = math.huge })
      pcall(b.list_workers, b, { stale_after = 1e300 })
      local t0 = core.monotonic()
      assert.equal(1, #assert(b:list_workers{ stale_after = 5 }))
      assert.is_true(core.monotonic() - t0 < 5)
      b:close()
   end)
end)
