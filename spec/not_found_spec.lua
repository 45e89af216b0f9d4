-- One not-found convention for every call that names a row by id:
--   a lookup of a row that is not there returns nil (and no error);
--   an action on a row that is not there (or no longer in a state it acts on) returns false;
--   nil, err only for failures.
local helper = require "spec.helper"
local celers = require "celers"

local dsn = helper.fresh_dsn("not_found")
local MISSING = "00000000-0000-7000-8000-000000000000"

describe("not found", function()
  local b
  setup(function()
    b = assert(celers.connect(dsn))
    assert(b:migrate())
  end)
  teardown(function() if b then b:close() end end)

  local function tables()
    return helper.query(dsn, "SELECT (SELECT COUNT(*) FROM celers_tasks), (SELECT COUNT(*) FROM "
      .. "celers_dead_letter_queue), (SELECT COUNT(*) FROM celers_results), (SELECT COUNT(*) FROM celers_workers)")[1]
  end

  it("lookups return nil, with no error", function()
    for name, call in pairs {
      get_task = function() return b:get_task(MISSING) end,
      get_result = function() return b:get_result(MISSING) end,
    } do
      local n = select("#", call())
      local v, err = call()
      assert.is_nil(v, name)
      assert.is_nil(err, name)
      assert.equals(1, n, name)
    end
  end)

  it("actions on a missing row return false, with no error, and change nothing", function()
    assert(b:enqueue("other", "x"))
    local before = tables()
    local absent_task = { id = MISSING, claim_id = MISSING }
    for name, call in pairs {
      ack = function() return b:ack(MISSING) end,
      ack_task = function() return b:ack(absent_task) end,
      reject = function() return b:reject(MISSING) end,
      reject_dead = function() return b:reject(absent_task, { requeue = false }) end,
      retry = function() return b:retry(MISSING, 5) end,
      touch = function() return b:touch(absent_task, 60) end,
      cancel = function() return b:cancel(MISSING) end,
      set_worker_id = function() return b:set_worker_id(MISSING, "w") end,
      update_error_message = function() return b:update_error_message(MISSING, "m") end,
      delete_result = function() return b:delete_result(MISSING) end,
      requeue_from_dlq = function() return b:requeue_from_dlq(MISSING) end,
      purge_dlq = function() return b:purge_dlq(MISSING) end,
      remove_worker = function() return b:remove_worker("no-such-worker") end,
      retry_now = function() return b:retry_now(MISSING) end,
    } do
      local v, err = call()
      assert.is_false(v, name)
      assert.is_nil(err, name)
    end
    -- batches report how many they acted on, and which
    assert.equals(0, b:ack_batch { absent_task })
    local n, held = b:touch_batch({ absent_task }, 60)
    assert.same({ 0, { false } }, { n, held })
    local acked = b:ack_and_dequeue(absent_task)
    assert.is_false(acked)
    helper.query(dsn, "UPDATE celers_tasks SET state = 'pending', worker_id = NULL, claim_id = NULL")
    assert.same(before, tables())
  end)

  it("failures are nil, err: never confused with not found", function()
    local fdsn = helper.fresh_dsn("not_found_fail")
    local c = assert(celers.connect(fdsn))
    assert(c:migrate())
    helper.query(fdsn, "DROP TABLE celers_tasks; DROP TABLE celers_dead_letter_queue; DROP TABLE celers_results")
    for name, call in pairs {
      get_task = function() return c:get_task(MISSING) end,
      get_result = function() return c:get_result(MISSING) end,
      cancel = function() return c:cancel(MISSING) end,
      purge_dlq = function() return c:purge_dlq(MISSING) end,
      requeue_from_dlq = function() return c:requeue_from_dlq(MISSING) end,
      delete_result = function() return c:delete_result(MISSING) end,
      update_error_message = function() return c:update_error_message(MISSING, "m") end,
    } do
      local v, err = call()
      assert.is_nil(v, name)
      assert.equals("sql", err and err.code, name)
    end
    c:close()
  end)
end)
