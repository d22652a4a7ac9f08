#!/usr/bin/env bash
# Starts virtlogd and libvirtd when they are not running (machines without systemd), then
# waits until libvirt answers.
set -euo pipefail
# Without udev, /dev/kvm can be root-only (0600). libvirt probes QEMU as root (KVM usable) but
# re-checks as the qemu user (not usable), finds its capability cache "stale" and re-probes on
# every call: defining one domain then took over a minute. Apply Debian's udev rule for it.
if [ -c /dev/kvm ] && [ "$(stat -c %G /dev/kvm)" != kvm ] && getent group kvm >/dev/null; then
  chgrp kvm /dev/kvm && chmod 660 /dev/kvm
fi
pgrep -x virtlogd >/dev/null || virtlogd -d
pgrep -x libvirtd >/dev/null || libvirtd -d
for _ in $(seq 1 50); do
  virsh -c qemu:///system version >/dev/null 2>&1 && exit 0
  sleep 0.2
done
echo "ec2emu: libvirtd did not answer on qemu:///system" >&2
exit 1
