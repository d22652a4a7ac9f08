"""The VPC namespace's nftables ruleset and dnsmasq files, as text (no kernel, no root)."""
from __future__ import annotations

from pathlib import Path

import pytest

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


def test_nat_gateways_source_nat_their_subnets_egress_only():
    text = nftables.ruleset(PORTS, {"198.51.100.7": "10.0.0.5"},
                            egress_nat=[("10.0.2.0/24", "0.0.0.0/0", "198.51.100.9"),
                                        ("10.0.2.0/24", "192.0.2.0/24", "198.51.100.8")])
    post = chain(text, "postrouting")
    # most specific destination first, before the 1:1 map
    assert post[1:] == ['oifname "igw" ip saddr 10.0.2.0/24 ip daddr 192.0.2.0/24 snat to 198.51.100.8',
                        'oifname "igw" ip saddr 10.0.2.0/24 ip daddr 0.0.0.0/0 snat to 198.51.100.9',
                        'oifname "igw" snat to ip saddr map @snat_to']
    fwd = chain(text, "forward")
    assert fwd[1:] == ['oifname "igw" ip saddr 10.0.2.0/24 ip daddr 192.0.2.0/24 accept',
                       'oifname "igw" ip saddr 10.0.2.0/24 ip daddr 0.0.0.0/0 accept',
                       'iifname "igw" ct direction reply ct status snat accept',
                       'oifname "igw" ip saddr != @public drop',
                       'iifname "igw" ip daddr != @public drop']
    # nothing is DNATed to a NAT gateway's address: no way in through it
    assert "198.51.100.9 :" not in text


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


# ------------------------------------------------------------------------------ security groups

WEB, ADMIN = "sg-0000000000000000a", "sg-0000000000000000b"
I1, I2 = "i-0123456789abcdef0", "i-00000000000000ff1"


def firewall(**ports):
    from hypervisor import FirewallPort, Rule, SecurityGroupRules
    web = SecurityGroupRules(WEB, ingress=(Rule("tcp", 80, 80, cidr="0.0.0.0/0"),
                                           Rule("tcp", 22, 22, group_id=ADMIN),
                                           Rule("icmp", 8, None, cidr="10.0.0.0/8"),
                                           Rule("udp", 0, 65535, cidr="192.0.2.0/24")),
                             egress=(Rule("all", cidr="0.0.0.0/0"),))
    admin = SecurityGroupRules(ADMIN, ingress=(Rule("all", group_id=ADMIN),),
                               egress=(Rule("tcp", 22, 22, group_id=WEB), Rule("icmp", 3, 4, cidr="10.0.0.0/8")))
    return nftables.firewall_state([web, admin], [FirewallPort(iid, ip, tuple(groups))
                                                  for iid, (ip, groups) in ports.items()])


def test_security_groups_are_one_inet_table_of_per_port_chains():
    fw = firewall(**{I1: ("10.0.0.5", [WEB]), I2: ("10.0.0.6", [ADMIN])})
    text = nftables.ruleset(PORTS, {}, fw)
    # Replaced whole with the other tables, in the same script (one nft transaction).
    assert "table inet ec2emu_sg\ndelete table inet ec2emu_sg\ntable inet ec2emu_sg {" in text
    text = text[text.index("table inet ec2emu_sg {"):]  # (the igw table has chains of the same names)
    # Each group is a named set of its members' addresses.
    assert "  set g_0000000000000000a { type ipv4_addr; elements = { 10.0.0.5 }; }" in text
    assert "  set g_0000000000000000b { type ipv4_addr; elements = { 10.0.0.6 }; }" in text
    # Stateful: only new connections meet the rules; the sender's egress, then the receiver's ingress.
    assert chain(text, "forward") == [
        "type filter hook forward priority filter; policy accept;",
        "ct state established,related accept",
        "ip saddr vmap { 10.0.0.6 : jump out_00000000000000ff1, 10.0.0.5 : jump out_0123456789abcdef0 }",
        "ip daddr vmap { 10.0.0.6 : jump in_00000000000000ff1, 10.0.0.5 : jump in_0123456789abcdef0 }"]
    # What the router opens to a guest meets its ingress too; DHCP answers pass.
    assert chain(text, "output")[1:] == [
        "ct state established,related accept", "udp sport 67 udp dport 68 accept",
        "ip daddr vmap { 10.0.0.6 : jump in_00000000000000ff1, 10.0.0.5 : jump in_0123456789abcdef0 }"]
    # Allow-only: a rule's match admits, anything else is dropped. Egress returns (ingress is next).
    assert chain(text, "in_0123456789abcdef0") == [
        "tcp dport 80 accept",                       # 0.0.0.0/0: no address match
        "ip saddr @g_0000000000000000b tcp dport 22 accept",  # a group reference: its members
        "ip saddr 10.0.0.0/8 icmp type 8 accept",    # ICMP type, any code
        "ip saddr 192.0.2.0/24 meta l4proto udp accept",  # the whole port range: the protocol
        "drop"]
    assert chain(text, "out_0123456789abcdef0") == ["return", "drop"]  # allow all out
    assert chain(text, "in_00000000000000ff1") == ["ip saddr @g_0000000000000000b accept", "drop"]  # self-reference
    assert chain(text, "out_00000000000000ff1") == ["ip daddr @g_0000000000000000a tcp dport 22 return",
                                                    "ip daddr 10.0.0.0/8 icmp type 3 icmp code 4 return", "drop"]


def test_a_port_in_several_groups_gets_all_their_rules_and_a_group_without_members_an_empty_set():
    fw = firewall(**{I1: ("10.0.0.5", [ADMIN, WEB])})
    text = nftables.firewall_script(fw)
    assert "  set g_0000000000000000a { type ipv4_addr; elements = { 10.0.0.5 }; }" in text
    assert chain(text, "in_0123456789abcdef0")[0] == "ip saddr @g_0000000000000000b accept"  # its groups in order
    assert chain(text, "in_0123456789abcdef0")[1] == "tcp dport 80 accept"
    empty = nftables.firewall_script(firewall(**{I1: ("10.0.0.5", [WEB])}))
    assert "  set g_0000000000000000b { type ipv4_addr; }" in empty  # nft refuses `elements = { }`


def test_no_ports_filters_nothing_and_none_removes_the_table():
    text = nftables.firewall_script(firewall())
    assert "vmap" not in text and "chain in_" not in text
    assert chain(text, "forward")[1:] == ["ct state established,related accept"]
    assert nftables.firewall_script(None) == ("table inet ec2emu_acl\ndelete table inet ec2emu_acl\n"
                                              "table inet ec2emu_sg\ndelete table inet ec2emu_sg\n")


def test_firewall_state_refuses_what_the_contract_refuses():
    from hypervisor import FirewallPort, Rule, SecurityGroupRules
    with pytest.raises(ValueError):  # a port in a group that is not given
        nftables.firewall_state([], [FirewallPort(I1, "10.0.0.5", (WEB,))])
    with pytest.raises(ValueError):  # a rule naming a group that is not given
        nftables.firewall_state([SecurityGroupRules(WEB, ingress=(Rule("all", group_id=ADMIN),))], [])
    with pytest.raises(ValueError):  # two ports, one address
        nftables.firewall_state([SecurityGroupRules(WEB)], [FirewallPort(I1, "10.0.0.5", (WEB,)),
                                                            FirewallPort(I2, "10.0.0.5", (WEB,))])


# ------------------------------------------------------------------------------ network ACLs

S1, S2 = "subnet-0123456789abcdef0", "subnet-00000000000000ff1"


def acl_state(**acls):
    from hypervisor import SubnetAcl
    return nftables.firewall_state([], [], [SubnetAcl(sid, tuple(i), tuple(e)) for sid, (i, e) in acls.items()])


def test_acl_entries_render_in_rule_number_order_first_match_deciding():
    from hypervisor import AclEntry
    text = nftables.firewall_script(acl_state(**{S1: (
        [AclEntry(100, "allow", "0.0.0.0/0"), AclEntry(50, "deny", "10.9.1.0/24", 6, 22, 22),
         AclEntry(60, "allow", "0.0.0.0/0", 1, icmp_type=8, icmp_code=0)],
        [AclEntry(100, "allow", "10.0.0.0/8", 6, 1024, 65535), AclEntry(110, "deny", "0.0.0.0/0", 47),
         AclEntry(120, "allow", "0.0.0.0/0", 17, 0, 65535)])}))
    # The ACL table comes before the groups' and hooks forward just before them.
    assert text.index("table inet ec2emu_acl {") < text.index("table inet ec2emu_sg {")
    assert chain(text, "forward") == ["type filter hook forward priority filter - 10; policy accept;",
                                      'iifname vmap { "b0123456789" : jump out_0123456789abcdef0 }',
                                      'oifname vmap { "b0123456789" : jump in_0123456789abcdef0 }']
    # Ingress: what enters the subnet from another one (or the gateway); within it: not filtered.
    assert chain(text, "in_0123456789abcdef0") == ['iifname "b0123456789" accept',
                                                   "ip saddr 10.9.1.0/24 tcp dport 22 drop",
                                                   "icmp type 8 icmp code 0 accept",
                                                   "accept", "drop"]
    # Egress: an allow returns (the destination subnet's ingress is asked next); ports are the
    # traffic's destination ports; a protocol without ports is matched by number.
    assert chain(text, "out_0123456789abcdef0") == ['oifname "b0123456789" return',
                                                    "ip daddr 10.0.0.0/8 tcp dport 1024-65535 return",
                                                    "meta l4proto 47 drop",
                                                    "meta l4proto udp return", "drop"]


def test_an_acl_without_entries_denies_all_but_its_own_subnet_and_no_acls_no_table():
    text = nftables.firewall_script(acl_state(**{S1: ([], []), S2: ([], [])}))
    assert chain(text, "in_00000000000000ff1") == ['iifname "b0000000000" accept', "drop"]
    assert '"b0000000000" : jump out_00000000000000ff1, "b0123456789" : jump out_0123456789abcdef0' in text
    assert "table inet ec2emu_acl {" not in nftables.firewall_script(acl_state())


def test_an_interface_port_admits_and_filters_its_secondary_addresses():
    """An interface's port (named by its eni- id) with secondary addresses: anti-spoofing admits
    them, and they meet the port's chains and are members of its groups like its primary one."""
    from hypervisor import FirewallPort, SecurityGroupRules
    eni = "eni-0aaaaaaaaaaaaaaaa"
    ports = {**PORTS, eni: {"mac": "0a:00:00:00:00:03", "ip": "10.0.0.7", "subnet_id": "subnet-1", "hostname": "",
                            "secondary_ips": ["10.0.0.8", "10.0.0.9"], "owner": "i-0123456789abcdef0"}}
    rules = chain(nftables.ruleset(ports, {}), "port_0aaaaaaaaa")
    assert "ether type arp arp saddr ip != { 0.0.0.0, 10.0.0.7, 10.0.0.8, 10.0.0.9 } drop" in rules
    assert "ip saddr { 10.0.0.7, 10.0.0.8, 10.0.0.9 } accept" in rules
    assert "ip saddr 10.0.0.5 accept" in chain(nftables.ruleset(ports, {}), "port_0123456789")  # the control
    # Source/destination check off (a NAT instance): any IPv4 source, from its MAC still.
    ports[eni]["source_dest_check"] = False
    rules = chain(nftables.ruleset(ports, {}), "port_0aaaaaaaaa")
    assert "ether type ip accept" in rules and "ip saddr { 10.0.0.7, 10.0.0.8, 10.0.0.9 } accept" not in rules
    assert rules[0] == "ether saddr != 0a:00:00:00:00:03 drop"
    del ports[eni]["source_dest_check"]
    # dnsmasq: one fixed lease per port, for its primary address only (as on AWS).
    assert "0a:00:00:00:00:03,10.0.0.7\n" in dnsmasq.dhcp_hosts(ports)
    assert not any("10.0.0.8" in line for line in dnsmasq.dhcp_hosts(ports))
    fw = nftables.firewall_state([SecurityGroupRules(WEB)], [
        FirewallPort(I1, "10.0.0.5", (WEB,)), FirewallPort(eni, "10.0.0.7", (WEB,), ("10.0.0.8",))])
    assert fw["ports"][eni] == {"ip": "10.0.0.7", "groups": [WEB], "secondary_ips": ["10.0.0.8"]}
    assert fw["ports"][I1] == {"ip": "10.0.0.5", "groups": [WEB]}
    text = nftables.firewall_script(fw)
    assert "elements = { 10.0.0.5, 10.0.0.7, 10.0.0.8 }" in text
    assert "10.0.0.8 : jump in_0aaaaaaaaaaaaaaaa" in text and "10.0.0.7 : jump in_0aaaaaaaaaaaaaaaa" in text
    with pytest.raises(ValueError):  # a secondary address is one address too
        nftables.firewall_state([SecurityGroupRules(WEB)], [FirewallPort(I1, "10.0.0.5", (WEB,)),
                                                            FirewallPort(eni, "10.0.0.7", (WEB,), ("10.0.0.5",))])


def test_traffic_routed_to_a_port_meets_its_ingress_rules():
    """A route handing a subnet's traffic to a port (a route to an instance): what a subnet
    sends to that destination jumps to the port's ingress chain, most specific destination
    first; a route to a port the firewall does not know adds nothing."""
    fw = firewall(**{I1: ("10.0.0.5", [WEB]), I2: ("10.0.0.6", [ADMIN])})
    routed = [("10.0.2.0/24", "0.0.0.0/0", I1), ("10.0.2.0/24", "192.0.2.0/24", I2),
              ("10.0.3.0/24", "198.51.100.0/24", "eni-0ffffffffffffffff")]
    text = nftables.firewall_script(fw, routed)
    text = text[text.index("table inet ec2emu_sg {"):]
    assert chain(text, "forward")[-2:] == ["ip saddr 10.0.2.0/24 ip daddr 192.0.2.0/24 jump in_00000000000000ff1",
                                           "ip saddr 10.0.2.0/24 ip daddr 0.0.0.0/0 jump in_0123456789abcdef0"]
    assert "198.51.100.0/24" not in text
    assert nftables.ruleset(PORTS, {}, fw, routed=routed).count("jump in_0123456789abcdef0") == 3  # vmaps + route
    assert "ip daddr 0.0.0.0/0 jump" not in nftables.firewall_script(fw)  # the control: no route, no jump


def test_routes_become_hops_in_the_subnet_tables():
    """network._hop: the internet link for a gateway's route (None or a NAT gateway's address),
    the bridge of the subnet holding a next hop for a route to a port; _routed: which port."""
    from hypervisor.names import subnet_bridge_name
    from hypervisor.network import INTERNET_ADDRESS, _hop, _routed
    subnets = {"subnet-0aaaaaaaaaaaaaaaa": "10.0.1.0/24", "subnet-0bbbbbbbbbbbbbbbb": "10.0.2.0/24"}
    assert _hop("0.0.0.0/0", None, subnets) == ("0.0.0.0/0", INTERNET_ADDRESS, "igw")
    assert _hop("0.0.0.0/0", "198.51.100.9", subnets) == ("0.0.0.0/0", INTERNET_ADDRESS, "igw")
    assert _hop("192.0.2.0/24", {"next_hop": "10.0.2.7"}, subnets) == (
        "192.0.2.0/24", "10.0.2.7", subnet_bridge_name("subnet-0bbbbbbbbbbbbbbbb"))
    assert _hop("192.0.2.0/24", {"next_hop": "10.9.0.1"}, subnets) is None  # in no subnet: no route
    st = {"ports": {I1: {"ip": "10.0.2.7"}, "eni-0ccccccccccccccc1": {"ip": "10.0.1.4", "secondary_ips": ["10.0.1.5"]}}}
    routes = {"10.0.1.0/24": {"0.0.0.0/0": None, "192.0.2.0/24": {"next_hop": "10.0.2.7"}},
              "10.0.2.0/24": {"198.51.100.0/24": {"next_hop": "10.0.1.5"}, "203.0.113.0/24": {"next_hop": "10.0.2.99"}}}
    assert _routed(st, routes) == [("10.0.1.0/24", "192.0.2.0/24", I1),
                                   ("10.0.2.0/24", "198.51.100.0/24", "eni-0ccccccccccccccc1")]
