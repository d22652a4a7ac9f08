"""EBS on real guests (libvirt driver, tiny image): what the guests themselves see of volumes,
read over SSH from inside the VPC's namespace. One server and a pair of guests for the module.

A volume is found in the guest by its serial (/sys/block/vd*/serial): the volume id, or its
Nitro form (`vol` + 17 hex, no dash).
"""
from __future__ import annotations


import pytest

from .helpers import eventually, expect_error, tiny_image
from .test_guests import _key, _ssh, _terminate_everything, fast_waiter
from .test_guests import cloud  # noqa: F401 (the module-scoped libvirt-backed server, here too)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pair(cloud):
    """Two running tiny guests in one zone, and the key to reach them."""
    ec2 = cloud.client()
    name, pem = _key(ec2, cloud)
    ids = [i["InstanceId"] for i in ec2.run_instances(
        ImageId=tiny_image(ec2), MinCount=2, MaxCount=2, KeyName=name, InstanceType="t3.micro",
        Placement={"AvailabilityZone": "us-east-1a"})["Instances"]]
    fast_waiter(ec2, "instance_running")(InstanceIds=ids)
    for iid in ids:
        _ssh(cloud, iid, pem, "true", timeout=240)
    yield ec2, ids, pem
    _terminate_everything(cloud)


def _find_disk(vid: str) -> str:
    """Shell that prints /dev/vdX of the disk whose serial is the volume id: as given, in its
    Nitro form (`vol` + 17 hex), or cut to virtio-blk's 20 serial characters."""
    forms = " ".join(dict.fromkeys((vid, vid.replace("-", ""), vid[:20])))
    return (f"for d in /sys/block/vd*; do s=$(cat $d/serial 2>/dev/null); for f in {forms}; do "
            f"[ \"$s\" = $f ] && echo /dev/${{d##*/}}; done; done; true")


def _disk_in(cloud, iid, pem, vid: str, present: bool = True) -> str:
    def look():
        out = _ssh(cloud, iid, pem, _find_disk(vid)).strip()
        return (out or None) if present else (out == "" and "gone")
    try:
        return eventually(look, f"{vid} {'in' if present else 'gone from'} {iid}", within=120, every=0.5)
    except AssertionError:
        serials = _ssh(cloud, iid, pem, "grep -H . /sys/block/vd*/serial")
        raise AssertionError(f"{vid} {'not found in' if present else 'still in'} {iid}; serials:\n{serials}") from None


def _volume(ec2, vid):
    return ec2.describe_volumes(VolumeIds=[vid])["Volumes"][0]


def _wait(ec2, vid, state):
    return eventually(lambda: _volume(ec2, vid)["State"] == state, f"{vid} {state}", within=120, every=0.5)


def _attach(ec2, vid, iid, device="/dev/sdf"):
    ec2.attach_volume(VolumeId=vid, InstanceId=iid, Device=device)
    eventually(lambda: (_volume(ec2, vid)["Attachments"] or [{}])[0].get("State") == "attached", "attached", within=120, every=0.5)


def _detach(ec2, vid):
    ec2.detach_volume(VolumeId=vid)
    _wait(ec2, vid, "available")


def _new(ec2, **kw) -> str:
    vid = ec2.create_volume(AvailabilityZone="us-east-1a", **kw)["VolumeId"]
    _wait(ec2, vid, "available")
    return vid


def _write(cloud, iid, pem, disk: str, marker: str) -> None:
    _ssh(cloud, iid, pem, f"printf '%s' {marker} | sudo dd of={disk} bs=512 conv=fsync 2>/dev/null; sync")


def _read(cloud, iid, pem, disk: str, length: int) -> str:
    return _ssh(cloud, iid, pem, f"sudo dd if={disk} bs=512 count=1 2>/dev/null | head -c {length}")


def test_data_moves_between_guests_and_in_use_is_refused(cloud, pair):
    ec2, (a, b), pem = pair
    vid = _new(ec2, Size=1)
    _attach(ec2, vid, a)
    disk = _disk_in(cloud, a, pem, vid)
    marker = "ebs-marker-" + vid
    _write(cloud, a, pem, disk, marker)
    # a second attachment while it is in use is refused
    expect_error("VolumeInUse", ec2.attach_volume, VolumeId=vid, InstanceId=b, Device="/dev/sdf")
    _detach(ec2, vid)
    _disk_in(cloud, a, pem, vid, present=False)  # the guest let go of it
    _attach(ec2, vid, b, "/dev/sdg")
    assert _read(cloud, b, pem, _disk_in(cloud, b, pem, vid), len(marker)) == marker
    _detach(ec2, vid)


def test_online_resize_is_seen_by_the_guest(cloud, pair):
    ec2, (a, _b), pem = pair
    vid = _new(ec2, Size=1)
    _attach(ec2, vid, a, "/dev/sdh")
    disk = _disk_in(cloud, a, pem, vid)
    sectors = lambda: int(_ssh(cloud, a, pem, f"cat /sys/block/{disk[5:]}/size").strip())  # noqa: E731
    assert sectors() == 2 * 1024 * 1024  # 1 GiB in 512-byte sectors (positive control)
    ec2.modify_volume(VolumeId=vid, Size=2)
    eventually(lambda: ec2.describe_volumes_modifications(VolumeIds=[vid])["VolumesModifications"][0]
                ["ModificationState"] == "completed", "modified", within=120, every=0.5)
    eventually(lambda: sectors() == 4 * 1024 * 1024, "the guest sees 2 GiB", within=120, every=0.5)
    _detach(ec2, vid)


def test_snapshot_of_an_attached_volume_holds_its_data(cloud, pair):
    ec2, (a, b), pem = pair
    vid = _new(ec2, Size=1)
    _attach(ec2, vid, a, "/dev/sdi")
    marker = "snap-marker-" + vid
    _write(cloud, a, pem, _disk_in(cloud, a, pem, vid), marker)
    sid = ec2.create_snapshot(VolumeId=vid)["SnapshotId"]  # while attached to a running guest
    eventually(lambda: ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]["State"] == "completed", "snap", within=120, every=0.5)
    restored = _new(ec2, SnapshotId=sid)
    _attach(ec2, restored, b, "/dev/sdj")
    assert _read(cloud, b, pem, _disk_in(cloud, b, pem, restored), len(marker)) == marker
    _detach(ec2, restored)
    _detach(ec2, vid)


def _write_direct(cloud, iid, pem, disk: str, marker: str, block: int) -> None:
    """The marker at 4 KiB block `block` of the disk, written with O_DIRECT (past any cache)."""
    _ssh(cloud, iid, pem, f"printf '%s' {marker} > /tmp/m && sudo dd if=/tmp/m of={disk} bs=4096 seek={block} "
                          f"conv=sync oflag=direct 2>&1")


def _read_direct(cloud, iid, pem, disk: str, block: int, length: int) -> str:
    return _ssh(cloud, iid, pem, f"sudo dd if={disk} bs=4096 skip={block} count=1 iflag=direct 2>/dev/null "
                                 f"| head -c {length}")


def test_multi_attach_volume_is_shared_by_two_running_guests(cloud, pair):
    """One io2 Multi-Attach volume attached to both guests at once: what one writes (direct
    I/O) the other reads, both ways; the host holds it as one raw file (no qcow2 writer shared)."""
    ec2, (a, b), pem = pair
    vid = _new(ec2, Size=4, VolumeType="io2", Iops=200, MultiAttachEnabled=True)
    assert (cloud.state_dir / "volumes" / f"{vid}.qcow2").resolve().suffix == ".raw"
    for iid, device in ((a, "/dev/sdl"), (b, "/dev/sdm")):
        ec2.attach_volume(VolumeId=vid, InstanceId=iid, Device=device)
    eventually(lambda: sorted(x["State"] for x in _volume(ec2, vid)["Attachments"]) == ["attached"] * 2,
               "attached to both", within=120, every=0.5)
    disk_a, disk_b = _disk_in(cloud, a, pem, vid), _disk_in(cloud, b, pem, vid)
    marker = "shared-marker-" + vid
    assert _read_direct(cloud, b, pem, disk_b, 300, len(marker)).strip("\0") == ""  # blank before
    _write_direct(cloud, a, pem, disk_a, marker, 300)
    assert _read_direct(cloud, b, pem, disk_b, 300, len(marker)) == marker
    reply = "reply-from-b-" + vid
    _write_direct(cloud, b, pem, disk_b, reply, 301)
    assert _read_direct(cloud, a, pem, disk_a, 301, len(reply)) == reply
    # a snapshot of the shared volume holds the data, as a volume of its own
    sid = ec2.create_snapshot(VolumeId=vid)["SnapshotId"]
    eventually(lambda: ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]["State"] == "completed", "snap",
               within=120, every=0.5)
    for iid in (a, b):
        ec2.detach_volume(VolumeId=vid, InstanceId=iid)
    _wait(ec2, vid, "available")
    restored = _new(ec2, SnapshotId=sid)
    _attach(ec2, restored, b, "/dev/sdn")
    assert _read_direct(cloud, b, pem, _disk_in(cloud, b, pem, restored), 300, len(marker)) == marker
    _detach(ec2, restored)


def test_encrypted_volume_is_unreadable_at_rest(cloud, pair):
    ec2, (a, b), pem = pair
    files = {}
    for encrypted in (False, True):  # the plain volume is the positive control
        vid = _new(ec2, Size=1, Encrypted=encrypted)
        _attach(ec2, vid, a, "/dev/sdk")
        marker = f"secret-{encrypted}-{vid}"
        _write(cloud, a, pem, _disk_in(cloud, a, pem, vid), marker)
        _detach(ec2, vid)
        if encrypted:  # it reads back on the other guest: the key follows the volume
            _attach(ec2, vid, b, "/dev/sdk")
            assert _read(cloud, b, pem, _disk_in(cloud, b, pem, vid), len(marker)) == marker
            _detach(ec2, vid)
        path = cloud.state_dir / "volumes" / f"{vid}.qcow2"
        files[encrypted] = (path.read_bytes(), marker.encode())
    plain, plain_marker = files[False]
    secret, secret_marker = files[True]
    assert plain_marker in plain
    assert secret_marker not in secret and b"LUKS" in secret[:1 << 20]
