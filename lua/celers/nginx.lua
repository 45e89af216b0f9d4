--- celers.nginx: the broker inside nginx (lua-nginx-module 0.10.23+ or OpenResty) without
-- blocking the event loop. Every database call runs in an nginx thread pool through
-- ngx.run_worker_thread; the request's coroutine sleeps until it is done, and other
-- requests on the same worker go on meanwhile.
--
--   thread_pool celers threads=4;                      # main context
--   http { lua_worker_thread_vm_pool_size 4; ... }     # as many Lua VMs as threads
--
--   local cn = require "celers.nginx"
--   local client = cn.new { dsn = os.getenv("CELERS_DSN"), pool = "celers", threads = 4 }
--   local id, err = client:enqueue("send_email", { to = "a@b.c" })
--   if not id then ngx.log(ngx.ERR, tostring(err)) end     -- err.code: timeout, connect, busy...
--
-- Connections: each thread-pool Lua VM keeps one broker connection per DSN, opened on its
-- first call and reused by every later call. nginx lends a VM to one call at a time, and a
-- per-worker semaphore (as many permits as `threads`) keeps the number of VMs in use, and so
-- of connections, at the number of pool threads. The connection therefore belongs to one
-- thread at a time; the C core keeps its per-thread state (ids, client library set-up) per
-- thread.
--
-- The permits are given back when the call returns: keep lua_check_client_abort off (the
-- default), since a request killed while its call runs would never return its permit.
--
-- Timeouts are short by default (connect 2 s, read 3 s, write 3 s): a hung database costs a
-- pool thread that long, never the event loop. When every permit is taken for `wait` seconds
-- (default 2) a call fails with code "busy" instead of queueing without end.
--
-- The module also serves the dashboard's JSON API (M.serve_api), /health (M.serve_health)
-- and /metrics (M.serve_metrics). It is loaded both in nginx's request VM (everything below
-- "event loop side") and in the pool VMs (M.thread_call only, where no ngx API exists).
-- luacheck: globals ngx

local M = {}

local unpack = table.unpack or unpack -- luacheck: ignore 143

M.DEFAULTS = { connect_timeout = 2, read_timeout = 3, write_timeout = 3, threads = 4, wait = 2,
               pool = "celers", queue = "default" }

local function pack(...) return { n = select("#", ...), ... } end

-- -------------------------------------------------------------- errors

local Error = {}
Error.__index = Error
Error.__tostring = function(e) return ("celers: %s: %s"):format(tostring(e.code), tostring(e.message)) end

local function new_error(code, message, retryable)
  return setmetatable({ code = code, message = message, retryable = retryable and true or false }, Error)
end
--- An error table like the core's (`code`, `message`, `retryable`; tostring reads
-- "celers: <code>: <message>"), for failures of the thread pool itself.
-- @function new_error
M.new_error = new_error

-- A broker error as a plain table (it crosses between Lua VMs, which copy plain data only).
local function plain_error(err)
  if type(err) ~= "table" then return { code = "sql", message = tostring(err), retryable = false } end
  return { code = err.code, message = err.message, errno = err.errno, sqlstate = err.sqlstate,
           retryable = err.retryable }
end

-- -------------------------------------------------------------- pool-thread side

-- One broker per DSN and timeouts, per pool VM (each VM is a separate Lua state).
local brokers = {}

local function with_timeouts(cfg)
  local dsn = cfg.dsn
  local extra = {}
  for _, k in ipairs { "connect_timeout", "read_timeout", "write_timeout" } do
    if cfg[k] and not dsn:find("[?&]" .. k .. "=") then extra[#extra + 1] = k .. "=" .. cfg[k] end
  end
  if #extra == 0 then return dsn end
  return dsn .. (dsn:find("?", 1, true) and "&" or "?") .. table.concat(extra, "&")
end

local function broker_for(cfg)
  local key = cfg.key or cfg.dsn
  local b = brokers[key]
  if b then return b end
  local celers = require "celers"
  local err
  b, err = celers.connect(with_timeouts(cfg))
  if not b then return nil, err end
  brokers[key] = b
  return b
end

local function drop_broker(cfg)
  local key = cfg.key or cfg.dsn
  local b = brokers[key]
  brokers[key] = nil
  if b then pcall(b.close, b) end
end

-- Broker methods a request may call through the pool, by name.
local ALLOWED = {}
for _, name in ipairs {
  "enqueue", "enqueue_at", "enqueue_after", "enqueue_batch", "get_task", "get_result",
  "store_result", "get_statistics", "pause", "resume", "is_paused", "queue_size", "list_tasks",
  "list_dlq", "requeue_from_dlq", "purge_dlq", "purge_all_dlq", "cancel", "retry_now",
  "check_health", "list_workers", "list_recurring", "list_queues", "throughput",
  "connection_id", "count_by_task_name", "task_history",
} do ALLOWED[name] = true end

-- Calls made of several broker calls, run in one trip to the pool.
local composite = {}

--- check_health and the id of the connection that served it.
function composite.health(b)
  local h, err = b:check_health()
  if not h then return nil, err end
  h.connection_id = b:connection_id()
  return h
end

--- Every queue with its counts per state and whether it is paused.
function composite.overview(b)
  local queues, err = b:list_queues()
  if not queues then return nil, err end
  local seen, out = {}, {}
  for _, q in ipairs(queues) do seen[q.queue] = true end
  if not seen[b:queue()] then table.insert(queues, 1, { queue = b:queue(), paused = false }) end
  for _, q in ipairs(queues) do
    local stats
    stats, err = b:with_queue(q.queue):get_statistics()
    if not stats then return nil, err end
    out[#out + 1] = { queue = q.queue, paused = q.paused, counts = stats }
  end
  return out
end

--- Requeue every dead letter of the queue (at most `limit`, default 10000); the count.
function composite.requeue_all_dlq(b, limit)
  limit = limit or 10000
  local n = 0
  while n < limit do
    local page, err = b:list_dlq { limit = math.min(100, limit - n) }
    if not page then return nil, err end
    if #page == 0 then break end
    for _, item in ipairs(page) do
      local ok, e = b:requeue_from_dlq(item.id)
      if ok == nil then return nil, e end
      n = n + 1
    end
  end
  return n
end

--- A task, its result and its archived copies (task and result may be absent).
function composite.task_detail(b, id)
  local task, err = b:get_task(id)
  if err then return nil, err end
  local result, rerr = b:get_result(id)
  if rerr then return nil, rerr end
  local history, herr = b:task_history(id)
  if not history then return nil, herr end
  return { task = task or false, result = result or false, history = history }
end

--- Every queue's workers.
function composite.all_workers(b, stale_after)
  local queues, err = b:list_queues()
  if not queues then return nil, err end
  local out = {}
  local names = { [b:queue()] = true }
  for _, q in ipairs(queues) do names[q.queue] = true end
  for name in pairs(names) do
    local ws
    ws, err = b:with_queue(name):list_workers { stale_after = stale_after }
    if not ws then return nil, err end
    for _, w in ipairs(ws) do out[#out + 1] = w end
  end
  table.sort(out, function(x, y) return x.worker_id < y.worker_id end)
  return out
end

--- Runs in a pool thread (ngx.run_worker_thread): broker method `op` on `queue` with the
-- arguments. Returns true and the method's results, or false and an error table
-- ({misuse = true} when the call raised: a wrong argument, say).
function M.thread_call(cfg, queue, op, ...)
  if type(cfg) ~= "table" or type(cfg.dsn) ~= "string" then
    return false, { code = "misuse", misuse = true, message = "celers.nginx: no DSN configured" }
  end
  local fn = composite[op]
  if not fn and not ALLOWED[op] then
    return false, { code = "misuse", misuse = true, message = "celers.nginx: unknown call " .. tostring(op) }
  end
  local b, err = broker_for(cfg)
  if not b then return false, plain_error(err) end
  if queue and queue ~= b:queue() then b = b:with_queue(queue) end
  local res = pack(pcall(fn or b[op], b, ...))
  if not res[1] then
    return false, { code = "misuse", misuse = true, message = tostring(res[2]) }
  end
  if res[2] == nil and res[3] ~= nil then
    local code = type(res[3]) == "table" and res[3].code
    if code == "connect" or code == "lost" or code == "timeout" then drop_broker(cfg) end
    return false, plain_error(res[3])
  end
  return true, unpack(res, 2, res.n)
end

-- -------------------------------------------------------------- event loop side

local semaphores = {} -- pool name -> semaphore (per nginx worker process)

local function semaphore_for(pool, threads)
  local s = semaphores[pool]
  if not s then
    local semaphore = require "ngx.semaphore"
    s = assert(semaphore.new(threads))
    semaphores[pool] = s
  end
  return s
end

local Client = {}
Client.__index = Client

local NEW_OPTIONS = { dsn = true, pool = true, threads = true, queue = true, wait = true,
                      connect_timeout = true, read_timeout = true, write_timeout = true }

--- A client for one queue. opts: dsn (default $CELERS_DSN), pool ("celers": the name in
-- `thread_pool`), threads (4: that pool's threads), queue ("default"), wait (2 s for a free
-- thread), connect_timeout (2), read_timeout (3), write_timeout (3).
function M.new(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("celers.nginx.new: 'opts' must be a table", 2) end
  for k in pairs(opts) do
    if not NEW_OPTIONS[k] then error("celers.nginx.new: unknown option '" .. tostring(k) .. "'", 2) end
  end
  local d = M.DEFAULTS
  local dsn = opts.dsn or os.getenv("CELERS_DSN")
  if type(dsn) ~= "string" or dsn == "" then
    error("celers.nginx.new: 'dsn' must be a DSN string (or set CELERS_DSN and `env CELERS_DSN;`)", 2)
  end
  local cfg = { dsn = dsn, connect_timeout = opts.connect_timeout or d.connect_timeout,
                read_timeout = opts.read_timeout or d.read_timeout,
                write_timeout = opts.write_timeout or d.write_timeout }
  for _, k in ipairs { "connect_timeout", "read_timeout", "write_timeout" } do
    if type(cfg[k]) ~= "number" or cfg[k] < 1 or cfg[k] % 1 ~= 0 then
      error(("celers.nginx.new: '%s' must be a whole number of seconds >= 1"):format(k), 2)
    end
  end
  cfg.key = ("%s|%d|%d|%d"):format(dsn, cfg.connect_timeout, cfg.read_timeout, cfg.write_timeout)
  local threads = opts.threads or d.threads
  if type(threads) ~= "number" or threads < 1 or threads % 1 ~= 0 then
    error("celers.nginx.new: 'threads' must be a positive integer", 2)
  end
  local wait = opts.wait or d.wait
  if type(wait) ~= "number" or wait < 0 then error("celers.nginx.new: 'wait' must be >= 0", 2) end
  local queue = opts.queue or d.queue
  if type(queue) ~= "string" or queue == "" then error("celers.nginx.new: 'queue' must be a non-empty string", 2) end
  local pool = opts.pool or d.pool
  return setmetatable({ cfg = cfg, pool = pool, threads = threads, wait = wait, queue_name = queue,
                        sema = semaphore_for(pool, threads) }, Client)
end

--- The same client for another queue (same pool, connections and limits).
function Client:with_queue(queue)
  if type(queue) ~= "string" or queue == "" then error("with_queue: 'queue' must be a non-empty string", 2) end
  local c = setmetatable({}, Client)
  for k, v in pairs(self) do c[k] = v end
  c.queue_name = queue
  return c
end

function Client:queue() return self.queue_name end

--- Run broker method (or composite call) `op` in the pool. Returns what the method returns,
-- or nil and an error table: the broker's codes (timeout, connect, lost, ...), "busy" when no
-- pool thread was free within `wait` seconds, "thread" when nginx could not run the call.
-- A misuse (wrong argument) raises, as the broker's own methods do.
function Client:call(op, ...)
  local ok = self.sema:wait(self.wait)
  if not ok then
    return nil, new_error("busy", ("no free thread in pool '%s' within %gs"):format(self.pool, self.wait), true)
  end
  local r = pack(pcall(ngx.run_worker_thread, self.pool, "celers.nginx", "thread_call",
                       self.cfg, self.queue_name, op, ...))
  self.sema:post(1)
  -- lua-nginx-module 0.10.23 leaves this coroutine's cleanup hook pointing at the finished
  -- (freed) thread task; a zero sleep installs and then clears its own hook, so an abort of
  -- this request later can never call the stale one.
  ngx.sleep(0)
  if not r[1] then return nil, new_error("thread", tostring(r[2]), true) end
  if not r[2] then return nil, new_error("thread", tostring(r[3]), true) end
  if not r[3] then
    local e = r[4] or {}
    if e.misuse then error(e.message, 2) end
    return nil, setmetatable(e, Error)
  end
  return unpack(r, 4, r.n)
end

-- The broker's own method names, run in the pool.
for name in pairs(ALLOWED) do
  Client[name] = function(self, ...) return self:call(name, ...) end
end
Client.statistics = Client.get_statistics

-- -------------------------------------------------------------- HTTP helpers

local cjson
local function json()
  if not cjson then
    cjson = require("cjson").new()
    cjson.encode_sparse_array(true)
    if cjson.encode_empty_table_as_object then cjson.encode_empty_table_as_object(false) end
  end
  return cjson
end

local function reply(status, body, ctype)
  ngx.status = status
  ngx.header["Content-Type"] = ctype or "application/json"
  ngx.header["Cache-Control"] = "no-store"
  ngx.header["X-Content-Type-Options"] = "nosniff"
  if type(body) ~= "string" then body = json().encode(body) end
  ngx.print(body)
  return ngx.exit(status)
end
--- Send `body` (a string, or a table encoded as JSON) with `status` and safe headers, and end
-- the request (ngx.exit).
-- @function reply
M.reply = reply

local function error_body(err)
  return { error = { code = err.code, message = err.message } }
end

-- Status for a failed broker call: the database or the pool is unavailable.
local function fail(err)
  return reply(503, error_body(err))
end

--- /health: 200 {"status":"ok", ...} when the database answers, else 503 with the error.
-- The check runs in the pool like every other call.
function M.serve_health(client)
  local h, err = client:call("health")
  if not h then return reply(503, { status = "unavailable", error = error_body(err).error }) end
  return reply(h.healthy and 200 or 503, { status = h.healthy and "ok" or "unhealthy",
    latency_ms = h.latency_ms, server_version = h.server_version, pending = h.pending,
    processing = h.processing, dlq = h.dlq, connection_id = h.connection_id })
end

--- /metrics: Prometheus text (celers.metrics) with every queue's gauges from the database.
function M.serve_metrics(client)
  local overview, err = client:call("overview")
  if not overview then
    return reply(503, "# celers: " .. tostring(err.code) .. "\n", "text/plain; version=0.0.4")
  end
  local metrics = require "celers.metrics"
  for _, q in ipairs(overview) do metrics.update_from_statistics(q.queue, q.counts) end
  return reply(200, metrics.render(), "text/plain; version=0.0.4")
end

-- -------------------------------------------------------------- credentials

-- Equal strings, in time that depends only on the digest length: both sides are hashed first.
local function same_secret(a, b)
  local x, y = ngx.sha1_bin(a), ngx.sha1_bin(b)
  local diff = 0
  for i = 1, #x do
    local c = x:byte(i) - y:byte(i)
    diff = diff + c * c
  end
  return diff == 0
end
--- Compare two secrets in time that does not depend on where they differ.
-- @function same_secret
M.same_secret = same_secret

local function authorized(opts)
  local h = ngx.var.http_authorization
  if not h then return false end
  local token = h:match("^Bearer%s+(%S+)%s*$")
  if token and opts.token then return same_secret(token, opts.token) end
  local basic = h:match("^Basic%s+(%S+)%s*$")
  if basic and opts.basic then
    local decoded = ngx.decode_base64(basic)
    return decoded ~= nil and same_secret(decoded, opts.basic)
  end
  return false
end

local CSRF_TTL = 12 * 3600

local function csrf_secret(opts)
  return opts.csrf_secret or ngx.sha1_bin("celers-csrf:" .. (opts.token or "") .. ":" .. (opts.basic or ""))
end

local function csrf_token(opts)
  local t = tostring(ngx.time())
  return t .. "." .. ngx.encode_base64(ngx.hmac_sha1(csrf_secret(opts), t))
end

local function csrf_ok(opts, token)
  if type(token) ~= "string" then return false end
  local t, mac = token:match("^(%d+)%.(%S+)$")
  if not t or math.abs(ngx.time() - tonumber(t)) > CSRF_TTL then return false end
  return same_secret(mac, ngx.encode_base64(ngx.hmac_sha1(csrf_secret(opts), t)))
end

-- -------------------------------------------------------------- the dashboard's JSON API

local STATES = { pending = true, scheduled = true, processing = true, completed = true,
                 failed = true, cancelled = true }

local function bad(msg) return reply(400, { error = { code = "bad_request", message = msg } }) end

local function name_arg(v, what)
  if type(v) ~= "string" or v == "" or #v > 255 or v:find("%z") then
    return nil, ("'%s' must be a non-empty string of at most 255 bytes"):format(what)
  end
  return v
end

local function int_arg(v, what, lo, hi, dflt)
  if v == nil or v == "" then return dflt end
  local n = tonumber(v)
  if not n or n % 1 ~= 0 or n < lo or n > hi then
    return nil, ("'%s' must be an integer from %d to %d"):format(what, lo, hi)
  end
  return n
end

-- A task for the page: the stored bytes (body) and their type, not the decoded copy.
local function slim(task)
  if type(task) ~= "table" then return task end
  task.payload = nil
  return task
end

local function throughput_series(rows, minutes)
  local now = ngx.time()
  local last = now - now % 60
  local first = last - (minutes - 1) * 60
  local by = {}
  for _, r in ipairs(rows) do
    local e = by[r.minute]
    if not e then
      e = { enqueued = 0, completed = 0, failed = 0 }
      by[r.minute] = e
    end
    e[r.kind] = (e[r.kind] or 0) + r.count
  end
  local out = {}
  for m = first, last, 60 do
    local e = by[m] or {}
    out[#out + 1] = { minute = m, enqueued = e.enqueued or 0, completed = e.completed or 0,
                      failed = e.failed or 0 }
  end
  return out
end

local GET = {}
local POST = {}

function GET.session(_, _, _, opts)
  local can = opts.token ~= nil or opts.basic ~= nil
  return { actions = can, authorized = can and authorized(opts) or false,
           csrf = can and csrf_token(opts) or false, time = ngx.time() }
end

function GET.overview(c)
  local queues, err = c:call("overview")
  if not queues then return nil, err end
  return { queues = queues, time = ngx.time() }
end

function GET.throughput(c, _, args)
  local minutes, e = int_arg(args.minutes, "minutes", 1, 1440, 60)
  if not minutes then return bad(e) end
  local rows, err = c:call("throughput", minutes)
  if not rows then return nil, err end
  return { minutes = minutes, series = throughput_series(rows, minutes), source = "rows" }
end

function GET.tasks(c, _, args)
  local state = args.state
  if state == "" or state == "all" then state = nil end
  if state ~= nil and not STATES[state] then
    return bad("'state' must be one of pending, scheduled, processing, completed, failed, cancelled")
  end
  local limit, e = int_arg(args.limit, "limit", 1, 500, 50)
  if not limit then return bad(e) end
  local after = args.after
  if after == "" then after = nil end
  if after ~= nil and not name_arg(after, "after") then return bad("'after' must be a task id") end
  local tasks, err = c:call("list_tasks", { state = state, after_id = after, limit = limit })
  if not tasks then return nil, err end
  for _, t in ipairs(tasks) do slim(t) end
  return { tasks = tasks, next = #tasks == limit and tasks[#tasks].id or false }
end

function GET.task(c, _, args)
  local id, e = name_arg(args.id, "id")
  if not id then return bad(e) end
  local d, err = c:call("task_detail", id)
  if not d then return nil, err end
  slim(d.task)
  return d
end

function GET.dlq(c, _, args)
  local limit, e = int_arg(args.limit, "limit", 1, 500, 50)
  if not limit then return bad(e) end
  local offset
  offset, e = int_arg(args.offset, "offset", 0, 1e9, 0)
  if not offset then return bad(e) end
  local items, err = c:call("list_dlq", { limit = limit, offset = offset })
  if not items then return nil, err end
  for _, t in ipairs(items) do slim(t) end
  return { items = items, next = #items == limit and offset + limit or false }
end

function GET.workers(c, _, args)
  local stale, e = int_arg(args.stale_after, "stale_after", 1, 86400, 60)
  if not stale then return bad(e) end
  local ws, err = c:call("all_workers", stale)
  if not ws then return nil, err end
  for _, w in ipairs(ws) do w.stale = w.age ~= nil and w.age > stale end
  return { workers = ws, stale_after = stale }
end

function GET.recurring(c)
  local rs, err = c:call("list_recurring")
  if not rs then return nil, err end
  -- the next run is estimated from the last interval seen: the cron expressions live in
  -- the scheduler's configuration, not in the database
  for _, r in ipairs(rs) do
    if r.previous_run then
      r.interval = r.last_run - r.previous_run
      r.next_run = r.last_run + r.interval
    end
  end
  return { schedules = rs }
end

local function need_id(body)
  return name_arg(body.id, "id")
end

function POST.pause(c) local ok, err = c:call("pause"); return ok and { paused = true } or nil, err end
function POST.resume(c) local ok, err = c:call("resume"); return ok and { paused = false } or nil, err end

local function by_id(method, field)
  return function(c, body)
    local id, e = need_id(body)
    if not id then return bad(e) end
    local ok, err = c:call(method, id)
    if ok == nil then return nil, err end
    if not ok then return reply(404, { error = { code = "not_found", message = "no such " .. field } }) end
    return { ok = true, result = ok }
  end
end
POST.cancel = by_id("cancel", "task in a cancellable state")
POST.retry = by_id("retry_now", "waiting task (scheduled, failed or cancelled)")
POST.dlq_requeue = by_id("requeue_from_dlq", "dead letter")
POST.dlq_purge = by_id("purge_dlq", "dead letter")

function POST.dlq_requeue_all(c)
  local n, err = c:call("requeue_all_dlq")
  if not n then return nil, err end
  return { requeued = n }
end

function POST.dlq_purge_all(c)
  local n, err = c:call("purge_all_dlq")
  if not n then return nil, err end
  return { purged = n }
end

local API_OPTIONS = { prefix = true, token = true, basic = true, csrf_secret = true }

--- The dashboard's JSON API under opts.prefix (default "/api/"): GET session, overview,
-- throughput, tasks, task, dlq, workers, recurring; POST pause, resume, cancel, retry,
-- dlq_requeue, dlq_requeue_all, dlq_purge, dlq_purge_all. Every call but session takes
-- ?queue= (default: the client's queue). Read-only unless opts.token (Bearer) or opts.basic
-- ("user:password", HTTP basic) is set; POSTs then need that credential, a JSON body and the
-- X-CSRF-Token header from GET session.
function M.serve_api(client, opts)
  opts = opts or {}
  for k in pairs(opts) do
    if not API_OPTIONS[k] then error("celers.nginx.serve_api: unknown option '" .. tostring(k) .. "'", 2) end
  end
  if opts.token == "" then opts.token = nil end
  if opts.basic == "" then opts.basic = nil end
  local prefix = opts.prefix or "/api/"
  local uri = ngx.var.uri
  if uri:sub(1, #prefix) ~= prefix then return reply(404, { error = { code = "not_found", message = "not here" } }) end
  local name = uri:sub(#prefix + 1)
  local method = ngx.req.get_method()
  local args = ngx.req.get_uri_args(20)
  for k, v in pairs(args) do
    if type(v) ~= "string" then
      if type(v) == "table" then return bad("'" .. tostring(k) .. "' given more than once") end
      args[k] = nil
    end
  end
  local fn
  if method == "GET" or method == "HEAD" then
    fn = GET[name]
    if not fn and POST[name] then
      ngx.header["Allow"] = "POST"
      return reply(405, { error = { code = "method", message = "use POST" } })
    end
  elseif method == "POST" then
    fn = POST[name]
    if not fn and GET[name] then
      ngx.header["Allow"] = "GET"
      return reply(405, { error = { code = "method", message = "use GET" } })
    end
  else
    return reply(405, { error = { code = "method", message = "GET or POST only" } })
  end
  if not fn then return reply(404, { error = { code = "not_found", message = "no such API call" } }) end

  local body = {}
  if method == "POST" then
    if not (opts.token or opts.basic) then
      return reply(403, { error = { code = "read_only", message = "read-only: no credential configured" } })
    end
    if not authorized(opts) then
      ngx.header["WWW-Authenticate"] = 'Basic realm="celers"'
      return reply(401, { error = { code = "unauthorized", message = "credential required" } })
    end
    if not csrf_ok(opts, ngx.var.http_x_csrf_token) then
      return reply(403, { error = { code = "csrf", message = "missing or stale X-CSRF-Token" } })
    end
    if not (ngx.var.content_type or ""):find("^application/json") then
      return bad("the body must be application/json")
    end
    ngx.req.read_body()
    local raw = ngx.req.get_body_data() or "{}"
    local ok, v = pcall(json().decode, raw)
    if not ok or type(v) ~= "table" then return bad("the body must be a JSON object") end
    body = v
  end

  local queue = body.queue or args.queue
  local c = client
  if queue ~= nil then
    local q, e = name_arg(queue, "queue")
    if not q then return bad(e) end
    c = client:with_queue(q)
  end
  local ok, res, err = pcall(fn, c, body, args, opts)
  if not ok then
    ngx.log(ngx.ERR, "celers.nginx: ", tostring(res))
    return bad(tostring(res):gsub("^.-celers: ", ""))
  end
  if ngx.headers_sent then return end
  if res == nil then return fail(err) end
  if type(res) == "table" and opts and name == "session" then res.prefix = prefix end
  return reply(200, res)
end

--- Headers for the dashboard's pages (header_filter_by_lua or before serving them): scripts
-- and styles from this origin only, no framing, no MIME sniffing.
function M.security_headers()
  ngx.header["Content-Security-Policy"] =
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'"
  ngx.header["X-Content-Type-Options"] = "nosniff"
  ngx.header["Referrer-Policy"] = "no-referrer"
end

return M
