"""Elastic IP addresses: AllocateAddress, DescribeAddresses, AssociateAddress, DisassociateAddress,
ReleaseAddress; and the public-address pool every public address comes from.

An Elastic IP (domain vpc; EC2-Classic is gone) is drawn from the configured public pool, which
it shares with the public addresses instances are given at launch: no address is ever both. While
it is associated with an instance (its primary interface's primary address), the instance's
`public_ip` is the Elastic IP: DescribeInstances, the metadata service's public-ipv4, and the
host's 1:1 NAT at the internet gateway all read that column, so they all follow the association.
An Elastic IP can also be on any other address of an interface (a secondary address, or an
interface at device index >= 1, attached or not): the address row alone says so (`instance_id`
unset), and the host maps it while the interface is attached to an instance (after its start,
after the attachment, after a restart's reconcile: map_interface_addresses; its port's unplug
drops it). As on AWS:
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
from dataclasses import dataclass

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


def interface_gone(session: Session, eni_id: str) -> None:
    """A deleted interface's Elastic IPs are disassociated (it was detached: nothing mapped)."""
    for addr in session.scalars(select(Address).where(Address.network_interface_id == eni_id,
                                                      Address.nat_gateway_id.is_(None))):
        _clear(addr)


def interface_elastic_ips(session: Session, eni_ids) -> dict[tuple[str, str], str]:
    """(interface id, private address) -> Elastic IP, for every Elastic IP on these interfaces'
    addresses (an instance's primary one included)."""
    ids = set(eni_ids)
    return {(e, priv): pub for e, priv, pub in session.execute(select(
        Address.network_interface_id, Address.private_ip, Address.public_ip).where(
        Address.network_interface_id.in_(ids), Address.nat_gateway_id.is_(None),
        Address.association_id.is_not(None)))} if ids else {}


def _interface_mappings(session: Session, instance_ids) -> list[tuple[str, str, str, str]]:
    """(vpc, public, private, public DNS name) of the Elastic IPs on the instances' interfaces'
    addresses other than their primary one (whose mapping follows the instance's public_ip)."""
    rows = session.execute(select(NetworkInterface.vpc_id, NetworkInterface.region, Address.public_ip,
                                  Address.private_ip).join(Address, Address.network_interface_id == NetworkInterface.id)
                           .where(NetworkInterface.instance_id.in_(set(instance_ids)),
                                  NetworkInterface.attachment_state.in_(("attaching", "attached")),
                                  Address.instance_id.is_(None), Address.nat_gateway_id.is_(None),
                                  Address.association_id.is_not(None))).all() if instance_ids else []
    named = vpcs.dns_named(session, {r[0] for r in rows})
    return [(vpc, pub, priv, public_dns_name(region, pub) if vpc in named else "")
            for vpc, region, pub, priv in rows]


def map_interface_addresses(host: Host, instance_ids) -> None:
    """Map the Elastic IPs on the instances' other addresses (their ports are plugged now:
    after a start, an interface's attachment, a restart's reconcile). Idempotent."""
    with host.Session() as session:
        mappings = _interface_mappings(session, instance_ids)
    for vpc_id, public_ip, private_ip, name in mappings:
        host.driver.map_address(vpc_id, public_ip, private_ip, name)


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

def _instances_of(session: Session, rows) -> dict[str, str]:
    """Address id -> the instance it is on: its own column for an instance's primary address,
    the interface's attachment for any other address (one query)."""
    out = {a.id: a.instance_id for a in rows if a.instance_id}
    enis = {a.network_interface_id for a in rows
            if a.association_id and not a.instance_id and not a.nat_gateway_id and a.network_interface_id}
    if enis:
        attached = dict(session.execute(select(NetworkInterface.id, NetworkInterface.instance_id).where(
            NetworkInterface.id.in_(enis), NetworkInterface.instance_id.is_not(None))).all())
        out.update({a.id: attached[a.network_interface_id] for a in rows
                    if a.id not in out and a.network_interface_id in attached and not a.nat_gateway_id})
    return out


def _out(a: Address, tags: dict | None, instance_id: str | None) -> dict:
    out = {"AllocationId": a.id, "PublicIp": a.public_ip, "Domain": "vpc", "PublicIpv4Pool": "amazon",
           "NetworkBorderGroup": a.region, "Tags": tag_list(tags or {})}
    if a.association_id:
        out.update({"AssociationId": a.association_id, "NetworkInterfaceId": a.network_interface_id,
                    "NetworkInterfaceOwnerId": a.account_id, "PrivateIpAddress": a.private_ip})
        if instance_id:
            out["InstanceId"] = instance_id
    return out


def _render(ctx: Context, page, tags) -> list[dict]:
    on = _instances_of(ctx.session, page)
    return [_out(a, tags[a.id], on.get(a.id)) for a in page]


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

ADDRESSES = Resource("Addresses", _render, ADDRESS_FILTERS,
                     (Selector("PublicIps", lambda a: a.public_ip, InvalidAddressNotFound),
                      Selector("AllocationIds", lambda a: a.id, InvalidAllocationIDNotFound)),
                     max_results=None)


@action("DescribeAddresses")
def describe_addresses(ctx: Context, p: dict) -> dict:
    rows = ctx.session.scalars(select(Address).where(Address.account_id == ctx.account_id,
                                                     Address.region == ctx.region).order_by(Address.id)).all()
    on = _instances_of(ctx.session, rows)
    return describe(ctx, ADDRESSES, p, rows, filters={"instance-id": lambda a: on.get(a.id)})


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

@dataclass
class _Target:
    """Where AssociateAddress puts the address: an interface's private address. `primary`: the
    instance whose primary address that is (its public_ip follows), else None; `attached`: the
    instance the interface is attached to, if any."""
    eni: NetworkInterface | None
    private_ip: str
    primary: Instance | None
    attached: Instance | None


def _target(ctx: Context, p: dict) -> _Target:
    """The address an AssociateAddress names: by InstanceId (its primary interface) or by
    NetworkInterfaceId, and PrivateIpAddress (default: the interface's primary address)."""
    if p.get("InstanceId") and p.get("NetworkInterfaceId"):
        raise InvalidParameterCombination("You may specify an instance id or a network interface id, but not both")
    q = select(Instance).where(Instance.account_id == ctx.account_id, Instance.region == ctx.region)
    if p.get("InstanceId"):
        inst = ctx.session.scalars(q.where(Instance.id == p["InstanceId"]).with_for_update()).first()
        if inst is None or inst.state == "terminated":
            raise InvalidInstanceIDNotFound(p["InstanceId"])
        eni = ctx.session.get(NetworkInterface, inst.network_interface_id, with_for_update=True)
    elif p.get("NetworkInterfaceId"):
        eni = ctx.session.scalars(select(NetworkInterface).where(
            NetworkInterface.id == p["NetworkInterfaceId"], NetworkInterface.account_id == ctx.account_id,
            NetworkInterface.region == ctx.region).with_for_update()).first()
        if eni is None:
            raise InvalidNetworkInterfaceIDNotFound(p["NetworkInterfaceId"])
        inst = ctx.session.scalars(q.where(Instance.id == eni.instance_id).with_for_update()).first() \
            if eni.instance_id else None
    else:
        raise MissingParameter.worded("Either instance ID or network interface ID must be specified")
    if inst is not None and inst.state in ("pending", "shutting-down"):
        raise InvalidInstanceID.in_state(inst.id, inst.state)
    eni_id = eni.id if eni is not None else inst.network_interface_id
    held = [eni.private_ip, *(eni.secondary_ips or [])] if eni is not None else [inst.private_ip]
    wanted = p.get("PrivateIpAddress") or held[0]
    if wanted not in held:
        raise InvalidParameterValue(f"The specified private IP address {wanted} is not assigned to the network "
                                    f"interface {eni_id}")
    primary = inst if inst is not None and eni_id == inst.network_interface_id and wanted == inst.private_ip \
        else None
    return _Target(eni, wanted, primary, inst)


def _lose(ctx: Context, addr: Address) -> None:
    """Take an Elastic IP off its instance or interface (the address stays allocated): the host
    unmaps it, and a running instance in a subnet that assigns public addresses gets a new one
    (as on AWS)."""
    if addr.instance_id is None and addr.network_interface_id and not addr.nat_gateway_id:
        _lose_from_interface(ctx, addr)
        return
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


def _lose_from_interface(ctx: Context, addr: Address) -> None:
    """An Elastic IP on an address other than an instance's primary one: unmapped if its
    interface is attached (its port is plugged)."""
    eni = ctx.session.get(NetworkInterface, addr.network_interface_id)
    public_ip, private_ip = addr.public_ip, addr.private_ip
    _clear(addr)
    if eni is not None and eni.instance_id:
        ctx.host_task("address.unmap", eni.instance_id, eni.availability_zone, vpc_id=eni.vpc_id,
                      public_ip=public_ip, private_ip=private_ip)


def address_unassigned(ctx: Context, eni: NetworkInterface, private_ips) -> None:
    """UnassignPrivateIpAddresses: an Elastic IP on an address taken away is disassociated."""
    for addr in ctx.session.scalars(select(Address).where(
            Address.network_interface_id == eni.id, Address.private_ip.in_(list(private_ips)),
            Address.instance_id.is_(None), Address.nat_gateway_id.is_(None)).with_for_update()):
        _lose_from_interface(ctx, addr)


def _map(ctx: Context, inst: Instance) -> None:
    ctx.host_task("address.map", inst.id, inst.availability_zone, vpc_id=inst.vpc_id,
                  public_ip=inst.public_ip, private_ip=inst.private_ip)


@action("AssociateAddress")
def associate_address(ctx: Context, p: dict) -> dict:
    addr = get_address(ctx, p.get("AllocationId"), p.get("PublicIp"))
    t = _target(ctx, p)
    if addr.nat_gateway_id:
        raise ResourceAlreadyAssociated(f"resource {addr.id} is already associated with associate-id "
                                        f"{addr.association_id}")
    if addr.association_id and (addr.network_interface_id, addr.private_ip) == (
            t.eni.id if t.eni is not None else None, t.private_ip):
        return {"AssociationId": addr.association_id}  # already there: nothing changes
    if addr.association_id and not p.get("AllowReassociation"):
        raise ResourceAlreadyAssociated(f"resource {addr.id} is already associated with associate-id "
                                        f"{addr.association_id}")
    if addr.association_id:
        _lose(ctx, addr)
    if t.primary is None:
        return _associate_with_interface(ctx, addr, t)
    inst = t.primary
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


def _associate_with_interface(ctx: Context, addr: Address, t: _Target) -> dict:
    """Onto an address other than an instance's primary one: the one it held goes; mapped now
    if the interface's instance runs (its port is plugged; else its next start maps it)."""
    for previous in ctx.session.scalars(select(Address).where(
            Address.network_interface_id == t.eni.id, Address.private_ip == t.private_ip,
            Address.id != addr.id).with_for_update()):
        _lose(ctx, previous)  # an address holds one Elastic IP
    addr.association_id = new_id("eipassoc")
    addr.instance_id, addr.network_interface_id, addr.private_ip = None, t.eni.id, t.private_ip
    ctx.session.flush()
    if t.attached is not None and t.attached.state == "running":
        ctx.host_task("address.map", t.attached.id, t.attached.availability_zone, vpc_id=t.eni.vpc_id,
                      public_ip=addr.public_ip, private_ip=t.private_ip)
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
        current = inst is not None and inst.state == "running" and (
            (inst.public_ip, inst.private_ip) == (public_ip, private_ip)
            or any(m[1:3] == (public_ip, private_ip) for m in _interface_mappings(session, [instance_id])))
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
