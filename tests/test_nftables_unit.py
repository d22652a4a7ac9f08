"""The VPC namespace's nftables ruleset and dnsmasq files, as text (no kernel, no root)."""
from __future__ import annotations

from pathlib import Path

from hypervisor import dnsmasq, nftables

PORTS = {"i-0123456789abcdef0": {"mac": "0a:00:00:00:00:01", "ip": "10.0.0.5", "subnet_id": "subnet-1",
                                 "hostname": "ip-10-0-0-5.ec2.internal"},
         "i-00000000000000ff1": {"mac": "0a:00:00:00:00:02", "ip": "10.0.0.6", "subnet_id": "subnet-1",
                                 "hostname": ""}}


def chain(text: str, name: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index(f"  chain {name} {{")
    return [line.strip() for line in lines[start + 1:lines.index("  }", start)]]


def test_each_port_is_pinned_to_its_mac_and_address():
    text = nftables.ruleset(PORTS, {})
    # Ordered by instance id, each named by the id's first 10 hex digits:
    assert 'iifname vmap { "qp0000000000" : jump port_0000000000, "qp0123456789" : jump port_0123456789 }' in text
    rules = chain(text, "port_0123456789")
    assert rules == ["ether saddr != 0a:00:00:00:00:01 drop",
                     "ether type arp arp saddr ether != 0a:00:00:00:00:01 drop",
                     "ether type arp arp saddr ip != { 0.0.0.0, 10.0.0.5 } drop",
                     "ether type arp accept",
                     "ip saddr 10.0.0.5 accept",
                     "ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 accept",
                     "drop"]
    assert "ip saddr 10.0.0.6 accept" in chain(text, "port_0000000000")
    # Each table is replaced whole: created (so the delete cannot fail), deleted, written.
    assert text.startswith("table bridge ec2emu_ports\ndelete table bridge ec2emu_ports\n")
    assert "table ip ec2emu_igw\ndelete table ip ec2emu_igw\n" in text


def test_no_ports_no_dispatch():
    text = nftables.ruleset({}, {})
    assert chain(text, "prerouting")[0].startswith("type filter hook prerouting")
    assert "vmap" not in text and "port_" not in text


def test_igw_maps_public_addresses_both_ways():
    text = nftables.ruleset(PORTS, {"198.51.100.7": "10.0.0.5", "198.51.100.2": "10.0.0.6"})
    assert "map dnat_to { type ipv4_addr : ipv4_addr; elements = { 198.51.100.2 : 10.0.0.6, " \
           "198.51.100.7 : 10.0.0.5 }; }" in text
    assert "map snat_to { type ipv4_addr : ipv4_addr; elements = { 10.0.0.6 : 198.51.100.2, " \
           "10.0.0.5 : 198.51.100.7 }; }" in text
    assert "set public { type ipv4_addr; elements = { 10.0.0.6, 10.0.0.5 }; }" in text
    # Only addresses with a public IP use the internet link, and nothing enters the router from it.
    assert chain(text, "forward")[1:] == ['oifname "igw" ip saddr != @public drop',
                                          'iifname "igw" ip daddr != @public drop']
    assert chain(text, "input")[1:] == ['iifname "igw" drop']
    # Without mappings the maps and set are empty (nft refuses `elements = { }`).
    empty = nftables.ruleset(PORTS, {})
    assert "map dnat_to { type ipv4_addr : ipv4_addr; }" in empty and "elements = { }" not in empty


def test_dnsmasq_serves_only_the_names_it_is_given():
    assert dnsmasq.dhcp_hosts(PORTS) == ["0a:00:00:00:00:01,10.0.0.5,ip-10-0-0-5\n", "0a:00:00:00:00:02,10.0.0.6\n"]
    hosts = dnsmasq.hosts(PORTS, {"198.51.100.7": "10.0.0.5", "198.51.100.8": "10.0.0.6"},
                          {"198.51.100.7": "ec2-198-51-100-7.compute-1.amazonaws.com"}, "ec2.internal")
    assert hosts == ("10.0.0.5 ip-10-0-0-5.ec2.internal ip-10-0-0-5\n"
                     "10.0.0.5 ec2-198-51-100-7.compute-1.amazonaws.com\n")
    conf = dnsmasq.config(Path("/s/vpc-1"), [("subnet-0000000001", "10.0.0.0/24")], "ec2.internal",
                          "compute-1.amazonaws.com")
    assert "domain=ec2.internal\nlocal=/ec2.internal/\nlocal=/compute-1.amazonaws.com/\n" in conf
    assert "dhcp-range=set:b0000000001,10.0.0.0,static,255.255.255.0,1h" in conf
    assert "dhcp-option=tag:b0000000001,option:router,10.0.0.1" in conf
    # No domains given: none served, and none invented.
    bare = dnsmasq.config(Path("/s/vpc-1"), [("subnet-0000000001", "10.0.0.0/24")], "", "")
    assert "domain=" not in bare and "local=" not in bare and "no-resolv" in bare
