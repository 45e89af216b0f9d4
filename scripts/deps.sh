#!/usr/bin/env bash
# Installs the Debian packages the build and the tests need, if any is missing, plus any
# package named on the command line (scripts/lint.sh adds its linters). Quiet when everything
# is there.
set -euo pipefail

PACKAGES=(
    make gcc libc6-dev pkg-config
    # luajit2 (OpenResty's LuaJIT branch, same `luajit` command and luajit.pc): nginx's lua module
    # depends on its library, which conflicts with Debian's plain libluajit-5.1
    lua5.4 liblua5.4-dev luajit2 libluajit2-5.1-dev
    lua-cjson lua-busted lua-check
    libmariadb-dev libmariadb-dev-compat uuid-dev
    mariadb-server valgrind
    # make check-rock (and spec/rock_spec.lua): install the package as users do
    luarocks
    # spec/docs_spec.lua builds the API reference (make docs)
    lua-ldoc
    nginx libnginx-mod-http-lua curl chromium
    "$@"
)

missing=()
for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done
[ ${#missing[@]} -eq 0 ] && exec "$(dirname "$0")/npm-deps.sh"

SUDO=()
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "deps: missing ${missing[*]} and not root (no sudo)" >&2; exit 1; }
    SUDO=(sudo)
fi

echo "deps: installing ${missing[*]}"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! { "${SUDO[@]}" apt-get update -q &&
       "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "deps: apt-get failed" >&2
    exit 1
fi
"$(dirname "$0")/npm-deps.sh"
