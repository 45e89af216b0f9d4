--- make chaos: 4 worker processes drain 20,000 tasks while this driver SIGKILLs a random worker
-- 20 times and restarts the private server 3 times (once SIGKILL of mariadbd, twice clean).
-- At the end every task must be completed or in the dead-letter queue, none pending or
-- processing, none lost (ids counted). Each run of a handler is recorded as a row (a task in
-- queue chaos_runs holding the task's id), so the report says how many tasks ran twice.
-- Exit status: 0 when nothing was lost, 1 otherwise. Run through scripts/chaos.sh.
--
--   CHAOS_TASKS (20000), CHAOS_KILLS (20), CHAOS_DEADLINE (300 s for the whole run)
local celers = require "celers"
local core = require "celers.core"
local helper = require "spec.helper"

local TASKS = tonumber(os.getenv("CHAOS_TASKS") or "20000")
local KILLS = tonumber(os.getenv("CHAOS_KILLS") or "20")
local DEADLINE = tonumber(os.getenv("CHAOS_DEADLINE") or "300")
local WORKERS = 4
local LEASE = 5 -- a killed worker's tasks come back after this many seconds

local mode, dsn = arg[1], arg[2]
local connect = { dsn = dsn, queue = "chaos", recover_interval = 1 }

if mode == "pool" then
  -- the worker processes: defaults but a short lease; the handler records its run first
  local rec
  local pool = celers.worker.pool {
    processes = WORKERS, connect = connect, restart_delay = 0.2,
    setup = function()
      return {
        lease = LEASE, report_every = false,
        handlers = { chaos = function(_, ctx)
          rec = rec or assert(celers.connect { dsn = dsn, queue = "chaos_runs" })
          core.sleep(0.001)
          local id, err = rec:enqueue("ran", ctx.task.id)
          if not id then error(err) end -- a run that could not be recorded fails: retried
          return true
        end },
      }
    end,
  }
  local f = assert(io.open(arg[3], "w"))
  f:write(core.getpid(), "\n")
  f:close()
  local _, code = pool:run()
  os.exit(code, false)
end

-- the driver
local started = core.monotonic()
local root = helper.root
local function elapsed() return core.monotonic() - started end
local function say(fmt, ...) io.write(("[%6.1fs] "):format(elapsed()), fmt:format(...), "\n"); io.flush() end
local function sh(cmd)
  local ok = os.execute(cmd)
  return ok == true or ok == 0
end
local function n(sql)
  for _ = 1, 50 do -- the server may be restarting
    local ok, v = pcall(helper.scalar, dsn, sql)
    if ok then return tonumber(v) end
    core.sleep(0.2)
  end
  error("the server does not answer")
end

local broker = assert(celers.connect(connect))
assert(broker:migrate())
local ids = {}
local batch = {}
for i = 1, TASKS do
  batch[#batch + 1] = { name = "chaos", payload = tostring(i), max_retries = 50 }
  if #batch == 500 or i == TASKS then
    local got = assert(broker:enqueue_batch(batch))
    for _, id in ipairs(got) do ids[#ids + 1] = id end
    batch = {}
  end
end
broker:close()
say("enqueued %d tasks", #ids)

local pidfile = os.tmpname()
local log = root .. "/.db/chaos-workers.log"
os.remove(pidfile)
sh(("%s %s pool %s %s >%s 2>&1 &"):format(helper.lua_cmd(), helper.shell_quote(root .. "/bench/chaos.lua"),
  helper.shell_quote(dsn), helper.shell_quote(pidfile), helper.shell_quote(log)))
local pool_pid
for _ = 1, 100 do
  local f = io.open(pidfile)
  if f then pool_pid = tonumber(f:read("*l")); f:close() end
  if pool_pid then break end
  core.sleep(0.1)
end
assert(pool_pid, "the pool did not start; see " .. log)
os.remove(pidfile)

local function children()
  local p = io.popen("pgrep -P " .. pool_pid)
  local list = {}
  for line in p:lines() do list[#list + 1] = tonumber(line) end
  p:close()
  return list
end

local function unfinished()
  return n("SELECT COUNT(*) FROM celers_tasks WHERE queue = 'chaos' AND state NOT IN ('completed', 'cancelled')")
end

local db = root .. "/scripts/db.sh"
local restarts = { [5] = "kill", [11] = "clean", [17] = "clean" }
local kills, server_kills, clean_restarts = 0, 0, 0
math.randomseed(os.time())
for k = 1, KILLS do
  -- spread the events over the drain: event k when about k/(KILLS+2) of the tasks are done
  -- (at most 10 s apart, at least 0.3 s)
  local target = TASKS * (1 - k / (KILLS + 2))
  local t0 = core.monotonic()
  core.sleep(0.3)
  while unfinished() > target and core.monotonic() - t0 < 10 do core.sleep(0.2) end
  local list = children()
  if #list > 0 then
    local victim = list[math.random(#list)]
    core.kill(victim, core.SIGKILL)
    kills = kills + 1
  end
  local r = restarts[k]
  if r == "kill" then
    local f = io.open(root .. "/.db/mysqld.pid")
    local pid = f and tonumber(f:read("*l"))
    if f then f:close() end
    assert(pid, "no mariadbd pid file")
    sh("kill -KILL " .. pid)
    core.sleep(1)
    assert(sh(helper.shell_quote(db) .. " start >/dev/null"), "the server did not start again")
    server_kills = server_kills + 1
  elseif r == "clean" then
    assert(sh(helper.shell_quote(db) .. " restart >/dev/null"), "the server did not restart")
    clean_restarts = clean_restarts + 1
  end
  say("worker kill %d/%d%s; %d tasks not finished", kills, KILLS,
    r and (r == "kill" and ", mariadbd SIGKILLed and started" or ", server restarted cleanly") or "",
    unfinished())
end

-- drain the rest
local left = unfinished()
while left > 0 and elapsed() < DEADLINE do
  core.sleep(1)
  left = unfinished()
end
say("drained: %d tasks not finished", left)
core.kill(pool_pid, core.SIGTERM)
for _ = 1, 400 do
  if not sh("kill -0 " .. pool_pid .. " 2>/dev/null") then break end
  core.sleep(0.1)
end

-- the count
local done = {}
for _, row in ipairs(helper.query(dsn, "SELECT id, state FROM celers_tasks WHERE queue = 'chaos'")) do
  done[row[1]] = row[2]
end
for _, row in ipairs(helper.query(dsn, "SELECT task_id FROM celers_dead_letter_queue WHERE task_name = 'chaos'")) do
  done[row[1]] = done[row[1]] and "twice" or "dlq"
end
local runs = {}
local RUNS = "SELECT payload, COUNT(*) FROM celers_tasks WHERE queue = 'chaos_runs' GROUP BY payload"
for _, row in ipairs(helper.query(dsn, RUNS)) do
  runs[row[1]] = tonumber(row[2])
end
local completed, dlq, lost, unrun, twice, most = 0, 0, 0, 0, 0, 0
for _, id in ipairs(ids) do
  local s = done[id]
  if s == "completed" then completed = completed + 1
  elseif s == "dlq" then dlq = dlq + 1
  else lost = lost + 1 end
  local r = runs[id] or 0
  if s == "completed" and r == 0 then unrun = unrun + 1 end
  if r > 1 then twice = twice + 1 end
  if r > most then most = r end
end
local held = n("SELECT COUNT(*) FROM celers_tasks WHERE queue = 'chaos'"
  .. " AND state IN ('pending', 'processing', 'scheduled')")
say("workers SIGKILLed %d, mariadbd SIGKILLed %d, clean server restarts %d", kills, server_kills, clean_restarts)
say("tasks %d: completed %d, dead-lettered %d, pending/processing %d, lost %d, completed without a run %d",
  #ids, completed, dlq, held, lost, unrun)
say("ran more than once: %d tasks (at most %d runs of one task); worker log: %s", twice, most, log)
-- workers that ended on their own (not by our SIGKILL): a database error must not do that
local crashes = 0
for line in io.lines(log) do
  if line:find("exited with code [1-9]") then crashes = crashes + 1 end
end
say("worker processes that exited with an error (not killed by the driver): %d", crashes)
local ok = lost == 0 and held == 0 and unrun == 0 and completed + dlq == #ids
say(ok and "OK: nothing lost" or "FAILED: tasks were lost")
os.exit(ok and 0 or 1)
