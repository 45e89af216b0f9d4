--- celers.workflow: chains, groups, chords and batches of tasks whose dependencies live in
-- the database (celers_flows, celers_flow_nodes, celers_flow_edges), so a crash
-- at any point resumes.
--
--   local workflow = require "celers.workflow"
--   local wf = workflow.chain { { "fetch", { url = u } }, workflow.group { ... }, { "report", {} } }
--   local id = assert(wf:start(broker))
--
-- Builders return fragments (entry nodes, exit nodes) that compose: an element of a chain,
-- group, chord or batch is a task spec or another fragment. Starting a workflow inserts its
-- nodes and edges and enqueues the nodes without parents, in one transaction. Every node's
-- task id is chosen then, and its task carries metadata.workflow = { id =, node =, parents = }.
--
-- Advancing (a node finished: the worker calls succeeded/failed, resume finds the rest) locks
-- the workflow's row, moves the node from enqueued to its final state (a second call finds
-- it moved and does nothing), and counts it off its children: a child whose parents all
-- succeeded is enqueued, one whose parent failed is cancelled (and its own children after
-- it), all in the same transaction. So a callback is enqueued exactly once, however many
-- processes finish members at the same moment, and however often one is repeated.

local celers = require "celers"
local core = require "celers.core"

local json = celers.json
local workflow = {}

local Fragment = {}
Fragment.__index = Fragment

local TASK_OPTIONS = {
  priority = true, max_retries = true, timeout = true, queue = true, metadata = true, delay = true,
}
local STATES = { running = true, succeeded = true, failed = true, cancelled = true }
-- A MEDIUMBLOB holds this much; a larger payload cannot be stored, now or later.
local MAX_PAYLOAD = 16777215
local MAX_ERROR = 8000
-- Rows per INSERT when a workflow starts (and a byte budget for the node rows).
local NODE_CHUNK, EDGE_CHUNK, CHUNK_BYTES = 100, 500, 4 * 1024 * 1024

-- Misuse raises with the message alone, as the core does (no position: a builder's error is
-- found deep inside the composition that caused it).
local function raise(msg)
  error(msg, 0)
end

local function is_integer(v)
  return type(v) == "number" and v == math.floor(v) and v > -2 ^ 53 and v < 2 ^ 53
end

local function check_name(name, who, what)
  if type(name) ~= "string" then
    raise(("celers: %s: '%s' must be a string (got %s)"):format(who, what, type(name)))
  end
  if name == "" then raise(("celers: %s: '%s' must not be empty"):format(who, what)) end
  if name:find("\0", 1, true) then
    raise(("celers: %s: '%s' must not contain NUL bytes"):format(who, what))
  end
  -- VARCHAR(255) counts characters: count the bytes that start one
  if select(2, name:gsub("[^\128-\191]", "")) > 255 then
    raise(("celers: %s: '%s' is longer than 255 characters"):format(who, what))
  end
end

-- The options a node's task is enqueued with, checked now (the task of a later node is only
-- enqueued when its parents finish: a value refused then would stall the workflow).
local function check_options(opts, who)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    raise(("celers: %s: 'opts' must be a table (got %s)"):format(who, type(opts)))
  end
  local out = {}
  for k, v in pairs(opts) do
    if not TASK_OPTIONS[k] then
      raise(("celers: %s: unknown option '%s' (workflow tasks take priority, max_retries, timeout, "
        .. "queue, metadata, delay)"):format(who, tostring(k)))
    end
    out[k] = v
  end
  if out.priority ~= nil and not (is_integer(out.priority) and out.priority >= -2147483648
                                   and out.priority <= 2147483647) then
    raise(("celers: %s: 'priority' must be an integer within -2147483648..2147483647"):format(who))
  end
  if out.max_retries ~= nil and not (is_integer(out.max_retries) and out.max_retries >= 0
                                      and out.max_retries <= 2147483647) then
    raise(("celers: %s: 'max_retries' must be a non-negative integer"):format(who))
  end
  for _, k in ipairs { "timeout", "delay" } do
    local v = out[k]
    if v ~= nil and (type(v) ~= "number" or v ~= v or v == math.huge or v < 0 or (k == "timeout" and v == 0)) then
      raise(("celers: %s: '%s' must be a %s finite number of seconds"):format(who, k,
        k == "timeout" and "positive" or "non-negative"))
    end
  end
  if out.queue ~= nil then check_name(out.queue, who, "queue") end
  if out.metadata ~= nil then
    if type(out.metadata) ~= "table" then
      raise(("celers: %s: 'metadata' must be a table (got %s)"):format(who, type(out.metadata)))
    end
    if out.metadata.workflow ~= nil then
      raise(("celers: %s: 'metadata.workflow' is set by the workflow"):format(who))
    end
  end
  local ok, encoded = pcall(json.encode, out)
  if not ok then
    raise(("celers: %s: 'opts' cannot be encoded as JSON: %s"):format(who, tostring(encoded)))
  end
  return out, encoded
end

local function new_fragment(kind, nodes, edges, entries, exits)
  return setmetatable({ kind = kind, nodes = nodes, edges = edges, entries = entries, exits = exits },
    Fragment)
end

-- One task as a fragment of one node.
local function make_task(name, payload, opts, who)
  check_name(name, who, "name")
  local body, ptype
  if payload == nil then
    body, ptype = "", "raw"
  elseif type(payload) == "string" then
    body, ptype = payload, "raw"
  elseif type(payload) == "table" then
    local ok, encoded = pcall(json.encode, payload)
    if not ok then
      raise(("celers: %s: 'payload' cannot be encoded as JSON: %s"):format(who, tostring(encoded)))
    end
    body, ptype = encoded, "json"
  else
    raise(("celers: %s: 'payload' must be a string or a table (got %s)"):format(who, type(payload)))
  end
  local checked, encoded = check_options(opts, who)
  return new_fragment("task", {
    { name = name, body = body, payload_type = ptype, options = encoded or "{}",
      queue = checked.queue, trigger = "all_succeeded" },
  }, {}, { 1 }, { 1 })
end

--- A task of a workflow: `workflow.task(name, payload, opts)`. payload is a string or a
-- table (as enqueue's); opts: priority, max_retries, timeout, queue, metadata, delay (seconds
-- after the node becomes ready). Wrong arguments raise.
function workflow.task(name, payload, opts)
  return make_task(name, payload, opts, "workflow.task")
end

-- A task spec or fragment as a fragment: { "name", payload, opts }, { name =, payload =,
-- other keys are options }, workflow.task(...) or any builder's result.
local function as_fragment(x, who, what)
  if getmetatable(x) == Fragment then return x end
  if type(x) ~= "table" then
    raise(("celers: %s: %s must be a task spec or a workflow (got %s)"):format(who, what, type(x)))
  end
  if x[1] ~= nil then
    if x.name ~= nil then raise(("celers: %s: %s: give the name as [1] or as name=, not both"):format(who, what)) end
    for k in pairs(x) do
      if not (k == 1 or k == 2 or k == 3) then
        raise(("celers: %s: %s: a spec { name, payload, opts } has no key '%s'"):format(who, what, tostring(k)))
      end
    end
    return make_task(x[1], x[2], x[3], who .. ": " .. what)
  end
  if x.name == nil then
    raise(("celers: %s: %s must be a task spec ({ name, payload, opts } or { name =, payload = }) "
      .. "or a workflow"):format(who, what))
  end
  local opts = {}
  for k, v in pairs(x) do
    if k ~= "name" and k ~= "payload" then opts[k] = v end
  end
  return make_task(x.name, x.payload, opts, who .. ": " .. what)
end

-- The fragments of a builder's list argument (at least one).
local function members(list, who, skip)
  if type(list) ~= "table" or getmetatable(list) == Fragment then
    raise(("celers: %s: 'members' must be a list of task specs or workflows (got %s)"):format(who,
      getmetatable(list) == Fragment and "a workflow" or type(list)))
  end
  local n = #list
  for k in pairs(list) do
    if not (skip and skip[k]) and not (is_integer(k) and k >= 1 and k <= n) then
      raise(("celers: %s: 'members' must be a list (unexpected key '%s')"):format(who, tostring(k)))
    end
  end
  if n == 0 then raise(("celers: %s: needs at least one member"):format(who)) end
  local out = {}
  for i = 1, n do out[i] = as_fragment(list[i], who, "member #" .. i) end
  return out
end

-- Copy fragments side by side: their nodes renumbered, their edges kept. Returns nodes,
-- edges and, per fragment, the offset of its nodes.
local function merge(frags)
  local nodes, edges, offsets = {}, {}, {}
  for f, frag in ipairs(frags) do
    local base = #nodes
    offsets[f] = base
    for _, n in ipairs(frag.nodes) do
      local c = {}
      for k, v in pairs(n) do c[k] = v end
      nodes[#nodes + 1] = c
    end
    for _, e in ipairs(frag.edges) do edges[#edges + 1] = { e[1] + base, e[2] + base } end
  end
  return nodes, edges, offsets
end

local function shifted(list, by)
  local out = {}
  for i, v in ipairs(list) do out[i] = v + by end
  return out
end

local function link(edges, parents, children)
  for _, p in ipairs(parents) do
    for _, c in ipairs(children) do edges[#edges + 1] = { p, c } end
  end
end

local function chain_of(frags, kind)
  local nodes, edges, off = merge(frags)
  for i = 1, #frags - 1 do
    link(edges, shifted(frags[i].exits, off[i]), shifted(frags[i + 1].entries, off[i + 1]))
  end
  return new_fragment(kind, nodes, edges, shifted(frags[1].entries, off[1]),
    shifted(frags[#frags].exits, off[#frags]))
end

local function group_of(frags, kind)
  local nodes, edges, off = merge(frags)
  local entries, exits = {}, {}
  for i, f in ipairs(frags) do
    for _, v in ipairs(f.entries) do entries[#entries + 1] = v + off[i] end
    for _, v in ipairs(f.exits) do exits[#exits + 1] = v + off[i] end
  end
  return new_fragment(kind, nodes, edges, entries, exits)
end

--- `workflow.chain{ a, b, c }`: b runs after a succeeded (every exit of a, when a is a group)
-- and receives a's result; a failure cancels the rest. Elements are task specs or workflows.
function workflow.chain(list)
  return chain_of(members(list, "workflow.chain"), "chain")
end

--- `workflow.group{ a, b, ... }`: the members run in parallel; a chain element after a group
-- waits for all of them and receives their results in order.
function workflow.group(list)
  return group_of(members(list, "workflow.group"), "group")
end

--- `workflow.chord({ a, b, ... }, callback)`: the callback runs once, after every member
-- succeeded, with their results in member order (ctx.results); a member's failure cancels it.
function workflow.chord(header, callback)
  local head
  if getmetatable(header) == Fragment then
    head = header
  else
    head = group_of(members(header, "workflow.chord"), "group")
  end
  return chain_of({ head, as_fragment(callback, "workflow.chord", "'callback'") }, "chord")
end

--- `workflow.batch{ a, b, ..., on_success = spec, on_failure = spec }`: the members run in
-- parallel; on_success runs once all of them succeeded, on_failure once all of them finished
-- and at least one did not succeed (failed or cancelled); the other callback is cancelled.
-- A chain element after a batch follows on_success (or the members without one).
function workflow.batch(list)
  local skip = { on_success = true, on_failure = true }
  if type(list) ~= "table" or getmetatable(list) == Fragment then
    raise(("celers: workflow.batch: 'members' must be a list of task specs or workflows (got %s)"):format(
      getmetatable(list) == Fragment and "a workflow" or type(list)))
  end
  local frags = members(list, "workflow.batch", skip)
  local group = group_of(frags, "batch")
  local parts = { group }
  local ok_frag = list.on_success ~= nil and as_fragment(list.on_success, "workflow.batch", "'on_success'")
  local fail_frag = list.on_failure ~= nil and as_fragment(list.on_failure, "workflow.batch", "'on_failure'")
  if ok_frag then parts[#parts + 1] = ok_frag end
  if fail_frag then parts[#parts + 1] = fail_frag end
  local nodes, edges, off = merge(parts)
  local exits = group.exits
  if ok_frag then
    link(edges, group.exits, shifted(ok_frag.entries, off[2]))
    exits = shifted(ok_frag.exits, off[2])
  end
  if fail_frag then
    local k = #parts
    local entries = shifted(fail_frag.entries, off[k])
    for _, e in ipairs(entries) do nodes[e].trigger = "any_failed" end
    link(edges, group.exits, entries)
  end
  return new_fragment("batch", nodes, edges, group.entries, exits)
end

-- == Starting

local function check_broker(broker, who)
  if type(broker) ~= "userdata" and type(broker) ~= "table" then
    raise(("celers: %s: 'broker' must be a broker (got %s)"):format(who, type(broker)))
  end
  if type(broker.transaction) ~= "function" then
    raise(("celers: %s: 'broker' must be a broker"):format(who))
  end
end

local function placeholders(n, one)
  local t = {}
  for i = 1, n do t[i] = one end
  return table.concat(t, ", ")
end

local unpack = table.unpack or unpack -- luacheck: globals unpack

-- metadata.workflow of a node's task, merged into the user's metadata.
local function task_options(wid, node, row)
  local opts = row.options and json.decode(row.options) or {}
  local meta = {}
  if type(opts.metadata) == "table" then
    for k, v in pairs(opts.metadata) do meta[k] = v end
  end
  meta.workflow = { id = wid, node = node, parents = row.parents }
  opts.metadata = meta
  opts.id = row.task_id
  return opts
end

local function payload_of(row)
  if row.payload_type == "json" then return json.decode(row.payload) end
  return row.payload
end

-- Enqueue a node's task (its id chosen when the workflow started) inside tx.
local function enqueue_node(tx, wid, node, row)
  local id, err = tx:enqueue(row.task_name, payload_of(row), task_options(wid, node, row))
  if not id then return nil, err end
  return true
end

-- The task row of a node that will never run, cancelled, so that its id (which the workflow
-- made known) reads as cancelled like any other task.
local function insert_cancelled_task(tx, row, reason)
  local opts = row.options and json.decode(row.options) or {}
  local meta = {}
  if type(opts.metadata) == "table" then
    for k, v in pairs(opts.metadata) do meta[k] = v end
  end
  meta.workflow = { id = row.workflow_id, node = row.node, parents = row.parents }
  local n, err = tx:execute("INSERT INTO celers_tasks (id, task_name, payload, payload_type, state, queue, "
    .. "priority, max_retries, metadata, completed_at, error_message) "
    .. "VALUES (?, ?, ?, ?, 'cancelled', ?, ?, ?, ?, NOW(6), ?)",
    row.task_id, row.task_name, row.payload, row.payload_type, opts.queue or tx:queue(), opts.priority or 0,
    opts.max_retries or 3, json.encode(meta), reason)
  if not n then return nil, err end
  return true
end

--- Start a workflow: insert it, its nodes and edges, and enqueue the nodes without parents,
-- in one transaction (on the broker's queue unless a task names its own). opts: name (a label
-- shown by list/status). Returns the workflow id, or nil and an error (nothing is left
-- behind). Also `wf:start(broker, opts)`.
function workflow.start(broker, wf, opts)
  check_broker(broker, "workflow.start")
  if getmetatable(wf) ~= Fragment then
    wf = as_fragment(wf, "workflow.start", "'wf'")
  end
  if opts ~= nil and type(opts) ~= "table" then
    raise(("celers: workflow.start: 'opts' must be a table (got %s)"):format(type(opts)))
  end
  opts = opts or {}
  for k in pairs(opts) do
    if k ~= "name" then raise(("celers: workflow.start: unknown option '%s'"):format(tostring(k))) end
  end
  if opts.name ~= nil then check_name(opts.name, "workflow.start", "name") end
  local kind = wf.kind == "task" and "chain" or wf.kind -- a lone task: a chain of one
  local nodes, edges = wf.nodes, wf.edges
  for _, n in ipairs(nodes) do
    if #n.body > MAX_PAYLOAD then
      return nil, celers.error("too_large", ("a payload of %d bytes exceeds %d bytes (MEDIUMBLOB)"):format(
        #n.body, MAX_PAYLOAD))
    end
  end
  local parents = {}
  for _, e in ipairs(edges) do parents[e[2]] = (parents[e[2]] or 0) + 1 end
  local wid = core.uuid7()
  local task_ids = {}
  for i = 1, #nodes do task_ids[i] = core.uuid7() end
  return broker:transaction(function(tx)
    local ok, err = tx:execute("INSERT INTO celers_flows (id, kind, name, state, nodes_total, nodes_left) "
      .. "VALUES (?, ?, ?, 'running', ?, ?)", wid, kind, opts.name, #nodes, #nodes)
    if not ok then return nil, err end
    local i = 1
    while i <= #nodes do
      local vals, count, bytes = {}, 0, 0
      while i <= #nodes and count < NODE_CHUNK and (count == 0 or bytes + #nodes[i].body < CHUNK_BYTES) do
        local n = nodes[i]
        local np = parents[i] or 0
        bytes = bytes + #n.body
        for _, v in ipairs { wid, i, task_ids[i], n.name, n.body, n.payload_type, n.options, n.trigger,
                             np == 0 and "enqueued" or "waiting", np } do
          vals[#vals + 1] = v
        end
        count, i = count + 1, i + 1
      end
      ok, err = tx:execute("INSERT INTO celers_flow_nodes (workflow_id, node, task_id, task_name, payload, "
        .. "payload_type, options, trigger_rule, state, parents_left) VALUES "
        .. placeholders(count, "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"), unpack(vals))
      if not ok then return nil, err end
    end
    for from = 1, #edges, EDGE_CHUNK do
      local vals, count = {}, 0
      for k = from, math.min(#edges, from + EDGE_CHUNK - 1) do
        vals[#vals + 1], vals[#vals + 2], vals[#vals + 3] = wid, edges[k][1], edges[k][2]
        count = count + 1
      end
      ok, err = tx:execute("INSERT INTO celers_flow_edges (workflow_id, parent_node, child_node) VALUES "
        .. placeholders(count, "(?, ?, ?)"), unpack(vals))
      if not ok then return nil, err end
    end
    for k, n in ipairs(nodes) do
      if not parents[k] then
        ok, err = enqueue_node(tx, wid, k, { task_name = n.name, payload = n.body, payload_type = n.payload_type,
                                            options = n.options, task_id = task_ids[k], parents = 0 })
        if not ok then return nil, err end
      end
    end
    return wid
  end)
end

--- `wf:start(broker, opts)`: the same as workflow.start(broker, wf, opts).
function Fragment:start(broker, opts)
  return workflow.start(broker, self, opts)
end

-- == Advancing

local NODE_COLS = "workflow_id, node, task_id, task_name, payload, payload_type, options, trigger_rule, "
  .. "parents_left, parents_failed, (SELECT COUNT(*) FROM celers_flow_edges e "
  .. "WHERE e.workflow_id = n.workflow_id AND e.child_node = n.node) AS parents"

-- A parent of `node` finished (ok: it succeeded): count it off, and enqueue or cancel the
-- child when that decides it. Returns "enqueued", "cancelled" or false, or nil, err.
local function parent_finished(tx, wid, node, ok)
  local n, err = tx:execute("UPDATE celers_flow_nodes SET parents_left = parents_left - 1, "
    .. "parents_failed = parents_failed + ? WHERE workflow_id = ? AND node = ? AND state = 'waiting'",
    ok and 0 or 1, wid, node)
  if not n then return nil, err end
  if n == 0 then return false end -- already decided (cancelled early)
  local rows
  rows, err = tx:execute("SELECT " .. NODE_COLS .. " FROM celers_flow_nodes n "
    .. "WHERE workflow_id = ? AND node = ?", wid, node)
  if not rows then return nil, err end
  local row = rows[1]
  local run
  if row.trigger_rule == "any_failed" then
    if row.parents_left > 0 then return false end
    run = row.parents_failed > 0
  else
    if row.parents_failed > 0 then
      run = false
    elseif row.parents_left > 0 then
      return false
    else
      run = true
    end
  end
  if run then
    n, err = tx:execute("UPDATE celers_flow_nodes SET state = 'enqueued' "
      .. "WHERE workflow_id = ? AND node = ? AND state = 'waiting'", wid, node)
    if not n then return nil, err end
    local qok, qerr = enqueue_node(tx, wid, node, row)
    if not qok then return nil, qerr end
    return "enqueued"
  end
  local reason = row.trigger_rule == "any_failed" and "not needed: every parent succeeded"
    or "cancelled: a parent did not succeed"
  n, err = tx:execute("UPDATE celers_flow_nodes SET state = 'cancelled', error = ?, finished_at = NOW(6) "
    .. "WHERE workflow_id = ? AND node = ? AND state = 'waiting'", reason, wid, node)
  if not n then return nil, err end
  local cok, cerr = insert_cancelled_task(tx, row, reason)
  if not cok then return nil, cerr end
  return "cancelled"
end

-- Inside tx: node `node` of workflow `wid` (task `task_id`) ended in `state` (succeeded,
-- failed or cancelled). Returns true when it moved (false: already done, or no such node), or
-- nil, err.
local function finish(tx, wid, node, task_id, state, result, result_type, errtext)
  local w, err = tx:execute("SELECT state, nodes_left FROM celers_flows WHERE id = ? FOR UPDATE", wid)
  if not w then return nil, err end
  if not w[1] then return false end
  local n
  n, err = tx:execute("UPDATE celers_flow_nodes SET state = ?, result = ?, result_type = ?, error = ?, "
    .. "finished_at = NOW(6) WHERE workflow_id = ? AND node = ? AND task_id = ? AND state = 'enqueued'",
    state, result, result_type, errtext, wid, node, task_id)
  if not n then return nil, err end
  if n == 0 then return false end
  local done = 1
  local queue = { { node, state == "succeeded" } }
  local head = 1
  while queue[head] do
    local item = queue[head]
    head = head + 1
    local children
    children, err = tx:execute("SELECT child_node FROM celers_flow_edges "
      .. "WHERE workflow_id = ? AND parent_node = ? ORDER BY child_node", wid, item[1])
    if not children then return nil, err end
    for _, c in ipairs(children) do
      local what
      what, err = parent_finished(tx, wid, c.child_node, item[2])
      if what == nil then return nil, err end
      if what == "cancelled" then
        done = done + 1
        queue[#queue + 1] = { c.child_node, false }
      end
    end
  end
  local left = w[1].nodes_left - done
  n, err = tx:execute("UPDATE celers_flows SET nodes_left = ? WHERE id = ?", left, wid)
  if not n then return nil, err end
  if left <= 0 and w[1].state == "running" then
    local s
    s, err = tx:execute("SELECT COALESCE(SUM(state = 'failed'), 0) AS failed, "
      .. "COALESCE(SUM(state = 'cancelled' AND trigger_rule = 'all_succeeded'), 0) AS cancelled "
      .. "FROM celers_flow_nodes WHERE workflow_id = ?", wid)
    if not s then return nil, err end
    local final = tonumber(s[1].failed) > 0 and "failed"
      or tonumber(s[1].cancelled) > 0 and "cancelled" or "succeeded"
    n, err = tx:execute("UPDATE celers_flows SET state = ?, finished_at = NOW(6) WHERE id = ?", final, wid)
    if not n then return nil, err end
  end
  return true
end

-- Where a task's metadata says it belongs: workflow id and node, or nil.
local function place_of(task)
  local meta = type(task) == "table" and task.metadata
  local w = type(meta) == "table" and meta.workflow
  if type(w) ~= "table" or type(w.id) ~= "string" or not is_integer(w.node) then return nil end
  return w
end

--- The workflow place of a task ({ id =, node =, parents = } from its metadata), or nil when
-- it is not a workflow member.
function workflow.member(task)
  if type(task) ~= "table" then
    raise(("celers: workflow.member: 'task' must be a task table (got %s)"):format(type(task)))
  end
  return place_of(task)
end

local function encode_result(res)
  if res == nil then return nil, nil end
  if type(res) == "string" then return res, "raw" end
  local ok, encoded = pcall(json.encode, res)
  if not ok then return nil, nil, "the result was not stored: " .. tostring(encoded) end
  return encoded, "json"
end

local function cut(s)
  s = tostring(s)
  if #s > MAX_ERROR then s = s:sub(1, MAX_ERROR) .. "..." end
  return s
end

local function check_task(task, who)
  if type(task) ~= "table" or type(task.id) ~= "string" then
    raise(("celers: %s: 'task' must be a task table (got %s)"):format(who, type(task)))
  end
end

--- A workflow member's handler returned `result`: store it on the node and enqueue (or
-- cancel) what follows, in one transaction. Call it before acking the task (the worker does).
-- Returns true when the node moved, false when it had already (or the task is not a member),
-- nil and an error when the database failed (nothing changed: call again).
function workflow.succeeded(broker, task, result)
  check_broker(broker, "workflow.succeeded")
  check_task(task, "workflow.succeeded")
  local w = place_of(task)
  if not w then return false end
  local body, btype, note = encode_result(result)
  return broker:transaction(function(tx)
    return finish(tx, w.id, w.node, task.id, "succeeded", body, btype, note)
  end)
end

--- A workflow member failed for good (no attempt left: dead-lettered): mark its node failed
-- and cancel what depended on it (a batch's on_failure is enqueued once every member
-- finished). Returns true, false or nil, err as workflow.succeeded.
function workflow.failed(broker, task, message)
  check_broker(broker, "workflow.failed")
  check_task(task, "workflow.failed")
  local w = place_of(task)
  if not w then return false end
  return broker:transaction(function(tx)
    return finish(tx, w.id, w.node, task.id, "failed", nil, nil, cut(message or "failed"))
  end)
end

local function decode_result(body, btype)
  if body == nil then return json.null end
  if btype == "json" then
    local ok, v = pcall(json.decode, body)
    if ok then return v end
  end
  return body
end

--- The results of a member's parents, in node order: an array (json.null for a parent that
-- returned nothing). The worker puts it in ctx.results (and the first in ctx.result) before
-- the handler runs. Returns nil, err when the database failed.
function workflow.parent_results(broker, task)
  check_broker(broker, "workflow.parent_results")
  check_task(task, "workflow.parent_results")
  local w = place_of(task)
  local results = json.array()
  if not w or w.parents == 0 then return results end
  local rows, err = broker:execute("SELECT n.result, n.result_type FROM celers_flow_edges e "
    .. "JOIN celers_flow_nodes n ON n.workflow_id = e.workflow_id AND n.node = e.parent_node "
    .. "WHERE e.workflow_id = ? AND e.child_node = ? ORDER BY e.parent_node", w.id, w.node)
  if not rows then return nil, err end
  for i, r in ipairs(rows) do results[i] = decode_result(r[1], r[2]) end
  return results
end

-- == Resuming

-- What became of the task of an enqueued node: "succeeded" (with its stored result),
-- "failed", "cancelled", or nil while it is still to run.
local function outcome_of(broker, row)
  local ts = row[4]
  if ts == "completed" then
    local r = broker:get_result(row[3])
    if r and r.status == "success" then return "succeeded", r.body, r.result_type == "json" and "json" or "raw" end
    return "succeeded"
  elseif ts == "cancelled" then
    return "cancelled", nil, nil, "the task was cancelled"
  elseif ts == "failed" then
    return "failed", nil, nil, row[5] or "failed"
  elseif ts ~= nil then
    return nil
  end
  if row[6] then return "failed", nil, nil, row[7] or "dead-lettered" end
  -- gone from both tables: archived (completed) or purged
  local h, err = broker:execute("SELECT state FROM celers_task_history WHERE task_id = ? ORDER BY id DESC LIMIT 1",
    row[3])
  if not h then return nil, nil, nil, nil, err end
  if h[1] and h[1][1] == "completed" then return "succeeded" end
  return "failed", nil, nil, "the task is gone (purged)"
end

--- Advance the enqueued nodes whose task ended without advancing them: a member acked by a
-- worker that died before advancing (or that does not know workflows), cancelled, or
-- dead-lettered (lease expired on its last attempt). opts: limit (nodes looked at, default
-- 100), after (the cursor a previous call returned, to go on from there). Returns the number
-- of nodes advanced and the cursor for the next call (nil when the end was reached), or nil
-- and an error. Workers run it every `workflow_resume` seconds and at start.
function workflow.resume(broker, opts)
  check_broker(broker, "workflow.resume")
  if opts ~= nil and type(opts) ~= "table" then
    raise(("celers: workflow.resume: 'opts' must be a table (got %s)"):format(type(opts)))
  end
  opts = opts or {}
  for k in pairs(opts) do
    if k ~= "limit" and k ~= "after" then
      raise(("celers: workflow.resume: unknown option '%s'"):format(tostring(k)))
    end
  end
  local limit = opts.limit or 100
  if not is_integer(limit) or limit < 1 then
    raise("celers: workflow.resume: 'limit' must be a positive integer")
  end
  local after = opts.after
  if after ~= nil and (type(after) ~= "table" or type(after[1]) ~= "string" or not is_integer(after[2])) then
    raise("celers: workflow.resume: 'after' must be a cursor returned by workflow.resume")
  end
  local aw, an = after and after[1] or "", after and after[2] or -1
  local rows, err = broker:execute("SELECT n.workflow_id, n.node, n.task_id, t.state, t.error_message, "
    .. "d.task_id, d.error_message FROM celers_flow_nodes n "
    .. "LEFT JOIN celers_tasks t ON t.id = n.task_id "
    .. "LEFT JOIN celers_dead_letter_queue d ON t.id IS NULL AND d.task_id = n.task_id "
    .. "WHERE n.state = 'enqueued' AND (n.workflow_id > ? OR (n.workflow_id = ? AND n.node > ?)) "
    .. "ORDER BY n.workflow_id, n.node LIMIT ?", aw, aw, an, limit)
  if not rows then return nil, err end
  local advanced, seen = 0, {}
  for _, r in ipairs(rows) do
    local key = r[1] .. ":" .. r[2]
    if not seen[key] then -- a task dead-lettered twice joins twice
      seen[key] = true
      local state, body, btype, errtext, oerr = outcome_of(broker, r)
      if oerr then return nil, oerr end
      if state then
        local moved, ferr = broker:transaction(function(tx)
          return finish(tx, r[1], tonumber(r[2]), r[3], state, body, btype, errtext and cut(errtext))
        end)
        if moved == nil then return nil, ferr end
        if moved then advanced = advanced + 1 end
      end
    end
  end
  local cursor
  if #rows >= limit then
    local last = rows[#rows]
    cursor = { last[1], tonumber(last[2]) }
  end
  return advanced, cursor
end

-- == Inspection and cancel

local function num(v)
  return v and tonumber(v)
end

--- One workflow: { id, kind, name, state, nodes_total, nodes_left, created_at, finished_at,
-- nodes = { { node, name, task_id, state, trigger, result, error, parents = {...} }, ... } }
-- (times as Unix seconds, results decoded). nil when there is no such workflow; nil, err when
-- the database failed.
function workflow.status(broker, id)
  check_broker(broker, "workflow.status")
  if type(id) ~= "string" then
    raise(("celers: workflow.status: 'id' must be a string (got %s)"):format(type(id)))
  end
  local w, err = broker:execute("SELECT id, kind, name, state, nodes_total, nodes_left, "
    .. "UNIX_TIMESTAMP(created_at), UNIX_TIMESTAMP(finished_at) FROM celers_flows WHERE id = ?", id)
  if not w then return nil, err end
  if not w[1] then return nil end
  local r = w[1]
  local out = { id = r[1], kind = r[2], name = r[3], state = r[4], nodes_total = num(r[5]),
                nodes_left = num(r[6]), created_at = num(r[7]), finished_at = num(r[8]), nodes = json.array() }
  local rows
  rows, err = broker:execute("SELECT node, task_name, task_id, state, trigger_rule, result, result_type, error, "
    .. "UNIX_TIMESTAMP(finished_at) FROM celers_flow_nodes WHERE workflow_id = ? ORDER BY node", id)
  if not rows then return nil, err end
  for i, n in ipairs(rows) do
    out.nodes[i] = { node = num(n[1]), name = n[2], task_id = n[3], state = n[4], trigger = n[5],
                     result = n[6] ~= nil and decode_result(n[6], n[7]) or nil, error = n[8],
                     finished_at = num(n[9]), parents = json.array() }
  end
  local edges
  edges, err = broker:execute("SELECT parent_node, child_node FROM celers_flow_edges WHERE workflow_id = ? "
    .. "ORDER BY child_node, parent_node", id)
  if not edges then return nil, err end
  for _, e in ipairs(edges) do
    local child = out.nodes[tonumber(e[2])]
    if child then child.parents[#child.parents + 1] = tonumber(e[1]) end
  end
  return out
end

--- Workflows, newest first: opts state (running, succeeded, failed, cancelled), limit (20),
-- offset (0). Returns a list of { id, kind, name, state, nodes_total, nodes_left, created_at,
-- finished_at }, or nil and an error.
function workflow.list(broker, opts)
  check_broker(broker, "workflow.list")
  if opts ~= nil and type(opts) ~= "table" then
    raise(("celers: workflow.list: 'opts' must be a table (got %s)"):format(type(opts)))
  end
  opts = opts or {}
  for k in pairs(opts) do
    if k ~= "state" and k ~= "limit" and k ~= "offset" then
      raise(("celers: workflow.list: unknown option '%s'"):format(tostring(k)))
    end
  end
  if opts.state ~= nil and not STATES[opts.state] then
    raise("celers: workflow.list: 'state' must be running, succeeded, failed or cancelled")
  end
  local limit, offset = opts.limit or 20, opts.offset or 0
  if not is_integer(limit) or limit < 0 then raise("celers: workflow.list: 'limit' must be a non-negative integer") end
  if not is_integer(offset) or offset < 0 then
    raise("celers: workflow.list: 'offset' must be a non-negative integer")
  end
  local rows, err = broker:execute("SELECT id, kind, name, state, nodes_total, nodes_left, "
    .. "UNIX_TIMESTAMP(created_at), UNIX_TIMESTAMP(finished_at) FROM celers_flows "
    .. "WHERE (? IS NULL OR state = ?) ORDER BY id DESC LIMIT ? OFFSET ?",
    opts.state, opts.state, limit, offset)
  if not rows then return nil, err end
  local out = json.array()
  for i, r in ipairs(rows) do
    out[i] = { id = r[1], kind = r[2], name = r[3], state = r[4], nodes_total = num(r[5]), nodes_left = num(r[6]),
               created_at = num(r[7]), finished_at = num(r[8]) }
  end
  return out
end

--- Cancel a running workflow: its waiting nodes and their tasks (a cancelled task row each),
-- its enqueued nodes and their tasks (like broker:cancel: a running handler sees
-- ctx:cancelled()). Returns the number of nodes cancelled, false when the workflow is not
-- running (finished already), nil when there is no such workflow, nil and an error.
function workflow.cancel(broker, id)
  check_broker(broker, "workflow.cancel")
  if type(id) ~= "string" then
    raise(("celers: workflow.cancel: 'id' must be a string (got %s)"):format(type(id)))
  end
  local found = true
  local res, err = broker:transaction(function(tx)
    local w, e = tx:execute("SELECT state FROM celers_flows WHERE id = ? FOR UPDATE", id)
    if not w then return nil, e end
    if not w[1] then
      found = false
      return false
    end
    if w[1].state ~= "running" then return false end
    local rows
    rows, e = tx:execute("SELECT " .. NODE_COLS .. ", state FROM celers_flow_nodes n "
      .. "WHERE workflow_id = ? AND state IN ('waiting', 'enqueued') ORDER BY node", id)
    if not rows then return nil, e end
    for _, row in ipairs(rows) do
      local ok
      if row.state == "waiting" then
        ok, e = insert_cancelled_task(tx, row, "workflow cancelled")
      else
        ok, e = tx:execute("UPDATE celers_tasks SET state = 'cancelled', completed_at = NOW(6), "
          .. "lease_expires_at = NULL WHERE id = ? AND state IN ('scheduled', 'pending', 'processing')", row.task_id)
      end
      if not ok then return nil, e end
    end
    local n
    n, e = tx:execute("UPDATE celers_flow_nodes SET state = 'cancelled', error = 'workflow cancelled', "
      .. "finished_at = NOW(6) WHERE workflow_id = ? AND state IN ('waiting', 'enqueued')", id)
    if not n then return nil, e end
    n, e = tx:execute("UPDATE celers_flows SET state = 'cancelled', nodes_left = 0, finished_at = NOW(6) "
      .. "WHERE id = ?", id)
    if not n then return nil, e end
    return #rows
  end)
  if res == nil then return nil, err end
  if not found then return nil end
  return res
end

-- Finished workflows deleted per transaction by prune.
local PRUNE_CHUNK = 100

local function check_age(v, who)
  if type(v) ~= "number" or v ~= v or v < 0 or v == math.huge then
    raise(("celers: %s: 'older_than' must be a non-negative finite number of seconds (got %s)"):format(who,
      tostring(v)))
  end
end

--- How many finished workflows (succeeded, failed, cancelled) finished more than
-- `older_than` seconds ago: what prune would delete. Returns the number, or nil and an error.
function workflow.count_finished(broker, older_than)
  check_broker(broker, "workflow.count_finished")
  check_age(older_than, "workflow.count_finished")
  local rows, err = broker:execute("SELECT COUNT(*) FROM celers_flows WHERE state <> 'running' "
    .. "AND finished_at < NOW(6) - INTERVAL ? MICROSECOND", math.floor(older_than * 1e6))
  if not rows then return nil, err end
  return tonumber(rows[1][1])
end

--- Delete the workflows that finished more than `older_than` seconds ago, with their nodes
-- and edges (their tasks are left to the tasks' own upkeep), a hundred per transaction.
-- Running workflows are never deleted. Returns the number deleted, or nil and an error
-- (what was deleted before it stays deleted).
function workflow.prune(broker, older_than)
  check_broker(broker, "workflow.prune")
  check_age(older_than, "workflow.prune")
  local micro = math.floor(older_than * 1e6)
  local total = 0
  while true do
    local n, err = broker:transaction(function(tx)
      local rows, e = tx:execute("SELECT id FROM celers_flows WHERE state <> 'running' "
        .. "AND finished_at < NOW(6) - INTERVAL ? MICROSECOND ORDER BY id LIMIT ? FOR UPDATE", micro, PRUNE_CHUNK)
      if not rows then return nil, e end
      for _, r in ipairs(rows) do
        for _, tbl in ipairs { "celers_flow_edges", "celers_flow_nodes" } do
          local ok, de = tx:execute("DELETE FROM " .. tbl .. " WHERE workflow_id = ?", r.id)
          if not ok then return nil, de end
        end
        local ok, de = tx:execute("DELETE FROM celers_flows WHERE id = ?", r.id)
        if not ok then return nil, de end
      end
      return #rows
    end)
    if not n then return nil, err end
    total = total + n
    if n < PRUNE_CHUNK then return total end
  end
end

--- Counts for the metrics: { workflows = { [state] = n }, nodes = { [state] = n } }, or nil
-- and an error.
function workflow.counts(broker)
  check_broker(broker, "workflow.counts")
  local out = { workflows = {}, nodes = {} }
  for key, tbl in pairs { workflows = "celers_flows", nodes = "celers_flow_nodes" } do
    local rows, err = broker:execute("SELECT state, COUNT(*) FROM " .. tbl .. " GROUP BY state")
    if not rows then return nil, err end
    for _, r in ipairs(rows) do out[key][r[1]] = tonumber(r[2]) end
  end
  return out
end

workflow.Fragment = Fragment

return workflow
