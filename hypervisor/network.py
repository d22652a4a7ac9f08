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
  * one dnsmasq (dnsmasq.py): DHCP with one fixed lease per interface, DNS for the names the
    emulator gave (hostnames, DNS domains), never forwarding a query anywhere;
  * nftables (nftables.py: the ruleset as a pure function of the VPC's state): per-port
    anti-spoofing, the internet gateway's 1:1 NAT, NAT gateways' source NAT and the security
    groups;
  * policy routing from the route tables (`_policy_routes`): a subnet's traffic leaves by the
    internet link only where its table routes it to an attached internet gateway or a NAT
    gateway (kept in `<state_dir>/routes/<vpc id>.json`, like the firewall).

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
`<state_dir>/<vpc id>/state.json` beside dnsmasq's files (vpcstore.py, which also holds the lock);
the security groups last applied in `<state_dir>/firewalls/<vpc id>.json`, kept while the VPC
has no network too (so its first port is plugged already filtered, never up open);
`sync` rebuilds everything from a desired description (the reconciler's view of the database)
after a crash or restart. This module orchestrates; names.py names devices, links.py makes
every `ip` call.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import os
import secrets
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from . import dnsmasq, host, links, nftables
from .base import VpcSpec
from .host import HostError
from .links import disable_ipv6
from .names import (gateway, gateway_mac, internet_link_name, port_name, root_bridge_name, root_veth_name,
                    subnet_bridge_name)
from .nftables import IGW_IFNAME, firewall_state
from .vpcstore import VpcStore, write_if_changed

__all__ = ["Desired", "INTERNET_ADDRESS", "LINK_VPC_ADDRESS", "METADATA_ADDRESS", "Network", "PortSpec",
           "VpcSpec", "disable_ipv6", "firewall_state", "root_bridge_name"]

log = logging.getLogger("ec2emu.network")

PREFIX = "ec2emu"
METADATA_ADDRESS = "169.254.169.254"
NETNS_ETC = Path("/etc/netns")  # ip netns exec bind-mounts /etc/netns/<ns>/* over /etc/*
LINK_VPC_ADDRESS = "100.127.255.1"      # the VPC router's end of its internet link (every VPC ns)
INTERNET_ADDRESS = "100.127.255.254"    # the internet namespace's own address
SUBNET_RULE_PRIORITY = 33000  # per-subnet policy rules, after main (32766) and default (32767)
FIRST_SUBNET_TABLE = 1000     # the kernel routing table of a VPC's n-th subnet with a route out


@dataclass(frozen=True)
class PortSpec:
    """A guest interface's port. `instance_id` names the port: the instance's id for its primary
    interface, the eni- id for an interface attached at device index >= 1 (whose `owner` is then
    the instance: unplugging the instance unplugs it too). `secondary_ips`: the interface's other
    addresses, admitted by anti-spoofing like `ip` (DHCP gives `ip` only, as on AWS)."""
    instance_id: str
    vpc_id: str
    subnet_id: str
    mac: str
    ip: str
    hostname: str = ""
    public_ip: str | None = None
    public_hostname: str = ""
    secondary_ips: tuple[str, ...] = ()
    owner: str | None = None
    source_dest_check: bool = True  # False: the port may send IPv4 from any address (still its MAC)


@dataclass
class Desired:
    """What the host should hold: used by `Network.sync` (the reconciler builds it from the DB)."""
    vpcs: list[VpcSpec] = field(default_factory=list)
    ports: list[PortSpec] = field(default_factory=list)


def _subnets(subnets: Iterable[tuple[str, str]]) -> dict[str, str]:
    return {sid: str(ipaddress.ip_network(cidr)) for sid, cidr in subnets}


def _made_with(region: str, subnets: Iterable[tuple[str, str]], *rest) -> tuple:
    """What Network._made remembers of ensure_vpc's arguments (subnets normalised, as stored)."""
    return (region, tuple(_subnets(subnets).items()), *rest)


def _port(p: PortSpec) -> dict:
    out = {"subnet_id": p.subnet_id, "mac": p.mac.lower(), "ip": p.ip, "hostname": p.hostname}
    if p.secondary_ips:
        out["secondary_ips"] = list(p.secondary_ips)
    if p.owner:
        out["owner"] = p.owner
    if not p.source_dest_check:
        out["source_dest_check"] = False
    return out


def _hop(dest: str, via, subnets: dict) -> tuple[str, str, str] | None:
    """A route's (destination, gateway, device) in a subnet's table: the internet link, or a
    port's address on the bridge of the subnet holding it (None: no subnet holds it)."""
    if not isinstance(via, dict):  # None (internet gateway) or a NAT gateway's public address
        return (dest, INTERNET_ADDRESS, IGW_IFNAME)
    hop = ipaddress.IPv4Address(via["next_hop"])
    return next(((dest, str(hop), subnet_bridge_name(sid)) for sid, cidr in sorted(subnets.items())
                 if hop in ipaddress.IPv4Network(cidr)), None)


def _as_cidr(dst: str) -> str:
    """A destination as `ip -j route` shows it ('default', a bare /32 address), as a CIDR."""
    return "0.0.0.0/0" if dst == "default" else dst if "/" in dst else f"{dst}/32"


def _routed(st: dict, routes: dict | None) -> list[tuple[str, str, str]]:
    """(source subnet CIDR, destination, port id) of the routes that hand traffic to a port:
    the firewall applies that port's ingress rules to it (nftables.firewall_table)."""
    by_ip = {ip: pid for pid, p in st.get("ports", {}).items() for ip in [p["ip"], *p.get("secondary_ips", ())]}
    return sorted((cidr, dest, by_ip[via["next_hop"]]) for cidr, dests in (routes or {}).items()
                  for dest, via in dests.items() if isinstance(via, dict) and via["next_hop"] in by_ip)


class Network:
    def __init__(self, state_dir: str | os.PathLike, prefix: str = PREFIX):
        if not prefix or len(prefix) > 32 or not prefix.replace("-", "").isalnum():
            raise ValueError(f"bad prefix {prefix!r}")
        self.store = VpcStore(state_dir)
        self.state_dir = self.store.root
        self.prefix = prefix
        self._made: dict[str, tuple] = {}  # vpc id -> the arguments its last ensure_vpc made it whole with

    def locked(self):
        """Hold the plumbing lock across several calls (it is reentrant)."""
        return self.store.locked()

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

    def _dnsmasq(self, vpc_id: str) -> dnsmasq.Dnsmasq:
        return dnsmasq.Dnsmasq(self.store.dir(vpc_id), self.namespace_of(vpc_id))

    # ------------------------------------------------------------------------------ VPCs

    def ensure_vpc(self, vpc_id: str, region: str, subnets: Iterable[tuple[str, str]],
                   dns_domain: str = "", public_dns_domain: str = "", dhcp_domain: str = "",
                   dns_support: bool = True, dns_names: bool = True) -> str:
        """Create or repair a VPC's namespace, bridges, internet link, dnsmasq and rules.
        Returns the namespace name."""
        with self.locked():
            self._made.pop(vpc_id, None)
            st = self.store.load(vpc_id) or {"vpc_id": vpc_id, "ports": {}, "nat": {}, "public_names": {}}
            st.update(region=region, subnets=_subnets(subnets), dns_domain=dns_domain,
                      public_dns_domain=public_dns_domain, dhcp_domain=dhcp_domain, dns_support=dns_support,
                      dns_names=dns_names)
            self.store.save(st)
            self._plumb_vpc(st)
            self._apply(st)
            ns = self.namespace_of(vpc_id)
            root_links, ns_links = links.links(None), links.links(ns)
            for instance_id, port in st["ports"].items():  # repair ports of a rebuilt namespace
                if port["subnet_id"] in st["subnets"]:
                    self._plumb_port(ns, instance_id, port["subnet_id"], root_links, ns_links)
            self._made[vpc_id] = _made_with(region, st["subnets"].items(), dns_domain, public_dns_domain,
                                            dhcp_domain, dns_support, dns_names)
            return ns

    def ensure(self, vpc: VpcSpec, repair: bool = True) -> str:
        """ensure_vpc for `vpc`. repair=False (an instance's start): where this process made the
        VPC whole with the same arguments and its namespace, dnsmasq, subnet bridges and
        internet link are still there, nothing more is done. The whole repair re-plumbs every
        port of the VPC: tenths of a second, and more with each instance."""
        args = _made_with(vpc.region, vpc.subnets, vpc.dns_domain, vpc.public_dns_domain, vpc.dhcp_domain,
                          vpc.dns_support, vpc.dns_names)
        with self.locked():
            if not repair and self._made.get(vpc.vpc_id) == args and self._whole(vpc.vpc_id, args[1]):
                return self.namespace_of(vpc.vpc_id)
            return self.ensure_vpc(vpc.vpc_id, vpc.region, vpc.subnets, vpc.dns_domain, vpc.public_dns_domain,
                                   vpc.dhcp_domain, vpc.dns_support, vpc.dns_names)

    def _whole(self, vpc_id: str, subnets) -> bool:
        """A cheap look (one `ip` call) at what a port needs of its VPC: the namespace, its
        dnsmasq, each subnet's bridge up, and the internet link."""
        if not self._alive(vpc_id, subnets):
            return False
        try:
            have = links.links(self.namespace_of(vpc_id))
        except HostError:
            return False
        wanted = [subnet_bridge_name(subnet_id) for subnet_id, _cidr in subnets]
        return IGW_IFNAME in have and all(
            links.kind(have.get(br)) == "bridge" and "UP" in have[br].get("flags", []) for br in wanted)

    def _alive(self, vpc_id: str, subnets) -> bool:
        """Its namespace is there, and its dnsmasq runs where it has subnets to serve."""
        return host.netns_exists(self.namespace_of(vpc_id)) and (not subnets or self._dnsmasq(vpc_id).running())

    def _plumb_vpc(self, st: dict) -> None:
        vpc_id = st["vpc_id"]
        ns = self.namespace_of(vpc_id)
        links.ensure_ns(ns, forwarding=True)
        # Bridged IPv4 passes the ip/inet hooks (security groups use conntrack there).
        try:
            links.sysctl(ns, {"net.bridge.bridge-nf-call-iptables": "1"})
        except HostError as exc:  # br_netfilter absent: bridged traffic skips ip hooks
            log.warning("%s: %s", ns, exc)
        links.ip(ns, "addr", "replace", f"{METADATA_ADDRESS}/32", "dev", "lo")
        have = links.links(ns)
        wanted = set()
        for subnet_id, cidr in st["subnets"].items():
            br = subnet_bridge_name(subnet_id)
            wanted.add(br)
            gw, plen = gateway(cidr)
            link = have.get(br)
            if link is not None and links.kind(link) != "bridge":
                links.del_link(ns, br)
                link = None
            if link is None:
                links.ip(ns, "link", "add", br, "address", gateway_mac(subnet_id), "type", "bridge",
                         "stp_state", "0")
            elif link.get("address") != gateway_mac(subnet_id):
                links.ip(ns, "link", "set", br, "address", gateway_mac(subnet_id))
            links.ip(ns, "link", "set", br, "alias", self._alias(subnet_id))
            want = f"{gw}/{plen}"
            for addr in links.addrs(ns, br):
                if addr != want:
                    links.ip(ns, "addr", "del", addr, "dev", br)
            links.ip(ns, "addr", "replace", want, "dev", br)
            links.ip(ns, "link", "set", br, "up")
        for name, link in have.items():  # bridges of subnets that are gone
            if name.startswith("b") and name not in wanted and links.kind(link) == "bridge":
                links.del_link(ns, name)
        # The link to the internet namespace.
        ins = self.internet_namespace
        links.ensure_ns(ins, forwarding=True)
        links.ip(ins, "addr", "replace", f"{INTERNET_ADDRESS}/32", "dev", "lo")
        x = internet_link_name(vpc_id)
        if not links.pair_ok(have.get(IGW_IFNAME), links.links(ins).get(x)):
            links.del_link(ns, IGW_IFNAME)
            links.del_link(ins, x)
            links.add_veth(ns, IGW_IFNAME, x, ins, f"{self._alias(vpc_id)}:{secrets.token_hex(4)}")
        links.ip(ns, "addr", "replace", f"{LINK_VPC_ADDRESS}/32", "dev", IGW_IFNAME)
        links.ip(ns, "link", "set", IGW_IFNAME, "up")
        links.ip(ins, "link", "set", x, "up")

    def heal(self) -> list[str]:
        """Repair the VPCs that have ports and lost their namespace or their dnsmasq (killed,
        crashed) behind our back; returns their ids."""
        repaired = []
        with self.locked():
            for vpc_id in self.store.known():
                st = self.store.load(vpc_id)
                if not st or not st.get("ports"):
                    continue
                if not self._alive(vpc_id, st["subnets"]):
                    self.ensure_vpc(vpc_id, st["region"], st["subnets"].items(), st.get("dns_domain", ""),
                                    st.get("public_dns_domain", ""), st.get("dhcp_domain", ""),
                                    st.get("dns_support", True), st.get("dns_names", True))
                    repaired.append(vpc_id)
            if repaired or (host.netns_exists(self.internet_namespace)
                            and not dnsmasq.Dnsmasq(self.store.root / "internet", self.internet_namespace).running()):
                try:
                    self._internet_names()  # (its resolver killed, or a VPC rebuilt)
                except HostError as exc:  # the VPCs' repair stands; the next round tries again
                    log.warning("the internet namespace's resolver: %s", exc)
        return repaired

    def remove_vpc(self, vpc_id: str, only_if_empty: bool = False) -> bool:
        """Remove a VPC's namespace, dnsmasq, internet link, its ports' root devices and state.
        With only_if_empty, leave it (and return False) if a port is plugged into it."""
        with self.locked():
            if only_if_empty and self.ports_in(vpc_id):
                return False
            self._remove_vpc(vpc_id)
            return True

    # ------------------------------------------------------------------------------ firewall

    def _firewall_path(self, vpc_id: str):
        return self.state_dir / "firewalls" / f"{vpc_id}.json"

    def firewall(self, vpc_id: str) -> dict | None:
        """The security groups last applied to a VPC (firewall_state's form), None if none."""
        try:
            return json.loads(self._firewall_path(vpc_id).read_text())
        except FileNotFoundError:
            return None

    def apply_firewall(self, vpc_id: str, firewall: dict) -> None:
        """Enforce security groups (firewall_state's form) in a VPC, replacing what was there in
        one nft transaction (established connections live on: conntrack keeps them). A VPC with
        no network yet keeps them for when it is made: its first port is plugged filtered."""
        with self.locked():
            path = self._firewall_path(vpc_id)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_if_changed(path, json.dumps(firewall, indent=1, sort_keys=True))
            ns = self.namespace_of(vpc_id)
            st = self.store.load(vpc_id)
            if st is not None and host.netns_exists(ns):
                routed = _routed(st, self.routes(vpc_id))
                links.exec_in(ns, "nft", "-f", "-", input=nftables.firewall_script(firewall, routed))

    # ------------------------------------------------------------------------------ routing

    def _routes_path(self, vpc_id: str):
        return self.state_dir / "routes" / f"{vpc_id}.json"

    def routes(self, vpc_id: str) -> dict | None:
        """The routes last applied to a VPC (Driver.apply_routes' form), None if never."""
        try:
            return json.loads(self._routes_path(vpc_id).read_text())
        except FileNotFoundError:
            return None

    def apply_routes(self, vpc_id: str, routes: dict) -> None:
        """Route the VPC's subnets as their route tables say (see Driver.apply_routes), live. Kept
        for a VPC with no network yet, like its firewall."""
        with self.locked():
            path = self._routes_path(vpc_id)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_if_changed(path, json.dumps(routes, indent=1, sort_keys=True))
            st = self.store.load(vpc_id)
            if st is not None and host.netns_exists(self.namespace_of(vpc_id)):
                self._apply(st)

    def _policy_routes(self, ns: str, routes: dict | None, subnets: dict) -> None:
        """The VPC namespace's routing for traffic that leaves the VPC. Policy routing, because
        the decision depends on the source subnet (its route table), which plain destination
        routing cannot see: the main table holds only the VPC's own networks (the subnets'
        bridges: AWS's `local` route) and no default route, so it is consulted first and falls
        through for anything else; then one rule per subnet with a route out (`from <subnet>
        lookup <its table>`, after main) holds that subnet's routes: to the internet link, or
        to a port's address on its subnet's bridge (a route to an instance). A subnet without
        one has no path out, and no reply path either (inbound to its public addresses fails,
        as on AWS without an internet gateway route). routes None (never applied): everything
        may leave, as before route tables reached the host. subnets: subnet id -> CIDR."""
        if routes is None:
            links.ip(ns, "route", "replace", "default", "via", INTERNET_ADDRESS, "dev", IGW_IFNAME, "onlink")
        else:
            links.ip(ns, "route", "del", "default", "table", "main", check=False)
        wanted_rules, wanted_tables = [], {}
        for i, (cidr, dests) in enumerate(sorted((routes or {}).items())):
            hops = sorted(filter(None, (_hop(dest, via, subnets) for dest, via in dests.items())))
            if hops:
                table = FIRST_SUBNET_TABLE + i
                wanted_rules.append((SUBNET_RULE_PRIORITY + i, cidr, table))
                wanted_tables[table] = hops
        have_rules = [(r["priority"], r.get("src", "") + (f"/{r['srclen']}" if "srclen" in r else ""),
                       int(r["table"])) for r in links.rules(ns)
                      if r.get("priority", 0) >= SUBNET_RULE_PRIORITY and str(r.get("table", "")).isdigit()]
        have_tables = {t: sorted((_as_cidr(rt["dst"]), rt.get("gateway"), rt.get("dev"))
                                 for rt in links.table_routes(ns, t))
                       for t in {t for _p, _c, t in have_rules} | set(wanted_tables)}
        if sorted(have_rules) == wanted_rules and all(have_tables.get(t, []) == wanted_tables.get(t, [])
                                                      for t in have_tables):
            return
        for priority, _cidr, table in have_rules:
            links.ip(ns, "rule", "del", "priority", str(priority), check=False)
            links.ip(ns, "route", "flush", "table", str(table), check=False)
        for priority, cidr, table in wanted_rules:
            links.ip(ns, "route", "flush", "table", str(table), check=False)
            for dest, via, dev in wanted_tables[table]:
                links.ip(ns, "route", "replace", dest, "via", via, "dev", dev, "onlink", "table", str(table))
            links.ip(ns, "rule", "add", "from", cidr, "lookup", str(table), "priority", str(priority))

    def _remove_ns(self, ns: str) -> None:
        dnsmasq.stop_strays(ns)
        links.remove_ns(ns)
        shutil.rmtree(NETNS_ETC / ns, ignore_errors=True)  # the internet namespace's resolv.conf

    def _remove_vpc(self, vpc_id: str) -> None:
        self._made.pop(vpc_id, None)
        st = self.store.load(vpc_id) or {"ports": {}}
        for instance_id in st.get("ports", {}):
            self._remove_root_devices(instance_id)
        self._dnsmasq(vpc_id).stop()
        self._remove_ns(self.namespace_of(vpc_id))
        if host.netns_exists(self.internet_namespace):
            links.del_link(self.internet_namespace, internet_link_name(vpc_id))
        self.store.remove(vpc_id)
        if not self.store.known():  # the last VPC gone: nothing needs "the internet" any more
            self._remove_ns(self.internet_namespace)
        else:
            self._internet_names()  # its public names go

    # ------------------------------------------------------------------------------ ports

    def plug(self, instance_id: str, vpc_id: str, subnet_id: str, mac: str, ip: str,
             hostname: str = "", secondary_ips: Iterable[str] = (), owner: str | None = None,
             source_dest_check: bool = True) -> str:
        """Wire a guest interface (port `instance_id`: see PortSpec); returns the root-namespace
        bridge libvirt attaches its tap to (`<interface type='bridge'><source bridge='...'/>`).
        Again with other addresses: the port's rules follow. The VPC must exist (ensure_vpc)."""
        with self.locked():
            st = self.store.load(vpc_id)
            if st is None:
                raise LookupError(f"VPC {vpc_id} has no network (call ensure_vpc first)")
            if subnet_id not in st["subnets"]:
                raise ValueError(f"subnet {subnet_id} is not in VPC {vpc_id}'s network")
            for other in self.store.known():  # an instance has one port, in one VPC
                if other != vpc_id:
                    ost = self.store.load(other)
                    if ost and instance_id in ost.get("ports", {}):
                        del ost["ports"][instance_id]
                        self.store.save(ost)
                        self._apply(ost)
            st["ports"][instance_id] = _port(PortSpec(instance_id, vpc_id, subnet_id, mac, ip, hostname,
                                                      secondary_ips=tuple(secondary_ips), owner=owner,
                                                      source_dest_check=source_dest_check))
            self.store.save(st)
            self._apply(st)  # anti-spoofing rules exist before the port comes up
            ns = self.namespace_of(vpc_id)
            self._plumb_port(ns, instance_id, subnet_id, links.links(None), links.links(ns))
            return root_bridge_name(instance_id)

    def port_bridge(self, instance_id: str) -> str:
        """The port's root-namespace bridge, made now if it is not there (down, and joined to
        nothing until `plug`): a guest's tap can be put in it before the port is whole."""
        q = root_bridge_name(instance_id)
        with self.locked():
            self._port_bridge(q, links.link(None, q))
        return q

    @staticmethod
    def _port_bridge(q: str, link) -> None:
        if link is not None and links.kind(link) != "bridge":
            links.del_link(None, q)
            link = None
        if link is None:
            links.ip(None, "link", "add", q, "type", "bridge", "stp_state", "0")
        disable_ipv6(q)

    def _plumb_port(self, ns: str, instance_id: str, subnet_id: str, root_links: dict,
                    ns_links: dict) -> None:
        q, qv, qp = root_bridge_name(instance_id), root_veth_name(instance_id), port_name(instance_id)
        alias = self._alias(instance_id)
        self._port_bridge(q, root_links.get(q))
        links.ip(None, "link", "set", q, "alias", alias)
        if not links.pair_ok(root_links.get(qv), ns_links.get(qp)):
            links.del_link(None, qv)
            links.del_link(ns, qp)
            links.add_veth(None, qv, qp, ns, f"{alias}:{secrets.token_hex(4)}")
        disable_ipv6(qv)
        links.ip(None, "link", "set", qv, "master", q, "up")
        links.ip(None, "link", "set", q, "up")
        links.ip(ns, "link", "set", qp, "master", subnet_bridge_name(subnet_id), "up")

    def unplug(self, instance_id: str) -> str | None:
        """Remove a port's root bridge, veth pair, DHCP entry, rules and public mappings, and
        those of the ports it owns (an instance's other interfaces), idempotently. Returns the
        VPC the port was plugged into, if any."""
        found = None
        with self.locked():
            for vpc_id in self.store.known():
                st = self.store.load(vpc_id)
                gone = [pid for pid, port in (st or {}).get("ports", {}).items()
                        if pid == instance_id or port.get("owner") == instance_id]
                if not gone:
                    continue
                for pid in gone:
                    port = st["ports"].pop(pid)
                    held = {port["ip"], *port.get("secondary_ips", ())}  # Elastic IPs on any of them go
                    for pub in [p for p, v in st["nat"].items() if v in held]:
                        del st["nat"][pub]
                        st["public_names"].pop(pub, None)
                self.store.save(st)
                self._apply(st)
                for pid in gone:
                    links.del_link(self.namespace_of(vpc_id), port_name(pid))
                    self._remove_root_devices(pid)
                found = vpc_id
            self._remove_root_devices(instance_id)
        return found

    def ports_in(self, vpc_id: str) -> list[str]:
        """Instance ids plugged into a VPC."""
        return sorted(((self.store.load(vpc_id) or {}).get("ports") or {}).keys())

    def _remove_root_devices(self, instance_id: str) -> None:
        have = links.links(None)
        alias = self._alias(instance_id)
        for name in (root_veth_name(instance_id), root_bridge_name(instance_id)):
            link = have.get(name)
            if link is not None and (link.get("ifalias") or "").split(":")[:2] == alias.split(":"):
                links.del_link(None, name)

    # ------------------------------------------------------------------------------ public IPs

    def map_public_ip(self, vpc_id: str, private_ip: str, public_ip: str, public_hostname: str = "") -> None:
        """1:1 NAT at the VPC's internet gateway; the internet namespace routes public_ip here.
        public_hostname, if given, resolves to private_ip inside the VPC."""
        with self.locked():
            for other in self.store.known():  # a public address lives in one VPC at a time
                ost = self.store.load(other)
                if other != vpc_id and ost and public_ip in ost["nat"]:
                    del ost["nat"][public_ip]
                    ost["public_names"].pop(public_ip, None)
                    self.store.save(ost)
                    self._apply(ost)
            st = self.store.load(vpc_id)
            if st is None:
                raise LookupError(f"VPC {vpc_id} has no network (call ensure_vpc first)")
            for pub in [p for p, v in st["nat"].items() if v == private_ip or p == public_ip]:
                del st["nat"][pub]
                st["public_names"].pop(pub, None)
            st["nat"][public_ip] = private_ip
            if public_hostname:
                st["public_names"][public_ip] = public_hostname
            self.store.save(st)
            self._apply(st)

    def unmap_public_ip(self, vpc_id: str, private_ip: str, public_ip: str) -> None:
        with self.locked():
            st = self.store.load(vpc_id)
            if st is None or st["nat"].get(public_ip) != private_ip:
                return
            del st["nat"][public_ip]
            st["public_names"].pop(public_ip, None)
            self.store.save(st)
            self._apply(st)

    def unmap_instance(self, instance_id: str) -> None:
        """Drop every public mapping of an instance's private address (a stopped instance loses
        its public IP on AWS); the port itself stays plugged. Idempotent."""
        with self.locked():
            for vpc_id in self.store.known():
                st = self.store.load(vpc_id)
                port = (st or {}).get("ports", {}).get(instance_id)
                if port is None:
                    continue
                gone = [p for p, v in st["nat"].items() if v == port["ip"]]
                if gone:
                    for pub in gone:
                        del st["nat"][pub]
                        st["public_names"].pop(pub, None)
                    self.store.save(st)
                    self._apply(st)

    # ------------------------------------------------------------------------------ applying

    def _apply(self, st: dict) -> None:
        """Make the VPC namespace's files, dnsmasq, nftables and internet routes match `st`."""
        vpc_id = st["vpc_id"]
        ns = self.namespace_of(vpc_id)
        if not host.netns_exists(ns):
            self._plumb_vpc(st)
        d = self.store.dir(vpc_id)
        d.mkdir(parents=True, exist_ok=True)
        dhcp_lines = dnsmasq.dhcp_hosts(st["ports"], st.get("dns_names", True))
        dhcp_path = d / "dhcp-hosts"
        try:
            old_dhcp = set(dhcp_path.read_text().splitlines(True))
        except FileNotFoundError:
            old_dhcp = set()
        dhcp_changed = write_if_changed(dhcp_path, "".join(dhcp_lines))
        # The instances' names are answered only where the VPC gives them (both DNS attributes).
        names = dnsmasq.hosts(st["ports"], st["nat"], st["public_names"], st["dns_domain"]) \
            if st.get("dns_names", True) else ""
        hosts_changed = write_if_changed(d / "hosts", names)
        removed = bool(old_dhcp - set(dhcp_lines))
        routes = self.routes(vpc_id)
        routes = {cidr: dests for cidr, dests in routes.items() if cidr in st["subnets"].values()} \
            if routes is not None else None
        egress_nat = [(cidr, dest, via) for cidr, dests in (routes or {}).items() for dest, via in dests.items()
                      if isinstance(via, str)]
        links.exec_in(ns, "nft", "-f", "-", input=nftables.ruleset(st["ports"], st["nat"], self.firewall(vpc_id),
                                                                   egress_nat, _routed(st, routes)))
        self._policy_routes(ns, routes, st["subnets"])
        conf_changed = write_if_changed(d / "dnsmasq.conf", dnsmasq.config(
            d.resolve(), st["subnets"].items(), st["dns_domain"], st["public_dns_domain"],
            st.get("dhcp_domain", ""), dns=st.get("dns_support", True)))
        daemon = self._dnsmasq(vpc_id)
        if not st["subnets"]:
            daemon.stop()
        elif conf_changed or removed or not daemon.running():
            daemon.start()  # a restart also forgets leases: a reused address must go to its new MAC
        elif dhcp_changed or hosts_changed:
            daemon.reload()
        self._internet_routes(vpc_id, [*st["nat"], *{via for _c, _d, via in egress_nat}])
        self._internet_names()

    def _internet_routes(self, vpc_id: str, nat) -> None:
        """The internet namespace routes each public address (1:1 mapped or a NAT gateway's) to
        its VPC's link."""
        ins, x = self.internet_namespace, internet_link_name(vpc_id)
        if not host.netns_exists(ins):
            return
        have = {r.get("dst", "").split("/")[0] for r in links.routes(ins, x)}
        for pub in have - set(nat):
            if pub and pub != "default":
                links.ip(ins, "route", "del", f"{pub}/32", "dev", x, check=False)
        for pub in nat:
            links.ip(ins, "route", "replace", f"{pub}/32", "via", LINK_VPC_ADDRESS, "dev", x, "onlink")

    def _internet_names(self) -> None:
        """The internet namespace's resolver: every VPC's public DNS names (where the VPC gives
        them) answered with the public addresses, as the internet's DNS answers Amazon's public
        names (inside a VPC the same names answer the private addresses: its own dnsmasq). Tools
        run with `ip netns exec <internet namespace>` use it (/etc/netns/<ns>/resolv.conf)."""
        ins = self.internet_namespace
        if not host.netns_exists(ins):
            return
        names, domains = [], []
        for vpc_id in self.store.known():
            st = self.store.load(vpc_id) or {}
            if st.get("dns_names", True):
                names += [f"{pub} {st['public_names'][pub]}\n" for pub in sorted(st.get("nat", {}))
                          if st.get("public_names", {}).get(pub)]
                domains += [st["public_dns_domain"]] if st.get("public_dns_domain") else []
        d = self.store.root / "internet"
        d.mkdir(parents=True, exist_ok=True)
        hosts_changed = write_if_changed(d / "hosts", "".join(sorted(names)))
        conf_changed = write_if_changed(d / "dnsmasq.conf", dnsmasq.internet_config(d.resolve(), INTERNET_ADDRESS,
                                                                                    domains))
        (NETNS_ETC / ins).mkdir(parents=True, exist_ok=True)
        write_if_changed(NETNS_ETC / ins / "resolv.conf", f"nameserver {INTERNET_ADDRESS}\n")
        daemon = dnsmasq.Dnsmasq(d, ins)
        if conf_changed or not daemon.running():
            daemon.start()
        elif hosts_changed:
            daemon.reload()

    # ------------------------------------------------------------------------------ sync

    def sync(self, desired: Desired) -> None:
        """Make the host match `desired`: every VPC and port in it wired (repairing what is
        missing or stale), public IPs mapped, and everything of ours that is not desired removed."""
        with self.locked():
            vpcs = {v.vpc_id: v for v in desired.vpcs}
            ports: dict[str, list[PortSpec]] = {v: [] for v in vpcs}
            for p in desired.ports:
                if p.vpc_id not in vpcs:
                    raise ValueError(f"port of {p.instance_id} is in VPC {p.vpc_id}, which is not desired")
                ports[p.vpc_id].append(p)
            # Leftover VPCs: state files and namespaces.
            ours = {ns[len(self.prefix) + 1:] for ns in host.netns_list()
                    if ns.startswith(self.prefix + "-vpc-")}
            for vpc_id in (ours | set(self.store.known())) - set(vpcs):
                self._remove_vpc(vpc_id)
            wanted_ports = {p.instance_id for p in desired.ports}
            for vpc_id, spec in vpcs.items():
                mine = ports[vpc_id]
                st = {"vpc_id": vpc_id, "region": spec.region, "subnets": _subnets(spec.subnets),
                      "dns_domain": spec.dns_domain, "public_dns_domain": spec.public_dns_domain,
                      "dhcp_domain": spec.dhcp_domain, "dns_support": spec.dns_support, "dns_names": spec.dns_names,
                      "ports": {p.instance_id: _port(p) for p in mine},
                      "nat": {p.public_ip: p.ip for p in mine if p.public_ip},
                      "public_names": {p.public_ip: p.public_hostname for p in mine
                                       if p.public_ip and p.public_hostname}}
                self.store.save(st)
                self._plumb_vpc(st)
                self._apply(st)
                ns = self.namespace_of(vpc_id)
                root_links, ns_links = links.links(None), links.links(ns)
                for p in mine:
                    self._plumb_port(ns, p.instance_id, p.subnet_id, root_links, ns_links)
                for name, link in ns_links.items():  # ports nobody wants any more
                    if (name.startswith("qp") and links.kind(link) == "veth"
                            and self._owned_alias(link.get("ifalias")) not in wanted_ports):
                        links.del_link(ns, name)
            # Leftover root devices and internet links.
            for name, link in links.links(None).items():
                owner = self._owned_alias(link.get("ifalias"))
                if owner is not None and owner not in wanted_ports:
                    links.del_link(None, name)
            if host.netns_exists(self.internet_namespace):
                for name, link in links.links(self.internet_namespace).items():
                    owner = self._owned_alias(link.get("ifalias"))
                    if owner is not None and owner not in vpcs:
                        links.del_link(self.internet_namespace, name)
            if not vpcs:
                self._remove_ns(self.internet_namespace)

    def teardown_all(self) -> None:
        """Remove every namespace, device, daemon and state file of this prefix (tests, uninstall)."""
        with self.locked():
            for vpc_id in self.store.known():
                self._dnsmasq(vpc_id).stop()
            for ns in host.netns_list():
                if ns.startswith(self.prefix + "-"):
                    self._remove_ns(ns)
            for name, link in links.links(None).items():
                if self._owned_alias(link.get("ifalias")) is not None:
                    links.del_link(None, name)
            for vpc_id in self.store.known():
                self.store.remove(vpc_id)
            shutil.rmtree(self.state_dir / "firewalls", ignore_errors=True)
            shutil.rmtree(self.state_dir / "routes", ignore_errors=True)
