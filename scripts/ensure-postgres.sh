#!/usr/bin/env bash
# Makes sure PostgreSQL's server binaries (initdb, pg_ctl) are installed: the store's tests and
# the end-to-end tests start private PostgreSQL servers of their own on 127.0.0.1 (see
# host/store/src/pg_cluster.rs). Installs Debian's `postgresql` when they are missing, without
# the package's own cluster (nothing listens on 5432 afterwards).
set -euo pipefail

have_pg() {
  [ -n "${SPOOL_PG_BIN:-}" ] && [ -x "$SPOOL_PG_BIN/initdb" ] && return 0
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && return 0
  command -v initdb >/dev/null && return 0
  command -v pg_config >/dev/null && [ -x "$(pg_config --bindir)/initdb" ] && return 0
  return 1
}

have_pg && exit 0

sudo=
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then
    sudo=sudo
  else
    echo "PostgreSQL is not installed and this user cannot install it: install the \`postgresql\`" \
      "package (or set SPOOL_PG_BIN to a directory holding initdb and pg_ctl) and run again" >&2
    exit 1
  fi
fi
if ! command -v apt-get >/dev/null; then
  echo "PostgreSQL is not installed: install it with your package manager (server binaries" \
    "initdb and pg_ctl), or set SPOOL_PG_BIN to their directory, and run again" >&2
  exit 1
fi
echo "==> installing PostgreSQL (Debian's postgresql package)"
$sudo mkdir -p /etc/postgresql-common
echo "create_main_cluster = false" | $sudo tee /etc/postgresql-common/createcluster.conf >/dev/null
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null
have_pg || { echo "installed postgresql, but initdb is still not found" >&2; exit 1; }
