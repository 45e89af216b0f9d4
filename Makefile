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
#   make check-rock luarocks make into fresh trees (5.4, LuaJIT), then a producer and a worker
#   make docs       the API reference (LDoc) in build/docs/
#   make dist       the source tarball the rockspec names
#   make db-start / db-stop   the private MariaDB server in .db/
#   make dashboard  the web dashboard on 127.0.0.1:8090 (LISTEN=addr:port), in the foreground

LUA ?= lua5.4
# LuaRocks passes LUA as the interpreter's path (/usr/bin/luajit, /usr/bin/lua5.4): the
# variant is chosen by its name. 5.1 means the LuaJIT ABI (PUC Lua 5.1 is not supported).
LUA_NAME := $(notdir $(LUA))
ifneq ($(findstring jit,$(LUA_NAME)),)
  VARIANT := luajit
else ifneq ($(filter 5.1 lua5.1 lua51 lua-5.1,$(LUA_NAME)),)
  VARIANT := luajit
else
  VARIANT := lua5.4
endif
ifeq ($(VARIANT),luajit)
  LUA_PC := luajit
  LUA_ABI := 5.1
else
  LUA_PC := lua5.4
  LUA_ABI := 5.4
endif

MYSQL_PC := $(shell pkg-config --exists libmariadb && echo libmariadb || \
              (pkg-config --exists mysqlclient && echo mysqlclient))
BUILD := build/$(VARIANT)
CC ?= cc
CFLAGS ?= -O2 -g
# LuaRocks passes LUA_INCDIR (and CFLAGS, UUID_INCDIR/UUID_LIBDIR); MYSQL_INCDIR/MYSQL_LIBDIR
# may be given by hand. Otherwise pkg-config finds them.
ifdef LUA_INCDIR
  LUA_CFLAGS := -I$(LUA_INCDIR)
  ifeq ($(LUA_ABI),5.1)
    ifeq ($(wildcard $(LUA_INCDIR)/luajit.h),)
      $(error $(LUA_INCDIR) holds PUC Lua 5.1 headers: celers needs Lua 5.4 or LuaJIT \
        (for LuaJIT, see README "Installing"))
    endif
  endif
else
  LUA_CFLAGS := $(shell pkg-config --cflags $(LUA_PC))
endif
ifdef MYSQL_INCDIR
  MYSQL_CFLAGS := -I$(MYSQL_INCDIR) -I$(MYSQL_INCDIR)/mariadb -I$(MYSQL_INCDIR)/mysql
  MYSQL_LIBS := -L$(MYSQL_LIBDIR) -l$(if $(wildcard $(MYSQL_LIBDIR)/libmariadb.so*),mariadb,mysqlclient)
else ifneq ($(MYSQL_PC),)
  MYSQL_CFLAGS := $(shell pkg-config --cflags $(MYSQL_PC))
  MYSQL_LIBS := $(shell pkg-config --libs $(MYSQL_PC))
else
  $(error neither libmariadb nor mysqlclient is known to pkg-config: install libmariadb-dev \
    (or give MYSQL_INCDIR= and MYSQL_LIBDIR=))
endif
ifdef UUID_INCDIR
  UUID_CFLAGS := -I$(UUID_INCDIR) -I$(UUID_INCDIR)/uuid
  UUID_LIBS := $(if $(UUID_LIBDIR),-L$(UUID_LIBDIR)) -luuid
else
  UUID_CFLAGS := $(shell pkg-config --cflags uuid)
  UUID_LIBS := $(shell pkg-config --libs uuid)
endif
DEP_CFLAGS := $(MYSQL_CFLAGS) $(UUID_CFLAGS)
LDLIBS := $(MYSQL_LIBS) $(UUID_LIBS)
# override: LuaRocks sets CFLAGS on the command line, which would otherwise drop these
override CFLAGS += -std=c11 -D_GNU_SOURCE -fPIC -Wall -Wextra -Werror -Icsrc -I$(BUILD) $(LUA_CFLAGS) $(DEP_CFLAGS)

CORE_SRC := errors.c config.c uuid7.c connection.c statement.c migrate.c enqueue.c task.c staging.c handoff.c admin.c inspect.c results.c dlq.c upkeep.c process.c workers.c json.c base64.c dashboard.c transaction.c snooze.c task_limits.c
BIND_SRC := auxiliar.c lrows.c lbroker.c lenqueue.c lclaim.c ladmin.c lupkeep.c lcore.c lworkers.c lmigrate.c lcodec.c ldashboard.c ltransaction.c lunique.c lsnooze.c lexecute.c ltask_limits.c
OBJS := $(addprefix $(BUILD)/,$(CORE_SRC:.c=.o) $(BIND_SRC:.c=.o) migrations_data.o)
SQL := $(sort $(wildcard sql/*.sql))
SO := $(BUILD)/celers/core.so

PREFIX ?= /usr/local
LUA_LIBDIR ?= $(PREFIX)/lib/lua/$(LUA_ABI)
LUA_SHAREDIR ?= $(PREFIX)/share/lua/$(LUA_ABI)

.PHONY: all build test demo bench chaos lint format valgrind install install-modules dist check-rock docs clean db-start db-stop dashboard

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

install: install-modules
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 755 bin/celers $(DESTDIR)$(PREFIX)/bin/celers

# what LuaRocks installs (it wraps bin/celers.lua as the tree's `celers` itself)
install-modules: $(SO)
	install -d $(DESTDIR)$(LUA_LIBDIR)/celers $(DESTDIR)$(LUA_SHAREDIR)/celers
	install -m 755 $(SO) $(DESTDIR)$(LUA_LIBDIR)/celers/core.so
	install -m 644 lua/celers/*.lua $(DESTDIR)$(LUA_SHAREDIR)/celers/

# the source tarball the rockspec names and the source rock holding both (a zip), so that
# `luarocks build build/dist/celers-broker-sql-$(VERSION)-1.src.rock` works anywhere
VERSION := 0.1.0
ROCK := celers-broker-sql-$(VERSION)-1
dist:
	scripts/deps.sh zip
	@rm -rf build/dist && mkdir -p build/dist
	git archive --format=tar.gz --prefix=celers-broker-sql-$(VERSION)/ -o build/dist/celers-broker-sql-$(VERSION).tar.gz HEAD
	cp rockspec/$(ROCK).rockspec build/dist/
	cd build/dist && zip -q $(ROCK).src.rock $(ROCK).rockspec celers-broker-sql-$(VERSION).tar.gz
	@echo build/dist/$(ROCK).src.rock

# install the rock into a fresh tree (Lua 5.4 and LuaJIT) and run a producer and a worker
# from outside the checkout against the private database (scripts/check-rock.sh)
check-rock:
	scripts/check-rock.sh

# the API reference (LDoc): the Lua modules from their doc comments, the broker's C methods
# from docs/ref/broker.luadoc
docs:
	scripts/deps.sh lua-ldoc
	@rm -rf build/docs
	ldoc -b "$(CURDIR)/lua" .
	@echo "build/docs/index.html"

clean:
	rm -rf build

db-start:
	scripts/db.sh start

db-stop:
	scripts/db.sh stop

LISTEN ?= 127.0.0.1:8090
dashboard:
	scripts/dashboard.sh --listen $(LISTEN)
