--- celers.bulk: export tasks to JSON Lines and import them back.
--
--   local bulk = require "celers.bulk"
--   bulk.export(broker, "tasks.jsonl", { state = "pending", dlq = true, results = true })
--   bulk.import(broker, "tasks.jsonl", { on_error = "skip", progress = function(p) end })
--
-- Format: one JSON object per line. The first line is a header
--   {"kind":"header","format":"celers-jsonl","version":1,...}
-- then lines of kind "task", "dlq" (dead-letter entries) and "result". A payload travels as
-- its stored bytes: "body" (a JSON string) when they are valid UTF-8, else "body_base64";
-- "payload_type" ("raw"/"json") is kept. Times are Unix seconds written as strings with six
-- decimals (the format's version 1 chose strings; microseconds survive either way).
--
-- Import goes through broker:enqueue_batch(list, { skip_existing = true }) in batches: ids,
-- names, queues, priorities, max_retries, timeouts, scheduled_at, metadata, idempotency keys
-- and the payload bytes are kept; rows whose id exists already are left alone, so an import
-- can be re-run. With opts.queue (the CLI's --into-queue), a task from another queue is a
-- copy: it gets the id copy_id(id, queue), so copying a queue works while the source rows
-- still exist, and a re-run skips the copies it made. Metadata and JSON results go through
-- celers.json, so their numbers, [] and {} come back exactly. Every imported task is pending
-- (its retry count starts over, created_at is the import time). Dead-letter entries are
-- restored as pending tasks (with their original task id, or its copy id) only with
-- requeue_dlq = true; results are stored again with store_result.

local celers = require "celers"
local core = require "celers.core"

local M = {}

-- The exact codec (docs/json.md): metadata numbers, [] and {} come back as they went out.
local json = celers.json

M.FORMAT = "celers-jsonl"
M.VERSION = 1

-- -------------------------------------------------------------- base64, UTF-8 and copy ids

--- Encode bytes as base64 (standard alphabet, with padding); in C (celers.core).
-- @function base64_encode
M.base64_encode = core.base64_encode
--- Decode base64: the bytes, or nil and a message when the text is not base64; in C.
-- @function base64_decode
M.base64_decode = core.base64_decode
--- Is s valid UTF-8 (no overlongs, no surrogates, at most U+10FFFF)?
M.valid_utf8 = core.utf8_valid

-- 32 bits of (s), one of three independent polynomial hashes; exact on Lua 5.4 and LuaJIT
-- (every product stays below 2^53).
local function hash32(s, mult, seed)
  local h = seed
  for i = 1, #s do h = (h * mult + s:byte(i)) % 4294967291 end
  return h
end

--- The id of the copy of task `id` in queue `queue`: the source id's 48-bit time prefix (so
-- copies keep their order) and version-7 random bits taken from a hash of (id, queue), so
-- an import re-run finds the copies it made before and skips them.
function M.copy_id(id, queue)
  local s = id .. "\0" .. queue
  local a, b, c = hash32(s, 257, 7), hash32(s, 65599, 11), hash32(s, 131, 13)
  local hex = ("%08x%08x%08x"):format(a, b, c)
  local variant = ("89ab"):sub(a % 4 + 1, a % 4 + 1)
  return id:sub(1, 8) .. "-" .. id:sub(10, 13) .. "-7" .. hex:sub(1, 3) .. "-" .. variant
    .. hex:sub(4, 6) .. "-" .. hex:sub(7, 18)
end

local function put_body(line, bytes)
  if M.valid_utf8(bytes) then line.body = bytes else line.body_base64 = M.base64_encode(bytes) end
end

local function get_body(obj)
  if type(obj.body) == "string" then return obj.body end
  if type(obj.body_base64) == "string" then return M.base64_decode(obj.body_base64) end
  if obj.body == nil and obj.body_base64 == nil then return nil, "no 'body' or 'body_base64'" end
  return nil, "'body' must be a string"
end

local function time_text(t)
  if t == nil then return nil end
  return ("%.6f"):format(t)
end

---------------------------------------------------------------- export

local EXPORT_OPTIONS = { state = true, queues = true, dlq = true, results = true, batch = true,
                         progress = true, tasks = true }

local function open_out(dest)
  if type(dest) == "string" then
    local f, err = io.open(dest, "wb")
    if not f then return nil, err end
    return f, true
  end
  if (type(dest) == "userdata" or type(dest) == "table") and dest.write then return dest, false end
  error("bulk: 'dest' must be a file name or an open file", 3)
end

local function task_line(t)
  local line = {
    kind = "task", id = t.id, name = t.name, queue = t.queue, state = t.state,
    priority = t.priority, max_retries = t.max_retries, retry_count = t.retry_count,
    timeout = t.timeout, payload_type = t.payload_type or "raw",
    scheduled_at = time_text(t.scheduled_at), created_at = time_text(t.created_at),
    metadata = t.metadata, idempotency_key = t.idempotency_key, error = t.error,
  }
  put_body(line, t.body or "")
  return line
end

local function dlq_line(d)
  local line = {
    kind = "dlq", id = d.id, task_id = d.task_id, name = d.name, queue = d.queue,
    priority = d.priority, max_retries = d.max_retries, retry_count = d.retry_count,
    payload_type = d.payload_type or "raw", error = d.error, metadata = d.metadata,
    failed_at = time_text(d.failed_at), created_at = time_text(d.created_at),
  }
  put_body(line, d.body or "")
  return line
end

local function result_line(r)
  local line = {
    kind = "result", task_id = r.task_id, task_name = r.task_name, status = r.status,
    result_type = r.result_type, error = r.error,
  }
  if r.body then put_body(line, r.body) end
  return line
end

--- Export tasks of the broker's queue (or opts.queues) to `dest` (file name or open file).
-- opts: state (a state or a list of states; default all), queues (list of queue names),
-- dlq (also the dead-letter entries), results (also each exported task's result),
-- batch (rows per page, 1000), progress(info) with info = {tasks=, dlq=, results=, total=}.
-- Returns counts {tasks=, dlq=, results=} or nil, err.
function M.export(broker, dest, opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("bulk.export: 'opts' must be a table", 2) end
  for k in pairs(opts) do
    if not EXPORT_OPTIONS[k] then error(("bulk.export: unknown option '%s'"):format(tostring(k)), 2) end
  end
  if not broker.list_tasks then error("bulk.export: the broker has no list_tasks", 2) end
  local states = opts.state
  if type(states) == "string" then states = { states } end
  if states ~= nil and type(states) ~= "table" then
    error("bulk.export: 'state' must be a state name or a list of them", 2)
  end
  local queues = opts.queues or { broker:queue() }
  local batch = opts.batch or 1000
  local progress = opts.progress
  local out, owned = open_out(dest)
  if not out then return nil, owned end
  local counts = { tasks = 0, dlq = 0, results = 0 }
  local function fail(err)
    if owned then out:close() end
    return nil, err
  end
  local total
  if progress and broker.get_statistics then
    total = 0
    for _, qname in ipairs(queues) do
      local st = broker:with_queue(qname):get_statistics()
      if st then
        if states then
          for _, s in ipairs(states) do total = total + (st[s] or 0) end
        else
          total = total + (st.total or 0)
        end
      end
    end
  end
  local function report()
    if progress then
      progress { tasks = counts.tasks, dlq = counts.dlq, results = counts.results, total = total }
    end
  end
  out:write(json.encode { kind = "header", format = M.FORMAT, version = M.VERSION,
                          exported_at = time_text(require("celers.core").time()),
                          queues = queues, states = states }, "\n")
  for _, qname in ipairs(queues) do
    local b = qname == broker:queue() and broker or broker:with_queue(qname)
    for _, state in ipairs(states or { false }) do
      local after
      while true do
        local page, err = b:list_tasks { state = state or nil, limit = batch, after_id = after }
        if not page then return fail(err) end
        if #page == 0 then break end
        local lines = {}
        for i, t in ipairs(page) do lines[i] = json.encode(task_line(t)) end
        out:write(table.concat(lines, "\n"), "\n")
        counts.tasks = counts.tasks + #page
        if opts.results and b.get_result then
          for _, t in ipairs(page) do
            local r = b:get_result(t.id)
            if r then
              out:write(json.encode(result_line(r)), "\n")
              counts.results = counts.results + 1
            end
          end
        end
        after = page[#page].id
        report()
        if #page < batch then break end
      end
    end
    if opts.dlq then
      if not b.list_dlq then return fail(celers.error("unsupported", "the broker has no list_dlq")) end
      local offset = 0
      while true do
        local page, err = b:list_dlq { limit = batch, offset = offset }
        if not page then return fail(err) end
        for _, d in ipairs(page) do out:write(json.encode(dlq_line(d)), "\n") end
        counts.dlq = counts.dlq + #page
        offset = offset + #page
        report()
        if #page < batch then break end
      end
    end
  end
  if owned then out:close() else out:flush() end
  return counts
end

---------------------------------------------------------------- import

local IMPORT_OPTIONS = { batch = true, on_error = true, progress = true, requeue_dlq = true,
                         results = true, queue = true, max_errors = true }

local floor = math.floor

local function is_int(v) return type(v) == "number" and v == floor(v) end

-- A line object -> a spec for enqueue_batch, or nil and what is wrong.
local function task_spec(obj, as_dlq, queue)
  local id = as_dlq and obj.task_id or obj.id
  if type(id) ~= "string" or #id ~= 36 then return nil, "'id' must be a 36-character UUID string" end
  if queue and obj.queue ~= queue then id = M.copy_id(id, queue) end
  if type(obj.name) ~= "string" or obj.name == "" then return nil, "'name' must be a non-empty string" end
  local body, berr = get_body(obj)
  if not body then return nil, berr end
  local ptype = obj.payload_type or "raw"
  if ptype ~= "raw" and ptype ~= "json" then return nil, "'payload_type' must be \"raw\" or \"json\"" end
  local spec = { id = id, name = obj.name, payload = body, payload_type = ptype }
  if obj.priority ~= nil then
    if not is_int(obj.priority) then return nil, "'priority' must be an integer" end
    spec.priority = floor(obj.priority) -- an integer under 5.4 even if written as 2.0
  end
  if obj.max_retries ~= nil then
    if not is_int(obj.max_retries) or obj.max_retries < 0 then
      return nil, "'max_retries' must be a non-negative integer"
    end
    spec.max_retries = floor(obj.max_retries)
  end
  if obj.timeout ~= nil and obj.timeout ~= json.null then
    if type(obj.timeout) ~= "number" or obj.timeout <= 0 then return nil, "'timeout' must be positive" end
    spec.timeout = obj.timeout
  end
  local q = queue or obj.queue
  if q ~= nil then
    if type(q) ~= "string" or q == "" then return nil, "'queue' must be a non-empty string" end
    spec.queue = q
  end
  if not as_dlq and obj.scheduled_at ~= nil then
    local t = tonumber(obj.scheduled_at)
    if not t then return nil, "'scheduled_at' must be a number of Unix seconds" end
    -- +0.25 us: the server truncates the double to microseconds; this lands mid-microsecond
    spec.eta = t + 2.5e-7
  end
  if obj.metadata ~= nil and obj.metadata ~= json.null then
    if type(obj.metadata) == "string" then
      -- JSON text this Lua could not decode on export (LuaJIT: an integer beyond 2^53),
      -- stored back as that very text
      local ok, err = pcall(json.decode, obj.metadata)
      if not ok and not tostring(err):find("cannot be held exactly", 1, true) then
        return nil, "'metadata' is not JSON: " .. tostring(err):gsub("^celers: ", "")
      end
    elseif type(obj.metadata) ~= "table" then
      return nil, "'metadata' must be a JSON object"
    end
    spec.metadata = obj.metadata
  end
  if not as_dlq and obj.idempotency_key ~= nil and obj.idempotency_key ~= json.null then
    if type(obj.idempotency_key) ~= "string" then return nil, "'idempotency_key' must be a string" end
    spec.idempotency_key = obj.idempotency_key
  end
  return spec
end

local function open_in(src)
  if type(src) == "string" then
    local f, err = io.open(src, "rb")
    if not f then return nil, err end
    local size = f:seek("end")
    f:seek("set", 0)
    return f, true, size
  end
  if (type(src) == "userdata" or type(src) == "table") and src.lines then return src, false end
  error("bulk: 'src' must be a file name or an open file", 3)
end

--- Import a JSON Lines file (file name or open file) written by export.
-- opts: batch (500 tasks per enqueue_batch), on_error ("skip" (default): report bad lines
-- and go on; "abort": stop at the first bad line, after importing every line before it),
-- progress(info) with info = {lines=, bytes=, total_bytes=, inserted=, existing=, bad=},
-- requeue_dlq (restore dead-letter entries as pending tasks), results (store result lines;
-- default true), queue (copy every task into this queue: tasks from other queues get the id
-- copy_id(id, queue), and their results follow them), max_errors (bad lines kept in the
-- report, 100).
-- Returns a report {lines=, tasks=, inserted=, existing=, bad=, errors={ {line=, error=} },
-- dlq=, dlq_skipped=, results=, copied=}; or nil, err, report when aborted or the database
-- failed. copied counts the tasks given a copy id.
function M.import(broker, src, opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("bulk.import: 'opts' must be a table", 2) end
  for k in pairs(opts) do
    if not IMPORT_OPTIONS[k] then error(("bulk.import: unknown option '%s'"):format(tostring(k)), 2) end
  end
  local on_error = opts.on_error or "skip"
  if on_error ~= "skip" and on_error ~= "abort" then
    error("bulk.import: 'on_error' must be \"skip\" or \"abort\"", 2)
  end
  local batch = opts.batch or 500
  if not is_int(batch) or batch < 1 then error("bulk.import: 'batch' must be a positive integer", 2) end
  local max_errors = opts.max_errors or 100
  local progress = opts.progress
  local inp, owned, size = open_in(src)
  if not inp then return nil, owned end
  local rep = { lines = 0, tasks = 0, inserted = 0, existing = 0, bad = 0, errors = {},
                dlq = 0, dlq_skipped = 0, results = 0, copied = 0 }
  local bytes = 0
  local pending, results = {}, {}
  local copies = {} -- source id -> copy id, for the result lines that follow their task

  local function flush()
    if #pending > 0 then
      local ids, inserted = broker:enqueue_batch(pending, { skip_existing = true })
      if not ids then return nil, inserted end
      rep.inserted = rep.inserted + inserted
      rep.existing = rep.existing + (#pending - inserted)
      pending = {}
    end
    for _, r in ipairs(results) do
      local ok, err = broker:store_result(r.task_id, r.spec)
      if not ok then return nil, err end
      rep.results = rep.results + 1
    end
    results = {}
    if progress then
      progress { lines = rep.lines, bytes = bytes, total_bytes = size, inserted = rep.inserted,
                 existing = rep.existing, bad = rep.bad }
    end
    return true
  end

  local function bad(n, why)
    rep.bad = rep.bad + 1
    if #rep.errors < max_errors then rep.errors[#rep.errors + 1] = { line = n, error = why } end
    return ("line %d: %s"):format(n, why)
  end

  local function finish(ok, err)
    if owned then inp:close() end
    if ok then return rep end
    return nil, err, rep
  end

  local n = 0
  for text in inp:lines() do
    n = n + 1
    rep.lines = n
    bytes = bytes + #text + 1
    local problem
    if text:find("^%s*$") then
      rep.lines = n -- blank lines are ignored
    else
      local okj, obj = pcall(json.decode, text)
      if not okj then
        problem = "not JSON: " .. tostring(obj):gsub("^.-: ", "")
      elseif type(obj) ~= "table" then
        problem = "not a JSON object"
      elseif obj.kind == "header" then
        if obj.format ~= M.FORMAT or type(obj.version) ~= "number" or obj.version > M.VERSION then
          problem = ("unsupported header (format %s version %s)"):format(tostring(obj.format), tostring(obj.version))
        end
      elseif obj.kind == "task" or obj.kind == nil or (obj.kind == "dlq" and opts.requeue_dlq) then
        local spec, why = task_spec(obj, obj.kind == "dlq", opts.queue)
        if spec then
          if spec.id ~= (obj.kind == "dlq" and obj.task_id or obj.id) then
            rep.copied = rep.copied + 1
            if opts.results ~= false then copies[obj.kind == "dlq" and obj.task_id or obj.id] = spec.id end
          end
          pending[#pending + 1] = spec
          rep.tasks = rep.tasks + 1
          if obj.kind == "dlq" then rep.dlq = rep.dlq + 1 end
        else
          problem = why
        end
      elseif obj.kind == "dlq" then
        rep.dlq_skipped = rep.dlq_skipped + 1
      elseif obj.kind == "result" then
        if opts.results ~= false then
          if type(obj.task_id) ~= "string" or obj.task_id == "" then
            problem = "'task_id' must be a string"
          elseif obj.status ~= "success" and obj.status ~= "failure" and obj.status ~= "pending" then
            problem = "'status' must be success, failure or pending"
          elseif not broker.store_result then
            problem = "the broker cannot store results"
          else
            local spec = { task_name = type(obj.task_name) == "string" and obj.task_name or "",
                           status = obj.status,
                           error = type(obj.error) == "string" and obj.error or nil }
            if obj.body ~= nil or obj.body_base64 ~= nil then
              local body, berr = get_body(obj)
              if not body then
                problem = berr
              elseif obj.result_type == "json" then
                local okr, v = pcall(json.decode, body)
                if not okr then
                  problem = "result: " .. tostring(v):gsub("^celers: ", "")
                elseif v ~= json.null then
                  spec.result = v
                else
                  spec.result = body
                end
              else
                spec.result = body
              end
            end
            if not problem then
              results[#results + 1] = { task_id = copies[obj.task_id] or obj.task_id, spec = spec }
            end
          end
        end
      else
        problem = ("unknown kind '%s'"):format(tostring(obj.kind))
      end
    end
    if problem then
      local msg = bad(n, problem)
      if on_error == "abort" then
        local ok, err = flush()
        if not ok then return finish(false, err) end
        return finish(false, celers.error("bad_line", msg))
      end
    end
    if #pending >= batch or #results >= batch then
      local ok, err = flush()
      if not ok then return finish(false, err) end
    end
  end
  local ok, err = flush()
  return finish(ok, err)
end

M.json = json

return M
