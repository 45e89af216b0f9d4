#!/usr/bin/env bash
# make valgrind: every spec (or the ones named) under valgrind with Lua 5.4. A leak that is
# definitely lost or an invalid access fails the spec file (valgrind's exit code 99).
# Child processes the specs start are not followed (--trace-children=no). --keep-debuginfo
# names the frames of celers/core.so even though Lua unloads it before valgrind reports.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
export CELERS_TEST_LUAS=lua5.4
export CELERS_TEST_TIMEOUT=${CELERS_TEST_TIMEOUT:-2400}
export CELERS_TEST_WRAPPER="valgrind --quiet --keep-debuginfo=yes --error-exitcode=99 --leak-check=full \
--errors-for-leak-kinds=definite --show-leak-kinds=definite --track-origins=yes \
--suppressions=$ROOT/scripts/valgrind.supp"
exec scripts/test.sh "$@"
