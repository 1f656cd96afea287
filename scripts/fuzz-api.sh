#!/usr/bin/env bash
# Fuzzes the HTTP API from its own OpenAPI document with schemathesis: starts the release
# `spool` binary on 127.0.0.1 with a temporary database, generates requests (valid and invalid)
# for every operation, and fails if the server errs, answers with an undocumented status,
# content type or body, accepts a request the schema forbids, or refuses one it allows.
#
#   scripts/fuzz-api.sh            # after scripts/build.sh (or cargo build --release -p spool)
#   ST=/path/to/st scripts/fuzz-api.sh
#
# Bounded: 20 examples per operation with a fixed seed (about 30 s), and killed after
# FUZZ_API_TIMEOUT seconds (default 300). What the schema cannot express is taught in
# scripts/fuzz-api/hooks.py. schemathesis is installed into target/schemathesis-venv when no
# suitable `st` is on the PATH (CI needs network access to PyPI for that).
set -euo pipefail
cd "$(dirname "$0")/.."

# The hooks use `filter_failure` and `serializer.alias`, both in 4.x from 4.32.
min_version=4.32
venv=target/schemathesis-venv
spool=target/release/spool

version_ok() {
  local v
  v=$("$1" --version 2>/dev/null | sed -n 's/.*version \([0-9][0-9.]*\).*/\1/p')
  [ -n "$v" ] && [ "${v%%.*}" = 4 ] &&
    [ "$(printf '%s\n%s\n' "$min_version" "$v" | sort -V | head -1)" = "$min_version" ]
}

st=${ST:-}
if [ -z "$st" ]; then
  if command -v st >/dev/null && version_ok st; then
    st=st
  else
    st=$venv/bin/st
    if ! version_ok "$st"; then
      echo "==> installing schemathesis into $venv"
      python3 -m venv "$venv"
      "$venv/bin/pip" install --quiet "schemathesis>=$min_version,<5"
    fi
  fi
fi
version_ok "$st" || { echo "$st is not schemathesis >= $min_version (4.x)"; exit 1; }
st=$(command -v "$st")
[[ $st == /* ]] || st=$PWD/$st

[ -x "$spool" ] || { echo "$spool is missing; run scripts/build.sh first"; exit 1; }
data=$(mktemp -d "${TMPDIR:-/tmp}/spool-fuzz.XXXXXX")
"$spool" serve --db "$data/spool.db" --listen 127.0.0.1:0 >"$data/stdout" 2>"$data/stderr" &
pid=$!
# Whatever happens below, the server stops and its files go.
trap 'kill -TERM $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$data"' EXIT

url=
for _ in $(seq 1 300); do
  url=$(sed -n 's/^spool listening on //p' "$data/stdout" | head -1)
  [ -n "$url" ] && break
  kill -0 $pid 2>/dev/null || { echo "spool serve exited early:"; cat "$data/stderr"; exit 1; }
  sleep 0.1
done
[ -n "$url" ] || { echo "spool serve did not start within 30 s"; exit 1; }

echo "==> fuzzing the API at $url with $("$st" --version)"
# The reports directory and hypothesis' example database live in the temporary directory, so
# every run starts from the same seed and nothing is left in the work tree.
status=0
hooks=$PWD/scripts/fuzz-api/hooks.py
(cd "$data" && SCHEMATHESIS_HOOKS=$hooks timeout "${FUZZ_API_TIMEOUT:-300}" \
  "$st" --no-color run "$url/openapi.json" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,positive_data_acceptance,negative_data_rejection,unsupported_method,use_after_free,ensure_resource_availability \
    --max-examples 20 --seed 1) || status=$?
if [ $status -ne 0 ]; then
  [ $status -eq 124 ] && echo "schemathesis did not finish within ${FUZZ_API_TIMEOUT:-300} s"
  echo "==> the server's log:"
  tail -50 "$data/stderr"
  exit $status
fi
