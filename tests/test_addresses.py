"""Elastic IPs end to end with boto3 on the none driver: allocation from the public pool,
describe (ids, filters, errors), association to an instance or its interface, reassociation
rules, disassociation, release, and the address's life across stop/start and termination."""
from __future__ import annotations

import pytest

from .helpers import eventually, expect_error, fast_waiter, tiny_image

MISSING_ALLOC = "eipalloc-0123456789abcdef0"


@pytest.fixture
def eips(ec2):
    """Allocates on demand; releases whatever the test left (AWS's quota is 5 per region)."""
    made: list[str] = []

    def allocate() -> dict:
        got = ec2.allocate_address(Domain="vpc")
        made.append(got["AllocationId"])
        return got
    yield allocate
    for alloc in made:
        addr = ec2.describe_addresses(Filters=[{"Name": "allocation-id", "Values": [alloc]}])["Addresses"]
        if addr and addr[0].get("AssociationId"):
            ec2.disassociate_address(AssociationId=addr[0]["AssociationId"])
        if addr:
            ec2.release_address(AllocationId=alloc)


@pytest.fixture(scope="module")
def two_running(ec2):
    """Two running instances in the default VPC (public addresses auto-assigned there)."""
    ids = [i["InstanceId"] for i in ec2.run_instances(ImageId=tiny_image(ec2), MinCount=2, MaxCount=2)["Instances"]]
    fast_waiter(ec2, "instance_running")(InstanceIds=ids)
    yield ids
    ec2.terminate_instances(InstanceIds=ids)


def instance(ec2, iid: str) -> dict:
    return ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]


def address(ec2, alloc: str) -> dict:
    return ec2.describe_addresses(AllocationIds=[alloc])["Addresses"][0]


def test_allocate_describe_release(ec2, eips):
    got = eips()
    alloc, ip = got["AllocationId"], got["PublicIp"]
    assert alloc.startswith("eipalloc-") and got["Domain"] == "vpc" and got["PublicIpv4Pool"] == "amazon"
    assert got["NetworkBorderGroup"] == "us-east-1"
    listed = address(ec2, alloc)
    assert listed["PublicIp"] == ip and "AssociationId" not in listed and "InstanceId" not in listed
    assert ec2.describe_addresses(PublicIps=[ip])["Addresses"][0]["AllocationId"] == alloc
    assert [a["AllocationId"] for a in ec2.describe_addresses(
        Filters=[{"Name": "public-ip", "Values": [ip]}])["Addresses"]] == [alloc]
    assert ec2.describe_addresses(Filters=[{"Name": "allocation-id", "Values": [MISSING_ALLOC]}])["Addresses"] == []
    assert expect_error("InvalidAllocationID.NotFound", ec2.describe_addresses, AllocationIds=[MISSING_ALLOC]) == \
        f"The allocation ID '{MISSING_ALLOC}' does not exist"
    assert expect_error("InvalidAddress.NotFound", ec2.describe_addresses, PublicIps=["192.0.2.1"]) == \
        "Address '192.0.2.1' not found."
    ec2.release_address(AllocationId=alloc)
    assert expect_error("InvalidAllocationID.NotFound", ec2.release_address, AllocationId=alloc)
    assert expect_error("InvalidAllocationID.NotFound", ec2.describe_addresses, AllocationIds=[alloc])


def test_allocate_tags_and_refusals(ec2, eips):
    got = ec2.allocate_address(Domain="vpc", TagSpecifications=[
        {"ResourceType": "elastic-ip", "Tags": [{"Key": "role", "Value": "front"}]}])
    try:
        assert address(ec2, got["AllocationId"])["Tags"] == [{"Key": "role", "Value": "front"}]
        assert [a["AllocationId"] for a in ec2.describe_addresses(
            Filters=[{"Name": "tag:role", "Values": ["front"]}])["Addresses"]] == [got["AllocationId"]]
    finally:
        ec2.release_address(AllocationId=got["AllocationId"])
    expect_error("InvalidParameterValue", ec2.allocate_address, Domain="vpc", PublicIpv4Pool="ipv4pool-ec2-0")


def test_address_limit(ec2, eips):
    held = len(ec2.describe_addresses()["Addresses"])
    for _ in range(5 - held):
        eips()
    assert expect_error("AddressLimitExceeded", ec2.allocate_address, Domain="vpc") == \
        "The maximum number of addresses has been reached."


def test_pool_shared_with_instances(ec2, eips, two_running):
    eip = eips()["PublicIp"]
    publics = {instance(ec2, i).get("PublicIpAddress") for i in two_running}
    assert None not in publics and eip not in publics


def test_associate_to_instance_replaces_its_public_ip(ec2, eips, two_running):
    a = two_running[0]
    auto = instance(ec2, a)["PublicIpAddress"]
    assert instance(ec2, a)["NetworkInterfaces"][0]["Association"]["IpOwnerId"] == "amazon"  # Amazon's pool
    got = eips()
    assoc = ec2.associate_address(AllocationId=got["AllocationId"], InstanceId=a)["AssociationId"]
    assert assoc.startswith("eipassoc-")
    row = instance(ec2, a)
    assert row["PublicIpAddress"] == got["PublicIp"] != auto
    assert row["NetworkInterfaces"][0]["Association"]["PublicIp"] == got["PublicIp"]
    assert row["NetworkInterfaces"][0]["Association"]["IpOwnerId"] == row["NetworkInterfaces"][0]["OwnerId"]  # yours
    eni = row["NetworkInterfaces"][0]["NetworkInterfaceId"]
    for name, owner, found in (("association.ip-owner-id", row["NetworkInterfaces"][0]["OwnerId"], True),
                               ("addresses.association.owner-id", row["NetworkInterfaces"][0]["OwnerId"], True),
                               ("association.ip-owner-id", "amazon", False)):
        listed = ec2.describe_network_interfaces(Filters=[{"Name": name, "Values": [owner]}])["NetworkInterfaces"]
        assert (eni in [n["NetworkInterfaceId"] for n in listed]) == found, (name, owner)
    listed = address(ec2, got["AllocationId"])
    assert listed["AssociationId"] == assoc and listed["InstanceId"] == a
    assert listed["PrivateIpAddress"] == row["PrivateIpAddress"]
    assert listed["NetworkInterfaceId"] == row["NetworkInterfaces"][0]["NetworkInterfaceId"]
    for name, value in (("instance-id", a), ("association-id", assoc),
                        ("private-ip-address", row["PrivateIpAddress"]), ("domain", "vpc")):
        assert got["AllocationId"] in [x["AllocationId"] for x in ec2.describe_addresses(
            Filters=[{"Name": name, "Values": [value]}])["Addresses"]], name
    # associating again to the same instance changes nothing
    assert ec2.associate_address(AllocationId=got["AllocationId"], InstanceId=a)["AssociationId"] == assoc
    assert expect_error("InvalidIPAddress.InUse", ec2.release_address, AllocationId=got["AllocationId"]) == \
        f"Address {got['PublicIp']} is in use."
    ec2.disassociate_address(AssociationId=assoc)
    after = instance(ec2, a)["PublicIpAddress"]
    assert after and after != got["PublicIp"]  # a new auto-assigned address (default subnet assigns them)
    assert "AssociationId" not in address(ec2, got["AllocationId"])
    assert expect_error("InvalidAssociationID.NotFound", ec2.disassociate_address, AssociationId=assoc) == \
        f"The association ID '{assoc}' does not exist"


def test_reassociation_rules(ec2, eips, two_running):
    a, b = two_running
    got = eips()
    ec2.associate_address(AllocationId=got["AllocationId"], InstanceId=a)
    first = address(ec2, got["AllocationId"])["AssociationId"]
    msg = expect_error("Resource.AlreadyAssociated", ec2.associate_address, AllocationId=got["AllocationId"],
                       InstanceId=b, AllowReassociation=False)
    assert msg == f"resource {got['AllocationId']} is already associated with associate-id {first}"
    assert instance(ec2, a)["PublicIpAddress"] == got["PublicIp"]
    second = ec2.associate_address(AllocationId=got["AllocationId"], InstanceId=b,
                                   AllowReassociation=True)["AssociationId"]
    assert second != first
    assert instance(ec2, b)["PublicIpAddress"] == got["PublicIp"]
    assert instance(ec2, a)["PublicIpAddress"] not in (None, got["PublicIp"])  # a got a new auto address
    ec2.disassociate_address(AssociationId=second)


def test_instance_holds_one_elastic_ip(ec2, eips, two_running):
    a = two_running[0]
    one, two = eips(), eips()
    ec2.associate_address(AllocationId=one["AllocationId"], InstanceId=a)
    ec2.associate_address(AllocationId=two["AllocationId"], InstanceId=a)
    assert instance(ec2, a)["PublicIpAddress"] == two["PublicIp"]
    assert "AssociationId" not in address(ec2, one["AllocationId"])
    ec2.disassociate_address(AssociationId=address(ec2, two["AllocationId"])["AssociationId"])


def test_associate_by_interface_and_public_ip(ec2, eips, two_running):
    b = two_running[1]
    row = instance(ec2, b)
    eni = row["NetworkInterfaces"][0]["NetworkInterfaceId"]
    got = eips()
    assoc = ec2.associate_address(AllocationId=got["AllocationId"], NetworkInterfaceId=eni,
                                  PrivateIpAddress=row["PrivateIpAddress"])["AssociationId"]
    assert address(ec2, got["AllocationId"])["InstanceId"] == b
    ec2.disassociate_address(AssociationId=assoc)
    expect_error("InvalidParameterValue", ec2.associate_address, AllocationId=got["AllocationId"],
                 NetworkInterfaceId=eni, PrivateIpAddress="10.255.255.254")
    ec2.associate_address(PublicIp=got["PublicIp"], InstanceId=b)
    assert address(ec2, got["AllocationId"])["InstanceId"] == b
    ec2.disassociate_address(PublicIp=got["PublicIp"])
    assert "AssociationId" not in address(ec2, got["AllocationId"])


def test_associate_errors(ec2, eips, two_running):
    got = eips()
    assert expect_error("InvalidAllocationID.NotFound", ec2.associate_address, AllocationId=MISSING_ALLOC,
                        InstanceId=two_running[0])
    assert expect_error("InvalidInstanceID.NotFound", ec2.associate_address, AllocationId=got["AllocationId"],
                        InstanceId="i-0123456789abcdef0") == "The instance ID 'i-0123456789abcdef0' does not exist"
    assert expect_error("InvalidNetworkInterfaceID.NotFound", ec2.associate_address,
                        AllocationId=got["AllocationId"], NetworkInterfaceId="eni-0123456789abcdef0")
    expect_error("MissingParameter", ec2.associate_address, AllocationId=got["AllocationId"])
    expect_error("InvalidParameterCombination", ec2.associate_address, AllocationId=got["AllocationId"],
                 InstanceId=two_running[0], NetworkInterfaceId="eni-0123456789abcdef0")
    expect_error("InvalidAddress.NotFound", ec2.associate_address, PublicIp="192.0.2.9", InstanceId=two_running[0])
    expect_error("InvalidParameterCombination", ec2.release_address, AllocationId=got["AllocationId"],
                 PublicIp=got["PublicIp"])
    expect_error("MissingParameter", ec2.disassociate_address)


def test_elastic_ip_survives_stop_and_goes_at_termination(ec2, eips):
    iid = ec2.run_instances(ImageId=tiny_image(ec2), MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    fast_waiter(ec2, "instance_running")(InstanceIds=[iid])
    got = eips()
    assert expect_error("InvalidInstanceID.NotFound", ec2.associate_address, AllocationId=got["AllocationId"],
                        InstanceId="i-00000000000000000")
    ec2.associate_address(AllocationId=got["AllocationId"], InstanceId=iid)
    ec2.stop_instances(InstanceIds=[iid])
    fast_waiter(ec2, "instance_stopped")(InstanceIds=[iid])
    assert instance(ec2, iid)["PublicIpAddress"] == got["PublicIp"]  # an auto-assigned one would be gone
    assert address(ec2, got["AllocationId"])["InstanceId"] == iid
    ec2.start_instances(InstanceIds=[iid])
    fast_waiter(ec2, "instance_running")(InstanceIds=[iid])
    assert instance(ec2, iid)["PublicIpAddress"] == got["PublicIp"]
    ec2.terminate_instances(InstanceIds=[iid])
    fast_waiter(ec2, "instance_terminated")(InstanceIds=[iid])
    eventually(lambda: "AssociationId" not in address(ec2, got["AllocationId"]), "disassociated at termination")
    assert "PublicIpAddress" not in instance(ec2, iid)
    assert expect_error("InvalidInstanceID.NotFound", ec2.associate_address, AllocationId=got["AllocationId"],
                        InstanceId=iid)


def test_stopped_instance_takes_an_elastic_ip(ec2, eips):
    iid = ec2.run_instances(ImageId=tiny_image(ec2), MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    fast_waiter(ec2, "instance_running")(InstanceIds=[iid])
    ec2.stop_instances(InstanceIds=[iid])
    fast_waiter(ec2, "instance_stopped")(InstanceIds=[iid])
    assert "PublicIpAddress" not in instance(ec2, iid)  # the auto-assigned one went at the stop
    got = eips()
    ec2.associate_address(AllocationId=got["AllocationId"], InstanceId=iid)
    assert instance(ec2, iid)["PublicIpAddress"] == got["PublicIp"]
    ec2.start_instances(InstanceIds=[iid])
    fast_waiter(ec2, "instance_running")(InstanceIds=[iid])
    assert instance(ec2, iid)["PublicIpAddress"] == got["PublicIp"]  # no auto address on top of it
    ec2.terminate_instances(InstanceIds=[iid])
    fast_waiter(ec2, "instance_terminated")(InstanceIds=[iid])


def test_describe_addresses_attribute(ec2, eips):
    got = eips()
    listed = ec2.describe_addresses_attribute(AllocationIds=[got["AllocationId"]], Attribute="domain-name")
    assert listed["Addresses"] == [{"AllocationId": got["AllocationId"], "PublicIp": got["PublicIp"]}]
    assert expect_error("InvalidAllocationID.NotFound", ec2.describe_addresses_attribute,
                        AllocationIds=[MISSING_ALLOC], Attribute="domain-name")
