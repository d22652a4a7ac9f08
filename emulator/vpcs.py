"""VPCs and subnets: CreateVpc / DeleteVpc / CreateDefaultVpc and their attributes, subnets
inside them (CreateSubnet / DeleteSubnet / CreateDefaultSubnet / ModifySubnetAttribute), and
their Describe operations.

Every VPC comes with what AWS gives it: its default security group, a main route table holding
the local route, the default network ACL (allow all) and the account's default DHCP option set.
The default VPC (172.31.0.0/16) also gets a default subnet per zone (one /20 each) and an
internet gateway that its main table routes 0.0.0.0/0 to. DeleteVpc takes those along and
refuses (DependencyViolation) while anything a user made is still in it.

On the host a VPC is a network namespace of its own, made with its first instance (so CIDRs of
different VPCs may overlap): nothing here acts on the host."""
from __future__ import annotations

import ipaddress

from sqlalchemy import delete, func, select

from hypervisor import VpcSpec

from . import quotas
from .catalogue import REGIONS
from .dns import private_dns_domain, public_dns_domain
from .errors import (DefaultSubnetAlreadyExistsInAvailabilityZone, DefaultVpcAlreadyExists,
                     DefaultVpcDoesNotExist, DependencyViolation, InvalidParameterCombination,
                     InvalidParameterValue, InvalidSubnetConflict, InvalidSubnetIDNotFound,
                     InvalidSubnetRange, InvalidVpcIDNotFound, InvalidVpcRange, MissingInput,
                     MissingParameter, SubnetLimitExceeded, Unsupported, VpcLimitExceeded)
from .ids import new_id
from .models import (Instance, InternetGateway, NatGateway, NetworkAcl, SecurityGroup, SecurityGroupRule, Subnet,
                     Tag, Vpc)
from .query import Resource, Selector, describe
from .registry import Context, action
from .tags import refuse_other_tag_types, set_tags, tag_dict, tag_list, tag_specifications

DEFAULT_VPC_CIDR = "172.31.0.0/16"
DEFAULT_SUBNET_PREFIX = 20
SMALLEST_PREFIX, LARGEST_PREFIX = 16, 28  # AWS: a VPC's or subnet's block is /16 to /28


def _vpc_defaults(ctx: Context, vpc: Vpc) -> None:
    """What every new VPC gets: default group, main route table, default network ACL."""
    from . import network_acls, route_tables
    from .security_groups import create_default_group

    ctx.session.flush()
    create_default_group(ctx, vpc.id)
    route_tables.create_main_table(ctx, vpc)
    network_acls.create_default_acl(ctx, vpc)


def create_default_vpc(ctx: Context) -> Vpc:
    from . import dhcp_options, internet_gateways

    vpc = Vpc(id=new_id("vpc"), account_id=ctx.account_id, region=ctx.region,
              cidr_block=DEFAULT_VPC_CIDR, is_default=True, enable_dns_hostnames=True,
              dhcp_options_id=dhcp_options.default_set(ctx).id)
    ctx.session.add(vpc)
    blocks = ipaddress.ip_network(DEFAULT_VPC_CIDR).subnets(new_prefix=DEFAULT_SUBNET_PREFIX)
    for zone, block in zip(REGIONS[ctx.region].zones, blocks):
        ctx.session.add(Subnet(id=new_id("subnet"), account_id=ctx.account_id, region=ctx.region,
                               vpc_id=vpc.id, cidr_block=str(block), availability_zone=zone.name,
                               default_for_az=True, map_public_ip_on_launch=True))
    _vpc_defaults(ctx, vpc)
    internet_gateways.attach_default_gateway(ctx, vpc)
    return vpc


def default_vpc(ctx: Context) -> Vpc | None:
    return ctx.session.scalars(select(Vpc).where(Vpc.account_id == ctx.account_id, Vpc.region == ctx.region,
                                                 Vpc.is_default.is_(True))).first()


def gives_dns_names(vpc: Vpc | None) -> bool:
    """Whether the VPC's instances get public DNS hostnames and Amazon's resolver answers their
    names: both DNS attributes true, as on AWS (a new VPC has enableDnsHostnames false, the
    default VPC true)."""
    return vpc is not None and bool(vpc.enable_dns_support) and bool(vpc.enable_dns_hostnames)


def dns_named(session, vpc_ids) -> set[str]:
    """The VPCs among vpc_ids whose instances get DNS names (gives_dns_names), in one query."""
    ids = {v for v in vpc_ids if v}
    return set(session.scalars(select(Vpc.id).where(Vpc.id.in_(ids), Vpc.enable_dns_support.is_(True),
                                                    Vpc.enable_dns_hostnames.is_(True)))) if ids else set()


def host_spec(ctx: Context, vpc: Vpc) -> VpcSpec:
    """The VPC as the host plumbs it: its subnets, DNS domains and DHCP domain-name."""
    from . import dhcp_options

    subnets = ctx.session.execute(select(Subnet.id, Subnet.cidr_block).where(
        Subnet.vpc_id == vpc.id).order_by(Subnet.id)).all()
    return VpcSpec(vpc.id, tuple(tuple(s) for s in subnets), private_dns_domain(vpc.region),
                   public_dns_domain(vpc.region), vpc.region, dhcp_options.domain_name(ctx, vpc) or "",
                   dns_support=bool(vpc.enable_dns_support), dns_names=gives_dns_names(vpc))


def owned(ctx: Context, model, resource_id: str, not_found):
    """The row of `model` with this id if it is the caller's (account and region), else
    `not_found(id)` is raised: the one lookup of the VPC family's resources."""
    row = ctx.session.get(model, resource_id)
    if row is None or row.account_id != ctx.account_id or row.region != ctx.region:
        raise not_found(resource_id)
    return row


def get_vpc(ctx: Context, vpc_id: str) -> Vpc:
    return owned(ctx, Vpc, vpc_id, InvalidVpcIDNotFound)


def lock_vpc(ctx: Context, vpc_id: str) -> Vpc:
    """get_vpc, its row locked for this transaction (PostgreSQL; SQLite has one writer anyway):
    two concurrent CreateSubnet calls then check overlaps one after the other."""
    vpc = ctx.session.scalars(select(Vpc).where(Vpc.id == vpc_id).with_for_update()).first()
    if vpc is None or vpc.account_id != ctx.account_id or vpc.region != ctx.region:
        raise InvalidVpcIDNotFound(vpc_id)
    return vpc


def get_subnet(ctx: Context, subnet_id: str) -> Subnet:
    return owned(ctx, Subnet, subnet_id, InvalidSubnetIDNotFound)


def default_subnet(ctx: Context, zone: str | None) -> Subnet:
    q = select(Subnet).where(Subnet.account_id == ctx.account_id, Subnet.region == ctx.region,
                             Subnet.default_for_az.is_(True)).order_by(Subnet.availability_zone)
    if zone:
        q = q.where(Subnet.availability_zone == zone)
    subnet = ctx.session.scalars(q).first()
    if subnet is None:
        raise MissingInput.no_default_subnet(zone)
    return subnet


RESERVED_ADDRESSES = 5  # per subnet, AWS keeps the network, router, DNS, future and broadcast addresses


def available_ips(subnet: Subnet, used: int) -> int:
    return ipaddress.ip_network(subnet.cidr_block).num_addresses - RESERVED_ADDRESSES - used


def parse_cidr(value: str | None, parameter: str = "cidrBlock") -> ipaddress.IPv4Network:
    """An IPv4 block as AWS takes it: a.b.c.d/n with no host bits set."""
    try:
        return ipaddress.IPv4Network(value or "", strict=True)
    except ValueError:
        raise InvalidParameterValue.value(value, parameter, "This is not a valid CIDR block.") from None


def _no_ipv6(p: dict) -> None:
    if p.get("AmazonProvidedIpv6CidrBlock") or p.get("Ipv6Pool") or p.get("Ipv6CidrBlock") \
            or p.get("Ipv6IpamPoolId") or p.get("Ipv6Native"):
        raise Unsupported("IPv6 CIDR blocks are not supported by this emulator: VPCs and subnets are IPv4 only.")


# --------------------------------------------------------------------------------------- VPCs

@action("CreateVpc")
def create_vpc(ctx: Context, p: dict) -> dict:
    from . import dhcp_options

    _no_ipv6(p)
    if p.get("Ipv4IpamPoolId"):
        raise Unsupported("IPAM pools are not supported by this emulator: give CidrBlock.")
    if not p.get("CidrBlock"):
        raise MissingParameter.worded("Either 'cidrBlock' or 'ipv4IpamPoolId' should be provided.")
    block = parse_cidr(p["CidrBlock"])
    if not SMALLEST_PREFIX <= block.prefixlen <= LARGEST_PREFIX:
        raise InvalidVpcRange(p["CidrBlock"])
    tenancy = p.get("InstanceTenancy") or "default"
    if tenancy not in ("default", "dedicated"):
        raise InvalidParameterValue.value(tenancy, "instanceTenancy")
    refuse_other_tag_types(p.get("TagSpecifications"), {"vpc"})
    tags = tag_specifications(p.get("TagSpecifications"), "vpc")
    quotas.per_region(ctx, Vpc, ctx.config.vpcs_per_region, VpcLimitExceeded)
    vpc = Vpc(id=new_id("vpc"), account_id=ctx.account_id, region=ctx.region, cidr_block=str(block),
              instance_tenancy=tenancy, dhcp_options_id=dhcp_options.default_set(ctx).id)
    ctx.session.add(vpc)
    _vpc_defaults(ctx, vpc)
    set_tags(ctx, vpc.id, tags)
    return {"Vpc": _vpc_out(vpc, tag_dict(tags))}


@action("CreateDefaultVpc")
def create_default_vpc_action(ctx: Context, p: dict) -> dict:
    if default_vpc(ctx) is not None:
        raise DefaultVpcAlreadyExists()
    quotas.per_region(ctx, Vpc, ctx.config.vpcs_per_region, VpcLimitExceeded)
    return {"Vpc": _vpc_out(create_default_vpc(ctx), {})}


def _has(ctx: Context, model, *where) -> bool:
    return ctx.session.scalars(select(model.id).where(*where).limit(1)).first() is not None


@action("DeleteVpc")
def delete_vpc(ctx: Context, p: dict) -> dict:
    from . import network_acls, route_tables
    from .security_groups import DEFAULT_NAME

    vpc = lock_vpc(ctx, p["VpcId"])
    if (_has(ctx, Subnet, Subnet.vpc_id == vpc.id)
            or _has(ctx, InternetGateway, InternetGateway.vpc_id == vpc.id)
            or _has(ctx, SecurityGroup, SecurityGroup.vpc_id == vpc.id, SecurityGroup.name != DEFAULT_NAME)
            or route_tables.has_custom_tables(ctx, vpc.id)
            or _has(ctx, NetworkAcl, NetworkAcl.vpc_id == vpc.id, NetworkAcl.is_default.is_(False))):
        raise DependencyViolation.has_dependencies("vpc", vpc.id)
    groups = list(ctx.session.scalars(select(SecurityGroup.id).where(SecurityGroup.vpc_id == vpc.id)))
    rules = list(ctx.session.scalars(select(SecurityGroupRule.id).where(SecurityGroupRule.group_id.in_(groups))))
    gone = [vpc.id, *groups, *rules, *route_tables.delete_tables_of(ctx, vpc.id),
            *network_acls.delete_acls_of(ctx, vpc.id)]
    ctx.session.execute(delete(SecurityGroupRule).where(SecurityGroupRule.group_id.in_(groups)))
    ctx.session.execute(delete(SecurityGroup).where(SecurityGroup.id.in_(groups)))
    ctx.session.execute(delete(Tag).where(Tag.resource_id.in_(gone), Tag.account_id == ctx.account_id))
    # Conditional, as DeleteSecurityGroup's: of two concurrent deletes one answers NotFound.
    if ctx.session.execute(delete(Vpc).where(Vpc.id == vpc.id)).rowcount != 1:
        raise InvalidVpcIDNotFound(vpc.id)
    return {}


# AWS still accepts some filter names of the old camelCase API beside the documented ones, and
# clients send them: Terraform's `data "aws_vpc" { default = true }` filters on isDefault, its
# aws_subnet data source on availabilityZone, availabilityZoneId, defaultForAz and cidrBlock.
VPC_FILTERS = {
    "vpc-id": lambda v: v.id,
    "cidr-block-association.association-id": lambda v: "vpc-cidr-assoc-" + v.id[4:],
    "ipv6-cidr-block-association.ipv6-cidr-block": lambda v: [],  # no IPv6 blocks here
    "cidr": lambda v: v.cidr_block,
    "cidr-block-association.cidr-block": lambda v: v.cidr_block,
    "cidr-block-association.state": lambda v: "associated",
    "dhcp-options-id": lambda v: v.dhcp_options_id,
    "is-default": lambda v: v.is_default,
    "isDefault": lambda v: v.is_default,
    "owner-id": lambda v: v.account_id,
    "state": lambda v: v.state,
    "instance-tenancy": lambda v: v.instance_tenancy,
}


def _vpc_out(v: Vpc, tags: dict | None) -> dict:
    return {"VpcId": v.id, "OwnerId": v.account_id, "CidrBlock": v.cidr_block, "State": v.state,
            "DhcpOptionsId": v.dhcp_options_id, "InstanceTenancy": v.instance_tenancy,
            "IsDefault": v.is_default, "Tags": tag_list(tags),
            "CidrBlockAssociationSet": [{"AssociationId": "vpc-cidr-assoc-" + v.id[4:],
                                         "CidrBlock": v.cidr_block,
                                         "CidrBlockState": {"State": "associated"}}]}


VPCS = Resource("Vpcs", lambda ctx, page, tags: [_vpc_out(v, tags[v.id]) for v in page], VPC_FILTERS,
                (Selector("VpcIds", lambda v: v.id, InvalidVpcIDNotFound),))


@action("DescribeVpcs")
def describe_vpcs(ctx: Context, p: dict) -> dict:
    rows = ctx.session.scalars(select(Vpc).where(Vpc.account_id == ctx.account_id, Vpc.region == ctx.region)
                               .order_by(Vpc.id)).all()
    return describe(ctx, VPCS, p, rows)


@action("DescribeVpcAttribute")
def describe_vpc_attribute(ctx: Context, p: dict) -> dict:
    vpc = get_vpc(ctx, p["VpcId"])
    attr = p["Attribute"]
    out = {"VpcId": vpc.id}
    if attr == "enableDnsSupport":
        out["EnableDnsSupport"] = {"Value": vpc.enable_dns_support}
    elif attr == "enableDnsHostnames":
        out["EnableDnsHostnames"] = {"Value": vpc.enable_dns_hostnames}
    elif attr == "enableNetworkAddressUsageMetrics":
        out["EnableNetworkAddressUsageMetrics"] = {"Value": False}
    return out


VPC_ATTRIBUTES = {"EnableDnsSupport": "enableDnsSupport", "EnableDnsHostnames": "enableDnsHostnames",
                  "EnableNetworkAddressUsageMetrics": "enableNetworkAddressUsageMetrics"}


@action("ModifyVpcAttribute")
def modify_vpc_attribute(ctx: Context, p: dict) -> dict:
    vpc = get_vpc(ctx, p["VpcId"])
    given = [m for m in VPC_ATTRIBUTES if p.get(m) is not None]
    if len(given) > 1:  # AWS: one attribute a call
        raise InvalidParameterCombination("Fields for multiple attribute types specified: "
                                          + ", ".join(VPC_ATTRIBUTES[m] for m in given))
    if not given:
        raise MissingParameter.no_attributes()
    member = given[0]
    value = (p[member] or {}).get("Value")
    if value is None:
        raise MissingParameter(f"{VPC_ATTRIBUTES[member]}.value")
    if member == "EnableDnsSupport":
        vpc.enable_dns_support = bool(value)
    elif member == "EnableDnsHostnames":
        vpc.enable_dns_hostnames = bool(value)
    elif value:
        raise Unsupported("Network address usage metrics are not supported by this emulator.")
    if member != "EnableNetworkAddressUsageMetrics":
        from .dhcp_options import replumb
        replumb(ctx, vpc.id)  # the VPC's resolver answers (or not) at once
    return {}


SUBNET_FILTERS = {
    "subnet-id": lambda s: s.id,
    "vpc-id": lambda s: s.vpc_id,
    "cidr": lambda s: s.cidr_block,
    "cidr-block": lambda s: s.cidr_block,
    "cidrBlock": lambda s: s.cidr_block,
    "availability-zone": lambda s: s.availability_zone,
    "availabilityZone": lambda s: s.availability_zone,
    "availability-zone-id": lambda s: _zone_id(s),
    "availabilityZoneId": lambda s: _zone_id(s),
    "default-for-az": lambda s: s.default_for_az,
    "defaultForAz": lambda s: s.default_for_az,
    "map-public-ip-on-launch": lambda s: s.map_public_ip_on_launch,
    "subnet-arn": lambda s: _arn(s),
    "enable-dns64": lambda s: (s.attributes or {}).get("EnableDns64", False),
    "ipv6-native": lambda s: False,
    "ipv6-cidr-block-association.ipv6-cidr-block": lambda s: [],  # no IPv6 blocks here
    "owner-id": lambda s: s.account_id,
    "state": lambda s: s.state,
}


def _zone_id(s: Subnet) -> str:
    return next(z.zone_id for z in REGIONS[s.region].zones if z.name == s.availability_zone)


def used_ips(ctx: Context, subnet_ids) -> dict[str, int]:
    q = (select(Instance.subnet_id, func.count()).where(Instance.subnet_id.in_(list(subnet_ids)),
                                                       Instance.private_ip.is_not(None))
         .group_by(Instance.subnet_id))
    return dict(ctx.session.execute(q).all())


def _subnets(ctx: Context, page: list, tags) -> list[dict]:
    used = used_ips(ctx, [s.id for s in page])
    return [{
        "SubnetId": s.id, "SubnetArn": _arn(s),
        "VpcId": s.vpc_id, "OwnerId": s.account_id, "State": s.state, "CidrBlock": s.cidr_block,
        "AvailabilityZone": s.availability_zone, "AvailabilityZoneId": _zone_id(s),
        "AvailableIpAddressCount": available_ips(s, used.get(s.id, 0)),
        "DefaultForAz": s.default_for_az, "MapPublicIpOnLaunch": s.map_public_ip_on_launch,
        "MapCustomerOwnedIpOnLaunch": False, "AssignIpv6AddressOnCreation": False,
        "Ipv6CidrBlockAssociationSet": [], "Ipv6Native": False, "Tags": tag_list(tags[s.id]),
        "EnableDns64": (s.attributes or {}).get("EnableDns64", False),
        "PrivateDnsNameOptionsOnLaunch": {
            "HostnameType": (s.attributes or {}).get("PrivateDnsHostnameTypeOnLaunch", "ip-name"),
            "EnableResourceNameDnsARecord": (s.attributes or {}).get("EnableResourceNameDnsARecordOnLaunch", False),
            "EnableResourceNameDnsAAAARecord": False},
    } for s in page]


def _arn(s: Subnet) -> str:
    return f"arn:aws:ec2:{s.region}:{s.account_id}:subnet/{s.id}"


SUBNETS = Resource("Subnets", _subnets, SUBNET_FILTERS, (Selector("SubnetIds", lambda s: s.id, InvalidSubnetIDNotFound),))


@action("DescribeSubnets")
def describe_subnets(ctx: Context, p: dict) -> dict:
    rows = ctx.session.scalars(select(Subnet).where(Subnet.account_id == ctx.account_id,
                                                    Subnet.region == ctx.region).order_by(Subnet.id)).all()
    return describe(ctx, SUBNETS, p, rows)


# ------------------------------------------------------------------------------------ subnets

def _zone(ctx: Context, p: dict, vpc: Vpc) -> str:
    zones = REGIONS[ctx.region].zones
    name, zone_id = p.get("AvailabilityZone"), p.get("AvailabilityZoneId")
    if name and zone_id:
        raise InvalidParameterCombination.together("availabilityZone", "availabilityZoneId")
    if name or zone_id:
        found = next((z.name for z in zones if z.name == name or z.zone_id == zone_id), None)
        if found is None:
            param = "availabilityZone" if name else "availabilityZoneId"
            raise InvalidParameterValue.value(
                name or zone_id, param, "Subnets can currently only be created in the following availability "
                "zones: " + ", ".join(z.name if name else z.zone_id for z in zones) + ".")
        return found
    # AWS picks a zone for the caller: here the zone with the fewest of this VPC's subnets.
    counts = dict(ctx.session.execute(select(Subnet.availability_zone, func.count()).where(
        Subnet.vpc_id == vpc.id).group_by(Subnet.availability_zone)).all())
    return min(zones, key=lambda z: counts.get(z.name, 0)).name


def _check_block(ctx: Context, vpc: Vpc, cidr: str) -> str:
    block = parse_cidr(cidr)
    if not block.subnet_of(ipaddress.IPv4Network(vpc.cidr_block)) \
            or not SMALLEST_PREFIX <= block.prefixlen <= LARGEST_PREFIX:
        raise InvalidSubnetRange(cidr)
    for other in ctx.session.scalars(select(Subnet.cidr_block).where(Subnet.vpc_id == vpc.id)):
        if block.overlaps(ipaddress.IPv4Network(other)):
            raise InvalidSubnetConflict(cidr)
    return str(block)


def _subnet_out(ctx: Context, subnet: Subnet, tags: dict) -> dict:
    return _subnets(ctx, [subnet], {subnet.id: tags})[0]


@action("CreateSubnet")
def create_subnet(ctx: Context, p: dict) -> dict:
    _no_ipv6(p)
    if p.get("OutpostArn") or p.get("Ipv4IpamPoolId"):
        raise Unsupported("Outposts and IPAM pools are not supported by this emulator.")
    vpc = lock_vpc(ctx, p["VpcId"])
    if not p.get("CidrBlock"):
        raise MissingParameter("CidrBlock")
    cidr = _check_block(ctx, vpc, p["CidrBlock"])
    zone = _zone(ctx, p, vpc)
    refuse_other_tag_types(p.get("TagSpecifications"), {"subnet"})
    tags = tag_specifications(p.get("TagSpecifications"), "subnet")
    quotas.per_vpc(ctx, Subnet, vpc.id, ctx.config.subnets_per_vpc, SubnetLimitExceeded)
    subnet = Subnet(id=new_id("subnet"), account_id=ctx.account_id, region=ctx.region, vpc_id=vpc.id,
                    cidr_block=cidr, availability_zone=zone, default_for_az=False,
                    map_public_ip_on_launch=False, state="available")
    ctx.session.add(subnet)
    ctx.session.flush()
    set_tags(ctx, subnet.id, tags)
    return {"Subnet": _subnet_out(ctx, subnet, tag_dict(tags))}


@action("CreateDefaultSubnet")
def create_default_subnet(ctx: Context, p: dict) -> dict:
    _no_ipv6(p)
    vpc = default_vpc(ctx)
    if vpc is None:
        raise DefaultVpcDoesNotExist()
    vpc = lock_vpc(ctx, vpc.id)
    zone = _zone(ctx, {"AvailabilityZone": p.get("AvailabilityZone"),
                       "AvailabilityZoneId": p.get("AvailabilityZoneId")}, vpc)
    existing = ctx.session.scalars(select(Subnet).where(Subnet.vpc_id == vpc.id, Subnet.availability_zone == zone,
                                                        Subnet.default_for_az.is_(True))).first()
    if existing is not None:
        raise DefaultSubnetAlreadyExistsInAvailabilityZone(zone, existing.id)
    taken = [ipaddress.IPv4Network(c) for c in ctx.session.scalars(select(Subnet.cidr_block).where(
        Subnet.vpc_id == vpc.id))]
    block = next((b for b in ipaddress.IPv4Network(vpc.cidr_block).subnets(new_prefix=DEFAULT_SUBNET_PREFIX)
                  if not any(b.overlaps(t) for t in taken)), None)
    if block is None:
        raise InvalidSubnetConflict.worded(f"There is no room in the default VPC {vpc.id} for another /20 "
                                           "default subnet.")
    subnet = Subnet(id=new_id("subnet"), account_id=ctx.account_id, region=ctx.region, vpc_id=vpc.id,
                    cidr_block=str(block), availability_zone=zone, default_for_az=True,
                    map_public_ip_on_launch=True, state="available")
    ctx.session.add(subnet)
    ctx.session.flush()
    return {"Subnet": _subnet_out(ctx, subnet, {})}


def subnet_in_use(ctx: Context, subnet_id: str) -> bool:
    """An instance, a network interface or a NAT gateway that is not gone holds an address in it."""
    from .network_interfaces import in_use_by  # it imports this module
    return (ctx.session.scalars(select(Instance.id).where(Instance.subnet_id == subnet_id,
                                                          Instance.state != "terminated").limit(1)).first() is not None
            or in_use_by(ctx, subnet_id=subnet_id)
            or ctx.session.scalars(select(NatGateway.id).where(NatGateway.subnet_id == subnet_id,
                                                               NatGateway.state != "deleted").limit(1)).first()
            is not None)


@action("DeleteSubnet")
def delete_subnet(ctx: Context, p: dict) -> dict:
    from . import network_acls, route_tables

    subnet = get_subnet(ctx, p["SubnetId"])
    lock_vpc(ctx, subnet.vpc_id)  # against a launch into it at the same time (PostgreSQL)
    if subnet_in_use(ctx, subnet.id):
        raise DependencyViolation.has_dependencies("subnet", subnet.id)
    route_tables.forget_subnet(ctx, subnet.id)
    network_acls.forget_subnet(ctx, subnet.id)
    ctx.session.execute(delete(Tag).where(Tag.resource_id == subnet.id, Tag.account_id == ctx.account_id))
    if ctx.session.execute(delete(Subnet).where(Subnet.id == subnet.id)).rowcount != 1:
        raise InvalidSubnetIDNotFound(subnet.id)
    return {}


# ModifySubnetAttribute members kept in Subnet.attributes (as booleans or the hostname type).
SUBNET_SETTINGS = ("EnableDns64", "EnableResourceNameDnsARecordOnLaunch", "PrivateDnsHostnameTypeOnLaunch")
SUBNET_REFUSED = {  # member -> why it cannot be true here
    "AssignIpv6AddressOnCreation": "The subnet has no IPv6 CIDR block (IPv6 is not supported by this emulator).",
    "EnableResourceNameDnsAAAARecordOnLaunch": "IPv6 is not supported by this emulator.",
    "MapCustomerOwnedIpOnLaunch": "Customer-owned IP pools (Outposts) are not supported by this emulator.",
}


@action("ModifySubnetAttribute")
def modify_subnet_attribute(ctx: Context, p: dict) -> dict:
    subnet = get_subnet(ctx, p["SubnetId"])
    given = [m for m in ("MapPublicIpOnLaunch", *SUBNET_SETTINGS, *SUBNET_REFUSED, "CustomerOwnedIpv4Pool",
                         "EnableLniAtDeviceIndex", "DisableLniAtDeviceIndex") if p.get(m) is not None]
    if not given:
        raise MissingParameter.no_attributes()
    if len(given) > 1:  # AWS: one attribute a call
        raise InvalidParameterCombination("Fields for multiple attribute types specified: " + ", ".join(
            m[0].lower() + m[1:] for m in given))
    member = given[0]
    value = p[member]
    if isinstance(value, dict):  # AttributeBooleanValue
        value = value.get("Value")
        if value is None:
            raise MissingParameter(f"{member[0].lower() + member[1:]}.value")
    if member == "MapPublicIpOnLaunch":
        subnet.map_public_ip_on_launch = bool(value)
    elif member in SUBNET_SETTINGS:
        subnet.attributes = {**(subnet.attributes or {}), member: value}
    elif member in SUBNET_REFUSED:
        if value:
            raise InvalidParameterValue(SUBNET_REFUSED[member])
    else:
        raise Unsupported(f"{member} is not supported by this emulator (no Outposts or local network interfaces).")
    return {}
