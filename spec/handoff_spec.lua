-- Hand-offs: ack_and_dequeue(task) and ack_batch_and_dequeue(tasks, n) settle what the worker
-- holds and claim the next work in ONE transaction with ONE commit, fenced per task; the caller
-- always learns how many acks landed, and on an error none of it landed.
-- luacheck: max line length 160
local helper = require "spec.helper"
local celers = require "celers"

local sqls = helper.sql_string

describe("hand-off", function()
   local dsn, broker

   local function count(where) return tonumber(helper.scalar(dsn, "SELECT COUNT(*) FROM celers_tasks WHERE " .. where)) end
   local function state(id) return helper.scalar(dsn, "SELECT state FROM celers_tasks WHERE id = " .. sqls(id)) end
   -- InnoDB's redo log writes: one per commit of a single connection. Read only on the private
   -- server, where this spec is the only writer (elsewhere the counts are not asserted).
   local function log_writes() return tonumber(helper.query(dsn, "SHOW GLOBAL STATUS LIKE 'Innodb_log_writes'")[1][2]) end
   local exact = helper.private_server()

   -- make the claim part fail after the ack part ran: the pause check reads this table
   local function break_claims() helper.query(dsn, "RENAME TABLE celers_queue_pauses TO celers_queue_pauses_away") end
   local function mend_claims() helper.query(dsn, "RENAME TABLE celers_queue_pauses_away TO celers_queue_pauses") end

   setup(function()
      dsn = helper.fresh_dsn("spec_handoff")
      broker = assert(celers.connect({ dsn = dsn, recover_interval = 3600 }))
      assert(broker:migrate())
   end)

   teardown(function()
      if broker then broker:close() end
   end)

   before_each(function()
      helper.query(dsn, "DELETE FROM celers_tasks; DELETE FROM celers_queue_pauses")
   end)

   describe("ack_and_dequeue", function()
      it("acks and claims with one commit, where ack then dequeue needs two", function()
         for i = 1, 30 do assert(broker:enqueue("h", tostring(i))) end
         local t = assert(broker:dequeue())
         local w0 = log_writes()
         for _ = 1, 10 do
            local acked
            acked, t = broker:ack_and_dequeue(t)
            assert.is_true(acked)
         end
         local w1 = log_writes()
         for _ = 1, 10 do
            assert.is_true(broker:ack(t))
            t = assert(broker:dequeue())
         end
         local w2 = log_writes()
         if exact then
            assert.is_true(w1 - w0 <= 11, (w1 - w0) .. " log writes for 10 hand-offs")
            assert.is_true(w2 - w1 >= 19, (w2 - w1) .. " log writes for 10 acks and 10 dequeues (the control)")
         end
         assert.equal(20, count("state = 'completed'"))
      end)

      it("rolls the ack back when the claim fails, and says so with an error", function()
         assert(broker:enqueue("h", "1"))
         assert(broker:enqueue("h", "2"))
         local t = assert(broker:dequeue())
         break_claims()
         local acked, err = broker:ack_and_dequeue(t)
         mend_claims()
         assert.is_nil(acked)
         assert.is_table(err)
         assert.equal("processing", state(t.id)) -- the ack did not land
         assert.equal(1, count("state = 'pending'"))
         -- and it is safe to do again
         local ok, nxt = broker:ack_and_dequeue(t)
         assert.is_true(ok)
         assert.is_table(nxt)
         assert.equal("completed", state(t.id))
      end)

      it("is fenced: a stale claim is not acked, and the claim still happens", function()
         assert(broker:enqueue("h", "1"))
         assert(broker:enqueue("h", "2"))
         local t = assert(broker:dequeue())
         local stale = { id = t.id, claim_id = "00000000-0000-0000-0000-000000000000" }
         local acked, nxt = broker:ack_and_dequeue(stale)
         assert.is_false(acked)
         assert.equal("processing", state(t.id))
         assert.equal("processing", state(assert(nxt).id))
         -- nothing to claim: the ack's outcome still comes back
         acked, nxt = broker:ack_and_dequeue(t)
         assert.is_true(acked)
         assert.is_nil(nxt)
      end)
   end)

   describe("ack_batch_and_dequeue", function()
      it("acks a batch and claims the next one with one commit", function()
         for i = 1, 100 do assert(broker:enqueue("h", tostring(i))) end
         local ts = assert(broker:dequeue_batch(10))
         local w0 = log_writes()
         for _ = 1, 9 do
            local n
            n, ts = broker:ack_batch_and_dequeue(ts, 10)
            assert.equal(10, n)
            assert.equal(10, #ts)
         end
         local writes = log_writes() - w0
         if exact then assert.is_true(writes <= 10, writes .. " log writes for 9 batch hand-offs") end
         local n, rest = broker:ack_batch_and_dequeue(ts, 10)
         assert.equal(10, n)
         assert.same({}, rest)
         assert.equal(100, count("state = 'completed'"))
      end)

      it("is fenced per task and counts only the acks that landed", function()
         for i = 1, 6 do assert(broker:enqueue("h", tostring(i))) end
         local ts = assert(broker:dequeue_batch(3))
         assert(broker:ack(ts[2]))
         local stale = { id = ts[3].id, claim_id = "00000000-0000-0000-0000-000000000000" }
         local n, got = broker:ack_batch_and_dequeue({ ts[1], ts[2], stale }, 2)
         assert.equal(1, n)
         assert.equal(2, #got)
         assert.same({ "completed", "completed", "processing" }, { state(ts[1].id), state(ts[2].id), state(ts[3].id) })
         assert.equal(1, count("state = 'pending'"))
         assert.equal(3, count("state = 'processing'"))
      end)

      it("takes bare ids, an empty list, and n = 0 (ack only)", function()
         for i = 1, 3 do assert(broker:enqueue("h", tostring(i))) end
         local ts = assert(broker:dequeue_batch(2))
         local n, got = broker:ack_batch_and_dequeue({ ts[1].id }, 0)
         assert.equal(1, n)
         assert.same({}, got)
         n, got = broker:ack_batch_and_dequeue({}, 5)
         assert.equal(0, n)
         assert.equal(1, #got)
         assert.equal(1, count("state = 'completed'"))
         assert.equal(2, count("state = 'processing'"))
      end)

      it("rolls every ack back when the claim fails", function()
         for i = 1, 4 do assert(broker:enqueue("h", tostring(i))) end
         local ts = assert(broker:dequeue_batch(2))
         break_claims()
         local n, err = broker:ack_batch_and_dequeue(ts, 2)
         mend_claims()
         assert.is_nil(n)
         assert.is_table(err)
         assert.equal(2, count("state = 'processing'"))
         assert.equal(0, count("state = 'completed'"))
         n = assert(broker:ack_batch_and_dequeue(ts, 2))
         assert.equal(2, n)
      end)

      it("refuses bad arguments, naming them", function()
         assert.error_matches(function() broker:ack_batch_and_dequeue("x", 1) end, "tasks")
         assert.error_matches(function() broker:ack_batch_and_dequeue({}, -1) end, "'n'")
         assert.error_matches(function() broker:ack_batch_and_dequeue({}, 10001) end, "'n'")
         assert.error_matches(function() broker:ack_batch_and_dequeue({ 5 }, 1) end, "task")
         assert.error_matches(function() broker:ack_batch_and_dequeue({}, 1, { bogus = 1 }) end, "bogus")
         assert.error_matches(function() broker:ack_batch_and_dequeue({}, 1, { lease = 0 }) end, "lease")
      end)
   end)
end)
