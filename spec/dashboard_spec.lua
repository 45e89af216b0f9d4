-- The dashboard in a real browser: Debian's chromium, headless, driven by spec/dashboard_spec.js
-- (playwright-core in build/npm). Seeds a database, serves the dashboard through the example
-- nginx and celers.nginx, and checks that the pages show what the database holds, that the
-- pause / requeue / cancel buttons change the database, that an XSS attempt shows as text, and
-- that the page refreshes itself. Screenshots of every page go to build/screenshots/.
local helper = require "spec.helper"
local proc = require "spec.proc_helper"
local ngx_helper = require "spec.nginx_helper"
local cjson = require "cjson"
local celers = require "celers"

local ROOT = helper.root
local SHOTS = ROOT .. "/build/screenshots"
local NODE_MODULES = ROOT .. "/build/npm/node_modules"
local TOKEN = "dash-t0ken"
local XSS_NAME = "<script>window.__xss=true;alert(1)</script>"
local XSS_PAYLOAD = '<img src=x onerror="window.__xss=true"><script>window.__xss=true</script>'

local function exists(path)
  local f = io.open(path)
  if f then f:close() end
  return f ~= nil
end

local function missing()
  local why = ngx_helper.missing()
  if why then return why end
  if not exists("/usr/bin/chromium") then return "chromium is not installed (scripts/deps.sh installs it)" end
  if proc.run("command -v node >/dev/null 2>&1") ~= 0 then return "node is not installed" end
  if not exists(NODE_MODULES .. "/playwright-core/package.json") then
    return "playwright-core is not installed in build/npm (scripts/npm-deps.sh)"
  end
  return nil
end

local sh = helper.shell_quote

local function query_counts(dsn)
  local counts = {}
  for _, r in ipairs(helper.query(dsn, "SELECT queue, state, COUNT(*) FROM celers_tasks GROUP BY queue, state")) do
    counts[r[1]] = counts[r[1]] or {}
    counts[r[1]][r[2]] = tonumber(r[3])
  end
  for _, r in ipairs(helper.query(dsn, "SELECT queue, COUNT(*) FROM celers_dead_letter_queue GROUP BY queue")) do
    counts[r[1]] = counts[r[1]] or {}
    counts[r[1]].dlq = tonumber(r[2])
  end
  return counts
end

describe("the dashboard in chromium", function()
  local why = missing()
  if why then
    it("loads, shows the database and acts on it", function() pending(why) end)
    return
  end

  it("loads, shows the database and acts on it", function()
    local dsn = helper.fresh_dsn("dashboard")
    local b = assert(celers.connect(dsn))
    assert(b:migrate())
    local ids = {}
    for i = 1, 30 do
      ids[i] = assert(b:enqueue("send_email", { to = "user" .. i .. "@example.org", n = i },
        { metadata = { source = "web" } }))
    end
    local xss_id = assert(b:enqueue(XSS_NAME, XSS_PAYLOAD))
    for _ = 1, 5 do assert(b:ack(assert(b:dequeue()))) end
    local dead = assert(b:dequeue())
    assert(b:reject(dead, { requeue = false, error = "<b>smtp down</b>" }))
    local reports = b:with_queue("reports")
    assert(reports:enqueue_after("build_report", { month = 11 }, 3600))
    assert(reports:pause())
    assert(b:heartbeat_worker { worker_id = "web-1", hostname = "host-a", pid = 4242 })
    local now = os.time()
    assert(b:enqueue_recurring("nightly", now - 120, "cleanup", "{}"))
    assert(b:enqueue_recurring("nightly", now - 60, "cleanup", "{}"))
    local cancel_id = ids[20]

    os.execute("mkdir -p " .. sh(SHOTS))
    os.remove(SHOTS .. "/ready-for-refresh")
    local profile = io.popen("mktemp -d"):read("*l")
    local server = ngx_helper.start { dsn = dsn, workers = 1, token = TOKEN }
    local out, rcfile = os.tmpname(), os.tmpname()
    os.remove(rcfile)
    local result, err
    local ok, perr = pcall(function()
      local expected = query_counts(dsn)
      local expected_enqueued = tonumber(helper.scalar(dsn,
        "SELECT COUNT(*) FROM celers_tasks WHERE queue = 'default' AND created_at >= NOW(6) - INTERVAL 60 MINUTE"))
      local first = helper.query(dsn, "SELECT id FROM celers_tasks WHERE queue = 'default' ORDER BY id LIMIT 25")
      local second = helper.query(dsn,
        "SELECT id FROM celers_tasks WHERE queue = 'default' ORDER BY id LIMIT 25 OFFSET 25")
      local dlq = helper.query(dsn,
        "SELECT id FROM celers_dead_letter_queue WHERE queue = 'default' ORDER BY failed_at, id")
      local cmd = table.concat({
        "NODE_PATH=" .. sh(NODE_MODULES), "DASH_URL=" .. sh(server.url), "DASH_TOKEN=" .. sh(TOKEN),
        "DASH_SHOTS=" .. sh(SHOTS), "DASH_PROFILE=" .. sh(profile), "DASH_CANCEL_ID=" .. sh(cancel_id),
        "DASH_XSS_ID=" .. sh(xss_id), "timeout 120 node", sh(ROOT .. "/spec/dashboard_spec.js"),
      }, " ")
      os.execute(("(%s >%s 2>&1; echo $? >%s) &"):format(cmd, sh(out), sh(rcfile)))
      -- the browser says when it waits for a change made elsewhere: resume the paused queue
      assert.truthy(proc.wait_for(function()
        return exists(SHOTS .. "/ready-for-refresh") or exists(rcfile)
      end, 120, 0.2), "the browser never got to the auto-refresh step")
      local so_far = proc.read_file(out) or ""
      assert(exists(SHOTS .. "/ready-for-refresh"),
        "the browser stopped early:\n" .. (so_far:match('"error":(.*)') or so_far))
      assert.equal("1", helper.scalar(dsn, "SELECT COUNT(*) FROM celers_queue_pauses WHERE queue = 'default'"))
      assert(b:resume())
      assert.truthy(proc.wait_for(function() return exists(rcfile) end, 60, 0.2), "the browser did not finish")
      local text = proc.read_file(out) or ""
      local line = text:match("RESULT (%b{})")
      assert(line, "no result from the browser:\n" .. text)
      result = cjson.decode(line)
      err = result.error
      assert(err == nil, tostring(err) .. "\n" .. text)
      assert.equal("0", proc.read_file(rcfile):match("%d+"))

      -- what the overview showed is what the database held
      local shown = {}
      for _, q in ipairs(result.overview) do shown[q.queue] = q end
      for queue, counts in pairs(expected) do
        assert.is_table(shown[queue], "queue " .. queue .. " not shown")
        for state, n in pairs(counts) do
          if state ~= "scheduled" then
            assert.equal(n, shown[queue].counts[state], queue .. "/" .. state)
          end
        end
      end
      assert.is_true(shown.reports.paused)
      assert.is_false(shown.default.paused)
      assert.is_true(result.readOnlyButtonsDisabled)
      assert.equal(expected_enqueued, result.throughput.enqueued)
      assert.equal(5, result.throughput.completed)
      assert.equal(1, result.throughput.failed)

      -- the first page of tasks is the first 25 by id, the next page continues after it
      assert.equal(25, #result.tasks)
      for i, r in ipairs(first) do assert.equal(r[1], result.tasks[i].id) end
      assert.equal(#second, #result.page2)
      for i, r in ipairs(second) do assert.equal(r[1], result.page2[i]) end

      -- the XSS attempt is text: same characters, no script ran, no alert
      assert.equal(XSS_NAME, result.xss.name)
      assert.equal(XSS_PAYLOAD, result.xss.payload)
      assert.equal(0, result.xss.scriptElements)
      assert.is_false(result.xss.injected)
      assert.equal("celers dashboard", result.xss.title)
      for _, d in ipairs(result.dialogs) do assert.equal("confirm", d.type, d.message) end
      assert.same({}, result.pageErrors)

      -- DLQ, workers, recurring as stored
      assert.equal(#dlq, #result.dlq)
      assert.equal(dlq[1][1], result.dlq[1])
      assert.same({ { id = "web-1", stale = false } }, result.workers)
      assert.equal("nightly", result.recurring[1][1])
      assert.equal("2", result.recurring[1][5])

      -- the clicks changed the database
      assert.equal("actions unlocked", result.mode)
      assert.is_true(result.pausedShown)
      assert.equal("0", helper.scalar(dsn,
        "SELECT COUNT(*) FROM celers_dead_letter_queue WHERE id = " .. helper.sql_string(result.requeued)))
      -- requeued as a new task (a new id) with the dead letter's payload
      assert.same({ { "pending", "0" } }, helper.query(dsn,
        "SELECT state, retry_count FROM celers_tasks WHERE payload = "
        .. helper.sql_string(dead.body) .. " AND id <> " .. helper.sql_string(dead.id)))
      assert.same({}, result.dlqAfter)
      assert.equal("cancelled",
        helper.scalar(dsn, "SELECT state FROM celers_tasks WHERE id = " .. helper.sql_string(cancel_id)))
      assert.equal("cancelled", result.cancelledShown)
      assert.is_true(result.autoRefreshed)

      -- one screenshot per page
      for _, name in ipairs { "overview", "tasks", "task", "dlq", "workers", "recurring", "after-actions" } do
        local f = io.open(SHOTS .. "/" .. name .. ".png", "rb")
        assert(f, "no screenshot " .. name)
        assert.equal("\137PNG", f:read(4))
        f:close()
      end
    end)
    local log = server.stop()
    b:close()
    os.execute("rm -rf " .. sh(profile))
    os.remove(out)
    os.remove(rcfile)
    assert(ok, tostring(perr) .. "\nnginx log:\n" .. log)
    assert.is_falsy(log:find("exited on signal", 1, true), log)
  end)
end)
