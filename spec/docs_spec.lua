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

-- Snippets. Every ```lua block of README.md and docs/*.md runs, in file order, as one program
-- per file (a reader following along has the locals of the blocks above), in a fresh
-- database and a temporary working folder. Conventions, in an HTML comment on the line
-- right before a block (GitHub does not render them):
--   <!-- not-run: why -->      a fragment that cannot run by itself (kept few)
--   <!-- before: lua code -->  what the prose around the block assumes (a stand-in for the
--                              reader's own `mailer`, a task id from earlier, ...)
--   <!-- stop-after: S -->     the block runs until SIGTERM (w:run(), pool:run(), s:run()):
--                              SIGTERM is sent after S seconds, as an operator would
-- The database: CELERS_DSN is the test database, and celers.connect is pointed at it (a DSN
-- string keeps its own ?parameters, such as the queue; an options table keeps its options but
-- not where to connect), so `mysql://app:secret@db:3306/jobs` in a snippet means the test
-- database here.
local PRELUDE = [=[
local __celers = require "celers"
local __core = require "celers.core"
local __test = os.getenv("CELERS_DSN")
local __connect = __celers.connect
__celers.connect = function(x)
  if type(x) == "string" then
    local base, bq = __test:match("^([^?]*)%??(.*)$")
    local parts = {}
    if bq ~= "" then parts[#parts + 1] = bq end
    for kv in (x:match("%?(.*)$") or ""):gmatch("[^&]+") do
      if not kv:match("^socket=") then parts[#parts + 1] = kv end
    end
    return __connect(base .. (#parts > 0 and ("?" .. table.concat(parts, "&")) or ""))
  elseif type(x) == "table" then
    local c = {}
    for k, v in pairs(x) do c[k] = v end
    for _, k in ipairs { "host", "port", "user", "password", "database", "socket", "ssl" } do c[k] = nil end
    c.dsn = __test
    return __connect(c)
  end
  return __connect(x)
end
local function __stop_after(s)
  os.execute(("(sleep %s; kill -TERM %d) >/dev/null 2>&1 &"):format(s, __core.getpid()))
end
]=]

-- { {line=, code=, before=, stop_after=, skip=} } of a markdown file
local function snippets(path)
  local list, pending_note = {}, nil
  local lines = {}
  for l in (read_file(path) .. "\n"):gmatch("(.-)\n") do lines[#lines + 1] = l end
  local i = 1
  while i <= #lines do
    local l = lines[i]
    local note = l:match("^<!%-%-%s*(.-)%s*%-%->$")
    if note then
      pending_note = pending_note or {}
      local k, v = note:match("^([%w-]+):?%s*(.*)$")
      pending_note[k] = v
    elseif l:match("^```lua%s*$") then
      local s = { line = i, code = {} }
      i = i + 1
      while lines[i] and not lines[i]:match("^```%s*$") do
        s.code[#s.code + 1] = lines[i]
        i = i + 1
      end
      s.code = table.concat(s.code, "\n")
      local n = pending_note or {}
      s.skip, s.before, s.stop_after = n["not-run"], n.before, tonumber(n["stop-after"])
      list[#list + 1] = s
      pending_note = nil
    elseif l:match("%S") then
      pending_note = nil
    end
    i = i + 1
  end
  return list
end

local DOCS = { "README.md" }
do
  local p = io.popen("cd " .. sh(root) .. " && ls docs/*.md")
  for f in p:lines() do DOCS[#DOCS + 1] = f end
  p:close()
end

describe("the documentation's snippets", function()
  for _, doc in ipairs(DOCS) do
    it("run as written: " .. doc, function()
      local list = snippets(root .. "/" .. doc)
      local chunk, map, skipped, ran = { PRELUDE }, {}, 0, 0
      local line = select(2, PRELUDE:gsub("\n", "")) + 1
      for _, s in ipairs(list) do
        if s.skip then
          assert.is_true(#s.skip > 0, doc .. ":" .. s.line .. ": say why a snippet is not run")
          skipped = skipped + 1
        else
          local parts = {}
          if s.before then parts[#parts + 1] = s.before end
          if s.stop_after then parts[#parts + 1] = ("__stop_after(%g)"):format(s.stop_after) end
          parts[#parts + 1] = s.code
          -- not wrapped in do ... end: the next blocks see this block's locals
          local text = table.concat(parts, "\n") .. "\n"
          map[#map + 1] = { from = line, doc_line = s.line }
          chunk[#chunk + 1] = text
          line = line + select(2, text:gsub("\n", ""))
          ran = ran + 1
        end
      end
      assert.is_true(skipped <= 3, doc .. ": " .. skipped .. " snippets not run; keep fragments few")
      if ran == 0 then return end
      local dir = os.tmpname()
      os.remove(dir)
      assert(os.execute("mkdir " .. sh(dir)))
      local prog = dir .. "/snippets.lua"
      local f = assert(io.open(prog, "w"))
      f:write(table.concat(chunk, "\n"))
      f:close()
      local dsn = helper.fresh_dsn("docs_" .. doc:gsub("[^%w]", "_"))
      local code, out = proc.run("cd " .. sh(dir) .. " && CELERS_DSN=" .. sh(dsn) .. " timeout -k 5 120 env "
        .. helper.lua_cmd() .. " snippets.lua")
      -- name the snippet an error comes from
      local where = ""
      local at = tonumber(out:match("snippets%.lua:(%d+):"))
      if at then
        for _, m in ipairs(map) do
          if at >= m.from then where = ("%s:%d (block starting there, line %d of the program)"):format(doc,
            m.doc_line, at) end
        end
      end
      assert.equal(0, code, where .. "\n" .. out)
      os.execute("rm -rf " .. sh(dir))
    end)
  end
end)
