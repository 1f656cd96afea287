#!/usr/bin/env bash
# Builds everything a run needs: the wasm target (if missing), the example plugins as
# components, and the release `spool` binary.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
  echo "==> adding the wasm32-wasip2 target"
  rustup target add wasm32-wasip2
fi
echo "==> building plugins (target/wasm32-wasip2/release/*.wasm)"
cargo build --release --target wasm32-wasip2 -p echo -p misbehave -p misbehave-filter -p route-all -p route-by-field -p fetch
echo "==> building spool (target/release/spool)"
cargo build --release -p spool
