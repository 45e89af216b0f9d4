#!/usr/bin/env bash
# make lint: clang-format (check only), cppcheck, clang-tidy over csrc/ and bench/, luacheck
# over the Lua code. Exits non-zero on any finding.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
scripts/deps.sh clang-format clang-tidy cppcheck || exit 1
make -s build >/dev/null || exit 1
status=0
INCLUDES=$(pkg-config --cflags lua5.4 libmariadb uuid)

echo "== clang-format"
for f in csrc/*.c csrc/*.h bench/*.c; do
    if ! clang-format --dry-run --Werror "$f" 2>/dev/null; then
        echo "needs formatting: $f (make format)"
        status=1
    fi
done

echo "== cppcheck"
# shellcheck disable=SC2086
cppcheck --quiet --error-exitcode=1 --enable=warning,performance,portability \
    --std=c11 --inline-suppr -D_GNU_SOURCE -Icsrc -Ibuild/lua5.4 --suppress=missingInclude \
    --suppress=missingIncludeSystem csrc bench || status=1

echo "== clang-tidy"
# shellcheck disable=SC2086
clang-tidy --quiet --warnings-as-errors='*' \
    --checks='-*,clang-analyzer-*,bugprone-*,-bugprone-easily-swappable-parameters,-bugprone-reserved-identifier,-bugprone-narrowing-conversions,-bugprone-implicit-widening-of-multiplication-result,-bugprone-assignment-in-if-condition,-clang-analyzer-security.insecureAPI.DeprecatedOrUnsafeBufferHandling,-clang-analyzer-security.insecureAPI.strcpy' \
    csrc/*.c bench/*.c -- -std=c11 -D_GNU_SOURCE $INCLUDES -Icsrc -Ibuild/lua5.4 2>/dev/null || status=1

echo "== luacheck"
luacheck --quiet lua spec bench examples || status=1

[ "$status" = 0 ] && echo "lint: clean"
exit "$status"
