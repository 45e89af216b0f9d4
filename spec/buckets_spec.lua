-- Statement buckets: variable-length IN lists (batch claim, ack_batch, touch_batch) are padded
-- to a few fixed lengths, so one connection holds a bounded number of server-side prepared
-- statements whatever batch sizes it sees, and stops preparing once warm. Read from the
-- server's own counters (Prepared_stmt_count, Com_stmt_prepare), while this spec's broker is
-- the only client that prepares statements.
-- luacheck: max line length 160
local helper = require "spec.helper"
local celers = require "celers"

describe("statement buckets", function()
   local dsn, broker

   local function status(name)
      return tonumber(helper.query(dsn, "SHOW GLOBAL STATUS LIKE '" .. name .. "'")[1][2])
   end

   -- one round of claims, acks and lease extensions with every batch size from 1 to 80,
   -- and a few long ones
   local function varied_round()
      for n = 1, 80 do
         local ts = assert(broker:dequeue_batch(n))
         assert.equal(n, #ts)
         assert.equal(n, (broker:touch_batch(ts, 60)))
         assert.equal(n, broker:ack_batch(ts))
      end
      for _, n in ipairs { 300, 499, 500, 501, 777 } do
         local ts = assert(broker:dequeue_batch(n))
         assert.equal(n, #ts)
         assert.equal(n, (broker:touch_batch(ts, 60)))
         assert.equal(n, broker:ack_batch(ts))
      end
   end

   setup(function()
      dsn = helper.fresh_dsn("spec_buckets")
      local b = assert(celers.connect(dsn))
      assert(b:migrate())
      b:close()
   end)

   after_each(function()
      if broker then broker:close() end
      broker = nil
   end)

   it("hold a bounded number of statements per connection and stop preparing once warm", function()
      local per_round = 80 * 81 / 2 + 300 + 499 + 500 + 501 + 777
      broker = assert(celers.connect { dsn = dsn, recover_interval = 3600 })
      local batch = {}
      for i = 1, 2 * per_round do
         batch[#batch + 1] = { name = "b", payload = tostring(i) }
         if #batch == 500 then assert(broker:enqueue_batch(batch)); batch = {} end
      end
      if #batch > 0 then assert(broker:enqueue_batch(batch)) end
      local held0 = status("Prepared_stmt_count")
      varied_round()
      local held1, prepared1 = status("Prepared_stmt_count"), status("Com_stmt_prepare")
      -- claim: select + 6 update buckets; ack: 6; touch: 6 updates (+ lookups only when a
      -- lease was lost); a few others (staging, lease sweep)
      assert.is_true(held1 - held0 <= 24, (held1 - held0) .. " statements held after varied batch sizes")
      varied_round()
      assert.equal(prepared1, status("Com_stmt_prepare"), "statements were prepared again when warm")
      assert.equal(held1, status("Prepared_stmt_count"))
      assert.equal(2 * per_round, tonumber(helper.scalar(dsn, "SELECT COUNT(*) FROM celers_tasks WHERE state = 'completed'")))
   end)

   it("a padded list settles exactly the tasks given, fenced per task", function()
      broker = assert(celers.connect(dsn))
      helper.query(dsn, "DELETE FROM celers_tasks")
      for i = 1, 7 do assert(broker:enqueue("p", tostring(i))) end
      local ts = assert(broker:dequeue_batch(5)) -- an UPDATE of 16 slots, 11 of them padding
      assert.equal(5, #ts)
      local stale = { id = ts[5].id, claim_id = "00000000-0000-0000-0000-000000000000" }
      assert.equal(3, broker:ack_batch { ts[1], ts[2], ts[3], stale, ts[3] })
      assert.same({ { "completed", "3" }, { "pending", "2" }, { "processing", "2" } }, helper.query(dsn,
         "SELECT state, COUNT(*) FROM celers_tasks GROUP BY state ORDER BY state"))
      local n, held = broker:touch_batch({ ts[4], stale }, 60)
      assert.equal(1, n)
      assert.same({ true, false }, held)
   end)
   -- MariaDB plans "(id, claim_id) IN ((?, ?))" with one pair as a scan of the whole primary
   -- key; the lists start at 4 pairs so a batch of one is a key lookup too.
   it("ack_batch and touch_batch of a single task read a few index entries, not the table", function()
      broker = assert(celers.connect { dsn = dsn, recover_interval = 3600 })
      helper.query(dsn, "DELETE FROM celers_tasks")
      local batch = {}
      for i = 1, 3000 do batch[i] = { name = "one", payload = tostring(i) } end
      assert(broker:enqueue_batch(batch))
      local reads = { "Handler_read_next", "Handler_read_rnd_next", "Handler_read_first" }
      local function handler_reads()
         local total = 0
         for _, name in ipairs(reads) do total = total + status(name) end
         return total
      end
      local ts = assert(broker:dequeue_batch(1))
      local before = handler_reads()
      assert.equal(1, (broker:touch_batch(ts, 60)))
      assert.equal(1, broker:ack_batch(ts))
      local read = handler_reads() - before
      -- the counter also sees this spec's own SHOW STATUS queries (a few hundred rows at most)
      assert.is_true(read < 1500, read .. " index entries read to settle one task of 3000")
      assert.equal("completed", helper.scalar(dsn, "SELECT state FROM celers_tasks WHERE id = '" .. ts[1].id .. "'"))
   end)
end)
