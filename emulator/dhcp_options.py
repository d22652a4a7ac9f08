"""DHCP option sets: CreateDhcpOptions, DeleteDhcpOptions, DescribeDhcpOptions,
AssociateDhcpOptions (a set, or `default`: no options).

Each account gets AWS's default set in each region (domain-name the region's private DNS
domain, domain-name-servers AmazonProvidedDNS); new VPCs are associated with it. A VPC's
domain-name is what its DHCP server hands its instances (instances.py's spec carries it to the
host)."""
from __future__ import annotations

import ipaddress

from sqlalchemy import delete, select

from .dns import private_dns_domain
from .errors import InvalidDhcpOptionIDNotFound, InvalidParameterValue, MissingParameter, DependencyViolation
from .ids import new_id
from .models import DhcpOptions, Instance, Tag, Vpc
from .query import Resource, Selector, describe
from .registry import Context, Host, action, host_action
from .tags import refuse_other_tag_types, set_tags, tag_dict, tag_list, tag_specifications
from .vpcs import get_vpc, owned

AMAZON_DNS = "AmazonProvidedDNS"
# option name -> most values AWS takes (None: no limit it documents)
OPTIONS = {"domain-name": None, "domain-name-servers": 4, "ntp-servers": 4, "netbios-name-servers": 4,
           "netbios-node-type": 1, "ipv6-address-preferred-lease-time": 1}


def default_set(ctx: Context) -> DhcpOptions:
    """The account's default option set in this region, made on first need."""
    row = ctx.session.scalars(select(DhcpOptions).where(
        DhcpOptions.account_id == ctx.account_id, DhcpOptions.region == ctx.region,
        DhcpOptions.is_default.is_(True))).first()
    if row is None:
        row = DhcpOptions(id=new_id("dopt"), account_id=ctx.account_id, region=ctx.region, is_default=True,
                          configurations=[{"Key": "domain-name", "Values": [private_dns_domain(ctx.region)]},
                                          {"Key": "domain-name-servers", "Values": [AMAZON_DNS]}])
        ctx.session.add(row)
        ctx.session.flush()
    return row


def get_set(ctx: Context, dopt_id: str) -> DhcpOptions:
    return owned(ctx, DhcpOptions, dopt_id, InvalidDhcpOptionIDNotFound)


def domain_name(ctx: Context, vpc: Vpc | None) -> str | None:
    """The domain-name option a VPC's instances get (None: none, the `default` association)."""
    if vpc is None or not vpc.dhcp_options_id or vpc.dhcp_options_id == "default":
        return None
    row = ctx.session.get(DhcpOptions, vpc.dhcp_options_id)
    for c in (row.configurations if row else []):
        if c["Key"] == "domain-name" and c["Values"]:
            return c["Values"][0]
    return None


def _check_address(value: str, key: str) -> None:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        raise InvalidParameterValue.value(value, key, "It is not a valid IPv4 address.") from None


def _configurations(items: list[dict]) -> list[dict]:
    out: dict[str, list[str]] = {}
    for item in items:
        key = item.get("Key")
        if not key:
            raise MissingParameter("DhcpConfiguration.N.Key")
        if key not in OPTIONS:
            raise InvalidParameterValue(f"Invalid DHCP option name: {key}")
        values = [v for v in (item.get("Values") or [])]
        if not values:
            raise InvalidParameterValue(f"DHCP option {key} requires at least one value")
        if key in out:
            raise InvalidParameterValue(f"DHCP option {key} specified more than once")
        limit = OPTIONS[key]
        if limit is not None and len(values) > limit:
            raise InvalidParameterValue(f"Too many values for DHCP option {key}: at most {limit}")
        if key in ("domain-name-servers", "ntp-servers", "netbios-name-servers"):
            for v in values:
                if not (key == "domain-name-servers" and v == AMAZON_DNS):
                    _check_address(v, key)
        elif key == "netbios-node-type" and values[0] not in ("1", "2", "4", "8"):
            raise InvalidParameterValue.value(values[0], key)
        elif key == "domain-name":
            for name in " ".join(values).split():
                if len(name) > 255 or not all(part and len(part) <= 63 and part.replace("-", "").isalnum()
                                              for part in name.rstrip(".").split(".")):
                    raise InvalidParameterValue.value(name, key)
        elif key == "ipv6-address-preferred-lease-time":
            if not values[0].isdigit() or not 140 <= int(values[0]) <= 2147483647:
                raise InvalidParameterValue.value(values[0], key)
        out[key] = values
    return [{"Key": k, "Values": v} for k, v in out.items()]


def _out(row: DhcpOptions, tags: dict | None) -> dict:
    return {"DhcpOptionsId": row.id, "OwnerId": row.account_id, "Tags": tag_list(tags or {}),
            "DhcpConfigurations": [{"Key": c["Key"], "Values": [{"Value": v} for v in c["Values"]]}
                                   for c in row.configurations]}


@action("CreateDhcpOptions")
def create_dhcp_options(ctx: Context, p: dict) -> dict:
    configurations = _configurations(p.get("DhcpConfigurations") or [])
    if not configurations:
        raise MissingParameter("DhcpConfiguration")
    refuse_other_tag_types(p.get("TagSpecifications"), {"dhcp-options"})
    tags = tag_specifications(p.get("TagSpecifications"), "dhcp-options")
    row = DhcpOptions(id=new_id("dopt"), account_id=ctx.account_id, region=ctx.region,
                      configurations=configurations, is_default=False)
    ctx.session.add(row)
    ctx.session.flush()
    set_tags(ctx, row.id, tags)
    return {"DhcpOptions": _out(row, tag_dict(tags))}


@action("DeleteDhcpOptions")
def delete_dhcp_options(ctx: Context, p: dict) -> dict:
    row = get_set(ctx, p["DhcpOptionsId"])
    if ctx.session.scalars(select(Vpc.id).where(Vpc.dhcp_options_id == row.id).limit(1)).first():
        raise DependencyViolation.has_dependencies("dhcpOptions", row.id)
    ctx.session.execute(delete(Tag).where(Tag.resource_id == row.id, Tag.account_id == ctx.account_id))
    if ctx.session.execute(delete(DhcpOptions).where(DhcpOptions.id == row.id)).rowcount != 1:
        raise InvalidDhcpOptionIDNotFound(row.id)
    return {}


@action("AssociateDhcpOptions")
def associate_dhcp_options(ctx: Context, p: dict) -> dict:
    vpc = get_vpc(ctx, p["VpcId"])
    wanted = p["DhcpOptionsId"]
    vpc.dhcp_options_id = "default" if wanted == "default" else get_set(ctx, wanted).id
    # Running instances pick the new options up when they renew their lease, as on AWS.
    replumb(ctx, vpc.id)
    return {}


REPLUMB = "vpc.plumb"


def replumb(ctx: Context, vpc_id: str) -> None:
    """Give the VPC's DHCP server and resolver its current settings (DHCP options, DNS
    attributes) now, if the VPC has a network on the host (instances that hold an address);
    otherwise its next plumbing (a launch or start into it) carries them."""
    if ctx.session.scalars(select(Instance.id).where(Instance.vpc_id == vpc_id, Instance.state != "terminated",
                                                     Instance.private_ip.is_not(None)).limit(1)).first():
        ctx.host_task(REPLUMB, vpc_id)


@host_action(REPLUMB)
def replumb_on_host(host: Host, vpc_id: str) -> None:
    """Give the VPC's DHCP server and resolver their current settings (the driver rewrites the
    configuration and restarts it if they changed). Reads the VPC when it runs: a later change wins."""
    from .vpcs import host_spec

    with host.Session() as session:
        vpc = session.get(Vpc, vpc_id)
        if vpc is None:
            return
        spec = host_spec(host.context(session, vpc.account_id, vpc.region), vpc)
    host.driver.ensure_vpc(spec)


def _values(row: DhcpOptions, key: str | None = None) -> list[str]:
    return [v for c in row.configurations if key is None or c["Key"] == key for v in c["Values"]]


DHCP_OPTIONS = Resource("DhcpOptions", lambda ctx, page, tags: [_out(r, tags[r.id]) for r in page], {
    "dhcp-options-id": lambda r: r.id,
    "key": lambda r: [c["Key"] for c in r.configurations],
    "value": lambda r: _values(r),
    "owner-id": lambda r: r.account_id,
}, (Selector("DhcpOptionsIds", lambda r: r.id, InvalidDhcpOptionIDNotFound),))


@action("DescribeDhcpOptions")
def describe_dhcp_options(ctx: Context, p: dict) -> dict:
    default_set(ctx)  # an account always has it, as on AWS
    rows = ctx.session.scalars(select(DhcpOptions).where(DhcpOptions.account_id == ctx.account_id,
                                                         DhcpOptions.region == ctx.region)
                               .order_by(DhcpOptions.id)).all()
    return describe(ctx, DHCP_OPTIONS, p, rows)
