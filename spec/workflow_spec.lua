-- celers.workflow against the real database: what the tables hold after chains, groups,
-- chords and batches ran (node states, results, task rows), misuse, hostile input, the
-- resume sweep, and database failures while a member advances its workflow.
-- luacheck: max line length 160
local helper = require "spec.helper"
local celers = require "celers"
local core = require "celers.core"
local workflow = require "celers.workflow"

local json = celers.json

describe("celers.workflow", function()
   local dsn, broker

   local function scalar(sql) return helper.scalar(dsn, sql) end
   local function count(tbl, where)
      return tonumber(scalar("SELECT COUNT(*) FROM " .. tbl .. (where and (" WHERE " .. where) or "")))
   end
   local q = helper.sql_string

   -- node -> { state, task_state, result, error } as the database holds them
   local function nodes_of(wid)
      local rows = helper.query(dsn, "SELECT n.node, n.state, IFNULL(t.state, '-'), IFNULL(n.result, '-'), "
         .. "IFNULL(n.error, '-'), n.task_name FROM celers_flow_nodes n LEFT JOIN celers_tasks t ON t.id = n.task_id "
         .. "WHERE n.workflow_id = " .. q(wid) .. " ORDER BY n.node")
      local out = {}
      for _, r in ipairs(rows) do
         out[tonumber(r[1])] = { state = r[2], task = r[3], result = r[4], error = r[5], name = r[6] }
      end
      return out
   end

   local function wf_state(wid)
      return scalar("SELECT state FROM celers_flows WHERE id = " .. q(wid))
   end

   local function new_worker(handlers, extra)
      local opts = { broker = broker, log = false, handlers = handlers, workflow_resume = false, report_every = false }
      for k, v in pairs(extra or {}) do opts[k] = v end
      return assert(celers.worker.new(opts))
   end

   local function drain(w)
      w:run { idle_exit = 0.3, trap_signals = false }
   end

   setup(function()
      dsn = helper.fresh_dsn("spec_workflow")
      broker = assert(celers.connect({ dsn = dsn, recover_interval = 0 }))
      assert(broker:migrate())
   end)

   teardown(function()
      core._inject_fault()
      if broker then broker:close() end
   end)

   before_each(function()
      core._inject_fault()
      helper.query(dsn, "DELETE FROM celers_tasks; DELETE FROM celers_dead_letter_queue; DELETE FROM celers_results; "
         .. "DELETE FROM celers_flows; DELETE FROM celers_flow_nodes; DELETE FROM celers_flow_edges; "
         .. "DELETE FROM celers_task_history")
   end)

   describe("misuse raises, naming the argument; nothing is written", function()
      it("specs and builders", function()
         local cases = {
            { function() workflow.chain("a") end, "celers: workflow.chain: 'members' must be a list of task specs or workflows (got string)" },
            { function() workflow.chain { 42 } end, "celers: workflow.chain: member #1 must be a task spec or a workflow (got number)" },
            { function() workflow.group {} end, "celers: workflow.group: needs at least one member" },
            { function() workflow.chord({}, { "cb" }) end, "celers: workflow.chord: needs at least one member" },
            { function() workflow.chord({ { "a" } }, "cb") end, "celers: workflow.chord: 'callback' must be a task spec or a workflow (got string)" },
            { function() workflow.batch { on_success = { "x" } } end, "celers: workflow.batch: needs at least one member" },
            { function() workflow.batch { { "a" }, on_sucess = { "x" } } end, "celers: workflow.batch: 'members' must be a list (unexpected key 'on_sucess')" },
            { function() workflow.task("a\0b", "x") end, "celers: workflow.task: 'name' must not contain NUL bytes" },
            { function() workflow.task("", "x") end, "celers: workflow.task: 'name' must not be empty" },
            { function() workflow.task(("n"):rep(256), "x") end, "celers: workflow.task: 'name' is longer than 255 characters" },
            { function() workflow.task("a", 42) end, "celers: workflow.task: 'payload' must be a string or a table (got number)" },
            { function() workflow.task("a", { f = print }) end, "'payload' cannot be encoded as JSON: celers: json_encode: cannot encode a function" },
            { function() workflow.task("a", "x", { unique = {} }) end, "unknown option 'unique'" },
            { function() workflow.task("a", "x", { priority = 1.5 }) end, "'priority' must be an integer" },
            { function() workflow.task("a", "x", { priority = 2 ^ 40 }) end, "'priority' must be an integer" },
            { function() workflow.task("a", "x", { max_retries = -1 }) end, "'max_retries' must be a non-negative integer" },
            { function() workflow.task("a", "x", { timeout = 0 }) end, "'timeout' must be a positive finite number" },
            { function() workflow.task("a", "x", { delay = 0 / 0 }) end, "'delay' must be a non-negative finite number" },
            { function() workflow.task("a", "x", { delay = math.huge }) end, "'delay' must be a non-negative finite number" },
            { function() workflow.task("a", "x", { queue = "q\0" }) end, "'queue' must not contain NUL bytes" },
            { function() workflow.task("a", "x", { metadata = "m" }) end, "'metadata' must be a table (got string)" },
            { function() workflow.task("a", "x", { metadata = { workflow = 1 } }) end, "'metadata.workflow' is set by the workflow" },
            { function() workflow.chain { { "a", "x", 5 } } end, "'opts' must be a table (got number)" },
            { function() workflow.chain { { "a", "x", nil, "extra" } } end, "has no key '4'" },
            { function() workflow.chain { { name = "a", bogus = 1 } } end, "unknown option 'bogus'" },
            { function() workflow.chain { { "a", name = "b" } } end, "give the name as [1] or as name=, not both" },
            { function() workflow.group { { payload = "x" } } end, "member #1 must be a task spec" },
            { function() workflow.start("broker", workflow.task("a")) end, "celers: workflow.start: 'broker' must be a broker (got string)" },
            { function() workflow.start(broker, 7) end, "celers: workflow.start: 'wf' must be a task spec or a workflow (got number)" },
            { function() workflow.task("a"):start(broker, { nme = "x" }) end, "celers: workflow.start: unknown option 'nme'" },
            { function() workflow.task("a"):start(broker, { name = "x\0" }) end, "'name' must not contain NUL bytes" },
            { function() workflow.status(broker, 5) end, "celers: workflow.status: 'id' must be a string (got number)" },
            { function() workflow.cancel(broker, nil) end, "celers: workflow.cancel: 'id' must be a string (got nil)" },
            { function() workflow.list(broker, { state = "done" }) end, "'state' must be running, succeeded, failed or cancelled" },
            { function() workflow.list(broker, { limit = -1 }) end, "'limit' must be a non-negative integer" },
            { function() workflow.resume(broker, { limit = 0 }) end, "'limit' must be a positive integer" },
            { function() workflow.resume(broker, { after = "x" }) end, "'after' must be a cursor" },
            { function() workflow.resume(broker, { every = 1 }) end, "unknown option 'every'" },
            { function() workflow.succeeded(broker, "id") end, "'task' must be a task table (got string)" },
         }
         for _, c in ipairs(cases) do
            local ok, err = pcall(c[1])
            assert.is_false(ok, c[2])
            assert.matches(c[2], tostring(err), 1, true)
         end
         assert.equal(0, count("celers_flows"))
         assert.equal(0, count("celers_tasks"))
      end)

      it("a name of 255 multi-byte characters is fine; a spec of every form is accepted", function()
         local long = ("é"):rep(255)
         local wid = assert(workflow.chain { workflow.task(long, "x"), { "b", { k = 1 }, { priority = 3 } },
                                             { name = "c", payload = "z", max_retries = 1 } }:start(broker))
         local n = nodes_of(wid)
         assert.equal(long, n[1].name)
         assert.same({ "enqueued", "waiting", "waiting" }, { n[1].state, n[2].state, n[3].state })
         assert.equal(3, count("celers_flow_nodes"))
         assert.equal(2, count("celers_flow_edges"))
         assert.equal(1, count("celers_tasks"))
      end)
   end)

   describe("hostile input", function()
      it("a payload too large for the column is refused before anything is written", function()
         local big = ("x"):rep(16 * 1024 * 1024)
         local id, err = workflow.chain { { "a", "x" }, { "b", big } }:start(broker)
         assert.is_nil(id)
         assert.equal("too_large", err.code)
         assert.equal(0, count("celers_flows"))
         assert.equal(0, count("celers_flow_nodes"))
         assert.equal(0, count("celers_tasks"))
      end)

      it("a statement the server refuses rolls the whole start back", function()
         -- one node row of ~15 MB exceeds max_allowed_packet together with its options
         local big = ("y"):rep(16 * 1024 * 1024 - 10)
         local id, err = workflow.group { { "a", "x" }, { "b", big } }:start(broker)
         assert.is_nil(id)
         assert.is_table(err)
         assert.equal(0, count("celers_flows"))
         assert.equal(0, count("celers_flow_nodes"))
         assert.equal(0, count("celers_tasks"))
      end)

      it("binary payloads and results, NUL bytes included, pass unchanged along a chain", function()
         local bytes = "\0\1\255\254 binary \0"
         local seen
         local wid = assert(workflow.chain { { "bin", bytes }, { "after", "" } }:start(broker))
         drain(new_worker {
            bin = function(p) return p .. "!" end,
            after = function(_, ctx) seen = ctx.result return #ctx.result end,
         })
         assert.equal(bytes .. "!", seen)
         local st = assert(workflow.status(broker, wid))
         assert.equal("succeeded", st.state)
         assert.equal(bytes .. "!", st.nodes[1].result)
         assert.equal(#bytes + 1, st.nodes[2].result)
      end)

      it("a result that cannot be encoded still advances (noted on the node)", function()
         local wid = assert(workflow.chain { { "fn", "" }, { "next", "" } }:start(broker))
         local got = "unset"
         drain(new_worker {
            fn = function() return { f = print } end,
            next = function(_, ctx) got = ctx.result return true end,
         })
         assert.is_nil(got)
         local n = nodes_of(wid)
         assert.equal("succeeded", n[1].state)
         assert.matches("the result was not stored", n[1].error, 1, true)
         assert.equal("succeeded", wf_state(wid))
      end)

      it("a big workflow: 300 members in a chord, inserted in chunks, callback once", function()
         local members = {}
         for i = 1, 300 do members[i] = { "m", { i = i } } end
         local wid = assert(workflow.chord(members, { "cb", "" }):start(broker))
         assert.equal(300, count("celers_flow_edges"))
         local total
         drain(new_worker({
            m = function(p) return p.i end,
            cb = function(_, ctx)
               total = 0
               for i, v in ipairs(ctx.results) do
                  assert(v == i)
                  total = total + v
               end
               return total
            end,
         }, { batch_size = 100 }))
         assert.equal(300 * 301 / 2, total)
         assert.equal("succeeded", wf_state(wid))
         assert.equal(1, count("celers_tasks", "task_name = 'cb'"))
      end)
   end)

   describe("chains", function()
      it("pass each result to the next task and record every step", function()
         local wid = assert(workflow.chain { { "add", { 1, 2 } }, { "double", "" }, { "double", "" } }:start(broker, { name = "math" }))
         assert.equal("running", wf_state(wid))
         assert.equal("chain", scalar("SELECT kind FROM celers_flows WHERE id = " .. q(wid)))
         assert.equal("math", scalar("SELECT name FROM celers_flows WHERE id = " .. q(wid)))
         -- only the first task exists before it ran
         assert.equal(1, count("celers_tasks"))
         local seen = {}
         drain(new_worker {
            add = function(p) return p[1] + p[2] end,
            double = function(_, ctx)
               seen[#seen + 1] = ctx.result
               assert(#ctx.results == 1)
               return ctx.result * 2
            end,
         })
         assert.same({ 3, 6 }, seen)
         local n = nodes_of(wid)
         for i, r in ipairs { "3", "6", "12" } do
            assert.equal("succeeded", n[i].state)
            assert.equal("completed", n[i].task)
            assert.equal(r, n[i].result)
         end
         assert.equal("succeeded", wf_state(wid))
         assert.equal(0, tonumber(scalar("SELECT nodes_left FROM celers_flows WHERE id = " .. q(wid))))
         assert.is_not_nil(scalar("SELECT finished_at FROM celers_flows WHERE id = " .. q(wid)))
         -- the tasks carry their place
         local meta = json.decode(scalar("SELECT metadata FROM celers_tasks t JOIN celers_flow_nodes n ON n.task_id = t.id "
            .. "WHERE n.node = 2"))
         assert.same({ id = wid, node = 2, parents = 1 }, meta.workflow)
      end)

      it("stop at a failure: the rest is cancelled, with cancelled task rows under the known ids", function()
         local wid = assert(workflow.chain {
            { "ok", "" }, { "boom", "", { max_retries = 1, metadata = { who = "me" } } }, { "never", "" }, { "never", "" },
         }:start(broker))
         local ran_never = 0
         drain(new_worker {
            ok = function() return "fine" end,
            boom = function() error("kaput") end,
            never = function() ran_never = ran_never + 1 end,
         })
         assert.equal(0, ran_never)
         local n = nodes_of(wid)
         assert.equal("succeeded", n[1].state)
         assert.equal("failed", n[2].state)
         assert.matches("kaput", n[2].error)
         assert.equal("-", n[2].task) -- dead-lettered
         assert.equal(1, count("celers_dead_letter_queue", "task_name = 'boom'"))
         for i = 3, 4 do
            assert.equal("cancelled", n[i].state)
            assert.equal("cancelled", n[i].task)
            assert.matches("a parent did not succeed", n[i].error, 1, true)
         end
         assert.equal("failed", wf_state(wid))
         -- broker:get_task says cancelled for the pre-generated id
         local st = assert(workflow.status(broker, wid))
         local t = assert(broker:get_task(st.nodes[3].task_id))
         assert.equal("cancelled", t.state)
         assert.equal("never", t.name)
         assert.same({ id = wid, node = 3, parents = 1 }, t.metadata.workflow)
      end)

      it("a retried member advances only when it finally succeeds", function()
         local tries = 0
         local wid = assert(workflow.chain { { "flaky", "", { max_retries = 3 } }, { "next", "" } }:start(broker))
         local got
         drain(new_worker({
            flaky = function()
               tries = tries + 1
               if tries < 3 then error("not yet") end
               return tries
            end,
            next = function(_, ctx) got = ctx.result end,
         }, { retry = { strategy = "fixed", base = 0, jitter = "none" } }))
         assert.equal(3, tries)
         assert.equal(3, got)
         assert.equal("succeeded", wf_state(wid))
      end)

      it("a snoozed member does not advance; it does when it runs again", function()
         local runs = 0
         local wid = assert(workflow.chain { { "sleepy", "" }, { "next", "" } }:start(broker))
         local w = new_worker {
            sleepy = function(_, ctx)
               runs = runs + 1
               if runs == 1 then return ctx:snooze(0) end
               return "awake"
            end,
            next = function(_, ctx) return ctx.result end,
         }
         drain(w)
         assert.equal(2, runs)
         assert.equal("succeeded", wf_state(wid))
         assert.equal("awake", nodes_of(wid)[2].result)
      end)
   end)

   describe("groups and chords", function()
      it("a group runs every member; the workflow succeeds when all did", function()
         local wid = assert(workflow.group { { "a", "1" }, { "a", "2" }, { "a", "3" } }:start(broker))
         assert.equal(3, count("celers_tasks", "state = 'pending'"))
         assert.equal(0, count("celers_flow_edges"))
         drain(new_worker { a = function(p) return tonumber(p) end })
         local n = nodes_of(wid)
         for i = 1, 3 do assert.equal(tostring(i), n[i].result) end
         assert.equal("succeeded", wf_state(wid))
         assert.equal("group", scalar("SELECT kind FROM celers_flows WHERE id = " .. q(wid)))
      end)

      it("a chord's callback gets the results in member order, whatever order they finished in", function()
         -- higher priority runs first: the members finish in reverse order
         local members = {}
         for i = 1, 5 do members[i] = { "m", tostring(i), { priority = i } } end
         local wid = assert(workflow.chord(members, { "cb", "" }):start(broker))
         local finished, got = {}, nil
         drain(new_worker({
            m = function(p) finished[#finished + 1] = tonumber(p) return { n = tonumber(p) } end,
            cb = function(_, ctx) got = ctx.results return #ctx.results end,
         }, { batch_size = 1 }))
         assert.same({ 5, 4, 3, 2, 1 }, finished)
         assert.same({ { n = 1 }, { n = 2 }, { n = 3 }, { n = 4 }, { n = 5 } }, got)
         assert.equal(1, count("celers_tasks", "task_name = 'cb'"))
         assert.equal("succeeded", nodes_of(wid)[6].state)
         assert.equal("chord", scalar("SELECT kind FROM celers_flows WHERE id = " .. q(wid)))
      end)

      it("a member returning nothing gives json.null in ctx.results", function()
         local got
         assert(workflow.chord({ { "none", "" }, { "one", "" } }, { "cb", "" }):start(broker))
         drain(new_worker {
            none = function() end,
            one = function() return 1 end,
            cb = function(_, ctx) got = ctx.results end,
         })
         assert.equal(json.null, got[1])
         assert.equal(1, got[2])
         assert.equal(2, #got)
      end)

      it("a failed member cancels the callback at once; the others still finish", function()
         local wid = assert(workflow.chord({ { "bad", "", { max_retries = 1 } }, { "good", "" } }, { "cb", "" }):start(broker))
         local cb_ran = false
         drain(new_worker({ bad = function() return nil, "no" end, good = function() return 1 end,
                            cb = function() cb_ran = true end }, { batch_size = 1 }))
         assert.is_false(cb_ran)
         local n = nodes_of(wid)
         assert.same({ "failed", "succeeded", "cancelled" }, { n[1].state, n[2].state, n[3].state })
         assert.equal("cancelled", n[3].task)
         assert.equal("failed", wf_state(wid))
      end)

      it("compose: chain{ group{ a, chain{ b, c } }, d, chord({ e, f }, g) }", function()
         local wid = assert(workflow.chain {
            workflow.group { { "t", "a" }, workflow.chain { { "t", "b" }, { "t", "c" } } },
            { "t", "d" },
            workflow.chord({ { "t", "e" }, { "t", "f" } }, { "t", "g" }),
         }:start(broker))
         local order, inputs = {}, {}
         drain(new_worker { t = function(p, ctx)
            order[#order + 1] = p
            inputs[p] = ctx.results
            return p
         end })
         assert.equal("succeeded", wf_state(wid))
         assert.same({ "a", "c" }, inputs.d)
         assert.same({ "b" }, inputs.c)
         assert.same({ "d" }, inputs.e)
         assert.same({ "d" }, inputs.f)
         assert.same({ "e", "f" }, inputs.g)
         local pos = {}
         for i, v in ipairs(order) do pos[v] = i end
         assert.is_true(pos.b < pos.c and pos.c < pos.d and pos.a < pos.d and pos.d < pos.e and pos.f < pos.g)
         local st = assert(workflow.status(broker, wid))
         assert.same({ 1, 3 }, st.nodes[4].parents) -- d after a and c
         assert.equal(7, #st.nodes)
      end)
   end)

   describe("batches", function()
      it("on_success runs once every member succeeded; on_failure is cancelled", function()
         local wid = assert(workflow.batch { { "m", "1" }, { "m", "2" }, on_success = { "ok", "" }, on_failure = { "ko", "" } }:start(broker))
         local ok_got, ko_ran
         drain(new_worker { m = function(p) return tonumber(p) end,
                            ok = function(_, ctx) ok_got = ctx.results end, ko = function() ko_ran = true end })
         assert.same({ 1, 2 }, ok_got)
         assert.is_nil(ko_ran)
         local n = nodes_of(wid)
         assert.same({ "succeeded", "succeeded", "succeeded", "cancelled" }, { n[1].state, n[2].state, n[3].state, n[4].state })
         assert.matches("not needed", n[4].error)
         assert.equal("cancelled", n[4].task)
         assert.equal("succeeded", wf_state(wid))
         assert.equal("batch", scalar("SELECT kind FROM celers_flows WHERE id = " .. q(wid)))
      end)

      it("on_failure runs once, after every member finished, when one failed; on_success is cancelled", function()
         local wid = assert(workflow.batch {
            { "m", "1" }, { "bad", "", { max_retries = 1 } }, { "m", "3" },
            on_success = { "ok", "" }, on_failure = { "ko", "" },
         }:start(broker))
         local ko_got, ko_runs, ok_ran = nil, 0, false
         local left_when_ko
         drain(new_worker({
            m = function(p) return tonumber(p) end,
            bad = function() error("nope") end,
            ok = function() ok_ran = true end,
            ko = function(_, ctx)
               ko_runs = ko_runs + 1
               ko_got = ctx.results
               left_when_ko = count("celers_flow_nodes", "task_name IN ('m', 'bad') AND state IN ('waiting', 'enqueued')")
            end,
         }, { batch_size = 1 }))
         assert.equal(1, ko_runs)
         assert.equal(0, left_when_ko)
         assert.is_false(ok_ran)
         assert.same({ 1, json.null, 3 }, ko_got)
         local n = nodes_of(wid)
         assert.same({ "succeeded", "failed", "succeeded", "cancelled", "succeeded" },
            { n[1].state, n[2].state, n[3].state, n[4].state, n[5].state })
         assert.equal("failed", wf_state(wid))
      end)

      it("a chain after a batch follows on_success", function()
         local wid = assert(workflow.chain {
            workflow.batch { { "m", "1" }, on_success = { "ok", "" }, on_failure = { "ko", "" } },
            { "after", "" },
         }:start(broker))
         local after_got
         drain(new_worker { m = function() return 1 end, ok = function() return "ok!" end, ko = function() end,
                            after = function(_, ctx) after_got = ctx.results end })
         assert.same({ "ok!" }, after_got)
         assert.equal("succeeded", wf_state(wid))
      end)
   end)

   describe("inspection and cancel", function()
      it("status, list and counts read what the tables hold", function()
         local a = assert(workflow.group { { "x", "" } }:start(broker, { name = "first" }))
         local b = assert(workflow.chain { { "x", "" }, { "y", "" } }:start(broker))
         assert.is_nil(workflow.status(broker, "no-such-id"))
         local st = assert(workflow.status(broker, b))
         assert.equal("running", st.state)
         assert.equal(2, st.nodes_total)
         assert.equal(2, st.nodes_left)
         assert.same({ "enqueued", "waiting" }, { st.nodes[1].state, st.nodes[2].state })
         assert.same({ 1 }, st.nodes[2].parents)
         assert.is_number(st.created_at)
         local list = assert(workflow.list(broker))
         assert.equal(2, #list)
         assert.equal(b, list[1].id) -- newest first
         assert.equal("first", list[2].name)
         assert.equal(0, #assert(workflow.list(broker, { state = "failed" })))
         local c = assert(workflow.counts(broker))
         assert.equal(2, c.workflows.running)
         assert.equal(2, c.nodes.enqueued)
         assert.equal(1, c.nodes.waiting)
         assert(broker:update_metrics())
         local text = celers.metrics.render()
         assert.matches('celers_workflows{state="running"} 2', text, 1, true)
         assert.matches('celers_workflow_nodes{state="waiting"} 1', text, 1, true)
         assert.matches('celers_workflow_nodes{state="failed"} 0', text, 1, true)
         assert.is_string(a)
      end)

      it("cancel: waiting and enqueued nodes and their tasks are cancelled; a late finish changes nothing", function()
         local wid = assert(workflow.chain { workflow.group { { "a", "" }, { "b", "" } }, { "c", "" } }:start(broker))
         -- a runs and is held (claimed), b waits
         local held = assert(broker:dequeue())
         assert.equal(3, assert(workflow.cancel(broker, wid)))
         local n = nodes_of(wid)
         for i = 1, 3 do
            assert.equal("cancelled", n[i].state)
            assert.equal("cancelled", n[i].task)
         end
         assert.equal("cancelled", wf_state(wid))
         assert.is_false(workflow.cancel(broker, wid))
         assert.is_nil(workflow.cancel(broker, "nope"))
         -- the held member finishes after all: nothing moves, nothing is enqueued
         assert.is_false(workflow.succeeded(broker, held, "late"))
         assert.is_false(broker:ack(held))
         assert.equal(3, count("celers_tasks"))
         assert.equal("cancelled", nodes_of(wid)[1].state)
      end)

      it("succeeded/failed are no-ops the second time and for tasks outside workflows", function()
         local wid = assert(workflow.chain { { "a", "" }, { "b", "" } }:start(broker))
         local t = assert(broker:dequeue())
         assert.is_true(assert(workflow.succeeded(broker, t, 1)))
         assert.is_false(workflow.succeeded(broker, t, 2))
         assert.is_false(workflow.failed(broker, t, "x"))
         assert.equal(2, count("celers_tasks")) -- b enqueued once
         assert.equal("1", nodes_of(wid)[1].result)
         assert.is_false(workflow.succeeded(broker, { id = "x", metadata = {} }, 1))
         -- a forged place (another task's id) moves nothing
         local forged = { id = core.uuid7(), metadata = { workflow = { id = wid, node = 2 } } }
         assert.is_false(workflow.succeeded(broker, forged, 1))
         assert.equal("enqueued", nodes_of(wid)[2].state)
      end)
   end)

   describe("resume", function()
      it("advances a member acked without advancing (a crash between ack and advance), once", function()
         local wid = assert(workflow.chord({ { "m", "1" }, { "m", "2" } }, { "cb", "" }):start(broker))
         -- both members are run and acked by something that does not advance; one stored a result
         local t1 = assert(broker:dequeue())
         local t2 = assert(broker:dequeue())
         assert(broker:store_result(t1.id, { task_name = "m", status = "success", result = { v = 1 } }))
         assert.is_true(broker:ack(t1))
         assert.is_true(broker:ack(t2))
         assert.equal(0, count("celers_tasks", "task_name = 'cb'"))
         local n, cursor = workflow.resume(broker)
         assert.equal(2, n)
         assert.is_nil(cursor)
         assert.equal(0, (workflow.resume(broker)))
         assert.equal(1, count("celers_tasks", "task_name = 'cb'"))
         local got
         drain(new_worker { cb = function(_, ctx) got = ctx.results end })
         assert.same({ { v = 1 }, json.null }, got)
         assert.equal("succeeded", wf_state(wid))
      end)

      it("fails a member dead-lettered by lease expiry on its last attempt; the chain's rest is cancelled", function()
         local wid = assert(workflow.chain { { "m", "", { max_retries = 1, timeout = 0.2 } }, { "next", "" } }:start(broker))
         assert(broker:dequeue()) -- claimed, never settled: the claimer died
         helper.query(dsn, "DO SLEEP(0.4)")
         assert(broker:recover_stuck_tasks(0))
         assert.equal(1, count("celers_dead_letter_queue"))
         assert.equal(1, (workflow.resume(broker)))
         local n = nodes_of(wid)
         assert.equal("failed", n[1].state)
         assert.equal("cancelled", n[2].state)
         assert.equal("failed", wf_state(wid))
      end)

      it("cancels a member whose task was cancelled; a batch's on_failure then runs", function()
         local wid = assert(workflow.batch { { "m", "" }, { "m", "" }, on_failure = { "ko", "" } }:start(broker))
         local st = assert(workflow.status(broker, wid))
         assert.is_true(broker:cancel(st.nodes[1].task_id))
         local ko
         local w = new_worker({ m = function() return 1 end, ko = function(_, ctx) ko = ctx.results end },
                              { workflow_resume = 0 })
         drain(w)
         assert.same({ json.null, 1 }, ko)
         local n = nodes_of(wid)
         assert.same({ "cancelled", "succeeded", "succeeded" }, { n[1].state, n[2].state, n[3].state })
         assert.equal("cancelled", wf_state(wid))
      end)

      it("goes through many enqueued nodes in bounded rounds with a cursor", function()
         local members = {}
         for i = 1, 25 do members[i] = { "m", tostring(i) } end
         assert(workflow.chord(members, { "cb", "" }):start(broker))
         -- nothing finished yet: the rounds look and advance nothing
         local n, cursor = workflow.resume(broker, { limit = 10 })
         assert.equal(0, n)
         assert.is_table(cursor)
         local rounds = 1
         while cursor do
            n, cursor = workflow.resume(broker, { limit = 10, after = cursor })
            assert.equal(0, n)
            rounds = rounds + 1
         end
         assert.equal(3, rounds)
         helper.query(dsn, "UPDATE celers_tasks SET state = 'completed' WHERE task_name = 'm'")
         local total = 0
         cursor = nil
         repeat
            n, cursor = workflow.resume(broker, { limit = 10, after = cursor })
            total = total + n
         until not cursor
         assert.equal(25, total)
         assert.equal(1, count("celers_tasks", "task_name = 'cb'"))
      end)

      it("a task archived as completed counts as succeeded; a purged one as failed", function()
         local wid = assert(workflow.group { { "m", "" }, { "m", "" } }:start(broker))
         local st = assert(workflow.status(broker, wid))
         helper.query(dsn, "INSERT INTO celers_task_history (task_id, task_name, state) VALUES (" .. q(st.nodes[1].task_id)
            .. ", 'm', 'completed'); DELETE FROM celers_tasks")
         assert.equal(2, (workflow.resume(broker)))
         local n = nodes_of(wid)
         assert.equal("succeeded", n[1].state)
         assert.equal("failed", n[2].state)
         assert.matches("purged", n[2].error)
      end)
   end)

   describe("database failures while advancing lose nothing", function()
      -- every statement of the advance fails in turn (link cut before or after it is sent,
      -- or a deadlock); the worker keeps the member (not acked) and advances it again: each
      -- node runs, the callback is enqueued and runs exactly once
      for _, fault in ipairs {
         { at = "before_send" }, { at = "after_send" }, { at = "error", errno = 1213 }, { at = "commit" },
      } do
         it("at " .. fault.at, function()
            local cut = 0
            for k = 1, 12 do
               helper.query(dsn, "DELETE FROM celers_tasks; DELETE FROM celers_flows; DELETE FROM celers_flow_nodes; "
                  .. "DELETE FROM celers_flow_edges")
               local wid = assert(workflow.chord({ { "m", "1" }, { "m", "2" } }, { "cb", "" }):start(broker))
               local runs = { m = 0, cb = 0 }
               local w = new_worker({
                  m = function(p) runs.m = runs.m + 1 return tonumber(p) end,
                  cb = function(_, ctx) runs.cb = runs.cb + 1 return ctx.results end,
               }, { batch_size = 1, lease = 0.5 })
               core._inject_fault { at = fault.at, errno = fault.errno, nth = k,
                                    op = fault.at ~= "commit" and "celers_flow" or nil }
               for _ = 1, 400 do
                  w:step(1)
                  if wf_state(wid) ~= "running" and #w.done == 0 and #w.unadvanced == 0 then break end
                  core.sleep(0.01)
               end
               w:flush()
               if core._inject_fault() == 0 then cut = cut + 1 end
               assert.equal("succeeded", wf_state(wid), "fault " .. k)
               if fault.at == "commit" then
                  -- a COMMIT whose answer was lost may be a claim's: that task runs again
                  -- when its lease expires (at-least-once), but is enqueued once
                  assert.is_true(runs.m >= 2 and runs.cb >= 1, "fault " .. k)
               else
                  assert.equal(2, runs.m, "fault " .. k)
                  assert.equal(1, runs.cb, "fault " .. k)
               end
               assert.equal(1, count("celers_tasks", "task_name = 'cb'"))
               assert.equal(3, count("celers_tasks", "state = 'completed'"), "fault " .. k)
               assert.equal("[1,2]", nodes_of(wid)[3].result)
            end
            assert.is_true(cut >= 5, "only " .. cut .. " faults fired")
         end)
      end

      it("a locked workflow row (lock wait timeout) keeps the member unacked until it can advance", function()
         local wid = assert(workflow.chain { { "m", "" }, { "next", "" } }:start(broker))
         local other = assert(celers.connect(dsn))
         assert(broker:execute("SET SESSION innodb_lock_wait_timeout = 1"))
         local w = new_worker({ m = function() return "r" end, next = function() end }, { batch_size = 1 })
         local ok, err = other:transaction(function(tx)
            assert(tx:execute("SELECT id FROM celers_flows WHERE id = ? FOR UPDATE", wid))
            w:step(1)
            -- the member ran, its advance waited for the lock and failed: kept, not acked
            assert.equal(1, #w.unadvanced)
            assert.equal(0, #w.done)
            return true
         end)
         assert.is_true(ok, tostring(err))
         assert.equal("processing", scalar("SELECT state FROM celers_tasks WHERE task_name = 'm'"))
         assert.equal("enqueued", nodes_of(wid)[1].state)
         core.sleep(w.retry_at - core.monotonic() + 0.01)
         drain(w)
         assert.equal("succeeded", wf_state(wid))
         assert.equal("completed", scalar("SELECT state FROM celers_tasks WHERE task_name = 'm'"))
         assert.equal(1, count("celers_tasks", "task_name = 'next'"))
         other:close()
         assert(broker:execute("SET SESSION innodb_lock_wait_timeout = 50"))
      end)
   end)

   it("lives beside the Rust broker's own workflow tables (its 007), whichever broker migrated first", function()
      local rust = require "spec.rust_broker"
      local rdsn = helper.fresh_dsn("spec_workflow_rust_first")
      rust.migrate(rdsn)
      -- the Rust 007 tables of the same family as ours (restated here with columns of their own)
      helper.query(rdsn, "CREATE TABLE IF NOT EXISTS celers_workflow_nodes (id CHAR(36) PRIMARY KEY, workflow_id CHAR(36) NOT NULL, "
         .. "task_name VARCHAR(255) NOT NULL); CREATE TABLE IF NOT EXISTS celers_workflow_edges (workflow_id CHAR(36) NOT NULL, "
         .. "from_node CHAR(36) NOT NULL, to_node CHAR(36) NOT NULL)")
      local before = helper.query(rdsn, "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = DATABASE() "
         .. "AND table_name LIKE 'celers\\_workflow%' ORDER BY table_name, ordinal_position")
      local b = assert(celers.connect(rdsn))
      assert(b:migrate())
      local wid = assert(workflow.chain { { "a", "" }, { "b", "" } }:start(b))
      local w = assert(celers.worker.new { broker = b, log = false, report_every = false, handlers = {
         a = function() return 1 end, b = function(_, ctx) return ctx.result + 1 end } })
      w:run { idle_exit = 0.3, trap_signals = false }
      local st = assert(workflow.status(b, wid))
      assert.equal("succeeded", st.state)
      assert.equal(2, st.nodes[2].result)
      -- the Rust tables are untouched
      assert.same(before, helper.query(rdsn, "SELECT table_name, column_name FROM information_schema.columns "
         .. "WHERE table_schema = DATABASE() AND table_name LIKE 'celers\\_workflow%' ORDER BY table_name, ordinal_position"))
      assert.is_true(#before >= 5)
      b:close()
      -- and the Rust migrate() on a database we created still creates its own workflows table
      local odsn = helper.fresh_dsn("spec_workflow_ours_first")
      local o = assert(celers.connect(odsn))
      assert(o:migrate())
      o:close()
      rust.migrate(odsn)
      assert.equal("name", helper.scalar(odsn, "SELECT column_name FROM information_schema.columns WHERE table_schema = DATABASE() "
         .. "AND table_name = 'celers_workflows' AND column_name = 'name'"))
   end)

   describe("the CLI: celers workflows", function()
      local proc = require "spec.proc_helper"
      local function cli(args)
         local out = os.tmpname()
         local code = proc.run("sh -c " .. helper.shell_quote("CELERS_LUA=" .. helper.shell_quote(helper.lua())
            .. " CELERS_DSN=" .. helper.shell_quote(dsn) .. " " .. helper.shell_quote(helper.root .. "/bin/celers") .. " "
            .. args .. " >" .. out .. " 2>" .. out .. ".err"))
         local o, e = proc.read_file(out) or "", proc.read_file(out .. ".err") or ""
         os.remove(out)
         os.remove(out .. ".err")
         return code, o, e
      end

      it("refuses wrong arguments with exit 2 and a usage line, writing nothing", function()
         assert(workflow.chain { { "a", "" }, { "b", "" } }:start(broker))
         for _, c in ipairs {
            { "workflows", "workflows needs 'list', 'show ID', 'cancel ID', 'resume' or 'prune'" },
            { "workflows bogus", "workflows needs" },
            { "workflows show", "workflows show needs a workflow ID" },
            { "workflows cancel", "workflows cancel needs a workflow ID" },
            { "workflows show a b", "unexpected argument 'b'" },
            { "workflows list extra", "unexpected argument 'extra'" },
            { "workflows resume extra", "unexpected argument 'extra'" },
            { "workflows list --state done", "--state must be running, succeeded, failed or cancelled" },
            { "workflows list --limit x", "--limit must be an integer" },
            { "workflows list --offset -1", "--offset must be an integer >= 0" },
            { "workflows resume --limit 0", "--limit must be an integer >= 1" },
            { "workflows show x --state failed", "--state is for workflows list" },
            { "workflows cancel x --limit 3", "--limit is for workflows list and resume" },
            { "workflows resume --nope", "unknown option --nope for 'workflows'" },
            { "workflows resume --yes", "--older-than and --yes are for workflows prune" },
            { "workflows prune", "workflows prune needs --older-than SECONDS" },
            { "workflows prune --older-than x", "--older-than must be a number >= 0" },
            { "workflows prune --older-than 0", "nothing deleted: add --yes to delete these 0 finished workflows" },
         } do
            local code, _, err = cli(c[1])
            assert.equal(2, code, c[1] .. ": " .. err)
            assert.matches("^celers: ", err)
            assert.matches(c[2], err, 1, true)
            assert.matches("\nUsage: celers workflows", "\n" .. err, 1, true)
         end
         local code, out = cli("workflows --help")
         assert.equal(0, code)
         assert.matches("Usage: celers workflows list", out, 1, true)
         assert.equal(1, count("celers_tasks"))
         assert.equal("running", scalar("SELECT state FROM celers_flows"))
      end)

      it("list, show, cancel and resume act on the tables", function()
         local wid = assert(workflow.chain { { "a", "" }, { "b", "" } }:start(broker, { name = "cli demo" }))
         local code, out = cli("workflows list")
         assert.equal(0, code, out)
         assert.matches(wid, out, 1, true)
         assert.matches("cli demo", out, 1, true)
         code, out = cli("--json workflows list --state running")
         assert.equal(0, code, out)
         local list = json.decode(out)
         assert.equal(wid, list[1].id)
         assert.equal(2, list[1].nodes_left)
         code, out = cli("--json workflows list --state failed")
         assert.equal(0, code)
         assert.equal("[]\n", out)
         code, out = cli("--json workflows show " .. wid)
         assert.equal(0, code, out)
         local st = json.decode(out)
         assert.equal("waiting", st.nodes[2].state)
         assert.same({ 1 }, st.nodes[2].parents)
         code, out = cli("workflows show " .. wid)
         assert.equal(0, code, out)
         assert.matches("enqueued", out, 1, true)
         local err
         code, out, err = cli("workflows show nope")
         assert.equal(1, code)
         assert.equal("", out)
         assert.matches("no workflow nope", err, 1, true)
         code, out = cli("workflows resume")
         assert.equal(0, code, out)
         assert.matches("advanced 0 workflow nodes", out, 1, true)
         code, out = cli("workflows cancel " .. wid)
         assert.equal(0, code, out)
         assert.matches("cancelled workflow " .. wid .. " (2 nodes)", out, 1, true)
         assert.equal("cancelled", wf_state(wid))
         assert.equal(2, count("celers_tasks", "state = 'cancelled'"))
         code, out, err = cli("workflows cancel " .. wid)
         assert.equal(1, code)
         assert.equal("", out)
         assert.matches("is not running", err, 1, true)
         code, out, err = cli("workflows cancel nope")
         assert.equal(1, code)
         assert.equal("", out)
         assert.matches("no workflow nope", err, 1, true)
         -- prune: a running workflow stays, the cancelled one goes with its nodes and edges
         local running = assert(workflow.chain { { "a", "" }, { "b", "" } }:start(broker))
         code, out, err = cli("workflows prune --older-than 0")
         assert.equal(2, code)
         assert.matches("would delete 1 finished workflows", out, 1, true)
         assert.matches("add --yes", err, 1, true)
         assert.equal(2, count("celers_flows"))
         code, out = cli("workflows prune --older-than 3600 --yes")
         assert.equal(0, code, out)
         assert.matches("deleted 0 finished workflows", out, 1, true)
         code, out = cli("--json workflows prune --older-than 0 --yes")
         assert.equal(0, code, out)
         assert.same({ pruned = 1 }, json.decode(out))
         assert.equal(running, scalar("SELECT id FROM celers_flows"))
         assert.equal(0, count("celers_flow_nodes", "workflow_id = " .. q(wid)))
         assert.equal(0, count("celers_flow_edges", "workflow_id = " .. q(wid)))
         assert.equal(2, count("celers_flow_nodes"))
         assert.equal(3, count("celers_tasks")) -- the tasks are left to their own upkeep
      end)

      it("prune deletes in chunks and never a running workflow; misuse raises", function()
         for _ = 1, 230 do assert(workflow.task("a", ""):start(broker)) end
         helper.query(dsn, "UPDATE celers_flows SET state = 'succeeded', finished_at = NOW(6) - INTERVAL 2 HOUR "
            .. "ORDER BY id LIMIT 205")
         assert.equal(205, workflow.count_finished(broker, 3600))
         assert.equal(0, workflow.count_finished(broker, 3 * 3600))
         assert.equal(205, workflow.prune(broker, 3600))
         assert.equal(25, count("celers_flows"))
         assert.equal(25, count("celers_flow_nodes"))
         assert.equal(0, workflow.prune(broker, 0))
         assert.has_error(function() workflow.prune(broker, -1) end,
            "celers: workflow.prune: 'older_than' must be a non-negative finite number of seconds (got -1)")
         assert.has_error(function() workflow.prune(broker, 0 / 0) end)
         assert.has_error(function() workflow.count_finished(broker, "1") end)
      end)
   end)
end)
