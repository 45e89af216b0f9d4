#!/usr/bin/env bash
# nginx benchmark (bench/nginx.lua): thread pool against blocking enqueue, and an unrelated
# request's latency while the database hangs. About a minute; not part of make test.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
make build >/dev/null
make build LUA=luajit >/dev/null
if [ -z "${CELERS_DSN:-}" ]; then
    scripts/db.sh start >/dev/null
    CELERS_DSN=$(scripts/db.sh dsn)
fi
CELERS_BENCH_DSN=$CELERS_DSN LUA_PATH="$ROOT/?.lua;$ROOT/lua/?.lua;$ROOT/lua/?/init.lua;;" \
    LUA_CPATH="$ROOT/build/lua5.4/?.so;;" lua5.4 bench/nginx.lua
