"""EBS volumes on the `none` driver: every volume operation, its validation and AWS's errors,
end to end with boto3 (states move as the host tasks complete)."""
import json
import re

import pytest
from sqlalchemy import text

from .conftest import OTHER_ACCOUNT
from .helpers import error_of, eventually, expect_error, fast_waiter, tiny_image, unique

ZONE = "us-east-1a"


def volume(ec2, vid: str) -> dict:
    return ec2.describe_volumes(VolumeIds=[vid])["Volumes"][0]


def wait_state(ec2, vid: str, state: str) -> dict:
    return eventually(lambda: (v := volume(ec2, vid))["State"] == state and v, f"{vid} {state}")


def new_volume(ec2, zone: str = ZONE, **kw) -> str:
    if "SnapshotId" not in kw:
        kw.setdefault("Size", 1)
    vid = ec2.create_volume(AvailabilityZone=zone, **kw)["VolumeId"]
    wait_state(ec2, vid, "available")
    return vid


def attachment(ec2, vid: str) -> dict | None:
    atts = volume(ec2, vid)["Attachments"]
    return atts[0] if atts else None


def attach(ec2, vid: str, iid: str, device: str = "/dev/sdf") -> dict:
    ec2.attach_volume(VolumeId=vid, InstanceId=iid, Device=device)
    return eventually(lambda: (a := attachment(ec2, vid)) and a["State"] == "attached" and a, "attached")


def detach(ec2, vid: str, **kw) -> None:
    ec2.detach_volume(VolumeId=vid, **kw)
    wait_state(ec2, vid, "available")


@pytest.fixture(scope="module")
def instance(ec2):
    """A running instance in ZONE."""
    iid = ec2.run_instances(ImageId=tiny_image(ec2), MinCount=1, MaxCount=1,
                            Placement={"AvailabilityZone": ZONE})["Instances"][0]["InstanceId"]
    fast_waiter(ec2, "instance_running")(InstanceIds=[iid])
    return iid


def run_instance(ec2, zone: str = ZONE, **kw) -> str:
    kw = {"InstanceType": kw["instance_type"]} if "instance_type" in kw else {}
    iid = ec2.run_instances(ImageId=tiny_image(ec2), MinCount=1, MaxCount=1,
                            Placement={"AvailabilityZone": zone}, **kw)["Instances"][0]["InstanceId"]
    fast_waiter(ec2, "instance_running")(InstanceIds=[iid])
    return iid


# ------------------------------------------------------------------------------------ create

def test_create_describe_and_types(ec2):
    out = ec2.create_volume(AvailabilityZone=ZONE, Size=10,
                            TagSpecifications=[{"ResourceType": "volume", "Tags": [{"Key": "Name", "Value": "data"}]}])
    vid = out["VolumeId"]
    assert re.fullmatch(r"vol-[0-9a-f]{17}", vid)
    assert out["State"] == "creating" and out["Size"] == 10 and out["VolumeType"] == "gp2"
    assert out["Iops"] == 100 and out["Encrypted"] is False and out["SnapshotId"] == ""
    assert out["Tags"] == [{"Key": "Name", "Value": "data"}]
    v = wait_state(ec2, vid, "available")
    assert v["AvailabilityZone"] == ZONE and v["AvailabilityZoneId"] and v["Attachments"] == []
    assert v["MultiAttachEnabled"] is False and "Throughput" not in v and "KmsKeyId" not in v
    assert volume(ec2, new_volume(ec2, Size=100))["Iops"] == 300  # gp2: 3 IOPS per GiB
    gp3 = volume(ec2, new_volume(ec2, VolumeType="gp3"))
    assert (gp3["Iops"], gp3["Throughput"]) == (3000, 125)
    gp3 = volume(ec2, new_volume(ec2, VolumeType="gp3", Size=20, Iops=6000, Throughput=500))
    assert (gp3["Iops"], gp3["Throughput"]) == (6000, 500)
    io2 = volume(ec2, new_volume(ec2, VolumeType="io2", Size=4, Iops=4000, MultiAttachEnabled=True))
    assert io2["Iops"] == 4000 and io2["MultiAttachEnabled"] is True
    for vtype, size in (("st1", 125), ("sc1", 125), ("standard", 1), ("io1", 4)):
        extra = {"Iops": 100} if vtype == "io1" else {}
        assert volume(ec2, new_volume(ec2, VolumeType=vtype, Size=size, **extra))["VolumeType"] == vtype
    # filters
    tagged = ec2.describe_volumes(Filters=[{"Name": "tag:Name", "Values": ["data"]}])["Volumes"]
    assert [v["VolumeId"] for v in tagged] == [vid]
    by_type = ec2.describe_volumes(Filters=[{"Name": "volume-type", "Values": ["io2"]},
                                            {"Name": "multi-attach-enabled", "Values": ["true"]}])["Volumes"]
    assert io2["VolumeId"] in [v["VolumeId"] for v in by_type] and all(v["VolumeType"] == "io2" for v in by_type)
    sized = ec2.describe_volumes(Filters=[{"Name": "size", "Values": ["10"]}, {"Name": "status", "Values": ["available"]},
                                          {"Name": "availability-zone", "Values": [ZONE]}])["Volumes"]
    assert vid in [v["VolumeId"] for v in sized]
    assert ec2.describe_volumes(Filters=[{"Name": "volume-id", "Values": [vid]},
                                         {"Name": "encrypted", "Values": ["true"]}])["Volumes"] == []


def test_describe_paging_and_ids(ec2):
    ids = [new_volume(ec2) for _ in range(6)]
    seen, token = [], None
    while True:
        kw = {"NextToken": token} if token else {}
        page = ec2.describe_volumes(MaxResults=5, **kw)
        assert len(page["Volumes"]) <= 5
        seen += [v["VolumeId"] for v in page["Volumes"]]
        token = page.get("NextToken")
        if not token:
            break
    assert set(ids) <= set(seen) and len(seen) == len(set(seen))
    expect_error("InvalidParameterCombination", ec2.describe_volumes, VolumeIds=ids[:1], MaxResults=5)
    expect_error("InvalidParameterValue", ec2.describe_volumes, MaxResults=501)
    msg = expect_error("InvalidVolume.NotFound", ec2.describe_volumes, VolumeIds=["vol-0123456789abcdef0"])
    assert msg == "The volume 'vol-0123456789abcdef0' does not exist."
    msg = expect_error("InvalidVolumeID.Malformed", ec2.describe_volumes, VolumeIds=["volume-1"])
    assert msg == 'Invalid id: "volume-1" (expecting "vol-...")'
    expect_error("InvalidParameterValue", ec2.describe_volumes, Filters=[{"Name": "nonsense", "Values": ["x"]}])


@pytest.mark.parametrize("kw, code, message", [
    ({"Size": 16385}, "InvalidParameterValue", "Volume of 16385GiB is too large; maximum is 16384GiB."),
    ({"Size": 0}, "InvalidParameterValue", "Volume of 0GiB is too small; minimum is 1GiB."),
    ({"Size": 65537, "VolumeType": "gp3"}, "InvalidParameterValue", "Volume of 65537GiB is too large; maximum is 65536GiB."),
    ({"Size": 3, "VolumeType": "io1", "Iops": 100}, "InvalidParameterValue", "Volume of 3GiB is too small; minimum is 4GiB."),
    ({"Size": 124, "VolumeType": "st1"}, "InvalidParameterValue", "Volume of 124GiB is too small; minimum is 125GiB."),
    ({"Size": 1025, "VolumeType": "standard"}, "InvalidParameterValue", "Volume of 1025GiB is too large; maximum is 1024GiB."),
    ({"Size": 10, "Iops": 300}, "InvalidParameterCombination", "The parameter iops is not supported for gp2 volumes."),
    ({"Size": 200, "VolumeType": "sc1", "Iops": 300}, "InvalidParameterCombination",
     "The parameter iops is not supported for sc1 volumes."),
    ({"Size": 10, "VolumeType": "io1"}, "InvalidParameterCombination", "The parameter iops must be specified for io1 volumes."),
    ({"Size": 10, "VolumeType": "io1", "Iops": 50}, "InvalidParameterValue", "Volume iops of 50 is too low; minimum is 100."),
    ({"Size": 2000, "VolumeType": "io1", "Iops": 64001}, "InvalidParameterValue",
     "Volume iops of 64001 is too high; maximum is 64000."),
    ({"Size": 10, "VolumeType": "io1", "Iops": 1000}, "InvalidParameterValue",
     "Iops to volume size ratio of 100.000000 is too high; maximum is 50."),
    ({"Size": 4, "VolumeType": "io2", "Iops": 5000}, "InvalidParameterValue",
     "Iops to volume size ratio of 1250.000000 is too high; maximum is 1000."),
    ({"Size": 1, "VolumeType": "gp3", "Iops": 2999}, "InvalidParameterValue", "Volume iops of 2999 is too low; minimum is 3000."),
    ({"Size": 10, "VolumeType": "gp3", "Iops": 6000}, "InvalidParameterValue",
     "Iops to volume size ratio of 600.000000 is too high; maximum is 500."),
    ({"Size": 10, "Throughput": 200}, "InvalidParameterCombination", "throughput can only be specified for volumeType gp3."),
    ({"Size": 10, "VolumeType": "gp3", "Throughput": 2001}, "InvalidParameterValue",
     "Volume throughput of 2001 is too high; maximum is 2000."),
    ({"Size": 10, "VolumeType": "gp3", "Throughput": 1000}, "InvalidParameterValue",
     "Throughput (MiBps) to iops ratio of 0.333333 is too high; maximum is 0.250000 MiBps per iops."),
    ({"Size": 10, "MultiAttachEnabled": True}, "InvalidParameterCombination",
     "Multi-Attach is supported only for io1 and io2 volumes."),
    ({}, "MissingParameter", "The request must contain the parameter size"),
    ({"Size": 1, "KmsKeyId": "alias/mine"}, "InvalidParameterDependency",
     "The parameter KmsKeyId requires the parameter Encrypted to be set."),
    ({"Size": 1, "Encrypted": True, "KmsKeyId": "not a key"}, "InvalidParameterValue",
     "Value (not a key) for parameter kmsKeyId is invalid."),
    ({"Size": 1, "SnapshotId": "snap-nope"}, "InvalidSnapshotID.Malformed", 'Invalid id: "snap-nope" (expecting "snap-...")'),
    ({"Size": 1, "SnapshotId": "snap-0123456789abcdef0"}, "InvalidSnapshot.NotFound",
     "The snapshot 'snap-0123456789abcdef0' does not exist."),
])
def test_create_validation(ec2, kw, code, message):
    got, text = error_of(ec2.create_volume, AvailabilityZone=ZONE, **kw)
    assert (got, text) == (code, message)


def test_create_zone_errors_and_client_token(ec2):
    assert expect_error("InvalidParameterValue", ec2.create_volume, AvailabilityZone="us-east-1z",
                        Size=1) == "Invalid availability zone: [us-east-1z]"
    expect_error("MissingParameter", ec2.create_volume, Size=1)
    token = unique("tok")
    a = ec2.create_volume(AvailabilityZone=ZONE, Size=2, ClientToken=token)["VolumeId"]
    assert ec2.create_volume(AvailabilityZone=ZONE, Size=2, ClientToken=token)["VolumeId"] == a
    expect_error("IdempotentParameterMismatch", ec2.create_volume, AvailabilityZone=ZONE, Size=3, ClientToken=token)
    zone_id = volume(ec2, a)["AvailabilityZoneId"]
    b = ec2.create_volume(AvailabilityZoneId=zone_id, Size=1)["VolumeId"]
    assert volume(ec2, b)["AvailabilityZone"] == ZONE


def test_other_account_and_region_do_not_see_volumes(ec2, other_account, server):
    vid = new_volume(ec2)
    expect_error("InvalidVolume.NotFound", other_account.describe_volumes, VolumeIds=[vid])
    expect_error("InvalidVolume.NotFound", other_account.delete_volume, VolumeId=vid)
    expect_error("InvalidVolume.NotFound", server.client(region="us-west-2").describe_volumes, VolumeIds=[vid])


# ------------------------------------------------------------------------- attach and detach

def test_attach_detach_life(ec2, instance):
    vid = new_volume(ec2)
    out = ec2.attach_volume(VolumeId=vid, InstanceId=instance, Device="/dev/sdf")
    assert out["State"] == "attaching" and out["Device"] == "/dev/sdf" and out["InstanceId"] == instance
    assert out["DeleteOnTermination"] is False
    assert volume(ec2, vid)["State"] == "in-use"
    a = eventually(lambda: (x := attachment(ec2, vid)) and x["State"] == "attached" and x, "attached")
    assert a["InstanceId"] == instance and a["Device"] == "/dev/sdf"
    inst = ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]
    mapping = next(m for m in inst["BlockDeviceMappings"] if m["DeviceName"] == "/dev/sdf")
    assert mapping["Ebs"]["VolumeId"] == vid and mapping["Ebs"]["Status"] == "attached"
    assert mapping["Ebs"]["DeleteOnTermination"] is False and mapping["Ebs"]["AttachTime"]
    attr = ec2.describe_instance_attribute(InstanceId=instance, Attribute="blockDeviceMapping")
    assert any(m["Ebs"]["VolumeId"] == vid for m in attr["BlockDeviceMappings"])
    found = ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": [instance]},
                                          {"Name": "attachment.device", "Values": ["/dev/sdf"]}])["Volumes"]
    assert [v["VolumeId"] for v in found] == [vid]
    assert volume(ec2, vid)["State"] == "in-use"
    # what cannot be done to an attached volume
    msg = expect_error("VolumeInUse", ec2.delete_volume, VolumeId=vid)
    assert msg == f"Volume {vid} is currently attached to {instance}"
    other = run_instance(ec2)
    assert expect_error("VolumeInUse", ec2.attach_volume, VolumeId=vid, InstanceId=other,
                        Device="/dev/sdg") == f"{vid} is already attached to an instance"
    expect_error("VolumeInUse", ec2.attach_volume, VolumeId=vid, InstanceId=instance, Device="/dev/sdh")
    msg = expect_error("InvalidAttachment.NotFound", ec2.detach_volume, VolumeId=vid, InstanceId=other)
    assert msg == f"Volume {vid} can not be detached from {other} because it is not attached"
    msg = expect_error("InvalidAttachment.NotFound", ec2.detach_volume, VolumeId=vid, Device="/dev/sdz")
    assert msg == f"The volume {vid} is not attached to instance {instance} as device /dev/sdz"
    # detach
    out = ec2.detach_volume(VolumeId=vid, InstanceId=instance, Device="/dev/sdf")
    assert out["State"] == "detaching"
    wait_state(ec2, vid, "available")
    assert volume(ec2, vid)["Attachments"] == []
    inst = ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]
    assert not any(m.get("Ebs", {}).get("VolumeId") == vid for m in inst["BlockDeviceMappings"])
    msg = expect_error("IncorrectState", ec2.detach_volume, VolumeId=vid)
    assert msg == f"Volume '{vid}' is in the 'available' state."
    # and the other instance may have it now; Force detaches as well
    attach(ec2, vid, other, "xvdg")
    detach(ec2, vid, Force=True)


def test_attach_errors(ec2, instance):
    vid = new_volume(ec2)
    msg = expect_error("InvalidParameterValue", ec2.attach_volume, VolumeId=vid, InstanceId=instance, Device="/dev/foo")
    assert msg == "Value (/dev/foo) for parameter device is invalid. /dev/foo is not a valid EBS device name."
    for bad in ("sdf1x", "/dev/sdA", "/dev/xvdzz", "/dev/nvme1n1", "/dev/sdf16"):
        expect_error("InvalidParameterValue", ec2.attach_volume, VolumeId=vid, InstanceId=instance, Device=bad)
    root = ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]["RootDeviceName"]
    msg = expect_error("InvalidParameterValue", ec2.attach_volume, VolumeId=vid, InstanceId=instance, Device=root)
    assert msg == f"Invalid value '{root}' for unixDevice. Attachment point {root} is already in use"
    taken = new_volume(ec2)
    attach(ec2, taken, instance, "/dev/sdk")
    msg = expect_error("InvalidParameterValue", ec2.attach_volume, VolumeId=vid, InstanceId=instance, Device="xvdk")
    assert "Attachment point xvdk is already in use" in msg  # the same device as /dev/sdk's short form
    detach(ec2, taken)
    elsewhere = new_volume(ec2, zone="us-east-1b")
    msg = expect_error("InvalidVolume.ZoneMismatch", ec2.attach_volume, VolumeId=elsewhere, InstanceId=instance,
                       Device="/dev/sdf")
    assert msg == f"The volume '{elsewhere}' is not in the same availability zone as instance '{instance}'"
    expect_error("InvalidInstanceID.NotFound", ec2.attach_volume, VolumeId=vid, InstanceId="i-0123456789abcdef0",
                 Device="/dev/sdf")
    expect_error("InvalidVolume.NotFound", ec2.attach_volume, VolumeId="vol-0123456789abcdef0", InstanceId=instance,
                 Device="/dev/sdf")
    doomed = run_instance(ec2)
    ec2.terminate_instances(InstanceIds=[doomed])
    msg = expect_error("IncorrectState", ec2.attach_volume, VolumeId=vid, InstanceId=doomed, Device="/dev/sdf")
    assert msg == f"Instance '{doomed}' is not 'running'."
    ec2.delete_volume(VolumeId=vid)
    msg = expect_error("IncorrectState", ec2.attach_volume, VolumeId=vid, InstanceId=instance, Device="/dev/sdf")
    assert msg == f"{vid} is not 'available'."


def test_multi_attach(ec2):
    """An io2 Multi-Attach volume attaches to several Nitro instances of its zone at once (all
    listed in Attachments), to each once, never as a root volume nor to a Xen instance; it is
    available again when the last one lets go."""
    vid = new_volume(ec2, VolumeType="io2", Size=4, Iops=200, MultiAttachEnabled=True)
    first, second = run_instance(ec2, instance_type="t3.micro"), run_instance(ec2, instance_type="t3.micro")
    xen = run_instance(ec2, instance_type="t2.micro")
    attach(ec2, vid, first)
    ec2.attach_volume(VolumeId=vid, InstanceId=second, Device="/dev/sdg")
    eventually(lambda: sorted((a["InstanceId"], a["State"]) for a in volume(ec2, vid)["Attachments"])
               == sorted([(first, "attached"), (second, "attached")]), "attached to both")
    assert volume(ec2, vid)["State"] == "in-use"
    expect_error("VolumeInUse", ec2.attach_volume, VolumeId=vid, InstanceId=first, Device="/dev/sdh")
    msg = expect_error("UnsupportedOperation", ec2.attach_volume, VolumeId=vid, InstanceId=xen, Device="/dev/sdf")
    assert "Multi-Attach is not supported for this instance type" in msg
    expect_error("InvalidParameterValue", ec2.attach_volume, VolumeId=vid,
                 InstanceId=run_instance(ec2, instance_type="t3.micro"), Device="/dev/xvda")
    # a plain volume (positive control for the Nitro rule) attaches to the Xen instance
    plain = new_volume(ec2)
    attach(ec2, plain, xen)
    detach(ec2, plain)
    # DetachVolume must say which attachment when there are several
    expect_error("MissingParameter", ec2.detach_volume, VolumeId=vid)
    ec2.detach_volume(VolumeId=vid, InstanceId=first)
    eventually(lambda: [a["InstanceId"] for a in volume(ec2, vid)["Attachments"]] == [second], "one left")
    assert volume(ec2, vid)["State"] == "in-use"
    detach(ec2, vid, InstanceId=second)
    assert volume(ec2, vid)["MultiAttachEnabled"] is True


def test_multi_attach_limit(ec2):
    """At most 16 instances (AWS's limit) at once."""
    vid = new_volume(ec2, VolumeType="io1", Size=4, Iops=100, MultiAttachEnabled=True)
    ids = [i["InstanceId"] for i in ec2.run_instances(
        ImageId=tiny_image(ec2), MinCount=17, MaxCount=17, InstanceType="t3.nano",
        Placement={"AvailabilityZone": ZONE})["Instances"]]
    fast_waiter(ec2, "instance_running")(InstanceIds=ids)
    for iid in ids[:16]:
        ec2.attach_volume(VolumeId=vid, InstanceId=iid, Device="/dev/sdf")
    msg = expect_error("AttachmentLimitExceeded", ec2.attach_volume, VolumeId=vid, InstanceId=ids[16],
                       Device="/dev/sdf")
    assert "16" in msg
    ec2.terminate_instances(InstanceIds=ids)
    wait_state(ec2, vid, "available")


def test_multi_attach_modify_and_encryption(ec2):
    """ModifyVolume turns Multi-Attach on and off for a detached io2 volume only; an encrypted
    Multi-Attach volume is refused by this emulator's hosts (said plainly)."""
    vid = new_volume(ec2, VolumeType="io2", Size=4, Iops=200)
    ec2.modify_volume(VolumeId=vid, MultiAttachEnabled=True)
    eventually(lambda: volume(ec2, vid)["MultiAttachEnabled"] is True, "enabled")
    io1 = new_volume(ec2, VolumeType="io1", Size=4, Iops=100)
    msg = expect_error("InvalidParameterCombination", ec2.modify_volume, VolumeId=io1, MultiAttachEnabled=True)
    assert "io2" in msg
    gp3 = new_volume(ec2, VolumeType="gp3", Size=4)
    expect_error("InvalidParameterCombination", ec2.modify_volume, VolumeId=gp3, MultiAttachEnabled=True)
    expect_error("Unsupported", ec2.create_volume, AvailabilityZone=ZONE, VolumeType="io2", Size=4, Iops=200,
                 MultiAttachEnabled=True, Encrypted=True)


def test_stop_start_keep_and_terminate_releases(ec2):
    iid = run_instance(ec2)
    vid = new_volume(ec2)
    attach(ec2, vid, iid, "/dev/sdg")
    ec2.stop_instances(InstanceIds=[iid])
    fast_waiter(ec2, "instance_stopped")(InstanceIds=[iid])
    assert attachment(ec2, vid)["State"] == "attached"
    # a stopped instance takes a new volume too
    spare = new_volume(ec2)
    attach(ec2, spare, iid, "/dev/sdh")
    ec2.start_instances(InstanceIds=[iid])
    fast_waiter(ec2, "instance_running")(InstanceIds=[iid])
    assert attachment(ec2, vid)["State"] == "attached" and attachment(ec2, spare)["InstanceId"] == iid
    ec2.terminate_instances(InstanceIds=[iid])
    fast_waiter(ec2, "instance_terminated")(InstanceIds=[iid])
    for v in (vid, spare):
        wait_state(ec2, v, "available")
        assert volume(ec2, v)["Attachments"] == []


# ----------------------------------------------------------------------------------- modify

def test_modify_volume(server, ec2, instance):
    vid = new_volume(ec2, Size=2)
    attach(ec2, vid, instance, "/dev/sdi")
    out = ec2.modify_volume(VolumeId=vid, Size=10, VolumeType="gp3", Iops=4000, Throughput=200)["VolumeModification"]
    assert out["ModificationState"] == "modifying" and out["TargetSize"] == 10 and out["OriginalSize"] == 2
    assert out["TargetVolumeType"] == "gp3" and out["OriginalVolumeType"] == "gp2" and out["OriginalIops"] == 100
    assert (out["TargetIops"], out["TargetThroughput"]) == (4000, 200)

    def done():
        mods = ec2.describe_volumes_modifications(VolumeIds=[vid])["VolumesModifications"]
        return mods[0]["ModificationState"] == "completed" and mods[0]
    mod = eventually(done, "modification completed")
    assert mod["Progress"] == 100 and mod["EndTime"] >= mod["StartTime"]
    v = volume(ec2, vid)
    assert (v["Size"], v["VolumeType"], v["Iops"], v["Throughput"]) == (10, "gp3", 4000, 200)
    filtered = ec2.describe_volumes_modifications(
        Filters=[{"Name": "modification-state", "Values": ["completed"]},
                 {"Name": "target-size", "Values": ["10"]}])["VolumesModifications"]
    assert vid in [m["VolumeId"] for m in filtered]
    # the host grew the disk the instance has (the none driver records the size)
    host = json.loads((server.state_dir / "none-host.json").read_text())
    assert host["disks"][vid]["size_gib"] == 10 and host["disks"][vid]["attached_to"] == instance
    assert expect_error("InvalidParameterValue", ec2.modify_volume, VolumeId=vid,
                        Size=9) == "New size cannot be smaller than existing size"
    expect_error("InvalidParameterValue", ec2.modify_volume, VolumeId=vid, Size=10)  # nothing changes
    msg = expect_error("InvalidParameterValue", ec2.modify_volume, VolumeId=vid, Iops=6000)
    assert msg == "Iops to volume size ratio of 600.000000 is too high; maximum is 500."
    expect_error("InvalidVolume.NotFound", ec2.describe_volumes_modifications, VolumeIds=["vol-0123456789abcdef0"])
    never = new_volume(ec2)
    expect_error("InvalidVolumeModification.NotFound", ec2.describe_volumes_modifications, VolumeIds=[never])
    # a second modification within 6 hours of the first one's start is refused (AWS's cooldown)
    msg = expect_error("VolumeModificationRateExceeded", ec2.modify_volume, VolumeId=vid, VolumeType="gp2")
    assert msg == ("You've reached the maximum modification rate per volume limit. Wait at least 6 hours "
                   "between modifications per EBS volume.")
    detach(ec2, vid)
    # back to gp2 drops the provisioned IOPS and throughput (a volume never modified: allowed)
    fresh = new_volume(ec2, Size=10, VolumeType="gp3", Iops=4000, Throughput=200)
    ec2.modify_volume(VolumeId=fresh, VolumeType="gp2")
    eventually(lambda: volume(ec2, fresh)["VolumeType"] == "gp2", "gp2")
    assert "Throughput" not in volume(ec2, fresh) and volume(ec2, fresh)["Iops"] == 100  # gp2 of 10 GiB: floor


def test_modification_cooldown_is_a_setting(tmp_path):
    """The 6-hour wait is config (volume_modification_cooldown_seconds): past it, the next
    modification is taken; within it, refused."""
    import time

    from .server import Server

    srv = Server(tmp_path / "state", database_url="",
                 extra_env={"EC2EMU_VOLUME_MODIFICATION_COOLDOWN_SECONDS": "3"}).start()
    try:
        ec2 = srv.client()
        vid = new_volume(ec2, Size=1)
        ec2.modify_volume(VolumeId=vid, Size=2)
        eventually(lambda: volume(ec2, vid)["Size"] == 2, "grown")
        expect_error("VolumeModificationRateExceeded", ec2.modify_volume, VolumeId=vid, Size=3)
        time.sleep(3)
        ec2.modify_volume(VolumeId=vid, Size=3)
        eventually(lambda: volume(ec2, vid)["Size"] == 3, "grown again")
    finally:
        srv.stop()


# ---------------------------------------------------------------------- status and attributes

def test_status_and_attributes(ec2):
    vid = new_volume(ec2, VolumeType="gp3")
    status = ec2.describe_volume_status(VolumeIds=[vid])["VolumeStatuses"][0]
    assert status["VolumeStatus"]["Status"] == "ok" and status["AvailabilityZone"] == ZONE
    assert {d["Name"]: d["Status"] for d in status["VolumeStatus"]["Details"]} == {
        "io-enabled": "passed", "io-performance": "normal"}
    ok = ec2.describe_volume_status(Filters=[{"Name": "volume-status.status", "Values": ["ok"]}])["VolumeStatuses"]
    assert vid in [s["VolumeId"] for s in ok]
    attr = ec2.describe_volume_attribute(VolumeId=vid, Attribute="autoEnableIO")
    assert attr["AutoEnableIO"] == {"Value": False}
    ec2.modify_volume_attribute(VolumeId=vid, AutoEnableIO={"Value": True})
    assert ec2.describe_volume_attribute(VolumeId=vid, Attribute="autoEnableIO")["AutoEnableIO"] == {"Value": True}
    assert ec2.describe_volume_attribute(VolumeId=vid, Attribute="productCodes")["ProductCodes"] == []
    expect_error("MissingParameter", ec2.modify_volume_attribute, VolumeId=vid)


def test_delete_volume(server, ec2):
    vid = new_volume(ec2)
    ec2.delete_volume(VolumeId=vid)
    ec2.delete_volume(VolumeId=vid)  # again while deleting: fine
    eventually(lambda: vid not in [v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]], "gone")
    expect_error("InvalidVolume.NotFound", ec2.delete_volume, VolumeId=vid)
    host = json.loads((server.state_dir / "none-host.json").read_text())
    assert vid not in host["disks"]
    assert new_volume(ec2) in json.loads((server.state_dir / "none-host.json").read_text())["disks"]


# ------------------------------------------------------------------------------- encryption

def _db(server):
    """A connection to the server's database (SQLite file or the PostgreSQL of the run)."""
    from sqlalchemy import create_engine
    return create_engine(server.database_url or f"sqlite:///{server.state_dir / 'ec2emu.sqlite'}").connect()


def test_encryption_settings_and_encrypted_volumes(server, ec2, other_account):
    west = server.client(region="us-west-2")
    assert ec2.get_ebs_encryption_by_default()["EbsEncryptionByDefault"] is False
    key = ec2.get_ebs_default_kms_key_id()["KmsKeyId"]
    assert key == "arn:aws:kms:us-east-1:123456789012:alias/aws/ebs"
    enc = volume(ec2, new_volume(ec2, Encrypted=True))
    assert enc["Encrypted"] is True
    assert re.fullmatch(r"arn:aws:kms:us-east-1:123456789012:key/[0-9a-f-]{36}", enc["KmsKeyId"])
    again = volume(ec2, new_volume(ec2, Encrypted=True, KmsKeyId="alias/aws/ebs"))
    assert again["KmsKeyId"] == enc["KmsKeyId"]  # the same default key
    own = "1234abcd-12ab-34cd-56ef-1234567890ab"
    assert volume(ec2, new_volume(ec2, Encrypted=True, KmsKeyId=own))["KmsKeyId"].endswith(f":key/{own}")
    arn = f"arn:aws:kms:us-east-1:123456789012:key/{own}"
    assert volume(ec2, new_volume(ec2, Encrypted=True, KmsKeyId=arn))["KmsKeyId"] == arn
    try:
        assert ec2.enable_ebs_encryption_by_default()["EbsEncryptionByDefault"] is True
        assert ec2.get_ebs_encryption_by_default()["EbsEncryptionByDefault"] is True
        # per account and region
        assert west.get_ebs_encryption_by_default()["EbsEncryptionByDefault"] is False
        assert other_account.get_ebs_encryption_by_default()["EbsEncryptionByDefault"] is False
        forced = volume(ec2, new_volume(ec2, Encrypted=False))
        assert forced["Encrypted"] is True and forced["KmsKeyId"] == enc["KmsKeyId"]
    finally:
        assert ec2.disable_ebs_encryption_by_default()["EbsEncryptionByDefault"] is False
    assert volume(ec2, new_volume(ec2))["Encrypted"] is False
    # The data key is stored wrapped: 60 bytes of nonce + ciphertext + tag, no plain 32-byte key;
    # the host made an encrypted disk.
    with _db(server) as db:
        wrapped, = db.execute(text("SELECT wrapped_key FROM volumes WHERE id = :v"), {"v": enc["VolumeId"]}).one()
        tasks = db.execute(text("SELECT args FROM host_tasks WHERE resource_id = :v"), {"v": enc["VolumeId"]}).all()
    import base64
    assert len(base64.b64decode(wrapped)) == 12 + 32 + 16
    assert all("key" not in (args if isinstance(args, dict) else json.loads(args or "{}")) for args, in tasks) and tasks
    assert (server.state_dir / "ebs-master.key").stat().st_mode & 0o777 == 0o600
    host = json.loads((server.state_dir / "none-host.json").read_text())
    assert host["disks"][enc["VolumeId"]]["encrypted"] is True
    assert host["disks"][forced["VolumeId"]]["encrypted"] is True


def test_default_kms_key_can_change(ec2):
    own = "1234abcd-12ab-34cd-56ef-1234567890ab"
    try:
        out = ec2.modify_ebs_default_kms_key_id(KmsKeyId=own)
        assert out["KmsKeyId"] == f"arn:aws:kms:us-east-1:123456789012:key/{own}"
        assert volume(ec2, new_volume(ec2, Encrypted=True))["KmsKeyId"] == out["KmsKeyId"]
        expect_error("InvalidParameterValue", ec2.modify_ebs_default_kms_key_id, KmsKeyId="alias/aws/other")
    finally:
        ec2.reset_ebs_default_kms_key_id()
    assert ec2.get_ebs_default_kms_key_id()["KmsKeyId"].endswith(":alias/aws/ebs")


def test_other_account_cannot_touch(other_account, ec2, instance):
    vid = new_volume(ec2)
    expect_error("InvalidVolume.NotFound", other_account.attach_volume, VolumeId=vid, InstanceId=instance,
                 Device="/dev/sdf")
    assert OTHER_ACCOUNT != "123456789012"


def test_metadata_lists_volumes_present_at_last_start(server, ec2):
    """block-device-mapping/ebsN lists the volumes the instance had when it was launched or last
    started (AWS's rule): one attached while it runs appears after a stop and start."""
    from metadata.tree import meta_data

    from .test_metadata import facts_for, fake_instance

    iid = run_instance(ec2)
    vid = new_volume(ec2)
    attach(ec2, vid, iid, "/dev/sdj")

    def listed() -> list[tuple]:
        with _db(server) as db:
            return [tuple(r) for r in db.execute(text(
                "SELECT device, listed FROM volume_attachments WHERE instance_id = :i "
                "AND device != '/dev/xvda'"), {"i": iid}).all()]  # (its root volume: listed)
    assert listed() == [("/dev/sdj", 0)]
    ec2.stop_instances(InstanceIds=[iid])
    fast_waiter(ec2, "instance_stopped")(InstanceIds=[iid])
    ec2.start_instances(InstanceIds=[iid])
    assert listed() == [("/dev/sdj", 1)]
    tree = meta_data(facts_for(fake_instance(block_device_mappings=[]), volume_devices=["/dev/sdj"]))
    assert tree["block-device-mapping"] == {"ami": "/dev/xvda", "root": "/dev/xvda", "ebs1": "sdj"}
    assert meta_data(facts_for(fake_instance(block_device_mappings=[])))["block-device-mapping"] == {
        "ami": "/dev/xvda", "root": "/dev/xvda"}
