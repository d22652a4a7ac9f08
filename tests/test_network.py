"""Real namespaces, bridges, dnsmasq and nftables (root only).

A "guest" here is a throwaway network namespace whose eth0 is a veth from the root namespace,
enslaved to the bridge `Network.plug` returns: exactly where libvirt would put a tap. Every
test runs under its own Network prefix, so nothing touches a real emulator's plumbing, and
everything is removed even when a test fails."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from hypervisor import host
from hypervisor.network import (INTERNET_ADDRESS, Desired, Network, PortSpec, VpcSpec,
                                root_bridge_name)

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(t) for t in ("ip", "nft", "dnsmasq", "busybox")),
    reason="needs root, iproute2, nftables, dnsmasq and busybox")

UDHCPC_SCRIPT = """#!/bin/sh
# udhcpc calls this with the event as $1 and the lease in its environment.
if [ "$1" = bound ] || [ "$1" = renew ]; then
  env | grep -E '^(ip|mask|router|dns|domain|hostname|lease|interface)=' > "$OUT"
  ip addr flush dev "$interface"
  ip addr add "$ip/$mask" dev "$interface"
  ip route replace default via "$router"
fi
"""


def rid(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(9)[:17]}"


def sh(*argv: str, check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{argv}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


class FakeGuest:
    """A namespace standing in for a guest: eth0 with the instance's MAC, plugged into `bridge`."""

    def __init__(self, tmp_path, bridge: str, mac: str):
        tag = secrets.token_hex(4)
        self.ns = f"ec2t-guest-{tag}"  # never under a Network prefix
        self.root_if = f"tg{tag}"
        self.tmp_path = tmp_path
        sh("ip", "netns", "add", self.ns)
        try:
            sh("ip", "netns", "exec", self.ns, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
               "net.ipv6.conf.default.disable_ipv6=1")
            sh("ip", "link", "add", self.root_if, "type", "veth", "peer", "name", "eth0", "netns", self.ns)
            with open(f"/proc/sys/net/ipv6/conf/{self.root_if}/disable_ipv6", "w") as f:
                f.write("1")
            sh("ip", "-n", self.ns, "link", "set", "lo", "up")
            sh("ip", "-n", self.ns, "link", "set", "eth0", "address", mac, "up")
            sh("ip", "link", "set", self.root_if, "master", bridge, "up")
        except BaseException:
            self.close()
            raise

    def dhcp(self) -> dict:
        script = self.tmp_path / f"udhcpc-{self.ns}.sh"
        script.write_text(UDHCPC_SCRIPT)
        script.chmod(0o755)
        out = self.tmp_path / f"lease-{self.ns}"
        out.unlink(missing_ok=True)
        proc = sh("ip", "netns", "exec", self.ns, "env", f"OUT={out}", "busybox", "udhcpc", "-i", "eth0",
                  "-n", "-q", "-f", "-t", "5", "-T", "1", "-s", str(script), check=False)
        assert proc.returncode == 0 and out.exists(), f"no lease: {proc.stdout}{proc.stderr}"
        return dict(line.split("=", 1) for line in out.read_text().splitlines())

    def run(self, *argv: str, check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess:
        return sh("ip", "netns", "exec", self.ns, *argv, check=check, timeout=timeout)

    def socket(self, type: int = socket.SOCK_STREAM, **kw) -> socket.socket:
        return host.socket_in(self.ns, socket.AF_INET, type, **kw)

    def close(self) -> None:
        sh("ip", "link", "del", self.root_if, check=False)
        sh("ip", "netns", "del", self.ns, check=False)


def our_leftovers(prefix: str) -> list[str]:
    """Namespaces and root devices of this prefix still present."""
    left = [ns for ns in host.netns_list() if ns.startswith(prefix + "-")]
    for link in json.loads(sh("ip", "-j", "link", "show").stdout):
        if (link.get("ifalias") or "").startswith(prefix + ":"):
            left.append(link["ifname"])
    return left


@pytest.fixture
def make_network(tmp_path):
    """Networks under unique prefixes, torn down (and checked empty) after the test."""
    made: list[Network] = []
    guests: list[FakeGuest] = []

    def make() -> Network:
        net = Network(tmp_path / f"net{len(made)}", prefix=f"ec2et{secrets.token_hex(3)}")
        made.append(net)
        return net

    make.guest = lambda bridge, mac: guests.append(FakeGuest(tmp_path, bridge, mac)) or guests[-1]
    try:
        yield make
    finally:
        for g in guests:
            g.close()
        for net in made:
            net.teardown_all()
        for net in made:
            assert our_leftovers(net.prefix) == []


def udp_listener(ns: str, addr: str, port: int) -> socket.socket:
    s = host.socket_in(ns, socket.AF_INET, socket.SOCK_DGRAM, bind=(addr, port))
    s.settimeout(1.5)
    return s


def received(s: socket.socket) -> list[tuple[bytes, str]]:
    got = []
    try:
        while True:
            data, peer = s.recvfrom(2048)
            got.append((data, peer[0]))
            s.settimeout(0.3)
    except socket.timeout:
        pass
    return got


def tcp_connect(sock: socket.socket, addr: tuple[str, int], timeout: float = 2.0) -> bool:
    sock.settimeout(timeout)
    try:
        sock.connect(addr)
        return True
    except OSError:
        return False
    finally:
        sock.close()


# ------------------------------------------------------------------------------------ tests

def test_two_subnets_dhcp_dns_routing_spoofing_and_public_ip(make_network):
    net = make_network()
    vpc, sa, sb = rid("vpc"), rid("subnet"), rid("subnet")
    i1, i2 = rid("i"), rid("i")
    mac1, mac2 = "0a:11:22:33:44:01", "0a:11:22:33:44:02"
    # The emulator computes every DNS name; the network serves what it is given.
    domains = dict(dns_domain="eu-west-1.compute.internal", public_dns_domain="eu-west-1.compute.amazonaws.com")
    ns = net.ensure_vpc(vpc, "eu-west-1", [(sa, "172.31.0.0/20"), (sb, "172.31.16.0/20")], **domains)
    assert ns == net.namespace_of(vpc) and ns in host.netns_list()
    # Idempotent: a second run (a reconciler after a crash) changes nothing and does not fail.
    net.ensure_vpc(vpc, "eu-west-1", [(sa, "172.31.0.0/20"), (sb, "172.31.16.0/20")], **domains)
    br1 = net.plug(i1, vpc, sa, mac1, "172.31.0.10", "ip-172-31-0-10")
    assert br1 == root_bridge_name(i1) and len(br1) <= 15
    assert net.plug(i1, vpc, sa, mac1, "172.31.0.10", "ip-172-31-0-10") == br1  # idempotent
    br2 = net.plug(i2, vpc, sb, mac2, "172.31.16.20", "ip-172-31-16-20.eu-west-1.compute.internal")

    # The root namespace holds no address on a guest network (not even IPv6 link-local).
    for dev in (br1, br2, "qv" + br1[1:]):
        info = json.loads(sh("ip", "-j", "addr", "show", "dev", dev).stdout)[0]
        assert info.get("addr_info", []) == [], info
    routes = sh("ip", "route", "get", "172.31.0.10", check=False).stdout
    assert "dev q" not in routes

    g1, g2 = make_network.guest(br1, mac1), make_network.guest(br2, mac2)
    lease1, lease2 = g1.dhcp(), g2.dhcp()
    assert lease1["ip"] == "172.31.0.10" and lease1["router"] == "172.31.0.1"
    assert lease1["dns"] == "172.31.0.1" and lease1["mask"] == "20"
    assert lease1["domain"] == "eu-west-1.compute.internal" and lease1["hostname"] == "ip-172-31-0-10"
    assert lease2["ip"] == "172.31.16.20" and lease2["router"] == "172.31.16.1"
    assert lease2["hostname"] == "ip-172-31-16-20"

    # Gateway, the other subnet (routed by the VPC namespace), DNS for the VPC's names only.
    assert g1.run("busybox", "ping", "-c", "1", "-W", "2", "172.31.0.1", check=False).returncode == 0
    assert g1.run("busybox", "ping", "-c", "1", "-W", "2", "172.31.16.20", check=False).returncode == 0
    out = g1.run("busybox", "nslookup", "ip-172-31-16-20.eu-west-1.compute.internal", "172.31.0.1").stdout
    assert "172.31.16.20" in out
    out = g2.run("busybox", "nslookup", "ip-172-31-0-10.eu-west-1.compute.internal", "172.31.16.1").stdout
    assert "172.31.0.10" in out
    nowhere = g1.run("busybox", "nslookup", "example.com", "172.31.0.1", check=False)
    assert "can't find" in nowhere.stdout + nowhere.stderr  # never forwarded anywhere
    absent = g1.run("busybox", "nslookup", "ip-172-31-0-99.eu-west-1.compute.internal", "172.31.0.1",
                    check=False)
    assert "172.31.0.99" not in absent.stdout.split("Name:")[-1]

    # Anti-spoofing: the VPC namespace sees the guest's own address, never a forged one.
    listener = udp_listener(ns, "172.31.0.1", 7777)
    try:
        s = g1.socket(socket.SOCK_DGRAM, bind=("172.31.0.10", 0))
        s.sendto(b"honest", ("172.31.0.1", 7777))
        s.close()
        assert received(listener) == [(b"honest", "172.31.0.10")]
        g1.run("ip", "addr", "add", "172.31.0.99/32", "dev", "eth0")
        s = g1.socket(socket.SOCK_DGRAM, bind=("172.31.0.99", 0))
        s.sendto(b"forged-ip", ("172.31.0.1", 7777))
        s.close()
        g1.run("ip", "link", "set", "eth0", "address", "0a:11:22:33:44:99")
        s = g1.socket(socket.SOCK_DGRAM, bind=("172.31.0.10", 0))
        s.sendto(b"forged-mac", ("172.31.0.1", 7777))
        s.close()
        assert received(listener) == []
        # g2 pretending to be g1 towards g1's subnet (routed path) is dropped too.
        g2.run("ip", "addr", "add", "172.31.0.10/32", "dev", "eth0")
        s = g2.socket(socket.SOCK_DGRAM, bind=("172.31.0.10", 0))
        s.sendto(b"forged-neighbour", ("172.31.16.1", 7777))
        s.close()
        g2.run("ip", "addr", "del", "172.31.0.10/32", "dev", "eth0")
        assert received(listener) == []
    finally:
        listener.close()
        g1.run("ip", "link", "set", "eth0", "address", mac1, check=False)
        g1.run("ip", "addr", "del", "172.31.0.99/32", "dev", "eth0", check=False)

    # Public IP: the internet namespace reaches g1 through it; g1's traffic out is SNATed to it.
    inet = net.internet_namespace
    server = g1.socket(bind=("0.0.0.0", 8080), listen=5)
    server.settimeout(3)
    try:
        assert not tcp_connect(host.socket_in(inet), ("198.51.100.10", 8080), 1)  # not mapped yet
        public_name = "ec2-198-51-100-10.eu-west-1.compute.amazonaws.com"
        net.map_public_ip(vpc, "172.31.0.10", "198.51.100.10", public_name)
        net.map_public_ip(vpc, "172.31.0.10", "198.51.100.10", public_name)  # idempotent
        assert tcp_connect(host.socket_in(inet), ("198.51.100.10", 8080))
        conn, peer = server.accept()
        conn.close()
        assert peer[0] == INTERNET_ADDRESS
        # Inside the VPC, the public DNS name resolves to the private address (as on AWS).
        out = g2.run("busybox", "nslookup", public_name, "172.31.16.1").stdout
        assert "172.31.0.10" in out
        other = g2.run("busybox", "nslookup", "ec2-198-51-100-99.eu-west-1.compute.amazonaws.com",
                       "172.31.16.1", check=False)
        assert "can't find" in other.stdout + other.stderr  # a local domain: never forwarded
        # From the internet, the same name resolves to the public address (split horizon): a
        # tool run in the internet namespace asks its resolver (/etc/netns/<ns>/resolv.conf).
        def resolve_outside(name: str) -> str:
            return sh("ip", "netns", "exec", inet, sys.executable, "-c",
                      f"import socket\ntry:\n    print(socket.gethostbyname({name!r}))\n"
                      "except OSError as e:\n    print('unresolved', e)").stdout.strip()
        assert resolve_outside(public_name) == "198.51.100.10"
        assert resolve_outside("ec2-198-51-100-99.eu-west-1.compute.amazonaws.com").startswith("unresolved")
        # Its resolver killed: the watchdog's heal starts it again.
        for pid in sh("ip", "netns", "pids", inet).stdout.split():
            if open(f"/proc/{pid}/comm").read().strip() == "dnsmasq":
                os.kill(int(pid), 9)
        time.sleep(0.5)
        assert resolve_outside(public_name).startswith("unresolved")
        net.heal()
        assert resolve_outside(public_name) == "198.51.100.10"
        # The private address is not reachable from the internet.
        assert not tcp_connect(host.socket_in(inet), ("172.31.0.10", 8080), 1)
    finally:
        server.close()
    outside = host.socket_in(inet, bind=(INTERNET_ADDRESS, 9090), listen=5)
    outside.settimeout(3)
    try:
        assert tcp_connect(g1.socket(), (INTERNET_ADDRESS, 9090))
        conn, peer = outside.accept()
        conn.close()
        assert peer[0] == "198.51.100.10"  # SNATed at the VPC's internet gateway
        # No public IP, no internet (AWS: an IGW route is not enough without a public address).
        assert not tcp_connect(g2.socket(), (INTERNET_ADDRESS, 9090), 1)
        net.unmap_public_ip(vpc, "172.31.0.10", "198.51.100.10")
        assert not tcp_connect(g1.socket(), (INTERNET_ADDRESS, 9090), 1)
        net.map_public_ip(vpc, "172.31.0.10", "198.51.100.11")
        assert tcp_connect(g1.socket(), (INTERNET_ADDRESS, 9090))
        conn, peer = outside.accept()
        conn.close()
        assert peer[0] == "198.51.100.11"
        net.unmap_instance(i1)  # the instance stopped: its public IP goes
        net.unmap_instance(i1)
        assert not tcp_connect(g1.socket(), (INTERNET_ADDRESS, 9090), 1)
    finally:
        outside.close()
    assert "198.51.100.1" not in sh("ip", "-n", inet, "route").stdout

    # unplug and remove_vpc leave nothing behind.
    net.unplug(i1)
    net.unplug(i1)  # idempotent
    assert br1 not in json.dumps(json.loads(sh("ip", "-j", "link", "show").stdout))
    assert "qp" + br1[1:] not in sh("ip", "-n", ns, "link").stdout
    assert mac1 not in (net.state_dir / vpc / "dhcp-hosts").read_text()
    assert "qp" + br1[1:] not in sh("ip", "netns", "exec", ns, "nft", "list", "ruleset").stdout
    net.remove_vpc(vpc)
    net.remove_vpc(vpc)  # idempotent
    assert ns not in host.netns_list()
    left = [x for x in our_leftovers(net.prefix) if x != net.internet_namespace]
    assert left == []
    assert _dnsmasqs_of(net) == []


def _dnsmasqs_of(net: Network) -> list[SimpleNamespace]:
    """Live dnsmasq processes started for this Network (their command line names its state dir)."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
            state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if "dnsmasq" in cmd and str(net.state_dir) in cmd and state != "Z":
            out.append(SimpleNamespace(pid=int(pid), cmd=cmd))
    return out


def test_reused_address_goes_to_new_mac(make_network):
    """AWS reuses private addresses: after unplug, the same IP leases to a different MAC."""
    net = make_network()
    vpc, sa = rid("vpc"), rid("subnet")
    net.ensure_vpc(vpc, "us-east-1", [(sa, "10.0.0.0/24")], dns_domain="ec2.internal")
    first, second = rid("i"), rid("i")
    g = make_network.guest(net.plug(first, vpc, sa, "0a:00:00:00:01:01", "10.0.0.4", "ip-10-0-0-4.ec2.internal"),
                           "0a:00:00:00:01:01")
    lease = g.dhcp()
    assert lease["ip"] == "10.0.0.4" and lease["domain"] == "ec2.internal"
    assert lease["hostname"] == "ip-10-0-0-4"
    g.close()
    net.unplug(first)
    g2 = make_network.guest(net.plug(second, vpc, sa, "0a:00:00:00:01:02", "10.0.0.4", ""),
                            "0a:00:00:00:01:02")
    lease = g2.dhcp()
    assert lease["ip"] == "10.0.0.4"
    assert "hostname" not in lease  # no name given, none invented
    # An unknown MAC gets nothing.
    stranger = make_network.guest(net.plug(rid("i"), vpc, sa, "0a:00:00:00:01:03", "10.0.0.5", ""),
                                  "0a:00:00:00:01:04")
    with pytest.raises(AssertionError):
        stranger.dhcp()


def test_sync_repairs_and_removes_leftovers(make_network):
    net = make_network()
    vpc, gone_vpc, sa = rid("vpc"), rid("vpc"), rid("subnet")
    keep, stale = rid("i"), rid("i")
    net.ensure_vpc(vpc, "us-east-1", [(sa, "172.31.0.0/20")])
    net.ensure_vpc(gone_vpc, "us-east-1", [(rid("subnet"), "172.31.0.0/20")])  # overlapping CIDR: fine
    net.plug(keep, vpc, sa, "0a:00:00:00:02:01", "172.31.0.4", "")
    net.plug(stale, vpc, sa, "0a:00:00:00:02:02", "172.31.0.5", "")
    ns = net.namespace_of(vpc)
    # Simulate a crash and decay: dnsmasq killed, a root bridge and the internet link deleted.
    for p in _dnsmasqs_of(net):
        os.kill(p.pid, 9)
    sh("ip", "link", "del", root_bridge_name(keep))
    sh("ip", "-n", ns, "link", "del", "igw")

    desired = Desired(vpcs=[VpcSpec(vpc, ((sa, "172.31.0.0/20"),), region="us-east-1")],
                      ports=[PortSpec(keep, vpc, sa, "0a:00:00:00:02:01", "172.31.0.4", "",
                                      public_ip="198.51.100.77")])
    net.sync(desired)
    net.sync(desired)  # idempotent
    assert net.namespace_of(gone_vpc) not in host.netns_list()
    root = sh("ip", "link").stdout
    assert root_bridge_name(keep) in root and root_bridge_name(stale) not in root
    assert "qp" + root_bridge_name(stale)[1:] not in sh("ip", "-n", ns, "link").stdout
    assert len([p for p in _dnsmasqs_of(net) if vpc in p.cmd]) == 1
    assert "198.51.100.77" in sh("ip", "-n", net.internet_namespace, "route").stdout
    g = make_network.guest(root_bridge_name(keep), "0a:00:00:00:02:01")
    assert g.dhcp()["ip"] == "172.31.0.4"
    server = g.socket(bind=("0.0.0.0", 22), listen=1)
    try:
        assert tcp_connect(host.socket_in(net.internet_namespace), ("198.51.100.77", 22))
    finally:
        server.close()
    # Nothing desired: everything of ours goes, including the internet namespace.
    net.sync(Desired())
    assert our_leftovers(net.prefix) == []


def test_prefixes_do_not_touch_each_other(make_network):
    a, b = make_network(), make_network()
    va, vb = rid("vpc"), rid("vpc")
    a.ensure_vpc(va, "us-east-1", [(rid("subnet"), "10.1.0.0/24")])
    b.ensure_vpc(vb, "us-east-1", [(rid("subnet"), "10.1.0.0/24")])
    a.teardown_all()
    assert b.namespace_of(vb) in host.netns_list()
    assert our_leftovers(a.prefix) == []  # b is torn down by the fixture


def test_ensure_vpc_rebuilds_a_lost_namespace_with_its_ports(make_network):
    """After a host reboot or a lost namespace, ensure_vpc alone restores the guest's path; the
    gateway keeps its MAC, so a guest's ARP cache stays right."""
    net = make_network()
    vpc, sa, iid, mac = rid("vpc"), rid("subnet"), rid("i"), "0a:00:00:00:03:01"
    ns = net.ensure_vpc(vpc, "us-east-1", [(sa, "10.9.0.0/24")])
    g = make_network.guest(net.plug(iid, vpc, sa, mac, "10.9.0.4", ""), mac)
    assert g.dhcp()["ip"] == "10.9.0.4"
    assert g.run("busybox", "ping", "-c", "1", "-W", "2", "10.9.0.1", check=False).returncode == 0
    for p in _dnsmasqs_of(net):
        os.kill(p.pid, 9)
    sh("ip", "netns", "del", ns)
    deadline = time.monotonic() + 10  # the kernel frees a namespace asynchronously
    while "qv" + root_bridge_name(iid)[1:] in sh("ip", "link").stdout and time.monotonic() < deadline:
        time.sleep(0.1)
    assert g.run("busybox", "ping", "-c", "1", "-W", "1", "10.9.0.1", check=False).returncode != 0
    net.ensure_vpc(vpc, "us-east-1", [(sa, "10.9.0.0/24")])
    assert g.run("busybox", "ping", "-c", "1", "-W", "2", "10.9.0.1", check=False).returncode == 0
    assert g.dhcp()["ip"] == "10.9.0.4"


def test_an_instances_start_looks_at_its_vpc_and_repairs_only_what_is_broken(make_network, monkeypatch):
    """ensure(repair=False), as an instance's start calls it: a VPC this process made whole with
    the same spec is not re-plumbed (the full repair re-plumbs every port: tenths of a second);
    a subnet bridge gone, a killed dnsmasq or a changed spec each bring the full repair back."""
    net = make_network()
    vpc, sa, sb = rid("vpc"), rid("subnet"), rid("subnet")
    spec = VpcSpec(vpc, ((sa, "10.7.0.0/24"),))
    ns = net.ensure(spec)
    full = []
    real = net.ensure_vpc
    monkeypatch.setattr(net, "ensure_vpc", lambda *a, **k: full.append(a) or real(*a, **k))
    assert net.ensure(spec, repair=False) == ns and full == []  # whole: nothing done
    assert net.ensure(spec) == ns and len(full) == 1  # repair=True: always the full one
    bridge = next(b for b in json.loads(sh("ip", "-n", ns, "-j", "link", "show", "type", "bridge").stdout))["ifname"]
    sh("ip", "-n", ns, "link", "del", bridge)
    net.ensure(spec, repair=False)
    assert len(full) == 2 and bridge in sh("ip", "-n", ns, "link", "show", "up").stdout  # repaired
    for p in _dnsmasqs_of(net):
        os.kill(p.pid, 9)
    deadline = time.monotonic() + 10
    while _dnsmasqs_of(net) and time.monotonic() < deadline:
        time.sleep(0.1)
    net.ensure(spec, repair=False)
    assert len(full) == 3 and _dnsmasqs_of(net)
    wider = VpcSpec(vpc, ((sa, "10.7.0.0/24"), (sb, "10.7.1.0/24")))
    net.ensure(wider, repair=False)
    assert len(full) == 4 and net.ensure(wider, repair=False) == ns and len(full) == 4
