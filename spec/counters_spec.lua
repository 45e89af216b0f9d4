-- The per-process counters behind celers_tasks_enqueued_by_type and
-- celers_tasks_dead_lettered_total: every inserted task counted once, every task moved to
-- the dead-letter queue counted whichever path moved it.
local helper = require "spec.helper"
local celers = require "celers"

local dsn = helper.fresh_dsn("counters")
local q = helper.sql_string
local core = celers.core

local function by_type(name) return core.counters().enqueued_by_type[name] or 0 end
local function dead_lettered() return core.counters().dead_lettered or 0 end
local function dlq_rows() return tonumber(helper.scalar(dsn, "SELECT COUNT(*) FROM celers_dead_letter_queue")) end

describe("counters", function()
  local b
  setup(function()
    b = assert(celers.connect(dsn .. "&recover_interval=0"))
    assert(b:migrate())
  end)
  before_each(function() helper.query(dsn, "DELETE FROM celers_tasks; DELETE FROM celers_dead_letter_queue") end)
  teardown(function() if b then b:close() end end)

  it("count every inserted task of a batch by type, though one idempotency key was taken", function()
    assert(b:enqueue("mail", "first", { idempotency_key = "taken" }))
    local mail, sms = by_type("mail"), by_type("sms")
    local ids, inserted = assert(b:enqueue_batch {
      { name = "mail", payload = "1" },
      { name = "mail", payload = "2", idempotency_key = "taken" },
      { name = "mail", payload = "3" },
      { name = "sms", payload = "4" },
      { name = "mail", payload = "5", idempotency_key = "new" },
    })
    assert.equals(4, inserted)
    assert.equals(5, #ids)
    assert.equals(3, by_type("mail") - mail)
    assert.equals(1, by_type("sms") - sms)
    assert.equals("4", helper.scalar(dsn, "SELECT COUNT(*) FROM celers_tasks WHERE task_name = 'mail'"))
  end)

  it("count by type with skip_existing: only the rows that were new", function()
    local id = assert(b:enqueue("imp", "old", { idempotency_key = "k1" }))
    local mail = by_type("imp")
    local fixed = celers.core.uuid7()
    local ids, inserted = assert(b:enqueue_batch({
      { name = "imp", payload = "a", idempotency_key = "k1" },
      { name = "imp", payload = "b", idempotency_key = "k2" },
      { name = "imp", payload = "c", id = fixed },
    }, { skip_existing = true }))
    assert.equals(2, inserted)
    assert.equals(id, ids[1])
    assert.equals(2, by_type("imp") - mail)
    -- the same import again: nothing new, nothing counted
    local _, again = assert(b:enqueue_batch({
      { name = "imp", payload = "b", idempotency_key = "k2" },
      { name = "imp", payload = "c", id = fixed },
    }, { skip_existing = true }))
    assert.equals(0, again)
    assert.equals(2, by_type("imp") - mail)
  end)

  it("count tasks dequeue's lease sweep moves to the dead-letter queue", function()
    local ids = assert(b:enqueue_batch {
      { name = "t", payload = "1", max_retries = 0 }, { name = "t", payload = "2", max_retries = 0 } })
    assert.equals(2, #assert(b:dequeue_batch(2)))
    helper.query(dsn, "UPDATE celers_tasks SET lease_expires_at = NOW(6) - INTERVAL 1 SECOND")
    local before = dead_lettered()
    assert.same({}, assert(b:dequeue_batch(5))) -- its sweep moves both
    assert.equals(2, dlq_rows())
    assert.equals(2, dead_lettered() - before)
    -- ack_and_dequeue's sweep too
    local id = assert(b:enqueue("t", "3", { max_retries = 0 }))
    assert(b:dequeue())
    helper.query(dsn, "UPDATE celers_tasks SET lease_expires_at = NOW(6) - INTERVAL 1 SECOND WHERE id = " .. q(id))
    local acked, nxt = b:ack_and_dequeue(nil)
    assert.same({ false, nil }, { acked, nxt })
    assert.equals(3, dlq_rows())
    assert.equals(3, dead_lettered() - before)
    assert.truthy(ids)
  end)

  it("recover_stuck_tasks reports what it did, again and again", function()
    local before = dead_lettered()
    for round = 1, 3 do
      assert(b:enqueue_batch {
        { name = "s", payload = "1", max_retries = 0 }, { name = "s", payload = "2", max_retries = 5 } })
      assert.equals(2, #assert(b:dequeue_batch(2)))
      helper.query(dsn, "UPDATE celers_tasks SET started_at = NOW(6) - INTERVAL 1 HOUR WHERE state = 'processing'")
      assert.same({ 1, 1 }, { b:recover_stuck_tasks(60) }, "round " .. round)
      assert.equals(round, dlq_rows())
      assert.equals(round, dead_lettered() - before)
      helper.query(dsn, "DELETE FROM celers_tasks")
    end
    assert.same({ 0, 0 }, { b:recover_stuck_tasks(60) })
  end)
end)
