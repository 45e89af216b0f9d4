#!/usr/bin/env bash
# The web dashboard on the private database (or $CELERS_DSN), in the foreground:
#
#   scripts/dashboard.sh [--listen 127.0.0.1:8090]     (make dashboard; Ctrl-C stops it)
#
# It builds the LuaJIT module if needed, starts and migrates the private MariaDB of
# scripts/db.sh unless CELERS_DSN is set, writes an nginx.conf (examples/nginx/nginx.conf) into
# a temporary folder and runs nginx there with one worker. Read-only unless
# CELERS_DASHBOARD_TOKEN is set: the page then unlocks its actions with that token.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
listen=127.0.0.1:8090
while [ $# -gt 0 ]; do
    case "$1" in
    --listen) listen=${2:?--listen needs ADDRESS:PORT}; shift 2 ;;
    --listen=*) listen=${1#--listen=}; shift ;;
    -h | --help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "dashboard: unknown argument $1 (--listen ADDRESS:PORT)" >&2; exit 2 ;;
    esac
done
case "$listen" in
*:*) ;;
*) echo "dashboard: --listen wants ADDRESS:PORT, e.g. 127.0.0.1:8090" >&2; exit 2 ;;
esac

"$ROOT/scripts/deps.sh"
[ -f "$ROOT/build/luajit/celers/core.so" ] || make -C "$ROOT" build LUA=luajit >/dev/null
if [ -z "${CELERS_DSN:-}" ]; then
    "$ROOT/scripts/db.sh" start >/dev/null
    CELERS_DSN=$("$ROOT/scripts/db.sh" dsn)
fi
export CELERS_DSN
LUA_PATH="$ROOT/lua/?.lua;$ROOT/lua/?/init.lua;;" LUA_CPATH="$ROOT/build/luajit/?.so;;" \
    luajit -e 'local b = assert(require("celers").connect(os.getenv("CELERS_DSN"))); assert(b:migrate())'

prefix=$(mktemp -d "${TMPDIR:-/tmp}/celers-dashboard.XXXXXX")
trap 'rm -rf "$prefix"' EXIT
[ -n "${CELERS_DASHBOARD_TOKEN:-}" ] || echo "dashboard: read-only (set CELERS_DASHBOARD_TOKEN to enable actions)"
echo "dashboard: http://$listen/"
# nginx runs in the foreground as a child (run.sh execs it): Ctrl-C or a TERM here stops it
# gracefully, then the temporary folder goes.
CELERS_NGINX_PREFIX=$prefix CELERS_NGINX_WORKERS=1 "$ROOT/examples/nginx/run.sh" run "$listen" &
nginx_pid=$!
trap 'kill -QUIT "$nginx_pid" 2>/dev/null || true' INT TERM
while kill -0 "$nginx_pid" 2>/dev/null; do wait "$nginx_pid" || true; done
