"""Guests restored from a booted checkpoint (hypervisor/checkpoints.py), on real guests: each is
its own (random numbers, boot id, SSH host key, MAC, identity document), its clock is right,
stop/start and reboot work, and an image whose ramdisk cannot stop at a checkpoint boots cold.

What tells a restore from a boot: the server's log line "<id> restored from checkpoint", and
the guest's own console, whose boot log up to the checkpoint is the checkpoint's (its marker
line), while a cold boot's is its own (no marker).
"""
from __future__ import annotations

import gzip
import json
import re
import time
from pathlib import Path

import pytest

from hypervisor import imagebuild
from hypervisor.checkpoints import MARKER

from .helpers import eventually, tiny_image, unique
from .test_guests import IMAGE_CACHE, _key, _ssh, cloud, fast_waiter  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow

PROBE = " ; ".join([
    "head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'",
    "echo",
    "cat /proc/sys/kernel/random/boot_id",
    "sudo dropbearkey -y -f /etc/dropbear/dropbear_ed25519_host_key | grep ^ssh-",
    "cat /sys/class/net/eth0/address",
    "timeout 5 wget -q -O - http://169.254.169.254/latest/dynamic/instance-identity/document | tr -d '\\n'",
    "echo",
    "date +%s",
    "sudo dmesg | grep 'crng init done' | head -n 1",
])


def _restores(cloud, iid: str) -> int:
    return cloud.log.read_text().count(f"{iid} restored from checkpoint")


def _restored(cloud, iid: str) -> bool:
    """Whether it was restored. The line comes after its NICs are plugged, a moment after the
    restore made it 'running' (as on AWS, running comes before reachable): waited for."""
    try:
        return bool(eventually(lambda: _restores(cloud, iid), f"{iid} restored", within=20, every=0.2))
    except AssertionError:
        return False


def _checkpoint_dir(cloud) -> Path:
    return Path(cloud.env["EC2EMU_CHECKPOINT_DIR"])


def _launch(ec2, image: str, key: str, count: int = 1) -> list[str]:
    ids = [i["InstanceId"] for i in ec2.run_instances(ImageId=image, MinCount=count, MaxCount=count,
                                                       InstanceType="t2.micro", KeyName=key)["Instances"]]
    fast_waiter(ec2, "instance_running")(InstanceIds=ids)
    return ids


def _probe(cloud, iid: str, pem: Path) -> dict:
    lines = _ssh(cloud, iid, pem, PROBE).splitlines()
    random_hex, boot_id, host_key, mac, document, clock, crng = (lines + [""] * 7)[:7]
    return {"random": random_hex, "boot_id": boot_id, "host_key": host_key, "mac": mac,
            "document": json.loads(document), "clock": int(clock), "host_clock": time.time(),
            "crng": crng}


@pytest.fixture(scope="module")
def restored(cloud):
    """Two instances restored from one checkpoint (launched together), once the checkpoint of
    their kind is built (the first instance of a kind boots cold and has it built)."""
    ec2 = cloud.client()
    key, pem = _key(ec2, cloud)
    first = _launch(ec2, tiny_image(ec2), key)
    eventually(lambda: list(_checkpoint_dir(cloud).glob("*.save")), "a checkpoint built", within=120, every=0.5)
    ids = _launch(ec2, tiny_image(ec2), key, count=2)
    ec2.terminate_instances(InstanceIds=first)
    return {"ids": ids, "pem": pem, "key": key}


def test_two_restored_guests_are_each_their_own(cloud, restored):
    ec2 = cloud.client()
    ids, pem = restored["ids"], restored["pem"]
    assert all(_restored(cloud, i) for i in ids), cloud.log.read_text()[-3000:]
    seen = {i: _probe(cloud, i, pem) for i in ids}
    a, b = (seen[i] for i in ids)
    for what in ("random", "boot_id", "host_key", "mac"):
        assert a[what] and b[what] and a[what] != b[what], (what, a[what], b[what])
    described = {i["InstanceId"]: i for r in ec2.describe_instances(InstanceIds=ids)["Reservations"]
                 for i in r["Instances"]}
    for iid, probe in seen.items():
        assert probe["mac"] == described[iid]["NetworkInterfaces"][0]["MacAddress"]
        assert probe["document"]["instanceId"] == iid
        assert probe["document"]["privateIp"] == described[iid]["PrivateIpAddress"]
        # The clock was stepped from the host's at the restore (not the checkpoint's time).
        assert abs(probe["clock"] - probe["host_clock"]) < 15, probe
        # The kernel's random generator was first seeded after the restore: at the checkpoint
        # it was not ready (the marker's uptime is before the "crng init done" line's).
        out = ec2.get_console_output(InstanceId=iid)["Output"]
        checkpoint_uptime = float(re.search(re.escape(MARKER.decode()) + r"\d+ uptime=([\d.]+)", out).group(1))
        crng_uptime = float(re.search(r"\[\s*([\d.]+)\] random: crng init done", probe["crng"]).group(1))
        assert crng_uptime > checkpoint_uptime, (crng_uptime, checkpoint_uptime)


def test_a_restored_instance_reboots_stops_and_starts(cloud, restored):
    ec2 = cloud.client()
    iid, pem = restored["ids"][0], restored["pem"]
    boot_id = "cat /proc/sys/kernel/random/boot_id"
    before = _ssh(cloud, iid, pem, boot_id).strip()
    ec2.reboot_instances(InstanceIds=[iid])
    eventually(lambda: _ssh(cloud, iid, pem, boot_id).strip() != before, "rebooted", within=120, every=1)
    restores = _restores(cloud, iid)
    ec2.stop_instances(InstanceIds=[iid])
    fast_waiter(ec2, "instance_stopped")(InstanceIds=[iid])
    ec2.start_instances(InstanceIds=[iid])
    fast_waiter(ec2, "instance_running")(InstanceIds=[iid])
    # A start is a restore as well, on the instance's own disk: its host key is the one it made.
    host_key = "sudo dropbearkey -y -f /etc/dropbear/dropbear_ed25519_host_key | grep ^ssh-"
    eventually(lambda: _restores(cloud, iid) == restores + 1, "restored again", within=20, every=0.2)
    key_after = _ssh(cloud, iid, pem, host_key).strip()
    assert key_after and key_after == _probe(cloud, iid, pem)["host_key"]
    assert _ssh(cloud, iid, pem, "echo up").strip() == "up"


def _without_checkpoints(ramdisk: Path, dest: Path) -> None:
    """Our ramdisk with an /init that ignores ec2emu.checkpoint (as any other ramdisk does): a
    second archive appended, whose /init replaces the first's (the kernel unpacks both)."""
    init = (imagebuild.GUEST_DIR / "initramfs/init").read_text()
    assert "ec2emu.checkpoint) checkpoint=1 ;;" in init
    tree = dest.parent / "init-tree"
    tree.mkdir()
    (tree / "init").write_text(init.replace("ec2emu.checkpoint) checkpoint=1 ;;", ""))
    (tree / "init").chmod(0o755)
    extra = gzip.compress(imagebuild.write_newc_cpio(tree, {}))
    dest.write_bytes(ramdisk.read_bytes() + extra)


def test_an_image_whose_ramdisk_has_no_checkpoint_boots_cold(cloud, restored, tmp_path):
    ec2 = cloud.client()
    tiny = ec2.describe_images(ImageIds=[tiny_image(ec2)])["Images"][0]
    ramdisk = tmp_path / "plain.initrd.img"
    _without_checkpoints(Path(IMAGE_CACHE) / imagebuild.INITRD_FILE, ramdisk)
    ari = ec2.register_image(Name=unique("plain-initrd"), ImageLocation=f"file://{ramdisk}")["ImageId"]
    eventually(lambda: ec2.describe_images(ImageIds=[ari])["Images"][0]["State"] == "available", "ari", within=60)
    ami = ec2.register_image(Name=unique("plain"), ImageLocation=f"file://{Path(IMAGE_CACHE) / imagebuild.TINY_FILE}",
                             KernelId=tiny["KernelId"], RamdiskId=ari)["ImageId"]
    eventually(lambda: ec2.describe_images(ImageIds=[ami])["Images"][0]["State"] == "available", "ami", within=120)
    pem = restored["pem"]
    first = _launch(ec2, ami, restored["key"])[0]
    assert _ssh(cloud, first, pem, "echo cold").strip() == "cold"
    # Its checkpoint build gives up (the ramdisk never stops at one) and says so once; the next
    # instance of it boots cold without trying again.
    eventually(lambda: "its ramdisk never said it was at a checkpoint" in cloud.log.read_text(),
               "the build given up", within=150, every=1)
    second = _launch(ec2, ami, restored["key"])[0]
    assert _ssh(cloud, second, pem, "echo cold").strip() == "cold"
    log = cloud.log.read_text()
    assert log.count("its ramdisk never said it was at a checkpoint") == 1
    for iid in (first, second):
        assert _restores(cloud, iid) == 0  # (it answered SSH: a restore's line would be there)
        out = ec2.get_console_output(InstanceId=iid)["Output"]
        assert "ec2emu: rcS start" in out and MARKER.decode() not in out
    # Positive control: the same check tells the restored ones.
    assert _restored(cloud, restored["ids"][1])
    assert MARKER.decode() in ec2.get_console_output(InstanceId=restored["ids"][1])["Output"]
    ec2.terminate_instances(InstanceIds=[first, second])
