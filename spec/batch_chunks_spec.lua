-- enqueue_batch splits a batch into statements by size before adding a row, so tasks that
-- each fit the server's max_allowed_packet (16M on the private server: scripts/db.sh) are
-- never refused together.
local helper = require "spec.helper"
local celers = require "celers"

local dsn = helper.fresh_dsn("chunks")

describe("enqueue_batch chunks", function()
  local b
  setup(function()
    b = assert(celers.connect(dsn))
    assert(b:migrate())
  end)
  before_each(function() helper.query(dsn, "DELETE FROM celers_tasks") end)
  teardown(function() if b then b:close() end end)

  it("takes a 4 MB and a 13 MB task in one batch, each stored whole", function()
    assert.equals(16 * 1024 * 1024, tonumber(helper.scalar(dsn, "SELECT @@max_allowed_packet")))
    local small, big = ("s"):rep(4000000), ("b"):rep(12999999) .. "\0"
    local ids, n = b:enqueue_batch { { name = "small", payload = small }, { name = "big", payload = big } }
    assert.is_table(ids, tostring(n))
    assert.equals(2, n)
    assert.same({ { "small", "4000000" }, { "big", "13000000" } }, helper.query(dsn,
      "SELECT task_name, LENGTH(payload) FROM celers_tasks ORDER BY LENGTH(payload)"))
    assert.equals(big, b:get_task(ids[2]).payload)
  end)

  it("still refuses, all or nothing, a batch whose one task is too large alone", function()
    local ids, err = b:enqueue_batch {
      { name = "ok", payload = "x" }, { name = "huge", payload = ("h"):rep(17000000) } }
    assert.is_nil(ids)
    assert.equals("too_large", err.code)
    assert.equals("0", helper.scalar(dsn, "SELECT COUNT(*) FROM celers_tasks"))
    assert.is_true(b:check_health().healthy)
  end)
end)
