-- A server restart is survived by reconnecting (only with the private server of scripts/db.sh,
-- luacheck: max line length 160
-- since it restarts that server).
local helper = require "spec.helper"
local celers = require "celers"
local core = require "celers.core"

local sqls = helper.sql_string

-- child: enqueue, dequeue and ack in a loop until the file arg[2] exists; runtime errors are
-- counted (and must be retryable), not fatal.
local LOOPER = [[
local celers = require "celers"
local core = require "celers.core"
local dsn, stop = arg[1], arg[2]
local b = assert(celers.connect({ dsn = dsn, queue = "loop", worker_id = "looper" }))
local errors, bad, done = 0, {}, 0
local deadline = core.monotonic() + 120
while not io.open(stop, "r") and core.monotonic() < deadline do
   local id, err = b:enqueue("loop", "x")
   local task
   if id then task, err = b:dequeue() end
   if task then
      local ok, e = b:ack(task)
      if ok then done = done + 1 elseif e then err = e end
   end
   if err then
      errors = errors + 1
      if not err.retryable then bad[#bad + 1] = tostring(err) end
      core.sleep(0.05)
   end
end
print(("DONE done=%d errors=%d"):format(done, errors))
for _, e in ipairs(bad) do print("NOT RETRYABLE " .. e) end
]]

describe("reconnect", function()
   local dsn

   local function completed(queue)
      return tonumber(helper.scalar(dsn, "SELECT COUNT(*) FROM celers_tasks WHERE state = 'completed' AND queue = " .. sqls(queue)))
   end

   setup(function()
      if not helper.private_server() then return end
      dsn = helper.fresh_dsn("spec_reconnect")
      local b = assert(celers.connect(dsn))
      assert(b:migrate())
      b:close()
   end)

   before_each(function()
      if helper.private_server() then helper.query(dsn, "DELETE FROM celers_tasks") end
   end)

   it("after a restart the next read, dequeue, enqueue and settle work on the same broker", function()
      if not helper.private_server() then
         pending("needs the private server (CELERS_TEST_PRIVATE=1)")
         return
      end
      local b = assert(celers.connect({ dsn = dsn, reconnect_tries = 10 }))
      local other = b:with_queue("other")
      local ids = {}
      for i = 1, 3 do ids[i] = assert(b:enqueue("r", tostring(i))) end
      assert(other:enqueue("o", "x"))
      local held = assert(b:dequeue())
      assert.equal(ids[1], held.id)

      helper.db_restart()

      -- a read repeats itself over the new link
      local size, err = b:queue_size()
      assert.is_nil(err)
      assert.equal(2, size)
      local t2 = assert(b:dequeue())
      assert.equal(ids[2], t2.id)
      local id4 = assert(b:enqueue("r", "4"))
      assert.equal("pending", helper.scalar(dsn, "SELECT state FROM celers_tasks WHERE id = " .. sqls(id4)))
      -- the task claimed before the restart is still ours to settle
      assert.is_true(b:ack(held))
      assert.is_true(b:ack(t2))
      assert.equal("completed", helper.scalar(dsn, "SELECT state FROM celers_tasks WHERE id = " .. sqls(held.id)))
      -- a broker sharing the connection works too
      assert.equal(1, other:queue_size())
      assert.equal("o", assert(other:dequeue()).name)
      assert.equal(2, completed("default"))
      b:close()
   end)

   it("the first call after a restart either works or fails with a retryable error, then works", function()
      if not helper.private_server() then
         pending("needs the private server (CELERS_TEST_PRIVATE=1)")
         return
      end
      local b = assert(celers.connect({ dsn = dsn, reconnect_tries = 10 }))
      assert(b:enqueue("a", "x"))
      local task = assert(b:dequeue())
      helper.db_restart()
      -- ack may already have taken effect when the link drops, so it is not repeated by itself
      local ok, err = b:ack(task)
      if ok == nil then
         assert.is_true(err.retryable, tostring(err))
         ok = b:ack(task)
      end
      assert.is_true(ok)
      assert.equal("completed", helper.scalar(dsn, "SELECT state FROM celers_tasks WHERE id = " .. sqls(task.id)))
      b:close()
   end)

   it("a worker process running through a restart keeps going", function()
      if not helper.private_server() then
         pending("needs the private server (CELERS_TEST_PRIVATE=1)")
         return
      end
      local stop = os.tmpname()
      os.remove(stop)
      local path = os.tmpname()
      local f = assert(io.open(path, "w"))
      f:write(LOOPER)
      f:close()
      local pipe = assert(io.popen(helper.lua_cmd() .. " " .. helper.shell_quote(path) .. " "
         .. helper.shell_quote(dsn) .. " " .. helper.shell_quote(stop) .. " 2>&1", "r"))
      local function wait_for(n)
         local deadline = core.monotonic() + 60
         while completed("loop") < n do
            if core.monotonic() > deadline then break end
            core.sleep(0.1)
         end
         return completed("loop")
      end
      local before = wait_for(20)
      assert.is_true(before >= 20, "the worker did not get going")
      helper.db_restart()
      local after_restart = completed("loop")
      local later = wait_for(after_restart + 20)
      assert(io.open(stop, "w")):close()
      local out = pipe:read("*a")
      pipe:close()
      os.remove(stop)
      os.remove(path)
      assert.is_true(later >= after_restart + 20, "no progress after the restart: " .. out)
      assert.matches("DONE done=%d+ errors=%d+", out)
      assert.is_nil(out:find("NOT RETRYABLE", 1, true), out)
      -- every completed task went through the whole cycle exactly once
      assert.equal("0", helper.scalar(dsn, "SELECT COUNT(*) FROM celers_tasks WHERE queue = 'loop' AND state = 'completed' AND retry_count <> 1"))
   end)
end)
