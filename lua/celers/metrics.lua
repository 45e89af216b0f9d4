--- celers.metrics: a small in-process Prometheus registry (counters and gauges)
-- rendered in the text exposition format 0.0.4.
--
-- One registry per Lua state. The broker's own metrics are registered at load
-- so a scrape always shows them, even before anything happened.

local metrics = {}

local registry = {}   -- name -> metric
local builtin = {}    -- names registered at load; reset() keeps these objects

local NAME_RE = "^[a-zA-Z_:][a-zA-Z0-9_:]*$"
local LABEL_RE = "^[a-zA-Z_][a-zA-Z0-9_]*$"

local Metric = {}
Metric.__index = Metric

---------------------------------------------------------------- formatting

local function escape_label(v)
  return (v:gsub('[\\"\n]', { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n" }))
end

local function escape_help(v)
  return (v:gsub("[\\\n]", { ["\\"] = "\\\\", ["\n"] = "\\n" }))
end

--- A sample value as the format spells it: integers without ".0", floats
-- with the fewest digits that read back exactly, +Inf, -Inf, NaN.
function metrics.format_value(v)
  if v ~= v then return "NaN" end
  if v == math.huge then return "+Inf" end
  if v == -math.huge then return "-Inf" end
  if v == math.floor(v) and math.abs(v) < 2 ^ 53 then return ("%d"):format(v) end
  local s = ("%.15g"):format(v)
  if tonumber(s) ~= v then s = ("%.17g"):format(v) end
  return s
end

-- -------------------------------------------------------------- labels

-- The label values of `labels` in labelnames order, and a key unique to them.
function Metric:_values(labels, who)
  local names = self.labelnames
  if labels == nil then labels = {} end
  if type(labels) ~= "table" then
    error(("%s: 'labels' must be a table"):format(who), 3)
  end
  local values, key = {}, {}
  for i, name in ipairs(names) do
    local v = labels[name]
    local tv = type(v)
    if tv == "number" then
      v = metrics.format_value(v) -- same text under 5.1 and 5.4 (no "3.0")
    elseif tv == "boolean" then
      v = tostring(v)
    elseif tv ~= "string" then
      error(("%s: label '%s' of %s must be a string or number"):format(who, name, self.name), 3)
    end
    values[i] = v
    key[i] = #v .. ":" .. v -- length prefix: no separator can collide
  end
  for k in pairs(labels) do
    if not self._labelset[k] then
      error(("%s: unknown label '%s' for %s"):format(who, tostring(k), self.name), 3)
    end
  end
  return values, table.concat(key)
end

function Metric:_add(n, values, key)
  local s = self.samples[key]
  if not s then
    s = { values = values, value = 0 }
    self.samples[key] = s
  end
  s.value = s.value + n
end

local function check_number(v, who, what)
  if type(v) ~= "number" then error(("%s: '%s' must be a number"):format(who, what), 3) end
end

-- -------------------------------------------------------------- methods

--- counter:inc([n=1], [labels]); gauge:inc too. inc(labels) also works.
function Metric:inc(n, labels)
  if type(n) == "table" then n, labels = 1, n end
  if n == nil then n = 1 end
  local who = self.type .. ":inc"
  check_number(n, who, "n")
  if self.type == "counter" and (n ~= n or n < 0) then
    error("counter:inc: 'n' must be a non-negative number (counters only go up)", 2)
  end
  self:_add(n, self:_values(labels, who))
end

--- gauge:dec([n=1], [labels])
function Metric:dec(n, labels)
  if self.type ~= "gauge" then error("counter:dec: counters cannot go down", 2) end
  if type(n) == "table" then n, labels = 1, n end
  if n == nil then n = 1 end
  check_number(n, "gauge:dec", "n")
  self:_add(-n, self:_values(labels, "gauge:dec"))
end

--- gauge:set(v, [labels])
function Metric:set(v, labels)
  if self.type ~= "gauge" then error("counter:set: counters can only be incremented", 2) end
  check_number(v, "gauge:set", "v")
  local values, key = self:_values(labels, "gauge:set")
  self.samples[key] = { values = values, value = v }
end

--- Current value for these labels (0 when never touched).
function Metric:get(labels)
  local _, key = self:_values(labels, self.type .. ":get")
  local s = self.samples[key]
  return s and s.value or 0
end

--- Forget one labelled sample (e.g. a queue that no longer exists).
function Metric:remove(labels)
  local _, key = self:_values(labels, self.type .. ":remove")
  self.samples[key] = nil
end

-- Drop every sample; an unlabelled metric is exported as 0 from the start,
-- the way client libraries do, so rate() sees the series begin.
function Metric:clear()
  self.samples = {}
  if #self.labelnames == 0 then self.samples[""] = { values = {}, value = 0 } end
end

---------------------------------------------------------------- registry

local function register(kind, name, help, labelnames)
  local who = "metrics." .. kind
  if type(name) ~= "string" or not name:match(NAME_RE) then
    error(("%s: 'name' must match [a-zA-Z_:][a-zA-Z0-9_:]*, got %s"):format(who, tostring(name)), 3)
  end
  if help ~= nil and type(help) ~= "string" then error(("%s: 'help' must be a string"):format(who), 3) end
  labelnames = labelnames or {}
  if type(labelnames) ~= "table" then error(("%s: 'labelnames' must be a table"):format(who), 3) end
  local set = {}
  for i, l in ipairs(labelnames) do
    if type(l) ~= "string" or not l:match(LABEL_RE) or l:sub(1, 2) == "__" then
      error(("%s: label name %d of %s is not valid: %s"):format(who, i, name, tostring(l)), 3)
    end
    if set[l] then error(("%s: duplicate label name '%s' in %s"):format(who, l, name), 3) end
    set[l] = true
  end

  local m = registry[name]
  if m then
    if m.type ~= kind then
      error(("%s: %s is already registered as a %s"):format(who, name, m.type), 3)
    end
    if table.concat(m.labelnames, ",") ~= table.concat(labelnames, ",") then
      error(("%s: %s is already registered with labels {%s}"):format(
        who, name, table.concat(m.labelnames, ",")), 3)
    end
    return m
  end
  local copy = {}
  for i, l in ipairs(labelnames) do copy[i] = l end
  m = setmetatable({ name = name, help = help or "", type = kind, labelnames = copy, _labelset = set }, Metric)
  m:clear()
  registry[name] = m
  return m
end

--- Register (or fetch the already registered) counter.
function metrics.counter(name, help, labelnames)
  return register("counter", name, help, labelnames)
end

--- Register (or fetch the already registered) gauge.
function metrics.gauge(name, help, labelnames)
  return register("gauge", name, help, labelnames)
end

--- The registered metric called name, or nil.
function metrics.get(name)
  return registry[name]
end

local function by_values(a, b)
  for i = 1, #a.values do
    if a.values[i] ~= b.values[i] then return a.values[i] < b.values[i] end
  end
  return false
end

-- Functions run at the start of every render, to pull values kept elsewhere
-- (the core's per-process counters) into the registry.
local collectors = {}

--- Run fn() before each render.
function metrics.add_collector(fn)
  if type(fn) ~= "function" then error("metrics.add_collector: 'fn' must be a function", 2) end
  collectors[#collectors + 1] = fn
end

--- The whole registry in the text exposition format (ends with a newline).
function metrics.render()
  for _, collect in ipairs(collectors) do collect() end
  local names = {}
  for name in pairs(registry) do names[#names + 1] = name end
  table.sort(names)
  local out = {}
  for _, name in ipairs(names) do
    local m = registry[name]
    if m.help ~= "" then out[#out + 1] = ("# HELP %s %s"):format(name, escape_help(m.help)) end
    out[#out + 1] = ("# TYPE %s %s"):format(name, m.type)
    local samples = {}
    for _, s in pairs(m.samples) do samples[#samples + 1] = s end
    table.sort(samples, by_values)
    for _, s in ipairs(samples) do
      local labels = ""
      if #s.values > 0 then
        local parts = {}
        for i, l in ipairs(m.labelnames) do
          parts[i] = ('%s="%s"'):format(l, escape_label(s.values[i]))
        end
        labels = "{" .. table.concat(parts, ",") .. "}"
      end
      out[#out + 1] = name .. labels .. " " .. metrics.format_value(s.value)
    end
  end
  return table.concat(out, "\n") .. "\n"
end

--- For tests: zero the broker's metrics (same objects, so modules holding
-- them keep working) and unregister every other metric.
function metrics.reset()
  for name, m in pairs(registry) do
    if builtin[name] then m:clear() else registry[name] = nil end
  end
end

---------------------------------------------------------------- the broker's metrics

local function predefine(kind, name, help, labels)
  register(kind, name, help, labels)
  builtin[name] = true
end

predefine("counter", "celers_tasks_enqueued_total", "Tasks enqueued.")
predefine("counter", "celers_tasks_enqueued_by_type", "Tasks enqueued, by task name.", { "task_name" })
predefine("counter", "celers_tasks_acked_total", "Tasks acknowledged (completed).")
predefine("counter", "celers_tasks_rejected_total", "Tasks rejected by workers.")
predefine("counter", "celers_tasks_retried_total", "Task attempts scheduled for retry.")
predefine("counter", "celers_tasks_dead_lettered_total", "Tasks moved to the dead letter queue.")
predefine("gauge", "celers_queue_size", "Waiting tasks: pending (ready) or scheduled (not yet due).", { "queue" })
predefine("gauge", "celers_processing_queue_size", "Tasks being processed.", { "queue" })
predefine("gauge", "celers_dlq_size", "Tasks in the dead letter queue.", { "queue" })
predefine("gauge", "celers_scheduled_tasks", "Tasks whose time has not come.", { "queue" })
predefine("gauge", "celers_tasks", "Tasks by lifecycle state.", { "queue", "state" })
predefine("gauge", "celers_workflows", "Workflows (celers.workflow) by state.", { "state" })
predefine("gauge", "celers_workflow_nodes", "Workflow nodes (member tasks) by state.", { "state" })
predefine("gauge", "celers_limit_running", "Processing tasks of a limited task name (every queue).", { "task_name" })
predefine("gauge", "celers_limit_concurrency", "The concurrency limit of a task name.", { "task_name" })
predefine("gauge", "celers_limit_started", "Starts of a rate-limited task name in its last period.", { "task_name" })
predefine("gauge", "celers_limit_waiting", "Pending and scheduled tasks of a limited task name (every queue).",
  { "task_name" })

-- Lifecycle states only, so sum(celers_tasks) is the row count; celers_queue_size is
-- pending + scheduled (every waiting task).
local STATES = { "scheduled", "pending", "processing", "completed", "failed", "cancelled" }
local QUEUE_GAUGES = { celers_processing_queue_size = "processing",
                       celers_dlq_size = "dlq", celers_scheduled_tasks = "scheduled" }
local USED = { scheduled = true, dlq = true } -- the fields read below
for _, st in ipairs(STATES) do USED[st] = true end

--- Set the queue gauges from broker:get_statistics() output:
-- {pending=, processing=, completed=, failed=, cancelled=, scheduled=, dlq=, total=}.
-- Missing fields leave their gauges alone; a bad field changes nothing.
function metrics.update_from_statistics(queue, stats)
  if type(queue) ~= "string" then error("metrics.update_from_statistics: 'queue' must be a string", 2) end
  if type(stats) ~= "table" then error("metrics.update_from_statistics: 'stats' must be a table", 2) end
  local n = {}
  for field, v in pairs(stats) do
    n[field] = tonumber(v)
    if n[field] == nil and USED[field] then
      error(("metrics.update_from_statistics: 'stats.%s' must be a number"):format(field), 2)
    end
  end
  local q = { queue = queue }
  for metric, field in pairs(QUEUE_GAUGES) do
    if n[field] then registry[metric]:set(n[field], q) end
  end
  if n.pending then registry.celers_queue_size:set(n.pending + (n.scheduled or 0), q) end
  for _, state in ipairs(STATES) do
    if n[state] then registry.celers_tasks:set(n[state], { queue = queue, state = state }) end
  end
end

local WORKFLOW_STATES = {
  celers_workflows = { "running", "succeeded", "failed", "cancelled" },
  celers_workflow_nodes = { "waiting", "enqueued", "succeeded", "failed", "cancelled" },
}

--- Set the workflow gauges from celers.workflow.counts() output:
-- { workflows = { [state] = n }, nodes = { [state] = n } } (a state not given is 0).
function metrics.update_from_workflow_counts(counts)
  if type(counts) ~= "table" or type(counts.workflows) ~= "table" or type(counts.nodes) ~= "table" then
    error("metrics.update_from_workflow_counts: 'counts' must be { workflows = {...}, nodes = {...} }", 2)
  end
  for metric, states in pairs(WORKFLOW_STATES) do
    local by = metric == "celers_workflows" and counts.workflows or counts.nodes
    for _, state in ipairs(states) do
      local v = by[state] or 0
      if type(v) ~= "number" then
        error(("metrics.update_from_workflow_counts: the count of '%s' must be a number"):format(state), 2)
      end
      registry[metric]:set(v, { state = state })
    end
  end
end

--- Set the limit gauges from broker:list_limits() output (a list of {name=, concurrency=,
-- running=, started=, ...}); names no longer limited leave the gauges.
function metrics.update_from_limits(list)
  if type(list) ~= "table" then error("metrics.update_from_limits: 'list' must be a table", 2) end
  local running, cap, started, waiting = registry.celers_limit_running, registry.celers_limit_concurrency,
                                         registry.celers_limit_started, registry.celers_limit_waiting
  running:clear()
  cap:clear()
  started:clear()
  waiting:clear()
  for i, l in ipairs(list) do
    if type(l) ~= "table" or type(l.name) ~= "string" then
      error(("metrics.update_from_limits: 'list[%d]' must be a limit from list_limits"):format(i), 2)
    end
    local labels = { task_name = l.name }
    running:set(tonumber(l.running) or 0, labels)
    waiting:set(tonumber(l.waiting) or 0, labels)
    if l.concurrency then cap:set(l.concurrency, labels) end
    if l.rate then started:set(tonumber(l.started) or 0, labels) end
  end
end

return metrics
