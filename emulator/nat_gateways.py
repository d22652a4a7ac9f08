"""NAT gateways: CreateNatGateway, DescribeNatGateways, DeleteNatGateway.

A public NAT gateway sits in a subnet and holds an Elastic IP (associated to it for its life, as
DescribeAddresses shows); subnets whose tables route a destination to it reach that destination
as its Elastic IP, egress only (routing.py and the host's source NAT). It is `pending` until its
host task has run (the VPC's routing then knows it: `available`), `deleting` until the routing
without it is on the host, then `deleted` (listed for an hour, as AWS does), its Elastic IP
free. A private one (ConnectivityType private) is API state only: the host has no other
networks to reach through it.
"""
from __future__ import annotations

import ipaddress
from datetime import timedelta

from sqlalchemy import select, update

from . import routing
from .addresses import get_address
from .errors import (IdempotentParameterMismatch, InvalidParameterCombination, InvalidParameterValue,
                     MissingParameter, NatGatewayLimitExceeded, NatGatewayNotFound,
                     ResourceAlreadyAssociated)
from .ids import new_id
from .models import Address, NatGateway, Subnet, utcnow
from .network_interfaces import used_addresses
from .query import Resource, Selector, describe
from .registry import Context, Host, action, host_action
from .tags import refuse_other_tag_types, set_tags, tag_dict, tag_list, tag_specifications
from .vpcs import get_subnet, lock_vpc

MAX_PER_ZONE = 5     # AWS's default quota of NAT gateways per availability zone
SHOWN_DELETED = timedelta(hours=1)


def _private_ip(ctx: Context, subnet) -> str:
    """The gateway's own address in its subnet: the highest free one (instances are given the
    lowest first, so the two rarely meet)."""
    net = ipaddress.IPv4Network(subnet.cidr_block)
    used = used_addresses(ctx.session, subnet.id)  # instances', interfaces' and NAT gateways'

    n = int(net.broadcast_address) - 1
    while n >= int(net.network_address) + 4:
        ip = str(ipaddress.IPv4Address(n))
        if ip not in used:
            return ip
        n -= 1
    raise InvalidParameterValue(f"Insufficient free IP addresses in subnet {subnet.id}")


@action("CreateNatGateway")
def create_nat_gateway(ctx: Context, p: dict) -> dict:
    if not p.get("SubnetId"):
        raise MissingParameter("subnetId")  # (optional in the model since regional NAT gateways)
    token = p.get("ClientToken")
    if token:
        same = ctx.session.scalars(select(NatGateway).where(
            NatGateway.account_id == ctx.account_id, NatGateway.region == ctx.region,
            NatGateway.client_token == token)).first()
        if same is not None:
            if same.subnet_id != p["SubnetId"] or same.allocation_id != p.get("AllocationId"):
                raise IdempotentParameterMismatch()
            return {"NatGateway": _out(same, {}), "ClientToken": token}
    subnet = get_subnet(ctx, p["SubnetId"])
    lock_vpc(ctx, subnet.vpc_id)  # against a DeleteSubnet (and another create) at the same time
    kind = p.get("ConnectivityType") or "public"
    if p.get("SecondaryAllocationIds") or p.get("SecondaryPrivateIpAddresses") \
            or p.get("SecondaryPrivateIpAddressCount"):
        raise InvalidParameterValue("Secondary addresses of NAT gateways are not supported by this emulator.")
    address = None
    if kind == "public":
        if not p.get("AllocationId"):
            raise MissingParameter("allocationId")
        address = get_address(ctx, p["AllocationId"])
        if address.association_id:
            raise ResourceAlreadyAssociated(f"Elastic IP address [{address.id}] is already associated")
    elif p.get("AllocationId"):
        raise InvalidParameterCombination("AllocationId cannot be given for a private NAT gateway")
    in_zone = ctx.session.scalars(select(NatGateway.id).join(Subnet, Subnet.id == NatGateway.subnet_id).where(
        NatGateway.account_id == ctx.account_id, NatGateway.region == ctx.region,
        NatGateway.state.in_(("pending", "available")), Subnet.availability_zone == subnet.availability_zone)).all()
    if len(in_zone) >= MAX_PER_ZONE:
        raise NatGatewayLimitExceeded()
    refuse_other_tag_types(p.get("TagSpecifications"), {"natgateway"})
    tags = tag_specifications(p.get("TagSpecifications"), "natgateway")
    if p.get("PrivateIpAddress"):
        raise InvalidParameterValue("PrivateIpAddress of a NAT gateway is chosen by this emulator.")
    nat = NatGateway(id=new_id("nat"), vpc_id=subnet.vpc_id, subnet_id=subnet.id, connectivity_type=kind,
                     state="pending", allocation_id=address.id if address else None,
                     public_ip=address.public_ip if address else None, private_ip=_private_ip(ctx, subnet),
                     network_interface_id=new_id("eni"), client_token=token,
                     account_id=ctx.account_id, region=ctx.region)
    ctx.session.add(nat)
    if address is not None:
        address.association_id = new_id("eipassoc")
        address.nat_gateway_id, address.network_interface_id = nat.id, nat.network_interface_id
        address.private_ip = nat.private_ip
    ctx.session.flush()
    set_tags(ctx, nat.id, tags)
    ctx.host_task("nat_gateway.create", nat.id, subnet.availability_zone)
    return {"NatGateway": _out(nat, tag_dict(tags)), "ClientToken": token}


@action("DeleteNatGateway")
def delete_nat_gateway(ctx: Context, p: dict) -> dict:
    nat = _get(ctx, p["NatGatewayId"])
    if nat.state in ("pending", "available"):
        nat.state = "deleting"
        routing.changed(ctx, nat.vpc_id)  # its routes are blackholes from now
        ctx.host_task("nat_gateway.delete", nat.id)
    return {"NatGatewayId": nat.id}


def _get(ctx: Context, nat_id: str) -> NatGateway:
    nat = ctx.session.get(NatGateway, nat_id)
    if nat is None or nat.account_id != ctx.account_id or nat.region != ctx.region or _expired(nat):
        raise NatGatewayNotFound(nat_id)
    return nat


def _expired(nat: NatGateway) -> bool:
    deleted = nat.deleted_at
    if deleted is not None and deleted.tzinfo is None:  # SQLite gives naive datetimes back
        deleted = deleted.replace(tzinfo=utcnow().tzinfo)
    return nat.state == "deleted" and deleted is not None and utcnow() - deleted > SHOWN_DELETED


def refuses_detach(ctx: Context, vpc_id: str) -> bool:
    """Whether a public NAT gateway of the VPC still maps an Elastic IP (AWS then refuses to
    detach the VPC's internet gateway)."""
    return ctx.session.scalars(select(NatGateway.id).where(
        NatGateway.vpc_id == vpc_id, NatGateway.public_ip.is_not(None),
        NatGateway.state.in_(("pending", "available", "deleting"))).limit(1)).first() is not None


# ---------------------------------------------------------------------------------- describe

def _out(n: NatGateway, tags: dict | None) -> dict:
    address = {"NetworkInterfaceId": n.network_interface_id, "PrivateIp": n.private_ip, "IsPrimary": True,
               "Status": {"pending": "associating", "available": "succeeded", "deleting": "disassociating",
                          "deleted": "succeeded", "failed": "failed"}[n.state]}
    if n.allocation_id:
        address.update({"AllocationId": n.allocation_id, "PublicIp": n.public_ip})
    out = {"NatGatewayId": n.id, "VpcId": n.vpc_id, "SubnetId": n.subnet_id, "State": n.state,
           "CreateTime": n.created_at, "ConnectivityType": n.connectivity_type,
           "NatGatewayAddresses": [address], "Tags": tag_list(tags or {})}
    if n.deleted_at:
        out["DeleteTime"] = n.deleted_at
    if n.failure_code:
        out.update({"FailureCode": n.failure_code, "FailureMessage": n.failure_message})
    return out


NAT_GATEWAYS = Resource("NatGateways", lambda ctx, page, tags: [_out(n, tags[n.id]) for n in page], {
    "nat-gateway-id": lambda n: n.id,
    "state": lambda n: n.state,
    "subnet-id": lambda n: n.subnet_id,
    "vpc-id": lambda n: n.vpc_id,
}, (Selector("NatGatewayIds", lambda n: n.id, NatGatewayNotFound),), max_results=(5, 1000))


@action("DescribeNatGateways")
def describe_nat_gateways(ctx: Context, p: dict) -> dict:
    rows = ctx.session.scalars(select(NatGateway).where(NatGateway.account_id == ctx.account_id,
                                                        NatGateway.region == ctx.region)
                               .order_by(NatGateway.id)).all()
    return describe(ctx, NAT_GATEWAYS, p, [n for n in rows if not _expired(n)])


# ------------------------------------------------------------------------------- host side

@host_action("nat_gateway.create")
def create_on_host(host: Host, nat_id: str) -> None:
    """The gateway is available: the VPC's routing is asked for again with it (the next task)."""
    with host.Session() as session:
        # A conditional update, not read-then-write: a DeleteNatGateway committed meanwhile
        # ('deleting') must not be overwritten (its delete task would then find it 'available'
        # and leave it so for ever; seen in CI).
        vpc_id = session.scalar(update(NatGateway).where(NatGateway.id == nat_id, NatGateway.state == "pending")
                                .values(state="available").returning(NatGateway.vpc_id))
        if vpc_id is not None:
            routing.ask(session, vpc_id)
        session.commit()


@host_action("nat_gateway.delete")
def delete_on_host(host: Host, nat_id: str) -> None:
    """Runs after the routing without the gateway (asked for with the deletion, so earlier in
    task order) is on the host: the gateway is gone and its Elastic IP free."""
    with host.Session() as session:
        nat = session.get(NatGateway, nat_id, with_for_update=True)
        if nat is None or nat.state != "deleting":
            return
        nat.state, nat.deleted_at = "deleted", utcnow()
        for address in session.scalars(select(Address).where(Address.nat_gateway_id == nat.id)):
            address.association_id = address.nat_gateway_id = None
            address.network_interface_id = address.private_ip = None
        session.commit()

