# celers-broker-sql for Lua
#   make            build celers/core.so for Lua 5.4 (build/lua5.4/)
#   make LUA=luajit build it for LuaJIT / Lua 5.1 ABI, as nginx loads it (build/luajit/)
#   make test       install what is missing, build, run every spec on a private MariaDB
#   make demo       the same set-up, then a producer and a worker pool (examples/)
#   make bench      throughput of each operation beside the raw-SQL floor
#   make chaos      workers drain 20,000 tasks through kills and server restarts (not in test)
#   make lint       clang-format check, cppcheck, clang-tidy, luacheck
#   make valgrind   the specs under valgrind (Lua 5.4)
#   make install    core.so and the Lua modules into the system Lua paths
#   make db-start / db-stop   the private MariaDB server in .db/
#   make dashboard  the web dashboard on 127.0.0.1:8090 (LISTEN=addr:port), in the foreground

LUA ?= lua5.4
ifeq ($(LUA),luajit)
  LUA_PC := luajit
  LUA_ABI := 5.1
else ifeq ($(LUA),5.1)
  LUA_PC := luajit
  LUA_ABI := 5.1
  override LUA := luajit
else
  LUA_PC := lua5.4
  LUA_ABI := 5.4
  override LUA := lua5.4
endif

MYSQL_PC := $(shell pkg-config --exists libmariadb && echo libmariadb || echo mysqlclient)
BUILD := build/$(LUA)
CC ?= cc
CFLAGS ?= -O2 -g
# LuaRocks passes LUA_INCDIR, MYSQL_INCDIR/MYSQL_LIBDIR and UUID_INCDIR/UUID_LIBDIR;
# by hand, pkg-config finds them.
ifdef LUA_INCDIR
  LUA_CFLAGS := -I$(LUA_INCDIR)
else
  LUA_CFLAGS := $(shell pkg-config --cflags $(LUA_PC))
endif
ifdef MYSQL_INCDIR
  DEP_CFLAGS := -I$(MYSQL_INCDIR) -I$(MYSQL_INCDIR)/mariadb -I$(MYSQL_INCDIR)/mysql $(if $(UUID_INCDIR),-I$(UUID_INCDIR))
  LDLIBS := -L$(MYSQL_LIBDIR) $(if $(UUID_LIBDIR),-L$(UUID_LIBDIR)) -l$(if $(wildcard $(MYSQL_LIBDIR)/libmariadb.so*),mariadb,mysqlclient) -luuid
else
  DEP_CFLAGS := $(shell pkg-config --cflags $(MYSQL_PC) uuid)
  LDLIBS := $(shell pkg-config --libs $(MYSQL_PC) uuid)
endif
CFLAGS += -std=c11 -D_GNU_SOURCE -fPIC -Wall -Wextra -Werror -Icsrc -I$(BUILD) $(LUA_CFLAGS) $(DEP_CFLAGS)

CORE_SRC := errors.c config.c uuid7.c connection.c statement.c migrate.c enqueue.c task.c staging.c handoff.c admin.c inspect.c results.c dlq.c upkeep.c process.c workers.c json.c base64.c dashboard.c transaction.c snooze.c
BIND_SRC := auxiliar.c lrows.c lbroker.c lenqueue.c lclaim.c ladmin.c lupkeep.c lcore.c lworkers.c lmigrate.c lcodec.c ldashboard.c ltransaction.c lsnooze.c
OBJS := $(addprefix $(BUILD)/,$(CORE_SRC:.c=.o) $(BIND_SRC:.c=.o) migrations_data.o)
SQL := $(sort $(wildcard sql/*.sql))
SO := $(BUILD)/celers/core.so

PREFIX ?= /usr/local
LUA_LIBDIR ?= $(PREFIX)/lib/lua/$(LUA_ABI)
LUA_SHAREDIR ?= $(PREFIX)/share/lua/$(LUA_ABI)

.PHONY: all build test demo bench chaos lint format valgrind install clean db-start db-stop dashboard

all: build
build: $(SO)

$(SO): $(OBJS)
	@mkdir -p $(dir $@)
	$(CC) -shared -o $@ $(OBJS) $(LDFLAGS) $(LDLIBS)

$(BUILD)/%.o: csrc/%.c csrc/*.h | $(BUILD)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/migrations_data.c: $(SQL) scripts/embed-sql.sh | $(BUILD)
	scripts/embed-sql.sh $(SQL) > $@

$(BUILD)/migrations_data.o: $(BUILD)/migrations_data.c csrc/migrate.h
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD):
	mkdir -p $@

# The raw-SQL floor of `make bench`: libmysqlclient only, no Lua, no core.
build/bench/floor: bench/floor.c
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -Werror $(shell pkg-config --cflags $(MYSQL_PC)) \
		-o $@ $< $(shell pkg-config --libs $(MYSQL_PC))

test:
	scripts/test.sh

demo:
	scripts/demo.sh

bench:
	scripts/bench.sh

chaos:
	scripts/chaos.sh

lint:
	scripts/lint.sh

format:
	clang-format -i csrc/*.c csrc/*.h bench/*.c

valgrind:
	scripts/valgrind.sh

install: $(SO)
	install -d $(DESTDIR)$(LUA_LIBDIR)/celers $(DESTDIR)$(LUA_SHAREDIR)/celers $(DESTDIR)$(PREFIX)/bin
	install -m 755 $(SO) $(DESTDIR)$(LUA_LIBDIR)/celers/core.so
	install -m 644 lua/celers/*.lua $(DESTDIR)$(LUA_SHAREDIR)/celers/
	install -m 755 bin/celers $(DESTDIR)$(PREFIX)/bin/celers

clean:
	rm -rf build

db-start:
	scripts/db.sh start

db-stop:
	scripts/db.sh stop

LISTEN ?= 127.0.0.1:8090
dashboard:
	scripts/dashboard.sh --listen $(LISTEN)
