--- celers.pickle: Python's pickle format, for the values JSON can hold, in pure Lua.
-- Celery's database result backend stores results with SQLAlchemy's PickleType; this reads and
-- writes the subset of pickle those results use when they are JSON-like: None, bool, int (any
-- size), float, str, bytes, list, tuple and dict. Anything else (a class instance, a set, a
-- datetime...) is refused with an error naming what was found.
--
-- Lua values (docs/celery.md has the whole table):
--   None  <-> pickle.null (json.null when celers.core is loaded)
--   int   <-> Lua integer (5.4: -2^63..2^63-1; LuaJIT: whole numbers up to 2^53 exactly)
--              outside that: pickle.int("<decimal digits>"), a big-integer value
--   float <-> Lua float (LuaJIT: a whole number is written as an int)
--   str   <-> Lua string (written only when valid UTF-8)
--   bytes <-> pickle.bytes(s)
--   list  <-> array table (read back with an array metatable, __jsontype = "array")
--   tuple <-> pickle.tuple{...}
--   dict  <-> table (keys: strings, numbers, booleans)
local pickle = {}

local byte, char, sub, format = string.byte, string.char, string.sub, string.format
local concat, floor = table.concat, math.floor
local has_integers = math.type ~= nil
local MAX_DEPTH = 1000

local ok_core, core = pcall(require, "celers.core")
if not ok_core then core = nil end

--- None. The same value as celers.json's null when the core is there.
pickle.null = core and core.json_null or setmetatable({}, { __tostring = function() return "None" end })
--- Lists read back carry this metatable (celers.json's array metatable when available).
pickle.list_mt = core and core.json_array_mt or { __jsontype = "array" }

local tuple_mt = { __pickletype = "tuple", __jsontype = "array" }
local bytes_mt = { __pickletype = "bytes", __tostring = function(b) return b.data end }
bytes_mt.__eq = function(a, b) return a.data == b.data end
local int_mt = { __pickletype = "int", __tostring = function(n) return n.digits end }
int_mt.__eq = function(a, b) return a.digits == b.digits end
pickle.tuple_mt, pickle.bytes_mt, pickle.int_mt = tuple_mt, bytes_mt, int_mt

--- Mark t (or a new table) as a tuple.
function pickle.tuple(t)
  return setmetatable(t or {}, tuple_mt)
end

--- A Python bytes value (a Lua string is written as str).
function pickle.bytes(s)
  if type(s) ~= "string" then
    error("celers.pickle: bytes: 's' must be a string (got " .. type(s) .. ")", 2)
  end
  return setmetatable({ data = s }, bytes_mt)
end

--- An integer given by its decimal digits, for values a Lua number cannot hold exactly.
function pickle.int(digits)
  if type(digits) ~= "string" or not digits:match("^%-?%d+$") then
    error("celers.pickle: int: 'digits' must be a string of decimal digits", 2)
  end
  digits = digits:gsub("^(%-?)0+(%d)", "%1%2")
  if digits == "-0" then digits = "0" end
  return setmetatable({ digits = digits }, int_mt)
end

--- Whether v is a tuple (made by `pickle.tuple` or read from a pickle).
function pickle.is_tuple(v) return getmetatable(v) == tuple_mt end
--- Whether v is a bytes value (made by `pickle.bytes` or read from a pickle).
function pickle.is_bytes(v) return getmetatable(v) == bytes_mt end
--- Whether v is a big integer given by its digits (`pickle.int`).
function pickle.is_int(v) return getmetatable(v) == int_mt end

-- ---- big integers: little-endian two's complement bytes <-> decimal digits ----------

-- Magnitude (array of base-256 digits, least significant first) to decimal text.
local function magnitude_to_decimal(mag)
  local digits, parts = {}, {}
  for i = #mag, 1, -1 do digits[#digits + 1] = mag[i] end -- most significant first
  while #digits > 0 do
    local rem, quotient = 0, {}
    for i = 1, #digits do
      local cur = rem * 256 + digits[i]
      local q = floor(cur / 10000000)
      rem = cur - q * 10000000
      if #quotient > 0 or q > 0 then quotient[#quotient + 1] = q end
    end
    parts[#parts + 1] = rem
    digits = quotient
  end
  if #parts == 0 then return "0" end
  local out = { tostring(parts[#parts]) }
  for i = #parts - 1, 1, -1 do out[#out + 1] = format("%07d", parts[i]) end
  return concat(out)
end

local function bytes_to_decimal(s)
  local mag, n = { byte(s, 1, -1) }, #s
  if n == 0 then return "0" end
  local negative = mag[n] >= 128
  if negative then -- two's complement: invert and add one
    local carry = 1
    for i = 1, n do
      local v = 255 - mag[i] + carry
      mag[i], carry = v % 256, floor(v / 256)
    end
  end
  local d = magnitude_to_decimal(mag)
  return negative and "-" .. d or d
end

-- Decimal text to minimal little-endian two's complement bytes (Python's encode_long).
local function decimal_to_bytes(digits)
  local negative = sub(digits, 1, 1) == "-"
  if negative then digits = sub(digits, 2) end
  local mag = {} -- base-256, least significant first
  for i = 1, #digits do
    local carry = byte(digits, i) - 48
    for j = 1, #mag do
      local v = mag[j] * 10 + carry
      mag[j], carry = v % 256, floor(v / 256)
    end
    while carry > 0 do
      mag[#mag + 1] = carry % 256
      carry = floor(carry / 256)
    end
  end
  if #mag == 0 then return "" end -- zero is LONG1 of length 0
  if negative then
    local carry = 1
    for j = 1, #mag do
      local v = 255 - mag[j] + carry
      mag[j], carry = v % 256, floor(v / 256)
    end
    -- drop redundant sign bytes, keep one whose top bit says negative
    while #mag > 1 and mag[#mag] == 255 and mag[#mag - 1] >= 128 do mag[#mag] = nil end
    if mag[#mag] < 128 then mag[#mag + 1] = 255 end
  elseif mag[#mag] >= 128 then
    mag[#mag + 1] = 0
  end
  local out = {}
  for j = 1, #mag do out[j] = char(mag[j]) end
  return concat(out)
end

local MAX_EXACT = 9007199254740992 -- 2^53

-- The Lua value of an integer given as decimal text: a number when it holds it exactly.
local function integer_from_decimal(d)
  if has_integers then
    local n = math.tointeger(tonumber(d))
    if n and tostring(n) == d then return n end
  else
    local n = tonumber(d)
    if n and n >= -MAX_EXACT and n <= MAX_EXACT and format("%.0f", n) == d then return n end
  end
  return setmetatable({ digits = d }, int_mt)
end

-- ---- fixed-size numbers --------------------------------------------------------------

local function le_unsigned(s, pos, n)
  local v = 0
  for i = n - 1, 0, -1 do v = v * 256 + byte(s, pos + i) end
  return v
end

local function le_bytes(v, n) -- v >= 0, fits in n bytes
  local out = {}
  for i = 1, n do
    out[i] = char(v % 256)
    v = floor(v / 256)
  end
  return concat(out)
end

local read_double, write_double
if string.pack then
  read_double = function(s, pos) return (string.unpack(">d", s, pos)) end
  write_double = function(x) return string.pack(">d", x) end
else
  read_double = function(s, pos)
    local b1, b2, b3, b4, b5, b6, b7, b8 = byte(s, pos, pos + 7)
    local negative = b1 >= 128
    local exp = (b1 % 128) * 16 + floor(b2 / 16)
    local mant = ((((((b2 % 16) * 256 + b3) * 256 + b4) * 256 + b5) * 256 + b6) * 256 + b7) * 256 + b8
    local v
    if exp == 0 then
      v = mant * 2 ^ -1074
    elseif exp == 2047 then
      v = mant == 0 and math.huge or 0 / 0
    else
      v = (1 + mant / 2 ^ 52) * 2 ^ (exp - 1023)
    end
    if negative then v = -v end
    return v
  end
  write_double = function(x)
    local sign = (x < 0 or (x == 0 and 1 / x < 0)) and 128 or 0
    local exp, mant
    if x ~= x then
      exp, mant = 2047, 2 ^ 51
      sign = 0
    elseif x == math.huge or x == -math.huge then
      exp, mant = 2047, 0
    elseif x == 0 then
      exp, mant = 0, 0
    else
      local m, e = math.frexp(math.abs(x)) -- |x| = m * 2^e, 0.5 <= m < 1
      if e + 1022 >= 1 then
        exp, mant = e + 1022, (m * 2 - 1) * 2 ^ 52
      else
        exp, mant = 0, m * 2 ^ (e + 1074)
      end
    end
    local hi = floor(mant / 2 ^ 32)
    local lo = mant - hi * 2 ^ 32
    return char(sign + floor(exp / 16), (exp % 16) * 16 + floor(hi / 65536), floor(hi / 256) % 256,
      hi % 256) .. le_bytes(lo, 4):reverse()
  end
end

-- ---- reader ------------------------------------------------------------------------

local OPNAMES = {
  ["c"] = "GLOBAL (a class or function)", ["\147"] = "STACK_GLOBAL (a class or function)",
  ["R"] = "REDUCE (an object built by a call)", ["\129"] = "NEWOBJ (a class instance)",
  ["\146"] = "NEWOBJ_EX (a class instance)", ["b"] = "BUILD (object state)",
  ["o"] = "OBJ (a class instance)", ["i"] = "INST (a class instance)",
  ["\143"] = "EMPTY_SET (a set)", ["\144"] = "ADDITEMS (a set)", ["\145"] = "FROZENSET",
  ["P"] = "PERSID", ["Q"] = "BINPERSID", ["\130"] = "EXT1", ["\131"] = "EXT2", ["\132"] = "EXT4",
  ["\151"] = "NEXT_BUFFER (out-of-band data)", ["\152"] = "READONLY_BUFFER",
}

local function fail(pos, msg)
  error(format("celers.pickle: %s at byte %d", msg, pos), 0)
end

local MARK = {}

--- Read a pickle (protocols 2 to 5 as Python writes them; the protocol 0/1 opcodes a JSON-like
-- value needs are read too). Raises "celers.pickle: ... at byte N" on anything else.
function pickle.loads(s)
  if type(s) ~= "string" then
    error("celers.pickle: loads: 's' must be a string (got " .. type(s) .. ")", 2)
  end
  local pos, n = 1, #s
  local stack, memo = {}, {}
  local top, memo_n = 0, 0 -- memo_n: how many memo entries (MEMOIZE stores at that index)
  local function need(count, at)
    if pos + count - 1 > n then fail(at, "truncated pickle") end
  end
  local function push(v)
    top = top + 1
    stack[top] = v
  end
  local function pop(at)
    if top == 0 or stack[top] == MARK then fail(at, "stack underflow") end
    local v = stack[top]
    stack[top] = nil
    top = top - 1
    return v
  end
  local function pop_mark(at) -- items above the last mark, in order; the mark is removed
    local m = top
    while m > 0 and stack[m] ~= MARK do m = m - 1 end
    if m == 0 then fail(at, "no MARK on the stack") end
    local items = {}
    for i = m + 1, top do items[#items + 1] = stack[i] end
    for i = top, m, -1 do stack[i] = nil end
    top = m - 1
    return items
  end
  local function read_len(count, at)
    need(count, at)
    local len = le_unsigned(s, pos, count)
    pos = pos + count
    need(len, at)
    return len
  end
  local function read_str(count, at)
    local len = read_len(count, at)
    local v = sub(s, pos, pos + len - 1)
    pos = pos + len
    return v
  end
  local function set_item(dict, k, v, at)
    local kt = type(k)
    if kt ~= "string" and kt ~= "number" and kt ~= "boolean" then
      fail(at, "a dict key must be a str, int, float or bool here (got a " ..
        (getmetatable(k) and (getmetatable(k).__pickletype or "list") or kt) .. ")")
    end
    if kt == "number" and k ~= k then fail(at, "a dict key is NaN") end
    if type(dict) ~= "table" or getmetatable(dict) ~= nil then fail(at, "SETITEM on a non-dict") end
    dict[k] = v
  end
  local function append(list, v, at)
    if type(list) ~= "table" or getmetatable(list) ~= pickle.list_mt then fail(at, "APPEND on a non-list") end
    list[#list + 1] = v
  end

  while true do
    local at = pos
    if pos > n then fail(at, "truncated pickle (no STOP)") end
    local op = sub(s, pos, pos)
    pos = pos + 1
    if op == "\128" then -- PROTO
      need(1, at)
      local proto = byte(s, pos)
      pos = pos + 1
      if proto > 5 then fail(at, "unsupported pickle protocol " .. proto) end
    elseif op == "\149" then -- FRAME: a length to skip, the content follows inline
      need(8, at)
      pos = pos + 8
    elseif op == "." then -- STOP
      if top ~= 1 then fail(at, "STOP with " .. top .. " values on the stack") end
      local v = stack[1]
      if v == MARK then fail(at, "STOP with a MARK on the stack") end
      return v
    elseif op == "N" then push(pickle.null)
    elseif op == "\136" then push(true)
    elseif op == "\137" then push(false)
    elseif op == "K" then -- BININT1
      need(1, at)
      push(byte(s, pos))
      pos = pos + 1
    elseif op == "M" then -- BININT2
      need(2, at)
      push(le_unsigned(s, pos, 2))
      pos = pos + 2
    elseif op == "J" then -- BININT: signed 32-bit
      need(4, at)
      local v = le_unsigned(s, pos, 4)
      if v >= 2147483648 then v = v - 4294967296 end
      if has_integers then v = math.tointeger(v) end
      push(v)
      pos = pos + 4
    elseif op == "\138" or op == "\139" then -- LONG1, LONG4
      local raw = read_str(op == "\138" and 1 or 4, at)
      push(integer_from_decimal(bytes_to_decimal(raw)))
    elseif op == "I" or op == "L" then -- INT, LONG (protocol 0 text)
      local e = s:find("\n", pos, true)
      if not e then fail(at, "truncated pickle") end
      local text = sub(s, pos, e - 1):gsub("L$", "")
      pos = e + 1
      if text == "01" and op == "I" then push(true)
      elseif text == "00" and op == "I" then push(false)
      elseif text:match("^%-?%d+$") then push(integer_from_decimal(pickle.int(text).digits))
      else fail(at, "bad integer text") end
    elseif op == "G" then -- BINFLOAT (big-endian double)
      need(8, at)
      push(read_double(s, pos))
      pos = pos + 8
    elseif op == "\140" then push(read_str(1, at)) -- SHORT_BINUNICODE
    elseif op == "X" then push(read_str(4, at)) -- BINUNICODE
    elseif op == "\141" then push(read_str(8, at)) -- BINUNICODE8
    elseif op == "C" then push(pickle.bytes(read_str(1, at))) -- SHORT_BINBYTES
    elseif op == "B" then push(pickle.bytes(read_str(4, at))) -- BINBYTES
    elseif op == "\142" or op == "\150" then push(pickle.bytes(read_str(8, at))) -- BINBYTES8, BYTEARRAY8
    elseif op == "]" then push(setmetatable({}, pickle.list_mt)) -- EMPTY_LIST
    elseif op == "l" then push(setmetatable(pop_mark(at), pickle.list_mt)) -- LIST
    elseif op == "a" then -- APPEND
      local v = pop(at)
      append(stack[top], v, at)
    elseif op == "e" then -- APPENDS
      local items = pop_mark(at)
      for i = 1, #items do append(stack[top], items[i], at) end
    elseif op == ")" then push(setmetatable({}, tuple_mt)) -- EMPTY_TUPLE
    elseif op == "\133" then push(setmetatable({ pop(at) }, tuple_mt)) -- TUPLE1
    elseif op == "\134" or op == "\135" then -- TUPLE2, TUPLE3
      local count = op == "\134" and 2 or 3
      local t = {}
      for i = count, 1, -1 do t[i] = pop(at) end
      push(setmetatable(t, tuple_mt))
    elseif op == "t" then push(setmetatable(pop_mark(at), tuple_mt)) -- TUPLE
    elseif op == "}" then push({}) -- EMPTY_DICT
    elseif op == "d" then -- DICT
      local items, dict = pop_mark(at), {}
      for i = 1, #items, 2 do set_item(dict, items[i], items[i + 1], at) end
      push(dict)
    elseif op == "s" then -- SETITEM
      local v = pop(at)
      local k = pop(at)
      set_item(stack[top], k, v, at)
    elseif op == "u" then -- SETITEMS
      local items = pop_mark(at)
      if #items % 2 ~= 0 then fail(at, "SETITEMS with an odd number of items") end
      for i = 1, #items, 2 do set_item(stack[top], items[i], items[i + 1], at) end
    elseif op == "(" then push(MARK)
    elseif op == "0" then pop(at) -- POP
    elseif op == "\148" then -- MEMOIZE
      if top == 0 then fail(at, "MEMOIZE on an empty stack") end
      memo[memo_n] = stack[top]
      memo_n = memo_n + 1
    elseif op == "q" or op == "r" then -- BINPUT, LONG_BINPUT
      local count = op == "q" and 1 or 4
      need(count, at)
      local index = le_unsigned(s, pos, count)
      if top == 0 then fail(at, "PUT on an empty stack") end
      if memo[index] == nil then memo_n = memo_n + 1 end
      memo[index] = stack[top]
      pos = pos + count
    elseif op == "h" or op == "j" then -- BINGET, LONG_BINGET
      local count = op == "h" and 1 or 4
      need(count, at)
      local v = memo[le_unsigned(s, pos, count)]
      if v == nil then fail(at, "memo entry missing") end
      push(v)
      pos = pos + count
    else
      local name = OPNAMES[op]
      fail(at, format("unsupported pickle opcode 0x%02x%s: only None, bool, int, float, str, " ..
        "bytes, list, tuple and dict can be read", byte(op), name and " " .. name or ""))
    end
  end
end

-- ---- writer ------------------------------------------------------------------------

--- Whether s is UTF-8 as Python's decoder accepts it (no overlongs, no surrogates, at most
-- U+10FFFF): a Lua string that is not is written as bytes.
-- @tparam string s
-- @treturn boolean
function pickle.utf8_valid(s)
  local i, n = 1, #s
  while i <= n do
    local c = byte(s, i)
    if c < 128 then
      i = i + 1
    else
      local len, min
      if c >= 194 and c <= 223 then len, min = 2, 128
      elseif c >= 224 and c <= 239 then len, min = 3, 2048
      elseif c >= 240 and c <= 244 then len, min = 4, 65536
      else return false end
      if i + len - 1 > n then return false end
      local cp = c % (2 ^ (7 - len))
      for j = i + 1, i + len - 1 do
        local cc = byte(s, j)
        if cc < 128 or cc > 191 then return false end
        cp = cp * 64 + (cc - 128)
      end
      if cp < min or cp > 1114111 or (cp >= 55296 and cp <= 57343) then return false end
      i = i + len
    end
  end
  return true
end
local utf8_valid = pickle.utf8_valid

local function write_len_prefixed(out, short_op, op4, op8, data)
  local len = #data
  if short_op and len < 256 then
    out[#out + 1] = short_op .. char(len)
  elseif len < 4294967296 then
    out[#out + 1] = op4 .. le_bytes(len, 4)
  else
    out[#out + 1] = op8 .. le_bytes(len, 8)
  end
  out[#out + 1] = data
end

local function write_long(out, digits)
  local raw = decimal_to_bytes(digits)
  if #raw < 256 then
    out[#out + 1] = "\138" .. char(#raw) .. raw
  else
    out[#out + 1] = "\139" .. le_bytes(#raw, 4) .. raw
  end
end

local function write_integer(out, v)
  if v >= 0 and v < 256 then
    out[#out + 1] = "K" .. char(v)
  elseif v >= 0 and v < 65536 then
    out[#out + 1] = "M" .. le_bytes(v, 2)
  elseif v >= -2147483648 and v < 2147483648 then
    out[#out + 1] = "J" .. le_bytes(v % 4294967296, 4)
  else
    write_long(out, has_integers and math.type(v) == "integer" and tostring(v) or format("%.0f", v))
  end
end

local function key_order(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return ta < tb end
  if ta == "boolean" then return (not a) and b end
  return a < b
end

local function is_list(t, mt)
  if mt then return mt.__jsontype == "array" end
  local count = 0
  for _ in pairs(t) do count = count + 1 end
  return count > 0 and count == #t
end

local function write_value(out, v, depth, seen, path)
  local tv = type(v)
  if v == nil or v == pickle.null then
    out[#out + 1] = "N"
  elseif tv == "boolean" then
    out[#out + 1] = v and "\136" or "\137"
  elseif tv == "number" then
    if has_integers and math.type(v) == "integer" then
      write_integer(out, v)
    elseif not has_integers and v == floor(v) and v >= -2 ^ 63 and v < 2 ^ 63 and not (v == 0 and 1 / v < 0) then
      write_integer(out, v)
    else
      out[#out + 1] = "G" .. write_double(v)
    end
  elseif tv == "string" then
    if not utf8_valid(v) then
      error(format("celers.pickle: %s is a string that is not valid UTF-8 (wrap bytes with pickle.bytes)",
        path), 0)
    end
    write_len_prefixed(out, "\140", "X", "\141", v)
  elseif tv == "table" then
    local mt = getmetatable(v)
    if mt == bytes_mt then
      write_len_prefixed(out, "C", "B", "\142", v.data)
      return
    elseif mt == int_mt then
      write_long(out, v.digits)
      return
    end
    if seen[v] then error(format("celers.pickle: %s contains itself", path), 0) end
    if depth > MAX_DEPTH then
      error(format("celers.pickle: %s nests deeper than %d", path, MAX_DEPTH), 0)
    end
    seen[v] = true
    if mt == tuple_mt then
      local len = #v
      if len == 0 then
        out[#out + 1] = ")"
      else
        if len > 3 then out[#out + 1] = "(" end
        for i = 1, len do write_value(out, v[i], depth + 1, seen, path .. "[" .. i .. "]") end
        out[#out + 1] = len == 1 and "\133" or len == 2 and "\134" or len == 3 and "\135" or "t"
      end
    elseif is_list(v, mt) then
      out[#out + 1] = "]"
      local len = #v
      for first = 1, len, 1000 do
        out[#out + 1] = "("
        for i = first, math.min(len, first + 999) do
          write_value(out, v[i], depth + 1, seen, path .. "[" .. i .. "]")
        end
        out[#out + 1] = "e"
      end
    elseif mt == nil or mt.__jsontype == "object" then
      local keys = {}
      for k in pairs(v) do
        local kt = type(k)
        if kt ~= "string" and kt ~= "number" and kt ~= "boolean" then
          error(format("celers.pickle: %s has a key of type %s (keys must be strings, numbers or booleans)",
            path, kt), 0)
        end
        keys[#keys + 1] = k
      end
      table.sort(keys, key_order)
      out[#out + 1] = "}"
      for first = 1, #keys, 1000 do
        out[#out + 1] = "("
        for i = first, math.min(#keys, first + 999) do
          local k = keys[i]
          write_value(out, k, depth + 1, seen, path)
          write_value(out, v[k], depth + 1, seen, path .. "[" .. tostring(k) .. "]")
        end
        out[#out + 1] = "u"
      end
    else
      error(format("celers.pickle: %s is a table with a metatable pickle does not know", path), 0)
    end
    seen[v] = nil
  else
    error(format("celers.pickle: %s is a %s: only nil/null, booleans, numbers, strings and tables " ..
      "can be written", path, tv), 0)
  end
end

--- Write v as a protocol 4 pickle that Python's pickle.loads reads back as the same value.
function pickle.dumps(v)
  local out = { "\128\4" }
  write_value(out, v, 1, {}, "value")
  out[#out + 1] = "."
  return concat(out)
end

return pickle
