-- queues: isolation, with_queue, queue_size, and pause/resume persisted across connections
-- luacheck: max line length 160
-- and processes.
local helper = require "spec.helper"
local celers = require "celers"

local sqls = helper.sql_string

-- Runs `source` in a child process (same interpreter and paths) and returns its output.
local function run_child(source, ...)
   local path = os.tmpname()
   local f = assert(io.open(path, "w"))
   f:write(source)
   f:close()
   local args = {}
   for i, a in ipairs({ ... }) do args[i] = helper.shell_quote(a) end
   local pipe = assert(io.popen(helper.lua_cmd() .. " " .. helper.shell_quote(path) .. " "
      .. table.concat(args, " ") .. " 2>&1", "r"))
   local out = pipe:read("*a")
   pipe:close()
   os.remove(path)
   return out
end

-- child: connect to arg[1] with queue arg[2], do arg[3] (pause | resume | dequeue | paused)
local CHILD = [[
local celers = require "celers"
local b = assert(celers.connect({ dsn = arg[1], queue = arg[2] }))
local what = arg[3]
if what == "pause" then assert(b:pause()); print("PAUSED")
elseif what == "resume" then assert(b:resume()); print("RESUMED")
elseif what == "paused" then print("IS_PAUSED " .. tostring(b:is_paused()))
elseif what == "dequeue" then
   local t, err = b:dequeue({ worker_id = "child" })
   if err then error(tostring(err)) end
   print(t and ("GOT " .. t.id) or "NONE")
end
b:close()
]]

describe("queues", function()
   local dsn, broker

   local function count(where)
      return tonumber(helper.scalar(dsn, "SELECT COUNT(*) FROM celers_tasks"
         .. (where and (" WHERE " .. where) or "")))
   end

   setup(function()
      dsn = helper.fresh_dsn("spec_queues")
      broker = assert(celers.connect(dsn))
      assert(broker:migrate())
   end)

   teardown(function()
      if broker then broker:close() end
   end)

   before_each(function()
      helper.query(dsn, "DELETE FROM celers_tasks; DELETE FROM celers_queue_pauses")
   end)

   it("the default queue is 'default'; ?queue= and the queue option choose another", function()
      assert.equal("default", broker:queue())
      local b1 = assert(celers.connect(dsn .. (dsn:find("?", 1, true) and "&" or "?") .. "queue=emails"))
      local b2 = assert(celers.connect({ dsn = dsn, queue = "reports" }))
      assert.equal("emails", b1:queue())
      assert.equal("reports", b2:queue())
      local id1 = assert(b1:enqueue("a", "x"))
      local id2 = assert(b2:enqueue("b", "x"))
      assert.equal("emails", helper.scalar(dsn, "SELECT queue FROM celers_tasks WHERE id = " .. sqls(id1)))
      assert.equal("reports", helper.scalar(dsn, "SELECT queue FROM celers_tasks WHERE id = " .. sqls(id2)))
      b1:close()
      b2:close()
   end)

   it("are isolated: a broker only sees and claims its own queue's tasks", function()
      local emails = broker:with_queue("emails")
      local reports = broker:with_queue("reports")
      assert.equal("emails", emails:queue())
      local d = assert(broker:enqueue("d", "x", { priority = 1 }))
      local e = {}
      for i = 1, 3 do e[i] = assert(emails:enqueue("e", tostring(i))) end
      local r = assert(broker:enqueue("r", "x", { queue = "reports", priority = 100 }))
      assert.equal(1, broker:queue_size())
      assert.equal(3, emails:queue_size())
      assert.equal(1, reports:queue_size())
      assert.equal(0, broker:with_queue("nobody"):queue_size())
      local t = assert(broker:dequeue())
      assert.equal(d, t.id)
      assert.is_nil(broker:dequeue())
      local batch = emails:dequeue_batch(10)
      assert.equal(3, #batch)
      for i = 1, 3 do
         assert.equal(e[i], batch[i].id)
         assert.equal("emails", batch[i].queue)
      end
      assert.equal(r, assert(reports:dequeue()).id)
      assert.is_nil(broker:with_queue("nobody"):dequeue())
      assert.equal(0, broker:queue_size() + emails:queue_size() + reports:queue_size())
      assert.equal(5, count("state = 'processing'"))
   end)

   it("queue_size counts the pending tasks of the queue, also those not yet due", function()
      assert(broker:enqueue("a", "x"))
      assert(broker:enqueue_after("b", "x", 3600))
      assert(broker:enqueue("c", "x", { queue = "elsewhere" }))
      assert.equal(2, broker:queue_size())
      assert(broker:dequeue())
      assert.equal(1, broker:queue_size())
      assert.equal(tostring(broker:queue_size()), helper.scalar(dsn,
         "SELECT COUNT(*) FROM celers_tasks WHERE queue = 'default' AND state IN ('pending', 'scheduled')"))
   end)

   it("with_queue shares the connection, and closing one closes them all", function()
      local b = assert(celers.connect(dsn))
      local q = b:with_queue("other")
      assert(q:enqueue("x", "y"))
      b:close()
      assert.error_matches(function() q:enqueue("x", "y") end, "closed")
      assert.equal(1, count("queue = 'other'"))
   end)

   describe("pause", function()
      it("is persisted in celers_queue_pauses and stops dequeue until resume", function()
         local id = assert(broker:enqueue("p", "x"))
         assert.is_false(broker:is_paused())
         assert.is_true(broker:pause())
         assert.is_true(broker:pause()) -- twice is the same as once
         assert.same({ { "default" } }, helper.query(dsn, "SELECT queue FROM celers_queue_pauses"))
         assert.is_true(broker:is_paused())
         assert.is_nil(broker:dequeue())
         assert.same({}, broker:dequeue_batch(5))
         assert.equal("pending", helper.scalar(dsn, "SELECT state FROM celers_tasks WHERE id = " .. sqls(id)))
         -- enqueue still works while paused
         assert(broker:enqueue("p", "y"))
         assert.equal(2, broker:queue_size())
         assert.is_true(broker:resume())
         assert.equal("0", helper.scalar(dsn, "SELECT COUNT(*) FROM celers_queue_pauses"))
         assert.is_false(broker:is_paused())
         assert.equal(id, assert(broker:dequeue()).id)
      end)

      it("stops only that queue", function()
         local other = broker:with_queue("other")
         assert(broker:enqueue("a", "x"))
         local o = assert(other:enqueue("b", "x"))
         assert(broker:pause())
         assert.is_false(other:is_paused())
         assert.is_nil(broker:dequeue())
         assert.equal(o, assert(other:dequeue()).id)
         assert(broker:resume())
      end)

      it("made on one connection stops dequeue on another", function()
         local c1 = assert(celers.connect(dsn))
         local c2 = assert(celers.connect(dsn))
         local id = assert(c1:enqueue("p", "x"))
         assert(c1:pause())
         assert.is_true(c2:is_paused())
         assert.is_nil(c2:dequeue())
         assert.same({}, c2:dequeue_batch(3))
         assert(c2:resume())
         assert.is_false(c1:is_paused())
         assert.equal(id, assert(c1:dequeue()).id)
         c1:close()
         c2:close()
      end)

      it("made in another process stops dequeue here, and the reverse", function()
         local id = assert(broker:enqueue("p", "x"))
         assert.matches("PAUSED", run_child(CHILD, dsn, "default", "pause"))
         assert.is_true(broker:is_paused())
         assert.is_nil(broker:dequeue())
         assert.matches("RESUMED", run_child(CHILD, dsn, "default", "resume"))
         assert.is_false(broker:is_paused())
         -- paused here: the other process gets nothing
         assert(broker:pause())
         assert.matches("IS_PAUSED true", run_child(CHILD, dsn, "default", "paused"))
         assert.matches("NONE", run_child(CHILD, dsn, "default", "dequeue"))
         assert.equal("pending", helper.scalar(dsn, "SELECT state FROM celers_tasks WHERE id = " .. sqls(id)))
         -- a paused queue does not stop another queue in the other process
         local other = assert(broker:enqueue("p", "x", { queue = "other" }))
         assert.equal("GOT " .. other .. "\n", run_child(CHILD, dsn, "other", "dequeue"))
         assert(broker:resume())
         assert.equal("GOT " .. id .. "\n", run_child(CHILD, dsn, "default", "dequeue"))
         assert.equal("child", helper.scalar(dsn, "SELECT worker_id FROM celers_tasks WHERE id = " .. sqls(id)))
      end)
   end)

   it("queue names are data: quotes and SQL in a name are stored as they are", function()
      local name = "q'; DROP TABLE celers_tasks; --"
      local q = broker:with_queue(name)
      local id = assert(q:enqueue("x", "y"))
      assert.equal(name, helper.scalar(dsn, "SELECT queue FROM celers_tasks WHERE id = " .. sqls(id)))
      assert(q:pause())
      assert.is_true(q:is_paused())
      assert.is_nil(q:dequeue())
      assert(q:resume())
      assert.equal(id, assert(q:dequeue()).id)
   end)
end)
