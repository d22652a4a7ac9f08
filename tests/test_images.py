"""Images end to end with boto3 against a real server: the public images, RegisterImage,
DescribeImages (owners, executable users, filters, paging), attributes, sharing, DeregisterImage."""
from __future__ import annotations

import re


from emulator.images import (DEBIAN_NAME, EMULATOR_OWNER_ID, KERNEL_NAME, RAMDISK_NAME, TINY_NAME,
                             public_image_id)

from .conftest import OTHER_ACCOUNT
from .helpers import error_of, unique
from .server import ACCOUNT

PUBLIC_NAMES = {KERNEL_NAME, RAMDISK_NAME, TINY_NAME, DEBIAN_NAME}


def register(ec2, name: str | None = None, **extra) -> str:
    params = dict(Name=name or unique("img"), Architecture="x86_64", VirtualizationType="hvm",
                  RootDeviceName="/dev/xvda",
                  BlockDeviceMappings=[{"DeviceName": "/dev/xvda",
                                        "Ebs": {"VolumeSize": 1, "VolumeType": "gp3"}}])
    params.update(extra)
    return ec2.register_image(**params)["ImageId"]


def by_name(images: list[dict]) -> dict[str, dict]:
    return {i["Name"]: i for i in images}


# ------------------------------------------------------------------------------ public images

def test_public_images_are_listed_with_aws_fields(ec2):
    images = by_name(ec2.describe_images(Owners=["ec2emu"])["Images"])
    assert PUBLIC_NAMES <= images.keys()
    kernel, ramdisk, tiny, debian = (images[n] for n in (KERNEL_NAME, RAMDISK_NAME, TINY_NAME, DEBIAN_NAME))
    assert kernel["ImageId"].startswith("aki-") and kernel["ImageType"] == "kernel"
    assert ramdisk["ImageId"].startswith("ari-") and ramdisk["ImageType"] == "ramdisk"
    for img in (tiny, debian):
        assert re.fullmatch(r"ami-[0-9a-f]{17}", img["ImageId"])
        assert img["ImageType"] == "machine"
        assert img["KernelId"] == kernel["ImageId"] and img["RamdiskId"] == ramdisk["ImageId"]
        assert img["OwnerId"] == EMULATOR_OWNER_ID != ACCOUNT
        assert img["ImageOwnerAlias"] == "ec2emu"
        assert img["Public"] is True and img["State"] == "available"
        assert img["ImageLocation"] == f"ec2emu/{img['Name']}"
        assert img["Architecture"] == "x86_64" and img["VirtualizationType"] == "hvm"
        assert img["RootDeviceType"] == "ebs" and img["RootDeviceName"] == "/dev/xvda"
        assert img["Hypervisor"] == "xen" and img["EnaSupport"] is True
        assert img["SriovNetSupport"] == "simple"
        assert img["PlatformDetails"] == "Linux/UNIX" and img["UsageOperation"] == "RunInstances"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", img["CreationDate"])
        [root] = img["BlockDeviceMappings"]
        assert root["DeviceName"] == "/dev/xvda"
        assert root["Ebs"]["VolumeType"] == "gp2" and root["Ebs"]["DeleteOnTermination"] is True
        assert re.fullmatch(r"snap-[0-9a-f]{17}", root["Ebs"]["SnapshotId"]) and root["Ebs"]["Encrypted"] is False
    assert tiny["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] == 1
    assert debian["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] == 2
    assert "ec2-user" in tiny["Description"]
    assert "admin" in debian["Description"] and "cloud-init" in debian["Description"]


def test_public_images_differ_per_region_and_are_derived_from_region_and_name(server, ec2):
    east = by_name(ec2.describe_images(Owners=["ec2emu"])["Images"])
    west = by_name(server.client(region="eu-west-1").describe_images(Owners=["ec2emu"])["Images"])
    for name in PUBLIC_NAMES:
        assert east[name]["ImageId"] != west[name]["ImageId"]
        assert east[name]["ImageId"] == public_image_id("us-east-1", name)
        assert west[name]["ImageId"] == public_image_id("eu-west-1", name)
    assert west[TINY_NAME]["KernelId"] == west[KERNEL_NAME]["ImageId"]
    # An image of one region is unknown in another.
    code, _ = error_of(ec2.describe_images, ImageIds=[west[TINY_NAME]["ImageId"]])
    assert code == "InvalidAMIID.NotFound"


def test_public_images_seen_by_every_account_and_in_default_listing(ec2, other_account):
    tiny = public_image_id("us-east-1", TINY_NAME)
    for client in (ec2, other_account):
        [img] = client.describe_images(ImageIds=[tiny])["Images"]
        assert img["OwnerId"] == EMULATOR_OWNER_ID
        assert tiny in {i["ImageId"] for i in client.describe_images()["Images"]}
        assert tiny in {i["ImageId"] for i in client.describe_images(Owners=[EMULATOR_OWNER_ID])["Images"]}
        assert tiny in {i["ImageId"] for i in client.describe_images(ExecutableUsers=["all"])["Images"]}


# ------------------------------------------------------------------------------ owners, filters

def test_owners_self_lists_own_images_only(ec2):
    image_id = register(ec2)
    mine = ec2.describe_images(Owners=["self"])["Images"]
    assert image_id in {i["ImageId"] for i in mine}
    assert all(i["OwnerId"] == ACCOUNT for i in mine)
    assert image_id in {i["ImageId"] for i in ec2.describe_images(Owners=[ACCOUNT])["Images"]}
    ec2_alias = {i["ImageId"] for i in ec2.describe_images(Owners=["ec2emu"])["Images"]}
    assert image_id not in ec2_alias
    assert image_id not in {i["ImageId"] for i in ec2.describe_images(Owners=["amazon"])["Images"]}
    code, _ = error_of(ec2.describe_images, Owners=["not-an-owner"])
    assert code == "InvalidUserID.Malformed"


def test_filters(ec2):
    image_id = register(ec2, TagSpecifications=[{"ResourceType": "image",
                                                 "Tags": [{"Key": "team", "Value": "imgs"}]}])
    names = {i["Name"] for i in ec2.describe_images(
        Filters=[{"Name": "name", "Values": ["ec2emu-tiny-*"]}])["Images"]}
    assert names == {TINY_NAME}
    kernels = ec2.describe_images(Filters=[{"Name": "image-type", "Values": ["kernel"]}])["Images"]
    assert {i["Name"] for i in kernels} == {KERNEL_NAME}
    private = ec2.describe_images(Filters=[{"Name": "is-public", "Values": ["false"]}])["Images"]
    assert image_id in {i["ImageId"] for i in private}
    assert not {i["Name"] for i in private} & PUBLIC_NAMES
    public = ec2.describe_images(Filters=[{"Name": "is-public", "Values": ["true"]}])["Images"]
    assert PUBLIC_NAMES <= {i["Name"] for i in public}
    by_kernel = ec2.describe_images(Owners=["ec2emu"], Filters=[  # (images made by other tests share both)
        {"Name": "kernel-id", "Values": [public_image_id("us-east-1", KERNEL_NAME)]},
        {"Name": "block-device-mapping.volume-size", "Values": ["2"]}])["Images"]
    assert [i["Name"] for i in by_kernel] == [DEBIAN_NAME]
    [tagged] = ec2.describe_images(Filters=[{"Name": "tag:team", "Values": ["imgs"]},
                                            {"Name": "image-id", "Values": [image_id]}])["Images"]
    assert tagged["Tags"] == [{"Key": "team", "Value": "imgs"}]
    store = ec2.describe_images(Filters=[{"Name": "owner-alias", "Values": ["ec2emu"]},
                                         {"Name": "root-device-type", "Values": ["instance-store"]}])["Images"]
    assert {i["Name"] for i in store} == {KERNEL_NAME, RAMDISK_NAME}  # exactly the kernel and ramdisk
    code, _ = error_of(ec2.describe_images, Filters=[{"Name": "no-such-filter", "Values": ["x"]}])
    assert code == "InvalidParameterValue"


def test_paging(ec2):
    prefix = unique("page")
    ids = sorted(register(ec2, f"{prefix}-{n}") for n in range(7))
    flt = [{"Name": "name", "Values": [prefix + "-*"]}]
    first = ec2.describe_images(Filters=flt, MaxResults=5)
    assert len(first["Images"]) == 5 and first["NextToken"]
    second = ec2.describe_images(Filters=flt, MaxResults=5, NextToken=first["NextToken"])
    assert len(second["Images"]) == 2 and not second.get("NextToken")
    assert sorted(i["ImageId"] for i in first["Images"] + second["Images"]) == ids
    paged = [i["ImageId"] for page in ec2.get_paginator("describe_images").paginate(
        Filters=flt, PaginationConfig={"PageSize": 5}) for i in page["Images"]]
    assert sorted(paged) == ids


# ------------------------------------------------------------------------------ register / deregister

def test_register_describe_deregister(ec2):
    name = unique("reg")
    kernel = public_image_id("us-east-1", KERNEL_NAME)
    ramdisk = public_image_id("us-east-1", RAMDISK_NAME)
    image_id = register(ec2, name, Description="my image", KernelId=kernel, RamdiskId=ramdisk,
                        EnaSupport=True)
    assert re.fullmatch(r"ami-[0-9a-f]{17}", image_id)
    [img] = ec2.describe_images(ImageIds=[image_id])["Images"]
    assert img["Name"] == name and img["Description"] == "my image"
    assert img["OwnerId"] == ACCOUNT and img["Public"] is False and "ImageOwnerAlias" not in img
    assert img["ImageLocation"] == f"{ACCOUNT}/{name}"
    assert img["State"] == "available" and img["RootDeviceType"] == "ebs"
    assert img["KernelId"] == kernel and img["RamdiskId"] == ramdisk and img["EnaSupport"] is True
    assert img["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] == 1
    assert ec2.describe_image_attribute(ImageId=image_id, Attribute="description")["Description"] == \
        {"Value": "my image"}
    assert ec2.describe_image_attribute(ImageId=image_id, Attribute="kernel")["KernelId"] == {"Value": kernel}
    bdm = ec2.describe_image_attribute(ImageId=image_id, Attribute="blockDeviceMapping")
    assert bdm["BlockDeviceMappings"][0]["DeviceName"] == "/dev/xvda"

    ec2.modify_image_attribute(ImageId=image_id, Description={"Value": "changed"})
    assert ec2.describe_images(ImageIds=[image_id])["Images"][0]["Description"] == "changed"

    assert ec2.deregister_image(ImageId=image_id)["Return"] is True
    code, message = error_of(ec2.describe_images, ImageIds=[image_id])
    assert code == "InvalidAMIID.NotFound" and message == f"The image id '[{image_id}]' does not exist"
    assert image_id not in {i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]}
    code, _ = error_of(ec2.deregister_image, ImageId=image_id)
    assert code == "InvalidAMIID.NotFound"
    # The name is free again.
    register(ec2, name)


def test_register_errors(ec2):
    name = unique("dup")
    first = register(ec2, name)
    code, message = error_of(register, ec2=ec2, name=name)
    assert code == "InvalidAMIName.Duplicate"
    assert message == f"AMI name {name} is already in use by AMI {first}"
    for bad in ("bad*name", "semi;colon", "tab\there"):  # (botocore itself refuses lengths <3, >128)
        code, _ = error_of(register, ec2=ec2, name=bad)
        assert code == "InvalidAMIName.Malformed", bad
    register(ec2, "ok (name) [v1] it's @ok_/.-")  # every allowed character
    code, _ = error_of(ec2.register_image, Name=unique("img"))
    assert code == "MissingParameter"
    code, _ = error_of(register, ec2=ec2, KernelId="ami-12345678")
    assert code == "InvalidKernelId.Malformed"
    code, message = error_of(register, ec2=ec2, KernelId="aki-0123456789abcdef0")
    assert code == "InvalidAMIID.NotFound" and "aki-0123456789abcdef0" in message
    code, _ = error_of(register, ec2=ec2, RamdiskId="aki-12345678")
    assert code == "InvalidRamDiskId.Malformed"
    code, _ = error_of(register, ec2=ec2, TagSpecifications=[{"ResourceType": "instance",
                                                              "Tags": [{"Key": "a", "Value": "b"}]}])
    assert code == "InvalidParameterValue"


def test_instance_store_register_uses_location(ec2):
    image_id = ec2.register_image(Name=unique("s3"), ImageLocation="bucket/image.manifest.xml")["ImageId"]
    [img] = ec2.describe_images(ImageIds=[image_id])["Images"]
    assert img["RootDeviceType"] == "instance-store"
    assert img["ImageLocation"] == "bucket/image.manifest.xml"
    assert img["Architecture"] == "i386" and img["VirtualizationType"] == "paravirtual"  # AWS's defaults


# ------------------------------------------------------------------------------ ids

def test_malformed_and_unknown_ids(ec2):
    code, message = error_of(ec2.describe_images, ImageIds=["ami-nope"])
    assert code == "InvalidAMIID.Malformed" and message == 'Invalid id: "ami-nope" (expecting "ami-...")'
    code, _ = error_of(ec2.describe_images, ImageIds=["vol-0123456789abcdef0"])
    assert code == "InvalidAMIID.Malformed"
    code, message = error_of(ec2.describe_images, ImageIds=["ami-0123456789abcdef0"])
    assert code == "InvalidAMIID.NotFound"
    assert message == "The image id '[ami-0123456789abcdef0]' does not exist"
    code, _ = error_of(ec2.describe_image_attribute, ImageId="ami-0123456789abcdef0", Attribute="description")
    assert code == "InvalidAMIID.NotFound"
    code, _ = error_of(ec2.modify_image_attribute, ImageId="ami-0123456789abcdef0",
                       Description={"Value": "x"})
    assert code == "InvalidAMIID.NotFound"
    code, _ = error_of(ec2.deregister_image, ImageId="bogus")
    assert code == "InvalidAMIID.Malformed"


def test_public_images_cannot_be_changed_by_users(ec2):
    tiny = public_image_id("us-east-1", TINY_NAME)
    code, message = error_of(ec2.deregister_image, ImageId=tiny)
    assert code == "AuthFailure" and message == f"Not authorized for image:{tiny}"
    code, _ = error_of(ec2.modify_image_attribute, ImageId=tiny, Description={"Value": "mine now"})
    assert code == "AuthFailure"
    code, _ = error_of(ec2.describe_image_attribute, ImageId=tiny, Attribute="launchPermission")
    assert code == "AuthFailure"
    # Attributes anyone may read.
    assert "ec2-user" in ec2.describe_image_attribute(ImageId=tiny, Attribute="description")[
        "Description"]["Value"]


# ------------------------------------------------------------------------------ sharing

def test_launch_permission_sharing(ec2, other_account):
    image_id = register(ec2)
    code, _ = error_of(other_account.describe_images, ImageIds=[image_id])
    assert code == "InvalidAMIID.NotFound"
    assert image_id not in {i["ImageId"] for i in other_account.describe_images()["Images"]}
    assert ec2.describe_image_attribute(ImageId=image_id, Attribute="launchPermission")[
        "LaunchPermissions"] == []

    ec2.modify_image_attribute(ImageId=image_id, LaunchPermission={"Add": [{"UserId": OTHER_ACCOUNT}]})
    perms = ec2.describe_image_attribute(ImageId=image_id, Attribute="launchPermission")["LaunchPermissions"]
    assert perms == [{"UserId": OTHER_ACCOUNT}]
    [seen] = other_account.describe_images(ImageIds=[image_id])["Images"]
    assert seen["OwnerId"] == ACCOUNT and seen["Public"] is False
    assert image_id in {i["ImageId"] for i in other_account.describe_images(ExecutableUsers=["self"])["Images"]}
    assert image_id in {i["ImageId"] for i in other_account.describe_images(Owners=[ACCOUNT])["Images"]}
    assert image_id not in {i["ImageId"] for i in other_account.describe_images(Owners=["self"])["Images"]}
    assert image_id in {i["ImageId"] for i in ec2.describe_images(ExecutableUsers=[OTHER_ACCOUNT])["Images"]}

    # The other account may look but not change.
    code, message = error_of(other_account.modify_image_attribute, ImageId=image_id,
                             LaunchPermission={"Add": [{"Group": "all"}]})
    assert code == "AuthFailure" and message == f"Not authorized for image:{image_id}"
    code, _ = error_of(other_account.describe_image_attribute, ImageId=image_id, Attribute="launchPermission")
    assert code == "AuthFailure"
    code, _ = error_of(other_account.deregister_image, ImageId=image_id)
    assert code == "AuthFailure"

    # The older request form: Attribute + OperationType + UserId.N.
    ec2.modify_image_attribute(ImageId=image_id, Attribute="launchPermission", OperationType="remove",
                               UserIds=[OTHER_ACCOUNT])
    code, _ = error_of(other_account.describe_images, ImageIds=[image_id])
    assert code == "InvalidAMIID.NotFound"

    code, _ = error_of(ec2.modify_image_attribute, ImageId=image_id,
                       LaunchPermission={"Add": [{"UserId": "not-an-account"}]})
    assert code == "InvalidAMIAttributeItemValue"


def test_group_all_makes_public_and_reset_makes_private(ec2, other_account):
    image_id = register(ec2)
    ec2.modify_image_attribute(ImageId=image_id, LaunchPermission={"Add": [{"Group": "all"},
                                                                           {"UserId": OTHER_ACCOUNT}]})
    [img] = ec2.describe_images(ImageIds=[image_id])["Images"]
    assert img["Public"] is True
    perms = ec2.describe_image_attribute(ImageId=image_id, Attribute="launchPermission")["LaunchPermissions"]
    assert {"Group": "all"} in perms and {"UserId": OTHER_ACCOUNT} in perms
    public = other_account.describe_images(Filters=[{"Name": "is-public", "Values": ["true"]},
                                                    {"Name": "image-id", "Values": [image_id]}])["Images"]
    assert [i["ImageId"] for i in public] == [image_id]

    ec2.reset_image_attribute(ImageId=image_id, Attribute="launchPermission")
    assert ec2.describe_images(ImageIds=[image_id])["Images"][0]["Public"] is False
    assert ec2.describe_image_attribute(ImageId=image_id, Attribute="launchPermission")[
        "LaunchPermissions"] == []
    code, _ = error_of(other_account.describe_images, ImageIds=[image_id])
    assert code == "InvalidAMIID.NotFound"


def test_image_attributes(ec2):
    image_id = register(ec2, SriovNetSupport="simple", BootMode="uefi")
    attr = lambda name: ec2.describe_image_attribute(ImageId=image_id, Attribute=name)  # noqa: E731
    assert attr("sriovNetSupport")["SriovNetSupport"] == {"Value": "simple"}
    assert attr("bootMode")["BootMode"] == {"Value": "uefi"}
    assert attr("productCodes")["ProductCodes"] == []
    assert attr("ramdisk")["RamdiskId"] == {}
    assert attr("imdsSupport")["ImdsSupport"] == {}
    assert attr("deregistrationProtection")["DeregistrationProtection"] == {"Value": "disabled"}
    ec2.modify_image_attribute(ImageId=image_id, ImdsSupport={"Value": "v2.0"})
    assert attr("imdsSupport")["ImdsSupport"] == {"Value": "v2.0"}
    assert ec2.describe_images(ImageIds=[image_id])["Images"][0]["ImdsSupport"] == "v2.0"
    ec2.modify_image_attribute(ImageId=image_id, Attribute="description", Value="via value")
    assert attr("description")["Description"] == {"Value": "via value"}
    code, _ = error_of(ec2.modify_image_attribute, ImageId=image_id)
    assert code == "InvalidParameterCombination"


def test_describe_images_pages_of_two(ec2):
    """AWS's DescribeImages takes small pages (the JS SDK's paginator asked for 2 and got an error)."""
    everything = {i["ImageId"] for i in ec2.describe_images(Owners=["ec2emu"])["Images"]}
    pages = ec2.get_paginator("describe_images").paginate(Owners=["ec2emu"], PaginationConfig={"PageSize": 2})
    sizes, seen = [], []
    for page in pages:
        sizes.append(len(page["Images"]))
        seen += [i["ImageId"] for i in page["Images"]]
    assert sorted(seen) == sorted(everything) and max(sizes) == 2 and len(sizes) >= 2
