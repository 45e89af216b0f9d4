-- celers.worker when the database misbehaves: killed connections, server restarts, and the
-- exit code of a pool that had a crash before it was stopped.
local helper = require "spec.helper"
local proc = require "spec.proc_helper"
local celers = require "celers"
local worker = require "celers.worker"

local dsn = helper.fresh_dsn("worker_survival")
local db = helper.parse_dsn(dsn).database
local q = helper.sql_string

local function n(sql) return tonumber(helper.scalar(dsn, sql)) end
local function count(where) return n("SELECT COUNT(*) FROM celers_tasks WHERE " .. where) end

-- KILL every session of the spec database but the asking one: the worker's connection.
local function kill_sessions()
  local ids = helper.query(dsn, "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = "
    .. q(db) .. " AND ID <> CONNECTION_ID()")
  for _, row in ipairs(ids) do
    pcall(helper.query, dsn, "KILL " .. row[1]) -- it may have ended by itself meanwhile
  end
  return #ids
end

local function alive(h) return proc.read_file(h.rc) == nil end

describe("celers.worker survives the database", function()
  local broker

  setup(function()
    broker = assert(celers.connect(dsn))
    assert(broker:migrate())
    broker:close()
  end)

  before_each(function()
    helper.query(dsn, "DELETE FROM celers_tasks; DELETE FROM celers_dead_letter_queue")
  end)

  for _, batch in ipairs { 1, 32 } do
    it(("keeps working when its connection is killed between calls (batch_size %d)"):format(batch), function()
      local b = assert(celers.connect(dsn))
      for i = 1, 40 do assert(b:enqueue("t", tostring(i))) end
      local runs, killed = {}, 0
      local w = assert(worker.new { broker = b, batch_size = batch, log = false, report_every = false,
        handlers = { t = function(p)
          runs[#runs + 1] = p
          -- every 7th task: kill the worker's session while the task is in hand, so the next
          -- settle or claim meets a dead link
          if #runs % 7 == 0 then killed = killed + kill_sessions() end
          return true
        end },
      })
      local counts = w:run { idle_exit = 0.3 }
      b:close()
      assert.is_true(killed >= 2, killed) -- a session killed mid-batch is only back after the batch
      assert.equal(40, count("state = 'completed'"))
      assert.equal(0, count("state <> 'completed'"))
      assert.equal(0, n("SELECT COUNT(*) FROM celers_dead_letter_queue"))
      -- a task may run again (at-least-once) only when its ack was lost with the link
      assert.is_true(#runs >= 40 and #runs <= 40 + counts.lost + counts.db_errors)
    end)
  end

  it("a claim or settle error is logged and the worker pauses (growing, bounded) before calling again", function()
    local b = assert(celers.connect(dsn))
    local lines = {}
    local w = assert(worker.new { broker = b, log = function(level, msg) lines[#lines + 1] = level .. " " .. msg end,
                                  report_every = false, handlers = { t = function() return 1 end } })
    -- the table is gone: every claim fails with an SQL error, and nothing ends the loop
    helper.query(dsn, "RENAME TABLE celers_tasks TO celers_tasks_away")
    local ok, err = pcall(function()
      local stop_at = require("celers.core").monotonic() + 1.5
      w.on_event = function() end
      local polls = 0
      while require("celers.core").monotonic() < stop_at do
        local got = w:step()
        assert.is_nil(got)
        polls = polls + 1
        require("celers.core").sleep(math.max(0, w.retry_at - require("celers.core").monotonic()))
      end
      return polls
    end)
    helper.query(dsn, "RENAME TABLE celers_tasks_away TO celers_tasks")
    assert.is_true(ok, tostring(err))
    -- pauses 0.05, 0.1, 0.2, 0.4, 0.8 (each drawn from its upper half): few calls in 1.5 s
    assert.is_true(w.counts.db_errors >= 3 and w.counts.db_errors <= 8, w.counts.db_errors)
    assert.is_true(w.pause > 0.2 and w.pause <= 2)
    assert.matches("^error claiming failed: ", lines[1])
    -- the table is back: the next step works and the pause is over
    assert(b:enqueue("t", "x"))
    assert.equal(1, w:step())
    assert.equal(0, w.pause)
    assert.is_true(w:flush())
    assert.equal(1, count("state = 'completed'"))
    b:close()
  end)

  it("a worker process keeps running through server restarts and finishes the queue", function()
    if not helper.private_server() then
      pending("needs the private server (scripts/test.sh without CELERS_TEST_DSN)")
      return
    end
    local b = assert(celers.connect(dsn))
    for i = 1, 200 do assert(b:enqueue("work", { ms = 10, i = i })) end
    local h = proc.spawn(helper.root .. "/spec/fixtures/worker_child.lua", { dsn, "survive" })
    local pid = assert(proc.pid(h))
    local db_sh = helper.shell_quote(helper.root .. "/scripts/db.sh")
    local ok, err = pcall(function()
      assert.truthy(proc.wait_for(function() return count("state = 'completed'") >= 40 end, 30, 0.1),
        proc.output(h))
      helper.db_restart() -- clean shutdown and start, under the running worker
      -- down for longer than the core's reconnect tries
      assert.equal(0, (proc.run(db_sh .. " stop")))
      proc.sleep(3)
      assert.is_true(alive(h), proc.output(h))
      assert.equal(0, (proc.run(db_sh .. " start")))
      for i = 201, 250 do assert(b:enqueue("work", { ms = 1, i = i })) end
      assert.truthy(proc.wait_for(function() return count("state = 'completed'") == 250 end, 60, 0.2),
        proc.output(h))
      assert.is_true(alive(h), proc.output(h))
    end)
    proc.run(db_sh .. " start") -- whatever happened above, leave the server running
    proc.kill(pid, "TERM")
    local code, out = proc.wait(h, 30)
    b:close()
    assert.is_true(ok, tostring(err) .. "\n" .. out)
    assert.equal(0, code, out)
    assert.matches("reason=SIGTERM", out, 1, true)
    assert.matches("failed: connect: ", out, 1, true)      -- it saw the errors ...
    assert.matches("the database answers again", out, 1, true) -- ... and went on
    assert.equal(250, count("state = 'completed'"))
    assert.equal(0, count("queue = 'default' AND state IN ('pending', 'processing')"))
    -- every task ran, each at least once (the log queue holds one row per run)
    local ran = n("SELECT COUNT(DISTINCT payload) FROM celers_tasks WHERE queue = 'log'")
    assert.equal(250, ran)
  end)

  it("a pool stopped with SIGTERM exits 0 although one of its workers crashed before", function()
    local handlers = os.tmpname()
    local f = assert(io.open(handlers, "w"))
    f:write("return { t = function() return true end }\n")
    f:close()
    helper.query(dsn, "DELETE FROM celers_workers")
    local h = proc.spawn(helper.root .. "/spec/fixtures/worker_child.lua", { dsn, "cli_pool", handlers })
    local pool_pid = assert(proc.pid(h))
    local pids = proc.wait_for(function()
      local rows = helper.query(dsn, "SELECT pid FROM celers_workers")
      return #rows == 2 and rows
    end, 20, 0.1)
    assert.truthy(pids, proc.output(h))
    proc.kill(tonumber(pids[1][1]), "KILL")
    -- the pool restarts it (after its 1 s restart delay); the new worker reports itself
    assert.truthy(proc.wait_for(function()
      return n("SELECT COUNT(*) FROM celers_workers WHERE pid <> " .. pids[1][1] .. " AND pid <> " .. pids[2][1]) == 1
    end, 20, 0.1), proc.output(h))
    proc.kill(pool_pid, "TERM")
    local code, out = proc.wait(h, 40)
    os.remove(handlers)
    assert.matches("was killed by signal 9; restarting it", out, 1, true)
    assert.equal(0, code, out)
    -- stopped cleanly: each worker left the registry except the killed one
    assert.equal(1, n("SELECT COUNT(*) FROM celers_workers"))
  end)
end)
