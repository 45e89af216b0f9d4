local helper = require "spec.helper"

describe("spec.helper", function()
   describe("parse_dsn", function()
      it("reads every part of a full DSN", function()
         local d = helper.parse_dsn("mysql://bob:s3cret@db.example.com:3307/jobs?queue=emails&ssl=1")
         assert.same("bob", d.user)
         assert.same("s3cret", d.password)
         assert.same("db.example.com", d.host)
         assert.same(3307, d.port)
         assert.same("jobs", d.database)
         assert.is_nil(d.socket)
         assert.same({ queue = "emails", ssl = "1" }, d.params)
      end)

      it("reads a socket DSN as printed by scripts/db.sh dsn", function()
         local d = helper.parse_dsn("mysql://celers:celers@localhost/celers?socket=/x/.db/mysqld.sock")
         assert.same("celers", d.user)
         assert.same("celers", d.password)
         assert.same("localhost", d.host)
         assert.is_nil(d.port)
         assert.same("celers", d.database)
         assert.same("/x/.db/mysqld.sock", d.socket)
      end)

      it("percent-decodes user, password, database and parameters", function()
         local d = helper.parse_dsn("mysql://us%40er:p%3Aa%2Fss%40w%25rd@h/d%2Db?socket=%2Ftmp%2Fa%20b.sock")
         assert.same("us@er", d.user)
         assert.same("p:a/ss@w%rd", d.password)
         assert.same("d-b", d.database)
         assert.same("/tmp/a b.sock", d.socket)
      end)

      it("accepts missing parts", function()
         local d = helper.parse_dsn("mysql://h")
         assert.same("h", d.host)
         assert.is_nil(d.user)
         assert.is_nil(d.password)
         assert.is_nil(d.database)
         d = helper.parse_dsn("mysql://u@[::1]:3306/")
         assert.same("u", d.user)
         assert.is_nil(d.password)
         assert.same("::1", d.host)
         assert.same(3306, d.port)
         assert.is_nil(d.database)
      end)

      it("rejects what is not a mysql DSN", function()
         assert.has_error(function() helper.parse_dsn("postgres://a/b") end)
      end)

      it("swaps the database name and keeps the rest", function()
         assert.same("mysql://u:p@h:1/other?socket=/s&x=1",
                     helper.with_database("mysql://u:p@h:1/db?socket=/s&x=1", "other"))
         assert.same("mysql://u:p@h/other", helper.with_database("mysql://u:p@h", "other"))
      end)
   end)

   describe("against the server", function()
      local dsn
      setup(function()
         dsn = helper.fresh_dsn("helper spec!")
      end)

      it("fresh_dsn names a sanitized, empty database", function()
         assert.same("celers_t_helper_spec_", helper.parse_dsn(dsn).database)
         assert.same("celers_t_helper_spec_", helper.scalar(dsn, "SELECT DATABASE()"))
         assert.same("0", helper.scalar(dsn,
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE()"))
      end)

      it("creates a table, inserts and reads back rows", function()
         helper.query(dsn, [[
            CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(50), note TEXT NULL);
            INSERT INTO t VALUES (1, 'one', NULL), (2, 'two', ''), (3, 'drei ünïcødé', 'it''s');
         ]])
         local rows = helper.query(dsn, "SELECT id, name, note FROM t ORDER BY id")
         assert.same({
            { "1", "one", "NULL" },
            { "2", "two", "" },
            { "3", "drei ünïcødé", "it's" },
         }, rows)
         assert.same("3", helper.scalar(dsn, "SELECT COUNT(*) FROM t"))
         assert.same(helper.sql_string("it's"), "'it''s'")
         assert.same("it's", helper.scalar(dsn, "SELECT note FROM t WHERE note = "
            .. helper.sql_string("it's")))
      end)

      it("returns no rows and a nil scalar for an empty result", function()
         assert.same({}, helper.query(dsn, "SELECT 1 FROM DUAL WHERE 1 = 0"))
         assert.is_nil(helper.scalar(dsn, "SELECT 1 FROM DUAL WHERE 1 = 0"))
      end)

      it("fresh_dsn starts over", function()
         local again = helper.fresh_dsn("helper spec!")
         assert.same(dsn, again)
         assert.same("0", helper.scalar(again,
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE()"))
      end)

      it("raises with the client's message on an SQL error", function()
         local ok, err = pcall(helper.query, dsn, "SELECT * FROM no_such_table")
         assert.is_false(ok)
         assert.matches("no_such_table", tostring(err))
      end)

      it("leaves the password out of error messages", function()
         -- a failing query reports the SQL and the client's message, never the password
         local d = helper.parse_dsn(dsn)
         local ok, err = pcall(helper.query, dsn, "SELEC broken")
         assert.is_false(ok)
         assert.is_nil(tostring(err):find("password=" .. d.password, 1, true))
      end)
   end)

   describe("child processes", function()
      it("runs the same Lua with the same paths", function()
         local p = io.popen(helper.lua_cmd() .. [[ -e 'print(_VERSION, jit and "jit" or "nojit", package.path)']])
         local out = p:read("*a")
         p:close()
         local version, kind, path = out:match("^(%S+ %S+)\t(%S+)\t(.-)\n$")
         assert.same(_VERSION, version)
         assert.same(jit and "jit" or "nojit", kind)
         assert.same(package.path, path)
      end)

      it("tells whether the server is private", function()
         assert.is_boolean(helper.private_server())
      end)
   end)
end)
