"""EBS snapshots on the `none` driver: create, describe, copy, permissions, delete, and volumes
made from them, with AWS's errors."""
import json
import re

import pytest

from .conftest import OTHER_ACCOUNT
from .helpers import expect_error, unique
from .helpers import eventually
from .test_volumes import ZONE, attach, new_volume, run_instance, volume, wait_state


def snapshot(ec2, sid: str) -> dict:
    return ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]


def completed(ec2, sid: str) -> dict:
    return eventually(lambda: (s := snapshot(ec2, sid))["State"] == "completed" and s, f"{sid} completed")


def new_snapshot(ec2, vid: str, **kw) -> str:
    sid = ec2.create_snapshot(VolumeId=vid, **kw)["SnapshotId"]
    completed(ec2, sid)
    return sid


def test_create_describe_and_restore(server, ec2):
    vid = new_volume(ec2, Size=3)
    out = ec2.create_snapshot(VolumeId=vid, Description="nightly",
                              TagSpecifications=[{"ResourceType": "snapshot", "Tags": [{"Key": "k", "Value": "v"}]}])
    sid = out["SnapshotId"]
    assert re.fullmatch(r"snap-[0-9a-f]{17}", sid)
    assert out["State"] == "pending" and out["Progress"] == "0%" and out["VolumeId"] == vid
    assert out["VolumeSize"] == 3 and out["OwnerId"] == "123456789012" and out["Description"] == "nightly"
    assert out["Tags"] == [{"Key": "k", "Value": "v"}] and out["Encrypted"] is False
    s = completed(ec2, sid)
    assert s["Progress"] == "100%" and s["CompletionTime"] >= s["StartTime"] and s["StorageTier"] == "standard"
    host = json.loads((server.state_dir / "none-host.json").read_text())
    assert sid in host["snapshots"]  # the host kept it
    own = ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]
    assert sid in [x["SnapshotId"] for x in own]
    filtered = ec2.describe_snapshots(Filters=[{"Name": "volume-id", "Values": [vid]},
                                               {"Name": "status", "Values": ["completed"]},
                                               {"Name": "tag:k", "Values": ["v"]}])["Snapshots"]
    assert [x["SnapshotId"] for x in filtered] == [sid]
    # volumes from it: its size by default, larger if asked, never smaller
    restored = ec2.create_volume(AvailabilityZone=ZONE, SnapshotId=sid)
    assert restored["SnapshotId"] == sid and restored["Size"] == 3
    wait_state(ec2, restored["VolumeId"], "available")
    bigger = new_volume(ec2, SnapshotId=sid, Size=8)
    assert volume(ec2, bigger)["Size"] == 8
    msg = expect_error("InvalidParameterValue", ec2.create_volume, AvailabilityZone=ZONE, SnapshotId=sid, Size=2)
    assert msg == "Volume of 2GiB is too small; minimum is 3GiB."
    host = json.loads((server.state_dir / "none-host.json").read_text())
    assert host["disks"][bigger]["source"] == f"snapshot:{sid}"  # an overlay on the snapshot
    found = ec2.describe_volumes(Filters=[{"Name": "snapshot-id", "Values": [sid]}])["Volumes"]
    assert {v["VolumeId"] for v in found} == {restored["VolumeId"], bigger}


def test_snapshot_errors(ec2):
    msg = expect_error("InvalidSnapshot.NotFound", ec2.describe_snapshots, SnapshotIds=["snap-0123456789abcdef0"])
    assert msg == "The snapshot 'snap-0123456789abcdef0' does not exist."
    expect_error("InvalidSnapshotID.Malformed", ec2.describe_snapshots, SnapshotIds=["snapshot-1"])
    expect_error("InvalidVolume.NotFound", ec2.create_snapshot, VolumeId="vol-0123456789abcdef0")
    expect_error("InvalidSnapshot.NotFound", ec2.delete_snapshot, SnapshotId="snap-0123456789abcdef0")
    vid = new_volume(ec2)
    expect_error("InvalidParameterValue", ec2.create_snapshot, VolumeId=vid, Description="x" * 256)
    ec2.delete_volume(VolumeId=vid)
    msg = expect_error("IncorrectState", ec2.create_snapshot, VolumeId=vid)
    assert msg == f"Volume '{vid}' is in the 'deleting' state."
    expect_error("InvalidParameterValue", ec2.describe_snapshots, MaxResults=4)
    expect_error("InvalidUserID.Malformed", ec2.describe_snapshots, OwnerIds=["nobody"])


def test_paging(ec2):
    vid = new_volume(ec2)
    ids = [ec2.create_snapshot(VolumeId=vid)["SnapshotId"] for _ in range(6)]
    seen, token = [], None
    while True:
        page = ec2.describe_snapshots(OwnerIds=["self"], MaxResults=5, **({"NextToken": token} if token else {}))
        seen += [s["SnapshotId"] for s in page["Snapshots"]]
        token = page.get("NextToken")
        if not token:
            break
    assert set(ids) <= set(seen) and len(seen) == len(set(seen))


def test_delete_snapshot_and_images_using_it(server, ec2):
    vid = new_volume(ec2)
    sid = new_snapshot(ec2, vid)
    image = ec2.register_image(Name=unique("from-snap"), RootDeviceName="/dev/xvda",
                               BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": sid}}])["ImageId"]
    msg = expect_error("InvalidSnapshot.InUse", ec2.delete_snapshot, SnapshotId=sid)
    assert msg == f"The snapshot {sid} is currently in use by {image}"
    ec2.deregister_image(ImageId=image)
    restored = new_volume(ec2, SnapshotId=sid)
    ec2.delete_snapshot(SnapshotId=sid)
    expect_error("InvalidSnapshot.NotFound", ec2.describe_snapshots, SnapshotIds=[sid])
    # the volume made from it keeps working: snapshots of it, and attaching it
    completed(ec2, ec2.create_snapshot(VolumeId=restored)["SnapshotId"])
    host = json.loads((server.state_dir / "none-host.json").read_text())
    assert host["snapshots"][sid]["deleted"] is True  # kept for the volume that needs it


def test_create_snapshots_of_an_instance(ec2):
    iid = run_instance(ec2)
    a = new_volume(ec2)
    b = new_volume(ec2)
    ec2.create_tags(Resources=[a], Tags=[{"Key": "role", "Value": "data"}])
    attach(ec2, a, iid, "/dev/sdf")
    attach(ec2, b, iid, "/dev/sdg")
    root = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["BlockDeviceMappings"][0]
    assert root["DeviceName"] == "/dev/xvda"
    out = ec2.create_snapshots(InstanceSpecification={"InstanceId": iid, "ExcludeDataVolumeIds": [b]},
                               Description="set", CopyTagsFromSource="volume")["Snapshots"]
    assert [s["VolumeId"] for s in out] == [root["Ebs"]["VolumeId"], a]  # the root volume too
    assert out[1]["Tags"] == [{"Key": "role", "Value": "data"}]
    both = ec2.create_snapshots(InstanceSpecification={"InstanceId": iid, "ExcludeBootVolume": True})["Snapshots"]
    assert sorted(s["VolumeId"] for s in both) == sorted([a, b])
    for s in both:
        completed(ec2, s["SnapshotId"])
    expect_error("InvalidInstanceID.NotFound", ec2.create_snapshots,
                 InstanceSpecification={"InstanceId": "i-0123456789abcdef0"})


def test_copy_snapshot_across_regions(server, ec2):
    west = server.client(region="us-west-2")
    sid = new_snapshot(ec2, new_volume(ec2, Size=2))
    copy = west.copy_snapshot(SourceRegion="us-east-1", SourceSnapshotId=sid, Description="dr copy")["SnapshotId"]
    s = completed(west, copy)
    assert s["VolumeSize"] == 2 and s["Description"] == "dr copy" and s["VolumeId"] == "vol-ffffffff"
    expect_error("InvalidSnapshot.NotFound", ec2.describe_snapshots, SnapshotIds=[copy])  # in us-west-2 only
    default = completed(west, west.copy_snapshot(SourceRegion="us-east-1", SourceSnapshotId=sid)["SnapshotId"])
    assert default["Description"] == f"[Copied {sid} from us-east-1]"
    # a standalone copy: it outlives its source and volumes are made from it in its region
    ec2.delete_snapshot(SnapshotId=sid)
    vid = new_volume(west, zone="us-west-2a", SnapshotId=copy)
    assert volume(west, vid)["SnapshotId"] == copy
    enc = completed(west, west.copy_snapshot(SourceRegion="us-west-2", SourceSnapshotId=copy, Encrypted=True)["SnapshotId"])
    assert enc["Encrypted"] is True and enc["KmsKeyId"].startswith("arn:aws:kms:us-west-2:123456789012:key/")
    expect_error("InvalidSnapshot.NotFound", west.copy_snapshot, SourceRegion="us-east-1", SourceSnapshotId=copy)
    expect_error("InvalidParameterValue", west.copy_snapshot, SourceRegion="mars-1", SourceSnapshotId=copy)


def test_encrypted_snapshots_and_volumes(server, ec2):
    vid = new_volume(ec2, Encrypted=True)
    sid = new_snapshot(ec2, vid)
    s = snapshot(ec2, sid)
    assert s["Encrypted"] is True and s["KmsKeyId"] == volume(ec2, vid)["KmsKeyId"]
    restored = volume(ec2, new_volume(ec2, SnapshotId=sid))  # Encrypted not asked: still encrypted
    assert restored["Encrypted"] is True and restored["KmsKeyId"] == s["KmsKeyId"]
    host = json.loads((server.state_dir / "none-host.json").read_text())
    assert host["snapshots"][sid]["encrypted"] and host["disks"][restored["VolumeId"]]["encrypted"]
    plain = new_snapshot(ec2, new_volume(ec2))
    upgraded = volume(ec2, new_volume(ec2, SnapshotId=plain, Encrypted=True))
    assert upgraded["Encrypted"] is True
    msg = expect_error("InvalidParameterValue", ec2.modify_snapshot_attribute, SnapshotId=sid,
                       Attribute="createVolumePermission", OperationType="add", UserIds=[OTHER_ACCOUNT])
    assert "AWS Managed CMK" in msg


def test_create_volume_permission(ec2, other_account):
    sid = new_snapshot(ec2, new_volume(ec2, Size=2))
    expect_error("InvalidSnapshot.NotFound", other_account.describe_snapshots, SnapshotIds=[sid])
    expect_error("InvalidSnapshot.NotFound", other_account.create_volume, AvailabilityZone=ZONE, SnapshotId=sid)
    attr = ec2.describe_snapshot_attribute(SnapshotId=sid, Attribute="createVolumePermission")
    assert attr["CreateVolumePermissions"] == []
    ec2.modify_snapshot_attribute(SnapshotId=sid, Attribute="createVolumePermission", OperationType="add",
                                  UserIds=[OTHER_ACCOUNT])
    attr = ec2.describe_snapshot_attribute(SnapshotId=sid, Attribute="createVolumePermission")
    assert attr["CreateVolumePermissions"] == [{"UserId": OTHER_ACCOUNT}]
    shared = other_account.describe_snapshots(RestorableByUserIds=["self"])["Snapshots"]
    assert sid in [s["SnapshotId"] for s in shared]
    assert other_account.describe_snapshots(OwnerIds=["self"])["Snapshots"] == [] or \
        sid not in [s["SnapshotId"] for s in other_account.describe_snapshots(OwnerIds=["self"])["Snapshots"]]
    theirs = new_volume(other_account, SnapshotId=sid)
    assert volume(other_account, theirs)["Size"] == 2
    expect_error("InvalidSnapshot.NotFound", other_account.delete_snapshot, SnapshotId=sid)  # not theirs
    expect_error("InvalidSnapshot.NotFound", other_account.modify_snapshot_attribute, SnapshotId=sid,
                 Attribute="createVolumePermission", OperationType="add", UserIds=[OTHER_ACCOUNT])
    ec2.modify_snapshot_attribute(SnapshotId=sid, CreateVolumePermission={"Remove": [{"UserId": OTHER_ACCOUNT}]})
    expect_error("InvalidSnapshot.NotFound", other_account.describe_snapshots, SnapshotIds=[sid])
    # public: everyone may restore it
    ec2.modify_snapshot_attribute(SnapshotId=sid, CreateVolumePermission={"Add": [{"Group": "all"}]})
    assert snapshot(other_account, sid)["OwnerId"] == "123456789012"
    public = other_account.describe_snapshots(RestorableByUserIds=["all"])["Snapshots"]
    assert sid in [s["SnapshotId"] for s in public]
    ec2.reset_snapshot_attribute(SnapshotId=sid, Attribute="createVolumePermission")
    expect_error("InvalidSnapshot.NotFound", other_account.describe_snapshots, SnapshotIds=[sid])
    expect_error("InvalidUserID.Malformed", ec2.modify_snapshot_attribute, SnapshotId=sid,
                 Attribute="createVolumePermission", OperationType="add", UserIds=["bob"])
    expect_error("InvalidParameterValue", ec2.modify_snapshot_attribute, SnapshotId=sid,
                 CreateVolumePermission={"Add": [{"Group": "friends"}]})
    assert ec2.describe_snapshot_attribute(SnapshotId=sid, Attribute="productCodes")["ProductCodes"] == []


@pytest.fixture(autouse=True)
def _no_default_encryption(ec2):
    assert ec2.get_ebs_encryption_by_default()["EbsEncryptionByDefault"] is False


def test_a_volume_from_a_deleted_file_backed_snapshot_copy_is_still_made(tmp_path):
    """CreateVolume from a copy of a public (file-backed) snapshot, the copy deleted before the
    volume's disk task runs: the task names the file, so the disk is made all the same. The host
    lane is held up first by a CreateImage's clean shutdown (3 s on this pretend host)."""
    from .helpers import fast_waiter, tiny_image
    from .server import Server

    srv = Server(tmp_path / "state", database_url="",
                 extra_env={"EC2EMU_NONE_TRANSITION_SECONDS": "3"}).start()
    try:
        ec2 = srv.client()
        public = ec2.describe_images(ImageIds=[tiny_image(ec2)])["Images"][0]["BlockDeviceMappings"][0]
        copy = ec2.copy_snapshot(SourceSnapshotId=public["Ebs"]["SnapshotId"], SourceRegion="us-east-1")["SnapshotId"]
        eventually(lambda: ec2.describe_snapshots(SnapshotIds=[copy])["Snapshots"][0]["State"] == "completed",
                   "copied", within=60)
        iid = ec2.run_instances(ImageId=tiny_image(ec2), MinCount=1, MaxCount=1, InstanceType="t3.micro",
                                Placement={"AvailabilityZone": ZONE})["Instances"][0]["InstanceId"]
        fast_waiter(ec2, "instance_running")(InstanceIds=[iid])
        ec2.create_image(InstanceId=iid, Name=unique("hold"))  # its shutdown holds the host lane ~3 s
        vid = ec2.create_volume(AvailabilityZone=ZONE, SnapshotId=copy)["VolumeId"]
        ec2.delete_snapshot(SnapshotId=copy)
        assert volume(ec2, vid)["State"] == "creating"  # the disk task had not run yet
        eventually(lambda: volume(ec2, vid)["State"] in ("available", "error"), "made", within=60)
        assert volume(ec2, vid)["State"] == "available"
        host = json.loads((srv.state_dir / "none-host.json").read_text())
        assert host["disks"][vid]["source"].startswith("image:")
    finally:
        srv.stop()
