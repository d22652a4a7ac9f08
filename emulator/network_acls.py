"""Network ACLs: CreateNetworkAcl, DeleteNetworkAcl, DescribeNetworkAcls, CreateNetworkAclEntry,
ReplaceNetworkAclEntry, DeleteNetworkAclEntry, ReplaceNetworkAclAssociation.

Every VPC has a default ACL (allow all in both directions, then the catch-all deny), made with
it and gone with it. Every subnet is associated with exactly one ACL of its VPC: the default one
until ReplaceNetworkAclAssociation moves it (each move answers a new association id, as AWS's
does). A subnet that was never moved has no association row: its association is implicit, with
an id derived from the subnet's (`implicit_association_id`), so the paths that make subnets need
not know about ACLs; deleting a subnet forgets its row.

Entries are stateless rules, numbered 1..32766 per direction, evaluated lowest number first, the
first match deciding; the `*` rule (listed as 32767) denies the rest and cannot be changed. They
are enforced on the host by the VPC's firewall (firewall.py renders them with the security groups;
hypervisor/nftables.acl_table): every change here asks for it again.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from . import firewall
from .errors import (DependencyViolation, InvalidAssociationIDNotFound, InvalidNetworkAclEntryNotFound,
                     InvalidNetworkAclIDNotFound, InvalidParameterValue, MissingParameter,
                     NetworkAclEntryAlreadyExists, NetworkAclEntryLimitExceeded, Unsupported)
from .ids import new_id
from .models import NetworkAcl, NetworkAclAssociation, Subnet, Tag, Vpc
from .query import Resource, Selector, describe
from .registry import Context, action
from .tags import refuse_other_tag_types, set_tags, tag_dict, tag_list, tag_specifications
from .vpcs import get_vpc, owned

CATCH_ALL = 32767  # AWS's '*' rule, listed with this number
LOWEST_RULE, HIGHEST_RULE = 1, 32766
ENTRIES_PER_DIRECTION = 20  # AWS's default quota (rules per ACL, each direction)
PROTOCOL_NAMES = {"all": "-1", "tcp": "6", "udp": "17", "icmp": "1", "icmpv6": "58"}
TCP, UDP, ICMP = "6", "17", "1"


def _default_entries() -> list[dict]:
    return [{"RuleNumber": n, "Protocol": "-1", "RuleAction": rule_action, "Egress": egress,
             "CidrBlock": "0.0.0.0/0"}
            for egress in (False, True) for n, rule_action in ((100, "allow"), (CATCH_ALL, "deny"))]


def _catch_all(egress: bool) -> dict:
    return {"RuleNumber": CATCH_ALL, "Protocol": "-1", "RuleAction": "deny", "Egress": egress,
            "CidrBlock": "0.0.0.0/0"}


# ------------------------------------------------------------------ for vpcs.py and firewall.py

def create_default_acl(ctx: Context, vpc: Vpc) -> NetworkAcl:
    acl = NetworkAcl(id=new_id("acl"), account_id=ctx.account_id, region=ctx.region, vpc_id=vpc.id,
                     is_default=True, entries=_default_entries())
    ctx.session.add(acl)
    ctx.session.flush()
    return acl


def delete_acls_of(ctx: Context, vpc_id: str) -> list[str]:
    """Removes a VPC's ACLs and associations; -> the ids gone (for their tags)."""
    ids = list(ctx.session.scalars(select(NetworkAcl.id).where(NetworkAcl.vpc_id == vpc_id)))
    ctx.session.execute(delete(NetworkAclAssociation).where(NetworkAclAssociation.vpc_id == vpc_id))
    ctx.session.execute(delete(NetworkAcl).where(NetworkAcl.vpc_id == vpc_id))
    return ids


def forget_subnet(ctx: Context, subnet_id: str) -> None:
    ctx.session.execute(delete(NetworkAclAssociation).where(NetworkAclAssociation.subnet_id == subnet_id))


def implicit_association_id(subnet_id: str) -> str:
    """The association id of a subnet that is still with its VPC's default ACL since it was made."""
    return "aclassoc-" + subnet_id.split("-", 1)[1]


def subnet_entries(session, vpc_id: str) -> dict[str, list[dict]]:
    """Each subnet of the VPC -> the entries of the ACL it uses (AWS's NetworkAclEntry shapes)."""
    acls = {a.id: a for a in session.scalars(select(NetworkAcl).where(NetworkAcl.vpc_id == vpc_id))}
    default = next((a for a in acls.values() if a.is_default), None)
    moved = dict(session.execute(select(NetworkAclAssociation.subnet_id, NetworkAclAssociation.network_acl_id)
                                 .where(NetworkAclAssociation.vpc_id == vpc_id)).all())
    out = {}
    for sid in session.scalars(select(Subnet.id).where(Subnet.vpc_id == vpc_id).order_by(Subnet.id)):
        acl = acls.get(moved[sid]) if sid in moved else default
        if acl is not None:
            out[sid] = list(acl.entries)
    return out


def get_acl(ctx: Context, acl_id: str) -> NetworkAcl:
    return owned(ctx, NetworkAcl, acl_id, InvalidNetworkAclIDNotFound)


# ---------------------------------------------------------------------------------------- ACLs

@action("CreateNetworkAcl")
def create_network_acl(ctx: Context, p: dict) -> dict:
    vpc = get_vpc(ctx, p["VpcId"])
    refuse_other_tag_types(p.get("TagSpecifications"), {"network-acl"})
    tags = tag_specifications(p.get("TagSpecifications"), "network-acl")
    # A new ACL denies everything until entries are added (only the '*' rules).
    acl = NetworkAcl(id=new_id("acl"), account_id=ctx.account_id, region=ctx.region, vpc_id=vpc.id,
                     is_default=False, entries=[_catch_all(False), _catch_all(True)])
    ctx.session.add(acl)
    ctx.session.flush()
    set_tags(ctx, acl.id, tags)
    return {"NetworkAcl": _out(_views(ctx, [acl])[0], tag_dict(tags)), "ClientToken": p.get("ClientToken")}


@action("DeleteNetworkAcl")
def delete_network_acl(ctx: Context, p: dict) -> dict:
    acl = get_acl(ctx, p["NetworkAclId"])
    if acl.is_default:
        raise InvalidParameterValue(f"cannot delete default network ACL {acl.id}")
    if ctx.session.scalars(select(NetworkAclAssociation.id).where(
            NetworkAclAssociation.network_acl_id == acl.id).limit(1)).first() is not None:
        raise DependencyViolation.has_dependencies("networkAcl", acl.id)
    ctx.session.execute(delete(Tag).where(Tag.resource_id == acl.id, Tag.account_id == ctx.account_id))
    if ctx.session.execute(delete(NetworkAcl).where(NetworkAcl.id == acl.id)).rowcount != 1:
        raise InvalidNetworkAclIDNotFound(acl.id)
    return {}


# ------------------------------------------------------------------------------------- entries

def _rule_number(p: dict) -> int:
    """The request's RuleNumber, one a user may set (not the '*' rule's)."""
    n = p["RuleNumber"]
    if not LOWEST_RULE <= n <= HIGHEST_RULE:
        raise InvalidParameterValue.value(n, "ruleNumber", f"Rule numbers must be between {LOWEST_RULE} "
                                                           f"and {HIGHEST_RULE}.")
    return n


def _entry(p: dict) -> dict:
    """A Create/ReplaceNetworkAclEntry request's entry, checked, as DescribeNetworkAcls lists it."""
    if p.get("Ipv6CidrBlock"):
        raise Unsupported("IPv6 network ACL entries are not supported by this emulator.")
    if not p.get("CidrBlock"):
        raise MissingParameter("cidrBlock")
    try:  # AWS keeps the canonical form (100.68.0.18/18 -> 100.68.0.0/18)
        cidr = str(ipaddress.IPv4Network(p["CidrBlock"], strict=False))
    except ValueError:
        raise InvalidParameterValue.value(p["CidrBlock"], "cidrBlock", "This is not a valid CIDR block.") from None
    raw = str(p["Protocol"]).strip().lower()
    protocol = PROTOCOL_NAMES.get(raw, raw)
    if not (protocol == "-1" or (protocol.isdigit() and 0 <= int(protocol) <= 255)):
        raise InvalidParameterValue.value(p["Protocol"], "protocol")
    protocol = str(int(protocol))
    entry = {"RuleNumber": _rule_number(p), "Protocol": protocol, "RuleAction": p["RuleAction"],
             "Egress": bool(p["Egress"]), "CidrBlock": cidr}
    if protocol in (TCP, UDP):
        ports = p.get("PortRange") or {}
        if ports.get("From") is None or ports.get("To") is None:
            raise MissingParameter("portRange")
        lo, hi = ports["From"], ports["To"]
        for value, name in ((lo, "portRange.from"), (hi, "portRange.to")):
            if not 0 <= value <= 65535:
                raise InvalidParameterValue.value(value, name, "Ports must be between 0 and 65535.")
        if lo > hi:
            raise InvalidParameterValue.value(f"{lo}-{hi}", "portRange",
                                              "The From port must not be greater than the To port.")
        entry["PortRange"] = {"From": lo, "To": hi}
    elif protocol == ICMP:
        icmp = p.get("IcmpTypeCode") or {}
        if icmp.get("Type") is None or icmp.get("Code") is None:
            raise MissingParameter("icmpTypeCode")
        for value, name in ((icmp["Type"], "icmpTypeCode.type"), (icmp["Code"], "icmpTypeCode.code")):
            if not -1 <= value <= 255:
                raise InvalidParameterValue.value(value, name)
        entry["IcmpTypeCode"] = {"Type": icmp["Type"], "Code": icmp["Code"]}
    # Other protocols (and -1) cover every port and ICMP type: AWS ignores PortRange/IcmpTypeCode.
    return entry


def _ordered(entries: list[dict]) -> list[dict]:
    return sorted(entries, key=lambda e: (e["Egress"], e["RuleNumber"]))


def _lock(ctx: Context, acl_id: str) -> NetworkAcl:
    """The ACL, its row locked for this transaction (PostgreSQL): two concurrent entry changes
    apply one after the other, neither losing the other's (the entries are one JSON value)."""
    acl = ctx.session.scalars(select(NetworkAcl).where(NetworkAcl.id == acl_id).with_for_update()).first()
    if acl is None or acl.account_id != ctx.account_id or acl.region != ctx.region:
        raise InvalidNetworkAclIDNotFound(acl_id)
    return acl


def _find(acl: NetworkAcl, number: int, egress: bool) -> int | None:
    return next((i for i, e in enumerate(acl.entries)
                 if e["RuleNumber"] == number and bool(e["Egress"]) == egress), None)


@action("CreateNetworkAclEntry")
def create_network_acl_entry(ctx: Context, p: dict) -> dict:
    acl = _lock(ctx, p["NetworkAclId"])
    entry = _entry(p)
    if _find(acl, entry["RuleNumber"], entry["Egress"]) is not None:
        raise NetworkAclEntryAlreadyExists(entry["RuleNumber"])
    if sum(1 for e in acl.entries if e["Egress"] == entry["Egress"]
           and e["RuleNumber"] != CATCH_ALL) >= ENTRIES_PER_DIRECTION:
        raise NetworkAclEntryLimitExceeded(acl.id, ENTRIES_PER_DIRECTION)
    acl.entries = _ordered([*acl.entries, entry])
    firewall.changed(ctx, acl.vpc_id)
    return {}


@action("ReplaceNetworkAclEntry")
def replace_network_acl_entry(ctx: Context, p: dict) -> dict:
    acl = _lock(ctx, p["NetworkAclId"])
    entry = _entry(p)
    i = _find(acl, entry["RuleNumber"], entry["Egress"])
    if i is None:
        raise InvalidNetworkAclEntryNotFound(entry["RuleNumber"], entry["Egress"])
    entries = list(acl.entries)
    entries[i] = entry
    acl.entries = _ordered(entries)
    firewall.changed(ctx, acl.vpc_id)
    return {}


@action("DeleteNetworkAclEntry")
def delete_network_acl_entry(ctx: Context, p: dict) -> dict:
    acl = _lock(ctx, p["NetworkAclId"])
    egress = bool(p["Egress"])
    number = _rule_number(p)
    i = _find(acl, number, egress)
    if i is None:
        raise InvalidNetworkAclEntryNotFound(number, egress)
    acl.entries = [e for j, e in enumerate(acl.entries) if j != i]
    firewall.changed(ctx, acl.vpc_id)
    return {}


# -------------------------------------------------------------------------------- associations

def _association(ctx: Context, association_id: str) -> tuple[NetworkAclAssociation | None, Subnet]:
    """-> (the association's row, or None for an implicit one; its subnet)."""
    row = ctx.session.get(NetworkAclAssociation, association_id)
    if row is not None and row.account_id == ctx.account_id and row.region == ctx.region:
        return row, ctx.session.get(Subnet, row.subnet_id)
    if association_id.startswith("aclassoc-"):
        subnet = ctx.session.get(Subnet, "subnet-" + association_id.split("-", 1)[1])
        if (subnet is not None and subnet.account_id == ctx.account_id and subnet.region == ctx.region
                and ctx.session.scalars(select(NetworkAclAssociation.id).where(
                    NetworkAclAssociation.subnet_id == subnet.id)).first() is None):
            return None, subnet
    raise InvalidAssociationIDNotFound(association_id)


@action("ReplaceNetworkAclAssociation")
def replace_network_acl_association(ctx: Context, p: dict) -> dict:
    row, subnet = _association(ctx, p["AssociationId"])
    acl = get_acl(ctx, p["NetworkAclId"])
    if acl.vpc_id != subnet.vpc_id:
        raise InvalidParameterValue(f"network ACL {acl.id} and subnet {subnet.id} belong to different networks")
    new = new_id("aclassoc")
    if row is None:
        ctx.session.add(NetworkAclAssociation(id=new, network_acl_id=acl.id, vpc_id=acl.vpc_id,
                                              subnet_id=subnet.id, account_id=ctx.account_id, region=ctx.region))
        try:
            ctx.session.flush()  # subnet_id is unique: of two concurrent moves one loses
        except IntegrityError:
            raise InvalidAssociationIDNotFound(p["AssociationId"]) from None
    elif ctx.session.execute(update(NetworkAclAssociation).where(NetworkAclAssociation.id == row.id)
                             .values(id=new, network_acl_id=acl.id)).rowcount != 1:
        raise InvalidAssociationIDNotFound(row.id)
    firewall.changed(ctx, acl.vpc_id)
    return {"NewAssociationId": new}


# ------------------------------------------------------------------------------------ describe

@dataclass
class _View:
    """An ACL with its associations (what its answer and filters need)."""
    id: str
    row: NetworkAcl
    associations: list[dict]


def _views(ctx: Context, acls: list[NetworkAcl]) -> list[_View]:
    vpcs = {a.vpc_id for a in acls}
    rows = ctx.session.scalars(select(NetworkAclAssociation).where(NetworkAclAssociation.vpc_id.in_(vpcs))
                               .order_by(NetworkAclAssociation.id)).all()
    moved = {r.subnet_id for r in rows}
    by_acl: dict[str, list[dict]] = {}
    for r in rows:
        by_acl.setdefault(r.network_acl_id, []).append(
            {"NetworkAclAssociationId": r.id, "NetworkAclId": r.network_acl_id, "SubnetId": r.subnet_id})
    defaults = {a.vpc_id: a.id for a in acls if a.is_default}
    for sid, vpc_id in ctx.session.execute(select(Subnet.id, Subnet.vpc_id).where(
            Subnet.vpc_id.in_(list(defaults))).order_by(Subnet.id)):
        if sid not in moved:
            by_acl.setdefault(defaults[vpc_id], []).append(
                {"NetworkAclAssociationId": implicit_association_id(sid), "NetworkAclId": defaults[vpc_id],
                 "SubnetId": sid})
    return [_View(a.id, a, sorted(by_acl.get(a.id, []), key=lambda x: x["SubnetId"])) for a in acls]


def _out(v: _View, tags: dict | None) -> dict:
    a = v.row
    return {"NetworkAclId": a.id, "VpcId": a.vpc_id, "IsDefault": a.is_default, "OwnerId": a.account_id,
            "Entries": a.entries, "Associations": v.associations, "Tags": tag_list(tags or {})}


def _entries(get):
    return lambda v: [x for x in (get(e) for e in v.row.entries) if x is not None]


def _assocs(key: str):
    return lambda v: [a[key] for a in v.associations]


NETWORK_ACLS = Resource("NetworkAcls", lambda ctx, page, tags: [_out(v, tags[v.id]) for v in page], {
    "network-acl-id": lambda v: v.id,
    "vpc-id": lambda v: v.row.vpc_id,
    "default": lambda v: v.row.is_default,
    "owner-id": lambda v: v.row.account_id,
    "association.association-id": _assocs("NetworkAclAssociationId"),
    "association.network-acl-id": _assocs("NetworkAclId"),
    "association.subnet-id": _assocs("SubnetId"),
    "entry.rule-number": _entries(lambda e: e["RuleNumber"]),
    "entry.rule-action": _entries(lambda e: e["RuleAction"]),
    "entry.protocol": _entries(lambda e: e["Protocol"]),
    "entry.cidr": _entries(lambda e: e.get("CidrBlock")),
    "entry.egress": _entries(lambda e: e["Egress"]),
    "entry.port-range.from": _entries(lambda e: (e.get("PortRange") or {}).get("From")),
    "entry.port-range.to": _entries(lambda e: (e.get("PortRange") or {}).get("To")),
    "entry.icmp.type": _entries(lambda e: (e.get("IcmpTypeCode") or {}).get("Type")),
    "entry.icmp.code": _entries(lambda e: (e.get("IcmpTypeCode") or {}).get("Code")),
    "entry.ipv6-cidr": lambda v: [],
}, (Selector("NetworkAclIds", lambda v: v.id, InvalidNetworkAclIDNotFound),))


@action("DescribeNetworkAcls")
def describe_network_acls(ctx: Context, p: dict) -> dict:
    rows = ctx.session.scalars(select(NetworkAcl).where(NetworkAcl.account_id == ctx.account_id,
                                                        NetworkAcl.region == ctx.region)
                               .order_by(NetworkAcl.id)).all()
    return describe(ctx, NETWORK_ACLS, p, _views(ctx, list(rows)))
