--- celers.celery: work with Python Celery through the same MariaDB, both ways.
-- Python Celery with kombu's SQLAlchemy transport keeps its messages in kombu_queue and
-- kombu_message, and its database result backend keeps results in celery_taskmeta. This
-- module reads and writes those tables (through broker:execute, bound parameters only):
--   app:send_task(name, args, kwargs, opts)  a protocol 2 message a stock Celery worker runs
--   app:result(id)                            an AsyncResult-like view of celery_taskmeta
--   app:worker(handlers, opts)                a Lua worker for messages Python published
-- docs/celery.md describes the envelope, the tables and what is and is not supported.
local celers = require "celers"
local pickle = require "celers.pickle"

local core, json = celers.core, celers.json
local format, floor = string.format, math.floor

local celery = {}

local READY = { SUCCESS = true, FAILURE = true, REVOKED = true }
celery.READY_STATES = READY

-- ---- argument checks ---------------------------------------------------------------------

local function arg_error(fn, arg, what, v)
  error(format("celers: celery.%s: '%s' must be %s (got %s)", fn, arg, what, type(v)), 3)
end

local function check_options(fn, opts, allowed)
  if opts == nil then return {} end
  if type(opts) ~= "table" then arg_error(fn, "opts", "a table", opts) end
  for k in pairs(opts) do
    if not allowed[k] then error(format("celers: celery.%s: unknown option '%s'", fn, tostring(k)), 3) end
  end
  return opts
end

local function set_of(list)
  local s = {}
  for _, v in ipairs(list) do s[v] = true end
  return s
end

-- ---- time: Unix seconds <-> the ISO 8601 text Celery writes -------------------------------

local function days_from_civil(y, m, d)
  y = m <= 2 and y - 1 or y
  local era = floor(y / 400)
  local yoe = y - era * 400
  local doy = floor((153 * (m > 2 and m - 3 or m + 9) + 2) / 5) + d - 1
  local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

--- "2026-11-26T02:50:00.123456+00:00" (naive or Z means UTC) -> Unix seconds, or nil.
function celery.parse_iso8601(s)
  if type(s) ~= "string" then return nil end
  local y, mo, d, h, mi, sec, frac, tz =
    s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)[T ](%d%d):(%d%d):(%d%d)([.,]?%d*)(.*)$")
  if not y then return nil end
  local offset = 0
  if tz ~= "" and tz ~= "Z" then
    local sign, oh, om = tz:match("^([+-])(%d%d):?(%d%d)$")
    if not sign then return nil end
    offset = (tonumber(oh) * 3600 + tonumber(om) * 60) * (sign == "-" and -1 or 1)
  end
  local t = days_from_civil(tonumber(y), tonumber(mo), tonumber(d)) * 86400 + tonumber(h) * 3600 +
    tonumber(mi) * 60 + tonumber(sec) - offset
  if #frac > 1 then t = t + tonumber("0." .. frac:sub(2)) end
  return t
end

--- Unix seconds -> "YYYY-MM-DDTHH:MM:SS.ffffff+00:00", as Python's isoformat() on UTC.
function celery.iso8601(t)
  local whole = floor(t)
  local micro = floor((t - whole) * 1e6 + 0.5)
  if micro >= 1000000 then whole, micro = whole + 1, 0 end
  local text = os.date("!%Y-%m-%dT%H:%M:%S", whole)
  if micro > 0 then text = text .. format(".%06d", micro) end
  return text .. "+00:00"
end

-- ---- the tables, as kombu 5.2 and Celery 5.2 create them through SQLAlchemy -------------

local SEQUENCES = { "queue_id_sequence", "message_id_sequence", "task_id_sequence" }

local function table_ddl(seq)
  local id = seq and "`id` int(11) NOT NULL" or "`id` int(11) NOT NULL AUTO_INCREMENT"
  return {
    "CREATE TABLE IF NOT EXISTS `kombu_queue` (" .. id .. ", `name` varchar(200) DEFAULT NULL, " ..
      "PRIMARY KEY (`id`), UNIQUE KEY `name` (`name`)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE IF NOT EXISTS `kombu_message` (" .. id .. ", `visible` tinyint(1) DEFAULT NULL, " ..
      "`timestamp` datetime DEFAULT NULL, `payload` text NOT NULL, `version` smallint(6) NOT NULL, " ..
      "`queue_id` int(11) DEFAULT NULL, PRIMARY KEY (`id`), KEY `FK_kombu_message_queue` (`queue_id`), " ..
      "KEY `ix_kombu_message_visible` (`visible`), KEY `ix_kombu_message_timestamp_id` (`timestamp`,`id`), " ..
      "KEY `ix_kombu_message_timestamp` (`timestamp`), CONSTRAINT `FK_kombu_message_queue` " ..
      "FOREIGN KEY (`queue_id`) REFERENCES `kombu_queue` (`id`)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE IF NOT EXISTS `celery_taskmeta` (" .. id .. ", `task_id` varchar(155) DEFAULT NULL, " ..
      "`status` varchar(50) DEFAULT NULL, `result` blob DEFAULT NULL, `date_done` datetime DEFAULT NULL, " ..
      "`traceback` text DEFAULT NULL, `name` varchar(155) DEFAULT NULL, `args` blob DEFAULT NULL, " ..
      "`kwargs` blob DEFAULT NULL, `worker` varchar(155) DEFAULT NULL, `retries` int(11) DEFAULT NULL, " ..
      "`queue` varchar(155) DEFAULT NULL, PRIMARY KEY (`id`), UNIQUE KEY `task_id` (`task_id`)) " ..
      "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
  }
end

local function tables_present(broker)
  local rows, err = broker:execute("SELECT table_name, table_type FROM information_schema.tables " ..
    "WHERE table_schema = DATABASE() AND table_name IN ('kombu_queue', 'kombu_message', " ..
    "'celery_taskmeta', 'queue_id_sequence', 'message_id_sequence', 'task_id_sequence')")
  if not rows then return nil, err end
  local present = {}
  for _, r in ipairs(rows) do present[r[1]] = r[2] end
  return present
end

-- ---- the app -------------------------------------------------------------------------------

local App = {}
App.__index = App

local NEW_OPTIONS = set_of { "queue", "create_tables", "origin" }

--- A Celery interop handle over a broker's connection.
-- opts: queue (default "celery", Celery's default queue), create_tables (default true: create
-- kombu's and Celery's tables and sequences the way they would, when absent), origin (the
-- "origin" header, default "lua@<host>:<pid>").
-- Returns the app, or nil and an error table.
function celery.new(broker, opts)
  if type(broker) ~= "userdata" or not broker.execute then arg_error("new", "broker", "a broker", broker) end
  opts = check_options("new", opts, NEW_OPTIONS)
  if opts.queue ~= nil and (type(opts.queue) ~= "string" or opts.queue == "") then
    arg_error("new", "queue", "a non-empty string", opts.queue)
  end
  local present, err = tables_present(broker)
  if not present then return nil, err end
  local complete = present.kombu_queue and present.kombu_message and present.celery_taskmeta
  if not complete then
    if opts.create_tables == false then
      return nil, celers.error("not_found", "Celery's tables (kombu_queue, kombu_message, celery_taskmeta) " ..
        "are absent: start a Celery worker or producer once, or let celers.celery create them")
    end
    local version
    version, err = broker:execute("SELECT VERSION()")
    if not version then return nil, err end
    -- kombu and Celery on MariaDB (SQLAlchemy 1.4) take ids from sequences; MySQL has none
    local mariadb = version[1][1]:find("MariaDB", 1, true) ~= nil
    if mariadb then
      for _, seq in ipairs(SEQUENCES) do
        local ok, e = broker:execute("CREATE SEQUENCE IF NOT EXISTS `" .. seq .. "`")
        if not ok then return nil, e end
      end
    end
    for _, ddl in ipairs(table_ddl(mariadb)) do
      local ok, e = broker:execute(ddl)
      if not ok then return nil, e end
    end
    present, err = tables_present(broker)
    if not present then return nil, err end
  end
  local function id_of(seq) return present[seq] and "NEXT VALUE FOR `" .. seq .. "`" or "NULL" end
  return setmetatable({
    broker = broker,
    queue = opts.queue or "celery",
    origin = opts.origin or format("lua@%s:%d", core.hostname(), core.getpid()),
    queue_ids = {},
    lost_claims = 0, -- claims another consumer won first (a measure of contention)
    ids = { queue = id_of("queue_id_sequence"), message = id_of("message_id_sequence"),
            task = id_of("task_id_sequence") },
  }, App)
end

--- The database's clock, as Unix seconds (every eta and expiry is computed from it).
function App:now()
  local rows, err = self.broker:execute(
    "SELECT TIMESTAMPDIFF(MICROSECOND, TIMESTAMP'1970-01-01 00:00:00', UTC_TIMESTAMP(6))")
  if not rows then return nil, err end
  return tonumber(rows[1][1]) / 1e6
end

--- kombu_queue's id for a queue name, creating the row as kombu does when absent.
function App:queue_id(name)
  local id = self.queue_ids[name]
  if id then return id end
  for _ = 1, 2 do
    local rows, err = self.broker:execute("SELECT id FROM kombu_queue WHERE name = ?", name)
    if not rows then return nil, err end
    if rows[1] then
      id = tonumber(rows[1][1])
      self.queue_ids[name] = id
      return id
    end
    local ok
    ok, err = self.broker:execute("INSERT INTO kombu_queue (id, name) VALUES (" .. self.ids.queue .. ", ?)", name)
    if not ok and err.code ~= "duplicate" then return nil, err end
  end
  return nil, celers.error("sql", "kombu_queue row for '" .. name .. "' vanished")
end

-- ---- sending -------------------------------------------------------------------------------

local SEND_OPTIONS = set_of {
  "queue", "routing_key", "exchange", "task_id", "countdown", "eta", "expires", "expires_at",
  "priority", "retries", "headers", "root_id", "parent_id", "group_id", "group_index", "argsrepr",
  "kwargsrepr", "time_limit", "soft_time_limit", "shadow", "ignore_result", "body_encoding",
}

local function copy_array(fn, arg, t)
  if t == nil then return json.array() end
  if type(t) ~= "table" then arg_error(fn, arg, "a table (a list)", t) end
  local out = json.array()
  local n = t.n or #t
  for i = 1, n do
    local v = t[i]
    if v == nil then v = json.null end
    out[i] = v
  end
  for k in pairs(t) do
    if type(k) ~= "number" and k ~= "n" then
      error(format("celers: celery.send_task: '%s' must be a list (it has key '%s')", arg, tostring(k)), 3)
    end
  end
  return out
end

local function copy_object(fn, arg, t)
  if t == nil then return {} end
  if type(t) ~= "table" then arg_error(fn, arg, "a table (keyword arguments)", t) end
  local out = {}
  for k, v in pairs(t) do
    if type(k) ~= "string" then
      error(format("celers: celery.%s: '%s' keys must be strings (got %s)", fn, arg, type(k)), 3)
    end
    out[k] = v
  end
  return out
end

local function opt_type(fn, opts, key, kind)
  local v = opts[key]
  if v ~= nil and type(v) ~= kind then arg_error(fn, key, "a " .. kind, v) end
  return v
end

local function opt_seconds(fn, opts, key)
  local v = opt_type(fn, opts, key, "number")
  if v and (v ~= v or v < 0 or v > 315360000) then
    error(format("celers: celery.%s: '%s' must be between 0 and 315360000 seconds", fn, key), 3)
  end
  return v
end

local function null_if_nil(v)
  if v == nil then return json.null end
  return v
end

--- The protocol 2 message for a task, as kombu stores it in kombu_message.payload (a table).
-- Used by send_task; exposed for inspection and for writing to another store.
function App:message(name, args, kwargs, opts)
  local fn = "send_task"
  if type(name) ~= "string" or name == "" then arg_error(fn, "name", "a non-empty string", name) end
  args = copy_array(fn, "args", args)
  kwargs = copy_object(fn, "kwargs", kwargs)
  opts = check_options(fn, opts, SEND_OPTIONS)
  local queue = opt_type(fn, opts, "queue", "string") or self.queue
  local task_id = opt_type(fn, opts, "task_id", "string") or core.uuid7()
  local countdown = opt_seconds(fn, opts, "countdown")
  local eta = opt_type(fn, opts, "eta", "number")
  local expires = opt_seconds(fn, opts, "expires")
  local expires_at = opt_type(fn, opts, "expires_at", "number")
  local priority = opt_type(fn, opts, "priority", "number")
  if priority and (priority ~= floor(priority) or priority < 0 or priority > 255) then
    error("celers: celery.send_task: 'priority' must be an integer from 0 to 255", 2)
  end
  local retries = opt_type(fn, opts, "retries", "number") or 0
  if retries ~= floor(retries) or retries < 0 then
    error("celers: celery.send_task: 'retries' must be a whole number >= 0", 2)
  end
  local encoding = opt_type(fn, opts, "body_encoding", "string") or "base64"
  if encoding ~= "base64" and encoding ~= "none" then
    error("celers: celery.send_task: 'body_encoding' must be \"base64\" or \"none\"", 2)
  end
  local extra = opt_type(fn, opts, "headers", "table")
  for _, k in ipairs { "exchange", "routing_key", "root_id", "parent_id", "group_id", "argsrepr",
                       "kwargsrepr", "shadow" } do
    opt_type(fn, opts, k, "string")
  end
  for _, k in ipairs { "group_index", "time_limit", "soft_time_limit" } do opt_type(fn, opts, k, "number") end
  opt_type(fn, opts, "ignore_result", "boolean")

  local now
  if countdown or expires then
    local err
    now, err = self:now()
    if not now then return nil, err end
  end
  if countdown then eta = now + countdown end
  if expires then expires_at = now + expires end

  local ok, args_json = pcall(json.encode, args)
  if not ok then return nil, celers.error("json", "args: " .. tostring(args_json)) end
  local kwargs_json
  ok, kwargs_json = pcall(json.encode, kwargs)
  if not ok then return nil, celers.error("json", "kwargs: " .. tostring(kwargs_json)) end
  local embed = { callbacks = json.null, errbacks = json.null, chain = json.null, chord = json.null }
  local body = "[" .. args_json .. ", " .. kwargs_json .. ", " .. json.encode(embed) .. "]"

  local headers = {
    lang = "py", -- the message format is Python Celery's; workers key nothing else on it
    task = name,
    id = task_id,
    shadow = null_if_nil(opts.shadow),
    eta = eta and celery.iso8601(eta) or json.null,
    expires = expires_at and celery.iso8601(expires_at) or json.null,
    group = null_if_nil(opts.group_id),
    group_index = null_if_nil(opts.group_index),
    retries = retries,
    timelimit = json.array { null_if_nil(opts.time_limit), null_if_nil(opts.soft_time_limit) },
    root_id = opts.root_id or task_id,
    parent_id = null_if_nil(opts.parent_id),
    argsrepr = opts.argsrepr or args_json,
    kwargsrepr = opts.kwargsrepr or kwargs_json,
    origin = self.origin,
    ignore_result = opts.ignore_result or false,
  }
  if extra then
    for k, v in pairs(extra) do
      if type(k) ~= "string" then error("celers: celery.send_task: 'headers' keys must be strings", 2) end
      headers[k] = v
    end
  end
  local properties = {
    correlation_id = task_id,
    reply_to = "",
    delivery_mode = 2,
    delivery_info = { exchange = opts.exchange or "", routing_key = opts.routing_key or queue },
    priority = priority or 0,
    delivery_tag = core.uuid7(), -- mandatory: a Celery worker stops on a message without one
  }
  if encoding == "base64" then
    properties.body_encoding = "base64"
    body = core.base64_encode(body)
  end
  return {
    body = body,
    ["content-encoding"] = "utf-8",
    ["content-type"] = "application/json",
    headers = headers,
    properties = properties,
  }, queue
end

--- Publish a task for Celery workers (or celers.celery workers) serving opts.queue.
-- args: a list; kwargs: a table of keyword arguments; opts: queue (default the app's),
-- countdown / eta (Unix seconds), expires (seconds from now) / expires_at (Unix seconds),
-- priority, retries, headers (extra headers), task_id, root_id, parent_id, group_id,
-- group_index, argsrepr, kwargsrepr, time_limit, soft_time_limit, shadow, ignore_result,
-- exchange, routing_key, body_encoding ("base64", kombu's default, or "none").
-- Returns an AsyncResult, or nil and an error table.
function App:send_task(name, args, kwargs, opts)
  local msg, queue = self:message(name, args, kwargs, opts)
  if not msg then return nil, queue end
  local qid, err = self:queue_id(queue)
  if not qid then return nil, err end
  local ok
  ok, err = self.broker:execute("INSERT INTO kombu_message (id, visible, timestamp, payload, version, queue_id) " ..
    "VALUES (" .. self.ids.message .. ", 1, NULL, ?, 1, ?)", json.encode(msg), qid)
  if not ok then return nil, err end
  return self:result(msg.headers.id)
end

-- ---- results -------------------------------------------------------------------------------

local AsyncResult = {}
AsyncResult.__index = AsyncResult

--- An AsyncResult-like view of celery_taskmeta for a task id.
function App:result(task_id)
  if type(task_id) ~= "string" then arg_error("result", "task_id", "a string", task_id) end
  return setmetatable({ id = task_id, app = self }, AsyncResult)
end

--- The task's row: { status=, result=, traceback=, date_done= (Unix seconds) }; status PENDING
-- when there is no row (as Celery answers). result is unpickled (celers.pickle).
function AsyncResult:info()
  local rows, err = self.app.broker:execute("SELECT status, result, traceback, " ..
    "TIMESTAMPDIFF(SECOND, TIMESTAMP'1970-01-01 00:00:00', date_done) FROM celery_taskmeta WHERE task_id = ?",
    self.id)
  if not rows then return nil, err end
  local r = rows[1]
  if not r then return { status = "PENDING" } end
  local info = { status = r[1] or "PENDING", traceback = r[3], date_done = tonumber(r[4]) }
  if r[2] then
    local ok, value = pcall(pickle.loads, r[2])
    if not ok then return nil, celers.error("pickle", "result of task " .. self.id .. ": " .. value) end
    info.result = value
  end
  return info
end

function AsyncResult:state()
  local info, err = self:info()
  if not info then return nil, err end
  return info.status
end
AsyncResult.status = AsyncResult.state

function AsyncResult:ready()
  local s, err = self:state()
  if not s then return nil, err end
  return READY[s] == true
end

local function failure_error(id, info)
  local r = type(info.result) == "table" and info.result or {}
  local msg = r.exc_message
  if type(msg) == "table" then
    local parts = {}
    for i = 1, #msg do parts[i] = tostring(msg[i]) end
    msg = table.concat(parts, ", ")
  end
  local e = celers.error(info.status == "REVOKED" and "task_revoked" or "task_failed",
    format("task %s %s: %s: %s", id, info.status, tostring(r.exc_type or "?"), tostring(msg or "")))
  e.status, e.exc_type, e.exc_module, e.exc_message = info.status, r.exc_type, r.exc_module, r.exc_message
  e.traceback, e.result = info.traceback, info.result
  return e
end

local GET_OPTIONS = set_of { "timeout", "interval" }

--- Wait for the task to be ready (polling every opts.interval, default 0.1 s, for at most
-- opts.timeout, default 10 s). SUCCESS: returns the result (then the info table); FAILURE or
-- REVOKED: nil and an error (code task_failed / task_revoked, with exc_type, exc_message,
-- traceback); timeout: nil and an error with code timeout.
function AsyncResult:get(opts)
  opts = check_options("get", opts, GET_OPTIONS)
  local timeout = opt_seconds("get", opts, "timeout") or 10
  local interval = opt_seconds("get", opts, "interval") or 0.1
  local deadline = core.monotonic() + timeout
  while true do
    local info, err = self:info()
    if not info then return nil, err end
    if info.status == "SUCCESS" then
      local result = info.result
      if result == nil then result = pickle.null end
      return result, info
    elseif READY[info.status] then
      return nil, failure_error(self.id, info)
    end
    if core.monotonic() >= deadline then
      return nil, celers.error("timeout", format("task %s still %s after %g s", self.id, info.status, timeout))
    end
    core.sleep(interval)
  end
end

--- Write a task's state where Celery's AsyncResult reads it. status: PENDING, STARTED, RETRY,
-- SUCCESS, FAILURE or REVOKED; result: any value celers.pickle writes (for FAILURE, RETRY and
-- REVOKED, Celery expects { exc_type=, exc_message=pickle.tuple{...}, exc_module= }).
function App:store_result(task_id, status, result, traceback)
  if type(task_id) ~= "string" then arg_error("store_result", "task_id", "a string", task_id) end
  if type(status) ~= "string" then arg_error("store_result", "status", "a string", status) end
  if traceback ~= nil and type(traceback) ~= "string" then
    arg_error("store_result", "traceback", "a string", traceback)
  end
  local ok, blob = pcall(pickle.dumps, result)
  if not ok then return nil, celers.error("pickle", blob) end
  local done = READY[status] and "UTC_TIMESTAMP()" or "NULL"
  local rows, err = self.broker:execute(
    "INSERT INTO celery_taskmeta (id, task_id, status, result, date_done, traceback) " ..
    "VALUES (" .. self.ids.task .. ", ?, ?, ?, " .. done .. ", ?) " ..
    "ON DUPLICATE KEY UPDATE status = ?, result = ?, date_done = " .. done .. ", traceback = ?",
    task_id, status, blob, traceback, status, blob, traceback)
  if not rows then return nil, err end
  return true
end

--- Delete a task's result row (Celery's AsyncResult.forget).
function App:forget(task_id)
  if type(task_id) ~= "string" then arg_error("forget", "task_id", "a string", task_id) end
  local rows, n = self.broker:execute("DELETE FROM celery_taskmeta WHERE task_id = ?", task_id)
  if not rows then return nil, n end
  return n > 0
end

-- ---- consuming -----------------------------------------------------------------------------

--- Claim the oldest visible message of a queue, as kombu does (visible = 0; the row stays),
-- with a fenced UPDATE: a message goes to exactly one of any number of Lua and Python
-- consumers. Returns the decoded message (see celery.decode), false when the queue is empty, or
-- nil and an error.
function App:claim(queue)
  queue = queue or self.queue
  if type(queue) ~= "string" then arg_error("claim", "queue", "a string", queue) end
  local qid, err = self:queue_id(queue)
  if not qid then return nil, err end
  local rows
  rows, err = self.broker:execute("SELECT id FROM kombu_message WHERE queue_id = ? AND visible = 1 " ..
    "ORDER BY timestamp, id LIMIT 16", qid)
  if not rows then return nil, err end
  for _, r in ipairs(rows) do
    -- the WHERE re-checks visible under the row lock, after any concurrent claim committed
    local ok, n = self.broker:execute("UPDATE kombu_message SET visible = 0, version = version + 1, " ..
      "timestamp = NOW() WHERE id = ? AND visible = 1", r[1])
    if not ok then return nil, n end
    if n == 0 then self.lost_claims = self.lost_claims + 1 end
    if n == 1 then
      local got
      got, err = self.broker:execute("SELECT payload FROM kombu_message WHERE id = ?", r[1])
      if not got then return nil, err end
      return celery.decode(got[1][1], queue, tonumber(r[1]))
    end
  end
  return false
end

--- Delete claimed messages (visible = 0) whose claim is older than older_than seconds, at
-- most `limit` (default 10000) per call. kombu never deletes a consumed message, so without
-- this kombu_message grows for ever and every consumer's scan of a queue with it.
-- Returns the number deleted, or nil and an error.
function App:purge_consumed(older_than, limit)
  if type(older_than) ~= "number" or older_than ~= older_than or older_than < 0 then
    arg_error("purge_consumed", "older_than", "a number of seconds >= 0", older_than)
  end
  limit = limit or 10000
  if type(limit) ~= "number" or limit < 1 or limit ~= floor(limit) then
    arg_error("purge_consumed", "limit", "a whole number >= 1", limit)
  end
  local ok, n = self.broker:execute("DELETE FROM kombu_message WHERE visible = 0 AND timestamp < " ..
    "DATE_SUB(NOW(6), INTERVAL ROUND(1000000 * ?) MICROSECOND) ORDER BY timestamp, id LIMIT ?",
    older_than, limit)
  if not ok then return nil, n end
  return n
end

--- Decode a kombu payload (JSON text) into a request table: id, task, args, kwargs, headers,
-- properties, retries, eta, expires (Unix seconds), root_id, parent_id, queue, message_id.
-- A message this module cannot run has request.error set (and id when it was readable).
function celery.decode(payload, queue, message_id)
  local req = { queue = queue, message_id = message_id }
  local ok, msg = pcall(json.decode, payload)
  if not ok or type(msg) ~= "table" then
    req.error = "payload is not JSON: " .. tostring(msg)
    return req
  end
  local headers = type(msg.headers) == "table" and msg.headers or {}
  local props = type(msg.properties) == "table" and msg.properties or {}
  req.headers, req.properties = headers, props
  req.id, req.task = headers.id, headers.task
  if type(req.id) ~= "string" or type(req.task) ~= "string" then
    req.id = type(req.id) == "string" and req.id or nil
    req.error = "not a Celery protocol 2 message (headers.task and headers.id are required)"
    return req
  end
  req.retries = tonumber(headers.retries) or 0
  req.root_id = type(headers.root_id) == "string" and headers.root_id or nil
  req.parent_id = type(headers.parent_id) == "string" and headers.parent_id or nil
  req.eta = celery.parse_iso8601(headers.eta)
  req.expires = celery.parse_iso8601(headers.expires)
  req.ignore_result = headers.ignore_result == true
  if msg["content-type"] ~= "application/json" then
    req.error = "content type " .. tostring(msg["content-type"]) .. " is not supported (only application/json)"
    return req
  end
  local body = msg.body
  if props.body_encoding == "base64" then
    ok, body = pcall(core.base64_decode, body)
    if not ok then
      req.error = "body is not base64: " .. tostring(body)
      return req
    end
  elseif props.body_encoding ~= nil and props.body_encoding ~= json.null then
    req.error = "body encoding " .. tostring(props.body_encoding) .. " is not supported"
    return req
  end
  local decoded
  ok, decoded = pcall(json.decode, body)
  if not ok or type(decoded) ~= "table" or type(decoded[1]) ~= "table" or type(decoded[2]) ~= "table" then
    req.error = "body is not [args, kwargs, embed]: " .. tostring(ok and body or decoded)
    return req
  end
  req.args, req.kwargs, req.embed = decoded[1], decoded[2], decoded[3]
  local embed = type(req.embed) == "table" and req.embed or {}
  for _, k in ipairs { "callbacks", "errbacks", "chain", "chord" } do
    if embed[k] ~= nil and embed[k] ~= json.null then
      req.error = k .. " are not supported by celers.celery workers (run them on a Python worker)"
      return req
    end
  end
  return req
end

--- Put a claimed message back in its queue (visible again), for another consumer.
function App:release(req)
  if type(req) ~= "table" or not req.message_id then arg_error("release", "request", "a claimed request", req) end
  local ok, err = self.broker:execute("UPDATE kombu_message SET visible = 1 WHERE id = ?", req.message_id)
  if not ok then return nil, err end
  return true
end

--- An exception dict as Celery's result backend stores it for JSON result serializers
-- (`exc_type`, `exc_message` as a one-element tuple, `exc_module`).
-- @tparam string exc_type the exception's class name, e.g. "ValueError"
-- @tparam string message its message
-- @tparam[opt] string exc_module its module (default none)
-- @treturn table the dict
function celery.exception(exc_type, message, exc_module)
  return { exc_type = exc_type, exc_message = pickle.tuple { message }, exc_module = exc_module or json.null }
end
local exception = celery.exception

local retry_mt = { __tostring = function(r) return "celery retry: " .. tostring(r.reason) end }

--- Raise this from a handler to run the task again later, as Celery's Task.retry does:
-- error(celery.retry{ countdown = 5, max_retries = 3, reason = "..." }).
function celery.retry(opts)
  opts = check_options("retry", opts, set_of { "countdown", "max_retries", "reason" })
  return setmetatable({ countdown = opt_seconds("retry", opts, "countdown") or 180,
                        max_retries = opt_type("retry", opts, "max_retries", "number") or 3,
                        reason = opts.reason or "retry" }, retry_mt)
end

-- Republish req for another attempt, same id, retries + 1 (Celery keeps the id on retry).
function App:republish(req, countdown)
  local kwargs = req.kwargs
  if next(kwargs) == nil then kwargs = nil end
  local h = req.headers
  local ok, err = self:send_task(req.task, req.args, kwargs, {
    queue = req.queue, task_id = req.id, countdown = countdown, retries = req.retries + 1,
    root_id = req.root_id, parent_id = req.parent_id, expires_at = req.expires,
    argsrepr = type(h.argsrepr) == "string" and h.argsrepr or nil,
    kwargsrepr = type(h.kwargsrepr) == "string" and h.kwargsrepr or nil,
    ignore_result = req.ignore_result,
  })
  if not ok then return nil, err end
  return true
end

--- Run one claimed request with handlers (name -> function(args, kwargs, request)) and store
-- its outcome in celery_taskmeta. Returns the state stored (SUCCESS, FAILURE, RETRY, REVOKED,
-- or "HELD" when its eta has not come), or nil and an error.
function App:run(req, handlers, now)
  local function store(status, result, tb)
    if req.ignore_result and status ~= "FAILURE" then return status end
    local ok, err = self:store_result(req.id, status, result, tb)
    if not ok then
      if err.code ~= "pickle" then return nil, err end
      -- a result pickle cannot hold: the caller learns why instead of waiting forever
      ok, err = self:store_result(req.id, "FAILURE",
        exception("EncodeError", "the Lua handler's result cannot be pickled: " .. err.message,
          "kombu.exceptions"))
      if not ok then return nil, err end
      return "FAILURE"
    end
    return status
  end
  if req.error then
    if not req.id then return "DROPPED" end
    return store("FAILURE", exception("ContentDisallowed", req.error, "kombu.exceptions"))
  end
  if req.expires and now >= req.expires then
    return store("REVOKED", exception("TaskRevokedError", "expired", "celery.exceptions"))
  end
  if req.eta and now < req.eta then return "HELD" end
  local handler = handlers[req.task]
  if not handler then
    return store("FAILURE", exception("NotRegistered", req.task, "celery.exceptions"))
  end
  local tb
  local ok, result = xpcall(handler, function(e)
    if getmetatable(e) ~= retry_mt then tb = debug.traceback(tostring(e), 2) end
    return e
  end, req.args, req.kwargs, req)
  if ok then return store("SUCCESS", result) end
  if getmetatable(result) == retry_mt then
    if req.retries >= result.max_retries then
      return store("FAILURE", exception("MaxRetriesExceededError",
        format("Can't retry %s[%s] args:%s kwargs:%s", req.task, req.id, tostring(req.headers.argsrepr),
          tostring(req.headers.kwargsrepr)), "celery.exceptions"))
    end
    local done, err = self:republish(req, result.countdown)
    if not done then return nil, err end
    return store("RETRY", exception("Retry", tostring(result.reason), "celery.exceptions"))
  end
  if type(result) == "table" and type(result.exc_type) == "string" then
    local msg = result.exc_message
    if type(msg) ~= "table" then msg = pickle.tuple { tostring(msg or "") } end
    return store("FAILURE", { exc_type = result.exc_type, exc_message = msg,
                              exc_module = result.exc_module or json.null }, tb)
  end
  return store("FAILURE", exception("RuntimeError", tostring(result), "builtins"), tb)
end

local WORKER_OPTIONS = set_of { "queues", "max_tasks", "idle_timeout", "duration", "poll_interval", "on_task" }

--- Serve queues with Lua handlers until a limit is reached: a Celery worker written in Lua.
-- handlers: task name -> function(args, kwargs, request) returning the result (errors become
-- FAILURE with a Python RuntimeError, or the exception named by an error table
-- { exc_type=, exc_message=, exc_module= }; celery.retry{...} retries).
-- opts: queues (default { app.queue }), max_tasks, idle_timeout (stop after this long with no
-- work), duration (stop after this long), poll_interval (default 0.2 s), on_task(request,
-- state) called after each task. Stops too on SIGTERM/SIGINT when
-- celers.core.trap_stop_signals() was called. Messages whose eta has not come are held in
-- memory, as a Celery worker holds them.
-- Returns stats { processed=, SUCCESS=, FAILURE=, RETRY=, REVOKED=, errors=, last_error= }.
function App:worker(handlers, opts)
  if type(handlers) ~= "table" then arg_error("worker", "handlers", "a table", handlers) end
  opts = check_options("worker", opts, WORKER_OPTIONS)
  local queues = opt_type("worker", opts, "queues", "table") or { self.queue }
  local max_tasks = opt_type("worker", opts, "max_tasks", "number")
  local idle_timeout = opt_seconds("worker", opts, "idle_timeout")
  local duration = opt_seconds("worker", opts, "duration")
  local poll = opt_seconds("worker", opts, "poll_interval") or 0.2
  local on_task = opt_type("worker", opts, "on_task", "function")
  local stats = { processed = 0, SUCCESS = 0, FAILURE = 0, RETRY = 0, REVOKED = 0, errors = 0 }
  local started = core.monotonic()
  local last_work = started
  local held = {} -- requests waiting for their eta
  local next_queue, failures = 1, 0

  local function finish(req, state)
    stats.processed = stats.processed + 1
    stats[state] = (stats[state] or 0) + 1
    if on_task then on_task(req, state) end
  end
  local function run(req, now)
    local state, err = self:run(req, handlers, now)
    if not state then
      stats.errors, stats.last_error = stats.errors + 1, err
      return false
    end
    if state == "HELD" then
      held[#held + 1] = req
    else
      finish(req, state)
    end
    return true
  end

  while true do
    if max_tasks and stats.processed >= max_tasks then break end
    local mono = core.monotonic()
    if duration and mono - started >= duration then break end
    if core.stop_signal() then break end
    local now, err = self:now()
    local worked = false
    if now then
      -- held messages whose time has come
      for i = #held, 1, -1 do
        if held[i].eta <= now then
          local req = table.remove(held, i)
          worked = run(req, now) or worked
        end
      end
      local msg
      for _ = 1, #queues do
        local queue = queues[next_queue]
        next_queue = next_queue % #queues + 1
        msg, err = self:claim(queue)
        if msg then break end
        if msg == nil then break end
      end
      if msg then worked = run(msg, now) or worked end
    end
    if err then
      stats.errors, stats.last_error = stats.errors + 1, err
      failures = failures + 1
      if failures >= 5 then break end
    else
      failures = 0
    end
    if worked then
      last_work = core.monotonic()
    else
      if #held == 0 and idle_timeout and core.monotonic() - last_work >= idle_timeout then break end
      local pause = poll
      if now and #held > 0 then
        for _, req in ipairs(held) do pause = math.min(pause, math.max(0, req.eta - now)) end
      end
      if err then pause = math.min(poll * 2 ^ failures, 5) end
      core.sleep(pause)
    end
  end
  -- messages still waiting for their eta go back to the queue (as kombu restores unacked ones)
  for _, req in ipairs(held) do
    local ok, err = self:release(req)
    if not ok then stats.errors, stats.last_error = stats.errors + 1, err end
  end
  return stats
end

return celery
