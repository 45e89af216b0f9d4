-- celers.recurring against a real server: exactly-once occurrences, restarts, missed runs.
local helper = require "spec.helper"
local proc = require "spec.proc_helper"
local celers = require "celers"
local cron = require "celers.cron"
local recurring = require "celers.recurring"

local dsn = helper.fresh_dsn("recurring")
local q = helper.sql_string

local function count(sql) return tonumber(helper.scalar(dsn, sql)) end
local function tasks(name)
  return count("SELECT COUNT(*) FROM celers_tasks WHERE task_name = " .. q(name))
end
local function runs(schedule)
  return count("SELECT COUNT(*) FROM celers_recurring_runs WHERE schedule_name = " .. q(schedule))
end

-- 2024-02-29 12:00:00 UTC, a Thursday
local T = cron.from_utc(2024, 2, 29, 12, 0, 0)

describe("celers.recurring", function()
  local broker

  setup(function()
    broker = assert(celers.connect(dsn))
    assert(broker:migrate())
  end)

  before_each(function()
    helper.query(dsn, "DELETE FROM celers_tasks; DELETE FROM celers_recurring_runs")
  end)

  teardown(function() broker:close() end)

  local function scheduler(schedules, opts)
    opts = opts or {}
    opts.broker = opts.broker or broker
    opts.schedules = schedules
    opts.log = false
    return assert(recurring.new(opts))
  end

  it("enqueues the due occurrence once, with the schedule's payload, options and metadata", function()
    local s = scheduler { { name = "five", cron = "*/5 * * * *", task = "report",
                            payload = { kind = "daily" }, opts = { priority = 7, queue = "reports" } } }
    local done, errors = s:tick(T + 30)
    assert.same({}, errors)
    assert.equal(1, #done)
    assert.equal(T, done[1].run_at)
    assert.is_true(done[1].created)
    -- ticking again in the same minute, or before the next occurrence, adds nothing
    assert.same({}, (s:tick(T + 59)))
    assert.same({}, (s:tick(T + 299)))
    local row = helper.query(dsn, "SELECT task_name, priority, queue, payload, payload_type, "
      .. "JSON_VALUE(metadata, '$.schedule'), JSON_VALUE(metadata, '$.run_at') FROM celers_tasks")
    assert.equal(1, #row)
    assert.same({ "report", "7", "reports", '{"kind":"daily"}', "json", "five", tostring(T) }, row[1])
    assert.equal(tostring(T), helper.scalar(dsn, "SELECT run_at FROM celers_recurring_runs"))
    -- the next occurrence
    done = s:tick(T + 300)
    assert.equal(1, #done)
    assert.equal(T + 300, done[1].run_at)
    assert.equal(2, tasks("report"))
  end)

  it("fixed intervals, with a payload function", function()
    local s = scheduler { { name = "every-20", every = 20, task = "ping",
                            payload = function(run_at, name) return name .. "@" .. run_at end } }
    for t = T, T + 59, 7 do s:tick(t) end
    assert.equal(3, tasks("ping")) -- T, T+20, T+40
    assert.equal(1, count("SELECT COUNT(*) FROM celers_tasks WHERE payload = " .. q("every-20@" .. (T + 40))))
  end)

  it("three schedulers on three connections ticking the same minutes produce one task per occurrence", function()
    local conns, scheds = {}, {}
    for i = 1, 3 do
      conns[i] = assert(celers.connect(dsn))
      scheds[i] = scheduler({ { name = "m", cron = "* * * * *", task = "each-minute" } },
                            { broker = conns[i] })
    end
    local created = 0
    for minute = 0, 4 do
      for i = 1, 3 do
        local done, errors = scheds[i]:tick(T + minute * 60 + i)
        assert.same({}, errors)
        for _, d in ipairs(done) do if d.created then created = created + 1 end end
      end
    end
    for i = 1, 3 do conns[i]:close() end
    assert.equal(5, created)
    assert.equal(5, tasks("each-minute"))
    assert.equal(5, runs("m"))
  end)

  it("three scheduler processes ticking the same minute at once produce exactly one task, no errors", function()
    local go = os.tmpname()
    os.remove(go)
    local hs = {}
    for i = 1, 3 do
      hs[i] = proc.spawn(helper.root .. "/spec/fixtures/scheduler_child.lua", { dsn, tostring(T + 10), go })
    end
    for i = 1, 3 do assert.truthy(proc.pid(hs[i])) end
    proc.sleep(0.3) -- all three connected and waiting
    local f = assert(io.open(go, "w"))
    f:close()
    local created = 0
    for i = 1, 3 do
      local code, out = proc.wait(hs[i], 30)
      assert.equal(0, code, out)
      assert.matches("every%-minute " .. T .. " %a+", out)
      if out:match(" true\n") then created = created + 1 end
    end
    os.remove(go)
    assert.equal(1, created)
    assert.equal(1, tasks("tick"))
    assert.equal(1, runs("every-minute"))
  end)

  it("persists across restarts: a new scheduler does not repeat an occurrence already enqueued", function()
    local sched = { { name = "five", cron = "*/5 * * * *", task = "r" } }
    scheduler(sched):tick(T + 10)
    assert.equal(1, tasks("r"))
    -- "restart": a new scheduler (and connection) in the same five minutes
    local b2 = assert(celers.connect(dsn))
    local s2 = scheduler(sched, { broker = b2 })
    local done, errors = s2:tick(T + 100)
    assert.same({}, errors)
    assert.equal(1, #done)
    assert.is_false(done[1].created)
    assert.equal(1, tasks("r"))
    s2:tick(T + 300)
    assert.equal(2, tasks("r"))
    b2:close()
  end)

  it("after downtime enqueues only the most recent missed occurrence by default", function()
    local sched = { { name = "min", cron = "* * * * *", task = "m" } }
    scheduler(sched):tick(T)
    assert.equal(1, tasks("m"))
    -- down for 10 minutes; a restarted scheduler catches up the latest occurrence only
    scheduler(sched):tick(T + 600 + 5)
    assert.equal(2, tasks("m"))
    assert.equal(1, count("SELECT COUNT(*) FROM celers_recurring_runs WHERE run_at = " .. (T + 600)))
    -- a running scheduler that was not ticked for a while follows the same rule
    local s = scheduler(sched)
    s:tick(T + 605)
    s:tick(T + 1200)
    assert.equal(3, tasks("m"))
  end)

  it("catch_up = N enqueues up to N missed occurrences, oldest first; max_lateness skips stale ones", function()
    local s = scheduler({ { name = "min3", cron = "* * * * *", task = "c" } }, { catch_up = 3 })
    -- a fresh scheduler knows nothing of earlier runs: the latest three are due
    local done = s:tick(T)
    assert.same({ T - 120, T - 60, T }, { done[1].run_at, done[2].run_at, done[3].run_at })
    done = s:tick(T + 600)
    assert.equal(3, #done)
    assert.same({ T + 480, T + 540, T + 600 }, { done[1].run_at, done[2].run_at, done[3].run_at })
    assert.equal(6, tasks("c"))
    -- too late: the 12:00 occurrence of an hourly schedule seen at 12:30 with max_lateness 60
    local h = scheduler({ { name = "hourly", cron = "@hourly", task = "h", max_lateness = 60 } })
    assert.same({}, (h:tick(T + 1800)))
    assert.equal(0, tasks("h"))
    assert.equal(1, #(h:tick(T + 3600 + 30)))
  end)

  it("catch_up = 0 skips what was missed but keeps firing on time", function()
    local s = scheduler({ { name = "zero", cron = "* * * * *", task = "z" } }, { catch_up = 0 })
    assert.same({ T }, { (s:tick(T + 5))[1].run_at })          -- on time (5 s late)
    assert.same({ T + 60 }, { (s:tick(T + 65))[1].run_at })
    -- down from T+65 to T+605: T+120 .. T+540 were missed and are skipped
    local done = s:tick(T + 605)
    assert.equal(1, #done)
    assert.equal(T + 600, done[1].run_at)
    assert.equal(2 + 1, tasks("z"))
    assert.equal(3, runs("zero"))
    -- an occurrence reached two minutes late is missed too
    local five = scheduler({ { name = "five0", cron = "*/5 * * * *", task = "f" } }, { catch_up = 0 })
    assert.equal(T, (five:tick(T + 5))[1].run_at)
    assert.same({}, (five:tick(T + 300 + 120)))
    assert.equal(T + 600, (five:tick(T + 601))[1].run_at)
    assert.equal(2, tasks("f"))
    -- a new scheduler with catch_up = 0 fires an occurrence only when it is on time
    local h = scheduler({ { name = "h0", cron = "@hourly", task = "h", catch_up = 0 } })
    assert.same({}, (h:tick(T + 1800)))
    assert.equal(T + 3600, (h:tick(T + 3600 + 30))[1].run_at)
    assert.equal(1, tasks("h"))
  end)

  it("first_run = \"next\" waits for the next occurrence; the default fires the latest past one", function()
    local latest = scheduler { { name = "l5", cron = "*/5 * * * *", task = "l" } }
    assert.equal(T, (latest:tick(T + 30))[1].run_at)
    local s = scheduler({ { name = "n5", cron = "*/5 * * * *", task = "n" } }, { first_run = "next" })
    assert.same({}, (s:tick(T + 30)))
    assert.same({}, (s:tick(T + 299)))
    assert.equal(T + 300, (s:tick(T + 300))[1].run_at)
    assert.equal(1, tasks("n"))
    -- per schedule, and an occurrence exactly at the first tick counts as the next one
    local p = scheduler { { name = "p", every = 60, task = "p", first_run = "next" } }
    assert.equal(T, (p:tick(T))[1].run_at)
    assert.has_error(function() recurring.new { broker = broker, first_run = "soon" } end,
      'recurring.new: \'first_run\' must be "latest" or "next"')
  end)

  it("validates schedules", function()
    assert.has_error(function() recurring.schedule { name = "x", task = "t" } end,
      "recurring.schedule 'x': 'cron' or 'every' is required")
    assert.has_error(function() recurring.schedule { name = "x", task = "t", cron = "61 * * * *" } end)
    assert.has_error(function() recurring.schedule { name = "x", task = "t", every = 0.5 } end)
    assert.has_error(function() recurring.schedule { name = "x", cron = "* * * * *" } end)
    assert.has_error(function() scheduler { { name = "a", every = 5, task = "t" },
                                            { name = "a", every = 6, task = "t" } } end)
    assert.equal(T + 300, scheduler({ { name = "n", cron = "*/5 * * * *", task = "t" } }):next_run(T + 1))
  end)
end)
