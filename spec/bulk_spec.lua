-- celers.bulk against a real server: JSON Lines export and import, row by row.
local helper = require "spec.helper"
local proc = require "spec.proc_helper"
local celers = require "celers"
local bulk = require "celers.bulk"

local json = celers.json
local IS54 = math.type ~= nil

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

  it("metadata, JSON payloads and results keep every digit and every [] through export and import", function()
    -- one key per object, so the stored text is the same whatever order keys are written in
    local edges
    if IS54 then
      edges = json.array { math.tointeger(tonumber("9007199254740993")), math.maxinteger, math.mininteger,
                           0.1, 1e308, 5e-324, -0.0, 7, 7.0, json.array(), {}, json.array { json.array(), {} } }
    else
      edges = json.array { 2 ^ 53, -2 ^ 63, 0.1, 1e308, 5e-324, -0.0, 7, json.array(), {},
                           json.array { json.array(), {} } }
    end
    local a = assert(broker:enqueue("edges", { v = edges }, { metadata = { v = edges } }))
    local b = assert(broker:enqueue("empty", json.array(), { metadata = { tags = json.array() } }))
    local c = assert(broker:enqueue("order", { order = 7 }, { metadata = { order_id = IS54
      and math.tointeger(tonumber("12345678901234567")) or 2 ^ 53 } }))
    assert(broker:store_result(a, { task_name = "edges", result = { v = edges } }))
    local before = helper.query(dsn, "SELECT id, payload, metadata FROM celers_tasks ORDER BY id")
    local result_before = helper.scalar(dsn, "SELECT result FROM celers_results WHERE task_id = " .. q(a))
    assert.equal(3, #before)
    assert.equal('{"tags":[]}', before[2][3])
    if IS54 then assert.equal('{"order_id":12345678901234567}', before[3][3]) end

    local path = os.tmpname()
    assert(bulk.export(broker, path, { results = true }))
    local text = assert(proc.read_file(path))
    assert.matches('"metadata":{"tags":[]}', text, 1, true)
    assert.not_matches("e+16", text, 1, true)
    helper.query(dsn, "DELETE FROM celers_tasks; DELETE FROM celers_results")
    local rep = assert(bulk.import(broker, path))
    assert.equal(3, rep.inserted)
    assert.equal(1, rep.results)
    assert.same(before, helper.query(dsn, "SELECT id, payload, metadata FROM celers_tasks ORDER BY id"))
    assert.equal(result_before, helper.scalar(dsn, "SELECT result FROM celers_results WHERE task_id = " .. q(a)))
    local t = assert(broker:get_task(c))
    assert.equal("order-7", "order-" .. t.payload.order)
    if IS54 then assert.equal("integer", math.type(t.metadata.order_id)) end
    assert.equal("[]", json.encode(assert(broker:get_task(b)).payload))
    os.remove(path)
  end)

  it("metadata holding an integer beyond 2^53 is exported and imported as its exact text", function()
    local meta = '{"order_id":9007199254740993}'
    local id = assert(broker:enqueue("big", '{"n":9007199254740993}', { metadata = meta }))
    local task = assert(broker:get_task(id))
    if IS54 then
      assert.equal(math.tointeger(tonumber("9007199254740993")), task.metadata.order_id)
    else
      assert.equal(meta, task.metadata) -- LuaJIT cannot hold it: the stored text, not a rounded number
    end
    local path = os.tmpname()
    assert(bulk.export(broker, path))
    helper.query(dsn, "DELETE FROM celers_tasks")
    local rep = assert(bulk.import(broker, path))
    assert.equal(1, rep.inserted)
    assert.equal(meta, helper.scalar(dsn, "SELECT metadata FROM celers_tasks WHERE id = " .. q(id)))
    -- a string that is not JSON at all is a bad line, not a failed batch
    write_file(path, '{"kind":"task","id":"' .. celers.core.uuid7() .. '","name":"x","body":"",'
      .. '"metadata":"{not json"}\n')
    rep = assert(bulk.import(broker, path))
    assert.equal(1, rep.bad)
    assert.matches("'metadata' is not JSON", rep.errors[1].error, 1, true)
    os.remove(path)
  end)

  it("binary payloads (NUL and all 256 byte values) travel as base64 and come back byte for byte", function()
    local all = {}
    for i = 0, 255 do all[#all + 1] = string.char(i) end
    local payloads = { table.concat(all), "\0", "\0\0\0", "\255", table.concat(all):rep(300) .. "\0" }
    local ids = {}
    for i, p in ipairs(payloads) do ids[i] = assert(broker:enqueue("bin", p)) end
    local hex_before = helper.query(dsn, "SELECT id, HEX(payload), payload_type FROM celers_tasks ORDER BY id")
    local path = os.tmpname()
    assert(bulk.export(broker, path))
    local lines = read_lines(path)
    assert.equal(#payloads + 1, #lines)
    for i = 2, #lines do
      local obj = json.decode(lines[i])
      -- NUL is valid UTF-8: a JSON string (\u0000); invalid UTF-8 goes as base64
      if obj.id == ids[3] then assert.equal("\0\0\0", obj.body) end
      if obj.id == ids[4] then assert.equal("/w==", obj.body_base64) end
    end
    assert.matches('"body":"\\u0000\\u0000\\u0000"', proc.read_file(path), 1, true)
    assert.equal(3, select(2, proc.read_file(path):gsub('"body_base64":', "")))
    helper.query(dsn, "DELETE FROM celers_tasks")
    assert.equal(#payloads, assert(bulk.import(broker, path)).inserted)
    assert.same(hex_before, helper.query(dsn, "SELECT id, HEX(payload), payload_type FROM celers_tasks ORDER BY id"))
    for i, p in ipairs(payloads) do assert.equal(p, assert(broker:get_task(ids[i])).body) end
    os.remove(path)
  end)

  it("import into another queue copies the tasks while the originals still exist, once", function()
    local src = broker:with_queue("src")
    local ids = {}
    for i = 1, 10 do
      ids[i] = assert(src:enqueue("copy" .. i, { i = i }, { priority = i % 3, metadata = { n = i },
        idempotency_key = i == 1 and "only-once" or nil }))
    end
    assert(src:store_result(ids[1], { task_name = "copy1", result = { done = json.array() } }))
    local path = os.tmpname()
    assert(bulk.export(src, path, { results = true }))

    local rep = assert(bulk.import(broker, path, { queue = "dst" }))
    assert.equal(10, rep.inserted)
    assert.equal(0, rep.existing)
    assert.equal(10, rep.copied)
    assert.equal(10, n("SELECT COUNT(*) FROM celers_tasks WHERE queue = 'src'"))
    assert.equal(10, n("SELECT COUNT(*) FROM celers_tasks WHERE queue = 'dst'"))
    for i, id in ipairs(ids) do
      local copy = bulk.copy_id(id, "dst")
      assert.equal(1, n(("SELECT COUNT(*) FROM celers_tasks s JOIN celers_tasks t ON t.id = %s WHERE s.id = %s "
        .. "AND t.queue = 'dst' AND s.queue = 'src' AND t.task_name = s.task_name AND t.payload = s.payload "
        .. "AND t.priority = s.priority AND JSON_EQUALS(t.metadata, s.metadata) "
        .. "AND t.idempotency_key <=> s.idempotency_key"):format(q(copy), q(id))), "copy of task " .. i)
    end
    -- the result followed its task to the copy
    assert.equal('{"done":[]}', helper.scalar(dsn, "SELECT result FROM celers_results WHERE task_id = "
      .. q(bulk.copy_id(ids[1], "dst"))))

    -- a re-run finds its copies; another queue gets copies of its own
    rep = assert(bulk.import(broker, path, { queue = "dst" }))
    assert.equal(0, rep.inserted)
    assert.equal(10, rep.existing)
    assert.equal(20, n("SELECT COUNT(*) FROM celers_tasks"))

    -- the CLI's --into-queue does the same
    local cmd = "CELERS_LUA=" .. helper.shell_quote(helper.lua()) .. " CELERS_DSN=" .. helper.shell_quote(dsn)
      .. " " .. helper.shell_quote(helper.root .. "/bin/celers") .. " import --into-queue dst2 "
      .. helper.shell_quote(path)
    local code, out = proc.run(cmd)
    assert.equal(0, code, out)
    assert.matches("imported 10 new tasks, 0 existed already", out, 1, true)
    assert.equal(10, n("SELECT COUNT(*) FROM celers_tasks WHERE queue = 'dst2'"))
    -- into the queue the tasks came from, nothing is copied: they exist
    rep = assert(bulk.import(broker, path, { queue = "src" }))
    assert.equal(0, rep.copied)
    assert.equal(10, rep.existing)
    assert.equal(30, n("SELECT COUNT(*) FROM celers_tasks"))
    os.remove(path)
  end)

  it("copy ids: version 7, the source's time prefix, stable, one per queue", function()
    local id = celers.core.uuid7()
    local a, b = bulk.copy_id(id, "a"), bulk.copy_id(id, "b")
    assert.equal(a, bulk.copy_id(id, "a"))
    assert.not_equal(a, b)
    for _, c in ipairs { a, b } do
      assert.matches("^%x%x%x%x%x%x%x%x%-%x%x%x%x%-7%x%x%x%-[89ab]%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$", c)
      assert.equal(id:sub(1, 13), c:sub(1, 13))
      assert.not_equal(id, c)
    end
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
