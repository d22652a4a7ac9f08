"""Internet gateways, route tables (routes, associations, the main table, blackholes), DHCP
option sets and network ACL listing, end to end with boto3 on the none driver."""
from __future__ import annotations

import json

import pytest

from .helpers import eventually, expect_error, fast_waiter, tiny_image

MISSING_RTB = "rtb-0123456789abcdef0"
MISSING_IGW = "igw-0123456789abcdef0"


@pytest.fixture
def vpc(ec2):
    vpc_id = ec2.create_vpc(CidrBlock="10.40.0.0/16")["Vpc"]["VpcId"]
    yield vpc_id
    by_vpc = [{"Name": "vpc-id", "Values": [vpc_id]}]
    for t in ec2.describe_route_tables(Filters=by_vpc)["RouteTables"]:
        for a in t["Associations"]:
            if not a["Main"]:
                ec2.disassociate_route_table(AssociationId=a["RouteTableAssociationId"])
    main = main_table(ec2, vpc_id)
    for t in ec2.describe_route_tables(Filters=by_vpc)["RouteTables"]:
        if t["RouteTableId"] != main:
            ec2.delete_route_table(RouteTableId=t["RouteTableId"])
    for s in ec2.describe_subnets(Filters=by_vpc)["Subnets"]:
        ec2.delete_subnet(SubnetId=s["SubnetId"])
    for g in ec2.describe_internet_gateways(Filters=[{"Name": "attachment.vpc-id", "Values": [vpc_id]}])[
            "InternetGateways"]:
        ec2.detach_internet_gateway(InternetGatewayId=g["InternetGatewayId"], VpcId=vpc_id)
        ec2.delete_internet_gateway(InternetGatewayId=g["InternetGatewayId"])
    ec2.delete_vpc(VpcId=vpc_id)


def main_table(ec2, vpc_id: str) -> str:
    tables = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc_id]},
                                                {"Name": "association.main", "Values": ["true"]}])["RouteTables"]
    assert len(tables) == 1
    return tables[0]["RouteTableId"]


def routes(ec2, rtb: str) -> dict[str, dict]:
    table = ec2.describe_route_tables(RouteTableIds=[rtb])["RouteTables"][0]
    return {r["DestinationCidrBlock"]: r for r in table["Routes"]}


# -------------------------------------------------------------------------- internet gateways

def test_internet_gateway_life(ec2, vpc):
    igw = ec2.create_internet_gateway(TagSpecifications=[{"ResourceType": "internet-gateway",
                                                           "Tags": [{"Key": "k", "Value": "v"}]}])["InternetGateway"]
    gid = igw["InternetGatewayId"]
    assert gid.startswith("igw-") and igw["Attachments"] == [] and igw["Tags"] == [{"Key": "k", "Value": "v"}]
    assert expect_error("Gateway.NotAttached", ec2.detach_internet_gateway, InternetGatewayId=gid, VpcId=vpc) == \
        f"resource {gid} is not attached to network {vpc}"
    ec2.attach_internet_gateway(InternetGatewayId=gid, VpcId=vpc)
    got = ec2.describe_internet_gateways(InternetGatewayIds=[gid])["InternetGateways"][0]
    assert got["Attachments"] == [{"VpcId": vpc, "State": "available"}]
    assert ec2.describe_internet_gateways(Filters=[{"Name": "attachment.vpc-id", "Values": [vpc]}])[
        "InternetGateways"][0]["InternetGatewayId"] == gid
    assert ec2.describe_internet_gateways(Filters=[{"Name": "tag:k", "Values": ["v"]},
                                                   {"Name": "internet-gateway-id", "Values": [gid]}])[
        "InternetGateways"][0]["InternetGatewayId"] == gid
    # attached twice, or a second gateway on the same VPC
    assert expect_error("Resource.AlreadyAssociated", ec2.attach_internet_gateway, InternetGatewayId=gid,
                        VpcId=vpc) == f"resource {gid} is already attached to network {vpc}"
    second = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    expect_error("Resource.AlreadyAssociated", ec2.attach_internet_gateway, InternetGatewayId=second, VpcId=vpc)
    ec2.delete_internet_gateway(InternetGatewayId=second)
    assert expect_error("DependencyViolation", ec2.delete_internet_gateway, InternetGatewayId=gid) == \
        f"The internetGateway '{gid}' has dependencies and cannot be deleted."
    ec2.detach_internet_gateway(InternetGatewayId=gid, VpcId=vpc)
    ec2.delete_internet_gateway(InternetGatewayId=gid)
    assert expect_error("InvalidInternetGatewayID.NotFound", ec2.describe_internet_gateways,
                        InternetGatewayIds=[gid]) == f"The internetGateway ID '{gid}' does not exist"
    expect_error("InvalidInternetGatewayID.NotFound", ec2.attach_internet_gateway, InternetGatewayId=MISSING_IGW,
                 VpcId=vpc)
    loose = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    expect_error("InvalidVpcID.NotFound", ec2.attach_internet_gateway, InternetGatewayId=loose,
                 VpcId="vpc-0123456789abcdef0")
    ec2.delete_internet_gateway(InternetGatewayId=loose)


# ------------------------------------------------------------------------------------ routes

def test_routes_and_blackhole(ec2, vpc):
    rtb = ec2.create_route_table(VpcId=vpc)["RouteTable"]
    assert rtb["Associations"] == [] and rtb["VpcId"] == vpc
    rtb = rtb["RouteTableId"]
    igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    # not attached to this VPC yet
    assert expect_error("InvalidParameterValue", ec2.create_route, RouteTableId=rtb,
                        DestinationCidrBlock="0.0.0.0/0", GatewayId=igw) == \
        f"route table {rtb} and network gateway {igw} belong to different networks"
    ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
    assert ec2.create_route(RouteTableId=rtb, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)["Return"] is True
    assert routes(ec2, rtb)["0.0.0.0/0"] == {"DestinationCidrBlock": "0.0.0.0/0", "GatewayId": igw,
                                             "Origin": "CreateRoute", "State": "active"}
    assert expect_error("RouteAlreadyExists", ec2.create_route, RouteTableId=rtb, DestinationCidrBlock="0.0.0.0/0",
                        GatewayId=igw) == "The route identified by 0.0.0.0/0 already exists."
    expect_error("RouteAlreadyExists", ec2.create_route, RouteTableId=rtb, DestinationCidrBlock="10.40.0.0/16",
                 GatewayId=igw)
    expect_error("InvalidParameterValue", ec2.create_route, RouteTableId=rtb, DestinationCidrBlock="10.40.1.0/24",
                 GatewayId=igw)  # more specific than the VPC's block: interfaces and instances only
    expect_error("InvalidParameterValue", ec2.create_route, RouteTableId=rtb, DestinationCidrBlock="10.1.2.3/8",
                 GatewayId=igw)
    expect_error("InvalidInternetGatewayID.NotFound", ec2.create_route, RouteTableId=rtb,
                 DestinationCidrBlock="192.168.0.0/16", GatewayId=MISSING_IGW)
    expect_error("InvalidNatGatewayID.NotFound", ec2.create_route, RouteTableId=rtb,
                 DestinationCidrBlock="192.168.0.0/16", NatGatewayId="nat-0123456789abcdef0")
    expect_error("InvalidParameterCombination", ec2.create_route, RouteTableId=rtb,
                 DestinationCidrBlock="192.168.0.0/16", GatewayId=igw, NatGatewayId="nat-0123456789abcdef0")
    expect_error("MissingParameter", ec2.create_route, RouteTableId=rtb, DestinationCidrBlock="192.168.0.0/16")
    expect_error("InvalidRouteTableID.NotFound", ec2.create_route, RouteTableId=MISSING_RTB,
                 DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
    # the local route cannot go or change
    assert expect_error("InvalidParameterValue", ec2.delete_route, RouteTableId=rtb,
                        DestinationCidrBlock="10.40.0.0/16") == \
        f"cannot remove local route 10.40.0.0/16 in route table {rtb}"
    expect_error("InvalidParameterValue", ec2.replace_route, RouteTableId=rtb, DestinationCidrBlock="10.40.0.0/16",
                 GatewayId=igw)
    assert expect_error("InvalidRoute.NotFound", ec2.delete_route, RouteTableId=rtb,
                        DestinationCidrBlock="192.168.0.0/16") == \
        f"no route with destination-cidr-block 192.168.0.0/16 in route table {rtb}"
    assert expect_error("InvalidParameterValue", ec2.replace_route, RouteTableId=rtb,
                        DestinationCidrBlock="192.168.0.0/16", GatewayId=igw) == \
        "There is no route defined for '192.168.0.0/16' in the route table. Use CreateRoute instead."
    # a gateway gone: its routes are blackholes, and stay until deleted
    ec2.detach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
    assert routes(ec2, rtb)["0.0.0.0/0"]["State"] == "blackhole"
    assert ec2.describe_route_tables(Filters=[{"Name": "route.state", "Values": ["blackhole"]},
                                              {"Name": "vpc-id", "Values": [vpc]}])["RouteTables"][0][
        "RouteTableId"] == rtb
    ec2.delete_internet_gateway(InternetGatewayId=igw)
    assert routes(ec2, rtb)["0.0.0.0/0"]["State"] == "blackhole"
    # replaced onto a new gateway: active again
    igw2 = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=igw2, VpcId=vpc)
    ec2.replace_route(RouteTableId=rtb, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw2)
    assert routes(ec2, rtb)["0.0.0.0/0"] == {"DestinationCidrBlock": "0.0.0.0/0", "GatewayId": igw2,
                                             "Origin": "ReplaceRoute", "State": "active"}
    assert ec2.describe_route_tables(Filters=[{"Name": "route.gateway-id", "Values": [igw2]}])["RouteTables"][0][
        "RouteTableId"] == rtb
    ec2.delete_route(RouteTableId=rtb, DestinationCidrBlock="0.0.0.0/0")
    assert list(routes(ec2, rtb)) == ["10.40.0.0/16"]
    ec2.delete_route_table(RouteTableId=rtb)
    expect_error("InvalidRouteTableID.NotFound", ec2.delete_route_table, RouteTableId=rtb)


def test_route_to_an_instance(server, ec2, vpc):
    """Routes to an instance (its primary interface) and to another interface: active while the
    interface is attached to a live instance (which they name), a blackhole when it is detached
    or the instance terminated; the host routes the subnets' traffic to the interface's address
    (routes inside the VPC's own range stay API-only: the local route wins on the host)."""
    def host_routes() -> dict:
        try:
            host = json.loads((server.state_dir / "none-host.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):  # (replaced atomically; not written yet)
            return {}
        return host.get("routes", {}).get(vpc, {}).get("10.40.9.0/24", {})

    sid = ec2.create_subnet(VpcId=vpc, CidrBlock="10.40.9.0/24")["Subnet"]["SubnetId"]
    inst = ec2.run_instances(ImageId=tiny_image(ec2), MinCount=1, MaxCount=1, SubnetId=sid)["Instances"][0]
    rtb = main_table(ec2, vpc)
    ec2.create_route(RouteTableId=rtb, DestinationCidrBlock="192.168.0.0/16", InstanceId=inst["InstanceId"])
    r = routes(ec2, rtb)["192.168.0.0/16"]
    assert r["InstanceId"] == inst["InstanceId"] and r["State"] == "active"
    assert r["NetworkInterfaceId"] == inst["NetworkInterfaces"][0]["NetworkInterfaceId"]
    eventually(lambda: host_routes().get("192.168.0.0/16") == {"next_hop": inst["PrivateIpAddress"]},
               "the host hands the subnet's traffic to the instance")
    ec2.create_route(RouteTableId=rtb, DestinationCidrBlock="10.40.9.128/25",
                     NetworkInterfaceId=r["NetworkInterfaceId"])  # inside the VPC: fine for an interface
    expect_error("InvalidNetworkInterfaceID.NotFound", ec2.create_route, RouteTableId=rtb,
                 DestinationCidrBlock="172.16.0.0/12", NetworkInterfaceId="eni-0123456789abcdef0")
    # an interface not attached: a blackhole until it is, then active, naming the instance
    eni = ec2.create_network_interface(SubnetId=sid)["NetworkInterface"]
    ec2.create_route(RouteTableId=rtb, DestinationCidrBlock="172.16.0.0/12",
                     NetworkInterfaceId=eni["NetworkInterfaceId"])
    r = routes(ec2, rtb)["172.16.0.0/12"]
    assert r["State"] == "blackhole" and "InstanceId" not in r
    assert "172.16.0.0/12" not in host_routes()
    fast_waiter(ec2, "instance_running")(InstanceIds=[inst["InstanceId"]])
    attachment = ec2.attach_network_interface(NetworkInterfaceId=eni["NetworkInterfaceId"],
                                              InstanceId=inst["InstanceId"], DeviceIndex=1)["AttachmentId"]
    eventually(lambda: routes(ec2, rtb)["172.16.0.0/12"]["State"] == "active", "active once attached")
    assert routes(ec2, rtb)["172.16.0.0/12"]["InstanceId"] == inst["InstanceId"]
    eventually(lambda: host_routes().get("172.16.0.0/12") == {"next_hop": eni["PrivateIpAddress"]},
               "the host routes through the attached interface")
    assert "10.40.9.128/25" not in host_routes()
    ec2.detach_network_interface(AttachmentId=attachment)
    eventually(lambda: routes(ec2, rtb)["172.16.0.0/12"]["State"] == "blackhole", "a blackhole once detached")
    eventually(lambda: "172.16.0.0/12" not in host_routes(), "the host route gone with it")
    ec2.terminate_instances(InstanceIds=[inst["InstanceId"]])
    fast_waiter(ec2, "instance_terminated")(InstanceIds=[inst["InstanceId"]])
    assert routes(ec2, rtb)["192.168.0.0/16"]["State"] == "blackhole"
    eventually(lambda: "192.168.0.0/16" not in host_routes(), "no host route through a terminated instance")
    for destination in ("192.168.0.0/16", "10.40.9.128/25", "172.16.0.0/12"):
        ec2.delete_route(RouteTableId=rtb, DestinationCidrBlock=destination)
    ec2.delete_network_interface(NetworkInterfaceId=eni["NetworkInterfaceId"])


# ------------------------------------------------------------------------------ associations

def test_associations_and_main_table(ec2, vpc):
    sid = ec2.create_subnet(VpcId=vpc, CidrBlock="10.40.1.0/24")["Subnet"]["SubnetId"]
    main = main_table(ec2, vpc)
    main_assoc = ec2.describe_route_tables(RouteTableIds=[main])["RouteTables"][0]["Associations"][0]
    assert main_assoc["Main"] is True and "SubnetId" not in main_assoc
    assert expect_error("DependencyViolation", ec2.delete_route_table, RouteTableId=main) == \
        f"The routeTable '{main}' has dependencies and cannot be deleted."
    assert expect_error("InvalidParameterValue", ec2.disassociate_route_table,
                        AssociationId=main_assoc["RouteTableAssociationId"]) == \
        f"cannot disassociate the main route table association {main_assoc['RouteTableAssociationId']}"
    custom = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    out = ec2.associate_route_table(RouteTableId=custom, SubnetId=sid)
    assoc = out["AssociationId"]
    assert assoc.startswith("rtbassoc-") and out["AssociationState"] == {"State": "associated"}
    got = ec2.describe_route_tables(Filters=[{"Name": "association.subnet-id", "Values": [sid]}])["RouteTables"]
    assert [t["RouteTableId"] for t in got] == [custom]
    assert got[0]["Associations"][0]["SubnetId"] == sid and got[0]["Associations"][0]["Main"] is False
    expect_error("Resource.AlreadyAssociated", ec2.associate_route_table, RouteTableId=main, SubnetId=sid)
    expect_error("DependencyViolation", ec2.delete_route_table, RouteTableId=custom)
    # a subnet of another VPC
    other = ec2.create_vpc(CidrBlock="10.41.0.0/16")["Vpc"]["VpcId"]
    other_subnet = ec2.create_subnet(VpcId=other, CidrBlock="10.41.1.0/24")["Subnet"]["SubnetId"]
    assert expect_error("InvalidParameterValue", ec2.associate_route_table, RouteTableId=custom,
                        SubnetId=other_subnet) == \
        f"route table {custom} and subnet {other_subnet} belong to different networks"
    other_main = main_table(ec2, other)
    expect_error("InvalidParameterValue", ec2.replace_route_table_association, AssociationId=assoc,
                 RouteTableId=other_main)
    ec2.delete_subnet(SubnetId=other_subnet)
    ec2.delete_vpc(VpcId=other)
    # move the subnet back to the main table: a new association id, the old one gone
    new = ec2.replace_route_table_association(AssociationId=assoc, RouteTableId=main)["NewAssociationId"]
    assert new != assoc
    expect_error("InvalidAssociationID.NotFound", ec2.disassociate_route_table, AssociationId=assoc)
    ec2.disassociate_route_table(AssociationId=new)
    # make the custom table the main one; the old main can then be deleted
    new_main = ec2.replace_route_table_association(AssociationId=main_assoc["RouteTableAssociationId"],
                                                   RouteTableId=custom)["NewAssociationId"]
    assert main_table(ec2, vpc) == custom
    main_of_custom = ec2.describe_route_tables(RouteTableIds=[custom])["RouteTables"][0]["Associations"]
    assert main_of_custom == [{"Main": True, "RouteTableAssociationId": new_main, "RouteTableId": custom,
                               "AssociationState": {"State": "associated"}}]
    ec2.delete_route_table(RouteTableId=main)
    expect_error("InvalidAssociationID.NotFound", ec2.disassociate_route_table,
                 AssociationId="rtbassoc-0123456789abcdef0")


def test_describe_route_tables_paging_and_missing(ec2, vpc):
    made = [ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"] for _ in range(6)]
    seen, token = [], None
    while True:
        kw = {"NextToken": token} if token else {}
        page = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc]}], MaxResults=5, **kw)
        seen += [t["RouteTableId"] for t in page["RouteTables"]]
        token = page.get("NextToken")
        if not token:
            break
    assert sorted(seen) == sorted(made + [main_table(ec2, vpc)])
    assert expect_error("InvalidRouteTableID.NotFound", ec2.describe_route_tables, RouteTableIds=[MISSING_RTB]) == \
        f"The routeTable ID '{MISSING_RTB}' does not exist"
    expect_error("InvalidParameterValue", ec2.describe_route_tables, Filters=[{"Name": "nonsense", "Values": ["x"]}])
    ec2.create_tags(Resources=[made[0]], Tags=[{"Key": "role", "Value": "public"}])
    assert [t["RouteTableId"] for t in ec2.describe_route_tables(
        Filters=[{"Name": "tag:role", "Values": ["public"]}])["RouteTables"]] == [made[0]]


# ------------------------------------------------------------------------------ DHCP options

def test_dhcp_options_life(ec2, vpc):
    conf = [{"Key": "domain-name", "Values": ["corp.example"]},
            {"Key": "domain-name-servers", "Values": ["10.40.0.2", "AmazonProvidedDNS"]},
            {"Key": "ntp-servers", "Values": ["10.40.0.3"]},
            {"Key": "netbios-node-type", "Values": ["2"]}]
    out = ec2.create_dhcp_options(DhcpConfigurations=conf, TagSpecifications=[
        {"ResourceType": "dhcp-options", "Tags": [{"Key": "n", "Value": "x"}]}])["DhcpOptions"]
    dopt = out["DhcpOptionsId"]
    assert dopt.startswith("dopt-") and out["Tags"] == [{"Key": "n", "Value": "x"}]
    assert {c["Key"]: [v["Value"] for v in c["Values"]] for c in out["DhcpConfigurations"]} == {
        c["Key"]: c["Values"] for c in conf}
    assert [d["DhcpOptionsId"] for d in ec2.describe_dhcp_options(
        Filters=[{"Name": "key", "Values": ["ntp-servers"]}, {"Name": "value", "Values": ["corp.example"]},
                 {"Name": "dhcp-options-id", "Values": [dopt]}])["DhcpOptions"]] == [dopt]
    ec2.associate_dhcp_options(DhcpOptionsId=dopt, VpcId=vpc)
    assert ec2.describe_vpcs(VpcIds=[vpc])["Vpcs"][0]["DhcpOptionsId"] == dopt
    assert ec2.describe_vpcs(Filters=[{"Name": "dhcp-options-id", "Values": [dopt]}])["Vpcs"][0]["VpcId"] == vpc
    assert expect_error("DependencyViolation", ec2.delete_dhcp_options, DhcpOptionsId=dopt) == \
        f"The dhcpOptions '{dopt}' has dependencies and cannot be deleted."
    ec2.associate_dhcp_options(DhcpOptionsId="default", VpcId=vpc)
    assert ec2.describe_vpcs(VpcIds=[vpc])["Vpcs"][0]["DhcpOptionsId"] == "default"
    ec2.delete_dhcp_options(DhcpOptionsId=dopt)
    assert expect_error("InvalidDhcpOptionID.NotFound", ec2.describe_dhcp_options, DhcpOptionsIds=[dopt]) == \
        f"The dhcpOption ID '{dopt}' does not exist"
    expect_error("InvalidDhcpOptionID.NotFound", ec2.associate_dhcp_options, DhcpOptionsId=dopt, VpcId=vpc)
    expect_error("InvalidDhcpOptionID.NotFound", ec2.delete_dhcp_options, DhcpOptionsId=dopt)


def test_associating_options_reaches_the_dhcp_server_of_a_vpc_with_instances(server, ec2, vpc):
    """The host (the none driver's kept state) gets the new domain-name at once when the VPC has
    instances; running guests take it at their next lease renewal (test_vpc_guests)."""
    def dhcp_domain() -> str | None:
        try:
            host = json.loads((server.state_dir / "none-host.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):  # (replaced atomically; not written yet)
            return None
        return host.get("vpcs", {}).get(vpc, {}).get("dhcp_domain")

    sid = ec2.create_subnet(VpcId=vpc, CidrBlock="10.40.3.0/24")["Subnet"]["SubnetId"]
    iid = ec2.run_instances(ImageId=tiny_image(ec2), MinCount=1, MaxCount=1, SubnetId=sid)["Instances"][0]["InstanceId"]
    fast_waiter(ec2, "instance_running")(InstanceIds=[iid])
    assert dhcp_domain() == "ec2.internal"  # the account's default set (the control)
    dopt = ec2.create_dhcp_options(DhcpConfigurations=[{"Key": "domain-name", "Values": ["live.example"]}])[
        "DhcpOptions"]["DhcpOptionsId"]
    ec2.associate_dhcp_options(DhcpOptionsId=dopt, VpcId=vpc)
    eventually(lambda: dhcp_domain() == "live.example", "the new domain reached the VPC's DHCP server")
    ec2.associate_dhcp_options(DhcpOptionsId="default", VpcId=vpc)  # no options: the region's domain
    eventually(lambda: dhcp_domain() == "", "the options were taken away")
    ec2.terminate_instances(InstanceIds=[iid])
    fast_waiter(ec2, "instance_terminated")(InstanceIds=[iid])
    ec2.delete_dhcp_options(DhcpOptionsId=dopt)
    ec2.delete_subnet(SubnetId=sid)


@pytest.mark.parametrize("conf", [
    [{"Key": "nonsense", "Values": ["x"]}],
    [{"Key": "domain-name-servers", "Values": ["not-an-address"]}],
    [{"Key": "domain-name-servers", "Values": ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"]}],
    [{"Key": "netbios-node-type", "Values": ["3"]}],
    [{"Key": "domain-name", "Values": ["bad_name!"]}],
    [{"Key": "domain-name", "Values": []}],
])
def test_dhcp_options_validation(ec2, conf):
    expect_error("InvalidParameterValue", ec2.create_dhcp_options, DhcpConfigurations=conf)


def test_network_acls_listed(ec2, vpc):
    sid = ec2.create_subnet(VpcId=vpc, CidrBlock="10.40.2.0/24")["Subnet"]["SubnetId"]
    acls = ec2.describe_network_acls(Filters=[{"Name": "vpc-id", "Values": [vpc]},
                                              {"Name": "default", "Values": ["true"]}])["NetworkAcls"]
    assert len(acls) == 1
    assert [a["SubnetId"] for a in acls[0]["Associations"]] == [sid]
    expect_error("InvalidNetworkAclID.NotFound", ec2.describe_network_acls, NetworkAclIds=["acl-0123456789abcdef0"])
