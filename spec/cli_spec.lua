-- bin/celers against the test database: every command, exit codes, effects in the database.
local helper = require "spec.helper"
local proc = require "spec.proc_helper"
local cjson = require "cjson"

local dsn = helper.fresh_dsn("cli")
local q = helper.sql_string
local sh = helper.shell_quote

local BIN = helper.root .. "/bin/celers"

-- run bin/celers with the spec's interpreter; returns exit code, output (stdout + stderr)
local function celers(args, env)
  local prefix = "CELERS_LUA=" .. sh(helper.lua()) .. " CELERS_DSN=" .. sh(env and env.dsn or dsn)
  return proc.run(prefix .. " " .. sh(BIN) .. " " .. args)
end

local function n(sql) return tonumber(helper.scalar(dsn, sql)) end

local function tmpfile(content)
  local p = os.tmpname()
  local f = assert(io.open(p, "w"))
  f:write(content)
  f:close()
  return p
end

describe("bin/celers", function()
  it("migrates, and says so when there is nothing to do", function()
    local code, out = celers("migrate")
    assert.equal(0, code, out)
    assert.matches("applied 001_initial_schema", out, 1, true)
    assert.equal(1, n("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() "
      .. "AND table_name = 'celers_tasks'"))
    code, out = celers("migrate")
    assert.equal(0, code)
    assert.matches("up to date", out, 1, true)
  end)

  it("has --help for every command", function()
    for _, c in ipairs { "migrate", "enqueue", "worker", "schedule", "stats", "tasks", "dlq", "pause",
                         "resume", "purge", "export", "import", "health", "metrics" } do
      local code, out = celers(c .. " --help")
      assert.equal(0, code, c)
      assert.matches("Usage: celers " .. c, out, 1, true)
    end
    local code, out = celers("--help")
    assert.equal(0, code)
    assert.matches("Commands:", out, 1, true)
  end)

  it("rejects bad input with a clear message and exit code 2", function()
    local cases = {
      { "frobnicate", "unknown command 'frobnicate'" },
      { "enqueue", "enqueue needs a task NAME" },
      { "enqueue x --priority high", "--priority must be an integer" },
      { "enqueue x --nope", "unknown option --nope for 'enqueue'" },
      { "enqueue x notjson --json-payload", "not a JSON object" },
      { "tasks", "tasks needs 'list' or 'show ID'" },
      { "purge --all", "add --yes" },
      { "purge --state nonsense", "--state must be" },
      { "import", "import needs a FILE" },
      { "", "Usage: celers" },
    }
    for _, c in ipairs(cases) do
      local code, out = celers(c[1])
      assert.equal(2, code, c[1] .. ": " .. out)
      assert.matches(c[2], out, 1, true)
    end
    local code, out = proc.run("env -u CELERS_DSN CELERS_LUA=" .. sh(helper.lua()) .. " " .. sh(BIN) .. " stats")
    assert.equal(2, code)
    assert.matches("no database: give --dsn or set CELERS_DSN", out, 1, true)
    -- a runtime failure is exit code 1, and the password is not shown
    code, out = celers("--dsn " .. sh("mysql://nobody:sekrit@127.0.0.1:1/none") .. " stats")
    assert.equal(1, code)
    assert.matches("celers: ", out, 1, true)
    assert.is_nil(out:find("sekrit", 1, true))
  end)

  it("enqueues with options, lists, shows and counts tasks", function()
    local code, out = celers("enqueue send_email " .. sh('{"to":"a@b.c"}')
      .. " --json-payload --priority 5 --max-retries 7 --delay 600 --metadata " .. sh('{"tenant":"x"}'))
    assert.equal(0, code, out)
    local id = out:match("^(%S+)\n$")
    assert.equal(36, #id)
    assert.same({ { "send_email", '{"to":"a@b.c"}', "json", "5", "7", "x", "1" } }, helper.query(dsn,
      "SELECT task_name, payload, payload_type, priority, max_retries, JSON_VALUE(metadata, '$.tenant'), "
      .. "scheduled_at > NOW(6) + INTERVAL 500 SECOND FROM celers_tasks WHERE id = " .. q(id)))
    code, out = celers("--queue other enqueue plain 'hello world' --json")
    assert.equal(0, code, out)
    local r = cjson.decode(out)
    assert.equal("other", r.queue)
    assert.equal("hello world", helper.scalar(dsn, "SELECT payload FROM celers_tasks WHERE id = " .. q(r.id)))

    code, out = celers("tasks list")
    assert.equal(0, code, out)
    assert.matches("ID%s+NAME%s+STATE", out)
    assert.matches(id:gsub("%-", "%%-") .. "%s+send_email%s+scheduled%s+5", out)
    assert.is_nil(out:find("plain", 1, true)) -- other queue
    code, out = celers("tasks show " .. id)
    assert.equal(0, code, out)
    assert.matches("max_retries%s+7", out)
    code, out = celers("tasks show " .. id .. " --json")
    assert.equal(0, code, out)
    assert.equal(7, cjson.decode(out).max_retries)
    code = celers("tasks show 00000000-0000-0000-0000-000000000000")
    assert.equal(1, code)

    code, out = celers("stats --json")
    assert.equal(0, code, out)
    local st = cjson.decode(out)
    assert.equal(0, st.pending)
    assert.equal(1, st.scheduled)
    code, out = celers("stats")
    assert.equal(0, code)
    assert.matches("pending%s+0", out)
    assert.matches("scheduled%s+1", out)
  end)

  it("pauses and resumes the queue for every worker", function()
    local code, out = celers("--queue reports pause")
    assert.equal(0, code, out)
    assert.equal(1, n("SELECT COUNT(*) FROM celers_queue_pauses WHERE queue = 'reports'"))
    code, out = celers("--queue reports stats")
    assert.equal(0, code, out)
    assert.matches("(paused)", out, 1, true)
    code = celers("--queue reports resume")
    assert.equal(0, code)
    assert.equal(0, n("SELECT COUNT(*) FROM celers_queue_pauses"))
  end)

  it("runs a worker from a file of handlers (one process and a pool)", function()
    helper.query(dsn, "DELETE FROM celers_tasks")
    local handlers = tmpfile([[
      return {
        double = function(p) return p.n * 2 end,
        broken = function() error({ message = "broken on purpose", retryable = false }) end,
      }
    ]])
    for i = 1, 6 do celers("enqueue double " .. sh('{"n":' .. i .. '}') .. " --json-payload") end
    celers("enqueue broken x")
    local code, out = celers("worker " .. sh(handlers) .. " --idle-exit 0 --batch 3 --store-results")
    assert.equal(0, code, out)
    assert.matches("processed 7", out, 1, true)
    assert.equal(6, n("SELECT COUNT(*) FROM celers_tasks WHERE task_name = 'double' AND state = 'completed'"))
    assert.equal(1, n("SELECT COUNT(*) FROM celers_dead_letter_queue WHERE error_message = 'broken on purpose'"))
    assert.equal(6, n("SELECT COUNT(*) FROM celers_results WHERE state = 'success'"))

    for i = 1, 20 do celers("enqueue double " .. sh('{"n":' .. i .. '}') .. " --json-payload") end
    code, out = celers("worker " .. sh(handlers) .. " --concurrency 3 --idle-exit 0.5")
    assert.equal(0, code, out)
    assert.equal(26, n("SELECT COUNT(*) FROM celers_tasks WHERE state = 'completed'"))
    assert.is_true(n("SELECT COUNT(DISTINCT worker_id) FROM celers_tasks WHERE state = 'completed'") >= 2)

    code, out = celers("worker /nonexistent.lua")
    assert.equal(1, code)
    assert.matches("cannot load", out, 1, true)
    os.remove(handlers)
  end)

  it("lists, requeues and purges the dead-letter queue", function()
    local code, out = celers("dlq list --json")
    assert.equal(0, code, out)
    local list = cjson.decode(out)
    assert.equal(1, #list)
    local entry = list[1]
    code, out = celers("dlq list")
    assert.equal(0, code, out)
    assert.matches("broken on purpose", out, 1, true)
    code, out = celers("dlq requeue " .. entry.id .. " --json")
    assert.equal(0, code, out)
    local requeued = cjson.decode(out).task_id
    assert.equal(0, n("SELECT COUNT(*) FROM celers_dead_letter_queue"))
    assert.equal("broken", helper.scalar(dsn, "SELECT task_name FROM celers_tasks WHERE state = 'pending' AND id = "
      .. q(requeued)))
    code = celers("dlq requeue " .. entry.id)
    assert.equal(1, code)
    -- back to the DLQ, then purged
    local handlers = tmpfile("return { broken = function() error({ message = 'again', retryable = false }) end }")
    celers("worker " .. sh(handlers) .. " --idle-exit 0")
    assert.equal(1, n("SELECT COUNT(*) FROM celers_dead_letter_queue"))
    code = celers("dlq purge")
    assert.equal(2, code)
    code, out = celers("dlq purge --all --yes")
    assert.equal(0, code, out)
    assert.matches("purged 1", out, 1, true)
    assert.equal(0, n("SELECT COUNT(*) FROM celers_dead_letter_queue"))
    os.remove(handlers)
  end)

  it("exports and imports, keeping the rows", function()
    local path = os.tmpname()
    local code, out = celers("export " .. sh(path) .. " --state completed --results")
    assert.equal(0, code, out)
    -- only the first worker run stored results (--store-results)
    assert.matches("exported 26 tasks, 0 DLQ entries, 6 results", out, 1, true)
    helper.query(dsn, "CREATE TABLE snap AS SELECT * FROM celers_tasks WHERE state = 'completed';"
      .. " DELETE FROM celers_tasks; DELETE FROM celers_results")
    code, out = celers("import " .. sh(path) .. " --json")
    assert.equal(0, code, out)
    local r = cjson.decode(out)
    assert.equal(26, r.inserted)
    assert.equal(6, r.results)
    assert.equal(26, n("SELECT COUNT(*) FROM snap s JOIN celers_tasks t ON t.id = s.id AND t.payload = s.payload "
      .. "AND t.priority = s.priority AND t.scheduled_at = s.scheduled_at"))
    code, out = celers("import " .. sh(path))
    assert.equal(0, code)
    assert.matches("imported 0 new tasks, 26 existed already, 0 bad lines", out, 1, true)
    -- bad lines: reported with their numbers; abort gives exit code 1
    local bad = tmpfile('{"kind":"task"}\nnot json\n')
    code, out = celers("import " .. sh(bad))
    assert.equal(0, code)
    assert.matches("line 1: 'id' must be", out, 1, true)
    assert.matches("line 2: not JSON", out, 1, true)
    code, out = celers("import " .. sh(bad) .. " --on-error abort")
    assert.equal(1, code)
    assert.matches("line 1:", out, 1, true)
    os.remove(path)
    os.remove(bad)
  end)

  it("purges by state and name", function()
    celers("enqueue leftover x")
    local code, out = celers("purge --task-name leftover --yes")
    assert.equal(0, code, out)
    assert.matches("purged 1 tasks", out, 1, true)
    code, out = celers("purge --state pending --yes")
    assert.equal(0, code, out)
    assert.equal(0, n("SELECT COUNT(*) FROM celers_tasks WHERE state = 'pending' AND queue = 'default'"))
    code = celers("purge --all --yes")
    assert.equal(0, code)
    assert.equal(0, n("SELECT COUNT(*) FROM celers_tasks WHERE queue = 'default'"))
  end)

  it("reports health and metrics", function()
    local code, out = celers("health --json")
    assert.equal(0, code, out)
    assert.is_true(cjson.decode(out).healthy)
    celers("enqueue m x")
    code, out = celers("metrics")
    assert.equal(0, code, out)
    assert.matches('celers_queue_size{queue="default"} 1', out, 1, true)
  end)

  it("runs the scheduler once from a file of schedules", function()
    helper.query(dsn, "DELETE FROM celers_tasks")
    local file = tmpfile([[
      return { { name = "nightly", cron = "0 3 * * *", task = "nightly_report", payload = { full = true } },
               { name = "often", every = 60, task = "ping" } }
    ]])
    local now = 1709182800 + 3 * 3600 + 30 -- 2024-02-29 03:00:30 UTC
    local code, out = celers("schedule " .. sh(file) .. " --once --now " .. now)
    assert.equal(0, code, out)
    assert.matches("nightly", out, 1, true)
    assert.equal(1, n("SELECT COUNT(*) FROM celers_tasks WHERE task_name = 'nightly_report'"))
    assert.equal(1, n("SELECT COUNT(*) FROM celers_tasks WHERE task_name = 'ping'"))
    code, out = celers("schedule " .. sh(file) .. " --once --now " .. now)
    assert.equal(0, code)
    assert.matches("already enqueued", out, 1, true)
    assert.equal(2, n("SELECT COUNT(*) FROM celers_tasks"))
    local badf = tmpfile("return { { name = 'x', cron = 'not cron', task = 't' } }")
    code, out = celers("schedule " .. sh(badf) .. " --once")
    assert.equal(2, code)
    assert.matches("bad schedules", out, 1, true)
    os.remove(file)
    os.remove(badf)
  end)
end)
