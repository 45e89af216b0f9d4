local metrics = require "celers.metrics"

local parse = require("spec.prometheus").parse

local function sample_lines(text, prefix)
  local out = {}
  for line in text:gmatch("([^\n]*)\n") do
    if line:sub(1, #prefix) == prefix and line:sub(1, 1) ~= "#" then out[#out + 1] = line end
  end
  return out
end

describe("celers.metrics", function()
  before_each(function() metrics.reset() end)

  describe("predefined broker metrics", function()
    it("are always rendered, with HELP and TYPE", function()
      local r = parse(metrics.render())
      local want = {
        celers_tasks_enqueued_total = "counter", celers_tasks_enqueued_by_type = "counter",
        celers_tasks_acked_total = "counter", celers_tasks_rejected_total = "counter",
        celers_tasks_retried_total = "counter", celers_tasks_dead_lettered_total = "counter",
        celers_queue_size = "gauge", celers_processing_queue_size = "gauge",
        celers_dlq_size = "gauge", celers_tasks = "gauge", celers_scheduled_tasks = "gauge",
      }
      for name, kind in pairs(want) do
        assert.equals(kind, r.type[name], name)
        assert.is_string(r.help[name], name)
      end
      -- unlabelled counters start at 0; labelled ones have no samples yet
      local seen = {}
      for _, s in ipairs(r.samples) do seen[s.line] = true end
      assert.is_true(seen["celers_tasks_enqueued_total 0"])
      assert.is_true(seen["celers_tasks_dead_lettered_total 0"])
      assert.same({}, sample_lines(metrics.render(), "celers_queue_size"))
    end)

    it("can be fetched by name and keep working across reset", function()
      local c = metrics.get("celers_tasks_enqueued_total")
      c:inc()
      metrics.reset()
      assert.equals(0, c:get())
      c:inc(2)
      assert.same({ "celers_tasks_enqueued_total 2" }, sample_lines(metrics.render(), "celers_tasks_enqueued_total"))
      assert.equals(c, metrics.counter("celers_tasks_enqueued_total"))
      assert.is_nil(metrics.get("nope"))
    end)

    it("update_from_statistics sets the queue gauges", function()
      metrics.update_from_statistics("emails", {
        pending = 7, processing = 2, completed = 40, failed = 1, cancelled = 0,
        scheduled = 3, dlq = 5, total = 50,
      })
      metrics.update_from_statistics("a", { pending = "1" })
      local text = metrics.render()
      -- waiting tasks: pending + scheduled
      assert.same({ 'celers_queue_size{queue="a"} 1', 'celers_queue_size{queue="emails"} 10' },
        sample_lines(text, "celers_queue_size"))
      assert.same({ 'celers_processing_queue_size{queue="emails"} 2' },
        sample_lines(text, "celers_processing_queue_size"))
      assert.same({ 'celers_dlq_size{queue="emails"} 5' }, sample_lines(text, "celers_dlq_size"))
      assert.same({ 'celers_scheduled_tasks{queue="emails"} 3' }, sample_lines(text, "celers_scheduled_tasks"))
      assert.same({
        'celers_tasks{queue="a",state="pending"} 1',
        'celers_tasks{queue="emails",state="cancelled"} 0',
        'celers_tasks{queue="emails",state="completed"} 40',
        'celers_tasks{queue="emails",state="failed"} 1',
        'celers_tasks{queue="emails",state="pending"} 7',
        'celers_tasks{queue="emails",state="processing"} 2',
        'celers_tasks{queue="emails",state="scheduled"} 3',
      }, sample_lines(text, "celers_tasks{"))
      -- a second update replaces, not adds
      metrics.update_from_statistics("emails", { pending = 1 })
      assert.equals(1, metrics.get("celers_queue_size"):get { queue = "emails" })
      assert.equals(2, metrics.get("celers_processing_queue_size"):get { queue = "emails" })
    end)

    it("update_from_statistics validates its arguments and changes nothing on error", function()
      assert.has_error(function() metrics.update_from_statistics(nil, {}) end,
        "metrics.update_from_statistics: 'queue' must be a string")
      assert.has_error(function() metrics.update_from_statistics("q", 5) end,
        "metrics.update_from_statistics: 'stats' must be a table")
      assert.has_error(function() metrics.update_from_statistics("q", { pending = 1, dlq = "many" }) end,
        "metrics.update_from_statistics: 'stats.dlq' must be a number")
      assert.equals(0, metrics.get("celers_queue_size"):get { queue = "q" })
      assert.same({}, sample_lines(metrics.render(), "celers_queue_size"))
      -- fields it does not use may be anything
      metrics.update_from_statistics("q", { pending = 1, note = "x" })
    end)
  end)

  describe("counters", function()
    it("inc by 1 by default, by n, and per label set", function()
      local c = metrics.counter("jobs_total", "Jobs.", { "kind" })
      c:inc(nil, { kind = "a" })
      c:inc({ kind = "a" })
      c:inc(3, { kind = "b" })
      c:inc(0.5, { kind = "b" })
      assert.equals(2, c:get { kind = "a" })
      assert.equals(3.5, c:get { kind = "b" })
      assert.equals(0, c:get { kind = "zzz" })
      assert.same({ 'jobs_total{kind="a"} 2', 'jobs_total{kind="b"} 3.5' },
        sample_lines(metrics.render(), "jobs_total"))
    end)

    it("unlabelled counters take no labels", function()
      local c = metrics.counter("plain_total", "Plain.")
      c:inc()
      c:inc(4)
      assert.equals(5, c:get())
      assert.same({ "plain_total 5" }, sample_lines(metrics.render(), "plain_total"))
    end)

    it("refuse to go down", function()
      local c = metrics.counter("up_total", "Up.")
      assert.has_error(function() c:inc(-1) end,
        "counter:inc: 'n' must be a non-negative number (counters only go up)")
      assert.has_error(function() c:inc(0 / 0) end)
      assert.has_error(function() c:inc("2") end, "counter:inc: 'n' must be a number")
      assert.has_error(function() c:dec() end, "counter:dec: counters cannot go down")
      assert.has_error(function() c:set(3) end, "counter:set: counters can only be incremented")
      assert.equals(0, c:get())
    end)

    it("check label sets", function()
      local c = metrics.counter("lab_total", "L.", { "a", "b" })
      assert.has_error(function() c:inc(1, { a = "x" }) end,
        "counter:inc: label 'b' of lab_total must be a string or number")
      assert.has_error(function() c:inc(1, { a = "x", b = "y", c = "z" }) end,
        "counter:inc: unknown label 'c' for lab_total")
      assert.has_error(function() c:inc(1, "a=x") end, "counter:inc: 'labels' must be a table")
      assert.has_error(function() c:inc(1, { a = {}, b = "y" }) end)
      c:inc(1, { a = 1, b = true })
      c:inc(1, { a = 2.0, b = 0.25 })
      assert.same({ 'lab_total{a="1",b="true"} 1', 'lab_total{a="2",b="0.25"} 1' },
        sample_lines(metrics.render(), "lab_total"))
    end)
  end)

  describe("gauges", function()
    it("set, inc, dec, get, remove", function()
      local g = metrics.gauge("temp", "T.", { "room" })
      g:set(20, { room = "a" })
      g:inc(nil, { room = "a" })
      g:inc(2.5, { room = "a" })
      g:dec({ room = "a" })
      g:dec(10, { room = "b" })
      assert.equals(22.5, g:get { room = "a" })
      assert.equals(-10, g:get { room = "b" })
      assert.same({ 'temp{room="a"} 22.5', 'temp{room="b"} -10' }, sample_lines(metrics.render(), "temp"))
      g:remove { room = "a" }
      assert.same({ 'temp{room="b"} -10' }, sample_lines(metrics.render(), "temp"))
      assert.has_error(function() g:set("x", { room = "a" }) end, "gauge:set: 'v' must be a number")
      assert.has_error(function() g:dec("x") end, "gauge:dec: 'n' must be a number")
    end)

    it("unlabelled gauges", function()
      local g = metrics.gauge("level", "L.")
      assert.same({ "level 0" }, sample_lines(metrics.render(), "level "))
      g:set(-3)
      g:inc()
      assert.equals(-2, g:get())
    end)
  end)

  describe("registration", function()
    it("re-returns the same object for the same type and labels", function()
      local a = metrics.counter("again_total", "A.", { "x" })
      local b = metrics.counter("again_total", "other help is ignored", { "x" })
      assert.equals(a, b)
      local g = metrics.gauge("again_g", "G.")
      assert.equals(g, metrics.gauge("again_g"))
    end)

    it("raises on type or label conflicts", function()
      metrics.counter("clash", "C.")
      assert.has_error(function() metrics.gauge("clash", "C.") end,
        "metrics.gauge: clash is already registered as a counter")
      assert.has_error(function() metrics.counter("celers_queue_size") end,
        "metrics.counter: celers_queue_size is already registered as a gauge")
      metrics.counter("clash2", "C.", { "a" })
      assert.has_error(function() metrics.counter("clash2", "C.", { "b" }) end,
        "metrics.counter: clash2 is already registered with labels {a}")
    end)

    it("validates names, help and label names", function()
      for _, bad in ipairs { "", "1abc", "a-b", "a b", "é", 5 } do
        local ok, err = pcall(metrics.counter, bad, "h")
        assert.is_false(ok)
        assert.matches("metrics.counter: 'name' must match", err)
      end
      for _, good in ipairs { "a", "_a", "a:b_c9", ":x" } do
        assert.truthy(metrics.gauge(good, "h"))
      end
      assert.has_error(function() metrics.counter("h_total", 5) end, "metrics.counter: 'help' must be a string")
      assert.has_error(function() metrics.counter("l_total", "h", "a") end,
        "metrics.counter: 'labelnames' must be a table")
      for _, bad in ipairs { "1a", "a:b", "__x", "", 3 } do
        local ok, err = pcall(metrics.gauge, "lbl", "h", { bad })
        assert.is_false(ok)
        assert.matches("metrics.gauge: label name 1 of lbl is not valid", err)
      end
      assert.has_error(function() metrics.gauge("dup", "h", { "a", "a" }) end,
        "metrics.gauge: duplicate label name 'a' in dup")
    end)

    it("reset unregisters user metrics so names can be reused", function()
      metrics.counter("temp_total", "T.")
      metrics.reset()
      assert.is_nil(metrics.get("temp_total"))
      assert.truthy(metrics.gauge("temp_total", "now a gauge"))
    end)

    it("copies the labelnames table", function()
      local names = { "a" }
      local c = metrics.counter("copy_total", "C.", names)
      names[1] = "zzz"
      c:inc(1, { a = "x" })
      assert.equals(1, c:get { a = "x" })
    end)
  end)

  describe("render", function()
    it("escapes label values and HELP text", function()
      local c = metrics.counter("esc_total", 'Help with \\ backslash,\nnewline and "quotes".', { "v" })
      c:inc(1, { v = 'a\\b"c\nd' })
      local text = metrics.render()
      assert.truthy(text:find('# HELP esc_total Help with \\\\ backslash,\\nnewline and "quotes".\n', 1, true))
      assert.truthy(text:find('esc_total{v="a\\\\b\\"c\\nd"} 1\n', 1, true))
      -- and the parser gets the original value back
      for _, s in ipairs(parse(text).samples) do
        if s.name == "esc_total" then assert.equals('a\\b"c\nd', s.labels.v) end
      end
    end)

    it("keeps label values with separators apart", function()
      local c = metrics.counter("sep_total", "S.", { "a", "b" })
      c:inc(1, { a = "x", b = "yz" })
      c:inc(1, { a = "xy", b = "z" })
      c:inc(1, { a = "1:x", b = "" })
      assert.equals(3, #sample_lines(metrics.render(), "sep_total"))
    end)

    it("orders by name, then by label values", function()
      local b = metrics.gauge("order_b", "B.", { "x", "y" })
      local a = metrics.gauge("order_a", "A.")
      a:set(1)
      b:set(1, { x = "b", y = "a" })
      b:set(2, { x = "a", y = "z" })
      b:set(3, { x = "a", y = "b" })
      b:set(4, { x = "B", y = "a" })
      local text = metrics.render()
      assert.same({ "order_a 1", 'order_b{x="B",y="a"} 4', 'order_b{x="a",y="b"} 3',
                    'order_b{x="a",y="z"} 2', 'order_b{x="b",y="a"} 1' }, sample_lines(text, "order_"))
      -- metric blocks in name order, HELP before TYPE before samples
      local r = parse(text)
      local names, last = {}, nil
      for _, line in ipairs(r.lines) do
        local n = line:match("^# TYPE (%S+)")
        if n then names[#names + 1] = n end
        if line:match("^# TYPE") then assert.matches("^# HELP", last) end
        last = line
      end
      local sorted = { (table.unpack or unpack)(names) } -- luacheck: ignore 143
      table.sort(sorted)
      assert.same(sorted, names)
      assert.is_true(#names >= 13)
    end)

    it("is deterministic", function()
      local g = metrics.gauge("det", "D.", { "k" })
      for i = 1, 50 do g:set(i, { k = tostring(i) }) end
      assert.equals(metrics.render(), metrics.render())
    end)

    it("omits HELP when there is none", function()
      metrics.gauge("nohelp")
      local text = metrics.render()
      assert.falsy(text:find("# HELP nohelp", 1, true))
      assert.truthy(text:find("# TYPE nohelp gauge\nnohelp 0\n", 1, true))
    end)

    it("formats numbers per the format", function()
      local f = metrics.format_value
      assert.equals("0", f(0))
      assert.equals("3", f(3.0))
      assert.equals("-42", f(-42))
      assert.equals("1234567890123", f(1234567890123))
      assert.equals("0.1", f(0.1))
      assert.equals("0.30000000000000004", f(0.1 + 0.2))
      assert.equals("2.5", f(2.5))
      assert.equals("1e+300", f(1e300))
      assert.equals("+Inf", f(math.huge))
      assert.equals("-Inf", f(-math.huge))
      assert.equals("NaN", f(0 / 0))
      for _, v in ipairs { 1 / 3, 2 ^ 60, 1e-20, 123.456, 2 ^ 53 + 2 } do
        assert.equals(v, tonumber(f(v)))
      end
      local g = metrics.gauge("nums", "N.", { "k" })
      g:set(math.huge, { k = "a" })
      g:set(-math.huge, { k = "b" })
      g:set(0 / 0, { k = "c" })
      assert.same({ 'nums{k="a"} +Inf', 'nums{k="b"} -Inf', 'nums{k="c"} NaN' }, sample_lines(metrics.render(), "nums"))
    end)
  end)
end)
