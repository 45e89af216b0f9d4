#!/usr/bin/env bash
# Runs the specs (what `make test` runs).
#
#   scripts/test.sh                      every spec/*_spec.lua, under each interpreter
#   scripts/test.sh spec/foo_spec.lua    just those files
#
# Environment:
#   CELERS_TEST_DSN     server to test against; unset: the private server of scripts/db.sh is
#                       used (started here and stopped at the end unless it was running already).
#                       CELERS_DSN is never used: it names the user's own server, and the specs
#                       drop and create databases named celers_t_* on the server they test against.
#   CELERS_TEST_LUAS    interpreters to run the specs with (default "lua5.4 luajit")
#   SKIP_BUILD=1        do not run `make build` (use what is in build/ already)
#   CELERS_TEST_TIMEOUT seconds one spec file may take under one interpreter (default 900)
#   CELERS_TEST_OUTPUT  busted output handler for the report (default plainTerminal)
#   CELERS_TEST_WRAPPER command put in front of the interpreter (scripts/valgrind.sh uses it)
#
# Each spec file runs in its own busted process, so a crash or hang in one (a segfault in the
# C core, say) is counted as a failure of that file and the rest still run.
# The last line printed is "N passed, N failed", totals over all interpreters.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1

LUAS=${CELERS_TEST_LUAS:-lua5.4 luajit}
TIMEOUT=${CELERS_TEST_TIMEOUT:-900}

summary() { echo "$1 passed, $2 failed"; }
STARTED_DB=0
stop_db() {
    if [ "$STARTED_DB" = 1 ]; then
        STARTED_DB=0
        scripts/db.sh stop || true
    fi
}
setup_failed() {
    echo "test: $*" >&2
    stop_db
    summary 0 1
    exit 1
}

scripts/deps.sh || setup_failed "installing dependencies failed"

# interpreter -> build variant folder and `make build` arguments
variant() {
    case "$1" in
        lua5.4) echo lua5.4 ;;
        luajit) echo luajit ;;
        *) return 1 ;;
    esac
}

for lua in $LUAS; do
    variant "$lua" >/dev/null || setup_failed "unknown interpreter '$lua' in CELERS_TEST_LUAS (lua5.4, luajit)"
    command -v "$lua" >/dev/null || setup_failed "$lua not found"
done

if [ "${SKIP_BUILD:-}" != 1 ]; then
    for lua in $LUAS; do
        if [ "$lua" = lua5.4 ]; then
            make build || setup_failed "make build failed"
        else
            make build LUA="$lua" || setup_failed "make build LUA=$lua failed"
        fi
    done
fi

BUSTED=$(command -v busted) || setup_failed "busted not found"

# the database
cleanup() {
    stop_db
    rm -f "${COUNTS:-}"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Only CELERS_TEST_DSN chooses a server of the user's: a CELERS_DSN exported for the quick
# start must not get celers_t_* databases created and dropped on it. Examples and bin/celers
# run by the specs get the spec's database, never the user's.
unset CELERS_DSN
export CELERS_TEST_DSN=${CELERS_TEST_DSN:-}
if [ -z "$CELERS_TEST_DSN" ]; then
    if ! scripts/db.sh status >/dev/null 2>&1; then
        STARTED_DB=1
        scripts/db.sh start || setup_failed "could not start the private database server"
    else
        echo "test: using the private database server that is already running"
    fi
    CELERS_TEST_DSN=$(scripts/db.sh dsn)
    export CELERS_TEST_PRIVATE=1
else
    export CELERS_TEST_PRIVATE=0
fi

# the spec files
if [ $# -gt 0 ]; then
    SPECS=("$@")
else
    SPECS=(spec/*_spec.lua)
    [ -e "${SPECS[0]}" ] || SPECS=()
fi
for f in "${SPECS[@]}"; do
    [ -f "$f" ] || setup_failed "no such spec file: $f"
done

COUNTS=$(mktemp)
passed=0
failed=0
unset LUA_PATH_5_4 LUA_CPATH_5_4 LUA_INIT LUA_INIT_5_4
for lua in $LUAS; do
    build="$ROOT/build/$(variant "$lua")"
    if [ ! -f "$build/celers/core.so" ]; then
        echo "test: warning: $build/celers/core.so does not exist" >&2
    fi
    export LUA_PATH="$ROOT/?.lua;$ROOT/lua/?.lua;$ROOT/lua/?/init.lua;;"
    export LUA_CPATH="$build/?.so;;"
    export CELERS_TEST_LUA=$lua
    for spec in "${SPECS[@]}"; do
        echo "==== $lua $spec"
        : >"$COUNTS"
        # shellcheck disable=SC2086
        CELERS_BUSTED_COUNTS=$COUNTS timeout -k 10 "$TIMEOUT" \
            ${CELERS_TEST_WRAPPER:-} "$lua" "$BUSTED" \
            --lpath="$ROOT/?.lua;$ROOT/lua/?.lua;$ROOT/lua/?/init.lua" \
            --cpath="$build/?.so" \
            -o "$ROOT/scripts/busted_handler.lua" \
            "$spec"
        rc=$?
        echo
        read -r s f e _ <"$COUNTS" || true
        if [ -z "${s:-}" ]; then
            if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
                echo "test: FAILED: $spec under $lua timed out after ${TIMEOUT}s" >&2
            else
                echo "test: FAILED: $spec under $lua died (exit $rc) before busted finished" >&2
            fi
            failed=$((failed + 1))
        else
            passed=$((passed + s))
            failed=$((failed + f + e))
            if [ "$rc" != 0 ] && [ $((f + e)) = 0 ]; then
                echo "test: FAILED: $spec under $lua exited with $rc" >&2
                failed=$((failed + 1))
            fi
        fi
        s='' f='' e=''
    done
done

echo
stop_db
summary "$passed" "$failed"
[ "$failed" = 0 ] && [ "$passed" -gt 0 ]
