#!/usr/bin/env bash
# Sets up and runs every test: unit tests beside the code, the end-to-end tests in tests/ that
# drive the real binary over HTTP and the CLI, and a schemathesis run against the HTTP API
# (scripts/fuzz-api.sh). Arguments go to `cargo test` (e.g. a test name filter); with any, only
# those tests run, without the fuzzing.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/build.sh
# The store and end-to-end tests start private PostgreSQL servers.
scripts/ensure-postgres.sh
# The dashboard's browser tests drive Debian's Chromium with playwright-core.
scripts/ensure-browser.sh

# The fuzzing needs only the release binary built above, so it runs beside the tests (about
# 30 s); its output is shown after theirs.
fuzz_pid=
if [ $# -eq 0 ]; then
  fuzz_log=$(mktemp "${TMPDIR:-/tmp}/spool-fuzz-api.XXXXXX")
  scripts/fuzz-api.sh >"$fuzz_log" 2>&1 &
  fuzz_pid=$!
fi

echo "==> running tests"
tests=0
cargo test --release --workspace "$@" || tests=$?

fuzz=0
if [ -n "$fuzz_pid" ]; then
  wait "$fuzz_pid" || fuzz=$?
  echo "==> fuzzing the API (scripts/fuzz-api.sh)"
  cat "$fuzz_log"
  rm -f "$fuzz_log"
  [ $fuzz -eq 0 ] || echo "scripts/fuzz-api.sh failed (exit $fuzz)"
fi
# The end-to-end modules that touch the store run a second time with every host on PostgreSQL
# (a new database of a private server per host), kill -9 included. Those about the SQLite file
# itself (integrity, operations: checks, backups, the file's sizes) and the plugin toolchains
# stay SQLite-only, and so does isolation: its eight endless loops fill both cores, which
# starves a database server on the same machine rather than Spool's API.
PG_E2E_MODULES="flow:: lifecycle:: routing:: schedules:: admin:: manage:: breaker:: misbehave::
  bad_input:: metrics:: shutdown:: prefetch:: crash:: auth:: capabilities:: cli:: config::"
pg=0
if [ $# -eq 0 ]; then
  echo "==> end-to-end tests of the store's behaviour, on PostgreSQL"
  SPOOL_E2E_STORE=postgres cargo test --release -p spool-tests --test e2e -- \
    $PG_E2E_MODULES || pg=$?
  [ $pg -eq 0 ] || echo "the end-to-end tests on PostgreSQL failed (exit $pg)"
fi
[ $tests -eq 0 ] || echo "cargo test failed (exit $tests)"
[ $tests -eq 0 ] && [ $fuzz -eq 0 ] && [ $pg -eq 0 ]
