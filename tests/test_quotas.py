"""AWS's default VPC quotas, on a server of their own (the shared one raises them): the create
past the quota is refused with AWS's code and stores nothing; freeing a slot admits it again."""
from __future__ import annotations

import pytest

from .conftest import CREDENTIALS
from .helpers import expect_error
from .server import Server


@pytest.fixture(scope="module")
def quota_server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("quotas"), {"EC2EMU_CREDENTIALS": CREDENTIALS,
                                                     "EC2EMU_SECURITY_GROUPS_PER_VPC": "3"}).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def ec2(quota_server):
    return quota_server.client()


def test_five_vpcs_per_region_the_default_one_included(ec2):
    made = [ec2.create_vpc(CidrBlock=f"10.{n}.0.0/16")["Vpc"]["VpcId"] for n in range(4)]
    assert len(ec2.describe_vpcs()["Vpcs"]) == 5
    expect_error("VpcLimitExceeded", ec2.create_vpc, CidrBlock="10.9.0.0/16")
    assert len(ec2.describe_vpcs()["Vpcs"]) == 5  # nothing stored
    ec2.delete_vpc(VpcId=made.pop())
    made.append(ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"])  # a slot was freed
    for vpc_id in made:
        ec2.delete_vpc(VpcId=vpc_id)


def test_the_quota_is_per_region(quota_server, ec2):
    west = quota_server.client(region="us-west-2")
    made = [ec2.create_vpc(CidrBlock=f"10.{n}.0.0/16")["Vpc"]["VpcId"] for n in range(4)]
    expect_error("VpcLimitExceeded", ec2.create_vpc, CidrBlock="10.9.0.0/16")
    vpc_id = west.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]  # another region's five
    west.delete_vpc(VpcId=vpc_id)
    for v in made:
        ec2.delete_vpc(VpcId=v)


def test_five_internet_gateways_per_region(ec2):
    made = [ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"] for _ in range(4)]
    assert len(ec2.describe_internet_gateways()["InternetGateways"]) == 5  # the default VPC's counts
    expect_error("InternetGatewayLimitExceeded", ec2.create_internet_gateway)
    assert len(ec2.describe_internet_gateways()["InternetGateways"]) == 5
    ec2.delete_internet_gateway(InternetGatewayId=made.pop())
    made.append(ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"])
    for igw in made:
        ec2.delete_internet_gateway(InternetGatewayId=igw)


def test_two_hundred_subnets_per_vpc(ec2):
    vpc_id = ec2.create_vpc(CidrBlock="10.50.0.0/16")["Vpc"]["VpcId"]
    made = [ec2.create_subnet(VpcId=vpc_id, CidrBlock=f"10.50.{n}.0/24")["Subnet"]["SubnetId"] for n in range(200)]
    expect_error("SubnetLimitExceeded", ec2.create_subnet, VpcId=vpc_id, CidrBlock="10.50.200.0/24")
    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["Subnets"]
    assert len(subnets) == 200
    ec2.delete_subnet(SubnetId=made.pop())
    made.append(ec2.create_subnet(VpcId=vpc_id, CidrBlock="10.50.200.0/24")["Subnet"]["SubnetId"])
    for s in made:
        ec2.delete_subnet(SubnetId=s)
    ec2.delete_vpc(VpcId=vpc_id)


def test_security_groups_per_vpc(ec2):
    """Quota set to 3 on this server: the default group and two more."""
    vpc_id = ec2.create_vpc(CidrBlock="10.60.0.0/16")["Vpc"]["VpcId"]
    made = [ec2.create_security_group(GroupName=f"g{n}", Description="d", VpcId=vpc_id)["GroupId"] for n in range(2)]
    expect_error("SecurityGroupLimitExceeded", ec2.create_security_group, GroupName="g2", Description="d",
                 VpcId=vpc_id)
    # another VPC has its own quota
    other = ec2.create_vpc(CidrBlock="10.61.0.0/16")["Vpc"]["VpcId"]
    g = ec2.create_security_group(GroupName="g2", Description="d", VpcId=other)["GroupId"]
    ec2.delete_security_group(GroupId=g)
    ec2.delete_vpc(VpcId=other)
    ec2.delete_security_group(GroupId=made.pop())
    made.append(ec2.create_security_group(GroupName="g2", Description="d", VpcId=vpc_id)["GroupId"])
    for g in made:
        ec2.delete_security_group(GroupId=g)
    ec2.delete_vpc(VpcId=vpc_id)
