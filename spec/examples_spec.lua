-- Runs every example against a fresh database and checks exit codes and database effects.
local helper = require "spec.helper"
local proc = require "spec.proc_helper"
local cjson = require "cjson"

local dsn = helper.fresh_dsn("examples")
local sh = helper.shell_quote

local function n(sql) return tonumber(helper.scalar(dsn, sql)) end

local function run_example(name, args)
  local cmd = "CELERS_DSN=" .. sh(dsn) .. " " .. helper.lua_cmd() .. " "
    .. sh(helper.root .. "/examples/" .. name) .. " " .. (args or "")
  return proc.run(cmd)
end

describe("examples", function()
  it("task_producer.lua enqueues single, batch, scheduled, priority, retry and idempotent tasks", function()
    local code, out = run_example("task_producer.lua")
    assert.equal(0, code, out)
    assert.matches("same task", out, 1, true)
    assert.equal(1, n("SELECT COUNT(*) FROM celers_tasks WHERE queue = 'emails' AND task_name = 'send_email'"))
    assert.equal(5, n("SELECT COUNT(*) FROM celers_tasks WHERE task_name = 'resize_image'"))
    assert.equal(1, n("SELECT COUNT(*) FROM celers_tasks WHERE task_name = 'send_reminder' AND scheduled_at > NOW()"))
    assert.equal(1, n("SELECT COUNT(*) FROM celers_tasks WHERE task_name = 'monthly_report' "
      .. "AND scheduled_at = '2030-01-01 00:00:00'"))
    assert.equal(1, n("SELECT COUNT(*) FROM celers_tasks WHERE task_name = 'charge_card' AND priority = 10"))
    assert.equal(1, n("SELECT COUNT(*) FROM celers_tasks WHERE task_name = 'sync_crm' AND max_retries = 8 "
      .. "AND timeout_seconds = 120"))
    assert.equal(1, n("SELECT COUNT(*) FROM celers_tasks WHERE task_name = 'invoice'"))
    assert.matches("queue emails%s+pending 1", out)
  end)

  it("worker_pool.lua drains its queue with three processes and stops them cleanly", function()
    local code, out = run_example("worker_pool.lua")
    assert.equal(0, code, out)
    assert.matches("done: completed 30, pending 0", out, 1, true)
    assert.equal(30, n("SELECT COUNT(*) FROM celers_tasks WHERE queue = 'pool_demo' AND state = 'completed'"))
    assert.equal(30, n("SELECT COUNT(*) FROM celers_results WHERE state = 'success'"))
    assert.is_true(n("SELECT COUNT(DISTINCT worker_id) FROM celers_tasks WHERE queue = 'pool_demo'") >= 2)
    assert.matches("workers alive 3", out, 1, true)
  end)

  it("circuit_breaker.lua goes through every state and enqueues through a guarded broker", function()
    local code, out = run_example("circuit_breaker.lua")
    assert.equal(0, code, out)
    for _, t in ipairs { "closed -> open", "open -> half_open", "half_open -> closed", "circuit_open" } do
      assert.matches(t, out, 1, true)
    end
    assert.equal(1, n("SELECT COUNT(*) FROM celers_tasks WHERE task_name = 'cb_demo'"))
  end)

  it("bulk_import_export.lua backs up, empties and restores a queue", function()
    local file = os.tmpname()
    local code, out = run_example("bulk_import_export.lua", sh(file))
    assert.equal(0, code, out)
    assert.matches("restored 1000 tasks (0 bad lines)", out, 1, true)
    assert.matches("second import: 0 new, 1000 already there", out, 1, true)
    assert.equal(1000, n("SELECT COUNT(*) FROM celers_tasks WHERE queue = 'bulk_demo' AND state = 'pending'"))
    -- the file holds the header and a line per task
    local lines = 0
    for _ in io.lines(file) do lines = lines + 1 end
    assert.equal(1001, lines)
    os.remove(file)
  end)

  it("recurring_tasks.lua: three schedulers, each occurrence enqueued once", function()
    local code, out = run_example("recurring_tasks.lua")
    assert.equal(0, code, out)
    local seen, created = out:match("(%d+) occurrences seen by three schedulers, (%d+) tasks created")
    assert.truthy(seen, out)
    assert.equal(tonumber(seen), 3 * tonumber(created))
    assert.equal(tonumber(created), n("SELECT COUNT(*) FROM celers_tasks WHERE queue = 'recurring_demo'"))
    assert.equal(tonumber(created), n("SELECT COUNT(*) FROM celers_recurring_runs"))
    assert.equal(1, n("SELECT COUNT(*) FROM celers_tasks WHERE task_name = 'heartbeat'"))
  end)

  it("advanced_retry.lua retries with policies and dead-letters non-retryable errors", function()
    local code, out = run_example("advanced_retry.lua")
    assert.equal(0, code, out)
    assert.matches("flaky_upload: completed after 3 attempts", out, 1, true)
    assert.matches("linear 5 %+ 10n%s+5%.00%s+15%.00%s+25%.00", out)
    assert.equal(1, n("SELECT COUNT(*) FROM celers_tasks WHERE task_name = 'flaky_upload' AND state = 'completed' "
      .. "AND retry_count = 3"))
    assert.equal("bad_input: order_id missing", helper.scalar(dsn,
      "SELECT error_message FROM celers_dead_letter_queue WHERE task_name = 'parse_order'"))
  end)

  describe("nginx", function()
    local have = os.execute("command -v nginx >/dev/null 2>&1 || test -x /usr/sbin/nginx")
    have = (have == true or have == 0) and io.open("/usr/lib/nginx/modules/ngx_http_lua_module.so") ~= nil
      and io.open(helper.root .. "/build/luajit/celers/core.so") ~= nil

    local prefix, port
    local run = helper.root .. "/examples/nginx/run.sh"

    local function nginx(cmd)
      return proc.run("CELERS_DSN=" .. sh(dsn) .. " CELERS_NGINX_PREFIX=" .. sh(prefix) .. " " .. sh(run) .. " " .. cmd)
    end

    local function post(path, body, ctype)
      local out = os.tmpname()
      local code = proc.run(("(curl -s -o %s -w '%%{http_code}' -X POST %s --data-binary %s %s > %s.code)"):format(
        sh(out), ctype and ("-H " .. sh("Content-Type: " .. ctype)) or "", sh(body),
        sh("http://127.0.0.1:" .. port .. path), sh(out)))
      assert.equal(0, code)
      local status = tonumber(proc.read_file(out .. ".code"))
      local reply = proc.read_file(out)
      os.remove(out)
      os.remove(out .. ".code")
      return status, reply
    end

    it("a content_by_lua handler enqueues a task per POST", function()
      if not have then
        pending("nginx with libnginx-mod-http-lua (and the LuaJIT build) is not installed")
        return
      end
      local p = io.popen("mktemp -d")
      prefix = p:read("*l")
      p:close()
      local code, out
      for _ = 1, 5 do -- a free port
        port = math.random(20000, 40000)
        code, out = nginx("start " .. port)
        if code == 0 then break end
      end
      assert.equal(0, code, out)
      local ok, err = pcall(function()
        assert.truthy(proc.wait_for(function()
          return proc.run("curl -sf http://127.0.0.1:" .. port .. "/health") == 0
        end, 10, 0.1))
        local status, reply = post("/enqueue/send_email?priority=4", '{"to":"a@b.c"}', "application/json")
        assert.equal(201, status, reply)
        local id = cjson.decode(reply).id
        assert.same({ { "send_email", '{"to":"a@b.c"}', "json", "4", "pending" } }, helper.query(dsn,
          "SELECT task_name, payload, payload_type, priority, state FROM celers_tasks WHERE id = "
          .. helper.sql_string(id)))
        status, reply = post("/enqueue/plain?queue=web", "just text")
        assert.equal(201, status, reply)
        assert.equal("web", cjson.decode(reply).queue)
        assert.equal("just text", helper.scalar(dsn, "SELECT payload FROM celers_tasks WHERE queue = 'web'"))
        status = post("/enqueue/bad", "{oops", "application/json")
        assert.equal(400, status)
        status = post("/enqueue/bad?priority=x", "x")
        assert.equal(400, status)
      end)
      local scode, sout = nginx("stop")
      local log = proc.read_file(prefix .. "/logs/error.log") or ""
      os.execute("rm -rf " .. sh(prefix))
      assert(ok, tostring(err) .. "\n" .. log)
      assert.equal(0, scode, sout)
    end)
  end)
end)
