-- Snooze (a handler asks for a later run without using up an attempt) and cancel reaching a
-- running handler (ctx:cancelled() from the lease heartbeat; the worker does not settle it).
-- luacheck: max line length 160
local helper = require "spec.helper"
local proc = require "spec.proc_helper"
local celers = require "celers"
local worker = require "celers.worker"
local core = require "celers.core"

local sqls = helper.sql_string

describe("snooze and cancel", function()
   local dsn, broker, other

   local function row(id, columns)
      return helper.query(dsn, ("SELECT %s FROM celers_tasks WHERE id = %s"):format(columns, sqls(id)))[1]
   end

   setup(function()
      dsn = helper.fresh_dsn("spec_snooze_cancel")
      broker = assert(celers.connect({ dsn = dsn, recover_interval = 0 }))
      assert(broker:migrate())
      other = assert(celers.connect({ dsn = dsn, recover_interval = 0 }))
   end)

   teardown(function()
      if broker then broker:close() end
      if other then other:close() end
   end)

   before_each(function()
      helper.query(dsn, "DELETE FROM celers_tasks; DELETE FROM celers_dead_letter_queue")
   end)

   describe("broker:snooze", function()
      it("misuse raises", function()
         assert.has_error(function() broker:snooze(42, 1) end)
         assert.has_error(function() broker:snooze({}, 1) end, "celers: snooze: 'task' has no id")
         assert.has_error(function() broker:snooze("x", -1) end)
         assert.has_error(function() broker:snooze("x", math.huge) end)
         assert.has_error(function() broker:snooze("x", 0 / 0) end)
         assert.has_error(function() broker:snooze("x") end)
         assert.has_error(function() broker:snooze("x\0y", 1) end)
      end)

      it("parks the task for later and gives the attempt back; the old claim can settle nothing more", function()
         local id = assert(broker:enqueue("s", "x", { max_retries = 0 }))
         local task = assert(broker:dequeue())
         assert.equal(1, task.retry_count)
         assert.is_true(broker:snooze(task, 60))
         assert.same({ "scheduled", "0", "1", "1", "1" }, row(id, "state, retry_count, claim_id = " .. sqls(task.claim_id) .. ", worker_id IS NULL, "
            .. "scheduled_at BETWEEN NOW(6) + INTERVAL 55 SECOND AND NOW(6) + INTERVAL 65 SECOND"))
         assert.is_nil(broker:dequeue())
         local before = row(id, "CONCAT_WS('|', state, retry_count, scheduled_at)")[1]
         -- the same snooze again (as after "lost") says it landed and changes nothing
         assert.is_true(broker:snooze(task, 0))
         assert.is_false(broker:ack(task))
         assert.equal(before, row(id, "CONCAT_WS('|', state, retry_count, scheduled_at)")[1])
      end)

      it("snooze 0 makes it claimable at once, and attempts do not pile up", function()
         local id = assert(broker:enqueue("s", "x", { max_retries = 0 }))
         for _ = 1, 5 do
            local task = assert(broker:dequeue())
            assert.equal(id, task.id)
            assert.equal(1, task.retry_count)
            assert.is_true(broker:snooze(task, 0))
         end
         assert.same({ "pending", "0" }, row(id, "state, retry_count"))
      end)

      it("a task whose lease passed to another worker is not snoozed", function()
         local id = assert(broker:enqueue("s", "x"))
         local mine = assert(broker:dequeue { lease = 0.05 })
         helper.query(dsn, "UPDATE celers_tasks SET lease_expires_at = NOW(6) - INTERVAL 1 SECOND WHERE id = " .. sqls(id))
         assert(other:recover_stuck_tasks(0))
         local theirs = assert(other:dequeue())
         assert.equal(id, theirs.id)
         assert.is_false(broker:snooze(mine, 10))
         assert.same({ "processing", theirs.claim_id }, row(id, "state, claim_id"))
      end)
   end)

   describe("in the worker", function()
      it("ctx:snooze runs the task later without using up an attempt", function()
         local id = assert(broker:enqueue("poll", { n = 1 }, { max_retries = 0 }))
         local runs, attempts = 0, {}
         local w = worker.new { broker = broker, poll_min = 0.01, poll_max = 0.05, handlers = {
            poll = function(_, ctx)
               runs = runs + 1
               attempts[#attempts + 1] = ctx.attempt
               if runs <= 3 then return ctx:snooze(0) end
               return "ready"
            end } }
         w:run { max_tasks = 4, idle_exit = 2 }
         w:flush()
         assert.equal(4, runs)
         assert.same({ 1, 1, 1, 1 }, attempts)
         assert.equal(3, w.counts.snoozed)
         assert.same({ "completed", "1" }, row(id, "state, retry_count"))
         assert.equal(0, tonumber(helper.scalar(dsn, "SELECT COUNT(*) FROM celers_dead_letter_queue")))
      end)

      it("ctx:snooze refuses a bad delay (the handler fails)", function()
         local ok, err
         local w = worker.new { broker = broker, handlers = {
            bad = function(_, ctx)
               ok, err = pcall(ctx.snooze, ctx, -1)
               return true
            end } }
         assert(broker:enqueue("bad", "x"))
         w:run { max_tasks = 1, idle_exit = 1 }
         assert.is_false(ok)
         assert.matches("'seconds' must be a non%-negative finite number", err)
      end)

      it("a cancel from another process reaches the running handler, which is then not settled", function()
         local id = assert(broker:enqueue("long", "x"))
         local script = os.tmpname()
         local f = assert(io.open(script, "w"))
         f:write(("local b = assert(require('celers').connect(%q)); assert(b:cancel(%q) == true)"):format(dsn, id))
         f:close()
         local noticed_after, returned
         local w = worker.new { broker = broker, heartbeat = 0.05, handlers = {
            long = function(_, ctx)
               assert.is_false(ctx:cancelled())
               local code, out = proc.run(helper.lua_cmd() .. " " .. helper.shell_quote(script))
               assert.equal(0, code, out)
               local t0 = core.monotonic()
               while not ctx:cancelled() do
                  if core.monotonic() - t0 > 10 then error("the cancel never reached the handler") end
                  core.sleep(0.01)
               end
               noticed_after = core.monotonic() - t0
               returned = true
               return "finished anyway"
            end } }
         w:run { max_tasks = 1, idle_exit = 1 }
         w:flush()
         os.remove(script)
         assert.is_true(returned)
         assert.is_true(noticed_after < 5)
         assert.equal(1, w.counts.cancelled)
         assert.equal(0, w.counts.succeeded)
         assert.equal(0, w.counts.lost)
         assert.same({ "cancelled", "1" }, row(id, "state, completed_at IS NOT NULL"))
         assert.equal(0, tonumber(helper.scalar(dsn, "SELECT COUNT(*) FROM celers_results")))
      end)

      it("a handler that never asks is still not settled: its ack is fenced", function()
         local id = assert(broker:enqueue("short", "x"))
         local w = worker.new { broker = broker, handlers = {
            short = function(_, ctx)
               assert.is_true(other:cancel(ctx.task.id))
               return "done"
            end } }
         w:run { max_tasks = 1, idle_exit = 1 }
         w:flush()
         assert.equal(0, w.counts.succeeded)
         assert.same({ "cancelled" }, row(id, "state"))
      end)
   end)
end)
