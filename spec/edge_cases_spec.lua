-- Edge cases found in review, each checked against the database: undecodable JSON payloads,
-- times past 2038, lease sweeps per queue on a shared connection, ack_batch fencing per row,
-- limits on delays and leases, the worker's lease and unstorable results, float intervals.
-- luacheck: max line length 140
local helper = require "spec.helper"
local celers = require "celers"
local core = require "celers.core"
local worker = require "celers.worker"
local recurring = require "celers.recurring"

local sqls = helper.sql_string

describe("edge cases", function()
  local dsn, broker

  local function scalar(sql) return helper.scalar(dsn, sql) end

  setup(function()
    dsn = helper.fresh_dsn("spec_edge_cases")
    broker = assert(celers.connect { dsn = dsn, queue = "edge", recover_interval = 0 })
    assert(broker:migrate())
  end)

  teardown(function()
    if broker then broker:close() end
  end)

  before_each(function()
    helper.query(dsn, "DELETE FROM celers_tasks; DELETE FROM celers_dead_letter_queue; "
      .. "DELETE FROM celers_results; DELETE FROM celers_recurring_runs")
  end)

  it("a payload marked json that does not decode comes back as its bytes, in an intact task", function()
    local id = assert(broker:enqueue("bad_json", "{oops", { payload_type = "json", metadata = '{"a":1}' }))
    local t = assert(broker:dequeue { lease = 30 })
    assert.equal(id, t.id)
    assert.equal("bad_json", t.name)
    assert.equal("{oops", t.payload)
    assert.equal("{oops", t.body)
    assert.same({ a = 1 }, t.metadata)
    assert.is_true(broker:ack(t))
    id = assert(broker:enqueue("bad_json", "[1,", { payload_type = "json" }))
    local acked, t2 = broker:ack_and_dequeue(nil)
    assert.is_false(acked)
    assert.equal(id, t2.id)
    assert.equal("[1,", t2.payload)
    assert.equal("processing", scalar("SELECT state FROM celers_tasks WHERE id = " .. sqls(id)))
  end)

  it("times past 2038 are stored and read back exactly, and are not due", function()
    local eta = 2200000000.123457
    local id = assert(broker:enqueue_at("far", "x", eta))
    assert.equal("1", scalar("SELECT scheduled_at = TIMESTAMP'1970-01-01 00:00:00' + INTERVAL 2200000000123457 MICROSECOND "
      .. "FROM celers_tasks WHERE id = " .. sqls(id)))
    assert.equal(string.format("%.6f", eta), string.format("%.6f", broker:get_task(id).scheduled_at))
    assert.is_nil(broker:dequeue())
    assert.equal("scheduled", scalar("SELECT state FROM celers_tasks WHERE id = " .. sqls(id)))
  end)

  it("lease sweeps are kept per queue: a busy queue on the same connection does not starve another", function()
    local b = assert(celers.connect { dsn = dsn, queue = "busy", recover_interval = 0.5 })
    local quiet = b:with_queue("quiet")
    local id = assert(quiet:enqueue("t", "x"))
    assert(quiet:dequeue { lease = 0.2 })
    local deadline = core.monotonic() + 1.2
    while core.monotonic() < deadline do
      assert.is_nil(b:dequeue()) -- sweeps "busy" twice a second
      core.sleep(0.1)
    end
    local again = quiet:dequeue { lease = 30 }
    assert.is_table(again)
    assert.equal(id, again.id)
    assert.equal("2", scalar("SELECT retry_count FROM celers_tasks WHERE id = " .. sqls(id)))
    b:close()
  end)

  it("ack_batch fences each row by its own claim", function()
    local id1 = assert(broker:enqueue("t", "1"))
    local stale = assert(broker:dequeue { lease = 0.2 })
    core.sleep(0.4)
    assert(broker:enqueue("t", "2"))
    local fresh = assert(broker:dequeue_batch(2, { lease = 30 })) -- the sweep returns id1 first
    assert.equal(2, #fresh)
    local other
    for _, t in ipairs(fresh) do if t.id ~= id1 then other = t end end
    -- the stale copy of id1 and a fresh task: only the fresh one may be acked
    assert.equal(1, broker:ack_batch { stale, other })
    assert.equal("processing", scalar("SELECT state FROM celers_tasks WHERE id = " .. sqls(id1)))
    assert.equal("completed", scalar("SELECT state FROM celers_tasks WHERE id = " .. sqls(other.id)))
  end)

  it("touch_batch extends every held lease in one call and reports the lost ones", function()
    local id1 = assert(broker:enqueue("t", "1"))
    local stale = assert(broker:dequeue { lease = 0.2 })
    core.sleep(0.4)
    assert(broker:enqueue("t", "2"))
    local fresh = assert(broker:dequeue_batch(2, { lease = 5 }))
    assert.equal(2, #fresh)
    local before = tonumber(scalar("SELECT MAX(TIMESTAMPDIFF(MICROSECOND, NOW(6), lease_expires_at)) FROM celers_tasks"))
    local n, held = broker:touch_batch({ fresh[1], stale, fresh[2] }, 600)
    assert.equal(2, n)
    assert.same({ true, false, true }, held)
    local after = tonumber(scalar("SELECT MIN(TIMESTAMPDIFF(SECOND, NOW(6), lease_expires_at)) FROM celers_tasks "
      .. "WHERE state = 'processing'"))
    assert.is_true(after > 590)
    assert.is_true(before < 6 * 1000000)
    assert.equal(id1, stale.id)
    assert.has_error(function() broker:touch_batch("x") end,
      "celers: touch_batch: 'tasks' must be a list of tasks (got string)")
  end)

  it("refuses delays, leases and times the server's date arithmetic cannot hold", function()
    assert.has_error(function() broker:enqueue("t", "x", { timeout = math.huge }) end,
      "celers: enqueue: 'timeout' must be within 0..315360000")
    assert.has_error(function() broker:enqueue("t", "x", { delay = 1e12 }) end,
      "celers: enqueue: 'delay' must be within 0..315360000")
    assert.has_error(function() broker:enqueue_at("t", "x", 1e13) end,
      "celers: enqueue_at: 'unix_time' must be within 0..253402300799")
    assert.has_error(function() broker:dequeue { lease = math.huge } end,
      "celers: dequeue: 'lease' must be within 0..315360000")
    assert.has_error(function() celers.connect { dsn = dsn, lease = 0 } end)
    assert.equal("0", scalar("SELECT COUNT(*) FROM celers_tasks"))
  end)

  it("the worker heartbeats within the connection's lease, so a long task is not handed out twice", function()
    local b = assert(celers.connect { dsn = dsn, queue = "edge", lease = 1, recover_interval = 0 })
    local thief = assert(celers.connect { dsn = dsn, queue = "edge", recover_interval = 0 })
    local id = assert(b:enqueue("slow", "x"))
    local stolen = 0
    local w = assert(worker.new {
      broker = b, log = false,
      handlers = {
        slow = function(_, ctx)
          local stop = core.monotonic() + 2.5
          while core.monotonic() < stop do
            assert.is_true(ctx:heartbeat())
            if thief:dequeue() then stolen = stolen + 1 end -- sweeps and tries to claim
            core.sleep(0.1)
          end
        end,
      },
    })
    local counts = w:run { idle_exit = 0, trap_signals = false }
    assert.equal(0, stolen)
    assert.equal(1, counts.succeeded)
    assert.same({ "completed", "1" }, helper.query(dsn, "SELECT state, retry_count FROM celers_tasks WHERE id = " .. sqls(id))[1])
    b:close()
    thief:close()
  end)

  it("a result that cannot be stored is logged and the task is still acked", function()
    local id = assert(broker:enqueue("odd", "x"))
    local logged = {}
    local w = assert(worker.new {
      broker = broker, store_results = true,
      log = function(level, msg) logged[#logged + 1] = level .. ": " .. msg end,
      handlers = { odd = function() return { fn = print } end },
    })
    local counts = w:run { idle_exit = 0, trap_signals = false }
    assert.equal(1, counts.succeeded)
    assert.equal("completed", scalar("SELECT state FROM celers_tasks WHERE id = " .. sqls(id)))
    assert.equal("0", scalar("SELECT COUNT(*) FROM celers_results"))
    local found = false
    for _, l in ipairs(logged) do if l:find("storing the result", 1, true) then found = true end end
    assert.is_true(found)
  end)

  it("an interval given as a float still enqueues its occurrences", function()
    local s = assert(recurring.new { broker = broker, log = false,
      schedules = { { name = "float", every = 30.0, task = "tick", payload = "p" } } })
    local done, errors = s:tick(1800000015)
    assert.equal(0, #errors)
    assert.equal(1, #done)
    assert.equal(1800000000, done[1].run_at)
    assert.equal("1", scalar("SELECT COUNT(*) FROM celers_recurring_runs WHERE schedule_name = 'float'"))
    assert.equal("1", scalar("SELECT COUNT(*) FROM celers_tasks WHERE task_name = 'tick'"))
  end)
end)
