-- An interrupted migration finishes on the next migrate(): each statement of every migration
-- is interrupted in turn (the fault seam cuts the link right after the statement ran, so the
-- DDL landed but was never recorded), then migrate() runs again and the schema must equal a
-- clean one.
-- luacheck: max line length 160
local helper = require "spec.helper"
local celers = require "celers"
local core = require "celers.core"

local function schema(dsn)
   local db = helper.sql_string(helper.parse_dsn(dsn).database)
   local rows = helper.query(dsn,
      "SELECT CONCAT_WS('|', table_name, column_name, ordinal_position, column_type, is_nullable, "
      .. "IFNULL(column_default, '~'), extra) FROM information_schema.columns WHERE table_schema = " .. db
      .. " UNION ALL SELECT CONCAT_WS('|', table_name, index_name, seq_in_index, column_name, non_unique) "
      .. "FROM information_schema.statistics WHERE table_schema = " .. db
      .. " UNION ALL SELECT CONCAT_WS('|', routine_name, routine_type, MD5(routine_definition)) "
      .. "FROM information_schema.routines WHERE routine_schema = " .. db
      .. " UNION ALL SELECT CONCAT_WS('|', 'migration', version) FROM celers_migrations")
   local out = {}
   for _, r in ipairs(rows) do out[#out + 1] = r[1] end
   table.sort(out)
   return table.concat(out, "\n")
end

describe("migrate under faults", function()
   teardown(function() core._inject_fault() end)

   local clean
   setup(function()
      local clean_dsn = helper.fresh_dsn("spec_mig_clean")
      local b = assert(celers.connect(clean_dsn))
      assert(b:migrate())
      b:close()
      clean = schema(clean_dsn)
   end)

   for _, at in ipairs{ "after_send", "before_send" } do
   it("every statement interrupted in turn (" .. at .. "): the next migrate() completes to the clean schema", function()
      local b
      local interrupted = 0
      for k = 1, 200 do
         local dsn = helper.fresh_dsn("spec_mig_cut")
         b = assert(celers.connect(dsn))
         core._inject_fault{ at = at, nth = k }
         local ok, err = b:migrate()
         local left = core._inject_fault()
         if left > 0 then
            b:close()
            break -- past the last statement
         end
         interrupted = interrupted + 1
         -- lost, or ok when the cut hit the release of the lock (its failure is harmless)
         if ok == nil then assert.equal("lost", err.code) end
         local again, err2 = b:migrate()
         assert.is_nil(err2, "statement " .. k .. ": " .. tostring(err2))
         assert.is_table(again)
         assert.equal(clean, schema(dsn), "statement " .. k)
         b:close()
      end
      assert.is_true(interrupted > 20, "interrupted " .. interrupted .. " statements")
   end)
   end

   it("does not run under the broker's read timeout", function()
      if not helper.private_server() then
         pending("needs the private server (CELERS_TEST_PRIVATE=1)")
         return
      end
      local dsn = helper.fresh_dsn("spec_mig_slow")
      local d = helper.parse_dsn(dsn)
      -- another session holds the migration lock for 3 s; migrate() waits for it on a link
      -- without the 1 s read timeout of the broker
      local hold = ("SELECT GET_LOCK(CONCAT('celers_migrate:', MD5(%s)), 0), SLEEP(3)"):format(helper.sql_string(d.database))
      local cmd = ("MYSQL_PWD=%s mariadb --no-defaults --user=%s %s -e %s >/dev/null 2>&1 &"):format(
         helper.shell_quote(d.password or ""), helper.shell_quote(d.user or "root"),
         d.socket and ("--host=localhost --socket=" .. helper.shell_quote(d.socket)) or ("--host=" .. helper.shell_quote(d.host or "127.0.0.1")
            .. " --port=" .. (d.port or 3306) .. " --protocol=TCP"),
         helper.shell_quote(hold))
      assert(os.execute(cmd))
      core.sleep(0.5)
      local b = assert(celers.connect({ dsn = dsn, read_timeout = 1 }))
      local t0 = core.monotonic()
      local applied, err = b:migrate()
      assert.is_nil(err)
      assert.is_true(#applied > 5)
      assert.is_true(core.monotonic() - t0 > 1.5, "did not wait for the lock")
      assert.equal(clean, schema(dsn))
      b:close()
   end)
end)
