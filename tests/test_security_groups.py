"""Security groups and their rules, end to end with boto3 (and the AWS CLI once) against a real server."""
from __future__ import annotations

import uuid

import pytest

from .helpers import aws_cli, error_of, tiny_image
from botocore.exceptions import ClientError

from .conftest import OTHER_ACCESS_KEY, OTHER_ACCOUNT, OTHER_SECRET_KEY
from .server import ACCOUNT


def uniq(prefix: str = "sgtest") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def default_vpc_id(client) -> str:
    vpcs = client.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    assert len(vpcs) == 1
    return vpcs[0]["VpcId"]


def describe(client, group_id: str) -> dict:
    return client.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]


@pytest.fixture
def group(ec2):
    name = uniq()
    gid = ec2.create_security_group(GroupName=name, Description="test group")["GroupId"]
    yield gid
    try:
        ec2.delete_security_group(GroupId=gid)
    except ClientError as exc:  # only a test that deleted it itself may leave nothing to delete
        if exc.response["Error"]["Code"] != "InvalidGroup.NotFound":
            raise


def tcp(port: int, *cidrs: str, to: int | None = None, **extra) -> dict:
    return {"IpProtocol": "tcp", "FromPort": port, "ToPort": port if to is None else to,
            "IpRanges": [{"CidrIp": c} for c in cidrs], **extra}


# ------------------------------------------------------------------------------ default group

def test_default_group_of_a_new_account(server):
    # A region nobody else in the suite uses for the second account: its defaults are made now.
    client = server.client(region="ap-southeast-2", access_key=OTHER_ACCESS_KEY, secret_key=OTHER_SECRET_KEY)
    vpc_id = default_vpc_id(client)
    groups = client.describe_security_groups(
        Filters=[{"Name": "vpc-id", "Values": [vpc_id]}, {"Name": "group-name", "Values": ["default"]}]
    )["SecurityGroups"]
    assert len(groups) == 1
    g = groups[0]
    assert g["GroupId"].startswith("sg-") and len(g["GroupId"]) == 20
    assert g["Description"] == "default VPC security group"
    assert g["OwnerId"] == OTHER_ACCOUNT and g["VpcId"] == vpc_id
    assert g["SecurityGroupArn"] == f"arn:aws:ec2:ap-southeast-2:{OTHER_ACCOUNT}:security-group/{g['GroupId']}"
    assert g["IpPermissions"] == [{
        "IpProtocol": "-1", "IpRanges": [], "Ipv6Ranges": [], "PrefixListIds": [],
        "UserIdGroupPairs": [{"UserId": OTHER_ACCOUNT, "GroupId": g["GroupId"]}]}]
    assert g["IpPermissionsEgress"] == [{
        "IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}], "Ipv6Ranges": [], "PrefixListIds": [],
        "UserIdGroupPairs": []}]
    rules = client.describe_security_group_rules(
        Filters=[{"Name": "group-id", "Values": [g["GroupId"]]}])["SecurityGroupRules"]
    assert len(rules) == 2
    ingress = next(r for r in rules if not r["IsEgress"])
    assert ingress["ReferencedGroupInfo"] == {"GroupId": g["GroupId"], "UserId": OTHER_ACCOUNT}
    assert (ingress["IpProtocol"], ingress["FromPort"], ingress["ToPort"]) == ("-1", -1, -1)
    egress = next(r for r in rules if r["IsEgress"])
    assert egress["CidrIpv4"] == "0.0.0.0/0" and egress["GroupOwnerId"] == OTHER_ACCOUNT

    err = error_of(client.delete_security_group, GroupId=g["GroupId"])
    assert err == ("CannotDelete",
                   f'the specified group: "{g["GroupId"]}" name: "default" cannot be deleted by a user')
    err = error_of(client.delete_security_group, GroupName="default")
    assert err[0] == "CannotDelete"


# ------------------------------------------------------------------------- create / describe

def test_create_describe_delete(ec2):
    name, vpc_id = uniq(), default_vpc_id(ec2)
    out = ec2.create_security_group(
        GroupName=name, Description="web tier", VpcId=vpc_id,
        TagSpecifications=[{"ResourceType": "security-group", "Tags": [{"Key": "Name", "Value": name}]}])
    gid = out["GroupId"]
    assert gid.startswith("sg-")
    assert out["SecurityGroupArn"] == f"arn:aws:ec2:us-east-1:{ACCOUNT}:security-group/{gid}"
    assert out["Tags"] == [{"Key": "Name", "Value": name}]

    g = describe(ec2, gid)
    assert (g["GroupName"], g["Description"], g["VpcId"], g["OwnerId"]) == (name, "web tier", vpc_id, ACCOUNT)
    assert g["Tags"] == [{"Key": "Name", "Value": name}]
    assert g["IpPermissions"] == []
    assert g["IpPermissionsEgress"] == [{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
                                         "Ipv6Ranges": [], "PrefixListIds": [], "UserIdGroupPairs": []}]
    by_name = ec2.describe_security_groups(GroupNames=[name])["SecurityGroups"]
    assert [x["GroupId"] for x in by_name] == [gid]
    for f in ({"Name": "group-name", "Values": [name]}, {"Name": "tag:Name", "Values": [name]},
              {"Name": "group-id", "Values": [gid]}, {"Name": "tag-value", "Values": [name]}):
        found = ec2.describe_security_groups(Filters=[f])["SecurityGroups"]
        assert [x["GroupId"] for x in found] == [gid], f
    wild = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [name[:-3] + "*"]},
                                                 {"Name": "description", "Values": ["web tier"]},
                                                 {"Name": "owner-id", "Values": [ACCOUNT]}])["SecurityGroups"]
    assert [x["GroupId"] for x in wild] == [gid]
    assert ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [gid]}])["Tags"][0]["ResourceType"] \
        == "security-group"

    out = ec2.delete_security_group(GroupId=gid)
    assert out["Return"] is True and out["GroupId"] == gid
    err = error_of(ec2.describe_security_groups, GroupIds=[gid])
    assert err == ("InvalidGroup.NotFound", f"The security group '{gid}' does not exist")
    assert ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [gid]}])["Tags"] == []
    err = error_of(ec2.delete_security_group, GroupId=gid)
    assert err == ("InvalidGroup.NotFound", f"The security group '{gid}' does not exist")


def test_delete_by_name_and_lookup_errors(ec2):
    name = uniq()
    ec2.create_security_group(GroupName=name, Description="x")
    assert ec2.delete_security_group(GroupName=name)["Return"] is True
    vpc_id = default_vpc_id(ec2)
    err = error_of(ec2.delete_security_group, GroupName=name)
    assert err == ("InvalidGroup.NotFound",
                   f"The security group '{name}' does not exist in default VPC '{vpc_id}'")
    err = error_of(ec2.describe_security_groups, GroupNames=[name])
    assert err[0] == "InvalidGroup.NotFound"
    err = error_of(ec2.delete_security_group, GroupId="not-a-group")
    assert err == ("InvalidGroupId.Malformed", 'Invalid id: "not-a-group" (expecting "sg-...")')
    err = error_of(ec2.describe_security_groups, GroupIds=["sg-123"])
    assert err[0] == "InvalidGroupId.Malformed"
    err = error_of(ec2.delete_security_group)
    assert err[0] == "MissingParameter"


@pytest.mark.parametrize("name, fragment", [
    ("default", "Cannot use reserved security group name: default"),
    ("sg-mine", "Group names may not be in the format sg-*"),
    ("x" * 256, "Length exceeds maximum of 255 characters"),
    ("caf\u00e9", "Character sets beyond ASCII are not supported"),
])
def test_create_refuses_bad_names(ec2, name, fragment):
    code, message = error_of(ec2.create_security_group, GroupName=name, Description="x")
    assert code == "InvalidParameterValue" and fragment in message


def test_create_duplicate_and_bad_vpc(ec2):
    name, vpc_id = uniq(), default_vpc_id(ec2)
    gid = ec2.create_security_group(GroupName=name, Description="x")["GroupId"]
    try:
        err = error_of(ec2.create_security_group, GroupName=name, Description="again", VpcId=vpc_id)
        assert err == ("InvalidGroup.Duplicate",
                       f"The security group '{name}' already exists for VPC '{vpc_id}'")
        ok = ec2.create_security_group(GroupName=name + "-255".ljust(255 - len(name), "x"), Description="x")
        ec2.delete_security_group(GroupId=ok["GroupId"])
    finally:
        ec2.delete_security_group(GroupId=gid)
    err = error_of(ec2.create_security_group, GroupName=uniq(), Description="x", VpcId="vpc-0123456789abcdef0")
    assert err == ("InvalidVpcID.NotFound", "The vpc ID 'vpc-0123456789abcdef0' does not exist")
    err = error_of(ec2.create_security_group, GroupName=uniq(), Description="x",
                   TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "a", "Value": "b"}]}])
    assert err[0] == "InvalidParameterValue"


def test_other_account_cannot_see_the_group(ec2, other_account, group):
    err = error_of(other_account.describe_security_groups, GroupIds=[group])
    assert err == ("InvalidGroup.NotFound", f"The security group '{group}' does not exist")
    assert group not in [g["GroupId"] for g in other_account.describe_security_groups()["SecurityGroups"]]
    for call in (lambda: other_account.delete_security_group(GroupId=group),
                 lambda: other_account.authorize_security_group_ingress(GroupId=group, IpPermissions=[tcp(22, "0.0.0.0/0")])):
        err = error_of(call)
        assert err[0] == "InvalidGroup.NotFound"
    rule_id = ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [group]}])[
        "SecurityGroupRules"][0]["SecurityGroupRuleId"]
    err = error_of(other_account.describe_security_group_rules, SecurityGroupRuleIds=[rule_id])
    assert err[0] == "InvalidSecurityGroupRuleId.NotFound"
    describe(ec2, group)  # still there


# ------------------------------------------------------------------------- authorize / revoke

def test_authorize_and_describe_grouped_permissions(ec2, group):
    peer = ec2.create_security_group(GroupName=uniq(), Description="peer")["GroupId"]
    try:
        out = ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
             "IpRanges": [{"CidrIp": "10.0.0.0/8", "Description": "office"}, {"CidrIp": "192.168.1.0/24"}],
             "Ipv6Ranges": [{"CidrIpv6": "2001:db8::/32", "Description": "v6 office"}],
             "UserIdGroupPairs": [{"GroupId": peer, "Description": "from peer"}]},
            {"IpProtocol": "6", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
            {"IpProtocol": "icmp", "FromPort": -1, "ToPort": -1, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
            {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": peer, "UserId": ACCOUNT}]},
        ])
        assert out["Return"] is True
        rules = out["SecurityGroupRules"]
        assert len(rules) == 7
        assert all(r["SecurityGroupRuleId"].startswith("sgr-") and r["GroupId"] == group
                   and r["GroupOwnerId"] == ACCOUNT and r["IsEgress"] is False for r in rules)
        assert rules[0]["SecurityGroupRuleArn"] == \
            f"arn:aws:ec2:us-east-1:{ACCOUNT}:security-group-rule/{rules[0]['SecurityGroupRuleId']}"
        assert {(r["IpProtocol"], r["FromPort"], r["ToPort"]) for r in rules} == {
            ("tcp", 22, 22), ("tcp", 443, 443), ("icmp", -1, -1), ("-1", -1, -1)}
        assert rules[0]["CidrIpv4"] == "10.0.0.0/8" and rules[0]["Description"] == "office"
        assert rules[3]["ReferencedGroupInfo"] == {"GroupId": peer, "UserId": ACCOUNT}

        perms = describe(ec2, group)["IpPermissions"]
        assert perms == [
            {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
             "IpRanges": [{"CidrIp": "10.0.0.0/8", "Description": "office"}, {"CidrIp": "192.168.1.0/24"}],
             "Ipv6Ranges": [{"CidrIpv6": "2001:db8::/32", "Description": "v6 office"}],
             "PrefixListIds": [],
             "UserIdGroupPairs": [{"UserId": ACCOUNT, "GroupId": peer, "Description": "from peer"}]},
            {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
             "Ipv6Ranges": [], "PrefixListIds": [], "UserIdGroupPairs": []},
            {"IpProtocol": "icmp", "FromPort": -1, "ToPort": -1, "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
             "Ipv6Ranges": [], "PrefixListIds": [], "UserIdGroupPairs": []},
            {"IpProtocol": "-1", "IpRanges": [], "Ipv6Ranges": [], "PrefixListIds": [],
             "UserIdGroupPairs": [{"UserId": ACCOUNT, "GroupId": peer}]},
        ]

        # Filters on the permissions.
        def ids(*filters):
            return [g["GroupId"] for g in ec2.describe_security_groups(Filters=list(filters))["SecurityGroups"]]
        assert ids({"Name": "ip-permission.cidr", "Values": ["192.168.1.0/24"]},
                   {"Name": "group-id", "Values": [group, peer]}) == [group]
        assert group in ids({"Name": "ip-permission.group-id", "Values": [peer]})
        assert group in ids({"Name": "ip-permission.from-port", "Values": ["443"]},
                            {"Name": "ip-permission.protocol", "Values": ["tcp"]})
        assert group in ids({"Name": "ip-permission.group-name", "Values": [describe(ec2, peer)["GroupName"]]})
        assert group in ids({"Name": "ip-permission.ipv6-cidr", "Values": ["2001:db8::/32"]})
        assert group in ids({"Name": "ip-permission.user-id", "Values": [ACCOUNT]},
                            {"Name": "ip-permission.to-port", "Values": ["22"]})
        assert ids({"Name": "ip-permission.cidr", "Values": ["172.16.0.0/12"]},
                   {"Name": "group-id", "Values": [group]}) == []
        assert ids({"Name": "egress.ip-permission.cidr", "Values": ["0.0.0.0/0"]},
                   {"Name": "egress.ip-permission.protocol", "Values": ["-1"]},
                   {"Name": "group-id", "Values": [group]}) == [group]
        err = error_of(ec2.describe_security_groups, Filters=[{"Name": "ip-permission.bogus", "Values": ["x"]}])
        assert err[0] == "InvalidParameterValue"

        # The peer is referenced now: it cannot go.
        err = error_of(ec2.delete_security_group, GroupId=peer)
        assert err == ("DependencyViolation", f"resource {peer} has a dependent object")

        # Revoke in the same shapes; the rules go, and the peer may then be deleted.
        out = ec2.revoke_security_group_ingress(GroupId=group, IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "UserIdGroupPairs": [{"GroupId": peer}]},
            {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": peer}]}])
        assert out["Return"] is True
        assert {r["ReferencedGroupId"] for r in out["RevokedSecurityGroupRules"]} == {peer}
        ec2.delete_security_group(GroupId=peer)
        left = describe(ec2, group)["IpPermissions"]
        assert [p["UserIdGroupPairs"] for p in left] == [[], [], []]
    finally:
        try:
            ec2.delete_security_group(GroupId=peer)
        except ClientError:
            pass


def test_duplicate_and_missing_rules(ec2, group):
    ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[tcp(22, "0.0.0.0/0")])
    err = error_of(ec2.authorize_security_group_ingress, GroupId=group, IpPermissions=[
        tcp(80, "0.0.0.0/0"), {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
                               "IpRanges": [{"CidrIp": "0.0.0.0/0", "Description": "other words"}]}])
    assert err == ("InvalidPermission.Duplicate",
                   'the specified rule "peer: 0.0.0.0/0, TCP, from port: 22, to port: 22, ALLOW" already exists')
    # Nothing of the refused call was kept.
    assert [p["FromPort"] for p in describe(ec2, group)["IpPermissions"]] == [22]
    # Twice in one call is a duplicate too.
    err = error_of(ec2.authorize_security_group_ingress, GroupId=group, IpPermissions=[tcp(25, "1.2.3.4/32", "1.2.3.4/32")])
    assert err[0] == "InvalidPermission.Duplicate"
    # Every group already sends everywhere: adding that again is a duplicate.
    err = error_of(ec2.authorize_security_group_egress, GroupId=group, IpPermissions=[
        {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    assert err == ("InvalidPermission.Duplicate",
                   'the specified rule "peer: 0.0.0.0/0, ALL, ALLOW" already exists')

    out = ec2.revoke_security_group_ingress(GroupId=group, IpPermissions=[tcp(22, "0.0.0.0/0")])
    assert out["Return"] is True
    assert describe(ec2, group)["IpPermissions"] == []
    for perms in ([tcp(22, "0.0.0.0/0")], [tcp(22, "0.0.0.0/0", to=23)]):
        err = error_of(ec2.revoke_security_group_ingress, GroupId=group, IpPermissions=perms)
        assert err == ("InvalidPermission.NotFound",
                       "The specified rule does not exist in this security group.")


def test_egress_authorize_and_revoke(ec2, group):
    out = ec2.authorize_security_group_egress(GroupId=group, IpPermissions=[
        tcp(443, "0.0.0.0/0"), {"IpProtocol": "udp", "FromPort": 53, "ToPort": 53,
                                "Ipv6Ranges": [{"CidrIpv6": "::/0", "Description": "dns"}]}])
    assert [r["IsEgress"] for r in out["SecurityGroupRules"]] == [True, True]
    egress = describe(ec2, group)["IpPermissionsEgress"]
    assert [(p["IpProtocol"], p.get("FromPort")) for p in egress] == [("-1", None), ("tcp", 443), ("udp", 53)]
    assert egress[2]["Ipv6Ranges"] == [{"CidrIpv6": "::/0", "Description": "dns"}]
    assert describe(ec2, group)["IpPermissions"] == []

    # Revoke the default allow-all by permission, and the udp rule by its id.
    ec2.revoke_security_group_egress(GroupId=group, IpPermissions=[
        {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    udp_id = out["SecurityGroupRules"][1]["SecurityGroupRuleId"]
    out = ec2.revoke_security_group_egress(GroupId=group, SecurityGroupRuleIds=[udp_id])
    assert out["Return"] is True
    assert out["RevokedSecurityGroupRules"][0]["SecurityGroupRuleId"] == udp_id
    assert [p["IpProtocol"] for p in describe(ec2, group)["IpPermissionsEgress"]] == ["tcp"]
    err = error_of(ec2.revoke_security_group_egress, GroupId=group, SecurityGroupRuleIds=[udp_id])
    assert err[0] == "InvalidSecurityGroupRuleId.NotFound"
    # An ingress rule id is not an egress rule.
    ing = ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[tcp(22, "10.0.0.0/8")])
    ing_id = ing["SecurityGroupRules"][0]["SecurityGroupRuleId"]
    err = error_of(ec2.revoke_security_group_egress, GroupId=group, SecurityGroupRuleIds=[ing_id])
    assert err[0] == "InvalidSecurityGroupRuleId.NotFound"
    ec2.revoke_security_group_ingress(GroupId=group, SecurityGroupRuleIds=[ing_id])
    assert describe(ec2, group)["IpPermissions"] == []


def test_legacy_flat_ingress_form(ec2, group):
    name = describe(ec2, group)["GroupName"]
    peer_name = uniq()
    peer = ec2.create_security_group(GroupName=peer_name, Description="peer")["GroupId"]
    try:
        ec2.authorize_security_group_ingress(GroupName=name, IpProtocol="tcp", FromPort=80, ToPort=80,
                                             CidrIp="203.0.113.0/24")
        ec2.authorize_security_group_ingress(GroupId=group, SourceSecurityGroupName=peer_name,
                                             SourceSecurityGroupOwnerId=ACCOUNT)
        perms = describe(ec2, group)["IpPermissions"]
        assert [(p["IpProtocol"], p.get("FromPort"), p.get("ToPort")) for p in perms] == [
            ("tcp", 80, 80), ("tcp", 0, 65535), ("udp", 0, 65535), ("icmp", -1, -1)]
        assert perms[0]["IpRanges"] == [{"CidrIp": "203.0.113.0/24"}]
        assert all(p["UserIdGroupPairs"] == [{"UserId": ACCOUNT, "GroupId": peer}] for p in perms[1:])
        ec2.revoke_security_group_ingress(GroupName=name, IpProtocol="tcp", FromPort=80, ToPort=80,
                                          CidrIp="203.0.113.0/24")
        ec2.revoke_security_group_ingress(GroupId=group, SourceSecurityGroupName=peer_name)
        assert describe(ec2, group)["IpPermissions"] == []
    finally:
        ec2.delete_security_group(GroupId=peer)


@pytest.mark.parametrize("perm, code, message", [
    (tcp(22, "10.0.0.0/33"), "InvalidParameterValue", "CIDR block 10.0.0.0/33 is malformed"),
    (tcp(22, "10.0.0.1"), "InvalidParameterValue", "CIDR block 10.0.0.1 is malformed"),
    ({"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "Ipv6Ranges": [{"CidrIpv6": "10.0.0.0/8"}]},
     "InvalidParameterValue", "CIDR block 10.0.0.0/8 is malformed"),
    (tcp(-1, "10.0.0.0/8", to=22), "InvalidParameterValue", "TCP/UDP (from) port (-1) out of range"),
    (tcp(22, "10.0.0.0/8", to=70000), "InvalidParameterValue", "TCP/UDP (to) port (70000) out of range"),
    (tcp(80, "10.0.0.0/8", to=70), "InvalidParameterValue", None),
    ({"IpProtocol": "udp", "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}, "InvalidParameterValue",
     "Invalid value 'Must specify both from and to ports with TCP/UDP.' for portRange."),
    ({"IpProtocol": "icmp", "FromPort": 8, "ToPort": 300, "IpRanges": [{"CidrIp": "10.0.0.0/8"}]},
     "InvalidParameterValue", "ICMP code (300) out of range"),
    ({"IpProtocol": "icmp", "FromPort": 256, "ToPort": 0, "IpRanges": [{"CidrIp": "10.0.0.0/8"}]},
     "InvalidParameterValue", "ICMP type (256) out of range"),
    ({"IpProtocol": "all", "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}, "InvalidParameterValue",
     "Invalid value 'all' for IP protocol. Unknown protocol."),
    ({"IpProtocol": "256", "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}, "InvalidParameterValue",
     "Invalid value '256' for IP protocol. Unknown protocol."),
    ({"IpProtocol": "tcp", "FromPort": 1, "ToPort": 2, "UserIdGroupPairs": [{"GroupId": "sg-0123456789abcdef0"}]},
     "InvalidGroup.NotFound", "The security group 'sg-0123456789abcdef0' does not exist"),
    ({"IpProtocol": "tcp", "FromPort": 1, "ToPort": 2, "UserIdGroupPairs": [{"GroupName": "no-such-group-x"}]},
     "InvalidGroup.NotFound", "The security group 'no-such-group-x' does not exist"),
    ({"IpProtocol": "tcp", "FromPort": 1, "ToPort": 2,
      "IpRanges": [{"CidrIp": "10.0.0.0/8", "Description": "bad\u00e9"}]}, "InvalidParameterValue", None),
])
def test_rule_validation(ec2, group, perm, code, message):
    got_code, got_message = error_of(ec2.authorize_security_group_ingress, GroupId=group, IpPermissions=[perm])
    assert got_code == code
    if message:
        assert got_message == message
    assert describe(ec2, group)["IpPermissions"] == []


def test_other_protocols_cover_all_ports(ec2, group):
    out = ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[
        {"IpProtocol": "50", "FromPort": 5, "ToPort": 6, "IpRanges": [{"CidrIp": "10.0.0.0/8"}]},
        {"IpProtocol": "17", "FromPort": 53, "ToPort": 53, "IpRanges": [{"CidrIp": "10.0.0.0/8"}]},
        {"IpProtocol": "icmpv6", "FromPort": -1, "ToPort": -1, "Ipv6Ranges": [{"CidrIpv6": "::/0"}]},
        {"IpProtocol": "tcp", "FromPort": 1, "ToPort": 2}])  # no peer: grants nothing
    assert [(r["IpProtocol"], r["FromPort"], r["ToPort"]) for r in out["SecurityGroupRules"]] == [
        ("50", -1, -1), ("udp", 53, 53), ("icmpv6", -1, -1)]
    perms = describe(ec2, group)["IpPermissions"]
    assert perms[0] == {"IpProtocol": "50", "IpRanges": [{"CidrIp": "10.0.0.0/8"}], "Ipv6Ranges": [],
                        "PrefixListIds": [], "UserIdGroupPairs": []}


def test_rule_limit(ec2, group):
    cidrs = [f"10.{i}.0.0/16" for i in range(60)]
    ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[tcp(22, *cidrs)])
    err = error_of(ec2.authorize_security_group_ingress, GroupId=group, IpPermissions=[tcp(22, "11.0.0.0/8")])
    assert err == ("RulesPerSecurityGroupLimitExceeded",
                   "The maximum number of rules per security group has been reached.")
    # IPv6 peers count on their own.
    ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "Ipv6Ranges": [{"CidrIpv6": "2001:db8::/32"}]}])
    # Egress has its own allowance.
    ec2.authorize_security_group_egress(GroupId=group, IpPermissions=[tcp(22, "11.0.0.0/8")])


# ---------------------------------------------------------------------------- rule level

def test_describe_security_group_rules(ec2, group):
    out = ec2.authorize_security_group_ingress(
        GroupId=group, IpPermissions=[tcp(22, "10.0.0.0/8", "172.16.0.0/12")],
        TagSpecifications=[{"ResourceType": "security-group-rule", "Tags": [{"Key": "purpose", "Value": "ssh"}]}])
    ids = [r["SecurityGroupRuleId"] for r in out["SecurityGroupRules"]]
    assert all(r["Tags"] == [{"Key": "purpose", "Value": "ssh"}] for r in out["SecurityGroupRules"])

    got = ec2.describe_security_group_rules(SecurityGroupRuleIds=ids)["SecurityGroupRules"]
    assert sorted(r["SecurityGroupRuleId"] for r in got) == sorted(ids)
    r = next(x for x in got if x["SecurityGroupRuleId"] == ids[0])
    assert r == {"SecurityGroupRuleId": ids[0], "GroupId": group, "GroupOwnerId": ACCOUNT, "IsEgress": False,
                 "IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "CidrIpv4": "10.0.0.0/8",
                 "Tags": [{"Key": "purpose", "Value": "ssh"}],
                 "SecurityGroupRuleArn": f"arn:aws:ec2:us-east-1:{ACCOUNT}:security-group-rule/{ids[0]}"}

    by_group = ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [group]}])["SecurityGroupRules"]
    assert len(by_group) == 3  # two ingress, the default egress
    tagged = ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [group]},
                                                        {"Name": "tag:purpose", "Values": ["ssh"]}])
    assert sorted(x["SecurityGroupRuleId"] for x in tagged["SecurityGroupRules"]) == sorted(ids)
    one = ec2.describe_security_group_rules(Filters=[{"Name": "security-group-rule-id", "Values": [ids[1]]}])
    assert [x["CidrIpv4"] for x in one["SecurityGroupRules"]] == ["172.16.0.0/12"]

    # Rules are taggable resources of their own.
    ec2.create_tags(Resources=[ids[1]], Tags=[{"Key": "extra", "Value": "1"}])
    tags = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [ids[1]]}])["Tags"]
    assert {t["Key"] for t in tags} == {"purpose", "extra"}
    assert {t["ResourceType"] for t in tags} == {"security-group-rule"}

    err = error_of(ec2.describe_security_group_rules, SecurityGroupRuleIds=["sgr-0123456789abcdef0"])
    assert err[0] == "InvalidSecurityGroupRuleId.NotFound"

    # Paging over one group's rules.
    ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[tcp(p, "10.0.0.0/8") for p in range(100, 105)])
    seen, token = [], None
    while True:
        kw = {"NextToken": token} if token else {}
        page = ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [group]}],
                                                 MaxResults=5, **kw)
        assert len(page["SecurityGroupRules"]) <= 5
        seen += [x["SecurityGroupRuleId"] for x in page["SecurityGroupRules"]]
        token = page.get("NextToken")
        if not token:
            break
    assert len(seen) == len(set(seen)) == 8


def test_description_updates(ec2, group):
    ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
         "IpRanges": [{"CidrIp": "10.0.0.0/8", "Description": "old"}, {"CidrIp": "192.168.0.0/16"}]}])
    out = ec2.update_security_group_rule_descriptions_ingress(GroupId=group, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
         "IpRanges": [{"CidrIp": "10.0.0.0/8", "Description": "new"},
                      {"CidrIp": "192.168.0.0/16", "Description": "lan"}]}])
    assert out["Return"] is True
    ranges = describe(ec2, group)["IpPermissions"][0]["IpRanges"]
    assert ranges == [{"CidrIp": "10.0.0.0/8", "Description": "new"},
                      {"CidrIp": "192.168.0.0/16", "Description": "lan"}]
    err = error_of(ec2.update_security_group_rule_descriptions_ingress, GroupId=group, IpPermissions=[tcp(23, "10.0.0.0/8")])
    assert err[0] == "InvalidPermission.NotFound"

    egress_id = ec2.describe_security_group_rules(
        Filters=[{"Name": "group-id", "Values": [group]}])["SecurityGroupRules"]
    egress_id = next(r["SecurityGroupRuleId"] for r in egress_id if r["IsEgress"])
    ec2.update_security_group_rule_descriptions_egress(
        GroupId=group, SecurityGroupRuleDescriptions=[{"SecurityGroupRuleId": egress_id, "Description": "anywhere"}])
    assert describe(ec2, group)["IpPermissionsEgress"][0]["IpRanges"] == [
        {"CidrIp": "0.0.0.0/0", "Description": "anywhere"}]
    # By name in the default VPC, too.
    name = describe(ec2, group)["GroupName"]
    ec2.update_security_group_rule_descriptions_ingress(GroupName=name, IpPermissions=[tcp(22, "10.0.0.0/8")])
    assert describe(ec2, group)["IpPermissions"][0]["IpRanges"][0] == {"CidrIp": "10.0.0.0/8"}


def test_modify_security_group_rules(ec2, group):
    out = ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[tcp(22, "10.0.0.0/8", "10.1.0.0/16")])
    first, second = (r["SecurityGroupRuleId"] for r in out["SecurityGroupRules"])
    assert ec2.modify_security_group_rules(GroupId=group, SecurityGroupRules=[{
        "SecurityGroupRuleId": first,
        "SecurityGroupRule": {"IpProtocol": "tcp", "FromPort": 8080, "ToPort": 8081, "CidrIpv4": "10.2.0.0/16",
                              "Description": "moved"}}])["Return"] is True
    r = ec2.describe_security_group_rules(SecurityGroupRuleIds=[first])["SecurityGroupRules"][0]
    assert (r["FromPort"], r["ToPort"], r["CidrIpv4"], r["Description"]) == (8080, 8081, "10.2.0.0/16", "moved")
    err = error_of(ec2.modify_security_group_rules, GroupId=group, SecurityGroupRules=[{
        "SecurityGroupRuleId": first,
        "SecurityGroupRule": {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "CidrIpv4": "10.1.0.0/16"}}])
    assert err[0] == "InvalidPermission.Duplicate"  # it would duplicate the second rule
    err = error_of(ec2.modify_security_group_rules, GroupId=group, SecurityGroupRules=[{
        "SecurityGroupRuleId": "sgr-0123456789abcdef0",
        "SecurityGroupRule": {"IpProtocol": "-1", "CidrIpv4": "0.0.0.0/0"}}])
    assert err[0] == "InvalidSecurityGroupRuleId.NotFound"
    # Swapping a rule to a group reference.
    ec2.modify_security_group_rules(GroupId=group, SecurityGroupRules=[{
        "SecurityGroupRuleId": second,
        "SecurityGroupRule": {"IpProtocol": "-1", "ReferencedGroupId": group}}])
    r = ec2.describe_security_group_rules(SecurityGroupRuleIds=[second])["SecurityGroupRules"][0]
    assert r["ReferencedGroupInfo"] == {"GroupId": group, "UserId": ACCOUNT} and "CidrIpv4" not in r


# ------------------------------------------------------------------------------- paging, CLI

def test_paging(server, ec2):
    marker = uniq("page")
    made = [ec2.create_security_group(
        GroupName=uniq(), Description="paged",
        TagSpecifications=[{"ResourceType": "security-group", "Tags": [{"Key": "page", "Value": marker}]}]
    )["GroupId"] for _ in range(7)]
    try:
        flt = [{"Name": "tag:page", "Values": [marker]}]
        first = ec2.describe_security_groups(Filters=flt, MaxResults=5)
        assert len(first["SecurityGroups"]) == 5 and first.get("NextToken")
        rest = ec2.describe_security_groups(Filters=flt, MaxResults=5, NextToken=first["NextToken"])
        assert len(rest["SecurityGroups"]) == 2 and not rest.get("NextToken")
        got = [g["GroupId"] for g in first["SecurityGroups"] + rest["SecurityGroups"]]
        assert sorted(got) == sorted(made)
        pages = ec2.get_paginator("describe_security_groups").paginate(Filters=flt, PaginationConfig={"PageSize": 5})
        assert sorted(g["GroupId"] for p in pages for g in p["SecurityGroups"]) == sorted(made)
        unchecked = server.client(parameter_validation=False)
        err = error_of(unchecked.describe_security_groups, MaxResults=4)
        assert err[0] == "InvalidParameterValue"
    finally:
        for gid in made:
            ec2.delete_security_group(GroupId=gid)


def test_aws_cli_describe(server, ec2, group):
    ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[tcp(22, "198.51.100.0/24")])
    groups = aws_cli(server, "ec2", "describe-security-groups", "--group-ids", group)["SecurityGroups"]
    assert [g["GroupId"] for g in groups] == [group]
    assert groups[0]["IpPermissions"][0]["IpRanges"] == [{"CidrIp": "198.51.100.0/24"}]


def test_group_used_by_an_instance_cannot_be_deleted(ec2, group):
    image = tiny_image(ec2)
    iid = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.micro",
                            SecurityGroupIds=[group])["Instances"][0]["InstanceId"]
    err = error_of(ec2.delete_security_group, GroupId=group)
    assert err == ("DependencyViolation", f"resource {group} has a dependent object")
    ec2.terminate_instances(InstanceIds=[iid])
    ec2.get_waiter("instance_terminated").wait(InstanceIds=[iid], WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    assert ec2.delete_security_group(GroupId=group)["Return"] is True
