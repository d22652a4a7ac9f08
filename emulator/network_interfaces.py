"""Elastic network interfaces (eni-): every instance's primary interface (device index 0, made at
launch, deleted with the instance unless its DeleteOnTermination was turned off) and the
interfaces made by CreateNetworkInterface, attached at device index >= 1 as hot-plugged NICs,
detached, deleted. When an instance is terminated, its interfaces with DeleteOnTermination go and
the others become available.

The primary interface's MAC, address and groups are also columns of its instance's row (what the
instance describe, the metadata service and DNS read); `set_groups` changes both at once. Its
host port is the instance's (named after the instance id: primaries were plugged so before ENIs
had rows); an interface at index >= 1 has its own port, named after its eni- id (`port_id`).

Attach and detach are host tasks: attaching -> attached when the NIC is in the guest (and in
its definition: a stopped instance has it at its next start); detaching -> the row's attachment
is cleared once the guest let go. Secondary addresses are admitted by the port's anti-spoofing
and by the security groups; DHCP gives only the primary address, as on AWS. SourceDestCheck off
lets the port send from any address (a NAT instance's forwarding); changes to an attached
interface's addresses or check reach its port by an `eni.port` host task.
"""
from __future__ import annotations

import functools
import ipaddress
import secrets
from dataclasses import dataclass, field

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from hypervisor import InterfaceSpec

from . import addresses, firewall, routing, security_groups, vpcs
from .catalogue import INSTANCE_TYPES
from .dns import private_dns_name, public_dns_name
from .errors import (AttachmentLimitExceeded, IncorrectInstanceState, InvalidAttachmentIDNotFound, InvalidInstanceID,
                     InvalidInstanceIDNotFound, InvalidIPAddressInUse, InvalidNetworkInterfaceAttachmentIdMalformed,
                     InvalidNetworkInterfaceIdMalformed, InvalidNetworkInterfaceIDNotFound,
                     InvalidNetworkInterfaceInUse, InsufficientFreeAddressesInSubnet,
                     InvalidParameterCombination, InvalidParameterValue,
                     MissingParameter, OperationNotPermitted, PrivateIpAddressLimitExceeded)
from .ids import new_id, well_formed
from .models import Address, Instance, NatGateway, NetworkInterface, Subnet, Tag, utcnow
from .query import Resource, Selector, describe
from .registry import Context, Host, action, host_action, host_action_failed
from .tags import set_tags, tag_list, tag_specifications

MAX_HOST_DEVICE_INDEX = 2  # the host's NIC slots (hypervisor/domainxml.py NIC_SLOTS)


def new_mac() -> str:
    # Locally administered, unicast: the first octet's low bits are 10.
    octets = [0x0A] + list(secrets.token_bytes(5))
    return ":".join(f"{o:02x}" for o in octets)


# ------------------------------------------------------------------------------- addresses

def used_addresses(session: Session, subnet_id: str) -> set[str]:
    """Every private address taken in a subnet: instances' and interfaces' (secondary ones too)
    and NAT gateways' (which have no interface row here)."""
    used = set(session.scalars(select(Instance.private_ip).where(
        Instance.subnet_id == subnet_id, Instance.private_ip.is_not(None))))
    used |= set(session.scalars(select(NatGateway.private_ip).where(
        NatGateway.subnet_id == subnet_id, NatGateway.state != "deleted", NatGateway.private_ip.is_not(None))))
    for ip, secondary in session.execute(select(NetworkInterface.private_ip, NetworkInterface.secondary_ips).where(
            NetworkInterface.subnet_id == subnet_id)):
        used.add(ip)
        used.update(secondary or [])
    return used


def _check_address(subnet: Subnet, wanted: str, used: set[str]) -> str:
    net = ipaddress.ip_network(subnet.cidr_block)
    try:
        addr = ipaddress.ip_address(wanted)
    except ValueError:
        raise InvalidParameterValue(f"Invalid value '{wanted}' for PrivateIpAddress") from None
    if addr not in net or not int(net.network_address) + 4 <= int(addr) <= int(net.broadcast_address) - 1:
        raise InvalidParameterValue(f"Address {wanted} does not fall within the subnet's address range")
    if wanted in used:
        raise InvalidIPAddressInUse(wanted)
    return wanted


def allocate_private_ips(ctx: Context, subnet: Subnet, count: int, wanted: str | None = None,
                         taken: set[str] = frozenset()) -> list[str]:
    """`wanted` (checked: in the subnet's range, AWS's five reserved addresses excluded, free) or
    up to `count` free addresses, lowest first. `taken`: addresses this request holds already."""
    used = used_addresses(ctx.session, subnet.id) | set(taken)
    if wanted:
        return [_check_address(subnet, wanted, used)]
    net = ipaddress.ip_network(subnet.cidr_block)
    first, last = int(net.network_address) + 4, int(net.broadcast_address) - 1  # AWS reserves 5
    out = []
    n = first
    while n <= last and len(out) < count:
        ip = str(ipaddress.IPv4Address(n))
        if ip not in used:
            out.append(ip)
        n += 1
    return out


@dataclass
class WantedAddresses:
    """An interface's addresses as a request gives them (CreateNetworkInterface, each entry of
    RunInstances' NetworkInterfaces): its primary (None: the lowest free), listed secondaries,
    or a count of secondaries."""
    primary: str | None
    secondary: list[str]
    count: int

    @classmethod
    def of(cls, p: dict) -> WantedAddresses:
        listed = p.get("PrivateIpAddresses") or []
        if any(not a.get("PrivateIpAddress") for a in listed):
            raise MissingParameter("PrivateIpAddresses.PrivateIpAddress")
        primary = p.get("PrivateIpAddress")
        primaries = [a["PrivateIpAddress"] for a in listed if a.get("Primary")]
        if len(primaries) > 1 or (primary and primaries and primaries[0] != primary):
            raise InvalidParameterValue("Multiple primary addresses are not supported")
        secondary = [a["PrivateIpAddress"] for a in listed if not a.get("Primary")]
        count = p.get("SecondaryPrivateIpAddressCount")
        if count is not None and secondary:
            raise InvalidParameterCombination("The parameters SecondaryPrivateIpAddressCount and PrivateIpAddresses "
                                              "cannot be specified together")
        if count is not None and count < 1:
            raise InvalidParameterValue.value(count, "SecondaryPrivateIpAddressCount", "Must be at least 1.")
        return cls(primary or (primaries[0] if primaries else None), secondary, count or 0)

    @property
    def specific(self) -> bool:
        """Names addresses, so it can be given for one instance only."""
        return bool(self.primary or self.secondary)

    def check_limit(self, instance_type: str | None) -> None:
        limit = _ips_per_interface(instance_type)
        if instance_type and 1 + len(self.secondary) + self.count > limit:
            raise PrivateIpAddressLimitExceeded(instance_type, limit)

    def secondaries(self, ctx: Context, subnet: Subnet, taken: set[str]) -> list[str]:
        """The secondary addresses, allocated (`taken`: this request's addresses already)."""
        got: list[str] = []
        for ip in self.secondary:
            got += allocate_private_ips(ctx, subnet, 1, ip, taken=taken | set(got))
        if self.count:
            got += allocate_private_ips(ctx, subnet, self.count, taken=taken | set(got))
        if len(got) < len(self.secondary) + self.count:
            raise InsufficientFreeAddressesInSubnet(subnet.id, len(self.secondary) + self.count)
        return got


# ------------------------------------------------------------------------ for the instances

def create_primary(ctx: Context, row: Instance, secondary_ips: list[str] = (), delete_on_termination: bool = True,
                   description: str = "") -> NetworkInterface:
    """The primary interface of a new instance (its row's id, MAC, address and groups)."""
    eni = NetworkInterface(
        id=row.network_interface_id, account_id=row.account_id, region=row.region, vpc_id=row.vpc_id,
        subnet_id=row.subnet_id, availability_zone=row.availability_zone, mac_address=row.mac_address,
        private_ip=row.private_ip, secondary_ips=list(secondary_ips), security_group_ids=list(row.security_group_ids),
        status="in-use", instance_id=row.id, device_index=0, attachment_id=_attachment_id(row.network_interface_id),
        attachment_state="attached", attach_time=row.launch_time, delete_on_termination=delete_on_termination,
        description=description)
    ctx.session.add(eni)
    return eni


def primary_of(nics: list[dict]) -> dict:
    """RunInstances' NetworkInterfaces entry at device index 0 (each entry has its own index; a
    lone entry without one is the primary)."""
    indexes = [n.get("DeviceIndex", 0 if len(nics) == 1 else None) for n in nics]
    if None in indexes:
        raise InvalidParameterValue("Each network interface requires a device index.")
    if len(set(indexes)) != len(indexes):
        raise InvalidParameterValue("Each network interface requires a unique device index.")
    if 0 not in indexes:
        raise InvalidParameterValue("When specifying network interfaces, you must include a device at index 0.")
    return nics[indexes.index(0)]


def _free(eni: NetworkInterface) -> NetworkInterface:
    if eni.instance_id is not None:
        raise InvalidNetworkInterfaceInUse.attaching(eni.id)
    return eni


def _check_device_index(index: int) -> None:
    if index > MAX_HOST_DEVICE_INDEX:
        raise InvalidParameterValue(f"Device index {index} is not supported by this emulator's host "
                                    f"(1..{MAX_HOST_DEVICE_INDEX}; 0 is the primary interface's)")


def _check_limit(instance_type: str, count: int) -> None:
    limit = INSTANCE_TYPES.get(instance_type, {}).get("NetworkInfo", {}).get("MaximumNetworkInterfaces", 2)
    if count > limit:
        raise AttachmentLimitExceeded.worded(f"Interface count {count} exceeds the limit for {instance_type}")


@dataclass
class LaunchInterfaces:
    """RunInstances' NetworkInterfaces, checked before anything is made: `primary`, an existing
    interface given at index 0 (None: a new one per instance); `extra`, the entries at index >= 1,
    each with its existing interface ('eni', locked) or its subnet (a new interface per instance)."""
    primary: NetworkInterface | None
    primary_delete: bool
    extra: list[dict]
    primary_entry: dict = field(default_factory=dict)  # index 0's entry (for a new primary)
    # a new primary's addresses, parsed (none asked for when no entry was given)
    primary_wanted: WantedAddresses = field(default_factory=lambda: WantedAddresses(None, [], 0))
    reserved: set[str] = field(default_factory=set)  # the launch's addresses, not yet rows

    @classmethod
    def plan(cls, ctx: Context, nics: list[dict] | None, subnet: Subnet, instance_type: str,
             max_count: int) -> LaunchInterfaces:
        nics = nics or []
        if not nics:
            return cls(None, True, [])
        first = primary_of(nics)
        primary = _free(get_interface(ctx, first["NetworkInterfaceId"], lock=True)) \
            if first.get("NetworkInterfaceId") else None
        primary_wanted = _wanted(first, instance_type, max_count) if primary is None else WantedAddresses(None, [], 0)
        extra = []
        for n in sorted((n for n in nics if n is not first), key=lambda n: n["DeviceIndex"]):
            _check_device_index(n["DeviceIndex"])
            if n.get("NetworkInterfaceId"):
                eni = _free(get_interface(ctx, n["NetworkInterfaceId"], lock=True))
                where = (eni.availability_zone, eni.vpc_id)
            else:
                if not n.get("SubnetId"):
                    raise MissingParameter("SubnetId")
                eni, s = None, vpcs.get_subnet(ctx, n["SubnetId"])
                where = (s.availability_zone, s.vpc_id)
                n = {**n, "wanted": _wanted(n, instance_type, max_count)}
            if where != (subnet.availability_zone, subnet.vpc_id):
                raise InvalidParameterValue(f"The network interface at device index {n['DeviceIndex']} is not in "
                                            f"the availability zone and VPC of the one at device index 0")
            extra.append({**n, "eni": eni})
        if max_count > 1 and (primary or any(e["eni"] for e in extra)):
            raise InvalidParameterCombination("A network interface ID can be given for a single instance only "
                                              "(MaxCount 1)")
        _check_limit(instance_type, 1 + len(extra))
        return cls(primary, bool(first.get("DeleteOnTermination", primary is None)), extra, first, primary_wanted)

    def attach(self, ctx: Context, row: Instance) -> list[str]:
        """The new instance's interfaces: its primary (made, or the existing one attached) and
        the others, attached (its first start plugs them). Returns the ids of those made."""
        made = []
        if self.primary is None:
            subnet = vpcs.get_subnet(ctx, row.subnet_id)
            ips = self.primary_wanted.secondaries(ctx, subnet, self.reserved)
            self.reserved |= set(ips)
            made.append(create_primary(ctx, row, ips, self.primary_delete,
                                       self.primary_entry.get("Description") or "").id)
        else:
            _attach(self.primary, row, 0, self.primary_delete, new_id("eni-attach"))
        for n in self.extra:
            eni = n["eni"]
            if eni is None:
                s = vpcs.get_subnet(ctx, n["SubnetId"])
                groups = security_groups.resolve_groups(ctx, s.vpc_id, n.get("Groups"), None, subnet_id=s.id)
                wanted = n["wanted"]
                ips = allocate_private_ips(ctx, s, 1, wanted.primary, taken=self.reserved)
                if not ips:
                    raise InsufficientFreeAddressesInSubnet(s.id, 1)
                ips += wanted.secondaries(ctx, s, self.reserved | set(ips))
                self.reserved |= set(ips)
                eni = NetworkInterface(
                    id=new_id("eni"), account_id=ctx.account_id, region=ctx.region, vpc_id=s.vpc_id, subnet_id=s.id,
                    availability_zone=s.availability_zone, mac_address=new_mac(), private_ip=ips[0],
                    secondary_ips=ips[1:], security_group_ids=[g.id for g in groups],
                    description=n.get("Description") or "")
                ctx.session.add(eni)
                made.append(eni.id)
            _attach(eni, row, n["DeviceIndex"], bool(n.get("DeleteOnTermination", n["eni"] is None)),
                    new_id("eni-attach"))
            ctx.session.flush()  # the next instance's addresses see this one's
        return made


def _wanted(entry: dict, instance_type: str, max_count: int) -> WantedAddresses:
    """A new interface's addresses, checked before anything is made."""
    wanted = WantedAddresses.of(entry)
    if wanted.specific and max_count > 1:
        raise InvalidParameterCombination("Private IP addresses can be given for a single instance only "
                                          "(MaxCount 1)")
    if len(entry.get("Description") or "") > 255:
        raise InvalidParameterValue.too_long("Description")
    wanted.check_limit(instance_type)
    return wanted


def _attach(eni: NetworkInterface, row: Instance, index: int, delete_on_termination: bool,
            attachment_id: str) -> None:
    eni.instance_id, eni.device_index, eni.attachment_id = row.id, index, attachment_id
    eni.attachment_state, eni.attach_time, eni.status = "attached", row.launch_time, "in-use"
    eni.delete_on_termination = delete_on_termination


def _attachment_id(eni_id: str) -> str:
    """A primary interface's attachment id: from its eni- id (as it was shown before ENIs had rows)."""
    return "eni-attach-" + eni_id[4:]


def set_groups(session: Session, row: Instance, group_ids: list[str], *, by_instance: bool = False) -> None:
    """An instance's groups are its primary interface's (ModifyInstanceAttribute groupSet, which
    AWS refuses for an instance with several interfaces: `by_instance`)."""
    if by_instance and len(of_instance(session, row.id)) > 1:
        raise InvalidInstanceID.several_interfaces(row.id)
    row.security_group_ids = list(group_ids)
    eni = session.get(NetworkInterface, row.network_interface_id)
    if eni is not None:
        eni.security_group_ids = list(group_ids)


def set_source_dest_check(ctx: Context, row: Instance, value: bool) -> None:
    """ModifyInstanceAttribute sourceDestCheck: its primary interface's."""
    eni = ctx.session.get(NetworkInterface, row.network_interface_id)
    if eni is not None and eni.source_dest_check != value:
        eni.source_dest_check = value
        _port_changed(ctx, eni)


def of_instance(session: Session, instance_id: str) -> list[NetworkInterface]:
    return list(session.scalars(select(NetworkInterface).where(NetworkInterface.instance_id == instance_id)
                                .order_by(NetworkInterface.device_index)))


def host_interfaces(session: Session, row: Instance) -> dict:
    """For the instance's InstanceSpec: its primary interface's secondary addresses and
    source/destination check, and its other attached interfaces (not those being detached)."""
    out: dict = {"secondary_ips": (), "source_dest_check": True, "interfaces": []}
    for eni in of_instance(session, row.id):
        if eni.device_index == 0:
            out.update(secondary_ips=tuple(eni.secondary_ips or ()), source_dest_check=eni.source_dest_check)
        elif eni.attachment_state != "detaching":
            out["interfaces"].append(_nic(eni))
    return out


def _nic(eni: NetworkInterface) -> InterfaceSpec:
    return InterfaceSpec(port_id=eni.id, device_index=eni.device_index, vpc_id=eni.vpc_id, subnet_id=eni.subnet_id,
                         mac=eni.mac_address, ip=eni.private_ip, secondary_ips=tuple(eni.secondary_ips or ()),
                         hostname=private_dns_name(eni.region, eni.private_ip),
                         source_dest_check=eni.source_dest_check)


def released(session: Session, instance_id: str) -> None:
    """The instance is terminated (the host has unplugged all its ports): its interfaces with
    DeleteOnTermination go, the others are detached (available)."""
    for eni in of_instance(session, instance_id):
        if eni.delete_on_termination:
            session.execute(delete(Tag).where(Tag.resource_id == eni.id))
            addresses.interface_gone(session, eni.id)
            session.delete(eni)
        else:
            _detached(eni)


def _detached(eni: NetworkInterface) -> None:
    eni.instance_id = eni.device_index = eni.attachment_id = eni.attachment_state = eni.attach_time = None
    eni.delete_on_termination = False
    eni.status = "available"


def in_use_by(ctx: Context, *, subnet_id: str | None = None, group_id: str | None = None) -> bool:
    """Whether an interface is in the subnet, or has the group (DeleteSubnet / DeleteSecurityGroup)."""
    q = select(NetworkInterface.security_group_ids).where(NetworkInterface.account_id == ctx.account_id,
                                                          NetworkInterface.region == ctx.region)
    if subnet_id:
        q = q.where(NetworkInterface.subnet_id == subnet_id)
    return any(group_id is None or group_id in (ids or []) for ids in ctx.session.scalars(q))


# -------------------------------------------------------------------------------- describe

@dataclass
class _Eni:
    """An interface as the describe pipeline sees it, with what its rendering needs."""
    id: str
    row: NetworkInterface
    groups: dict[str, str]      # id -> name, for every group of the listed interfaces
    publics: dict[str, str]     # private address -> its public IP (its instance's, or an Elastic IP)
    named: bool = False         # its VPC gives public DNS names (vpcs.gives_dns_names)
    elastic: frozenset = frozenset()  # those public IPs that are the account's Elastic IPs

    @property
    def public_ip(self) -> str | None:
        """Its primary address's public IP."""
        return self.publics.get(self.row.private_ip)


def _ip_owner(e: _Eni, public_ip: str | None = None) -> str:
    """Who owns a public address: the account for an Elastic IP, Amazon for its own pool's."""
    return e.row.account_id if (public_ip or e.public_ip) in e.elastic else "amazon"


def _association(e: _Eni, private_ip: str | None = None) -> dict | None:
    public_ip = e.publics.get(private_ip or e.row.private_ip)
    if not public_ip:
        return None
    return {"IpOwnerId": _ip_owner(e, public_ip), "PublicIp": public_ip,
            "PublicDnsName": public_dns_name(e.row.region, public_ip) if e.named else ""}


def _attachment(r: NetworkInterface) -> dict | None:
    if r.instance_id is None:
        return None
    return {"AttachmentId": r.attachment_id, "DeviceIndex": r.device_index, "NetworkCardIndex": 0,
            "InstanceId": r.instance_id, "InstanceOwnerId": r.account_id, "Status": r.attachment_state,
            "AttachTime": r.attach_time, "DeleteOnTermination": r.delete_on_termination}


def render(e: _Eni, tags: dict | None = None) -> dict:
    """An interface as DescribeNetworkInterfaces shows it (DescribeInstances shows the same
    without tags, owner and zone: the model ignores what its shape lacks)."""
    r = e.row
    dns = private_dns_name(r.region, r.private_ip)
    association = _association(e)
    out = {
        "NetworkInterfaceId": r.id, "SubnetId": r.subnet_id, "VpcId": r.vpc_id,
        "AvailabilityZone": r.availability_zone, "Description": r.description, "OwnerId": r.account_id,
        "RequesterManaged": False, "Status": r.status, "MacAddress": r.mac_address,
        "InterfaceType": r.interface_type, "PrivateIpAddress": r.private_ip, "PrivateDnsName": dns,
        "SourceDestCheck": r.source_dest_check,
        "Groups": [{"GroupId": g, "GroupName": e.groups.get(g, "")} for g in r.security_group_ids],
        "Attachment": _attachment(r), "Association": association,
        "Ipv6Addresses": [], "Ipv4Prefixes": [], "Ipv6Prefixes": [],
        "PrivateIpAddresses": [{"PrivateIpAddress": r.private_ip, "PrivateDnsName": dns, "Primary": True,
                                "Association": association}]
        + [{"PrivateIpAddress": ip, "PrivateDnsName": private_dns_name(r.region, ip), "Primary": False,
            "Association": _association(e, ip)} for ip in r.secondary_ips or []],
    }
    if tags is not None:
        out["TagSet"] = tag_list(tags)
    return out


def _public(e: _Eni) -> list:
    return [e.public_ip] if e.public_ip else []


def _all_public(e: _Eni) -> list:
    return list(e.publics.values())


def _attached(getter):
    return lambda e: getter(e.row) if e.row.instance_id else None


ENI_FILTERS = {
    "network-interface-id": lambda e: e.id,
    "addresses.private-ip-address": lambda e: [e.row.private_ip, *(e.row.secondary_ips or [])],
    "addresses.primary": lambda e: [True] + [False] * len(e.row.secondary_ips or []),
    "addresses.association.public-ip": _all_public,
    "addresses.association.owner-id": lambda e: [_ip_owner(e, ip) for ip in e.publics.values()],
    "association.public-ip": _public,
    "association.ip-owner-id": lambda e: _ip_owner(e) if e.public_ip else None,
    "association.public-dns-name": lambda e: (public_dns_name(e.row.region, e.public_ip)
                                              if e.public_ip and e.named else None),
    "attachment.attachment-id": _attached(lambda r: r.attachment_id),
    "attachment.instance-id": _attached(lambda r: r.instance_id),
    "attachment.instance-owner-id": _attached(lambda r: r.account_id),
    "attachment.device-index": _attached(lambda r: r.device_index),
    "attachment.status": _attached(lambda r: r.attachment_state),
    "attachment.attach-time": _attached(lambda r: r.attach_time),
    "attachment.delete-on-termination": _attached(lambda r: r.delete_on_termination),
    "attachment.network-card-index": _attached(lambda r: 0),
    "availability-zone": lambda e: e.row.availability_zone,
    "description": lambda e: e.row.description,
    "group-id": lambda e: e.row.security_group_ids,
    "group-name": lambda e: [e.groups.get(g, "") for g in e.row.security_group_ids],
    "interface-type": lambda e: e.row.interface_type,
    "mac-address": lambda e: e.row.mac_address,
    "owner-id": lambda e: e.row.account_id,
    "private-ip-address": lambda e: [e.row.private_ip, *(e.row.secondary_ips or [])],
    "private-dns-name": lambda e: private_dns_name(e.row.region, e.row.private_ip),
    "requester-managed": lambda e: False,
    "source-dest-check": lambda e: e.row.source_dest_check,
    "status": lambda e: e.row.status,
    "subnet-id": lambda e: e.row.subnet_id,
    "vpc-id": lambda e: e.row.vpc_id,
}

INTERFACES = Resource("NetworkInterfaces", lambda ctx, page, tags: [render(e, tags[e.id]) for e in page],
                      ENI_FILTERS, (Selector("NetworkInterfaceIds", lambda e: e.id, InvalidNetworkInterfaceIDNotFound),),
                      ids_exclude_max_results=("NetworkInterfaceIds", "networkInterfaceIds"))


def _wrapped(ctx: Context, rows: list[NetworkInterface]) -> list[_Eni]:
    groups = security_groups.group_names(ctx, {g for r in rows for g in r.security_group_ids})
    primaries = [r.instance_id for r in rows if r.device_index == 0]
    public = dict(ctx.session.execute(select(Instance.id, Instance.public_ip).where(
        Instance.id.in_(primaries))).all()) if primaries else {}
    named = vpcs.dns_named(ctx.session, {r.vpc_id for r in rows})
    on_interfaces = addresses.interface_elastic_ips(ctx.session, {r.id for r in rows})
    ips = {ip for ip in public.values() if ip}
    elastic = frozenset(ctx.session.scalars(select(Address.public_ip).where(Address.public_ip.in_(ips)))
                        if ips else ()) | frozenset(on_interfaces.values())
    out = []
    for r in rows:
        publics = {priv: pub for (eni_id, priv), pub in on_interfaces.items() if eni_id == r.id}
        if r.device_index == 0 and public.get(r.instance_id):  # the instance's own column decides
            publics[r.private_ip] = public[r.instance_id]
        out.append(_Eni(r.id, r, groups, publics, r.vpc_id in named, elastic))
    return out


def for_instances(ctx: Context, instance_ids: list[str]) -> dict[str, list[dict]]:
    """instance id -> its interfaces as DescribeInstances lists them, by device index."""
    rows = list(ctx.session.scalars(select(NetworkInterface).where(
        NetworkInterface.instance_id.in_(instance_ids)).order_by(NetworkInterface.device_index))) \
        if instance_ids else []
    out: dict[str, list[dict]] = {}
    for e in _wrapped(ctx, rows):
        out.setdefault(e.row.instance_id, []).append(render(e))
    return out


def instance_filters(ctx: Context, rows: list) -> dict:
    """DescribeInstances' network-interface.* filters: they match any of an instance's interfaces,
    read in one query the first time one of them is used (not one query per instance)."""
    @functools.cache
    def by_instance() -> dict[str, list[NetworkInterface]]:
        out: dict[str, list[NetworkInterface]] = {}
        ids = [r.id for r in rows if r.state != "terminated"]
        for eni in ctx.session.scalars(select(NetworkInterface).where(NetworkInterface.instance_id.in_(ids))
                                       .order_by(NetworkInterface.device_index)) if ids else ():
            out.setdefault(eni.instance_id, []).append(eni)
        return out

    def each(getter):
        return lambda r: [v for e in by_instance().get(r.id, []) for v in getter(e)]
    return {
        "network-interface.network-interface-id": each(lambda e: [e.id]),
        "network-interface.mac-address": each(lambda e: [e.mac_address]),
        "network-interface.addresses.private-ip-address": each(lambda e: [e.private_ip, *(e.secondary_ips or [])]),
        "network-interface.private-ip-address": each(lambda e: [e.private_ip]),
        "network-interface.subnet-id": each(lambda e: [e.subnet_id]),
        "network-interface.vpc-id": each(lambda e: [e.vpc_id]),
        "network-interface.description": each(lambda e: [e.description]),
        "network-interface.group-id": each(lambda e: e.security_group_ids),
        "network-interface.status": each(lambda e: [e.status]),
        "network-interface.source-dest-check": each(lambda e: [e.source_dest_check]),
        "network-interface.attachment.attachment-id": each(lambda e: [e.attachment_id]),
        "network-interface.attachment.device-index": each(lambda e: [e.device_index]),
        "network-interface.attachment.status": each(lambda e: [e.attachment_state]),
        "network-interface.attachment.delete-on-termination": each(lambda e: [e.delete_on_termination]),
    }


@action("DescribeNetworkInterfaces")
def describe_network_interfaces(ctx: Context, p: dict) -> dict:
    rows = ctx.session.scalars(select(NetworkInterface).where(
        NetworkInterface.account_id == ctx.account_id, NetworkInterface.region == ctx.region)
        .order_by(NetworkInterface.id)).all()
    return describe(ctx, INTERFACES, p, _wrapped(ctx, list(rows)))


# ----------------------------------------------------------------------------------- lookup

def get_interface(ctx: Context, eni_id: str | None, lock: bool = False) -> NetworkInterface:
    if not eni_id:
        raise MissingParameter("NetworkInterfaceId")
    if not well_formed(eni_id, "eni"):
        raise InvalidNetworkInterfaceIdMalformed(eni_id)
    eni = ctx.session.get(NetworkInterface, eni_id, with_for_update=lock)
    if eni is None or eni.account_id != ctx.account_id or eni.region != ctx.region:
        raise InvalidNetworkInterfaceIDNotFound(eni_id)
    return eni


def _by_attachment(ctx: Context, attachment_id: str | None) -> NetworkInterface:
    if not attachment_id:
        raise MissingParameter("AttachmentId")
    if not well_formed(attachment_id, "eni-attach"):
        raise InvalidNetworkInterfaceAttachmentIdMalformed(attachment_id)
    eni = ctx.session.scalars(select(NetworkInterface).where(
        NetworkInterface.attachment_id == attachment_id, NetworkInterface.account_id == ctx.account_id,
        NetworkInterface.region == ctx.region).with_for_update()).first()
    if eni is None:
        raise InvalidAttachmentIDNotFound(attachment_id)
    return eni


def _instance(ctx: Context, instance_id: str | None) -> Instance:
    from .instances import get_instance  # instances imports this module
    if not instance_id:
        raise MissingParameter("InstanceId")
    row = get_instance(ctx, instance_id)
    if row.state == "terminated":
        raise InvalidInstanceIDNotFound(instance_id)
    return row


def _ips_per_interface(instance_type: str | None) -> int:
    info = INSTANCE_TYPES.get(instance_type or "", {}).get("NetworkInfo", {})
    return int(info.get("Ipv4AddressesPerInterface") or 50)


# ------------------------------------------------------------------------------- lifecycle

@action("CreateNetworkInterface")
def create_network_interface(ctx: Context, p: dict) -> dict:
    subnet = vpcs.get_subnet(ctx, p.get("SubnetId"))
    vpcs.lock_vpc(ctx, subnet.vpc_id)  # against a DeleteSubnet (and another create) at the same time
    groups = security_groups.resolve_groups(ctx, subnet.vpc_id, p.get("Groups"), None, subnet_id=subnet.id)
    tags = tag_specifications(p.get("TagSpecifications"), "network-interface")
    description = p.get("Description") or ""
    if len(description) > 255:
        raise InvalidParameterValue.too_long("Description")
    wanted = WantedAddresses.of(p)
    got = allocate_private_ips(ctx, subnet, 1, wanted.primary)
    if not got:
        raise InsufficientFreeAddressesInSubnet(subnet.id, 1 + len(wanted.secondary) + wanted.count)
    got += wanted.secondaries(ctx, subnet, set(got))
    eni = NetworkInterface(
        id=new_id("eni"), account_id=ctx.account_id, region=ctx.region, vpc_id=subnet.vpc_id, subnet_id=subnet.id,
        availability_zone=subnet.availability_zone, mac_address=new_mac(), private_ip=got[0],
        secondary_ips=got[1:], security_group_ids=[g.id for g in groups], description=description,
        status="available", delete_on_termination=False)
    ctx.session.add(eni)
    ctx.session.flush()
    if tags:
        set_tags(ctx, eni.id, tags)
    return {"NetworkInterface": render(_wrapped(ctx, [eni])[0], {t["Key"]: t["Value"] for t in tags}),
            "ClientToken": p.get("ClientToken")}


@action("DeleteNetworkInterface")
def delete_network_interface(ctx: Context, p: dict) -> None:
    eni = get_interface(ctx, p.get("NetworkInterfaceId"), lock=True)
    if eni.instance_id is not None:
        raise InvalidNetworkInterfaceInUse.deleting(eni.id)
    ctx.session.execute(delete(Tag).where(Tag.resource_id == eni.id, Tag.account_id == ctx.account_id))
    addresses.interface_gone(ctx.session, eni.id)
    ctx.session.delete(eni)
    firewall.changed(ctx, eni.vpc_id)


@action("AttachNetworkInterface")
def attach_network_interface(ctx: Context, p: dict) -> dict:
    eni = get_interface(ctx, p.get("NetworkInterfaceId"), lock=True)
    row = _instance(ctx, p.get("InstanceId"))
    index = p.get("DeviceIndex")
    if index is None:
        raise MissingParameter("DeviceIndex")
    if index < 0:
        raise InvalidParameterValue.value(index, "deviceIndex")
    if eni.instance_id is not None:
        raise InvalidNetworkInterfaceInUse.attaching(eni.id)
    if row.state not in ("running", "stopped"):
        raise IncorrectInstanceState(f"The instance '{row.id}' is not in a valid state for this operation.")
    if eni.availability_zone != row.availability_zone:
        raise InvalidParameterValue(f"Network interface {eni.id} and instance {row.id} are in different "
                                    "availability zones")
    if eni.vpc_id != row.vpc_id:
        raise InvalidParameterValue(f"Network interface {eni.id} and instance {row.id} are in different VPCs")
    attached = of_instance(ctx.session, row.id)
    if any(a.device_index == index for a in attached):
        raise InvalidParameterValue(f"Instance '{row.id}' already has an interface attached at device index "
                                    f"'{index}'.")
    _check_limit(row.instance_type, len(attached) + 1)
    _check_device_index(index)
    eni.instance_id, eni.device_index = row.id, index
    eni.attachment_id, eni.attachment_state = new_id("eni-attach"), "attaching"
    eni.attach_time, eni.delete_on_termination, eni.status = utcnow(), False, "in-use"
    firewall.changed(ctx, eni.vpc_id)  # before the attach: its port is plugged already filtered
    ctx.host_task("eni.attach", eni.id, row.availability_zone, instance_id=row.id)
    return {"AttachmentId": eni.attachment_id, "NetworkCardIndex": 0}


@action("DetachNetworkInterface")
def detach_network_interface(ctx: Context, p: dict) -> None:
    eni = _by_attachment(ctx, p.get("AttachmentId"))
    if eni.device_index == 0:
        raise OperationNotPermitted.worded("The network interface at device index 0 cannot be detached.")
    if eni.attachment_state == "detaching":
        return
    eni.attachment_state = "detaching"
    ctx.host_task("eni.detach", eni.id, eni.availability_zone, instance_id=eni.instance_id,
                  attachment_id=eni.attachment_id, force=bool(p.get("Force")))


# ------------------------------------------------------------------------------- attributes

_ATTRIBUTES = {"description", "groupSet", "sourceDestCheck", "attachment", "associatePublicIpAddress"}


@action("DescribeNetworkInterfaceAttribute")
def describe_network_interface_attribute(ctx: Context, p: dict) -> dict:
    eni = get_interface(ctx, p.get("NetworkInterfaceId"))
    attr = p.get("Attribute")
    if not attr:
        raise MissingParameter("Attribute")
    if attr not in _ATTRIBUTES:
        raise InvalidParameterValue.invalid(attr, "Attribute")
    out: dict = {"NetworkInterfaceId": eni.id}
    if attr == "description":
        out["Description"] = {"Value": eni.description}
    elif attr == "groupSet":
        names = security_groups.group_names(ctx, eni.security_group_ids)
        out["Groups"] = [{"GroupId": g, "GroupName": names.get(g, "")} for g in eni.security_group_ids]
    elif attr == "sourceDestCheck":
        out["SourceDestCheck"] = {"Value": eni.source_dest_check}
    elif attr == "attachment":
        out["Attachment"] = _attachment(eni)
    else:
        out["AssociatePublicIpAddress"] = False
    return out


@action("ModifyNetworkInterfaceAttribute")
def modify_network_interface_attribute(ctx: Context, p: dict) -> None:
    eni = get_interface(ctx, p.get("NetworkInterfaceId"), lock=True)
    given = [k for k in ("Description", "Groups", "SourceDestCheck", "Attachment") if p.get(k) is not None]
    if not given:
        raise MissingParameter.worded("Missing attribute for modification")
    if len(given) > 1:
        raise InvalidParameterCombination("Only one attribute can be modified at a time")
    if "Description" in given:
        value = (p["Description"] or {}).get("Value") or ""
        if len(value) > 255:
            raise InvalidParameterValue.too_long("Description")
        eni.description = value
    elif "Groups" in given:
        groups = security_groups.resolve_groups(ctx, eni.vpc_id, list(p["Groups"]), None)
        if eni.device_index == 0:
            set_groups(ctx.session, _instance(ctx, eni.instance_id), [g.id for g in groups])
        eni.security_group_ids = [g.id for g in groups]
        firewall.changed(ctx, eni.vpc_id)
    elif "SourceDestCheck" in given:
        eni.source_dest_check = bool((p["SourceDestCheck"] or {}).get("Value"))
        if eni.device_index == 0:  # the instance's attribute is its primary interface's
            row = _instance(ctx, eni.instance_id)
            row.attributes = {**(row.attributes or {}), "SourceDestCheck": eni.source_dest_check}
        _port_changed(ctx, eni)
    else:
        attachment = p["Attachment"] or {}
        if eni.instance_id is None or attachment.get("AttachmentId") != eni.attachment_id:
            raise InvalidAttachmentIDNotFound(attachment.get("AttachmentId") or "")
        if attachment.get("DeleteOnTermination") is not None:
            eni.delete_on_termination = bool(attachment["DeleteOnTermination"])


# -------------------------------------------------------------------------------- addresses

@action("AssignPrivateIpAddresses")
def assign_private_ip_addresses(ctx: Context, p: dict) -> dict:
    eni = get_interface(ctx, p.get("NetworkInterfaceId"), lock=True)
    wanted, count = p.get("PrivateIpAddresses") or [], p.get("SecondaryPrivateIpAddressCount")
    if wanted and count is not None:
        raise InvalidParameterCombination("The parameters SecondaryPrivateIpAddressCount and PrivateIpAddresses "
                                          "cannot be specified together")
    if not wanted and not count:
        raise MissingParameter.worded("Either SecondaryPrivateIpAddressCount or PrivateIpAddresses must be set")
    subnet = vpcs.get_subnet(ctx, eni.subnet_id)
    instance_type = None
    if eni.instance_id:
        instance_type = ctx.session.get(Instance, eni.instance_id).instance_type
    limit = _ips_per_interface(instance_type)
    got: list[str] = []
    for ip in wanted:
        got += allocate_private_ips(ctx, subnet, 1, ip, taken=set(got))
    if count:
        got += allocate_private_ips(ctx, subnet, count, taken=set(got))
        if len(got) < count:
            raise InsufficientFreeAddressesInSubnet(subnet.id, count)
    if instance_type and 1 + len(eni.secondary_ips or []) + len(got) > limit:
        raise PrivateIpAddressLimitExceeded(instance_type, limit)
    eni.secondary_ips = [*(eni.secondary_ips or []), *got]
    _port_changed(ctx, eni)
    return {"NetworkInterfaceId": eni.id,
            "AssignedPrivateIpAddresses": [{"PrivateIpAddress": ip} for ip in got]}


@action("UnassignPrivateIpAddresses")
def unassign_private_ip_addresses(ctx: Context, p: dict) -> None:
    eni = get_interface(ctx, p.get("NetworkInterfaceId"), lock=True)
    wanted = p.get("PrivateIpAddresses") or []
    if not wanted:
        raise MissingParameter("PrivateIpAddresses")
    if any(ip not in (eni.secondary_ips or []) for ip in wanted):
        raise InvalidParameterValue(f"Some of the specified addresses are not assigned to interface {eni.id}")
    eni.secondary_ips = [ip for ip in eni.secondary_ips if ip not in wanted]
    addresses.address_unassigned(ctx, eni, wanted)  # an Elastic IP on one is disassociated
    _port_changed(ctx, eni)


def _port_changed(ctx: Context, eni: NetworkInterface) -> None:
    """An attached interface's port follows its addresses and source/destination check; its
    groups' sets follow its addresses."""
    if eni.instance_id and eni.attachment_state in ("attaching", "attached"):
        ctx.host_task("eni.port", eni.id, eni.availability_zone, instance_id=eni.instance_id)
    firewall.changed(ctx, eni.vpc_id)


# ------------------------------------------------------------------------------- host side

def _still_attached(session: Session, eni_id: str, instance_id: str, states: tuple[str, ...]):
    eni = session.get(NetworkInterface, eni_id)
    if eni is None or eni.instance_id != instance_id or eni.attachment_state not in states:
        return None
    return eni


@host_action("eni.attach")
def attach_on_host(host: Host, eni_id: str, instance_id: str) -> None:
    with host.Session() as session:
        eni = _still_attached(session, eni_id, instance_id, ("attaching",))
        if eni is None:
            return
        nic = _nic(eni)
    host.driver.attach_interface(instance_id, nic)
    with host.Session() as session:  # conditional: a DetachNetworkInterface meanwhile stands
        done = session.execute(update(NetworkInterface).where(
            NetworkInterface.id == eni_id, NetworkInterface.instance_id == instance_id,
            NetworkInterface.attachment_state == "attaching").values(attachment_state="attached")
            .returning(NetworkInterface.vpc_id)).first()
        if done:
            routing.ask_if_targeted(session, done[0], [eni_id])  # a route through it works now
        session.commit()
    addresses.map_interface_addresses(host, [instance_id])  # its Elastic IPs, now that it is plugged


@host_action_failed("eni.attach")
def attach_failed(host: Host, eni_id: str, error: str) -> None:
    """The NIC could not be given to the guest: the interface is available again (its port,
    if plugged, goes)."""
    with host.Session() as session:
        eni = session.get(NetworkInterface, eni_id)
        if eni is None or eni.attachment_state != "attaching":
            return
        instance_id = eni.instance_id
        _detached(eni)
        firewall.ask(session, eni.vpc_id)
        session.commit()
    host.driver.detach_interface(instance_id, eni_id)


@host_action("eni.detach")
def detach_on_host(host: Host, eni_id: str, instance_id: str, attachment_id: str, force: bool = False) -> None:
    host.driver.detach_interface(instance_id, eni_id)
    with host.Session() as session:
        eni = session.get(NetworkInterface, eni_id)
        if eni is not None and eni.attachment_id == attachment_id:
            _detached(eni)
            firewall.ask(session, eni.vpc_id)
            routing.ask_if_targeted(session, eni.vpc_id, [eni.id])  # a route through it: a blackhole
            session.commit()


@host_action_failed("eni.detach")
def detach_failed(host: Host, eni_id: str, error: str) -> None:
    """The host could not take the NIC away (after the task's retries): the interface is
    attached again, as far as anyone can tell, so DetachNetworkInterface can be asked again
    (it answers at once while one is 'detaching')."""
    with host.Session() as session:
        eni = session.get(NetworkInterface, eni_id)
        if eni is not None and eni.attachment_state == "detaching":
            eni.attachment_state = "attached"
            session.commit()


@host_action("eni.port")
def port_on_host(host: Host, eni_id: str, instance_id: str) -> None:
    with host.Session() as session:
        eni = _still_attached(session, eni_id, instance_id, ("attaching", "attached"))
        if eni is None:
            return
        primary, nic = eni.device_index == 0, _nic(eni)
    if primary:
        host.driver.set_addresses(instance_id, nic.secondary_ips, nic.source_dest_check)
    else:
        host.driver.attach_interface(instance_id, nic)  # already attached: the port's addresses follow
