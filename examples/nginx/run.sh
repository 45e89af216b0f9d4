#!/bin/sh
# Start or stop the example nginx with a private prefix (pid file, logs and temp files in
# a folder of their own; nothing under /etc/nginx or /var is used).
#
#   examples/nginx/run.sh start [PORT]    default port 8089; DSN from $CELERS_DSN, else the
#                                         private server of scripts/db.sh (started if needed)
#   examples/nginx/run.sh stop
#   CELERS_NGINX_PREFIX=/some/dir ...     the prefix folder (default: .nginx/ in the checkout)
#
#   curl -X POST -H 'Content-Type: application/json' -d '{"to":"a@b.c"}' \
#        http://127.0.0.1:8089/enqueue/send_email
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
prefix=${CELERS_NGINX_PREFIX:-$root/.nginx}
cmd=${1:-start}
port=${2:-8089}
NGINX=${NGINX:-nginx}
command -v "$NGINX" >/dev/null 2>&1 || NGINX=/usr/sbin/nginx

case "$cmd" in
start)
    mkdir -p "$prefix/logs" "$prefix/tmp"
    # nginx's workers run as an unprivileged user when started as root: let them read it
    chmod 755 "$prefix"
    ln -sfn "$root/lua" "$prefix/lua"
    ln -sfn "$root/build/luajit" "$prefix/build"
    ln -sf "$here/enqueue.lua" "$prefix/enqueue.lua"
    sed "s/127\.0\.0\.1:8089/127.0.0.1:$port/" "$here/nginx.conf" >"$prefix/nginx.conf"
    if [ ! -f "$root/build/luajit/celers/core.so" ]; then make -C "$root" LUA=luajit >/dev/null; fi
    if [ -z "${CELERS_DSN:-}" ]; then
        "$root/scripts/db.sh" start >/dev/null
        CELERS_DSN=$("$root/scripts/db.sh" dsn)
    fi
    export CELERS_DSN
    "$NGINX" -p "$prefix/" -c "$prefix/nginx.conf" -e "$prefix/logs/error.log"
    echo "nginx listening on 127.0.0.1:$port (prefix $prefix)"
    ;;
stop)
    if [ -f "$prefix/nginx.pid" ]; then
        "$NGINX" -p "$prefix/" -c "$prefix/nginx.conf" -e "$prefix/logs/error.log" -s quit
        # wait until it is gone
        i=0
        while [ -f "$prefix/nginx.pid" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    fi
    ;;
*)
    echo "usage: $0 start [PORT] | stop" >&2
    exit 2
    ;;
esac
