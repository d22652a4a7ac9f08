"""Security groups enforced on the wire: what the emulator asks the host for (the `none` driver's
kept firewall, no guests), then real tiny-image guests (three, shared by the module).

A and B are in their VPC's default group (which admits its own members, and SSH from anywhere:
the module's server opens it as a user would, see test_guests.cloud); C is in a group of its own,
"fw-other", which admits nothing at first. Each guest runs a listener on LISTEN_PORT that answers
with its hostname.

Where the traffic comes from, and why it meets the guests' groups as on AWS:
  * from the VPC router (`ip netns exec <vpc namespace> ...`): the address is the subnet's gateway,
    which no group holds; a connection it opens to a guest meets that guest's ingress rules, as a
    connection from outside the group does on AWS (e.g. a user's SSH from the internet). What the
    router answers for the guests (DHCP, DNS, metadata) is never filtered, as on AWS.
  * from another guest (a command run in it over SSH): both ends' groups apply, the sender's
    egress and the receiver's ingress: exactly AWS's path between two instances of a VPC.
"""
from __future__ import annotations

import json
import subprocess
import time

import pytest

from .helpers import SSH_ANYWHERE, tiny_image, unique
from .test_guests import _console, _key, _ssh, cloud, fast_waiter  # noqa: F401 (fixture)

LISTEN_PORT = 7000
# A persistent busybox nc server answering each connection with the guest's name (the tiny image
# has no nohup: setsid keeps it alive after the SSH session).
LISTENER = ("printf '#!/bin/sh\\necho hello-from-$(hostname)\\n' > /tmp/hello && chmod +x /tmp/hello"
            " && setsid nc -ll -p %d -e /tmp/hello </dev/null >/dev/null 2>&1 &" % LISTEN_PORT)
SETTLE = 15  # seconds a change is given to reach the wire before a check says it did not


def _namespace(srv, vpc_id: str) -> str:
    return f"{srv.prefix}-{vpc_id}"


def _connects(ns: str, ip: str, port: int, timeout: float = 2.0) -> bool:
    """A new TCP connection from the VPC router (inside its namespace) to ip:port succeeds."""
    code = (f"import socket\ns = socket.socket(); s.settimeout({timeout})\n"
            f"try:\n    s.connect(({ip!r}, {port})); print('open')\nexcept OSError as e:\n    print('closed', e)")
    out = subprocess.run(["ip", "netns", "exec", ns, "python3", "-c", code], capture_output=True, text=True,
                         timeout=timeout + 20).stdout
    return out.startswith("open")


def _until(check, want: bool, timeout: float = SETTLE) -> bool:
    """Poll check() until it returns want (a change is applied by a host task after the answer);
    returns the last value seen."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.3)


def _fetch(srv, guest: dict, pem, ip: str) -> str:
    """From inside `guest`: what a new connection to ip:LISTEN_PORT reads ('' when none is made)."""
    return _ssh(srv, guest["id"], pem, f"echo | timeout 5 nc {ip} {LISTEN_PORT}; echo rc=$?")


def _banner(srv, guest: dict, pem, ip: str) -> str:
    """From inside `guest`: the first bytes ip's SSH server sends on a new connection."""
    return _ssh(srv, guest["id"], pem, f"timeout 5 nc {ip} 22 </dev/null | head -c 8; echo; echo rc=$?")


@pytest.fixture(scope="module")
def guests(cloud):  # noqa: F811
    ec2 = cloud.client()
    key, pem = _key(ec2, cloud)
    other = ec2.create_security_group(GroupName=unique("fw-other"), Description="fw other")["GroupId"]
    image = tiny_image(ec2)
    zone = ec2.describe_availability_zones()["AvailabilityZones"][0]["ZoneName"]
    ab = ec2.run_instances(ImageId=image, MinCount=2, MaxCount=2, KeyName=key,
                           Placement={"AvailabilityZone": zone})["Instances"]
    c = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, KeyName=key, SecurityGroupIds=[other],
                          Placement={"AvailabilityZone": zone})["Instances"][0]
    found = {}
    for name, inst in zip("abc", (*ab, c)):
        found[name] = {"id": inst["InstanceId"], "ip": inst["PrivateIpAddress"], "vpc": inst["VpcId"]}
    ids = [g["id"] for g in found.values()]
    fast_waiter(ec2, "instance_running")(InstanceIds=ids)
    for g in found.values():  # each guest's SSH server is up (its console says so)
        _console(ec2, g["id"], r"ec2emu-agent: ssh ready")
    for g in (found["a"], found["b"]):  # (C's is started once its SSH port is open)
        _ssh(cloud, g["id"], pem, LISTENER)
    default = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": ["default"]},
                                                    {"Name": "vpc-id", "Values": [found["a"]["vpc"]]}])
    yield {**found, "pem": pem, "other": other, "default": default["SecurityGroups"][0]["GroupId"],
           "ns": _namespace(cloud, found["a"]["vpc"]), "ec2": ec2}
    ec2.terminate_instances(InstanceIds=ids)
    fast_waiter(ec2, "instance_terminated")(InstanceIds=ids)




def test_the_host_is_given_the_firewall_the_api_describes(server, ec2):
    """The `none` driver keeps what apply_firewall was given (none-host.json): after each change,
    the VPC's whole firewall as the database says, re-rendered by the vpc.firewall host task."""
    def applied(vpc_id: str) -> dict:
        try:
            host = json.loads((server.state_dir / "none-host.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):  # (replaced atomically; not written yet)
            return {}
        return host.get("firewalls", {}).get(vpc_id) or {}

    def eventually(check) -> None:
        assert _until(check, True, timeout=10), "the host was never given the change"

    web = ec2.create_security_group(GroupName=unique("fw-web"), Description="web")["GroupId"]
    inst = ec2.run_instances(ImageId=tiny_image(ec2), MinCount=1, MaxCount=1,
                             SecurityGroupIds=[web])["Instances"][0]
    iid, vpc = inst["InstanceId"], inst["VpcId"]
    eventually(lambda: applied(vpc).get("ports", {}).get(iid) == {"ip": inst["PrivateIpAddress"], "groups": [web]})
    # AWS's default for a new group: all egress, no ingress.
    assert applied(vpc)["groups"][web] == {"ingress": [], "egress": [
        {"protocol": "all", "from_port": None, "to_port": None, "cidr": "0.0.0.0/0", "group_id": None}]}
    default = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": ["default"]},
                                                    {"Name": "vpc-id", "Values": [vpc]}])["SecurityGroups"][0]
    # The default group admits its own members (a reference to itself).
    assert {"protocol": "all", "from_port": None, "to_port": None, "cidr": None,
            "group_id": default["GroupId"]} in applied(vpc)["groups"][default["GroupId"]]["ingress"]

    rule = {"protocol": "tcp", "from_port": 80, "to_port": 80, "cidr": "10.0.0.0/8", "group_id": None}
    perm = [{"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "IpRanges": [{"CidrIp": "10.1.2.3/8"}]}]
    ec2.authorize_security_group_ingress(GroupId=web, IpPermissions=perm)
    eventually(lambda: applied(vpc)["groups"][web]["ingress"] == [rule])  # (the CIDR as a network)
    ref = [{"IpProtocol": "icmp", "FromPort": 8, "ToPort": -1, "UserIdGroupPairs": [{"GroupId": default["GroupId"]}]}]
    ec2.authorize_security_group_ingress(GroupId=web, IpPermissions=ref)
    eventually(lambda: applied(vpc)["groups"][web]["ingress"] == [rule, {
        "protocol": "icmp", "from_port": 8, "to_port": None, "cidr": None, "group_id": default["GroupId"]}])
    ec2.revoke_security_group_ingress(GroupId=web, IpPermissions=perm + ref)
    eventually(lambda: applied(vpc)["groups"][web]["ingress"] == [])

    ec2.modify_instance_attribute(InstanceId=iid, Groups=[default["GroupId"], web])
    eventually(lambda: applied(vpc)["ports"][iid]["groups"] == [default["GroupId"], web])
    ec2.terminate_instances(InstanceIds=[iid])
    eventually(lambda: iid not in applied(vpc)["ports"])


@pytest.mark.slow
def test_port_22_opens_on_authorize_and_closes_for_new_connections_on_revoke(cloud, guests):  # noqa: F811
    """From the VPC router (its gateway address is in no group: an outsider, as a user on the
    internet is on AWS) to C, whose group admits nothing until the rule is authorized."""
    ec2, ns, c = guests["ec2"], guests["ns"], guests["c"]
    # Positive control: A's SSH (default group, opened for the module) answers from the router.
    assert _connects(ns, guests["a"]["ip"], 22)
    # C's SSH server runs (its console said so) but no rule admits a new connection to it.
    assert not _connects(ns, c["ip"], 22)

    ec2.authorize_security_group_ingress(GroupId=guests["other"], IpPermissions=SSH_ANYWHERE)
    assert _until(lambda: _connects(ns, c["ip"], 22), True)

    # An established session: `cat` over SSH echoes what it is sent.
    session = subprocess.Popen(
        ["ip", "netns", "exec", ns, "ssh", "-i", str(guests["pem"]), "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10", f"ec2-user@{c['ip']}", "cat"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    try:
        session.stdin.write("before-revoke\n")
        assert session.stdout.readline().strip() == "before-revoke"

        ec2.revoke_security_group_ingress(GroupId=guests["other"], IpPermissions=SSH_ANYWHERE)
        assert _until(lambda: _connects(ns, c["ip"], 22), False) is False  # new connections: refused
        assert _connects(ns, guests["a"]["ip"], 22)  # (the router still reaches A: only C's rule went)
        # The session opened before the revoke lives on, both ways (AWS tracks it).
        session.stdin.write("after-revoke\n")
        assert session.stdout.readline().strip() == "after-revoke"
    finally:
        session.kill()
        session.wait(10)
    # Open again for the tests below (they run commands in C over SSH).
    ec2.authorize_security_group_ingress(GroupId=guests["other"], IpPermissions=SSH_ANYWHERE)
    assert _until(lambda: _connects(ns, c["ip"], 22), True)
    _ssh(cloud, c["id"], guests["pem"], LISTENER)


@pytest.mark.slow
def test_default_group_members_reach_each_other(cloud, guests):  # noqa: F811
    """Guest to guest (both groups apply), and from the router as the outsider beside it."""
    pem, a, b = guests["pem"], guests["a"], guests["b"]
    # A and B are both in the default group, which admits its own members on every port.
    assert "hello-from-" in _fetch(cloud, a, pem, b["ip"])
    assert "hello-from-" in _fetch(cloud, b, pem, a["ip"])
    # The same port from the router (in no group) stays closed: the default group admits members only.
    assert not _connects(guests["ns"], b["ip"], LISTEN_PORT)
    assert not _connects(guests["ns"], a["ip"], LISTEN_PORT)


@pytest.mark.slow
def test_another_group_is_admitted_by_a_group_reference(cloud, guests):  # noqa: F811
    """C (group fw-other) reaches A and B only once the default group names fw-other in a rule."""
    ec2, pem, a, b, c = guests["ec2"], guests["pem"], guests["a"], guests["b"], guests["c"]
    # Positive control: C reaches A's SSH port (open to anywhere), so the path from C works ...
    assert "SSH-2.0-" in _banner(cloud, c, pem, a["ip"])
    # ... but not A's listener: the default group admits its members only, and C is not one.
    assert "hello-from-" not in _fetch(cloud, c, pem, a["ip"])
    # C's own egress is AWS's default (allow all): the refusal is A's ingress.

    ref = [{"IpProtocol": "tcp", "FromPort": LISTEN_PORT, "ToPort": LISTEN_PORT,
            "UserIdGroupPairs": [{"GroupId": guests["other"]}]}]
    ec2.authorize_security_group_ingress(GroupId=guests["default"], IpPermissions=ref)
    assert _until(lambda: "hello-from-" in _fetch(cloud, c, pem, a["ip"]), True)
    assert "hello-from-" in _fetch(cloud, c, pem, b["ip"])  # every member of the group: B too
    # The reference admits members of fw-other, not everyone: the router is still kept out.
    assert not _connects(guests["ns"], a["ip"], LISTEN_PORT)

    # Membership is live: C moved out of fw-other (into a group with SSH only) loses the way in.
    ssh_only = ec2.create_security_group(GroupName=unique("fw-ssh"), Description="ssh")["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=ssh_only, IpPermissions=SSH_ANYWHERE)
    ec2.modify_instance_attribute(InstanceId=c["id"], Groups=[ssh_only])
    assert _until(lambda: "hello-from-" in _fetch(cloud, c, pem, a["ip"]), False) is False
    assert "SSH-2.0-" in _banner(cloud, c, pem, a["ip"])
    ec2.modify_instance_attribute(InstanceId=c["id"], Groups=[guests["other"]])
    ec2.revoke_security_group_ingress(GroupId=guests["default"], IpPermissions=ref)
    assert _until(lambda: "hello-from-" in _fetch(cloud, c, pem, a["ip"]), False) is False


@pytest.mark.slow
def test_a_restarted_emulator_applies_the_firewall_again(cloud, guests):  # noqa: F811
    """The host's rules are rebuilt from the database: removed behind the emulator's back while
    it was down, they are back after its start (the reconciler), and still say the same."""
    ns, a, b = guests["ns"], guests["a"], guests["b"]
    cloud.stop()
    subprocess.run(["ip", "netns", "exec", ns, "nft", "delete", "table", "inet", "ec2emu_sg"], check=True)
    assert _connects(ns, b["ip"], LISTEN_PORT)  # unfiltered now: the listener answers the router
    cloud.start()
    assert _until(lambda: _connects(ns, b["ip"], LISTEN_PORT), False) is False
    assert _connects(ns, a["ip"], 22)  # positive control: what the groups admit still passes
    assert "hello-from-" in _fetch(cloud, a, guests["pem"], b["ip"])
