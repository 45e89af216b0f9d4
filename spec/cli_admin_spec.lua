-- bin/celers as an operator meets it: commands stay in their queue, deletions are shown before
-- they happen, usage errors exit 2 with a usage line, and the queue/task/maintenance commands
-- change exactly the rows they name (checked in the database with the mariadb client).
local helper = require "spec.helper"
local cjson = require "cjson"

local dsn = helper.fresh_dsn("cli_admin")
local q = helper.sql_string
local sh = helper.shell_quote
local BIN = helper.root .. "/bin/celers"

local function read_file(path)
  local f = io.open(path, "rb")
  local s = f and f:read("*a") or ""
  if f then f:close() end
  return s
end

-- run bin/celers; returns exit code, stdout, stderr
local function celers(args, use_dsn)
  local o, e = os.tmpname(), os.tmpname()
  local cmd = ("CELERS_LUA=%s CELERS_DSN=%s %s %s >%s 2>%s"):format(sh(helper.lua()), sh(use_dsn or dsn), sh(BIN),
    args, sh(o), sh(e))
  local ok, _, code = os.execute(cmd)
  if type(ok) == "number" then code = ok >= 256 and math.floor(ok / 256) or ok
  elseif ok == true then code = 0 end
  local out, err = read_file(o), read_file(e)
  os.remove(o)
  os.remove(e)
  return code, out, err
end

local function n(sql) return tonumber(helper.scalar(dsn, sql)) end

local function ok(args)
  local code, out, err = celers(args)
  assert.equal(0, code, args .. ": " .. out .. err)
  return out
end

-- the rows of every table, as one comparable string per table
local function snapshot(where)
  return {
    tasks = helper.query(dsn, "SELECT id, queue, state, task_name FROM celers_tasks " .. (where or "")
      .. " ORDER BY id"),
    dlq = helper.query(dsn, "SELECT id, queue FROM celers_dead_letter_queue ORDER BY id"),
    results = helper.query(dsn, "SELECT task_id, queue FROM celers_results ORDER BY task_id"),
  }
end

describe("bin/celers administration", function()
  setup(function()
    ok("migrate")
  end)

  before_each(function()
    helper.query(dsn, "DELETE FROM celers_tasks; DELETE FROM celers_dead_letter_queue; DELETE FROM celers_results;"
      .. " DELETE FROM celers_queue_pauses")
  end)

  -- two queues with tasks in several states, a DLQ entry and a result in each
  local function two_queues()
    for _, queue in ipairs { "keep", "scratch" } do
      for i = 1, 3 do ok("--queue " .. queue .. " enqueue job " .. i) end
      ok("--queue " .. queue .. " enqueue later x --delay 3600")
      local id = ok("--queue " .. queue .. " enqueue other y"):match("%S+")
      helper.query(dsn, "UPDATE celers_tasks SET state = 'completed', completed_at = NOW(6) WHERE id = " .. q(id))
      helper.query(dsn, "INSERT INTO celers_dead_letter_queue (id, task_id, task_name, payload, retry_count, "
        .. "max_retries, queue, failed_at, created_at) VALUES (UUID(), UUID(), 'dead', 'x', 4, 3, " .. q(queue)
        .. ", NOW(6), NOW(6))")
      helper.query(dsn, "INSERT INTO celers_results (id, task_id, task_name, result, state, queue, created_at) "
        .. "VALUES (UUID(), " .. q(id) .. ", 'other', 'r', 'success', " .. q(queue) .. ", NOW(6))")
    end
  end

  describe("purge", function()
    it("of one queue leaves the other queues, the DLQ and the results alone", function()
      two_queues()
      local before = snapshot("WHERE queue = 'keep'")
      local code, out, err = celers("--queue scratch purge --all")
      assert.equal(2, code)
      assert.matches("would delete 3 pending tasks from queue scratch", out, 1, true)
      assert.matches("would delete 1 scheduled tasks from queue scratch", out, 1, true)
      assert.matches("would delete 1 completed tasks from queue scratch", out, 1, true)
      assert.is_nil(out:find("queue keep", 1, true))
      assert.matches("nothing deleted: add --yes", err, 1, true)
      assert.matches("Usage: celers purge", err, 1, true)
      assert.equal(5, n("SELECT COUNT(*) FROM celers_tasks WHERE queue = 'scratch'"))

      out = ok("--queue scratch purge --all --yes")
      assert.matches("purged 5 tasks from queue scratch", out, 1, true)
      assert.equal(0, n("SELECT COUNT(*) FROM celers_tasks WHERE queue = 'scratch'"))
      assert.same(before, snapshot("WHERE queue = 'keep'"))
      -- the DLQ and results of the purged queue too: purge deletes tasks only
      assert.equal(2, n("SELECT COUNT(*) FROM celers_dead_letter_queue"))
      assert.equal(2, n("SELECT COUNT(*) FROM celers_results"))
    end)

    it("by state and by task name counts first and stays in the queue", function()
      two_queues()
      local code, out = celers("--queue scratch purge --task-name job")
      assert.equal(2, code)
      assert.matches("would delete 3 pending 'job' tasks from queue scratch", out, 1, true)
      out = ok("--queue scratch purge --task-name job --yes --json")
      assert.same({ purged = { { queue = "scratch", tasks = 3 } } }, cjson.decode(out))
      assert.equal(3, n("SELECT COUNT(*) FROM celers_tasks WHERE queue = 'keep' AND task_name = 'job'"))
      ok("--queue scratch purge --state completed --yes")
      assert.equal(1, n("SELECT COUNT(*) FROM celers_tasks WHERE queue = 'keep' AND state = 'completed'"))
      assert.equal(1, n("SELECT COUNT(*) FROM celers_tasks WHERE queue = 'scratch'"))
      -- nothing to delete: still needs --yes (the same exit code whatever the counts)
      code, out = celers("--queue empty purge --state failed")
      assert.equal(2, code)
      assert.matches("would delete nothing", out, 1, true)
    end)

    it("--all-queues is the only way to reach every queue, and it shows each", function()
      two_queues()
      local code, out = celers("purge --all --all-queues")
      assert.equal(2, code)
      assert.matches("would delete 3 pending tasks from queue keep", out, 1, true)
      assert.matches("would delete 3 pending tasks from queue scratch", out, 1, true)
      assert.equal(10, n("SELECT COUNT(*) FROM celers_tasks"))
      out = ok("purge --all --all-queues --yes")
      assert.matches("purged 5 tasks from queue keep", out, 1, true)
      assert.equal(0, n("SELECT COUNT(*) FROM celers_tasks"))
      assert.equal(2, n("SELECT COUNT(*) FROM celers_dead_letter_queue"))
      assert.equal(2, n("SELECT COUNT(*) FROM celers_results"))
    end)

    it("dlq purge --all deletes the queue's entries only, after showing them", function()
      two_queues()
      local code, out = celers("--queue scratch dlq purge --all")
      assert.equal(2, code)
      assert.matches("would delete 1 DLQ entries from queue scratch", out, 1, true)
      assert.equal(2, n("SELECT COUNT(*) FROM celers_dead_letter_queue"))
      ok("--queue scratch dlq purge --all --yes")
      assert.same({ { "keep" } }, helper.query(dsn, "SELECT queue FROM celers_dead_letter_queue"))
      assert.equal(10, n("SELECT COUNT(*) FROM celers_tasks"))
    end)
  end)

  it("queues lists every queue with its counts, and --json lists are arrays", function()
    local out = ok("queues --json")
    assert.equal("[]\n", out)
    assert.equal('{"purged":[]}\n', ok("--queue none purge --state failed --yes --json"))
    assert.equal("[]\n", ok("tasks list --json"))
    assert.equal("[]\n", ok("dlq list --json"))
    assert.equal("[]\n", ok("workers --json"))
    assert.equal('{"applied":[]}\n', ok("migrate --json"))
    two_queues()
    ok("--queue idle pause")
    local list = cjson.decode(ok("queues --json"))
    assert.equal(3, #list)
    assert.same({ "idle", "keep", "scratch" }, { list[1].queue, list[2].queue, list[3].queue })
    assert.is_true(list[1].paused)
    assert.equal(0, list[1].total)
    assert.equal(3, list[2].pending)
    assert.equal(1, list[2].scheduled)
    assert.equal(1, list[2].completed)
    assert.equal(1, list[2].dlq)
    out = ok("queues")
    assert.matches("QUEUE%s+PAUSED%s+PENDING", out)
    assert.matches("scratch%s+no%s+3%s+1%s+0%s+1", out)
  end)

  it("cancel and retry act on a task of the queue only", function()
    local id = ok("--queue a enqueue job x --delay 3600"):match("%S+")
    local code, _, err = celers("--queue b cancel " .. id)
    assert.equal(1, code)
    assert.matches("is in queue a, not b", err, 1, true)
    code, _, err = celers("--queue b tasks show " .. id)
    assert.equal(1, code)
    assert.matches("is in queue a, not b (use --queue a)", err, 1, true)
    assert.matches("queue%s+a", ok("--queue a tasks show " .. id))
    assert.equal("scheduled", helper.scalar(dsn, "SELECT state FROM celers_tasks WHERE id = " .. q(id)))
    -- retry: a scheduled task becomes due now
    ok("--queue a retry " .. id)
    assert.equal(1, n("SELECT scheduled_at <= NOW(6) FROM celers_tasks WHERE id = " .. q(id)))
    ok("--queue a cancel " .. id)
    assert.equal("cancelled", helper.scalar(dsn, "SELECT state FROM celers_tasks WHERE id = " .. q(id)))
    code, _, err = celers("--queue a cancel " .. id)
    assert.equal(1, code)
    assert.matches("is cancelled: only scheduled, pending or processing", err, 1, true)
    -- retry a cancelled task: pending again and due, attempts kept
    helper.query(dsn, "UPDATE celers_tasks SET retry_count = 2 WHERE id = " .. q(id))
    assert.same({ id = id, queue = "a", requeued = true }, cjson.decode(ok("--queue a retry " .. id .. " --json")))
    assert.same({ { "pending", "2", "NULL", "1" } }, helper.query(dsn, "SELECT state, retry_count, "
      .. "IFNULL(completed_at, 'NULL'), scheduled_at <= NOW(6) FROM celers_tasks WHERE id = " .. q(id)))
    helper.query(dsn, "UPDATE celers_tasks SET state = 'completed' WHERE id = " .. q(id))
    code, _, err = celers("--queue a retry " .. id)
    assert.equal(1, code)
    assert.matches("only scheduled (not yet due), failed or cancelled", err, 1, true)
    code = celers("--queue a cancel 00000000-0000-0000-0000-000000000000")
    assert.equal(1, code)
  end)

  it("runs the maintenance steps on the queue, or on every queue", function()
    for _, queue in ipairs { "m1", "m2" } do
      local done = ok("--queue " .. queue .. " enqueue old x"):match("%S+")
      helper.query(dsn, "UPDATE celers_tasks SET state = 'completed', completed_at = NOW(6) - INTERVAL 2 DAY "
        .. "WHERE id = " .. q(done))
      local stuck = ok("--queue " .. queue .. " enqueue stuck x"):match("%S+")
      helper.query(dsn, "UPDATE celers_tasks SET state = 'processing', retry_count = 1, started_at = NOW(6) - "
        .. "INTERVAL 3 HOUR, lease_expires_at = NOW(6) + INTERVAL 1 HOUR, worker_id = 'gone' WHERE id = " .. q(stuck))
      helper.query(dsn, "INSERT INTO celers_results (id, task_id, task_name, result, state, queue, created_at, "
        .. "completed_at) VALUES (UUID(), " .. q(done) .. ", 'old', 'r', 'success', " .. q(queue)
        .. ", NOW(6) - INTERVAL 9 DAY, NOW(6) - INTERVAL 8 DAY)")
    end
    local out = ok("--queue m1 archive")
    assert.matches("archive m1: archived 1", out, 1, true)
    assert.equal(1, n("SELECT COUNT(*) FROM celers_tasks WHERE state = 'completed' AND queue = 'm2'"))
    assert.equal(1, n("SELECT COUNT(*) FROM celers_task_history WHERE queue = 'm1'"))
    out = ok("--queue m1 recover --stuck-after 3600")
    assert.matches("recover m1: dead lettered 0, requeued 1", out, 1, true)
    assert.equal(1, n("SELECT COUNT(*) FROM celers_tasks WHERE state = 'processing' AND queue = 'm2'"))
    out = ok("--queue m1 prune-results")
    assert.matches("prune-results m1: deleted 1", out, 1, true)
    assert.equal(1, n("SELECT COUNT(*) FROM celers_results WHERE queue = 'm2'"))
    ok("--queue m1 prune-workers --older-than 60")

    local report = cjson.decode(ok("maintain --all-queues --json"))
    local by = {}
    for _, r in ipairs(report) do by[r.step .. "/" .. r.queue] = r end
    assert.equal(1, by["archive/m2"].archived)
    assert.equal(0, by["archive/m1"].archived)
    assert.equal(1, by["recover/m2"].requeued)
    assert.equal(1, by["prune-results/m2"].deleted)
    assert.equal(0, n("SELECT COUNT(*) FROM celers_tasks WHERE state IN ('processing', 'completed')"))
    assert.equal(0, n("SELECT COUNT(*) FROM celers_results"))
  end)

  it("maintain --every repeats until SIGTERM and exits 0", function()
    local o = os.tmpname()
    local pidf = os.tmpname()
    os.execute(("CELERS_LUA=%s CELERS_DSN=%s sh -c 'echo $$ > %s; exec %s --queue m3 maintain --every 0.2' >%s 2>&1 &")
      :format(sh(helper.lua()), sh(dsn), sh(pidf), sh(BIN), sh(o)))
    local deadline = os.time() + 20
    while select(2, read_file(o):gsub("recover m3", "")) < 2 and os.time() < deadline do os.execute("sleep 0.1") end
    local pid = read_file(pidf):match("%d+")
    assert.is_true(select(2, read_file(o):gsub("recover m3", "")) >= 2, read_file(o))
    os.execute("kill -TERM " .. pid)
    deadline = os.time() + 10
    local function alive()
      local r = os.execute("kill -0 " .. pid .. " 2>/dev/null")
      return r == true or r == 0
    end
    while alive() do
      assert.is_true(os.time() < deadline, "maintain did not stop on SIGTERM")
      os.execute("sleep 0.1")
    end
    os.remove(o)
    os.remove(pidf)
  end)

  it("says a malformed DSN in one line (exit 2) and asks for migrate on a bare database", function()
    for _, bad in ipairs { "mysql//nope", "postgres://x@y/z", "mysql://u@h:notaport/db" } do
      local code, out, err = celers("stats", bad)
      assert.equal(2, code, bad)
      assert.equal("", out)
      local first = err:match("^[^\n]*")
      assert.matches("^celers: bad database address", first)
      assert.is_nil(err:find("%.lua:%d+"), err)
      assert.is_nil(err:find("/lua/celers", 1, true), err)
    end
    -- worker (a pool too) and schedule refuse it before starting anything
    local handlers = os.tmpname()
    local f = assert(io.open(handlers, "w"))
    f:write("return { x = function() end }")
    f:close()
    for _, cmd in ipairs { "worker " .. sh(handlers), "worker " .. sh(handlers) .. " --concurrency 2",
                           "schedule " .. sh(handlers) .. " --once" } do
      local code, _, err = celers(cmd, "mysql//nope")
      assert.equal(2, code, cmd .. ": " .. err)
      assert.matches("^celers: bad database address", err)
    end
    os.remove(handlers)
    local bare = helper.fresh_dsn("cli_admin_bare")
    for _, cmd in ipairs { "stats", "queues", "tasks list", "dlq list" } do
      local code, _, err = celers(cmd, bare)
      assert.equal(1, code, cmd)
      assert.matches("run `celers migrate`", err, 1, true)
    end
  end)

  it("make demo ends with commands that show what the demo did", function()
    local demo_dsn = helper.fresh_dsn("cli_admin_demo")
    local code = os.execute(helper.lua_cmd() .. " " .. sh(helper.root .. "/examples/demo.lua") .. " " .. sh(demo_dsn)
      .. " >/dev/null 2>&1")
    assert.is_true(code == true or code == 0)
    helper.query(demo_dsn, "INSERT INTO celers_tasks (id, task_name, payload, state, priority, retry_count, "
      .. "max_retries, queue, created_at, scheduled_at) VALUES (UUID(), 'pool', 'x', 'completed', 0, 1, 3, "
      .. "'pool_demo', NOW(6), NOW(6))") -- what examples/worker_pool.lua leaves behind
    local suggested = {}
    for cmd in read_file(helper.root .. "/scripts/demo.sh"):gmatch('echo "%s+bin/celers ([^"]-)%s%s+[^"]*"') do
      suggested[#suggested + 1] = cmd
    end
    for cmd in read_file(helper.root .. "/scripts/demo.sh"):gmatch('echo "%s+bin/celers ([^"]-)"') do
      if not cmd:find("  ", 1, true) then suggested[#suggested + 1] = cmd end
    end
    assert.is_true(#suggested >= 4, "demo.sh suggests " .. #suggested .. " commands")
    for _, cmd in ipairs(suggested) do
      local rc, out, err = celers(cmd, demo_dsn)
      assert.equal(0, rc, cmd .. ": " .. err)
      -- every suggestion shows demo rows, none an empty listing
      assert.is_truthy(out:find("demo_", 1, true) or out:find("send_email", 1, true)
        or out:find("completed%s+[1-9]"), cmd .. " shows nothing of the demo:\n" .. out)
    end
  end)

  it("refuses wrong arguments of every command with exit 2 and a usage line", function()
    local cases = {
      "migrate extra", "enqueue", "enqueue a b c", "worker", "worker a b", "schedule", "schedule a b",
      "queues extra", "stats extra", "tasks", "tasks list extra", "tasks list --state bogus", "tasks show",
      "tasks show a b", "tasks bogus", "cancel", "cancel a b", "retry", "retry a b", "dlq", "dlq list x",
      "dlq requeue", "dlq requeue a b", "dlq purge", "dlq purge a --all", "dlq list --yes", "pause extra",
      "resume extra", "purge", "purge extra --all", "purge --state bogus", "purge --all --state failed",
      "purge --state", "export", "export a b", "import", "import a b", "import a --on-error maybe",
      "health extra", "workers extra", "workers --stale-after soon", "metrics extra", "archive extra",
      "archive --older-than -1", "recover --stuck-after x", "prune-results extra", "prune-workers --older-than y",
      "maintain extra", "maintain --every 0", "maintain --every x", "stats --all-queues", "frobnicate",
      "--bogus stats",
    }
    for _, c in ipairs(cases) do
      local code, out, err = celers(c)
      assert.equal(2, code, c .. ": " .. out .. err)
      assert.matches("\nUsage: celers", "\n" .. err, 1, true)
      assert.matches("^celers: ", err)
    end
    for _, c in ipairs { "queues", "cancel", "retry", "archive", "recover", "prune-results", "prune-workers",
                         "maintain", "purge", "dlq" } do
      local code, out = celers(c .. " --help")
      assert.equal(0, code, c)
      assert.matches("Usage: celers " .. c, out, 1, true)
    end
    -- and nothing was written by any of them
    assert.equal(0, n("SELECT COUNT(*) FROM celers_tasks"))
  end)
end)
