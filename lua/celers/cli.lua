-- celers.cli: the command-line tool (bin/celers is a launcher for cli.main).
--
-- cli.main(args) runs one command and returns the process exit code:
-- 0 success, 1 a runtime failure (database, file), 2 bad usage (unknown command or option,
-- missing or malformed argument).

local celers = require "celers"
local core = require "celers.core"

local cli = {}

local json = require("celers").json -- exact: numbers and [] keep their form (docs/json.md)

local GLOBAL_HELP = [[
Usage: celers [--dsn DSN] [--queue NAME] [--json] COMMAND [ARGS...]

A MySQL/MariaDB task queue. The database comes from --dsn or $CELERS_DSN
(mysql://user:password@host:port/database?queue=name; ?socket=/path for a unix socket).

Commands:
  migrate                 create or upgrade the tables
  enqueue NAME [PAYLOAD]  add a task
  worker FILE             run a worker (or a pool) with the handlers FILE returns
  schedule FILE           run the recurring scheduler with the schedules FILE returns
  stats                   task counts by state
  tasks list|show         list tasks, or show one
  dlq list|requeue|purge  the dead-letter queue
  pause | resume          stop or restart handing out tasks of the queue (all workers)
  purge                   delete tasks by state or task name
  export FILE             write tasks (and optionally DLQ entries, results) as JSON Lines
  import FILE             read tasks back from JSON Lines
  health                  check the database connection and queue
  workers                 the workers of the queue, from the worker registry
  metrics                 Prometheus metrics of the queue

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
  tasks = [[
Usage: celers tasks list [--state STATE] [--limit N] [--offset N]
       celers tasks show ID

list: tasks of the queue ordered by id (default limit 20).
show: every field of one task.]],
  dlq = [[
Usage: celers dlq list [--limit N] [--offset N]
       celers dlq requeue ID
       celers dlq purge ID | --all

The dead-letter queue: tasks that failed for good. requeue puts an entry back as a pending
task; purge deletes one entry, or all with --all.]],
  pause = [[
Usage: celers pause

Pauses the queue: no worker in any process is handed its tasks until `celers resume`.]],
  resume = [[
Usage: celers resume

Resumes a paused queue.]],
  purge = [[
Usage: celers purge --state STATE | --task-name NAME | --all --yes

Deletes tasks of the queue: those in STATE (scheduled, pending, processing, completed, failed,
cancelled), those named NAME, or all of them (--all needs --yes). Prints how many.]],
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
  metrics = [[
Usage: celers metrics

Prints the queue's metrics in the Prometheus text format.]],
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
  stats = {},
  tasks = { state = "value", limit = "value", offset = "value" },
  dlq = { limit = "value", offset = "value", all = "flag" },
  pause = {}, resume = {},
  purge = { state = "value", ["task-name"] = "value", all = "flag", yes = "flag" },
  export = { state = "list", queues = "value", dlq = "flag", results = "flag" },
  import = { ["on-error"] = "value", batch = "value", ["requeue-dlq"] = "flag", ["into-queue"] = "value" },
  health = {}, metrics = {},
  workers = { ["stale-after"] = "value", prune = "value" },
}
local GLOBAL_OPTS = { dsn = "value", queue = "value", json = "flag", help = "flag", version = "flag" }

local Usage = {}

local function usage_error(msg)
  error(setmetatable({ msg = msg }, Usage), 0)
end

local function out(...)
  io.stdout:write(...)
end

local function parse(args)
  local o = { _pos = {} }
  local command
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

local function connect(o)
  local b, err = celers.connect(connect_opts(o))
  if not b then return nil, err end
  return b
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

local function fail(err)
  io.stderr:write("celers: ", tostring(err):gsub("^celers: ", ""), "\n")
  return 1
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
  if type(c.payload) == "string" and not require("celers.bulk").valid_utf8(c.payload) then
    c.payload = nil
    c.payload_base64 = require("celers.bulk").base64_encode(t.body)
  end
  return c
end

---------------------------------------------------------------- commands

local commands = {}

function commands.migrate(o)
  local b, err = connect(o)
  if not b then return fail(err) end
  local applied, merr = b:migrate()
  if not applied then return fail(merr) end
  if o.json then
    emit_json { applied = applied }
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
  local spec = load_lua_file(o._pos[1], "schedule")
  if not spec then return 1 end
  local ropts = {}
  if spec.schedules then
    for k, v in pairs(spec) do ropts[k] = v end
  else
    ropts.schedules = spec
  end
  ropts.connect = connect_opts(o)
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
      emit_json { enqueued = done, errors = #errors }
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
  local b, err = connect(o)
  if not b then return fail(err) end
  if sub == "show" then
    local id = o._pos[2]
    if not id then usage_error("tasks show needs an ID") end
    local t, terr = b:get_task(id)
    if terr then return fail(terr) end
    if not t then
      io.stderr:write("celers: no task ", id, "\n")
      return 1
    end
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
    emit_json(l)
    return 0
  end
  print_table(list, TASK_COLS)
  return 0
end

function commands.dlq(o)
  local sub = o._pos[1]
  if sub ~= "list" and sub ~= "requeue" and sub ~= "purge" then
    usage_error("dlq needs 'list', 'requeue ID' or 'purge ID|--all'")
  end
  local b, err = connect(o)
  if not b then return fail(err) end
  if sub == "list" then
    local list, lerr = b:list_dlq { limit = number_opt(o, "limit", true, 0) or 20,
                                    offset = number_opt(o, "offset", true, 0) or 0 }
    if not list then return fail(lerr) end
    if o.json then
      for _, d in ipairs(list) do d.body = nil end
      emit_json(list)
      return 0
    end
    print_table(list, { { "id", "DLQ ID" }, { "task_id", "TASK ID" }, { "name", "NAME" },
                        { "retry_count", "TRIES" }, { "failed_at", "FAILED", fmt_time }, { "error", "ERROR" } })
    return 0
  end
  local id = o._pos[2]
  if sub == "requeue" then
    if not id then usage_error("dlq requeue needs a DLQ ID (see celers dlq list)") end
    local tid, rerr = b:requeue_from_dlq(id)
    if tid == nil and rerr then return fail(rerr) end
    if not tid then
      io.stderr:write("celers: no DLQ entry ", id, "\n")
      return 1
    end
    if o.json then emit_json { requeued = id, task_id = tid } else out("requeued ", id, "\n") end
    return 0
  end
  -- purge
  if o.all then
    if id then usage_error("dlq purge takes an ID or --all, not both") end
    local nr, perr = b:purge_all_dlq()
    if not nr then return fail(perr) end
    if o.json then emit_json { purged = nr } else out("purged ", nr, " DLQ entries\n") end
    return 0
  end
  if not id then usage_error("dlq purge needs a DLQ ID or --all") end
  local found, perr = b:purge_dlq(id)
  if found == nil then return fail(perr) end
  if not found then
    io.stderr:write("celers: no DLQ entry ", id, "\n")
    return 1
  end
  if o.json then emit_json { purged = 1 } else out("purged ", id, "\n") end
  return 0
end

local function pause_resume(o, what)
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

local STATES = { scheduled = true, pending = true, processing = true, completed = true, failed = true,
  cancelled = true }

function commands.purge(o)
  local chosen = (o.state and 1 or 0) + (o["task-name"] and 1 or 0) + (o.all and 1 or 0)
  if chosen ~= 1 then usage_error("purge needs exactly one of --state STATE, --task-name NAME, --all") end
  if o.state and not STATES[o.state] then
    usage_error("--state must be scheduled, pending, processing, completed, failed or cancelled")
  end
  if o.all and not o.yes then usage_error("purge --all deletes every task of the queue: add --yes") end
  local b, err = connect(o)
  if not b then return fail(err) end
  local nr, perr
  if o.all then nr, perr = b:purge_all()
  elseif o.state then nr, perr = b:purge_by_state(o.state)
  else nr, perr = b:purge_by_task_name(o["task-name"]) end
  if not nr then return fail(perr) end
  if o.json then emit_json { purged = nr } else out("purged ", nr, " tasks\n") end
  return 0
end

function commands.export(o)
  local path = o._pos[1]
  if not path then usage_error("export needs a FILE ('-' for standard output)") end
  if o.state then
    for _, s in ipairs(o.state) do
      if not STATES[s] then
        usage_error("--state must be scheduled, pending, processing, completed, failed or cancelled")
      end
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
  if o.json then emit_json(list) return 0 end
  print_table(list, WORKER_COLS)
  return 0
end

function commands.metrics(o)
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
    return 2
  end
  io.stderr:write("celers: ", tostring(code), "\n")
  return 1
end

cli.commands = commands
cli.parse = parse

return cli
