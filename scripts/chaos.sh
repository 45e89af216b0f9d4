#!/usr/bin/env bash
# make chaos: bench/chaos.lua on the private server of .db/ (never on $CELERS_DSN's server: it
# kills and restarts mariadbd). Not part of make test. Bounded: CHAOS_DEADLINE (300 s) for the
# drain, plus set-up; see bench/chaos.lua for the knobs.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

make build >/dev/null
STARTED_DB=0
if ! scripts/db.sh status >/dev/null 2>&1; then
    STARTED_DB=1
    scripts/db.sh start
fi
cleanup() { if [ "$STARTED_DB" = 1 ]; then scripts/db.sh stop || true; fi; }
trap cleanup EXIT

export CELERS_TEST_DSN
CELERS_TEST_DSN=$(scripts/db.sh dsn)
export CELERS_TEST_PRIVATE=1
export LUA_PATH="$ROOT/?.lua;$ROOT/lua/?.lua;$ROOT/lua/?/init.lua;;"
export LUA_CPATH="$ROOT/build/lua5.4/?.so;;"
DSN=$(LUA_PATH="$LUA_PATH" lua5.4 -e 'print(require("spec.helper").fresh_dsn("chaos"))')
timeout -k 10 "${CHAOS_TIMEOUT:-350}" lua5.4 bench/chaos.lua drive "$DSN"
