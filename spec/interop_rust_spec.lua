-- One database, two brokers: celers-broker-sql 0.2 (Rust, CeleRS) and this one (issue 10).
-- spec/rust_broker.lua plays the Rust broker with its own schema and statements; every case
-- runs on a database the Rust broker created (then upgraded by migrate()) and on one we created.
-- luacheck: max line length 150
local helper = require "spec.helper"
local rust = require "spec.rust_broker"
local celers = require "celers"

local q = helper.sql_string

local SHARED = { "celers_tasks", "celers_dead_letter_queue", "celers_task_history", "celers_results" }

-- our migrations, as recorded: NNN for the shared 001-003, lua-NNN from 004 on
local function our_versions()
   local p = assert(io.popen("ls " .. helper.shell_quote(helper.root .. "/sql")))
   local list = {}
   for name in p:lines() do
      local n, rest = name:match("^(%d%d%d)(_[%w_]+)%.sql$")
      if n then list[#list + 1] = (n > "003" and "lua-" .. n or n) .. rest end
   end
   p:close()
   table.sort(list)
   return list
end

local function without_shared(list)
   local out = {}
   for _, v in ipairs(list) do
      if v:match("^lua%-") then out[#out + 1] = v end
   end
   return out
end

local function one(dsn, sql) return helper.scalar(dsn, sql) end
local function row(dsn, sql) return helper.query(dsn, sql)[1] end

-- a database made by the Rust broker, then upgraded here; or made here, then migrated by the
-- Rust broker too (as a Rust broker pointed at it does on start)
local function database(origin, name)
   local dsn = helper.fresh_dsn("interop_" .. origin .. "_" .. name)
   local b = assert(celers.connect(dsn))
   if origin == "rust" then
      rust.migrate(dsn)
      assert(b:migrate())
   else
      assert(b:migrate())
      rust.migrate(dsn)
   end
   return dsn, b
end

-- column definitions of the shared tables, in a form both databases can be compared in
local function shape(dsn)
   local out = {}
   for _, r in ipairs(helper.query(dsn, "SELECT table_name, column_name, column_type, is_nullable, "
      .. "COALESCE(column_default, 'NULL'), COALESCE(collation_name, '-') FROM information_schema.columns "
      .. "WHERE table_schema = DATABASE() AND table_name IN ('" .. table.concat(SHARED, "','") .. "') "
      .. "ORDER BY table_name, column_name")) do
      out[#out + 1] = table.concat(r, " ")
   end
   return out
end

-- one of our migrations as an earlier version of this module applied and recorded it (bare NNN)
local function apply_earlier(dsn, file)
   local fh = assert(io.open(helper.root .. "/sql/" .. file .. ".sql"))
   local sql = fh:read("*a")
   fh:close()
   local v, name = file:match("^(%d+)_(.*)$")
   helper.query(dsn, "CREATE TABLE IF NOT EXISTS celers_migrations (version VARCHAR(255) NOT NULL, name VARCHAR(255) NOT NULL "
      .. "DEFAULT '', applied_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), PRIMARY KEY (version)) DEFAULT CHARSET=utf8mb4;\n"
      .. sql .. "\nINSERT INTO celers_migrations (version, name) VALUES (" .. q(v) .. ", " .. q(name) .. ");")
end

describe("interop with celers-broker-sql 0.2 (Rust):", function()
   describe("migrations", function()
      it("upgrade a database the Rust broker created, its rows included, without touching its records", function()
         local dsn = helper.fresh_dsn("interop_upgrade")
         assert.same({ "001", "002", "003", "006", "007", "008" }, rust.migrate(dsn))
         local rust_records = helper.query(dsn, "SELECT version, name FROM celers_migrations ORDER BY version")
         local id = rust.enqueue(dsn, { name = "legacy", payload = "bytes", queue = "emails", max_retries = 2 })
         -- a row of its own due later (its CHECK on state must not stop the upgrade; the row stays
         -- 'pending', the only state its claim reads)
         local later = rust.enqueue(dsn, { name = "later", payload = "x", delay = 3600 })
         -- two results for one task: the Rust table has no unique key on task_id
         helper.query(dsn, "INSERT INTO celers_results (id, task_id, task_name, state, created_at) VALUES "
            .. "(UUID(), " .. q(id) .. ", 'legacy', 'pending', NOW() - INTERVAL 1 HOUR), "
            .. "(UUID(), " .. q(id) .. ", 'legacy', 'success', NOW())")
         local b = assert(celers.connect(dsn))
         assert.same(without_shared(our_versions()), b:migrate())
         assert.same({}, b:migrate())
         assert.same({}, rust.migrate(dsn))
         -- the Rust records as they were, ours beside them
         local records = helper.query(dsn, "SELECT version, name FROM celers_migrations WHERE version NOT LIKE 'lua-%' ORDER BY version")
         assert.same(rust_records, records)
         assert.equal(tostring(#without_shared(our_versions())),
            one(dsn, "SELECT COUNT(*) FROM celers_migrations WHERE version LIKE 'lua-%'"))
         -- its row reads here: queue from its metadata, payload raw, max_retries unchanged (it counts attempts)
         assert.same({ "emails", "raw", "2", "pending" },
            row(dsn, "SELECT queue, payload_type, max_retries, state FROM celers_tasks WHERE id = " .. q(id)))
         assert.equal("pending", one(dsn, "SELECT state FROM celers_tasks WHERE id = " .. q(later)))
         assert.same({ "success" }, helper.query(dsn, "SELECT state FROM celers_results WHERE task_id = " .. q(id))[1])
         assert.equal("1", one(dsn, "SELECT COUNT(*) FROM celers_results WHERE task_id = " .. q(id)))
         assert.equal("0", one(dsn, "SELECT non_unique FROM information_schema.statistics WHERE table_schema = DATABASE() "
            .. "AND table_name = 'celers_results' AND index_name = 'uq_celers_results_task'"))
         b:close()
      end)

      it("leave a database we created migratable by the Rust broker, which adds only its own tables", function()
         local dsn = helper.fresh_dsn("interop_lua_first")
         local b = assert(celers.connect(dsn))
         assert.same(our_versions(), b:migrate())
         assert.same({ "006", "007", "008" }, rust.migrate(dsn))
         for _, t in ipairs({ "celers_idempotency_keys", "celers_workflows", "celers_rate_limits" }) do
            assert.equal("1", one(dsn, "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() "
               .. "AND table_name = " .. q(t)))
         end
         assert.same({}, b:migrate())
         b:close()
      end)

      it("rename the records of our migrations from before lua-NNN, when we ran first (over which the Rust broker skipped its 006-008)", function()
         local dsn = helper.fresh_dsn("interop_legacy_lua_first")
         -- what an earlier version of this module did: 001-008 and 010, recorded bare
         for _, f in ipairs({ "001_initial_schema", "002_results", "003_indexes", "004_queues_and_leases", "005_queue_pauses",
                              "006_recurring_runs", "007_worker_heartbeats", "008_admin", "010_ack_and_claim" }) do
            apply_earlier(dsn, f)
         end
         local b = assert(celers.connect(dsn))
         assert.same({}, rust.migrate(dsn)) -- what it did then: 006-008 looked done
         -- rows written then (as that version wrote them): ours allowed max_retries retries after
         -- the first attempt
         local ours, dead = rust.uuid4(), rust.uuid4()
         helper.query(dsn, "INSERT INTO celers_tasks (id, task_name, payload, payload_type, priority, max_retries, queue, "
            .. "metadata) VALUES (" .. q(ours) .. ", 'old', 'p', 'raw', 0, 3, 'default', '{\"m\":1}'); "
            .. "INSERT INTO celers_dead_letter_queue (id, task_id, task_name, payload, retry_count, queue, max_retries) "
            .. "VALUES (UUID(), " .. q(dead) .. ", 'old_dead', 'p', 2, 'graveyard', 1)")
         local theirs = rust.enqueue(dsn, { name = "old", payload = "p", max_retries = 3 })
         local later = {}
         for _, v in ipairs(our_versions()) do
            if v > "lua-010_~" then later[#later + 1] = v end
         end
         assert.same(later, b:migrate())
         assert.same({ "lua-004", "lua-005", "lua-006", "lua-007", "lua-008", "lua-010" }, (function()
            local out = {}
            for _, r in ipairs(helper.query(dsn, "SELECT version FROM celers_migrations WHERE version < 'lua-011' "
               .. "AND version LIKE 'lua-%' ORDER BY version")) do out[#out + 1] = r[1] end
            return out
         end)())
         -- the same number of attempts as before: one more for ours, the Rust row as it was; once
         assert.equal("4", one(dsn, "SELECT max_retries FROM celers_tasks WHERE id = " .. q(ours)))
         assert.equal("3", one(dsn, "SELECT max_retries FROM celers_tasks WHERE id = " .. q(theirs)))
         assert.equal("2", one(dsn, "SELECT max_retries FROM celers_dead_letter_queue WHERE task_id = " .. q(dead)))
         assert.same({}, b:migrate())
         assert.equal("4", one(dsn, "SELECT max_retries FROM celers_tasks WHERE id = " .. q(ours)))
         -- now the Rust broker gets its own 006-008
         assert.same({ "006", "007", "008" }, rust.migrate(dsn))
         b:close()
      end)

      it("apply what was skipped when the Rust broker ran first and an earlier version of ours then skipped 006-008", function()
         local dsn = helper.fresh_dsn("interop_legacy_rust_first")
         rust.migrate(dsn)
         -- an earlier version of this module: ran its 004, 005 and 010, recorded bare
         for _, f in ipairs({ "004_queues_and_leases", "005_queue_pauses", "010_ack_and_claim" }) do
            apply_earlier(dsn, f)
         end
         local b = assert(celers.connect(dsn))
         local expected = {}
         for _, v in ipairs(without_shared(our_versions())) do
            if not v:match("^lua%-00[45]_") and not v:match("^lua%-010_") then expected[#expected + 1] = v end
         end
         assert.same(expected, b:migrate())
         -- what 008 adds is there now: results of ours store and read
         assert(b:store_result("00000000-0000-4000-8000-000000000001", { task_name = "t", result = { ok = true } }))
         assert.same({ ok = true }, assert(b:get_result("00000000-0000-4000-8000-000000000001")).result)
         assert.same({}, rust.migrate(dsn))
         b:close()
      end)

      it("give both origins the same shared columns: types, collations, defaults, no TIMESTAMP", function()
         local a, ba = database("rust", "shape")
         local l, bl = database("lua", "shape")
         assert.same(shape(l), shape(a))
         for _, d in ipairs({ a, l }) do
            assert.equal("0", one(d, "SELECT COUNT(*) FROM information_schema.columns WHERE table_schema = DATABASE() "
               .. "AND table_name IN ('" .. table.concat(SHARED, "','") .. "', 'celers_migrations') AND data_type = 'timestamp'"))
            -- no Rust CHECK on state: we also use other states
            assert.equal("0", one(d, "SELECT COUNT(*) FROM information_schema.table_constraints WHERE table_schema = DATABASE() "
               .. "AND table_name = 'celers_tasks' AND constraint_name = 'chk_state'"))
         end
         ba:close()
         bl:close()
      end)
   end)

   for _, origin in ipairs({ "rust", "lua" }) do
      describe("on a database the " .. origin .. " broker created,", function()
         local dsn, b

         before_each(function()
            dsn, b = database(origin, "rows")
         end)

         after_each(function()
            b:close()
         end)

         it("the Rust driver sees no BINARY flag on any column it reads as text", function()
            local id = assert(b:enqueue("t", "x"))
            local checks = {
               { rust.CLAIM_SELECT, { "id", "task_name" }, { "payload" } },
               { (rust.GET_TASK:gsub("%?", q(id))), { "id", "task_name", "state", "worker_id", "error_message" } },
               { rust.LIST_DLQ, { "id", "task_id", "task_name", "error_message" } },
               { "SELECT task_id, task_name, payload, metadata FROM celers_dead_letter_queue WHERE id = ''",
                 { "task_id", "task_name" }, { "payload" } },
               { (rust.GET_RESULT:gsub("%?", q(id))), { "task_id", "task_name", "state", "error_message" }, { "result" } },
               { "SELECT version, name, applied_at FROM celers_migrations ORDER BY applied_at ASC", { "version", "name" } },
               { "SELECT task_id, state, `timestamp`, worker_id, message FROM celers_task_history",
                 { "task_id", "state", "worker_id", "message" } },
            }
            for _, c in ipairs(checks) do
               local cols = rust.columns(dsn, c[1])
               for _, name in ipairs(c[2]) do
                  assert.is_table(cols[name], name .. " in " .. c[1])
                  assert.is_nil(cols[name].flags.BINARY, name .. " is flagged BINARY in: " .. c[1])
                  assert.matches("^utf8mb4_", cols[name].collation)
               end
               for _, name in ipairs(c[3] or {}) do
                  assert.is_true(cols[name].flags.BINARY, name .. " (bytes) in " .. c[1])
               end
            end
            -- its times decode as DateTime<Utc>: DATETIME now, not TIMESTAMP
            local cols = rust.columns(dsn, rust.GET_TASK:gsub("%?", q(id)))
            for _, name in ipairs({ "created_at", "scheduled_at", "started_at", "completed_at" }) do
               assert.equal("DATETIME", cols[name].type)
            end
         end)

         it("a Rust task lands in the queue its metadata names and reads exactly here", function()
            local payload = "\0\1 raw \255 bytes\n"
            local id = rust.enqueue(dsn, { name = "send_email", payload = payload, queue = "emails", priority = 5,
                                           max_retries = 2, timeout_secs = 30 })
            assert.same({ "emails", "raw", "30" },
               row(dsn, "SELECT queue, payload_type, timeout_seconds FROM celers_tasks WHERE id = " .. q(id)))
            assert.is_nil(b:dequeue()) -- not in our default queue
            local emails = b:with_queue("emails")
            local t = assert(emails:dequeue())
            assert.equal(id, t.id)
            assert.equal("send_email", t.name)
            assert.equal(payload, t.payload)
            assert.equal(payload, t.body)
            assert.equal("raw", t.payload_type)
            assert.same({ 5, 2, 1, "emails" }, { t.priority, t.max_retries, t.retry_count, t.queue })
            assert.equal("emails", t.metadata.queue)
            assert.is_string(t.metadata.enqueued_at)
            -- its timeout_secs is the lease
            assert.equal("30", one(dsn, "SELECT ROUND(TIMESTAMPDIFF(MICROSECOND, started_at, lease_expires_at) / 1000000) "
               .. "FROM celers_tasks WHERE id = " .. q(id)))
            assert.is_true(emails:ack(t))
            local seen = rust.get_task(dsn, id)
            assert.same({ "completed", 5, 2, 1 }, { seen.state, seen.priority, seen.max_retries, seen.retry_count })
            assert.is_not.equal("NULL", seen.completed_at)
         end)

         it("a task of ours reads exactly there, and its ack lands here", function()
            local reports = b:with_queue("reports")
            local id = assert(reports:enqueue("build_report", { n = 1, s = "x" }, { priority = 3, max_retries = 4,
                                                                                    metadata = { who = "lua" } }))
            local body = one(dsn, "SELECT payload FROM celers_tasks WHERE id = " .. q(id))
            local c = assert(rust.claim(dsn, "rust-worker-1", 3), "the Rust claim found nothing")
            assert.same({ id, "build_report", body, 0 }, { c.id, c.name, c.payload, c.retry_count })
            local seen = rust.get_task(dsn, id)
            assert.same({ "processing", 3, 4, 1, "rust-worker-1" },
               { seen.state, seen.priority, seen.max_retries, seen.retry_count, seen.worker_id })
            rust.ack(dsn, id)
            local t = assert(reports:get_task(id))
            assert.same({ "completed", 1, "reports" }, { t.state, t.retry_count, t.queue })
            assert.same({ n = 1, s = "x" }, t.payload)
            assert.is_number(t.completed_at)
         end)

         it("max_retries means the same number of attempts to both brokers, whichever runs each attempt", function()
            local function due(id) helper.query(dsn, "UPDATE celers_tasks SET scheduled_at = NOW() - INTERVAL 1 SECOND WHERE id = " .. q(id)) end
            -- ours, max_retries 3: attempts by us, by the Rust broker, by us; then the DLQ
            local id = assert(b:enqueue("flaky", "p", { max_retries = 3 }))
            local t = assert(b:dequeue())
            assert.same({ true, "retry" }, { b:reject(t, { error = "one", delay = 0 }) })
            due(id)
            assert.equal(id, assert(rust.claim(dsn, nil, 3)).id)
            assert.equal("retry", rust.reject(dsn, id, true))
            due(id)
            t = assert(b:dequeue())
            assert.equal(3, t.retry_count)
            assert.same({ true, "dead_letter" }, { b:reject(t, { error = "three", delay = 0 }) })
            assert.same({ "3", "3", "three" }, row(dsn, "SELECT retry_count, max_retries, error_message FROM celers_dead_letter_queue "
               .. "WHERE task_id = " .. q(id)))
            -- the Rust broker's, max_retries 2: attempts by us, then by the Rust broker, which dead-letters it
            local rid = rust.enqueue(dsn, { name = "flaky", payload = "r", max_retries = 2 })
            t = assert(b:dequeue())
            assert.equal(rid, t.id)
            assert.same({ true, "retry" }, { b:reject(t, { error = "one", delay = 0 }) })
            due(rid)
            assert.equal(rid, assert(rust.claim(dsn, nil, 3)).id)
            assert.equal("dead_letter", rust.reject(dsn, rid, true))
            assert.same({ "2", "2" }, row(dsn, "SELECT retry_count, max_retries FROM celers_dead_letter_queue WHERE task_id = " .. q(rid)))
            -- max_retries 0 still gets its one attempt, on either side
            id = assert(b:enqueue("once", "p", { max_retries = 0 }))
            t = assert(b:dequeue())
            assert.equal(id, t.id)
            assert.same({ true, "dead_letter" }, { b:reject(t, { delay = 0 }) })
            rid = rust.enqueue(dsn, { name = "once", payload = "r", max_retries = 0 })
            assert.equal(rid, assert(rust.claim(dsn, nil, 3)).id)
            assert.equal("dead_letter", rust.reject(dsn, rid, true))
            assert.equal("0", one(dsn, "SELECT COUNT(*) FROM celers_tasks"))
            assert.equal("4", one(dsn, "SELECT COUNT(*) FROM celers_dead_letter_queue"))
         end)

         it("move_to_dlq and the Rust requeue keep the queue, the payload type and the metadata of our tasks", function()
            local reports = b:with_queue("reports")
            local id = assert(reports:enqueue("report", { rows = { 1, 2, 3 } }, { priority = 7, max_retries = 1,
                                                                                metadata = { who = "lua" },
                                                                                timeout = 3600, idempotency_key = "rk" }))
            local plain = assert(reports:enqueue("report", "plain", { max_retries = 1 })) -- no metadata at all
            local created = one(dsn, "SELECT created_at FROM celers_tasks WHERE id = " .. q(id))
            for _ = 1, 2 do
               local c = assert(rust.claim(dsn, nil, 3))
               assert.equal("dead_letter", rust.reject(dsn, c.id, true))
            end
            assert.same({ "reports", "json", "7", "1", "1", created, "report" },
               row(dsn, "SELECT queue, payload_type, priority, max_retries, retry_count, created_at, task_name "
                  .. "FROM celers_dead_letter_queue WHERE task_id = " .. q(id)))
            -- and every other column of the task (lua-011), as the broker's own dead-lettering does
            assert.same({ "3600", "rk", "processing" },
               row(dsn, "SELECT timeout_seconds, idempotency_key, state FROM celers_dead_letter_queue WHERE task_id = " .. q(id)))
            -- listed here with the metadata as it was, and there
            local listed = {}
            for _, e in ipairs(reports:list_dlq()) do listed[e.task_id] = e end
            assert.same({ who = "lua" }, listed[id].metadata)
            assert.is_nil(listed[plain].metadata)
            assert.same({ rows = { 1, 2, 3 } }, listed[id].payload)
            -- a row inserted again as it is (a restored backup) keeps what it carries
            helper.query(dsn, "CREATE TEMPORARY TABLE copied AS SELECT * FROM celers_dead_letter_queue WHERE task_id = "
               .. q(plain) .. "; UPDATE copied SET id = UUID(), task_id = 'copy'; "
               .. "INSERT INTO celers_dead_letter_queue SELECT * FROM copied")
            listed = {}
            for _, e in ipairs(reports:list_dlq()) do listed[e.task_id] = e end
            assert.is_nil(listed.copy.metadata)
            helper.query(dsn, "DELETE FROM celers_dead_letter_queue WHERE task_id = 'copy'")
            local there = {}
            for _, e in ipairs(rust.list_dlq(dsn)) do there[e.task_id] = e end
            assert.equal("report", there[id].task_name)
            assert.equal(1, there[id].retry_count)
            -- requeued by the Rust broker: back in reports, JSON again, metadata as it was
            local new = rust.requeue_from_dlq(dsn, there[id].id)
            local new_plain = rust.requeue_from_dlq(dsn, there[plain].id)
            assert.same({ "reports", "json", "0", "3", '{"who":"lua"}' },
               row(dsn, "SELECT queue, payload_type, priority, max_retries, JSON_COMPACT(metadata) FROM celers_tasks WHERE id = " .. q(new)))
            assert.same({ "reports", "raw", "NULL" },
               row(dsn, "SELECT queue, payload_type, metadata FROM celers_tasks WHERE id = " .. q(new_plain)))
            local got = {}
            for _ = 1, 2 do
               local t = assert(reports:dequeue())
               got[t.id] = t
            end
            assert.same({ rows = { 1, 2, 3 } }, got[new].payload)
            assert.same({ who = "lua" }, got[new].metadata)
            assert.equal("plain", got[new_plain].payload)
            assert.is_nil(got[new_plain].metadata)
         end)

         it("a Rust task dead-lettered here comes back to its queue when either broker requeues it", function()
            local id = rust.enqueue(dsn, { name = "mail", payload = "m", queue = "emails", max_retries = 1 })
            local emails = b:with_queue("emails")
            local t = assert(emails:dequeue())
            assert.same({ true, "dead_letter" }, { emails:reject(t, { error = "bounced", delay = 0 }) })
            local e = assert(emails:list_dlq()[1])
            assert.same({ id, "bounced", "emails" }, { e.task_id, e.error, e.metadata.queue })
            local new = rust.requeue_from_dlq(dsn, e.id)
            assert.same({ "emails", "raw" }, row(dsn, "SELECT queue, payload_type FROM celers_tasks WHERE id = " .. q(new)))
            t = assert(emails:dequeue())
            assert.same({ new, "m" }, { t.id, t.payload })
            assert.equal("emails", t.metadata.queue)
            assert.is_nil(t.metadata._celers_origin)
         end)

         it("reject to failed, statistics and a Rust claim's missing lease read the same on both sides", function()
            for i = 1, 4 do assert(b:enqueue("s" .. i, "p")) end
            rust.enqueue(dsn, { name = "r", payload = "p" })
            local failed = assert(rust.claim(dsn, nil, 3))
            assert.equal("failed", rust.reject(dsn, failed.id, false))
            assert.equal("failed", assert(b:get_task(failed.id)).state)
            local done = assert(b:dequeue())
            assert.is_true(b:ack(done))
            local held = assert(rust.claim(dsn, "crashed-worker", 3))
            assert(b:cancel((b:dequeue()).id) ~= nil)
            local s, r = assert(b:get_statistics()), rust.statistics(dsn)
            for _, k in ipairs({ "pending", "processing", "completed", "failed", "cancelled", "dlq", "total" }) do
               assert.equal(r[k], s[k], k)
            end
            assert.same({ 1, 1, 1, 1, 1 }, { r.pending, r.processing, r.completed, r.failed, r.cancelled })
            -- the Rust claim set no lease: the lease sweep leaves it; a threshold recovers it
            assert.equal("NULL", one(dsn, "SELECT lease_expires_at FROM celers_tasks WHERE id = " .. q(held.id)))
            assert.same({ 0, 0 }, { b:recover_expired() })
            assert.same({ 0, 0 }, { b:recover_stuck_tasks(600) })
            helper.query(dsn, "UPDATE celers_tasks SET started_at = NOW() - INTERVAL 11 MINUTE WHERE id = " .. q(held.id))
            assert.same({ 1, 0 }, { b:recover_stuck_tasks(600) })
            assert.equal("pending", assert(b:get_task(held.id)).state)
         end)

         it("results: one row per task, written and read by both", function()
            local id = assert(b:enqueue("r", "p"))
            assert(b:store_result(id, { task_name = "r", result = { v = 1 } }))
            assert(b:store_result(id, { task_name = "r", result = { v = 2 } }))
            local r = row(dsn, (rust.GET_RESULT:gsub("%?", q(id))))
            assert.same({ id, "r", "success", '{"v":2}' }, { r[1], r[2], r[3], r[4] })
            local rid = rust.uuid4()
            rust.store_result(dsn, rid, "rust_task", "first", "pending")
            rust.store_result(dsn, rid, "rust_task", "second", "success")
            assert.equal("1", one(dsn, "SELECT COUNT(*) FROM celers_results WHERE task_id = " .. q(rid)))
            local got = assert(b:get_result(rid))
            assert.same({ "second", "success", "rust_task" }, { got.result, got.status or got.state, got.task_name })
         end)

         it("history holds both brokers' rows: archive_completed_tasks works, a Rust history insert too", function()
            local id = assert(b:enqueue("h", "p"))
            local t = assert(b:dequeue())
            assert(b:update_error_message(id, "warned"))
            assert.is_true(b:ack(t))
            assert.equal(1, b:archive_completed_tasks(0))
            rust.record_history(dsn, id, "completed", "rust-worker", "from rust")
            local rows = helper.query(dsn, "SELECT task_name, state, queue, message, `timestamp` IS NOT NULL "
               .. "FROM celers_task_history WHERE task_id = " .. q(id) .. " ORDER BY id")
            assert.same({ { "h", "completed", "default", "warned", "1" }, { "", "completed", "default", "from rust", "1" } }, rows)
         end)

         it("times past 2038 store and read on both sides", function()
            local at = 7258118400 -- 2200-01-01
            local id = assert(b:enqueue_at("later", "p", at))
            assert.equal("2200-01-01 00:00:00.000000", rust.get_task(dsn, id).scheduled_at)
            assert.equal(at, assert(b:get_task(id)).scheduled_at)
         end)

         it("ack_and_dequeue (the stored procedure) runs on the shared collations", function()
            rust.enqueue(dsn, { name = "a", payload = "1" })
            rust.enqueue(dsn, { name = "b", payload = "2" })
            local t = assert(b:dequeue())
            local acked, nxt = b:ack_and_dequeue(t)
            assert.is_true(acked)
            assert.is_table(nxt)
            assert.equal("completed", assert(b:get_task(t.id)).state)
            assert.equal("processing", assert(b:get_task(nxt.id)).state)
         end)

         it("integers serde writes in full survive a pass through this broker", function()
            local big = "9223372036854775807"
            local id = rust.enqueue(dsn, { name = "big", payload = '{"n":' .. big .. '}', max_retries = 2, metadata_extra = '"n":' .. big })
            local t = assert(b:dequeue())
            assert.equal(id, t.id)
            assert.equal('{"n":' .. big .. '}', t.body) -- its payload is bytes to us: exact
            if math.type then
               assert.equal(math.tointeger(big), t.metadata.n)
               assert.equal(2, t.metadata.max_retries)
               assert.equal("integer", math.type(t.metadata.max_retries))
            else
               -- LuaJIT holds no such integer: the metadata comes as its exact JSON text
               assert.is_string(t.metadata)
               assert.matches('"n":' .. big .. '}', t.metadata, 1, true)
            end
            assert.is_true(b:ack(t))
            assert.equal(big, one(dsn, "SELECT JSON_EXTRACT(metadata, '$.n') FROM celers_tasks WHERE id = " .. q(id)))
         end)
      end)
   end
end)
