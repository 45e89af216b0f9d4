#!/usr/bin/env bash
# make bench: build the module and the floors, then run bench/bench.lua twice:
#   1. on the durable private server (.db/, innodb_flush_log_at_trx_commit=1; started here and
#      stopped after if it was not running), or on CELERS_DSN's server when that is set;
#   2. on a second private server whose data folder is on tmpfs (/dev/shm) with
#      innodb_flush_log_at_trx_commit=2, where the disk stops hiding CPU costs (skipped with
#      CELERS_DSN, or BENCH_TMPFS=0).
#   BENCH_ROUNDS=2  rounds per operation (best of each side is reported)
#   BENCH_SCALE=1   multiplies the task counts
#   BENCH_BIG=1     multiplies the scale rows (1,000,000 completed, 300,000 scheduled); 0.1 is quick
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

scripts/deps.sh
make build
make build/bench/floor
# the peer row: Celery's kombu SQL transport (Debian packages)
if ! /usr/bin/python3 -c 'import kombu, sqlalchemy, MySQLdb' 2>/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            python3-kombu python3-sqlalchemy python3-mysqldb >/dev/null || true
    fi
fi

STARTED_DB=0
TMPFS_DIR=
cleanup() {
    if [ "$STARTED_DB" = 1 ]; then scripts/db.sh stop || true; fi
    if [ -n "$TMPFS_DIR" ]; then
        CELERS_DB_DIR=$TMPFS_DIR scripts/db.sh stop >/dev/null 2>&1 || true
        rm -rf "$TMPFS_DIR"
    fi
}
trap cleanup EXIT

export LUA_PATH="$ROOT/?.lua;$ROOT/lua/?.lua;$ROOT/lua/?/init.lua;;"
export LUA_CPATH="$ROOT/build/lua5.4/?.so;;"

run() { # label dsn
    local label=$1
    export CELERS_TEST_DSN=$2
    echo
    echo "== $label"
    echo "server: $(mariadb --version | head -1)"
    echo "machine: $(nproc) cores; best of ${BENCH_ROUNDS:-2} rounds each; ratios are module / floor"
    echo "command: BENCH_ROUNDS=${BENCH_ROUNDS:-2} BENCH_SCALE=${BENCH_SCALE:-1} BENCH_BIG=${BENCH_BIG:-1} make bench"
    BENCH_LABEL=$label lua5.4 bench/bench.lua
}

if [ -n "${CELERS_DSN:-}" ]; then
    run "server of CELERS_DSN" "$CELERS_DSN"
    exit 0
fi

if ! scripts/db.sh status >/dev/null 2>&1; then
    STARTED_DB=1
    scripts/db.sh start
fi
run "durable: private server in .db/, innodb_flush_log_at_trx_commit=1" "$(scripts/db.sh dsn)"
echo
echo "== JSON codec and table payloads (bench/json.lua), durable server"
lua5.4 bench/json.lua
make build LUA=luajit >/dev/null && LUA_CPATH="$ROOT/build/luajit/?.so;;" luajit bench/json.lua

if [ "${BENCH_TMPFS:-1}" != 0 ] && [ -d /dev/shm ]; then
    TMPFS_DIR=$(mktemp -d /dev/shm/celers-bench.XXXXXX)
    CELERS_DB_DIR=$TMPFS_DIR CELERS_DB_ARGS="--innodb-flush-log-at-trx-commit=2 --innodb-buffer-pool-size=1G" \
        scripts/db.sh start >/dev/null
    run "tmpfs: data folder on /dev/shm, innodb_flush_log_at_trx_commit=2" \
        "$(CELERS_DB_DIR=$TMPFS_DIR scripts/db.sh dsn)"
fi
