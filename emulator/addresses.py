"""Elastic IP addresses. Allocation arrives with the real network (NAT at the VPC's internet
gateway); until then an account holds no Elastic IPs, and DescribeAddresses says exactly that
(clients such as libcloud call it on every node listing)."""
from __future__ import annotations

from .errors import EC2Error
from .query import apply_filters
from .registry import Context, action

ADDRESS_FILTERS = {name: (lambda a: None) for name in (
    "allocation-id", "association-id", "domain", "instance-id", "network-border-group",
    "network-interface-id", "network-interface-owner-id", "private-ip-address", "public-ip")}


@action("DescribeAddresses")
def describe_addresses(ctx: Context, p: dict) -> dict:
    held: list = []  # no AllocateAddress yet: nothing can be held
    if p.get("PublicIps"):
        raise EC2Error(f"Address '{p['PublicIps'][0]}' not found.", "InvalidAddress.NotFound")
    if p.get("AllocationIds"):
        raise EC2Error(f"The allocation ID '{p['AllocationIds'][0]}' does not exist",
                       "InvalidAllocationID.NotFound")
    held = apply_filters(held, p.get("Filters"), ADDRESS_FILTERS)
    return {"Addresses": held}
