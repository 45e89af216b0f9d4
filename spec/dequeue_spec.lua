-- dequeue, dequeue_with_worker_id, dequeue_batch: order, leases, and concurrent claims.
-- luacheck: max line length 160
local helper = require "spec.helper"
local celers = require "celers"
local core = require "celers.core"

local sqls = helper.sql_string

-- Runs a Lua script in a child process with the same interpreter and paths; returns a
-- handle whose finish() gives the child's output (stdout and stderr).
local function spawn(source, args)
   local path = os.tmpname()
   local f = assert(io.open(path, "w"))
   f:write(source)
   f:close()
   local quoted = {}
   for i, a in ipairs(args or {}) do quoted[i] = helper.shell_quote(a) end
   local pipe = assert(io.popen(helper.lua_cmd() .. " " .. helper.shell_quote(path) .. " "
      .. table.concat(quoted, " ") .. " 2>&1", "r"))
   return {
      finish = function()
         local out = pipe:read("*a")
         pipe:close()
         os.remove(path)
         return out
      end,
   }
end

-- A child that waits for the file `go`, then claims (alternating dequeue and dequeue_batch)
-- until nothing is ready, acking each task; prints "CLAIM <id> <claim_id>" per task.
local CLAIMER = [[
local celers = require "celers"
local core = require "celers.core"
local dsn, worker, go = arg[1], arg[2], arg[3]
local b = assert(celers.connect(dsn))
local deadline = core.monotonic() + 60
while not io.open(go, "r") do
   if core.monotonic() > deadline then error("no go file") end
   core.sleep(0.005)
end
local round = 0
while true do
   round = round + 1
   local tasks
   if round % 2 == 1 then
      local t, err = b:dequeue({ worker_id = worker })
      if err then error(tostring(err)) end
      tasks = { t }
   else
      tasks = assert(b:dequeue_batch(round % 5 + 1, { worker_id = worker }))
   end
   if #tasks == 0 and round % 2 == 0 then break end
   for _, t in ipairs(tasks) do
      io.write("CLAIM ", t.id, " ", t.claim_id, "\n")
      if not b:ack(t) then io.write("ACKFAIL ", t.id, "\n") end
   end
end
io.write("DONE\n")
]]

describe("dequeue", function()
   local dsn, broker

   local function db_now()
      return tonumber(helper.scalar(dsn, "SELECT UNIX_TIMESTAMP(NOW(6))"))
   end

   setup(function()
      dsn = helper.fresh_dsn("spec_dequeue")
      broker = assert(celers.connect(dsn))
      assert(broker:migrate())
   end)

   teardown(function()
      if broker then broker:close() end
   end)

   before_each(function()
      helper.query(dsn, "DELETE FROM celers_tasks; DELETE FROM celers_queue_pauses")
   end)

   it("returns nil when nothing is ready", function()
      assert.is_nil(broker:dequeue())
      assert.same({}, broker:dequeue_batch(10))
   end)

   it("claims: processing, started_at, worker_id, retry_count + 1, a claim id and a lease", function()
      local id = assert(broker:enqueue("job", "payload", { priority = 2, max_retries = 4, metadata = { a = 1 } }))
      local task = assert(broker:dequeue({ worker_id = "w-1", lease = 120 }))
      assert.equal(id, task.id)
      assert.equal("job", task.name)
      assert.equal("payload", task.payload)
      assert.equal("payload", task.body)
      assert.equal(2, task.priority)
      assert.equal(1, task.retry_count)
      assert.equal(4, task.max_retries)
      assert.equal("default", task.queue)
      assert.equal("processing", task.state)
      assert.equal("w-1", task.worker_id)
      assert.same({ a = 1 }, task.metadata)
      assert.is_string(task.claim_id)
      assert.is_number(task.created_at)
      assert.is_number(task.scheduled_at)
      assert.is_number(task.started_at)
      assert.is_true(math.abs(task.lease_expires_at - task.started_at - 120) < 0.01)
      local r = helper.query(dsn, "SELECT state, worker_id, retry_count, claim_id, "
         .. "UNIX_TIMESTAMP(started_at), UNIX_TIMESTAMP(lease_expires_at) "
         .. "FROM celers_tasks WHERE id = " .. sqls(id))[1]
      assert.same({ "processing", "w-1", "1", task.claim_id }, { r[1], r[2], r[3], r[4] })
      assert.is_true(math.abs(tonumber(r[5]) - task.started_at) < 0.001)
      assert.is_true(math.abs(tonumber(r[6]) - task.lease_expires_at) < 0.001)
      assert.is_true(math.abs(tonumber(r[5]) - db_now()) < 30)
      -- claimed once: nothing more to hand out
      assert.is_nil(broker:dequeue())
   end)

   it("uses the broker's worker id by default and dequeue_with_worker_id's when given", function()
      assert(broker:enqueue("a", "1"))
      assert(broker:enqueue("b", "2"))
      local t1 = assert(broker:dequeue())
      local t2 = assert(broker:dequeue_with_worker_id("named-worker"))
      assert.equal(broker:worker_id(), t1.worker_id)
      assert.equal("named-worker", t2.worker_id)
      assert.equal(broker:worker_id(), helper.scalar(dsn, "SELECT worker_id FROM celers_tasks WHERE id = " .. sqls(t1.id)))
      assert.equal("named-worker", helper.scalar(dsn, "SELECT worker_id FROM celers_tasks WHERE id = " .. sqls(t2.id)))
   end)

   it("a per-task timeout sets that task's lease", function()
      assert(broker:enqueue("t", "x", { timeout = 7 }))
      local task = assert(broker:dequeue({ lease = 500 }))
      assert.equal(7, task.timeout)
      assert.is_true(math.abs(task.lease_expires_at - task.started_at - 7) < 0.01)
      local secs = tonumber(helper.scalar(dsn, "SELECT TIMESTAMPDIFF(MICROSECOND, started_at, lease_expires_at) / 1e6 FROM celers_tasks"))
      assert.is_true(math.abs(secs - 7) < 0.01)
   end)

   it("hands out higher priority first, then earlier scheduled_at, then lower id (FIFO)", function()
      local now = math.floor(db_now())
      -- same priority and the same scheduled_at: id order
      local same = {}
      for i = 1, 5 do same[i] = assert(broker:enqueue_at("same", tostring(i), now - 50, { priority = 1 })) end
      local older = assert(broker:enqueue_at("older", "o", now - 100, { priority = 1 }))
      local high = assert(broker:enqueue("high", "h", { priority = 10 }))
      local low = assert(broker:enqueue_at("low", "l", now - 1000, { priority = -5 }))
      local mid = {}
      for i = 1, 3 do mid[i] = assert(broker:enqueue("mid", tostring(i), { priority = 5 })) end
      local expected = { high, mid[1], mid[2], mid[3], older, same[1], same[2], same[3], same[4], same[5], low }
      local got = {}
      local first = broker:dequeue_batch(3)
      for _, t in ipairs(first) do got[#got + 1] = t.id end
      while true do
         local t = broker:dequeue()
         if not t then break end
         got[#got + 1] = t.id
      end
      assert.same(expected, got)
   end)

   it("does not hand out delayed tasks before their time, then does", function()
      local later = assert(broker:enqueue_after("later", "x", 1.5))
      local far = assert(broker:enqueue_after("far", "x", 3600))
      assert.is_nil(broker:dequeue())
      assert.same({}, broker:dequeue_batch(10))
      assert.equal("scheduled", helper.scalar(dsn, "SELECT state FROM celers_tasks WHERE id = " .. sqls(later)))
      -- wait (on the database clock) until the first is due, with slack
      local due = tonumber(helper.scalar(dsn, "SELECT UNIX_TIMESTAMP(scheduled_at) FROM celers_tasks WHERE id = " .. sqls(later)))
      while db_now() < due + 0.5 do core.sleep(0.2) end
      local task = assert(broker:dequeue())
      assert.equal(later, task.id)
      assert.is_nil(broker:dequeue())
      assert.equal("scheduled", helper.scalar(dsn, "SELECT state FROM celers_tasks WHERE id = " .. sqls(far)))
   end)

   it("dequeue_batch claims up to n in order, under one claim id", function()
      local ids = {}
      for i = 1, 7 do ids[i] = assert(broker:enqueue("b", tostring(i))) end
      local tasks = broker:dequeue_batch(5, { worker_id = "batcher" })
      assert.equal(5, #tasks)
      for i = 1, 5 do
         assert.equal(ids[i], tasks[i].id)
         assert.equal(tostring(i), tasks[i].payload)
         assert.equal(tasks[1].claim_id, tasks[i].claim_id)
      end
      assert.equal("5", helper.scalar(dsn, "SELECT COUNT(*) FROM celers_tasks WHERE state = 'processing' "
         .. "AND worker_id = 'batcher' AND claim_id = " .. sqls(tasks[1].claim_id)))
      local rest = broker:dequeue_batch(5)
      assert.equal(2, #rest)
      assert.same({}, broker:dequeue_batch(5))
      assert.same({}, broker:dequeue_batch(0))
      assert.equal("0", helper.scalar(dsn, "SELECT COUNT(*) FROM celers_tasks WHERE state = 'pending'"))
   end)

   it("two connections claiming alternately never get the same task", function()
      local other = assert(celers.connect(dsn))
      local n = 300
      local list = {}
      for i = 1, n do list[i] = { name = "c", payload = tostring(i) } end
      assert(broker:enqueue_batch(list))
      local seen, held = {}, { {}, {} }
      local conns = { broker, other }
      local round, total = 0, 0
      while true do
         round = round + 1
         local k = round % 2 + 1
         local got = conns[k]:dequeue_batch(round % 7 + 1, { worker_id = "conn" .. k })
         for _, t in ipairs(got) do
            assert.is_nil(seen[t.id], "task handed out twice: " .. t.id)
            seen[t.id] = k
            total = total + 1
            held[k][#held[k] + 1] = t
         end
         -- settle some of what each holds, so claims and acks interleave
         if #held[k] >= 4 then
            assert.equal(#held[k], conns[k]:ack_batch(held[k]))
            held[k] = {}
         end
         if #got == 0 and round > 2 then break end
      end
      for k = 1, 2 do
         if #held[k] > 0 then assert.equal(#held[k], conns[k]:ack_batch(held[k])) end
      end
      assert.equal(n, total)
      assert.equal(tostring(n), helper.scalar(dsn, "SELECT COUNT(*) FROM celers_tasks WHERE state = 'completed' AND retry_count = 1"))
      for _, r in ipairs(helper.query(dsn, "SELECT id, worker_id FROM celers_tasks")) do
         assert.equal("conn" .. seen[r[1]], r[2])
      end
      other:close()
   end)

   it("three processes claiming at once never get the same task", function()
      local n = 900
      local list = {}
      for i = 1, n do list[i] = { name = "p", payload = tostring(i) } end
      local ids = assert(broker:enqueue_batch(list))
      local go = os.tmpname()
      os.remove(go)
      local children = {}
      for k = 1, 3 do children[k] = spawn(CLAIMER, { dsn, "proc" .. k, go }) end
      core.sleep(0.3)
      assert(io.open(go, "w")):close()
      local owner, per = {}, {}
      for k = 1, 3 do
         local out = children[k].finish()
         assert.matches("DONE\n$", out)
         assert.is_nil(out:find("ACKFAIL", 1, true), out)
         per[k] = 0
         for id in out:gmatch("CLAIM (%S+) %S+\n") do
            assert.is_nil(owner[id], "task handed out twice: " .. id)
            owner[id] = k
            per[k] = per[k] + 1
         end
      end
      os.remove(go)
      for _, id in ipairs(ids) do assert.is_not_nil(owner[id], "never claimed: " .. id) end
      assert.equal(n, per[1] + per[2] + per[3])
      -- the database agrees: each completed once, by the process that reported it
      assert.equal(tostring(n), helper.scalar(dsn, "SELECT COUNT(*) FROM celers_tasks WHERE state = 'completed' AND retry_count = 1"))
      for _, r in ipairs(helper.query(dsn, "SELECT id, worker_id FROM celers_tasks")) do
         assert.equal("proc" .. owner[r[1]], r[2])
      end
   end)

   it("raises on bad options", function()
      assert.error_matches(function() broker:dequeue({ lease = -1 }) end, "'lease' must be positive")
      assert.error_matches(function() broker:dequeue({ wrker_id = "x" }) end, "unknown option 'wrker_id'")
      assert.error_matches(function() broker:dequeue_batch(-1) end, "'n' must not be negative")
      assert.error_matches(function() broker:dequeue_batch("5") end, "'n' must be an integer")
      assert.error_matches(function() broker:dequeue_with_worker_id(5) end, "'worker_id' must be a string")
   end)
end)
