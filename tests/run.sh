#!/usr/bin/env bash
# Runs the whole test suite twice: against SQLite, then against a real PostgreSQL started here
# (Debian's package, a throwaway cluster on 127.0.0.1). Installs what it needs first, starts
# libvirt, and builds the default images once into the shared cache (EC2EMU_IMAGE_CACHE).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh --test
bash scripts/start-libvirt.sh
source scripts/python.sh
export EC2EMU_IMAGE_CACHE=${EC2EMU_IMAGE_CACHE:-/var/cache/ec2emu/images}
"$PY" -m emulator.cli images build --image-dir "$EC2EMU_IMAGE_CACHE" --debian

echo "== tests against SQLite"
"$PY" -m pytest --durations=15 "$@"

echo "== tests against PostgreSQL"
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
PGDATA=$(mktemp -d /tmp/ec2emu-pg.XXXXXX)
PGPORT=${EC2EMU_TEST_PGPORT:-55432}
chown postgres "$PGDATA"
runuser -u postgres -- "$PGBIN/initdb" -D "$PGDATA" -A trust -U postgres >/dev/null
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/log" -w \
  -o "-c listen_addresses=127.0.0.1 -p $PGPORT -k $PGDATA -c fsync=on" start >/dev/null
trap 'runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA" -m fast stop >/dev/null; rm -rf "$PGDATA"' EXIT
# Guests (and the soak loop) exercise the host, not the database: once (above) is enough, and
# they are most of the run's time. Every API and host-task test runs here too (the races that
# only PostgreSQL shows live there: row locks, READ COMMITTED).
EC2EMU_TEST_DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:$PGPORT/postgres" \
  "$PY" -m pytest --durations=15 -m "not slow" "$@"
