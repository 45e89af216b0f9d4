-- Shared by spec/nginx_spec.lua and spec/dashboard_spec.lua: start the example nginx
-- (examples/nginx/run.sh) on a free port with a private prefix, talk HTTP to it with curl, and
-- start a "hung database": a listener that accepts TCP connections and never says a word.
local helper = require "spec.helper"
local proc = require "spec.proc_helper"

local M = {}
local sh = helper.shell_quote

local function exists(path)
  local f = io.open(path)
  if f then f:close() end
  return f ~= nil
end

--- nil when nginx with the Lua module and the LuaJIT build are there, else why not.
function M.missing()
  if not (exists("/usr/sbin/nginx") or proc.run("command -v nginx >/dev/null 2>&1") == 0) then
    return "nginx is not installed (scripts/deps.sh installs it)"
  end
  if not exists("/usr/lib/nginx/modules/ngx_http_lua_module.so") then
    return "libnginx-mod-http-lua is not installed (scripts/deps.sh installs it)"
  end
  if not exists(helper.root .. "/build/luajit/celers/core.so") then
    return "build/luajit/celers/core.so is missing (make build LUA=luajit)"
  end
  if proc.run("command -v curl >/dev/null 2>&1") ~= 0 then return "curl is not installed" end
  return nil
end

local function tempdir()
  local p = io.popen("mktemp -d")
  local d = p:read("*l")
  p:close()
  return d
end

--- Start the example nginx. opts: dsn, workers (1), token (dashboard actions), extra_conf (a
-- file included in the server block).
-- Returns a server {port=, prefix=, url=, stop=}.
function M.start(opts)
  local prefix = tempdir()
  local run = helper.root .. "/examples/nginx/run.sh"
  local env = "CELERS_DSN=" .. sh(opts.dsn) .. " CELERS_NGINX_PREFIX=" .. sh(prefix)
    .. " CELERS_NGINX_WORKERS=" .. (opts.workers or 1)
    .. " CELERS_DASHBOARD_TOKEN=" .. sh(opts.token or "")
    .. " CELERS_NGINX_EXTRA=" .. sh(opts.extra_conf or "")
  local code, out, port
  for _ = 1, 8 do
    port = math.random(20000, 45000)
    code, out = proc.run(env .. " " .. sh(run) .. " start " .. port .. " 2>&1")
    if code == 0 then break end
  end
  assert(code == 0, "nginx did not start: " .. tostring(out))
  local server = { port = port, prefix = prefix, url = "http://127.0.0.1:" .. port }
  function server.stop()
    proc.run(env .. " " .. sh(run) .. " stop")
    local log = proc.read_file(prefix .. "/logs/error.log") or ""
    os.execute("rm -rf " .. sh(prefix))
    return log
  end
  function server.log() return proc.read_file(prefix .. "/logs/error.log") or "" end
  assert(proc.wait_for(function()
    return proc.run("curl -s -o /dev/null " .. sh(server.url .. "/ping")) == 0
  end, 10, 0.1), "nginx does not answer /ping")
  return server
end

--- One HTTP request. opts: method, body, headers (list of "Name: value").
-- opts.max: seconds before curl gives up (30). Returns status (number), body (string), seconds.
function M.http(url, opts)
  opts = opts or {}
  local out = os.tmpname()
  local cmd = { "curl", "-s", "-m", tostring(opts.max or 30), "-o", sh(out), "-w", sh("%{http_code} %{time_total}") }
  if opts.method then cmd[#cmd + 1] = "-X " .. sh(opts.method) end
  for _, h in ipairs(opts.headers or {}) do cmd[#cmd + 1] = "-H " .. sh(h) end
  if opts.body then cmd[#cmd + 1] = "--data-binary " .. sh(opts.body) end
  cmd[#cmd + 1] = sh(url)
  local p = io.popen(table.concat(cmd, " "))
  local meta = p:read("*a")
  p:close()
  local body = proc.read_file(out) or ""
  os.remove(out)
  local status, t = meta:match("^(%d+) ([%d.]+)")
  return tonumber(status), body, tonumber(t)
end

--- A listener on 127.0.0.1 that accepts connections and never answers (a second nginx whose
-- HTTP server waits for a request line that a MySQL client never sends: the client waits
-- for the server's greeting). Returns {port=, stop=}.
function M.hung_listener()
  local prefix = tempdir()
  os.execute("mkdir -p " .. sh(prefix .. "/logs") .. " " .. sh(prefix .. "/tmp"))
  local port, code, out
  for _ = 1, 8 do
    port = math.random(20000, 45000)
    local f = assert(io.open(prefix .. "/nginx.conf", "w"))
    f:write(([[
worker_processes 1;
pid nginx.pid;
error_log logs/error.log crit;
events { worker_connections 512; }
http {
    access_log off;
    client_body_temp_path tmp/body; proxy_temp_path tmp/proxy; fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi; scgi_temp_path tmp/scgi;
    client_header_timeout 3600s;
    server { listen 127.0.0.1:%d; location / { return 204; } }
}
]]):format(port))
    f:close()
    code, out = proc.run("nginx -p " .. sh(prefix .. "/") .. " -c " .. sh(prefix .. "/nginx.conf")
      .. " -e " .. sh(prefix .. "/logs/error.log") .. " 2>&1")
    if code == 0 then break end
  end
  assert(code == 0, "hung listener did not start: " .. tostring(out))
  return {
    port = port,
    stop = function()
      proc.run("nginx -p " .. sh(prefix .. "/") .. " -c " .. sh(prefix .. "/nginx.conf")
        .. " -e " .. sh(prefix .. "/logs/error.log") .. " -s stop")
      proc.sleep(0.2)
      os.execute("rm -rf " .. sh(prefix))
    end,
  }
end

return M
