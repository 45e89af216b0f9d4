-- celers.celery and celers.pickle against real Python Celery (Debian's python3-celery,
-- python3-kombu, python3-sqlalchemy, python3-mysqldb) on the private MariaDB: a real Celery
-- worker runs what Lua sends, a real Python producer sends what the Lua worker runs, both read
-- each other's results, and several Lua and Python consumers share one queue.
local helper = require "spec.helper"
local proc = require "spec.proc_helper"
local celers = require "celers"
local core = require "celers.core"
local celery = require "celers.celery"
local pickle = require "celers.pickle"

local json = celers.json
local q = helper.shell_quote
local FIXTURES = helper.root .. "/spec/fixtures"
local PYTHON = os.getenv("CELERS_PYTHON")
if not PYTHON then
  -- Debian's interpreter: a python3 earlier on PATH (pyenv, a venv) does not see its packages
  local f = io.open("/usr/bin/python3")
  if f then f:close() end
  PYTHON = f and "/usr/bin/python3" or "python3"
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local function write_file(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

local py_ok, py_why = proc.run(q(PYTHON) .. " -c 'import celery, kombu, sqlalchemy, MySQLdb'")
py_ok = py_ok == 0

-- The environment the Python side needs, in a private file (the password stays off command lines).
local function python_env(dsn)
  local d = helper.parse_dsn(dsn)
  local function enc(s)
    return (tostring(s or ""):gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end))
  end
  local auth = enc(d.user) .. (d.password and ":" .. enc(d.password) or "")
  local where = d.socket and ("localhost/" .. d.database .. "?unix_socket=" .. d.socket)
    or (d.host .. ":" .. tostring(d.port or 3306) .. "/" .. d.database)
  local env = {
    CELERS_CELERY_BROKER = "sqla+mysql://" .. auth .. "@" .. where,
    CELERS_CELERY_BACKEND = "db+mysql://" .. auth .. "@" .. where,
    CELERS_CELERY_SOCKET = d.socket or "",
    CELERS_CELERY_USER = d.user or "",
    CELERS_CELERY_PASSWORD = d.password or "",
    CELERS_CELERY_DATABASE = d.database,
    PYTHONPATH = FIXTURES,
    PYTHONDONTWRITEBYTECODE = "1",
  }
  local path = os.tmpname()
  local lines = { "umask 077" }
  for k, v in pairs(env) do lines[#lines + 1] = "export " .. k .. "=" .. q(v) end
  write_file(path, table.concat(lines, "\n") .. "\n")
  return path
end

-- Run celery_client.py with args; returns its stdout (raises on a failure).
local function client(envfile, args)
  local code, out = proc.run(". " .. q(envfile) .. " && " .. q(PYTHON) .. " " .. q(FIXTURES .. "/celery_client.py")
    .. " " .. args .. " 2>/dev/null")
  assert(code == 0, "celery_client.py " .. args .. " failed (exit " .. tostring(code) .. "): " .. out)
  return out
end

local function client_results(envfile, ids)
  local out = client(envfile, "get " .. table.concat(ids, " "))
  local results = {}
  for line in out:gmatch("[^\n]+") do
    local r = json.decode(line)
    results[r.id] = r
  end
  return results
end

-- A real Celery worker (--pool=solo), bounded in time by timeout(1), killed by the spec.
local function start_worker(envfile, queues, seconds)
  local log, pidfile = os.tmpname(), os.tmpname()
  local cmd = ". " .. q(envfile) .. " && cd " .. q(FIXTURES) .. " && exec timeout -k 5 " .. seconds .. " "
    .. q(PYTHON) .. " -m celery -A celery_app worker --pool=solo -Q " .. q(queues)
    .. " -n " .. q("spec" .. core.getpid() .. "@%h") .. " -l info --without-heartbeat --without-gossip --without-mingle"
  os.execute("(sh -c " .. q(cmd) .. " >" .. q(log) .. " 2>&1 </dev/null & echo $! >" .. q(pidfile) .. ")")
  local w = { log = log, pid = tonumber(proc.wait_for(function() return read_file(pidfile) end, 10)) }
  os.remove(pidfile)
  local ready = proc.wait_for(function()
    local s = read_file(log) or ""
    return s:find(" ready%.") or s:find("Traceback")
  end, 60)
  local text = read_file(log) or ""
  assert(ready and not text:find("Traceback"), "Celery worker did not start:\n" .. text)
  return w
end

local function stop_worker(w)
  if not w or not w.pid then return end
  -- timeout(1) passes TERM on to Celery and exits when Celery has (a warm shutdown)
  proc.kill(w.pid, "TERM")
  local gone = proc.wait_for(function() return proc.run("kill -0 " .. w.pid) ~= 0 end, 30)
  if not gone then
    proc.run("pkill -KILL -P " .. w.pid) -- the Celery process, a child of that timeout
    proc.kill(w.pid, "KILL")
  end
  os.remove(w.log)
  w.pid = nil
end

-- Does the Lua value v match Python's description d ({t=, v=} from celery_client.py)?
local function matches(d, v, path)
  path = path or "value"
  local function bad(why) return false, path .. ": " .. why end
  if d.t == "none" then return v == pickle.null or bad("not None") end
  if d.t == "bool" then return v == d.v or bad("not " .. tostring(d.v)) end
  if d.t == "int" then
    if pickle.is_int(v) then return v.digits == d.v or bad(v.digits .. " ~= " .. d.v) end
    if type(v) ~= "number" then return bad("not a number") end
    if math.type then
      return (math.type(v) == "integer" and tostring(v) == d.v) or bad(tostring(v) .. " ~= int " .. d.v)
    end
    return (v == math.floor(v) and ("%.0f"):format(v) == d.v) or bad(tostring(v) .. " ~= int " .. d.v)
  end
  if d.t == "float" then
    if type(v) ~= "number" or (math.type and math.type(v) ~= "float") then return bad("not a float") end
    local want = d.v == "inf" and math.huge or d.v == "-inf" and -math.huge or tonumber(d.v)
    if want ~= v then return bad(("%.17g ~= %s"):format(v, d.v)) end
    if v == 0 and (1 / v > 0) ~= (1 / want > 0) then return bad("sign of zero") end
    return true
  end
  local function hex(s) return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end)) end
  if d.t == "str" then return (type(v) == "string" and hex(v) == d.v) or bad("string differs") end
  if d.t == "bytes" then return (pickle.is_bytes(v) and hex(v.data) == d.v) or bad("bytes differ") end
  if d.t == "list" or d.t == "tuple" then
    if type(v) ~= "table" then return bad("not a table") end
    if (d.t == "tuple") ~= pickle.is_tuple(v) then return bad("list/tuple kind") end
    if #v ~= #d.v then return bad("length " .. #v .. " ~= " .. #d.v) end
    for i = 1, #d.v do
      local ok, why = matches(d.v[i], v[i], path .. "[" .. i .. "]")
      if not ok then return ok, why end
    end
    return true
  end
  if d.t == "dict" then
    if type(v) ~= "table" or getmetatable(v) then return bad("not a dict") end
    local n = 0
    for _ in pairs(v) do n = n + 1 end
    if n ~= #d.v then return bad("size " .. n .. " ~= " .. #d.v) end
    for _, kv in ipairs(d.v) do
      local kd, key = kv[1], nil
      if kd.t == "str" then key = kd.v:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end)
      elseif kd.t == "int" or kd.t == "float" then key = tonumber(kd.v)
      elseif kd.t == "bool" then key = kd.v end
      local ok, why = matches(kv[2], v[key], path .. "[" .. tostring(key) .. "]")
      if not ok then return ok, why end
    end
    return true
  end
  return bad("unknown description " .. tostring(d.t))
end

-- the error message of a call that must raise
local function raised(fn, ...) return select(2, pcall(fn, ...)) end

local function unhex(h) return (h:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end)) end
local function tohex(s) return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end)) end

if not py_ok then
  describe("celers.celery", function()
    pending("SKIPPED: Python Celery is not importable with " .. PYTHON .. " (Debian's python3-celery, " ..
      "python3-kombu, python3-sqlalchemy, python3-mysqldb; scripts/deps.sh installs them): " .. py_why)
  end)
  return
end

describe("celers.pickle against Python's own pickle", function()
  local envfile, cases
  setup(function()
    envfile = python_env(helper.fresh_dsn("celery_pickle"))
    cases = {}
    for line in client(envfile, "pickles"):gmatch("[^\n]+") do cases[#cases + 1] = json.decode(line) end
  end)
  teardown(function() if envfile then os.remove(envfile) end end)

  it("reads every case Python writes (protocols 2-5 and SQLAlchemy's PickleType) as the same value", function()
    local read = 0
    for _, c in ipairs(cases) do
      local ok, v = pcall(pickle.loads, unhex(c.hex))
      if c.unsupported then
        assert.is_false(ok, "case " .. tostring(c.i) .. " proto " .. tostring(c.proto) .. " should be refused")
        assert.matches("unsupported pickle opcode", v)
      else
        assert(ok, "case " .. tostring(c.i) .. " proto " .. tostring(c.proto) .. ": " .. tostring(v))
        local same, why = matches(c.desc, v)
        assert(same, "case " .. tostring(c.i) .. " proto " .. tostring(c.proto) .. ": " .. tostring(why))
        read = read + 1
      end
    end
    assert.is_true(read > 250)
  end)

  it("names what it cannot read: classes, sets, datetimes, exceptions, truncation", function()
    for _, c in ipairs(cases) do
      if type(c.i) == "string" then
        local ok, err = pcall(pickle.loads, unhex(c.hex))
        assert.is_false(ok, c.i)
        assert.matches("^celers.pickle: unsupported pickle opcode 0x%x%x .* at byte %d+$", err)
      end
    end
    local ok, err = pcall(pickle.loads, "\128\4\149\10\0\0\0\0\0\0\0\140\5ab")
    assert.is_false(ok)
    assert.matches("truncated pickle", err)
    assert.matches("no STOP", raised(pickle.loads, "\128\4K\1"))
    assert.matches("'s' must be a string", raised(pickle.loads, 42))
    assert.matches("STOP with 2 values", raised(pickle.loads, "K\1K\2."))
  end)

  it("writes pickles Python reads back as the very same values", function()
    local lines, seen = {}, {}
    for _, c in ipairs(cases) do
      if c.proto == 5 and type(c.i) == "number" and not seen[c.i] then
        seen[c.i] = true
        lines[#lines + 1] = c.i .. " " .. tohex(pickle.dumps(pickle.loads(unhex(c.hex))))
      end
    end
    local file = os.tmpname()
    write_file(file, table.concat(lines, "\n") .. "\n")
    local out = client(envfile, "check " .. q(file) .. (jit and " luajit" or ""))
    os.remove(file)
    assert.equal("ok " .. #lines .. "\n", out)
  end)

  it("keeps shared references as one table (the memo)", function()
    for _, c in ipairs(cases) do
      if c.proto == 5 and c.desc and c.desc.t == "list" and #c.desc.v == 3 and c.desc.v[3].t == "tuple" then
        local v = pickle.loads(unhex(c.hex))
        assert.is_true(rawequal(v[1], v[2]))
        assert.is_true(rawequal(v[1], v[3][1]))
      end
    end
  end)

  it("refuses to write what Python could not read back as the same value", function()
    assert.matches("not valid UTF%-8", raised(pickle.dumps, { "ok", "\255" }))
    assert.matches("value%[1%] is a string that is not valid UTF%-8", raised(pickle.dumps, { "\237\160\128" }))
    assert.matches("is a function", raised(pickle.dumps, { f = print }))
    local loop = {}
    loop.self = loop
    assert.matches("contains itself", raised(pickle.dumps, loop))
    assert.matches("key of type table", raised(pickle.dumps, { [{}] = 1 }))
    assert.matches("metatable pickle does not know", raised(pickle.dumps, setmetatable({}, {})))
    assert.matches("'digits' must be", raised(pickle.int, "12a"))
    assert.matches("'s' must be a string", raised(pickle.bytes, 1))
    local deep = {}
    for _ = 1, 1100 do deep = { deep } end
    assert.matches("nests deeper than 1000", raised(pickle.dumps, deep))
    -- bytes with NUL and 0xff, empty containers and NaN go through
    local back = pickle.loads(pickle.dumps { pickle.bytes("\0\255"), json.array(), {}, pickle.tuple(), 0 / 0 })
    assert.equal("\0\255", back[1].data)
    assert.equal(0, #back[2])
    assert.equal(pickle.list_mt, getmetatable(back[2]))
    assert.is_nil(getmetatable(back[3]))
    assert.is_true(pickle.is_tuple(back[4]))
    assert.is_true(back[5] ~= back[5])
  end)
end)

describe("broker:execute", function()
  local dsn, broker
  setup(function()
    dsn = helper.fresh_dsn("celery_execute")
    broker = assert(celers.connect(dsn))
    assert(broker:execute("CREATE TABLE t (id INT PRIMARY KEY, s BLOB, d DOUBLE, n BIGINT)"))
  end)
  teardown(function() if broker then broker:close() end end)

  it("binds every value as a parameter and answers rows and the affected count", function()
    local rows, n = broker:execute("INSERT INTO t VALUES (?, ?, ?, ?), (?, ?, ?, ?)",
      1, "a'b\0c; DROP TABLE t", 0.1, math.maxinteger or 2 ^ 53, 2, nil, -1.5, json.null)
    assert.same({}, rows)
    assert.equal(2, n)
    assert.equal("1", helper.scalar(dsn, "SELECT COUNT(*) FROM t WHERE s = 'a''b\\0c; DROP TABLE t'"))
    assert.equal("NULL", helper.scalar(dsn, "SELECT s FROM t WHERE id = 2"))
    rows, n = broker:execute("SELECT id, s, d, n FROM t ORDER BY id")
    assert.equal(2, n)
    assert.equal("1", rows[1][1])
    assert.equal("a'b\0c; DROP TABLE t", rows[1][2])
    assert.equal(0.1, tonumber(rows[1][3]))
    assert.equal(4, rows[2].n)
    assert.is_nil(rows[2][2])
    local _, changed = broker:execute("UPDATE t SET d = ? WHERE id = ?", true, 2)
    assert.equal(1, changed)
    assert.equal("1", helper.scalar(dsn, "SELECT d FROM t WHERE id = 2"))
  end)

  it("returns database failures and raises on misuse, naming the argument", function()
    local ok, err = broker:execute("INSERT INTO t (id) VALUES (?)", 1)
    assert.is_nil(ok)
    assert.equal("duplicate", err.code)
    ok, err = broker:execute("SELECT * FROM no_such_table")
    assert.is_nil(ok)
    assert.matches("^celers: sql: ", tostring(err))
    assert.matches("'sql' must be a string", raised(broker.execute, broker, 42))
    assert.matches("'parameter 2' must be nil, a boolean", raised(broker.execute, broker, "SELECT ?, ?", 1, {}))
    assert.matches("statement wants 2 parameters, got 1", raised(broker.execute, broker, "SELECT ?, ?", 1))
    local other = assert(celers.connect(dsn))
    other:close()
    assert.matches("the broker is closed", raised(other.execute, other, "SELECT 1"))
  end)
end)

describe("celers.celery with Python Celery", function()
  local dsn, broker, app, envfile, worker

  setup(function()
    dsn = helper.fresh_dsn("celery")
    broker = assert(celers.connect(dsn))
    -- Lua creates the tables; the Celery worker then runs on them
    app = assert(celery.new(broker))
    assert(broker:execute("CREATE TABLE celers_celery_runs (task_id VARCHAR(155) NOT NULL, n INT, " ..
      "consumer VARCHAR(50), at DATETIME(6) DEFAULT NOW(6))"))
    envfile = python_env(dsn)
    worker = start_worker(envfile, "celery,other,race", 240)
  end)

  teardown(function()
    stop_worker(worker)
    if envfile then os.remove(envfile) end
    if broker then broker:close() end
  end)

  local function payload_of(task_id)
    local rows = assert(broker:execute("SELECT payload, visible, queue_id FROM kombu_message " ..
      "WHERE payload LIKE CONCAT('%', ?, '%')", task_id))
    assert.equal(1, #rows, "one message for " .. task_id)
    return json.decode(rows[1][1]), tonumber(rows[1][2]), tonumber(rows[1][3])
  end

  describe("Lua sends, a Celery worker runs", function()
    it("runs interop.add; the message is kombu's protocol 2 envelope; the result is in celery_taskmeta", function()
      local r = assert(app:send_task("interop.add", { 2, 3 }))
      local msg, visible = payload_of(r.id)
      assert.equal(1, visible) -- the worker may not have seen it yet; it is there either way
      assert.equal("application/json", msg["content-type"])
      assert.equal("utf-8", msg["content-encoding"])
      assert.equal("interop.add", msg.headers.task)
      assert.equal(r.id, msg.headers.id)
      assert.equal(r.id, msg.headers.root_id)
      assert.equal("py", msg.headers.lang)
      assert.equal("base64", msg.properties.body_encoding)
      assert.is_string(msg.properties.delivery_tag)
      assert.equal("celery", msg.properties.delivery_info.routing_key)
      local body = json.decode(core.base64_decode(msg.body))
      assert.equal(3, #body)
      assert.equal(2, body[1][1])
      assert.equal(json.null, body[3].chord)
      local v, info = r:get { timeout = 30 }
      assert.equal(5, v)
      if math.type then assert.equal("integer", math.type(v)) end
      assert.equal("SUCCESS", info.status)
      assert.is_true(math.abs(info.date_done - app:now()) < 60)
      -- what the database holds: Celery's row, and kombu's mark on the message
      assert.equal("SUCCESS", helper.scalar(dsn, "SELECT status FROM celery_taskmeta WHERE task_id = '" .. r.id .. "'"))
      assert.equal(0, select(2, payload_of(r.id)))
      -- ids come from kombu's sequence, so Python's own inserts do not collide with ours
      local seq = tonumber(helper.scalar(dsn, "SELECT NEXT VALUE FOR message_id_sequence"))
      local max = tonumber(helper.scalar(dsn, "SELECT MAX(id) FROM kombu_message"))
      assert.is_true(seq > max)
    end)

    it("delivers args and kwargs exactly (nested, unicode, NUL, null, big, empty)", function()
      local args = { 1, "é€😀", json.null, { a = json.array { 1, 2 } }, 2 ^ 40, 1.5, "nul\0byte", json.array() }
      local kwargs = { k = "v", n = -7, empty = {} }
      local r = assert(app:send_task("interop.echo", args, kwargs, { body_encoding = "none" }))
      assert.is_nil(payload_of(r.id).properties.body_encoding)
      local v = assert(r:get { timeout = 30 })
      assert.equal(8, #v.args)
      assert.equal(1, v.args[1])
      assert.equal("é€😀", v.args[2])
      assert.equal(pickle.null, v.args[3])
      assert.equal(2, v.args[4].a[2])
      assert.equal(2 ^ 40, v.args[5])
      assert.equal(1.5, v.args[6])
      assert.equal("nul\0byte", v.args[7])
      assert.equal(0, #v.args[8])
      assert.equal(pickle.list_mt, getmetatable(v.args[8]))
      assert.equal("v", v.kwargs.k)
      assert.equal(-7, v.kwargs.n)
      assert.is_nil(next(v.kwargs.empty))
    end)

    it("sets task id, root and parent ids, retries, custom headers, priority and the queue", function()
      local id = core.uuid7()
      local r = assert(app:send_task("interop.request", nil, nil, {
        task_id = id, root_id = "root-1", parent_id = "parent-1", retries = 2,
        headers = { x_custom = "hello" }, priority = 5, queue = "other",
      }))
      assert.equal(id, r.id)
      local v = assert(r:get { timeout = 30 })
      assert.equal(id, v.id)
      assert.equal("root-1", v.root_id)
      assert.equal("parent-1", v.parent_id)
      assert.equal(2, v.retries)
      assert.equal("hello", v.custom)
      assert.equal("other", v.queue)
      assert.equal(5, v.priority)
      local _, _, qid = payload_of(id)
      assert.equal("other", helper.scalar(dsn, "SELECT name FROM kombu_queue WHERE id = " .. qid))
    end)

    it("countdown: the worker runs the task no sooner than its eta", function()
      local t0 = app:now()
      local r = assert(app:send_task("interop.request", nil, nil, { countdown = 2 }))
      local v = assert(r:get { timeout = 30 })
      assert.is_string(v.eta)
      assert.is_true(math.abs(celery.parse_iso8601(v.eta) - (t0 + 2)) < 0.5)
      assert.is_true(v.received >= t0 + 1.9, ("ran %.3f s after sending"):format(v.received - t0))
    end)

    it("expires: Celery revokes a task that expired before it ran", function()
      local r = assert(app:send_task("interop.add", { 1, 1 }, nil, { expires_at = app:now() - 10 }))
      local v, err = r:get { timeout = 30 }
      assert.is_nil(v)
      assert.equal("task_revoked", err.code)
      assert.equal("REVOKED", err.status)
      assert.equal("REVOKED", helper.scalar(dsn, "SELECT status FROM celery_taskmeta WHERE task_id = '" .. r.id .. "'"))
    end)

    it("a Python exception comes back with its type, message and traceback", function()
      local r = assert(app:send_task("interop.fail", { "boom" }))
      local v, err = r:get { timeout = 30 }
      assert.is_nil(v)
      assert.equal("task_failed", err.code)
      assert.equal("ValueError", err.exc_type)
      assert.equal("boom", err.exc_message[1])
      assert.matches("ValueError: boom", err.traceback)
      assert.matches("ValueError: boom", tostring(err))
      assert.is_true(r:ready())
      assert.equal("FAILURE", r:state())
    end)

    it("reads Python's big integers, tuples and nested results", function()
      local v = assert(app:send_task("interop.big")):get { timeout = 30 }
      assert.equal(pickle.int("1267650600228229401496703205376"), v.big)
      assert.equal(pickle.int("-1180591620717411303424"), v.neg)
      assert.is_true(pickle.is_tuple(v.tuple))
      assert.equal("two", v.tuple[2])
      assert.equal(3.5, v.tuple[3])
    end)

    it("leaves a queue nobody serves alone, and ignore_result writes no row", function()
      local lonely = assert(app:send_task("interop.add", { 1, 2 }, nil, { queue = "nobody" }))
      local quiet = assert(app:send_task("interop.add", { 1, 2 }, nil, { ignore_result = true }))
      local marker = assert(app:send_task("interop.add", { 3, 4 }))
      assert.equal(7, marker:get { timeout = 30 })
      proc.wait_for(function() return select(2, payload_of(quiet.id)) == 0 end, 10)
      assert.equal(0, select(2, payload_of(quiet.id)))
      assert.equal("0", helper.scalar(dsn, "SELECT COUNT(*) FROM celery_taskmeta WHERE task_id = '" .. quiet.id .. "'"))
      assert.equal(1, select(2, payload_of(lonely.id)))
      assert.equal("PENDING", lonely:state())
      local v, err = lonely:get { timeout = 0.3, interval = 0.1 }
      assert.is_nil(v)
      assert.equal("timeout", err.code)
      assert.is_true(app:forget(marker.id))
      assert.equal("PENDING", marker:state())
    end)

    it("raises on misuse, naming the argument", function()
      assert.matches("'name' must be a non%-empty string", raised(app.send_task, app, 42))
      assert.matches("'args' must be a table", raised(app.send_task, app, "x", "notalist"))
      assert.matches("'args' must be a list", raised(app.send_task, app, "x", { a = 1 }))
      assert.matches("'kwargs' keys must be strings", raised(app.send_task, app, "x", {}, { 1 }))
      assert.matches("unknown option 'countdwn'", raised(app.send_task, app, "x", {}, {}, { countdwn = 1 }))
      assert.matches("'priority' must be an integer from 0 to 255",
        raised(app.send_task, app, "x", {}, {}, { priority = 256 }))
      assert.matches("'countdown' must be between 0", raised(app.send_task, app, "x", {}, {}, { countdown = -1 }))
      assert.matches("'countdown' must be between 0",
        raised(app.send_task, app, "x", {}, {}, { countdown = math.huge }))
      assert.matches("'queue' must be a string", raised(app.send_task, app, "x", {}, {}, { queue = 1 }))
      assert.matches("'broker' must be a broker", raised(celery.new, {}))
      -- a value JSON cannot carry is an error return, and nothing is written
      local before = helper.scalar(dsn, "SELECT COUNT(*) FROM kombu_message")
      local r, err = app:send_task("interop.add", { "\255" })
      assert.is_nil(r)
      assert.equal("json", err.code)
      assert.equal(before, helper.scalar(dsn, "SELECT COUNT(*) FROM kombu_message"))
    end)
  end)

  describe("Python sends, the Lua worker runs", function()
    local function send_from_python(specs)
      local file = os.tmpname()
      write_file(file, json.encode(specs))
      local ids = json.decode(client(envfile, "send " .. q(file)))
      os.remove(file)
      return ids
    end

    it("runs Python's send_task/apply_async messages and Python's AsyncResult.get() reads the results", function()
      local tries = {}
      local handlers = {
        ["lua.add"] = function(args) return args[1] + args[2] end,
        ["lua.echo"] = function(args, kwargs, req)
          return { args = args, kwargs = kwargs, retries = req.retries, task = req.task }
        end,
        ["lua.fail"] = function(args) error("lua says " .. args[1], 0) end,
        ["lua.typed"] = function() error({ exc_type = "KeyError", exc_module = "builtins", exc_message = "k" }) end,
        ["lua.retry"] = function(_, _, req)
          tries[#tries + 1] = req.retries
          if req.retries < 1 then error(celery.retry { countdown = 0.2, reason = "once more" }) end
          return "done after " .. req.retries
        end,
        ["lua.retry_forever"] = function() error(celery.retry { countdown = 0, max_retries = 1 }) end,
        ["lua.eta"] = function(_, _, req) return { eta = req.eta, ran = app:now() } end,
        ["lua.big"] = function()
          return { pickle.int("1267650600228229401496703205376"), pickle.tuple { 1, "t" }, pickle.bytes("\0\255") }
        end,
        ["lua.unpicklable"] = function() return { f = print } end,
      }
      local t0 = app:now()
      local ids = send_from_python {
        { name = "lua.add", args = { 2, 3 }, options = { queue = "lua" } },
        { name = "lua.echo", args = { 1, json.null, "é", { 1, 2 }, 1099511627776 }, kwargs = { k = { n = 7 } },
          options = { queue = "lua" } },
        { name = "lua.fail", args = { "x" }, options = { queue = "lua" } },
        { name = "lua.typed", options = { queue = "lua" } },
        { name = "lua.nope", options = { queue = "lua" } },
        { name = "lua.retry", options = { queue = "lua" } },
        { name = "lua.retry_forever", options = { queue = "lua" } },
        { name = "lua.eta", options = { queue = "lua", countdown = 1.5 } },
        { name = "lua.expired", options = { queue = "lua", expires = t0 - 60, expires_is_time = true } },
        { name = "lua.big", options = { queue = "lua" } },
        { name = "lua.unpicklable", options = { queue = "lua" } },
      }
      assert.equal(11, #ids)
      local stats = app:worker(handlers, { queues = { "lua" }, idle_timeout = 1, duration = 60 })
      assert.equal(0, stats.errors, tostring(stats.last_error))
      -- 11 messages, 2 republished retries (lua.retry once, lua.retry_forever once)
      assert.equal(13, stats.processed)
      assert.same({ 0, 1 }, tries)

      local res = client_results(envfile, ids)
      local add, echo, fail, typed, nope = res[ids[1]], res[ids[2]], res[ids[3]], res[ids[4]], res[ids[5]]
      assert.is_true(add.ok)
      assert.equal("5", add["repr"])
      assert.equal("{'args': [1, None, 'é', [1, 2], 1099511627776], 'kwargs': {'k': {'n': 7}}, " ..
        "'retries': 0, 'task': 'lua.echo'}", echo["repr"])
      assert.is_false(fail.ok)
      assert.equal("RuntimeError", fail.exc_type)
      assert.equal("lua says x", fail.exc_message)
      assert.matches("stack traceback", fail.traceback)
      assert.equal("KeyError", typed.exc_type)
      assert.equal("NotRegistered", nope.exc_type)
      assert.equal("celery.exceptions", nope.exc_module)
      local retry, forever, eta, expired = res[ids[6]], res[ids[7]], res[ids[8]], res[ids[9]]
      assert.equal("'done after 1'", retry["repr"])
      assert.equal("MaxRetriesExceededError", forever.exc_type)
      assert.is_true(eta.ok)
      local eta_v = json.decode(eta["repr"]:gsub("'", '"'):gsub("None", "null"))
      assert.is_true(eta_v.ran >= t0 + 1.4, "ran before its eta")
      assert.equal("REVOKED", expired.state)
      assert.equal("TaskRevokedError", expired.exc_type)
      local big, unpicklable = res[ids[10]], res[ids[11]]
      assert.equal("[1267650600228229401496703205376, (1, 't'), b'\\x00\\xff']", big["repr"])
      assert.equal("EncodeError", unpicklable.exc_type)
      -- the database: every message of the queue claimed the way kombu marks it, one row each
      local qid = app:queue_id("lua")
      assert.equal("0", helper.scalar(dsn, "SELECT COUNT(*) FROM kombu_message WHERE visible <> 0 AND queue_id = "
        .. qid))
      assert.equal("13", helper.scalar(dsn, "SELECT COUNT(*) FROM kombu_message WHERE queue_id = " .. qid))
      assert.equal("SUCCESS", helper.scalar(dsn, "SELECT status FROM celery_taskmeta WHERE task_id = '"
        .. ids[1] .. "'"))
    end)

    it("marks a message it cannot run as FAILURE and keeps going", function()
      local qid = app:queue_id("lua")
      local id = core.uuid7()
      local garbage = json.encode { headers = { id = id, task = "lua.add" }, properties = { delivery_tag = "x" },
        ["content-type"] = "application/x-python-serialize", body = "gASVAAAAAAAAAAA=" }
      assert(broker:execute("INSERT INTO kombu_message (id, visible, payload, version, queue_id) " ..
        "VALUES (NEXT VALUE FOR message_id_sequence, 1, ?, 1, ?)", garbage, qid))
      assert(broker:execute("INSERT INTO kombu_message (id, visible, payload, version, queue_id) " ..
        "VALUES (NEXT VALUE FOR message_id_sequence, 1, 'not json at all', 1, ?)", qid))
      local stats = app:worker({ ["lua.add"] = function() return 1 end }, { queues = { "lua" }, idle_timeout = 0.5 })
      assert.equal(2, stats.processed)
      assert.equal("FAILURE", helper.scalar(dsn, "SELECT status FROM celery_taskmeta WHERE task_id = '" .. id .. "'"))
      local v, err = app:result(id):get { timeout = 1 }
      assert.is_nil(v)
      assert.equal("ContentDisallowed", err.exc_type)
      assert.matches("only application/json", err.exc_message[1])
    end)

    it("purges consumed messages past an age, and only those", function()
      local qid = app:queue_id("lua")
      local waiting = assert(app:send_task("lua.add", { 1, 1 }, nil, { queue = "lua" }))
      local consumed = tonumber(helper.scalar(dsn, "SELECT COUNT(*) FROM kombu_message WHERE visible = 0"))
      assert.is_true(consumed > 0)
      assert.equal(0, app:purge_consumed(3600))
      assert.equal(2, app:purge_consumed(0, 2))
      local left = assert(app:purge_consumed(0))
      assert.equal(consumed - 2, left)
      assert.equal("0", helper.scalar(dsn, "SELECT COUNT(*) FROM kombu_message WHERE visible = 0"))
      assert.equal(1, select(2, payload_of(waiting.id)))
      assert.equal("1", helper.scalar(dsn, "SELECT COUNT(*) FROM kombu_message WHERE queue_id = " .. qid))
      assert.matches("'older_than' must be", raised(app.purge_consumed, app, -1))
      assert.matches("'limit' must be", raised(app.purge_consumed, app, 1, 0))
      local stats = app:worker({ ["lua.add"] = function(args) return args[1] + args[2] end },
        { queues = { "lua" }, idle_timeout = 0.3 })
      assert.equal(1, stats.SUCCESS)
      assert.equal(2, waiting:get { timeout = 1 })
    end)
  end)

  it("no message runs twice with 2 Lua consumers and 1 Python worker on one queue (measured)", function()
    local N = 200
    local consumers = {}
    for i = 1, 2 do
      consumers[i] = proc.spawn(FIXTURES .. "/celery_consumer.lua", { dsn, "lua" .. i, "4" })
      assert(proc.pid(consumers[i]), "consumer " .. i .. " did not start")
    end
    for n = 1, N do assert(app:send_task("interop.record", { n }, nil, { queue = "race" })) end
    local done = proc.wait_for(function()
      return tonumber(helper.scalar(dsn, "SELECT COUNT(*) FROM celers_celery_runs")) >= N
    end, 90, 0.2)
    local outs = {}
    for i = 1, 2 do
      local code, out = proc.wait(consumers[i], 60)
      assert.equal(0, code, out)
      outs[i] = json.decode(out:match("[^\n]*\n?$"))
    end
    assert(done, "not every task ran")
    local runs = helper.query(dsn, "SELECT COUNT(*), COUNT(DISTINCT task_id) FROM celers_celery_runs")[1]
    assert.equal(tostring(N), runs[1], "a task ran twice")
    assert.equal(tostring(N), runs[2])
    local by = {}
    for _, row in ipairs(helper.query(dsn, "SELECT consumer, COUNT(*) FROM celers_celery_runs GROUP BY consumer")) do
      by[row[1]] = tonumber(row[2])
    end
    local qid = app:queue_id("race")
    assert.equal("0", helper.scalar(dsn, "SELECT COUNT(*) FROM kombu_message WHERE visible <> 0 AND queue_id = "
      .. qid))
    assert.equal(tostring(N), helper.scalar(dsn, "SELECT COUNT(*) FROM celery_taskmeta WHERE status = 'SUCCESS' " ..
      "AND task_id IN (SELECT DISTINCT task_id FROM celers_celery_runs)"))
    io.stderr:write(("\n  claim race: %d tasks, runs lua1=%d lua2=%d python=%d, lost Lua claims %d+%d\n"):format(
      N, by.lua1 or 0, by.lua2 or 0, by.python or 0, outs[1].lost_claims, outs[2].lost_claims))
    assert.is_true((by.lua1 or 0) > 0 and (by.lua2 or 0) > 0, "both Lua consumers took part")
    assert.is_true((by.python or 0) > 0, "the Python worker took part")
  end)
end)

describe("celers.celery tables", function()
  it("creates kombu's and Celery's tables and sequences exactly as they do", function()
    local lua_dsn, py_dsn = helper.fresh_dsn("celery_ddl_lua"), helper.fresh_dsn("celery_ddl_py")
    local b = assert(celers.connect(lua_dsn))
    local app = assert(celery.new(b))
    assert.equal("celery", app.queue)
    b:close()
    local envfile = python_env(py_dsn)
    assert.equal("ok\n", client(envfile, "tables"))
    os.remove(envfile)
    local function ddl(dsn, kind, name)
      local row = helper.query(dsn, "SHOW CREATE " .. kind .. " `" .. name .. "`")[1]
      return (row[2]:gsub(" AUTO_INCREMENT=%d+", ""))
    end
    for _, t in ipairs { "kombu_queue", "kombu_message", "celery_taskmeta" } do
      assert.equal(ddl(py_dsn, "TABLE", t), ddl(lua_dsn, "TABLE", t))
    end
    for _, s in ipairs { "queue_id_sequence", "message_id_sequence", "task_id_sequence" } do
      assert.equal(ddl(py_dsn, "SEQUENCE", s), ddl(lua_dsn, "SEQUENCE", s))
    end
  end)

  it("with create_tables = false, reports absent tables instead of creating them", function()
    local dsn = helper.fresh_dsn("celery_ddl_none")
    local b = assert(celers.connect(dsn))
    local app, err = celery.new(b, { create_tables = false })
    assert.is_nil(app)
    assert.equal("not_found", err.code)
    assert.equal("0", helper.scalar(dsn,
      "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE()"))
    assert.matches("unknown option 'qeue'", raised(celery.new, b, { qeue = "x" }))
    b:close()
  end)
end)
