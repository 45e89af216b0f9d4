--- celers.cli: the command-line tool (bin/celers is a launcher for cli.main).
--
-- cli.main(args) runs one command and returns the process exit code:
-- 0 success, 1 a runtime failure (database, file), 2 bad usage (unknown command or option,
-- missing or malformed argument).

local celers = require "celers"
local core = require "celers.core"

local cli = {}

local json = require("celers").json -- exact: numbers and [] keep their form (docs/json.md)

local GLOBAL_USAGE = "Usage: celers [--dsn DSN] [--queue NAME] [--json] COMMAND [ARGS...]"

local GLOBAL_HELP = GLOBAL_USAGE .. [[


A MySQL/MariaDB task queue. The database comes from --dsn or $CELERS_DSN
(mysql://user:password@host:port/database?queue=name; ?socket=/path for a unix socket).

Every command acts on one queue (--queue, else the DSN's, else "default"); only an
option named --all-queues widens it. Deleting commands show what they would delete and
need --yes to do it.

Commands:
  migrate                 create or upgrade the tables
  enqueue NAME [PAYLOAD]  add a task
  worker FILE             run a worker (or a pool) with the handlers FILE returns
  schedule FILE           run the recurring scheduler with the schedules FILE returns
  queues                  every queue with its task counts by state
  stats                   task counts of the queue by state
  tasks list|show         list tasks, or show one
  cancel ID               cancel a scheduled, pending or processing task
  retry ID                run a scheduled, failed or cancelled task now
  dlq list|requeue|purge  the dead-letter queue
  pause | resume          stop or restart handing out tasks of the queue (all workers)
  purge                   delete tasks by state, by task name, or all of the queue
  archive                 move old completed tasks to the history table
  recover                 send stuck processing tasks back to pending (or the DLQ)
  prune-results           delete expired and old results
  prune-workers           delete registry rows of workers not seen for a while
  maintain                run the maintenance above once, or every S seconds
  export FILE             write tasks (and optionally DLQ entries, results) as JSON Lines
  import FILE             read tasks back from JSON Lines
  health                  check the database connection and queue
  workers                 the workers of the queue, from the worker registry
  limits list|set|remove  concurrency and rate limits per task name (every queue)
  metrics                 Prometheus metrics of the queue
  workflows SUBCOMMAND    chains, groups, chords, batches: list, show, cancel, resume, prune

Options for every command:
  --dsn DSN      database to use (default: $CELERS_DSN)
  --queue NAME   queue to work on (default: the DSN's, else "default")
  --json         machine-readable output
  -h, --help     help; `celers COMMAND --help` for a command
  --version      print the version
]]

local HELP = {
  migrate = [[
Usage: celers migrate

Applies the missing migrations (idempotent; safe to run from several processes at once)
and prints those applied now.]],
  enqueue = [[
Usage: celers enqueue NAME [PAYLOAD] [options]

Adds task NAME. PAYLOAD is stored as given (a string); "-" reads it from standard input.
With --json-payload, PAYLOAD must be JSON and the handler receives it decoded.
Prints the task id.

Options:
  --json-payload         PAYLOAD is JSON (stored as a JSON payload)
  --priority N           higher runs first (default 0)
  --delay SECONDS        run no earlier than SECONDS from now
  --eta UNIX_TIME        run no earlier than this time
  --max-retries N        attempts in all, the first included (default 3)
  --timeout SECONDS      lease of each attempt (per-task timeout)
  --id UUID              task id (default: a new time-ordered UUID)
  --idempotency-key KEY  at most one task per key and queue
  --metadata JSON        a JSON object kept with the task]],
  worker = [[
Usage: celers worker FILE [options]

Runs a worker with the handlers in FILE, a Lua file that returns either a table of
handlers { task_name = function(payload, ctx) ... end, ... } or a table of worker options
{ handlers = {...}, retry = ..., batch_size = ..., store_results = ... }.
Stops gracefully on SIGTERM or SIGINT (finishes the tasks in hand, exits 0).

Options:
  --concurrency N     run N worker processes (a pool that restarts dead workers)
  --batch N           most tasks claimed at once (default 100; fewer for slow handlers)
  --lease SECONDS     lease of a claim (default: the DSN's, 300)
  --max-tasks N       exit after N tasks (per process)
  --idle-exit SECONDS exit after being idle that long
  --poll-max SECONDS  longest sleep between polls when idle (default 0.03)
  --store-results     store handler return values (celers_results)]],
  schedule = [[
Usage: celers schedule FILE [options]

Runs the recurring scheduler. FILE is a Lua file returning a list of schedules
{ { name = "cleanup", cron = "*/5 * * * *", task = "cleanup", payload = {...} }, ... }
or { schedules = {...}, catch_up = N, max_lateness = SECONDS }.
Every occurrence is enqueued exactly once, however many schedulers run.

Options:
  --once        tick once (enqueue what is due now) and exit
  --now TIME    with --once: the Unix time to tick at (default: now)]],
  stats = [[
Usage: celers stats

Task counts of the queue by state (scheduled: not yet due) and the DLQ.]],
  queues = [[
Usage: celers queues

Every queue that has tasks, dead-letter entries or a pause, with its counts by state
(scheduled: not yet due) and whether it is paused.]],
  tasks = [[
Usage: celers tasks list [--state STATE] [--limit N] [--offset N]
       celers tasks show ID

list: tasks of the queue ordered by id (default limit 20); STATE is one of scheduled,
pending, processing, completed, failed, cancelled.
show: every field of one task.]],
  cancel = [[
Usage: celers cancel ID

Cancels a scheduled, pending or processing task of the queue (a worker holding it can no
longer settle it). Exits 1 when the queue has no such task in those states.]],
  retry = [[
Usage: celers retry ID

Makes a task of the queue that waits (scheduled, or pending but not yet due, e.g. backing
off before a retry), failed or cancelled due now: state pending, its retry count kept.
Exits 1 when the queue has no such task in those states. Dead-lettered tasks come back with
`celers dlq requeue`.]],
  dlq = [[
Usage: celers dlq list [--limit N] [--offset N]
       celers dlq requeue ID
       celers dlq purge ID | --all [--all-queues] --yes

The dead-letter queue of the queue: tasks that failed for good. requeue puts an entry back
as a pending task; purge deletes one entry, or every entry of the queue with --all (of
every queue with --all-queues). --all shows the counts and deletes only with --yes.]],
  pause = [[
Usage: celers pause

Pauses the queue: no worker in any process is handed its tasks until `celers resume`.]],
  resume = [[
Usage: celers resume

Resumes a paused queue.]],
  purge = [[
Usage: celers purge --state STATE | --task-name NAME | --all [--all-queues] [--yes]

Deletes tasks of the queue: those in STATE (scheduled, pending, processing, completed,
failed, cancelled), those named NAME, or all of them. With --all-queues, of every queue.
First prints what it would delete, per queue and state; deletes only with --yes (without
it, nothing is deleted and the exit code is 2). The dead-letter queue and results are
never touched: see `celers dlq purge` and `celers prune-results`.]],
  archive = [[
Usage: celers archive [--older-than SECONDS] [--all-queues]

Moves completed tasks of the queue that completed more than SECONDS ago (default 86400)
to celers_task_history and deletes them from celers_tasks.]],
  recover = [[
Usage: celers recover [--stuck-after SECONDS] [--all-queues]

Sends processing tasks of the queue whose lease expired, or that started more than
SECONDS ago (default 3600: set it above your longest task), back to pending, or to the
dead-letter queue when their retries are spent.]],
  ["prune-results"] = [[
Usage: celers prune-results [--older-than SECONDS] [--all-queues]

Deletes results of the queue that expired (ttl) or completed more than SECONDS ago
(default 604800, 7 days).]],
  ["prune-workers"] = [[
Usage: celers prune-workers [--older-than SECONDS] [--all-queues]

Deletes worker-registry rows of the queue not refreshed for SECONDS (default 3600).]],
  maintain = [[
Usage: celers maintain [--every SECONDS] [--all-queues] [--stuck-after S] [--archive-after S]
                       [--results-after S] [--workers-after S]

Runs recover, archive, prune-results and prune-workers on the queue (every queue with
--all-queues), with the defaults of those commands, and prints what each did. With
--every, repeats every SECONDS until SIGTERM or SIGINT (the schedule of docs/admin.md:
--every 300 recovers within 5 minutes; the other steps find nothing most of the time).]],
  export = [[
Usage: celers export FILE [options]

Writes tasks of the queue to FILE as JSON Lines ("-" for standard output). Shows a progress
bar when standard error is a terminal.

Options:
  --state STATE    only tasks in STATE (repeat or comma-separate for several)
  --queues A,B     these queues instead of --queue
  --dlq            also the dead-letter queue
  --results        also the results of the exported tasks]],
  import = [[
Usage: celers import FILE [options]

Reads tasks written by `celers export` and enqueues them in batches, keeping ids,
priorities, schedule, metadata and payloads. Tasks that exist already are skipped, so an
import can be repeated. Imported tasks are pending. Shows a progress bar on a terminal.

Options:
  --on-error skip|abort  bad lines: report and go on (default), or stop there
  --batch N              tasks per batch (default 500)
  --requeue-dlq          restore exported dead-letter entries as pending tasks
  --into-queue NAME      put every task into this queue; tasks from another queue are
                         copied under new ids (the originals stay; a re-run skips them)]],
  health = [[
Usage: celers health

Checks the connection and prints the server version, latency and queue counts.
Exits 1 when unhealthy.]],
  workers = [[
Usage: celers workers [--stale-after S] [--prune S]

Lists the workers that reported to the registry (celers_workers) for the queue, most
recently seen first; AGE is seconds since the last report (workers report every 10 s).

Options:
  --stale-after S   only workers seen within the last S seconds
  --prune S         first delete the rows of workers not seen for S seconds]],
  limits = [==[
Usage: celers limits list
       celers limits set NAME [--concurrency N [--partition-by FIELD]] [--rate N [--period S]]
       celers limits remove NAME

Limits of task names, for every worker and process on the database (they are not per
queue): at most N tasks of NAME processing at once (per value of the payload field FIELD,
or JSON path $..., with --partition-by), at most N starts in any S seconds (--period,
default 1). set replaces the name's limit; list shows each limit with RUNNING (processing
now), WAITING (pending or scheduled) and STARTED (starts in the last period).]==],
  metrics = [[
Usage: celers metrics

Prints the queue's metrics in the Prometheus text format.]],
  workflows = [[
Usage: celers workflows list [--state STATE] [--limit N] [--offset N]
       celers workflows show ID
       celers workflows cancel ID
       celers workflows resume [--limit N]
       celers workflows prune --older-than SECONDS --yes

Workflows (celers.workflow: chains, groups, chords, batches), of every queue.
list: newest first (default limit 20); STATE is one of running, succeeded, failed,
cancelled. show: the workflow and each node (task, state, parents, result, error).
cancel: cancel the waiting and enqueued nodes of a running workflow and their tasks.
resume: advance the members whose task ended without advancing its workflow (a worker
that died between the two, a cancelled or dead-lettered task); workers also do it
every 10 s. --limit: nodes looked at per round (default 100); every round runs.
prune: delete the workflows that finished more than SECONDS ago, with their nodes and
edges (not their tasks); shows the count and deletes only with --yes.]],
}

-- option specs per command: name -> "flag" | "value" | "list"
local OPTS = {
  migrate = {},
  enqueue = { ["json-payload"] = "flag", priority = "value", delay = "value", eta = "value",
              ["max-retries"] = "value", timeout = "value", id = "value",
              ["idempotency-key"] = "value", metadata = "value" },
  worker = { concurrency = "value", batch = "value", lease = "value", ["max-tasks"] = "value",
             ["idle-exit"] = "value", ["poll-max"] = "value", ["store-results"] = "flag" },
  schedule = { once = "flag", now = "value" },
  stats = {}, queues = {},
  tasks = { state = "value", limit = "value", offset = "value" },
  cancel = {}, retry = {},
  dlq = { limit = "value", offset = "value", all = "flag", ["all-queues"] = "flag", yes = "flag" },
  pause = {}, resume = {},
  purge = { state = "value", ["task-name"] = "value", all = "flag", ["all-queues"] = "flag", yes = "flag" },
  archive = { ["older-than"] = "value", ["all-queues"] = "flag" },
  recover = { ["stuck-after"] = "value", ["all-queues"] = "flag" },
  ["prune-results"] = { ["older-than"] = "value", ["all-queues"] = "flag" },
  ["prune-workers"] = { ["older-than"] = "value", ["all-queues"] = "flag" },
  maintain = { every = "value", ["all-queues"] = "flag", ["stuck-after"] = "value", ["archive-after"] = "value",
               ["results-after"] = "value", ["workers-after"] = "value" },
  export = { state = "list", queues = "value", dlq = "flag", results = "flag" },
  import = { ["on-error"] = "value", batch = "value", ["requeue-dlq"] = "flag", ["into-queue"] = "value" },
  health = {}, metrics = {},
  workers = { ["stale-after"] = "value", prune = "value" },
  workflows = { state = "value", limit = "value", offset = "value", ["older-than"] = "value", yes = "flag" },
  limits = { concurrency = "value", ["partition-by"] = "value", rate = "value", period = "value" },
}
local GLOBAL_OPTS = { dsn = "value", queue = "value", json = "flag", help = "flag", version = "flag" }

local Usage = {}

local function usage_error(msg)
  error(setmetatable({ msg = msg }, Usage), 0)
end

local function out(...)
  io.stdout:write(...)
end

local parsing_command -- the command being parsed or run, for the usage line of an error

local function parse(args)
  local o = { _pos = {} }
  local command
  parsing_command = nil
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "-h" then a = "--help" end
    if a == "--" then
      for j = i + 1, #args do o._pos[#o._pos + 1] = args[j] end
      break
    elseif a:sub(1, 2) == "--" and #a > 2 then
      local name, value = a:match("^%-%-([^=]+)=(.*)$")
      name = name or a:sub(3)
      local kind = GLOBAL_OPTS[name] or (command and OPTS[command][name])
      if not kind then
        usage_error(("unknown option --%s%s"):format(name, command and (" for '" .. command .. "'") or ""))
      end
      if kind == "flag" then
        if value then usage_error("option --" .. name .. " takes no value") end
        o[name] = true
      else
        if not value then
          i = i + 1
          value = args[i]
          if value == nil then usage_error("option --" .. name .. " needs a value") end
        end
        if kind == "list" then
          o[name] = o[name] or {}
          for v in value:gmatch("[^,]+") do o[name][#o[name] + 1] = v end
        else
          o[name] = value
        end
      end
    elseif not command and a:sub(1, 1) ~= "-" then
      command = a
      if OPTS[command] then parsing_command = command end
      if not OPTS[command] then usage_error(("unknown command '%s' (see celers --help)"):format(command)) end
    elseif a:sub(1, 1) == "-" and a ~= "-" then
      usage_error("unknown option " .. a)
    else
      o._pos[#o._pos + 1] = a
    end
    i = i + 1
  end
  return command, o
end

-- At most max positional arguments (after the subcommand, if any).
local function no_extra(o, max, what)
  if #o._pos > max then
    usage_error(("unexpected argument '%s'%s"):format(o._pos[max + 1], what and (" (" .. what .. ")") or ""))
  end
end

local function number_opt(o, name, integer, min)
  local v = o[name]
  if v == nil then return nil end
  local n = tonumber(v)
  if not n or (integer and n ~= math.floor(n)) or (min and n < min) then
    usage_error(("--%s must be %s%s (got '%s')"):format(name, integer and "an integer" or "a number",
      min and (" >= " .. min) or "", v))
  end
  if integer then n = math.floor(n) end
  return n
end

local function connect_opts(o)
  local dsn = o.dsn or os.getenv("CELERS_DSN")
  if not dsn or dsn == "" then
    usage_error("no database: give --dsn or set CELERS_DSN (mysql://user:password@host/database)")
  end
  if o.queue then return { dsn = dsn, queue = o.queue } end
  return dsn
end

-- A malformed DSN is a usage error: one line, exit 2, no source location.
local function connect(o)
  local ok, b, err = pcall(celers.connect, connect_opts(o))
  if not ok then
    local msg = tostring(b):gsub("^[^\n]-:%d+: ", ""):gsub("^celers: ", ""):gsub("^connect: ", "")
    usage_error("bad database address (--dsn or CELERS_DSN): " .. msg)
  end
  if not b then return nil, err end
  return b
end

-- worker and schedule connect in their own processes, and keep trying while the server is
-- down; a DSN that can never work is refused here first (a pool would restart forever).
local function check_dsn(o)
  local b = connect(o)
  if b then b:close() end
end

-- The brokers a command acts on: the queue's, or with --all-queues one per queue.
local function each_queue(o, b)
  if not o["all-queues"] then return { b } end
  local queues, err = b:list_queues()
  if not queues then return nil, err end
  local list = {}
  for i, q in ipairs(queues) do list[i] = q.queue == b:queue() and b or b:with_queue(q.queue) end
  return list
end

---------------------------------------------------------------- output

local function fmt_time(t)
  if not t then return "-" end
  return os.date("!%Y-%m-%d %H:%M:%S", math.floor(t))
end

local function cell(v)
  if v == nil then return "-" end
  if type(v) == "table" then return json.encode(v) end
  local s = tostring(v):gsub("[\r\n\t]", " ")
  if #s > 60 then s = s:sub(1, 57) .. "..." end
  return s
end

-- Print rows (list of tables) under headers (list of {key, title[, fn]}).
local function print_table(rows, cols)
  local widths, lines = {}, {}
  for i, c in ipairs(cols) do widths[i] = #c[2] end
  for r, row in ipairs(rows) do
    lines[r] = {}
    for i, c in ipairs(cols) do
      local v = row[c[1]]
      local s = c[3] and c[3](v, row) or cell(v)
      lines[r][i] = s
      if #s > widths[i] then widths[i] = #s end
    end
  end
  local function line(vals)
    local parts = {}
    for i, v in ipairs(vals) do
      parts[i] = i == #vals and v or (v .. string.rep(" ", widths[i] - #v))
    end
    out(table.concat(parts, "  "), "\n")
  end
  local head = {}
  for i, c in ipairs(cols) do head[i] = c[2] end
  line(head)
  for _, l in ipairs(lines) do line(l) end
end

local function print_kv(t, keys)
  local w = 0
  for _, k in ipairs(keys) do if #k > w then w = #k end end
  for _, k in ipairs(keys) do
    local v = t[k]
    if k:match("_at$") and type(v) == "number" then v = fmt_time(v) .. (" (%.6f)"):format(t[k]) end
    if type(v) == "table" then v = json.encode(v) end
    out(k, string.rep(" ", w - #k), "  ", v == nil and "-" or tostring(v), "\n")
  end
end

-- --json output: every list is marked as a JSON array, so an empty one prints [] (an
-- unmarked empty table is an object, {}); numbers keep their form (docs/json.md).
local array = json.array

local function emit_json(v)
  out(json.encode(v), "\n")
end

local function is_tty(fd)
  local ok = os.execute("test -t " .. fd)
  return ok == true or ok == 0
end

local function progress_bar(label)
  if not is_tty(2) then return nil end
  local last = 0
  return function(done, total, extra)
    local now = core.monotonic()
    if now - last < 0.1 and not (total and done >= total) then return end
    last = now
    local width = 30
    local text
    if total and total > 0 then
      local frac = math.min(1, done / total)
      local fill = math.floor(frac * width + 0.5)
      text = ("\r%s [%s%s] %3d%% %s"):format(label, string.rep("#", fill), string.rep(".", width - fill),
        math.floor(frac * 100 + 0.5), extra or "")
    else
      text = ("\r%s %s"):format(label, extra or "")
    end
    io.stderr:write(text)
    io.stderr:flush()
  end
end

-- MariaDB/MySQL error numbers meaning the schema is missing or older than this version.
local NO_TABLE, NO_COLUMN, NO_ROUTINE = 1146, 1054, 1305

local function fail(err)
  io.stderr:write("celers: ", (tostring(err):gsub("^celers: ", "")), "\n")
  local errno = type(err) == "table" and err.errno
  if errno == NO_TABLE or errno == NO_COLUMN or errno == NO_ROUTINE then
    io.stderr:write("celers: the database is not migrated to this version: run `celers migrate`\n")
  end
  return 1
end

-- The task `id` of the broker's queue, or nil and the exit code after saying why (a failure,
-- no such task, or a task of another queue: commands act on their own queue only).
local function task_in_queue(b, id)
  local t, terr = b:get_task(id)
  if terr then return nil, fail(terr) end
  if not t then
    io.stderr:write("celers: no task ", id, "\n")
    return nil, 1
  end
  if t.queue ~= b:queue() then
    io.stderr:write(("celers: task %s is in queue %s, not %s (use --queue %s)\n"):format(id, t.queue, b:queue(),
      t.queue))
    return nil, 1
  end
  return t
end

local TASK_COLS = {
  { "id", "ID" }, { "name", "NAME" }, { "state", "STATE" }, { "priority", "PRI" },
  { "retry_count", "TRIES" }, { "scheduled_at", "SCHEDULED", fmt_time }, { "worker_id", "WORKER" },
  { "error", "ERROR" },
}

local function strip_task(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  c.body = nil
  if type(c.payload) == "string" and not core.utf8_valid(c.payload) then
    c.payload = nil
    c.payload_base64 = core.base64_encode(t.body)
  end
  return c
end

---------------------------------------------------------------- commands

local commands = {}

local STATE_LIST = { "scheduled", "pending", "processing", "completed", "failed", "cancelled" }
local STATES = {}
for _, st in ipairs(STATE_LIST) do STATES[st] = true end
local STATE_MSG = "--state must be scheduled, pending, processing, completed, failed or cancelled"

function commands.migrate(o)
  no_extra(o, 0)
  local b, err = connect(o)
  if not b then return fail(err) end
  local applied, merr = b:migrate()
  if not applied then return fail(merr) end
  if o.json then
    emit_json { applied = array(applied) }
  elseif #applied == 0 then
    out("the schema is up to date\n")
  else
    for _, v in ipairs(applied) do out("applied ", v, "\n") end
  end
  return 0
end

function commands.enqueue(o)
  local name, payload = o._pos[1], o._pos[2]
  if not name or name == "" then usage_error("enqueue needs a task NAME") end
  if #o._pos > 2 then usage_error("enqueue takes NAME and at most one PAYLOAD (quote it)") end
  if payload == "-" then payload = io.stdin:read("*a") end
  payload = payload or ""
  if o["json-payload"] then
    local ok, v = pcall(json.decode, payload)
    if not ok or type(v) ~= "table" then usage_error("--json-payload: PAYLOAD is not a JSON object or array") end
    payload = v
  end
  local opts = {
    priority = number_opt(o, "priority", true), delay = number_opt(o, "delay", false, 0),
    eta = number_opt(o, "eta", false, 0), max_retries = number_opt(o, "max-retries", true, 0),
    timeout = number_opt(o, "timeout", false), id = o.id, idempotency_key = o["idempotency-key"],
  }
  if opts.timeout and opts.timeout <= 0 then usage_error("--timeout must be positive") end
  if opts.id and #opts.id ~= 36 then usage_error("--id must be a 36-character UUID") end
  if o.metadata then
    local ok, v = pcall(json.decode, o.metadata)
    if not ok or type(v) ~= "table" then usage_error("--metadata must be a JSON object") end
    opts.metadata = v
  end
  local b, err = connect(o)
  if not b then return fail(err) end
  local id, created = b:enqueue(name, payload, opts)
  if not id then return fail(created) end
  if o.json then
    emit_json { id = id, created = created, queue = b:queue() }
  else
    out(id, created and "" or " (exists already: idempotency key)", "\n")
  end
  return 0
end

local function load_lua_file(path, what)
  if not path then usage_error(what .. " needs a FILE (a Lua file)") end
  local chunk, err = loadfile(path)
  if not chunk then
    io.stderr:write("celers: cannot load ", path, ": ", tostring(err), "\n")
    return nil
  end
  local ok, v = pcall(chunk)
  if not ok then
    io.stderr:write("celers: ", path, " raised: ", tostring(v), "\n")
    return nil
  end
  if type(v) ~= "table" then
    io.stderr:write("celers: ", path, " must return a table (got ", type(v), ")\n")
    return nil
  end
  return v
end

function commands.worker(o)
  no_extra(o, 1)
  local spec = load_lua_file(o._pos[1], "worker")
  if not spec then return 1 end
  local wopts = {}
  if type(spec.handlers) == "table" then
    for k, v in pairs(spec) do wopts[k] = v end
  else
    wopts.handlers = spec
  end
  wopts.batch_size = number_opt(o, "batch", true, 1) or wopts.batch_size
  wopts.lease = number_opt(o, "lease", false) or wopts.lease
  wopts.poll_max = number_opt(o, "poll-max", false, 0) or wopts.poll_max
  if o["store-results"] then wopts.store_results = true end
  local run = { max_tasks = number_opt(o, "max-tasks", true, 0), idle_exit = number_opt(o, "idle-exit", false, 0) }
  local n = number_opt(o, "concurrency", true, 1) or 1
  check_dsn(o)
  local worker = require "celers.worker"
  local copts = connect_opts(o)
  if n > 1 then
    local ok, pool = pcall(worker.pool, { processes = n, connect = copts, worker = wopts, run = run })
    if not ok then usage_error(tostring(pool):gsub("^.-: ", "", 1)) end
    local _, code = pool:run() -- how the pool stopped, not what crashed before
    return code
  end
  wopts.connect = copts
  local ok, w, err = pcall(worker.new, wopts)
  if not ok then usage_error(tostring(w)) end
  if not w then return fail(err) end
  local counts = w:run(run)
  w:close()
  if o.json then emit_json(counts) else
    io.stderr:write(("celers worker: processed %d (succeeded %d, failed %d, dead-lettered %d, lost %d)\n"):format(
      counts.processed, counts.succeeded, counts.failed, counts.dead_lettered, counts.lost))
  end
  return 0
end

function commands.schedule(o)
  no_extra(o, 1)
  local spec = load_lua_file(o._pos[1], "schedule")
  if not spec then return 1 end
  local ropts = {}
  if spec.schedules then
    for k, v in pairs(spec) do ropts[k] = v end
  else
    ropts.schedules = spec
  end
  ropts.connect = connect_opts(o)
  check_dsn(o)
  local recurring = require "celers.recurring"
  local ok, s, err = pcall(recurring.new, ropts)
  if not ok then
    io.stderr:write("celers: bad schedules: ", tostring(s), "\n")
    return 2
  end
  if not s then return fail(err) end
  if o.once then
    local done, errors = s:tick(number_opt(o, "now", false, 0))
    if o.json then
      emit_json { enqueued = array(done), errors = #errors }
    else
      for _, d in ipairs(done) do
        out(d.schedule, "  ", fmt_time(d.run_at), "  ", d.id, d.created and "" or " (already enqueued)", "\n")
      end
    end
    s:close()
    return #errors == 0 and 0 or 1
  end
  s:run()
  s:close()
  return 0
end

local STATS_KEYS = { "pending", "scheduled", "processing", "completed", "failed", "cancelled", "dlq", "total" }

function commands.stats(o)
  no_extra(o, 0)
  local b, err = connect(o)
  if not b then return fail(err) end
  local st, serr = b:get_statistics()
  if not st then return fail(serr) end
  st.queue = b:queue()
  st.paused = b:is_paused() or false
  if o.json then emit_json(st) return 0 end
  out("queue ", st.queue, st.paused and " (paused)" or "", "\n")
  print_kv(st, STATS_KEYS)
  return 0
end

function commands.tasks(o)
  local sub = o._pos[1]
  if sub ~= "list" and sub ~= "show" then usage_error("tasks needs 'list' or 'show ID'") end
  if sub == "show" and not o._pos[2] then usage_error("tasks show needs an ID") end
  no_extra(o, sub == "show" and 2 or 1)
  if o.state and sub == "show" then usage_error("--state is for tasks list") end
  if o.state and not STATES[o.state] then usage_error(STATE_MSG) end
  local b, err = connect(o)
  if not b then return fail(err) end
  if sub == "show" then
    local id = o._pos[2]
    if not id then usage_error("tasks show needs an ID") end
    local t, code = task_in_queue(b, id)
    if not t then return code end
    if o.json then emit_json(strip_task(t)) return 0 end
    print_kv(strip_task(t), { "id", "name", "queue", "state", "priority", "retry_count", "max_retries",
      "created_at", "scheduled_at", "started_at", "completed_at", "worker_id", "lease_expires_at", "timeout",
      "idempotency_key", "payload_type", "payload", "payload_base64", "metadata", "error" })
    return 0
  end
  local list, lerr = b:list_tasks { state = o.state, limit = number_opt(o, "limit", true, 0) or 20,
                                    offset = number_opt(o, "offset", true, 0) or 0 }
  if not list then return fail(lerr) end
  if o.json then
    local l = {}
    for i, t in ipairs(list) do l[i] = strip_task(t) end
    emit_json(array(l))
    return 0
  end
  print_table(list, TASK_COLS)
  return 0
end

-- Ask before deleting: print the plan (rows of {queue=, what=, count=}); without --yes
-- nothing is deleted and the command is refused (exit 2), even when the plan is empty, so
-- a script sees the same exit code whatever the counts.
local function confirm(o, plan, noun)
  local total = 0
  for _, p in ipairs(plan) do total = total + p.count end
  local verb = o.yes and "deleting" or "would delete"
  if not o.json or not o.yes then
    local stream = o.json and io.stderr or io.stdout
    if #plan == 0 or total == 0 then
      stream:write(verb, " nothing: no matching ", noun, "\n")
    else
      for _, p in ipairs(plan) do
        if p.count > 0 then
          stream:write(("%s %d %s from queue %s\n"):format(verb, p.count, p.what, p.queue))
        end
      end
    end
  end
  if not o.yes then usage_error(("nothing deleted: add --yes to delete these %d %s"):format(total, noun)) end
  return total > 0
end

function commands.dlq(o)
  local sub = o._pos[1]
  if sub ~= "list" and sub ~= "requeue" and sub ~= "purge" then
    usage_error("dlq needs 'list', 'requeue ID' or 'purge ID|--all'")
  end
  local id = o._pos[2]
  no_extra(o, sub == "list" and 1 or 2)
  if sub ~= "purge" and (o.all or o["all-queues"] or o.yes) then
    usage_error("--all, --all-queues and --yes are for dlq purge")
  end
  if sub == "purge" then
    if o.all and id then usage_error("dlq purge takes an ID or --all, not both") end
    if not o.all and not id then usage_error("dlq purge needs a DLQ ID or --all") end
    if o["all-queues"] and not o.all then usage_error("--all-queues goes with dlq purge --all") end
  elseif sub == "requeue" and not id then
    usage_error("dlq requeue needs a DLQ ID (see celers dlq list)")
  end
  local b, err = connect(o)
  if not b then return fail(err) end
  if sub == "list" then
    local list, lerr = b:list_dlq { limit = number_opt(o, "limit", true, 0) or 20,
                                    offset = number_opt(o, "offset", true, 0) or 0 }
    if not list then return fail(lerr) end
    if o.json then
      for _, d in ipairs(list) do d.body = nil end
      emit_json(array(list))
      return 0
    end
    print_table(list, { { "id", "DLQ ID" }, { "task_id", "TASK ID" }, { "name", "NAME" },
                        { "retry_count", "TRIES" }, { "failed_at", "FAILED", fmt_time }, { "error", "ERROR" } })
    return 0
  end
  if sub == "requeue" then
    local tid, rerr = b:requeue_from_dlq(id)
    if tid == nil and rerr and rerr.code ~= "not_found" then return fail(rerr) end
    if not tid then
      io.stderr:write("celers: queue ", b:queue(), " has no DLQ entry ", id, "\n")
      return 1
    end
    if o.json then emit_json { requeued = id, task_id = tid } else out("requeued ", id, " as task ", tid, "\n") end
    return 0
  end
  -- purge
  if o.all then
    local brokers, qerr = each_queue(o, b)
    if not brokers then return fail(qerr) end
    local plan = {}
    for i, qb in ipairs(brokers) do
      local st, serr = qb:get_statistics()
      if not st then return fail(serr) end
      plan[i] = { queue = qb:queue(), what = "DLQ entries", count = st.dlq }
    end
    local purged = array {}
    if confirm(o, plan, "DLQ entries") then
      for _, qb in ipairs(brokers) do
        local nr, perr = qb:purge_all_dlq()
        if not nr then return fail(perr) end
        purged[#purged + 1] = { queue = qb:queue(), dlq = nr }
        if not o.json then out("purged ", nr, " DLQ entries from queue ", qb:queue(), "\n") end
      end
    end
    if o.json then emit_json { purged = purged } end
    return 0
  end
  local found, perr = b:purge_dlq(id)
  if found == nil then return fail(perr) end
  if not found then
    io.stderr:write("celers: queue ", b:queue(), " has no DLQ entry ", id, "\n")
    return 1
  end
  if o.json then emit_json { purged = array { { queue = b:queue(), dlq = 1 } } } else out("purged ", id, "\n") end
  return 0
end

local function pause_resume(o, what)
  no_extra(o, 0)
  local b, err = connect(o)
  if not b then return fail(err) end
  local ok, perr = b[what](b)
  if not ok then return fail(perr) end
  if o.json then emit_json { queue = b:queue(), paused = what == "pause" } else
    out("queue ", b:queue(), what == "pause" and " paused" or " resumed", "\n")
  end
  return 0
end
function commands.pause(o) return pause_resume(o, "pause") end
function commands.resume(o) return pause_resume(o, "resume") end

-- What purge would delete in one queue: { {state=, count=}, ... }, rows per state column
-- (get_statistics counts a pending task that is not yet due as scheduled; purge goes by the
-- column).
local function purge_counts(qb, o)
  local counts = {}
  for _, st in ipairs(o.state and { o.state } or STATE_LIST) do
    local by, err = qb:count_by_task_name(st)
    if not by then return nil, err end
    local n = 0
    if o["task-name"] then
      n = by[o["task-name"]] or 0
    else
      for _, c in pairs(by) do n = n + c end
    end
    counts[#counts + 1] = { state = st, count = n }
  end
  return counts
end

function commands.purge(o)
  no_extra(o, 0)
  local chosen = (o.state and 1 or 0) + (o["task-name"] and 1 or 0) + (o.all and 1 or 0)
  if chosen ~= 1 then usage_error("purge needs exactly one of --state STATE, --task-name NAME, --all") end
  if o.state and not STATES[o.state] then usage_error(STATE_MSG) end
  if o["task-name"] == "" then usage_error("--task-name must not be empty") end
  local b, err = connect(o)
  if not b then return fail(err) end
  local brokers, qerr = each_queue(o, b)
  if not brokers then return fail(qerr) end
  local plan, per_queue = {}, {}
  for _, qb in ipairs(brokers) do
    local counts, cerr = purge_counts(qb, o)
    if not counts then return fail(cerr) end
    per_queue[#per_queue + 1] = { broker = qb, counts = counts }
    for _, c in ipairs(counts) do
      plan[#plan + 1] = { queue = qb:queue(), count = c.count,
                          what = c.state .. (o["task-name"] and (" '" .. o["task-name"] .. "'") or "") .. " tasks" }
    end
  end
  local purged = array {}
  if confirm(o, plan, "tasks") then
    for _, q in ipairs(per_queue) do
      local qb, nr, perr = q.broker, 0, nil
      if o["task-name"] then
        nr, perr = qb:purge_by_task_name(o["task-name"])
      else
        for _, c in ipairs(q.counts) do
          -- a state that had no rows is purged too: rows may have arrived since counting
          local n
          n, perr = qb:purge_by_state(c.state)
          if not n then break end
          nr = nr + n
        end
      end
      if perr then return fail(perr) end
      purged[#purged + 1] = { queue = qb:queue(), tasks = nr }
      if not o.json then out("purged ", nr, " tasks from queue ", qb:queue(), "\n") end
    end
  end
  if o.json then emit_json { purged = purged } end
  return 0
end

function commands.queues(o)
  no_extra(o, 0)
  local b, err = connect(o)
  if not b then return fail(err) end
  local queues, lerr = b:list_queues()
  if not queues then return fail(lerr) end
  local rows = array {}
  for _, q in ipairs(queues) do
    local st, serr = b:with_queue(q.queue):get_statistics()
    if not st then return fail(serr) end
    st.queue, st.paused = q.queue, q.paused
    rows[#rows + 1] = st
  end
  if o.json then emit_json(rows) return 0 end
  local cols = { { "queue", "QUEUE" }, { "paused", "PAUSED", function(v) return v and "yes" or "no" end } }
  for _, k in ipairs(STATS_KEYS) do cols[#cols + 1] = { k, k:upper() } end
  print_table(rows, cols)
  return 0
end

-- cancel and retry take an id of the queue; say where the task is when it is elsewhere.
local function task_command(o, what, method, done_word, states)
  local id = o._pos[1]
  if not id or id == "" then usage_error(what .. " needs a task ID") end
  no_extra(o, 1)
  local b, err = connect(o)
  if not b then return fail(err) end
  local t, code = task_in_queue(b, id)
  if not t then return code end
  local ok, merr = method(b, id)
  if ok == nil then return fail(merr) end
  if not ok then
    io.stderr:write(("celers: task %s is %s: only %s tasks can be %s\n"):format(id, t.state, states, done_word))
    return 1
  end
  if o.json then emit_json { id = id, queue = b:queue(), [done_word] = true } else out(done_word, " ", id, "\n") end
  return 0
end

function commands.cancel(o)
  return task_command(o, "cancel", function(b, id) return b:cancel(id) end, "cancelled",
    "scheduled, pending or processing")
end

function commands.retry(o)
  return task_command(o, "retry", function(b, id) return b:retry_now(id) end, "requeued",
    "scheduled (not yet due), failed or cancelled")
end

-- Maintenance steps: name, option, default seconds, run(broker, seconds) -> summary table.
local STEPS = {
  { name = "recover", opt = "stuck-after", default = 3600, run = function(qb, s)
      local requeued, dead = qb:recover_stuck_tasks(s)
      if not requeued then return nil, dead end
      return { requeued = requeued, dead_lettered = dead }
    end },
  { name = "archive", opt = "older-than", default = 86400, run = function(qb, s)
      local n, err = qb:archive_completed_tasks(s)
      if not n then return nil, err end
      return { archived = n }
    end },
  { name = "prune-results", opt = "older-than", default = 7 * 86400, run = function(qb, s)
      local n, err = qb:archive_results(s)
      if not n then return nil, err end
      return { deleted = n }
    end },
  { name = "prune-workers", opt = "older-than", default = 3600, run = function(qb, s)
      local n, err = qb:prune_workers(s)
      if not n then return nil, err end
      return { deleted = n }
    end },
}
local MAINTAIN_OPT = { recover = "stuck-after", archive = "archive-after", ["prune-results"] = "results-after",
                       ["prune-workers"] = "workers-after" }

local WORKFLOW_STATES = { running = true, succeeded = true, failed = true, cancelled = true }

function commands.workflows(o)
  local sub, id = o._pos[1], o._pos[2]
  local subs = { list = 1, show = 2, cancel = 2, resume = 1, prune = 1 }
  if not subs[sub] then usage_error("workflows needs 'list', 'show ID', 'cancel ID', 'resume' or 'prune'") end
  if subs[sub] == 2 and not id then usage_error("workflows " .. sub .. " needs a workflow ID") end
  no_extra(o, subs[sub])
  if o.state and sub ~= "list" then usage_error("--state is for workflows list") end
  if o.offset and sub ~= "list" then usage_error("--offset is for workflows list") end
  if o.limit and sub ~= "list" and sub ~= "resume" then usage_error("--limit is for workflows list and resume") end
  if (o["older-than"] or o.yes) and sub ~= "prune" then
    usage_error("--older-than and --yes are for workflows prune")
  end
  if sub == "prune" and not o["older-than"] then usage_error("workflows prune needs --older-than SECONDS") end
  if o.state and not WORKFLOW_STATES[o.state] then
    usage_error("--state must be running, succeeded, failed or cancelled")
  end
  local limit = number_opt(o, "limit", true, sub == "resume" and 1 or 0)
  local older = number_opt(o, "older-than", false, 0)
  local offset = number_opt(o, "offset", true, 0)
  local b, err = connect(o)
  if not b then return fail(err) end
  local workflow = celers.workflow
  if sub == "list" then
    local list, lerr = workflow.list(b, { state = o.state, limit = limit or 20, offset = offset or 0 })
    if not list then return fail(lerr) end
    if o.json then emit_json(list) return 0 end
    print_table(list, { { "id", "ID" }, { "kind", "KIND" }, { "name", "NAME" }, { "state", "STATE" },
                        { "nodes_total", "NODES" }, { "nodes_left", "LEFT" }, { "created_at", "CREATED", fmt_time },
                        { "finished_at", "FINISHED", fmt_time } })
    return 0
  elseif sub == "show" then
    local st, serr = workflow.status(b, id)
    if serr then return fail(serr) end
    if not st then
      io.stderr:write("celers: no workflow ", id, "\n")
      return 1
    end
    if o.json then emit_json(st) return 0 end
    print_kv(st, { "id", "kind", "name", "state", "nodes_total", "nodes_left", "created_at", "finished_at" })
    out("\n")
    print_table(st.nodes, { { "node", "NODE" }, { "name", "NAME" }, { "task_id", "TASK ID" }, { "state", "STATE" },
                            { "parents", "PARENTS", function(v) return #v > 0 and table.concat(v, ",") or "-" end },
                            { "result", "RESULT" }, { "error", "ERROR" } })
    return 0
  elseif sub == "cancel" then
    local n, cerr = workflow.cancel(b, id)
    if n == nil and cerr then return fail(cerr) end
    if n == nil then
      io.stderr:write("celers: no workflow ", id, "\n")
      return 1
    end
    if n == false then
      io.stderr:write("celers: workflow ", id, " is not running (nothing to cancel)\n")
      return 1
    end
    if o.json then emit_json { cancelled = id, nodes = n } else out("cancelled workflow ", id, " (", n, " nodes)\n") end
    return 0
  end
  if sub == "prune" then
    local n, perr = workflow.count_finished(b, older)
    if not n then return fail(perr) end
    if not o.yes then
      io.stdout:write("would delete ", n, " finished workflows (of every queue)\n")
      usage_error(("nothing deleted: add --yes to delete these %d finished workflows"):format(n))
    end
    n, perr = workflow.prune(b, older)
    if not n then return fail(perr) end
    if o.json then emit_json { pruned = n } else out("deleted ", n, " finished workflows\n") end
    return 0
  end
  -- resume: every round, until the end of the enqueued nodes
  local total, cursor = 0, nil
  repeat
    local n, c = workflow.resume(b, { limit = limit or 100, after = cursor })
    if not n then return fail(c) end
    total, cursor = total + n, c
  until not cursor
  if o.json then emit_json { advanced = total } else out("advanced ", total, " workflow nodes\n") end
  return 0
end

local function summary_text(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  local parts = {}
  for i, k in ipairs(keys) do parts[i] = k:gsub("_", " ") .. " " .. tostring(t[k]) end
  return table.concat(parts, ", ")
end

-- Run steps on the queue(s); returns a list of {step=, queue=, ...} or nil, err.
local function run_steps(o, b, steps, seconds)
  local brokers, err = each_queue(o, b)
  if not brokers then return nil, err end
  local report = array {}
  for _, step in ipairs(steps) do
    for _, qb in ipairs(brokers) do
      local r, serr = step.run(qb, seconds[step.name])
      if not r then return nil, serr end
      r.step, r.queue = step.name, qb:queue()
      report[#report + 1] = r
      if not o.json then
        local copy = {}
        for k, v in pairs(r) do if k ~= "step" and k ~= "queue" then copy[k] = v end end
        out(("%s %s: %s\n"):format(step.name, qb:queue(), summary_text(copy)))
      end
    end
  end
  return report
end

for _, step in ipairs(STEPS) do
  commands[step.name] = function(o)
    no_extra(o, 0)
    local s = number_opt(o, step.opt, false, 0) or step.default
    local b, err = connect(o)
    if not b then return fail(err) end
    local report, rerr = run_steps(o, b, { step }, { [step.name] = s })
    if not report then return fail(rerr) end
    if o.json then emit_json(report) end
    return 0
  end
end

function commands.maintain(o)
  no_extra(o, 0)
  local every = number_opt(o, "every", false, 0)
  if every and every <= 0 then usage_error("--every must be positive") end
  local seconds = {}
  for _, step in ipairs(STEPS) do
    seconds[step.name] = number_opt(o, MAINTAIN_OPT[step.name], false, 0) or step.default
  end
  local b, err = connect(o)
  if not b then return fail(err) end
  if not every then
    local report, rerr = run_steps(o, b, STEPS, seconds)
    if not report then return fail(rerr) end
    if o.json then emit_json(report) end
    return 0
  end
  core.trap_stop_signals()
  while not core.stop_signal() do
    local report, rerr = run_steps(o, b, STEPS, seconds)
    if not report then
      fail(rerr) -- logged; the next round reconnects
    elseif o.json then
      emit_json(report)
    end
    io.stdout:flush()
    local deadline = core.monotonic() + every
    while not core.stop_signal() and core.monotonic() < deadline do
      core.sleep(math.min(0.2, deadline - core.monotonic()))
    end
  end
  return 0
end

function commands.export(o)
  no_extra(o, 1)
  local path = o._pos[1]
  if not path then usage_error("export needs a FILE ('-' for standard output)") end
  if o.state then
    for _, s in ipairs(o.state) do
      if not STATES[s] then usage_error(STATE_MSG) end
    end
  end
  local b, err = connect(o)
  if not b then return fail(err) end
  local bar = progress_bar("export")
  local queues
  if o.queues then
    queues = {}
    for v in o.queues:gmatch("[^,]+") do queues[#queues + 1] = v end
  end
  local bulk = require "celers.bulk"
  local counts, eerr = bulk.export(b, path == "-" and io.stdout or path, {
    state = o.state, queues = queues, dlq = o.dlq, results = o.results,
    progress = bar and function(p) bar(p.tasks, p.total, ("%d tasks"):format(p.tasks)) end,
  })
  if bar then io.stderr:write("\n") end
  if not counts then return fail(eerr) end
  if path ~= "-" then
    if o.json then emit_json(counts) else
      out(("exported %d tasks, %d DLQ entries, %d results to %s\n"):format(counts.tasks, counts.dlq,
        counts.results, path))
    end
  end
  return 0
end

function commands.import(o)
  no_extra(o, 1)
  local path = o._pos[1]
  if not path then usage_error("import needs a FILE ('-' for standard input)") end
  local on_error = o["on-error"] or "skip"
  if on_error ~= "skip" and on_error ~= "abort" then usage_error("--on-error must be skip or abort") end
  local b, err = connect(o)
  if not b then return fail(err) end
  local bar = progress_bar("import")
  local bulk = require "celers.bulk"
  local rep, ierr, partial = bulk.import(b, path == "-" and io.stdin or path, {
    on_error = on_error, batch = number_opt(o, "batch", true, 1), requeue_dlq = o["requeue-dlq"],
    queue = o["into-queue"],
    progress = bar and function(p)
      bar(p.bytes, p.total_bytes, ("%d new, %d existing, %d bad"):format(p.inserted, p.existing, p.bad))
    end,
  })
  if bar then io.stderr:write("\n") end
  local r = rep or partial
  if r then
    for _, e in ipairs(r.errors) do io.stderr:write(("line %d: %s\n"):format(e.line, e.error)) end
    if r.bad > #r.errors then io.stderr:write(("... and %d more bad lines\n"):format(r.bad - #r.errors)) end
    if o.json then
      emit_json { lines = r.lines, tasks = r.tasks, inserted = r.inserted, existing = r.existing, bad = r.bad,
                  results = r.results, dlq = r.dlq, dlq_skipped = r.dlq_skipped, aborted = rep == nil }
    else
      out(("imported %d new tasks, %d existed already, %d bad lines%s\n"):format(r.inserted, r.existing, r.bad,
        rep and "" or " (aborted)"))
    end
  end
  if not rep then return fail(ierr) end
  return 0
end

function commands.health(o)
  no_extra(o, 0)
  local b, err = connect(o)
  if not b then
    if o.json then emit_json { healthy = false, error = tostring(err) } else
      io.stderr:write("celers: unhealthy: ", tostring(err), "\n")
    end
    return 1
  end
  local h, herr = b:check_health()
  if not h then h = { healthy = false, error = tostring(herr) } end
  h.queue = b:queue()
  if o.json then emit_json(h) else
    print_kv(h, { "healthy", "queue", "server_version", "latency_ms", "pending", "processing", "dlq", "error" })
  end
  return h.healthy and 0 or 1
end

local WORKER_COLS = {
  { "worker_id", "WORKER" }, { "hostname", "HOST" }, { "pid", "PID" },
  { "started_at", "STARTED", fmt_time }, { "age", "AGE", function(v) return ("%.1f"):format(v or 0) end },
  { "processed", "PROCESSED" }, { "failed", "FAILED" },
}

function commands.workers(o)
  no_extra(o, 0)
  local b, err = connect(o)
  if not b then return fail(err) end
  local prune = number_opt(o, "prune", false, 0)
  if prune then
    local n, perr = b:prune_workers(prune)
    if not n then return fail(perr) end
    if not o.json then out("pruned ", n, " stale worker rows\n") end
  end
  local list, lerr = b:list_workers { stale_after = number_opt(o, "stale-after", false, 0) }
  if not list then return fail(lerr) end
  if o.json then emit_json(array(list)) return 0 end
  print_table(list, WORKER_COLS)
  return 0
end

local LIMIT_COLS = {
  { "name", "NAME" }, { "concurrency", "CONCURRENCY" }, { "partition_by", "PARTITION BY" },
  { "rate", "RATE" }, { "period", "PERIOD" }, { "running", "RUNNING" }, { "waiting", "WAITING" },
  { "started", "STARTED" },
}

function commands.limits(o)
  local sub, name = o._pos[1], o._pos[2]
  if sub ~= "list" and sub ~= "set" and sub ~= "remove" then
    usage_error("limits needs 'list', 'set NAME' or 'remove NAME'")
  end
  no_extra(o, sub == "list" and 1 or 2)
  local given = o.concurrency or o["partition-by"] or o.rate or o.period
  if sub ~= "set" and given then
    usage_error("--concurrency, --partition-by, --rate and --period are for limits set")
  end
  if sub ~= "list" and (not name or name == "") then usage_error("limits " .. sub .. " needs a task NAME") end
  local limit
  if sub == "set" then
    limit = { concurrency = number_opt(o, "concurrency", true, 0), rate = number_opt(o, "rate", true, 0),
              period = number_opt(o, "period", false, 0), partition_by = o["partition-by"] }
    if not limit.concurrency and not limit.rate then usage_error("limits set needs --concurrency N or --rate N") end
    if limit.period and not limit.rate then usage_error("--period goes with --rate") end
    if limit.period == 0 then usage_error("--period must be > 0") end
    if limit.partition_by and not limit.concurrency then usage_error("--partition-by goes with --concurrency") end
  end
  local b, err = connect(o)
  if not b then return fail(err) end
  if sub == "list" then
    local list, lerr = b:list_limits()
    if not list then return fail(lerr) end
    if o.json then emit_json(array(list)) return 0 end
    print_table(list, LIMIT_COLS)
    return 0
  end
  if sub == "remove" then
    local removed, rerr = b:remove_limit(name)
    if removed == nil then return fail(rerr) end
    if not removed then
      io.stderr:write("celers: task name ", name, " has no limit\n")
      return 1
    end
    if o.json then emit_json { removed = name } else out("removed the limit of ", name, "\n") end
    return 0
  end
  -- the binding checks the rest (a partition path, the ranges) and raises: bad usage
  local ok, set, serr = pcall(b.set_limit, b, name, limit)
  if not ok then usage_error((tostring(set):gsub("^celers: set_limit: ", ""))) end
  if not set then return fail(serr) end
  if o.json then emit_json { name = name, limit = limit } else out("limited ", name, "\n") end
  return 0
end

function commands.metrics(o)
  no_extra(o, 0)
  local b, err = connect(o)
  if not b then return fail(err) end
  local st, merr = b:update_metrics()
  if not st then return fail(merr) end
  out(celers.metrics.render())
  return 0
end

--- Run the tool with the argument list; returns the exit code.
function cli.main(args)
  local ok, code = pcall(function()
    local command, o = parse(args or {})
    if o.version then
      out("celers ", celers.version, "\n")
      return 0
    end
    if not command then
      if o.help then out(GLOBAL_HELP) return 0 end
      io.stderr:write(GLOBAL_HELP)
      return 2
    end
    if o.help then
      out(HELP[command], "\n\nGlobal options: --dsn DSN, --queue NAME, --json, --help\n")
      return 0
    end
    return commands[command](o)
  end)
  if ok then return code end
  if getmetatable(code) == Usage then
    io.stderr:write("celers: ", code.msg, "\n")
    local help = parsing_command and HELP[parsing_command]
    io.stderr:write(help and help:match("^[^\n]*") or GLOBAL_USAGE, "\n")
    io.stderr:write("Run `celers ", parsing_command and (parsing_command .. " ") or "", "--help` for more.\n")
    return 2
  end
  io.stderr:write("celers: ", tostring(code), "\n")
  return 1
end

cli.commands = commands
--- Parse an argument list: the command name (or nil) and a table of the options given
-- (positional arguments in `_pos`). Raises a usage error (exit 2 in main) on a bad option.
-- @function parse
cli.parse = parse

return cli
