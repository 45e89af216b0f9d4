#!/usr/bin/env bash
# Private MariaDB server for development and tests, kept in .db/ of the checkout.
#
#   scripts/db.sh start     start it (initialising .db/ on first use); reuses a running one
#   scripts/db.sh stop      shut it down cleanly
#   scripts/db.sh restart   stop then start (data is kept)
#   scripts/db.sh status    say whether it runs (exit 0 if it does, 3 if not)
#   scripts/db.sh dsn       print the DSN for the `celers` user and database
#
# Unix socket only (--skip-networking), no systemd, no root password.  The server reads no
# option files (--no-defaults), so the machine's /etc/mysql config does not leak in.
# Extra server options can be passed in CELERS_DB_ARGS (word-split); CELERS_DB_DIR puts the
# server in another folder (make bench runs a second one on tmpfs).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DB_DIR=${CELERS_DB_DIR:-$ROOT/.db}
DATA=$DB_DIR/data
SOCK=$DB_DIR/mysqld.sock
PIDF=$DB_DIR/mysqld.pid
LOG=$DB_DIR/error.log
READY=$DB_DIR/initialized       # written once mariadb-install-db has completed
WAIT=${CELERS_DB_WAIT:-30}      # seconds to wait for start-up

RUN_AS=()
if [ "$(id -u)" = 0 ]; then RUN_AS=(--user=root); fi

say() { echo "db: $*"; }
die() { echo "db: $*" >&2; exit 1; }

admin() { mariadb-admin --no-defaults --socket="$SOCK" --user=root --connect-timeout=2 "$@"; }

# is process $1 alive?  A zombie is not (an init that reaps late leaves those behind).
alive() {
    local state
    kill -0 "$1" 2>/dev/null || return 1
    state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || true
    [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# pid from the pid file, if that process is alive and is a mariadbd/mysqld
server_pid() {
    local pid comm
    [ -s "$PIDF" ] || return 1
    pid=$(tr -dc '0-9' < "$PIDF")
    [ -n "$pid" ] && alive "$pid" || return 1
    comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
    case "$comm" in mariadbd|mysqld) echo "$pid" ;; *) return 1 ;; esac
}

answers() { [ -S "$SOCK" ] && admin ping >/dev/null 2>&1; }

log_tail() {
    if [ -f "$LOG" ]; then
        echo "---- last lines of $LOG ----" >&2
        tail -n 30 "$LOG" >&2
    fi
}

check_socket_len() {
    # sun_path holds 107 bytes
    if [ "${#SOCK}" -gt 100 ]; then
        die "socket path too long for a unix socket (${#SOCK} bytes): $SOCK; use a shorter checkout path"
    fi
}

init_datadir() {
    [ -f "$READY" ] && [ -d "$DATA/mysql" ] && return 0
    say "initialising $DATA"
    rm -rf "$DATA"
    mkdir -p "$DATA"
    if ! mariadb-install-db --no-defaults --datadir="$DATA" "${RUN_AS[@]}" \
            --auth-root-authentication-method=normal --skip-test-db \
            >"$DB_DIR/install.log" 2>&1; then
        cat "$DB_DIR/install.log" >&2
        die "mariadb-install-db failed"
    fi
    touch "$READY"
}

provision() {
    mariadb --no-defaults --socket="$SOCK" --user=root <<'SQL'
CREATE USER IF NOT EXISTS 'celers'@'localhost' IDENTIFIED BY 'celers';
GRANT ALL PRIVILEGES ON *.* TO 'celers'@'localhost';
CREATE DATABASE IF NOT EXISTS celers;
SQL
}

wait_until_answers() {
    local pid=$1 i
    for ((i = 0; i < WAIT * 5; i++)); do
        if answers; then return 0; fi
        if ! alive "$pid"; then
            log_tail
            die "mariadbd exited during start-up"
        fi
        sleep 0.2
    done
    log_tail
    die "mariadbd did not answer within ${WAIT}s"
}

start() {
    local pid
    check_socket_len
    mkdir -p "$DB_DIR"
    if pid=$(server_pid); then
        if answers || wait_until_answers "$pid"; then
            provision
            say "already running (pid $pid), reusing it"
            return 0
        fi
    fi
    # whatever is left from a server that was killed must not get in the way
    rm -f "$PIDF" "$SOCK" "$SOCK.lock"
    init_datadir
    # shellcheck disable=SC2086
    setsid mariadbd --no-defaults \
        --datadir="$DATA" \
        --socket="$SOCK" \
        --pid-file="$PIDF" \
        --log-error="$LOG" \
        "${RUN_AS[@]}" \
        --skip-networking \
        --skip-name-resolve \
        --character-set-server=utf8mb4 \
        --collation-server=utf8mb4_general_ci \
        --innodb-buffer-pool-size=256M \
        --max-allowed-packet=16M \
        --innodb-lock-wait-timeout=10 \
        ${CELERS_DB_ARGS:-} \
        </dev/null >/dev/null 2>&1 &
    pid=$!
    wait_until_answers "$pid"
    provision
    say "started (pid $(server_pid || echo "$pid")), socket $SOCK"
}

stop() {
    local pid i
    if ! pid=$(server_pid); then
        rm -f "$PIDF"
        say "not running"
        return 0
    fi
    admin shutdown >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 600; i++)); do          # up to 60 s for a clean shutdown
        alive "$pid" || { say "stopped"; return 0; }
        sleep 0.1
    done
    say "mariadbd (pid $pid) did not stop in 60s, killing it"
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$PIDF" "$SOCK"
}

status() {
    local pid
    if pid=$(server_pid) && answers; then
        say "running (pid $pid), socket $SOCK"
    else
        say "not running"
        return 3
    fi
}

dsn() { echo "mysql://celers:celers@localhost/celers?socket=$SOCK"; }

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    restart) stop; start ;;
    status) status ;;
    dsn) dsn ;;
    *) echo "usage: $0 start|stop|restart|status|dsn" >&2; exit 2 ;;
esac
