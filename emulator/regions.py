"""Regions, availability zones and account attributes; each region its own namespace."""
from __future__ import annotations

from sqlalchemy import select

from .catalogue import REGIONS
from .models import RegionState, Vpc
from .query import apply_filters
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


def region_settings(ctx: Context) -> RegionState:
    return ctx.session.get(RegionState, (ctx.account_id, ctx.region))


def _endpoint(name: str) -> str:
    return f"ec2.{name}.amazonaws.com"


REGION_FILTERS = {
    "endpoint": lambda r: _endpoint(r.name),
    "region-name": lambda r: r.name,
    "opt-in-status": lambda r: "opted-in" if r.opt_in else "opt-in-not-required",
}


@action("DescribeRegions")
def describe_regions(ctx: Context, p: dict) -> dict:
    names = p.get("RegionNames")
    rows = list(REGIONS.values())
    if names:
        for n in names:
            if n not in REGIONS:
                from .errors import EC2Error
                raise EC2Error(f"Invalid region name: {n}", "InvalidParameterValue")
        rows = [r for r in rows if r.name in names]
    rows = apply_filters(rows, p.get("Filters"), REGION_FILTERS)
    return {"Regions": [{"RegionName": r.name, "Endpoint": _endpoint(r.name),
                         "OptInStatus": REGION_FILTERS["opt-in-status"](r)} for r in rows]}


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


def zone(ctx: Context, name: str):
    for _, z in _zones(ctx.region):
        if z.name == name:
            return z
    return None


@action("DescribeAvailabilityZones")
def describe_availability_zones(ctx: Context, p: dict) -> dict:
    from .errors import EC2Error
    rows = _zones(ctx.region)
    names, ids = p.get("ZoneNames"), p.get("ZoneIds")
    for wanted, attr in ((names, "name"), (ids, "zone_id")):
        if wanted:
            known = {getattr(z, attr) for _, z in rows}
            for w in wanted:
                if w not in known:
                    raise EC2Error(f"The zone '{w}' does not exist.", "InvalidParameterValue")
            rows = [rz for rz in rows if getattr(rz[1], attr) in wanted]
    rows = apply_filters(rows, p.get("Filters"), ZONE_FILTERS)
    return {"AvailabilityZones": [{
        "State": "available", "OptInStatus": "opt-in-not-required", "Messages": [],
        "RegionName": r.name, "ZoneName": z.name, "ZoneId": z.zone_id, "GroupName": r.name,
        "NetworkBorderGroup": r.name, "ZoneType": "availability-zone", "GroupLongName": r.name,
    } for r, z in rows]}


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
