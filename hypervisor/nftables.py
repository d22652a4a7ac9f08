"""The nftables ruleset of a VPC namespace, as a pure function of what the VPC holds.

Two tables, each replaced whole and atomically by one `nft -f` run of the text:
  * `bridge ec2emu_ports`: per-port anti-spoofing, stateless (this kernel has no bridge-family
    conntrack): a port may only send frames from its MAC, ARP for its own address and IPv4 from
    its own address (or 0.0.0.0 -> 255.255.255.255 for DHCP); anything else (IPv6, VLAN tags...)
    is dropped;
  * `ip ec2emu_igw`: the internet gateway: 1:1 NAT of public IPs (DNAT in from the internet link,
    SNAT out to it), and only instances with a public IP may use that link.
Other code (security groups) may add its own tables in the same namespace; names differ.
"""
from __future__ import annotations

from collections.abc import Mapping

from .names import hex10, port_name

PORTS_TABLE = "ec2emu_ports"  # bridge family
IGW_TABLE = "ec2emu_igw"      # ip family
IGW_IFNAME = "igw"            # the VPC namespace's end of its link to the internet namespace


def _replace(family: str, table: str) -> list[str]:
    """Create-then-delete makes the delete succeed whether or not the table existed."""
    return [f"table {family} {table}", f"delete table {family} {table}", f"table {family} {table} {{"]


def ports_table(ports: Mapping[str, Mapping[str, str]]) -> list[str]:
    """ports: instance id -> {'mac': ..., 'ip': ...}."""
    lines = _replace("bridge", PORTS_TABLE)
    ordered = sorted(ports.items())
    lines += ["  chain prerouting {",
              "    type filter hook prerouting priority -300; policy accept;"]
    if ordered:
        vmap = ", ".join(f'"{port_name(iid)}" : jump port_{hex10(iid)}' for iid, _ in ordered)
        lines.append(f"    iifname vmap {{ {vmap} }}")
    lines.append("  }")
    for iid, p in ordered:
        mac, ip = p["mac"], p["ip"]
        lines += [f"  chain port_{hex10(iid)} {{",
                  f"    ether saddr != {mac} drop",
                  f"    ether type arp arp saddr ether != {mac} drop",
                  f"    ether type arp arp saddr ip != {{ 0.0.0.0, {ip} }} drop",
                  "    ether type arp accept",
                  f"    ip saddr {ip} accept",
                  "    ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 accept",
                  "    drop",
                  "  }"]
    return lines + ["}"]


def igw_table(nat: Mapping[str, str]) -> list[str]:
    """nat: public ip -> private ip."""
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


def ruleset(ports: Mapping[str, Mapping[str, str]], nat: Mapping[str, str]) -> str:
    """The whole script for `nft -f -` in a VPC namespace."""
    return "\n".join(ports_table(ports) + igw_table(nat)) + "\n"
