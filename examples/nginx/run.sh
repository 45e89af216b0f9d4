#!/bin/sh
# Start or stop the example nginx with a private prefix (pid file, logs and temp files in
# a folder of their own; nothing under /etc/nginx or /var is used).
#
#   examples/nginx/run.sh start [PORT]    default port 8089 (or ADDRESS:PORT; default address
#                                         127.0.0.1); DSN from $CELERS_DSN, else the
#                                         private server of scripts/db.sh (started if needed)
#   examples/nginx/run.sh run [PORT]      the same in the foreground (Ctrl-C stops it)
#   examples/nginx/run.sh stop
#   CELERS_NGINX_PREFIX=/some/dir ...     the prefix folder (default: .nginx/ in the checkout)
#   CELERS_NGINX_WORKERS=N                worker processes (default 2)
#   CELERS_DASHBOARD_TOKEN=secret         enables the dashboard's actions (Bearer token)
#   CELERS_NGINX_EXTRA=/path/file.conf    included in the server block (bench/nginx.sh uses it)
#
#   curl -X POST -H 'Content-Type: application/json' -d '{"to":"a@b.c"}' \
#        http://127.0.0.1:8089/enqueue/send_email
#
# Permissions: started as root, nginx runs its workers as an unprivileged user by default,
# which cannot read a checkout under a mode-700 home folder (every request then fails with
# 503). This script starts the workers as the user who runs it (`user` directive), so the
# module, the Lua files and the dashboard are readable wherever the checkout is. To run the
# workers as another user, install the module and Lua files where that user can read them
# (make install) and point lua_package_path/cpath there.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
prefix=${CELERS_NGINX_PREFIX:-$root/.nginx}
cmd=${1:-start}
listen=${2:-8089}
case "$listen" in
*:*) ;;
*) listen="127.0.0.1:$listen" ;;
esac
workers=${CELERS_NGINX_WORKERS:-2}
NGINX=${NGINX:-nginx}
command -v "$NGINX" >/dev/null 2>&1 || NGINX=/usr/sbin/nginx

prepare() {
    mkdir -p "$prefix/logs" "$prefix/tmp"
    ln -sfn "$root/lua" "$prefix/lua"
    ln -sfn "$root/build/luajit" "$prefix/build"
    ln -sfn "$root/dashboard" "$prefix/dashboard"
    ln -sf "$here/enqueue.lua" "$prefix/enqueue.lua"
    extra_line=""
    if [ -n "${CELERS_NGINX_EXTRA:-}" ]; then extra_line="include ${CELERS_NGINX_EXTRA};"; fi
    user_line="# user: nginx was not started as root, its workers run as $(id -un)"
    if [ "$(id -u)" = 0 ]; then user_line="user $(id -un) $(id -gn);"; fi
    sed -e "s/listen 127\.0\.0\.1:8089;/listen $listen;/" \
        -e "s/^worker_processes 2;/worker_processes $workers;/" \
        -e "s/^#@USER@/$user_line/" \
        -e "s|#@EXTRA@|$extra_line|" \
        "$here/nginx.conf" >"$prefix/nginx.conf"
    if [ ! -f "$root/build/luajit/celers/core.so" ]; then make -C "$root" build LUA=luajit >/dev/null; fi
    if [ -z "${CELERS_DSN:-}" ]; then
        "$root/scripts/db.sh" start >/dev/null
        CELERS_DSN=$("$root/scripts/db.sh" dsn)
    fi
    export CELERS_DSN
    # a Lua 5.4 search path in the environment must not leak into nginx's LuaJIT (";;" in
    # lua_package_cpath falls back to it)
    unset LUA_PATH LUA_CPATH LUA_INIT
}

case "$cmd" in
start)
    prepare
    "$NGINX" -p "$prefix/" -c "$prefix/nginx.conf" -e "$prefix/logs/error.log"
    echo "nginx listening on $listen (prefix $prefix)"
    ;;
run)
    prepare
    echo "nginx on http://$listen/ (prefix $prefix; Ctrl-C stops it)"
    exec "$NGINX" -p "$prefix/" -c "$prefix/nginx.conf" -e "$prefix/logs/error.log" -g "daemon off;"
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
    echo "usage: $0 start [PORT] | run [PORT] | stop" >&2
    exit 2
    ;;
esac
