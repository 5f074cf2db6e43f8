#!/usr/bin/env bash
# Make sure the PostgreSQL server the catalog tests use (127.0.0.1:5432, database `test`) is up.
set -euo pipefail
host="${PATHRAY_PG_HOST:-127.0.0.1}"; port="${PATHRAY_PG_PORT:-5432}"
if pg_isready -q -h "$host" -p "$port" 2>/dev/null; then exit 0; fi
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  echo "ensure-postgres: installing PostgreSQL from Debian's packages"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
version=$(ls /etc/postgresql | sort -V | tail -n 1)
echo "ensure-postgres: starting PostgreSQL $version"
pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
for _ in $(seq 1 30); do
  pg_isready -q -h "$host" -p "$port" && break
  sleep 1
done
pg_isready -q -h "$host" -p "$port" || { echo "ensure-postgres: PostgreSQL did not start" >&2; exit 1; }
# The tests connect as the current user with trust auth, to the database `test`.
psql -h "$host" -p "$port" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='test'" | grep -q 1 \
  || psql -h "$host" -p "$port" -U postgres -c "CREATE DATABASE test" >/dev/null
