-- Child processes for the Lua-layer specs: run a Lua script in the background with the same
-- interpreter and paths, learn its pid (the script writes it), signal it, wait for its exit code.
local helper = require "spec.helper"

local proc = {}

local function read_file(path)
   local f = io.open(path, "rb")
   if not f then return nil end
   local s = f:read("*a")
   f:close()
   return s
end
proc.read_file = read_file

local function sleep(s)
   os.execute(("sleep %.3f"):format(s))
end
proc.sleep = sleep

-- Poll fn() every `step` seconds until it returns a truthy value or `timeout` seconds pass.
function proc.wait_for(fn, timeout, step)
   local deadline = os.time() + (timeout or 30)
   repeat
      local v = fn()
      if v then return v end
      sleep(step or 0.1)
   until os.time() > deadline
   return nil
end

--- Start `script` with the given argument strings (shell-quoted here) in the background.
-- env: table of extra environment variables. Returns a handle {pidfile=, out=, rc=}.
function proc.spawn(script, args, env)
   local h = { out = os.tmpname(), rc = os.tmpname(), pidfile = os.tmpname() }
   os.remove(h.rc)
   os.remove(h.pidfile)
   local parts = {}
   for k, v in pairs(env or {}) do parts[#parts + 1] = k .. "=" .. helper.shell_quote(v) end
   parts[#parts + 1] = "CELERS_PIDFILE=" .. helper.shell_quote(h.pidfile)
   parts[#parts + 1] = helper.lua_cmd()
   parts[#parts + 1] = helper.shell_quote(script)
   for _, a in ipairs(args or {}) do parts[#parts + 1] = helper.shell_quote(a) end
   local cmd = ("(%s >%s 2>&1 </dev/null; echo $? >%s.tmp; mv %s.tmp %s) >/dev/null 2>&1 &"):format(
      table.concat(parts, " "), helper.shell_quote(h.out), helper.shell_quote(h.rc),
      helper.shell_quote(h.rc), helper.shell_quote(h.rc))
   os.execute(cmd)
   return h
end

--- The pid the child wrote to CELERS_PIDFILE (waits for it).
function proc.pid(h, timeout)
   return proc.wait_for(function()
      local s = read_file(h.pidfile)
      return s and tonumber(s:match("%d+"))
   end, timeout or 20)
end

function proc.kill(pid, sig)
   return os.execute(("kill -%s %d 2>/dev/null"):format(sig or "TERM", pid))
end

--- Wait for the child to end; returns its exit code (nil on timeout) and its output.
function proc.wait(h, timeout)
   local code = proc.wait_for(function()
      local s = read_file(h.rc)
      return s and tonumber(s:match("%d+"))
   end, timeout or 60)
   return code, read_file(h.out) or ""
end

function proc.output(h)
   return read_file(h.out) or ""
end

-- Runs a shell command; returns exit code and combined output.
function proc.run(cmd)
   local out = os.tmpname()
   local ok, _, code = os.execute(cmd .. " >" .. helper.shell_quote(out) .. " 2>&1")
   if type(ok) == "number" then code = ok >= 256 and math.floor(ok / 256) or ok
   elseif ok == true then code = 0 end
   local s = read_file(out) or ""
   os.remove(out)
   return code, s
end

return proc
