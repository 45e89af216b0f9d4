#!/usr/bin/env bash
# make check-rock: install the package as a user would, with `luarocks make`, into a fresh tree
# for Lua 5.4 and one for LuaJIT, then, from a folder outside the checkout, migrate with the
# tree's `celers`, run a producer (a Lua script on the paths of `luarocks path`) and a worker
# (the tree's `celers worker`), and check the database holds the completed tasks.
#
#   scripts/check-rock.sh [lua5.4] [luajit]       (default: both)
#
# The database: CELERS_TEST_DSN's server, else the private server of scripts/db.sh (started
# here if needed, stopped again if so). Never CELERS_DSN. Uses a database celers_t_rock
# (dropped at the end unless CHECK_ROCK_KEEP_DB=1).
#
# Debian's lua-cjson is an apt package, not a rock: the install uses --deps-mode=none and the
# system's cjson. LuaRocks' default interpreter for 5.1 is PUC lua5.1, which celers does not
# support: the LuaJIT tree gets a small LuaRocks config naming luajit and its headers.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
LUAS=("$@")
[ ${#LUAS[@]} -gt 0 ] || LUAS=(lua5.4 luajit)

scripts/deps.sh
command -v luarocks >/dev/null || { echo "check-rock: luarocks not found" >&2; exit 1; }

WORK=$(mktemp -d)
STARTED_DB=0
cleanup() {
    rm -rf "$WORK"
    if [ "$STARTED_DB" = 1 ]; then scripts/db.sh stop >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

BASE=${CELERS_TEST_DSN:-}
if [ -z "$BASE" ]; then
    if ! scripts/db.sh status >/dev/null 2>&1; then
        STARTED_DB=1
        scripts/db.sh start
    fi
    BASE=$(scripts/db.sh dsn)
fi
# shellcheck source=scripts/dsn-client.sh
. scripts/dsn-client.sh
dsn_client_setup "$BASE"
trap 'rm -f "$CNF"; cleanup' EXIT # dsn_client_setup replaced the trap
CLIENT=$(pick mariadb mysql)
DSN=$(printf '%s' "$BASE" | sed -E 's#^([a-z]+://[^/]*)/[^?]*#\1/celers_t_rock#')

# a copy of the checkout's files (as a source tarball would hold them, no build/): the rock is
# built from scratch with LuaRocks' own CFLAGS, as on a fresh machine
mkdir -p "$WORK/src"
git ls-files -z --cached --others --exclude-standard | xargs -0 tar -cf - | tar -xf - -C "$WORK/src"
ROCKSPEC=$(ls "$WORK"/src/rockspec/*.rockspec)
cat >"$WORK/luajit-config.lua" <<'EOF'
lua_version = "5.1"
lua_interpreter = "luajit"
variables = { LUA_DIR = "/usr", LUA_BINDIR = "/usr/bin", LUA_INCDIR = "/usr/include/luajit-2.1",
              LUA = "/usr/bin/luajit" }
EOF

# the user's code, outside the checkout
mkdir -p "$WORK/app"
cat >"$WORK/app/producer.lua" <<'EOF'
local celers = require "celers"
local broker = assert(celers.connect(arg[1]))
for i = 1, 20 do assert(broker:enqueue("square", { n = i })) end
print("enqueued 20")
EOF
cat >"$WORK/app/handlers.lua" <<'EOF'
return { square = function(p) return p.n * p.n end }
EOF

for lua in "${LUAS[@]}"; do
    tree="$WORK/tree-$lua"
    case "$lua" in
        lua5.4) rocks=(luarocks --lua-version 5.4 --tree "$tree") ;;
        luajit) rocks=(env LUAROCKS_CONFIG="$WORK/luajit-config.lua" luarocks --lua-version 5.1 --tree "$tree") ;;
        *) echo "check-rock: unknown interpreter $lua (lua5.4, luajit)" >&2; exit 2 ;;
    esac
    echo "== $lua: luarocks make into $tree"
    (cd "$WORK/src" && "${rocks[@]}" make --deps-mode=none "$ROCKSPEC") >"$WORK/make-$lua.log" 2>&1 || {
        cat "$WORK/make-$lua.log" >&2
        echo "check-rock: luarocks make failed for $lua" >&2
        exit 1
    }
    "$CLIENT" --defaults-file="$CNF" -e "DROP DATABASE IF EXISTS celers_t_rock; CREATE DATABASE celers_t_rock"
    (
        cd "$WORK/app"
        # the CLI runs straight from the tree: no luarocks path, no LUA_PATH
        env -u LUA_PATH -u LUA_CPATH -u LUA_PATH_5_4 -u LUA_CPATH_5_4 CELERS_DSN="$DSN" "$tree/bin/celers" migrate
        # a program of the user's uses the tree's paths, as `luarocks path` prints them
        eval "$("${rocks[@]}" path)"
        "$lua" producer.lua "$DSN"
        env -u LUA_PATH -u LUA_CPATH -u LUA_PATH_5_4 -u LUA_CPATH_5_4 CELERS_DSN="$DSN" \
            "$tree/bin/celers" worker handlers.lua --idle-exit 0 --store-results
    )
    done=$("$CLIENT" --defaults-file="$CNF" --batch --skip-column-names celers_t_rock -e \
        "SELECT COUNT(*) FROM celers_tasks t JOIN celers_results r ON r.task_id = t.id
         WHERE t.state = 'completed' AND r.result = CAST(JSON_VALUE(t.payload, '$.n') * JSON_VALUE(t.payload, '$.n') AS CHAR)")
    if [ "$done" != 20 ]; then
        echo "check-rock: $lua: expected 20 completed tasks with their results, the database has $done" >&2
        exit 1
    fi
    echo "== $lua: 20 tasks enqueued, worked and their results stored, from the installed rock"
done
# spec/rock_spec.lua reads the rows itself afterwards
[ "${CHECK_ROCK_KEEP_DB:-}" = 1 ] || "$CLIENT" --defaults-file="$CNF" -e "DROP DATABASE IF EXISTS celers_t_rock"
echo "check-rock: ok (${LUAS[*]})"
