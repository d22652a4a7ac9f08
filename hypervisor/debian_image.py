"""The Debian 12 + cloud-init image (login `admin`, as Debian's own AMIs), built from Debian's
packages with mmdebstrap, no mounts: a directory tree -> mke2fs -d -> qcow2.

It boots with the same kernel and initramfs as the tiny image (the initramfs loads the virtio
modules and switch_roots), and proves real cloud-init works against our metadata service.
Pitfalls measured here (FACTS.md): mmdebstrap copies the host's resolv.conf (cloud-init then waits
40 s on an unreachable resolver); without dbus, logind never starts and ACPI shutdown is ignored;
RSA host keys take ~10 s under TCG.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from .host import run

# curl and wget: user data scripts and provisioners (Ansible's get_url fallbacks, cloud-init
# scripts) fetch with one or the other, and Debian's own cloud images ship both. python3-botocore:
# code in the instance reaches AWS with its instance role's credentials and no configuration, as
# on Amazon Linux (which ships the AWS CLI); 79 MB, the image's largest package.
PACKAGES = ("systemd-sysv,dbus,udev,kmod,cloud-init,openssh-server,ifupdown,isc-dhcp-client,"
            "iproute2,netbase,sudo,procps,ca-certificates,curl,wget,python3-botocore")

CLOUD_CFG = """\
# ec2emu: the EC2 datasource only (ds-identify also picks it from the 'ec2' SMBIOS UUID).
datasource_list: [ Ec2, None ]
datasource:
  Ec2:
    metadata_urls: [ 'http://169.254.169.254' ]
    timeout: 5
    max_wait: 60
system_info:
  default_user:
    name: admin
    lock_passwd: true
    gecos: Debian
    groups: [adm, sudo]
    sudo: ["ALL=(ALL) NOPASSWD:ALL"]
    shell: /bin/bash
locale: C.UTF-8
manage_etc_hosts: true
ssh_genkeytypes: [ed25519, ecdsa]
"""

FSTAB = "/dev/vda / ext4 rw,discard,errors=remount-ro 0 1\n"

# EBS device names as Amazon Linux makes them on Nitro (/dev/sdf and /dev/xvdf -> the disk, also
# for partitions): the tiny image's ec2emu-ebs-names derives them from the disk's PCI slot.
EBS_NAMES_SCRIPT = Path(__file__).parent / "guest" / "tiny" / "usr" / "sbin" / "ec2emu-ebs-names"
EBS_UDEV_RULE = """\
# ec2emu: EBS device names (/dev/sdf, /dev/xvdf) for virtio disks, from their PCI slot.
ACTION=="add|change", SUBSYSTEM=="block", KERNEL=="vd*", PROGRAM="/usr/sbin/ec2emu-ebs-names %k", SYMLINK+="%c"
"""

INTERFACES = """\
auto lo
iface lo inet loopback
source /etc/network/interfaces.d/*
"""


def _run(*cmd: str) -> None:
    run(cmd, timeout=None)  # HostError carries the command and its stderr


def _inputs() -> str:
    """What the image is made from (a change means a rebuild): its packages and files."""
    return json.dumps({"packages": PACKAGES, "cloud.cfg": CLOUD_CFG, "fstab": FSTAB,
                       "interfaces": INTERFACES, "ebs-udev-rule": EBS_UDEV_RULE,
                       "ebs-names": EBS_NAMES_SCRIPT.read_text()}, sort_keys=True)


def _record(out: Path) -> Path:
    return out.with_name(out.name + ".inputs.json")


def up_to_date(out: Path) -> bool:
    """The image at `out` exists and was built from what this module would build it from now."""
    try:
        return out.exists() and _record(out).read_text() == _inputs()
    except OSError:
        return False


def build_debian(out: Path, progress=print, size: str = "1200M") -> None:
    """Build the image into `out` (a .qcow2 path), with a record of its inputs beside it."""
    with tempfile.TemporaryDirectory(prefix="ec2emu-debian-") as tmp:
        root = Path(tmp) / "root"
        progress("debian: mmdebstrap (Debian 12 + cloud-init, about a minute)")
        _run("mmdebstrap", "--mode=root", "--variant=minbase", f"--include={PACKAGES}",
             "--aptopt=APT::Install-Recommends \"false\"",
             "--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-exclude=/usr/share/man/*",
             "--dpkgopt=path-exclude=/usr/share/locale/*", "--dpkgopt=path-include=/usr/share/locale/locale.alias",
             "bookworm", str(root))
        progress("debian: configuring cloud-init, fstab, network")
        (root / "etc/resolv.conf").unlink(missing_ok=True)
        (root / "etc/resolv.conf").write_text("")  # the VPC's DHCP gives the resolver
        (root / "etc/hostname").write_text("localhost\n")
        (root / "etc/fstab").write_text(FSTAB)
        (root / "etc/network").mkdir(parents=True, exist_ok=True)
        (root / "etc/network/interfaces").write_text(INTERFACES)
        (root / "etc/network/interfaces.d").mkdir(exist_ok=True)
        (root / "etc/cloud/cloud.cfg.d/99-ec2emu.cfg").write_text(CLOUD_CFG)
        names = root / "usr/sbin/ec2emu-ebs-names"
        names.write_text(EBS_NAMES_SCRIPT.read_text())
        names.chmod(0o755)
        (root / "etc/udev/rules.d").mkdir(parents=True, exist_ok=True)
        (root / "etc/udev/rules.d/66-ec2emu-ebs.rules").write_text(EBS_UDEV_RULE)
        # Host keys are made per instance by cloud-init, never baked into the image.
        for key in (root / "etc/ssh").glob("ssh_host_*"):
            key.unlink()
        (root / "etc/machine-id").write_text("")
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            shutil.rmtree(root / cache, ignore_errors=True)
            (root / cache).mkdir(parents=True, exist_ok=True)
        raw = Path(tmp) / "root.raw"
        progress("debian: mke2fs -d (no mounts)")
        _run("mke2fs", "-q", "-t", "ext4", "-d", str(root), "-L", "cloudimg-rootfs", str(raw), size)
        progress("debian: qemu-img convert to qcow2")
        partial = out.with_suffix(".partial")
        _run("qemu-img", "convert", "-O", "qcow2", str(raw), str(partial))
        partial.rename(out)
        _record(out).write_text(_inputs())
