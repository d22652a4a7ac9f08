#!/usr/bin/env bash
# Sets up ec2emu on a fresh Debian 12 machine (as root) and starts it with its embedded defaults:
# SQLite in /var/lib/ec2emu, guests under the local libvirt, the default images built from
# Debian's packages (cached), the EC2 API on http://127.0.0.1:8773/.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/install-deps.sh
bash scripts/start-libvirt.sh
source scripts/python.sh
"$PY" -m emulator.cli images build --debian
exec "$PY" -m emulator.cli serve --hypervisor libvirt "$@"
