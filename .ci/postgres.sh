#!/usr/bin/env bash
# Starts a throwaway PostgreSQL server on loopback for the store test suite and prints its
# URL (installing Debian's package first where the machine lacks it). Usage:
#   export FEDSYNTH_TEST_DATABASE_URL=$(bash .ci/postgres.sh DIR)
set -euo pipefail
dir=${1:?data directory}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$bin" ] || [ ! -x "$bin/postgres" ]; then
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
fi
port=${PGPORT_TEST:-55432}
mkdir -p "$dir"
chown postgres "$dir"
as_pg() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi; }
as_pg "'$bin/initdb' -D '$dir/data' -A trust -U postgres >/dev/null"
as_pg "'$bin/pg_ctl' -D '$dir/data' -l '$dir/log' -w -o \"-p $port -k '$dir' -c listen_addresses=127.0.0.1 -c fsync=off\" start >/dev/null"
as_pg "'$bin/psql' -h 127.0.0.1 -p $port -U postgres -qc 'CREATE DATABASE fedsynth_test' >/dev/null"
echo "postgres://postgres@127.0.0.1:$port/fedsynth_test"
