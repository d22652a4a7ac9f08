"""VPCs and subnets as records: the default VPC (172.31.0.0/16) and its default subnets (one /20
per zone), DescribeVpcs and DescribeSubnets."""
from __future__ import annotations

import ipaddress

from sqlalchemy import func, select

from .catalogue import REGIONS
from .errors import InvalidSubnetIDNotFound, InvalidVpcIDNotFound, MissingInput
from .ids import new_id
from .models import Instance, Subnet, Vpc
from .query import Resource, Selector, describe
from .registry import Context, action
from .tags import tag_list

DEFAULT_VPC_CIDR = "172.31.0.0/16"


def create_default_vpc(ctx: Context) -> Vpc:
    from .security_groups import create_default_group

    vpc = Vpc(id=new_id("vpc"), account_id=ctx.account_id, region=ctx.region,
              cidr_block=DEFAULT_VPC_CIDR, is_default=True, enable_dns_hostnames=True)
    ctx.session.add(vpc)
    blocks = ipaddress.ip_network(DEFAULT_VPC_CIDR).subnets(new_prefix=20)
    for zone, block in zip(REGIONS[ctx.region].zones, blocks):
        ctx.session.add(Subnet(id=new_id("subnet"), account_id=ctx.account_id, region=ctx.region,
                               vpc_id=vpc.id, cidr_block=str(block), availability_zone=zone.name,
                               default_for_az=True, map_public_ip_on_launch=True))
    ctx.session.flush()
    create_default_group(ctx, vpc.id)
    return vpc


def default_vpc(ctx: Context) -> Vpc | None:
    return ctx.session.scalars(select(Vpc).where(Vpc.account_id == ctx.account_id, Vpc.region == ctx.region,
                                                 Vpc.is_default.is_(True))).first()


def get_vpc(ctx: Context, vpc_id: str) -> Vpc:
    vpc = ctx.session.get(Vpc, vpc_id)
    if vpc is None or vpc.account_id != ctx.account_id or vpc.region != ctx.region:
        raise InvalidVpcIDNotFound(vpc_id)
    return vpc


def get_subnet(ctx: Context, subnet_id: str) -> Subnet:
    subnet = ctx.session.get(Subnet, subnet_id)
    if subnet is None or subnet.account_id != ctx.account_id or subnet.region != ctx.region:
        raise InvalidSubnetIDNotFound(subnet_id)
    return subnet


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


# AWS still accepts some filter names of the old camelCase API beside the documented ones, and
# clients send them: Terraform's `data "aws_vpc" { default = true }` filters on isDefault, its
# aws_subnet data source on availabilityZone, availabilityZoneId, defaultForAz and cidrBlock.
VPC_FILTERS = {
    "vpc-id": lambda v: v.id,
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


def _vpc_out(v: Vpc, tags: dict) -> dict:
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
        "SubnetId": s.id, "SubnetArn": f"arn:aws:ec2:{s.region}:{s.account_id}:subnet/{s.id}",
        "VpcId": s.vpc_id, "OwnerId": s.account_id, "State": s.state, "CidrBlock": s.cidr_block,
        "AvailabilityZone": s.availability_zone, "AvailabilityZoneId": _zone_id(s),
        "AvailableIpAddressCount": available_ips(s, used.get(s.id, 0)),
        "DefaultForAz": s.default_for_az, "MapPublicIpOnLaunch": s.map_public_ip_on_launch,
        "MapCustomerOwnedIpOnLaunch": False, "AssignIpv6AddressOnCreation": False,
        "Ipv6CidrBlockAssociationSet": [], "Ipv6Native": False, "Tags": tag_list(tags[s.id]),
        "PrivateDnsNameOptionsOnLaunch": {"HostnameType": "ip-name", "EnableResourceNameDnsARecord": False,
                                          "EnableResourceNameDnsAAAARecord": False},
    } for s in page]


SUBNETS = Resource("Subnets", _subnets, SUBNET_FILTERS, (Selector("SubnetIds", lambda s: s.id, InvalidSubnetIDNotFound),))


@action("DescribeSubnets")
def describe_subnets(ctx: Context, p: dict) -> dict:
    rows = ctx.session.scalars(select(Subnet).where(Subnet.account_id == ctx.account_id,
                                                    Subnet.region == ctx.region).order_by(Subnet.id)).all()
    return describe(ctx, SUBNETS, p, rows)
