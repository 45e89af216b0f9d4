--- celers.worker: run handlers for claimed tasks, and pools of worker processes.
--
--   local worker = require "celers.worker"
--   local w = worker.new {
--     connect = "mysql://celers@localhost/celers?queue=emails",  -- or broker = an open broker
--     handlers = {
--       send_email = function(payload, ctx) ... return result end,
--       resize = { fn = function(payload, ctx) ... end, retry = policy, store_result = true },
--     },
--   }
--   w:run()            -- until SIGTERM/SIGINT; or w:run{ max_tasks = 10, idle_exit = 0 }
--
-- The loop: settle what has finished and claim more (one call when the broker has
-- ack_batch_and_dequeue), run the claimed tasks in order, repeat. Finished tasks are acked in
-- batches by the completer (self.done): flushed before every claim, when the oldest has
-- waited `ack_flush` seconds, and on stop. A claim takes up to `batch_size` tasks, fewer when
-- the handlers are slow (about `prefetch_window` seconds of work).
--
-- A handler fails when it raises or returns nil plus an error. Its retry policy (celers.retry;
-- per handler, else the worker's) then decides: broker:retry(task, delay, err) or the
-- dead-letter queue. An error table with retryable = false goes to the DLQ at once (the
-- default policy's predicate). The task's own max_retries still caps the attempts.
--
-- Leases: a claim holds a task for its timeout (enqueue option `timeout`) or the worker's
-- `lease`. Lua cannot interrupt a running handler, so a per-task timeout *is* the lease: a
-- handler that runs past it loses the task to another worker, and its ack returns false
-- (counted as `lost`). Long handlers call ctx:heartbeat() now and then to extend the lease of
-- every task in hand; the worker also heartbeats between tasks.
--
-- The database going away is not fatal: a claim or settle that fails is logged, the worker
-- waits (growing, bounded) and calls again (the core reconnects on the next call); finished
-- tasks whose settle failed stay with the completer and are settled again (settles are
-- fenced, so repeating one is safe).

local core = require "celers.core"
local celers = require "celers"
local retry = require "celers.retry"
local workflow = require "celers.workflow"

local M = {}

local Worker = {}
Worker.__index = Worker

local OPTIONS = {
  broker = true, connect = true, queue = true, handlers = true, batch_size = true,
  prefetch_window = true, ack_flush = true,
  poll_min = true, poll_max = true, poll_factor = true, lease = true, heartbeat = true,
  retry = true, store_results = true, result_ttl = true, worker_id = true, on_event = true,
  log = true, recover_interval = true, report_every = true, workflow_resume = true,
}

local HANDLER_OPTIONS = { fn = true, retry = true, store_result = true, result_ttl = true }

local MAX_ERROR = 8000

-- Pauses after a failed claim or settle: from PAUSE_MIN, doubling, at most PAUSE_MAX seconds
-- (each drawn from the upper half of that, so a restarted server is not hit by every worker
-- in the same millisecond).
local PAUSE_MIN, PAUSE_MAX = 0.05, 2
-- On stop, finished tasks the database has not taken yet are offered this many times.
local STOP_SETTLE_TRIES = 5

local function opt_number(opts, key, default, min)
  local v = opts[key]
  if v == nil then return default end
  if type(v) ~= "number" or v ~= v or v < (min or 0) then
    error(("worker.new: '%s' must be a number >= %g"):format(key, min or 0), 3)
  end
  return v
end

local function as_policy(p, who)
  if p == nil then return nil end
  if getmetatable(p) == getmetatable(retry.presets.default) then return p end
  if type(p) == "string" then
    local preset = retry.presets[p]
    if not preset then error(("%s: unknown retry preset '%s'"):format(who, p), 4) end
    return preset
  end
  if type(p) == "table" then return retry.policy(p) end
  error(("%s: 'retry' must be a policy, a preset name or an options table"):format(who), 4)
end

local function normalize_handlers(handlers)
  if type(handlers) ~= "table" then
    error("worker.new: 'handlers' must be a table of task name -> function", 3)
  end
  local out = {}
  for name, h in pairs(handlers) do
    if type(name) ~= "string" then error("worker.new: handler names must be strings", 3) end
    if type(h) == "function" then
      out[name] = { fn = h }
    elseif type(h) == "table" then
      for k in pairs(h) do
        if not HANDLER_OPTIONS[k] then
          error(("worker.new: handler '%s': unknown option '%s'"):format(name, tostring(k)), 3)
        end
      end
      if type(h.fn) ~= "function" then
        error(("worker.new: handler '%s': 'fn' must be a function"):format(name), 3)
      end
      out[name] = {
        fn = h.fn, retry = as_policy(h.retry, "worker.new: handler '" .. name .. "'"),
        store_result = h.store_result, result_ttl = h.result_ttl,
      }
    else
      error(("worker.new: handler '%s' must be a function or a table {fn=...}"):format(name), 3)
    end
  end
  return out
end

local function default_log(level, msg)
  if level ~= "debug" then
    io.stderr:write(("celers worker [%s] %s: %s\n"):format(os.date("!%H:%M:%S"), level, msg))
  end
end

--- A new worker. Options:
-- broker (an open broker) or connect (DSN string or connect options; the worker opens it),
-- queue, handlers, batch_size (100: the most tasks one claim takes), prefetch_window (0.2:
-- a claim takes about as many tasks as the handlers finish in that many seconds, judged by
-- their recent run time; false: always batch_size), ack_flush (0.005: seconds a finished
-- task may wait for the batched ack while other tasks run), poll_min (0.005), poll_max
-- (0.03), poll_factor (2), lease (the broker's), heartbeat (seconds between automatic lease
-- extensions; lease/3), retry (policy, preset name or options; default:
-- retry.presets.default), store_results (false), result_ttl, worker_id, on_event(event,
-- info), log(level, message) or false, report_every (seconds between rows written to the
-- worker registry, celers_workers; 10; false: never), workflow_resume (seconds between the
-- sweeps that advance workflow members whose task ended without advancing them,
-- celers.workflow.resume; 10; false: never).
function M.new(opts)
  if type(opts) ~= "table" then error("worker.new: 'opts' must be a table", 2) end
  for k in pairs(opts) do
    if not OPTIONS[k] then error(("worker.new: unknown option '%s'"):format(tostring(k)), 2) end
  end
  local w = setmetatable({}, Worker)
  w.handlers = normalize_handlers(opts.handlers or {})
  w.batch_size = opt_number(opts, "batch_size", 100, 1)
  if math.floor(w.batch_size) ~= w.batch_size or w.batch_size > 10000 then
    error("worker.new: 'batch_size' must be an integer from 1 to 10000", 2)
  end
  if opts.prefetch_window == false then
    w.prefetch_window = false
  else
    w.prefetch_window = opt_number(opts, "prefetch_window", 0.2, 0)
  end
  w.ack_flush = opt_number(opts, "ack_flush", 0.005, 0)
  w.poll_min = opt_number(opts, "poll_min", 0.005)
  w.poll_max = opt_number(opts, "poll_max", math.max(0.03, w.poll_min))
  w.poll_factor = opt_number(opts, "poll_factor", 2, 1)
  if w.poll_max < w.poll_min then error("worker.new: 'poll_max' must be >= 'poll_min'", 2) end
  w.lease = opts.lease and opt_number(opts, "lease", nil, 0.001)
  w.heartbeat_every = opts.heartbeat and opt_number(opts, "heartbeat", nil, 0.001)
  w.retry = as_policy(opts.retry, "worker.new") or retry.presets.default
  if opts.report_every == false then
    w.report_every = false
  else
    w.report_every = opt_number(opts, "report_every", 10, 0)
  end
  if opts.workflow_resume == false then
    w.workflow_resume = false
  else
    w.workflow_resume = opt_number(opts, "workflow_resume", 10, 0)
  end
  w.store_results = opts.store_results and true or false
  w.result_ttl = opts.result_ttl
  w.on_event = opts.on_event
  if w.on_event ~= nil and type(w.on_event) ~= "function" then
    error("worker.new: 'on_event' must be a function", 2)
  end
  if opts.log == false then
    w.log = function() end
  else
    w.log = opts.log or default_log
    if type(w.log) ~= "function" then error("worker.new: 'log' must be a function or false", 2) end
  end
  if opts.broker ~= nil then
    if opts.connect ~= nil then error("worker.new: give 'broker' or 'connect', not both", 2) end
    w.broker = opts.broker
  elseif opts.connect ~= nil then
    local c = opts.connect
    if type(c) == "string" then c = { dsn = c } end
    if type(c) == "table" then
      local copy = {}
      for k, v in pairs(c) do copy[k] = v end
      if opts.queue then copy.queue = opts.queue end
      if opts.worker_id then copy.worker_id = opts.worker_id end
      if opts.recover_interval then copy.recover_interval = opts.recover_interval end
      c = copy
    elseif type(c) ~= "string" then
      error("worker.new: 'connect' must be a DSN string or an options table", 2)
    end
    local b, err = celers.connect(c)
    if not b then return nil, err end
    w.broker = b
    w.owns_broker = true
  else
    error("worker.new: 'broker' or 'connect' is required", 2)
  end
  if opts.queue and w.broker:queue() ~= opts.queue then
    w.broker = w.broker:with_queue(opts.queue)
  end
  if opts.worker_id then w.broker:worker_id(opts.worker_id) end
  w.worker_id = w.broker:worker_id()
  w.dq_opts = w.lease and { lease = w.lease } or nil
  w.counts = { processed = 0, succeeded = 0, failed = 0, retried = 0, dead_lettered = 0,
               lost = 0, unknown = 0, polls = 0, empty_polls = 0, db_errors = 0,
               snoozed = 0, cancelled = 0 }
  w.in_hand = {}
  w.heartbeat_next = 0 -- no task in hand is due for a lease extension before this time
  w.done = {}       -- finished tasks waiting for the batched ack: { task=, result= }
  w.done_since = 0  -- when the oldest of them finished
  w.unsettled = {}  -- failed tasks whose retry/reject did not reach the database
  w.unadvanced = {} -- finished workflow members whose advance did not reach the database
  w.pause = 0       -- current pause after database errors (0: none)
  w.retry_at = 0    -- no database call before this time (monotonic) after an error
  return w
end

--- Register (or replace) a handler.
function Worker:register(name, fn_or_spec)
  local t = normalize_handlers { [name] = fn_or_spec }
  self.handlers[name] = t[name]
  return self
end

function Worker:_emit(event, info)
  if self.on_event then
    local ok, err = pcall(self.on_event, event, info)
    if not ok then self.log("warn", "on_event raised: " .. tostring(err)) end
  end
end

local function error_text(err)
  local s
  if type(err) == "table" then
    s = err.message and tostring(err.message) or tostring(err)
    if err.code and err.message then s = tostring(err.code) .. ": " .. s end
  else
    s = tostring(err)
  end
  if #s > MAX_ERROR then s = s:sub(1, MAX_ERROR) .. "..." end
  return s
end
--- The text of a handler's error as stored with the task: `code: message` for an error
-- table, tostring otherwise, cut to 8000 bytes.
-- @function error_text
M.error_text = error_text

-- A database call failed: log it and pause before the next one (growing, bounded).
-- Returns nil, err for the caller to pass on.
function Worker:_db_failed(what, err)
  self.counts.db_errors = self.counts.db_errors + 1
  self.pause = self.pause == 0 and PAUSE_MIN or math.min(PAUSE_MAX, self.pause * 2)
  local wait = self.pause * (0.5 + 0.5 * math.random())
  self.retry_at = core.monotonic() + wait
  self.log("error", ("%s failed: %s; trying again in %.2fs"):format(what, error_text(err), wait))
  return nil, err
end

-- A database call worked: no more pausing.
function Worker:_db_ok()
  if self.pause > 0 then
    self.pause = 0
    self.retry_at = 0
    self.log("info", "the database answers again")
  end
end

-- May the worker call the database now (no pause after an error pending)?
function Worker:_db_ready()
  return self.retry_at == 0 or core.monotonic() >= self.retry_at
end

-- The lease of a task in hand, in seconds.
-- (The claim's own lease, lease_expires_at - started_at, covers the broker's default.)
function Worker:_lease_of(task)
  if task.timeout or self.lease then return task.timeout or self.lease end
  if task.lease_expires_at and task.started_at and task.lease_expires_at > task.started_at then
    return task.lease_expires_at - task.started_at
  end
  return 300
end

-- Extend the leases of the tasks in hand whose last extension is older than the heartbeat
-- interval (force: all of them), in one round trip (touch_batch). Tasks whose lease was lost
-- are dropped from the hand.
function Worker:_heartbeat(force)
  local now = core.monotonic()
  if not force and now < self.heartbeat_next then return true end
  local due, at = {}, {}
  local next_due = math.huge
  for i, h in ipairs(self.in_hand) do
    local every = self.heartbeat_every or self:_lease_of(h.task) / 3
    if force or now - h.touched >= every then
      due[#due + 1] = h.task
      at[#at + 1] = i
      next_due = math.min(next_due, now + every)
    else
      next_due = math.min(next_due, h.touched + every)
    end
  end
  self.heartbeat_next = next_due
  if #due == 0 then return true end
  -- nil seconds: each task's own timeout, else the broker's lease
  local n, held
  if #due == 1 then -- one pair is no range for the optimizer: touch_batch would scan
    local ok, err = self.broker:touch(due[1], self.lease)
    if ok == nil then n, held = nil, err else n, held = ok and 1 or 0, { ok } end
  else
    n, held = self.broker:touch_batch(due, self.lease)
  end
  if not n then
    self.log("warn", "heartbeat failed: " .. tostring(held))
    return true
  end
  for k = #due, 1, -1 do
    local i = at[k]
    local h = self.in_hand[i]
    if held[k] then
      h.touched = now
    elseif self:_was_cancelled(h) then
      table.remove(self.in_hand, i)
    else
      h.lost = true
      table.remove(self.in_hand, i)
      self.counts.lost = self.counts.lost + 1
      self.log("warn", ("lease of task %s (%s) was lost"):format(h.task.id, h.task.name))
      self:_emit("lost", { task = h.task })
    end
  end
  return n == #due
end

-- A task in hand that the heartbeat could not extend: was it cancelled under our claim
-- (broker:cancel keeps the claim on the row)? Then it is ours to drop, not lost. Rare: one
-- read per missed task.
function Worker:_was_cancelled(h)
  local row = self.broker:get_task(h.task.id)
  if not (row and row.state == "cancelled" and row.claim_id == h.task.claim_id) then return false end
  h.lost, h.cancelled = true, true -- nothing settles it any more
  self.counts.cancelled = self.counts.cancelled + 1
  self.log("info", ("task %s (%s) was cancelled while running"):format(h.task.id, h.task.name))
  self:_emit("cancelled", { task = h.task })
  return true
end

local Ctx = {}
Ctx.__index = Ctx

-- What ctx:snooze returns: the handler hands it back to ask for a later run.
local Snooze = {}

--- `return ctx:snooze(seconds)`: run this task again after `seconds` without using up an
-- attempt (the claim's attempt is given back; the lease is released).
function Ctx.snooze(_, seconds)
  -- seconds ~= seconds: NaN
  if type(seconds) ~= "number" or seconds ~= seconds or seconds < 0 or seconds == math.huge then
    error(("celers: snooze: 'seconds' must be a non-negative finite number (got %s)"):format(
      tostring(seconds)), 2)
  end
  return setmetatable({ seconds = seconds }, Snooze)
end

--- Was this task cancelled (broker:cancel, `celers cancel`) while it runs? Answers from the
-- lease heartbeat (one round trip when a heartbeat is due, else none), so it notices within
-- the heartbeat interval. A cancelled task is not settled whatever the handler returns.
function Ctx:cancelled()
  self.worker:_heartbeat(false)
  return self.entry.cancelled == true
end

--- Extend the lease of this task (and the other tasks in hand) when due. Returns false when
-- this task's lease was lost: another worker may already run it, so stop early.
function Ctx:heartbeat()
  self.worker:_heartbeat(false)
  return not self.entry.lost
end

--- Extend this task's lease now, by `seconds` (default: its lease). false: lease lost.
function Ctx:touch(seconds)
  if self.entry.lost then return false end
  local ok = self.worker.broker:touch(self.task, seconds or self.worker:_lease_of(self.task))
  if ok == false then self.entry.lost = true end
  if ok then self.entry.touched = core.monotonic() end
  return not self.entry.lost
end

local pack = table.pack or function(...) return { n = select("#", ...), ... } end

local function store_wanted(self, handler)
  local store = handler and handler.store_result
  if store == nil then store = self.store_results end
  return store and self.broker.store_result ~= nil
end

-- A handler returned a result: store it when asked, and hand the task to the completer.
function Worker:_succeeded(task, handler, res)
  local b = self.broker
  if store_wanted(self, handler) then
    -- A result that cannot be stored (a function in it, say) raises: it must not keep the
    -- task from being acked, or every worker it reaches would crash on it.
    local pok, sok, serr = pcall(b.store_result, b, task.id, {
      task_name = task.name, status = "success", result = res,
      ttl = handler.result_ttl or self.result_ttl,
    })
    if not pok then sok, serr = nil, sok end
    if not sok then self.log("warn", "storing the result of " .. task.id .. " failed: " .. tostring(serr)) end
  end
  local d = { task = task, result = res }
  if workflow.member(task) and not self:_advance(d) then
    self.unadvanced[#self.unadvanced + 1] = d
    return
  end
  self:_complete(d)
end

-- Hand a finished task to the completer (the batched ack).
function Worker:_complete(d)
  if #self.done == 0 then self.done_since = core.monotonic() end
  self.done[#self.done + 1] = d
end

-- A workflow member succeeded: advance its workflow before the ack (a crash in between runs
-- the member again; its advance is then a no-op). false (logged) when the database failed:
-- the task is kept, not acked, and advanced again before the next claim.
function Worker:_advance(d)
  local ok, err = workflow.succeeded(self.broker, d.task, d.result)
  if ok == nil then
    self:_db_failed("advancing the workflow of task " .. tostring(d.task.id), err)
    return false
  end
  return true
end

-- The outcome of acking the finished tasks `done` of which `acked` were acked.
function Worker:_acked(done, acked)
  local c = self.counts
  local missed = #done - acked
  c.succeeded = c.succeeded + acked
  if missed <= 0 then
    for _, d in ipairs(done) do self:_emit("success", { task = d.task, result = d.result }) end
    return
  end
  c.lost = c.lost + missed
  self.log("warn", ("%d of %d finished tasks were not acked: their leases were lost before the ack"):format(
    missed, #done))
  if not self.on_event then return end
  -- which ones (rare; only for listeners): acked rows are completed under our claim
  for _, d in ipairs(done) do
    local row = self.broker:get_task(d.task.id)
    if row and row.state == "completed" and row.claim_id == d.task.claim_id then
      self:_emit("success", { task = d.task, result = d.result })
    else
      self:_emit("lost", { task = d.task, result = d.result })
    end
  end
end

-- Hand a failed task's outcome (retry after f.delay, or the dead-letter queue) to the
-- database. Returns false (after logging) when the database did not take it.
function Worker:_settle_failure(f)
  local b = self.broker
  local c = self.counts
  local settled, outcome
  if not f.delay and not f.advanced and workflow.member(f.task) then
    -- failed for good: the node fails (what depends on it is cancelled) before the reject
    local ok, err = workflow.failed(b, f.task, f.msg)
    if ok == nil then
      self:_db_failed("failing the workflow node of task " .. tostring(f.task.id), err)
      return false
    end
    f.advanced = true
  end
  if f.delay then
    settled, outcome = b:retry(f.task, f.delay, f.msg)
  else
    settled, outcome = b:reject(f.task, { requeue = false, error = f.msg })
  end
  if settled == nil then
    self:_db_failed("settling failed task " .. tostring(f.task.id), outcome)
    return false
  end
  if not settled then
    c.lost = c.lost + 1
    self:_emit("lost", { task = f.task, error = f.err })
    return true
  end
  if outcome == "retry" then
    c.retried = c.retried + 1
    self:_emit("retry", { task = f.task, error = f.err, delay = f.delay, outcome = outcome })
  else
    c.dead_lettered = c.dead_lettered + 1
    if not f.unknown then self:_emit("dead_letter", { task = f.task, error = f.err }) end
  end
  if not f.unknown then
    self.log("info", ("task %s (%s) failed (attempt %d): %s -> %s"):format(
      f.task.id, f.task.name, f.attempt, f.msg, outcome == "retry" and "retry" or "dead-letter queue"))
  end
  if outcome ~= "retry" and store_wanted(self, f.handler) then
    b:store_result(f.task.id, { task_name = f.task.name, status = "failure", error = f.msg,
                                ttl = f.handler.result_ttl or self.result_ttl })
  end
  return true
end

-- Settle a failed task now, or keep it for later while the database is unwell.
function Worker:_settle_or_keep(f)
  if not (self:_db_ready() and self:_settle_failure(f)) then
    self.unsettled[#self.unsettled + 1] = f
  end
end

-- A handler failed: retry after the policy's delay, or dead-letter the task.
function Worker:_failed(task, handler, err)
  self.counts.failed = self.counts.failed + 1
  local policy = handler.retry or self.retry
  local attempt = task.retry_count or 1
  local f = { task = task, handler = handler, err = err, msg = error_text(err), attempt = attempt }
  if policy:should_retry(attempt, err) and attempt < (task.max_retries or 1) then
    -- the row keeps no earlier delay: decorrelated jitter draws its chain from the attempt
    f.delay = policy:delay(attempt)
  end
  self:_settle_or_keep(f)
end

-- Settle the failed tasks kept while the database was unwell, and advance the workflows of
-- the kept finished members. true when none is left.
function Worker:_settle_kept()
  while #self.unadvanced > 0 do
    if not self:_advance(self.unadvanced[1]) then return false end
    self:_complete(table.remove(self.unadvanced, 1))
  end
  while #self.unsettled > 0 do
    if not self:_settle_failure(self.unsettled[1]) then return false end
    table.remove(self.unsettled, 1)
  end
  return true
end

local function tasks_of(done)
  local list = {}
  for i, d in ipairs(done) do list[i] = d.task end
  return list
end

--- Settle what is finished now: ack the finished tasks in one round trip (ack_batch) and the
-- failed tasks kept while the database was unwell. Returns true, or nil and the error (the
-- tasks stay with the worker and are offered again on the next call).
function Worker:flush()
  if not self:_settle_kept() then return nil, "settling failed tasks failed" end
  local done = self.done
  if #done == 0 then return true end
  local n, err
  if #done == 1 then
    -- a list of one pair is no range for the optimizer: ack_batch would scan the table
    local ok
    ok, err = self.broker:ack(done[1].task)
    if ok ~= nil then n = ok and 1 or 0 end
  else
    n, err = self.broker:ack_batch(tasks_of(done))
  end
  if not n then return self:_db_failed("acking " .. #done .. " finished tasks", err) end
  self.done = {}
  self:_acked(done, n)
  return true
end

-- Settle what is finished and claim up to n tasks: one round trip with ack_batch_and_dequeue
-- (or ack_and_dequeue for one task at a time), else ack_batch then dequeue_batch.
-- Returns the list of claimed tasks, or nil and an error.
function Worker:_settle_and_claim(n)
  local b = self.broker
  if not self:_settle_kept() then return nil, "settling failed tasks failed" end
  local done = self.done
  if #done > 0 and b.ack_batch_and_dequeue then
    local acked, tasks = b:ack_batch_and_dequeue(tasks_of(done), n, self.dq_opts)
    if acked == nil then return self:_db_failed("acking and claiming", tasks) end
    self.done = {}
    self:_acked(done, acked)
    return tasks
  end
  if #done == 1 and n == 1 and b.ack_and_dequeue then
    local acked, t = b:ack_and_dequeue(done[1].task, self.dq_opts)
    if acked == nil then return self:_db_failed("acking and claiming", t) end
    self.done = {}
    self:_acked(done, acked and 1 or 0)
    return { t }
  end
  local ok, err = self:flush()
  if not ok then return nil, err end
  local tasks
  tasks, err = b:dequeue_batch(n, self.dq_opts)
  if not tasks then return self:_db_failed("claiming", err) end
  return tasks
end

--- Run the handler of one claimed task and settle it (a success is acked by the completer:
-- before the next claim, within ack_flush seconds, or by w:flush()).
function Worker:process(task, entry)
  entry = entry or { task = task, touched = core.monotonic() }
  local c = self.counts
  c.processed = c.processed + 1
  local handler = self.handlers[task.name]
  if not handler then
    c.unknown = c.unknown + 1
    local names = {}
    for n in pairs(self.handlers) do names[#names + 1] = n end
    table.sort(names)
    local msg = ("no handler for task '%s' on this worker (it handles: %s)"):format(
      task.name, #names > 0 and table.concat(names, ", ") or "nothing")
    self.log("warn", msg .. " -> dead-letter queue")
    self:_emit("unknown", { task = task, error = msg })
    self:_settle_or_keep { task = task, msg = msg, err = msg, unknown = true,
                           attempt = task.retry_count or 1 }
    return
  end
  local ctx = setmetatable({ worker = self, task = task, entry = entry, broker = self.broker,
                             attempt = task.retry_count }, Ctx)
  if workflow.member(task) and not self:_parent_results(ctx) then return end
  self:_emit("start", { task = task })
  local started = core.monotonic()
  local r = pack(pcall(handler.fn, task.payload, ctx))
  local took = core.monotonic() - started
  self.avg_run = self.avg_run and (0.8 * self.avg_run + 0.2 * took) or took
  if entry.lost then
    return -- its lease was lost (counted then): another worker may hold it now
  end
  if not r[1] then
    self:_failed(task, handler, r[2])
  elseif getmetatable(r[2]) == Snooze then
    self:_snoozed(task, r[2].seconds)
  elseif r[2] == nil and r[3] ~= nil then
    self:_failed(task, handler, r[3])
  else
    self:_succeeded(task, handler, r[2])
  end
end

-- A workflow member receives its parents' results (ctx.results, and ctx.result = the first).
-- When the database fails to give them the handler does not run: the task is snoozed for a
-- second (no attempt used), else its lease brings it back. Returns false then.
function Worker:_parent_results(ctx)
  local results, err = workflow.parent_results(self.broker, ctx.task)
  if not results then
    self:_db_failed("reading the parents' results of task " .. tostring(ctx.task.id), err)
    self.broker:snooze(ctx.task, 1)
    return false
  end
  ctx.results = results
  if results[1] ~= celers.json.null then ctx.result = results[1] end
  return true
end

-- A handler snoozed its task: back to waiting, the attempt given back (fenced by the claim).
function Worker:_snoozed(task, seconds)
  local ok, err = self.broker:snooze(task, seconds)
  if ok == nil then
    self:_db_failed("snoozing task " .. tostring(task.id), err) -- its lease brings it back
  elseif not ok then
    self.counts.lost = self.counts.lost + 1
    self:_emit("lost", { task = task })
  else
    self.counts.snoozed = self.counts.snoozed + 1
    self:_emit("snooze", { task = task, delay = seconds })
  end
end

-- Should the loop stop? (a stop signal or stop() was called)
function Worker:stopping()
  if self._stop then return true end
  local sig = core.stop_signal()
  if sig then
    self._stop = true
    self.stop_reason = sig == core.SIGINT and "SIGINT" or "SIGTERM"
    self.log("info", "received " .. self.stop_reason .. ": finishing the tasks in hand")
    return true
  end
  return false
end

--- Ask the run loop to stop after the tasks in hand.
function Worker:stop()
  self._stop = true
  self.stop_reason = self.stop_reason or "stop()"
end

-- How many tasks the next claim takes: batch_size, or fewer when the handlers are slow
-- (about prefetch_window seconds of work, so a slow worker does not sit on tasks others
-- could run; the first claim takes one, to learn the handlers' pace).
function Worker:claim_size()
  local n = self.batch_size
  if self.prefetch_window and n > 1 then
    local avg = self.avg_run
    if not avg then return 1 end
    if avg > 0 then n = math.max(1, math.min(n, math.floor(self.prefetch_window / avg))) end
  end
  return n
end

--- Settle what is finished, claim up to n tasks (default: claim_size()) and run them.
-- Returns the number claimed, or nil and an error when the database failed (logged; the
-- worker pauses before its next call, see the run loop).
function Worker:step(n)
  n = n or self:claim_size()
  self.counts.polls = self.counts.polls + 1
  local tasks, err = self:_settle_and_claim(n)
  if not tasks then return nil, err end
  self:_db_ok()
  if #tasks == 0 then
    self.counts.empty_polls = self.counts.empty_polls + 1
    return 0
  end
  local now = core.monotonic()
  local order, hand = {}, {}
  for i, t in ipairs(tasks) do
    order[i] = { task = t, touched = now }
    hand[i] = order[i]
  end
  self.in_hand = hand -- what ctx:heartbeat() and the heartbeat between tasks extend
  self.heartbeat_next = 0
  for _, entry in ipairs(order) do
    if not entry.lost then
      self:_heartbeat(false)
      if not entry.lost then self:process(entry.task, entry) end
      for i = 1, #hand do
        if hand[i] == entry then
          table.remove(hand, i)
          break
        end
      end
      -- the completer: acks wait for the next claim, unless running the next task would
      -- make them wait longer than ack_flush (judged by the handlers' recent run time)
      if #hand > 0 and #self.done > 0 and self:_db_ready()
         and core.monotonic() - self.done_since + (self.avg_run or 0) >= self.ack_flush then
        self:flush()
      end
    end
  end
  return #tasks
end

-- Sleep until `t` (monotonic) or a stop signal, whichever comes first.
local function sleep_until(self, t)
  local left = t - core.monotonic()
  if left > 0 and not self:stopping() then core.sleep(left) end
end

-- On stop: offer what is finished to the database a few times before giving up.
function Worker:_settle_on_stop()
  for _ = 1, STOP_SETTLE_TRIES do
    if #self.done == 0 and #self.unsettled == 0 and #self.unadvanced == 0 then return true end
    local wait = self.retry_at - core.monotonic()
    if wait > 0 then core.sleep(wait) end
    if self:flush() then self:_db_ok() end
  end
  local left = #self.done + #self.unsettled + #self.unadvanced
  if left > 0 then
    self.log("error", ("%d finished tasks could not be settled; they run again when their leases expire"):format(left))
    return false
  end
  return true
end

--- Process tasks until stopped. opts: max_tasks (stop after that many claimed), idle_exit
-- (return once nothing was found for that many seconds; 0 = at the first empty poll),
-- trap_signals (default true: SIGTERM/SIGINT stop the loop gracefully).
-- Database errors never end the loop: they are logged and the worker tries again after a
-- pause (growing, at most 2 s). Returns the counts table {processed=, succeeded=, failed=,
-- retried=, dead_lettered=, lost=, unknown=, polls=, empty_polls=, db_errors=}.
function Worker:run(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("worker:run: 'opts' must be a table", 2) end
  local max_tasks, idle_exit = opts.max_tasks, opts.idle_exit
  if max_tasks ~= nil and (type(max_tasks) ~= "number" or max_tasks < 0) then
    error("worker:run: 'max_tasks' must be a non-negative number", 2)
  end
  if idle_exit ~= nil and (type(idle_exit) ~= "number" or idle_exit < 0) then
    error("worker:run: 'idle_exit' must be a non-negative number of seconds", 2)
  end
  local trap = opts.trap_signals ~= false
  if trap then core.trap_stop_signals() end
  self._stop = false
  local claimed = 0
  local delay = 0
  local idle_since = nil
  self.log("info", ("worker %s started on queue %s (%d handlers)"):format(
    self.worker_id, self.broker:queue(), self:_handler_count()))
  self:_emit("started", { worker_id = self.worker_id })
  self:_report(true)
  self:_resume_workflows(true)
  while not self:stopping() do
    self:_report(false)
    self:_resume_workflows(false)
    if max_tasks and claimed >= max_tasks then break end
    local n = self:claim_size()
    if max_tasks then n = math.min(n, max_tasks - claimed) end
    local got = self:step(n)
    if got == nil then
      sleep_until(self, self.retry_at)
    elseif got > 0 then
      claimed = claimed + got
      delay, idle_since = 0, nil
    else
      local now = core.monotonic()
      idle_since = idle_since or now
      if idle_exit and now - idle_since >= idle_exit then break end
      if delay == 0 then delay = self.poll_min else delay = math.min(self.poll_max, delay * self.poll_factor) end
      if idle_exit then delay = math.min(delay, math.max(0, idle_since + idle_exit - now) + 0.001) end
      sleep_until(self, now + delay)
    end
  end
  self:_settle_on_stop()
  -- A worker that stops cleanly leaves the registry; one that dies leaves a stale row.
  if self.report_every then self.broker:remove_worker() end
  self:_emit("stopped", { worker_id = self.worker_id, reason = self.stop_reason, counts = self.counts })
  if trap then core.default_stop_signals() end
  return self.counts
end

-- Write this worker's row in the registry (celers_workers) when report_every has passed
-- (force: now). A failure is logged, never fatal: the registry is for people watching.
function Worker:_report(force)
  if not self.report_every or not self:_db_ready() then return end
  local now = core.monotonic()
  if not force and self._reported and now - self._reported < self.report_every then return end
  self._reported = now
  local names = {}
  for name in pairs(self.handlers) do names[#names + 1] = name end
  table.sort(names)
  local ok, err = self.broker:heartbeat_worker {
    processed = self.counts.processed,
    failed = self.counts.failed,
    info = { handlers = names, batch_size = self.batch_size },
  }
  if not ok then self.log("warn", "worker registry: " .. tostring(err)) end
end

-- Every workflow_resume seconds (force: now), advance a bounded number of workflow members
-- whose task ended without advancing them (celers.workflow.resume), going on where the last
-- sweep stopped. A failure is logged and left for the next sweep; a database without the
-- workflow tables (not migrated) ends the sweeps.
local NO_TABLE = 1146
function Worker:_resume_workflows(force)
  if not self.workflow_resume or not self:_db_ready() then return end
  local now = core.monotonic()
  if not force and self._resumed and now - self._resumed < self.workflow_resume then return end
  self._resumed = now
  local n, cursor = workflow.resume(self.broker, { limit = 100, after = self._resume_cursor })
  if n == nil then
    if type(cursor) == "table" and cursor.errno == NO_TABLE then
      self.workflow_resume = false
      return
    end
    self.log("warn", "workflow resume: " .. tostring(cursor))
    return
  end
  self._resume_cursor = cursor
  if n > 0 then self.log("info", ("workflow resume advanced %d nodes"):format(n)) end
end

function Worker:_handler_count()
  local n = 0
  for _ in pairs(self.handlers) do n = n + 1 end
  return n
end

--- Close the broker when the worker opened it.
function Worker:close()
  if self.owns_broker and self.broker then self.broker:close() end
end

M.Worker = Worker

------------------------------------------------------------------------------------------
-- Pools of worker processes
--
-- The parent opens no connection: each child connects anew after the fork (a MySQL
-- connection must never be shared across fork; closing the parent's copy in a child would
-- send COM_QUIT on the parent's socket). Children end with os.exit(code, false), which runs
-- no __gc at all, so even a broker the caller opened before the fork is left alone - but do
-- not *use* such a broker in a child: pass connect options (a DSN) to the pool.

local Pool = {}
Pool.__index = Pool

local POOL_OPTIONS = {
  processes = true, connect = true, worker = true, setup = true, restart = true,
  restart_delay = true, stop_timeout = true, run = true, log = true, on_event = true,
}

--- A pool of `processes` worker processes. Options: connect (DSN or connect options, each
-- child connects with it), worker (options for worker.new in the child, without broker/
-- connect), setup (function(index) -> worker options, run in the child instead of `worker`),
-- run (options of worker:run in the child), restart (true: restart children that crash or
-- are killed; one that exits with code 0 has finished on purpose and is not restarted),
-- restart_delay (1 s), stop_timeout (30 s: then SIGKILL), log, on_event(event, info).
function M.pool(opts)
  if type(opts) ~= "table" then error("worker.pool: 'opts' must be a table", 2) end
  for k in pairs(opts) do
    if not POOL_OPTIONS[k] then error(("worker.pool: unknown option '%s'"):format(tostring(k)), 2) end
  end
  local n = opts.processes or 2
  if type(n) ~= "number" or n < 1 or math.floor(n) ~= n then
    error("worker.pool: 'processes' must be a positive integer", 2)
  end
  if type(opts.connect) ~= "string" and type(opts.connect) ~= "table" then
    error("worker.pool: 'connect' must be a DSN string or connect options "
      .. "(not a broker: each process connects itself)", 2)
  end
  if opts.worker ~= nil and type(opts.worker) ~= "table" then
    error("worker.pool: 'worker' must be a table of worker options", 2)
  end
  if opts.setup ~= nil and type(opts.setup) ~= "function" then
    error("worker.pool: 'setup' must be a function", 2)
  end
  if opts.worker == nil and opts.setup == nil then
    error("worker.pool: give 'worker' options (with handlers) or a 'setup' function", 2)
  end
  local log = opts.log
  if log == false then log = function() end end
  return setmetatable({
    processes = n, connect = opts.connect, worker_opts = opts.worker, setup = opts.setup,
    run_opts = opts.run or {}, restart = opts.restart ~= false,
    restart_delay = opts.restart_delay or 1, stop_timeout = opts.stop_timeout or 30,
    log = log or default_log, on_event = opts.on_event,
    children = {}, -- pid -> slot index
    slots = {},    -- index -> { pid=, started=, restarts= }
    exits = {},
  }, Pool)
end

function Pool:_emit(event, info)
  if self.on_event then pcall(self.on_event, event, info) end
end

-- In the child: build the worker, run it, exit.
function Pool:_child(index)
  core.default_stop_signals()
  core.trap_stop_signals()
  local code = 0
  local ok, err = pcall(function()
    local wopts = {}
    local src = self.setup and self.setup(index) or self.worker_opts
    for k, v in pairs(src) do wopts[k] = v end
    wopts.connect = self.connect
    if not wopts.worker_id then
      wopts.worker_id = ("%s:%d:w%d"):format(core.hostname(), core.getpid(), index)
    end
    -- a database that is down (restarting) is waited for, not a crash
    local w, werr = M.new(wopts)
    local pause = PAUSE_MIN
    while not w and type(werr) == "table" and werr.retryable and not core.stop_signal() do
      io.stderr:write(("celers pool: worker %d (pid %d) cannot connect yet (%s); trying again in %.2fs\n"):format(
        index, core.getpid(), tostring(werr), pause))
      core.sleep(pause)
      pause = math.min(PAUSE_MAX, pause * 2)
      w, werr = M.new(wopts)
    end
    if not w then
      if core.stop_signal() then return end -- stopped while waiting: nothing in hand
      error(werr, 0)
    end
    local run_opts = {}
    for k, v in pairs(self.run_opts) do run_opts[k] = v end
    run_opts.trap_signals = false
    w:run(run_opts)
    w:close()
  end)
  if not ok then
    io.stderr:write(("celers pool: worker %d (pid %d) failed: %s\n"):format(index, core.getpid(), tostring(err)))
    code = 1
  end
  io.stdout:flush()
  io.stderr:flush()
  os.exit(code, false) -- no __gc: nothing inherited from the parent is closed from here
end

function Pool:_spawn(index)
  io.stdout:flush()
  io.stderr:flush()
  local pid = core.fork()
  if pid == 0 then self:_child(index) end
  local slot = self.slots[index] or { restarts = -1 }
  slot.pid, slot.started = pid, core.monotonic()
  slot.restarts = slot.restarts + 1
  self.slots[index] = slot
  self.children[pid] = index
  self.log("info", ("started worker %d (pid %d)"):format(index, pid))
  self:_emit("spawn", { index = index, pid = pid })
  return pid
end

--- Start the children (returns at once; see :supervise, or use :run).
function Pool:start()
  for i = 1, self.processes do self:_spawn(i) end
  return self
end

--- Pids of the live children, in slot order.
function Pool:pids()
  local out = {}
  for i = 1, self.processes do
    local s = self.slots[i]
    if s and s.pid then out[#out + 1] = s.pid end
  end
  return out
end

--- Number of live children.
function Pool:alive()
  local n = 0
  for _ in pairs(self.children) do n = n + 1 end
  return n
end

-- Reap children that ended; restart them unless stopping. Returns how many ended.
function Pool:_reap(stopping)
  local ended = 0
  while true do
    local pid, how, code = core.wait(nil, true)
    if not pid or pid == 0 then break end
    local index = self.children[pid]
    if index then
      self.children[pid] = nil
      ended = ended + 1
      self.slots[index].pid = nil
      self.exits[#self.exits + 1] = { index = index, pid = pid, how = how, code = code,
                                      stopping = stopping or nil }
      self:_emit("exit", { index = index, pid = pid, how = how, code = code })
      -- exit code 0 means the worker finished on purpose (max_tasks, idle_exit, a SIGTERM
      -- sent to it alone): it is not restarted. A crash or a kill is.
      local clean = how == "exited" and code == 0
      if not stopping then
        local again = self.restart and not clean
        self.log(clean and "info" or "warn", ("worker %d (pid %d) %s %d%s"):format(
          index, pid, how == "exited" and "exited with code" or "was killed by signal", code,
          again and "; restarting it" or ""))
        if again then self.slots[index].restart_at = core.monotonic() + self.restart_delay end
      end
    end
  end
  if not stopping then
    local now = core.monotonic()
    for i = 1, self.processes do
      local s = self.slots[i]
      if s and not s.pid and s.restart_at and now >= s.restart_at then
        s.restart_at = nil
        self:_spawn(i)
      end
    end
  end
  return ended
end

function Pool:_restarts_pending()
  for i = 1, self.processes do
    if self.slots[i] and self.slots[i].restart_at then return true end
  end
  return false
end

--- Send SIGTERM to every child and wait for them (SIGKILL after stop_timeout seconds).
function Pool:stop()
  for pid in pairs(self.children) do core.kill(pid, core.SIGTERM) end
  local deadline = core.monotonic() + self.stop_timeout
  while next(self.children) do
    self:_reap(true)
    if not next(self.children) then break end
    if core.monotonic() > deadline then
      for pid in pairs(self.children) do
        self.log("warn", ("worker pid %d did not stop in %gs: SIGKILL"):format(pid, self.stop_timeout))
        core.kill(pid, core.SIGKILL)
        self.forced = true
      end
      deadline = math.huge
    end
    core.sleep(0.05)
  end
end

-- The exit code that says how the pool stopped (not what happened before): 0 when it was
-- asked to stop (signal, until_fn) and every worker stopped cleanly, or when every worker
-- finished on its own with code 0; 1 when a worker had to be killed at the stop, failed
-- while stopping, or (restart = false) ended in a crash that left the pool without workers.
function Pool:_exit_code(asked)
  if self.forced then return 1 end
  local last = {}
  for _, e in ipairs(self.exits) do
    local clean = e.how == "exited" and e.code == 0
    -- a worker forked just before the stop may die of our SIGTERM before it traps it
    if e.stopping and not clean and not (e.how == "killed" and e.code == core.SIGTERM) then
      return 1
    end
    last[e.index] = clean
  end
  if not asked then
    for _, clean in pairs(last) do
      if not clean then return 1 end
    end
  end
  return 0
end

--- Run the pool until SIGTERM/SIGINT, until opts.until_fn(pool) returns true, or until every
-- worker has exited on its own (run options max_tasks/idle_exit): start the children,
-- restart those that crash, then stop them all gracefully. opts.on_tick(pool) runs about every
-- opts.tick seconds (1). Returns a list of exits {index=, pid=, how=, code=, stopping=} and
-- the exit code for the process: 0 when the pool stopped cleanly, whatever crashed and was
-- restarted before; 1 when a worker had to be killed or failed while stopping, or crashed
-- with restart = false.
function Pool:run(opts)
  opts = opts or {}
  core.trap_stop_signals()
  if not next(self.children) then self:start() end
  local tick = opts.tick or 1
  local last_tick = core.monotonic()
  local asked = false
  while not core.stop_signal() do
    self:_reap(false)
    if opts.until_fn and opts.until_fn(self) then
      asked = true
      break
    end
    if not next(self.children) and not self:_restarts_pending() then break end -- all done
    if opts.on_tick and core.monotonic() - last_tick >= tick then
      last_tick = core.monotonic()
      opts.on_tick(self)
    end
    core.sleep(0.1)
  end
  local sig = core.stop_signal()
  asked = asked or sig ~= nil
  self.log("info", ("stopping %d workers%s"):format(self:alive(), sig and " (signal " .. sig .. ")" or ""))
  self:stop()
  core.default_stop_signals()
  return self.exits, self:_exit_code(asked)
end

M.Pool = Pool

return M
