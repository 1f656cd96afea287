#!/usr/bin/env bash
# The main job: builds Spool, starts the server on embedded SQLite with the `echo` plugin
# deployed (examples/spool.toml), sends messages through it and shows them being handled.
# The server keeps running until Ctrl-C; pass --exit to stop after the demo (as CI does).
set -euo pipefail
cd "$(dirname "$0")/.."

exit_after=false
[ "${1:-}" = "--exit" ] && exit_after=true

scripts/build.sh

spool=target/release/spool
data=$(mktemp -d "${TMPDIR:-/tmp}/spool-demo.XXXXXX")
port_file="$data/stdout"
echo "==> starting spool serve (database $data/spool.db)"
# Plugin log lines (one per message from echo) are left out to keep the terminal readable;
# run with SPOOL_LOG=info to see them.
SPOOL_LOG=${SPOOL_LOG:-info,spool::plugin=warn} \
  "$spool" serve --config examples/spool.toml --db "$data/spool.db" --listen 127.0.0.1:0 >"$port_file" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true; wait $pid 2>/dev/null || true' EXIT

for _ in $(seq 1 300); do
  grep -q "listening on" "$port_file" 2>/dev/null && break
  kill -0 $pid 2>/dev/null || { echo "spool serve exited early"; exit 1; }
  sleep 0.1
done
url=$(sed -n 's/^spool listening on //p' "$port_file" | head -1)
[ -n "$url" ] || { echo "spool serve did not start within 30 s"; exit 1; }
export SPOOL_SERVER=$url
echo "==> server at $url"

"$spool" plugin list
echo "==> enqueueing 1000 messages to queue 'orders' (10 batches of 100)"
for b in $(seq 0 9); do
  body=$(python3 -c "import json,sys; b=int(sys.argv[1]); print(json.dumps({'messages':[{'payload':{'order':b*100+i}} for i in range(100)]}))" "$b")
  curl -sf -X POST -H 'content-type: application/json' --data "$body" "$url/v1/queues/orders/messages" >/dev/null
done
"$spool" enqueue orders '{"order": "single", "note": "one more through the CLI"}' >/dev/null

for _ in $(seq 1 100); do
  acked=$("$spool" queue stats orders --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["acked"])')
  echo "    acked $acked of 1001"
  [ "$acked" -ge 1001 ] && break
  sleep 0.2
done
echo "==> queue 'orders' after the run:"
"$spool" queue stats orders
echo "==> schedules (examples/spool.toml declares one):"
"$spool" schedule list
[ "$acked" -ge 1001 ] || { echo "not every message was acked"; exit 1; }

if $exit_after; then
  echo "==> demo done"
  exit 0
fi
echo "==> spool is running at $url (SPOOL_SERVER=$url); try:"
echo "      SPOOL_SERVER=$url $spool enqueue orders '{\"hello\": \"world\"}'"
echo "      SPOOL_SERVER=$url $spool queue stats orders"
echo "    Ctrl-C stops it."
wait $pid
