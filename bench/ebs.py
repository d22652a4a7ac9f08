"""EBS benchmark: the libvirt driver's volumes and snapshots, one run.

    python bench/ebs.py [--image-dir DIR] [--skip-guests]

Prints:
  1. snapshot of a 1 GiB volume with 10 MiB changed since its previous snapshot (qemu-img, no
     guest): seconds and the bytes it stores, against the target stored <= 1.1 x changed;
     and the same snapshot taken live, while a running domain holds the disk (libvirt's
     disk-only external snapshot);
  2. create+attach latency to a running tiny guest: from create_disk to the guest seeing a disk
     with the volume's serial (a loop inside the guest, over SSH, started before): 3 volumes;
  3. guest-side sequential write throughput (`dd bs=1M count=256 oflag=direct`, 3 runs at fresh
     offsets) to an attached 1 GiB qcow2 volume, against the same kind of qcow2 hot-added to
     the same tiny image under bare QEMU (bench/boot_bare.py's namespace lab): medians and the
     ratio (target >= 0.9).

Needs root, libvirtd and the built images. Starts its own `ec2emu serve --hypervisor libvirt`
(temp state dir, its own network prefix) and, after it, a bare QEMU; both are stopped and their
files removed at exit. Prints figures only; asserts nothing.
"""
from __future__ import annotations

import argparse
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from boot_bare import Lab  # noqa: E402
from emulator.config import Config  # noqa: E402
from hypervisor import imagebuild  # noqa: E402
from hypervisor.disks import GIB, Disks  # noqa: E402
from tests.server import ROOT, Server  # noqa: E402

MIB = 2**20
DD_RUNS = 3


def qemu_io(path: Path, command: str) -> None:
    subprocess.run(["qemu-io", "-f", "qcow2", str(path), "-c", command], check=True, capture_output=True)


def snapshot_figures(work: Path) -> None:
    disks = Disks(work / "offline")
    disks.create("vol-1", 1)
    qemu_io(disks.path("vol-1"), "write -P 1 0 100M")
    disks.snapshot("vol-1", "snap-1")
    qemu_io(disks.path("vol-1"), "write -P 2 500M 10M")
    t = time.monotonic()
    stored = disks.snapshot("vol-1", "snap-2")
    took = time.monotonic() - t
    print(f"snapshot, 1 GiB volume, 10 MiB changed (offline): {took * 1000:.0f} ms, stores "
          f"{stored / MIB:.2f} MiB = {stored / (10 * MIB):.3f} x changed (target <= 1.1)")


def live_snapshot_figure(work: Path, images: str) -> None:
    """The same on a disk a running domain holds (no OS: SeaBIOS idles; QEMU writes as a guest)."""
    import libvirt_qemu

    from hypervisor import domainxml
    from hypervisor.libvirt import LibvirtDriver
    drv = LibvirtDriver(lambda *_: None, Config(state_dir=str(work / "live"), image_dir=images, domain_type="qemu",
                                                network_prefix="ebsb" + secrets.token_hex(2)))
    iid = "i-" + secrets.token_hex(9)[:17]
    root = work / "root.qcow2"
    drv.disks._img("create", "-q", "-f", "qcow2", str(root), "64M")
    xml = domainxml.domain(domainxml.DomainSpec(
        name=iid, uuid=secrets.token_hex(16), domain_type="qemu", memory_mib=64, vcpus=1, instance_type="t3.nano",
        root_disk=str(root), bridge="none", mac="0a:00:00:00:00:07", console_log=str(work / "console.log")))
    dom = drv.conn.defineXML(re.sub(r"<interface.*?</interface>", "", xml, flags=re.S))
    dom.create()
    try:
        vol = "vol-0000000000000beef"
        drv.create_disk(vol, 1)
        drv.attach_disk(iid, vol)

        def write(command: str) -> None:
            alias = domainxml.disks(dom.XMLDesc())[vol][1].find("alias").get("name")
            libvirt_qemu.qemuMonitorCommand(dom, f'qemu-io -d /machine/peripheral/{alias}/virtio-backend "{command}"',
                                            libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP)
        write("write -P 1 0 100M")
        drv.snapshot_disk(vol, "snap-1")
        write("write -P 2 500M 10M")
        t = time.monotonic()
        stored = drv.snapshot_disk(vol, "snap-2")
        took = time.monotonic() - t
        print(f"snapshot, 1 GiB volume, 10 MiB changed (live, running domain): {took * 1000:.0f} ms, stores "
              f"{stored / MIB:.2f} MiB = {stored / (10 * MIB):.3f} x changed")
    finally:
        dom.destroy()
        dom.undefine()
        drv.close()


def _dd(ssh, device_cmd: str, seek_mib: int) -> float:
    """MB/s of 256 MiB written by dd at seek_mib into the disk device_cmd prints, timed by the
    guest's clock (/proc/uptime, 10 ms; busybox dd prints no rate)."""
    out = ssh(f"d=$({device_cmd}); a=$(cut -d' ' -f1 /proc/uptime); sudo dd if=/dev/zero of=/dev/$d bs=1M "
              f"count=256 seek={seek_mib} oflag=direct 2>&1; echo took $a $(cut -d' ' -f1 /proc/uptime)")
    m = re.search(r"256\+0 records out.*took ([\d.]+) ([\d.]+)", out, re.S)
    if not m:
        raise RuntimeError(f"dd said: {out}")
    return 256 * MIB / (float(m.group(2)) - float(m.group(1))) / 1e6


def find_disk(serial: str) -> str:
    return f"for b in /sys/block/vd*; do grep -q {serial} $b/serial 2>/dev/null && basename $b; done"


def emulator_figures(work: Path, images: str) -> float:
    """Create+attach latencies and dd throughput on an ec2emu tiny guest; -> median MB/s."""
    from hypervisor.libvirt import LibvirtDriver
    from tests.conftest import CREDENTIALS
    prefix = "ebsb" + secrets.token_hex(3)
    srv = Server(work / "server", hypervisor="libvirt", extra_env={
        "EC2EMU_IMAGE_DIR": images, "EC2EMU_NETWORK_PREFIX": prefix, "EC2EMU_CREDENTIALS": CREDENTIALS}).start()
    drv = None
    try:
        ec2 = srv.client()
        pem = work / "key.pem"
        pem.write_text(ec2.create_key_pair(KeyName="ebs-bench")["KeyMaterial"])
        pem.chmod(0o600)
        image = ec2.describe_images(Owners=["ec2emu"], Filters=[{"Name": "name", "Values": ["ec2emu-tiny-*"]}])
        iid = ec2.run_instances(ImageId=image["Images"][0]["ImageId"], MinCount=1, MaxCount=1,
                                InstanceType="t2.micro", KeyName="ebs-bench")["Instances"][0]["InstanceId"]
        ssh_cmd = [sys.executable, "-m", "emulator.cli", "ssh", iid, "--endpoint", srv.endpoint,
                   "--state-dir", str(srv.state_dir), "-i", str(pem), "--"]
        env = dict(os.environ, EC2EMU_NETWORK_PREFIX=prefix)

        def ssh(command: str) -> str:
            for _ in range(90):
                proc = subprocess.run(ssh_cmd + [command], cwd=ROOT, env=env, capture_output=True, text=True,
                                      timeout=120)
                if proc.returncode == 0:
                    return proc.stdout
                time.sleep(2)
            raise RuntimeError(f"ssh {command!r}: {proc.stderr}")
        ssh("true")  # SSH-ready
        drv = LibvirtDriver(lambda *_: None, Config(state_dir=str(srv.state_dir), image_dir=images,
                                                    domain_type="qemu", network_prefix=prefix))
        latencies = []
        for n, letter in enumerate("fgh"):
            vol = f"vol-00000000000000{n:03x}"
            serial = vol.replace("-", "")
            waiter = subprocess.Popen(ssh_cmd + [f"echo waiting; while [ -z \"$({find_disk(serial)})\" ]; "
                                                 "do usleep 20000; done; echo seen"],
                                      cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
            assert waiter.stdout.readline().strip() == "waiting"
            t = time.monotonic()
            drv.create_disk(vol, 1)
            drv.attach_disk(iid, vol, device=f"/dev/sd{letter}")
            attached = time.monotonic() - t
            seen_line = waiter.stdout.readline().strip()
            seen = time.monotonic() - t
            waiter.wait(30)
            if seen_line != "seen":
                raise RuntimeError("the guest never saw the disk")
            latencies.append(seen)
            print(f"create+attach {vol}: calls returned after {attached * 1000:.0f} ms, "
                  f"guest saw it after {seen * 1000:.0f} ms")
        print(f"create+attach latency to the guest seeing the disk: median {statistics.median(latencies) * 1000:.0f} ms")
        rates = [_dd(ssh, find_disk("vol00000000000000000"), run * 256) for run in range(DD_RUNS)]
        print("ec2emu guest dd to an attached volume: " + ", ".join(f"{r:.1f}" for r in rates)
              + f" MB/s (median {statistics.median(rates):.1f})")
        return statistics.median(rates)
    finally:
        if drv is not None:
            drv.close()
        try:
            ids = [i["InstanceId"] for r in srv.client().describe_instances()["Reservations"] for i in r["Instances"]]
            srv.client().terminate_instances(InstanceIds=ids)
            time.sleep(3)
        finally:
            srv.stop()
            from hypervisor.network import Network
            Network(srv.state_dir / "network", prefix=prefix).teardown_all()


def bare_figures(work: Path, images: str) -> float:
    """The same dd in the tiny image under bare QEMU, the qcow2 hot-added through its monitor."""
    disk = work / "bare-vol.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), str(GIB)], check=True)
    (work / "lab").mkdir()
    with Lab(work / "lab", prefix="ebsb-") as lab:
        guest = lab.boot(images, tb_size_mib=32)
        guest.wait_for_console("ec2emu-agent: ssh ready", timeout=180)
        guest.monitor_command(f"drive_add 0 if=none,id=ebs0,file={disk},format=qcow2")
        guest.monitor_command("device_add virtio-blk-pci,drive=ebs0,id=ebsdev0,serial=volbare")

        def ssh(command: str) -> str:
            proc = guest.ssh(command, timeout=120)
            if proc.returncode:
                raise RuntimeError(proc.stderr)
            return proc.stdout
        deadline = time.monotonic() + 30
        while not ssh(find_disk("volbare")).strip():
            if time.monotonic() > deadline:
                raise RuntimeError("the bare guest never saw the disk")
            time.sleep(0.5)
        rates = [_dd(ssh, find_disk("volbare"), run * 256) for run in range(DD_RUNS)]
    print("bare QEMU guest dd to the same kind of qcow2: " + ", ".join(f"{r:.1f}" for r in rates)
          + f" MB/s (median {statistics.median(rates):.1f})")
    return statistics.median(rates)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-dir", default=imagebuild.default_images_dir())
    parser.add_argument("--skip-guests", action="store_true", help="only the snapshot figures")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root")
        return 1
    with tempfile.TemporaryDirectory(prefix="ec2emu-ebs-bench-") as tmp:
        work = Path(tmp)
        snapshot_figures(work)
        live_snapshot_figure(work, args.image_dir)
        if args.skip_guests:
            return 0
        ours = emulator_figures(work, args.image_dir)
        bare = bare_figures(work, args.image_dir)
        print(f"guest write throughput, ec2emu / bare QEMU: {ours / bare:.2f} (target >= 0.9)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
