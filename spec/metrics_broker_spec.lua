-- broker:update_metrics() + celers.metrics.render(): Prometheus text with the database gauges
-- of get_statistics and this process's counters. Busted runs this file in its own process,
-- so the per-process counters start at zero here.
local helper = require "spec.helper"
local celers = require "celers"
local metrics = require "celers.metrics"

local dsn = helper.fresh_dsn("metrics_broker")

-- Parse and validate exposition text (spec/prometheus.lua); every value here is a number.
local function parse(text)
  local r = require("spec.prometheus").parse(text)
  for _, s in ipairs(r.samples) do assert(s.number, "bad value: " .. s.line) end
  return r
end

local function value(r, name, labels)
  for _, s in ipairs(r.samples) do
    if s.name == name then
      local ok = true
      for k, v in pairs(labels or {}) do if s.labels[k] ~= v then ok = false end end
      if ok then return s.number end
    end
  end
end

local function db_count(sql) return tonumber(helper.scalar(dsn, sql)) end

describe("broker metrics", function()
  local a, b
  local WEIRD = 'we"ird\\name\nx'

  setup(function()
    a = assert(celers.connect(dsn .. "&queue=mq"))
    assert(a:migrate())
    b = a:with_queue("other")
  end)
  teardown(function() if a then a:close() end end)

  it("renders the database gauges and the process counters after enqueue/ack/reject", function()
    for i = 1, 4 do assert(a:enqueue("send", tostring(i))) end
    assert(a:enqueue(WEIRD, "w", { max_retries = 0 }))
    assert(a:enqueue_after("later", "l", 3600))
    assert(b:enqueue("send", "b"))
    local t1, t2 = assert(a:dequeue()), assert(a:dequeue())
    assert.is_true(a:ack(t1))
    assert.is_true(a:ack(t2))
    local t3 = assert(a:dequeue())
    assert.is_true((a:retry(t3, 0, "again")))
    local t4 = assert(a:dequeue())
    assert.is_true((a:reject(t4, { requeue = false })))
    assert(a:dequeue()) -- one stays processing

    local stats = assert(a:update_metrics())
    assert.same(a:get_statistics(), stats)
    local r = parse(metrics.render())

    -- gauges: what the database holds for queue mq
    local mq = { queue = "mq" }
    assert.equals(db_count("SELECT COUNT(*) FROM celers_tasks WHERE queue='mq' AND state IN ('pending', 'scheduled')"),
      value(r, "celers_queue_size", mq))
    assert.equals(db_count("SELECT COUNT(*) FROM celers_tasks WHERE queue='mq' AND state='processing'"),
      value(r, "celers_processing_queue_size", mq))
    assert.equals(db_count("SELECT COUNT(*) FROM celers_dead_letter_queue WHERE queue='mq'"),
      value(r, "celers_dlq_size", mq))
    assert.equals(1, value(r, "celers_dlq_size", mq))
    assert.equals(1, value(r, "celers_scheduled_tasks", mq))
    assert.equals(2, value(r, "celers_tasks", { queue = "mq", state = "completed" }))
    for _, st in ipairs { "scheduled", "pending", "processing", "completed", "failed", "cancelled" } do
      assert.equals(db_count("SELECT COUNT(*) FROM celers_tasks WHERE queue='mq' AND state='" .. st .. "'"),
        value(r, "celers_tasks", { queue = "mq", state = st }), st)
    end
    assert.is_nil(value(r, "celers_queue_size", { queue = "other" })) -- not updated from b

    -- counters: this process's operations
    assert.equals("counter", r.type.celers_tasks_enqueued_total)
    assert.equals(7, value(r, "celers_tasks_enqueued_total"))
    assert.equals(5, value(r, "celers_tasks_enqueued_by_type", { task_name = "send" }))
    assert.equals(1, value(r, "celers_tasks_enqueued_by_type", { task_name = WEIRD }))
    assert.equals(2, value(r, "celers_tasks_acked_total"))
    assert.equals(2, value(r, "celers_tasks_rejected_total"))
    assert.equals(1, value(r, "celers_tasks_retried_total"))
    assert.equals(1, value(r, "celers_tasks_dead_lettered_total"))

    -- b's queue after its own update, alongside a's
    assert(b:update_metrics())
    r = parse(metrics.render())
    assert.equals(1, value(r, "celers_queue_size", { queue = "other" }))
    assert.equals(db_count("SELECT COUNT(*) FROM celers_tasks WHERE queue='mq' AND state IN ('pending', 'scheduled')"),
      value(r, "celers_queue_size", mq))
  end)

  it("counters only grow between scrapes and follow new operations", function()
    local before = parse(metrics.render())
    local n = value(before, "celers_tasks_enqueued_total")
    a:enqueue("send", "more")
    a:ack(assert(a:dequeue()))
    local after = parse(metrics.render()) -- the collector pulls counters on every render
    assert.equals(n + 1, value(after, "celers_tasks_enqueued_total"))
    assert.equals(value(before, "celers_tasks_acked_total") + 1, value(after, "celers_tasks_acked_total"))
  end)

  it("lets users add their own counters and gauges to the same output", function()
    local c = metrics.counter("myapp_emails_sent_total", "Emails sent.", { "provider" })
    c:inc(3, { provider = "smtp" })
    metrics.gauge("myapp_ready", "Ready."):set(1)
    assert(a:update_metrics())
    local r = parse(metrics.render())
    assert.equals("counter", r.type.myapp_emails_sent_total)
    assert.equals(3, value(r, "myapp_emails_sent_total", { provider = "smtp" }))
    assert.equals(1, value(r, "myapp_ready"))
    assert.is_number(value(r, "celers_tasks_enqueued_total"))
  end)

  it("update_metrics returns nil, err when the database fails, leaving the gauges", function()
    local fdsn = helper.fresh_dsn("metrics_broker_fail")
    local c = assert(celers.connect(fdsn .. "&queue=gone"))
    assert(c:migrate())
    helper.query(fdsn, "DROP TABLE celers_tasks")
    local ok, err = c:update_metrics()
    assert.is_nil(ok)
    assert.equals("sql", err.code)
    assert.is_nil(value(parse(metrics.render()), "celers_queue_size", { queue = "gone" }))
    c:close()
  end)
end)
