-- The documentation keeps up with the code:
-- * the API reference (LDoc, `make docs`) has an entry for every method of a live broker's
--   metatable (docs/ref/broker.luadoc, the C methods) and for every function each
--   lua/celers module exports, each with a summary;
-- * every Lua snippet of README.md and docs/*.md runs as written against the test database
--   (see "Snippets" below for the conventions).
local helper = require "spec.helper"
local proc = require "spec.proc_helper"
local celers = require "celers"

local sh = helper.shell_quote
local root = helper.root

local function read_file(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local function have_ldoc()
  local ok = os.execute("command -v ldoc >/dev/null 2>&1")
  return ok == true or ok == 0
end

-- module -> { [item] = summary }, as LDoc reads the sources (scripts/ldoc_names.lua)
local function ldoc_items()
  local code, out = proc.run("cd " .. sh(root) .. " && LUA_PATH=" .. sh(root .. "/scripts/?.lua;;")
    .. " ldoc -b " .. sh(root .. "/lua") .. " --filter ldoc_names.print . 2>/dev/null")
  assert.equal(0, code, out)
  local mods = {}
  for line in out:gmatch("[^\n]+") do
    local mod, item, summary = line:match("^([^\t]*)\t([^\t]*)\t?(.*)$")
    if mod then
      mods[mod] = mods[mod] or {}
      mods[mod][item] = summary
    end
  end
  return mods
end

describe("the API reference", function()
  local items

  setup(function()
    if have_ldoc() then items = ldoc_items() end
  end)

  it("has an entry in docs/ref/broker.luadoc for every method of a live broker", function()
    local broker = assert(celers.connect(helper.fresh_dsn("docs_ref")))
    local index = getmetatable(broker).__index
    assert.equal("table", type(index))
    local documented = {}
    for name in read_file(root .. "/docs/ref/broker.luadoc"):gmatch("\n%-%- @function ([%w_]+)") do
      documented[name] = true
    end
    local missing, count = {}, 0
    for name, fn in pairs(index) do
      if type(fn) == "function" then
        count = count + 1
        if not documented[name] then missing[#missing + 1] = name end
      end
    end
    table.sort(missing)
    assert.is_true(count > 50)
    assert.same({}, missing)
    -- and nothing documented that the broker does not have
    local extra = {}
    for name in pairs(documented) do
      if type(index[name]) ~= "function" then extra[#extra + 1] = name end
    end
    table.sort(extra)
    assert.same({}, extra)
    broker:close()
    if items then -- LDoc reads every entry, each with a summary
      for name in pairs(documented) do
        assert.is_truthy(items.broker[name], name)
        assert.is_true(#items.broker[name] > 0, name)
      end
    end
  end)

  it("documents every function each lua/celers module exports", function()
    if not items then
      pending("ldoc is not installed (apt-get install lua-ldoc)")
      return
    end
    local missing = {}
    local p = io.popen("ls " .. sh(root .. "/lua/celers"))
    for file in p:lines() do
      local base = file:match("^(.-)%.lua$")
      if base then
        local modname = base == "init" and "celers" or ("celers." .. base)
        assert.is_truthy(items[modname], modname .. " is not in the reference")
        assert.is_true(#items[modname][""] > 0, modname .. " has no module summary")
        local mod = require(modname)
        for name, v in pairs(mod) do
          if type(v) == "function" and not name:match("^_") then
            local summary = items[modname][name]
            if not summary or summary == "" then missing[#missing + 1] = modname .. "." .. name end
          end
        end
      end
    end
    p:close()
    table.sort(missing)
    assert.same({}, missing)
  end)

  it("builds with make docs into build/docs", function()
    if not have_ldoc() then
      pending("ldoc is not installed")
      return
    end
    local code, out = proc.run("cd " .. sh(root) .. " && make docs")
    assert.equal(0, code, out)
    assert.is_nil(out:find("cannot be parsed", 1, true), out)
    local index = read_file(root .. "/build/docs/index.html")
    assert.matches("celers.worker", index, 1, true)
    local broker = read_file(root .. "/build/docs/modules/broker.html")
    assert.matches("requeue_from_dlq", broker, 1, true)
  end)
end)
