--- celers: a MySQL/MariaDB task queue.
-- `require "celers"` gives connect() and, on first use, the Lua layer's modules
-- (celers.worker, celers.retry, celers.circuit_breaker, celers.recurring, celers.bulk,
-- celers.metrics, celers.cron, celers.workflow). Brokers are userdata from the C core (celers.core).
local core = require "celers.core"

-- Table payloads, metadata and results travel as JSON through the core's exact codec
-- (docs/json.md): integers stay integers, floats keep every bit, [] stays [].
local json = {
  encode = core.json_encode,
  decode = core.json_decode,
  null = core.json_null,         -- JSON null (the same value as cjson.null)
  array_mt = core.json_array_mt, -- decoded arrays carry it; it makes a table encode as []
  max_depth = core.json_max_depth,
}

--- Mark t (or a new table) as a JSON array, so that it encodes as [] even when empty.
function json.array(t)
  return setmetatable(t or {}, core.json_array_mt)
end

core.set_json(json.encode, json.decode)

local celers = {
  core = core,
  version = core.version,
  json = json,
}

local methods = core.broker_methods
require("celers.transaction").install(methods)

--- Connect to the server: a DSN string (mysql://user:pass@host:port/db?queue=...) or an
-- options table. Returns a broker, or nil and an error table.
function celers.connect(dsn_or_opts)
  return core.connect(dsn_or_opts)
end

--- An error table like the core's: tostring reads "celers: <code>: <message>".
function celers.error(code, message, retryable)
  return core.error(code, message, retryable)
end

local submodules = {
  worker = true, retry = true, circuit_breaker = true, recurring = true, bulk = true,
  metrics = true, cron = true, cli = true, workflow = true,
}

setmetatable(celers, {
  __index = function(t, key)
    if submodules[key] then
      local m = require("celers." .. key)
      rawset(t, key, m)
      return m
    end
  end,
})

-- Per-process counters live in the core (no Lua call on the hot path); metrics pulls them.
local counter_names = {
  enqueued = "celers_tasks_enqueued_total",
  acked = "celers_tasks_acked_total",
  rejected = "celers_tasks_rejected_total",
  retried = "celers_tasks_retried_total",
  dead_lettered = "celers_tasks_dead_lettered_total",
}

local function collect_counters()
  local metrics = celers.metrics
  local counts = core.counters()
  for key, name in pairs(counter_names) do
    local c = metrics.get(name)
    local delta = (counts[key] or 0) - c:get()
    if delta > 0 then c:inc(delta) end
  end
  local by_type = metrics.get("celers_tasks_enqueued_by_type")
  for task_name, n in pairs(counts.enqueued_by_type) do
    local delta = n - by_type:get { task_name = task_name }
    if delta > 0 then by_type:inc(delta, { task_name = task_name }) end
  end
end

local collector_added = false

--- Refresh the gauges of this broker's queue (and of the workflows) from the database and
-- the counters from this process. Returns the statistics, or nil and an error.
function methods:update_metrics()
  local metrics = celers.metrics
  if not collector_added then
    metrics.add_collector(collect_counters)
    collector_added = true
  end
  local stats, err = self:get_statistics()
  if not stats then return nil, err end
  metrics.update_from_statistics(self:queue(), stats)
  local limits, lerr = self:list_limits()
  if not limits then return nil, lerr end
  metrics.update_from_limits(limits)
  collect_counters()
  -- workflows span every queue; a database not migrated to them has no such gauges
  local counts, werr = celers.workflow.counts(self)
  if counts then
    metrics.update_from_workflow_counts(counts)
  elseif werr.errno ~= 1146 then
    return nil, werr
  end
  return stats
end

return celers
