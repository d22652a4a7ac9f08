"""Network ACLs on the wire, with real tiny-image guests (three, shared by the module).

One VPC, 10.9.0.0/16, two subnets: S1 10.9.1.0/24 holds A and A2, S2 10.9.2.0/24 holds B. The
VPC's default group admits SSH from anywhere (and its own members on every port, AWS's default),
so every check below would pass on the groups alone: what refuses it is the ACL.

Traffic between subnets (A -> B) leaves S1 (S1's ACL, egress) and enters S2 (S2's ACL, ingress);
traffic within S1 (A -> A2) meets no ACL, and neither does the VPC router's own traffic (the
`ec2emu ssh` these commands are run through, DHCP, metadata), as on AWS. Each check opens a new
connection from inside a guest (busybox nc, run over SSH) and reads B's (or A2's) SSH banner.
"""
from __future__ import annotations

import pytest

from .test_firewall import _banner, _connects, _namespace, _until
from .test_guests import _console, _key, cloud, fast_waiter  # noqa: F401 (fixture)
from .helpers import SSH_ANYWHERE, tiny_image

S1, S2 = "10.9.1.0/24", "10.9.2.0/24"
BANNER = "SSH-2.0-"


@pytest.fixture(scope="module")
def net(cloud):  # noqa: F811
    ec2 = cloud.client()
    key, pem = _key(ec2, cloud)
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    subnets = {name: ec2.create_subnet(VpcId=vpc, CidrBlock=cidr)["Subnet"]["SubnetId"]
               for name, cidr in (("s1", S1), ("s2", S2))}
    group = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["SecurityGroups"][0]
    ec2.authorize_security_group_ingress(GroupId=group["GroupId"], IpPermissions=SSH_ANYWHERE)
    image = tiny_image(ec2)
    guests = {}
    for name, subnet, ip in (("a", "s1", "10.9.1.10"), ("a2", "s1", "10.9.1.11"), ("b", "s2", "10.9.2.10")):
        inst = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, KeyName=key, SubnetId=subnets[subnet],
                                 PrivateIpAddress=ip)["Instances"][0]
        guests[name] = {"id": inst["InstanceId"], "ip": ip}
    ids = [g["id"] for g in guests.values()]
    fast_waiter(ec2, "instance_running")(InstanceIds=ids)
    for g in guests.values():
        _console(ec2, g["id"], r"ec2emu-agent: ssh ready")
    default_acl = ec2.describe_network_acls(Filters=[{"Name": "vpc-id", "Values": [vpc]},
                                                     {"Name": "default", "Values": ["true"]}])["NetworkAcls"][0]
    yield {**guests, **subnets, "ec2": ec2, "pem": pem, "vpc": vpc, "ns": _namespace(cloud, vpc),
           "default_acl": default_acl["NetworkAclId"]}
    ec2.terminate_instances(InstanceIds=ids)
    fast_waiter(ec2, "instance_terminated")(InstanceIds=ids)


def _reaches(cloud, net, src: str, dst: str) -> bool:  # noqa: F811
    """A new TCP connection from guest src to guest dst's port 22 gets the SSH banner."""
    return BANNER in _banner(cloud, net[src], net["pem"], net[dst]["ip"])


def _association(ec2, subnet_id: str) -> str:
    acls = ec2.describe_network_acls(Filters=[{"Name": "association.subnet-id", "Values": [subnet_id]}])
    return next(a["NetworkAclAssociationId"] for a in acls["NetworkAcls"][0]["Associations"]
                if a["SubnetId"] == subnet_id)


def _use(ec2, subnet_id: str, acl_id: str) -> None:
    ec2.replace_network_acl_association(AssociationId=_association(ec2, subnet_id), NetworkAclId=acl_id)


@pytest.mark.slow
def test_a_nacl_deny_wins_over_a_group_allow(cloud, net):  # noqa: F811
    ec2, acl = net["ec2"], net["default_acl"]
    # Positive control: the default ACL (allow all) and the default group (SSH from anywhere) let A in.
    assert _reaches(cloud, net, "a", "b")
    deny = {"NetworkAclId": acl, "RuleNumber": 50, "Egress": False, "Protocol": "6",
            "PortRange": {"From": 22, "To": 22}, "CidrBlock": S1}
    ec2.create_network_acl_entry(**deny, RuleAction="deny")  # below the default ACL's allow (100)
    assert _until(lambda: _reaches(cloud, net, "a", "b"), False) is False
    # The group still admits SSH from anywhere: the router (no ACL applies to it) gets in.
    assert _connects(net["ns"], net["b"]["ip"], 22)

    ec2.replace_network_acl_entry(**deny, RuleAction="allow")
    assert _until(lambda: _reaches(cloud, net, "a", "b"), True)
    ec2.replace_network_acl_entry(**deny, RuleAction="deny")
    assert _until(lambda: _reaches(cloud, net, "a", "b"), False) is False
    ec2.delete_network_acl_entry(NetworkAclId=acl, RuleNumber=50, Egress=False)
    assert _until(lambda: _reaches(cloud, net, "a", "b"), True)


@pytest.mark.slow
def test_acls_are_stateless_a_reply_needs_its_own_egress_entry(cloud, net):  # noqa: F811
    """AWS's classic pitfall: S2's ACL admits SSH in, but without an egress entry for the
    client's ephemeral ports B's answer never leaves S2."""
    ec2 = net["ec2"]
    acl = ec2.create_network_acl(VpcId=net["vpc"])["NetworkAcl"]["NetworkAclId"]
    ec2.create_network_acl_entry(NetworkAclId=acl, RuleNumber=100, Egress=False, RuleAction="allow",
                                 Protocol="6", PortRange={"From": 22, "To": 22}, CidrBlock="0.0.0.0/0")
    assert _reaches(cloud, net, "a", "b")  # positive control, before S2 moves to the new ACL
    _use(ec2, net["s2"], acl)
    try:
        assert _until(lambda: _reaches(cloud, net, "a", "b"), False) is False
        ec2.create_network_acl_entry(NetworkAclId=acl, RuleNumber=100, Egress=True, RuleAction="allow",
                                     Protocol="6", PortRange={"From": 1024, "To": 65535}, CidrBlock="0.0.0.0/0")
        assert _until(lambda: _reaches(cloud, net, "a", "b"), True)
    finally:
        _use(ec2, net["s2"], net["default_acl"])
    ec2.delete_network_acl(NetworkAclId=acl)


@pytest.mark.slow
def test_neighbours_in_one_subnet_meet_no_acl(cloud, net):  # noqa: F811
    """S1 on an ACL with no entries (deny all): A still reaches A2 beside it, not B in S2."""
    ec2 = net["ec2"]
    acl = ec2.create_network_acl(VpcId=net["vpc"])["NetworkAcl"]["NetworkAclId"]
    assert _reaches(cloud, net, "a", "b")  # positive control
    _use(ec2, net["s1"], acl)
    try:
        assert _until(lambda: _reaches(cloud, net, "a", "b"), False) is False
        assert _reaches(cloud, net, "a", "a2")
        assert _reaches(cloud, net, "a2", "a")
    finally:
        _use(ec2, net["s1"], net["default_acl"])
    assert _until(lambda: _reaches(cloud, net, "a", "b"), True)
    ec2.delete_network_acl(NetworkAclId=acl)
