#!/usr/bin/env bash
# Builds everything a run needs: the wasm target (if missing), the example plugins as
# components (Rust with cargo; Python with componentize-py and JavaScript with componentize-js,
# each installed under target/tools at a pinned version when missing), and the release `spool`
# binary.
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned: a new version changes the components' contents, size and fuel per call. The same pins
# are written into projects by `spool plugin new` (host/src/cli/plugin_new.rs checks they agree).
COMPONENTIZE_PY_VERSION=0.25.1
COMPONENTIZE_JS_VERSION=0.23.0
tools=target/tools
out=target/lang-plugins

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
  echo "==> adding the wasm32-wasip2 target"
  rustup target add wasm32-wasip2
fi

# Installs componentize-py into a venv under target/tools/py unless that version is there.
install_componentize_py() {
  if [ "$("$tools/py/bin/componentize-py" --version 2>/dev/null)" != "componentize-py $COMPONENTIZE_PY_VERSION" ]; then
    echo "==> installing componentize-py $COMPONENTIZE_PY_VERSION into $tools/py"
    python3 -m venv "$tools/py"
    "$tools/py/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$COMPONENTIZE_PY_VERSION"
  fi
}

# Installs componentize-js into target/tools/js/node_modules unless that version is there.
install_componentize_js() {
  local manifest="$tools/js/node_modules/@bytecodealliance/componentize-js/package.json"
  if ! grep -q "\"version\": \"$COMPONENTIZE_JS_VERSION\"" "$manifest" 2>/dev/null; then
    echo "==> installing @bytecodealliance/componentize-js $COMPONENTIZE_JS_VERSION into $tools/js"
    npm install --prefix "$tools/js" --no-audit --no-fund --loglevel=error \
      "@bytecodealliance/componentize-js@$COMPONENTIZE_JS_VERSION"
  fi
}

# A digest of everything a component is built from: its sources, the SDK, the WIT, the tool
# version and the world. A component whose digest is unchanged is not rebuilt
# (each build takes 20-50 s).
# `digest TEXT PATH...`: TEXT is the tool version and world.
digest() {
  local text=$1
  shift
  { echo "$text"; find "$@" -type f -not -path '*/__pycache__/*' -print0 | sort -z | xargs -0 cat; } | sha256sum | cut -d' ' -f1
}

# build_component NAME LANG WORLD: plugins/NAME → target/lang-plugins/NAME.wasm.
build_component() {
  local name=$1 lang=$2 world=$3 src=plugins/$1 wasm=$out/$1.wasm log=$out/$1.log stamp sum start
  case $lang in
    py) sum=$(digest "py $COMPONENTIZE_PY_VERSION $world" "$src" guest-sdk/python wit/spool.wit) ;;
    js) sum=$(digest "js $COMPONENTIZE_JS_VERSION $world" "$src" guest-sdk/js wit/spool.wit scripts/componentize.mjs) ;;
  esac
  stamp=$wasm.sha256
  if [ -f "$wasm" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$sum" ]; then
    echo "    $wasm is up to date"
    return 0
  fi
  rm -f "$stamp"
  start=$(date +%s)
  if ! case $lang in
    py) "$tools/py/bin/componentize-py" -d wit/spool.wit -w "$world" componentize app \
          -p "$src" -p guest-sdk/python -o "$wasm" ;;
    js) node scripts/componentize.mjs "$src/$(ls "$src" | grep -m1 '\.js$')" wit/spool.wit \
          "$world" "$wasm" "$tools/js" ;;
  esac >"$log" 2>&1; then
    cat "$log" >&2
    echo "error: building $wasm failed (log above, also in $log)" >&2
    return 1
  fi
  echo "$sum" >"$stamp"
  echo "    built $wasm ($(( $(stat -c %s "$wasm") / 1024 )) KiB) in $(( $(date +%s) - start )) s"
}

echo "==> building Rust plugins (target/wasm32-wasip2/release/*.wasm)"
cargo build --release --target wasm32-wasip2 -p echo -p misbehave -p misbehave-filter -p route-all -p route-by-field -p fetch

echo "==> building Python and JavaScript plugins ($out/*.wasm)"
mkdir -p "$out"
install_componentize_py
install_componentize_js
# Python and JavaScript builds are single-threaded for most of their time: run them side by side.
pids=()
build_component py-handler py handler & pids+=($!)
build_component js-handler js handler & pids+=($!)
build_component js-filter js filter & pids+=($!)
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
[ $failed -eq 0 ] || exit 1

echo "==> building spool (target/release/spool)"
cargo build --release -p spool
