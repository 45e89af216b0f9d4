-- content_by_lua handler: POST /enqueue/<task_name>, body = payload.
-- A JSON body (Content-Type: application/json) is enqueued as a JSON payload (the handler
-- gets a table); anything else as the raw string. Query arguments: priority, delay, queue.
-- Replies 201 {"id": "...", "queue": "..."}; 400 on bad input; 503 {"error": {"code": ...}}
-- when the database is slow or down (codes: timeout, connect, lost, busy, ...).
--
-- The INSERT runs in the nginx thread pool (celers.nginx, client made in init_worker_by_lua):
-- this worker keeps serving other requests while it waits.
-- luacheck: globals ngx
local cn = require "celers.nginx"
local cjson = require "cjson.safe"

local reply = cn.reply

if ngx.req.get_method() ~= "POST" then
  ngx.header["Allow"] = "POST"
  return reply(405, { error = "use POST" })
end

ngx.req.read_body()
local body = ngx.req.get_body_data() or ""
local payload = body
local ctype = ngx.var.content_type or ""
if ctype:find("application/json", 1, true) then
  local v = cjson.decode(body)
  if type(v) ~= "table" then return reply(400, { error = "body is not a JSON object" }) end
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
local client = cn.client
if type(args.queue) == "string" and args.queue ~= "" then client = client:with_queue(args.queue) end

local id, err = client:enqueue(ngx.var.task_name, payload, opts)
if not id then
  ngx.log(ngx.ERR, "celers enqueue: ", tostring(err))
  return reply(503, { error = { code = err.code, message = "enqueue failed" } })
end
return reply(201, { id = id, queue = client:queue() })
