#!/usr/bin/env bash
# Installs what ec2emu needs on a Debian 12 machine, as root. Idempotent.
#   scripts/install-deps.sh          the emulator: QEMU, libvirt, the network tools, the Python package
#   scripts/install-deps.sh --test   and what the tests need (PostgreSQL, awscli, libcloud, hypothesis,
#                                    Ansible, node with the pinned AWS SDK for JavaScript in tests/js,
#                                    Chromium and Selenium for the web console)
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore

debs=(python3 python3-pip python3-venv python3-dev gcc pkg-config
      qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-clients libvirt-dev   # guests
      iproute2 dnsmasq-base nftables openssh-client                                  # VPC networks
      busybox-static e2fsprogs cpio kmod mmdebstrap)                                 # image building
if [ "${1:-}" = "--test" ]; then
  debs+=(postgresql putty-tools openssl)  # putty-tools: the PPK check
  debs+=(chromium chromium-driver)  # the web console's browser tests (Selenium drives Debian's Chromium)
  # node and npm for tests/js: Debian's, unless a node is already there (nodesource's bundles npm)
  command -v node >/dev/null || debs+=(nodejs)
  command -v npm >/dev/null || debs+=(npm)
fi
missing=()
for d in "${debs[@]}"; do dpkg -s "$d" >/dev/null 2>&1 || missing+=("$d"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "ec2emu: installing Debian packages: ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=$(command -v python3)
extras="[libvirt]"
[ "${1:-}" = "--test" ] && extras="[libvirt,test]"
# Debian's own python3 refuses system-wide pip installs (PEP 668): then use a venv in .venv.
managed=$("$PY" -c 'import os, sysconfig; print(int(os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))))')
if [ "$managed" = 0 ] && [ ! -d .venv ]; then
  "$PY" -m pip install -q -e ".${extras}"
else
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/pip install -q -e ".${extras}"
fi

# The web console's serial terminal: xterm.js, the npm registry's package, pinned by its sha512.
"$PY" scripts/install_xterm.py

if [ "${1:-}" = "--test" ]; then
  # The AWS SDK for JavaScript v3, exactly as package-lock.json pins it (tests/test_js_sdk.py).
  (cd tests/js && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
