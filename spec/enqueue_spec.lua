-- enqueue, enqueue_at, enqueue_after, enqueue_batch: what each leaves in celers_tasks.
-- luacheck: max line length 160
local helper = require "spec.helper"
local celers = require "celers"

local sqls = helper.sql_string

local function hex(s)
   return (s:gsub(".", function(c) return ("%02X"):format(c:byte()) end))
end

describe("enqueue", function()
   local dsn, broker

   local function count(where)
      return tonumber(helper.scalar(dsn, "SELECT COUNT(*) FROM celers_tasks"
         .. (where and (" WHERE " .. where) or "")))
   end

   local function row(id, columns)
      return helper.query(dsn, ("SELECT %s FROM celers_tasks WHERE id = %s"):format(columns, sqls(id)))[1]
   end

   local function db_now()
      return tonumber(helper.scalar(dsn, "SELECT UNIX_TIMESTAMP(NOW(6))"))
   end

   setup(function()
      dsn = helper.fresh_dsn("spec_enqueue")
      broker = assert(celers.connect(dsn))
      assert(broker:migrate())
   end)

   teardown(function()
      if broker then broker:close() end
   end)

   before_each(function()
      helper.query(dsn, "DELETE FROM celers_tasks; DELETE FROM celers_queue_pauses")
   end)

   it("stores a pending row with the defaults and returns a time-ordered id", function()
      local id, created = broker:enqueue("send_email", "hello")
      assert.is_string(id)
      assert.is_true(created)
      assert.matches("^%x%x%x%x%x%x%x%x%-%x%x%x%x%-7%x%x%x%-[89ab]%x%x%x%-%x+$", id)
      local r = row(id, "task_name, payload, state, priority, retry_count, max_retries, queue, "
         .. "payload_type, worker_id IS NULL, started_at IS NULL, metadata IS NULL, "
         .. "scheduled_at <= NOW(6), TIMESTAMPDIFF(SECOND, created_at, NOW(6)) < 60")
      assert.same({ "send_email", "hello", "pending", "0", "0", "3", "default", "raw",
                    "1", "1", "1", "1", "1" }, r)
      assert.equal(1, count())
   end)

   it("gives later tasks larger ids", function()
      local ids = {}
      for i = 1, 50 do ids[i] = assert(broker:enqueue("t", tostring(i))) end
      for i = 2, 50 do assert.is_true(ids[i] > ids[i - 1]) end
      assert.equal(50, count())
   end)

   it("stores every option", function()
      local id = assert(broker:enqueue("report", "p", {
         id = "0190a0b0-0000-7000-8000-000000000001", priority = 7, max_retries = 9,
         timeout = 42.5, queue = "reports", metadata = { owner = "ann", tags = { "a", "b" } },
      }))
      assert.equal("0190a0b0-0000-7000-8000-000000000001", id)
      local r = row(id, "priority, max_retries, timeout_seconds, queue, "
         .. "JSON_VALUE(metadata, '$.owner'), JSON_LENGTH(metadata, '$.tags')")
      assert.same({ "7", "9", "42.5", "reports", "ann", "2" }, r)
   end)

   it("refuses an explicit id that exists, changing nothing", function()
      local id = assert(broker:enqueue("a", "first", { id = "0190a0b0-0000-7000-8000-0000000000aa" }))
      local again, err = broker:enqueue("b", "second", { id = id })
      assert.is_nil(again)
      assert.equal("duplicate", err.code)
      assert.same({ "a", "first" }, row(id, "task_name, payload"))
      assert.equal(1, count())
   end)

   it("round-trips string payloads with binary bytes exactly", function()
      local bytes = {}
      for b = 0, 255 do bytes[#bytes + 1] = string.char(b) end
      local payload = "\0lead\0" .. table.concat(bytes) .. "\xC3\x28\xFF\xFE tail\0"
      local id = assert(broker:enqueue("bin", payload))
      assert.equal(hex(payload), helper.scalar(dsn, "SELECT HEX(payload) FROM celers_tasks WHERE id = " .. sqls(id)))
      assert.equal(tostring(#payload), helper.scalar(dsn, "SELECT LENGTH(payload) FROM celers_tasks"))
      local task = assert(broker:dequeue())
      assert.equal(id, task.id)
      assert.equal(payload, task.payload)
      assert.equal(payload, task.body)
      assert.equal("raw", task.payload_type)
   end)

   it("keeps a string that looks like JSON a string", function()
      assert(broker:enqueue("s", '{"a":1}'))
      local task = assert(broker:dequeue())
      assert.equal('{"a":1}', task.payload)
   end)

   it("stores an empty string payload", function()
      local id = assert(broker:enqueue("empty", ""))
      assert.equal("0", helper.scalar(dsn, "SELECT LENGTH(payload) FROM celers_tasks WHERE id = " .. sqls(id)))
      assert.equal("", assert(broker:dequeue()).payload)
   end)

   it("stores table payloads as JSON and gives back tables", function()
      local payload = { to = "bob@example.com", n = 3, nested = { list = { 1, 2, 3 }, ok = true },
                        text = "h\195\169llo" }
      local id = assert(broker:enqueue("json", payload))
      local r = row(id, "payload_type, JSON_VALID(payload), JSON_VALUE(payload, '$.to'), "
         .. "JSON_VALUE(payload, '$.n'), JSON_LENGTH(payload, '$.nested.list')")
      assert.same({ "json", "1", "bob@example.com", "3", "3" }, r)
      local task = assert(broker:dequeue())
      assert.same(payload, task.payload)
      assert.same(payload, celers.json.decode(task.body))
   end)

   it("round-trips metadata given as a table or as a JSON string", function()
      local a = assert(broker:enqueue("m", "x", { metadata = { trace = "t-1", attempt = { 1, 2 } } }))
      local b = assert(broker:enqueue("m", "y", { metadata = '{"k": "v"}' }))
      assert.equal("t-1", helper.scalar(dsn, "SELECT JSON_VALUE(metadata, '$.trace') FROM celers_tasks WHERE id = " .. sqls(a)))
      assert.equal("v", helper.scalar(dsn, "SELECT JSON_VALUE(metadata, '$.k') FROM celers_tasks WHERE id = " .. sqls(b)))
      local t1, t2 = assert(broker:dequeue()), assert(broker:dequeue())
      assert.same({ trace = "t-1", attempt = { 1, 2 } }, t1.metadata)
      assert.same({ k = "v" }, t2.metadata)
      assert.same(t1.metadata, broker:get_task(a).metadata)
   end)

   it("refuses metadata that is not valid JSON and stores nothing", function()
      local id, err = broker:enqueue("m", "x", { metadata = "{not json" })
      assert.is_nil(id)
      assert.equal("json", err.code)
      assert.equal(0, count())
   end)

   describe("idempotency keys", function()
      it("return the first task's id and keep one row", function()
         local id1, created1 = broker:enqueue("charge", "first", { idempotency_key = "order-17" })
         local id2, created2 = broker:enqueue("charge", "second", { idempotency_key = "order-17" })
         assert.is_true(created1)
         assert.is_false(created2)
         assert.equal(id1, id2)
         assert.equal(1, count("idempotency_key = 'order-17'"))
         assert.same({ "first", "order-17" }, row(id1, "payload, idempotency_key"))
      end)

      it("still return the first id after the task was processed", function()
         local id1 = assert(broker:enqueue("charge", "first", { idempotency_key = "k2" }))
         assert.is_true(broker:ack(assert(broker:dequeue())))
         local id2, created = broker:enqueue("charge", "again", { idempotency_key = "k2" })
         assert.equal(id1, id2)
         assert.is_false(created)
         assert.equal(1, count())
      end)

      it("are scoped to a queue", function()
         local a = assert(broker:enqueue("t", "x", { idempotency_key = "same" }))
         local b = assert(broker:enqueue("t", "x", { idempotency_key = "same", queue = "other" }))
         assert.are_not.equal(a, b)
         assert.equal(2, count("idempotency_key = 'same'"))
      end)

      it("resolve inside a batch to the existing id", function()
         local first = assert(broker:enqueue("t", "x", { idempotency_key = "b1" }))
         local ids, inserted = broker:enqueue_batch({
            { name = "t", payload = "new" },
            { name = "t", payload = "dup", idempotency_key = "b1" },
         })
         assert.equal(1, inserted)
         assert.equal(first, ids[2])
         assert.equal(2, count())
         assert.equal("x", helper.scalar(dsn, "SELECT payload FROM celers_tasks WHERE idempotency_key = 'b1'"))
      end)

      it("do not hide a repeated id elsewhere in the same batch", function()
         local id = celers.core.uuid7()
         local ids, err = broker:enqueue_batch({
            { name = "t", payload = "a", id = id },
            { name = "t", payload = "b", id = id },
            { name = "t", payload = "c", idempotency_key = "b2" },
         })
         assert.is_nil(ids)
         assert.equal("duplicate", err.code)
         assert.equal(0, count())
      end)
   end)

   describe("scheduling", function()
      it("enqueue_at with a past time is ready at once", function()
         local now = db_now()
         local id = assert(broker:enqueue_at("late", "x", now - 3600))
         local sched = tonumber(helper.scalar(dsn, "SELECT UNIX_TIMESTAMP(scheduled_at) FROM celers_tasks WHERE id = " .. sqls(id)))
         assert.is_true(math.abs(sched - (now - 3600)) < 1)
         local task = broker:dequeue()
         assert.is_table(task)
         assert.equal(id, task.id)
      end)

      it("enqueue_at with a future time stores that time and is not handed out", function()
         local at = math.floor(db_now()) + 3600
         local id = assert(broker:enqueue_at("later", "x", at))
         assert.equal(at, tonumber(helper.scalar(dsn,
            "SELECT UNIX_TIMESTAMP(scheduled_at) FROM celers_tasks WHERE id = " .. sqls(id))))
         assert.is_nil(broker:dequeue())
         assert.equal("scheduled", row(id, "state")[1])
      end)

      it("enqueue_after pushes scheduled_at out by the delay (database clock)", function()
         local id = assert(broker:enqueue_after("later", "x", 600))
         local diff = tonumber(helper.scalar(dsn, "SELECT TIMESTAMPDIFF(SECOND, NOW(6), scheduled_at) FROM celers_tasks WHERE id = " .. sqls(id)))
         assert.is_true(diff > 590 and diff <= 600, "scheduled " .. diff .. " s ahead")
         assert.is_nil(broker:dequeue())
      end)

      it("the delay and eta options do the same on enqueue", function()
         local now = math.floor(db_now())
         local a = assert(broker:enqueue("d", "x", { delay = 300 }))
         local b = assert(broker:enqueue("e", "x", { eta = now + 900 }))
         local c = assert(broker:enqueue("p", "x", { eta = now - 10 }))
         local da = tonumber(helper.scalar(dsn, "SELECT TIMESTAMPDIFF(SECOND, NOW(6), scheduled_at) FROM celers_tasks WHERE id = " .. sqls(a)))
         assert.is_true(da > 290 and da <= 300)
         assert.equal(now + 900, tonumber(row(b, "UNIX_TIMESTAMP(scheduled_at)")[1]))
         local task = assert(broker:dequeue())
         assert.equal(c, task.id)
         assert.is_nil(broker:dequeue())
      end)
   end)

   describe("enqueue_batch", function()
      it("stores every task with its own options, in one go", function()
         local ids, inserted = broker:enqueue_batch({
            { name = "a", payload = "one" },
            { name = "b", payload = { x = 1 }, priority = 5, queue = "q2", max_retries = 1 },
            { name = "c", payload = "three", delay = 600, metadata = { m = true },
              id = "0190a0b0-0000-7000-8000-0000000000bb" },
         })
         assert.equal(3, inserted)
         assert.equal(3, #ids)
         assert.equal("0190a0b0-0000-7000-8000-0000000000bb", ids[3])
         assert.same({ "a", "one", "0", "default", "raw" }, row(ids[1], "task_name, payload, priority, queue, payload_type"))
         assert.same({ "b", "5", "q2", "1", "json", "1" }, row(ids[2], "task_name, priority, queue, max_retries, payload_type, JSON_VALUE(payload, '$.x')"))
         assert.same({ "c", "1", "true" }, row(ids[3], "task_name, scheduled_at > NOW(6), JSON_EXTRACT(metadata, '$.m')"))
         assert.equal(3, count())
      end)

      it("stores nothing when one task has invalid JSON metadata", function()
         local ids, err = broker:enqueue_batch({
            { name = "a", payload = "1" },
            { name = "b", payload = "2" },
            { name = "c", payload = "3", metadata = "{broken" },
         })
         assert.is_nil(ids)
         assert.equal("json", err.code)
         assert.equal(0, count())
      end)

      it("stores nothing when two tasks share an explicit id", function()
         local id = "0190a0b0-0000-7000-8000-0000000000cc"
         local ids, err = broker:enqueue_batch({
            { name = "a", payload = "1", id = id },
            { name = "b", payload = "2" },
            { name = "c", payload = "3", id = id },
         })
         assert.is_nil(ids)
         assert.equal("duplicate", err.code)
         assert.equal(0, count())
      end)

      it("stores nothing when a task's id already exists", function()
         local existing = assert(broker:enqueue("old", "x"))
         local ids, err = broker:enqueue_batch({
            { name = "a", payload = "1" },
            { name = "b", payload = "2", id = existing },
         })
         assert.is_nil(ids)
         assert.equal("duplicate", err.code)
         assert.equal(1, count())
         assert.equal("old", row(existing, "task_name")[1])
      end)

      it("with skip_existing leaves existing ids alone and stores the rest", function()
         local existing = assert(broker:enqueue("old", "x"))
         local ids, inserted = broker:enqueue_batch({
            { name = "a", payload = "1" },
            { name = "b", payload = "2", id = existing },
         }, { skip_existing = true })
         assert.equal(1, inserted)
         assert.equal(existing, ids[2])
         assert.equal(2, count())
         assert.equal("old", row(existing, "task_name")[1])
      end)

      it("is all-or-nothing across several statements (a bad task at the end of 1200)", function()
         local list = {}
         for i = 1, 1200 do list[i] = { name = "bulk", payload = "p" .. i } end
         list[1200].id = "0190a0b0-0000-7000-8000-0000000000dd"
         list[3].id = list[1200].id
         local ids, err = broker:enqueue_batch(list)
         assert.is_nil(ids)
         assert.equal("duplicate", err.code)
         assert.equal(0, count())
         list[1200].id = nil
         local ok_ids, inserted = broker:enqueue_batch(list)
         assert.equal(1200, inserted)
         assert.equal(1200, #ok_ids)
         assert.equal(1200, count("task_name = 'bulk'"))
      end)

      it("raises on a malformed task and stores nothing", function()
         assert.error_matches(function()
            broker:enqueue_batch({ { name = "a", payload = "1" }, { name = 5, payload = "2" } })
         end, "celers: enqueue_batch: 'name' must be a string %(got number%)")
         assert.has_error(function()
            broker:enqueue_batch({ { name = "a", payload = "1" }, { name = "b", payload = "2", bogus = 1 } })
         end, "celers: enqueue_batch: unknown option 'bogus'")
         assert.equal(0, count())
      end)

      it("accepts an empty list", function()
         local ids, inserted = broker:enqueue_batch({})
         assert.same({}, ids)
         assert.equal(0, inserted)
      end)
   end)

   describe("payloads over the server's packet limit", function()
      local limit

      setup(function()
         limit = tonumber(helper.scalar(dsn, "SELECT @@max_allowed_packet"))
      end)

      local function check_refused(size)
         local id, err = broker:enqueue("big", string.rep("x", size))
         assert.is_nil(id)
         assert.is_table(err)
         assert.equal("too_large", err.code, tostring(err))
         assert.matches("^celers: too_large: ", tostring(err))
         assert.is_false(err.retryable)
         assert.equal(0, count())
         -- the broker is still usable afterwards
         assert.is_string((broker:enqueue("small", "y")))
         assert.equal(1, count())
      end

      it("a payload of exactly max_allowed_packet bytes returns too_large and stores nothing", function()
         check_refused(limit)
      end)

      it("a payload of 17 MB returns too_large and stores nothing", function()
         check_refused(17 * 1024 * 1024)
      end)

      it("a batch holding one oversized payload returns too_large and stores nothing", function()
         local ids, err = broker:enqueue_batch({
            { name = "a", payload = "small" },
            { name = "b", payload = string.rep("z", limit + 1024) },
         })
         assert.is_nil(ids)
         assert.equal("too_large", err.code, tostring(err))
         assert.equal(0, count())
      end)

      it("a payload just under the limit is stored whole", function()
         local size = math.min(limit, 16 * 1024 * 1024) - 64 * 1024
         local id = assert(broker:enqueue("big", string.rep("y", size)))
         assert.equal(tostring(size), row(id, "LENGTH(payload)")[1])
         local task = assert(broker:dequeue())
         assert.equal(size, #task.payload)
      end)
   end)
end)
