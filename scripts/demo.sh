#!/usr/bin/env bash
# make demo: install what is missing, build, start the private MariaDB in .db/ (unless
# CELERS_DSN names your own server), then run examples/demo.lua (producer, workers on two
# queues, results and statistics) and examples/worker_pool.lua (a pool of processes). The private server
# keeps running afterwards so you can try bin/celers on it; `make db-stop` stops it.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
scripts/deps.sh
make build
if [ -z "${CELERS_DSN:-}" ]; then
    scripts/db.sh start
    CELERS_DSN=$(scripts/db.sh dsn)
fi
export LUA_PATH="$ROOT/lua/?.lua;$ROOT/lua/?/init.lua;;"
export LUA_CPATH="$ROOT/build/lua5.4/?.so;;"
export CELERS_DSN
echo "== examples/demo.lua: a producer and a worker per queue"
lua5.4 examples/demo.lua "$CELERS_DSN"
echo
echo "== examples/worker_pool.lua: a pool of worker processes draining a queue"
lua5.4 examples/worker_pool.lua
echo
echo "The demo database is still running. To see what the demo did:"
echo "  export CELERS_DSN='$CELERS_DSN'"
echo "  bin/celers queues                                   every queue and its counts"
echo "  bin/celers --queue demo_emails tasks list            the e-mail tasks and their states"
echo "  bin/celers --queue demo_emails dlq list              the bounced e-mail, dead-lettered"
echo "  bin/celers --queue demo_reports tasks list --state completed"
echo "  bin/celers --queue pool_demo stats                   what the worker pool drained"
echo "Stop the database with: make db-stop"
