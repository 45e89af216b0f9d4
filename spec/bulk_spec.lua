-- celers.bulk against a real server: JSON Lines export and import, row by row.
local helper = require "spec.helper"
local celers = require "celers"
local bulk = require "celers.bulk"

local dsn = helper.fresh_dsn("bulk")
local q = helper.sql_string

local function n(sql) return tonumber(helper.scalar(dsn, sql)) end

local function read_lines(path)
  local lines = {}
  for l in io.lines(path) do lines[#lines + 1] = l end
  return lines
end

local function write_file(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

-- Same row, column by column (NULL-safe; metadata compared as JSON)
local SAME_ROW = [[
  t.task_name = s.task_name AND t.payload = s.payload AND t.payload_type = s.payload_type
  AND t.priority = s.priority AND t.max_retries = s.max_retries AND t.queue = s.queue
  AND t.scheduled_at = s.scheduled_at AND t.idempotency_key <=> s.idempotency_key
  AND t.timeout_seconds <=> s.timeout_seconds
  AND ((t.metadata IS NULL AND s.metadata IS NULL) OR JSON_EQUALS(t.metadata, s.metadata))]]

describe("celers.bulk", function()
  local broker

  setup(function()
    broker = assert(celers.connect(dsn))
    assert(broker:migrate())
  end)

  before_each(function()
    helper.query(dsn, "DELETE FROM celers_tasks; DELETE FROM celers_dead_letter_queue; "
      .. "DELETE FROM celers_results; DROP TABLE IF EXISTS snap")
  end)

  teardown(function() broker:close() end)

  it("base64 and UTF-8 helpers", function()
    local all = {}
    for i = 0, 255 do all[#all + 1] = string.char(i) end
    local bin = table.concat(all)
    for len = 0, 7 do
      assert.equal(bin:sub(1, len), bulk.base64_decode(bulk.base64_encode(bin:sub(1, len))))
    end
    assert.equal(bin, bulk.base64_decode(bulk.base64_encode(bin)))
    assert.equal("aGVsbG8=", bulk.base64_encode("hello"))
    assert.is_nil(bulk.base64_decode("a$=="))
    assert.is_true(bulk.valid_utf8("plain ascii"))
    assert.is_true(bulk.valid_utf8("caf\195\169 \226\130\172 \240\159\152\128"))
    assert.is_false(bulk.valid_utf8("\255"))
    assert.is_false(bulk.valid_utf8("\192\175"))        -- overlong '/'
    assert.is_false(bulk.valid_utf8("\237\160\128"))    -- surrogate
    assert.is_false(bulk.valid_utf8("caf\195"))         -- truncated
  end)

  it("exports 10,000 tasks, imports them into an emptied table, and every row comes back the same", function()
    local list, total = {}, 10000
    for i = 1, total do
      local spec = { name = "job" .. (i % 7), priority = (i % 5) - 2, max_retries = i % 4 }
      if i % 3 == 0 then
        spec.payload = { n = i, text = "caf\195\169", list = { 1, 2, 3 } }
      elseif i % 3 == 1 then
        spec.payload = "raw\0bytes\255\254" .. i .. "\n\t\"quoted\""
      else
        spec.payload = "plain " .. i
      end
      if i % 4 == 0 then spec.metadata = { tenant = "t" .. (i % 10), i = i } end
      if i % 10 == 0 then spec.delay = 3600 + i end
      if i % 11 == 0 then spec.idempotency_key = "key-" .. i end
      if i % 13 == 0 then spec.timeout = 45.5 end
      list[#list + 1] = spec
      if #list == 1000 then
        assert(broker:enqueue_batch(list))
        list = {}
      end
    end
    -- a few are done, one failed into the DLQ: all states are exported
    for _ = 1, 5 do assert(broker:ack(assert(broker:dequeue()))) end
    assert.equal(total, n("SELECT COUNT(*) FROM celers_tasks"))

    local path = os.tmpname()
    local seen = 0
    local counts = assert(bulk.export(broker, path, { batch = 700, progress = function(p)
      assert.is_true(p.tasks >= seen)
      seen = p.tasks
      assert.equal(total, p.total)
    end }))
    assert.equal(total, counts.tasks)
    assert.equal(total, seen)
    local lines = read_lines(path)
    assert.equal(total + 1, #lines)
    assert.matches('"kind":"header"', lines[1], 1, true)

    helper.query(dsn, "CREATE TABLE snap AS SELECT * FROM celers_tasks; DELETE FROM celers_tasks")
    assert.equal(0, n("SELECT COUNT(*) FROM celers_tasks"))

    local calls = 0
    local rep = assert(bulk.import(broker, path, { batch = 800, progress = function(p)
      calls = calls + 1
      assert.is_true(p.bytes <= p.total_bytes)
    end }))
    assert.is_true(calls >= 12)
    assert.equal(total, rep.tasks)
    assert.equal(total, rep.inserted)
    assert.equal(0, rep.bad)
    assert.equal(total, n("SELECT COUNT(*) FROM celers_tasks"))
    assert.equal(total, n("SELECT COUNT(*) FROM snap s JOIN celers_tasks t ON t.id = s.id WHERE " .. SAME_ROW))
    -- imported tasks wait (scheduled when not yet due), their attempts start over
    assert.equal(total, n("SELECT COUNT(*) FROM celers_tasks WHERE retry_count = 0 AND "
      .. "state = IF(scheduled_at > NOW(6), 'scheduled', 'pending')"))
    assert.equal(total / 10, n("SELECT COUNT(*) FROM celers_tasks WHERE state = 'scheduled'"))

    -- re-import: everything exists, nothing changes
    local again = assert(bulk.import(broker, path))
    assert.equal(0, again.inserted)
    assert.equal(total, again.existing)
    assert.equal(total, n("SELECT COUNT(*) FROM celers_tasks"))
    os.remove(path)
  end)

  it("reports bad lines by number and skips them, or aborts after importing the lines before", function()
    local a = broker:enqueue("good", "1")
    local b = broker:enqueue("good", { two = 2 })
    local path = os.tmpname()
    assert(bulk.export(broker, path))
    local lines = read_lines(path)
    helper.query(dsn, "DELETE FROM celers_tasks")
    local text = table.concat({
      lines[1],                                            -- 1 header
      lines[2],                                            -- 2 task a
      "{not json",                                         -- 3
      '{"kind":"task","id":"short","name":"x","body":""}', -- 4
      '{"kind":"task","id":"' .. string.rep("0", 36) .. '","name":"x"}', -- 5 no body
      "",                                                  -- 6 blank: ignored
      lines[3],                                            -- 7 task b
    }, "\n") .. "\n"
    write_file(path, text)

    local rep = assert(bulk.import(broker, path, { on_error = "skip" }))
    assert.equal(2, rep.inserted)
    assert.equal(3, rep.bad)
    assert.same({ 3, 4, 5 }, { rep.errors[1].line, rep.errors[2].line, rep.errors[3].line })
    assert.matches("not JSON", rep.errors[1].error, 1, true)
    assert.matches("'id'", rep.errors[2].error, 1, true)
    assert.matches("body", rep.errors[3].error, 1, true)
    assert.equal(2, n("SELECT COUNT(*) FROM celers_tasks WHERE id IN (" .. q(a) .. "," .. q(b) .. ")"))

    helper.query(dsn, "DELETE FROM celers_tasks")
    local ok, err, partial = bulk.import(broker, path, { on_error = "abort" })
    assert.is_nil(ok)
    assert.equal("bad_line", err.code)
    assert.matches("line 3: not JSON", tostring(err), 1, true)
    assert.equal(1, partial.inserted)
    assert.equal(1, n("SELECT COUNT(*) FROM celers_tasks WHERE id = " .. q(a)))
    assert.equal(0, n("SELECT COUNT(*) FROM celers_tasks WHERE id = " .. q(b)))
    os.remove(path)
  end)

  it("exports by state and queue, with dead-letter entries and results", function()
    local other = broker:with_queue("other")
    local done = broker:enqueue("r", "done")
    local t = assert(broker:dequeue())
    assert.equal(done, t.id)
    assert(broker:ack(t))
    local dead = broker:enqueue("d", "dead", { max_retries = 0, priority = 4 })
    assert(broker:reject(assert(broker:dequeue()), { requeue = false, error = "boom" }))
    local waiting = broker:enqueue("w", "waiting")
    other:enqueue("o", "elsewhere")
    local has_results = broker.store_result ~= nil
    if has_results then assert(broker:store_result(done, { task_name = "r", result = { ok = true } })) end

    local path = os.tmpname()
    local counts = assert(bulk.export(broker, path, { state = { "pending", "completed" }, dlq = true,
                                                      results = has_results, queues = { "default", "other" } }))
    assert.equal(3, counts.tasks)
    assert.equal(1, counts.dlq)
    assert.equal(has_results and 1 or 0, counts.results)

    helper.query(dsn, "DELETE FROM celers_tasks; DELETE FROM celers_dead_letter_queue; DELETE FROM celers_results")
    -- without requeue_dlq the DLQ entry is only counted
    local rep = assert(bulk.import(broker, path))
    assert.equal(3, rep.inserted)
    assert.equal(1, rep.dlq_skipped)
    assert.equal("other", helper.scalar(dsn, "SELECT queue FROM celers_tasks WHERE task_name = 'o'"))
    assert.equal(1, n("SELECT COUNT(*) FROM celers_tasks WHERE id = " .. q(waiting)))
    if has_results then
      assert.equal(1, rep.results)
      local r = assert(broker:get_result(done))
      assert.equal("success", r.status)
      assert.is_true(r.result.ok)
    end
    -- with requeue_dlq the dead task comes back pending under its own id
    rep = assert(bulk.import(broker, path, { requeue_dlq = true }))
    assert.equal(1, rep.inserted)
    assert.equal(1, rep.dlq)
    assert.same({ { "d", "4", "pending", "dead" } },
      helper.query(dsn, "SELECT task_name, priority, state, payload FROM celers_tasks WHERE id = " .. q(dead)))
    os.remove(path)
  end)

  it("checks its options", function()
    assert.has_error(function() bulk.export(broker, "/tmp/x", { bogus = 1 }) end,
      "bulk.export: unknown option 'bogus'")
    assert.has_error(function() bulk.import(broker, "/tmp/x", { on_error = "maybe" }) end,
      'bulk.import: \'on_error\' must be "skip" or "abort"')
    local ok, err = bulk.import(broker, "/nonexistent/file.jsonl")
    assert.is_nil(ok)
    assert.matches("nonexistent", err, 1, true)
  end)
end)
