-- Concurrency and rate limits per task name (broker:set_limit), enforced by the claim in the
-- database: the ordinary claim never takes a limited name, the limited claim takes what the
-- limit allows while it holds the limit's row. The multi-process specs check the limits on
-- what the database recorded (each task's started_at and completed_at, the claim's clock).
-- luacheck: max line length 160
local helper = require "spec.helper"
local proc = require "spec.proc_helper"
local celers = require "celers"

local sqls = helper.sql_string

describe("task limits", function()
   local dsn, broker, other

   local function count(where)
      return tonumber(helper.scalar(dsn, "SELECT COUNT(*) FROM celers_tasks WHERE " .. where))
   end

   local function names(tasks)
      local by = {}
      for _, t in ipairs(tasks) do by[t.name] = (by[t.name] or 0) + 1 end
      return by
   end

   -- [started, completed] of every completed task of name, in microseconds since the epoch
   local function intervals(name, extra)
      local rows = helper.query(dsn, ("SELECT TIMESTAMPDIFF(MICROSECOND, '1970-01-01', started_at), "
         .. "TIMESTAMPDIFF(MICROSECOND, '1970-01-01', completed_at)%s FROM celers_tasks "
         .. "WHERE task_name = %s AND state = 'completed'"):format(extra or "", sqls(name)))
      local list = {}
      for i, r in ipairs(rows) do list[i] = { tonumber(r[1]), tonumber(r[2]), r[3] } end
      return list
   end

   -- The most intervals open at once (an interval holds its slot from start to completion).
   local function max_overlap(list)
      local events = {}
      for _, iv in ipairs(list) do
         events[#events + 1] = { iv[1], 1 }
         events[#events + 1] = { iv[2], -1 }
      end
      -- a completion at the very instant of a start frees the slot first
      table.sort(events, function(a, b) if a[1] ~= b[1] then return a[1] < b[1] end return a[2] < b[2] end)
      local open, most = 0, 0
      for _, e in ipairs(events) do
         open = open + e[2]
         if open > most then most = open end
      end
      return most
   end

   local function spawn_workers(batches)
      local hs = {}
      for i, batch in ipairs(batches) do
         hs[i] = proc.spawn(helper.root .. "/spec/fixtures/limit_worker.lua", { dsn, tostring(batch) })
      end
      for _, h in ipairs(hs) do
         local code, out = proc.wait(h, 120)
         assert.equal(0, code, out)
      end
   end

   setup(function()
      dsn = helper.fresh_dsn("spec_limits")
      broker = assert(celers.connect({ dsn = dsn, recover_interval = 0 }))
      assert(broker:migrate())
      other = assert(celers.connect({ dsn = dsn, recover_interval = 0 }))
   end)

   teardown(function()
      if broker then broker:close() end
      if other then other:close() end
   end)

   before_each(function()
      helper.query(dsn, "DELETE FROM celers_tasks; DELETE FROM celers_task_limits; DELETE FROM celers_task_starts")
   end)

   describe("set_limit, remove_limit, list_limits", function()
      it("misuse raises, naming the argument", function()
         assert.has_error(function() broker:set_limit() end, "celers: set_limit: 'name' must be a string (got nil)")
         assert.has_error(function() broker:set_limit("", { concurrency = 1 }) end)
         assert.has_error(function() broker:set_limit("a\0b", { concurrency = 1 }) end)
         assert.has_error(function() broker:set_limit("a") end)
         assert.has_error(function() broker:set_limit("a", {}) end, "celers: set_limit: 'limit' needs 'concurrency' or 'rate'")
         assert.has_error(function() broker:set_limit("a", { concurency = 1 }) end)
         assert.has_error(function() broker:set_limit("a", { concurrency = -1 }) end)
         assert.has_error(function() broker:set_limit("a", { concurrency = 1.5 }) end)
         assert.has_error(function() broker:set_limit("a", { concurrency = 2 ^ 63 }) end)
         assert.has_error(function() broker:set_limit("a", { concurrency = "2" }) end)
         assert.has_error(function() broker:set_limit("a", { rate = 1, period = 0 }) end)
         assert.has_error(function() broker:set_limit("a", { rate = 1, period = math.huge }) end)
         assert.has_error(function() broker:set_limit("a", { rate = 1, period = 0 / 0 }) end)
         assert.has_error(function() broker:set_limit("a", { concurrency = 1, period = 5 }) end, "celers: set_limit: 'period' goes with 'rate'")
         assert.has_error(function() broker:set_limit("a", { rate = 1, partition_by = "u" }) end,
            "celers: set_limit: 'partition_by' goes with 'concurrency'")
         assert.has_error(function() broker:set_limit("a", { concurrency = 1, partition_by = 'x"y' }) end)
         assert.has_error(function() broker:set_limit("a", { concurrency = 1, partition_by = "" }) end)
         assert.has_error(function() broker:set_limit("a", { concurrency = 1, partition_by = ("f"):rep(300) }) end)
         assert.has_error(function() broker:remove_limit() end)
         assert.has_error(function() broker:remove_limit(7) end)
         assert.has_error(function() broker.list_limits() end)
         -- nothing was written by any of them
         assert.equal("0", helper.scalar(dsn, "SELECT COUNT(*) FROM celers_task_limits"))
      end)

      it("stores, replaces, lists and removes a limit", function()
         assert.is_true(broker:set_limit("resize", { concurrency = 2 }))
         assert.is_true(broker:set_limit("mail", { rate = 10, period = 60 }))
         assert.same({ { "mail", "NULL", "NULL", "10", "60" }, { "resize", "2", "NULL", "NULL", "NULL" } },
            helper.query(dsn, "SELECT task_name, COALESCE(max_running, 'NULL'), COALESCE(partition_by, 'NULL'), "
               .. "COALESCE(rate_limit, 'NULL'), COALESCE(rate_period, 'NULL') FROM celers_task_limits ORDER BY task_name"))
         -- set again: replaced, every field (the rate goes)
         assert.is_true(broker:set_limit("mail", { concurrency = 1, partition_by = "$.to.domain" }))
         assert.same({ "1", "$.to.domain", "NULL", "NULL" },
            helper.query(dsn, "SELECT max_running, partition_by, COALESCE(rate_limit, 'NULL'), COALESCE(rate_period, 'NULL') "
               .. "FROM celers_task_limits WHERE task_name = 'mail'")[1])
         local list = assert(broker:list_limits())
         assert.same({ name = "mail", concurrency = 1, partition_by = "$.to.domain", running = 0, started = 0, waiting = 0 }, list[1])
         assert.same({ name = "resize", concurrency = 2, running = 0, started = 0, waiting = 0 }, list[2])
         assert.is_true(broker:remove_limit("mail"))
         assert.is_false(broker:remove_limit("mail"))
         assert.equal("resize", helper.scalar(dsn, "SELECT GROUP_CONCAT(task_name) FROM celers_task_limits"))
      end)

      it("returns nil, err when the database fails, and changes nothing", function()
         local b = assert(celers.connect({ dsn = dsn }))
         b:execute("SET SESSION max_statement_time = 0")
         helper.query(dsn, "RENAME TABLE celers_task_limits TO celers_task_limits_away")
         local ok, err = b:set_limit("x", { concurrency = 1 })
         local list, lerr = b:list_limits()
         local removed, rerr = b:remove_limit("x")
         helper.query(dsn, "RENAME TABLE celers_task_limits_away TO celers_task_limits")
         b:close()
         assert.is_nil(ok)
         assert.equal("sql", err.code)
         assert.is_nil(list)
         assert.equal("sql", lerr.code)
         assert.is_nil(removed)
         assert.equal("sql", rerr.code)
         assert.equal("0", helper.scalar(dsn, "SELECT COUNT(*) FROM celers_task_limits"))
      end)
   end)

   describe("the claim", function()
      it("takes at most `concurrency` processing tasks of a limited name, the others as usual", function()
         assert(broker:set_limit("slow", { concurrency = 2 }))
         for i = 1, 5 do
            assert(broker:enqueue("slow", { i = i }))
            assert(broker:enqueue("fast", { i = i }))
         end
         local got = assert(broker:dequeue_batch(100))
         assert.same({ slow = 2, fast = 5 }, names(got))
         assert.equal(2, count("task_name = 'slow' AND state = 'processing'"))
         -- another connection (another process, as far as the database knows) gets none
         assert.same({}, assert(other:dequeue_batch(100)))
         assert.is_nil(other:dequeue())
         -- one finished: one more may start, and only one
         local first
         for _, t in ipairs(got) do if t.name == "slow" then first = first or t end end
         assert.is_true(broker:ack(first))
         local more = assert(other:dequeue_batch(100))
         assert.same({ slow = 1 }, names(more))
         assert.equal(2, count("task_name = 'slow' AND state = 'processing'"))
         assert.equal(2, count("task_name = 'slow' AND state = 'pending'"))
         -- list_limits counts what waits, scheduled tasks of every queue included
         assert(broker:with_queue("later"):enqueue_after("slow", { i = 9 }, 3600))
         local l = assert(broker:list_limits())[1]
         assert.same({ "slow", 2, 3 }, { l.name, l.running, l.waiting })
      end)

      it("counts the processing tasks of the name in every queue", function()
         assert(broker:set_limit("slow", { concurrency = 1 }))
         local reports = broker:with_queue("reports")
         assert(reports:enqueue("slow", "a"))
         assert(broker:enqueue("slow", "b"))
         local held = assert(reports:dequeue())
         assert.equal("a", held.payload)
         assert.is_nil(broker:dequeue())
         assert.is_true(reports:ack(held))
         assert.equal("b", assert(broker:dequeue()).payload)
      end)

      it("keeps claim order (priority, then time) within a limited name", function()
         assert(broker:set_limit("slow", { concurrency = 1 }))
         assert(broker:enqueue("slow", "low", { priority = 1 }))
         assert(broker:enqueue("slow", "high", { priority = 9 }))
         local t = assert(broker:dequeue())
         assert.equal("high", t.payload)
         assert.equal("processing", helper.scalar(dsn, "SELECT state FROM celers_tasks WHERE id = " .. sqls(t.id)))
         assert.equal(t.claim_id, helper.scalar(dsn, "SELECT claim_id FROM celers_tasks WHERE id = " .. sqls(t.id)))
         assert.equal(1, t.retry_count)
      end)

      it("concurrency 0 holds the name; removing the limit lets it run", function()
         assert(broker:set_limit("held", { concurrency = 0 }))
         assert(broker:enqueue("held", "x"))
         assert.is_nil(broker:dequeue())
         assert.is_true(broker:remove_limit("held"))
         assert.equal("x", assert(broker:dequeue()).payload)
      end)

      it("a limit set from another connection holds at once", function()
         assert(broker:enqueue("late", "x"))
         assert(other:set_limit("late", { concurrency = 0 }))
         assert.is_nil(broker:dequeue())
         assert.equal(1, count("state = 'pending'"))
      end)

      it("ack_and_dequeue and ack_batch_and_dequeue keep the limit", function()
         assert(broker:set_limit("slow", { concurrency = 1 }))
         for i = 1, 3 do assert(broker:enqueue("slow", { i = i })) end
         local t = assert(broker:dequeue())
         local acked, nxt = broker:ack_and_dequeue(t)
         assert.is_true(acked)
         assert.equal("completed", helper.scalar(dsn, "SELECT state FROM celers_tasks WHERE id = " .. sqls(t.id)))
         assert.equal(2, nxt.payload.i)
         -- the slot is held by nxt: a second hand-off on another connection gets nothing
         local a2, none = other:ack_and_dequeue(nil)
         assert.is_false(a2)
         assert.is_nil(none)
         local n, list = broker:ack_batch_and_dequeue({ nxt }, 10)
         assert.equal(1, n)
         assert.equal(3, list[1].payload.i)
         assert.equal(1, #list)
         assert.equal(1, count("task_name = 'slow' AND state = 'processing'"))
      end)

      it("partition_by caps each value of a payload field", function()
         assert(broker:set_limit("per_user", { concurrency = 1, partition_by = "user" }))
         for _, u in ipairs({ "ann", "ann", "bob", "bob", "cid" }) do assert(broker:enqueue("per_user", { user = u })) end
         assert(broker:enqueue("per_user", "not json"))
         assert(broker:enqueue("per_user", { other = 1 }))
         local got = assert(broker:dequeue_batch(100))
         local users = {}
         for _, t in ipairs(got) do
            local u = type(t.payload) == "table" and t.payload.user or "(none)"
            users[u] = (users[u] or 0) + 1
         end
         -- one each; payloads without the field share one partition
         assert.same({ ann = 1, bob = 1, cid = 1, ["(none)"] = 1 }, users)
         assert.same({}, assert(other:dequeue_batch(100)))
         assert.equal(4, count("task_name = 'per_user' AND state = 'processing'"))
         assert.equal(3, count("task_name = 'per_user' AND state = 'pending'"))
      end)

      it("partition_by takes a JSON path", function()
         assert(broker:set_limit("per_user", { concurrency = 2, partition_by = "$.to.domain" }))
         for i = 1, 3 do assert(broker:enqueue("per_user", { to = { domain = "a.example" }, i = i })) end
         assert(broker:enqueue("per_user", { to = { domain = "b.example" } }))
         assert.same({ per_user = 3 }, names(assert(broker:dequeue_batch(100))))
         assert.equal(1, count("task_name = 'per_user' AND state = 'pending' AND payload LIKE '%a.example%'"))
      end)

      it("rate: at most `rate` starts per period, recorded in celers_task_starts", function()
         assert(broker:set_limit("paced", { rate = 3, period = 1.5 }))
         for i = 1, 7 do assert(broker:enqueue("paced", { i = i })) end
         local first = assert(broker:dequeue_batch(100))
         assert.equal(3, #first)
         -- finishing them frees nothing: the starts count, not the running tasks
         assert.equal(3, assert(broker:ack_batch(first)))
         assert.same({}, assert(other:dequeue_batch(100)))
         assert.same({ "3" }, helper.query(dsn, "SELECT SUM(started) FROM celers_task_starts WHERE task_name = 'paced'")[1])
         assert.equal(3, assert(broker:list_limits())[1].started)
         assert.equal(4, assert(broker:list_limits())[1].waiting)
         local more = proc.wait_for(function()
            local l = assert(other:dequeue_batch(100))
            return #l > 0 and l
         end, 10, 0.05)
         assert.equal(3, #more)
         assert.equal(1, count("task_name = 'paced' AND state = 'pending'"))
         -- the two claims are at least a period apart on the database's clock
         assert.is_true(tonumber(helper.scalar(dsn, "SELECT TIMESTAMPDIFF(MICROSECOND, MIN(started_at), MAX(started_at)) "
            .. "FROM celers_tasks WHERE task_name = 'paced' AND state <> 'pending'")) >= 1500000)
      end)

      it("a paused queue gives nothing, limited or not", function()
         assert(broker:set_limit("slow", { concurrency = 5 }))
         assert(broker:enqueue("slow", "one"))
         assert(broker:pause())
         assert.is_nil(broker:dequeue())
         assert(broker:resume())
         assert.equal("one", assert(broker:dequeue()).payload)
      end)
   end)

   describe("metrics", function()
      it("update_metrics sets the limit gauges; a removed limit leaves them", function()
         assert(broker:set_limit("slow", { concurrency = 2 }))
         assert(broker:set_limit("paced", { rate = 10, period = 60 }))
         for i = 1, 3 do assert(broker:enqueue("slow", { i = i })) end
         assert(broker:enqueue("paced", { i = 1 }))
         assert.equal(3, #assert(broker:dequeue_batch(10)))
         assert(broker:update_metrics())
         local text = celers.metrics.render()
         assert.matches('celers_limit_running{task_name="slow"} 2\n', text, 1, true)
         assert.matches('celers_limit_concurrency{task_name="slow"} 2\n', text, 1, true)
         assert.matches('celers_limit_started{task_name="paced"} 1\n', text, 1, true)
         assert.matches('celers_limit_running{task_name="paced"} 1\n', text, 1, true)
         assert.matches('celers_limit_waiting{task_name="slow"} 1\n', text, 1, true)
         assert.matches('celers_limit_waiting{task_name="paced"} 0\n', text, 1, true)
         assert(broker:remove_limit("slow"))
         assert(broker:update_metrics())
         text = celers.metrics.render()
         assert.is_nil(text:find('celers_limit_%a+{task_name="slow"}'))
         assert.matches('celers_limit_started{task_name="paced"} 1\n', text, 1, true)
         assert.has_error(function() celers.metrics.update_from_limits("x") end, "metrics.update_from_limits: 'list' must be a table")
         assert.has_error(function() celers.metrics.update_from_limits({ 5 }) end)
      end)
   end)

   describe("celers limits", function()
      local function cli(args)
         return proc.run("CELERS_LUA=" .. helper.shell_quote(helper.lua()) .. " CELERS_DSN=" .. helper.shell_quote(dsn)
            .. " " .. helper.shell_quote(helper.root .. "/bin/celers") .. " " .. args)
      end

      it("refuses wrong arguments with exit code 2 and writes nothing", function()
         for _, args in ipairs({ "limits", "limits frob", "limits set", "limits set x", "limits set x --concurrency -1",
                                 "limits set x --concurrency 1.5", "limits set x --concurrency many", "limits set x --rate 1 --period 0",
                                 "limits set x --period 5 --concurrency 1", "limits set x --rate 1 --partition-by u",
                                 "limits set x --concurrency 1 --partition-by 'a\"b'", "limits set x --concurrency 1 extra",
                                 "limits list --rate 3", "limits list extra", "limits remove", "limits remove x --concurrency 1",
                                 "limits set x --concurrency 99999999999" }) do
            local code, out = cli(args)
            assert.equal(2, code, args .. ": " .. out)
            assert.matches("celers: ", out)
         end
         assert.equal("0", helper.scalar(dsn, "SELECT COUNT(*) FROM celers_task_limits"))
      end)

      it("sets, lists and removes limits", function()
         local code, out = cli("limits set resize --concurrency 2 --partition-by user --rate 10 --period 60")
         assert.equal(0, code, out)
         assert.same({ "resize", "2", "user", "10", "60" },
            helper.query(dsn, "SELECT task_name, max_running, partition_by, rate_limit, rate_period FROM celers_task_limits")[1])
         assert(broker:enqueue("resize", { user = "ann" }))
         -- a limit set elsewhere holds at once; its tasks are claimed once this connection
         -- has re-read the limited names (within a second)
         assert.truthy(proc.wait_for(function() return assert(broker:dequeue_batch(5))[1] end, 5, 0.1))
         code, out = cli("limits list")
         assert.equal(0, code, out)
         assert.matches("NAME%s+CONCURRENCY%s+PARTITION BY%s+RATE%s+PERIOD%s+RUNNING%s+WAITING%s+STARTED", out)
         assert.matches("resize%s+2%s+user%s+10%s+60[.0]*%s+1%s+0%s+1", out)
         code, out = cli("--json limits list")
         assert.equal(0, code, out)
         local list = celers.json.decode(out)
         assert.equal(1, list[1].running)
         assert.equal("user", list[1].partition_by)
         code, out = cli("limits remove resize")
         assert.equal(0, code, out)
         assert.equal("0", helper.scalar(dsn, "SELECT COUNT(*) FROM celers_task_limits"))
         code, out = cli("limits remove resize")
         assert.equal(1, code, out)
         assert.matches("has no limit", out)
      end)
   end)

   describe("several worker processes", function()
      it("never run more than `concurrency` tasks of a name at once", function()
         assert(broker:set_limit("slow", { concurrency = 3 }))
         for i = 1, 30 do
            assert(broker:enqueue("slow", { ms = 120, i = i }))
            assert(broker:enqueue("fast", { ms = 5, i = i }))
         end
         spawn_workers({ 1, 1, 100, 100 })
         assert.equal(60, count("state = 'completed'"))
         local most = max_overlap(intervals("slow"))
         assert.is_true(most <= 3, "at most 3 at once, saw " .. most)
         assert.is_true(most >= 2, "the limit, not one worker, paced them: saw " .. most)
         -- the unlimited name was not held back to the limit
         assert.is_true(max_overlap(intervals("fast")) >= 1)
      end)

      it("never run more than `concurrency` tasks of one partition at once", function()
         assert(broker:set_limit("per_user", { concurrency = 1, partition_by = "user" }))
         for i = 1, 24 do assert(broker:enqueue("per_user", { ms = 80, user = "u" .. (i % 3) })) end
         spawn_workers({ 1, 1, 1, 100 })
         assert.equal(24, count("state = 'completed'"))
         local overall = max_overlap(intervals("per_user"))
         for u = 0, 2 do
            local list = {}
            for _, iv in ipairs(intervals("per_user", ", JSON_VALUE(payload, '$.user')")) do
               if iv[3] == "u" .. u then list[#list + 1] = iv end
            end
            assert.equal(8, #list)
            assert.equal(1, max_overlap(list))
         end
         assert.is_true(overall >= 2 and overall <= 3, "partitions ran side by side: " .. overall)
      end)

      it("never start more than `rate` tasks in any period", function()
         assert(broker:set_limit("paced", { rate = 4, period = 0.5 }))
         for i = 1, 20 do assert(broker:enqueue("paced", { ms = 1, i = i })) end
         spawn_workers({ 1, 100, 100 })
         assert.equal(20, count("state = 'completed'"))
         local starts = {}
         for i, iv in ipairs(intervals("paced")) do starts[i] = iv[1] end
         table.sort(starts)
         -- every window (t - period, t] ending at a start holds at most `rate` starts
         for i = 1, #starts do
            local inside = 0
            for j = 1, i do if starts[j] > starts[i] - 500000 then inside = inside + 1 end end
            assert.is_true(inside <= 4, ("%d starts in the half second up to start %d"):format(inside, i))
         end
         -- and they ran as fast as the rate allows, not one per claim interval
         assert.is_true(starts[#starts] - starts[1] >= 2000000)
      end)
   end)
end)
