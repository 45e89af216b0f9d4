-- Workflows across processes: a worker killed (SIGKILL) at each crash point of a member's
-- finish resumes to exactly one callback; a chord's callback is enqueued and run exactly
-- once when its last two members finish at the same moment in two worker processes.
-- luacheck: max line length 160
local helper = require "spec.helper"
local proc = require "spec.proc_helper"
local celers = require "celers"
local core = require "celers.core"
local workflow = require "celers.workflow"

local FIXTURE = helper.root .. "/spec/fixtures/workflow_child.lua"

describe("workflows across processes", function()
   local dsn, broker
   local q = helper.sql_string

   local function count(tbl, where)
      return tonumber(helper.scalar(dsn, "SELECT COUNT(*) FROM " .. tbl .. (where and (" WHERE " .. where) or "")))
   end

   local function wf_state(wid)
      return helper.scalar(dsn, "SELECT state FROM celers_flows WHERE id = " .. q(wid))
   end

   local function lines(path)
      local s = proc.read_file(path) or ""
      local out = {}
      for l in s:gmatch("[^\n]+") do out[#out + 1] = l end
      return out
   end

   -- start the fixture in `mode`, wait until it reached its crash point, SIGKILL it
   local function crash(mode)
      local mark = os.tmpname()
      local h = proc.spawn(FIXTURE, { dsn, mode }, { MARK = mark })
      local pid = assert(proc.pid(h))
      assert.is_truthy(proc.wait_for(function() return #lines(mark) > 0 end, 30), proc.output(h))
      proc.kill(pid, "KILL")
      local code = proc.wait(h, 30)
      assert.is_not.equal(0, code)
      local got = lines(mark)
      os.remove(mark)
      return got
   end

   -- an in-process worker that runs until the workflow finished and no task is left (leases
   -- of killed workers expire meanwhile); returns the runs per task name
   local function finish(wid, extra)
      local runs = { m = 0, cb = 0 }
      local opts = {
         broker = broker, log = false, report_every = false, workflow_resume = false, batch_size = 1,
         handlers = {
            m = function(p) runs.m = runs.m + 1 return tonumber(p) * 10 end,
            cb = function(_, ctx) runs.cb = runs.cb + 1 runs.results = ctx.results return true end,
         },
      }
      for k, v in pairs(extra or {}) do opts[k] = v end
      local w = assert(celers.worker.new(opts))
      local deadline = core.monotonic() + 30
      repeat
         if opts.workflow_resume then w:_resume_workflows(false) end -- as w:run does
         if (w:step(1) or 0) == 0 then core.sleep(0.05) end
      until (wf_state(wid) ~= "running" and #w.done == 0
             and count("celers_tasks", "state IN ('scheduled', 'pending', 'processing')") == 0)
         or core.monotonic() > deadline
      w:flush()
      return runs
   end

   setup(function()
      dsn = helper.fresh_dsn("spec_workflow_crash")
      broker = assert(celers.connect({ dsn = dsn, recover_interval = 0 }))
      assert(broker:migrate())
   end)

   teardown(function()
      if broker then broker:close() end
   end)

   before_each(function()
      helper.query(dsn, "DELETE FROM celers_tasks; DELETE FROM celers_dead_letter_queue; DELETE FROM celers_results; "
         .. "DELETE FROM celers_flows; DELETE FROM celers_flow_nodes; DELETE FROM celers_flow_edges")
   end)

   local function chord()
      return assert(workflow.chord({ { "m", "1", { timeout = 1 } }, { "m", "2", { timeout = 1 } } }, { "cb", "" }):start(broker))
   end

   it("(a) killed inside a member's handler: the member runs again, the callback once", function()
      local wid = chord()
      assert.same({ "m 1" }, crash("in_handler"))
      assert.equal("processing", helper.scalar(dsn, "SELECT state FROM celers_tasks WHERE payload = '1'"))
      local runs = finish(wid)
      assert.equal(2, runs.m) -- member 2, and member 1 again once its lease expired
      assert.equal(1, runs.cb)
      assert.same({ 10, 20 }, runs.results)
      assert.equal(1, count("celers_tasks", "task_name = 'cb'"))
      assert.equal(3, count("celers_tasks", "state = 'completed'"))
      assert.equal("succeeded", wf_state(wid))
   end)

   it("(a') killed inside a member's last attempt: dead-lettered by the lease sweep, resumed as failed", function()
      local wid = assert(workflow.chord({ { "m", "1", { timeout = 1, max_retries = 1 } }, { "m", "2" } }, { "cb", "" }):start(broker))
      assert.same({ "m 1" }, crash("in_handler"))
      local runs = finish(wid, { workflow_resume = 0.2 })
      assert.equal(1, runs.m) -- member 2 only: member 1 had no attempt left
      assert.equal(0, runs.cb)
      assert.equal(1, count("celers_dead_letter_queue", "payload = '1'"))
      assert.equal("failed", helper.scalar(dsn, "SELECT state FROM celers_flow_nodes WHERE node = 1"))
      assert.equal("cancelled", helper.scalar(dsn, "SELECT state FROM celers_flow_nodes WHERE node = 3"))
      assert.equal(1, count("celers_tasks", "task_name = 'cb' AND state = 'cancelled'"))
      assert.equal("failed", wf_state(wid))
   end)

   it("(b) killed after the last member advanced and before its ack: the callback is enqueued once", function()
      local wid = chord()
      local got = crash("after_advance")
      assert.equal(1, #got)
      -- the advance landed: callback enqueued, the member still held by the dead worker
      assert.equal(1, count("celers_tasks", "task_name = 'cb' AND state = 'pending'"))
      assert.equal("processing", helper.scalar(dsn, "SELECT state FROM celers_tasks WHERE payload = '2'"))
      local runs = finish(wid)
      assert.equal(1, runs.m) -- member 2 again (at-least-once); its advance is a no-op
      assert.equal(1, runs.cb)
      assert.same({ 10, 20 }, runs.results)
      assert.equal(1, count("celers_tasks", "task_name = 'cb'"))
      assert.equal(3, count("celers_tasks", "state = 'completed'"))
      assert.equal("succeeded", wf_state(wid))
   end)

   it("(c) killed after the members' acks and before the callback's enqueue: resume enqueues it once", function()
      local wid = chord()
      crash("ack_no_advance")
      assert.equal(2, count("celers_tasks", "task_name = 'm' AND state = 'completed'"))
      assert.equal(0, count("celers_tasks", "task_name = 'cb'"))
      assert.equal(2, count("celers_flow_nodes", "state = 'enqueued'"))
      -- the CLI's resume, then a worker's resume at start: the second finds nothing to do
      local code, out = proc.run("CELERS_LUA=" .. helper.shell_quote(helper.lua()) .. " CELERS_DSN=" .. helper.shell_quote(dsn)
         .. " " .. helper.shell_quote(helper.root .. "/bin/celers") .. " workflows resume")
      assert.equal(0, code, out)
      assert.matches("advanced 2 workflow nodes", out, 1, true)
      local runs = finish(wid, { workflow_resume = 10 })
      assert.equal(0, runs.m)
      assert.equal(1, runs.cb)
      assert.same({ celers.json.null, celers.json.null }, runs.results) -- no stored results
      assert.equal(1, count("celers_tasks", "task_name = 'cb'"))
      assert.equal("succeeded", wf_state(wid))
   end)

   it("(c') the same recovered by a new worker's own sweep", function()
      local wid = chord()
      crash("ack_no_advance")
      assert.equal(0, count("celers_tasks", "task_name = 'cb'"))
      local runs = finish(wid, { workflow_resume = 10 })
      assert.equal(1, runs.cb)
      assert.equal(1, count("celers_tasks", "task_name = 'cb'"))
      assert.equal("succeeded", wf_state(wid))
   end)

   it("a chord's last two members finishing together in two processes enqueue and run the callback once", function()
      local N = 20
      local ids = {}
      for i = 1, N do
         ids[i] = assert(workflow.chord({ { "m", tostring(i) }, { "m", tostring(-i) } }, { "cb", "" }):start(broker))
      end
      local hs = {}
      for i = 1, 2 do hs[i] = proc.spawn(FIXTURE, { dsn, "pair" }) end
      local done = proc.wait_for(function()
         return count("celers_flows", "state = 'running'") == 0
      end, 120, 0.2)
      for _, h in ipairs(hs) do proc.kill(assert(proc.pid(h)), "TERM") end
      for _, h in ipairs(hs) do assert.equal(0, (proc.wait(h, 30)), proc.output(h)) end
      assert.is_truthy(done, "workflows still running")
      local together = 0
      for i, wid in ipairs(ids) do
         assert.equal("succeeded", wf_state(wid))
         assert.equal(1, count("celers_tasks t JOIN celers_flow_nodes n ON n.task_id = t.id",
            "n.workflow_id = " .. q(wid) .. " AND t.task_name = 'cb'"))
         assert.equal(1, count("celers_tasks", "queue = 'log' AND payload = " .. q(wid)), "callback runs of workflow " .. i)
         assert.equal("[" .. i .. "," .. -i .. "]",
            helper.scalar(dsn, "SELECT result FROM celers_flow_nodes WHERE workflow_id = " .. q(wid) .. " AND node = 3"))
         -- did the members' advances really meet? (their finishes within 100 ms of each other)
         local gap = tonumber(helper.scalar(dsn, "SELECT TIMESTAMPDIFF(MICROSECOND, MIN(finished_at), MAX(finished_at)) "
            .. "FROM celers_flow_nodes WHERE workflow_id = " .. q(wid) .. " AND node IN (1, 2)"))
         if gap < 100000 then together = together + 1 end
      end
      -- both processes ran members, and most pairs finished together
      assert.equal(2, tonumber(helper.scalar(dsn, "SELECT COUNT(DISTINCT worker_id) FROM celers_tasks WHERE task_name = 'm'")))
      assert.is_true(together >= N / 2, together .. " of " .. N .. " pairs finished together")
   end)
end)
