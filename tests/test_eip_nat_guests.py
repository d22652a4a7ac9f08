"""Elastic IPs, route tables and NAT gateways on the wire, with real tiny-image guests (four,
shared by the module), reached only from namespaces the emulator made.

  * Default VPC: A and B (public addresses auto-assigned). An Elastic IP on A answers as A (SSH
    from the internet namespace, the guest names itself from its metadata), then, moved to B,
    answers as B; B's metadata says the Elastic IP is its public-ipv4.
  * B's secondary address takes another Elastic IP, which answers as B.
  * VPC 10.61.0.0/16 with a public subnet (10.61.1.0/24, main table) and a private one
    (10.61.2.0/24, its own table). Q (public subnet, a public address) is unreachable from the
    internet while the main table has no route to an internet gateway, reachable once it has.
    P (private subnet, no public address) cannot reach the internet namespace until its table
    routes 0.0.0.0/0 to a NAT gateway in the public subnet; then it can, and the internet sees
    the NAT gateway's Elastic IP as its source; nothing from the internet opens a connection
    through that address. A route to Q hands P's traffic for 10.99.0.0/24 to Q.
  * A restart (the server killed, the host's NAT and routing wiped) rebuilds all of it.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from hypervisor.network import INTERNET_ADDRESS, SUBNET_RULE_PRIORITY

from .helpers import SSH_ANYWHERE, tiny_image
from .test_firewall import _connects, _namespace
from .test_guests import _console, _key, cloud, fast_waiter  # noqa: F401 (fixture)
from .test_vpc_guests import _ssh_from

pytestmark = pytest.mark.slow

WHOAMI = "timeout 10 wget -qO- http://169.254.169.254/latest/meta-data/instance-id; echo"
PUBLIC_IPV4 = "timeout 10 wget -qO- http://169.254.169.254/latest/meta-data/public-ipv4; echo"
ECHO_PORT = 8471

# A TCP server in the internet namespace: each connection is answered with the peer's address.
PEER_ECHO = f"""
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(({INTERNET_ADDRESS!r}, {ECHO_PORT})); s.listen(8)
print("listening", flush=True)
while True:
    c, peer = s.accept()
    c.sendall(("peer=" + peer[0] + "\\n").encode()); c.close()
"""


def _until(check, want=True, within: float = 20.0):
    deadline = time.monotonic() + within
    while True:
        got = check()
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.5)


@pytest.fixture(scope="module")
def world(cloud):  # noqa: F811
    ec2 = cloud.client()
    key, pem = _key(ec2, cloud)
    image = tiny_image(ec2)
    internet = f"{cloud.prefix}-internet"
    # Default VPC: A and B.
    ab = [i["InstanceId"] for i in ec2.run_instances(ImageId=image, MinCount=2, MaxCount=2, KeyName=key)["Instances"]]
    # VPC 10.61.0.0/16: public and private subnets, no internet gateway yet.
    vpc = ec2.create_vpc(CidrBlock="10.61.0.0/16")["Vpc"]["VpcId"]
    public = ec2.create_subnet(VpcId=vpc, CidrBlock="10.61.1.0/24")["Subnet"]["SubnetId"]
    private = ec2.create_subnet(VpcId=vpc, CidrBlock="10.61.2.0/24")["Subnet"]["SubnetId"]
    group = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["SecurityGroups"][0]
    ec2.authorize_security_group_ingress(GroupId=group["GroupId"], IpPermissions=SSH_ANYWHERE)
    private_rtb = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    ec2.associate_route_table(RouteTableId=private_rtb, SubnetId=private)
    main_rtb = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc]},
                                                  {"Name": "association.main", "Values": ["true"]}])[
        "RouteTables"][0]["RouteTableId"]
    q = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, KeyName=key, NetworkInterfaces=[
        {"DeviceIndex": 0, "SubnetId": public, "AssociatePublicIpAddress": True}])["Instances"][0]["InstanceId"]
    p = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, KeyName=key,
                          SubnetId=private)["Instances"][0]["InstanceId"]
    ids = [*ab, q, p]
    fast_waiter(ec2, "instance_running")(InstanceIds=ids)
    for iid in ids:
        _console(ec2, iid, r"ec2emu-agent: ssh ready")
    rows = {i["InstanceId"]: i for r in ec2.describe_instances(InstanceIds=ids)["Reservations"] for i in r["Instances"]}
    echo = subprocess.Popen(["ip", "netns", "exec", internet, sys.executable, "-c", PEER_ECHO],
                            stdout=subprocess.PIPE, text=True)
    assert echo.stdout.readline().strip() == "listening"
    yield {"ec2": ec2, "pem": pem, "rows": rows, "a": ab[0], "b": ab[1], "q": q, "p": p, "vpc": vpc,
           "public": public, "private": private, "main_rtb": main_rtb, "private_rtb": private_rtb,
           "internet": internet, "ns": _namespace(cloud, vpc), "default_ns": _namespace(cloud, rows[ab[0]]["VpcId"])}
    echo.terminate()
    echo.wait(10)
    ec2.terminate_instances(InstanceIds=ids)
    fast_waiter(ec2, "instance_terminated")(InstanceIds=ids)
    for a in ec2.describe_addresses()["Addresses"]:
        if a.get("AssociationId") and "InstanceId" in a:
            ec2.disassociate_address(AssociationId=a["AssociationId"])


def _whoami_via(world, public_ip: str) -> str:
    out = _ssh_from(world["internet"], world["pem"], public_ip, WHOAMI)
    return out.stdout.strip() if out.returncode == 0 else f"ssh failed: {out.stderr.strip()}"


def test_elastic_ip_moves_the_traffic(world):
    ec2, a, b = world["ec2"], world["a"], world["b"]
    eip = ec2.allocate_address(Domain="vpc")
    ip = eip["PublicIp"]
    try:
        # Before any association nothing answers at the address; B's own public address does.
        assert not _connects(world["internet"], ip, 22)
        assert _whoami_via(world, world["rows"][b]["PublicIpAddress"]) == b
        ec2.associate_address(AllocationId=eip["AllocationId"], InstanceId=a)
        assert _until(lambda: _whoami_via(world, ip), a) == a
        ec2.associate_address(AllocationId=eip["AllocationId"], InstanceId=b, AllowReassociation=True)
        assert _until(lambda: _whoami_via(world, ip), b) == b
        # B's metadata follows (public-ipv4), and its auto-assigned address was released.
        assert _ssh_from(world["internet"], world["pem"], ip, PUBLIC_IPV4).stdout.strip() == ip
        assert not _connects(world["internet"], world["rows"][b]["PublicIpAddress"], 22)
        # A got a new public address, which answers as A.
        a_now = ec2.describe_instances(InstanceIds=[a])["Reservations"][0]["Instances"][0]["PublicIpAddress"]
        assert a_now not in (None, ip)
        assert _until(lambda: _whoami_via(world, a_now), a) == a
        # Disassociated: the address answers no more.
        assoc = ec2.describe_addresses(AllocationIds=[eip["AllocationId"]])["Addresses"][0]["AssociationId"]
        ec2.disassociate_address(AssociationId=assoc)
        assert _until(lambda: _connects(world["internet"], ip, 22), False) is False
    finally:
        got = ec2.describe_addresses(AllocationIds=[eip["AllocationId"]])["Addresses"][0]
        if got.get("AssociationId"):
            ec2.disassociate_address(AssociationId=got["AssociationId"])
        ec2.release_address(AllocationId=eip["AllocationId"])


def test_elastic_ip_on_a_secondary_address(world):
    """An Elastic IP on B's secondary private address (which B's guest holds on eth0) answers
    as B from the internet, while B's own public address still does; disassociated, it does
    not; the secondary address unassigned, nothing is left mapped."""
    ec2, b = world["ec2"], world["b"]
    row = ec2.describe_instances(InstanceIds=[b])["Reservations"][0]["Instances"][0]
    eni, own_public = row["NetworkInterfaces"][0]["NetworkInterfaceId"], row["PublicIpAddress"]
    prefix = ec2.describe_subnets(SubnetIds=[row["SubnetId"]])["Subnets"][0]["CidrBlock"].split("/")[1]
    secondary = ec2.assign_private_ip_addresses(NetworkInterfaceId=eni, SecondaryPrivateIpAddressCount=1)[
        "AssignedPrivateIpAddresses"][0]["PrivateIpAddress"]
    eip = ec2.allocate_address(Domain="vpc")
    ip = eip["PublicIp"]
    try:
        out = _ssh_from(world["default_ns"], world["pem"], row["PrivateIpAddress"],
                        f"sudo ip addr replace {secondary}/{prefix} dev eth0 && echo added")
        assert out.stdout.strip() == "added", out.stderr
        assert not _connects(world["internet"], ip, 22)  # nothing there before the association
        ec2.associate_address(AllocationId=eip["AllocationId"], NetworkInterfaceId=eni, PrivateIpAddress=secondary)
        assert _until(lambda: _whoami_via(world, ip), b) == b
        # (reached at the secondary address: the guest's sshd saw that as its own end)
        assert _ssh_from(world["internet"], world["pem"], ip, "echo $SSH_CONNECTION").stdout.split()[2] == secondary
        assert _whoami_via(world, own_public) == b  # its own public address is untouched
        assoc = ec2.describe_addresses(AllocationIds=[eip["AllocationId"]])["Addresses"][0]["AssociationId"]
        ec2.disassociate_address(AssociationId=assoc)
        assert _until(lambda: _connects(world["internet"], ip, 22), False) is False
        assert _whoami_via(world, own_public) == b
    finally:
        _ssh_from(world["default_ns"], world["pem"], row["PrivateIpAddress"],
                  f"sudo ip addr del {secondary}/{prefix} dev eth0")
        ec2.unassign_private_ip_addresses(NetworkInterfaceId=eni, PrivateIpAddresses=[secondary])
        ec2.release_address(AllocationId=eip["AllocationId"])


def _peer_seen_by_internet(world, instance_id: str) -> str:
    """From the guest (over SSH from its VPC router): connect to the internet namespace's echo
    server; what it says the peer's address was ('' when no connection was made)."""
    ip = world["rows"][instance_id]["PrivateIpAddress"]
    out = _ssh_from(world["ns"], world["pem"], ip, f"timeout 5 nc {INTERNET_ADDRESS} {ECHO_PORT} </dev/null; echo")
    assert out.returncode == 0, out.stderr
    return next((line[5:] for line in out.stdout.splitlines() if line.startswith("peer=")), "")


def _public_subnet_routes_to_a_gateway(world) -> None:
    """An internet gateway attached to the VPC, its main table's 0.0.0.0/0 to it (once)."""
    ec2 = world["ec2"]
    if ec2.describe_internet_gateways(Filters=[{"Name": "attachment.vpc-id", "Values": [world["vpc"]]}])[
            "InternetGateways"]:
        return
    igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=world["vpc"])
    ec2.create_route(RouteTableId=world["main_rtb"], DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)


def test_routes_decide_who_reaches_the_internet(world):
    ec2, q, p = world["ec2"], world["q"], world["p"]
    q_public = world["rows"][q]["PublicIpAddress"]
    assert q_public and not world["rows"][p].get("PublicIpAddress")
    # No internet gateway route: Q's public address is dead from the internet, and Q cannot get
    # out; the default VPC's A (its main table routes to its gateway) is the positive control.
    a_public = ec2.describe_instances(InstanceIds=[world["a"]])["Reservations"][0]["Instances"][0]["PublicIpAddress"]
    assert _connects(world["internet"], a_public, 22)
    assert not _connects(world["internet"], q_public, 22)
    assert _peer_seen_by_internet(world, q) == ""
    _public_subnet_routes_to_a_gateway(world)
    assert _until(lambda: _connects(world["internet"], q_public, 22)) is True
    assert _peer_seen_by_internet(world, q) == q_public  # leaves as its public address (1:1 NAT)

    # P: private subnet, no public address, its table has no route out.
    assert _peer_seen_by_internet(world, p) == ""
    eip = ec2.allocate_address(Domain="vpc")
    nat = ec2.create_nat_gateway(SubnetId=world["public"], AllocationId=eip["AllocationId"])["NatGateway"][
        "NatGatewayId"]
    assert _until(lambda: ec2.describe_nat_gateways(NatGatewayIds=[nat])["NatGateways"][0]["State"],
                  "available") == "available"
    assert _peer_seen_by_internet(world, p) == ""  # a NAT gateway nobody routes to changes nothing
    ec2.create_route(RouteTableId=world["private_rtb"], DestinationCidrBlock="0.0.0.0/0", NatGatewayId=nat)
    assert _until(lambda: _peer_seen_by_internet(world, p), eip["PublicIp"]) == eip["PublicIp"]
    # Egress only: nothing opens a connection through the NAT gateway's address (Q's public
    # address, in the same VPC, is the control that the internet reaches this VPC at all).
    assert _connects(world["internet"], q_public, 22)
    assert not _connects(world["internet"], eip["PublicIp"], 22)
    # The route goes: P is cut off again (the gateway itself still stands).
    ec2.delete_route(RouteTableId=world["private_rtb"], DestinationCidrBlock="0.0.0.0/0")
    assert _until(lambda: _peer_seen_by_internet(world, p), "") == ""
    assert _peer_seen_by_internet(world, q) == q_public
    ec2.delete_nat_gateway(NatGatewayId=nat)
    assert _until(lambda: ec2.describe_nat_gateways(NatGatewayIds=[nat])["NatGateways"][0]["State"],
                  "deleted") == "deleted"
    ec2.release_address(AllocationId=eip["AllocationId"])


def test_a_route_through_an_instance(world):
    """The private subnet's table routes 10.99.0.0/24 to Q (a NAT-instance-like appliance in
    the public subnet, holding 10.99.0.1 on its loopback): P reaches 10.99.0.1 through Q only
    once Q's source/destination check is off (before, Q's answers from an address not its own
    are dropped, as on AWS), and not at all without the route."""
    ec2, p, q = world["ec2"], world["p"], world["q"]
    p_ip, q_ip = world["rows"][p]["PrivateIpAddress"], world["rows"][q]["PrivateIpAddress"]

    def banner() -> str:
        out = _ssh_from(world["ns"], world["pem"], p_ip, "timeout 5 nc 10.99.0.1 22 </dev/null | head -c 7; echo")
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    out = _ssh_from(world["ns"], world["pem"], q_ip, "sudo ip addr add 10.99.0.1/32 dev lo && echo added")
    assert out.stdout.strip() == "added", out.stderr
    try:
        assert banner() == ""  # no route: P's packets for 10.99.0.1 go nowhere
        ec2.create_route(RouteTableId=world["private_rtb"], DestinationCidrBlock="10.99.0.0/24", InstanceId=q)
        time.sleep(2)  # (the route is on the host by now; Q's answers are what is dropped)
        assert banner() == ""
        ec2.modify_instance_attribute(InstanceId=q, SourceDestCheck={"Value": False})
        assert _until(banner, "SSH-2.0") == "SSH-2.0"
        ec2.delete_route(RouteTableId=world["private_rtb"], DestinationCidrBlock="10.99.0.0/24")
        assert _until(banner, "") == ""
    finally:
        ec2.modify_instance_attribute(InstanceId=q, SourceDestCheck={"Value": True})
        _ssh_from(world["ns"], world["pem"], q_ip, "sudo ip addr del 10.99.0.1/32 dev lo")
        routes = ec2.describe_route_tables(RouteTableIds=[world["private_rtb"]])["RouteTables"][0]["Routes"]
        if any(r["DestinationCidrBlock"] == "10.99.0.0/24" for r in routes):
            ec2.delete_route(RouteTableId=world["private_rtb"], DestinationCidrBlock="10.99.0.0/24")


def test_a_restart_rebuilds_elastic_ips_and_nat_from_the_database(world, cloud):  # noqa: F811
    """The host forgets its NAT and routing (the server killed, the routers' nftables and policy
    rules and the internet namespace's routes wiped); the next start rebuilds them from the
    database: the Elastic IP answers as its instance, P gets out through its NAT gateway again."""
    ec2, a, p = world["ec2"], world["a"], world["p"]
    _public_subnet_routes_to_a_gateway(world)
    eip, nat_eip = ec2.allocate_address(Domain="vpc"), ec2.allocate_address(Domain="vpc")
    ec2.associate_address(AllocationId=eip["AllocationId"], InstanceId=a)
    nat = ec2.create_nat_gateway(SubnetId=world["public"], AllocationId=nat_eip["AllocationId"])["NatGateway"][
        "NatGatewayId"]
    assert _until(lambda: ec2.describe_nat_gateways(NatGatewayIds=[nat])["NatGateways"][0]["State"],
                  "available") == "available"
    ec2.create_route(RouteTableId=world["private_rtb"], DestinationCidrBlock="0.0.0.0/0", NatGatewayId=nat)
    assert _until(lambda: _whoami_via(world, eip["PublicIp"]), a) == a
    assert _until(lambda: _peer_seen_by_internet(world, p), nat_eip["PublicIp"]) == nat_eip["PublicIp"]
    # and an Elastic IP on B's secondary address (mapped apart from the instances' own)
    b = world["b"]
    b_row = ec2.describe_instances(InstanceIds=[b])["Reservations"][0]["Instances"][0]
    b_eni = b_row["NetworkInterfaces"][0]["NetworkInterfaceId"]
    prefix = ec2.describe_subnets(SubnetIds=[b_row["SubnetId"]])["Subnets"][0]["CidrBlock"].split("/")[1]
    secondary = ec2.assign_private_ip_addresses(NetworkInterfaceId=b_eni, SecondaryPrivateIpAddressCount=1)[
        "AssignedPrivateIpAddresses"][0]["PrivateIpAddress"]
    assert _ssh_from(world["default_ns"], world["pem"], b_row["PrivateIpAddress"],
                     f"sudo ip addr replace {secondary}/{prefix} dev eth0 && echo added").stdout.strip() == "added"
    side_eip = ec2.allocate_address(Domain="vpc")
    ec2.associate_address(AllocationId=side_eip["AllocationId"], NetworkInterfaceId=b_eni, PrivateIpAddress=secondary)
    assert _until(lambda: _whoami_via(world, side_eip["PublicIp"]), b) == b

    cloud.stop(signal.SIGKILL)
    for ns in (world["ns"], world["default_ns"]):
        subprocess.run(["ip", "netns", "exec", ns, "nft", "flush", "ruleset"], check=True)
        for priority in range(SUBNET_RULE_PRIORITY, SUBNET_RULE_PRIORITY + 4):  # the subnets' rules
            subprocess.run(["ip", "-n", ns, "rule", "del", "priority", str(priority)], capture_output=True)
    subprocess.run(["ip", "-n", world["internet"], "route", "flush", "table", "main"], check=True)
    assert not _connects(world["internet"], eip["PublicIp"], 22)  # the wipe took
    assert not _connects(world["internet"], side_eip["PublicIp"], 22)
    assert _peer_seen_by_internet(world, p) == ""
    cloud.start()
    assert _until(lambda: _whoami_via(world, eip["PublicIp"]), a, within=60) == a
    assert _until(lambda: _peer_seen_by_internet(world, p), nat_eip["PublicIp"]) == nat_eip["PublicIp"]
    assert _until(lambda: _whoami_via(world, side_eip["PublicIp"]), b) == b
    ec2.disassociate_address(AssociationId=ec2.describe_addresses(AllocationIds=[side_eip["AllocationId"]])[
        "Addresses"][0]["AssociationId"])
    ec2.unassign_private_ip_addresses(NetworkInterfaceId=b_eni, PrivateIpAddresses=[secondary])
    ec2.release_address(AllocationId=side_eip["AllocationId"])

    ec2.delete_route(RouteTableId=world["private_rtb"], DestinationCidrBlock="0.0.0.0/0")
    ec2.delete_nat_gateway(NatGatewayId=nat)
    assert _until(lambda: ec2.describe_nat_gateways(NatGatewayIds=[nat])["NatGateways"][0]["State"],
                  "deleted") == "deleted"
    ec2.disassociate_address(AssociationId=ec2.describe_addresses(AllocationIds=[eip["AllocationId"]])[
        "Addresses"][0]["AssociationId"])
    for alloc in (eip, nat_eip):
        ec2.release_address(AllocationId=alloc["AllocationId"])
