"""Elastic IP addresses. Allocation arrives with the real network (NAT at the VPC's internet
gateway); until then an account holds no Elastic IPs, and DescribeAddresses says exactly that
(clients such as libcloud call it on every node listing)."""
from __future__ import annotations

from .errors import InvalidAddressNotFound, InvalidAllocationIDNotFound
from .query import Resource, Selector, describe
from .registry import Context, action

ADDRESS_FILTERS = {name: (lambda a: None) for name in (
    "allocation-id", "association-id", "domain", "instance-id", "network-border-group",
    "network-interface-id", "network-interface-owner-id", "private-ip-address", "public-ip")}

ADDRESSES = Resource("Addresses", lambda ctx, page, tags: page, ADDRESS_FILTERS,
                     (Selector("PublicIps", lambda a: a["PublicIp"], InvalidAddressNotFound),
                      Selector("AllocationIds", lambda a: a["AllocationId"], InvalidAllocationIDNotFound)),
                     max_results=None, tagged=False)


@action("DescribeAddresses")
def describe_addresses(ctx: Context, p: dict) -> dict:
    return describe(ctx, ADDRESSES, p, [])  # no AllocateAddress yet: nothing can be held
