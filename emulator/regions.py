"""Regions, availability zones and account attributes; each region its own namespace."""
from __future__ import annotations

from sqlalchemy import select

from .catalogue import REGIONS
from .models import RegionState, Vpc
from .errors import InvalidParameterValue
from .query import Resource, Selector, describe
from .registry import Context, action


def ensure_region_defaults(ctx: Context) -> None:
    """Create what a new AWS account finds in a region: the public images (region-wide),
    the default VPC with a default subnet per zone and its default security group."""
    from . import images, vpcs

    session = ctx.session
    if session.get(RegionState, ("", ctx.region)) is None:
        images.register_public_images(ctx)
        session.add(RegionState(account_id="", region=ctx.region, settings={}))
        session.flush()
    if session.get(RegionState, (ctx.account_id, ctx.region)) is None:
        vpcs.create_default_vpc(ctx)
        session.add(RegionState(account_id=ctx.account_id, region=ctx.region, settings={}))
        session.flush()


def _endpoint(name: str) -> str:
    return f"ec2.{name}.amazonaws.com"


REGION_FILTERS = {
    "endpoint": lambda r: _endpoint(r.name),
    "region-name": lambda r: r.name,
    "opt-in-status": lambda r: "opted-in" if r.opt_in else "opt-in-not-required",
}


REGIONS_LISTED = Resource(
    "Regions", lambda ctx, page, tags: [{"RegionName": r.name, "Endpoint": _endpoint(r.name),
                                         "OptInStatus": REGION_FILTERS["opt-in-status"](r)} for r in page],
    REGION_FILTERS, (Selector("RegionNames", lambda r: r.name, InvalidParameterValue.region),),
    max_results=None, tagged=False)


@action("DescribeRegions")
def describe_regions(ctx: Context, p: dict) -> dict:
    return describe(ctx, REGIONS_LISTED, p, REGIONS.values())


def _zones(region: str):
    r = REGIONS[region]
    return [(r, z) for z in r.zones]


ZONE_FILTERS = {
    "zone-name": lambda rz: rz[1].name,
    "zone-id": lambda rz: rz[1].zone_id,
    "region-name": lambda rz: rz[0].name,
    "state": lambda rz: "available",
    "zone-type": lambda rz: "availability-zone",
    "group-name": lambda rz: rz[0].name,
    "network-border-group": lambda rz: rz[0].name,
    "opt-in-status": lambda rz: "opt-in-not-required",
}


ZONES = Resource(
    "AvailabilityZones", lambda ctx, page, tags: [{
        "State": "available", "OptInStatus": "opt-in-not-required", "Messages": [],
        "RegionName": r.name, "ZoneName": z.name, "ZoneId": z.zone_id, "GroupName": r.name,
        "NetworkBorderGroup": r.name, "ZoneType": "availability-zone", "GroupLongName": r.name,
    } for r, z in page], ZONE_FILTERS,
    (Selector("ZoneNames", lambda rz: rz[1].name, InvalidParameterValue.zone),
     Selector("ZoneIds", lambda rz: rz[1].zone_id, InvalidParameterValue.zone)),
    max_results=None, tagged=False)


@action("DescribeAvailabilityZones")
def describe_availability_zones(ctx: Context, p: dict) -> dict:
    return describe(ctx, ZONES, p, _zones(ctx.region))


@action("DescribeAccountAttributes")
def describe_account_attributes(ctx: Context, p: dict) -> dict:
    default_vpc = ctx.session.scalars(select(Vpc.id).where(
        Vpc.account_id == ctx.account_id, Vpc.region == ctx.region, Vpc.is_default.is_(True))).first()
    attrs = {
        "supported-platforms": ["VPC"],
        "default-vpc": [default_vpc or "none"],
        "max-instances": [str(ctx.config.max_instances)],
        "vpc-max-security-groups-per-interface": ["5"],
        "max-elastic-ips": ["5"],
        "vpc-max-elastic-ips": ["5"],
    }
    wanted = p.get("AttributeNames") or list(attrs)
    return {"AccountAttributes": [
        {"AttributeName": n, "AttributeValues": [{"AttributeValue": v} for v in attrs[n]]}
        for n in wanted if n in attrs]}
