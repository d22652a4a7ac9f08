"""Names of the host devices made for a VPC, derived from the emulator's ids (pure functions).

Linux interface names have at most 15 characters: each takes the first 10 hex digits of an id."""
from __future__ import annotations

import hashlib
import ipaddress


def hex10(resource_id: str) -> str:
    tail = resource_id.split("-", 1)[-1].lower()
    if not tail or any(c not in "0123456789abcdef" for c in tail):
        raise ValueError(f"not an AWS-style id: {resource_id!r}")
    return tail[:10]


def root_bridge_name(instance_id: str) -> str:
    """The address-less bridge in the root namespace that libvirt attaches the guest's tap to."""
    return "q" + hex10(instance_id)


def root_veth_name(instance_id: str) -> str:
    return "qv" + hex10(instance_id)


def port_name(instance_id: str) -> str:
    """The port of the instance on its subnet bridge, inside the VPC namespace."""
    return "qp" + hex10(instance_id)


def subnet_bridge_name(subnet_id: str) -> str:
    return "b" + hex10(subnet_id)


def internet_link_name(vpc_id: str) -> str:
    return "x" + hex10(vpc_id)


def gateway_mac(subnet_id: str) -> str:
    """The subnet gateway's MAC: fixed per subnet (locally administered), so a rebuilt namespace
    (after a crash or reboot) answers with the MAC its guests already have in their ARP caches."""
    h = hashlib.sha256(subnet_id.encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, 0xEC, *h[:4]))


def gateway(cidr: str) -> tuple[str, int]:
    """-> (the subnet's first host address: gateway, DHCP and DNS server; prefix length)."""
    net = ipaddress.ip_network(cidr)
    return str(net.network_address + 1), net.prefixlen
