--- make bench, JSON rows: what the exact codec costs. Encode and decode of a typical payload
-- with celers.json beside lua-cjson (same process, same payload), and enqueue tasks/second
-- with a table payload (encoded on the way) beside the same payload as a ready string.
-- Figures are ratios against the other side measured in the same run.
local celers = require "celers"
local core = require "celers.core"
local helper = require "spec.helper"

local ROUNDS = tonumber(os.getenv("BENCH_ROUNDS") or "3")
local SCALE = tonumber(os.getenv("BENCH_SCALE") or "1")
local json = celers.json
local cjson = require("cjson").new()

-- A typical task payload: ids, a few strings, a float, a list, a nested object.
local PAYLOAD = {
  order_id = 1234567, customer = "alice@example.com", amount = 42.5, currency = "EUR",
  items = json.array { { sku = "A-1", qty = 2 }, { sku = "B-7", qty = 1 } },
  flags = json.array { "gift", "express" }, note = "caf\195\169 au lait", retries = 0,
}
local TEXT = json.encode(PAYLOAD)

local function rate(n, fn)
  local t0 = core.monotonic()
  fn(n)
  return n / (core.monotonic() - t0)
end

local function row(name, value, base, base_name)
  print(("  %-34s %10.0f /s   %5.2f x %s"):format(name, value, value / base, base_name))
end

-- Rounds alternate between the sides compared, so drift on a shared machine hits both alike.
local N = math.floor(50000 * SCALE)
local sides = {
  { name = "celers.json", encode = json.encode, decode = json.decode, enc = 0, dec = 0 },
  { name = "lua-cjson", encode = cjson.encode, decode = cjson.decode, enc = 0, dec = 0 },
}
for _ = 1, ROUNDS do
  for _, s in ipairs(sides) do
    local encode, decode = s.encode, s.decode
    s.enc = math.max(s.enc, rate(N, function(k) for _ = 1, k do encode(PAYLOAD) end end))
    s.dec = math.max(s.dec, rate(N, function(k) for _ = 1, k do decode(TEXT) end end))
  end
end
print(("json: payload of %d bytes; best of %d rounds"):format(#TEXT, ROUNDS))
for _, s in ipairs(sides) do
  row("encode " .. s.name, s.enc, sides[2].enc, "lua-cjson")
  row("decode " .. s.name, s.dec, sides[2].dec, "lua-cjson")
end

local dsn = helper.fresh_dsn("bench_json")
local broker = assert(celers.connect(dsn .. "&queue=json"))
assert(broker:migrate())
local n = math.floor(2000 * SCALE)
local function enqueue_round(payload)
  helper.query(dsn, "TRUNCATE TABLE celers_tasks")
  local t0 = core.monotonic()
  for _ = 1, n do assert(broker:enqueue("bench", payload)) end
  return n / (core.monotonic() - t0)
end
local as_string, as_table = 0, 0
for _ = 1, ROUNDS do
  as_string = math.max(as_string, enqueue_round(TEXT))
  as_table = math.max(as_table, enqueue_round(PAYLOAD))
end
row("enqueue, string payload", as_string, as_string, "string")
row("enqueue, table payload", as_table, as_string, "string")
broker:close()
helper.query(dsn, "DROP DATABASE IF EXISTS celers_t_bench_json")
