"""NAT gateways end to end with boto3 on the none driver: create (its Elastic IP associated),
states, describe (ids, filters, errors), routes to it, delete (its routes blackholes, its address
free)."""
from __future__ import annotations

import pytest

from .helpers import eventually, expect_error

MISSING_NAT = "nat-0123456789abcdef0"


@pytest.fixture
def net(ec2):
    """A VPC with a public subnet (main table -> igw) and a private one (its own table)."""
    vpc = ec2.create_vpc(CidrBlock="10.60.0.0/16")["Vpc"]["VpcId"]
    public = ec2.create_subnet(VpcId=vpc, CidrBlock="10.60.1.0/24")["Subnet"]["SubnetId"]
    private = ec2.create_subnet(VpcId=vpc, CidrBlock="10.60.2.0/24")["Subnet"]["SubnetId"]
    igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
    main = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc]},
                                              {"Name": "association.main", "Values": ["true"]}])["RouteTables"][0]
    ec2.create_route(RouteTableId=main["RouteTableId"], DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
    rtb = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    assoc = ec2.associate_route_table(RouteTableId=rtb, SubnetId=private)["AssociationId"]
    alloc = ec2.allocate_address(Domain="vpc")
    yield {"vpc": vpc, "public": public, "private": private, "igw": igw, "rtb": rtb, "alloc": alloc}
    for n in ec2.describe_nat_gateways(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["NatGateways"]:
        if n["State"] not in ("deleting", "deleted"):
            ec2.delete_nat_gateway(NatGatewayId=n["NatGatewayId"])
    eventually(lambda: all(n["State"] == "deleted" for n in ec2.describe_nat_gateways(
        Filters=[{"Name": "vpc-id", "Values": [vpc]}])["NatGateways"]), "NAT gateways deleted")
    ec2.release_address(AllocationId=alloc["AllocationId"])
    ec2.disassociate_route_table(AssociationId=assoc)
    ec2.delete_route_table(RouteTableId=rtb)
    ec2.delete_route(RouteTableId=main["RouteTableId"], DestinationCidrBlock="0.0.0.0/0")
    ec2.detach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
    ec2.delete_internet_gateway(InternetGatewayId=igw)
    ec2.delete_subnet(SubnetId=public)
    ec2.delete_subnet(SubnetId=private)
    ec2.delete_vpc(VpcId=vpc)


def nat_of(ec2, nat_id: str) -> dict:
    return ec2.describe_nat_gateways(NatGatewayIds=[nat_id])["NatGateways"][0]


def test_nat_gateway_life(ec2, net):
    alloc = net["alloc"]
    made = ec2.create_nat_gateway(SubnetId=net["public"], AllocationId=alloc["AllocationId"],
                                  TagSpecifications=[{"ResourceType": "natgateway",
                                                      "Tags": [{"Key": "k", "Value": "v"}]}])["NatGateway"]
    nat = made["NatGatewayId"]
    assert nat.startswith("nat-") and made["State"] == "pending" and made["VpcId"] == net["vpc"]
    assert made["ConnectivityType"] == "public" and made["Tags"] == [{"Key": "k", "Value": "v"}]
    eventually(lambda: nat_of(ec2, nat)["State"] == "available", "available")
    got = nat_of(ec2, nat)
    (a,) = got["NatGatewayAddresses"]
    assert a["AllocationId"] == alloc["AllocationId"] and a["PublicIp"] == alloc["PublicIp"]
    assert a["PrivateIp"].startswith("10.60.1.") and a["NetworkInterfaceId"].startswith("eni-")
    listed = ec2.describe_addresses(AllocationIds=[alloc["AllocationId"]])["Addresses"][0]
    assert listed["AssociationId"].startswith("eipassoc-") and listed["PrivateIpAddress"] == a["PrivateIp"]
    assert listed["NetworkInterfaceId"] == a["NetworkInterfaceId"] and "InstanceId" not in listed
    for name, value in (("subnet-id", net["public"]), ("vpc-id", net["vpc"]), ("state", "available"),
                        ("nat-gateway-id", nat), ("tag:k", "v")):
        assert [n["NatGatewayId"] for n in ec2.describe_nat_gateways(
            Filters=[{"Name": name, "Values": [value]}])["NatGateways"]] == [nat], name
    # its address is in use: not released, not associated elsewhere, not given to another gateway
    assert expect_error("InvalidIPAddress.InUse", ec2.release_address, AllocationId=alloc["AllocationId"])
    expect_error("Resource.AlreadyAssociated", ec2.create_nat_gateway, SubnetId=net["public"],
                 AllocationId=alloc["AllocationId"])
    # the internet gateway cannot go while the NAT gateway maps a public address through it
    expect_error("DependencyViolation", ec2.detach_internet_gateway, InternetGatewayId=net["igw"], VpcId=net["vpc"])
    # a route to it
    ec2.create_route(RouteTableId=net["rtb"], DestinationCidrBlock="0.0.0.0/0", NatGatewayId=nat)
    route = {r["DestinationCidrBlock"]: r for r in ec2.describe_route_tables(RouteTableIds=[net["rtb"]])[
        "RouteTables"][0]["Routes"]}["0.0.0.0/0"]
    assert route["NatGatewayId"] == nat and route["State"] == "active"
    assert [t["RouteTableId"] for t in ec2.describe_route_tables(
        Filters=[{"Name": "route.nat-gateway-id", "Values": [nat]}])["RouteTables"]] == [net["rtb"]]
    assert ec2.delete_nat_gateway(NatGatewayId=nat)["NatGatewayId"] == nat
    assert nat_of(ec2, nat)["State"] in ("deleting", "deleted")
    eventually(lambda: nat_of(ec2, nat)["State"] == "deleted", "deleted")
    assert "DeleteTime" in nat_of(ec2, nat)
    route = ec2.describe_route_tables(RouteTableIds=[net["rtb"]])["RouteTables"][0]["Routes"]
    assert [r["State"] for r in route if r["DestinationCidrBlock"] == "0.0.0.0/0"] == ["blackhole"]
    assert "AssociationId" not in ec2.describe_addresses(AllocationIds=[alloc["AllocationId"]])["Addresses"][0]
    expect_error("InvalidNatGatewayID.NotFound", ec2.replace_route, RouteTableId=net["rtb"],
                 DestinationCidrBlock="0.0.0.0/0", NatGatewayId=nat)
    ec2.delete_route(RouteTableId=net["rtb"], DestinationCidrBlock="0.0.0.0/0")


def test_nat_gateway_errors(ec2, net):
    assert expect_error("NatGatewayNotFound", ec2.describe_nat_gateways, NatGatewayIds=[MISSING_NAT])
    assert expect_error("NatGatewayNotFound", ec2.delete_nat_gateway, NatGatewayId=MISSING_NAT)
    assert expect_error("InvalidSubnetID.NotFound", ec2.create_nat_gateway, SubnetId="subnet-0123456789abcdef0",
                        AllocationId=net["alloc"]["AllocationId"])
    assert expect_error("InvalidAllocationID.NotFound", ec2.create_nat_gateway, SubnetId=net["public"],
                        AllocationId="eipalloc-0123456789abcdef0")
    expect_error("MissingParameter", ec2.create_nat_gateway, SubnetId=net["public"])
    expect_error("InvalidParameterCombination", ec2.create_nat_gateway, SubnetId=net["public"],
                 ConnectivityType="private", AllocationId=net["alloc"]["AllocationId"])
    assert expect_error("InvalidNatGatewayID.NotFound", ec2.create_route, RouteTableId=net["rtb"],
                        DestinationCidrBlock="0.0.0.0/0", NatGatewayId=MISSING_NAT)
    private = ec2.create_nat_gateway(SubnetId=net["private"], ConnectivityType="private")["NatGateway"]
    assert private["ConnectivityType"] == "private" and "PublicIp" not in private["NatGatewayAddresses"][0]
    eventually(lambda: nat_of(ec2, private["NatGatewayId"])["State"] == "available", "available")


def test_client_token(ec2, net):
    kw = {"SubnetId": net["public"], "AllocationId": net["alloc"]["AllocationId"], "ClientToken": "nat-token-1"}
    first = ec2.create_nat_gateway(**kw)["NatGateway"]["NatGatewayId"]
    assert ec2.create_nat_gateway(**kw)["NatGateway"]["NatGatewayId"] == first
    expect_error("IdempotentParameterMismatch", ec2.create_nat_gateway, SubnetId=net["private"],
                 AllocationId=net["alloc"]["AllocationId"], ClientToken="nat-token-1")


def test_subnet_is_needed(ec2):
    expect_error("MissingParameter", ec2.create_nat_gateway, ConnectivityType="private")


def test_subnet_with_a_nat_gateway_cannot_go(ec2, net):
    nat = ec2.create_nat_gateway(SubnetId=net["private"], ConnectivityType="private")["NatGateway"]["NatGatewayId"]
    assert expect_error("DependencyViolation", ec2.delete_subnet, SubnetId=net["private"]) == \
        f"The subnet '{net['private']}' has dependencies and cannot be deleted."
    ec2.delete_nat_gateway(NatGatewayId=nat)
    eventually(lambda: nat_of(ec2, nat)["State"] == "deleted", "deleted")


def test_a_nat_gateway_and_an_interface_never_share_an_address(ec2, net):
    """The NAT gateway takes its subnet's highest free address; an interface asking for it is
    refused, and a NAT gateway made after an interface holds that address takes another."""
    nat = ec2.create_nat_gateway(SubnetId=net["public"], AllocationId=net["alloc"]["AllocationId"])["NatGateway"]
    taken = nat["NatGatewayAddresses"][0]["PrivateIp"]
    assert taken == "10.60.1.254"
    expect_error("InvalidIPAddress.InUse", ec2.create_network_interface, SubnetId=net["public"],
                 PrivateIpAddress=taken)
    free = ec2.create_network_interface(SubnetId=net["public"], PrivateIpAddress="10.60.1.253")  # the control
    second = ec2.allocate_address(Domain="vpc")
    other = ec2.create_nat_gateway(SubnetId=net["public"], AllocationId=second["AllocationId"])["NatGateway"]
    assert other["NatGatewayAddresses"][0]["PrivateIp"] == "10.60.1.252"  # .254 the first's, .253 the interface's
    eventually(lambda: ec2.describe_nat_gateways(NatGatewayIds=[other["NatGatewayId"]])["NatGateways"][0]["State"]
               == "available", "the second NAT gateway available")
    ec2.delete_nat_gateway(NatGatewayId=other["NatGatewayId"])
    ec2.delete_network_interface(NetworkInterfaceId=free["NetworkInterface"]["NetworkInterfaceId"])
    eventually(lambda: ec2.describe_nat_gateways(NatGatewayIds=[other["NatGatewayId"]])["NatGateways"][0]["State"]
               == "deleted", "the second NAT gateway deleted")
    ec2.release_address(AllocationId=second["AllocationId"])
