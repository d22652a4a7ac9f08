"""Namespaces and links: every `ip` call the VPC plumbing makes (no state of its own)."""
from __future__ import annotations

import json

from . import host
from .host import run


def ip(ns: str | None, *args: str, check: bool = True) -> str:
    return run(["ip", *(["-n", ns] if ns else []), *args], check=check)


def links(ns: str | None) -> dict[str, dict]:
    """Links of a namespace (None: the root one) by name, as `ip -j -d link show` gives them."""
    out = ip(ns, "-j", "-d", "link", "show")
    return {link["ifname"]: link for link in json.loads(out or "[]")}


def link(ns: str | None, name: str) -> dict | None:
    """One link (as `links` gives it), or None where there is none of that name."""
    out = ip(ns, "-j", "-d", "link", "show", "dev", name, check=False)
    try:
        found = json.loads(out or "[]")
    except ValueError:  # ip's "Device ... does not exist." (stderr) leaves no JSON
        return None
    return found[0] if found else None


def kind(link: dict | None) -> str | None:
    return (link or {}).get("linkinfo", {}).get("info_kind")


def addrs(ns: str, dev: str) -> list[str]:
    """IPv4 addresses of a device, as 'a.b.c.d/len'."""
    out = ip(ns, "-j", "addr", "show", "dev", dev)
    found = []
    for link in json.loads(out or "[]"):
        for a in link.get("addr_info", []):
            if a.get("family") == "inet":
                found.append(f"{a['local']}/{a['prefixlen']}")
    return found


def routes(ns: str, dev: str) -> list[dict]:
    return json.loads(ip(ns, "-j", "route", "show", "dev", dev, check=False) or "[]")


def table_routes(ns: str, table: int) -> list[dict]:
    """Routes of a numbered routing table ([] when it does not exist: `ip -j` then prints a lone
    '[' and fails)."""
    try:
        return json.loads(ip(ns, "-j", "route", "show", "table", str(table), check=False) or "[]")
    except ValueError:
        return []


def rules(ns: str) -> list[dict]:
    """Policy routing rules, as `ip -j rule show` gives them."""
    return json.loads(ip(ns, "-j", "rule", "show") or "[]")


def exec_in(ns: str, *argv: str, input: str | None = None) -> str:
    return run(["ip", "netns", "exec", ns, *argv], input=input)


def sysctl(ns: str, values: dict[str, str]) -> None:
    exec_in(ns, "sysctl", "-q", "-w", *(f"{k}={v}" for k, v in values.items()))


def del_link(ns: str | None, name: str) -> None:
    ip(ns, "link", "del", name, check=False)


def pair_ok(a: dict | None, b: dict | None) -> bool:
    """a and b are the two ends of one veth pair made here (same alias, each other's peer)."""
    return (a is not None and b is not None and bool(a.get("ifalias")) and a.get("ifalias") == b.get("ifalias")
            and a.get("link_index") == b.get("ifindex") and b.get("link_index") == a.get("ifindex"))


def add_veth(ns: str | None, name: str, peer: str, peer_ns: str, alias: str) -> None:
    """A veth pair from `ns` into `peer_ns`, both ends carrying `alias` (how pair_ok knows them)."""
    ip(ns, "link", "add", name, "type", "veth", "peer", "name", peer, "netns", peer_ns)
    ip(ns, "link", "set", name, "alias", alias)
    ip(peer_ns, "link", "set", peer, "alias", alias)


def ensure_ns(ns: str, forwarding: bool) -> None:
    if not host.netns_exists(ns):
        ip(None, "netns", "add", ns)
    # No IPv6 anywhere (no link-local chatter, no RAs); all routing decisions are ours.
    sysctl(ns, {"net.ipv6.conf.all.disable_ipv6": "1", "net.ipv6.conf.default.disable_ipv6": "1",
                "net.ipv4.ip_forward": "1" if forwarding else "0",
                "net.ipv4.conf.all.rp_filter": "0", "net.ipv4.conf.default.rp_filter": "0"})
    ip(ns, "link", "set", "lo", "up")


def remove_ns(ns: str) -> None:
    """Delete a namespace's veths and bridges, then the namespace (a socket or process still in
    it would keep a deleted namespace alive: its veths must not survive in it). The caller stops
    its daemons first."""
    if not host.netns_exists(ns):
        return
    for name, link in links(ns).items():
        if name != "lo" and kind(link) in ("veth", "bridge"):
            del_link(ns, name)
    ip(None, "netns", "del", ns, check=False)


def disable_ipv6(dev: str) -> None:
    """No IPv6 (hence no link-local address, no ND) on a root-namespace device of ours: the root
    namespace never speaks on a guest network (also used for libvirt's taps)."""
    try:
        with open(f"/proc/sys/net/ipv6/conf/{dev}/disable_ipv6", "w") as f:
            f.write("1")
    except FileNotFoundError:  # IPv6 not compiled in / device gone
        pass
