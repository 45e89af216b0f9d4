-- Bulk export and import (JSON Lines): back up a queue, empty it, restore it.
--                                    lua5.4 examples/bulk_import_export.lua [FILE]
local env = dofile((arg[0]:match("^(.*)/") or ".") .. "/common.lua")
local bulk = require "celers.bulk"
local broker = env.connect { dsn = env.dsn(), queue = "bulk_demo" }
local file = arg[1] or os.tmpname()

-- something to export: 1000 tasks with JSON, text and binary payloads
assert(broker:purge_all())
local list = {}
for i = 1, 1000 do
  local payload = (i % 3 == 0) and { n = i } or (i % 3 == 1) and ("text " .. i) or ("bin\0\255" .. i)
  list[#list + 1] = { name = "demo_task", payload = payload, priority = i % 5,
                      metadata = { batch = "demo", n = i } }
  if #list == 250 then assert(broker:enqueue_batch(list)); list = {} end
end

local counts = assert(bulk.export(broker, file, {
  state = "pending",
  progress = function(p) io.write(("\rexported %d / %d"):format(p.tasks, p.total or 0)) end,
}))
print(("\nwrote %d tasks to %s"):format(counts.tasks, file))

assert(broker:purge_all())
print("queue emptied, pending now:", broker:queue_size())

local rep = assert(bulk.import(broker, file, {
  batch = 200, on_error = "skip",
  progress = function(p) io.write(("\rimported %d (%d existing)"):format(p.inserted, p.existing)) end,
}))
print(("\nrestored %d tasks (%d bad lines); pending now: %d"):format(rep.inserted, rep.bad, broker:queue_size()))

-- importing again changes nothing: existing ids are skipped
rep = assert(bulk.import(broker, file))
print(("second import: %d new, %d already there"):format(rep.inserted, rep.existing))
if not arg[1] then os.remove(file) end
broker:close()
