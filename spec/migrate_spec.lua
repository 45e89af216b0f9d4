-- migrate and list_migrations: in order, recorded once, idempotent, safe from two processes.
-- luacheck: max line length 160
local helper = require "spec.helper"
local celers = require "celers"

local MIGRATOR = [[
local celers = require "celers"
local core = require "celers.core"
local dsn, go = arg[1], arg[2]
local b = assert(celers.connect(dsn))
local deadline = core.monotonic() + 60
while not io.open(go, "r") do
   if core.monotonic() > deadline then error("no go file") end
   core.sleep(0.002)
end
local applied, err = b:migrate()
if not applied then print("FAILED " .. tostring(err)) os.exit(1) end
print("APPLIED " .. table.concat(applied, ","))
b:close()
]]

local function spawn(source, ...)
   local path = os.tmpname()
   local f = assert(io.open(path, "w"))
   f:write(source)
   f:close()
   local args = {}
   for i, a in ipairs({ ... }) do args[i] = helper.shell_quote(a) end
   local pipe = assert(io.popen(helper.lua_cmd() .. " " .. helper.shell_quote(path) .. " "
      .. table.concat(args, " ") .. " 2>&1", "r"))
   return function()
      local out = pipe:read("*a")
      pipe:close()
      os.remove(path)
      return out
   end
end

-- the embedded migrations, from sql/ of the checkout
local function expected_versions()
   local p = assert(io.popen("ls " .. helper.shell_quote(helper.root .. "/sql")))
   local list = {}
   for name in p:lines() do
      local v = name:match("^(%d%d%d_[%w_]+)%.sql$")
      -- recorded as the file's NNN_name, with lua- before NNN from 004 on (never a Rust version)
      if v and v > "003_~" then v = "lua-" .. v end
      if v then list[#list + 1] = v end
   end
   p:close()
   table.sort(list)
   return list
end

local TABLES = { "celers_migrations", "celers_tasks", "celers_dead_letter_queue",
                 "celers_task_history", "celers_results", "celers_queue_pauses" }

describe("migrate", function()
   local expected = expected_versions()

   local function tables(dsn)
      local got = {}
      for _, r in ipairs(helper.query(dsn, "SELECT table_name FROM information_schema.tables "
         .. "WHERE table_schema = DATABASE()")) do
         got[r[1]] = true
      end
      return got
   end

   it("embeds every sql/NNN_name.sql of the checkout (as built)", function()
      local dsn = helper.fresh_dsn("spec_migrate_embedded")
      local b = assert(celers.connect(dsn))
      local applied = b:migrate()
      b:close()
      assert.same(expected, applied)
      for i, v in ipairs({ "001_initial_schema", "002_results", "003_indexes",
                           "lua-004_queues_and_leases", "lua-005_queue_pauses" }) do
         assert.equal(v, expected[i])
      end
   end)

   it("applies every migration in order on a fresh database and records each once", function()
      local dsn = helper.fresh_dsn("spec_migrate_fresh")
      local b = assert(celers.connect(dsn))
      assert.same(expected, b:migrate())
      local recorded = {}
      for _, r in ipairs(helper.query(dsn, "SELECT CONCAT(version, '_', name) FROM celers_migrations ORDER BY version")) do
         recorded[#recorded + 1] = r[1]
      end
      assert.same(expected, recorded)
      local have = tables(dsn)
      for _, t in ipairs(TABLES) do assert.is_true(have[t], "missing table " .. t) end
      -- the 0.2 columns are there with their names
      local cols = {}
      for _, r in ipairs(helper.query(dsn, "SELECT column_name FROM information_schema.columns "
         .. "WHERE table_schema = DATABASE() AND table_name = 'celers_tasks'")) do
         cols[r[1]] = true
      end
      for _, c in ipairs({ "id", "task_name", "payload", "state", "priority", "retry_count",
                          "max_retries", "created_at", "scheduled_at", "started_at", "completed_at",
                          "worker_id", "error_message", "metadata", "queue" }) do
         assert.is_true(cols[c], "missing column " .. c)
      end
      b:close()
   end)

   it("run twice applies nothing the second time and changes nothing", function()
      local dsn = helper.fresh_dsn("spec_migrate_twice")
      local b = assert(celers.connect(dsn))
      assert.same(expected, b:migrate())
      local id = assert(b:enqueue("kept", "x"))
      local before = helper.query(dsn, "SELECT version, applied_at FROM celers_migrations ORDER BY version")
      assert.same({}, b:migrate())
      assert.same({}, b:migrate())
      assert.same(before, helper.query(dsn, "SELECT version, applied_at FROM celers_migrations ORDER BY version"))
      assert.equal("kept", helper.scalar(dsn, "SELECT task_name FROM celers_tasks WHERE id = " .. helper.sql_string(id)))
      -- another connection sees it done as well
      local c = assert(celers.connect(dsn))
      assert.same({}, c:migrate())
      c:close()
      b:close()
   end)

   it("list_migrations gives version, name and applied_at of each", function()
      local dsn = helper.fresh_dsn("spec_migrate_list")
      local b = assert(celers.connect(dsn))
      b:migrate()
      local list = b:list_migrations()
      assert.equal(#expected, #list)
      local now = tonumber(helper.scalar(dsn, "SELECT UNIX_TIMESTAMP()"))
      for i, m in ipairs(list) do
         assert.equal(expected[i], m.version .. "_" .. m.name)
         assert.is_number(m.applied_at)
         assert.is_true(math.abs(now - m.applied_at) < 300)
      end
      b:close()
   end)

   it("applies only the missing ones on a partly migrated database", function()
      local dsn = helper.fresh_dsn("spec_migrate_partial")
      local b = assert(celers.connect(dsn))
      b:migrate()
      -- forget 007 (worker heartbeats) and undo what it created
      helper.query(dsn, "DELETE FROM celers_migrations WHERE version = 'lua-007'; DROP TABLE celers_workers")
      assert.is_nil(tables(dsn).celers_workers)
      assert.same({ "lua-007_worker_heartbeats" }, b:migrate())
      assert.is_true(tables(dsn).celers_workers)
      assert.equal(tostring(#expected), helper.scalar(dsn, "SELECT COUNT(*) FROM celers_migrations"))
      b:close()
   end)

   it("from two processes at once: both succeed and each migration is applied once", function()
      for round = 1, 3 do
         local dsn = helper.fresh_dsn("spec_migrate_race")
         local go = os.tmpname()
         os.remove(go)
         local a = spawn(MIGRATOR, dsn, go)
         local b = spawn(MIGRATOR, dsn, go)
         require("celers.core").sleep(0.3)
         assert(io.open(go, "w")):close()
         local out_a, out_b = a(), b()
         os.remove(go)
         local la = out_a:match("APPLIED ([^\n]*)")
         local lb = out_b:match("APPLIED ([^\n]*)")
         assert.is_string(la, "round " .. round .. ": " .. out_a)
         assert.is_string(lb, "round " .. round .. ": " .. out_b)
         -- between them, every migration exactly once
         local seen, all = {}, {}
         for _, line in ipairs({ la, lb }) do
            for v in line:gmatch("[^,]+") do
               assert.is_nil(seen[v], "applied twice: " .. v)
               seen[v] = true
               all[#all + 1] = v
            end
         end
         table.sort(all)
         assert.same(expected, all)
         assert.equal(tostring(#expected), helper.scalar(dsn, "SELECT COUNT(DISTINCT version) FROM celers_migrations"))
         assert.equal(tostring(#expected), helper.scalar(dsn, "SELECT COUNT(*) FROM celers_migrations"))
         -- and the schema works
         local c = assert(celers.connect(dsn))
         assert(c:enqueue("t", "x"))
         assert.equal("t", assert(c:dequeue()).name)
         c:close()
      end
   end)
end)
