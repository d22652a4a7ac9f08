"""Host plumbing for VPCs: network namespaces, bridges, veths, dnsmasq and nftables.

Everything a guest can reach lives in namespaces created here; the root namespace only holds,
per guest interface, an address-less bridge (`q<10 hex of the instance id>`) that libvirt
attaches the guest's tap to, and one end of a veth pair (`qv<hex>`) whose other end (`qp<hex>`)
is a port of the subnet's bridge inside the VPC namespace ("hybrid plug", as OpenStack does), so
every frame a guest sends crosses the VPC namespace, where it can be filtered.

Per VPC, namespace `<prefix>-<vpc id>`:
  * one bridge per subnet, `b<10 hex of the subnet id>`, holding the subnet's gateway (first host);
  * IPv4 forwarding on (it routes between its subnets and to the internet namespace);
  * 169.254.169.254/32 on lo (the metadata server's socket is opened there by metadata/);
  * one dnsmasq: DHCP with one fixed lease per interface (hosts file, SIGHUP re-reads it), router
    and DNS server = the subnet's gateway, names `ip-a-b-c-d.<domain>` from an addn-hosts file,
    `no-resolv` and no upstream: it never forwards a query anywhere;
  * nftables, in tables owned here (each replaced whole and atomically on every change):
      - `bridge ec2emu_ports`: per-port anti-spoofing, stateless (this kernel has no bridge-family
        conntrack): a port may only send frames from its MAC, ARP for its own address and IPv4
        from its own address (or 0.0.0.0 -> 255.255.255.255 for DHCP); anything else (IPv6,
        VLAN tags...) is dropped;
      - `ip ec2emu_igw`: the internet gateway: 1:1 NAT of public IPs (DNAT in from the internet
        link, SNAT out to it), and only instances with a public IP may use that link.
    Other code (security groups) may add its own tables in the same namespace; names differ.

One more namespace, `<prefix>-internet`, plays the internet. Each VPC namespace has a veth into
it (`igw` in the VPC namespace, `x<10 hex of the vpc id>` in the internet one), unnumbered in
effect: the VPC end is LINK_VPC_ADDRESS/32 in every VPC namespace, the internet namespace owns
INTERNET_ADDRESS/32 on its lo ("a host on the internet", the source tests and tools connect
from), and everything is /32 routes with `onlink`. The internet namespace routes each public IP to
its VPC's link, so public IPs of different VPCs reach each other through it, as on AWS.

Ownership: root-namespace devices made here carry the alias `<prefix>:<instance id>`, internet
links `<prefix>:<vpc id>`; namespaces are named `<prefix>-...`. `sync` and `teardown_all` only
ever remove things bearing this Network's prefix, so two emulators (or a test run next to a
real one) with different prefixes do not touch each other's plumbing.

The root namespace never gets an address on a guest network: its bridges and veths have none,
and IPv6 is disabled on them before they come up (no link-local addresses, no ND).

Every operation is idempotent and rebuilds from state: per-VPC state lives in
`<state_dir>/<vpc id>/state.json` beside dnsmasq's files; `sync` rebuilds everything from a
desired description (the reconciler's view of the database) after a crash or restart.
"""
from __future__ import annotations

import fcntl
import hashlib
import ipaddress
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from . import host
from .host import HostError, run

log = logging.getLogger("ec2emu.network")

PREFIX = "ec2emu"
METADATA_ADDRESS = "169.254.169.254"
LINK_VPC_ADDRESS = "100.127.255.1"      # the VPC router's end of its internet link (every VPC ns)
INTERNET_ADDRESS = "100.127.255.254"    # the internet namespace's own address
IGW_IFNAME = "igw"
PORTS_TABLE = "ec2emu_ports"            # bridge family, in each VPC namespace
IGW_TABLE = "ec2emu_igw"                # ip family, in each VPC namespace
DHCP_LEASE = "1h"


def dns_domain(region: str) -> str:
    """AWS's private DNS domain: us-east-1 keeps ec2.internal; elsewhere <region>.compute.internal."""
    return "ec2.internal" if region == "us-east-1" else f"{region}.compute.internal"


def private_name(ip: str) -> str:
    return "ip-" + ip.replace(".", "-")


def public_name(region: str, ip: str) -> str:
    host_part = "ec2-" + ip.replace(".", "-")
    return (f"{host_part}.compute-1.amazonaws.com" if region == "us-east-1"
            else f"{host_part}.{region}.compute.amazonaws.com")


def disable_ipv6(dev: str) -> None:
    """For the libvirt driver: a guest's tap in the root namespace should carry no IPv6 either
    (no link-local address, no neighbour discovery onto the guest's link)."""
    _disable_ipv6_root(dev)


def _hex10(resource_id: str) -> str:
    tail = resource_id.split("-", 1)[-1].lower()
    if not tail or any(c not in "0123456789abcdef" for c in tail):
        raise ValueError(f"not an AWS-style id: {resource_id!r}")
    return tail[:10]


def root_bridge_name(instance_id: str) -> str:
    return "q" + _hex10(instance_id)


def root_veth_name(instance_id: str) -> str:
    return "qv" + _hex10(instance_id)


def port_name(instance_id: str) -> str:
    """The port of the instance on its subnet bridge, inside the VPC namespace."""
    return "qp" + _hex10(instance_id)


def subnet_bridge_name(subnet_id: str) -> str:
    return "b" + _hex10(subnet_id)


def internet_link_name(vpc_id: str) -> str:
    return "x" + _hex10(vpc_id)


@dataclass(frozen=True)
class VpcSpec:
    vpc_id: str
    region: str
    subnets: tuple[tuple[str, str], ...]  # (subnet id, cidr)


@dataclass(frozen=True)
class PortSpec:
    instance_id: str
    vpc_id: str
    subnet_id: str
    mac: str
    ip: str
    hostname: str = ""
    public_ip: str | None = None


@dataclass
class Desired:
    """What the host should hold: used by `Network.sync` (the reconciler builds it from the DB)."""
    vpcs: list[VpcSpec] = field(default_factory=list)
    ports: list[PortSpec] = field(default_factory=list)


def gateway_mac(subnet_id: str) -> str:
    """The subnet gateway's MAC: fixed per subnet (locally administered), so a rebuilt namespace
    (after a crash or reboot) answers with the MAC its guests already have in their ARP caches."""
    h = hashlib.sha256(subnet_id.encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, 0xEC, *h[:4]))


def _gateway(cidr: str) -> tuple[str, int]:
    net = ipaddress.ip_network(cidr)
    return str(net.network_address + 1), net.prefixlen


def _write_if_changed(path: Path, text: str) -> bool:
    try:
        if path.read_text() == text:
            return False
    except FileNotFoundError:
        pass
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return True


def _proc_alive(pid: int) -> bool:
    """True if pid runs (a zombie does not count: our daemons are reparented and maybe not reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def _proc_comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def _kill(pid: int, wait: float = 3.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if not _proc_alive(pid):
            return
        time.sleep(0.02)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _disable_ipv6_root(dev: str) -> None:
    """No IPv6 (hence no link-local address, no ND) on a root-namespace device of ours."""
    try:
        with open(f"/proc/sys/net/ipv6/conf/{dev}/disable_ipv6", "w") as f:
            f.write("1")
    except FileNotFoundError:  # IPv6 not compiled in / device gone
        pass


class Network:
    def __init__(self, state_dir: str | os.PathLike, prefix: str = PREFIX):
        if not prefix or len(prefix) > 32 or not prefix.replace("-", "").isalnum():
            raise ValueError(f"bad prefix {prefix!r}")
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self._tlock = threading.RLock()

    # ------------------------------------------------------------------------------ naming

    def namespace_of(self, vpc_id: str) -> str:
        return f"{self.prefix}-{vpc_id}"

    @property
    def internet_namespace(self) -> str:
        return f"{self.prefix}-internet"

    def _alias(self, resource_id: str) -> str:
        return f"{self.prefix}:{resource_id}"

    def _owned_alias(self, alias: str | None) -> str | None:
        """The resource id in one of our aliases, else None."""
        if alias and alias.startswith(self.prefix + ":"):
            return alias[len(self.prefix) + 1:].split(":", 1)[0]
        return None

    # ------------------------------------------------------------------------------ locking

    class _Locked:
        def __init__(self, net: "Network"):
            self.net = net

        def __enter__(self):
            self.net._tlock.acquire()
            self.fd = os.open(self.net.state_dir / ".lock", os.O_CREAT | os.O_RDWR, 0o600)
            fcntl.flock(self.fd, fcntl.LOCK_EX)

        def __exit__(self, *exc):
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.net._tlock.release()

    def _locked(self) -> "Network._Locked":
        return Network._Locked(self)

    # ------------------------------------------------------------------------------ state

    def _vpc_dir(self, vpc_id: str) -> Path:
        return self.state_dir / vpc_id

    def _load(self, vpc_id: str) -> dict | None:
        try:
            return json.loads((self._vpc_dir(vpc_id) / "state.json").read_text())
        except FileNotFoundError:
            return None

    def _save(self, st: dict) -> None:
        d = self._vpc_dir(st["vpc_id"])
        d.mkdir(parents=True, exist_ok=True)
        _write_if_changed(d / "state.json", json.dumps(st, indent=1, sort_keys=True))

    def _known_vpcs(self) -> list[str]:
        return sorted(p.parent.name for p in self.state_dir.glob("*/state.json"))

    # ------------------------------------------------------------------------------ host access

    def _ip(self, ns: str | None, *args: str, check: bool = True) -> str:
        return run(["ip", *(["-n", ns] if ns else []), *args], check=check)

    def _links(self, ns: str | None) -> dict[str, dict]:
        out = self._ip(ns, "-j", "-d", "link", "show")
        return {link["ifname"]: link for link in json.loads(out or "[]")}

    def _addrs(self, ns: str, dev: str) -> list[str]:
        out = self._ip(ns, "-j", "addr", "show", "dev", dev)
        addrs = []
        for link in json.loads(out or "[]"):
            for a in link.get("addr_info", []):
                if a.get("family") == "inet":
                    addrs.append(f"{a['local']}/{a['prefixlen']}")
        return addrs

    def _exec(self, ns: str, *argv: str, input: str | None = None) -> str:
        return run(["ip", "netns", "exec", ns, *argv], input=input)

    def _sysctl(self, ns: str, **values: str) -> None:
        self._exec(ns, "sysctl", "-q", "-w", *(f"{k.replace('__', '.')}={v}" for k, v in values.items()))

    def _del_link(self, ns: str | None, name: str) -> None:
        self._ip(ns, "link", "del", name, check=False)

    @staticmethod
    def _pair_ok(a: dict | None, b: dict | None) -> bool:
        """a and b are the two ends of one veth pair made here (same alias, each other's peer)."""
        return (a is not None and b is not None and a.get("ifalias") and a.get("ifalias") == b.get("ifalias")
                and a.get("link_index") == b.get("ifindex") and b.get("link_index") == a.get("ifindex"))

    # ------------------------------------------------------------------------------ namespaces

    def _ensure_ns(self, ns: str, forwarding: bool) -> None:
        if not host.netns_exists(ns):
            self._ip(None, "netns", "add", ns)
        # No IPv6 anywhere (no link-local chatter, no RAs); all routing decisions are ours.
        self._sysctl(ns, **{
            "net.ipv6.conf.all.disable_ipv6": "1", "net.ipv6.conf.default.disable_ipv6": "1",
            "net.ipv4.ip_forward": "1" if forwarding else "0",
            "net.ipv4.conf.all.rp_filter": "0", "net.ipv4.conf.default.rp_filter": "0",
        })
        self._ip(ns, "link", "set", "lo", "up")

    def _ensure_internet(self) -> None:
        ns = self.internet_namespace
        self._ensure_ns(ns, forwarding=True)
        self._ip(ns, "addr", "replace", f"{INTERNET_ADDRESS}/32", "dev", "lo")

    def _remove_ns(self, ns: str) -> None:
        """Stop our daemons in a namespace, delete its links (a socket may keep a deleted namespace
        alive: its veths must not survive in it), then the namespace."""
        if not host.netns_exists(ns):
            return
        self._stop_dnsmasq_in(ns)
        for name, link in self._links(ns).items():
            if name != "lo" and link.get("linkinfo", {}).get("info_kind") in ("veth", "bridge"):
                self._del_link(ns, name)
        self._ip(None, "netns", "del", ns, check=False)

    # ------------------------------------------------------------------------------ VPCs

    def ensure_vpc(self, vpc_id: str, region: str, subnets: Iterable[tuple[str, str]]) -> str:
        """Create or repair a VPC's namespace, bridges, internet link, dnsmasq and rules.
        Returns the namespace name."""
        with self._locked():
            st = self._load(vpc_id) or {"vpc_id": vpc_id, "ports": {}, "nat": {}}
            st["region"] = region
            st["subnets"] = {sid: str(ipaddress.ip_network(cidr)) for sid, cidr in subnets}
            self._save(st)
            self._plumb_vpc(st)
            self._apply(st)
            ns = self.namespace_of(vpc_id)
            root_links, ns_links = self._links(None), self._links(ns)
            for instance_id, port in st["ports"].items():  # repair ports of a rebuilt namespace
                if port["subnet_id"] in st["subnets"]:
                    self._plumb_port(ns, instance_id, port["subnet_id"], root_links, ns_links)
            return ns

    def _plumb_vpc(self, st: dict) -> None:
        vpc_id = st["vpc_id"]
        ns = self.namespace_of(vpc_id)
        self._ensure_ns(ns, forwarding=True)
        # Bridged IPv4 passes the ip/inet hooks (security groups use conntrack there).
        try:
            self._sysctl(ns, **{"net.bridge.bridge-nf-call-iptables": "1"})
        except HostError as exc:  # br_netfilter absent: bridged traffic skips ip hooks
            log.warning("%s: %s", ns, exc)
        self._ip(ns, "addr", "replace", f"{METADATA_ADDRESS}/32", "dev", "lo")
        links = self._links(ns)
        wanted = set()
        for subnet_id, cidr in st["subnets"].items():
            br = subnet_bridge_name(subnet_id)
            wanted.add(br)
            gw, plen = _gateway(cidr)
            link = links.get(br)
            if link is not None and link.get("linkinfo", {}).get("info_kind") != "bridge":
                self._del_link(ns, br)
                link = None
            if link is None:
                self._ip(ns, "link", "add", br, "address", gateway_mac(subnet_id), "type", "bridge",
                         "stp_state", "0")
            elif link.get("address") != gateway_mac(subnet_id):
                self._ip(ns, "link", "set", br, "address", gateway_mac(subnet_id))
            self._ip(ns, "link", "set", br, "alias", self._alias(subnet_id))
            want = f"{gw}/{plen}"
            for addr in self._addrs(ns, br):
                if addr != want:
                    self._ip(ns, "addr", "del", addr, "dev", br)
            self._ip(ns, "addr", "replace", want, "dev", br)
            self._ip(ns, "link", "set", br, "up")
        for name, link in links.items():  # bridges of subnets that are gone
            if (name.startswith("b") and name not in wanted
                    and link.get("linkinfo", {}).get("info_kind") == "bridge"):
                self._del_link(ns, name)
        # The link to the internet namespace.
        self._ensure_internet()
        ins = self.internet_namespace
        x = internet_link_name(vpc_id)
        ilinks = self._links(ins)
        if not self._pair_ok(links.get(IGW_IFNAME), ilinks.get(x)):
            self._del_link(ns, IGW_IFNAME)
            self._del_link(ins, x)
            alias = f"{self._alias(vpc_id)}:{secrets.token_hex(4)}"
            self._ip(ns, "link", "add", IGW_IFNAME, "type", "veth", "peer", "name", x, "netns", ins)
            self._ip(ns, "link", "set", IGW_IFNAME, "alias", alias)
            self._ip(ins, "link", "set", x, "alias", alias)
        self._ip(ns, "addr", "replace", f"{LINK_VPC_ADDRESS}/32", "dev", IGW_IFNAME)
        self._ip(ns, "link", "set", IGW_IFNAME, "up")
        self._ip(ins, "link", "set", x, "up")
        self._ip(ns, "route", "replace", "default", "via", INTERNET_ADDRESS, "dev", IGW_IFNAME, "onlink")

    def remove_vpc(self, vpc_id: str) -> None:
        """Remove a VPC's namespace, dnsmasq, internet link, its ports' root devices and state."""
        with self._locked():
            self._remove_vpc(vpc_id)

    def _remove_vpc(self, vpc_id: str) -> None:
        st = self._load(vpc_id) or {"ports": {}}
        for instance_id in st.get("ports", {}):
            self._remove_root_devices(instance_id)
        self._stop_dnsmasq(vpc_id)
        self._remove_ns(self.namespace_of(vpc_id))
        if host.netns_exists(self.internet_namespace):
            self._del_link(self.internet_namespace, internet_link_name(vpc_id))
        shutil.rmtree(self._vpc_dir(vpc_id), ignore_errors=True)
        if not self._known_vpcs():  # the last VPC gone: nothing needs "the internet" any more
            self._remove_ns(self.internet_namespace)

    # ------------------------------------------------------------------------------ ports

    def plug(self, instance_id: str, vpc_id: str, subnet_id: str, mac: str, ip: str,
             hostname: str = "") -> str:
        """Wire a guest interface; returns the root-namespace bridge libvirt attaches its tap to
        (`<interface type='bridge'><source bridge='...'/>`)."""
        with self._locked():
            st = self._load(vpc_id)
            if st is None:
                raise ValueError(f"VPC {vpc_id} has no network (call ensure_vpc first)")
            if subnet_id not in st["subnets"]:
                raise ValueError(f"subnet {subnet_id} is not in VPC {vpc_id}'s network")
            for other in self._known_vpcs():  # an instance has one port, in one VPC
                if other != vpc_id:
                    ost = self._load(other)
                    if ost and instance_id in ost.get("ports", {}):
                        del ost["ports"][instance_id]
                        self._save(ost)
                        self._apply(ost)
            st["ports"][instance_id] = {"subnet_id": subnet_id, "mac": mac.lower(), "ip": ip,
                                        "hostname": hostname}
            self._save(st)
            self._apply(st)  # anti-spoofing rules exist before the port comes up
            ns = self.namespace_of(vpc_id)
            self._plumb_port(ns, instance_id, subnet_id, self._links(None), self._links(ns))
            return root_bridge_name(instance_id)

    def _plumb_port(self, ns: str, instance_id: str, subnet_id: str, root_links: dict,
                    ns_links: dict) -> None:
        q, qv, qp = root_bridge_name(instance_id), root_veth_name(instance_id), port_name(instance_id)
        alias = self._alias(instance_id)
        link = root_links.get(q)
        if link is not None and link.get("linkinfo", {}).get("info_kind") != "bridge":
            self._del_link(None, q)
            link = None
        if link is None:
            self._ip(None, "link", "add", q, "type", "bridge", "stp_state", "0")
        _disable_ipv6_root(q)
        self._ip(None, "link", "set", q, "alias", alias)
        if not self._pair_ok(root_links.get(qv), ns_links.get(qp)):
            self._del_link(None, qv)
            self._del_link(ns, qp)
            self._ip(None, "link", "add", qv, "type", "veth", "peer", "name", qp, "netns", ns)
            pair_alias = f"{alias}:{secrets.token_hex(4)}"
            self._ip(None, "link", "set", qv, "alias", pair_alias)
            self._ip(ns, "link", "set", qp, "alias", pair_alias)
        _disable_ipv6_root(qv)
        self._ip(None, "link", "set", qv, "master", q, "up")
        self._ip(None, "link", "set", q, "up")
        self._ip(ns, "link", "set", qp, "master", subnet_bridge_name(subnet_id), "up")

    def unplug(self, instance_id: str) -> str | None:
        """Remove an instance's root bridge, veth pair, DHCP entry and rules (idempotent).
        Returns the VPC it was plugged into, if any."""
        found = None
        with self._locked():
            for vpc_id in self._known_vpcs():
                st = self._load(vpc_id)
                if st and instance_id in st.get("ports", {}):
                    del st["ports"][instance_id]
                    self._save(st)
                    self._apply(st)
                    self._del_link(self.namespace_of(vpc_id), port_name(instance_id))
                    found = vpc_id
            self._remove_root_devices(instance_id)
        return found

    def ports_in(self, vpc_id: str) -> list[str]:
        """Instance ids plugged into a VPC."""
        return sorted(((self._load(vpc_id) or {}).get("ports") or {}).keys())

    def _remove_root_devices(self, instance_id: str) -> None:
        links = self._links(None)
        alias = self._alias(instance_id)
        for name in (root_veth_name(instance_id), root_bridge_name(instance_id)):
            link = links.get(name)
            if link is not None and (link.get("ifalias") or "").split(":")[:2] == alias.split(":"):
                self._del_link(None, name)

    # ------------------------------------------------------------------------------ public IPs

    def map_public_ip(self, vpc_id: str, private_ip: str, public_ip: str) -> None:
        """1:1 NAT at the VPC's internet gateway; the internet namespace routes public_ip here."""
        with self._locked():
            for other in self._known_vpcs():  # a public address lives in one VPC at a time
                ost = self._load(other)
                if other != vpc_id and ost and public_ip in ost.get("nat", {}):
                    del ost["nat"][public_ip]
                    self._save(ost)
                    self._apply(ost)
            st = self._load(vpc_id)
            if st is None:
                raise ValueError(f"VPC {vpc_id} has no network (call ensure_vpc first)")
            st["nat"] = {p: v for p, v in st["nat"].items() if v != private_ip}
            st["nat"][public_ip] = private_ip
            self._save(st)
            self._apply(st)

    def unmap_public_ip(self, vpc_id: str, private_ip: str, public_ip: str) -> None:
        with self._locked():
            st = self._load(vpc_id)
            if st is None or st["nat"].get(public_ip) != private_ip:
                return
            del st["nat"][public_ip]
            self._save(st)
            self._apply(st)

    def unmap_instance(self, instance_id: str) -> None:
        """Drop every public mapping of an instance's private address (a stopped instance loses
        its public IP on AWS); the port itself stays plugged. Idempotent."""
        with self._locked():
            for vpc_id in self._known_vpcs():
                st = self._load(vpc_id)
                port = (st or {}).get("ports", {}).get(instance_id)
                if port is None:
                    continue
                nat = {p: v for p, v in st["nat"].items() if v != port["ip"]}
                if nat != st["nat"]:
                    st["nat"] = nat
                    self._save(st)
                    self._apply(st)

    # ------------------------------------------------------------------------------ rendering

    def _apply(self, st: dict) -> None:
        """Make the VPC namespace's files, dnsmasq, nftables and internet routes match `st`."""
        vpc_id = st["vpc_id"]
        ns = self.namespace_of(vpc_id)
        if not host.netns_exists(ns):
            self._plumb_vpc(st)
        d = self._vpc_dir(vpc_id)
        d.mkdir(parents=True, exist_ok=True)
        domain = dns_domain(st["region"])
        ports = sorted(st["ports"].items(), key=lambda kv: kv[1]["ip"])
        dhcp_lines, host_lines = [], []
        for _iid, p in ports:
            short = private_name(p["ip"])
            given = (p.get("hostname") or "").split(".")[0] or short
            dhcp_lines.append(f"{p['mac']},{p['ip']},{given}\n")
            names = [f"{short}.{domain}", short]
            if given != short:
                names += [f"{given}.{domain}", given]
            host_lines.append(f"{p['ip']} {' '.join(names)}\n")
        for pub, priv in sorted(st["nat"].items()):
            # As Amazon's resolver does: a public DNS name resolves to the private address inside.
            host_lines.append(f"{priv} {public_name(st['region'], pub)}\n")
        dhcp_path, hosts_path = d / "dhcp-hosts", d / "hosts"
        try:
            old_dhcp = set(dhcp_path.read_text().splitlines(True))
        except FileNotFoundError:
            old_dhcp = set()
        dhcp_changed = _write_if_changed(dhcp_path, "".join(dhcp_lines))
        hosts_changed = _write_if_changed(hosts_path, "".join(host_lines))
        removed = bool(old_dhcp - set(dhcp_lines))
        self._nft(ns, self._render_nft(st))
        conf_changed = _write_if_changed(d / "dnsmasq.conf", self._render_dnsmasq(st))
        if not st["subnets"]:
            self._stop_dnsmasq(vpc_id)
        elif conf_changed or removed or not self._dnsmasq_running(vpc_id):
            # A restart also forgets leases: a reused address must go to its new MAC.
            self._start_dnsmasq(vpc_id)
        elif dhcp_changed or hosts_changed:
            self._signal_dnsmasq(vpc_id, signal.SIGHUP)
        self._internet_routes(vpc_id, st["nat"])

    def _render_nft(self, st: dict) -> str:
        lines = [f"table bridge {PORTS_TABLE}", f"delete table bridge {PORTS_TABLE}",
                 f"table bridge {PORTS_TABLE} {{"]
        ports = sorted(st["ports"].items())
        lines += ["  chain prerouting {",
                  "    type filter hook prerouting priority -300; policy accept;"]
        if ports:
            vmap = ", ".join(f'"{port_name(iid)}" : jump port_{_hex10(iid)}' for iid, _ in ports)
            lines.append(f"    iifname vmap {{ {vmap} }}")
        lines.append("  }")
        for iid, p in ports:
            mac, ip = p["mac"], p["ip"]
            lines += [f"  chain port_{_hex10(iid)} {{",
                      f"    ether saddr != {mac} drop",
                      f"    ether type arp arp saddr ether != {mac} drop",
                      f"    ether type arp arp saddr ip != {{ 0.0.0.0, {ip} }} drop",
                      "    ether type arp accept",
                      f"    ip saddr {ip} accept",
                      "    ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 accept",
                      "    drop",
                      "  }"]
        lines.append("}")
        nat = sorted(st["nat"].items())
        dnat = ", ".join(f"{pub} : {priv}" for pub, priv in nat)
        snat = ", ".join(f"{priv} : {pub}" for pub, priv in nat)
        mapped = ", ".join(priv for _pub, priv in nat)
        lines += [f"table ip {IGW_TABLE}", f"delete table ip {IGW_TABLE}", f"table ip {IGW_TABLE} {{",
                  "  map dnat_to { type ipv4_addr : ipv4_addr;" + (f" elements = {{ {dnat} }};" if nat else "") + " }",
                  "  map snat_to { type ipv4_addr : ipv4_addr;" + (f" elements = {{ {snat} }};" if nat else "") + " }",
                  "  set public { type ipv4_addr;" + (f" elements = {{ {mapped} }};" if nat else "") + " }",
                  "  chain prerouting {",
                  "    type nat hook prerouting priority dstnat; policy accept;",
                  f'    iifname "{IGW_IFNAME}" dnat to ip daddr map @dnat_to',
                  "  }",
                  "  chain postrouting {",
                  "    type nat hook postrouting priority srcnat; policy accept;",
                  f'    oifname "{IGW_IFNAME}" snat to ip saddr map @snat_to',
                  "  }",
                  "  chain forward {",
                  "    type filter hook forward priority 0; policy accept;",
                  f'    oifname "{IGW_IFNAME}" ip saddr != @public drop',
                  f'    iifname "{IGW_IFNAME}" ip daddr != @public drop',
                  "  }",
                  "  chain input {",
                  "    type filter hook input priority 0; policy accept;",
                  f'    iifname "{IGW_IFNAME}" drop',
                  "  }",
                  "}"]
        return "\n".join(lines) + "\n"

    def _nft(self, ns: str, script: str) -> None:
        self._exec(ns, "nft", "-f", "-", input=script)

    def _internet_routes(self, vpc_id: str, nat: dict) -> None:
        ins, x = self.internet_namespace, internet_link_name(vpc_id)
        if not host.netns_exists(ins):
            return
        have = set()
        for r in json.loads(self._ip(ins, "-j", "route", "show", "dev", x, check=False) or "[]"):
            dst = r.get("dst", "")
            have.add(dst.split("/")[0])
        for pub in have - set(nat):
            if pub and pub != "default":
                self._ip(ins, "route", "del", f"{pub}/32", "dev", x, check=False)
        for pub in nat:
            self._ip(ins, "route", "replace", f"{pub}/32", "via", LINK_VPC_ADDRESS, "dev", x, "onlink")

    # ------------------------------------------------------------------------------ dnsmasq

    def _render_dnsmasq(self, st: dict) -> str:
        d = self._vpc_dir(st["vpc_id"]).resolve()
        domain = dns_domain(st["region"])
        lines = [
            "# written by ec2emu; rewritten on every change",
            f"pid-file={d / 'dnsmasq.pid'}",
            # Root, so that SIGHUP can re-read files under a state dir only root can traverse.
            "user=root", "group=root",
            "no-resolv", "no-hosts", "no-poll",
            "bind-interfaces", "except-interface=lo",
            f"domain={domain}", f"local=/{domain}/",
            # Public DNS names of the region resolve inside (hosts file); others: NXDOMAIN.
            f"local=/{public_name(st['region'], '0.0.0.0').split('.', 1)[1]}/",
            "domain-needed", "bogus-priv",
            "dhcp-authoritative", "leasefile-ro", "dhcp-ignore=tag:!known",
            f"dhcp-hostsfile={d / 'dhcp-hosts'}",
            f"addn-hosts={d / 'hosts'}",
            f"log-facility={d / 'dnsmasq.log'}", "log-dhcp",
        ]
        for subnet_id, cidr in sorted(st["subnets"].items()):
            br = subnet_bridge_name(subnet_id)
            net = ipaddress.ip_network(cidr)
            gw, _ = _gateway(cidr)
            lines += [f"interface={br}",
                      f"dhcp-range=set:{br},{net.network_address},static,{net.netmask},{DHCP_LEASE}",
                      f"dhcp-option=tag:{br},option:router,{gw}",
                      f"dhcp-option=tag:{br},option:dns-server,{gw}"]
        return "\n".join(lines) + "\n"

    def _dnsmasq_pid(self, vpc_id: str) -> int | None:
        try:
            pid = int((self._vpc_dir(vpc_id) / "dnsmasq.pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        ns_inode = host.netns_inode(self.namespace_of(vpc_id))
        if (_proc_alive(pid) and _proc_comm(pid) == "dnsmasq"
                and ns_inode is not None and host.pid_netns_inode(pid) == ns_inode):
            return pid
        return None

    def _dnsmasq_running(self, vpc_id: str) -> bool:
        return self._dnsmasq_pid(vpc_id) is not None

    def _signal_dnsmasq(self, vpc_id: str, sig: int) -> None:
        pid = self._dnsmasq_pid(vpc_id)
        if pid is not None:
            os.kill(pid, sig)

    def _stop_dnsmasq(self, vpc_id: str) -> None:
        pid = self._dnsmasq_pid(vpc_id)
        if pid is not None:
            _kill(pid)
        try:
            (self._vpc_dir(vpc_id) / "dnsmasq.pid").unlink()
        except FileNotFoundError:
            pass
        self._stop_dnsmasq_in(self.namespace_of(vpc_id))

    def _stop_dnsmasq_in(self, ns: str) -> None:
        """Stray dnsmasq processes in one of our namespaces (e.g. after a lost pid file)."""
        if not host.netns_exists(ns):
            return
        for pid in self._ip(None, "netns", "pids", ns, check=False).split():
            if _proc_comm(int(pid)) == "dnsmasq":
                _kill(int(pid))

    def _start_dnsmasq(self, vpc_id: str) -> None:
        self._stop_dnsmasq(vpc_id)
        d = self._vpc_dir(vpc_id).resolve()
        errlog = d / "dnsmasq.stderr"
        # dnsmasq daemonizes; its output goes to a file, not a pipe the daemon could keep open.
        with open(errlog, "w") as err:
            rc = subprocess.run(["ip", "netns", "exec", self.namespace_of(vpc_id), "dnsmasq",
                                 f"--conf-file={d / 'dnsmasq.conf'}"],
                                stdin=subprocess.DEVNULL, stdout=err, stderr=err, timeout=30).returncode
        if rc != 0:
            raise HostError(["dnsmasq", f"--conf-file={d / 'dnsmasq.conf'}"], rc, errlog.read_text())

    # ------------------------------------------------------------------------------ sync

    def sync(self, desired: Desired) -> None:
        """Make the host match `desired`: every VPC and port in it wired (repairing what is
        missing or stale), public IPs mapped, and everything of ours that is not desired removed."""
        with self._locked():
            vpcs = {v.vpc_id: v for v in desired.vpcs}
            ports: dict[str, list[PortSpec]] = {v: [] for v in vpcs}
            for p in desired.ports:
                if p.vpc_id not in vpcs:
                    raise ValueError(f"port of {p.instance_id} is in VPC {p.vpc_id}, which is not desired")
                ports[p.vpc_id].append(p)
            # Leftover VPCs: state files and namespaces.
            ours = {ns[len(self.prefix) + 1:] for ns in host.netns_list()
                    if ns.startswith(self.prefix + "-vpc-")}
            for vpc_id in (ours | set(self._known_vpcs())) - set(vpcs):
                self._remove_vpc(vpc_id)
            wanted_ports = {p.instance_id for p in desired.ports}
            for vpc_id, spec in vpcs.items():
                st = {"vpc_id": vpc_id, "region": spec.region,
                      "subnets": {sid: str(ipaddress.ip_network(c)) for sid, c in spec.subnets},
                      "ports": {p.instance_id: {"subnet_id": p.subnet_id, "mac": p.mac.lower(), "ip": p.ip,
                                                "hostname": p.hostname} for p in ports[vpc_id]},
                      "nat": {p.public_ip: p.ip for p in ports[vpc_id] if p.public_ip}}
                self._save(st)
                self._plumb_vpc(st)
                self._apply(st)
                ns = self.namespace_of(vpc_id)
                root_links, ns_links = self._links(None), self._links(ns)
                for p in ports[vpc_id]:
                    self._plumb_port(ns, p.instance_id, p.subnet_id, root_links, ns_links)
                for name, link in ns_links.items():  # ports nobody wants any more
                    if (name.startswith("qp") and link.get("linkinfo", {}).get("info_kind") == "veth"
                            and self._owned_alias(link.get("ifalias")) not in wanted_ports):
                        self._del_link(ns, name)
            # Leftover root devices and internet links.
            for name, link in self._links(None).items():
                owner = self._owned_alias(link.get("ifalias"))
                if owner is not None and owner not in wanted_ports:
                    self._del_link(None, name)
            if host.netns_exists(self.internet_namespace):
                for name, link in self._links(self.internet_namespace).items():
                    owner = self._owned_alias(link.get("ifalias"))
                    if owner is not None and owner not in vpcs:
                        self._del_link(self.internet_namespace, name)
            if not vpcs:
                self._remove_ns(self.internet_namespace)

    def teardown_all(self) -> None:
        """Remove every namespace, device, daemon and state file of this prefix (tests, uninstall)."""
        with self._locked():
            for vpc_id in self._known_vpcs():
                self._stop_dnsmasq(vpc_id)
            for ns in host.netns_list():
                if ns.startswith(self.prefix + "-"):
                    self._remove_ns(ns)
            for name, link in self._links(None).items():
                if self._owned_alias(link.get("ifalias")) is not None:
                    self._del_link(None, name)
            for vpc_id in self._known_vpcs():
                shutil.rmtree(self._vpc_dir(vpc_id), ignore_errors=True)
