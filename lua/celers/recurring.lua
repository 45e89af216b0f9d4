--- celers.recurring: a scheduler that enqueues recurring tasks (cron expressions or fixed
-- intervals), exactly once per occurrence however many schedulers run.
--
--   local recurring = require "celers.recurring"
--   local s = recurring.new {
--     connect = dsn,                        -- or broker = an open broker
--     schedules = {
--       { name = "cleanup", cron = "*/5 * * * *", task = "cleanup", payload = { days = 30 } },
--       { name = "ping", every = 30, task = "ping" },
--     },
--   }
--   s:run()            -- until SIGTERM/SIGINT; or s:tick(now) yourself
--
-- Exactly once: each occurrence (schedule name, run_at) is enqueued through
-- broker:enqueue_recurring, which records it in celers_recurring_runs and enqueues the task in
-- one transaction; a second scheduler enqueuing the same occurrence gets the first task's id
-- back (created = false) and no error.
--
-- Missed occurrences (the scheduler was down, or tick() was not called for a while): only
-- the most recent `catch_up` (default 1) due occurrences are enqueued; older ones are
-- skipped. An occurrence more than `max_lateness` seconds in the past (default: no limit) is
-- never enqueued. catch_up = 0 skips everything missed: only an occurrence reached on time
-- (at most max_lateness, by default ON_TIME = 60, seconds late) is enqueued.
--
-- The first tick of a schedule (a new scheduler, or a restarted one: it keeps no state of its
-- own) follows `first_run`: "latest" (the default) enqueues the latest due occurrence under
-- the same rules, unless some scheduler already did; "next" enqueues nothing from the past
-- and waits for the next occurrence (what Celery beat does with a new entry).

local core = require "celers.core"
local celers = require "celers"
local cron = require "celers.cron"

local M = {}

local Scheduler = {}
Scheduler.__index = Scheduler

local OPTIONS = { broker = true, connect = true, schedules = true, catch_up = true,
                  max_lateness = true, first_run = true, log = true, on_event = true }
local SCHEDULE_KEYS = { name = true, cron = true, every = true, anchor = true, task = true,
                        payload = true, opts = true, catch_up = true, max_lateness = true,
                        first_run = true }
local FIRST_RUN = { latest = true, next = true }

-- With catch_up = 0, how late (seconds) an occurrence may be found and still count as on
-- time rather than missed, unless max_lateness says otherwise.
local ON_TIME = 60

local floor = math.floor

local function default_log(level, msg)
  if level ~= "debug" then
    io.stderr:write(("celers scheduler [%s] %s: %s\n"):format(os.date("!%H:%M:%S"), level, msg))
  end
end

local function check_catch_up(v, who)
  if v ~= nil and (type(v) ~= "number" or v < 0 or floor(v) ~= v) then
    error(who .. ": 'catch_up' must be a non-negative integer", 4)
  end
end

local function check_lateness(v, who)
  if v ~= nil and (type(v) ~= "number" or v ~= v or v < 0) then
    error(who .. ": 'max_lateness' must be a non-negative number of seconds", 4)
  end
end

local function check_first_run(v, who)
  if v ~= nil and not FIRST_RUN[v] then
    error(who .. ": 'first_run' must be \"latest\" or \"next\"", 4)
  end
end

--- Validate a schedule table; returns the internal form.
function M.schedule(s)
  local who = "recurring.schedule"
  if type(s) ~= "table" then error(who .. ": a schedule must be a table", 3) end
  for k in pairs(s) do
    if not SCHEDULE_KEYS[k] then error(("%s: unknown key '%s'"):format(who, tostring(k)), 3) end
  end
  if type(s.name) ~= "string" or s.name == "" then
    error(who .. ": 'name' must be a non-empty string", 3)
  end
  who = ("recurring.schedule '%s'"):format(s.name)
  if type(s.task) ~= "string" or s.task == "" then
    error(who .. ": 'task' (the task name to enqueue) must be a non-empty string", 3)
  end
  local when
  if s.cron ~= nil and s.every ~= nil then
    error(who .. ": give 'cron' or 'every', not both", 3)
  elseif s.cron ~= nil then
    if type(s.cron) ~= "string" then error(who .. ": 'cron' must be a string", 3) end
    local parsed, err = cron.parse(s.cron)
    if not parsed then error(who .. ": " .. err, 3) end
    when = parsed
  elseif s.every ~= nil then
    local e = s.every
    if type(e) ~= "number" or e < 1 or floor(e) ~= e then
      error(who .. ": 'every' must be a whole number of seconds >= 1", 3)
    end
    if s.anchor ~= nil and (type(s.anchor) ~= "number" or floor(s.anchor) ~= s.anchor) then
      error(who .. ": 'anchor' must be a whole number (Unix seconds)", 3)
    end
    when = cron.interval(e, s.anchor or 0)
  else
    error(who .. ": 'cron' or 'every' is required", 3)
  end
  local p = s.payload
  if p ~= nil and type(p) ~= "string" and type(p) ~= "table" and type(p) ~= "function" then
    error(who .. ": 'payload' must be a string, a table or a function(run_at, name)", 3)
  end
  if s.opts ~= nil and type(s.opts) ~= "table" then error(who .. ": 'opts' must be a table", 3) end
  check_catch_up(s.catch_up, who)
  check_lateness(s.max_lateness, who)
  check_first_run(s.first_run, who)
  return {
    name = s.name, task = s.task, payload = p, opts = s.opts, when = when,
    every = s.every, cron = s.cron, catch_up = s.catch_up, max_lateness = s.max_lateness,
    first_run = s.first_run,
  }
end

--- A scheduler. Options: broker or connect, schedules (list), catch_up (1),
-- max_lateness (nil), first_run ("latest" or "next"), log (function(level, msg) or false),
-- on_event(event, info).
function M.new(opts)
  if type(opts) ~= "table" then error("recurring.new: 'opts' must be a table", 2) end
  for k in pairs(opts) do
    if not OPTIONS[k] then error(("recurring.new: unknown option '%s'"):format(tostring(k)), 2) end
  end
  check_catch_up(opts.catch_up, "recurring.new")
  check_lateness(opts.max_lateness, "recurring.new")
  check_first_run(opts.first_run, "recurring.new")
  local s = setmetatable({
    schedules = {}, by_name = {}, last = {}, horizon = {},
    catch_up = opts.catch_up or 1, max_lateness = opts.max_lateness,
    first_run = opts.first_run or "latest", on_event = opts.on_event,
  }, Scheduler)
  if opts.log == false then s.log = function() end else s.log = opts.log or default_log end
  if opts.broker ~= nil then
    s.broker = opts.broker
  elseif opts.connect ~= nil then
    local b, err = celers.connect(opts.connect)
    if not b then return nil, err end
    s.broker, s.owns_broker = b, true
  else
    error("recurring.new: 'broker' or 'connect' is required", 2)
  end
  if opts.schedules ~= nil then
    if type(opts.schedules) ~= "table" then error("recurring.new: 'schedules' must be a list", 2) end
    for _, sch in ipairs(opts.schedules) do s:add(sch) end
  end
  return s
end
--- Another name of `new`.
-- @function scheduler
M.scheduler = M.new

--- Add a schedule (see the module comment for its keys). Names must be unique.
function Scheduler:add(sch)
  local s = M.schedule(sch)
  if self.by_name[s.name] then
    error(("scheduler:add: a schedule named '%s' exists already"):format(s.name), 2)
  end
  self.by_name[s.name] = s
  self.schedules[#self.schedules + 1] = s
  return self
end

-- Occurrences of `when` in (after, upto], keeping only the latest `keep`; also how many
-- were dropped.
local function occurrences(when, after, upto, keep)
  local out, dropped = {}, 0
  if keep == 0 then return out, 0 end
  if not when.seconds then -- cron: walk forward
    local t = when:next(after)
    while t and t <= upto do
      out[#out + 1] = t
      if #out > keep then
        table.remove(out, 1)
        dropped = dropped + 1
      end
      t = when:next(t)
    end
    return out, dropped
  end
  -- intervals: arithmetic
  local last = when.anchor + floor((upto - when.anchor) / when.seconds) * when.seconds
  local first = when:next(after)
  if last < first then return out, 0 end
  local total = floor((last - first) / when.seconds) + 1
  local n = math.min(total, keep)
  for i = n - 1, 0, -1 do out[#out + 1] = last - i * when.seconds end
  return out, total - n
end

-- The latest `keep` occurrences at or before `now`, with nothing known of earlier runs.
local WINDOWS = { 3600, 86400, 32 * 86400, 367 * 86400, 9 * 367 * 86400 }
local function latest(sch, now, keep, max_lateness)
  if max_lateness then return (occurrences(sch.when, now - max_lateness - 1, now, keep)) end
  local found = {}
  for _, w in ipairs(WINDOWS) do
    found = occurrences(sch.when, now - w, now, keep)
    if #found >= keep then break end
  end
  return found
end

--- Occurrences of schedule `sch` due at `now` that this tick should enqueue (a list of
-- Unix times, oldest first). Pure: changes nothing.
function Scheduler:due(sch, now)
  local keep = sch.catch_up or self.catch_up
  local lateness = sch.max_lateness or self.max_lateness
  if keep == 0 then
    -- nothing missed: only the latest occurrence, and only when it is on time
    keep, lateness = 1, lateness or ON_TIME
  end
  -- first_run = "next": nothing before the schedule's first tick counts
  local last = self.last[sch.name] or self.horizon[sch.name]
  if last == nil and (sch.first_run or self.first_run) == "next" then last = now - 1 end
  local list
  if last == nil then
    list = latest(sch, now, keep, lateness)
  else
    local after = last
    if lateness and now - lateness - 1 > after then after = now - lateness - 1 end
    local dropped
    list, dropped = occurrences(sch.when, after, now, keep)
    if dropped > 0 then
      self.log("warn", ("schedule '%s': %d missed occurrence(s) skipped (catch_up = %d)"):format(
        sch.name, dropped, keep))
    end
  end
  return list
end

local function copy(t)
  local c = {}
  for k, v in pairs(t or {}) do c[k] = v end
  return c
end

-- Enqueue one occurrence. Returns id, created or nil, err.
function Scheduler:_enqueue(sch, run_at)
  local payload = sch.payload
  if type(payload) == "function" then payload = payload(run_at, sch.name) end
  if payload == nil then payload = "" end
  local opts = copy(sch.opts)
  if opts.metadata == nil or type(opts.metadata) == "table" then
    local md = copy(opts.metadata)
    md.schedule, md.run_at = sch.name, run_at
    opts.metadata = md
  end
  -- an interval given as 30.0 makes float times; the core wants an integer on Lua 5.4
  if math.tointeger then run_at = math.tointeger(run_at) or run_at end
  return self.broker:enqueue_recurring(sch.name, run_at, sch.task, payload, opts)
end

--- Enqueue every occurrence due at `now` (Unix seconds; default: the wall clock).
-- Returns a list of {schedule=, run_at=, id=, created=} (created = false: another scheduler,
-- or an earlier run, enqueued it already) and a list of errors {schedule=, run_at=, error=}.
function Scheduler:tick(now)
  now = floor(now or core.time())
  local done, errors = {}, {}
  for _, sch in ipairs(self.schedules) do
    local due = self:due(sch, now)
    if not self.horizon[sch.name] and (sch.first_run or self.first_run) == "next" then
      self.horizon[sch.name] = now - 1
    end
    for _, run_at in ipairs(due) do
      local ok, id, created = pcall(self._enqueue, self, sch, run_at)
      if ok and id then
        self.last[sch.name] = run_at
        done[#done + 1] = { schedule = sch.name, run_at = run_at, id = id, created = created }
        if created then
          self.log("info", ("schedule '%s': enqueued %s for %s (task %s)"):format(
            sch.name, sch.task, os.date("!%Y-%m-%d %H:%M:%S", run_at), id))
        end
        if self.on_event then pcall(self.on_event, created and "enqueued" or "exists", done[#done]) end
      else
        local err = ok and created or id
        errors[#errors + 1] = { schedule = sch.name, run_at = run_at, error = err }
        self.log("error", ("schedule '%s': enqueuing the %s occurrence failed: %s"):format(
          sch.name, os.date("!%Y-%m-%d %H:%M:%S", run_at), tostring(err)))
        break -- try this schedule again on the next tick
      end
    end
  end
  return done, errors
end

--- Earliest next occurrence after `now` over all schedules (nil when there is none).
function Scheduler:next_run(now)
  now = now or core.time()
  local best
  for _, sch in ipairs(self.schedules) do
    local t = sch.when:next(now)
    if t and (not best or t < best) then best = t end
  end
  return best
end

--- Tick until SIGTERM/SIGINT: sleeps until the next occurrence (at most `max_sleep` seconds,
-- default 30, so new wall-clock jumps are noticed). opts: max_ticks, max_sleep,
-- trap_signals (true). Returns the number of tasks created.
function Scheduler:run(opts)
  opts = opts or {}
  local max_sleep = opts.max_sleep or 30
  local trap = opts.trap_signals ~= false
  if trap then core.trap_stop_signals() end
  local ticks, created = 0, 0
  self.log("info", ("scheduler started with %d schedule(s)"):format(#self.schedules))
  while not core.stop_signal() do
    local done = self:tick(core.time())
    for _, d in ipairs(done) do if d.created then created = created + 1 end end
    ticks = ticks + 1
    if opts.max_ticks and ticks >= opts.max_ticks then break end
    local now = core.time()
    local nxt = self:next_run(now)
    local wait = nxt and (nxt - now + 0.01) or max_sleep
    if wait > max_sleep then wait = max_sleep end
    if not core.stop_signal() then core.sleep(math.max(wait, 0.01)) end
  end
  if trap then core.default_stop_signals() end
  self.log("info", "scheduler stopped")
  return created
end

function Scheduler:close()
  if self.owns_broker then self.broker:close() end
end

M.Scheduler = Scheduler

return M
