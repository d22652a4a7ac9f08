"""Elastic IP addresses: AllocateAddress, DescribeAddresses, AssociateAddress, DisassociateAddress,
ReleaseAddress; and the public-address pool every public address comes from.

An Elastic IP (domain vpc; EC2-Classic is gone) is drawn from the configured public pool, which
it shares with the public addresses instances are given at launch: no address is ever both. While
it is associated with an instance, the instance's `public_ip` is the Elastic IP: DescribeInstances,
the metadata service's public-ipv4, and the host's 1:1 NAT at the internet gateway all read that
column, so they all follow the association. As on AWS:
  * associating an Elastic IP releases the instance's auto-assigned public address; disassociating
    it gives a running instance a new one if its subnet assigns them (the rule StartInstances uses);
  * an instance holds one Elastic IP: associating another moves the first one off;
  * an associated address moves only with AllowReassociation (else Resource.AlreadyAssociated);
  * stopping keeps the Elastic IP (only auto-assigned addresses go); terminating disassociates it;
  * an associated address cannot be released (InvalidIPAddress.InUse).

On the host, an association is `address.map` (run only if the instance is still running with that
address when the task runs: a stop or a later association overtook it otherwise), a disassociation
`address.unmap` (in instances.py). A stopped instance's mapping is made by its next start (its
spec carries `public_ip`), and `reconcile_host` rebuilds every mapping from the same column.
"""
from __future__ import annotations

import ipaddress
import secrets

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from . import vpcs
from .dns import public_dns_name
from .errors import (AddressLimitExceeded, InsufficientAddressCapacity, InvalidAddressNotFound,
                     InvalidAllocationIDNotFound, InvalidAssociationIDNotFound, InvalidInstanceID,
                     InvalidInstanceIDNotFound, InvalidIPAddressInUse, InvalidNetworkInterfaceIDNotFound,
                     InvalidParameterCombination, InvalidParameterValue, MissingParameter,
                     ResourceAlreadyAssociated, Unsupported)
from .ids import new_id
from .models import Address, Instance, NatGateway, NetworkInterface, Subnet, Tag, Vpc
from .query import Resource, Selector, describe
from .registry import Context, Host, action, host_action
from .tags import refuse_other_tag_types, set_tags, tag_list, tag_specifications

MAX_ADDRESSES = 5  # AWS's default quota of Elastic IPs per region


# ------------------------------------------------------------------------- the public pool

def allocate_public_ip(ctx: Context, taken: set[str]) -> str:
    """A free address of the public pool (neither an instance's public address nor an Elastic
    IP, nor in `taken`: those picked earlier in this request)."""
    pool = ipaddress.ip_network(ctx.config.public_ip_pool)
    used = (set(ctx.session.scalars(select(Instance.public_ip).where(Instance.public_ip.is_not(None))))
            | set(ctx.session.scalars(select(Address.public_ip))) | taken)
    for _ in range(64):  # random probing keeps allocation O(1) in a sparse pool
        n = int(pool.network_address) + 1 + secrets.randbelow(pool.num_addresses - 2)
        ip = str(ipaddress.IPv4Address(n))
        if ip not in used:
            return ip
    for addr in pool.hosts():
        if str(addr) not in used:
            return str(addr)
    raise InsufficientAddressCapacity()


# ----------------------------------------------------------------- for instances.py's life

def elastic_ip_of(session: Session, instance_id: str) -> Address | None:
    return session.scalars(select(Address).where(Address.instance_id == instance_id)).first()


def instance_gone(session: Session, instance_id: str) -> None:
    """A terminated instance's Elastic IP is disassociated (the host unplugged its mapping)."""
    addr = elastic_ip_of(session, instance_id)
    if addr is not None:
        _clear(addr)


def _clear(addr: Address) -> None:
    addr.association_id = addr.instance_id = addr.network_interface_id = addr.private_ip = None
    addr.nat_gateway_id = None


# ---------------------------------------------------------------------------------- allocate

def _scope(ctx: Context) -> dict:
    return {"account_id": ctx.account_id, "region": ctx.region}


@action("AllocateAddress")
def allocate_address(ctx: Context, p: dict) -> dict:
    if p.get("Address") or p.get("CustomerOwnedIpv4Pool") or p.get("IpamPoolId"):
        raise Unsupported("Bring-your-own and customer-owned addresses are not supported by this emulator.")
    if p.get("PublicIpv4Pool") not in (None, "amazon"):
        raise InvalidParameterValue.value(p["PublicIpv4Pool"], "PublicIpv4Pool", "Pool does not exist.")
    if p.get("NetworkBorderGroup") not in (None, ctx.region):
        raise InvalidParameterValue.value(p["NetworkBorderGroup"], "NetworkBorderGroup")
    refuse_other_tag_types(p.get("TagSpecifications"), {"elastic-ip"})
    tags = tag_specifications(p.get("TagSpecifications"), "elastic-ip")
    held = ctx.session.scalars(select(Address.id).where(Address.account_id == ctx.account_id,
                                                        Address.region == ctx.region)).all()
    if len(held) >= MAX_ADDRESSES:
        raise AddressLimitExceeded()
    addr = Address(id=new_id("eipalloc"), public_ip=allocate_public_ip(ctx, set()), **_scope(ctx))
    ctx.session.add(addr)
    try:
        ctx.session.flush()  # public_ip is unique: a concurrent allocation of the same address loses
    except IntegrityError:
        raise InsufficientAddressCapacity() from None
    set_tags(ctx, addr.id, tags)
    # Domain 'standard' (EC2-Classic) no longer exists: every address is a VPC one, as AWS answers.
    return {"PublicIp": addr.public_ip, "AllocationId": addr.id, "PublicIpv4Pool": "amazon",
            "NetworkBorderGroup": ctx.region, "Domain": "vpc"}


# ---------------------------------------------------------------------------------- describe

def _out(a: Address, tags: dict | None) -> dict:
    out = {"AllocationId": a.id, "PublicIp": a.public_ip, "Domain": "vpc", "PublicIpv4Pool": "amazon",
           "NetworkBorderGroup": a.region, "Tags": tag_list(tags or {})}
    if a.association_id:
        out.update({"AssociationId": a.association_id, "NetworkInterfaceId": a.network_interface_id,
                    "NetworkInterfaceOwnerId": a.account_id, "PrivateIpAddress": a.private_ip})
        if a.instance_id:
            out["InstanceId"] = a.instance_id
    return out


ADDRESS_FILTERS = {
    "allocation-id": lambda a: a.id,
    "association-id": lambda a: a.association_id,
    "domain": lambda a: "vpc",
    "instance-id": lambda a: a.instance_id,
    "network-border-group": lambda a: a.region,
    "network-interface-id": lambda a: a.network_interface_id,
    "network-interface-owner-id": lambda a: a.account_id if a.association_id else None,
    "private-ip-address": lambda a: a.private_ip,
    "public-ip": lambda a: a.public_ip,
    "public-ipv4-pool": lambda a: "amazon",
}

ADDRESSES = Resource("Addresses", lambda ctx, page, tags: [_out(a, tags[a.id]) for a in page], ADDRESS_FILTERS,
                     (Selector("PublicIps", lambda a: a.public_ip, InvalidAddressNotFound),
                      Selector("AllocationIds", lambda a: a.id, InvalidAllocationIDNotFound)),
                     max_results=None)


@action("DescribeAddresses")
def describe_addresses(ctx: Context, p: dict) -> dict:
    rows = ctx.session.scalars(select(Address).where(Address.account_id == ctx.account_id,
                                                     Address.region == ctx.region).order_by(Address.id)).all()
    return describe(ctx, ADDRESSES, p, rows)


def get_address(ctx: Context, allocation_id: str | None, public_ip: str | None = None) -> Address:
    """The caller's address named by its allocation id (or, as older clients do, its public IP)."""
    # Locked: an association, a NAT gateway and a release of one address must not interleave.
    q = select(Address).where(Address.account_id == ctx.account_id, Address.region == ctx.region).with_for_update()
    if allocation_id:
        addr = ctx.session.scalars(q.where(Address.id == allocation_id)).first()
        if addr is None:
            raise InvalidAllocationIDNotFound(allocation_id)
        return addr
    if public_ip:
        addr = ctx.session.scalars(q.where(Address.public_ip == public_ip)).first()
        if addr is None:
            raise InvalidAddressNotFound(public_ip)
        return addr
    raise MissingParameter("allocationId")


# ------------------------------------------------------------------------------- associate

def _target(ctx: Context, p: dict) -> Instance:
    """The instance an AssociateAddress names, by InstanceId or by its (primary) interface."""
    if p.get("InstanceId") and p.get("NetworkInterfaceId"):
        raise InvalidParameterCombination("You may specify an instance id or a network interface id, but not both")
    q = select(Instance).where(Instance.account_id == ctx.account_id, Instance.region == ctx.region)
    if p.get("InstanceId"):
        inst = ctx.session.scalars(q.where(Instance.id == p["InstanceId"]).with_for_update()).first()
        if inst is None or inst.state == "terminated":
            raise InvalidInstanceIDNotFound(p["InstanceId"])
    elif p.get("NetworkInterfaceId"):
        inst = ctx.session.scalars(q.where(Instance.network_interface_id == p["NetworkInterfaceId"],
                                           Instance.state != "terminated").with_for_update()).first()
        if inst is None:
            eni = ctx.session.get(NetworkInterface, p["NetworkInterfaceId"])
            if eni is not None and eni.account_id == ctx.account_id and eni.region == ctx.region:
                raise Unsupported("Elastic IPs on an interface other than an instance's primary one are not "
                                  "supported by this emulator yet.")
            raise InvalidNetworkInterfaceIDNotFound(p["NetworkInterfaceId"])
    else:
        raise MissingParameter.worded("Either instance ID or network interface ID must be specified")
    if inst.state in ("pending", "shutting-down"):
        raise InvalidInstanceID.in_state(inst.id, inst.state)
    wanted = p.get("PrivateIpAddress")
    primary = ctx.session.get(NetworkInterface, inst.network_interface_id)
    if wanted and primary is not None and wanted in (primary.secondary_ips or []):
        raise Unsupported("Elastic IPs on a secondary private address are not supported by this emulator yet.")
    if wanted and wanted != inst.private_ip:
        raise InvalidParameterValue(f"The specified private IP address {wanted} is not assigned to the network "
                                    f"interface {inst.network_interface_id}")
    return inst


def _lose(ctx: Context, addr: Address) -> None:
    """Take an Elastic IP off its instance (the address stays allocated): the host unmaps it, and
    a running instance in a subnet that assigns public addresses gets a new one (as on AWS)."""
    inst = ctx.session.get(Instance, addr.instance_id) if addr.instance_id else None
    _clear(addr)
    if inst is None or inst.public_ip != addr.public_ip:
        return
    inst.public_ip = None
    ctx.session.flush()  # the address is free (unique column) before anything takes it
    if inst.state in ("pending", "running"):
        ctx.host_task("address.unmap", inst.id, inst.availability_zone, vpc_id=inst.vpc_id,
                      public_ip=addr.public_ip, private_ip=inst.private_ip)
        subnet = ctx.session.get(Subnet, inst.subnet_id)
        if subnet is not None and subnet.map_public_ip_on_launch:
            inst.public_ip = allocate_public_ip(ctx, {addr.public_ip})
            ctx.session.flush()
            _map(ctx, inst)


def _map(ctx: Context, inst: Instance) -> None:
    ctx.host_task("address.map", inst.id, inst.availability_zone, vpc_id=inst.vpc_id,
                  public_ip=inst.public_ip, private_ip=inst.private_ip)


@action("AssociateAddress")
def associate_address(ctx: Context, p: dict) -> dict:
    addr = get_address(ctx, p.get("AllocationId"), p.get("PublicIp"))
    inst = _target(ctx, p)
    if addr.nat_gateway_id:
        raise ResourceAlreadyAssociated(f"resource {addr.id} is already associated with associate-id "
                                        f"{addr.association_id}")
    if addr.instance_id == inst.id:
        return {"AssociationId": addr.association_id}  # already there: nothing changes
    if addr.association_id and not p.get("AllowReassociation"):
        raise ResourceAlreadyAssociated(f"resource {addr.id} is already associated with associate-id "
                                        f"{addr.association_id}")
    if addr.association_id:
        _lose(ctx, addr)
    previous = elastic_ip_of(ctx.session, inst.id)
    if previous is not None:  # an instance holds one Elastic IP: the other one is disassociated
        _clear(previous)
    inst.public_ip = None  # its auto-assigned address (or previous Elastic IP) is released
    ctx.session.flush()
    inst.public_ip = addr.public_ip
    addr.association_id = new_id("eipassoc")
    addr.instance_id, addr.network_interface_id, addr.private_ip = inst.id, inst.network_interface_id, inst.private_ip
    ctx.session.flush()
    if inst.state == "running":  # (a stopped one is mapped by its next start)
        # map_address drops the private address's other mapping (the released one) itself.
        _map(ctx, inst)
    return {"AssociationId": addr.association_id}


@action("DisassociateAddress")
def disassociate_address(ctx: Context, p: dict) -> dict:
    if p.get("AssociationId"):
        addr = ctx.session.scalars(select(Address).where(
            Address.association_id == p["AssociationId"], Address.account_id == ctx.account_id,
            Address.region == ctx.region)).first()
        if addr is None:
            raise InvalidAssociationIDNotFound(p["AssociationId"])
    elif p.get("PublicIp"):
        addr = get_address(ctx, None, p["PublicIp"])
        if not addr.association_id:
            return {}
    else:
        raise MissingParameter("associationId")
    if addr.nat_gateway_id:
        raise InvalidParameterValue(f"The address {addr.public_ip} is used by NAT gateway {addr.nat_gateway_id} "
                                    "and cannot be disassociated.")
    _lose(ctx, addr)
    return {}


@action("ReleaseAddress")
def release_address(ctx: Context, p: dict) -> dict:
    if p.get("AllocationId") and p.get("PublicIp"):
        raise InvalidParameterCombination("You may specify public IP or allocation id, but not both in the same call")
    if p.get("NetworkBorderGroup") not in (None, ctx.region):
        raise InvalidParameterValue.value(p["NetworkBorderGroup"], "NetworkBorderGroup")
    addr = get_address(ctx, p.get("AllocationId"), p.get("PublicIp"))
    if addr.association_id or ctx.session.scalars(select(NatGateway.id).where(
            NatGateway.allocation_id == addr.id, NatGateway.state.in_(("pending", "available", "deleting")))
            .limit(1)).first() is not None:
        raise InvalidIPAddressInUse(addr.public_ip)
    ctx.session.execute(delete(Tag).where(Tag.resource_id == addr.id, Tag.account_id == ctx.account_id))
    ctx.session.delete(addr)
    return {}


# ------------------------------------------------------------------------------- host side

@host_action("address.map")
def map_on_host(host: Host, instance_id: str, vpc_id: str, public_ip: str, private_ip: str) -> None:
    """Map an instance's public address, if it still holds it and runs (a later stop, association
    or termination overtook this task otherwise, and made the host right itself)."""
    with host.Session() as session:
        inst = session.get(Instance, instance_id)
        current = (inst is not None and inst.state == "running" and inst.public_ip == public_ip
                   and inst.private_ip == private_ip)
        region = inst.region if inst is not None else ""
        named = vpcs.gives_dns_names(session.get(Vpc, vpc_id))
    if current:
        host.driver.map_address(vpc_id, public_ip, private_ip, public_dns_name(region, public_ip) if named else "")


@action("DescribeAddressesAttribute")
def describe_addresses_attribute(ctx: Context, p: dict) -> dict:
    """The only attribute is domain-name (the reverse DNS record): none is ever set here
    (ModifyAddressAttribute is not implemented), so each address is listed without a PtrRecord."""
    rows = ctx.session.scalars(select(Address).where(Address.account_id == ctx.account_id,
                                                     Address.region == ctx.region).order_by(Address.id)).all()
    page = describe(ctx, ADDRESS_ATTRIBUTES, p, rows)
    return {"Addresses": page["Addresses"], "NextToken": page.get("NextToken")}


ADDRESS_ATTRIBUTES = Resource("Addresses", lambda ctx, page, tags: [
    {"AllocationId": a.id, "PublicIp": a.public_ip} for a in page], {},
    (Selector("AllocationIds", lambda a: a.id, InvalidAllocationIDNotFound),), max_results=(1, 1000), tagged=False)
