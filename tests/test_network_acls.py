"""Network ACLs end to end with boto3 on the none driver: custom ACLs, their entries and
associations, AWS's errors, and what the host is asked to enforce (the `none` driver keeps what
apply_firewall was given)."""
from __future__ import annotations

import json
import time

import pytest

from .helpers import expect_error, unique

MISSING_ACL = "acl-0123456789abcdef0"
SSH = {"Protocol": "6", "PortRange": {"From": 22, "To": 22}}


@pytest.fixture
def vpc(ec2):
    vpc_id = ec2.create_vpc(CidrBlock="10.41.0.0/16")["Vpc"]["VpcId"]
    yield vpc_id
    by_vpc = [{"Name": "vpc-id", "Values": [vpc_id]}]
    default = default_acl(ec2, vpc_id)
    for a in ec2.describe_network_acls(Filters=by_vpc)["NetworkAcls"]:
        for assoc in a["Associations"]:
            if a["NetworkAclId"] != default:
                ec2.replace_network_acl_association(AssociationId=assoc["NetworkAclAssociationId"],
                                                    NetworkAclId=default)
    for a in ec2.describe_network_acls(Filters=by_vpc)["NetworkAcls"]:
        if not a["IsDefault"]:
            ec2.delete_network_acl(NetworkAclId=a["NetworkAclId"])
    for s in ec2.describe_subnets(Filters=by_vpc)["Subnets"]:
        ec2.delete_subnet(SubnetId=s["SubnetId"])
    ec2.delete_vpc(VpcId=vpc_id)


def default_acl(ec2, vpc_id: str) -> str:
    acls = ec2.describe_network_acls(Filters=[{"Name": "vpc-id", "Values": [vpc_id]},
                                              {"Name": "default", "Values": ["true"]}])["NetworkAcls"]
    assert len(acls) == 1
    return acls[0]["NetworkAclId"]


def acl_of(ec2, acl_id: str) -> dict:
    return ec2.describe_network_acls(NetworkAclIds=[acl_id])["NetworkAcls"][0]


def entries(ec2, acl_id: str) -> set:
    return {(e["RuleNumber"], e["Egress"], e["Protocol"], e["RuleAction"], e["CidrBlock"],
             json.dumps(e.get("PortRange"), sort_keys=True), json.dumps(e.get("IcmpTypeCode"), sort_keys=True))
            for e in acl_of(ec2, acl_id)["Entries"]}


def association(ec2, subnet_id: str) -> dict:
    acls = ec2.describe_network_acls(Filters=[{"Name": "association.subnet-id", "Values": [subnet_id]}])["NetworkAcls"]
    assert len(acls) == 1
    return next(a for a in acls[0]["Associations"] if a["SubnetId"] == subnet_id)


def test_create_describe_delete_with_tags(ec2, vpc):
    made = ec2.create_network_acl(VpcId=vpc, TagSpecifications=[
        {"ResourceType": "network-acl", "Tags": [{"Key": "Name", "Value": "web"}]}])["NetworkAcl"]
    acl = made["NetworkAclId"]
    assert acl.startswith("acl-") and len(acl) == 21
    assert made["VpcId"] == vpc and made["IsDefault"] is False and made["Associations"] == []
    assert made["Tags"] == [{"Key": "Name", "Value": "web"}]
    # A new ACL denies everything: only the '*' rules, both directions.
    assert {(e["RuleNumber"], e["Egress"], e["RuleAction"]) for e in made["Entries"]} == {
        (32767, False, "deny"), (32767, True, "deny")}
    found = ec2.describe_network_acls(Filters=[{"Name": "tag:Name", "Values": ["web"]},
                                               {"Name": "vpc-id", "Values": [vpc]}])["NetworkAcls"]
    assert [a["NetworkAclId"] for a in found] == [acl]
    assert [a["NetworkAclId"] for a in ec2.describe_network_acls(Filters=[
        {"Name": "vpc-id", "Values": [vpc]}, {"Name": "default", "Values": ["false"]}])["NetworkAcls"]] == [acl]
    ec2.create_tags(Resources=[acl], Tags=[{"Key": "tier", "Value": "db"}])
    assert {t["Key"] for t in acl_of(ec2, acl)["Tags"]} == {"Name", "tier"}
    ec2.delete_network_acl(NetworkAclId=acl)
    expect_error("InvalidNetworkAclID.NotFound", ec2.describe_network_acls, NetworkAclIds=[acl])
    expect_error("InvalidNetworkAclID.NotFound", ec2.delete_network_acl, NetworkAclId=acl)
    expect_error("InvalidVpcID.NotFound", ec2.create_network_acl, VpcId="vpc-0123456789abcdef0")


def test_the_default_acl_cannot_be_deleted(ec2, vpc):
    default = default_acl(ec2, vpc)
    message = expect_error("InvalidParameterValue", ec2.delete_network_acl, NetworkAclId=default)
    assert message == f"cannot delete default network ACL {default}"


def test_entries_create_replace_delete(ec2, vpc):
    acl = ec2.create_network_acl(VpcId=vpc)["NetworkAcl"]["NetworkAclId"]
    ec2.create_network_acl_entry(NetworkAclId=acl, RuleNumber=100, Egress=False, RuleAction="allow",
                                 CidrBlock="10.1.2.3/16", **SSH)
    ec2.create_network_acl_entry(NetworkAclId=acl, RuleNumber=100, Egress=True, RuleAction="allow",
                                 CidrBlock="0.0.0.0/0", Protocol="tcp", PortRange={"From": 1024, "To": 65535})
    ec2.create_network_acl_entry(NetworkAclId=acl, RuleNumber=90, Egress=False, RuleAction="deny",
                                 CidrBlock="192.0.2.0/24", Protocol="1", IcmpTypeCode={"Type": 8, "Code": -1})
    ec2.create_network_acl_entry(NetworkAclId=acl, RuleNumber=200, Egress=False, RuleAction="allow",
                                 CidrBlock="0.0.0.0/0", Protocol="-1")
    ec2.create_network_acl_entry(NetworkAclId=acl, RuleNumber=300, Egress=True, RuleAction="deny",
                                 CidrBlock="0.0.0.0/0", Protocol="47", PortRange={"From": 1, "To": 2})
    ssh_range = json.dumps({"From": 22, "To": 22}, sort_keys=True)
    assert entries(ec2, acl) == {
        (100, False, "6", "allow", "10.1.0.0/16", ssh_range, "null"),  # the CIDR in canonical form
        (100, True, "6", "allow", "0.0.0.0/0", json.dumps({"From": 1024, "To": 65535}, sort_keys=True), "null"),
        (90, False, "1", "deny", "192.0.2.0/24", "null", json.dumps({"Code": -1, "Type": 8}, sort_keys=True)),
        (200, False, "-1", "allow", "0.0.0.0/0", "null", "null"),
        (300, True, "47", "deny", "0.0.0.0/0", "null", "null"),  # (ports mean nothing for GRE)
        (32767, False, "-1", "deny", "0.0.0.0/0", "null", "null"),
        (32767, True, "-1", "deny", "0.0.0.0/0", "null", "null")}
    # Listed lowest number first within each direction.
    listed = [(e["Egress"], e["RuleNumber"]) for e in acl_of(ec2, acl)["Entries"]]
    assert listed == sorted(listed)
    found = ec2.describe_network_acls(Filters=[{"Name": "entry.port-range.from", "Values": ["1024"]}])["NetworkAcls"]
    assert [a["NetworkAclId"] for a in found] == [acl]
    found = ec2.describe_network_acls(Filters=[{"Name": "entry.rule-number", "Values": ["90"]},
                                               {"Name": "vpc-id", "Values": [vpc]}])["NetworkAcls"]
    assert [a["NetworkAclId"] for a in found] == [acl]

    # The same number in the same direction is taken; in the other direction it is not.
    message = expect_error("NetworkAclEntryAlreadyExists", ec2.create_network_acl_entry, NetworkAclId=acl,
                           RuleNumber=100, Egress=False, RuleAction="deny", CidrBlock="0.0.0.0/0", Protocol="-1")
    assert message == "The network acl entry identified by 100 already exists."

    ec2.replace_network_acl_entry(NetworkAclId=acl, RuleNumber=100, Egress=False, RuleAction="deny",
                                  CidrBlock="10.1.0.0/16", Protocol="17", PortRange={"From": 53, "To": 53})
    e100 = [e for e in acl_of(ec2, acl)["Entries"] if e["RuleNumber"] == 100 and not e["Egress"]]
    assert e100 == [{"RuleNumber": 100, "Egress": False, "Protocol": "17", "RuleAction": "deny",
                     "CidrBlock": "10.1.0.0/16", "PortRange": {"From": 53, "To": 53}}]
    message = expect_error("InvalidNetworkAclEntry.NotFound", ec2.replace_network_acl_entry, NetworkAclId=acl,
                           RuleNumber=101, Egress=False, RuleAction="deny", CidrBlock="0.0.0.0/0", Protocol="-1")
    assert message == "no ingress entry with number 101"

    ec2.delete_network_acl_entry(NetworkAclId=acl, RuleNumber=100, Egress=True)
    assert (100, True) not in {(e["RuleNumber"], e["Egress"]) for e in acl_of(ec2, acl)["Entries"]}
    assert (100, False) in {(e["RuleNumber"], e["Egress"]) for e in acl_of(ec2, acl)["Entries"]}
    message = expect_error("InvalidNetworkAclEntry.NotFound", ec2.delete_network_acl_entry, NetworkAclId=acl,
                           RuleNumber=100, Egress=True)
    assert message == "no egress entry with number 100"
    expect_error("InvalidNetworkAclID.NotFound", ec2.delete_network_acl_entry, NetworkAclId=MISSING_ACL,
                 RuleNumber=1, Egress=True)
    expect_error("InvalidNetworkAclID.NotFound", ec2.create_network_acl_entry, NetworkAclId=MISSING_ACL,
                 RuleNumber=1, Egress=False, RuleAction="allow", CidrBlock="0.0.0.0/0", Protocol="-1")


@pytest.mark.parametrize("change, code", [
    ({"RuleNumber": 0}, "InvalidParameterValue"),
    ({"RuleNumber": 32767}, "InvalidParameterValue"),
    ({"RuleNumber": 40000}, "InvalidParameterValue"),
    ({"Protocol": "tcp", "PortRange": None}, "MissingParameter"),
    ({"Protocol": "17", "PortRange": {"From": 10}}, "MissingParameter"),
    ({"Protocol": "6", "PortRange": {"From": 80, "To": 79}}, "InvalidParameterValue"),
    ({"Protocol": "6", "PortRange": {"From": 0, "To": 70000}}, "InvalidParameterValue"),
    ({"Protocol": "1"}, "MissingParameter"),
    ({"Protocol": "icmp", "IcmpTypeCode": {"Type": 300, "Code": 0}}, "InvalidParameterValue"),
    ({"Protocol": "256"}, "InvalidParameterValue"),
    ({"Protocol": "bogus"}, "InvalidParameterValue"),
    ({"CidrBlock": "10.0.0.300/8"}, "InvalidParameterValue"),
    ({"CidrBlock": None}, "MissingParameter"),
    ({"CidrBlock": None, "Ipv6CidrBlock": "::/0"}, "Unsupported"),
    ({"RuleAction": "maybe"}, "InvalidParameterValue"),
])
def test_bad_entries_are_refused(ec2, vpc, change, code):
    acl = ec2.create_network_acl(VpcId=vpc)["NetworkAcl"]["NetworkAclId"]
    request = {"NetworkAclId": acl, "RuleNumber": 10, "Egress": False, "RuleAction": "allow",
               "CidrBlock": "0.0.0.0/0", "Protocol": "-1", **change}
    request = {k: v for k, v in request.items() if v is not None}
    expect_error(code, ec2.create_network_acl_entry, **request)
    assert {e["RuleNumber"] for e in acl_of(ec2, acl)["Entries"]} == {32767}  # nothing was added
    # Replace refuses it the same way (the entry is checked before it is looked for).
    ec2.create_network_acl_entry(NetworkAclId=acl, RuleNumber=10, Egress=False, RuleAction="allow",
                                 CidrBlock="0.0.0.0/0", Protocol="-1")
    expect_error(code, ec2.replace_network_acl_entry, **request)
    assert {e["RuleNumber"] for e in acl_of(ec2, acl)["Entries"]} == {10, 32767}


def test_the_catch_all_rule_cannot_be_deleted(ec2, vpc):
    acl = ec2.create_network_acl(VpcId=vpc)["NetworkAcl"]["NetworkAclId"]
    expect_error("InvalidParameterValue", ec2.delete_network_acl_entry, NetworkAclId=acl, RuleNumber=32767,
                 Egress=False)
    assert len(acl_of(ec2, acl)["Entries"]) == 2


def test_entries_per_direction_are_limited(ec2, vpc):
    acl = ec2.create_network_acl(VpcId=vpc)["NetworkAcl"]["NetworkAclId"]
    for n in range(1, 21):
        ec2.create_network_acl_entry(NetworkAclId=acl, RuleNumber=n, Egress=False, RuleAction="allow",
                                     CidrBlock="0.0.0.0/0", Protocol="-1")
    expect_error("NetworkAclEntryLimitExceeded", ec2.create_network_acl_entry, NetworkAclId=acl, RuleNumber=21,
                 Egress=False, RuleAction="allow", CidrBlock="0.0.0.0/0", Protocol="-1")
    # The other direction has its own count.
    ec2.create_network_acl_entry(NetworkAclId=acl, RuleNumber=21, Egress=True, RuleAction="allow",
                                 CidrBlock="0.0.0.0/0", Protocol="-1")


def test_subnets_start_with_the_default_acl_and_move(ec2, vpc):
    default = default_acl(ec2, vpc)
    s1 = ec2.create_subnet(VpcId=vpc, CidrBlock="10.41.1.0/24")["Subnet"]["SubnetId"]
    s2 = ec2.create_subnet(VpcId=vpc, CidrBlock="10.41.2.0/24")["Subnet"]["SubnetId"]
    first = association(ec2, s1)
    assert first["NetworkAclId"] == default and first["NetworkAclAssociationId"].startswith("aclassoc-")
    assert association(ec2, s1) == first  # stable

    acl = ec2.create_network_acl(VpcId=vpc)["NetworkAcl"]["NetworkAclId"]
    moved = ec2.replace_network_acl_association(AssociationId=first["NetworkAclAssociationId"],
                                                NetworkAclId=acl)["NewAssociationId"]
    assert moved.startswith("aclassoc-") and moved != first["NetworkAclAssociationId"]
    assert association(ec2, s1) == {"NetworkAclAssociationId": moved, "NetworkAclId": acl, "SubnetId": s1}
    assert [a["SubnetId"] for a in acl_of(ec2, default)["Associations"]] == [s2]
    found = ec2.describe_network_acls(Filters=[{"Name": "association.association-id", "Values": [moved]}])
    assert [a["NetworkAclId"] for a in found["NetworkAcls"]] == [acl]
    # The old association id is gone.
    expect_error("InvalidAssociationID.NotFound", ec2.replace_network_acl_association,
                 AssociationId=first["NetworkAclAssociationId"], NetworkAclId=default)

    # In use: not deleted.
    message = expect_error("DependencyViolation", ec2.delete_network_acl, NetworkAclId=acl)
    assert message == f"The networkAcl '{acl}' has dependencies and cannot be deleted."
    # Nor is the VPC while a custom ACL is in it (AWS deletes the default one only).
    expect_error("DependencyViolation", ec2.delete_vpc, VpcId=vpc)

    back = ec2.replace_network_acl_association(AssociationId=moved, NetworkAclId=default)["NewAssociationId"]
    assert back not in (moved, first["NetworkAclAssociationId"])
    assert association(ec2, s1)["NetworkAclId"] == default
    ec2.delete_network_acl(NetworkAclId=acl)

    # Another VPC's ACL is refused; unknown ids are refused.
    other = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
    try:
        expect_error("InvalidParameterValue", ec2.replace_network_acl_association, AssociationId=back,
                     NetworkAclId=default_acl(ec2, other))
    finally:
        ec2.delete_vpc(VpcId=other)
    expect_error("InvalidNetworkAclID.NotFound", ec2.replace_network_acl_association, AssociationId=back,
                 NetworkAclId=MISSING_ACL)
    expect_error("InvalidAssociationID.NotFound", ec2.replace_network_acl_association,
                 AssociationId="aclassoc-0123456789abcdef0", NetworkAclId=default)

    # Deleting a subnet forgets its association (also a moved one).
    ec2.delete_subnet(SubnetId=s1)
    assert ec2.describe_network_acls(Filters=[{"Name": "association.subnet-id", "Values": [s1]}])[
        "NetworkAcls"] == []


def test_other_accounts_see_nothing(ec2, other_account, vpc):
    acl = ec2.create_network_acl(VpcId=vpc)["NetworkAcl"]["NetworkAclId"]
    expect_error("InvalidNetworkAclID.NotFound", other_account.delete_network_acl, NetworkAclId=acl)
    expect_error("InvalidNetworkAclID.NotFound", other_account.create_network_acl_entry, NetworkAclId=acl,
                 RuleNumber=1, Egress=False, RuleAction="allow", CidrBlock="0.0.0.0/0", Protocol="-1")


def test_delete_vpc_takes_its_default_acl(ec2):
    vpc = ec2.create_vpc(CidrBlock="10.43.0.0/16")["Vpc"]["VpcId"]
    default = default_acl(ec2, vpc)
    sid = ec2.create_subnet(VpcId=vpc, CidrBlock="10.43.1.0/24")["Subnet"]["SubnetId"]
    acl = ec2.create_network_acl(VpcId=vpc)["NetworkAcl"]["NetworkAclId"]
    ec2.replace_network_acl_association(AssociationId=association(ec2, sid)["NetworkAclAssociationId"],
                                        NetworkAclId=acl)
    ec2.delete_subnet(SubnetId=sid)
    ec2.delete_network_acl(NetworkAclId=acl)
    ec2.delete_vpc(VpcId=vpc)
    expect_error("InvalidNetworkAclID.NotFound", ec2.describe_network_acls, NetworkAclIds=[default])


def test_the_host_is_given_each_subnets_acl(server, ec2, vpc):
    """The vpc.firewall host task hands the driver every subnet's ACL entries (the '*' rule is the
    driver's own default), re-read after each entry or association change."""
    def applied() -> dict:
        try:
            host = json.loads((server.state_dir / "none-host.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
        return (host.get("firewalls", {}).get(vpc) or {}).get("acls") or {}

    def eventually(check) -> None:
        deadline = time.monotonic() + 10
        while not check():
            assert time.monotonic() < deadline, applied()
            time.sleep(0.1)

    sid = ec2.create_subnet(VpcId=vpc, CidrBlock="10.41.3.0/24")["Subnet"]["SubnetId"]
    acl = ec2.create_network_acl(VpcId=vpc, TagSpecifications=[
        {"ResourceType": "network-acl", "Tags": [{"Key": "Name", "Value": unique("host")}]}])["NetworkAcl"][
        "NetworkAclId"]
    ec2.create_network_acl_entry(NetworkAclId=acl, RuleNumber=20, Egress=False, RuleAction="deny",
                                 CidrBlock="10.41.1.0/24", **SSH)
    ec2.create_network_acl_entry(NetworkAclId=acl, RuleNumber=10, Egress=False, RuleAction="allow",
                                 CidrBlock="0.0.0.0/0", Protocol="1", IcmpTypeCode={"Type": -1, "Code": -1})
    ec2.replace_network_acl_association(AssociationId=association(ec2, sid)["NetworkAclAssociationId"],
                                        NetworkAclId=acl)
    want = {"ingress": [
        {"rule_number": 10, "action": "allow", "cidr": "0.0.0.0/0", "protocol": 1, "from_port": None,
         "to_port": None, "icmp_type": None, "icmp_code": None},
        {"rule_number": 20, "action": "deny", "cidr": "10.41.1.0/24", "protocol": 6, "from_port": 22,
         "to_port": 22, "icmp_type": None, "icmp_code": None}], "egress": []}
    eventually(lambda: applied().get(sid) == want)
    ec2.delete_network_acl_entry(NetworkAclId=acl, RuleNumber=20, Egress=False)
    eventually(lambda: applied().get(sid, {}).get("ingress") == want["ingress"][:1])
    default = default_acl(ec2, vpc)
    ec2.replace_network_acl_association(AssociationId=association(ec2, sid)["NetworkAclAssociationId"],
                                        NetworkAclId=default)
    eventually(lambda: applied().get(sid) == {"ingress": [
        {"rule_number": 100, "action": "allow", "cidr": "0.0.0.0/0", "protocol": None, "from_port": None,
         "to_port": None, "icmp_type": None, "icmp_code": None}], "egress": [
        {"rule_number": 100, "action": "allow", "cidr": "0.0.0.0/0", "protocol": None, "from_port": None,
         "to_port": None, "icmp_type": None, "icmp_code": None}]})
