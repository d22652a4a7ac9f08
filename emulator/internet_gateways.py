"""Internet gateways: CreateInternetGateway, AttachInternetGateway, DetachInternetGateway,
DeleteInternetGateway, DescribeInternetGateways. A gateway is attached to at most one VPC and a
VPC has at most one gateway (both unique in the table). Routes to a gateway that goes away
become blackholes (route_tables.py renders them so).

On the host, attaching and detaching change which subnets have a path out (routing.py)."""
from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from . import nat_gateways, quotas, routing
from .errors import (DependencyViolation, GatewayNotAttached, InternetGatewayLimitExceeded,
                     InvalidInternetGatewayIDNotFound, ResourceAlreadyAssociated)
from .ids import new_id
from .models import Instance, InternetGateway, Tag, Vpc
from .query import Resource, Selector, describe
from .registry import Context, action
from .tags import refuse_other_tag_types, set_tags, tag_dict, tag_list, tag_specifications
from .vpcs import get_vpc, lock_vpc, owned


def get_gateway(ctx: Context, igw_id: str) -> InternetGateway:
    return owned(ctx, InternetGateway, igw_id, InvalidInternetGatewayIDNotFound)


def attach_default_gateway(ctx: Context, vpc: Vpc) -> None:
    """The default VPC's gateway, and its main table's route to it (as AWS makes them)."""
    from . import route_tables

    igw = InternetGateway(id=new_id("igw"), account_id=ctx.account_id, region=ctx.region, vpc_id=vpc.id)
    ctx.session.add(igw)
    ctx.session.flush()
    route_tables.add_default_route(ctx, vpc.id, igw.id)


def _out(row: InternetGateway, tags: dict | None) -> dict:
    return {"InternetGatewayId": row.id, "OwnerId": row.account_id, "Tags": tag_list(tags or {}),
            "Attachments": [{"VpcId": row.vpc_id, "State": "available"}] if row.vpc_id else []}


@action("CreateInternetGateway")
def create_internet_gateway(ctx: Context, p: dict) -> dict:
    refuse_other_tag_types(p.get("TagSpecifications"), {"internet-gateway"})
    tags = tag_specifications(p.get("TagSpecifications"), "internet-gateway")
    quotas.per_region(ctx, InternetGateway, ctx.config.internet_gateways_per_region, InternetGatewayLimitExceeded)
    row = InternetGateway(id=new_id("igw"), account_id=ctx.account_id, region=ctx.region, vpc_id=None)
    ctx.session.add(row)
    ctx.session.flush()
    set_tags(ctx, row.id, tags)
    return {"InternetGateway": _out(row, tag_dict(tags))}


@action("AttachInternetGateway")
def attach_internet_gateway(ctx: Context, p: dict) -> dict:
    igw = get_gateway(ctx, p["InternetGatewayId"])
    vpc = lock_vpc(ctx, p["VpcId"])
    if igw.vpc_id is not None:
        raise ResourceAlreadyAssociated(f"resource {igw.id} is already attached to network {igw.vpc_id}")
    other = ctx.session.scalars(select(InternetGateway.id).where(InternetGateway.vpc_id == vpc.id)).first()
    if other is not None:
        raise ResourceAlreadyAssociated(f"Network {vpc.id} already has an internet gateway attached")
    igw.vpc_id = vpc.id
    try:
        ctx.session.flush()  # the unique vpc_id: a concurrent attach of another gateway loses
    except IntegrityError:
        raise ResourceAlreadyAssociated(f"Network {vpc.id} already has an internet gateway attached") from None
    routing.changed(ctx, vpc.id)  # routes to it become paths
    return {}


@action("DetachInternetGateway")
def detach_internet_gateway(ctx: Context, p: dict) -> dict:
    igw = get_gateway(ctx, p["InternetGatewayId"])
    vpc = get_vpc(ctx, p["VpcId"])
    if igw.vpc_id != vpc.id:
        raise GatewayNotAttached(igw.id, vpc.id)
    # AWS refuses while instances of the VPC have public addresses mapped through it.
    mapped = ctx.session.scalars(select(Instance.id).where(
        Instance.vpc_id == vpc.id, Instance.public_ip.is_not(None), Instance.state != "terminated").limit(1)).first()
    if mapped is not None or nat_gateways.refuses_detach(ctx, vpc.id):
        raise DependencyViolation.worded(
            f"Network {vpc.id} has some mapped public address(es). Please unmap those public address(es) "
            "before detaching the gateway.")
    igw.vpc_id = None
    routing.changed(ctx, vpc.id)  # routes to it become blackholes
    return {}


@action("DeleteInternetGateway")
def delete_internet_gateway(ctx: Context, p: dict) -> dict:
    igw = get_gateway(ctx, p["InternetGatewayId"])
    if igw.vpc_id is not None:
        raise DependencyViolation.has_dependencies("internetGateway", igw.id)
    ctx.session.execute(delete(Tag).where(Tag.resource_id == igw.id, Tag.account_id == ctx.account_id))
    if ctx.session.execute(delete(InternetGateway).where(InternetGateway.id == igw.id,
                                                         InternetGateway.vpc_id.is_(None))).rowcount != 1:
        raise InvalidInternetGatewayIDNotFound(igw.id)
    return {}


INTERNET_GATEWAYS = Resource(
    "InternetGateways", lambda ctx, page, tags: [_out(r, tags[r.id]) for r in page], {
        "internet-gateway-id": lambda r: r.id,
        "attachment.vpc-id": lambda r: r.vpc_id,
        "attachment.state": lambda r: "available" if r.vpc_id else None,
        "owner-id": lambda r: r.account_id,
    }, (Selector("InternetGatewayIds", lambda r: r.id, InvalidInternetGatewayIDNotFound),))


@action("DescribeInternetGateways")
def describe_internet_gateways(ctx: Context, p: dict) -> dict:
    rows = ctx.session.scalars(select(InternetGateway).where(InternetGateway.account_id == ctx.account_id,
                                                             InternetGateway.region == ctx.region)
                               .order_by(InternetGateway.id)).all()
    return describe(ctx, INTERNET_GATEWAYS, p, rows)
