-- scripts/backup.sh and scripts/restore.sh: back up a queue with pending, scheduled and
-- dead-lettered tasks and results, drop the database, restore it, find every row again.
local helper = require "spec.helper"
local celers = require "celers"

local dsn = helper.fresh_dsn("backup")
local sh = helper.shell_quote

local function run(cmd)
  local p = io.popen(cmd .. " 2>&1; echo \"rc=$?\"")
  local out = p:read("*a")
  p:close()
  local rc = tonumber(out:match("rc=(%d+)%s*$"))
  return rc, out:gsub("rc=%d+%s*$", "")
end

-- every row of every celers table, as text, in a stable order
local function snapshot()
  local snap = {}
  for _, t in ipairs {
    { "celers_tasks", "id, task_name, HEX(payload), state, priority, retry_count, max_retries, created_at, "
      .. "scheduled_at, started_at, completed_at, worker_id, error_message, metadata, queue, claim_id, "
      .. "lease_expires_at, timeout_seconds, idempotency_key, payload_type" },
    { "celers_dead_letter_queue", "id, task_id, task_name, HEX(payload), retry_count, error_message, "
      .. "failed_at, metadata, queue, priority, max_retries, payload_type, created_at" },
    { "celers_results", "id, task_id, task_name, HEX(result), error_message, state, created_at, "
      .. "completed_at, expires_at, queue, result_type" },
    { "celers_migrations", "*" },
    { "celers_queue_pauses", "*" },
  } do
    snap[t[1]] = helper.query(dsn, ("SELECT %s FROM %s ORDER BY 1"):format(t[2], t[1]))
  end
  return snap
end

describe("backup and restore", function()
  local dir = os.tmpname()
  os.remove(dir)

  teardown(function() os.execute("rm -rf " .. sh(dir)) end)

  it("restores every row of a dropped database", function()
    local b = assert(celers.connect(dsn .. "&queue=bq"))
    assert(b:migrate())
    local pending = assert(b:enqueue("p", { n = 1 }, { priority = 4, metadata = { m = "x" } }))
    assert(b:enqueue("bin", "\0\1\2\255"))
    local later = assert(b:enqueue_after("s", "later", 86400))
    assert(b:enqueue("d", "dead", { max_retries = 0 }))
    local t = assert(b:dequeue())
    assert.equals(pending, t.id)
    assert(b:ack(t))
    b:store_result(pending, { task_name = "p", result = { ok = true }, ttl = 86400 })
    local t2 = assert(b:dequeue())
    assert.equals("bin", t2.name)
    assert.is_true((b:reject(t2, { requeue = false, error = "gave up" })))
    assert.equals("d", assert(b:dequeue()).name) -- left processing
    b:with_queue("paused"):pause()
    b:close()

    local before = snapshot()
    assert.equals(1, #before.celers_dead_letter_queue)
    assert.equals(1, #before.celers_results)
    assert.equals(3, #before.celers_tasks)

    local rc, out = run(sh(helper.root .. "/scripts/backup.sh") .. " " .. sh(dsn) .. " " .. sh(dir) .. " 3")
    assert.equals(0, rc, out)
    local file = out:match("(%S+%.sql%.gz)")
    assert.is_string(file, out)

    helper.query(dsn, "DROP DATABASE celers_t_backup")
    assert.has_error(function() helper.query(dsn, "SELECT 1 FROM celers_tasks") end)

    rc, out = run(sh(helper.root .. "/scripts/restore.sh") .. " " .. sh(dsn) .. " " .. sh(file))
    assert.equals(0, rc, out)
    assert.same(before, snapshot())
    assert.equals("1", helper.scalar(dsn, "SELECT COUNT(*) FROM information_schema.routines "
      .. "WHERE routine_schema = 'celers_t_backup' AND routine_name = 'celers_ack_and_claim'"))

    -- and the broker carries on where it stopped
    b = assert(celers.connect(dsn .. "&queue=bq"))
    assert.same({}, b:migrate())
    local s = assert(b:get_statistics())
    assert.same({ 0, 1, 1, 1, 1 }, { s.pending, s.scheduled, s.processing, s.completed, s.dlq })
    assert.same({ ok = true }, b:get_result(pending).result)
    assert.equals(later, b:list_scheduled_tasks()[1].id)
    assert.is_true(b:with_queue("paused"):is_paused())
    local dl = b:list_dlq()[1]
    assert.equals("\0\1\2\255", dl.payload)
    local id = assert(b:requeue_from_dlq(dl.id))
    assert.equals("\0\1\2\255", b:get_task(id).payload)
    b:close()
  end)

  it("keeps only the newest backups", function()
    local made = {}
    for i = 1, 4 do
      local rc, out = run(sh(helper.root .. "/scripts/backup.sh") .. " " .. sh(dsn) .. " " .. sh(dir) .. " 2")
      assert.equals(0, rc, out)
      made[i] = out:match("(%S+%.sql%.gz)")
    end
    local rc, out = run("ls -1 " .. sh(dir) .. "/celers-celers_t_backup-*.sql.gz")
    assert.equals(0, rc)
    local left = {}
    for f in out:gmatch("[^\n]+") do left[#left + 1] = f end
    table.sort(left)
    assert.same({ made[3], made[4] }, left)
  end)

  it("fails cleanly on bad input", function()
    local rc = run(sh(helper.root .. "/scripts/backup.sh") .. " not-a-dsn " .. sh(dir))
    assert.not_equals(0, rc)
    rc = run(sh(helper.root .. "/scripts/restore.sh") .. " " .. sh(dsn) .. " /nonexistent.sql.gz")
    assert.not_equals(0, rc)
    local rc2, out = run(sh(helper.root .. "/scripts/backup.sh") .. " "
      .. sh(helper.with_database(dsn, "celers_t_backup_empty")) .. " " .. sh(dir))
    assert.not_equals(0, rc2, out)
    assert.not_matches("celers:celers", out) -- no password in messages
  end)
end)
