"""The nftables ruleset of a VPC namespace, as a pure function of what the VPC holds.

Three tables, each replaced whole and atomically by one `nft -f` run of the text:
  * `bridge ec2emu_ports`: per-port anti-spoofing, stateless (this kernel has no bridge-family
    conntrack): a port may only send frames from its MAC, ARP for its own address and IPv4 from
    its own address (or 0.0.0.0 -> 255.255.255.255 for DHCP); anything else (IPv6, VLAN tags...)
    is dropped;
  * `ip ec2emu_igw`: the internet gateway: 1:1 NAT of public IPs (DNAT in from the internet link,
    SNAT out to it), and only instances with a public IP may use that link; plus NAT gateways:
    egress-only source NAT of the subnets routed to one (which subnet may leave at all is the
    VPC namespace's policy routing, network.py);
  * `inet ec2emu_acl`: network ACLs (`acl_table`), stateless, per subnet, on the forward hook
    just before the security groups (a deny there is final; an allow lets the groups decide);
  * `inet ec2emu_sg`: security groups (`firewall_table`), stateful. The kernel has no
    bridge-family conntrack (FACTS.md), but with br_netfilter on in the namespace bridged IPv4
    passes the inet hooks, where conntrack works. There `iifname` is the bridge, not the port:
    guests are matched by address, which the bridge table above pins to their port.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict

from .base import FirewallPort, SecurityGroupRules, SubnetAcl
from .names import hex10, port_name, subnet_bridge_name

PORTS_TABLE = "ec2emu_ports"  # bridge family
IGW_TABLE = "ec2emu_igw"      # ip family
SG_TABLE = "ec2emu_sg"        # inet family
ACL_TABLE = "ec2emu_acl"      # inet family
IGW_IFNAME = "igw"            # the VPC namespace's end of its link to the internet namespace


def _replace(family: str, table: str) -> list[str]:
    """Create-then-delete makes the delete succeed whether or not the table existed."""
    return [f"table {family} {table}", f"delete table {family} {table}", f"table {family} {table} {{"]


def ports_table(ports: Mapping[str, Mapping[str, str]]) -> list[str]:
    """ports: port id -> {'mac': ..., 'ip': ..., 'secondary_ips': [...] (optional),
    'source_dest_check': False (optional: the port may send IPv4 from any address, from its MAC)}."""
    lines = _replace("bridge", PORTS_TABLE)
    ordered = sorted(ports.items())
    lines += ["  chain prerouting {",
              "    type filter hook prerouting priority -300; policy accept;"]
    if ordered:
        vmap = ", ".join(f'"{port_name(iid)}" : jump port_{hex10(iid)}' for iid, _ in ordered)
        lines.append(f"    iifname vmap {{ {vmap} }}")
    lines.append("  }")
    for iid, p in ordered:
        mac, ips = p["mac"], ", ".join(_addresses(p))
        saddrs = f"{{ {ips} }}" if p.get("secondary_ips") else ips
        lines += [f"  chain port_{hex10(iid)} {{",
                  f"    ether saddr != {mac} drop",
                  f"    ether type arp arp saddr ether != {mac} drop",
                  f"    ether type arp arp saddr ip != {{ 0.0.0.0, {ips} }} drop",
                  "    ether type arp accept",
                  f"    ip saddr {saddrs} accept" if p.get("source_dest_check", True) else "    ether type ip accept",
                  "    ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 accept",
                  "    drop",
                  "  }"]
    return lines + ["}"]


def igw_table(nat: Mapping[str, str], egress_nat: Sequence[tuple[str, str, str]] = ()) -> list[str]:
    """nat: public ip -> private ip. egress_nat: (source CIDR, destination CIDR, public ip) for
    subnets whose route to that destination is a NAT gateway: their new connections there leave
    as the gateway's public address (most specific destination first), and only replies come
    back (`ct status snat` in the reply direction); nothing from the internet opens a
    connection through it (no DNAT, and the input chain drops what is addressed to the router)."""
    natted = sorted(egress_nat, key=lambda r: (-int(r[1].split("/")[1]), r))
    gw_snat = [f'    oifname "{IGW_IFNAME}" ip saddr {src} ip daddr {dst} snat to {pub}' for src, dst, pub in natted]
    gw_out = [f'    oifname "{IGW_IFNAME}" ip saddr {src} ip daddr {dst} accept' for src, dst, _pub in natted]
    gw_back = [f'    iifname "{IGW_IFNAME}" ct direction reply ct status snat accept'] if natted else []
    ordered = sorted(nat.items())

    def elements(items: str) -> str:
        return f" elements = {{ {items} }};" if ordered else ""
    dnat = ", ".join(f"{pub} : {priv}" for pub, priv in ordered)
    snat = ", ".join(f"{priv} : {pub}" for pub, priv in ordered)
    mapped = ", ".join(priv for _pub, priv in ordered)
    return _replace("ip", IGW_TABLE) + [
        "  map dnat_to { type ipv4_addr : ipv4_addr;" + elements(dnat) + " }",
        "  map snat_to { type ipv4_addr : ipv4_addr;" + elements(snat) + " }",
        "  set public { type ipv4_addr;" + elements(mapped) + " }",
        "  chain prerouting {",
        "    type nat hook prerouting priority dstnat; policy accept;",
        f'    iifname "{IGW_IFNAME}" dnat to ip daddr map @dnat_to',
        "  }",
        "  chain postrouting {",
        "    type nat hook postrouting priority srcnat; policy accept;",
        *gw_snat,
        f'    oifname "{IGW_IFNAME}" snat to ip saddr map @snat_to',
        "  }",
        "  chain forward {",
        "    type filter hook forward priority 0; policy accept;",
        *gw_out,
        *gw_back,
        f'    oifname "{IGW_IFNAME}" ip saddr != @public drop',
        f'    iifname "{IGW_IFNAME}" ip daddr != @public drop',
        "  }",
        "  chain input {",
        "    type filter hook input priority 0; policy accept;",
        f'    iifname "{IGW_IFNAME}" drop',
        "  }",
        "}"]


def firewall_state(groups: Sequence[SecurityGroupRules], ports: Sequence[FirewallPort],
                   acls: Sequence[SubnetAcl] = ()) -> dict:
    """Driver.apply_firewall's arguments as the plain data nftables.firewall_table and acl_table
    render and firewall.json keeps. ValueError if a port or rule names a group that is not given."""
    known = {g.group_id for g in groups}
    named = {gid for p in ports for gid in p.group_ids}
    named |= {r.group_id for g in groups for r in (*g.ingress, *g.egress) if r.group_id}
    if named - known:
        raise ValueError(f"groups not given: {sorted(named - known)}")
    ips = [ip for p in ports for ip in (p.ip, *p.secondary_ips)]
    if len(set(ips)) != len(ips):
        raise ValueError(f"two ports with one address: {sorted(ips)}")

    def port(p: FirewallPort) -> dict:
        out = {"ip": p.ip, "groups": list(p.group_ids)}
        if p.secondary_ips:
            out["secondary_ips"] = list(p.secondary_ips)
        return out
    return {"groups": {g.group_id: {"ingress": [asdict(r) for r in g.ingress],
                                    "egress": [asdict(r) for r in g.egress]} for g in groups},
            "ports": {p.instance_id: port(p) for p in ports},
            "acls": {a.subnet_id: {"ingress": [asdict(e) for e in sorted(a.ingress, key=lambda e: e.rule_number)],
                                   "egress": [asdict(e) for e in sorted(a.egress, key=lambda e: e.rule_number)]}
                     for a in acls}}



def _tail(resource_id: str) -> str:
    """The whole hex part of an id: set and chain names (up to 256 characters) need no shortening."""
    hex10(resource_id)  # validates it
    return resource_id.split("-", 1)[1].lower()


def _match(rule: Mapping, direction: str) -> str:
    """One security-group rule as nft matches (without its verdict). rule: a base.Rule as a dict."""
    peer = "saddr" if direction == "ingress" else "daddr"
    parts = []
    if rule.get("group_id"):
        parts.append(f"ip {peer} @g_{_tail(rule['group_id'])}")
    elif rule.get("cidr") not in (None, "0.0.0.0/0"):
        parts.append(f"ip {peer} {rule['cidr']}")
    proto, lo, hi = rule["protocol"], rule.get("from_port"), rule.get("to_port")
    if proto in ("tcp", "udp"):
        if lo is None or hi is None or (lo <= 0 and hi >= 65535):
            parts.append(f"meta l4proto {proto}")
        else:
            parts.append(f"{proto} dport {lo}" if lo == hi else f"{proto} dport {lo}-{hi}")
    elif proto == "icmp":
        if lo is None or lo < 0:
            parts.append("meta l4proto icmp")
        else:
            parts.append(f"icmp type {lo}")
            if hi is not None and hi >= 0:
                parts.append(f"icmp code {hi}")
    return " ".join(parts)


def _addresses(port: Mapping) -> list[str]:
    """A port's addresses: its primary, then its secondary ones."""
    return [port["ip"], *port.get("secondary_ips", ())]


def _vmap(addr: str, ports: list, kind: str) -> list[str]:
    if not ports:
        return []
    items = ", ".join(f"{ip} : jump {kind}_{_tail(iid)}" for iid, p in ports for ip in _addresses(p))
    return [f"    ip {addr} vmap {{ {items} }}"]


def firewall_table(firewall: Mapping | None, routed: Sequence[tuple[str, str, str]] = ()) -> list[str]:
    """Security groups. firewall: {"groups": {group id: {"ingress": [rule], "egress": [rule]}},
    "ports": {port id: {"ip": ..., "groups": [group id, ...], "secondary_ips": [...] (optional)}}}
    (rules as base.Rule dicts); routed: (source CIDR, destination CIDR, port id) of the routes
    that hand traffic to a port (a route to an instance): that port's ingress rules decide it,
    as its own address's;
    None: nothing is filtered (no table at all).

    Only new connections meet the rules: `ct state established,related` is accepted first, so
    replies pass and established connections outlive a rule's removal (AWS's behaviour). A new
    connection from a port must pass one egress rule of one of its groups (its `out_` chain
    returns to the forward chain), then, if it goes to a port, one ingress rule of one of that
    port's groups (its `in_` chain accepts); anything else is dropped. Each group is a named set
    of its members' addresses (`g_<hex>`): a rule naming a group admits those.

    What AWS never filters stays unfiltered: traffic to and from the router itself (DHCP, DNS,
    the metadata address) does not cross the forward hook at all. Connections the router opens
    to a port (a user's `ec2emu ssh`, a test) come from its gateway address and meet the port's
    ingress rules like any other peer (output chain); DHCP answers (to an address conntrack has
    not seen: the request was a broadcast) are let through there."""
    if firewall is None:
        return [f"table inet {SG_TABLE}", f"delete table inet {SG_TABLE}"]
    groups, ports = firewall.get("groups", {}), sorted(firewall.get("ports", {}).items())
    members: dict[str, list[str]] = {gid: [] for gid in groups}
    for _iid, p in ports:
        for gid in p["groups"]:
            members.setdefault(gid, []).extend(_addresses(p))
    lines = _replace("inet", SG_TABLE)
    for gid in sorted(members):
        ips = sorted(set(members[gid]))
        elements = f" elements = {{ {', '.join(ips)} }};" if ips else ""
        lines.append(f"  set g_{_tail(gid)} {{ type ipv4_addr;{elements} }}")
    filtered = {iid for iid, _p in ports}
    # most specific destination first, as the routing decides
    hand_over = [f"    ip saddr {src} ip daddr {dst} jump in_{_tail(iid)}"
                 for src, dst, iid in sorted(routed, key=lambda r: (-int(r[1].split("/")[1]), r)) if iid in filtered]
    lines += ["  chain forward {",
              "    type filter hook forward priority filter; policy accept;",
              "    ct state established,related accept",
              *_vmap("saddr", ports, "out"),
              *_vmap("daddr", ports, "in"),
              *hand_over,
              "  }",
              "  chain output {",
              "    type filter hook output priority filter; policy accept;",
              "    ct state established,related accept",
              "    udp sport 67 udp dport 68 accept",
              *_vmap("daddr", ports, "in"),
              "  }"]
    for iid, p in ports:
        for direction, kind, verdict in (("egress", "out", "return"), ("ingress", "in", "accept")):
            lines.append(f"  chain {kind}_{_tail(iid)} {{")
            for gid in p["groups"]:
                for rule in groups.get(gid, {}).get(direction, []):
                    match = _match(rule, direction)
                    lines.append(f"    {match} {verdict}" if match else f"    {verdict}")
            lines += ["    drop", "  }"]
    return lines + ["}"]


def _acl_match(entry: Mapping, direction: str) -> str:
    """One ACL entry as nft matches (without its verdict). entry: a base.AclEntry as a dict.
    Ports are destination ports in both directions (AWS's meaning)."""
    peer = "saddr" if direction == "ingress" else "daddr"
    parts = [] if entry["cidr"] == "0.0.0.0/0" else [f"ip {peer} {entry['cidr']}"]
    proto = entry.get("protocol")
    if proto in (6, 17):
        name = "tcp" if proto == 6 else "udp"
        lo, hi = entry.get("from_port"), entry.get("to_port")
        if lo is None or hi is None or (lo <= 0 and hi >= 65535):
            parts.append(f"meta l4proto {name}")
        else:
            parts.append(f"{name} dport {lo}" if lo == hi else f"{name} dport {lo}-{hi}")
    elif proto == 1:
        icmp_type, icmp_code = entry.get("icmp_type"), entry.get("icmp_code")
        parts.append("meta l4proto icmp" if icmp_type is None else f"icmp type {icmp_type}")
        if icmp_type is not None and icmp_code is not None:
            parts.append(f"icmp code {icmp_code}")
    elif proto is not None:
        parts.append(f"meta l4proto {proto}")
    return " ".join(parts)


def acl_table(firewall: Mapping | None) -> list[str]:
    """Network ACLs. firewall: firewall_state's form; its "acls": {subnet id: {"ingress": [entry],
    "egress": [entry]}} (entries as base.AclEntry dicts, lowest rule number first). No subnet
    listed: no table at all.

    Stateless, on the forward hook just before the groups' table: a packet leaving a subnet's
    bridge (routed to another subnet or to the internet gateway) passes that subnet's `out_`
    chain, then one entering a subnet's bridge its `in_` chain; the first entry that matches
    decides (allow: `return` to go on / `accept`, which ends this table only, so the security
    groups still decide; deny: `drop`, final), and what none matches is dropped (the '*' rule).
    A packet bridged within one subnet has that subnet's bridge as both its input and output
    interface (br_netfilter): each chain returns at once for it, so neighbours on a subnet meet
    no ACL, as on AWS. The router's own traffic (DHCP, DNS, metadata, connections it opens)
    takes the input and output hooks, never forward: no ACL applies to it, as on AWS."""
    acls = sorted(((firewall or {}).get("acls") or {}).items())
    if not acls:
        return [f"table inet {ACL_TABLE}", f"delete table inet {ACL_TABLE}"]
    lines = _replace("inet", ACL_TABLE)
    out_vmap = ", ".join(f'"{subnet_bridge_name(sid)}" : jump out_{_tail(sid)}' for sid, _ in acls)
    in_vmap = ", ".join(f'"{subnet_bridge_name(sid)}" : jump in_{_tail(sid)}' for sid, _ in acls)
    lines += ["  chain forward {",
              "    type filter hook forward priority filter - 10; policy accept;",
              f"    iifname vmap {{ {out_vmap} }}",
              f"    oifname vmap {{ {in_vmap} }}",
              "  }"]
    for sid, acl in acls:
        bridge = subnet_bridge_name(sid)
        for direction, kind, same, allow in (("egress", "out", "oifname", "return"),
                                             ("ingress", "in", "iifname", "accept")):
            lines += [f"  chain {kind}_{_tail(sid)} {{", f'    {same} "{bridge}" {allow}']
            for entry in acl.get(direction, []):
                match = _acl_match(entry, direction)
                verdict = allow if entry["action"] == "allow" else "drop"
                lines.append(f"    {match} {verdict}" if match else f"    {verdict}")
            lines += ["    drop", "  }"]
    return lines + ["}"]


def ruleset(ports: Mapping[str, Mapping[str, str]], nat: Mapping[str, str], firewall: Mapping | None = None,
            egress_nat: Sequence[tuple[str, str, str]] = (), routed: Sequence[tuple[str, str, str]] = ()) -> str:
    """The whole script for `nft -f -` in a VPC namespace."""
    return "\n".join(ports_table(ports) + igw_table(nat, egress_nat) + acl_table(firewall)
                     + firewall_table(firewall, routed)) + "\n"


def firewall_script(firewall: Mapping | None, routed: Sequence[tuple[str, str, str]] = ()) -> str:
    """The network ACLs and security groups alone (a rule change need not rewrite the other
    tables); one script, so both change in one nft transaction."""
    return "\n".join(acl_table(firewall) + firewall_table(firewall, routed)) + "\n"
