#!/usr/bin/env bash
# Sourced by scripts/backup.sh and scripts/restore.sh: turn a mysql:// DSN into a private
# client option file, so the password is never on a command line.
#
#   dsn_client_setup DSN   sets DB (the database name) and CNF (an option file, removed on exit)

pct_decode() { local s=${1//+/ }; printf '%b' "${s//%/\\x}"; }

dsn_client_setup() {
    local dsn=$1 rest auth hostport path query user='' pass='' host='' port='' socket='' kv k v
    case "$dsn" in
        mysql://*) rest=${dsn#mysql://} ;;
        mariadb://*) rest=${dsn#mariadb://} ;;
        *) echo "not a mysql:// DSN" >&2; return 1 ;;
    esac
    query=''
    if [[ $rest == *\?* ]]; then query=${rest#*\?}; rest=${rest%%\?*}; fi
    auth=${rest%%/*}
    path=''
    [[ $rest == */* ]] && path=${rest#*/}
    if [[ $auth == *@* ]]; then
        local userinfo=${auth%@*}
        hostport=${auth##*@}
        user=$(pct_decode "${userinfo%%:*}")
        [[ $userinfo == *:* ]] && pass=$(pct_decode "${userinfo#*:}")
    else
        hostport=$auth
    fi
    host=${hostport%%:*}
    [[ $hostport == *:* ]] && port=${hostport##*:}
    IFS='&' read -r -a kvs <<<"$query"
    for kv in "${kvs[@]}"; do
        k=${kv%%=*}; v=$(pct_decode "${kv#*=}")
        [ "$k" = socket ] && socket=$v
    done
    DB=$(pct_decode "$path")
    [ -n "$DB" ] || { echo "the DSN names no database" >&2; return 1; }
    CNF=$(mktemp)
    chmod 600 "$CNF"
    trap 'rm -f "$CNF"' EXIT
    {
        echo "[client]"
        [ -n "$user" ] && echo "user=\"${user//\"/\\\"}\""
        [ -n "$pass" ] && echo "password=\"${pass//\"/\\\"}\""
        if [ -n "$socket" ]; then
            echo "socket=\"$socket\""
            echo "host=localhost"
        else
            [ -n "$host" ] && echo "host=$host"
            [ -n "$port" ] && echo "port=$port"
            [ -n "$host" ] && [ "$host" != localhost ] && echo "protocol=TCP"
        fi
    } >"$CNF"
}

# the first of the given commands that exists
pick() { local c; for c in "$@"; do command -v "$c" >/dev/null && { echo "$c"; return 0; }; done; return 1; }
