-- Task results: store_result (upsert), get_result, delete_result, archive_results.
local helper = require "spec.helper"
local celers = require "celers"

local dsn = helper.fresh_dsn("results")
local q = helper.sql_string

local function row(task_id)
  return helper.query(dsn, "SELECT task_name, state, COALESCE(CAST(result AS CHAR), 'NULL'), result_type, "
    .. "COALESCE(error_message, 'NULL'), "
    .. "completed_at IS NOT NULL, expires_at IS NOT NULL, queue FROM celers_results WHERE task_id = " .. q(task_id))[1]
end

describe("results", function()
  local a, b
  local T1, T2 = "01900000-0000-7000-8000-000000000001", "01900000-0000-7000-8000-000000000002"

  setup(function()
    a = assert(celers.connect(dsn .. "&queue=ra"))
    assert(a:migrate())
    b = a:with_queue("rb")
  end)
  before_each(function() helper.query(dsn, "DELETE FROM celers_results") end)
  teardown(function() if a then a:close() end end)

  it("stores a string as is and reads it back", function()
    assert.is_true(a:store_result(T1, { task_name = "resize", status = "success", result = "done bytes" }))
    a:store_result(T2, { result = "nul\0byte" })
    assert.equals("1", helper.scalar(dsn, "SELECT result = 'nul\\0byte' FROM celers_results WHERE task_id = " .. q(T2)))
    assert.equals("nul\0byte", a:get_result(T2).result)
    assert.same({ "resize", "success", "done bytes", "raw", "NULL", "1", "0", "ra" }, row(T1))
    local r = assert(a:get_result(T1))
    assert.equals("done bytes", r.result)
    assert.equals("success", r.status)
    assert.equals("resize", r.task_name)
    assert.equals(T1, r.task_id)
    assert.is_number(r.completed_at)
    assert.is_nil(r.expires_at)
  end)

  it("stores tables, numbers and booleans as JSON and decodes them back", function()
    a:store_result(T1, { result = { sum = 3, items = { 1, 2 } } })
    local stored = row(T1)
    assert.equals("json", stored[4])
    assert.same({ sum = 3, items = { 1, 2 } }, celers.json.decode(stored[3]))
    assert.same({ sum = 3, items = { 1, 2 } }, a:get_result(T1).result)
    a:store_result(T2, { result = 42 })
    assert.equals(42, a:get_result(T2).result)
    a:store_result(T2, { result = false })
    assert.equals(false, a:get_result(T2).result)
  end)

  it("upserts on task_id", function()
    a:store_result(T1, { task_name = "t", status = "pending" })
    assert.same({ "t", "pending", "NULL", "raw", "NULL", "0", "0", "ra" }, row(T1))
    a:store_result(T1, { task_name = "t", status = "failure", error = "boom" })
    assert.same({ "t", "failure", "NULL", "raw", "boom", "1", "0", "ra" }, row(T1))
    assert.equals("1", helper.scalar(dsn, "SELECT COUNT(*) FROM celers_results"))
    assert.equals("boom", a:get_result(T1).error)
  end)

  it("expires results after ttl, on the database clock", function()
    a:store_result(T1, { result = "x", ttl = 3600 })
    assert.equals("1", helper.scalar(dsn,
      "SELECT expires_at BETWEEN NOW(6) + INTERVAL 3590 SECOND AND NOW(6) + INTERVAL 3610 SECOND FROM celers_results"))
    assert.equals("x", a:get_result(T1).result)
    helper.query(dsn, "UPDATE celers_results SET expires_at = NOW(6) - INTERVAL 1 SECOND")
    assert.is_nil(a:get_result(T1))
    assert.equals("1", helper.scalar(dsn, "SELECT COUNT(*) FROM celers_results")) -- still there
  end)

  it("keeps queues apart", function()
    a:store_result(T1, { result = "a" })
    assert.is_nil(b:get_result(T1))
    assert.is_false(b:delete_result(T1))
    assert.equals(0, b:archive_results(0))
    assert.equals("1", helper.scalar(dsn, "SELECT COUNT(*) FROM celers_results"))
  end)

  it("deletes a result", function()
    a:store_result(T1, { result = "a" })
    assert.is_true(a:delete_result(T1))
    assert.is_false(a:delete_result(T1))
    assert.equals("0", helper.scalar(dsn, "SELECT COUNT(*) FROM celers_results"))
    assert.is_nil(a:get_result(T1))
  end)

  it("archive_results deletes old completed and expired results of the queue", function()
    a:store_result(T1, { result = "old" })
    a:store_result(T2, { result = "new" })
    a:store_result("01900000-0000-7000-8000-000000000003", { result = "expired", ttl = 10 })
    a:store_result("01900000-0000-7000-8000-000000000004", { status = "pending" })
    b:store_result("01900000-0000-7000-8000-000000000005", { result = "b" })
    helper.query(dsn, "UPDATE celers_results SET completed_at = NOW(6) - INTERVAL 2 DAY WHERE task_id IN ("
      .. q(T1) .. ", '01900000-0000-7000-8000-000000000005')")
    helper.query(dsn, "UPDATE celers_results SET expires_at = NOW(6) - INTERVAL 1 SECOND "
      .. "WHERE task_id = '01900000-0000-7000-8000-000000000003'")
    assert.equals(2, a:archive_results(86400))
    local left = helper.query(dsn, "SELECT result FROM celers_results ORDER BY task_id")
    assert.same({ { "new" }, { "NULL" }, { "b" } }, left)
  end)

  it("raises on bad arguments", function()
    assert.error_matches(function() a:store_result(nil, {}) end, "task_id")
    assert.error_matches(function() a:store_result(T1, "x") end, "result")
    assert.error_matches(function() a:store_result(T1, { status = "ok" }) end, "status")
    assert.error_matches(function() a:store_result(T1, { ttl = 0 }) end, "ttl")
    assert.error_matches(function() a:store_result(T1, { ttl = "1" }) end, "ttl")
    assert.error_matches(function() a:store_result(T1, { result = print }) end, "result")
    assert.error_matches(function() a:store_result(T1, { colour = 1 }) end, "colour")
    assert.error_matches(function() a:get_result(1) end, "task_id")
    assert.error_matches(function() a:delete_result() end, "task_id")
    assert.error_matches(function() a:archive_results(-1) end, "older_than_s")
    assert.error_matches(function() a:archive_results("1") end, "older_than_s")
  end)

  it("returns nil, err when the server fails", function()
    local fdsn = helper.fresh_dsn("results_fail")
    local c = assert(celers.connect(fdsn))
    assert(c:migrate())
    helper.query(fdsn, "DROP TABLE celers_results")
    for _, call in ipairs {
      function() return c:store_result(T1, { result = "x" }) end,
      function() return c:get_result(T1) end,
      function() return c:delete_result(T1) end,
      function() return c:archive_results(1) end,
    } do
      local res, err = call()
      assert.is_nil(res)
      assert.equals("sql", err.code)
    end
    c:close()
  end)
end)
