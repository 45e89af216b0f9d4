-- The worker registry (celers_workers): heartbeat_worker, list_workers, remove_worker,
-- prune_workers, the worker loop's reports, and `celers workers`.
-- luacheck: max line length 140
local helper = require "spec.helper"
local celers = require "celers"
local worker = require "celers.worker"
local proc = require "spec.proc_helper"

local sqls = helper.sql_string

describe("worker registry", function()
  local dsn, broker

  local function count(where)
    return tonumber(helper.scalar(dsn, "SELECT COUNT(*) FROM celers_workers"
      .. (where and (" WHERE " .. where) or "")))
  end

  setup(function()
    dsn = helper.fresh_dsn("spec_workers_registry")
    broker = assert(celers.connect { dsn = dsn, queue = "reg", worker_id = "w-main" })
    assert(broker:migrate())
  end)

  teardown(function()
    if broker then broker:close() end
  end)

  before_each(function()
    helper.query(dsn, "DELETE FROM celers_workers; DELETE FROM celers_tasks")
  end)

  it("heartbeat_worker inserts a row, then refreshes it in place", function()
    assert.is_true(broker:heartbeat_worker { processed = 3, failed = 1, info = { handlers = { "a" } } })
    local row = helper.query(dsn, "SELECT worker_id, queue, pid, processed, failed, JSON_EXTRACT(info, '$.handlers[0]') "
      .. "FROM celers_workers")[1]
    assert.same({ "w-main", "reg", tostring(celers.core.getpid()), "3", "1", '"a"' }, row)
    local started = helper.scalar(dsn, "SELECT started_at FROM celers_workers")
    helper.query(dsn, "UPDATE celers_workers SET last_seen = NOW(6) - INTERVAL 1 HOUR")
    assert.is_true(broker:heartbeat_worker { processed = 7 })
    assert.equal(1, count())
    assert.equal("7", helper.scalar(dsn, "SELECT processed FROM celers_workers"))
    assert.equal(started, helper.scalar(dsn, "SELECT started_at FROM celers_workers"))
    assert.equal(1, count("last_seen > NOW(6) - INTERVAL 1 MINUTE"))
  end)

  it("list_workers shows the queue's workers, newest first, and filters stale ones", function()
    assert(broker:heartbeat_worker { worker_id = "old" })
    assert(broker:heartbeat_worker { worker_id = "new", processed = 2 })
    assert(broker:with_queue("elsewhere"):heartbeat_worker { worker_id = "other" })
    helper.query(dsn, "UPDATE celers_workers SET last_seen = NOW(6) - INTERVAL 600 SECOND WHERE worker_id = 'old'")
    local all = assert(broker:list_workers())
    assert.equal(2, #all)
    assert.equal("new", all[1].worker_id)
    assert.equal(2, all[1].processed)
    assert.equal("old", all[2].worker_id)
    assert.is_true(all[2].age >= 599)
    local fresh = assert(broker:list_workers { stale_after = 60 })
    assert.equal(1, #fresh)
    assert.equal("new", fresh[1].worker_id)
  end)

  it("prune_workers deletes the queue's stale rows only; remove_worker deletes one", function()
    assert(broker:heartbeat_worker { worker_id = "stale" })
    assert(broker:heartbeat_worker { worker_id = "live" })
    assert(broker:with_queue("elsewhere"):heartbeat_worker { worker_id = "stale-other" })
    helper.query(dsn, "UPDATE celers_workers SET last_seen = NOW(6) - INTERVAL 600 SECOND WHERE worker_id LIKE 'stale%'")
    assert.equal(1, broker:prune_workers(300))
    assert.equal(0, count("worker_id = 'stale'"))
    assert.equal(1, count("worker_id = 'stale-other'"))
    assert.is_true(broker:remove_worker("live"))
    assert.is_false(broker:remove_worker("live"))
    assert.equal(0, count("queue = 'reg'"))
  end)

  it("a running worker reports itself and leaves the registry when it stops", function()
    assert(broker:enqueue("probe", "x"))
    local seen
    local w = worker.new {
      broker = broker, log = false,
      handlers = {
        probe = function()
          seen = helper.query(dsn, "SELECT worker_id, JSON_EXTRACT(info, '$.handlers[0]') FROM celers_workers")
        end,
      },
    }
    w:run { idle_exit = 0, trap_signals = false }
    assert.same({ { "w-main", '"probe"' } }, seen)
    assert.equal(0, count())
  end)

  it("celers workers lists them; --prune deletes stale rows", function()
    assert(broker:heartbeat_worker { worker_id = "cli-live", processed = 5 })
    assert(broker:heartbeat_worker { worker_id = "cli-stale" })
    helper.query(dsn, "UPDATE celers_workers SET last_seen = NOW(6) - INTERVAL 600 SECOND WHERE worker_id = 'cli-stale'")
    local prefix = "CELERS_LUA=" .. helper.shell_quote(helper.lua()) .. " CELERS_DSN=" .. helper.shell_quote(dsn)
    local bin = helper.shell_quote(helper.root .. "/bin/celers")
    local code, out = proc.run(prefix .. " " .. bin .. " workers --queue reg")
    assert.equal(0, code)
    assert.truthy(out:find("cli-live", 1, true))
    assert.truthy(out:find("cli-stale", 1, true))
    code, out = proc.run(prefix .. " " .. bin .. " workers --queue reg --prune 300 --json")
    assert.equal(0, code)
    local list = celers.json.decode(out)
    assert.equal(1, #list)
    assert.equal("cli-live", list[1].worker_id)
    assert.equal(0, count("worker_id = " .. sqls("cli-stale")))
    code = proc.run(prefix .. " " .. bin .. " workers --stale-after x")
    assert.equal(2, code)
  end)

  it("raises on bad arguments and returns nil, err when the table is gone", function()
    assert.has_error(function() broker:heartbeat_worker { processed = "many" } end,
      "celers: heartbeat_worker: 'processed' must be an integer (got string)")
    assert.has_error(function() broker:heartbeat_worker { bogus = 1 } end,
      "celers: heartbeat_worker: unknown option 'bogus'")
    assert.has_error(function() broker:prune_workers(-1) end,
      "celers: prune_workers: 'older_than_s' must not be negative")
    assert.has_error(function() broker:list_workers { stale_after = -1 } end)
    local b2 = assert(celers.connect { dsn = dsn, queue = "reg" })
    helper.query(dsn, "RENAME TABLE celers_workers TO celers_workers_away")
    local ok, err = b2:heartbeat_worker()
    helper.query(dsn, "RENAME TABLE celers_workers_away TO celers_workers")
    assert.is_nil(ok)
    assert.equal("sql", err.code)
    assert.truthy(tostring(err):find("^celers: sql: "))
    b2:close()
  end)
end)
