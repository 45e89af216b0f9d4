-- busted output handler used by scripts/test.sh: prints busted's usual human-readable report
-- (plainTerminal, or the handler named in CELERS_TEST_OUTPUT) and writes the counts
-- "successes failures errors pendings" to the file named in CELERS_BUSTED_COUNTS.
-- (busted's own json handler prints nothing at all when a failure carries a value that
-- dkjson cannot encode, so counting goes through this instead.)
return function(options)
   local busted = require "busted"
   local name = os.getenv("CELERS_TEST_OUTPUT")
   if not name or name == "" then name = "plainTerminal" end
   local handler = require("busted.outputHandlers." .. name)(options)

   busted.subscribe({ "suite", "end" }, function()
      local path = os.getenv("CELERS_BUSTED_COUNTS")
      if path and path ~= "" then
         local f = assert(io.open(path, "w"))
         f:write(string.format("%d %d %d %d\n", handler.successesCount, handler.failuresCount,
                               handler.errorsCount, handler.pendingsCount))
         f:close()
      end
      return nil, true
   end)

   return handler
end
