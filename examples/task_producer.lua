-- Producer: single, batch, scheduled, prioritised and idempotent tasks, custom retries,
-- then the queue's statistics.        lua5.4 examples/task_producer.lua
local env = dofile((arg[0]:match("^(.*)/") or ".") .. "/common.lua")
local broker = env.connect()
local emails = broker:with_queue("emails")       -- another queue on the same connection

-- one task; a table payload travels as JSON, a string as is
local id = assert(emails:enqueue("send_email", { to = "ada@example.com", subject = "Welcome" }))
print("single task      ", id)

-- a batch: one transaction, all or nothing
local batch = {}
for i = 1, 5 do
  batch[i] = { name = "resize_image", payload = { image = ("img-%03d.png"):format(i), width = 640 } }
end
local ids = assert(broker:enqueue_batch(batch))
print("batch of tasks   ", #ids)

-- scheduled: in ten minutes, or at a Unix time
print("in 10 minutes    ", (assert(broker:enqueue_after("send_reminder", "user-42", 600))))
print("at a time        ", (assert(broker:enqueue_at("monthly_report", { month = "2030-01" }, 1893456000))))

-- priorities: higher runs first
print("urgent           ", (assert(broker:enqueue("charge_card", { order = 1001 }, { priority = 10 }))))

-- custom retries and a per-task lease (timeout) of 2 minutes
print("custom retries   ", (assert(broker:enqueue("sync_crm", { account = 7 }, { max_retries = 8, timeout = 120 }))))

-- idempotency: the same key in the same queue gives back the first task
local a = assert(broker:enqueue("invoice", { order = 1001 }, { idempotency_key = "invoice-1001" }))
local b, created = broker:enqueue("invoice", { order = 1001 }, { idempotency_key = "invoice-1001" })
print("idempotent       ", a == b and "same task" or "DIFFERENT", created and "created" or "not created again")

-- what is in the queues now
for _, q in ipairs { broker, emails } do
  local st = assert(q:get_statistics())
  print(("queue %-8s pending %d (scheduled later: %d), processing %d, completed %d, dead-lettered %d")
    :format(q:queue(), st.pending, st.scheduled, st.processing, st.completed, st.dlq))
end
broker:close()
