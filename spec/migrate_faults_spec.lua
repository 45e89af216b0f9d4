-- An interrupted migration finishes on the next migrate(): each statement of every migration
-- is interrupted in turn (the fault seam cuts the link right after the statement ran, so the
-- DDL landed but was never recorded), then migrate() runs again and the schema must equal a
-- clean one.
-- luacheck: max line length 140
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

   it("every statement interrupted in turn: the next migrate() completes to the clean schema", function()
      local clean_dsn = helper.fresh_dsn("spec_mig_clean")
      local b = assert(celers.connect(clean_dsn))
      assert(b:migrate())
      b:close()
      local clean = schema(clean_dsn)
      local interrupted = 0
      for k = 1, 200 do
         local dsn = helper.fresh_dsn("spec_mig_cut")
         b = assert(celers.connect(dsn))
         core._inject_fault{ at = "after_send", nth = k }
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
end)
