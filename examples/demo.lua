--- The `make demo` walk-through: migrate, enqueue a mix of tasks on two queues, drain the
-- ready ones with a worker per queue, and print what happened.
--   lua5.4 examples/demo.lua [DSN]      (DSN defaults to $CELERS_DSN)
local celers = require "celers"
local worker = require "celers.worker"

local dsn = arg[1] or os.getenv("CELERS_DSN")
if not dsn then
  io.stderr:write("usage: demo.lua DSN (or set CELERS_DSN)\n")
  os.exit(2)
end

local sep = dsn:find("?", 1, true) and "&" or "?"
local emails = assert(celers.connect(dsn .. sep .. "queue=demo_emails"))
local reports = emails:with_queue("demo_reports")

local applied = assert(emails:migrate())
print(("migrations applied now: %s"):format(#applied > 0 and table.concat(applied, ", ") or "none (up to date)"))

-- Start from a clean slate for the two demo queues.
for _, b in ipairs { emails, reports } do
  assert(b:purge_all_dlq())
  assert(b:purge_by_state("pending"))
  assert(b:purge_completed())
end

print("\n-- enqueue")
local id = assert(emails:enqueue("send_email", { to = "ada@example.com", subject = "Welcome" }))
print("single task          ", id)
local ids = assert(emails:enqueue_batch {
  { name = "send_email", payload = { to = "bob@example.com", subject = "Invoice" } },
  { name = "send_email", payload = { to = "cy@example.com", subject = "Receipt" } },
  { name = "send_email", max_retries = 0,
    payload = { to = "broken@example.com", subject = "Bounce" } },
})
print("batch of 3 (one tx)  ", table.concat(ids, " "))
local urgent = { to = "ops@example.com", subject = "Pager" }
print("urgent (priority 10) ", (assert(emails:enqueue("send_email", urgent, { priority = 10 }))))
local later = { to = "later@example.com", subject = "Reminder" }
print("delayed by 1 hour    ", (assert(emails:enqueue_after("send_email", later, 3600))))
print("report (other queue) ", (assert(reports:enqueue("build_report", "monthly", { priority = 5 }))))
print(("queue sizes: demo_emails=%d demo_reports=%d"):format(emails:queue_size(), reports:queue_size()))

print("\n-- work (the delayed task stays scheduled)")
local handlers = {
  send_email = function(payload)
    if payload.to:find("broken", 1, true) then error("mailbox does not exist") end
    print(("  sent %-8s to %s"):format(payload.subject, payload.to))
    return { delivered = true }
  end,
  build_report = function(payload)
    print("  built the " .. payload .. " report")
    return "report.pdf"
  end,
}
for _, b in ipairs { emails, reports } do
  local w = worker.new { broker = b, handlers = handlers, store_results = true, log = false }
  local counts = w:run { idle_exit = 0, trap_signals = false }
  print(("  worker on %s: %d processed, %d succeeded, %d dead-lettered"):format(
    b:queue(), counts.processed, counts.succeeded, counts.dead_lettered))
end

print("\n-- results and statistics")
print("result of the first task:", celers.json.encode(assert(emails:get_result(id)).result))
for _, b in ipairs { emails, reports } do
  local s = assert(b:get_statistics())
  print(("%-13s pending=%d (scheduled=%d) processing=%d completed=%d dlq=%d"):format(
    b:queue(), s.pending, s.scheduled, s.processing, s.completed, s.dlq))
end
for _, entry in ipairs(assert(emails:list_dlq { limit = 5 })) do
  print(("dead letter: %s %s: %s"):format(entry.name, entry.task_id, entry.error))
end
emails:close()
