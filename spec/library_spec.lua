-- libmariadb's process-wide state belongs to the process, not to one Lua state: a state
-- closing (its __gc) must not tear it down under the others (nginx runs several in one
-- process). Proven with a small C program (spec/fixtures/two_states.c) that opens two Lua
-- states, loads celers.core in both, closes the first and uses the second.
local helper = require "spec.helper"

local root = helper.root
local sq = helper.shell_quote

-- the cpath entry of this run's build (build/lua5.4 or build/luajit)
local function build_dir()
  for entry in package.cpath:gmatch("[^;]+") do
    local dir = entry:match("^(.*/build/[^/]+)/%?%.so$")
    if dir then return dir end
  end
  error("no build/<variant>/?.so in package.cpath: " .. package.cpath)
end

local function sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("*a")
  local ok, _, code = p:close()
  if type(ok) == "number" then code = ok; ok = code == 0 end -- Lua 5.1
  return ok, out, code
end

describe("libmariadb across Lua states", function()
  it("survives one Lua state closing while another still uses it", function()
    local dir = build_dir()
    local lua_pc = jit and "luajit" or "lua5.4"
    local exe = dir .. "/two_states"
    local ok, out = sh(("cc -std=c11 -O1 -Wall -Wextra -Werror -o %s %s $(pkg-config --cflags --libs %s) "
      .. "$(pkg-config --cflags --libs libmariadb 2>/dev/null || pkg-config --cflags --libs mysqlclient)")
      :format(sq(exe), sq(root .. "/spec/fixtures/two_states.c"), lua_pc))
    assert(ok, out)
    local dsn = helper.fresh_dsn("library")
    local run_ok, run_out = sh(("%s %s %s"):format(sq(exe), sq(dir .. "/?.so"), sq(dsn)))
    assert.is_true(run_ok, run_out)
    assert.matches("two_states: ok", run_out)
  end)
end)
