-- broker:transaction: the application's rows and the broker's tasks commit or roll back
-- together; a second connection never sees an uncommitted task; failures end the whole
-- transaction and nothing is half-applied or repeated.
-- luacheck: max line length 160
local helper = require "spec.helper"
local proc = require "spec.proc_helper"
local celers = require "celers"

local sqls = helper.sql_string

describe("broker:transaction", function()
   local dsn, broker, worker

   local function count(tbl, where)
      return tonumber(helper.scalar(dsn, "SELECT COUNT(*) FROM " .. tbl .. (where and (" WHERE " .. where) or "")))
   end

   setup(function()
      dsn = helper.fresh_dsn("spec_transaction")
      broker = assert(celers.connect({ dsn = dsn, recover_interval = 0 }))
      assert(broker:migrate())
      worker = assert(celers.connect({ dsn = dsn, recover_interval = 0 }))
      helper.query(dsn, "CREATE TABLE app_orders (id INT AUTO_INCREMENT PRIMARY KEY, item VARCHAR(100) NOT NULL, "
         .. "amount DOUBLE, note MEDIUMBLOB, big BIGINT, made DATETIME) ENGINE=InnoDB; "
         .. "CREATE TABLE app_accounts (id INT PRIMARY KEY, balance INT NOT NULL) ENGINE=InnoDB; "
         .. "CREATE TABLE app_weight (id INT PRIMARY KEY, n INT NOT NULL) ENGINE=InnoDB")
   end)

   teardown(function()
      if broker then broker:close() end
      if worker then worker:close() end
   end)

   before_each(function()
      helper.query(dsn, "DELETE FROM celers_tasks; DELETE FROM app_orders; DELETE FROM app_accounts; "
         .. "DELETE FROM app_weight")
   end)

   describe("misuse raises", function()
      it("fn must be a function", function()
         assert.has_error(function() broker:transaction("nope") end,
            "celers: transaction: 'fn' must be a function (got string)")
      end)

      it("the transaction's execute outside a transaction", function()
         assert.has_error(function() broker:_tx_execute("SELECT 1") end,
            "celers: execute: only inside broker:transaction (call it on the tx object)")
         -- broker:execute outside a transaction is the plain escape hatch (rows as arrays)
         local rows = assert(broker:execute("SELECT 1"))
         assert.equal("1", rows[1][1])
      end)

      it("a nested transaction, on the broker or a sibling, and the broker used inside", function()
         local sibling = broker:with_queue("other")
         assert(broker:transaction(function(tx)
            assert.has_error(function() broker:transaction(function() end) end)
            local ok, err = pcall(sibling.transaction, sibling, function() end)
            assert.is_false(ok)
            assert.matches("nested transactions are not supported", err)
            assert.has_error(function() broker:enqueue("a", "x") end)
            assert.has_error(function() broker:dequeue() end)
            assert.is_nil(tx.transaction)
            return true
         end))
         -- usable again afterwards
         assert(broker:enqueue("a", "x"))
         assert.equal(1, count("celers_tasks"))
      end)

      it("hostile parameters name the value; placeholders must match", function()
         helper.query(dsn, "DELETE FROM app_orders")
         local ok, err = broker:transaction(function(tx)
            assert.has_error(function() tx:execute("SELECT ?", {}) end,
               "celers: execute: 'value #1' must be nil, a boolean, a finite number or a string (got table)")
            assert.has_error(function() tx:execute("SELECT ?, ?", 1, 0 / 0) end)
            assert.has_error(function() tx:execute("SELECT ?", math.huge) end)
            assert.has_error(function() tx:execute("SELECT ?, ?", 1) end,
               "celers: execute: the statement has 2 placeholders, got 1 values")
            assert.has_error(function() tx:execute("SELECT 1\0; DROP TABLE app_orders") end)
            assert.has_error(function() tx:execute(42) end)
            -- an SQL error is a runtime failure: nil, err, and the transaction goes on
            local rows, serr = tx:execute("SELEC 1")
            assert.is_nil(rows)
            assert.equal("sql", serr.code)
            assert(tx:execute("INSERT INTO app_orders (item) VALUES (?)", "kept"))
            return "done"
         end)
         assert.equal("done", ok)
         assert.is_nil(err)
         assert.equal(1, count("app_orders", "item = 'kept'"))
      end)

      it("the tx object is dead after the transaction", function()
         local kept
         assert(broker:transaction(function(tx) kept = tx end))
         assert.has_error(function() kept:enqueue("a", "x") end, "celers: enqueue: the transaction is over")
         assert.has_error(function() kept:execute("SELECT 1") end, "celers: execute: the transaction is over")
         assert.equal(0, count("celers_tasks"))
      end)
   end)

   it("commit leaves both the application's row and the task", function()
      local task_id
      local r1, r2 = broker:transaction(function(tx)
         local n, order_id = tx:execute("INSERT INTO app_orders (item, amount) VALUES (?, ?)", "book", 12.5)
         assert.equal(1, n)
         assert.is_true(order_id > 0)
         task_id = assert(tx:enqueue("ship", { order = order_id }))
         return order_id, "second"
      end)
      assert.is_number(r1)
      assert.equal("second", r2)
      assert.equal(1, count("app_orders", "item = 'book' AND id = " .. r1))
      assert.equal(1, count("celers_tasks", "id = " .. sqls(task_id) .. " AND state = 'pending'"))
      local task = assert(worker:dequeue())
      assert.equal(task_id, task.id)
      assert.equal(r1, task.payload.order)
   end)

   it("returns true when fn returns nothing", function()
      assert.is_true(broker:transaction(function(tx) tx:enqueue("a", "x") end))
      assert.equal(1, count("celers_tasks"))
   end)

   it("every enqueue method joins the transaction and rolls back with it", function()
      local ok, err = broker:transaction(function(tx)
         assert(tx:enqueue("a", "1"))
         assert(tx:enqueue_at("a", "2", os.time() + 3600))
         assert(tx:enqueue_after("a", "3", 60))
         assert(tx:enqueue_batch({ { name = "b", payload = "4" }, { name = "b", payload = "5", queue = "other" } }))
         assert.equal(5, tonumber(tx:execute("SELECT COUNT(*) AS n FROM celers_tasks")[1].n))
         return nil, "changed my mind"
      end)
      assert.is_nil(ok)
      assert.equal("changed my mind", err)
      assert.equal(0, count("celers_tasks"))
   end)

   it("rollback on error leaves neither, and the error is raised again as it was", function()
      local boom = { reason = "boom" }
      local ok, raised = pcall(broker.transaction, broker, function(tx)
         assert(tx:execute("INSERT INTO app_orders (item) VALUES (?)", "never"))
         assert(tx:enqueue("ship", "x"))
         error(boom)
      end)
      assert.is_false(ok)
      assert.equal(boom, raised)
      assert.equal(0, count("app_orders"))
      assert.equal(0, count("celers_tasks"))
      -- and a string error keeps its text
      local ok2, msg = pcall(broker.transaction, broker, function() error("plain", 0) end)
      assert.is_false(ok2)
      assert.equal("plain", msg)
   end)

   it("a worker on another connection never sees a task of an uncommitted transaction", function()
      local seen_inside
      assert(broker:transaction(function(tx)
         assert(tx:enqueue("ship", "x", { priority = 9 }))
         assert(tx:execute("INSERT INTO app_orders (item) VALUES (?)", "pending"))
         seen_inside = worker:dequeue()
         assert.is_nil(seen_inside)
         assert.equal(0, worker:queue_size())
         assert.equal(0, count("celers_tasks")) -- a third connection (the mariadb client)
      end))
      assert.is_nil(seen_inside)
      local task = assert(worker:dequeue())
      assert.equal("ship", task.name)
   end)

   it("execute gives rows as tables: integers, floats, text, NULL absent, bytes exact", function()
      local note = "a\0b" .. string.rep("\255", 1000) .. "'; DROP TABLE app_orders; --"
      local big = math.maxinteger or 2 ^ 53
      local rows
      assert(broker:transaction(function(tx)
         assert(tx:execute("INSERT INTO app_orders (item, amount, note, big, made) VALUES (?, ?, ?, ?, ?)",
            "x", 0.1, note, big, "2026-01-02 03:04:05"))
         assert(tx:execute("INSERT INTO app_orders (item) VALUES (?)", "y"))
         rows = tx:execute("SELECT item, amount, note, big, made, id > 0 AS positive, NULL AS nothing "
            .. "FROM app_orders ORDER BY item")
      end))
      assert.equal(2, #rows)
      assert.same({ item = "x", amount = 0.1, note = note, big = big, made = "2026-01-02 03:04:05", positive = 1 }, rows[1])
      assert.same({ item = "y", positive = 1 }, rows[2])
      assert.equal(#note, tonumber(helper.scalar(dsn, "SELECT LENGTH(note) FROM app_orders WHERE item = 'x'")))
      assert.equal(big, tonumber(helper.scalar(dsn, "SELECT big FROM app_orders WHERE item = 'x'")))
   end)

   it("a failed multi-statement enqueue leaves none of itself; the transaction goes on", function()
      local existing = assert(broker:enqueue("a", "x"))
      local batch = {}
      for i = 1, 700 do batch[i] = { name = "bulk", payload = tostring(i) } end
      batch[650].id = existing -- in the second chunk of 500: the first is already inserted
      assert(broker:transaction(function(tx)
         assert(tx:execute("INSERT INTO app_orders (item) VALUES (?)", "kept"))
         local ok, err = tx:enqueue_batch(batch)
         assert.is_nil(ok)
         assert.equal("duplicate", err.code)
         assert.equal(0, tonumber(tx:execute("SELECT COUNT(*) AS n FROM celers_tasks WHERE task_name = 'bulk'")[1].n))
      end))
      assert.equal(1, count("app_orders", "item = 'kept'"))
      assert.equal(0, count("celers_tasks", "task_name = 'bulk'"))
      assert.equal(1, count("celers_tasks"))
   end)

   describe("failures", function()
      local function connection_id(tx)
         return tx:execute("SELECT CONNECTION_ID() AS id")[1].id
      end

      it("a lost connection inside is reported and nothing is half-applied", function()
         local seen
         local ok, err = broker:transaction(function(tx)
            assert(tx:execute("INSERT INTO app_orders (item) VALUES (?)", "lost"))
            assert(tx:enqueue("ship", "x"))
            helper.query(dsn, "KILL " .. connection_id(tx))
            local rows, e = tx:execute("INSERT INTO app_orders (item) VALUES (?)", "after")
            assert.is_nil(rows)
            seen = e
            -- everything after it is refused: nothing may run outside the transaction
            local id, e2 = tx:enqueue("ship", "y")
            assert.is_nil(id)
            assert.equal("lost", e2.code)
            return nil, e
         end)
         assert.is_nil(ok)
         assert.equal("lost", seen.code)
         assert.equal(seen, err)
         assert.equal(0, count("app_orders"))
         assert.equal(0, count("celers_tasks"))
         -- the broker reconnects for the next call
         assert(broker:enqueue("after", "x"))
         assert.equal(1, count("celers_tasks"))
      end)

      it("a lost connection is reported by the commit when fn ignored it", function()
         local ok, err = broker:transaction(function(tx)
            assert(tx:execute("INSERT INTO app_orders (item) VALUES (?)", "lost"))
            assert(tx:enqueue("ship", "x"))
            helper.query(dsn, "KILL " .. connection_id(tx))
            tx:execute("INSERT INTO app_orders (item) VALUES (?)", "after") -- error ignored
            return "pretend all is well"
         end)
         assert.is_nil(ok)
         assert.equal("lost", err.code)
         assert.matches("rolled back", err.message)
         assert.equal(0, count("app_orders"))
         assert.equal(0, count("celers_tasks"))
      end)

      it("a lost connection before the commit: the commit reports it, nothing lands", function()
         local ok, err = broker:transaction(function(tx)
            assert(tx:execute("INSERT INTO app_orders (item) VALUES (?)", "lost"))
            assert(tx:enqueue("ship", "x"))
            helper.query(dsn, "KILL " .. connection_id(tx))
         end)
         assert.is_nil(ok)
         assert.equal("lost", err.code)
         assert.equal(0, count("app_orders"))
         assert.equal(0, count("celers_tasks"))
         assert(broker:enqueue("after", "x"))
      end)

      it("a deadlock inside is returned once, not repeated, and nothing of it lands", function()
         local values = {}
         for i = 1, 200 do values[i] = ("(%d, 0)"):format(i) end
         helper.query(dsn, "INSERT INTO app_accounts VALUES (1, 0), (2, 0); INSERT INTO app_weight VALUES "
            .. table.concat(values, ","))
         local marker = os.tmpname()
         os.remove(marker)
         local peer = proc.spawn(helper.root .. "/spec/fixtures/tx_peer.lua", { dsn, marker })
         assert(proc.wait_for(function() return proc.read_file(marker) end, 30, 0.05))
         local attempts = 0
         local ok, err = broker:transaction(function(tx)
            attempts = attempts + 1
            assert(tx:enqueue("ship", "victim"))
            assert(tx:execute("UPDATE app_accounts SET balance = balance + 100 WHERE id = 1"))
            local r, e = tx:execute("UPDATE app_accounts SET balance = balance + 100 WHERE id = 2")
            if not r then return nil, e end
         end)
         os.remove(marker)
         local code, out = proc.wait(peer, 60)
         assert.equal(0, code, out)
         assert.equal(1, attempts)
         assert.is_nil(ok)
         assert.equal("deadlock", err.code)
         assert.is_true(err.retryable)
         -- the peer's changes only
         assert.same({ { "1", "1" }, { "2", "1" } }, helper.query(dsn, "SELECT id, balance FROM app_accounts ORDER BY id"))
         assert.equal(0, count("celers_tasks"))
      end)
   end)
end)
