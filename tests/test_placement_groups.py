"""Placement groups end to end with boto3 (none driver): create, describe, delete, and AWS's
rules at launch (cluster: one zone and types that support it; spread: 7 running instances per
zone; partition: 1-7 partitions, an instance in the one asked for or the emptiest)."""
from __future__ import annotations

import pytest

from .helpers import aws_cli, expect_error, fast_waiter, tiny_image, unique


@pytest.fixture(scope="module")
def image(ec2):
    return tiny_image(ec2)


def _group(ec2, strategy: str, **kw) -> dict:
    return ec2.create_placement_group(GroupName=unique("pg"), Strategy=strategy, **kw)["PlacementGroup"]


def _run(ec2, image, group: str, count: int = 1, zone: str = "us-east-1a", type_: str = "m5.large", **placement):
    return ec2.run_instances(ImageId=image, MinCount=count, MaxCount=count, InstanceType=type_,
                             Placement={"GroupName": group, "AvailabilityZone": zone, **placement})["Instances"]


def _done(ec2, instances: list[dict]) -> None:
    ids = [i["InstanceId"] for i in instances]
    ec2.terminate_instances(InstanceIds=ids)


def test_create_describe_delete(ec2, image):
    made = _group(ec2, "partition", PartitionCount=3,
                  TagSpecifications=[{"ResourceType": "placement-group", "Tags": [{"Key": "k", "Value": "v"}]}])
    assert made["GroupId"].startswith("pg-") and made["State"] == "available"
    assert made["PartitionCount"] == 3 and made["Tags"] == [{"Key": "k", "Value": "v"}]
    assert made["GroupArn"] == f"arn:aws:ec2:us-east-1:123456789012:placement-group/{made['GroupName']}"
    spread = _group(ec2, "spread")
    assert spread["SpreadLevel"] == "rack"
    got = ec2.describe_placement_groups(GroupNames=[made["GroupName"]])["PlacementGroups"]
    assert [g["GroupId"] for g in got] == [made["GroupId"]]
    assert ec2.describe_placement_groups(GroupIds=[spread["GroupId"]])["PlacementGroups"][0]["Strategy"] == "spread"
    by_tag = ec2.describe_placement_groups(Filters=[{"Name": "tag:k", "Values": ["v"]},
                                                    {"Name": "strategy", "Values": ["partition"]}])["PlacementGroups"]
    assert made["GroupId"] in {g["GroupId"] for g in by_tag} and spread["GroupId"] not in {g["GroupId"] for g in by_tag}
    assert expect_error("InvalidPlacementGroup.Duplicate", ec2.create_placement_group, GroupName=made["GroupName"],
                        Strategy="cluster") == f"The Placement Group '{made['GroupName']}' already exists."
    expect_error("InvalidParameterValue", ec2.create_placement_group, GroupName=unique("pg"), Strategy="partition",
                 PartitionCount=8)
    expect_error("InvalidParameterCombination", ec2.create_placement_group, GroupName=unique("pg"),
                 Strategy="cluster", PartitionCount=2)
    # In use: an instance in it (any state but terminated) keeps it.
    inst = _run(ec2, image, made["GroupName"])
    assert expect_error("InvalidPlacementGroup.InUse", ec2.delete_placement_group, GroupName=made["GroupName"]) == \
        f"The placement group '{made['GroupName']}' is in use and may not be deleted."
    _done(ec2, inst)
    fast_waiter(ec2, "instance_terminated")(InstanceIds=[inst[0]["InstanceId"]])  # shutting-down still holds it
    ec2.delete_placement_group(GroupName=made["GroupName"])
    assert expect_error("InvalidPlacementGroup.Unknown", ec2.describe_placement_groups,
                        GroupNames=[made["GroupName"]]) == f"The Placement Group '{made['GroupName']}' is unknown."
    expect_error("InvalidPlacementGroup.Unknown", ec2.delete_placement_group, GroupName=made["GroupName"])
    expect_error("InvalidPlacementGroupId.Malformed", ec2.describe_placement_groups, GroupIds=["pg-nothex"])


def test_cluster_groups_stay_in_one_zone_and_refuse_types_without_it(ec2, image):
    group = _group(ec2, "cluster")["GroupName"]
    first = _run(ec2, image, group, zone="us-east-1a")
    assert first[0]["Placement"]["GroupName"] == group
    assert expect_error("InvalidPlacementGroup.InUse", _run, ec2, image, group, zone="us-east-1b") == \
        f"The placement group '{group}' is in use in another availability zone: us-east-1a"
    expect_error("InvalidParameterCombination", _run, ec2, image, group, zone="us-east-1a", type_="t2.micro")
    second = _run(ec2, image, group, zone="us-east-1a")
    # A launch template's Placement.GroupName is the same rule's.
    lt = ec2.create_launch_template(LaunchTemplateName=unique("lt"), LaunchTemplateData={
        "ImageId": image, "InstanceType": "m5.large", "Placement": {"GroupName": group}})["LaunchTemplate"]
    expect_error("InvalidPlacementGroup.InUse", ec2.run_instances, MinCount=1, MaxCount=1,
                 LaunchTemplate={"LaunchTemplateId": lt["LaunchTemplateId"]}, Placement={"AvailabilityZone": "us-east-1c"})
    second += ec2.run_instances(MinCount=1, MaxCount=1, LaunchTemplate={"LaunchTemplateId": lt["LaunchTemplateId"]},
                                Placement={"AvailabilityZone": "us-east-1a"})["Instances"]
    listed = ec2.describe_instances(Filters=[{"Name": "placement-group-name", "Values": [group]}])
    assert sorted(i["InstanceId"] for r in listed["Reservations"] for i in r["Instances"]) == \
        sorted(i["InstanceId"] for i in first + second)
    _done(ec2, first + second)


def test_spread_groups_hold_seven_running_instances_per_zone(ec2, image):
    group = _group(ec2, "spread")["GroupName"]
    seven = _run(ec2, image, group, count=7, type_="t3.micro")
    expect_error("InsufficientInstanceCapacity", _run, ec2, image, group, type_="t3.micro")
    elsewhere = _run(ec2, image, group, zone="us-east-1b", type_="t3.micro")  # another zone has room
    ec2.terminate_instances(InstanceIds=[seven[0]["InstanceId"]])
    room = _run(ec2, image, group, type_="t3.micro")  # a terminated one leaves room
    _done(ec2, seven[1:] + elsewhere + room)


def test_partition_groups_place_each_instance(server, ec2, image):
    group = _group(ec2, "partition", PartitionCount=3)["GroupName"]
    spread_out = _run(ec2, image, group, count=4)
    assert sorted(i["Placement"]["PartitionNumber"] for i in spread_out) == [1, 1, 2, 3]
    chosen = _run(ec2, image, group, PartitionNumber=3)
    assert chosen[0]["Placement"]["PartitionNumber"] == 3
    expect_error("InvalidParameterValue", _run, ec2, image, group, PartitionNumber=4)
    listed = ec2.describe_instances(Filters=[{"Name": "placement-group-name", "Values": [group]},
                                             {"Name": "placement-partition-number", "Values": ["3"]}])
    assert len([i for r in listed["Reservations"] for i in r["Instances"]]) == 2
    # The AWS CLI reads the same.
    got = aws_cli(server, "ec2", "describe-placement-groups", "--group-names", group)
    assert got["PlacementGroups"][0]["PartitionCount"] == 3
    _done(ec2, spread_out + chosen)
