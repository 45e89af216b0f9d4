-- celers.json, the exact codec: numbers, empty arrays, strings and hostile text, first on its
-- own, then through enqueue/dequeue, metadata and results against the real server, with the
-- stored JSON text checked in the tables.
local helper = require "spec.helper"
local celers = require "celers"

local json = celers.json
local q = helper.sql_string
local IS54 = math.type ~= nil -- Lua 5.4 (integers); LuaJIT has doubles only

local function int(text) -- a 5.4 integer from its decimal text (the parser of LuaJIT has no 1<<63)
  return assert(math.tointeger(tonumber(text)))
end

-- same value and, on 5.4, same subtype; floats compared bit for bit (and -0.0 by its sign)
local function same_number(expected, got)
  assert.equal("number", type(got))
  if IS54 then assert.equal(math.type(expected), math.type(got)) end
  assert.equal(("%.17g"):format(expected), ("%.17g"):format(got))
  if expected == 0 then assert.equal(1 / expected, 1 / got) end
end

local function deep_same(expected, got)
  if type(expected) == "number" then return same_number(expected, got) end
  if type(expected) ~= "table" then return assert.equal(expected, got) end
  assert.equal("table", type(got))
  assert.equal(getmetatable(expected) == json.array_mt, getmetatable(got) == json.array_mt)
  for k, v in pairs(expected) do deep_same(v, got[k]) end
  for k in pairs(got) do assert.is_not_nil(expected[k], "unexpected key " .. tostring(k)) end
end

-- The edge values of both interpreters and their JSON text.
local EDGES, EDGES_TEXT
if IS54 then
  EDGES = json.array {
    int "9007199254740993", math.maxinteger, math.mininteger, 0.1, 1e308, 5e-324, -0.0, 7, 7.0,
    json.array(), {}, json.array { json.array(), {}, { a = json.array() } },
  }
  EDGES_TEXT = '[9007199254740993,9223372036854775807,-9223372036854775808,0.1,1e+308,'
    .. '4.94065645841247e-324,-0.0,7,7.0,[],{},[[],{},{"a":[]}]]'
else
  EDGES = json.array {
    2 ^ 53, -2 ^ 63, 0.1, 1e308, 5e-324, -0.0, 7,
    json.array(), {}, json.array { json.array(), {}, { a = json.array() } },
  }
  EDGES_TEXT = '[9007199254740992,-9223372036854775808,0.1,1e+308,'
    .. '4.94065645841247e-324,-0.0,7,[],{},[[],{},{"a":[]}]]'
end

describe("celers.json", function()
  it("writes integers as integers and floats so that they read back bit for bit", function()
    assert.equal(EDGES_TEXT, json.encode(EDGES))
    deep_same(EDGES, json.decode(EDGES_TEXT))
    for _, x in ipairs { 0.1, 1 / 3, 2 / 3, 1e308, 5e-324, 2.2250738585072014e-308, 1e21, 1e-7,
                         123456.789, -1.5, 2 ^ 63, 2 ^ 64, 3.141592653589793, 4.35, 0.3 } do
      same_number(x, json.decode(json.encode(x)))
      assert.is_truthy(json.encode(x):find("[%.e]"), "a float keeps a '.' or an exponent")
    end
    assert.equal("0.1", json.encode(0.1))
    assert.equal("1e+21", json.encode(1e21))
    assert.equal("-0.0", json.encode(-0.0))
  end)

  it("keeps integers up to 2^63 as Lua integers on 5.4", function()
    if not IS54 then return end
    for _, text in ipairs { "0", "-1", "7", "9007199254740993", "9223372036854775807",
                            "-9223372036854775808", "12345678901234567" } do
      local v = json.decode(text)
      assert.equal("integer", math.type(v))
      assert.equal(text, tostring(v))
      assert.equal(text, json.encode(v))
    end
    assert.equal("float", math.type(json.decode("7.0")))
    assert.equal("float", math.type(json.decode("1e2")))
    assert.equal("7.0", json.encode(7.0))
    local p = json.decode('{"order":7,"order_id":12345678901234567}')
    assert.equal("order-7", "order-" .. p.order)
    assert.equal(int "12345678901234567", p.order_id)
  end)

  it("on LuaJIT refuses an integer that no double holds rather than rounding it", function()
    if IS54 then return end
    for _, text in ipairs { "9007199254740993", "9223372036854775807", "-9007199254740993" } do
      local ok, err = pcall(json.decode, "[" .. text .. "]")
      assert.is_false(ok)
      assert.matches("integer " .. text .. " cannot be held exactly by a LuaJIT number", err, 1, true)
    end
    -- whole numbers a double holds exactly are fine, 2^63 included
    assert.equal(2 ^ 53 + 2, json.decode("9007199254740994"))
    assert.equal(-2 ^ 63, json.decode("-9223372036854775808"))
    assert.equal("-9223372036854775808", json.encode(-2 ^ 63))
    assert.equal("9007199254740994", json.encode(2 ^ 53 + 2))
    assert.equal("order-7", "order-" .. json.decode('{"order":7}').order)
  end)

  it("refuses integers beyond 64 bits and numbers beyond a double", function()
    for _, text in ipairs { "9223372036854775808", "-9223372036854775809", "1" .. ("0"):rep(400) } do
      local ok, err = pcall(json.decode, text)
      assert.is_false(ok)
      assert.matches("does not fit in 64 bits", err, 1, true)
    end
    for _, text in ipairs { "1e400", "-1e309", "[1.8e308]" } do
      local ok, err = pcall(json.decode, text)
      assert.is_false(ok)
      assert.matches("beyond the range of a double", err, 1, true)
    end
    -- a long fraction is a double like any other
    same_number(0.1, json.decode("0.1" .. ("0"):rep(400)))
  end)

  it("refuses NaN and infinities with a clear error", function()
    for _, v in ipairs { 0 / 0, math.huge, -math.huge } do
      local ok, err = pcall(json.encode, { x = v })
      assert.is_false(ok)
      assert.matches("JSON has no NaN or infinity", err, 1, true)
    end
    for _, text in ipairs { "NaN", "Infinity", "-Infinity", "[nan]" } do
      assert.is_false(pcall(json.decode, text))
    end
  end)

  it("keeps empty arrays arrays: decoded arrays carry json.array_mt", function()
    assert.equal("{}", json.encode {})
    assert.equal("[]", json.encode(json.array()))
    assert.equal("[]", json.encode(setmetatable({}, json.array_mt)))
    assert.equal('[[],{},[[]],{"a":[]}]', json.encode(json.decode('[[],{},[[]],{"a":[]}]')))
    local list = json.decode("[1,2]")
    assert.equal(json.array_mt, getmetatable(list))
    list[1], list[2] = nil, nil
    assert.equal("[]", json.encode(list)) -- emptied, still an array
    assert.is_nil(getmetatable(json.decode("{}")))
    -- __jsontype (as dkjson marks tables) decides too
    assert.equal("[]", json.encode(setmetatable({}, { __jsontype = "array" })))
    assert.equal('{"1":"a"}', json.encode(setmetatable({ "a" }, { __jsontype = "object" })))
    -- plain tables: 1..n is an array (a few holes become null), anything else an object
    assert.equal("[1,null,3]", json.encode { 1, nil, 3 })
    assert.equal('{"x":1}', json.encode { x = 1 })
    assert.equal('{"20":1}', json.encode { [20] = 1 })
    assert.equal("[1,null,3]", json.encode(json.decode("[1,null,3]")))
    assert.equal(json.null, json.decode("[null]")[1])
    assert.equal(require("cjson").null, json.null)
  end)

  it("keeps every byte of a string: NUL, controls, quotes, non-BMP characters", function()
    local all = {}
    for i = 0, 127 do all[#all + 1] = string.char(i) end
    local s = table.concat(all) .. "caf\195\169 \240\159\152\128"
    assert.equal(s, json.decode(json.encode(s)))
    assert.equal('"a\\u0000b"', json.encode("a\0b"))
    assert.equal('"\\"\\\\\\n\\t\\u001f/"', json.encode('"\\\n\t\31/'))
    assert.equal("\0", json.decode('"\\u0000"'))
    assert.equal("\240\159\152\128", json.decode('"\\ud83d\\ude00"'))
    assert.equal("/\8\12", json.decode('"\\/\\b\\f"'))
    local long = ("x"):rep(1000000) .. "\0"
    assert.equal(long, json.decode(json.encode { long })[1])
  end)

  it("refuses invalid UTF-8 both ways, and lone surrogates", function()
    for _, bad in ipairs { "\255", "caf\195", "\192\175", "\237\160\128", "\244\144\128\128" } do
      local ok, err = pcall(json.encode, { bad })
      assert.is_false(ok)
      assert.matches("not valid UTF-8", err, 1, true)
      ok, err = pcall(json.decode, '"' .. bad .. '"')
      assert.is_false(ok)
      assert.matches("invalid UTF-8", err, 1, true)
    end
    assert.is_false(pcall(json.encode, { ["\255"] = 1 }))
    assert.is_false(pcall(json.decode, '"\\ud800"'))
    assert.is_false(pcall(json.decode, '"\\udc00"'))
    assert.is_false(pcall(json.decode, '"\\ud800\\u0041"'))
  end)

  it("refuses hostile documents with errors that say where", function()
    assert.is_table(json.decode(("["):rep(json.max_depth) .. ("]"):rep(json.max_depth)))
    local ok, err = pcall(json.decode, ("["):rep(json.max_depth + 1) .. ("]"):rep(json.max_depth + 1))
    assert.is_false(ok)
    assert.matches("nesting deeper than 1000 levels", err, 1, true)
    ok, err = pcall(json.decode, ("["):rep(100000))
    assert.is_false(ok)
    assert.matches("nesting deeper", err, 1, true)
    local cycle = {}
    cycle.self = cycle
    ok, err = pcall(json.encode, cycle)
    assert.is_false(ok)
    assert.matches("a cycle?", err, 1, true)
    for text, why in pairs { ["[1,"] = "unexpected end", ["01"] = "leading zero", ["[1] x"] = "after the value",
                             ['{"a" 1}'] = "expected ':'", ["{1:2}"] = "string key", ['"a\nb"'] = "control character",
                             ["tru"] = "unexpected character", [""] = "unexpected end", ["1."] = "no digit",
                             ['"\\x"'] = "bad escape", ["[1 2]"] = "expected ','" } do
      ok, err = pcall(json.decode, text)
      assert.is_false(ok, text)
      assert.matches(why, err, 1, true)
      assert.matches("at byte %d+", err)
    end
    ok, err = pcall(json.decode, nil)
    assert.is_false(ok)
    assert.matches("'text' must be a string", err, 1, true)
    assert.has_error(function() json.encode { f = print } end, "celers: json_encode: cannot encode a function")
    assert.has_error(function() json.encode { [true] = 1 } end,
      "celers: json_encode: cannot use a boolean as an object key")
    assert.has_error(function() json.encode { [1.5] = 1 } end,
      "celers: json_encode: cannot use a fractional number as an object key")
    -- the codec still works after all those errors
    assert.equal('{"a":[1]}', json.encode { a = json.array { 1 } })
  end)

  it("base64 in C: every byte value at every length, and refusals", function()
    local b64, unb64 = celers.core.base64_encode, celers.core.base64_decode
    local all = {}
    for i = 0, 255 do all[#all + 1] = string.char(i) end
    local bin = table.concat(all)
    for len = 0, 9 do assert.equal(bin:sub(1, len), unb64(b64(bin:sub(1, len)))) end
    assert.equal(bin, unb64(b64(bin)))
    assert.equal("AAECAw==", b64("\0\1\2\3"))
    assert.equal("aGVsbG8=", b64("hello"))
    assert.equal("hello", unb64("aGVs\nbG8=\n"))
    for _, bad in ipairs { "a$==", "abc", "a===", "ab=c", "aGVsbG8=aGVs", "=abc" } do
      local v, err = unb64(bad)
      assert.is_nil(v, bad)
      assert.equal("invalid base64", err)
    end
    assert.has_error(function() b64(nil) end, "celers: base64_encode: 'bytes' must be a string (got nil)")
    local big = bin:rep(4096) -- 1 MiB
    assert.equal(big, unb64(b64(big)))
  end)
end)

describe("celers.json through the database", function()
  local dsn = helper.fresh_dsn("json")
  local broker

  setup(function()
    broker = assert(celers.connect(dsn))
    assert(broker:migrate())
  end)

  before_each(function()
    helper.query(dsn, "DELETE FROM celers_tasks; DELETE FROM celers_results")
  end)

  teardown(function() broker:close() end)

  local function stored(column, id, tbl)
    return helper.scalar(dsn, ("SELECT %s FROM %s WHERE %s = %s"):format(column, tbl or "celers_tasks",
      tbl and "task_id" or "id", q(id)))
  end

  it("payloads and metadata come back as they went in, and the table holds their exact text", function()
    local id = assert(broker:enqueue("edges", { v = EDGES }, { metadata = { v = EDGES } }))
    assert.equal('{"v":' .. EDGES_TEXT .. "}", stored("payload", id))
    assert.equal('{"v":' .. EDGES_TEXT .. "}", stored("metadata", id))
    local t = assert(broker:dequeue())
    assert.equal(id, t.id)
    deep_same({ v = EDGES }, t.payload)
    deep_same({ v = EDGES }, t.metadata)
    assert.equal('{"v":' .. EDGES_TEXT .. "}", t.body)
    -- settled and read again: still the same
    assert(broker:ack(t))
    deep_same({ v = EDGES }, assert(broker:get_task(id)).payload)
  end)

  it("{order = 7} comes back as 7, and 12345678901234567 keeps its digits", function()
    local payload = { order = 7 }
    if IS54 then payload.order_id = int "12345678901234567" end
    local id = assert(broker:enqueue("order", payload))
    assert.equal("7", helper.scalar(dsn, "SELECT JSON_EXTRACT(payload, '$.order') FROM celers_tasks WHERE id = "
      .. q(id)))
    if IS54 then
      assert.equal("12345678901234567", helper.scalar(dsn,
        "SELECT JSON_EXTRACT(payload, '$.order_id') FROM celers_tasks WHERE id = " .. q(id)))
    end
    local t = assert(broker:dequeue())
    assert.equal("order-7", "order-" .. t.payload.order)
    if IS54 then
      assert.equal("integer", math.type(t.payload.order))
      assert.equal(int "12345678901234567", t.payload.order_id)
    end
  end)

  it("results keep their numbers and empty arrays", function()
    local id = assert(broker:enqueue("r", "x"))
    assert(broker:store_result(id, { task_name = "r", result = { v = EDGES } }))
    assert.equal('{"v":' .. EDGES_TEXT .. "}", stored("result", id, "celers_results"))
    deep_same({ v = EDGES }, assert(broker:get_result(id)).result)
  end)

  it("a batch keeps them too", function()
    local ids = assert(broker:enqueue_batch {
      { name = "a", payload = json.array(), metadata = { tags = json.array() } },
      { name = "b", payload = { n = EDGES } },
    })
    assert.equal("[]", stored("payload", ids[1]))
    assert.equal('{"tags":[]}', stored("metadata", ids[1]))
    assert.equal('{"n":' .. EDGES_TEXT .. "}", stored("payload", ids[2]))
  end)

  it("refuses NaN, infinities and invalid UTF-8 at enqueue, and stores nothing", function()
    assert.has_error(function() broker:enqueue("bad", { x = 0 / 0 }) end)
    local ok, err = pcall(broker.enqueue, broker, "bad", { x = 0 / 0 })
    assert.is_false(ok)
    assert.matches("'payload' cannot be encoded as JSON", err, 1, true)
    assert.matches("NaN", err, 1, true)
    ok, err = pcall(broker.enqueue, broker, "bad", "raw", { metadata = { t = math.huge } })
    assert.is_false(ok)
    assert.matches("'metadata' cannot be encoded as JSON", err, 1, true)
    ok, err = pcall(broker.enqueue, broker, "bad", { blob = "\255\0" })
    assert.is_false(ok)
    assert.matches("not valid UTF-8", err, 1, true)
    ok, err = pcall(broker.store_result, broker, "00000000-0000-7000-8000-000000000000",
      { task_name = "x", result = { -math.huge } })
    assert.is_false(ok)
    assert.matches("-inf", err, 1, true)
    assert.equal("0", helper.scalar(dsn, "SELECT COUNT(*) FROM celers_tasks"))
    assert.equal("0", helper.scalar(dsn, "SELECT COUNT(*) FROM celers_results"))
    -- binary bytes are fine as a string payload: stored as is
    local id = assert(broker:enqueue("bin", "\255\0\1"))
    assert.equal("FF0001", stored("HEX(payload)", id))
  end)

  it("bin/celers enqueue --json-payload and --metadata store the JSON as given", function()
    local proc = require "spec.proc_helper"
    local sh = helper.shell_quote
    local function enqueue(text)
      return proc.run("CELERS_LUA=" .. sh(helper.lua()) .. " CELERS_DSN=" .. sh(dsn) .. " "
        .. sh(helper.root .. "/bin/celers") .. " --json enqueue --json-payload --metadata "
        .. sh('{"n":[]}') .. " order " .. sh(text))
    end
    -- 12345678901234568 is even: a double holds it, so LuaJIT can carry it too
    local big = IS54 and "12345678901234567" or "12345678901234568"
    local text = '{"order":7,"order_id":' .. big .. ',"tags":[],"ratio":0.1}'
    local code, out = enqueue(text)
    assert.equal(0, code, out)
    local id = json.decode(out).id
    local stored_text = stored("payload", id)
    if not IS54 then -- one a double cannot hold is refused, not rounded
      code, out = enqueue('{"order_id":12345678901234567}')
      assert.equal(2, code, out)
      assert.equal("1", helper.scalar(dsn, "SELECT COUNT(*) FROM celers_tasks"))
    end
    -- key order is the encoder's; every value keeps its form
    for _, part in ipairs { '"order":7', '"order_id":' .. big, '"tags":[]', '"ratio":0.1' } do
      assert.matches(part, stored_text, 1, true)
    end
    assert.equal(#text, #stored_text)
    assert.equal('{"n":[]}', stored("metadata", id))
  end)

  it("a stored integer beyond 2^53 reads exactly on 5.4; LuaJIT leaves the payload as its JSON text", function()
    local text = '{"id":9007199254740993}'
    local id = assert(broker:enqueue_batch { { name = "big", payload = text, payload_type = "json" } })[1]
    assert.equal(text, stored("payload", id))
    local t = assert(broker:dequeue())
    assert.equal(text, t.body)
    if IS54 then
      assert.equal(int "9007199254740993", t.payload.id)
    else
      -- never a rounded 9007199254740992: the handler gets the stored text and decoding says why
      assert.equal(text, t.payload)
      local ok, err = pcall(json.decode, t.body)
      assert.is_false(ok)
      assert.matches("cannot be held exactly", err, 1, true)
    end
  end)
end)
