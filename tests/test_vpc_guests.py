"""Custom VPCs on the host, with real tiny-image guests (three, shared by the module): two VPCs
with the same CIDR are separate networks (each its own namespace), and a DHCP option set's
domain-name reaches the guests of its VPC.

VPC A and VPC B are both 10.0.0.0/16 with a subnet 10.0.1.0/24. A1 (in A) and B1 (in B) have the
same private address, 10.0.1.5; B2 (in B) has 10.0.1.6, an address nothing in A has. Each
VPC's default group admits SSH from anywhere (the VPC router included), as a user would open it.
VPC A uses a DHCP option set with domain-name corp.example; B keeps the account's default set."""
from __future__ import annotations

import subprocess
import time

import pytest

from .helpers import SSH_ANYWHERE, tiny_image
from .test_firewall import _connects, _namespace
from .test_guests import _console, _key, cloud, fast_waiter  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow

SAME_IP, ONLY_IN_B = "10.0.1.5", "10.0.1.6"
DOMAIN = "corp.example"
INSTANCE_ID = "timeout 10 wget -qO- http://169.254.169.254/latest/meta-data/instance-id; echo"


@pytest.fixture(scope="module")
def vpcs(cloud):  # noqa: F811
    ec2 = cloud.client()
    key, pem = _key(ec2, cloud)
    image = tiny_image(ec2)
    dopt = ec2.create_dhcp_options(DhcpConfigurations=[{"Key": "domain-name", "Values": [DOMAIN]}])[
        "DhcpOptions"]["DhcpOptionsId"]
    made = {}
    for name in "ab":
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
        group = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["SecurityGroups"][0]
        ec2.authorize_security_group_ingress(GroupId=group["GroupId"], IpPermissions=SSH_ANYWHERE)
        made[name] = {"vpc": vpc, "subnet": subnet, "ns": _namespace(cloud, vpc)}
    ec2.associate_dhcp_options(DhcpOptionsId=dopt, VpcId=made["a"]["vpc"])
    guests = {}
    for name, where, ip in (("a1", "a", SAME_IP), ("b1", "b", SAME_IP), ("b2", "b", ONLY_IN_B)):
        inst = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, KeyName=key,
                                 SubnetId=made[where]["subnet"], PrivateIpAddress=ip)["Instances"][0]
        assert inst["PrivateIpAddress"] == ip and inst["VpcId"] == made[where]["vpc"]
        guests[name] = {"id": inst["InstanceId"], "ip": ip, **made[where]}
    ids = [g["id"] for g in guests.values()]
    fast_waiter(ec2, "instance_running")(InstanceIds=ids)
    for g in guests.values():
        _console(ec2, g["id"], r"ec2emu-agent: ssh ready")
    yield {**guests, "pem": pem, "ec2": ec2}
    ec2.terminate_instances(InstanceIds=ids)
    fast_waiter(ec2, "instance_terminated")(InstanceIds=ids)


def _ssh_from(ns: str, pem, ip: str, command: str) -> subprocess.CompletedProcess:
    """ssh to ip from inside namespace ns (not through `ec2emu ssh`, which picks the namespace
    from the instance: here the namespace is the point)."""
    return subprocess.run(["ip", "netns", "exec", ns, "ssh", "-o", "StrictHostKeyChecking=no",
                           "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5",
                           "-o", "BatchMode=yes", "-i", str(pem), f"ec2-user@{ip}", command],
                          capture_output=True, text=True, timeout=60)


def test_same_cidr_vpcs_are_separate_networks(vpcs):
    a1, b1, b2, pem = vpcs["a1"], vpcs["b1"], vpcs["b2"], vpcs["pem"]
    assert a1["ns"] != b1["ns"] and b1["ns"] == b2["ns"]
    # The same address answers in both VPCs, each with its own instance (the metadata service
    # of each VPC names the instance that asks).
    for g in (a1, b1):
        out = _ssh_from(g["ns"], pem, SAME_IP, INSTANCE_ID)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == g["id"]
    # B2's address: reachable inside B (the positive control), nothing there from inside A.
    assert _connects(b2["ns"], ONLY_IN_B, 22)
    assert _ssh_from(b2["ns"], pem, ONLY_IN_B, INSTANCE_ID).stdout.strip() == b2["id"]
    assert not _connects(a1["ns"], ONLY_IN_B, 22)
    # Nor from A's guest itself (its packets go through A's router only); B1 reaches B2.
    script = f"timeout 5 nc {ONLY_IN_B} 22 </dev/null | head -c 7; echo; echo rc=$?"
    assert "SSH-2.0" in _ssh_from(b1["ns"], pem, SAME_IP, script).stdout
    assert "SSH-2.0" not in _ssh_from(a1["ns"], pem, SAME_IP, script).stdout


def test_dhcp_option_set_domain_name_reaches_the_guest(vpcs):
    a1, b1, pem = vpcs["a1"], vpcs["b1"], vpcs["pem"]
    in_a = _ssh_from(a1["ns"], pem, SAME_IP, "cat /etc/resolv.conf")
    in_b = _ssh_from(b1["ns"], pem, SAME_IP, "cat /etc/resolv.conf")
    assert in_a.returncode == 0 and in_b.returncode == 0, (in_a.stderr, in_b.stderr)
    assert f"search {DOMAIN}" in in_a.stdout, in_a.stdout
    # B keeps the account's default set: the region's domain (the control)
    assert "search ec2.internal" in in_b.stdout and DOMAIN not in in_b.stdout, in_b.stdout


def test_new_dhcp_options_reach_a_running_guest_at_its_lease_renewal(vpcs):
    """AssociateDhcpOptions on a VPC with a running guest: the guest gets the new domain-name
    when it renews its lease (here asked at once with udhcpc's SIGUSR1), without a restart."""
    b1, pem, ec2 = vpcs["b1"], vpcs["pem"], vpcs["ec2"]
    renew_and_read = ("sudo kill -USR1 $(cat /var/run/udhcpc.eth0.pid); sleep 2; cat /etc/resolv.conf")
    before = _ssh_from(b1["ns"], pem, SAME_IP, renew_and_read)
    assert "search ec2.internal" in before.stdout, (before.stdout, before.stderr)  # a renewal keeps it
    dopt = ec2.create_dhcp_options(DhcpConfigurations=[{"Key": "domain-name", "Values": ["renewed.example"]}])[
        "DhcpOptions"]["DhcpOptionsId"]
    ec2.associate_dhcp_options(DhcpOptionsId=dopt, VpcId=b1["vpc"])
    deadline = time.monotonic() + 30
    while True:
        after = _ssh_from(b1["ns"], pem, SAME_IP, renew_and_read)
        if "search renewed.example" in after.stdout or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert "search renewed.example" in after.stdout, (after.stdout, after.stderr)


def test_dns_attributes_decide_what_the_vpcs_resolver_answers(vpcs):
    """As on AWS: a new VPC (enableDnsHostnames false) gives its instances no DNS names its
    resolver answers; with both attributes true it does; with enableDnsSupport false the resolver
    answers nothing at all. Each change applies to running guests at once."""
    b1, pem, ec2 = vpcs["b1"], vpcs["pem"], vpcs["ec2"]
    name = "ip-" + ONLY_IN_B.replace(".", "-") + ".ec2.internal"  # B2's private DNS name
    ask = f"nslookup {name} 2>&1; echo rc=$?"

    def answer(want_ip: bool) -> str:
        deadline = time.monotonic() + 20
        while True:
            out = _ssh_from(b1["ns"], pem, SAME_IP, ask).stdout
            if (ONLY_IN_B in out.split("Name:")[-1]) == want_ip or time.monotonic() > deadline:
                return out
            time.sleep(1)

    out = answer(False)
    assert ONLY_IN_B not in out.split("Name:")[-1] and "NXDOMAIN" in out, out  # a resolver, no such name
    ec2.modify_vpc_attribute(VpcId=b1["vpc"], EnableDnsHostnames={"Value": True})
    out = answer(True)
    assert ONLY_IN_B in out.split("Name:")[-1], out  # the positive control: names answered now
    ec2.modify_vpc_attribute(VpcId=b1["vpc"], EnableDnsSupport={"Value": False})
    out = answer(False)
    assert ONLY_IN_B not in out.split("Name:")[-1] and "rc=1" in out, out
    assert "NXDOMAIN" not in out and "no servers could be reached" in out, out  # no resolver at all
    ec2.modify_vpc_attribute(VpcId=b1["vpc"], EnableDnsSupport={"Value": True})
    ec2.modify_vpc_attribute(VpcId=b1["vpc"], EnableDnsHostnames={"Value": False})
