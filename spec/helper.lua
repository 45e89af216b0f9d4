-- Test helpers shared by the specs:  local helper = require "spec.helper"
--
-- Everything here talks to the database through the `mariadb` command-line client, so that
-- specs can check what the database holds independently of the module under test.
-- scripts/test.sh sets CELERS_TEST_DSN (and CELERS_TEST_PRIVATE=1 when it runs the private
-- server from scripts/db.sh), CELERS_TEST_LUA, LUA_PATH and LUA_CPATH.

local helper = {}

local function shell_quote(s)
   return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
helper.shell_quote = shell_quote

-- absolute path of the checkout (the folder above spec/)
local function repo_root()
   local src = debug.getinfo(1, "S").source:gsub("^@", "")
   local dir = src:match("^(.*)/spec/[^/]*$") or "."
   if dir:sub(1, 1) ~= "/" then
      local p = io.popen("pwd")
      local cwd = p:read("*l")
      p:close()
      dir = (dir == ".") and cwd or (cwd .. "/" .. dir:gsub("^%./", ""))
   end
   return dir
end
helper.root = repo_root()

local function read_file(path)
   local f = io.open(path, "rb")
   if not f then return "" end
   local s = f:read("*a")
   f:close()
   return s
end

local function write_file(path, s)
   local f = assert(io.open(path, "wb"))
   f:write(s)
   f:close()
end

-- os.execute's result differs between Lua 5.1/LuaJIT (a status number) and 5.2+ (true/nil, how, code)
local function execute(cmd)
   local a, _, code = os.execute(cmd)
   if a == true or a == 0 then return true, 0 end
   if type(a) == "number" then
      code = a >= 256 and math.floor(a / 256) or a
   end
   return false, code or -1
end

------------------------------------------------------------------------------------------------
-- DSNs

function helper.base_dsn()
   local dsn = os.getenv("CELERS_TEST_DSN")
   if not dsn or dsn == "" then
      error("CELERS_TEST_DSN is not set (run the specs through scripts/test.sh)", 2)
   end
   return dsn
end

local function percent_decode(s)
   return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end
helper.percent_decode = percent_decode

-- mysql://user:pass@host:port/db?socket=...&other=...
-- Returns { user=, password=, host=, port= (number), database=, socket=, params = {all query args} }
function helper.parse_dsn(dsn)
   assert(type(dsn) == "string", "parse_dsn: dsn must be a string")
   local rest = dsn:match("^mysql://(.*)$") or dsn:match("^mariadb://(.*)$")
   if not rest then error("parse_dsn: not a mysql:// DSN: " .. dsn, 2) end
   local query
   rest, query = rest:match("^([^?]*)%??(.*)$")
   local authority, path = rest:match("^([^/]*)/?(.*)$")
   local r = { params = {} }
   local userinfo, hostport = authority:match("^(.*)@([^@]*)$")
   if not userinfo then hostport = authority end
   if userinfo then
      local u, p = userinfo:match("^([^:]*):(.*)$")
      if u then
         r.user, r.password = percent_decode(u), percent_decode(p)
      else
         r.user = percent_decode(userinfo)
      end
   end
   local host, port
   if hostport:sub(1, 1) == "[" then            -- [ipv6]:port
      host, port = hostport:match("^%[([^%]]*)%]:?(%d*)$")
   else
      host, port = hostport:match("^([^:]*):?(%d*)$")
   end
   if host and host ~= "" then r.host = percent_decode(host) end
   if port and port ~= "" then r.port = tonumber(port) end
   if path ~= "" then r.database = percent_decode(path) end
   for pair in query:gmatch("[^&]+") do
      local k, v = pair:match("^([^=]*)=?(.*)$")
      r.params[percent_decode(k)] = percent_decode(v)
   end
   r.socket = r.params.socket
   return r
end

-- the same DSN string with another database name
function helper.with_database(dsn, database)
   local prefix, rest = dsn:match("^(%a+://[^/?]*)(.*)$")
   if not prefix then error("with_database: bad DSN: " .. dsn, 2) end
   local query = rest:match("^[^?]*(%?.*)$") or ""
   return prefix .. "/" .. database .. query
end

------------------------------------------------------------------------------------------------
-- the mariadb client

-- Runs `sql` with the mariadb client against the database of `dsn` (or `database` when given,
-- false for none).  Returns stdout; raises with the client's stderr on failure.
local function run_client(dsn, sql, database, extra)
   local d = helper.parse_dsn(dsn)
   local args = { "mariadb", "--no-defaults", "--batch", "--raw", "--skip-column-names",
                  "--default-character-set=utf8mb4", "--connect-timeout=10" }
   for _, a in ipairs(extra or {}) do args[#args + 1] = a end
   if d.user then args[#args + 1] = "--user=" .. d.user end
   if d.socket then
      args[#args + 1] = "--socket=" .. d.socket
      args[#args + 1] = "--host=localhost"
   else
      if d.host then args[#args + 1] = "--host=" .. d.host end
      if d.port then args[#args + 1] = "--port=" .. d.port end
      if d.host and d.host ~= "localhost" then args[#args + 1] = "--protocol=TCP" end
   end
   if database == nil then database = d.database end
   if database then args[#args + 1] = "--database=" .. database end
   for i, a in ipairs(args) do args[i] = shell_quote(a) end

   local script, input = os.tmpname(), os.tmpname()
   local out, err = os.tmpname(), os.tmpname()
   -- the password travels in the environment of the client, set inside a private (0600)
   -- script file, so it is never on any command line
   local lines = {}
   if d.password then
      lines[#lines + 1] = "MYSQL_PWD=" .. shell_quote(d.password) .. "; export MYSQL_PWD"
   else
      lines[#lines + 1] = "unset MYSQL_PWD"
   end
   lines[#lines + 1] = "exec " .. table.concat(args, " ")
      .. " <" .. shell_quote(input) .. " >" .. shell_quote(out) .. " 2>" .. shell_quote(err)
   write_file(script, table.concat(lines, "\n") .. "\n")
   write_file(input, sql)
   local ok, code = execute("sh " .. shell_quote(script))
   local stdout, stderr = read_file(out), read_file(err)
   for _, f in ipairs { script, input, out, err } do os.remove(f) end
   if not ok then
      error(("mariadb client failed (exit %s): %s\nSQL: %s"):format(
         tostring(code), stderr:gsub("%s+$", ""), sql), 3)
   end
   return stdout
end

-- rows of the output, each an array of column strings (NULL comes back as the string "NULL";
-- with --raw, a value holding a tab or newline cannot be told apart from a separator)
function helper.query(dsn, sql)
   local stdout = run_client(dsn, sql)
   local rows = {}
   for line in stdout:gmatch("([^\n]*)\n") do
      local row = {}
      for col in (line .. "\t"):gmatch("([^\t]*)\t") do row[#row + 1] = col end
      rows[#rows + 1] = row
   end
   return rows
end

-- the client's raw output, with extra client options (e.g. { "--table", "--column-type-info" })
function helper.client(dsn, sql, extra)
   return run_client(dsn, sql, nil, extra)
end

function helper.scalar(dsn, sql)
   local row = helper.query(dsn, sql)[1]
   return row and row[1]
end

-- quote a string as an SQL literal (for building assertion queries in specs)
function helper.sql_string(s)
   return "'" .. tostring(s):gsub("\\", "\\\\"):gsub("'", "''"):gsub("%z", "\\0") .. "'"
end

-- drops and recreates database celers_t_<name>; returns the base DSN pointing at it
function helper.fresh_dsn(name)
   local base = helper.base_dsn()
   local db = "celers_t_" .. tostring(name or "default"):lower():gsub("[^a-z0-9_]", "_")
   if #db > 64 then db = db:sub(1, 64) end
   run_client(base, ("DROP DATABASE IF EXISTS `%s`; CREATE DATABASE `%s`"):format(db, db), false)
   return helper.with_database(base, db)
end

------------------------------------------------------------------------------------------------
-- the private server

function helper.private_server()
   return os.getenv("CELERS_TEST_PRIVATE") == "1"
end

function helper.db_restart()
   if not helper.private_server() then
      error("db_restart needs the private server (CELERS_TEST_PRIVATE=1)", 2)
   end
   local ok, code = execute(shell_quote(helper.root .. "/scripts/db.sh") .. " restart >/dev/null")
   if not ok then error("scripts/db.sh restart failed (exit " .. tostring(code) .. ")", 2) end
end

------------------------------------------------------------------------------------------------
-- child processes with the same Lua

function helper.lua()
   local env = os.getenv("CELERS_TEST_LUA")
   -- trust the runner's word unless it plainly names another kind of interpreter
   if env and env ~= "" and (env:find("jit") ~= nil) == (jit ~= nil) then return env end
   if arg then
      local i = -1
      while arg[i - 1] do i = i - 1 end
      if arg[i] then return arg[i] end
   end
   return jit and "luajit" or "lua5.4"
end

-- shell-ready prefix: LUA_PATH=... LUA_CPATH=... <interpreter>
function helper.lua_cmd()
   local path, cpath = shell_quote(package.path), shell_quote(package.cpath)
   local parts = { "LUA_PATH=" .. path, "LUA_CPATH=" .. cpath }
   if not jit and _VERSION ~= "Lua 5.1" then
      -- LUA_PATH_5_4 and the like take precedence over LUA_PATH in Lua 5.2+
      local suffix = _VERSION:match("Lua (%d+%.%d+)"):gsub("%.", "_")
      parts[#parts + 1] = "LUA_PATH_" .. suffix .. "=" .. path
      parts[#parts + 1] = "LUA_CPATH_" .. suffix .. "=" .. cpath
   end
   parts[#parts + 1] = shell_quote(helper.lua())
   return table.concat(parts, " ")
end

return helper
