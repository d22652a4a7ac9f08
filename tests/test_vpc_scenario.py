"""The seed's layout as one scenario, on real tiny-image guests: a VPC with a public subnet (a
bastion with a public address, routed to an internet gateway) and a private one (an application
server with no public address, routed to a NAT gateway in the public subnet). The application's
ports (19999 netdata, 9090 prometheus, 3000 grafana, 27017 mongodb, 8080 the app) are open to the
VPC's CIDR only.

What it shows, reaching guests only from namespaces the project creates:
  * inside the VPC (from the bastion) every application port answers;
  * from the namespace playing the internet: the bastion's SSH answers at its public address
    (the positive control) and its other ports do not; the application server has no address
    there at all;
  * the application server reaches the internet only through its NAT gateway: a listener in the
    internet namespace sees the NAT gateway's Elastic IP as the source, and the bastion's own
    public address for the bastion's connections;
  * the bastion's public DNS name resolves to its public address on the internet and to its
    private one inside the VPC (split horizon)."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from hypervisor.network import INTERNET_ADDRESS

from .helpers import tiny_image, unique
from .test_firewall import _connects
from .test_guests import _console, _key, _ssh, cloud, fast_waiter  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow

APP_PORTS = (19999, 9090, 3000, 27017, 8080)
VPC_CIDR, PUBLIC_CIDR, PRIVATE_CIDR = "10.0.0.0/16", "10.0.0.0/24", "10.0.1.0/24"
ECHO_PORT = 8443  # the internet namespace's listener


def _listeners(ports) -> str:
    """Shell for the tiny guest: one busybox nc server per port, each answering its port number."""
    return " && ".join(
        f"printf '#!/bin/sh\\necho port-{p}\\n' > /tmp/p{p} && chmod +x /tmp/p{p}"
        f" && (setsid nc -ll -p {p} -e /tmp/p{p} </dev/null >/dev/null 2>&1 &)" for p in ports)


def _tcp(port_cidrs):
    return [{"IpProtocol": "tcp", "FromPort": p, "ToPort": p, "IpRanges": [{"CidrIp": cidr}]}
            for p, cidr in port_cidrs]


@pytest.fixture(scope="module")
def layout(cloud):  # noqa: F811
    ec2 = cloud.client()
    key, pem = _key(ec2, cloud)
    vpc = ec2.create_vpc(CidrBlock=VPC_CIDR)["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})  # public DNS names
    public = ec2.create_subnet(VpcId=vpc, CidrBlock=PUBLIC_CIDR)["Subnet"]["SubnetId"]
    private = ec2.create_subnet(VpcId=vpc, CidrBlock=PRIVATE_CIDR, AvailabilityZone=ec2.describe_subnets(
        SubnetIds=[public])["Subnets"][0]["AvailabilityZone"])["Subnet"]["SubnetId"]
    igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
    public_rt = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    ec2.create_route(RouteTableId=public_rt, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
    ec2.associate_route_table(RouteTableId=public_rt, SubnetId=public)
    eip = ec2.allocate_address(Domain="vpc")
    nat = ec2.create_nat_gateway(SubnetId=public, AllocationId=eip["AllocationId"])["NatGateway"]["NatGatewayId"]
    fast_waiter(ec2, "nat_gateway_available")(NatGatewayIds=[nat])
    private_rt = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    ec2.create_route(RouteTableId=private_rt, DestinationCidrBlock="0.0.0.0/0", NatGatewayId=nat)
    ec2.associate_route_table(RouteTableId=private_rt, SubnetId=private)
    bastion_sg = ec2.create_security_group(GroupName=unique("bastion"), Description="bastion", VpcId=vpc)["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=bastion_sg, IpPermissions=_tcp([(22, "0.0.0.0/0")]))
    app_sg = ec2.create_security_group(GroupName=unique("app"), Description="app", VpcId=vpc)["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=app_sg, IpPermissions=_tcp(
        [(22, VPC_CIDR)] + [(p, VPC_CIDR) for p in APP_PORTS]))
    image = tiny_image(ec2)
    bastion = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, KeyName=key, NetworkInterfaces=[
        {"DeviceIndex": 0, "SubnetId": public, "Groups": [bastion_sg], "AssociatePublicIpAddress": True}])[
        "Instances"][0]["InstanceId"]
    app = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, KeyName=key, SubnetId=private,
                            SecurityGroupIds=[app_sg])["Instances"][0]["InstanceId"]
    fast_waiter(ec2, "instance_running")(InstanceIds=[bastion, app])
    for iid in (bastion, app):
        _console(ec2, iid, r"ec2emu-agent: ssh ready")
    _ssh(cloud, app, pem, _listeners(APP_PORTS))
    _ssh(cloud, bastion, pem, _listeners((8080,)))  # a port its group does not open
    found = {i["InstanceId"]: i for r in ec2.describe_instances(InstanceIds=[bastion, app])["Reservations"]
             for i in r["Instances"]}
    yield {"ec2": ec2, "pem": pem, "bastion": found[bastion], "app": found[app], "nat_ip": eip["PublicIp"],
           "internet": f"{cloud.prefix}-internet"}
    ec2.terminate_instances(InstanceIds=[bastion, app])
    fast_waiter(ec2, "instance_terminated")(InstanceIds=[bastion, app])


def test_application_ports_answer_inside_the_vpc(cloud, layout):  # noqa: F811
    app_ip = layout["app"]["PrivateIpAddress"]
    script = "; ".join(f"echo | timeout 5 nc {app_ip} {p}" for p in APP_PORTS)
    out = _ssh(cloud, layout["bastion"]["InstanceId"], layout["pem"], script + "; true")
    assert out.split() == [f"port-{p}" for p in APP_PORTS], out


def test_from_the_internet_only_the_bastions_ssh_answers(layout):
    bastion, app, internet = layout["bastion"], layout["app"], layout["internet"]
    assert "PublicIpAddress" not in app
    public_ip = bastion["PublicIpAddress"]
    assert _connects(internet, public_ip, 22)  # the positive control: the internet reaches the bastion
    assert not _connects(internet, public_ip, 8080)  # listening, but its group does not open it
    for p in (22,) + APP_PORTS:  # the application server has no address on the internet
        assert not _connects(internet, app["PrivateIpAddress"], p, timeout=1.0)


@pytest.fixture
def internet_listener(layout, tmp_path):
    """A TCP server in the internet namespace that writes each connection's source address."""
    log = tmp_path / "peers"
    code = (f"import socket\ns = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            f"s.bind(({INTERNET_ADDRESS!r}, {ECHO_PORT})); s.listen()\n"
            f"while True:\n    c, peer = s.accept(); open({str(log)!r}, 'a').write(peer[0] + '\\n')\n"
            f"    c.sendall(b'hello-internet\\n'); c.close()\n")
    proc = subprocess.Popen(["ip", "netns", "exec", layout["internet"], sys.executable, "-c", code])
    time.sleep(1)
    yield log
    proc.kill()
    proc.wait()


def test_the_private_subnet_reaches_the_internet_through_its_nat_gateway(cloud, layout, internet_listener):  # noqa: F811
    fetch = f"echo | timeout 5 nc {INTERNET_ADDRESS} {ECHO_PORT}; true"
    assert "hello-internet" in _ssh(cloud, layout["bastion"]["InstanceId"], layout["pem"], fetch)
    assert "hello-internet" in _ssh(cloud, layout["app"]["InstanceId"], layout["pem"], fetch)
    peers = internet_listener.read_text().split()
    # the bastion with its own public address, the application server as the NAT gateway's
    assert peers == [layout["bastion"]["PublicIpAddress"], layout["nat_ip"]], peers


def test_the_bastions_public_name_resolves_outside_and_inside(cloud, layout):  # noqa: F811
    bastion, internet = layout["bastion"], layout["internet"]
    name = bastion["PublicDnsName"]
    assert name == "ec2-" + bastion["PublicIpAddress"].replace(".", "-") + ".compute-1.amazonaws.com"
    code = f"import socket\nprint(socket.gethostbyname({name!r}))"
    outside = subprocess.run(["ip", "netns", "exec", internet, sys.executable, "-c", code],
                             capture_output=True, text=True, timeout=30)
    assert outside.stdout.strip() == bastion["PublicIpAddress"], outside.stderr
    inside = _ssh(cloud, layout["app"]["InstanceId"], layout["pem"], f"nslookup {name}; true")
    assert bastion["PrivateIpAddress"] in inside.split("Name:")[-1], inside
