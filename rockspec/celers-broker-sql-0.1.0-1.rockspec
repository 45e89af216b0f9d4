rockspec_format = "3.0"
package = "celers-broker-sql"
version = "0.1.0-1"
-- `make dist` writes this tarball (git archive of the checkout) and a source rock holding it
-- and this rockspec to build/dist/: `luarocks build build/dist/celers-broker-sql-0.1.0-1.src.rock`.
-- `luarocks make` builds the checkout itself and needs no source. See README, "Installing".
source = {
   url = "celers-broker-sql-0.1.0.tar.gz",
   dir = "celers-broker-sql-0.1.0",
}
description = {
   summary = "A reliable MySQL/MariaDB task queue for Lua: C core, workers, retries, cron jobs.",
   detailed = [[
celers-broker-sql keeps tasks in MySQL 8.0+ or MariaDB 10.6+ tables: at-least-once delivery,
claims fenced by a lease, expired leases recovered, exhausted retries dead-lettered. The broker
is a C module over libmysqlclient/libmariadb; workers, retry policies, a circuit breaker,
recurring (cron) jobs, bulk import/export, Prometheus metrics and a CLI are in Lua.
Lua 5.4 and LuaJIT (5.1 ABI, as OpenResty loads it). PUC Lua 5.1 is refused at build time.
]],
   license = "MIT",
}
-- "lua 5.1" here means LuaJIT: LuaRocks cannot tell LuaJIT from PUC 5.1 in a dependency,
-- so the Makefile refuses PUC 5.1 headers (no luajit.h) with a clear message.
dependencies = {
   "lua >= 5.1, < 5.5",
   "lua-cjson",
}
-- libmariadb (or libmysqlclient) is found by pkg-config in the Makefile: its header is in
-- include/mariadb/ or include/mysql/ depending on the package, which a header check here cannot
-- express. Give MYSQL_INCDIR=... MYSQL_LIBDIR=... to luarocks to use another one.
external_dependencies = {
   UUID = { header = "uuid/uuid.h", library = "uuid" },
}
build = {
   type = "make",
   build_target = "build",
   build_variables = {
      CFLAGS = "$(CFLAGS)",
      LUA_INCDIR = "$(LUA_INCDIR)",
      UUID_INCDIR = "$(UUID_INCDIR)",
      UUID_LIBDIR = "$(UUID_LIBDIR)",
      LUA = "$(LUA)",
   },
   install_target = "install-modules",
   install_variables = {
      LUA_LIBDIR = "$(LIBDIR)",
      LUA_SHAREDIR = "$(LUADIR)",
      LUA = "$(LUA)",
   },
   install = {
      bin = { celers = "bin/celers.lua" },
   },
   copy_directories = { "docs", "examples" },
}
