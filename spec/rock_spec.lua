-- Installing the package as users do: `luarocks make` into a fresh tree (scripts/check-rock.sh,
-- `make check-rock`) for the spec's interpreter, then a producer and a worker from outside the
-- checkout; the source rock of `make dist`; PUC Lua 5.1 refused with a clear message; and
-- scripts/test.sh never testing against the user's CELERS_DSN.
local helper = require "spec.helper"
local proc = require "spec.proc_helper"

local sh = helper.shell_quote
local root = helper.root
local lua = helper.lua()
local variant = lua:find("jit", 1, true) and "luajit" or "lua5.4"

describe("the LuaRocks package", function()
  it("installs into a fresh tree and runs a producer and a worker from outside the checkout", function()
    local code, out = proc.run("cd " .. sh(root) .. " && CHECK_ROCK_KEEP_DB=1 CELERS_TEST_DSN="
      .. sh(helper.base_dsn()) .. " scripts/check-rock.sh " .. variant)
    assert.equal(0, code, out)
    assert.matches("check-rock: ok (" .. variant .. ")", out, 1, true)
    assert.matches("applied 001_initial_schema", out, 1, true) -- the tree's celers ran migrate
    local dsn = helper.with_database(helper.base_dsn(), "celers_t_rock")
    assert.same({ { "20", "20", "1" } }, helper.query(dsn,
      "SELECT COUNT(*), SUM(state = 'completed'), COUNT(DISTINCT worker_id) FROM celers_tasks"))
    assert.equal("400", helper.scalar(dsn, "SELECT r.result FROM celers_results r JOIN celers_tasks t "
      .. "ON t.id = r.task_id WHERE JSON_VALUE(t.payload, '$.n') = 20"))
    helper.query(helper.base_dsn(), "DROP DATABASE celers_t_rock")
  end)

  it("refuses PUC Lua 5.1 headers with a message that says what to use", function()
    local code, out = proc.run("cd " .. sh(root)
      .. " && make -n build LUA=/usr/bin/lua5.1 LUA_INCDIR=/usr/include/lua5.1")
    assert.is_not.equal(0, code)
    assert.matches("celers needs Lua 5.4 or LuaJIT", out, 1, true)
    -- the same interpreter name with LuaJIT's headers is the LuaJIT build
    code, out = proc.run("cd " .. sh(root)
      .. " && make -B -n build LUA=/usr/bin/lua5.1 LUA_INCDIR=/usr/include/luajit-2.1")
    assert.equal(0, code, out)
    assert.matches("build/luajit/", out, 1, true)
    -- LuaRocks' CFLAGS on the command line keep the Makefile's own flags
    code, out = proc.run("cd " .. sh(root) .. " && make -B -n build CFLAGS=-O1 LUA=/usr/bin/lua5.4")
    assert.equal(0, code, out)
    assert.matches("-O1 -std=c11 -D_GNU_SOURCE -fPIC -Wall -Wextra -Werror", out, 1, true)
  end)

  if variant == "lua5.4" then
    it("builds from the source rock of make dist", function()
      local tree = os.tmpname()
      os.remove(tree)
      local code, out = proc.run("cd " .. sh(root) .. " && make dist && cd /tmp && luarocks --lua-version 5.4 --tree "
        .. sh(tree) .. " build --deps-mode=none " .. sh(root .. "/build/dist/celers-broker-sql-0.1.0-1.src.rock")
        .. " && cd / && env -u LUA_PATH -u LUA_CPATH " .. sh(tree .. "/bin/celers") .. " --version")
      assert.equal(0, code, out)
      assert.matches("celers 0%.1%.0\n$", out)
      os.execute("rm -rf " .. sh(tree))
    end)
  end
end)

describe("scripts/test.sh", function()
  it("tests against CELERS_TEST_DSN or the private server, never CELERS_DSN", function()
    if not helper.private_server() then
      pending("needs the private server (the nested run uses it)")
      return
    end
    local spec = os.tmpname() .. "_spec.lua"
    local f = assert(io.open(spec, "w"))
    f:write([[
      describe("nested", function()
        it("sees the private server only", function()
          assert.is_nil(os.getenv("CELERS_DSN"))
          assert.is_nil(os.getenv("CELERS_TEST_DSN"):find("trap", 1, true))
          assert.equal("1", os.getenv("CELERS_TEST_PRIVATE"))
        end)
      end)
    ]])
    f:close()
    local code, out = proc.run("cd " .. sh(root) .. " && env -u CELERS_TEST_DSN -u CELERS_TEST_PRIVATE "
      .. "CELERS_DSN=mysql://trap:trap@127.0.0.1:9/trap SKIP_BUILD=1 CELERS_TEST_LUAS=" .. sh(lua)
      .. " scripts/test.sh " .. sh(spec))
    os.remove(spec)
    assert.equal(0, code, out)
    assert.matches("1 passed, 0 failed\n$", out)
  end)
end)
