"""VPCs and subnets end to end with boto3 on the none driver: create/delete with AWS's
validation and dependencies, the defaults every VPC gets, attributes, default VPC/subnets, and
launches into a custom VPC."""
from __future__ import annotations

import pytest

from .helpers import error_of, eventually, expect_error, fast_waiter, tiny_image, unique


def tagged(name: str, rtype: str = "vpc") -> list[dict]:
    return [{"ResourceType": rtype, "Tags": [{"Key": "Name", "Value": name}]}]


@pytest.fixture
def vpc(ec2):
    vpc_id = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    yield vpc_id
    for s in ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["Subnets"]:
        ec2.delete_subnet(SubnetId=s["SubnetId"])
    try:
        ec2.delete_vpc(VpcId=vpc_id)
    except ec2.exceptions.ClientError as exc:
        assert exc.response["Error"]["Code"] == "InvalidVpcID.NotFound"


# ------------------------------------------------------------------------------------- VPCs

def test_create_vpc_and_describe(ec2):
    name = unique("vpc")
    out = ec2.create_vpc(CidrBlock="10.1.0.0/16", InstanceTenancy="default", TagSpecifications=tagged(name))["Vpc"]
    vpc_id = out["VpcId"]
    assert vpc_id.startswith("vpc-") and len(vpc_id) == 21
    assert out["CidrBlock"] == "10.1.0.0/16" and out["IsDefault"] is False
    assert out["Tags"] == [{"Key": "Name", "Value": name}]
    got = ec2.describe_vpcs(Filters=[{"Name": "tag:Name", "Values": [name]}])["Vpcs"]
    assert [v["VpcId"] for v in got] == [vpc_id]
    assert got[0]["State"] == "available" and got[0]["InstanceTenancy"] == "default"
    assert got[0]["DhcpOptionsId"].startswith("dopt-")
    assert ec2.describe_vpcs(Filters=[{"Name": "cidr", "Values": ["10.1.0.0/16"]},
                                      {"Name": "vpc-id", "Values": [vpc_id]}])["Vpcs"][0]["VpcId"] == vpc_id
    ec2.delete_vpc(VpcId=vpc_id)
    assert expect_error("InvalidVpcID.NotFound", ec2.describe_vpcs, VpcIds=[vpc_id]) == \
        f"The vpc ID '{vpc_id}' does not exist"
    assert ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [vpc_id]}])["Tags"] == []


@pytest.mark.parametrize("cidr", ["10.0.0.0/15", "10.0.0.0/8", "10.0.0.0/29", "10.0.0.0/32"])
def test_create_vpc_range(ec2, cidr):
    assert expect_error("InvalidVpc.Range", ec2.create_vpc, CidrBlock=cidr) == f"The CIDR '{cidr}' is invalid."


@pytest.mark.parametrize("cidr", ["10.0.0.0/33", "300.0.0.0/16", "10.0.0.1/16", "nonsense"])
def test_create_vpc_malformed_block(ec2, cidr):
    assert expect_error("InvalidParameterValue", ec2.create_vpc, CidrBlock=cidr) == \
        f"Value ({cidr}) for parameter cidrBlock is invalid. This is not a valid CIDR block."


def test_create_vpc_smallest_and_largest(ec2):
    for cidr in ("10.99.0.0/16", "10.98.0.0/28"):
        vpc_id = ec2.create_vpc(CidrBlock=cidr)["Vpc"]["VpcId"]
        ec2.delete_vpc(VpcId=vpc_id)


def test_create_vpc_ipv6_and_tenancy_refused(ec2):
    code, message = error_of(ec2.create_vpc, CidrBlock="10.5.0.0/16", AmazonProvidedIpv6CidrBlock=True)
    assert code == "Unsupported" and "IPv6" in message
    expect_error("InvalidParameterValue", ec2.create_vpc, CidrBlock="10.5.0.0/16", InstanceTenancy="host")
    expect_error("MissingParameter", ec2.create_vpc)
    # nothing was made by the refused calls
    assert ec2.describe_vpcs(Filters=[{"Name": "cidr", "Values": ["10.5.0.0/16"]}])["Vpcs"] == []


def test_dedicated_tenancy_recorded(ec2):
    vpc_id = ec2.create_vpc(CidrBlock="10.6.0.0/16", InstanceTenancy="dedicated")["Vpc"]["VpcId"]
    try:
        got = ec2.describe_vpcs(Filters=[{"Name": "instance-tenancy", "Values": ["dedicated"]}])["Vpcs"]
        assert vpc_id in [v["VpcId"] for v in got]
    finally:
        ec2.delete_vpc(VpcId=vpc_id)


def test_new_vpc_defaults(ec2, vpc):
    groups = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["SecurityGroups"]
    assert [g["GroupName"] for g in groups] == ["default"]
    g = groups[0]
    # AWS's default rules: members admit each other; everything out
    assert g["IpPermissions"] == [{"IpProtocol": "-1", "IpRanges": [], "Ipv6Ranges": [], "PrefixListIds": [],
                                   "UserIdGroupPairs": [{"GroupId": g["GroupId"], "UserId": g["OwnerId"]}]}]
    assert g["IpPermissionsEgress"][0]["IpRanges"] == [{"CidrIp": "0.0.0.0/0"}]
    tables = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["RouteTables"]
    assert len(tables) == 1
    assert tables[0]["Associations"][0]["Main"] is True
    assert tables[0]["Routes"] == [{"DestinationCidrBlock": "10.20.0.0/16", "GatewayId": "local",
                                    "Origin": "CreateRouteTable", "State": "active"}]
    acls = ec2.describe_network_acls(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["NetworkAcls"]
    assert len(acls) == 1 and acls[0]["IsDefault"] is True
    assert {(e["RuleNumber"], e["RuleAction"], e["Egress"]) for e in acls[0]["Entries"]} == {
        (100, "allow", False), (32767, "deny", False), (100, "allow", True), (32767, "deny", True)}
    dopt = ec2.describe_vpcs(VpcIds=[vpc])["Vpcs"][0]["DhcpOptionsId"]
    conf = ec2.describe_dhcp_options(DhcpOptionsIds=[dopt])["DhcpOptions"][0]["DhcpConfigurations"]
    assert {c["Key"]: [v["Value"] for v in c["Values"]] for c in conf} == {
        "domain-name": ["ec2.internal"], "domain-name-servers": ["AmazonProvidedDNS"]}


def test_delete_vpc_takes_its_defaults(ec2):
    vpc_id = ec2.create_vpc(CidrBlock="10.7.0.0/16")["Vpc"]["VpcId"]
    by_vpc = [{"Name": "vpc-id", "Values": [vpc_id]}]
    sg = ec2.describe_security_groups(Filters=by_vpc)["SecurityGroups"][0]["GroupId"]
    rtb = ec2.describe_route_tables(Filters=by_vpc)["RouteTables"][0]["RouteTableId"]
    ec2.delete_vpc(VpcId=vpc_id)
    assert ec2.describe_security_groups(Filters=by_vpc)["SecurityGroups"] == []
    assert ec2.describe_route_tables(Filters=by_vpc)["RouteTables"] == []
    assert ec2.describe_network_acls(Filters=by_vpc)["NetworkAcls"] == []
    expect_error("InvalidGroup.NotFound", ec2.describe_security_groups, GroupIds=[sg])
    expect_error("InvalidRouteTableID.NotFound", ec2.describe_route_tables, RouteTableIds=[rtb])
    expect_error("InvalidVpcID.NotFound", ec2.delete_vpc, VpcId=vpc_id)


def test_delete_vpc_dependencies(ec2):
    vpc_id = ec2.create_vpc(CidrBlock="10.8.0.0/16")["Vpc"]["VpcId"]
    message = f"The vpc '{vpc_id}' has dependencies and cannot be deleted."

    def blocked():
        assert expect_error("DependencyViolation", ec2.delete_vpc, VpcId=vpc_id) == message

    subnet = ec2.create_subnet(VpcId=vpc_id, CidrBlock="10.8.1.0/24")["Subnet"]["SubnetId"]
    blocked()
    ec2.delete_subnet(SubnetId=subnet)
    igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc_id)
    blocked()
    ec2.detach_internet_gateway(InternetGatewayId=igw, VpcId=vpc_id)
    ec2.delete_internet_gateway(InternetGatewayId=igw)
    sg = ec2.create_security_group(GroupName=unique("grp"), Description="d", VpcId=vpc_id)["GroupId"]
    blocked()
    ec2.delete_security_group(GroupId=sg)
    rtb = ec2.create_route_table(VpcId=vpc_id)["RouteTable"]["RouteTableId"]
    blocked()
    ec2.delete_route_table(RouteTableId=rtb)
    ec2.delete_vpc(VpcId=vpc_id)


# ------------------------------------------------------------------------------- attributes

def test_vpc_attributes(ec2, vpc):
    get = lambda attr: ec2.describe_vpc_attribute(VpcId=vpc, Attribute=attr)  # noqa: E731
    assert get("enableDnsSupport")["EnableDnsSupport"] == {"Value": True}
    assert get("enableDnsHostnames")["EnableDnsHostnames"] == {"Value": False}
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    assert get("enableDnsHostnames")["EnableDnsHostnames"] == {"Value": True}
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsSupport={"Value": False})
    assert get("enableDnsSupport")["EnableDnsSupport"] == {"Value": False}
    message = expect_error("InvalidParameterCombination", ec2.modify_vpc_attribute, VpcId=vpc,
                           EnableDnsSupport={"Value": True}, EnableDnsHostnames={"Value": True})
    assert message.startswith("Fields for multiple attribute types specified: ")
    assert get("enableDnsSupport")["EnableDnsSupport"] == {"Value": False}  # unchanged
    expect_error("MissingParameter", ec2.modify_vpc_attribute, VpcId=vpc)
    expect_error("InvalidVpcID.NotFound", ec2.modify_vpc_attribute, VpcId="vpc-0123456789abcdef0",
                 EnableDnsSupport={"Value": True})


# ---------------------------------------------------------------------------------- subnets

def test_create_subnet(ec2, vpc):
    name = unique("subnet")
    s = ec2.create_subnet(VpcId=vpc, CidrBlock="10.20.1.0/24", AvailabilityZone="us-east-1b",
                          TagSpecifications=tagged(name, "subnet"))["Subnet"]
    assert s["SubnetId"].startswith("subnet-") and s["VpcId"] == vpc
    assert s["AvailabilityZone"] == "us-east-1b" and s["AvailableIpAddressCount"] == 256 - 5
    assert s["DefaultForAz"] is False and s["MapPublicIpOnLaunch"] is False
    assert s["Tags"] == [{"Key": "Name", "Value": name}]
    zone_id = s["AvailabilityZoneId"]
    s2 = ec2.create_subnet(VpcId=vpc, CidrBlock="10.20.2.0/28", AvailabilityZoneId=zone_id)["Subnet"]
    assert s2["AvailabilityZone"] == "us-east-1b" and s2["AvailableIpAddressCount"] == 16 - 5
    s3 = ec2.create_subnet(VpcId=vpc, CidrBlock="10.20.128.0/17")["Subnet"]  # zone chosen for us
    assert s3["AvailabilityZone"].startswith("us-east-1")
    got = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]
    assert sorted(x["CidrBlock"] for x in got) == ["10.20.1.0/24", "10.20.128.0/17", "10.20.2.0/28"]


def test_subnet_validation(ec2, vpc):
    ec2.create_subnet(VpcId=vpc, CidrBlock="10.20.0.0/20")
    for cidr in ("10.21.0.0/24", "10.0.0.0/8", "10.20.0.0/29", "10.20.0.0/15"):
        assert expect_error("InvalidSubnet.Range", ec2.create_subnet, VpcId=vpc, CidrBlock=cidr) == \
            f"The CIDR '{cidr}' is invalid."
    for cidr in ("10.20.0.0/24", "10.20.15.0/24", "10.20.0.0/16"):
        assert expect_error("InvalidSubnet.Conflict", ec2.create_subnet, VpcId=vpc, CidrBlock=cidr) == \
            f"The CIDR '{cidr}' conflicts with another subnet"
    expect_error("InvalidParameterValue", ec2.create_subnet, VpcId=vpc, CidrBlock="10.20.16.1/24")
    message = expect_error("InvalidParameterValue", ec2.create_subnet, VpcId=vpc, CidrBlock="10.20.16.0/24",
                           AvailabilityZone="us-east-1z")
    assert "us-east-1a" in message
    expect_error("InvalidParameterValue", ec2.create_subnet, VpcId=vpc, CidrBlock="10.20.16.0/24",
                 AvailabilityZoneId="use1-az99")
    expect_error("InvalidVpcID.NotFound", ec2.create_subnet, VpcId="vpc-0123456789abcdef0", CidrBlock="10.0.0.0/24")
    code, _ = error_of(ec2.create_subnet, VpcId=vpc, CidrBlock="10.20.16.0/24", Ipv6CidrBlock="2600::/64")
    assert code == "Unsupported"
    # the adjacent block is free
    ec2.create_subnet(VpcId=vpc, CidrBlock="10.20.16.0/24")


def test_same_cidr_in_two_vpcs(ec2):
    a = ec2.create_vpc(CidrBlock="10.30.0.0/16")["Vpc"]["VpcId"]
    b = ec2.create_vpc(CidrBlock="10.30.0.0/16")["Vpc"]["VpcId"]
    sa = ec2.create_subnet(VpcId=a, CidrBlock="10.30.0.0/24")["Subnet"]["SubnetId"]
    sb = ec2.create_subnet(VpcId=b, CidrBlock="10.30.0.0/24")["Subnet"]["SubnetId"]
    for s in (sa, sb):
        ec2.delete_subnet(SubnetId=s)
    for v in (a, b):
        ec2.delete_vpc(VpcId=v)


def test_modify_subnet_attribute(ec2, vpc):
    sid = ec2.create_subnet(VpcId=vpc, CidrBlock="10.20.3.0/24")["Subnet"]["SubnetId"]
    ec2.modify_subnet_attribute(SubnetId=sid, MapPublicIpOnLaunch={"Value": True})
    got = ec2.describe_subnets(SubnetIds=[sid])["Subnets"][0]
    assert got["MapPublicIpOnLaunch"] is True
    assert ec2.describe_subnets(Filters=[{"Name": "map-public-ip-on-launch", "Values": ["true"]},
                                         {"Name": "vpc-id", "Values": [vpc]}])["Subnets"][0]["SubnetId"] == sid
    ec2.modify_subnet_attribute(SubnetId=sid, EnableDns64={"Value": True})
    ec2.modify_subnet_attribute(SubnetId=sid, PrivateDnsHostnameTypeOnLaunch="resource-name")
    got = ec2.describe_subnets(SubnetIds=[sid])["Subnets"][0]
    assert got["EnableDns64"] is True and got["MapPublicIpOnLaunch"] is True
    assert got["PrivateDnsNameOptionsOnLaunch"]["HostnameType"] == "resource-name"
    expect_error("InvalidParameterValue", ec2.modify_subnet_attribute, SubnetId=sid,
                 AssignIpv6AddressOnCreation={"Value": True})
    expect_error("InvalidParameterCombination", ec2.modify_subnet_attribute, SubnetId=sid,
                 MapPublicIpOnLaunch={"Value": False}, EnableDns64={"Value": False})
    expect_error("InvalidSubnetID.NotFound", ec2.modify_subnet_attribute, SubnetId="subnet-0123456789abcdef0",
                 MapPublicIpOnLaunch={"Value": True})


def test_delete_subnet(ec2, vpc):
    sid = ec2.create_subnet(VpcId=vpc, CidrBlock="10.20.4.0/24")["Subnet"]["SubnetId"]
    rtb = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    ec2.associate_route_table(RouteTableId=rtb, SubnetId=sid)
    ec2.delete_subnet(SubnetId=sid)  # its association goes with it
    expect_error("InvalidSubnetID.NotFound", ec2.describe_subnets, SubnetIds=[sid])
    expect_error("InvalidSubnetID.NotFound", ec2.delete_subnet, SubnetId=sid)
    assert ec2.describe_route_tables(RouteTableIds=[rtb])["RouteTables"][0]["Associations"] == []
    ec2.delete_route_table(RouteTableId=rtb)


# ------------------------------------------------------------------------ default VPC/subnets

def test_default_vpc_and_subnets(server):
    from .conftest import OTHER_ACCESS_KEY, OTHER_SECRET_KEY
    client = server.client(region="eu-west-3", access_key=OTHER_ACCESS_KEY, secret_key=OTHER_SECRET_KEY)
    vpc = client.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]
    vpc_id = vpc["VpcId"]
    expect_error("DefaultVpcAlreadyExists", client.create_default_vpc)
    # the default VPC has an internet gateway and its main table routes to it
    igws = client.describe_internet_gateways(Filters=[{"Name": "attachment.vpc-id", "Values": [vpc_id]}])
    igw = igws["InternetGateways"][0]["InternetGatewayId"]
    main = client.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc_id]},
                                                 {"Name": "association.main", "Values": ["true"]}])["RouteTables"]
    assert {"DestinationCidrBlock": "0.0.0.0/0", "GatewayId": igw, "Origin": "CreateRoute",
            "State": "active"} in main[0]["Routes"]
    subnets = client.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["Subnets"]
    zone = subnets[0]["AvailabilityZone"]
    message = expect_error("DefaultSubnetAlreadyExistsInAvailabilityZone", client.create_default_subnet,
                           AvailabilityZone=zone)
    assert zone in message
    client.delete_subnet(SubnetId=subnets[0]["SubnetId"])
    again = client.create_default_subnet(AvailabilityZone=zone)["Subnet"]
    assert again["DefaultForAz"] is True and again["MapPublicIpOnLaunch"] is True
    assert again["CidrBlock"].endswith("/20") and again["AvailabilityZone"] == zone
    # the default VPC can be deleted once empty, and made again
    for s in client.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["Subnets"]:
        client.delete_subnet(SubnetId=s["SubnetId"])
    client.detach_internet_gateway(InternetGatewayId=igw, VpcId=vpc_id)
    client.delete_internet_gateway(InternetGatewayId=igw)
    client.delete_vpc(VpcId=vpc_id)
    expect_error("DefaultVpcDoesNotExist", client.create_default_subnet, AvailabilityZone=zone)
    new = client.create_default_vpc()["Vpc"]
    assert new["IsDefault"] is True and new["CidrBlock"] == "172.31.0.0/16"
    subnets = client.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [new["VpcId"]]}])["Subnets"]
    assert len(subnets) == 3 and all(s["DefaultForAz"] for s in subnets)


# ------------------------------------------------------------------------ launching into one

def test_launch_into_custom_subnet(ec2, vpc):
    sid = ec2.create_subnet(VpcId=vpc, CidrBlock="10.20.5.0/28")["Subnet"]["SubnetId"]
    default_vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    foreign = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [default_vpc]},
                                                    {"Name": "group-name", "Values": ["default"]}])
    foreign_id = foreign["SecurityGroups"][0]["GroupId"]
    image = tiny_image(ec2)
    message = expect_error("InvalidParameter", ec2.run_instances, ImageId=image, MinCount=1, MaxCount=1,
                           SubnetId=sid, SecurityGroupIds=[foreign_id])
    assert message == f"Security group {foreign_id} and subnet {sid} belong to different networks."
    # a /28 has 16 - 5 = 11 usable addresses: .4 to .14
    res = ec2.run_instances(ImageId=image, MinCount=11, MaxCount=11, SubnetId=sid)
    ids = [i["InstanceId"] for i in res["Instances"]]
    try:
        addresses = sorted(int(i["PrivateIpAddress"].rsplit(".", 1)[1]) for i in res["Instances"])
        assert addresses == list(range(4, 15))
        assert all(i["VpcId"] == vpc and i["SubnetId"] == sid for i in res["Instances"])
        group = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["SecurityGroups"][0]
        assert all(i["SecurityGroups"] == [{"GroupId": group["GroupId"], "GroupName": "default"}]
                   for i in res["Instances"])
        assert ec2.describe_subnets(SubnetIds=[sid])["Subnets"][0]["AvailableIpAddressCount"] == 0
        expect_error("InsufficientFreeAddressesInSubnet", ec2.run_instances, ImageId=image, MinCount=1,
                     MaxCount=1, SubnetId=sid)
        assert expect_error("DependencyViolation", ec2.delete_subnet, SubnetId=sid) == \
            f"The subnet '{sid}' has dependencies and cannot be deleted."
    finally:
        ec2.terminate_instances(InstanceIds=ids)
    fast_waiter(ec2, "instance_terminated")(InstanceIds=ids)
    ec2.delete_subnet(SubnetId=sid)


def test_dns_attributes_decide_public_dns_names_and_the_resolver(server, ec2, vpc):
    """A new VPC gives no public DNS names (enableDnsHostnames false), the default VPC does;
    both attributes true give them (DescribeInstances, its interfaces, the host's resolver
    settings), enableDnsSupport false takes them and the resolver away again."""
    import json

    def host_dns() -> tuple | None:
        try:
            host = json.loads((server.state_dir / "none-host.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):  # (replaced atomically; not written yet)
            return None
        got = host.get("vpcs", {}).get(vpc, {})
        return got.get("dns_support"), got.get("dns_names")

    def names(iid: str) -> tuple[str, str]:
        inst = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
        shown = inst["PublicDnsName"], inst["NetworkInterfaces"][0]["Association"]["PublicDnsName"]
        # the dns-name filters find an instance (its interface) by the name it shows, and only then
        public_ip = inst["PublicIpAddress"]
        name = "ec2-" + public_ip.replace(".", "-") + ".compute-1.amazonaws.com"
        found = [i["InstanceId"] for r in ec2.describe_instances(Filters=[{"Name": "dns-name", "Values": [name]}])[
            "Reservations"] for i in r["Instances"]]
        assert found == ([iid] if shown[0] else []), (found, shown)
        found = [e["NetworkInterfaceId"] for e in ec2.describe_network_interfaces(Filters=[
            {"Name": "association.public-dns-name", "Values": [name]}])["NetworkInterfaces"]]
        assert found == ([inst["NetworkInterfaces"][0]["NetworkInterfaceId"]] if shown[1] else []), (found, shown)
        return shown

    sid = ec2.create_subnet(VpcId=vpc, CidrBlock="10.20.9.0/24")["Subnet"]["SubnetId"]
    iid = ec2.run_instances(ImageId=tiny_image(ec2), MinCount=1, MaxCount=1, NetworkInterfaces=[
        {"DeviceIndex": 0, "SubnetId": sid, "AssociatePublicIpAddress": True}])["Instances"][0]["InstanceId"]
    fast_waiter(ec2, "instance_running")(InstanceIds=[iid])
    assert names(iid) == ("", "")
    assert host_dns() == (True, False)
    default = ec2.run_instances(ImageId=tiny_image(ec2), MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    assert names(default)[0].endswith(".compute-1.amazonaws.com")  # the control: the default VPC's
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    public_ip = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["PublicIpAddress"]
    expected = "ec2-" + public_ip.replace(".", "-") + ".compute-1.amazonaws.com"
    assert names(iid) == (expected, expected)
    eventually(lambda: host_dns() == (True, True), "the resolver answers the VPC's names")
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsSupport={"Value": False})
    assert names(iid) == ("", "")
    eventually(lambda: host_dns() == (False, False), "the resolver is off")
    ec2.terminate_instances(InstanceIds=[iid, default])
    fast_waiter(ec2, "instance_terminated")(InstanceIds=[iid, default])
    ec2.delete_subnet(SubnetId=sid)
