#!/usr/bin/env bash
# make bench: build the module and the raw-SQL floor, then run bench/bench.lua on the private
# server (started here and stopped after) or on CELERS_DSN's server.
#   BENCH_ROUNDS=3  rounds per operation (best of each side is reported)
#   BENCH_SCALE=1   multiplies the task counts
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

scripts/deps.sh
make build
make build/bench/floor

STARTED_DB=0
cleanup() { if [ "$STARTED_DB" = 1 ]; then scripts/db.sh stop || true; fi; }
trap cleanup EXIT

export CELERS_TEST_DSN=${CELERS_DSN:-}
if [ -z "$CELERS_TEST_DSN" ]; then
    if ! scripts/db.sh status >/dev/null 2>&1; then
        STARTED_DB=1
        scripts/db.sh start
    fi
    CELERS_TEST_DSN=$(scripts/db.sh dsn)
fi

export LUA_PATH="$ROOT/?.lua;$ROOT/lua/?.lua;$ROOT/lua/?/init.lua;;"
export LUA_CPATH="$ROOT/build/lua5.4/?.so;;"
echo "server: $(mariadb --version | head -1)"
echo "machine: $(nproc) cores; figures are tasks/second, best of ${BENCH_ROUNDS:-3} rounds each"
lua5.4 bench/bench.lua
lua5.4 bench/json.lua
make build LUA=luajit >/dev/null && LUA_CPATH="$ROOT/build/luajit/?.so;;" luajit bench/json.lua
