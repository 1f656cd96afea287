#!/usr/bin/env bash
# Sets up and runs every test: unit tests beside the code and the end-to-end tests in tests/
# that drive the real binary over HTTP and the CLI.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/build.sh
echo "==> running tests"
cargo test --release --workspace "$@"
