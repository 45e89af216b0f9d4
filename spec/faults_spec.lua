-- The failure model, cell by cell: every broker method x every fault point of the seam
-- (core._inject_fault, see csrc/connection.h). Each cell checks what the caller got, what the
-- tables hold afterwards, that nothing was applied twice and that the broker works on the
-- next call. The cells are generated from the two tables below.
-- luacheck: max line length 160
local helper = require "spec.helper"
local celers = require "celers"
local core = require "celers.core"

-- What a caller may get under each fault. "ok" is a successful call; the rest are err.code.
-- lost = "the statement may have landed": never allowed where provably nothing was sent.
local FAULTS = {
   { name = "link cut before sending", fault = { at = "before_send" }, allowed = { ok = true } },
   { name = "link cut after sending", fault = { at = "after_send" }, allowed = { ok = true, lost = true } },
   { name = "answer to COMMIT lost", fault = { at = "commit" }, allowed = { ok = true, lost = true }, optional = true },
   { name = "COMMIT never sent", fault = { at = "before_send", op = "COMMIT" }, allowed = { ok = true }, optional = true },
   { name = "deadlock 1213", fault = { at = "error", errno = 1213 }, allowed = { ok = true, deadlock = true } },
   { name = "lock wait 1205", fault = { at = "error", errno = 1205 }, allowed = { ok = true, lock_timeout = true } },
   { name = "gone away 2006", fault = { at = "error", errno = 2006 }, allowed = { ok = true } },
   { name = "lost 2013", fault = { at = "error", errno = 2013 }, allowed = { ok = true, lost = true } },
   { name = "statement timeout 1969", fault = { at = "error", errno = 1969 }, allowed = { timeout = true } },
   { name = "statement timeout 3024", fault = { at = "error", errno = 3024 }, allowed = { timeout = true } },
   { name = "too many statements 1461", fault = { at = "error", errno = 1461 }, allowed = { ok = true } },
}

local DSN -- the spec's database, set in setup()

local function enq(b, n, opts)
   local ids = {}
   for i = 1, n or 1 do ids[i] = assert(b:enqueue("m", "x" .. i, opts)) end
   return ids
end

local function held(b, n)
   enq(b, n or 1)
   if (n or 1) == 1 then return assert(b:dequeue()) end
   return assert(b:dequeue_batch(n))
end

local function dead(b)
   local t = held(b)
   assert(b:reject(t, { requeue = false, error = "x" }))
   return assert(b:list_dlq())[1].id
end

-- Each method: op (a substring of the statement the fault targets), setup(b) -> arg,
-- call(b, arg), landed(s, check, arg) on the stats after (nil: a read), twice(s) (applied
-- more than once), settle (a fenced settle: after "lost" a repeat must give true).
local METHODS = {
   { name = "enqueue", op = "INSERT INTO celers_tasks", call = function(b) return b:enqueue("m", "x") end,
     landed = function(s) return s.total == 1 end, twice = function(s) return s.total > 1 end },
   { name = "enqueue with an id", op = "INSERT INTO celers_tasks",
     call = function(b) return b:enqueue("m", "x", { id = "0190a0b0-0000-7000-8000-0000000000aa" }) end,
     landed = function(s) return s.total == 1 end, twice = function(s) return s.total > 1 end },
   { name = "enqueue_batch", op = "INSERT INTO celers_tasks",
     call = function(b) return b:enqueue_batch({ { name = "m", payload = "1" }, { name = "m", payload = "2" } }) end,
     landed = function(s) return s.total == 2 end, twice = function(s) return s.total ~= 0 and s.total ~= 2 end },
   { name = "dequeue", skip_locked = true, op = "SKIP LOCKED", setup = function(b) enq(b, 2) end,
     call = function(b) return b:dequeue() end,
     landed = function(s) return s.processing == 1 end, twice = function(s) return s.processing > 1 end },
   { name = "dequeue_batch", skip_locked = true, op = "SKIP LOCKED", setup = function(b) enq(b, 3) end,
     call = function(b) return b:dequeue_batch(2) end,
     -- (after a SKIP LOCKED pass-over the second call may claim the third task too)
     landed = function(s) return s.processing >= 2 end, twice = function() return false end },
   { name = "ack", op = "state = 'completed'", setup = function(b) return held(b) end,
     call = function(b, t) return b:ack(t) end, settle = true,
     landed = function(s) return s.completed == 1 end, twice = function() return false end },
   { name = "ack_batch", op = "state = 'completed'", setup = function(b) return held(b, 2) end,
     call = function(b, ts) local n, e = b:ack_batch(ts); if n == 2 then return true end return n, e end, settle = true,
     landed = function(s) return s.completed == 2 end, twice = function() return false end },
   { name = "reject (requeue)", op = "'scheduled', 'pending')", setup = function(b) return held(b) end,
     call = function(b, t) return b:reject(t, { error = "e" }) end, settle = true,
     landed = function(s) return s.processing == 0 and s.total == 1 and s.dlq == 0 end, twice = function(s) return s.total ~= 1 end },
   { name = "reject (dead letter)", op = "INSERT INTO celers_dead_letter_queue", setup = function(b) return held(b) end,
     call = function(b, t) return b:reject(t, { requeue = false }) end, settle = true,
     landed = function(s) return s.dlq == 1 and s.total == 0 end, twice = function(s) return s.dlq > 1 end },
   { name = "retry", op = "'scheduled', 'pending')", setup = function(b) return held(b) end,
     call = function(b, t) return b:retry(t, 5, "e") end, settle = true,
     landed = function(s) return s.processing == 0 and s.total == 1 and s.dlq == 0 end, twice = function(s) return s.total ~= 1 end },
   { name = "ack_batch_and_dequeue", op = "state = 'completed'", setup = function(b) enq(b); return held(b, 2) end,
     call = function(b, ts) return b:ack_batch_and_dequeue(ts, 1) end,
     landed = function(s) return s.completed == 2 and s.processing == 1 end,
     twice = function(s) return s.completed > 2 or (s.completed == 2 and s.processing > 1) end },
   { name = "promote_scheduled", op = "AND state = 'scheduled'",
     setup = function(b) assert(b:enqueue_after("m", "x", 0.001)); core.sleep(0.01) end,
     call = function(b) return b:promote_scheduled() end,
     landed = function(s) return s.pending == 1 end, twice = function() return false end },
   { name = "snooze", op = "retry_count = GREATEST(retry_count - 1, 0)", setup = function(b) return held(b) end,
     call = function(b, t) return b:snooze(t, 5) end, settle = true,
     landed = function(s) return s.processing == 0 and s.total == 1 and s.dlq == 0 end, twice = function(s) return s.total ~= 1 end },
   { name = "touch", op = "SET lease_expires_at", setup = function(b) return held(b) end,
     call = function(b, t) return b:touch(t, 600) end, settle = true,
     landed = function(_, c, t) return c:get_task(t.id).lease_expires_at > core.time() + 500 end,
     twice = function() return false end },
   { name = "cancel", op = "'cancelled'", setup = function(b) return enq(b)[1] end,
     call = function(b, id) return b:cancel(id) end,
     landed = function(s) return s.cancelled == 1 end, twice = function() return false end },
   { name = "ack_and_dequeue", op = "CALL celers_ack_and_claim",
     setup = function(b) enq(b); return held(b) end,
     call = function(b, t) return b:ack_and_dequeue(t) end,
     landed = function(s) return s.completed == 1 end, twice = function(s) return s.processing > 1 end },
   { name = "pause", op = "INSERT INTO celers_queue_pauses",
     call = function(b) local _, e = b:pause(); if e then return nil, e end return true end,
     landed = function(_, c) return c:is_paused() end, twice = function() return false end },
   { name = "resume", op = "DELETE FROM celers_queue_pauses", setup = function(b) assert(b:pause()) end,
     call = function(b) local _, e = b:resume(); if e then return nil, e end return true end,
     landed = function(_, c) return not c:is_paused() end, twice = function() return false end },
   { name = "store_result", op = "INSERT INTO celers_results", setup = function(b) return enq(b)[1] end,
     call = function(b, id) local _, e = b:store_result(id, { status = "success", result = "r" }); if e then return nil, e end return true end,
     landed = function(_, c, id) return c:get_result(id) ~= nil end, twice = function() return false end },
   { name = "delete_result", op = "DELETE FROM celers_results",
     setup = function(b) local id = enq(b)[1]; assert(b:store_result(id, { status = "success", result = "r" })); return id end,
     call = function(b, id) return b:delete_result(id) end,
     landed = function(_, c, id) return c:get_result(id) == nil end, twice = function() return false end },
   { name = "requeue_from_dlq", op = "INSERT INTO celers_tasks", setup = dead,
     call = function(b, id) return b:requeue_from_dlq(id) end,
     landed = function(s) return s.dlq == 0 and s.pending == 1 end, twice = function(s) return s.total > 1 end },
   { name = "purge_dlq", op = "DELETE FROM celers_dead_letter_queue", setup = dead,
     call = function(b, id) return b:purge_dlq(id) end,
     landed = function(s) return s.dlq == 0 end, twice = function() return false end },
   { name = "purge_all_dlq", op = "DELETE FROM celers_dead_letter_queue", setup = dead,
     call = function(b) return b:purge_all_dlq() end,
     landed = function(s) return s.dlq == 0 end, twice = function() return false end },
   { name = "recover_stuck_tasks", skip_locked = true, op = "'lease expired'", setup = function(b) return held(b) end,
     call = function(b) return b:recover_stuck_tasks(0) end,
     landed = function(s) return s.pending == 1 end, twice = function() return false end },
   { name = "archive_completed_tasks", skip_locked = true, op = "INSERT INTO celers_task_history",
     setup = function(b) assert(b:ack(held(b))); core.sleep(0.01) end,
     call = function(b) return b:archive_completed_tasks(0) end,
     landed = function(s) return s.total == 0 end, twice = function() return false end },
   { name = "purge_by_state", op = "DELETE FROM celers_tasks", setup = function(b) enq(b, 2) end,
     call = function(b) return b:purge_by_state("pending") end,
     landed = function(s) return s.total == 0 end, twice = function() return false end },
   { name = "set_worker_id", op = "SET worker_id = ?", setup = function(b) return enq(b)[1] end,
     call = function(b, id) return b:set_worker_id(id, "w9") end,
     landed = function(_, c, id) return c:get_task(id).worker_id == "w9" end, twice = function() return false end },
   { name = "update_error_message", op = "SET error_message = ?", setup = function(b) return enq(b)[1] end,
     call = function(b, id) return b:update_error_message(id, "boom") end,
     landed = function(_, c, id) return c:get_task(id).error == "boom" end, twice = function() return false end },
   { name = "enqueue_at", op = "INSERT INTO celers_tasks", call = function(b) return b:enqueue_at("m", "x", core.time() + 3600) end,
     landed = function(s) return s.total == 1 end, twice = function(s) return s.total > 1 end },
   { name = "enqueue_after", op = "INSERT INTO celers_tasks", call = function(b) return b:enqueue_after("m", "x", 3600) end,
     landed = function(s) return s.total == 1 end, twice = function(s) return s.total > 1 end },
   { name = "enqueue_recurring", op = "INSERT INTO celers_recurring_runs",
     call = function(b) return b:enqueue_recurring("every", 1000 + math.random(1e9), "m", "x") end,
     landed = function(s) return s.total == 1 end, twice = function(s) return s.total > 1 end },
   { name = "dequeue_with_worker_id", skip_locked = true, op = "SKIP LOCKED", setup = function(b) enq(b, 2) end,
     call = function(b) return b:dequeue_with_worker_id("w7") end,
     landed = function(s) return s.processing == 1 end, twice = function(s) return s.processing > 1 end },
   { name = "touch_batch", op = "SET lease_expires_at", setup = function(b) return held(b, 2) end,
     call = function(b, ts) return b:touch_batch(ts, 600) end, settle = true,
     landed = function(_, c, ts) return c:get_task(ts[1].id).lease_expires_at > core.time() + 500 end,
     twice = function() return false end },
   { name = "recover_expired", skip_locked = true, op = "'lease expired'",
     setup = function(b) enq(b); assert(b:dequeue{ lease = 0.001 }); core.sleep(0.01) end,
     call = function(b) return b:recover_expired() end,
     landed = function(s) return s.pending == 1 end, twice = function() return false end },
   { name = "archive_results", op = "DELETE FROM celers_results",
     setup = function(b) local id = enq(b)[1]; assert(b:store_result(id, { status = "success" })); core.sleep(0.01); return id end,
     call = function(b) return b:archive_results(0) end,
     landed = function(_, c, id) return c:get_result(id) == nil end, twice = function() return false end },
   { name = "purge_all", op = "DELETE FROM celers_tasks", setup = function(b) enq(b, 2) end,
     call = function(b) return b:purge_all() end,
     landed = function(s) return s.total == 0 end, twice = function() return false end },
   { name = "purge_completed", op = "DELETE FROM celers_tasks", setup = function(b) assert(b:ack(held(b))) end,
     call = function(b) return b:purge_completed() end,
     landed = function(s) return s.total == 0 end, twice = function() return false end },
   { name = "purge_cancelled", op = "DELETE FROM celers_tasks", setup = function(b) assert(b:cancel(enq(b)[1])) end,
     call = function(b) return b:purge_cancelled() end,
     landed = function(s) return s.total == 0 end, twice = function() return false end },
   { name = "purge_failed", op = "DELETE FROM celers_tasks",
     setup = function(b) local id = enq(b)[1]; helper.query(DSN, "UPDATE celers_tasks SET state = 'failed' WHERE id = " .. helper.sql_string(id)) end,
     call = function(b) return b:purge_failed() end,
     landed = function(s) return s.total == 0 end, twice = function() return false end },
   { name = "purge_by_task_name", op = "DELETE FROM celers_tasks", setup = function(b) enq(b, 2) end,
     call = function(b) return b:purge_by_task_name("m") end,
     landed = function(s) return s.total == 0 end, twice = function() return false end },
   { name = "heartbeat_worker", op = "INSERT INTO celers_workers", setup = function(b) core.sleep(0.002); assert(b:prune_workers(0)) end,
     call = function(b) local _, e = b:heartbeat_worker{ worker_id = "w1" }; if e then return nil, e end return true end,
     landed = function(_, c) return #assert(c:list_workers()) == 1 end, twice = function() return false end },
   { name = "prune_workers", op = "DELETE FROM celers_workers",
     setup = function(b) assert(b:heartbeat_worker{ worker_id = "w1" }); core.sleep(0.01) end,
     call = function(b) return b:prune_workers(0) end,
     landed = function(_, c) return #assert(c:list_workers()) == 0 end, twice = function() return false end },
   { name = "remove_worker", op = "DELETE FROM celers_workers",
     setup = function(b) core.sleep(0.002); assert(b:prune_workers(0)); assert(b:heartbeat_worker{ worker_id = "w1" }) end,
     call = function(b) return b:remove_worker("w1") end,
     landed = function(_, c) return #assert(c:list_workers()) == 0 end, twice = function() return false end },
   -- reads: repeated on a new link, so only ok or the statement-timeout code
   { name = "queue_size", op = "SELECT COUNT(*)", setup = function(b) enq(b, 2) end, call = function(b) return b:queue_size() end },
   { name = "is_paused", op = "celers_queue_pauses", call = function(b) local _, e = b:is_paused(); if e then return nil, e end return true end },
   { name = "get_task", op = "SELECT", setup = function(b) return enq(b)[1] end, call = function(b, id) return b:get_task(id) end },
   { name = "list_tasks", op = "SELECT", setup = function(b) enq(b, 2) end, call = function(b) return b:list_tasks{} end },
   { name = "get_statistics", op = "SELECT", call = function(b) return b:get_statistics() end },
   { name = "count_by_task_name", op = "SELECT", setup = function(b) enq(b, 2) end, call = function(b) return b:count_by_task_name() end },
   { name = "list_scheduled_tasks", op = "SELECT", call = function(b) return b:list_scheduled_tasks{} end },
   { name = "get_processing_tasks", op = "SELECT", call = function(b) return b:get_processing_tasks{} end },
   { name = "list_dlq", op = "SELECT", call = function(b) return b:list_dlq() end },
   { name = "get_result", op = "SELECT", setup = function(b) local id = enq(b)[1]; assert(b:store_result(id, { status = "success" })); return id end,
     call = function(b, id) return b:get_result(id) end },
   -- a health check answers with healthy = false rather than an error
   { name = "check_health", op = "SELECT", call = function(b) return b:check_health() end, answers = true },
   { name = "get_table_sizes", op = "SELECT", call = function(b) return b:get_table_sizes() end },
   { name = "list_migrations", op = "SELECT", call = function(b) return b:list_migrations() end },
   { name = "count_scheduled_tasks", op = "SELECT", call = function(b) return b:count_scheduled_tasks() end },
   { name = "get_tasks_by_worker", op = "SELECT", call = function(b) return b:get_tasks_by_worker("w") end },
   { name = "list_workers", op = "SELECT", call = function(b) return b:list_workers() end },
   { name = "optimize_tables", op = "OPTIMIZE TABLE", call = function(b) return b:optimize_tables() end },
   { name = "retry_now", op = "scheduled_at = NOW(6), completed_at = NULL",
     setup = function(b) return assert(b:enqueue_after("m", "x", 3600)) end,
     call = function(b, id) return b:retry_now(id) end,
     landed = function(_, c, id) return c:get_task(id).scheduled_at <= core.time() + 1 end, twice = function() return false end },
   { name = "list_queues", op = "SELECT", call = function(b) return b:list_queues() end },
   { name = "throughput", op = "SELECT", call = function(b) return b:throughput() end },
   { name = "list_recurring", op = "SELECT", call = function(b) return b:list_recurring() end },
   { name = "task_history", op = "SELECT", setup = function(b) return enq(b)[1] end, call = function(b, id) return b:task_history(id) end },
   { name = "update_metrics", op = "SELECT", call = function(b) return b:update_metrics() end },
   { name = "analyze_tables", op = "ANALYZE TABLE", call = function(b) return b:analyze_tables() end },
   { name = "set_limit", op = "INSERT INTO celers_task_limits",
     call = function(b) local _, e = b:set_limit("lm", { concurrency = 2 }); if e then return nil, e end return true end,
     landed = function(_, c) return #assert(c:list_limits()) == 1 end, twice = function() return false end },
   { name = "remove_limit", op = "DELETE FROM celers_task_limits", setup = function(b) assert(b:set_limit("lm", { concurrency = 2 })) end,
     call = function(b) return b:remove_limit("lm") end,
     landed = function(_, c) return #assert(c:list_limits()) == 0 end, twice = function() return false end },
   { name = "list_limits", op = "SELECT", call = function(b) return b:list_limits() end },
   -- the limited claim: the limit's lock, counts and claim under one transaction
   { name = "dequeue_batch (limited name)", skip_locked = true, op = "SKIP LOCKED",
     setup = function(b)
        assert(b:set_limit("lm", { concurrency = 2, rate = 100, period = 60 }))
        for i = 1, 3 do assert(b:enqueue("lm", "x" .. i)) end
     end,
     call = function(b) return b:dequeue_batch(3) end,
     landed = function(s) return s.processing == 2 end, twice = function(s) return s.processing > 2 end },
}

-- Methods that do not reach the server, or have their own fault spec.
local NOT_IN_MATRIX = {
   close = "no statement", queue = "no statement", with_queue = "no statement", worker_id = "no statement",
   connection_id = "no statement",
   migrate = "spec/migrate_faults_spec.lua interrupts every statement of every migration",
   transaction = "spec/transaction_spec.lua: a deadlock and a lost link inside are returned, never repeated",
   execute = "spec/transaction_spec.lua: only inside broker:transaction, whose failures end it",
}

describe("faults", function()
   local dsn, b, checker

   setup(function()
      dsn = helper.fresh_dsn("spec_faults")
      DSN = dsn
      checker = assert(celers.connect({ dsn = dsn, recover_interval = 1e9 }))
      assert(checker:migrate())
      b = assert(celers.connect({ dsn = dsn, recover_interval = 1e9, reconnect_backoff = 0.01 }))
   end)

   teardown(function()
      core._inject_fault()
      if b then b:close() end
      if checker then checker:close() end
   end)

   it("covers every broker method", function()
      local covered = {}
      for _, m in ipairs(METHODS) do covered[(m.name:match("^[%w_]+"))] = true end
      local missing = {}
      for name in pairs(core.broker_methods) do
         if name:sub(1, 1) ~= "_" and not NOT_IN_MATRIX[name] and not covered[name] then missing[#missing + 1] = name end
      end
      table.sort(missing)
      assert.same({}, missing, "broker methods without fault cells")
   end)

   for _, m in ipairs(METHODS) do
      for _, f in ipairs(FAULTS) do
         it(m.name .. " x " .. f.name, function()
            assert(checker:purge_all())
            assert(checker:resume())
            for _, l in ipairs(assert(checker:list_limits())) do assert(checker:remove_limit(l.name)) end
            local arg = m.setup and m.setup(b)
            local fault = { op = m.op }
            for k, v in pairs(f.fault) do fault[k] = v end
            if f.fault.at == "commit" then fault.op = nil end
            core._inject_fault(fault)
            local ok, r, err = pcall(m.call, b, arg)
            local left = core._inject_fault()
            assert(ok, "raised: " .. tostring(r))
            if not f.optional then assert.equal(0, left, "the fault did not fire: op " .. tostring(m.op)) end
            local outcome = (r ~= nil or err == nil) and "ok" or (type(err) == "table" and err.code or tostring(err))
            if left == 0 and not (m.answers and outcome == "ok") then
               assert.is_true(f.allowed[outcome] == true, m.name .. " x " .. f.name .. " gave " .. tostring(err))
            end
            if m.landed then
               local s = assert(checker:get_statistics())
               assert.is_false(m.twice(s), "applied twice")
               -- SKIP LOCKED passes over rows the cut session still locks until the server has
               -- rolled it back: a later call hands them out, nothing is lost
               if outcome == "ok" and m.skip_locked and not m.landed(s, checker, arg) then
                  core.sleep(0.2)
                  assert.is_truthy((m.call(b, arg)))
                  s = assert(checker:get_statistics())
               end
               if outcome == "ok" then
                  assert.is_truthy(m.landed(s, checker, arg), "reported ok but did not land")
               elseif outcome ~= "lost" then
                  assert.is_falsy(m.landed(s, checker, arg), "reported " .. outcome .. " but landed")
               end
               -- a fenced settle is safe to repeat after lost, and tells the truth
               if outcome == "lost" and m.settle then
                  local again = m.call(b, arg)
                  assert.is_truthy(again, "repeat after lost")
                  assert.is_truthy(m.landed(assert(checker:get_statistics()), checker, arg))
               end
            end
            -- the broker works on the next call
            assert.is_number(b:queue_size())
         end)
      end
   end
end)
