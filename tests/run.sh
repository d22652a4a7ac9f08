#!/usr/bin/env bash
# Runs the whole test suite twice: against SQLite, then against a real PostgreSQL started here
# (Debian's package, a throwaway cluster on 127.0.0.1). Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh --test
source scripts/python.sh

echo "== tests against SQLite"
"$PY" -m pytest "$@"

echo "== tests against PostgreSQL"
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
PGDATA=$(mktemp -d /tmp/ec2emu-pg.XXXXXX)
PGPORT=${EC2EMU_TEST_PGPORT:-55432}
chown postgres "$PGDATA"
runuser -u postgres -- "$PGBIN/initdb" -D "$PGDATA" -A trust -U postgres >/dev/null
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/log" -w \
  -o "-c listen_addresses=127.0.0.1 -p $PGPORT -k $PGDATA -c fsync=on" start >/dev/null
trap 'runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA" -m fast stop >/dev/null; rm -rf "$PGDATA"' EXIT
EC2EMU_TEST_DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:$PGPORT/postgres" \
  "$PY" -m pytest "$@"
