-- Unique jobs: enqueue's `unique` option is enforced by a unique index over a generated
-- column (the key while the task is in a holding state), not by a check-then-insert.
-- luacheck: max line length 160
local helper = require "spec.helper"
local proc = require "spec.proc_helper"
local celers = require "celers"

local sqls = helper.sql_string

describe("unique jobs", function()
   local dsn, broker

   local function count(where)
      return tonumber(helper.scalar(dsn, "SELECT COUNT(*) FROM celers_tasks" .. (where and (" WHERE " .. where) or "")))
   end

   setup(function()
      dsn = helper.fresh_dsn("spec_unique")
      broker = assert(celers.connect({ dsn = dsn, recover_interval = 0 }))
      assert(broker:migrate())
   end)

   teardown(function()
      if broker then broker:close() end
   end)

   before_each(function()
      helper.query(dsn, "DELETE FROM celers_tasks; DELETE FROM celers_dead_letter_queue")
   end)

   describe("misuse raises", function()
      local cases = {
         { 5, "'unique' must be a table or true" },
         { { bogus = 1 }, "unknown option 'bogus'" },
         { { by = { "bogus" } }, "unique 'by' entries are" },
         { { by = {} }, "'unique.by' must name at least one field" },
         { { by = "name" }, "'unique.by' must be a list of field names" },
         { { states = { "nope" } }, "unknown state 'nope'" },
         { { states = {} }, "must list at least one state" },
         { { period = -1 }, "'unique.period' must be positive" },
         { { period = 0 / 0 }, "'unique.period' must be within" },
         { { period = math.huge }, "unique.period" },
         { { period = "1h" }, "'unique.period' must be a number" },
      }
      for i, c in ipairs(cases) do
         it("case " .. i .. ": " .. c[2], function()
            local ok, err = pcall(broker.enqueue, broker, "a", { x = 1 }, { unique = c[1] })
            assert.is_false(ok)
            assert.matches(c[2], err, 1, true)
            assert.equal(0, count())
         end)
      end

      it("a payload field of a string payload, a non-JSON field, and unique in a batch", function()
         assert.has_error(function() broker:enqueue("a", "raw", { unique = { by = { "payload.x" } } }) end,
            "celers: enqueue: unique by 'payload.x' needs a table payload")
         assert.has_error(function() broker:enqueue("a", { x = print }, { unique = true }) end)
         assert.has_error(function() broker:enqueue_batch { { name = "a", payload = "x", unique = true } } end,
            "celers: enqueue_batch: unknown option 'unique'")
         assert.equal(0, count())
      end)
   end)

   it("a duplicate returns the existing id and created = false; the database holds one row", function()
      local id, created = broker:enqueue("report", { day = 1 }, { unique = true })
      assert.is_true(created)
      local id2, created2 = broker:enqueue("report", { day = 1 }, { unique = true, priority = 5 })
      assert.equal(id, id2)
      assert.is_false(created2)
      assert.equal(1, count())
      assert.same({ { "1", "0", "15", "1" } }, helper.query(dsn, "SELECT COUNT(*), MIN(priority), MIN(unique_states), "
         .. "SUM(unique_hold = unique_key AND LENGTH(unique_key) = 64) FROM celers_tasks"))
      -- another payload, name or queue is another task
      assert.is_true(select(2, broker:enqueue("report", { day = 2 }, { unique = true })))
      assert.is_true(select(2, broker:enqueue("other", { day = 1 }, { unique = true })))
      assert.is_true(select(2, broker:enqueue("report", { day = 1 }, { unique = true, queue = "q2" })))
      assert.is_true(select(2, broker:with_queue("q3"):enqueue("report", { day = 1 }, { unique = true })))
      -- and a task without `unique` is never refused
      assert.is_true(select(2, broker:enqueue("report", { day = 1 })))
      assert.equal(6, count())
   end)

   it("equal tables are equal whatever their key order; 7 and 7.0 are one number", function()
      local a, b = {}, {}
      for i = 1, 50 do a["k" .. i] = i end
      for i = 50, 1, -1 do b["k" .. i] = i end
      b.k7 = 7.0
      local id = assert(broker:enqueue("t", { nested = a, list = { 1, "2", { z = true } } }, { unique = true }))
      local id2, created = broker:enqueue("t", { list = { 1, "2", { z = true } }, nested = b }, { unique = true })
      assert.equal(id, id2)
      assert.is_false(created)
      -- an array is not the object with the same values; "1" is not 1
      assert.is_true(select(2, broker:enqueue("t", { list = { 1, 2, { z = true } }, nested = a }, { unique = true })))
      assert.equal(2, count())
   end)

   it("raw string payloads compare byte for byte, NUL bytes included", function()
      local id = assert(broker:enqueue("raw", "a\0b", { unique = true }))
      assert.equal(id, (broker:enqueue("raw", "a\0b", { unique = true })))
      assert.is_true(select(2, broker:enqueue("raw", "a\0c", { unique = true })))
      assert.is_true(select(2, broker:enqueue("raw", "a", { unique = true })))
      assert.equal(3, count())
   end)

   it("by chosen fields: other fields do not matter", function()
      local opts = { unique = { by = { "name", "payload.customer" } } }
      local id = assert(broker:enqueue("invoice", { customer = 7, at = 1 }, opts))
      assert.equal(id, (broker:enqueue("invoice", { customer = 7, at = 2 }, opts)))
      assert.is_true(select(2, broker:enqueue("invoice", { customer = 8, at = 1 }, opts)))
      -- a missing field is a value too (nil)
      local none = assert(broker:enqueue("invoice", { at = 1 }, opts))
      assert.equal(none, (broker:enqueue("invoice", { at = 9 }, opts)))
      assert.equal(3, count())
   end)

   it("states: a task leaving the holding states frees the key; the default holds completed ones", function()
      local held = { unique = { states = { "scheduled", "pending", "processing" } } }
      local id = assert(broker:enqueue("s", "x", held))
      local task = assert(broker:dequeue())
      assert.equal(id, (broker:enqueue("s", "x", held))) -- processing holds it
      assert.is_true(broker:ack(task))
      local id2, created = broker:enqueue("s", "x", held) -- completed does not
      assert.is_true(created)
      assert.not_equal(id, id2)
      -- the default states include completed: an acked task holds its key until archived
      helper.query(dsn, "DELETE FROM celers_tasks")
      local d = assert(broker:enqueue("d", "x", { unique = true }))
      local dt = assert(broker:dequeue())
      assert.equal(d, dt.id)
      assert.is_true(broker:ack(dt))
      assert.equal(d, (broker:enqueue("d", "x", { unique = true })))
      assert(broker:archive_completed_tasks(0))
      assert.equal(0, count("id = " .. sqls(d)))
      local d2, dcreated = broker:enqueue("d", "x", { unique = true })
      assert.is_true(dcreated)
      assert.not_equal(d, d2)
   end)

   it("a dead-lettered task frees its key", function()
      local id = assert(broker:enqueue("dl", "x", { unique = true, max_retries = 0 }))
      local task = assert(broker:dequeue())
      assert.equal(id, task.id)
      assert.is_true(broker:reject(task, { requeue = false, error = "bad" }))
      assert.equal(1, tonumber(helper.scalar(dsn, "SELECT COUNT(*) FROM celers_dead_letter_queue")))
      local id2, created = broker:enqueue("dl", "x", { unique = true })
      assert.is_true(created)
      assert.not_equal(id, id2)
   end)

   it("a period is a window on the server's clock: the next window takes a new task", function()
      local opts = { unique = { period = 1 } }
      local id = assert(broker:enqueue("p", "x", opts))
      -- wait for the next one-second window of the database clock
      local window = helper.scalar(dsn, "SELECT FLOOR(UNIX_TIMESTAMP(NOW(6)))")
      proc.wait_for(function() return helper.scalar(dsn, "SELECT FLOOR(UNIX_TIMESTAMP(NOW(6)))") ~= window end, 5, 0.05)
      local id2, created = broker:enqueue("p", "x", opts)
      assert.is_true(created)
      assert.not_equal(id, id2)
      -- an hour-long window holds across both
      local h = assert(broker:enqueue("h", "x", { unique = { period = 3600 } }))
      assert.equal(h, (broker:enqueue("h", "x", { unique = { period = 3600 } })))
   end)

   it("enqueue_at and enqueue_after take it too; scheduled tasks hold the key", function()
      local id = assert(broker:enqueue_at("later", "x", os.time() + 3600, { unique = true }))
      assert.equal("scheduled", helper.scalar(dsn, "SELECT state FROM celers_tasks WHERE id = " .. sqls(id)))
      assert.equal(id, (broker:enqueue_after("later", "x", 10, { unique = true })))
      assert.equal(id, (broker:enqueue("later", "x", { unique = true })))
      assert.equal(1, count())
   end)

   it("inside a transaction: a rolled-back unique task frees its key", function()
      assert.is_nil(broker:transaction(function(tx)
         assert(tx:enqueue("tx", "x", { unique = true }))
         return nil, "no"
      end))
      local _, created = broker:enqueue("tx", "x", { unique = true })
      assert.is_true(created)
   end)

   it("concurrent producers in several processes create each unique task once", function()
      local go = os.tmpname()
      os.remove(go)
      local procs, outs = {}, {}
      local n = 25
      for i = 1, 4 do
         outs[i] = os.tmpname()
         procs[i] = proc.spawn(helper.root .. "/spec/fixtures/unique_producer.lua", { dsn, go, outs[i], tostring(n), "p" .. i })
      end
      for i = 1, 4 do assert(proc.pid(procs[i])) end
      local f = assert(io.open(go, "w"))
      f:close()
      local ids, created = {}, 0
      for i = 1, 4 do
         local code, out = proc.wait(procs[i], 60)
         assert.equal(0, code, out)
         local lines = 0
         for id, what in proc.read_file(outs[i]):gmatch("(%S+) (%S+)\n") do
            lines = lines + 1
            if what ~= "own" then
               ids[id] = true
               if what == "true" then created = created + 1 end
            end
         end
         assert.equal(2 * n, lines)
         os.remove(outs[i])
      end
      os.remove(go)
      local distinct = 0
      for _ in pairs(ids) do distinct = distinct + 1 end
      assert.equal(1, distinct)       -- every producer got the same id
      assert.equal(1, created)        -- and exactly one of the 100 calls created it
      assert.equal(1, count("task_name = 'report'"))
      assert.equal(4, count("task_name = 'mine'"))
   end)
end)
