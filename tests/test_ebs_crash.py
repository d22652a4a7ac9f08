"""Crash safety of EBS host work: a server killed (os._exit, as kill -9) in the middle of a disk
task, after the driver acted and before the database recorded it, finishes the task when it
starts again; nothing is left twice or orphaned on the (pretend) host."""
import json
import sqlite3

import pytest
from botocore.exceptions import ConnectionClosedError, EndpointConnectionError, ReadTimeoutError

from .helpers import eventually, fast_waiter, tiny_image
from .server import Server

ZONE = "us-east-1a"
DIED = (ConnectionClosedError, EndpointConnectionError, ReadTimeoutError)


def _host(srv: Server) -> dict:
    return json.loads((srv.state_dir / "none-host.json").read_text())


def _tasks(srv: Server, resource_id: str) -> list[tuple]:
    with sqlite3.connect(srv.state_dir / "ec2emu.sqlite") as db:
        return db.execute("SELECT kind, state FROM host_tasks WHERE resource_id = ? ORDER BY id",
                          (resource_id,)).fetchall()


def _crash_then_restart(srv: Server, point: str, call) -> object:
    """Restart `srv` with the crash switch at `point`, make `call(client)`, wait for the process
    to die there, and start it again without the switch. Returns what `call` returned (None if
    the request itself died)."""
    srv.stop()
    srv.env["EC2EMU_CRASH_AT"] = point
    srv.start()
    result = None
    try:
        result = call(srv.client())
    except DIED:
        pass
    srv.proc.wait(30)
    assert srv.proc.returncode == 70, f"the server did not die at {point}"
    srv.env.pop("EC2EMU_CRASH_AT")
    srv.start()
    return result


@pytest.fixture
def srv(tmp_path):
    s = Server(tmp_path / "state", database_url="").start()
    yield s
    s.stop()


def test_create_and_attach_survive_a_crash_at_every_step(srv):
    ec2 = srv.client()
    iid = ec2.run_instances(ImageId=tiny_image(ec2), MinCount=1, MaxCount=1,
                            Placement={"AvailabilityZone": ZONE})["Instances"][0]["InstanceId"]
    fast_waiter(ec2, "instance_running")(InstanceIds=[iid])

    # The disk is made, the process dies before the volume is recorded 'available'.
    vid = _crash_then_restart(srv, "volume.create:after-driver",
                              lambda c: c.create_volume(AvailabilityZone=ZONE, Size=1, Encrypted=True)["VolumeId"])
    ec2 = srv.client()
    eventually(lambda: ec2.describe_volumes(VolumeIds=[vid])["Volumes"][0]["State"] == "available", "available")
    assert _tasks(srv, vid) == [("volume.create", "done")]
    root = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["BlockDeviceMappings"][0]
    assert sorted(_host(srv)["disks"]) == sorted([vid, root["Ebs"]["VolumeId"]])  # (the instance's root volume)
    assert _host(srv)["disks"][vid]["encrypted"]

    # Attached on the host, the process dies before the attachment is recorded.
    _crash_then_restart(srv, "volume.attach:after-driver",
                        lambda c: c.attach_volume(VolumeId=vid, InstanceId=iid, Device="/dev/sdf"))
    ec2 = srv.client()
    eventually(lambda: ec2.describe_volumes(VolumeIds=[vid])["Volumes"][0]["Attachments"][0]["State"] == "attached",
                "attached")
    assert _host(srv)["disks"][vid]["attached_to"] == iid

    # Detached on the host, then the crash: the attachment ends at the restart.
    _crash_then_restart(srv, "volume.detach:after-driver", lambda c: c.detach_volume(VolumeId=vid))
    ec2 = srv.client()
    eventually(lambda: ec2.describe_volumes(VolumeIds=[vid])["Volumes"][0]["State"] == "available", "detached")
    assert _host(srv)["disks"][vid]["attached_to"] is None

    # The file is removed, the process dies before the row goes: the restart removes the row,
    # and the host holds no disk for it.
    _crash_then_restart(srv, "volume.delete:after-driver", lambda c: c.delete_volume(VolumeId=vid))
    ec2 = srv.client()
    eventually(lambda: vid not in {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]}, "deleted")
    assert vid not in _host(srv)["disks"]
    assert [state for _kind, state in _tasks(srv, vid)] == ["done"] * 4


def test_a_crash_after_commit_or_mid_snapshot_loses_nothing(srv):
    ec2 = srv.client()
    # Committed, the host never heard of it: the restart makes the disk.
    vid = _crash_then_restart(srv, "after-commit:CreateVolume",
                              lambda c: c.create_volume(AvailabilityZone=ZONE, Size=2))
    ec2 = srv.client()
    vols = eventually(lambda: [v for v in ec2.describe_volumes()["Volumes"] if v["State"] == "available"], "made")
    vid = vols[0]["VolumeId"]
    assert list(_host(srv)["disks"]) == [vid]

    # The snapshot is kept on the host, the process dies before it is recorded 'completed'.
    sid = _crash_then_restart(srv, "snapshot.create:after-driver",
                              lambda c: c.create_snapshot(VolumeId=vid)["SnapshotId"])
    ec2 = srv.client()
    eventually(lambda: ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]["State"] == "completed", "done")
    snap = ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]
    assert snap["Progress"] == "100%"
    assert list(_host(srv)["snapshots"]) == [sid]
    assert _tasks(srv, sid) == [("snapshot.create", "done")]


def test_a_launch_killed_after_its_disks_were_made_boots_from_them(srv):
    """RunInstances with volumes: the first start makes the disks, then the process dies before
    the guest is defined. The restart runs the start again: the same disks (made once), the
    guest defined with them, the attachments 'attached'."""
    ec2 = srv.client()
    iid = _crash_then_restart(srv, "instance.start:after-disks", lambda c: c.run_instances(
        ImageId=tiny_image(c), MinCount=1, MaxCount=1, Placement={"AvailabilityZone": ZONE},
        BlockDeviceMappings=[{"DeviceName": "/dev/sdf", "Ebs": {"VolumeSize": 1, "Encrypted": True}}],
    )["Instances"][0]["InstanceId"])
    ec2 = srv.client()
    fast_waiter(ec2, "instance_running")(InstanceIds=[iid])
    inst = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    volumes = {m["DeviceName"]: m["Ebs"] for m in inst["BlockDeviceMappings"]}
    assert set(volumes) == {"/dev/xvda", "/dev/sdf"}
    eventually(lambda: all(m["Ebs"]["Status"] == "attached" for m in ec2.describe_instances(
        InstanceIds=[iid])["Reservations"][0]["Instances"][0]["BlockDeviceMappings"]), "attached")
    host = _host(srv)
    assert sorted(host["disks"]) == sorted(v["VolumeId"] for v in volumes.values())
    assert {d["attached_to"] for d in host["disks"].values()} == {iid}
    assert host["disks"][volumes["/dev/sdf"]["VolumeId"]]["encrypted"] is True
    assert host["guests"][iid]["root_disk"] == volumes["/dev/xvda"]["VolumeId"]
    assert _tasks(srv, iid) == [("instance.start", "done")]
