-- connect: DSN strings and option tables, connection errors, and no password in any message.
-- luacheck: max line length 160
local helper = require "spec.helper"
local celers = require "celers"

local SECRET = "Sup3rS3cr3tPw"

-- no message may contain the secret (nor its percent-encoded form)
local function assert_no_secret(text)
   text = tostring(text)
   assert.is_nil(text:find(SECRET, 1, true), "password echoed: " .. text)
   assert.is_nil(text:find("Sup3rS3", 1, true), "part of the password echoed: " .. text)
end

-- the message of the error f raises
local function raised(f)
   local ok, msg = pcall(f)
   assert.is_false(ok, "expected an error")
   return tostring(msg)
end

describe("connect", function()
   local dsn, parts

   setup(function()
      dsn = helper.fresh_dsn("spec_connect")
      parts = helper.parse_dsn(dsn)
      local b = assert(celers.connect(dsn))
      assert(b:migrate())
      b:close()
   end)

   it("accepts the DSN string", function()
      local b, err = celers.connect(dsn)
      assert.is_nil(err)
      assert.matches("^celers%.broker%(queue=default%)$", tostring(b))
      local id = assert(b:enqueue("t", "x"))
      assert.equal("t", helper.scalar(dsn, "SELECT task_name FROM celers_tasks WHERE id = " .. helper.sql_string(id)))
      b:close()
   end)

   it("accepts an options table with the same parts", function()
      local b = assert(celers.connect({
         host = parts.host, port = parts.port, user = parts.user, password = parts.password,
         database = parts.database, socket = parts.socket, queue = "tbl", lease = 30,
         retry = { base = 2, factor = 3, max = 60 }, recover_interval = 0, reconnect_tries = 2,
         worker_id = "my-worker",
      }))
      assert.equal("tbl", b:queue())
      assert.equal("my-worker", b:worker_id())
      local id = assert(b:enqueue("t", "x"))
      local task = assert(b:dequeue())
      assert.equal(id, task.id)
      assert.equal("my-worker", task.worker_id)
      assert.is_true(math.abs(task.lease_expires_at - task.started_at - 30) < 0.01)
      assert.equal("tbl", helper.scalar(dsn, "SELECT queue FROM celers_tasks WHERE id = " .. helper.sql_string(id)))
      b:close()
   end)

   it("accepts { dsn = ... } with other options on top", function()
      local b = assert(celers.connect({ dsn = dsn, queue = "over", lease = 12 }))
      assert.equal("over", b:queue())
      assert(b:enqueue("t", "x"))
      local task = assert(b:dequeue())
      assert.is_true(math.abs(task.lease_expires_at - task.started_at - 12) < 0.01)
      b:close()
   end)

   it("gives a default worker id of host:pid and lets it be changed", function()
      local b = assert(celers.connect(dsn))
      assert.matches("^.+:%d+$", b:worker_id())
      assert.equal("renamed", b:worker_id("renamed"))
      assert.equal("renamed", b:worker_id())
      b:close()
   end)

   it("works in UTC on the database clock", function()
      local b = assert(celers.connect(dsn))
      local id = assert(b:enqueue("t", "x"))
      local task = b:get_task(id)
      local db = tonumber(helper.scalar(dsn, "SELECT UNIX_TIMESTAMP(created_at) FROM celers_tasks WHERE id = " .. helper.sql_string(id)))
      assert.is_true(math.abs(task.created_at - db) < 0.001)
      b:close()
   end)

   describe("failures", function()
      local function dsn_with_password(password, database)
         local d = helper.parse_dsn(dsn)
         local query = dsn:match("%?(.*)$")
         return ("mysql://%s:%s@%s%s/%s%s"):format(d.user, password, d.host or "localhost",
            d.port and (":" .. d.port) or "", database or d.database, query and ("?" .. query) or "")
      end

      it("a wrong password returns a connect error that does not contain it", function()
         local b, err = celers.connect(dsn_with_password(SECRET))
         assert.is_nil(b)
         assert.equal("connect", err.code)
         assert.is_number(err.errno)
         assert.is_string(err.sqlstate)
         assert.matches("^celers: connect: ", tostring(err))
         assert_no_secret(tostring(err))
         assert_no_secret(err.message)
      end)

      it("a wrong password in an options table is not echoed either", function()
         local b, err = celers.connect({ user = parts.user, password = SECRET, socket = parts.socket,
                                         host = parts.host, port = parts.port, database = parts.database })
         assert.is_nil(b)
         assert.equal("connect", err.code)
         assert_no_secret(tostring(err))
      end)

      it("an unknown database returns a connect error", function()
         local b, err = celers.connect(helper.with_database(dsn, "celers_no_such_db_x"))
         assert.is_nil(b)
         assert.equal("connect", err.code)
         assert.matches("celers_no_such_db_x", err.message)
      end)

      it("an unreachable server returns a retryable connect error without the password", function()
         local b, err = celers.connect({ socket = "/nonexistent/celers.sock", user = "u",
                                         password = SECRET, connect_timeout = 2 })
         assert.is_nil(b)
         assert.equal("connect", err.code)
         assert.is_true(err.retryable)
         assert_no_secret(tostring(err))
      end)

      it("a malformed DSN raises without echoing it", function()
         local cases = {
            "postgres://u:" .. SECRET .. "@h/db",
            "mysql://u:" .. SECRET .. "@h/db?Lease=1",
            "mysql://u:" .. SECRET .. "@h/db?lease",
            "mysql://u:" .. SECRET .. "@h/db?lease=" .. SECRET,
            "mysql://u:" .. SECRET .. "@h:" .. SECRET .. "/db",
            "mysql://u@h/db?password=" .. SECRET,
            "mysql://u:" .. SECRET .. "@h/db?nosuchoption=1",
         }
         for _, bad in ipairs(cases) do
            local msg = raised(function() return celers.connect(bad) end)
            assert.matches("^celers: connect: ", msg:gsub("^[^:]*:%d+: ", ""))
            assert_no_secret(msg)
         end
      end)

      it("bad options raise naming the option, never the password", function()
         local base = { socket = parts.socket, user = parts.user, password = SECRET }
         local function with(k, v)
            local t = {}
            for key, val in pairs(base) do t[key] = val end
            t[k] = v
            return t
         end
         local cases = {
            { with("port", "http"), "'port'" },
            { with("lease", -1), "'lease'" },
            { with("retry", 5), "'retry'" },
            { with("nosuch", 1), "unknown option 'nosuch'" },
            { with("password", {}), "'password'" },
            { with("worker_id", 5), "'worker_id'" },
            { with("queue", ""), "'queue'" },
         }
         for _, case in ipairs(cases) do
            local msg = raised(function() return celers.connect(case[1]) end)
            assert.is_truthy(msg:find(case[2], 1, true), msg)
            assert_no_secret(msg)
         end
         local msg = raised(function() return celers.connect(42) end)
         assert.matches("'dsn' must be a DSN string or an options table %(got number%)", msg)
      end)
   end)
end)
