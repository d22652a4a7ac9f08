"""EBS-backed instances on real guests (libvirt driver, tiny image): the root is a volume that
keeps its data across stop/start, an image made of the instance boots with the files it wrote,
terminate honours DeleteOnTermination. Three boots in all: launch, start again, the new image.
"""
from __future__ import annotations


import pytest

from .helpers import eventually, tiny_image, unique
from .test_guests import _key, _ssh, _terminate_everything, fast_waiter
from .test_guests import cloud  # noqa: F401 (the module-scoped libvirt-backed server, here too)

pytestmark = pytest.mark.slow


def _mappings(ec2, iid: str) -> dict[str, str]:
    inst = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    return {m["DeviceName"]: m["Ebs"]["VolumeId"] for m in inst["BlockDeviceMappings"]}


def _volume_ids(ec2) -> set[str]:
    return {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]}


def test_root_volume_survives_stop_start_and_becomes_an_image(cloud):
    ec2 = cloud.client()
    name, pem = _key(ec2, cloud)
    iid = ec2.run_instances(
        ImageId=tiny_image(ec2), MinCount=1, MaxCount=1, KeyName=name, InstanceType="m3.medium",
        Placement={"AvailabilityZone": "us-east-1a"},
        BlockDeviceMappings=[{"DeviceName": "/dev/sdf", "Ebs": {"VolumeSize": 1, "DeleteOnTermination": False}},
                             {"DeviceName": "/dev/sdb", "VirtualName": "ephemeral0"}])["Instances"][0]["InstanceId"]
    fast_waiter(ec2, "instance_running")(InstanceIds=[iid])
    volumes = _mappings(ec2, iid)
    root, data = volumes["/dev/xvda"], volumes["/dev/sdf"]
    # the guest's root file system is on the root volume: /dev/vda carries its id as serial
    seen = _ssh(cloud, iid, pem, "cat /sys/block/vda/serial; echo; mount | grep ' / '; "
                                 "ls -L /dev/sdf /dev/sdb 2>&1; cat /sys/block/*/size; true", timeout=240)
    assert root.replace("-", "") in seen and "/dev/vda" in seen
    assert "/dev/sdf" in seen and "/dev/sdb" in seen  # the data volume and the instance-store disk
    assert str(4 * 2**30 // 512) in seen.split()  # ephemeral0 of an m3.medium: 4 GB
    marker = unique("marker")
    _ssh(cloud, iid, pem, f"echo {marker} | sudo tee /root-marker >/dev/null && sync")

    ec2.stop_instances(InstanceIds=[iid])
    fast_waiter(ec2, "instance_stopped")(InstanceIds=[iid])
    ec2.start_instances(InstanceIds=[iid])
    fast_waiter(ec2, "instance_running")(InstanceIds=[iid])
    assert _ssh(cloud, iid, pem, "cat /root-marker", timeout=240).strip() == marker
    assert _mappings(ec2, iid)["/dev/xvda"] == root

    # Without NoReboot, as AWS does: a clean shutdown, the snapshots taken while it is down, a
    # new boot; the instance reads 'running' throughout.
    boots = ec2.get_console_output(InstanceId=iid)["Output"].count("ec2emu: rcS start")
    image = ec2.create_image(InstanceId=iid, Name=unique("from-guest"))["ImageId"]
    assert ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["State"]["Name"] == "running"
    eventually(lambda: ec2.describe_images(ImageIds=[image])["Images"][0]["State"] == "available", "image", within=180, every=0.5)
    assert _ssh(cloud, iid, pem, "cat /root-marker", timeout=240).strip() == marker  # up again
    out = ec2.get_console_output(InstanceId=iid)["Output"]
    assert out.count("ec2emu: rcS start") == boots + 1, out[-2000:]
    assert "ec2emu: shutting down" in out[out.rfind("ec2emu: rcS start", 0, out.rfind("ec2emu: rcS start")):]
    assert "ignored ACPI" not in cloud.log.read_text()  # a clean shutdown, not a forced one
    child = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, KeyName=name, InstanceType="t3.micro",
                              Placement={"AvailabilityZone": "us-east-1a"})["Instances"][0]["InstanceId"]
    fast_waiter(ec2, "instance_running")(InstanceIds=[child])
    child_volumes = _mappings(ec2, child)
    assert set(child_volumes) == {"/dev/xvda", "/dev/sdf"} and child_volumes["/dev/xvda"] != root
    assert _ssh(cloud, child, pem, "cat /root-marker", timeout=240).strip() == marker

    ec2.terminate_instances(InstanceIds=[iid, child])
    fast_waiter(ec2, "instance_terminated")(InstanceIds=[iid, child])
    deleted = {root, child_volumes["/dev/xvda"]}  # DeleteOnTermination (the default for roots)
    eventually(lambda: not deleted & _volume_ids(ec2), "roots deleted", within=180, every=0.5)
    kept = {data, child_volumes["/dev/sdf"]}  # DeleteOnTermination false (the image kept it false)
    eventually(lambda: all(ec2.describe_volumes(VolumeIds=[v])["Volumes"][0]["State"] == "available"
                            for v in kept), "data volumes available", within=180, every=0.5)
    for vid in deleted:
        assert not (cloud.state_dir / "volumes" / f"{vid}.qcow2").exists()
    for vid in kept:
        assert (cloud.state_dir / "volumes" / f"{vid}.qcow2").exists()
        ec2.delete_volume(VolumeId=vid)
    _terminate_everything(cloud)
