-- Misuse raises naming the argument; runtime failures return nil and an error table;
-- luacheck: max line length 160
-- a closed broker raises.
local helper = require "spec.helper"
local celers = require "celers"

local function raised(f, text)
   local ok, msg = pcall(f)
   assert.is_false(ok, "expected an error: " .. tostring(text))
   return tostring(msg)
end

local function assert_raises(f, text)
   local msg = raised(f, text)
   assert.is_truthy(msg:find(text, 1, true), "expected '" .. text .. "' in: " .. msg)
end

describe("errors", function()
   local dsn, broker

   local function count()
      return tonumber(helper.scalar(dsn, "SELECT COUNT(*) FROM celers_tasks"))
   end

   setup(function()
      dsn = helper.fresh_dsn("spec_errors")
      broker = assert(celers.connect(dsn))
      assert(broker:migrate())
   end)

   teardown(function()
      if broker then broker:close() end
   end)

   before_each(function()
      helper.query(dsn, "DELETE FROM celers_tasks")
   end)

   it("enqueue arguments of the wrong type raise naming the argument and store nothing", function()
      assert_raises(function() broker:enqueue(42, "x") end,
         "celers: enqueue: 'name' must be a string (got number)")
      assert_raises(function() broker:enqueue(nil, "x") end, "'name' must be a string (got nil)")
      assert_raises(function() broker:enqueue("", "x") end, "'name' must not be empty")
      assert_raises(function() broker:enqueue("t", true) end,
         "celers: enqueue: 'payload' must be a string or a table (got boolean)")
      assert_raises(function() broker:enqueue("t", nil) end, "'payload'")
      assert_raises(function() broker:enqueue("t", "x", "opts") end, "'opts' must be a table (got string)")
      assert_raises(function() broker:enqueue("t", "x", { prio = 1 }) end, "unknown option 'prio'")
      assert_raises(function() broker:enqueue("t", "x", { priority = "high" }) end, "'priority' must be an integer")
      assert_raises(function() broker:enqueue("t", "x", { priority = 1.5 }) end, "'priority' must be an integer")
      assert_raises(function() broker:enqueue("t", "x", { max_retries = -1 }) end, "'max_retries' must not be negative")
      assert_raises(function() broker:enqueue("t", "x", { timeout = 0 }) end, "'timeout' must be positive")
      assert_raises(function() broker:enqueue("t", "x", { delay = -5 }) end, "'delay' must not be negative")
      assert_raises(function() broker:enqueue("t", "x", { eta = "soon" }) end, "'eta' must be a number")
      assert_raises(function() broker:enqueue("t", "x", { id = "short" }) end, "'id'")
      assert_raises(function() broker:enqueue("t", "x", { queue = 5 }) end, "'queue' must be a string")
      assert_raises(function() broker:enqueue("t", "x", { metadata = 5 }) end, "'metadata'")
      assert_raises(function() broker:enqueue("t", "x", { idempotency_key = {} }) end, "'idempotency_key'")
      assert_raises(function() broker:enqueue("t", { f = function() end }) end, "'payload'")
      assert_raises(function() broker:enqueue_at("t", "x", "tomorrow") end,
         "celers: enqueue_at: 'unix_time' must be a number (got string)")
      assert_raises(function() broker:enqueue_after("t", "x", -1) end,
         "celers: enqueue_after: 'seconds' must not be negative")
      assert_raises(function() broker:enqueue_after("t", "x", nil) end, "'seconds'")
      assert_raises(function() broker:enqueue_batch("list") end, "celers: enqueue_batch: 'tasks'")
      assert_raises(function() broker:enqueue_batch({ "x" }) end, "'tasks[1]' must be a table (got string)")
      assert_raises(function() broker:enqueue_batch({}, { skip = true }) end, "unknown option 'skip'")
      assert_raises(function() broker:enqueue_batch({}, { skip_existing = 1 }) end, "'skip_existing' must be a boolean")
      assert.equal(0, count())
   end)

   it("settle and lookup arguments of the wrong type raise naming the argument", function()
      assert_raises(function() broker:ack(42) end, "celers: ack: 'task' must be a task table or an id string (got number)")
      assert_raises(function() broker:ack() end, "celers: ack: 'task'")
      assert_raises(function() broker:ack({}) end, "celers: ack: 'task' has no id")
      assert_raises(function() broker:ack_batch("x") end, "celers: ack_batch: 'tasks'")
      assert_raises(function() broker:ack_batch({ 5 }) end, "'task'")
      assert_raises(function() broker:reject(true) end, "celers: reject: 'task'")
      assert_raises(function() broker:reject("id", { delay = -1 }) end, "'delay' must not be negative")
      assert_raises(function() broker:reject("id", { requeue = "yes" }) end, "'requeue' must be a boolean")
      assert_raises(function() broker:reject("id", { error = 5 }) end, "'error' must be a string")
      assert_raises(function() broker:reject("id", { why = "x" }) end, "unknown option 'why'")
      assert_raises(function() broker:retry("id", "soon") end, "celers: retry: 'delay' must be a number")
      assert_raises(function() broker:retry("id", 1, 5) end, "celers: retry: 'error' must be a string")
      assert_raises(function() broker:touch("id", -1) end, "celers: touch: 'seconds' must not be negative")
      assert_raises(function() broker:cancel(5) end, "celers: cancel: 'task'")
      assert_raises(function() broker:get_task(5) end, "celers: get_task: 'id' must be a string (got number)")
      assert_raises(function() broker:with_queue(5) end, "celers: with_queue: 'queue' must be a string")
      assert_raises(function() broker:with_queue("") end, "'queue' must not be empty")
      assert_raises(function() broker:dequeue("w") end, "celers: dequeue: 'opts' must be a table (got string)")
      assert_raises(function() broker.enqueue("t", "x") end, "'self' must be a broker")
      assert_raises(function() broker.ack({}, "x") end, "'self' must be a broker")
   end)

   it("a runtime failure returns nil and an error table with code, message, errno, sqlstate, retryable", function()
      local id = assert(broker:enqueue("t", "x"))
      local r1, err = broker:enqueue("t", "y", { id = id })
      assert.is_nil(r1)
      assert.is_table(err)
      assert.equal("duplicate", err.code)
      assert.equal(1062, err.errno)
      assert.equal("23000", err.sqlstate)
      assert.is_false(err.retryable)
      assert.is_string(err.message)
      assert.equal("celers: duplicate: " .. err.message, tostring(err))
      assert.equal(1, count())
   end)

   it("get_task of an unknown id returns nil", function()
      assert.is_nil(broker:get_task("0190a0b0-0000-7000-8000-00000000abcd"))
   end)

   describe("a closed broker", function()
      it("raises on every operation, naming it", function()
         local b = assert(celers.connect(dsn))
         local q = b:with_queue("other")
         assert.is_true(b:close())
         assert.is_true(b:close()) -- closing twice is harmless
         assert.matches("closed", tostring(b))
         local calls = {
            enqueue = function(x) return x:enqueue("t", "x") end,
            enqueue_at = function(x) return x:enqueue_at("t", "x", 0) end,
            enqueue_after = function(x) return x:enqueue_after("t", "x", 1) end,
            enqueue_batch = function(x) return x:enqueue_batch({}) end,
            dequeue = function(x) return x:dequeue() end,
            dequeue_with_worker_id = function(x) return x:dequeue_with_worker_id("w") end,
            dequeue_batch = function(x) return x:dequeue_batch(1) end,
            ack = function(x) return x:ack("id") end,
            ack_batch = function(x) return x:ack_batch({}) end,
            reject = function(x) return x:reject("id") end,
            retry = function(x) return x:retry("id") end,
            touch = function(x) return x:touch("id") end,
            cancel = function(x) return x:cancel("id") end,
            pause = function(x) return x:pause() end,
            resume = function(x) return x:resume() end,
            is_paused = function(x) return x:is_paused() end,
            queue_size = function(x) return x:queue_size() end,
            get_task = function(x) return x:get_task("id") end,
            with_queue = function(x) return x:with_queue("q") end,
            migrate = function(x) return x:migrate() end,
            list_migrations = function(x) return x:list_migrations() end,
            recover_expired = function(x) return x:recover_expired() end,
         }
         for name, call in pairs(calls) do
            assert_raises(function() call(b) end, "celers: " .. name .. ": the broker is closed")
            -- a broker sharing the connection is closed too
            assert_raises(function() call(q) end, "celers: " .. name .. ": the broker is closed")
         end
         assert.equal(0, count())
         assert.equal("default", b:queue())
      end)

      it("does not affect another connection", function()
         local a = assert(celers.connect(dsn))
         local b = assert(celers.connect(dsn))
         a:close()
         assert.is_string((b:enqueue("t", "x")))
         assert.equal(1, count())
         b:close()
      end)
   end)
end)
