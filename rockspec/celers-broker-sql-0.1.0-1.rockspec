rockspec_format = "3.0"
package = "celers-broker-sql"
version = "0.1.0-1"
source = {
   url = "git+file:///work/main",
   tag = "v0.1.0",
}
description = {
   summary = "A reliable MySQL/MariaDB task queue for Lua: C core, workers, retries, cron jobs.",
   detailed = [[
celers-broker-sql keeps tasks in MySQL 8.0+ or MariaDB 10.6+ tables: at-least-once delivery,
claims fenced by a lease, expired leases recovered, exhausted retries dead-lettered. The broker
is a C module over libmysqlclient/libmariadb; workers, retry policies, a circuit breaker,
recurring (cron) jobs, bulk import/export, Prometheus metrics and a CLI are in Lua.
]],
   license = "MIT",
}
dependencies = {
   "lua >= 5.1, < 5.5",
   "lua-cjson",
}
external_dependencies = {
   MYSQL = { header = "mysql.h" },
   UUID = { header = "uuid/uuid.h", library = "uuid" },
}
build = {
   type = "make",
   build_target = "build",
   build_variables = {
      CFLAGS = "$(CFLAGS)",
      LUA_INCDIR = "$(LUA_INCDIR)",
      MYSQL_INCDIR = "$(MYSQL_INCDIR)",
      MYSQL_LIBDIR = "$(MYSQL_LIBDIR)",
      UUID_INCDIR = "$(UUID_INCDIR)",
      UUID_LIBDIR = "$(UUID_LIBDIR)",
      LUA = "$(LUA)",
   },
   install_target = "install",
   install_variables = {
      PREFIX = "$(PREFIX)",
      LUA_LIBDIR = "$(LIBDIR)",
      LUA_SHAREDIR = "$(LUADIR)",
      LUA = "$(LUA)",
   },
}
