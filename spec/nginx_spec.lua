-- celers.nginx inside a real nginx (Debian's nginx + libnginx-mod-http-lua, LuaJIT build of the
-- module): calls run in the thread pool and reuse its connections, the endpoints answer with
-- JSON or Prometheus text, actions need a credential and a CSRF token, and a hung database
-- never holds up the event loop.
local helper = require "spec.helper"
local proc = require "spec.proc_helper"
local ngx_helper = require "spec.nginx_helper"
local cjson = require "cjson"
local celers = require "celers"

local missing = ngx_helper.missing()
local http = ngx_helper.http
local TOKEN = "t0ken-for-specs"

local function decode(body)
  local ok, v = pcall(cjson.decode, body)
  assert(ok and type(v) == "table", "not a JSON object: " .. tostring(body))
  return v
end

local function count(dsn, where)
  return tonumber(helper.scalar(dsn, "SELECT COUNT(*) FROM celers_tasks WHERE " .. where))
end

describe("celers.nginx", function()
  if missing then
    it("runs inside nginx", function() pending(missing) end)
    return
  end

  local dsn, server

  setup(function()
    dsn = helper.fresh_dsn("nginx")
    local b = assert(celers.connect(dsn))
    assert(b:migrate())
    b:close()
    server = ngx_helper.start { dsn = dsn, workers = 1, token = TOKEN }
  end)

  teardown(function()
    if server then
      local log = server.stop()
      assert.is_falsy(log:find("exited on signal", 1, true), log)
    end
  end)

  local function session()
    local status, body = http(server.url .. "/api/session")
    assert.equal(200, status, body)
    return decode(body)
  end

  local function act(path, body, headers)
    local h = headers or { "Authorization: Bearer " .. TOKEN, "X-CSRF-Token: " .. session().csrf }
    h[#h + 1] = "Content-Type: application/json"
    return http(server.url .. "/api/" .. path, { method = "POST", body = cjson.encode(body or {}), headers = h })
  end

  it("reuses one connection per pool thread: sequential calls share one, concurrent ones at most 4", function()
    local first
    for _ = 1, 10 do
      local status, body = http(server.url .. "/health")
      assert.equal(200, status, body)
      local h = decode(body)
      assert.equal("ok", h.status)
      assert.is_number(h.connection_id)
      first = first or h.connection_id
      assert.equal(first, h.connection_id)
    end
    assert.equal("1", helper.scalar(dsn, "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = " .. first))

    -- 40 enqueues, 16 at a time: all land, over no more connections than the pool has threads
    local code, statuses = proc.run(("seq 1 40 | xargs -P 16 -I{} curl -s -o /dev/null -w '%%{http_code}\\n' -X POST "
      .. "-H 'Content-Type: application/json' --data-binary '{\"n\":{}}' %s"):format(
      helper.shell_quote(server.url .. "/enqueue/pool_task")))
    assert.equal(0, code)
    local _, created = statuses:gsub("201", "")
    assert.equal(40, created, statuses)
    assert.equal(40, count(dsn, "task_name = 'pool_task' AND state = 'pending'"))
    local db = helper.parse_dsn(dsn).database
    local conns = tonumber(helper.scalar(dsn, "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = "
      .. helper.sql_string(db) .. " AND ID <> CONNECTION_ID()"))
    assert.is_true(conns >= 1 and conns <= 4, "connections from nginx: " .. conns)
  end)

  it("serves /metrics and the overview with what the database holds", function()
    local b = assert(celers.connect(dsn))
    b:with_queue("mq"):enqueue("m1", "x")
    b:with_queue("mq"):enqueue("m2", "y")
    b:close()
    local status, text = http(server.url .. "/metrics")
    assert.equal(200, status)
    local pending = helper.scalar(dsn, "SELECT COUNT(*) FROM celers_tasks WHERE queue = 'mq' AND state = 'pending'")
    assert.equal("2", pending)
    assert.truthy(text:find('\ncelers_queue_size{queue="mq"} 2\n', 1, true), text)
    local default_pending = helper.scalar(dsn,
      "SELECT COUNT(*) FROM celers_tasks WHERE queue = 'default' AND state = 'pending'")
    assert.truthy(text:find('\ncelers_queue_size{queue="default"} ' .. default_pending .. "\n", 1, true), text)

    local body
    status, body = http(server.url .. "/api/overview")
    assert.equal(200, status)
    local seen = {}
    for _, q in ipairs(decode(body).queues) do seen[q.queue] = q end
    assert.equal(2, seen.mq.counts.pending)
    assert.equal(tonumber(default_pending), seen.default.counts.pending)
    assert.is_false(seen.mq.paused)
  end)

  it("shows a task's detail: the task, its result and its archived copies", function()
    local b = assert(celers.connect(dsn))
    local q = b:with_queue("detail")
    local id = assert(q:enqueue("archived_one", { n = 1 }))
    local t = assert(q:dequeue())
    assert.equal(id, t.id)
    assert(q:store_result(id, { task_name = "archived_one", status = "success", result = { ok = true } }))
    assert(q:ack(t))
    assert.equal(1, q:archive_completed_tasks(0))
    b:close()
    local status, body = http(server.url .. "/api/task?queue=detail&id=" .. id)
    assert.equal(200, status, body)
    local d = decode(body)
    assert.is_false(d.task) -- archived: no longer in celers_tasks
    assert.equal(1, #d.history)
    assert.equal("completed", d.history[1].state)
    assert.equal(helper.scalar(dsn, "SELECT worker_id FROM celers_task_history WHERE task_id = "
      .. helper.sql_string(id)), d.history[1].worker_id)
    assert.equal("success", d.result.status)
    status, body = http(server.url .. "/api/task?queue=other&id=" .. id)
    assert.equal(200, status, body)
    assert.same({}, decode(body).history) -- another queue's view sees nothing
  end)

  it("answers bad input with 400 and a JSON error, wrong methods with 405, unknown calls with 404", function()
    local cases = {
      { "/api/tasks?state=nope", 400 }, { "/api/tasks?limit=0", 400 }, { "/api/tasks?limit=1.5", 400 },
      { "/api/tasks?queue=a&queue=b", 400 }, { "/api/throughput?minutes=99999", 400 },
      { "/api/task", 400 }, { "/api/dlq?offset=-1", 400 }, { "/api/nothing", 404 }, { "/api/pause", 405 },
      { "/api/tasks?queue=" .. ("q"):rep(300), 400 }, { "/api/tasks?queue=a%00b", 400 },
      { "/api/task?id=" .. ("9"):rep(1000), 400 }, { "/api/tasks?after=x%00y", 400 },
      { "/api/throughput?minutes=1e400", 400 }, { "/api/tasks?limit=9223372036854775808", 400 },
    }
    for _, c in ipairs(cases) do
      local status, body = http(server.url .. c[1])
      assert.equal(c[2], status, c[1] .. " " .. body)
      assert.is_string(decode(body).error.message)
    end
    local status, body = http(server.url .. "/api/tasks", { method = "POST", body = "{}" })
    assert.equal(405, status, body)
    status, body = act("cancel", { queue = "default" })
    assert.equal(400, status, body)
    assert.truthy(decode(body).error.message:find("'id'", 1, true))
    status, body = http(server.url .. "/api/cancel", { method = "POST", body = "{oops",
      headers = { "Authorization: Bearer " .. TOKEN, "X-CSRF-Token: " .. session().csrf,
                  "Content-Type: application/json" } })
    assert.equal(400, status, body)
    status = http(server.url .. "/enqueue/bad",
      { method = "POST", body = "{oops", headers = { "Content-Type: application/json" } })
    assert.equal(400, status)
  end)

  it("needs the credential and a CSRF token for actions, and then changes the database", function()
    local status, body = act("pause", { queue = "guarded" }, {})
    assert.equal(401, status, body)
    status, body = act("pause", { queue = "guarded" },
      { "Authorization: Bearer wrong", "X-CSRF-Token: " .. session().csrf })
    assert.equal(401, status, body)
    status, body = act("pause", { queue = "guarded" }, { "Authorization: Bearer " .. TOKEN })
    assert.equal(403, status, body)
    assert.equal("csrf", decode(body).error.code)
    status, body = act("pause", { queue = "guarded" }, { "Authorization: Bearer " .. TOKEN, "X-CSRF-Token: 1.forged" })
    assert.equal(403, status, body)
    assert.equal("0", helper.scalar(dsn, "SELECT COUNT(*) FROM celers_queue_pauses WHERE queue = 'guarded'"))

    status, body = act("pause", { queue = "guarded" })
    assert.equal(200, status, body)
    assert.equal("1", helper.scalar(dsn, "SELECT COUNT(*) FROM celers_queue_pauses WHERE queue = 'guarded'"))
    status = act("resume", { queue = "guarded" })
    assert.equal(200, status)
    assert.equal("0", helper.scalar(dsn, "SELECT COUNT(*) FROM celers_queue_pauses WHERE queue = 'guarded'"))

    local b = assert(celers.connect(dsn))
    local q = b:with_queue("acts")
    local id3 = assert(q:enqueue("doomed", "z", { max_retries = 0 }))
    local t = assert(q:dequeue())
    assert.equal(id3, t.id)
    q:reject(t, { requeue = false, error = "broken" })
    local id1 = assert(q:enqueue("to_cancel", "x"))
    local id2 = assert(q:enqueue_after("later", "y", 3600))
    b:close()

    status, body = act("cancel", { queue = "acts", id = id1 })
    assert.equal(200, status, body)
    assert.equal("cancelled",
      helper.scalar(dsn, "SELECT state FROM celers_tasks WHERE id = " .. helper.sql_string(id1)))
    status = act("cancel", { queue = "acts", id = "no-such-task" })
    assert.equal(404, status)

    status, body = act("retry", { queue = "acts", id = id2 })
    assert.equal(200, status, body)
    assert.equal("1",
      helper.scalar(dsn, "SELECT scheduled_at <= NOW(6) FROM celers_tasks WHERE id = " .. helper.sql_string(id2)))

    local dlq_id = helper.scalar(dsn, "SELECT id FROM celers_dead_letter_queue WHERE task_name = 'doomed'")
    assert.is_string(dlq_id)
    status, body = act("dlq_requeue", { queue = "acts", id = dlq_id })
    assert.equal(200, status, body)
    assert.equal("0", helper.scalar(dsn, "SELECT COUNT(*) FROM celers_dead_letter_queue WHERE task_name = 'doomed'"))
    assert.equal("pending", helper.scalar(dsn, "SELECT state FROM celers_tasks WHERE task_name = 'doomed'"))
  end)

  it("is read-only without a configured credential", function()
    local ro = ngx_helper.start { dsn = dsn, workers = 1 }
    local ok, err = pcall(function()
      local status, body = http(ro.url .. "/api/session")
      assert.equal(200, status)
      assert.is_false(decode(body).actions)
      status, body = http(ro.url .. "/api/pause", { method = "POST", body = '{"queue":"ro"}',
        headers = { "Authorization: Bearer anything", "Content-Type: application/json" } })
      assert.equal(403, status, body)
      assert.equal("read_only", decode(body).error.code)
      assert.equal("0", helper.scalar(dsn, "SELECT COUNT(*) FROM celers_queue_pauses WHERE queue = 'ro'"))
    end)
    ro.stop()
    assert(ok, err)
  end)

  it("works from a checkout inside a mode-700 folder", function()
    -- the layout run.sh needs, copied under a private folder (as a checkout in a 700 home is)
    local home = io.popen("mktemp -d"):read("*l")
    local co = home .. "/checkout"
    os.execute("chmod 700 " .. helper.shell_quote(home))
    assert.equal(0, (proc.run(("mkdir -p %s/build && cp -r %s/lua %s/dashboard %s/examples %s/scripts %s/"
      .. " && cp -r %s/build/luajit %s/build/"):format(
      helper.shell_quote(co), helper.shell_quote(helper.root), helper.shell_quote(helper.root),
      helper.shell_quote(helper.root), helper.shell_quote(helper.root), helper.shell_quote(co),
      helper.shell_quote(helper.root), helper.shell_quote(co)))))
    local prefix = home .. "/nginx"
    local port = math.random(20000, 45000)
    local env = "CELERS_DSN=" .. helper.shell_quote(dsn) .. " CELERS_NGINX_PREFIX=" .. helper.shell_quote(prefix)
      .. " CELERS_NGINX_WORKERS=1 "
    local code, out = proc.run(env .. helper.shell_quote(co .. "/examples/nginx/run.sh") .. " start " .. port)
    local ok, err = pcall(function()
      assert.equal(0, code, out)
      assert.truthy(proc.wait_for(function()
        return proc.run("curl -sf -o /dev/null http://127.0.0.1:" .. port .. "/ping") == 0
      end, 10, 0.1))
      local status, body = http("http://127.0.0.1:" .. port .. "/health")
      assert.equal(200, status, body)
      status, body = http("http://127.0.0.1:" .. port .. "/enqueue/from_private_home",
        { method = "POST", body = "x" })
      assert.equal(201, status, body)
      assert.equal(1, count(dsn, "task_name = 'from_private_home'"))
      status = http("http://127.0.0.1:" .. port .. "/")
      assert.equal(200, status)
    end)
    proc.run(env .. helper.shell_quote(co .. "/examples/nginx/run.sh") .. " stop")
    os.execute("rm -rf " .. helper.shell_quote(home))
    assert(ok, err)
  end)

  it("keeps the event loop free while the database hangs", function()
    local hung = ngx_helper.hung_listener()
    local password = "never-sh0wn-pw"
    local hung_dsn = ("mysql://celers:%s@127.0.0.1:%d/celers"):format(password, hung.port)
    local srv = ngx_helper.start { dsn = hung_dsn, workers = 1 }
    local ok, err = pcall(function()
      -- 6 enqueues at once: 4 hold the pool's threads, 2 wait for one
      local dir = os.tmpname()
      os.remove(dir)
      os.execute("mkdir " .. helper.shell_quote(dir))
      for i = 1, 6 do
        os.execute(("curl -s -m 30 -o %s/%d.body -w '%%{http_code} %%{time_total}' -X POST --data-binary x %s"
          .. " > %s/%d.meta &"):format(
          helper.shell_quote(dir), i, helper.shell_quote(srv.url .. "/enqueue/stuck"), helper.shell_quote(dir), i))
      end
      proc.sleep(0.3)
      -- an unrelated request on the same (only) worker meanwhile
      local worst = 0
      for _ = 1, 10 do
        local status, body, t = http(srv.url .. "/ping")
        assert.equal(200, status)
        assert.equal("pong\n", body)
        worst = math.max(worst, t)
      end
      assert.is_true(worst < 0.5, ("/ping took %.3f s with the database hung"):format(worst))
      local status, body, t = http(srv.url .. "/health")
      assert.equal(503, status, body)
      assert.is_true(t < 10, "health took " .. t)
      local h = decode(body)
      assert.equal("unavailable", h.status)
      assert.is_falsy(body:find(password, 1, true))

      -- each enqueue fails with a clear code within the short timeouts
      assert.truthy(proc.wait_for(function()
        for i = 1, 6 do
          local m = proc.read_file(dir .. "/" .. i .. ".meta")
          if not m or m == "" then return false end
        end
        return true
      end, 30, 0.2))
      for i = 1, 6 do
        local st, tt = proc.read_file(dir .. "/" .. i .. ".meta"):match("^(%d+) ([%d.]+)")
        local reply = decode(proc.read_file(dir .. "/" .. i .. ".body"))
        assert.equal("503", st)
        assert.is_true(tonumber(tt) < 10, "enqueue took " .. tt)
        assert.truthy(({ connect = true, timeout = true, busy = true, lost = true })[reply.error.code],
          "code " .. tostring(reply.error.code))
      end
      os.execute("rm -rf " .. helper.shell_quote(dir))
      assert.is_falsy(srv.log():find(password, 1, true))
    end)
    srv.stop()
    hung.stop()
    assert(ok, err)
  end)
end)
