"""Security groups (VPC only; EC2-Classic is gone) and their rules.

A rule row is what AWS calls a security group rule (`sgr-`): one direction, one protocol and port
range, one peer (an IPv4 CIDR, an IPv6 CIDR, a prefix list or a group). DescribeSecurityGroups
folds the rows back into AWS's IpPermissions: one per (protocol, from, to), with the peers listed
under IpRanges / Ipv6Ranges / PrefixListIds / UserIdGroupPairs.

The life of a group, in order: the default group of a VPC, CreateSecurityGroup,
DescribeSecurityGroups, Authorize*/Revoke*, the rule-level calls (DescribeSecurityGroupRules,
ModifySecurityGroupRules, UpdateSecurityGroupRuleDescriptions*), DeleteSecurityGroup; then the
helpers RunInstances uses (resolve_groups, group_names).
"""
from __future__ import annotations

import functools
import ipaddress
import re
from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import timedelta

from sqlalchemy import bindparam, delete, select

from . import firewall, quotas
from .errors import (CannotDelete, DependencyViolation, InvalidGroupDuplicate, InvalidGroupIdMalformed,
                     InvalidGroupNotFound, InvalidParameter, InvalidParameterCombination,
                     InvalidParameterValue, InvalidPermissionDuplicate, InvalidPermissionNotFound,
                     InvalidPrefixListIdMalformed, InvalidSecurityGroupRuleIdMalformed,
                     InvalidSecurityGroupRuleIdNotFound, MissingParameter, RulesPerSecurityGroupLimitExceeded,
                     SecurityGroupLimitExceeded, VPCIdNotSpecified)
from .ids import new_id, well_formed
from .models import Instance, SecurityGroup, SecurityGroupRule, Tag, Vpc, utcnow
from .query import Resource, Selector, describe
from .registry import Context, action
from .tags import refuse_other_tag_types, set_tags, tag_dict, tag_list, tag_specifications
from .vpcs import default_vpc, get_vpc, lock_vpc

DEFAULT_NAME = "default"
DEFAULT_DESCRIPTION = "default VPC security group"
MAX_RULES = 60  # per direction, counted separately for IPv4 and IPv6 peers, as AWS does
PORT_PROTOCOLS = ("tcp", "udp", "icmp", "icmpv6")
_NUMBERED = {"6": "tcp", "17": "udp", "1": "icmp", "58": "icmpv6"}
_RULE_DESCRIPTION = re.compile(r"^[a-zA-Z0-9 ._\-:/()#,@\[\]+=&;{}!$*]*$")


# ------------------------------------------------------------------------------------ lookups

def _arn(g: SecurityGroup) -> str:
    return f"arn:aws:ec2:{g.region}:{g.account_id}:security-group/{g.id}"


def _rule_arn(r: SecurityGroupRule) -> str:
    return f"arn:aws:ec2:{r.region}:{r.account_id}:security-group-rule/{r.id}"


def _find(ctx: Context, group_id: str) -> SecurityGroup | None:
    """The caller's group of that id in this region; another account's is None, as a missing one."""
    g = ctx.session.get(SecurityGroup, group_id)
    if g is None or g.region != ctx.region or g.account_id != ctx.account_id:
        return None
    return g


def _check_group_id(group_id: str) -> None:
    if not well_formed(group_id, "sg"):
        raise InvalidGroupIdMalformed(group_id)


def get_group(ctx: Context, group_id: str) -> SecurityGroup:
    _check_group_id(group_id)
    g = _find(ctx, group_id)
    if g is None:
        raise InvalidGroupNotFound(group_id)
    return g


def _by_name(ctx: Context, vpc_id: str, name: str) -> SecurityGroup | None:
    return ctx.session.scalars(select(SecurityGroup).where(
        SecurityGroup.account_id == ctx.account_id, SecurityGroup.region == ctx.region,
        SecurityGroup.vpc_id == vpc_id, SecurityGroup.name == name)).first()


def _in_default_vpc(ctx: Context, name: str) -> SecurityGroup:
    vpc = default_vpc(ctx)
    g = _by_name(ctx, vpc.id, name) if vpc else None
    if g is None:
        raise InvalidGroupNotFound.in_vpc(name, vpc.id if vpc else None, default=True)
    return g


def _target(ctx: Context, p: dict) -> SecurityGroup:
    """The group a call acts on: GroupId, or GroupName in the default VPC."""
    if p.get("GroupId"):
        return get_group(ctx, p["GroupId"])
    if p.get("GroupName"):
        return _in_default_vpc(ctx, p["GroupName"])
    raise MissingParameter("groupName or groupId")


def _rules_of(ctx: Context, group_ids, egress: bool | None = None) -> list[SecurityGroupRule]:
    group_ids = list(group_ids)
    if not group_ids:
        return []
    q = select(SecurityGroupRule).where(SecurityGroupRule.group_id.in_(group_ids))
    if egress is not None:
        q = q.where(SecurityGroupRule.is_egress.is_(egress))
    return list(ctx.session.scalars(q.order_by(SecurityGroupRule.created_at, SecurityGroupRule.id)))


# -------------------------------------------------------------------------------- rule specs

@dataclass(frozen=True)
class Spec:
    """One rule as asked for: protocol, ports, one peer, a description."""
    ip_protocol: str
    from_port: int = -1
    to_port: int = -1
    cidr_ipv4: str | None = None
    cidr_ipv6: str | None = None
    prefix_list_id: str | None = None
    referenced_group_id: str | None = None
    referenced_user_id: str | None = None
    description: str | None = None

    @property
    def key(self) -> tuple:
        return (self.ip_protocol, self.from_port, self.to_port, self.cidr_ipv4, self.cidr_ipv6,
                self.prefix_list_id, self.referenced_group_id)

    @property
    def peer(self) -> str:
        return self.cidr_ipv4 or self.cidr_ipv6 or self.prefix_list_id or self.referenced_group_id or ""

    def text(self) -> str:
        """AWS's wording of a rule in InvalidPermission.Duplicate."""
        proto = self.ip_protocol
        if proto == "-1":
            body = "ALL"
        elif proto in ("tcp", "udp"):
            body = f"{proto.upper()}, from port: {self.from_port}, to port: {self.to_port}"
        elif proto in ("icmp", "icmpv6"):
            body = f"{proto.upper()}, type: {self.from_port}, code: {self.to_port}"
        else:
            body = proto
        return f"peer: {self.peer}, {body}, ALLOW"


def _row_key(r: SecurityGroupRule) -> tuple:
    return (r.ip_protocol, r.from_port, r.to_port, r.cidr_ipv4, r.cidr_ipv6, r.prefix_list_id,
            r.referenced_group_id)


def rule_key(r: SecurityGroupRule) -> str:
    """_row_key as the string the database keeps unique per group and direction."""
    return "|".join("" if v is None else str(v) for v in _row_key(r))


def _protocol(value) -> str:
    if value is None or str(value).strip() == "":
        raise MissingParameter("ipProtocol")
    v = str(value).strip().lower()
    if v in PORT_PROTOCOLS or v == "-1":
        return v
    if v.isdigit() and 0 <= int(v) <= 255:
        n = str(int(v))
        return _NUMBERED.get(n, n)
    # 'all' included: AWS answers exactly this for it (terraform-provider-aws#1793).
    raise InvalidParameterValue.invalid(value, "IP protocol", "Unknown protocol.")


def _ports(proto: str, from_port, to_port) -> tuple[int, int]:
    if proto in ("tcp", "udp"):
        if from_port is None or to_port is None:
            raise InvalidParameterValue.invalid("Must specify both from and to ports with TCP/UDP.", "portRange")
        for end, port in (("from", from_port), ("to", to_port)):
            if not 0 <= port <= 65535:
                raise InvalidParameterValue(f"TCP/UDP ({end}) port ({port}) out of range")
        if from_port > to_port:
            raise InvalidParameterValue.invalid(f"{from_port}-{to_port}", "portRange",
                                            "The from port must not be greater than the to port.")
        return from_port, to_port
    if proto in ("icmp", "icmpv6"):
        if from_port is None or to_port is None:
            raise InvalidParameterValue.invalid("Must specify both from and to ports with ICMP.", "portRange")
        if not -1 <= from_port <= 255:
            raise InvalidParameterValue(f"ICMP type ({from_port}) out of range")
        if not -1 <= to_port <= 255:
            raise InvalidParameterValue(f"ICMP code ({to_port}) out of range")
        if from_port == -1 and to_port != -1:
            raise InvalidParameterValue(f"ICMP code ({to_port}) out of range: all ICMP types (-1) need all codes (-1)")
        return from_port, to_port
    return -1, -1  # every other protocol covers all ports, whatever was asked


def _cidr(value, v6: bool) -> str:
    text = (value or "").strip()
    try:
        if "/" not in text:
            raise ValueError(text)
        (ipaddress.IPv6Network if v6 else ipaddress.IPv4Network)(text, strict=False)
    except ValueError:
        raise InvalidParameterValue(f"CIDR block {value} is malformed") from None
    return text


def _description(value: str | None) -> str | None:
    if value is None:
        return None
    if len(value) > 255 or not _RULE_DESCRIPTION.match(value):
        raise InvalidParameterValue("Invalid rule description. Valid descriptions are strings less than 256 characters "
                                    "from the following set:  a-zA-Z0-9. _-:/()#,@[]+=&;{}!$*")
    return value


def _account(value: str | None) -> str | None:
    return value.replace("-", "").strip() if value else None


def _peer_group(ctx: Context, target: SecurityGroup, pair: dict, must_exist: bool) -> tuple[str, str]:
    """-> (group id, owner account) of a referenced group, by GroupId or GroupName (+ UserId).

    Only the caller's own groups can be referenced: another account's group could only be
    reached through a VPC peering connection (which this emulator does not model), so it is
    reported exactly as a group that does not exist: naming another account's real group must
    tell nothing a made-up id would not."""
    owner = _account(pair.get("UserId")) or ctx.account_id
    gid, name = pair.get("GroupId"), pair.get("GroupName")
    if gid:
        _check_group_id(gid)
        g = _find(ctx, gid) if owner == ctx.account_id else None
        if g is None:
            if must_exist:
                raise InvalidGroupNotFound(gid)
            return gid, owner
    elif name:
        g = _by_name(ctx, target.vpc_id, name) if owner == ctx.account_id else None
        if g is None:
            raise InvalidGroupNotFound(name)
    else:
        raise MissingParameter("groupId or groupName for a UserIdGroupPair")
    if g.account_id == ctx.account_id and g.vpc_id != target.vpc_id:
        raise InvalidParameter()
    return g.id, g.account_id


def _specs(ctx: Context, target: SecurityGroup, perms: list[dict], must_exist: bool = True) -> list[Spec]:
    """IpPermissions -> one Spec per peer, validated as AWS validates them."""
    out: list[Spec] = []
    for perm in perms:
        proto = _protocol(perm.get("IpProtocol"))
        from_port, to_port = _ports(proto, perm.get("FromPort"), perm.get("ToPort"))
        base = Spec(proto, from_port, to_port)
        for r in perm.get("IpRanges") or []:
            out.append(replace(base, cidr_ipv4=_cidr(r.get("CidrIp"), False),
                               description=_description(r.get("Description"))))
        for r in perm.get("Ipv6Ranges") or []:
            out.append(replace(base, cidr_ipv6=_cidr(r.get("CidrIpv6"), True),
                               description=_description(r.get("Description"))))
        for r in perm.get("PrefixListIds") or []:
            pl = r.get("PrefixListId") or ""
            if not well_formed(pl, "pl"):
                raise InvalidPrefixListIdMalformed(pl)
            out.append(replace(base, prefix_list_id=pl, description=_description(r.get("Description"))))
        for r in perm.get("UserIdGroupPairs") or []:
            gid, owner = _peer_group(ctx, target, r, must_exist)
            out.append(replace(base, referenced_group_id=gid, referenced_user_id=owner,
                               description=_description(r.get("Description"))))
        # A permission naming no peer grants nothing; AWS accepts it and adds no rule.
    return out


def _flat_permissions(p: dict) -> list[dict]:
    """The legacy top-level form of AuthorizeSecurityGroupIngress / RevokeSecurityGroupIngress."""
    proto = p.get("IpProtocol")
    cidr, src_name = p.get("CidrIp"), p.get("SourceSecurityGroupName")
    src_owner = p.get("SourceSecurityGroupOwnerId")
    if proto is None and cidr is None and src_name is None and src_owner is None:
        return []
    base = {"IpProtocol": proto, "FromPort": p.get("FromPort"), "ToPort": p.get("ToPort")}
    if cidr is not None:
        return [dict(base, IpRanges=[{"CidrIp": cidr}])]
    if src_name is not None or src_owner is not None:
        pair = {"GroupName": src_name, "UserId": src_owner}
        if proto is not None:
            return [dict(base, UserIdGroupPairs=[pair])]
        # A source group with no protocol grants TCP, UDP and ICMP in full, as AWS always did.
        return [{"IpProtocol": "tcp", "FromPort": 0, "ToPort": 65535, "UserIdGroupPairs": [pair]},
                {"IpProtocol": "udp", "FromPort": 0, "ToPort": 65535, "UserIdGroupPairs": [pair]},
                {"IpProtocol": "icmp", "FromPort": -1, "ToPort": -1, "UserIdGroupPairs": [pair]}]
    return [base]


def _spec_of_request(ctx: Context, target: SecurityGroup, req: dict) -> Spec:
    """A SecurityGroupRuleRequest (ModifySecurityGroupRules) -> Spec."""
    peers = [k for k in ("CidrIpv4", "CidrIpv6", "PrefixListId", "ReferencedGroupId") if req.get(k)]
    if len(peers) != 1:
        raise InvalidParameterCombination("Exactly one of CidrIpv4, CidrIpv6, PrefixListId or ReferencedGroupId "
                                          "must be specified.")
    perm = {"IpProtocol": req.get("IpProtocol"), "FromPort": req.get("FromPort"), "ToPort": req.get("ToPort")}
    desc = req.get("Description")
    if req.get("CidrIpv4"):
        perm["IpRanges"] = [{"CidrIp": req["CidrIpv4"], "Description": desc}]
    elif req.get("CidrIpv6"):
        perm["Ipv6Ranges"] = [{"CidrIpv6": req["CidrIpv6"], "Description": desc}]
    elif req.get("PrefixListId"):
        perm["PrefixListIds"] = [{"PrefixListId": req["PrefixListId"], "Description": desc}]
    else:
        perm["UserIdGroupPairs"] = [{"GroupId": req["ReferencedGroupId"], "Description": desc}]
    return _specs(ctx, target, [perm])[0]


def _new_rule(ctx: Context, group: SecurityGroup, egress: bool, spec: Spec, seq: int = 0) -> SecurityGroupRule:
    """seq orders the rules one call makes (created_at is the order rules are listed in; a whole
    batch can fall in one microsecond)."""
    row = SecurityGroupRule(id=new_id("sgr"), account_id=group.account_id, region=group.region,
                            created_at=utcnow() + timedelta(microseconds=seq),
                            group_id=group.id, is_egress=egress, ip_protocol=spec.ip_protocol,
                            from_port=spec.from_port, to_port=spec.to_port, cidr_ipv4=spec.cidr_ipv4,
                            cidr_ipv6=spec.cidr_ipv6, prefix_list_id=spec.prefix_list_id,
                            referenced_group_id=spec.referenced_group_id,
                            referenced_user_id=spec.referenced_user_id, description=spec.description)
    row.rule_key = rule_key(row)
    ctx.session.add(row)
    return row


def _rule_out(r: SecurityGroupRule, tags: dict) -> dict:
    ref = ({"GroupId": r.referenced_group_id, "UserId": r.referenced_user_id}
           if r.referenced_group_id else None)
    return {"SecurityGroupRuleId": r.id, "GroupId": r.group_id, "GroupOwnerId": r.account_id,
            "IsEgress": r.is_egress, "IpProtocol": r.ip_protocol, "FromPort": r.from_port,
            "ToPort": r.to_port, "CidrIpv4": r.cidr_ipv4, "CidrIpv6": r.cidr_ipv6,
            "PrefixListId": r.prefix_list_id, "ReferencedGroupInfo": ref, "Description": r.description,
            "Tags": tag_list(tags) or [], "SecurityGroupRuleArn": _rule_arn(r)}


def _permissions(rules: list[SecurityGroupRule]) -> list[dict]:
    """Rule rows -> AWS's IpPermissions: one per (protocol, from, to), peers listed inside."""
    perms: dict[tuple, dict] = {}
    for r in rules:
        k = (r.ip_protocol, r.from_port, r.to_port)
        perm = perms.get(k)
        if perm is None:
            perm = perms[k] = {"IpProtocol": r.ip_protocol, "IpRanges": [], "Ipv6Ranges": [],
                               "PrefixListIds": [], "UserIdGroupPairs": []}
            if r.ip_protocol in PORT_PROTOCOLS:
                perm["FromPort"], perm["ToPort"] = r.from_port, r.to_port
        if r.cidr_ipv4:
            perm["IpRanges"].append({"CidrIp": r.cidr_ipv4, "Description": r.description})
        elif r.cidr_ipv6:
            perm["Ipv6Ranges"].append({"CidrIpv6": r.cidr_ipv6, "Description": r.description})
        elif r.prefix_list_id:
            perm["PrefixListIds"].append({"PrefixListId": r.prefix_list_id, "Description": r.description})
        elif r.referenced_group_id:
            perm["UserIdGroupPairs"].append({"UserId": r.referenced_user_id, "GroupId": r.referenced_group_id,
                                             "Description": r.description})
    return list(perms.values())


# ------------------------------------------------------------------------------ default group

def _create(ctx: Context, vpc_id: str, name: str, description: str) -> SecurityGroup:
    g = SecurityGroup(id=new_id("sg"), account_id=ctx.account_id, region=ctx.region, vpc_id=vpc_id,
                      name=name, description=description)
    ctx.session.add(g)
    _new_rule(ctx, g, True, Spec("-1", cidr_ipv4="0.0.0.0/0"))  # every group may send anywhere
    return g


def create_default_group(ctx: Context, vpc_id: str) -> SecurityGroup:
    """A VPC's 'default' group: its members talk freely to each other and send anywhere."""
    g = _create(ctx, vpc_id, DEFAULT_NAME, DEFAULT_DESCRIPTION)
    _new_rule(ctx, g, False, Spec("-1", referenced_group_id=g.id, referenced_user_id=ctx.account_id), 1)
    ctx.session.flush()
    return g


# ------------------------------------------------------------------------------------ groups

def _check_text(param: str, value: str) -> None:
    if len(value) > 255:
        raise InvalidParameterValue.value(value, param, "Length exceeds maximum of 255 characters.")
    if not value.isascii():
        raise InvalidParameterValue.value(value, param, "Character sets beyond ASCII are not supported.")


@action("CreateSecurityGroup")
def create_security_group(ctx: Context, p: dict) -> dict:
    name, description = p["GroupName"], p["Description"]
    if not name:
        raise MissingParameter("groupName")
    if not description:
        raise MissingParameter("GroupDescription")
    _check_text("GroupName", name)
    _check_text("GroupDescription", description)
    if name.lower().startswith("sg-"):
        raise InvalidParameterValue.value(name, "GroupName", "Group names may not be in the format sg-*.")
    if name == DEFAULT_NAME:
        raise InvalidParameterValue("Cannot use reserved security group name: default")
    if p.get("VpcId"):
        vpc = get_vpc(ctx, p["VpcId"])
    else:
        vpc = default_vpc(ctx)
        if vpc is None:
            raise VPCIdNotSpecified()
    vpc = lock_vpc(ctx, vpc.id)  # the quota below is counted under the VPC's lock
    refuse_other_tag_types(p.get("TagSpecifications"), {"security-group"})
    tags = tag_specifications(p.get("TagSpecifications"), "security-group")
    if _by_name(ctx, vpc.id, name) is not None:
        raise InvalidGroupDuplicate(name, vpc.id)
    quotas.per_vpc(ctx, SecurityGroup, vpc.id, ctx.config.security_groups_per_vpc, SecurityGroupLimitExceeded)
    g = _create(ctx, vpc.id, name, description)
    ctx.session.flush()
    if tags:
        set_tags(ctx, g.id, tags)
    return {"GroupId": g.id, "Tags": tag_list(tag_dict(tags)),
            "SecurityGroupArn": _arn(g)}


_NAMES = select(SecurityGroup.id, SecurityGroup.name).where(
    SecurityGroup.id.in_(bindparam("ids", expanding=True)))  # built once: a hot path


def _group_names_of(ctx: Context, ids) -> dict[str, str]:
    ids = list(set(ids))
    if not ids:
        return {}
    return dict(ctx.session.connection().execute(_NAMES, {"ids": ids}).all())


def _rules_by_group(ctx: Context, groups: list[SecurityGroup]) -> dict[str, list]:
    rules: dict[str, list] = defaultdict(list)
    for r in _rules_of(ctx, [g.id for g in groups]):
        rules[r.group_id].append(r)
    return rules


def _rule_filters(ctx: Context, groups: list[SecurityGroup]) -> dict:
    """The rule filters of DescribeSecurityGroups (ip-permission.*, egress.ip-permission.*): the
    groups' rules, and the names of the groups they reference, read in one query each the first
    time such a filter is used."""
    @functools.cache
    def rules() -> dict[str, list]:
        return _rules_by_group(ctx, groups)

    @functools.cache
    def names() -> dict[str, str]:
        return _group_names_of(ctx, [r.referenced_group_id for rs in rules().values() for r in rs
                                     if r.referenced_group_id])

    def perms(prefix: str, egress: bool) -> dict:
        def on(getter):
            return lambda g: [v for r in rules()[g.id] if r.is_egress == egress
                              for v in [getter(r)] if v is not None]
        return {
            f"{prefix}.protocol": on(lambda r: r.ip_protocol),
            f"{prefix}.from-port": on(lambda r: r.from_port),
            f"{prefix}.to-port": on(lambda r: r.to_port),
            f"{prefix}.cidr": on(lambda r: r.cidr_ipv4),
            f"{prefix}.ipv6-cidr": on(lambda r: r.cidr_ipv6),
            f"{prefix}.prefix-list-id": on(lambda r: r.prefix_list_id),
            f"{prefix}.group-id": on(lambda r: r.referenced_group_id),
            f"{prefix}.group-name": on(lambda r: names().get(r.referenced_group_id)),
            f"{prefix}.user-id": on(lambda r: r.referenced_user_id),
        }
    return {**perms("ip-permission", False), **perms("egress.ip-permission", True)}


def _groups_out(ctx: Context, page: list, tags) -> list[dict]:
    rules = _rules_by_group(ctx, page)
    return [{
        "GroupId": g.id, "GroupName": g.name, "Description": g.description, "VpcId": g.vpc_id,
        "OwnerId": g.account_id, "SecurityGroupArn": _arn(g), "Tags": tag_list(tags[g.id]),
        "IpPermissions": _permissions([r for r in rules[g.id] if not r.is_egress]),
        "IpPermissionsEgress": _permissions([r for r in rules[g.id] if r.is_egress]),
    } for g in page]


GROUPS = Resource("SecurityGroups", _groups_out, {
    "group-id": lambda g: g.id,
    "group-name": lambda g: g.name,
    "description": lambda g: g.description,
    "vpc-id": lambda g: g.vpc_id,
    "owner-id": lambda g: g.account_id,
}, (Selector("GroupIds", lambda g: g.id, InvalidGroupNotFound, _check_group_id),))


@action("DescribeSecurityGroups")
def describe_security_groups(ctx: Context, p: dict) -> dict:
    rows = list(ctx.session.scalars(select(SecurityGroup).where(
        SecurityGroup.account_id == ctx.account_id, SecurityGroup.region == ctx.region)
        .order_by(SecurityGroup.id)))
    if p.get("GroupNames"):  # names are of groups in the default VPC: selected by their ids
        named = [_in_default_vpc(ctx, name).id for name in p["GroupNames"]]
        p = {**p, "GroupIds": (p.get("GroupIds") or []) + named}
    return describe(ctx, GROUPS, p, rows, filters=_rule_filters(ctx, rows))


# ------------------------------------------------------------------------- authorize / revoke

def _authorize(ctx: Context, p: dict, egress: bool) -> dict:
    group = _target(ctx, p)
    perms = list(p.get("IpPermissions") or [])
    if not egress:  # egress ignores the flat form ("Not supported"), as AWS does
        perms += _flat_permissions(p)
    specs = _specs(ctx, group, perms)
    refuse_other_tag_types(p.get("TagSpecifications"), {"security-group-rule"})
    tags = tag_specifications(p.get("TagSpecifications"), "security-group-rule")
    existing = _rules_of(ctx, [group.id], egress)
    seen = {_row_key(r) for r in existing}
    for s in specs:
        if s.key in seen:
            raise InvalidPermissionDuplicate(s.text())
        seen.add(s.key)
    v6 = sum(1 for r in existing if r.cidr_ipv6) + sum(1 for s in specs if s.cidr_ipv6)
    v4 = len(existing) + len(specs) - v6
    if v4 > MAX_RULES or v6 > MAX_RULES:
        raise RulesPerSecurityGroupLimitExceeded()
    rows = [_new_rule(ctx, group, egress, s, seq) for seq, s in enumerate(specs)]
    ctx.session.flush()
    if rows:
        firewall.changed(ctx, group.vpc_id)
    for r in rows:
        if tags:
            set_tags(ctx, r.id, tags)
    tag_map = tag_dict(tags)
    return {"Return": True, "SecurityGroupRules": [_rule_out(r, tag_map) for r in rows]}


# Ingress and egress are one operation each way, told apart by the direction.
action("AuthorizeSecurityGroupIngress")(lambda ctx, p: _authorize(ctx, p, False))
action("AuthorizeSecurityGroupEgress")(lambda ctx, p: _authorize(ctx, p, True))


def _rules_by_id(ctx: Context, group: SecurityGroup, rule_ids: list[str], egress: bool | None) -> list:
    by_id = {r.id: r for r in _rules_of(ctx, [group.id], egress)}
    out = []
    for rid in rule_ids:
        if not well_formed(rid, "sgr"):
            raise InvalidSecurityGroupRuleIdMalformed(rid)
        if rid not in by_id:
            raise InvalidSecurityGroupRuleIdNotFound(rid)
        out.append(by_id[rid])
    return out


def _matching(ctx: Context, group: SecurityGroup, perms: list[dict], egress: bool) -> list[tuple]:
    """-> [(spec, existing rule)] for IpPermissions that must each name an existing rule."""
    by_key = {_row_key(r): r for r in _rules_of(ctx, [group.id], egress)}
    out = []
    for s in _specs(ctx, group, perms, must_exist=False):
        row = by_key.get(s.key)
        if row is None:
            raise InvalidPermissionNotFound()
        out.append((s, row))
    return out


def _revoke(ctx: Context, p: dict, egress: bool) -> dict:
    group = _target(ctx, p)
    rows = _rules_by_id(ctx, group, p.get("SecurityGroupRuleIds") or [], egress)
    perms = list(p.get("IpPermissions") or [])
    if not egress:
        perms += _flat_permissions(p)
    rows += [row for _, row in _matching(ctx, group, perms, egress)]
    unique = list({r.id: r for r in rows}.values())
    for r in unique:
        ctx.session.execute(delete(Tag).where(Tag.resource_id == r.id, Tag.account_id == ctx.account_id))
        ctx.session.delete(r)
    if unique:
        firewall.changed(ctx, group.vpc_id)
    return {"Return": True, "RevokedSecurityGroupRules": [{
        "SecurityGroupRuleId": r.id, "GroupId": r.group_id, "IsEgress": r.is_egress,
        "IpProtocol": r.ip_protocol, "FromPort": r.from_port, "ToPort": r.to_port, "CidrIpv4": r.cidr_ipv4,
        "CidrIpv6": r.cidr_ipv6, "PrefixListId": r.prefix_list_id, "ReferencedGroupId": r.referenced_group_id,
        "Description": r.description} for r in unique]}


action("RevokeSecurityGroupIngress")(lambda ctx, p: _revoke(ctx, p, False))
action("RevokeSecurityGroupEgress")(lambda ctx, p: _revoke(ctx, p, True))


# ------------------------------------------------------------------------------- rule level

RULE_FILTERS = {
    "group-id": lambda r: r.group_id,
    "security-group-rule-id": lambda r: r.id,
}


RULES = Resource("SecurityGroupRules", lambda ctx, page, tags: [_rule_out(r, tags[r.id]) for r in page],
                 RULE_FILTERS,
                 (Selector("SecurityGroupRuleIds", lambda r: r.id, InvalidSecurityGroupRuleIdNotFound),))


@action("DescribeSecurityGroupRules")
def describe_security_group_rules(ctx: Context, p: dict) -> dict:
    rows = list(ctx.session.scalars(select(SecurityGroupRule).where(
        SecurityGroupRule.account_id == ctx.account_id, SecurityGroupRule.region == ctx.region)
        .order_by(SecurityGroupRule.id)))
    return describe(ctx, RULES, p, rows)


@action("ModifySecurityGroupRules")
def modify_security_group_rules(ctx: Context, p: dict) -> dict:
    group = get_group(ctx, p["GroupId"])
    updates = p["SecurityGroupRules"]
    rows = _rules_by_id(ctx, group, [u.get("SecurityGroupRuleId") or "" for u in updates], None)
    specs = []
    for update in updates:
        if update.get("SecurityGroupRule") is None:
            raise MissingParameter("SecurityGroupRule")
        specs.append(_spec_of_request(ctx, group, update["SecurityGroupRule"]))
    new = {row.id: spec for row, spec in zip(rows, specs)}
    seen: set = set()
    for r in _rules_of(ctx, [group.id]):  # the group's rules as they would be: still no two alike
        key = (r.is_egress, new[r.id].key if r.id in new else _row_key(r))
        if key in seen:
            spec = new.get(r.id) or next(s for s in specs if (r.is_egress, s.key) == key)
            raise InvalidPermissionDuplicate(spec.text())
        seen.add(key)
    for row in rows:  # (two rules may swap keys: no moment may hold one key twice)
        row.rule_key = None
    ctx.session.flush()
    for row, spec in zip(rows, specs):
        row.ip_protocol, row.from_port, row.to_port = spec.ip_protocol, spec.from_port, spec.to_port
        row.cidr_ipv4, row.cidr_ipv6, row.prefix_list_id = spec.cidr_ipv4, spec.cidr_ipv6, spec.prefix_list_id
        row.referenced_group_id, row.referenced_user_id = spec.referenced_group_id, spec.referenced_user_id
        row.description = spec.description
        row.rule_key = rule_key(row)
    if rows:
        firewall.changed(ctx, group.vpc_id)
    return {"Return": True}


def _update_descriptions(ctx: Context, p: dict, egress: bool) -> dict:
    group = _target(ctx, p)
    for s, row in _matching(ctx, group, p.get("IpPermissions") or [], egress):
        row.description = s.description
    items = p.get("SecurityGroupRuleDescriptions") or []
    rows = _rules_by_id(ctx, group, [i.get("SecurityGroupRuleId") or "" for i in items], egress)
    for row, item in zip(rows, items):
        row.description = _description(item.get("Description"))
    return {"Return": True}


@action("UpdateSecurityGroupRuleDescriptionsIngress")
def update_security_group_rule_descriptions_ingress(ctx: Context, p: dict) -> dict:
    return _update_descriptions(ctx, p, False)


@action("UpdateSecurityGroupRuleDescriptionsEgress")
def update_security_group_rule_descriptions_egress(ctx: Context, p: dict) -> dict:
    return _update_descriptions(ctx, p, True)


# ----------------------------------------------------------------------------------- delete

def _in_use(ctx: Context, group: SecurityGroup) -> bool:
    referenced = ctx.session.scalars(select(SecurityGroupRule.id).where(
        SecurityGroupRule.referenced_group_id == group.id, SecurityGroupRule.group_id != group.id)).first()
    if referenced is not None:
        return True
    users = ctx.session.scalars(select(Instance.security_group_ids).where(
        Instance.account_id == ctx.account_id, Instance.region == ctx.region, Instance.vpc_id == group.vpc_id,
        Instance.state != "terminated"))
    if any(group.id in (ids or []) for ids in users):
        return True
    from .network_interfaces import in_use_by  # it imports this module
    return in_use_by(ctx, group_id=group.id)


@action("DeleteSecurityGroup")
def delete_security_group(ctx: Context, p: dict) -> dict:
    group = _target(ctx, p)
    if group.name == DEFAULT_NAME:
        raise CannotDelete(group.id, DEFAULT_NAME)
    if _in_use(ctx, group):
        raise DependencyViolation(group.id)
    rule_ids = [r.id for r in _rules_of(ctx, [group.id])]
    ctx.session.execute(delete(Tag).where(Tag.resource_id.in_(rule_ids + [group.id]),
                                          Tag.account_id == ctx.account_id))
    ctx.session.execute(delete(SecurityGroupRule).where(SecurityGroupRule.group_id == group.id))
    # A conditional delete: of two concurrent deletes (maybe in two API processes) only one
    # removes the row; the other finds nothing and answers NotFound, as AWS does.
    if ctx.session.execute(delete(SecurityGroup).where(SecurityGroup.id == group.id)).rowcount != 1:
        raise InvalidGroupNotFound(group.id)
    firewall.changed(ctx, group.vpc_id)
    return {"Return": True, "GroupId": group.id}


# ---------------------------------------------------------------------- for RunInstances & co

def resolve_groups(ctx: Context, vpc_id: str, group_ids: list[str] | None, group_names: list[str] | None,
                   subnet_id: str | None = None) -> list[SecurityGroup]:
    """The groups an instance in vpc_id asks for (ids and/or names in that VPC), in order,
    each once; neither given -> the VPC's default group."""
    out: dict[str, SecurityGroup] = {}
    for gid in group_ids or []:
        g = get_group(ctx, gid)
        if g.vpc_id != vpc_id:
            if subnet_id:
                raise InvalidParameter.group_and_subnet(g.id, subnet_id)
            raise InvalidGroupNotFound.in_vpc(g.id, vpc_id, default=False)
        out.setdefault(g.id, g)
    for name in group_names or []:
        g = _by_name(ctx, vpc_id, name)
        if g is None:
            vpc = ctx.session.get(Vpc, vpc_id)
            raise InvalidGroupNotFound.in_vpc(name, vpc_id, default=vpc is not None and vpc.is_default)
        out.setdefault(g.id, g)
    if not out:
        g = _by_name(ctx, vpc_id, DEFAULT_NAME)
        if g is None:
            raise InvalidGroupNotFound.in_vpc(DEFAULT_NAME, vpc_id, default=False)
        out[g.id] = g
    return list(out.values())


def group_names(ctx: Context, ids) -> dict[str, str]:
    """group id -> name, one query (ids the caller already holds, e.g. an instance's groups)."""
    return _group_names_of(ctx, ids)
