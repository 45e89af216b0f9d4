#!/usr/bin/env bash
# Installs the browser driver of spec/dashboard_spec.* (playwright-core, exact versions from the
# committed package.json and package-lock.json) into build/npm/node_modules. It drives Debian's
# chromium (/usr/bin/chromium); no browser is ever downloaded (--ignore-scripts, and
# playwright-core has no download step of its own). Quiet when it is there already. Without
# node/npm it says so and leaves the dashboard spec to skip.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=$ROOT/build/npm
if [ -f "$dir/node_modules/playwright-core/package.json" ] && cmp -s "$ROOT/package-lock.json" "$dir/package-lock.json"; then
    exit 0
fi
if ! command -v npm >/dev/null 2>&1 && ! command -v node >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "npm-deps: installing nodejs and npm"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nodejs npm >/dev/null 2>&1 || true
fi
if ! command -v npm >/dev/null 2>&1; then
    echo "npm-deps: npm is not installed: the dashboard's browser spec will be skipped" >&2
    exit 0
fi
mkdir -p "$dir"
cp "$ROOT/package.json" "$ROOT/package-lock.json" "$dir/"
echo "npm-deps: installing playwright-core into build/npm"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! (cd "$dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --ignore-scripts --no-audit --no-fund) >"$log" 2>&1; then
    cat "$log" >&2
    echo "npm-deps: npm ci failed: the dashboard's browser spec will be skipped" >&2
fi
