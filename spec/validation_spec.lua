-- Hostile arguments, checked in one place (csrc/auxiliar.c): NUL bytes in text, empty
-- queues, integers near 2^63, inf/NaN/huge seconds, and Lua code run while arguments are
-- read that closes the broker. Each case asserts the error AND that nothing reached the
-- tables (or that what did is exact).
local helper = require "spec.helper"
local celers = require "celers"

local dsn = helper.fresh_dsn("validation")
local q = helper.sql_string
local core = celers.core

local function scalar(sql) return helper.scalar(dsn, sql) end
local function count(where)
  return tonumber(scalar("SELECT COUNT(*) FROM celers_tasks" .. (where and (" WHERE " .. where) or "")))
end
-- 2^63 and beyond: math.maxinteger on 5.4; on LuaJIT (no integers) the nearest doubles.
local MAXINT = math.maxinteger or 2 ^ 63
local HUGE_INTS = { MAXINT, 2 ^ 63, -2 ^ 63, 1e308, math.huge, -math.huge }

describe("argument checks", function()
  local broker
  setup(function()
    broker = assert(celers.connect(dsn))
    assert(broker:migrate())
  end)
  before_each(function()
    helper.query(dsn, "DELETE FROM celers_tasks; DELETE FROM celers_dead_letter_queue; "
      .. "DELETE FROM celers_results; DELETE FROM celers_recurring_runs; DELETE FROM celers_workers")
  end)
  teardown(function() if broker then broker:close() end end)

  describe("text", function()
    it("refuses a NUL byte in every text argument, naming it, and stores nothing", function()
      local cases = {
        { "enqueue", function() return broker:enqueue("na\0me", "x") end, "'name'" },
        { "enqueue", function() return broker:enqueue("t", "x", { queue = "q\0" }) end, "'queue'" },
        { "enqueue", function() return broker:enqueue("t", "x", { idempotency_key = "k\0one" }) end,
          "'idempotency_key'" },
        { "enqueue", function() return broker:enqueue("t", "x", { metadata = '{"a":"\0"}' }) end, "'metadata'" },
        { "enqueue", function() return broker:enqueue("t", "x", { id = ("0"):rep(35) .. "\0" }) end, "'id'" },
        { "enqueue_batch", function() return broker:enqueue_batch { { name = "t\0", payload = "x" } } end,
          "'name'" },
        { "enqueue_batch", function()
          return broker:enqueue_batch { { name = "t", payload = "x", idempotency_key = "k\0two" } } end,
          "'idempotency_key'" },
        { "enqueue_recurring", function() return broker:enqueue_recurring("s\0", 1, "t", "x") end, "'schedule'" },
        { "dequeue", function() return broker:dequeue { worker_id = "w\0" } end, "'worker_id'" },
        { "dequeue_with_worker_id", function() return broker:dequeue_with_worker_id("w\0x") end, "'worker_id'" },
        { "worker_id", function() return broker:worker_id("w\0x") end, "'worker_id'" },
        { "ack", function() return broker:ack("id\0") end, "'task'" },
        { "ack", function() return broker:ack { id = "id", claim_id = "c\0" } end, "'claim_id'" },
        { "reject", function() return broker:reject("id", { error = "e\0" }) end, "'error'" },
        { "retry", function() return broker:retry("id", 1, "e\0") end, "'error'" },
        { "get_task", function() return broker:get_task("id\0") end, "'id'" },
        { "with_queue", function() return broker:with_queue("q\0") end, "'queue'" },
        { "list_tasks", function() return broker:list_tasks { state = "pending\0" } end, "'state'" },
        { "update_error_message", function() return broker:update_error_message("id", "m\0") end, "'message'" },
        { "store_result", function() return broker:store_result("id\0", { result = "r" }) end, "'task_id'" },
        { "store_result", function() return broker:store_result("id", { error = "e\0" }) end, "'error'" },
        { "purge_by_task_name", function() return broker:purge_by_task_name("t\0") end, "'task_name'" },
        { "heartbeat_worker", function() return broker:heartbeat_worker { worker_id = "w\0" } end, "'worker_id'" },
        { "heartbeat_worker", function() return broker:heartbeat_worker { info = '{"a":1}\0' } end, "'info'" },
        { "requeue_from_dlq", function() return broker:requeue_from_dlq("d\0") end, "'dlq_id'" },
        { "connect", function() return celers.connect { dsn = dsn, worker_id = "w\0" } end, "'worker_id'" },
        { "connect", function() return celers.connect { dsn = dsn, queue = "q\0" } end, "'queue'" },
      }
      for _, c in ipairs(cases) do
        local ok, err = pcall(c[2])
        assert.is_false(ok, c[1] .. " " .. c[3])
        assert.matches("celers: " .. c[1] .. ": " .. c[3] .. " must not contain NUL bytes", err, 1, true)
      end
      assert.equals(0, count())
      assert.equals("0", scalar("SELECT COUNT(*) FROM celers_results"))
      assert.equals("0", scalar("SELECT COUNT(*) FROM celers_workers"))
      assert.equals("0", scalar("SELECT COUNT(*) FROM celers_recurring_runs"))
    end)

    it("keys that differ after a NUL byte never collide: both are refused, none is cut", function()
      assert.has_error(function() broker:enqueue("t", "a", { idempotency_key = "k\0one" }) end)
      assert.has_error(function() broker:enqueue("t", "b", { idempotency_key = "k\0two" }) end)
      assert.equals(0, count())
      local id1 = assert(broker:enqueue("t", "a", { idempotency_key = "k-one" }))
      local id2 = assert(broker:enqueue("t", "b", { idempotency_key = "k-two" }))
      assert.not_equals(id1, id2)
      assert.equals(2, count("idempotency_key LIKE 'k-%'"))
    end)

    it("stores payloads and results with NUL bytes verbatim, one and in batches", function()
      local bytes = "\0a\0\0b\255\0"
      local id = assert(broker:enqueue("t", bytes))
      local ids = assert(broker:enqueue_batch {
        { name = "t", payload = bytes .. "1" }, { name = "t", payload = "\0" } })
      assert.equals(#bytes, tonumber(scalar("SELECT LENGTH(payload) FROM celers_tasks WHERE id = " .. q(id))))
      assert.equals("1", scalar("SELECT payload = " .. q(bytes .. "1")
        .. " FROM celers_tasks WHERE id = " .. q(ids[1])))
      assert.equals(bytes, broker:get_task(id).payload)
      assert.equals("\0", broker:get_task(ids[2]).payload)
      assert.is_true(broker:store_result(id, { result = bytes }))
      assert.equals(bytes, broker:get_result(id).result)
    end)

    it("refuses an empty queue in enqueue and enqueue_batch as with_queue does", function()
      assert.has_error(function() broker:enqueue("t", "x", { queue = "" }) end,
        "celers: enqueue: 'queue' must not be empty")
      assert.has_error(function() broker:enqueue_after("t", "x", 5, { queue = "" }) end,
        "celers: enqueue_after: 'queue' must not be empty")
      assert.has_error(function() broker:enqueue_batch { { name = "t", payload = "x", queue = "" } } end,
        "celers: enqueue_batch: 'queue' must not be empty")
      assert.has_error(function() broker:with_queue("") end, "celers: with_queue: 'queue' must not be empty")
      assert.equals(0, count())
    end)
  end)

  describe("integers", function()
    it("never read a count through floating point: dequeue_batch near 2^63 is a range error", function()
      assert(broker:enqueue("t", "x"))
      for _, n in ipairs(HUGE_INTS) do
        local ok, err = pcall(broker.dequeue_batch, broker, n)
        assert.is_false(ok)
        assert.matches(n < 0 and "'n' must not be negative" or "'n' must be within 0..10000", err)
      end
      assert.has_error(function() broker:dequeue_batch(0 / 0) end,
        "celers: dequeue_batch: 'n' must be an integer (got number)")
      assert.equals(1, count("state = 'pending'"))
      local got = assert(broker:dequeue_batch(10000))
      assert.equals(1, #got)
      assert.equals(1, count("state = 'processing'"))
    end)

    it("stores a recurring run_at exactly, up to the largest integer", function()
      local big = math.maxinteger and math.maxinteger or 2 ^ 53
      local id, created = broker:enqueue_recurring("s", big, "t", "x")
      assert.is_true(created)
      assert.equals(tostring(math.maxinteger and big or "9007199254740992"),
        scalar("SELECT run_at FROM celers_recurring_runs WHERE task_id = " .. q(id)))
      assert.has_error(function() broker:enqueue_recurring("s", 2 ^ 63, "t", "x") end,
        "celers: enqueue_recurring: 'run_at' must be within 0..9223372036854775807")
      assert.has_error(function() broker:enqueue_recurring("s", -1, "t", "x") end,
        "celers: enqueue_recurring: 'run_at' must not be negative")
      assert.equals("1", scalar("SELECT COUNT(*) FROM celers_recurring_runs"))
    end)

    it("takes list limits up to the largest integer as 'all' and pages past the end as empty", function()
      assert(broker:enqueue_batch { { name = "a", payload = "1" }, { name = "b", payload = "2" } })
      assert.equals(2, #assert(broker:list_tasks { limit = MAXINT < 2 ^ 63 and MAXINT or 2 ^ 62 }))
      assert.equals(0, #assert(broker:list_tasks { offset = 2 ^ 62 }))
      assert.equals(2, #assert(broker:list_tasks { limit = 5.0 }))
      assert.has_error(function() broker:list_tasks { limit = 2 ^ 63 } end,
        "celers: list_tasks: 'limit' must be within 0..9223372036854775807")
      assert.has_error(function() broker:list_tasks { limit = -1 } end,
        "celers: list_tasks: 'limit' must not be negative")
      assert.has_error(function() broker:list_dlq { offset = math.huge } end,
        "celers: list_dlq: 'offset' must be within 0..9223372036854775807")
    end)

    it("keeps priority and max_retries within their INT columns", function()
      assert.has_error(function() broker:enqueue("t", "x", { priority = 2 ^ 31 }) end,
        "celers: enqueue: 'priority' must be within -2147483648..2147483647")
      assert.has_error(function() broker:enqueue("t", "x", { priority = MAXINT }) end,
        "celers: enqueue: 'priority' must be within -2147483648..2147483647")
      assert.has_error(function() broker:enqueue("t", "x", { max_retries = 2 ^ 40 }) end,
        "celers: enqueue: 'max_retries' must be within 0..2147483647")
      assert.equals(0, count())
      local id = assert(broker:enqueue("t", "x", { priority = -2 ^ 31, max_retries = 2 ^ 31 - 1 }))
      assert.equals("-2147483648 2147483647",
        scalar("SELECT CONCAT(priority, ' ', max_retries) FROM celers_tasks WHERE id = " .. q(id)))
    end)
  end)

  describe("seconds", function()
    local bad = { math.huge, 1e308, 0 / 0, 315360001 }
    local calls = {
      { "archive_results", "older_than_s", function(v) return broker:archive_results(v) end },
      { "archive_completed_tasks", "older_than_s", function(v) return broker:archive_completed_tasks(v) end },
      { "recover_stuck_tasks", "threshold_s", function(v) return broker:recover_stuck_tasks(v) end },
      { "prune_workers", "older_than_s", function(v) return broker:prune_workers(v) end },
      { "list_workers", "stale_after", function(v) return broker:list_workers { stale_after = v } end },
      { "enqueue", "delay", function(v) return broker:enqueue("t", "x", { delay = v }) end },
      { "enqueue", "timeout", function(v) return broker:enqueue("t", "x", { timeout = v }) end },
      { "enqueue_after", "seconds", function(v) return broker:enqueue_after("t", "x", v) end },
      { "enqueue_batch", "delay",
        function(v) return broker:enqueue_batch { { name = "t", payload = "x", delay = v } } end },
      { "dequeue", "lease", function(v) return broker:dequeue { lease = v } end },
      { "dequeue_batch", "lease", function(v) return broker:dequeue_batch(1, { lease = v }) end },
      { "touch", "seconds", function(v) return broker:touch("id", v) end },
      { "touch_batch", "seconds", function(v) return broker:touch_batch({}, v) end },
      { "retry", "delay", function(v) return broker:retry("id", v) end },
      { "reject", "delay", function(v) return broker:reject("id", { delay = v }) end },
      { "store_result", "ttl", function(v) return broker:store_result("id", { ttl = v }) end },
    }

    it("raise the one range error for inf, NaN, 1e308 and past ten years, in every method", function()
      for _, c in ipairs(calls) do
        for _, v in ipairs(bad) do
          local ok, err = pcall(c[3], v)
          assert.is_false(ok, c[1] .. " " .. tostring(v))
          assert.matches("celers: " .. c[1] .. ": '" .. c[2] .. "' must be within 0..315360000", err, 1, true)
        end
      end
      assert.equals(0, count())
      assert.equals("0", scalar("SELECT COUNT(*) FROM celers_results"))
    end)

    it("connect refuses inf and NaN settings", function()
      for _, opts in ipairs {
        { retry = { factor = math.huge } }, { retry = { max = 0 / 0 } }, { reconnect_backoff = math.huge },
        { recover_interval = math.huge }, { lease = math.huge },
      } do
        opts.dsn = dsn
        local ok, err = pcall(celers.connect, opts)
        assert.is_false(ok)
        assert.matches("celers: connect: option '[%w_]+' must be", err)
      end
    end)

    it("and the largest accepted value works against the server", function()
      local max = 315360000
      assert.equals(0, broker:archive_results(max))
      assert.equals(0, broker:archive_completed_tasks(max))
      assert.same({ 0, 0 }, { broker:recover_stuck_tasks(max) })
      assert.equals(0, broker:prune_workers(max))
      assert.same({}, assert(broker:list_workers { stale_after = max }))
      local id = assert(broker:enqueue("t", "x", { delay = max, timeout = max }))
      assert.equals("1", scalar("SELECT scheduled_at > NOW(6) + INTERVAL 9 YEAR FROM celers_tasks WHERE id = "
        .. q(id)))
    end)
  end)

  describe("Lua code run while arguments are read", function()
    after_each(function() core.set_json(celers.json.encode, celers.json.decode) end)

    it("a JSON encoder that closes the broker makes the call raise, not crash", function()
      -- each call on a fresh broker; the encoder closes it (or a with_queue sibling)
      for i, call in ipairs {
        function(b) return b:enqueue("t", { k = 1 }) end,
        function(b) return b:enqueue("t", "x", { metadata = { m = 1 } }) end,
        function(b) return b:enqueue_batch { { name = "t", payload = { k = 1 } } } end,
        function(b) return b:store_result("id", { result = { r = 1 } }) end,
        function(b) return b:heartbeat_worker { info = { i = 1 } } end,
        function(b) return b:enqueue_recurring("s", 1, "t", { k = 1 }) end,
      } do
        local b = assert(celers.connect(dsn))
        local closer = i % 2 == 0 and b:with_queue("other") or b
        core.set_json(function(v) closer:close(); return celers.json.encode(v) end, celers.json.decode)
        local ok, err = pcall(call, b)
        core.set_json(celers.json.encode, celers.json.decode)
        assert.is_false(ok, i)
        assert.matches("the broker is closed", err)
      end
      assert.equals(0, count())
      assert.equals("0", scalar("SELECT COUNT(*) FROM celers_results"))
      assert.equals("0", scalar("SELECT COUNT(*) FROM celers_workers"))
      assert.equals("0", scalar("SELECT COUNT(*) FROM celers_recurring_runs"))
    end)

    it("a JSON encoder that replaces the broker's worker id: the new one is used, the old never read", function()
      local b = assert(celers.connect(dsn))
      b:worker_id("before-" .. ("x"):rep(200))
      core.set_json(function(v) b:worker_id("after"); return celers.json.encode(v) end, celers.json.decode)
      assert.is_true(b:heartbeat_worker { info = { i = 1 } })
      core.set_json(celers.json.encode, celers.json.decode)
      assert.same({ { "after", '{"i":1}' } }, helper.query(dsn, "SELECT worker_id, info FROM celers_workers"))
      b:close()
    end)

    it("JSON text an encoder returns with a NUL byte is refused where it is kept as text", function()
      core.set_json(function() return '{"a":"\0"}' end, celers.json.decode)
      local ok, err = pcall(broker.enqueue, broker, "t", "x", { metadata = { a = 1 } })
      assert.is_false(ok)
      assert.matches("celers: enqueue: 'metadata' must not contain NUL bytes", err, 1, true)
      ok, err = pcall(broker.heartbeat_worker, broker, { info = { a = 1 } })
      assert.is_false(ok)
      assert.matches("celers: heartbeat_worker: 'info' must not contain NUL bytes", err, 1, true)
      -- a table payload is bytes: stored verbatim
      local id = assert(broker:enqueue("t", { a = 1 }))
      core.set_json(celers.json.encode, celers.json.decode)
      assert.equals('{"a":"\0"}', broker:get_task(id).body)
      assert.equals(1, count())
      assert.equals("0", scalar("SELECT COUNT(*) FROM celers_workers"))
    end)

    it("an __index metamethod that closes the broker makes the call raise, not crash", function()
      local b = assert(celers.connect(dsn))
      local opts = setmetatable({ status = "success" }, { __index = function() b:close() end })
      local ok, err = pcall(b.store_result, b, "id", opts)
      assert.is_false(ok)
      assert.matches("celers: store_result: the broker is closed", err)
      local b2 = assert(celers.connect(dsn))
      local hb = setmetatable({}, { __index = function() b2:close() end })
      ok, err = pcall(b2.heartbeat_worker, b2, hb)
      assert.is_false(ok)
      assert.matches("celers: heartbeat_worker: the broker is closed", err)
      assert.equals("0", scalar("SELECT COUNT(*) FROM celers_results"))
      assert.equals("0", scalar("SELECT COUNT(*) FROM celers_workers"))
      assert.is_true(broker:check_health().healthy)
    end)
  end)

  it("every method is registered once, by its binding file", function()
    local names = {}
    for k in pairs(core.broker_methods) do names[#names + 1] = k end
    for _, m in ipairs { "enqueue", "enqueue_batch", "dequeue", "ack", "reject", "list_tasks", "list_dlq",
      "check_health", "list_workers", "migrate", "list_migrations", "with_queue", "close" } do
      assert.is_function(core.broker_methods[m], m)
    end
    assert.is_true(#names >= 60, #names)
  end)
end)
