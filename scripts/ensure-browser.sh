#!/usr/bin/env bash
# Makes sure the dashboard's browser tests (tests/browser/dashboard.mjs, started by
# tests/tests/ui.rs) can run: Debian's Chromium, and playwright-core and axe-core from npm at
# pinned versions in target/tools/browser. Playwright drives that Chromium; it never downloads
# a browser of its own. Installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PLAYWRIGHT_CORE=1.64.1
AXE_CORE=4.14.1
tools=target/tools/browser

sudo=
[ "$(id -u)" -eq 0 ] || sudo=sudo

if ! [ -x "${CHROMIUM:-/usr/bin/chromium}" ]; then
  if ! command -v apt-get >/dev/null; then
    echo "Chromium is not installed: install it and set CHROMIUM to its path" >&2
    exit 1
  fi
  echo "==> installing Chromium (Debian's chromium package)"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null 2>&1 || {
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
  }
fi

installed() {
  node -e "process.exit(require('./$tools/node_modules/$1/package.json').version === '$2' ? 0 : 1)" \
    2>/dev/null
}
if ! installed playwright-core "$PLAYWRIGHT_CORE" || ! installed axe-core "$AXE_CORE"; then
  echo "==> installing playwright-core@$PLAYWRIGHT_CORE and axe-core@$AXE_CORE into $tools"
  mkdir -p "$tools"
  [ -f "$tools/package.json" ] || echo '{"private": true}' >"$tools/package.json"
  (cd "$tools" && npm install --no-audit --no-fund --silent \
    "playwright-core@$PLAYWRIGHT_CORE" "axe-core@$AXE_CORE")
fi
