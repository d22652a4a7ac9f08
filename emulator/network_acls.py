"""Network ACLs as records: every VPC's default ACL (allow all in both directions, then the
catch-all deny), associated with each of its subnets that has no other, and
DescribeNetworkAcls. Not enforced on the host yet, and no custom ACLs yet (CreateNetworkAcl and
the entry operations are left for later)."""
from __future__ import annotations

from sqlalchemy import delete, select

from .errors import InvalidNetworkAclIDNotFound
from .ids import new_id
from .models import NetworkAcl, Subnet, Vpc
from .query import Resource, Selector, describe
from .registry import Context, action
from .tags import tag_list

CATCH_ALL = 32767  # AWS's '*' rule, listed with this number


def _default_entries() -> list[dict]:
    return [{"RuleNumber": n, "Protocol": "-1", "RuleAction": rule_action, "Egress": egress,
             "CidrBlock": "0.0.0.0/0"}
            for egress in (False, True) for n, rule_action in ((100, "allow"), (CATCH_ALL, "deny"))]


def create_default_acl(ctx: Context, vpc: Vpc) -> NetworkAcl:
    acl = NetworkAcl(id=new_id("acl"), account_id=ctx.account_id, region=ctx.region, vpc_id=vpc.id,
                     is_default=True, entries=_default_entries())
    ctx.session.add(acl)
    ctx.session.flush()
    return acl


def delete_acls_of(ctx: Context, vpc_id: str) -> list[str]:
    ids = list(ctx.session.scalars(select(NetworkAcl.id).where(NetworkAcl.vpc_id == vpc_id)))
    ctx.session.execute(delete(NetworkAcl).where(NetworkAcl.vpc_id == vpc_id))
    return ids


def _associations(acl: NetworkAcl, subnets: dict[str, list[str]]) -> list[dict]:
    # Only default ACLs exist: each holds every subnet of its VPC.
    return [{"NetworkAclAssociationId": "aclassoc-" + s[7:], "NetworkAclId": acl.id, "SubnetId": s}
            for s in subnets.get(acl.vpc_id, [])] if acl.is_default else []


def _render(ctx: Context, page: list, tags) -> list[dict]:
    subnets: dict[str, list[str]] = {}
    for sid, vpc_id in ctx.session.execute(select(Subnet.id, Subnet.vpc_id).where(
            Subnet.vpc_id.in_([a.vpc_id for a in page])).order_by(Subnet.id)):
        subnets.setdefault(vpc_id, []).append(sid)
    return [{"NetworkAclId": a.id, "VpcId": a.vpc_id, "IsDefault": a.is_default, "OwnerId": a.account_id,
             "Entries": a.entries, "Associations": _associations(a, subnets), "Tags": tag_list(tags[a.id])}
            for a in page]


NETWORK_ACLS = Resource("NetworkAcls", _render, {
    "network-acl-id": lambda a: a.id,
    "vpc-id": lambda a: a.vpc_id,
    "default": lambda a: a.is_default,
    "owner-id": lambda a: a.account_id,
    "entry.rule-number": lambda a: [e["RuleNumber"] for e in a.entries],
    "entry.rule-action": lambda a: [e["RuleAction"] for e in a.entries],
    "entry.protocol": lambda a: [e["Protocol"] for e in a.entries],
    "entry.cidr": lambda a: [e.get("CidrBlock") for e in a.entries],
    "entry.egress": lambda a: [e["Egress"] for e in a.entries],
}, (Selector("NetworkAclIds", lambda a: a.id, InvalidNetworkAclIDNotFound),))


@action("DescribeNetworkAcls")
def describe_network_acls(ctx: Context, p: dict) -> dict:
    rows = ctx.session.scalars(select(NetworkAcl).where(NetworkAcl.account_id == ctx.account_id,
                                                        NetworkAcl.region == ctx.region)
                               .order_by(NetworkAcl.id)).all()
    return describe(ctx, NETWORK_ACLS, p, rows)
