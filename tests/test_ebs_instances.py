"""EBS-backed instances on the `none` driver: root volumes cloned from the image's root snapshot,
RunInstances BlockDeviceMappings (sizes, extra volumes, NoDevice, instance store, tags) and their
errors, DeleteOnTermination at terminate, stop rules, and images made from disks."""
import json

import pytest

from .helpers import eventually, expect_error, fast_waiter, tiny_image, unique
from .test_volumes import ZONE, new_volume, volume

DEBIAN = "debian-12-cloudinit-*"


def debian_image(ec2) -> str:
    return ec2.describe_images(Owners=["ec2emu"],
                               Filters=[{"Name": "name", "Values": [DEBIAN]}])["Images"][0]["ImageId"]


def launch(ec2, image=None, wait=True, **kw) -> dict:
    kw.setdefault("Placement", {"AvailabilityZone": ZONE})
    inst = ec2.run_instances(ImageId=image or tiny_image(ec2), MinCount=1, MaxCount=1, **kw)["Instances"][0]
    if wait:
        fast_waiter(ec2, "instance_running")(InstanceIds=[inst["InstanceId"]])
    return describe(ec2, inst["InstanceId"])


def describe(ec2, iid: str) -> dict:
    return ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]


def mappings(ec2, iid: str) -> dict[str, dict]:
    return {m["DeviceName"]: m["Ebs"] for m in describe(ec2, iid)["BlockDeviceMappings"]}


def host(server) -> dict:
    return json.loads((server.state_dir / "none-host.json").read_text())


def terminate(ec2, iid: str) -> None:
    ec2.terminate_instances(InstanceIds=[iid])
    fast_waiter(ec2, "instance_terminated")(InstanceIds=[iid])


def gone(ec2, vid: str) -> bool:
    return vid not in {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]}


# ------------------------------------------------------------------------------- EBS roots

def test_public_images_are_ebs_backed_by_public_snapshots(ec2):
    img = ec2.describe_images(ImageIds=[tiny_image(ec2)])["Images"][0]
    [root] = img["BlockDeviceMappings"]
    assert root["DeviceName"] == "/dev/xvda" == img["RootDeviceName"] and img["RootDeviceType"] == "ebs"
    ebs = root["Ebs"]
    assert ebs == {"DeleteOnTermination": True, "SnapshotId": ebs["SnapshotId"], "VolumeSize": 1,
                   "VolumeType": "gp2", "Encrypted": False}
    snap = ec2.describe_snapshots(SnapshotIds=[ebs["SnapshotId"]])["Snapshots"][0]
    assert snap["OwnerId"] == img["OwnerId"] and snap["State"] == "completed" and snap["VolumeSize"] == 1
    public = ec2.describe_snapshots(RestorableByUserIds=["all"])["Snapshots"]
    assert ebs["SnapshotId"] in {s["SnapshotId"] for s in public}
    # a public image's snapshot is not the caller's to delete, nor to list among its own
    expect_error("InvalidSnapshot.NotFound", ec2.delete_snapshot, SnapshotId=ebs["SnapshotId"])
    assert ebs["SnapshotId"] not in {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    # kernel and ramdisk images stay as they were: files, no mappings
    kernel = ec2.describe_images(ImageIds=[img["KernelId"]])["Images"][0]
    assert kernel["BlockDeviceMappings"] == [] and kernel["RootDeviceType"] == "instance-store"
    # a volume can be made from it as from any public snapshot
    vid = new_volume(ec2, SnapshotId=ebs["SnapshotId"])
    assert volume(ec2, vid)["Size"] == 1 and volume(ec2, vid)["SnapshotId"] == ebs["SnapshotId"]


def test_an_instance_gets_a_root_volume_from_the_image_snapshot(server, ec2):
    snap = ec2.describe_images(ImageIds=[tiny_image(ec2)])["Images"][0]["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
    inst = launch(ec2)
    iid = inst["InstanceId"]
    assert inst["RootDeviceType"] == "ebs" and inst["RootDeviceName"] == "/dev/xvda"
    [root] = inst["BlockDeviceMappings"]
    assert root["DeviceName"] == "/dev/xvda"
    ebs = root["Ebs"]
    assert ebs["Status"] == "attached" and ebs["DeleteOnTermination"] is True
    v = volume(ec2, ebs["VolumeId"])
    assert v["State"] == "in-use" and v["SnapshotId"] == snap and v["Size"] == 1 and v["VolumeType"] == "gp2"
    assert v["AvailabilityZone"] == ZONE and v["Encrypted"] is False
    [att] = v["Attachments"]
    assert (att["InstanceId"], att["Device"], att["State"], att["DeleteOnTermination"]) == (
        iid, "/dev/xvda", "attached", True)
    # the host made the disk as a clone of the image's file, and the guest was defined with it
    disk = host(server)["disks"][ebs["VolumeId"]]
    assert disk["source"].startswith("image:") and disk["source"].endswith(".qcow2")
    assert disk["attached_to"] == iid and disk["letter"] == "a"
    assert host(server)["guests"][iid]["root_disk"] == ebs["VolumeId"]
    # the root volume cannot be attached elsewhere or deleted while attached
    expect_error("VolumeInUse", ec2.delete_volume, VolumeId=ebs["VolumeId"])
    terminate(ec2, iid)
    eventually(lambda: gone(ec2, ebs["VolumeId"]), "root volume deleted (DeleteOnTermination)")
    assert ebs["VolumeId"] not in host(server)["disks"]


def test_stop_start_keeps_the_root_volume_and_terminate_honours_delete_on_termination(server, ec2):
    inst = launch(ec2, BlockDeviceMappings=[
        {"DeviceName": "/dev/xvda", "Ebs": {"DeleteOnTermination": False}},
        {"DeviceName": "/dev/sdf", "Ebs": {"VolumeSize": 2}},                                   # default: deleted
        {"DeviceName": "/dev/sdg", "Ebs": {"VolumeSize": 1, "DeleteOnTermination": False}}])
    iid = inst["InstanceId"]
    m = mappings(ec2, iid)
    assert set(m) == {"/dev/xvda", "/dev/sdf", "/dev/sdg"}
    assert [m[d]["DeleteOnTermination"] for d in ("/dev/xvda", "/dev/sdf", "/dev/sdg")] == [False, True, False]
    root = m["/dev/xvda"]["VolumeId"]
    ec2.stop_instances(InstanceIds=[iid])
    fast_waiter(ec2, "instance_stopped")(InstanceIds=[iid])
    assert volume(ec2, root)["State"] == "in-use"  # a stopped instance keeps its volumes
    ec2.start_instances(InstanceIds=[iid])
    fast_waiter(ec2, "instance_running")(InstanceIds=[iid])
    assert mappings(ec2, iid)["/dev/xvda"]["VolumeId"] == root
    # the host kept the same disk (made once: no second clone) and boots from it again
    assert host(server)["guests"][iid]["boots"] == 2 and host(server)["disks"][root]["letter"] == "a"
    # ModifyInstanceAttribute changes DeleteOnTermination of an attached volume
    ec2.modify_instance_attribute(InstanceId=iid, BlockDeviceMappings=[
        {"DeviceName": "/dev/sdg", "Ebs": {"DeleteOnTermination": True}}])
    assert mappings(ec2, iid)["/dev/sdg"]["DeleteOnTermination"] is True
    attr = ec2.describe_instance_attribute(InstanceId=iid, Attribute="blockDeviceMapping")["BlockDeviceMappings"]
    assert {a["DeviceName"]: a["Ebs"]["DeleteOnTermination"] for a in attr} == {
        "/dev/xvda": False, "/dev/sdf": True, "/dev/sdg": True}
    expect_error("InvalidParameterValue", ec2.modify_instance_attribute, InstanceId=iid,
                 BlockDeviceMappings=[{"DeviceName": "/dev/sdz", "Ebs": {"DeleteOnTermination": True}}])
    terminate(ec2, iid)
    eventually(lambda: gone(ec2, m["/dev/sdf"]["VolumeId"]) and gone(ec2, m["/dev/sdg"]["VolumeId"]), "deleted")
    kept = eventually(lambda: (v := volume(ec2, root))["State"] == "available" and v, "root kept")
    assert kept["Attachments"] == [] and root in host(server)["disks"]  # positive control beside the deleted ones
    ec2.delete_volume(VolumeId=root)


def test_instance_store_backed_instances_cannot_be_stopped(ec2):
    name = unique("s3-image")
    image = ec2.register_image(Name=name, ImageLocation=f"bucket/{name}.manifest.xml")["ImageId"]
    img = ec2.describe_images(ImageIds=[image])["Images"][0]
    assert img["RootDeviceType"] == "instance-store"
    inst = launch(ec2, image=image, wait=False)
    iid = inst["InstanceId"]
    fast_waiter(ec2, "instance_running")(InstanceIds=[iid])
    assert describe(ec2, iid)["RootDeviceType"] == "instance-store" and describe(ec2, iid)["BlockDeviceMappings"] == []
    message = expect_error("UnsupportedOperation", ec2.stop_instances, InstanceIds=[iid])
    assert message == f"The instance '{iid}' does not have an 'ebs' root device type and cannot be stopped."
    # an EBS-backed one in the same request: still refused as a whole (positive control: alone it stops)
    other = launch(ec2)["InstanceId"]
    expect_error("UnsupportedOperation", ec2.stop_instances, InstanceIds=[other, iid])
    ec2.stop_instances(InstanceIds=[other])
    fast_waiter(ec2, "instance_stopped")(InstanceIds=[other])
    terminate(ec2, iid)
    terminate(ec2, other)


# -------------------------------------------------------------------- BlockDeviceMappings

def test_root_size_override_and_its_errors(ec2):
    image = debian_image(ec2)
    inst = launch(ec2, image=image, wait=False, BlockDeviceMappings=[
        {"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 5, "VolumeType": "gp3"}}])
    root = volume(ec2, mappings(ec2, inst["InstanceId"])["/dev/xvda"]["VolumeId"])
    assert (root["Size"], root["VolumeType"], root["Iops"], root["Throughput"]) == (5, "gp3", 3000, 125)
    snap = ec2.describe_images(ImageIds=[image])["Images"][0]["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
    message = expect_error("InvalidBlockDeviceMapping", ec2.run_instances, ImageId=image, MinCount=1, MaxCount=1,
                           BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 1}}])
    assert message == f"Volume of size 1GB is smaller than snapshot '{snap}', expect size >= 2GB"
    expect_error("InvalidBlockDeviceMapping", ec2.run_instances, ImageId=image, MinCount=1, MaxCount=1,
                 BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "NoDevice": ""}])
    expect_error("InvalidBlockDeviceMapping", ec2.run_instances, ImageId=image, MinCount=1, MaxCount=1,
                 BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": new_snapshot(ec2)}}])
    terminate(ec2, inst["InstanceId"])


def new_snapshot(ec2, size: int = 1) -> str:
    vid = new_volume(ec2, Size=size)
    sid = ec2.create_snapshot(VolumeId=vid)["SnapshotId"]
    eventually(lambda: ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]["State"] == "completed", "done")
    return sid


def test_extra_volumes_blank_and_from_snapshots_with_volume_tags(server, ec2):
    sid = new_snapshot(ec2, size=3)
    inst = launch(ec2, BlockDeviceMappings=[
        {"DeviceName": "/dev/sdf", "Ebs": {"VolumeSize": 10, "VolumeType": "io1", "Iops": 500}},
        {"DeviceName": "/dev/sdg", "Ebs": {"SnapshotId": sid}},
        {"DeviceName": "/dev/sdh", "Ebs": {"SnapshotId": sid, "VolumeSize": 4, "Encrypted": True}}],
        TagSpecifications=[{"ResourceType": "volume", "Tags": [{"Key": "app", "Value": "db"}]},
                           {"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "x"}]}])
    iid = inst["InstanceId"]
    m = mappings(ec2, iid)
    f, g, h = (volume(ec2, m[d]["VolumeId"]) for d in ("/dev/sdf", "/dev/sdg", "/dev/sdh"))
    assert (f["Size"], f["VolumeType"], f["Iops"], f["SnapshotId"]) == (10, "io1", 500, "")
    assert (g["Size"], g["SnapshotId"], g["Encrypted"]) == (3, sid, False)
    assert (h["Size"], h["SnapshotId"], h["Encrypted"]) == (4, sid, True) and h["KmsKeyId"]
    for v in (f, g, h, volume(ec2, m["/dev/xvda"]["VolumeId"])):
        assert v["Tags"] == [{"Key": "app", "Value": "db"}] and v["State"] == "in-use"
    disks = host(server)["disks"]
    assert disks[g["VolumeId"]]["source"] == f"snapshot:{sid}" and disks[f["VolumeId"]]["source"] is None
    assert disks[h["VolumeId"]]["encrypted"] is True
    assert {disks[v["VolumeId"]]["letter"] for v in (f, g, h)} == {"f", "g", "h"}
    terminate(ec2, iid)


@pytest.mark.parametrize("mapping, code", [
    ({"DeviceName": "/dev/sdf", "Ebs": {"VolumeSize": 10, "VolumeType": "io1"}}, "InvalidParameterCombination"),
    ({"DeviceName": "/dev/sdf", "Ebs": {"VolumeSize": 10, "VolumeType": "gp2", "Iops": 300}},
     "InvalidParameterCombination"),
    ({"DeviceName": "/dev/sdf", "Ebs": {"VolumeSize": 70000}}, "InvalidParameterValue"),
    ({"DeviceName": "/dev/sdf", "Ebs": {"VolumeSize": 10, "VolumeType": "gp3", "Iops": 90000}},
     "InvalidParameterValue"),
    ({"DeviceName": "/dev/sdf", "Ebs": {"VolumeSize": 10, "VolumeType": "fast"}}, "InvalidParameterValue"),
    ({"DeviceName": "/dev/sdf", "Ebs": {"DeleteOnTermination": True}}, "InvalidBlockDeviceMapping"),
    ({"DeviceName": "/dev/sdf", "Ebs": {"SnapshotId": "snap-0123456789abcdef0"}}, "InvalidSnapshot.NotFound"),
    ({"DeviceName": "/dev/sdf", "Ebs": {"VolumeSize": 1, "KmsKeyId": "alias/aws/ebs"}}, "InvalidParameterDependency"),
    ({"DeviceName": "/dev/sdf", "VirtualName": "scratch"}, "InvalidBlockDeviceMapping"),
    ({"DeviceName": "bogus", "Ebs": {"VolumeSize": 1}}, "InvalidParameterValue"),
])
def test_mapping_errors(ec2, mapping, code):
    before = {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]}
    expect_error(code, ec2.run_instances, ImageId=tiny_image(ec2), MinCount=1, MaxCount=1,
                 BlockDeviceMappings=[mapping])
    assert {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]} <= before  # nothing made


def test_duplicate_devices_are_refused(ec2):
    message = expect_error("InvalidBlockDeviceMapping", ec2.run_instances, ImageId=tiny_image(ec2),
                           MinCount=1, MaxCount=1, BlockDeviceMappings=[
                               {"DeviceName": "/dev/sdf", "Ebs": {"VolumeSize": 1}},
                               {"DeviceName": "sdf", "Ebs": {"VolumeSize": 2}}])
    assert "sdf" in message and "more than one" in message


def test_no_device_suppresses_an_image_mapping(ec2):
    """An image with a data volume besides its root: NoDevice at launch leaves it out."""
    [root] = ec2.describe_images(ImageIds=[tiny_image(ec2)])["Images"][0]["BlockDeviceMappings"]
    root_snap = root["Ebs"]["SnapshotId"]
    image = ec2.register_image(Name=unique("two-disks"), RootDeviceName="/dev/xvda", Architecture="x86_64",
                               VirtualizationType="hvm", BlockDeviceMappings=[
                                   {"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": root_snap}},
                                   {"DeviceName": "/dev/sdb", "Ebs": {"VolumeSize": 1}}])["ImageId"]
    with_both = launch(ec2, image=image)["InstanceId"]
    assert set(mappings(ec2, with_both)) == {"/dev/xvda", "/dev/sdb"}  # positive control
    without = launch(ec2, image=image, BlockDeviceMappings=[{"DeviceName": "/dev/sdb", "NoDevice": ""}])["InstanceId"]
    assert set(mappings(ec2, without)) == {"/dev/xvda"}
    for iid in (with_both, without):
        terminate(ec2, iid)


def test_instance_store_disks_only_where_the_type_has_them(server, ec2):
    store = [{"DeviceName": "/dev/sdb", "VirtualName": "ephemeral0"},
             {"DeviceName": "/dev/sdc", "VirtualName": "ephemeral1"}]
    m3 = launch(ec2, InstanceType="m3.medium", BlockDeviceMappings=store)["InstanceId"]  # one 4 GB disk
    t2 = launch(ec2, InstanceType="t2.micro", BlockDeviceMappings=store)["InstanceId"]    # none
    assert host(server)["guests"][m3]["instance_store"] == {"ephemeral0": {"size_gib": 4, "letter": "b"}}
    assert host(server)["guests"][t2]["instance_store"] == {}
    # not volumes: DescribeInstances lists only EBS
    assert set(mappings(ec2, m3)) == {"/dev/xvda"}
    from metadata.tree import _block_devices
    from types import SimpleNamespace
    row = SimpleNamespace(root_device_name="/dev/xvda", block_device_mappings=[],
                          attributes={"InstanceStore": [{"DeviceName": "/dev/sdb", "VirtualName": "ephemeral0"}]})
    assert _block_devices(row, ["/dev/sdf"]) == {"ami": "/dev/xvda", "root": "/dev/xvda", "ephemeral0": "sdb",
                                                 "ebs1": "sdf"}
    terminate(ec2, m3)
    assert m3 not in host(server)["guests"]
    terminate(ec2, t2)


# ------------------------------------------------------------------------ images from disks

def image_state(ec2, image_id: str, region_client=None) -> str:
    return (region_client or ec2).describe_images(ImageIds=[image_id])["Images"][0]["State"]


def test_create_image_snapshots_the_volumes_and_launches(server, ec2):
    inst = launch(ec2, BlockDeviceMappings=[{"DeviceName": "/dev/sdf", "Ebs": {"VolumeSize": 2,
                                                                               "DeleteOnTermination": False}}])
    iid = inst["InstanceId"]
    m = mappings(ec2, iid)
    boots = host(server)["guests"][iid]["boots"]
    image = ec2.create_image(InstanceId=iid, Name=unique("made"), Description="mine", TagSpecifications=[
        {"ResourceType": "image", "Tags": [{"Key": "k", "Value": "i"}]},
        {"ResourceType": "snapshot", "Tags": [{"Key": "k", "Value": "s"}]}])["ImageId"]
    eventually(lambda: image_state(ec2, image) == "available", "image available")
    img = ec2.describe_images(ImageIds=[image])["Images"][0]
    assert img["SourceInstanceId"] == iid and img["RootDeviceType"] == "ebs" and img["RootDeviceName"] == "/dev/xvda"
    assert img["Tags"] == [{"Key": "k", "Value": "i"}] and img["KernelId"] == inst["KernelId"]
    by_device = {x["DeviceName"]: x["Ebs"] for x in img["BlockDeviceMappings"]}
    assert set(by_device) == {"/dev/xvda", "/dev/sdf"}
    assert by_device["/dev/sdf"]["DeleteOnTermination"] is False and by_device["/dev/sdf"]["VolumeSize"] == 2
    for device, ebs in by_device.items():
        snap = ec2.describe_snapshots(SnapshotIds=[ebs["SnapshotId"]])["Snapshots"][0]
        assert snap["VolumeId"] == m[device]["VolumeId"] and snap["State"] == "completed"
        assert snap["Tags"] == [{"Key": "k", "Value": "s"}] and image in snap["Description"]
    # not NoReboot: shut down (not a mere reboot), then booted again after the snapshots; the
    # instance stays 'running' throughout, as during a reboot
    eventually(lambda: host(server)["guests"][iid]["boots"] == boots + 1, "started again")
    assert host(server)["guests"][iid]["console"][-2:] == ["ec2emu-none: power off", f"ec2emu-none: boot {boots + 1}"]
    assert describe(ec2, iid)["State"]["Name"] == "running" and host(server)["guests"][iid]["state"] == "running"
    # NoReboot: no reboot
    second = ec2.create_image(InstanceId=iid, Name=unique("made"), NoReboot=True)["ImageId"]
    eventually(lambda: image_state(ec2, second) == "available", "second image")
    assert host(server)["guests"][iid]["boots"] == boots + 1
    # launching it: the root and data volumes come from its snapshots
    child = launch(ec2, image=image)["InstanceId"]
    cm = mappings(ec2, child)
    assert volume(ec2, cm["/dev/xvda"]["VolumeId"])["SnapshotId"] == by_device["/dev/xvda"]["SnapshotId"]
    assert volume(ec2, cm["/dev/sdf"]["VolumeId"])["SnapshotId"] == by_device["/dev/sdf"]["SnapshotId"]
    root_source = host(server)["disks"][cm["/dev/xvda"]["VolumeId"]]["source"]
    assert root_source == f"snapshot:{by_device['/dev/xvda']['SnapshotId']}"
    # its snapshots cannot go while it is registered; deregistering leaves them
    expect_error("InvalidSnapshot.InUse", ec2.delete_snapshot, SnapshotId=by_device["/dev/xvda"]["SnapshotId"])
    ec2.deregister_image(ImageId=image)
    assert ec2.describe_snapshots(SnapshotIds=[by_device["/dev/xvda"]["SnapshotId"]])["Snapshots"]
    ec2.delete_snapshot(SnapshotId=by_device["/dev/sdf"]["SnapshotId"])  # now allowed
    # errors
    expect_error("InvalidAMIName.Duplicate", ec2.create_image, InstanceId=iid,
                 Name=ec2.describe_images(ImageIds=[second])["Images"][0]["Name"])
    expect_error("InvalidInstanceID.NotFound", ec2.create_image, InstanceId="i-0123456789abcdef0", Name=unique("x"))
    for i in (iid, child):
        terminate(ec2, i)


def test_register_image_from_a_snapshot_boots_with_the_default_kernel(server, ec2):
    sid = new_snapshot(ec2, size=2)
    name = unique("from-snap")
    image = ec2.register_image(Name=name, RootDeviceName="/dev/xvda", Architecture="x86_64",
                               VirtualizationType="hvm",
                               BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": sid}}])["ImageId"]
    img = ec2.describe_images(ImageIds=[image])["Images"][0]
    assert img["State"] == "available" and img["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] == 2
    assert "KernelId" not in img
    iid = launch(ec2, image=image)["InstanceId"]
    root = mappings(ec2, iid)["/dev/xvda"]["VolumeId"]
    assert volume(ec2, root)["SnapshotId"] == sid and volume(ec2, root)["Size"] == 2
    terminate(ec2, iid)
    expect_error("InvalidBlockDeviceMapping", ec2.register_image, Name=unique("small"), RootDeviceName="/dev/xvda",
                 BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": sid, "VolumeSize": 1}}])
    expect_error("InvalidSnapshot.NotFound", ec2.register_image, Name=unique("none"), RootDeviceName="/dev/xvda",
                 BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": "snap-0123456789abcdef0"}}])


def test_copy_image_across_regions(server, ec2):
    west = server.client(region="us-west-2")
    iid = launch(ec2)["InstanceId"]
    image = ec2.create_image(InstanceId=iid, Name=unique("to-copy"), NoReboot=True)["ImageId"]
    eventually(lambda: image_state(ec2, image) == "available", "source available")
    copy = west.copy_image(SourceImageId=image, SourceRegion="us-east-1", Name=unique("copied"))["ImageId"]
    eventually(lambda: image_state(ec2, copy, west) == "available", "copy available")
    img = west.describe_images(ImageIds=[copy])["Images"][0]
    assert img["SourceImageId"] == image and img["SourceImageRegion"] == "us-east-1"
    snap = img["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
    original = ec2.describe_images(ImageIds=[image])["Images"][0]["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
    assert snap != original and west.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0]["State"] == "completed"
    expect_error("InvalidAMIID.NotFound", ec2.describe_images, ImageIds=[copy])  # not in the source region
    # the copy's kernel is the destination region's public kernel
    kernel = img["KernelId"]
    assert west.describe_images(ImageIds=[kernel])["Images"][0]["ImageType"] == "kernel"
    child = launch(west, image=copy, Placement={"AvailabilityZone": "us-west-2a"})["InstanceId"]
    assert volume(west, mappings(west, child)["/dev/xvda"]["VolumeId"])["SnapshotId"] == snap
    terminate(west, child)
    # a public image copies too (its file-backed snapshot's copy shares the file)
    pub = west.copy_image(SourceImageId=tiny_image(ec2), SourceRegion="us-east-1", Name=unique("pub"))["ImageId"]
    eventually(lambda: image_state(ec2, pub, west) == "available", "public copy available")
    expect_error("InvalidAMIID.NotFound", west.copy_image, SourceImageId="ami-0123456789abcdef0",
                 SourceRegion="us-east-1", Name=unique("x"))
    terminate(ec2, iid)


def test_the_root_volume_detaches_only_from_a_stopped_instance(ec2):
    iid = launch(ec2)["InstanceId"]
    root = mappings(ec2, iid)["/dev/xvda"]
    message = expect_error("IncorrectState", ec2.detach_volume, VolumeId=root["VolumeId"])
    assert message == f"Unable to detach root volume '{root['VolumeId']}' from instance '{iid}'"
    ec2.stop_instances(InstanceIds=[iid])
    fast_waiter(ec2, "instance_stopped")(InstanceIds=[iid])
    ec2.detach_volume(VolumeId=root["VolumeId"])  # stopped: allowed
    eventually(lambda: volume(ec2, root["VolumeId"])["State"] == "available", "detached")
    # without a root volume it cannot start (AWS's words, VM Import troubleshooting guide)
    message = expect_error("InvalidParameterValue", ec2.start_instances, InstanceIds=[iid])
    assert message == (f"Invalid value '{iid}' for instanceId. Instance does not have a volume attached at "
                       "root (/dev/xvda).")
    # another device name is not the root either; the root device name is free again
    spare = new_volume(ec2)
    ec2.attach_volume(VolumeId=spare, InstanceId=iid, Device="/dev/sdf")
    expect_error("InvalidParameterValue", ec2.start_instances, InstanceIds=[iid])
    ec2.attach_volume(VolumeId=root["VolumeId"], InstanceId=iid, Device="/dev/xvda")
    eventually(lambda: volume(ec2, root["VolumeId"])["State"] == "in-use", "attached again")
    ec2.start_instances(InstanceIds=[iid])
    fast_waiter(ec2, "instance_running")(InstanceIds=[iid])
    terminate(ec2, iid)
    eventually(lambda: volume(ec2, spare)["State"] == "available", "spare released")
    ec2.delete_volume(VolumeId=spare)
