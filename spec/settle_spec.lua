-- ack, ack_batch, reject, retry, touch, cancel, lease recovery: fenced by the claim.
-- luacheck: max line length 160
local helper = require "spec.helper"
local celers = require "celers"
local core = require "celers.core"

local sqls = helper.sql_string

describe("settling", function()
   local dsn, broker

   local function row(id, columns)
      return helper.query(dsn, ("SELECT %s FROM celers_tasks WHERE id = %s"):format(columns, sqls(id)))[1]
   end

   local function count(tbl, where)
      return tonumber(helper.scalar(dsn, "SELECT COUNT(*) FROM " .. tbl
         .. (where and (" WHERE " .. where) or "")))
   end

   -- the whole row as text, to show that a refused call changed nothing
   local function snapshot(id)
      return helper.scalar(dsn, "SELECT CONCAT_WS('|', state, retry_count, IFNULL(worker_id, '-'), "
         .. "IFNULL(claim_id, '-'), IFNULL(started_at, '-'), IFNULL(completed_at, '-'), "
         .. "IFNULL(lease_expires_at, '-'), scheduled_at, IFNULL(error_message, '-')) "
         .. "FROM celers_tasks WHERE id = " .. sqls(id))
   end

   setup(function()
      dsn = helper.fresh_dsn("spec_settle")
      broker = assert(celers.connect({ dsn = dsn, recover_interval = 0,
                                       retry = { base = 10, factor = 3, max = 100 } }))
      assert(broker:migrate())
   end)

   teardown(function()
      if broker then broker:close() end
   end)

   before_each(function()
      helper.query(dsn, "DELETE FROM celers_tasks; DELETE FROM celers_dead_letter_queue; "
         .. "DELETE FROM celers_queue_pauses")
   end)

   describe("ack", function()
      it("completes the task", function()
         local id = assert(broker:enqueue("a", "x"))
         local task = assert(broker:dequeue())
         assert.is_true(broker:ack(task))
         assert.same({ "completed", "1", "1", "1" }, row(id, "state, completed_at IS NOT NULL, "
            .. "lease_expires_at IS NULL, completed_at >= started_at"))
         assert.is_nil(broker:dequeue())
      end)

      it("a second ack of the same claim returns true (safe to repeat after lost) and changes nothing", function()
         local id = assert(broker:enqueue("a", "x"))
         local task = assert(broker:dequeue())
         assert.is_true(broker:ack(task))
         local before = snapshot(id)
         assert.is_true(broker:ack(task))
         assert.equal(before, snapshot(id))
      end)

      it("of a pending (never claimed) task returns false", function()
         local id = assert(broker:enqueue("a", "x"))
         assert.is_false(broker:ack(id))
         assert.equal("pending", row(id, "state")[1])
      end)

      it("of an unknown id returns false", function()
         assert.is_false(broker:ack("0190a0b0-0000-7000-8000-00000000ffff"))
      end)

      it("accepts a bare id for a task in hand", function()
         local id = assert(broker:enqueue("a", "x"))
         assert(broker:dequeue())
         assert.is_true(broker:ack(id))
         assert.equal("completed", row(id, "state")[1])
      end)

      it("after the lease expired and the task was claimed again returns false and changes nothing", function()
         local id = assert(broker:enqueue("slow", "x"))
         local first = assert(broker:dequeue({ worker_id = "w1", lease = 0.2 }))
         core.sleep(0.8)
         -- another worker, on another connection, gets the task again (the sweep runs first)
         local other = assert(celers.connect({ dsn = dsn, recover_interval = 0 }))
         local second = assert(other:dequeue({ worker_id = "w2", lease = 300 }))
         assert.equal(id, second.id)
         assert.are_not.equal(first.claim_id, second.claim_id)
         assert.equal(2, second.retry_count)
         local before = snapshot(id)
         assert.matches("^processing|2|w2|", before)
         assert.is_false(broker:ack(first))
         assert.is_false((broker:reject(first, { error = "late" })))
         assert.is_false((broker:retry(first, 0, "late")))
         assert.is_false(broker:touch(first, 1000))
         assert.equal(0, broker:ack_batch({ first }))
         assert.equal(before, snapshot(id))
         assert.equal(0, count("celers_dead_letter_queue"))
         -- the current holder still settles it
         assert.is_true(other:ack(second))
         assert.equal("completed", row(id, "state")[1])
         other:close()
      end)
   end)

   describe("ack_batch", function()
      it("completes the tasks it holds and counts them", function()
         for i = 1, 6 do assert(broker:enqueue("b", tostring(i))) end
         local tasks = broker:dequeue_batch(4)
         assert.equal(4, #tasks)
         assert.equal(4, broker:ack_batch(tasks))
         assert.equal(4, count("celers_tasks", "state = 'completed'"))
         assert.equal(2, count("celers_tasks", "state = 'pending'"))
         -- repeating counts what those claims completed: safe to repeat after lost
         assert.equal(4, broker:ack_batch(tasks))
         assert.equal(0, broker:ack_batch({}))
      end)

      it("counts the tasks completed under their claim, earlier acks of those claims included", function()
         for i = 1, 3 do assert(broker:enqueue("b", tostring(i))) end
         local a = broker:dequeue_batch(2)
         local b = assert(broker:dequeue())
         assert.is_true(broker:ack(a[1]))
         assert.equal(3, broker:ack_batch({ a[1], a[2], b }))
         assert.equal(3, count("celers_tasks", "state = 'completed'"))
      end)

      it("does not complete a task held under another claim", function()
         assert(broker:enqueue("b", "x"))
         local t = assert(broker:dequeue())
         local forged = { id = t.id, claim_id = "0190a0b0-0000-7000-8000-000000000000" }
         assert.equal(0, broker:ack_batch({ forged }))
         assert.equal("processing", row(t.id, "state")[1])
         assert.equal(1, broker:ack_batch({ t.id }))
      end)
   end)

   describe("reject and retry", function()
      it("with retries left puts the task back to scheduled with the broker's backoff", function()
         local id = assert(broker:enqueue("r", "x", { max_retries = 3 }))
         local task = assert(broker:dequeue())
         local ok, outcome = broker:reject(task, { error = "boom 1" })
         assert.is_true(ok)
         assert.equal("retry", outcome)
         local r = row(id, "state, retry_count, error_message, worker_id IS NULL, claim_id IS NULL, "
            .. "lease_expires_at IS NULL, TIMESTAMPDIFF(MICROSECOND, NOW(6), scheduled_at) / 1e6")
         -- the claim stays on the requeued row, so a repeat after lost can tell it landed
         assert.same({ "scheduled", "1", "boom 1", "1", "0", "1" }, { r[1], r[2], r[3], r[4], r[5], r[6] })
         -- base 10 s for the first retry
         local ahead = tonumber(r[7])
         assert.is_true(ahead > 8 and ahead <= 10, "scheduled " .. ahead .. " s ahead")
         assert.is_nil(broker:dequeue())
         -- second attempt: base * factor = 30 s
         helper.query(dsn, "UPDATE celers_tasks SET scheduled_at = NOW(6), state = 'pending' WHERE id = " .. sqls(id))
         task = assert(broker:dequeue())
         assert.equal(2, task.retry_count)
         assert.equal("boom 1", task.error)
         assert.is_true((broker:reject(task, { error = "boom 2" })))
         ahead = tonumber(row(id, "TIMESTAMPDIFF(MICROSECOND, NOW(6), scheduled_at) / 1e6")[1])
         assert.is_true(ahead > 28 and ahead <= 30, "scheduled " .. ahead .. " s ahead")
         -- third: 90 s; fourth would be 270 but max is 100
         helper.query(dsn, "UPDATE celers_tasks SET scheduled_at = NOW(6), state = 'pending', max_retries = 10 WHERE id = " .. sqls(id))
         assert.is_true((broker:reject(assert(broker:dequeue()))))
         helper.query(dsn, "UPDATE celers_tasks SET scheduled_at = NOW(6), state = 'pending' WHERE id = " .. sqls(id))
         assert.is_true((broker:reject(assert(broker:dequeue()))))
         ahead = tonumber(row(id, "TIMESTAMPDIFF(MICROSECOND, NOW(6), scheduled_at) / 1e6")[1])
         assert.is_true(ahead > 98 and ahead <= 100, "capped at " .. ahead .. " s ahead")
         assert.equal("boom 2", row(id, "error_message")[1])
      end)

      it("uses the given delay, and 0 makes it ready at once", function()
         local id = assert(broker:enqueue("r", "x"))
         assert.is_true((broker:reject(assert(broker:dequeue()), { delay = 0, error = "e" })))
         assert.equal("pending", row(id, "state")[1])
         local again = assert(broker:dequeue())
         assert.equal(id, again.id)
         assert.equal(2, again.retry_count)
         local ok, outcome = broker:retry(again, 500, "later")
         assert.is_true(ok)
         assert.equal("retry", outcome)
         local r = row(id, "state, error_message, TIMESTAMPDIFF(SECOND, NOW(6), scheduled_at)")
         assert.same({ "scheduled", "later" }, { r[1], r[2] })
         assert.is_true(tonumber(r[3]) > 490 and tonumber(r[3]) <= 500)
      end)

      it("end in the dead-letter queue after max_retries attempts, with the error kept", function()
         local id = assert(broker:enqueue("flaky", { n = 1 }, { max_retries = 3, priority = 4,
                                                             metadata = { m = "k" } }))
         local outcomes = {}
         for attempt = 1, 3 do
            local task = assert(broker:dequeue(), "attempt " .. attempt)
            assert.equal(attempt, task.retry_count)
            local ok, outcome = broker:reject(task, { error = "failure " .. attempt, delay = 0 })
            assert.is_true(ok)
            outcomes[attempt] = outcome
         end
         assert.same({ "retry", "retry", "dead_letter" }, outcomes)
         assert.equal(0, count("celers_tasks"))
         assert.is_nil(broker:dequeue())
         local d = helper.query(dsn, "SELECT task_id, task_name, retry_count, error_message, "
            .. "JSON_VALUE(payload, '$.n'), payload_type, priority, max_retries, queue, "
            .. "JSON_VALUE(metadata, '$.m'), failed_at IS NOT NULL FROM celers_dead_letter_queue")
         assert.same({ { id, "flaky", "3", "failure 3", "1", "json", "4", "3", "default", "k", "1" } }, d)
      end)

      it("with requeue = false goes straight to the dead-letter queue", function()
         local id = assert(broker:enqueue("fatal", "x", { max_retries = 5 }))
         local ok, outcome = broker:reject(assert(broker:dequeue()), { requeue = false, error = "bad input" })
         assert.is_true(ok)
         assert.equal("dead_letter", outcome)
         assert.equal(0, count("celers_tasks"))
         assert.same({ { id, "1", "bad input" } }, helper.query(dsn,
            "SELECT task_id, retry_count, error_message FROM celers_dead_letter_queue"))
      end)

      it("of a task not in hand returns false and changes nothing", function()
         local id = assert(broker:enqueue("x", "x"))
         local before = snapshot(id)
         assert.is_false((broker:reject(id, { error = "no" })))
         assert.is_false((broker:reject(id, { requeue = false })))
         assert.is_false((broker:retry(id)))
         assert.equal(before, snapshot(id))
         assert.equal(0, count("celers_dead_letter_queue"))
      end)
   end)

   describe("touch", function()
      it("extends lease_expires_at in the database", function()
         local id = assert(broker:enqueue("long", "x"))
         local task = assert(broker:dequeue({ lease = 5 }))
         local before = tonumber(row(id, "TIMESTAMPDIFF(SECOND, NOW(6), lease_expires_at)")[1])
         assert.is_true(before <= 5)
         assert.is_true(broker:touch(task, 600))
         local after = tonumber(row(id, "TIMESTAMPDIFF(SECOND, NOW(6), lease_expires_at)")[1])
         assert.is_true(after > 590 and after <= 600, "lease now " .. after .. " s ahead")
         assert.equal("processing", row(id, "state")[1])
         assert.is_true(broker:ack(task))
      end)

      it("without seconds uses the task's timeout", function()
         local id = assert(broker:enqueue("long", "x", { timeout = 900 }))
         local task = assert(broker:dequeue())
         helper.query(dsn, "UPDATE celers_tasks SET lease_expires_at = NOW(6) WHERE id = " .. sqls(id))
         assert.is_true(broker:touch(task))
         local after = tonumber(row(id, "TIMESTAMPDIFF(SECOND, NOW(6), lease_expires_at)")[1])
         assert.is_true(after > 890 and after <= 900)
      end)

      it("keeps a touched task from being recovered", function()
         local id = assert(broker:enqueue("long", "x"))
         local task = assert(broker:dequeue({ lease = 0.3 }))
         assert.is_true(broker:touch(task, 600))
         core.sleep(0.8)
         assert.same({ 0, 0 }, { broker:recover_expired() })
         assert.is_nil(broker:dequeue())
         assert.equal(task.claim_id, row(id, "claim_id")[1])
      end)

      it("of a finished task returns false", function()
         assert(broker:enqueue("t", "x"))
         local task = assert(broker:dequeue())
         assert.is_true(broker:ack(task))
         assert.is_false(broker:touch(task, 100))
         assert.equal("1", row(task.id, "lease_expires_at IS NULL")[1])
      end)
   end)

   describe("cancel", function()
      it("cancels a pending task so it is never handed out", function()
         local id = assert(broker:enqueue("c", "x"))
         assert.is_true(broker:cancel(id))
         assert.same({ "cancelled", "1" }, row(id, "state, completed_at IS NOT NULL"))
         assert.is_nil(broker:dequeue())
         assert.is_false(broker:cancel(id))
      end)

      it("cancels a task in hand; a later ack of it returns false", function()
         local id = assert(broker:enqueue("c", "x"))
         local task = assert(broker:dequeue())
         assert.is_true(broker:cancel(task))
         local before = snapshot(id)
         assert.is_false(broker:ack(task))
         assert.is_false((broker:reject(task)))
         assert.equal(before, snapshot(id))
         assert.equal("cancelled", row(id, "state")[1])
         assert.equal(0, count("celers_dead_letter_queue"))
      end)

      it("does not touch a completed task", function()
         local id = assert(broker:enqueue("c", "x"))
         assert.is_true(broker:ack(assert(broker:dequeue())))
         assert.is_false(broker:cancel(id))
         assert.equal("completed", row(id, "state")[1])
      end)

      it("of an unknown id returns false", function()
         assert.is_false(broker:cancel("0190a0b0-0000-7000-8000-00000000eeee"))
      end)
   end)

   describe("expired leases", function()
      it("go back to pending when retries are left", function()
         local id = assert(broker:enqueue("crash", "x", { max_retries = 3 }))
         assert(broker:dequeue({ lease = 0.2 }))
         core.sleep(0.7)
         local requeued, dead = broker:recover_expired()
         assert.equal(1, requeued)
         assert.equal(0, dead)
         assert.same({ "pending", "1", "1", "1", "lease expired" }, row(id,
            "state, retry_count, claim_id IS NULL, worker_id IS NULL, error_message"))
      end)

      it("go to the dead-letter queue when retries are spent", function()
         local id = assert(broker:enqueue("crash", "x", { max_retries = 0 }))
         assert(broker:dequeue({ lease = 0.2 }))
         core.sleep(0.7)
         local requeued, dead = broker:recover_expired()
         assert.equal(0, requeued)
         assert.equal(1, dead)
         assert.equal(0, count("celers_tasks"))
         assert.same({ { id, "1", "lease expired" } }, helper.query(dsn,
            "SELECT task_id, retry_count, error_message FROM celers_dead_letter_queue"))
      end)

      it("are swept by dequeue when recover_interval is 0", function()
         local id = assert(broker:enqueue("crash", "x"))
         assert(broker:dequeue({ lease = 0.2 }))
         core.sleep(0.7)
         local again = assert(broker:dequeue())
         assert.equal(id, again.id)
         assert.equal(2, again.retry_count)
      end)

      it("are left alone while the lease runs", function()
         assert(broker:enqueue("busy", "x"))
         local task = assert(broker:dequeue({ lease = 300 }))
         assert.same({ 0, 0 }, { broker:recover_expired() })
         assert.equal("processing", row(task.id, "state")[1])
      end)
   end)
end)
