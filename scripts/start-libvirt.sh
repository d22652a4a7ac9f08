#!/usr/bin/env bash
# Starts virtlogd and libvirtd when they are not running (machines without systemd), then
# waits until libvirt answers.
set -euo pipefail
pgrep -x virtlogd >/dev/null || virtlogd -d
pgrep -x libvirtd >/dev/null || libvirtd -d
for _ in $(seq 1 50); do
  virsh -c qemu:///system version >/dev/null 2>&1 && exit 0
  sleep 0.2
done
echo "ec2emu: libvirtd did not answer on qemu:///system" >&2
exit 1
