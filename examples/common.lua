-- Shared set-up of the examples: find the checkout's modules and built core, and the DSN.
-- Each example starts with:  local env = dofile((arg[0]:match("^(.*)/") or ".") .. "/common.lua")
-- DSN: $CELERS_DSN, else the private development server of scripts/db.sh (started if needed).
local here = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
local root = here .. "/.."
package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path
package.cpath = root .. "/build/" .. (jit and "luajit" or "lua5.4") .. "/?.so;" .. package.cpath

local env = { root = root }

function env.dsn()
  local dsn = os.getenv("CELERS_DSN")
  if dsn and dsn ~= "" then return dsn end
  local p = io.popen(root .. "/scripts/db.sh start >/dev/null 2>&1 && " .. root .. "/scripts/db.sh dsn")
  dsn = p:read("*l")
  p:close()
  if not dsn or dsn == "" then
    io.stderr:write("no database: set CELERS_DSN, or let scripts/db.sh start the private one\n")
    os.exit(1)
  end
  return dsn
end

-- connect (or exit with the error) and make sure the tables exist
function env.connect(opts)
  local celers = require "celers"
  local b, err = celers.connect(opts or env.dsn())
  if not b then
    io.stderr:write("cannot connect: ", tostring(err), "\n")
    os.exit(1)
  end
  assert(b:migrate())
  return b
end

return env
