"""The image builder (hypervisor/imagebuild.py) and the guest it makes, for real.

Fast tests check the guest scripts and the builder's bookkeeping. The slow ones build the images
into the shared cache ($EC2EMU_IMAGE_CACHE, else /var/cache/ec2emu/images: CI builds once), then
boot the tiny image with bare QEMU inside a network namespace of our own (bench/boot_bare.py's
Lab: bridge + gateway, dnsmasq, a logging metadata server on 169.254.169.254) and check what
the guest did: user data on the serial console, the IMDSv2 token PUT and token-carrying GETs,
SSH as ec2-user with sudo, and a clean ACPI power-off.
"""
from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from bench import boot_bare
from hypervisor import imagebuild

GUEST = imagebuild.GUEST_DIR
USER_DATA = ('#!/bin/sh\n'
             'echo "userdata-ok $(wget -qO- http://169.254.169.254/latest/meta-data/instance-id)"\n')


def _busybox() -> str:
    bb = shutil.which("busybox")
    if bb is None:
        pytest.skip("busybox (busybox-static) not installed")
    return bb


# ---------------------------------------------------------------------------------------------
# Fast: guest files and bookkeeping

def _guest_scripts() -> list[Path]:
    return [p for p in GUEST.rglob("*") if p.is_file() and imagebuild._is_script(p)]


def test_guest_scripts_parse_with_busybox_sh():
    scripts = _guest_scripts()
    names = {str(p.relative_to(GUEST)) for p in scripts}
    assert {"initramfs/init", "tiny/etc/init.d/rcS", "tiny/usr/sbin/ec2emu-agent",
            "tiny/usr/bin/sudo", "tiny/etc/udhcpc/default.script"} <= names
    for script in scripts:
        proc = subprocess.run([_busybox(), "sh", "-n", str(script)], capture_output=True,
                              text=True)
        assert proc.returncode == 0, f"{script}: {proc.stderr}"


def test_udhcpc_script_applies_option_121_and_ignores_router(tmp_path):
    """The lease script, run for real with busybox's own `ip` -- but inside a network namespace
    of its own (unshare --net) on a veth named eth0, so the host's network is never touched
    (busybox sh runs its own `ip` applet whatever PATH says: never run it on the host)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare for a private network namespace")
    bb = _busybox()
    script = (GUEST / "tiny/etc/udhcpc/default.script").read_text()
    # Keep it off the host's /etc and /dev/console (the namespace has only its own network).
    script = (script.replace("/etc/resolv.conf", f"{tmp_path}/resolv.conf")
              .replace("/dev/console", f"{tmp_path}/console"))
    (tmp_path / "script").write_text(script)
    env = dict(os.environ, interface="eth0", ip="172.31.0.10", mask="20",
               router="172.31.0.99", dns="172.31.0.2", domain="ec2.internal",
               staticroutes="169.254.169.254/32 172.31.0.1 0.0.0.0/0 172.31.0.1 "
                            "10.9.0.0/16 0.0.0.0")
    # First make sure we really are in an empty namespace (only lo), then build eth0.
    inside = (f"set -e; test $(ip -o link show | wc -l) -eq 1; "
              f"ip link add eth0 type veth peer name eth0p; ip link set eth0p up; "
              f"{bb} sh {tmp_path}/script deconfig; {bb} sh {tmp_path}/script bound; "
              f"ip -4 addr show dev eth0; ip -4 route")
    proc = subprocess.run(["unshare", "--net", "sh", "-c", inside], env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "inet 172.31.0.10/20" in out
    assert "default via 172.31.0.1 dev eth0 onlink" in out
    assert "169.254.169.254 via 172.31.0.1 dev eth0 onlink" in out
    assert "10.9.0.0/16 dev eth0" in out
    assert "172.31.0.99" not in out  # RFC 3442: option 121 present -> router option ignored
    assert (tmp_path / "resolv.conf").read_text() == "search ec2.internal\nnameserver 172.31.0.2\n"


def test_newc_cpio_is_readable_by_cpio(tmp_path):
    if shutil.which("cpio") is None:
        pytest.skip("cpio not installed")
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    (root / "bin/hello").write_text("hi\n")
    (root / "bin/link").symlink_to("hello")
    archive = imagebuild.write_newc_cpio(root, {"dev/console": (0o600, 5, 1)})
    listing = subprocess.run(["cpio", "-itv", "--quiet"], input=archive, capture_output=True,
                             check=True).stdout.decode()
    assert "bin/hello" in listing and "bin/link -> hello" in listing
    assert any(line.startswith("crw") and "dev/console" in line for line in listing.splitlines())
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["cpio", "-id", "--quiet", "bin/hello"], input=archive, cwd=out, check=True)
    assert (out / "bin/hello").read_text() == "hi\n"


def test_inputs_change_with_guest_files_and_packages(monkeypatch, tmp_path):
    pkgs = {n: imagebuild.Package(n, "1.0") for n in imagebuild.TINY_PACKAGES}
    target = imagebuild.TARGETS["tiny"]
    before = imagebuild._inputs(target, pkgs)
    assert before["builder"] == imagebuild.BUILDER_VERSION
    pkgs["dropbear-bin"] = imagebuild.Package("dropbear-bin", "1.1")
    assert imagebuild._inputs(target, pkgs) != before
    fake_guest = tmp_path / "guest"
    shutil.copytree(GUEST, fake_guest)
    monkeypatch.setattr(imagebuild, "GUEST_DIR", fake_guest)
    pkgs["dropbear-bin"] = imagebuild.Package("dropbear-bin", "1.0")
    assert imagebuild._inputs(target, pkgs) == before
    (fake_guest / "tiny/etc/hostname").write_text("other\n")
    assert imagebuild._inputs(target, pkgs) != before


def test_unknown_image_name_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown image"):
        imagebuild.build(str(tmp_path), {"windows"})


# ---------------------------------------------------------------------------------------------
# Slow: a real build, then a real boot

@pytest.fixture(scope="module")
def images():
    if os.geteuid() != 0:
        pytest.skip("building the images needs root")
    if shutil.which("apt-get") is None or shutil.which("mke2fs") is None:
        pytest.skip("needs Debian's apt-get and e2fsprogs")
    lines: list[str] = []
    built = imagebuild.build(imagebuild.default_images_dir(), {"tiny"}, progress=lines.append)
    return built, lines


@pytest.mark.slow
def test_build_outputs_and_cache(images):
    built, _ = images
    assert set(built) == {imagebuild.KERNEL_FILE, imagebuild.INITRD_FILE, imagebuild.TINY_FILE}
    paths = {name: Path(p) for name, p in built.items()}
    for path in paths.values():
        assert path.is_file() and path.stat().st_size > 0
        record = json.loads(Path(f"{path}.inputs.json").read_text())
        assert record["builder"] == imagebuild.BUILDER_VERSION
        assert any(p.startswith("linux-image-6.1") for p in record["packages"]) or \
            "busybox-static" in record["packages"]

    # The initramfs: gzip'd newc cpio with /init, busybox and depmod'ed modules.
    archive = gzip.decompress(paths[imagebuild.INITRD_FILE].read_bytes())
    assert archive.startswith(b"070701")
    for needle in (b"init\0", b"bin/busybox\0", b"/modules.dep\0", b"virtio_net.ko\0",
                   b"evdev.ko\0", b"dev/console\0"):
        assert needle in archive, needle

    info = json.loads(subprocess.run(
        ["qemu-img", "info", "--output=json", str(paths[imagebuild.TINY_FILE])],
        capture_output=True, check=True).stdout)
    assert info["format"] == "qcow2"

    # A second build with unchanged inputs rebuilds nothing.
    mtimes = {n: p.stat().st_mtime_ns for n, p in paths.items()}
    lines: list[str] = []
    again = imagebuild.build(imagebuild.default_images_dir(), {"tiny"}, progress=lines.append)
    assert again == built
    assert {n: Path(p).stat().st_mtime_ns for n, p in again.items()} == mtimes
    assert sum(line.startswith("cached ") for line in lines) == 3, lines


@pytest.fixture
def lab(tmp_path, images):
    missing = boot_bare.missing_tools()
    if missing:
        pytest.skip(f"guest boot needs {', '.join(missing)}")
    with boot_bare.Lab(tmp_path, user_data=USER_DATA) as lab:  # stops everything on exit
        yield lab


@pytest.mark.slow
def test_tiny_guest_boots_runs_user_data_serves_ssh_and_powers_off(lab, images):
    built, _ = images
    guest = lab.boot(str(Path(built[imagebuild.TINY_FILE]).parent))

    console = guest.wait_for_console(f"userdata-ok {lab.instance_id}", timeout=240)
    assert f"ec2emu-agent: instance-id {lab.instance_id}" in console
    assert "ec2emu-agent: user-data done rc=0" in guest.wait_for_console("user-data done", 60)

    # IMDSv2 first: the token PUT, then the agent's GETs carry the token. The user data's own
    # wget is IMDSv1 (no token), which this server allows.
    requests = lab.requests()
    assert requests[0]["method"] == "PUT" and requests[0]["path"] == "/latest/api/token"
    assert requests[0]["status"] == 200
    gets = {r["path"]: r for r in requests if r["method"] == "GET" and r["token"]}
    for path in ("/latest/meta-data/instance-id", "/latest/meta-data/local-hostname",
                 "/latest/meta-data/public-keys/0/openssh-key", "/latest/user-data"):
        assert gets[path]["status"] == 200, path

    guest.wait_for_console("ec2emu-agent: ssh ready", timeout=60)
    result = guest.ssh("id -un; sudo id -u; hostname")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ec2-user", "0", "ip-172-31-0-10"]
    as_root = guest.ssh("id -u", user="root")
    assert as_root.stdout.strip() == "0", as_root.stderr

    # ACPI power button (what a graceful StopInstances sends) -> acpid -> poweroff -> qemu exits.
    guest.monitor_command("system_powerdown")
    assert guest.wait_exit(timeout=30) is not None, guest.console()[-2000:]
    assert "ec2emu: power button pressed" in guest.console()


@pytest.mark.slow
def test_tiny_guest_with_imdsv2_required(tmp_path, images):
    """HttpTokens=required: IMDSv1 answers 401, so everything the agent did came via a token."""
    missing = boot_bare.missing_tools()
    if missing:
        pytest.skip(f"guest boot needs {', '.join(missing)}")
    built, _ = images
    with boot_bare.Lab(tmp_path, tokens_required=True,
                       user_data="#!/bin/sh\necho v2-only-ok\n") as lab:
        guest = lab.boot(str(Path(built[imagebuild.TINY_FILE]).parent))
        guest.wait_for_console("ec2emu-agent: user-data done rc=0", timeout=240)
        assert "v2-only-ok" in guest.console()
        assert all(r["token"] for r in lab.requests() if r["method"] == "GET")
        guest.wait_for_console("ec2emu-agent: ssh ready", timeout=60)
        assert guest.ssh("id -un").stdout.strip() == "ec2-user"
