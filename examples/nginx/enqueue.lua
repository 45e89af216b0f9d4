-- content_by_lua handler: POST /enqueue/<task_name>, body = payload.
-- A JSON body (Content-Type: application/json) is enqueued as a JSON payload (the handler
-- gets a table); anything else as the raw string. Query arguments: priority, delay, queue.
-- Replies 201 {"id": "...", "queue": "..."}; 400 on bad input; 503 when the database fails.
--
-- Each nginx worker process keeps one connection, opened on its first request (after the
-- fork, so no connection is shared between workers). The calls are blocking: an enqueue
-- holds this worker for one INSERT round trip (about a millisecond on a local server).
-- luacheck: globals ngx
local celers = require "celers"

-- The chunk runs anew for every request: the connection lives in a table kept in
-- package.loaded, which lasts as long as the worker process.
local cache = package.loaded["celers.nginx_cache"]
if not cache then
  cache = {}
  package.loaded["celers.nginx_cache"] = cache
end
local broker = cache.broker

local function reply(status, body)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  ngx.say(celers.json.encode(body))
  return ngx.exit(status)
end

if ngx.req.get_method() ~= "POST" then
  ngx.header["Allow"] = "POST"
  return reply(405, { error = "use POST" })
end

if not broker then
  local err
  broker, err = celers.connect(os.getenv("CELERS_DSN"))
  if not broker then
    ngx.log(ngx.ERR, "celers connect: ", tostring(err))
    return reply(503, { error = "queue unavailable" })
  end
  cache.broker = broker
end

ngx.req.read_body()
local body = ngx.req.get_body_data() or ""
local payload = body
local ctype = ngx.var.content_type or ""
if ctype:find("application/json", 1, true) then
  local ok, v = pcall(celers.json.decode, body)
  if not ok or type(v) ~= "table" then return reply(400, { error = "body is not a JSON object" }) end
  payload = v
end

local args = ngx.req.get_uri_args()
local opts = {}
if args.priority then
  opts.priority = tonumber(args.priority)
  if not opts.priority or opts.priority % 1 ~= 0 then return reply(400, { error = "priority must be an integer" }) end
end
if args.delay then
  opts.delay = tonumber(args.delay)
  if not opts.delay or opts.delay < 0 then return reply(400, { error = "delay must be >= 0" }) end
end
local target = broker
if args.queue and args.queue ~= "" then target = broker:with_queue(args.queue) end

local id, err = target:enqueue(ngx.var.task_name, payload, opts)
if not id then
  ngx.log(ngx.ERR, "celers enqueue: ", tostring(err))
  if err.code == "lost" or err.code == "connect" then cache.broker = nil end
  return reply(503, { error = "enqueue failed", code = err.code })
end
return reply(201, { id = id, queue = target:queue() })
