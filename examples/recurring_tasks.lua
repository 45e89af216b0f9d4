-- Recurring tasks: cron expressions and intervals; several schedulers may run at once and
-- every occurrence is enqueued exactly once.
--   lua5.4 examples/recurring_tasks.lua          tick three schedulers once, show the result
--   lua5.4 examples/recurring_tasks.lua --run    run a scheduler until Ctrl-C / SIGTERM
local env = dofile((arg[0]:match("^(.*)/") or ".") .. "/common.lua")
local core = require "celers.core"
local recurring = require "celers.recurring"
local dsn = env.dsn()

local schedules = {
  { name = "cleanup-every-5-min", cron = "*/5 * * * *", task = "cleanup", payload = { older_than_days = 30 } },
  { name = "nightly-report", cron = "@daily", task = "report", payload = { kind = "nightly" },
    max_lateness = 3600 },                           -- skip it when more than an hour late
  { name = "heartbeat", every = 30, task = "heartbeat",
    payload = function(run_at) return { at = run_at } end },
  { name = "weekday-mornings", cron = "0 9 * * mon-fri", task = "standup_reminder", opts = { priority = 5 } },
}

if arg[1] == "--run" then
  local s = assert(recurring.new { connect = { dsn = dsn, queue = "recurring_demo" }, schedules = schedules })
  s:run()
  s:close()
  return
end

env.connect { dsn = dsn, queue = "recurring_demo" }:close() -- tables exist
-- three schedulers (three connections, as three hosts would have) tick the same moment
local now = core.time()
local created, seen = 0, 0
for i = 1, 3 do
  local s = assert(recurring.new { connect = { dsn = dsn, queue = "recurring_demo" }, schedules = schedules,
                                   log = false })
  local done, errors = s:tick(now)
  assert(#errors == 0, "errors while ticking")
  for _, d in ipairs(done) do
    seen = seen + 1
    if d.created then created = created + 1 end
    print(("scheduler %d: %-20s %s  %s"):format(i, d.schedule, os.date("!%Y-%m-%d %H:%M:%S", d.run_at),
      d.created and ("enqueued " .. d.id) or "already enqueued by another scheduler"))
  end
  s:close()
end
print(("%d occurrences seen by three schedulers, %d tasks created"):format(seen, created))
local s = assert(recurring.new { connect = dsn, schedules = schedules, log = false })
print("next run of any schedule:", os.date("!%Y-%m-%d %H:%M:%S UTC", s:next_run(now)))
s:close()
