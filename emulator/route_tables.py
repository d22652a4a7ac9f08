"""Route tables: CreateRouteTable, DeleteRouteTable, DescribeRouteTables, CreateRoute,
ReplaceRoute, DeleteRoute, AssociateRouteTable, DisassociateRouteTable,
ReplaceRouteTableAssociation.

Every VPC has one main table (its main association row, subnet None), made with the VPC and
holding the local route (destination the VPC's block, target `local`, immutable). A subnet uses
the table it is explicitly associated with, else the main one. A route whose target is gone (a
deleted or detached gateway, a terminated instance) stays, in state `blackhole`, as on AWS.

Every change reaches the host through routing.py (`vpc.routes`): a subnet's traffic leaves the
VPC only where its table routes it to the attached internet gateway or a NAT gateway."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from .errors import (InvalidAssociationIDNotFound, InvalidGatewayIDNotFound, InvalidInstanceIDNotFound,
                     InvalidInternetGatewayIDNotFound, InvalidNatGatewayIDNotFound,
                     InvalidNetworkInterfaceIDNotFound, InvalidParameterCombination, InvalidParameterValue,
                     InvalidRouteNotFound, InvalidRouteTableIDNotFound, MissingParameter, ResourceAlreadyAssociated,
                     RouteAlreadyExists, Unsupported, DependencyViolation)
from .ids import new_id
from .models import (Instance, InternetGateway, NatGateway, NetworkInterface, Route, RouteTable, RouteTableAssociation,
                     Tag, Vpc)
from .query import Resource, Selector, describe
from . import routing
from .registry import Context, action
from .tags import refuse_other_tag_types, set_tags, tag_dict, tag_list, tag_specifications
from .vpcs import get_subnet, get_vpc, owned

LOCAL = "local"
# CreateRoute/ReplaceRoute targets this emulator has no resource for (yet)
OTHER_TARGETS = ("TransitGatewayId", "VpcPeeringConnectionId", "EgressOnlyInternetGatewayId", "LocalGatewayId",
                 "CarrierGatewayId", "VpcEndpointId", "CoreNetworkArn", "OdbNetworkArn")
TARGETS = ("GatewayId", "NatGatewayId", "InstanceId", "NetworkInterfaceId", *OTHER_TARGETS)


def _wire(member: str) -> str:
    return member[0].lower() + member[1:]


# ------------------------------------------------------------------ for vpcs.py and friends

def _scope(ctx: Context) -> dict:
    return {"account_id": ctx.account_id, "region": ctx.region}


def create_main_table(ctx: Context, vpc: Vpc) -> RouteTable:
    table = RouteTable(id=new_id("rtb"), vpc_id=vpc.id, **_scope(ctx))
    ctx.session.add(table)
    ctx.session.add(Route(route_table_id=table.id, destination=vpc.cidr_block, origin="CreateRouteTable",
                          **_scope(ctx)))
    ctx.session.add(RouteTableAssociation(id=new_id("rtbassoc"), route_table_id=table.id, vpc_id=vpc.id,
                                          subnet_id=None, main=True, main_of=vpc.id, **_scope(ctx)))
    ctx.session.flush()
    return table


def main_table_id(ctx: Context, vpc_id: str) -> str | None:
    return ctx.session.scalars(select(RouteTableAssociation.route_table_id).where(
        RouteTableAssociation.main_of == vpc_id)).first()


def add_default_route(ctx: Context, vpc_id: str, igw_id: str) -> None:
    ctx.session.add(Route(route_table_id=main_table_id(ctx, vpc_id), destination="0.0.0.0/0", gateway_id=igw_id,
                          origin="CreateRoute", **_scope(ctx)))
    ctx.session.flush()


def has_custom_tables(ctx: Context, vpc_id: str) -> bool:
    main = main_table_id(ctx, vpc_id)
    return ctx.session.scalars(select(RouteTable.id).where(RouteTable.vpc_id == vpc_id, RouteTable.id != main)
                               .limit(1)).first() is not None


def delete_tables_of(ctx: Context, vpc_id: str) -> list[str]:
    """Removes a VPC's tables, routes and associations; -> the ids gone (for their tags)."""
    tables = list(ctx.session.scalars(select(RouteTable.id).where(RouteTable.vpc_id == vpc_id)))
    assocs = list(ctx.session.scalars(select(RouteTableAssociation.id).where(RouteTableAssociation.vpc_id == vpc_id)))
    ctx.session.execute(delete(Route).where(Route.route_table_id.in_(tables)))
    ctx.session.execute(delete(RouteTableAssociation).where(RouteTableAssociation.vpc_id == vpc_id))
    ctx.session.execute(delete(RouteTable).where(RouteTable.vpc_id == vpc_id))
    return tables + assocs


def forget_subnet(ctx: Context, subnet_id: str) -> None:
    ctx.session.execute(delete(RouteTableAssociation).where(RouteTableAssociation.subnet_id == subnet_id))


def get_table(ctx: Context, table_id: str) -> RouteTable:
    return owned(ctx, RouteTable, table_id, InvalidRouteTableIDNotFound)


# ------------------------------------------------------------------------------------ tables

@action("CreateRouteTable")
def create_route_table(ctx: Context, p: dict) -> dict:
    vpc = get_vpc(ctx, p["VpcId"])
    refuse_other_tag_types(p.get("TagSpecifications"), {"route-table"})
    tags = tag_specifications(p.get("TagSpecifications"), "route-table")
    table = RouteTable(id=new_id("rtb"), vpc_id=vpc.id, **_scope(ctx))
    ctx.session.add(table)
    ctx.session.add(Route(route_table_id=table.id, destination=vpc.cidr_block, origin="CreateRouteTable",
                          **_scope(ctx)))
    ctx.session.flush()
    set_tags(ctx, table.id, tags)
    view = _views(ctx, [table])[0]
    return {"RouteTable": _out(view, tag_dict(tags)),
            "ClientToken": p.get("ClientToken")}


@action("DeleteRouteTable")
def delete_route_table(ctx: Context, p: dict) -> dict:
    table = get_table(ctx, p["RouteTableId"])
    if ctx.session.scalars(select(RouteTableAssociation.id).where(
            RouteTableAssociation.route_table_id == table.id).limit(1)).first() is not None:
        raise DependencyViolation.has_dependencies("routeTable", table.id)  # the main table, or subnets use it
    ctx.session.execute(delete(Route).where(Route.route_table_id == table.id))
    ctx.session.execute(delete(Tag).where(Tag.resource_id == table.id, Tag.account_id == ctx.account_id))
    if ctx.session.execute(delete(RouteTable).where(RouteTable.id == table.id)).rowcount != 1:
        raise InvalidRouteTableIDNotFound(table.id)
    return {}


# ------------------------------------------------------------------------------------ routes

def _destination(p: dict) -> str:
    if p.get("DestinationIpv6CidrBlock") or p.get("DestinationPrefixListId"):
        raise Unsupported("IPv6 and prefix-list destinations are not supported by this emulator.")
    value = p.get("DestinationCidrBlock")
    if not value:
        raise MissingParameter("destinationCidrBlock")
    try:
        return str(ipaddress.IPv4Network(value, strict=True))
    except ValueError:
        raise InvalidParameterValue.value(value, "destinationCidrBlock", "This is not a valid CIDR block.") from None


def _target(ctx: Context, table: RouteTable, p: dict, destination: str) -> dict:
    """The one target a CreateRoute/ReplaceRoute names, checked -> Route columns."""
    given = [m for m in TARGETS if p.get(m)]
    if len(given) > 1:
        raise InvalidParameterCombination("The parameter " + ", ".join(_wire(m) for m in given)
                                          + " cannot be used together: give exactly one route target")
    if not given:
        raise MissingParameter.worded("The request must contain exactly one of gatewayId, natGatewayId, "
                                      "networkInterfaceId, instanceId, vpcPeeringConnectionId, "
                                      "transitGatewayId, egressOnlyInternetGatewayId")
    member, value = given[0], p[given[0]]
    if member in OTHER_TARGETS:
        raise Unsupported(f"Route target {_wire(member)} is not supported by this emulator.")
    if member == "NatGatewayId":
        nat = ctx.session.get(NatGateway, value)
        if (nat is None or nat.account_id != ctx.account_id or nat.region != ctx.region
                or nat.state in ("deleting", "deleted", "failed")):
            raise InvalidNatGatewayIDNotFound(value)
        if nat.vpc_id != table.vpc_id:
            raise InvalidParameterValue(f"route table {table.id} and network gateway {nat.id} belong to "
                                        "different networks")
        return {"nat_gateway_id": nat.id}
    if member == "GatewayId":
        if not value.startswith("igw-"):
            raise InvalidGatewayIDNotFound(value)
        igw = owned(ctx, InternetGateway, value, InvalidInternetGatewayIDNotFound)
        if igw.vpc_id != table.vpc_id:
            raise InvalidParameterValue(f"route table {table.id} and network gateway {igw.id} belong to "
                                        "different networks")
        vpc = ctx.session.get(Vpc, table.vpc_id)
        if ipaddress.IPv4Network(destination).subnet_of(ipaddress.IPv4Network(vpc.cidr_block)):
            raise InvalidParameterValue(f"The destination CIDR block {destination} is equal to or more specific "
                                        "than one of this VPC's CIDR blocks. This route can target only an "
                                        "interface or an instance.")
        return {"gateway_id": igw.id}
    if member == "InstanceId":
        inst = owned(ctx, Instance, value, InvalidInstanceIDNotFound)
        if inst.state == "terminated":
            raise InvalidInstanceIDNotFound(value)
    else:  # any interface of the VPC, attached or not (a detached one makes a blackhole)
        eni = owned(ctx, NetworkInterface, value, InvalidNetworkInterfaceIDNotFound)
        if eni.vpc_id != table.vpc_id:
            raise InvalidParameterValue(f"route table {table.id} and network interface {eni.id} "
                                        "belong to different networks")
        return {"instance_id": eni.instance_id, "network_interface_id": eni.id}
    if inst.vpc_id != table.vpc_id:
        raise InvalidParameterValue(f"route table {table.id} and network interface {inst.network_interface_id} "
                                    "belong to different networks")
    return {"instance_id": inst.id, "network_interface_id": inst.network_interface_id}


def _route(ctx: Context, table_id: str, destination: str) -> Route | None:
    return ctx.session.get(Route, (table_id, destination))


@action("CreateRoute")
def create_route(ctx: Context, p: dict) -> dict:
    table = get_table(ctx, p["RouteTableId"])
    destination = _destination(p)
    if _route(ctx, table.id, destination) is not None:
        raise RouteAlreadyExists(destination, table.id)
    target = _target(ctx, table, p, destination)
    ctx.session.add(Route(route_table_id=table.id, destination=destination, origin="CreateRoute", **target,
                          **_scope(ctx)))
    try:
        ctx.session.flush()  # the primary key: of two concurrent creates one answers RouteAlreadyExists
    except IntegrityError:
        raise RouteAlreadyExists(destination, table.id) from None
    routing.changed(ctx, table.vpc_id)
    return {"Return": True}


def _existing(ctx: Context, table: RouteTable, p: dict, verb: str) -> Route:
    destination = _destination(p)
    route = _route(ctx, table.id, destination)
    if route is None:
        if verb == "replace":
            raise InvalidParameterValue(f"There is no route defined for '{destination}' in the route table. "
                                        "Use CreateRoute instead.")
        raise InvalidRouteNotFound(destination, table.id)
    if route.origin == "CreateRouteTable" and _is_local(route):
        raise InvalidParameterValue(f"cannot {verb} local route {destination} in route table {table.id}")
    return route


@action("ReplaceRoute")
def replace_route(ctx: Context, p: dict) -> dict:
    table = get_table(ctx, p["RouteTableId"])
    if p.get("LocalTarget"):
        raise Unsupported("LocalTarget (middlebox routing) is not supported by this emulator.")
    route = _existing(ctx, table, p, "replace")
    target = _target(ctx, table, p, route.destination)
    for column in ("gateway_id", "nat_gateway_id", "instance_id", "network_interface_id"):
        setattr(route, column, target.get(column))
    route.origin = "ReplaceRoute"
    routing.changed(ctx, table.vpc_id)
    return {}


@action("DeleteRoute")
def delete_route(ctx: Context, p: dict) -> dict:
    table = get_table(ctx, p["RouteTableId"])
    route = _existing(ctx, table, p, "remove")
    ctx.session.delete(route)
    routing.changed(ctx, table.vpc_id)
    return {}


# ------------------------------------------------------------------------------ associations

@action("AssociateRouteTable")
def associate_route_table(ctx: Context, p: dict) -> dict:
    table = get_table(ctx, p["RouteTableId"])
    if p.get("GatewayId") or p.get("PublicIpv4Pool"):
        raise Unsupported("Gateway (edge) associations are not supported by this emulator.")
    if not p.get("SubnetId"):
        raise MissingParameter("subnetId")
    subnet = get_subnet(ctx, p["SubnetId"])
    if subnet.vpc_id != table.vpc_id:
        raise InvalidParameterValue(f"route table {table.id} and subnet {subnet.id} belong to different networks")
    conflict = ResourceAlreadyAssociated(f"the specified association for route table {table.id} conflicts with "
                                         "an existing association")
    if ctx.session.scalars(select(RouteTableAssociation.id).where(
            RouteTableAssociation.subnet_id == subnet.id)).first() is not None:
        raise conflict
    assoc = RouteTableAssociation(id=new_id("rtbassoc"), route_table_id=table.id, vpc_id=table.vpc_id,
                                  subnet_id=subnet.id, main=False, main_of=None, **_scope(ctx))
    ctx.session.add(assoc)
    try:
        ctx.session.flush()  # subnet_id is unique: a concurrent association loses
    except IntegrityError:
        raise conflict from None
    routing.changed(ctx, table.vpc_id)
    return {"AssociationId": assoc.id, "AssociationState": {"State": "associated"}}


@action("DisassociateRouteTable")
def disassociate_route_table(ctx: Context, p: dict) -> dict:
    assoc = owned(ctx, RouteTableAssociation, p["AssociationId"], InvalidAssociationIDNotFound)
    if assoc.main:
        raise InvalidParameterValue(f"cannot disassociate the main route table association {assoc.id}")
    if ctx.session.execute(delete(RouteTableAssociation).where(RouteTableAssociation.id == assoc.id)).rowcount != 1:
        raise InvalidAssociationIDNotFound(assoc.id)
    routing.changed(ctx, assoc.vpc_id)
    return {}


@action("ReplaceRouteTableAssociation")
def replace_route_table_association(ctx: Context, p: dict) -> dict:
    assoc = owned(ctx, RouteTableAssociation, p["AssociationId"], InvalidAssociationIDNotFound)
    table = get_table(ctx, p["RouteTableId"])
    if table.vpc_id != assoc.vpc_id:
        what = f"subnet {assoc.subnet_id}" if assoc.subnet_id else f"vpc {assoc.vpc_id}"
        raise InvalidParameterValue(f"route table {table.id} and {what} belong to different networks")
    # AWS answers a new association id: the old one is gone.
    new = new_id("rtbassoc")
    done = ctx.session.execute(update(RouteTableAssociation).where(RouteTableAssociation.id == assoc.id)
                               .values(id=new, route_table_id=table.id)).rowcount
    if done != 1:
        raise InvalidAssociationIDNotFound(assoc.id)
    ctx.session.execute(delete(Tag).where(Tag.resource_id == assoc.id, Tag.account_id == ctx.account_id))
    routing.changed(ctx, assoc.vpc_id)
    return {"NewAssociationId": new, "AssociationState": {"State": "associated"}}


# ---------------------------------------------------------------------------------- describe

@dataclass
class _View:
    """A table with what its answer and filters need."""
    id: str
    row: RouteTable
    routes: list[dict]
    associations: list[dict]


def _is_local(route: Route) -> bool:
    return not (route.gateway_id or route.nat_gateway_id or route.instance_id or route.network_interface_id)


def _views(ctx: Context, tables: list[RouteTable]) -> list[_View]:
    ids = [t.id for t in tables]
    routes = ctx.session.scalars(select(Route).where(Route.route_table_id.in_(ids))
                                 .order_by(Route.route_table_id, Route.destination)).all()
    assocs = ctx.session.scalars(select(RouteTableAssociation).where(RouteTableAssociation.route_table_id.in_(ids))
                                 .order_by(RouteTableAssociation.id)).all()
    gateways = dict(ctx.session.execute(select(InternetGateway.id, InternetGateway.vpc_id).where(
        InternetGateway.id.in_([r.gateway_id for r in routes if r.gateway_id]))).all())
    nats = set(ctx.session.scalars(select(NatGateway.id).where(
        NatGateway.id.in_([r.nat_gateway_id for r in routes if r.nat_gateway_id]),
        NatGateway.state.in_(("pending", "available")))))
    # a route to an interface (by instance: its primary one) is active while the interface is
    # attached to an instance that is not terminated, and names that instance
    attached = dict(ctx.session.execute(select(NetworkInterface.id, NetworkInterface.instance_id).join(
        Instance, Instance.id == NetworkInterface.instance_id).where(
        NetworkInterface.id.in_([r.network_interface_id for r in routes if r.network_interface_id]),
        Instance.state != "terminated")).all())
    vpc_of = {t.id: t.vpc_id for t in tables}
    by_table: dict[str, list] = {i: [] for i in ids}
    for r in routes:
        out = {"DestinationCidrBlock": r.destination, "Origin": r.origin, "State": "active"}
        if _is_local(r):
            out["GatewayId"] = LOCAL
        elif r.gateway_id:
            out["GatewayId"] = r.gateway_id
            if gateways.get(r.gateway_id) != vpc_of[r.route_table_id]:
                out["State"] = "blackhole"  # deleted or detached
        elif r.nat_gateway_id:
            out["NatGatewayId"] = r.nat_gateway_id
            if r.nat_gateway_id not in nats:
                out["State"] = "blackhole"  # deleted
        else:
            instance_id = attached.get(r.network_interface_id) or r.instance_id
            out.update({"NetworkInterfaceId": r.network_interface_id, "InstanceOwnerId": r.account_id})
            if instance_id:
                out["InstanceId"] = instance_id
            if r.network_interface_id not in attached:
                out["State"] = "blackhole"
        by_table[r.route_table_id].append(out)
    assoc_by_table: dict[str, list] = {i: [] for i in ids}
    for a in assocs:
        item = {"Main": a.main, "RouteTableAssociationId": a.id, "RouteTableId": a.route_table_id,
                "AssociationState": {"State": "associated"}}
        if a.subnet_id:
            item["SubnetId"] = a.subnet_id
        assoc_by_table[a.route_table_id].append(item)
    return [_View(t.id, t, by_table[t.id], assoc_by_table[t.id]) for t in tables]


def _out(v: _View, tags: dict | None) -> dict:
    return {"RouteTableId": v.id, "VpcId": v.row.vpc_id, "OwnerId": v.row.account_id, "Routes": v.routes,
            "Associations": v.associations, "PropagatingVgws": [], "Tags": tag_list(tags or {})}


def _routes(key: str):
    return lambda v: [r.get(key) for r in v.routes if r.get(key) is not None]


def _assocs(key: str):
    return lambda v: [a.get(key) for a in v.associations if a.get(key) is not None]


ROUTE_TABLES = Resource("RouteTables", lambda ctx, page, tags: [_out(v, tags[v.id]) for v in page], {
    "route-table-id": lambda v: v.id,
    "vpc-id": lambda v: v.row.vpc_id,
    "owner-id": lambda v: v.row.account_id,
    "association.route-table-association-id": _assocs("RouteTableAssociationId"),
    "association.route-table-id": _assocs("RouteTableId"),
    "association.subnet-id": _assocs("SubnetId"),
    "association.gateway-id": lambda v: [],
    "association.main": lambda v: [a["Main"] for a in v.associations] or [False],
    "route.destination-cidr-block": _routes("DestinationCidrBlock"),
    "route.destination-ipv6-cidr-block": lambda v: [],
    "route.destination-prefix-list-id": lambda v: [],
    "route.gateway-id": _routes("GatewayId"),
    "route.instance-id": _routes("InstanceId"),
    "route.nat-gateway-id": _routes("NatGatewayId"),
    "route.origin": _routes("Origin"),
    "route.state": _routes("State"),
    "route.egress-only-internet-gateway-id": lambda v: [],
    "route.transit-gateway-id": lambda v: [],
    "route.vpc-peering-connection-id": lambda v: [],
}, (Selector("RouteTableIds", lambda v: v.id, InvalidRouteTableIDNotFound),), max_results=(5, 100))


@action("DescribeRouteTables")
def describe_route_tables(ctx: Context, p: dict) -> dict:
    tables = ctx.session.scalars(select(RouteTable).where(RouteTable.account_id == ctx.account_id,
                                                          RouteTable.region == ctx.region)
                                 .order_by(RouteTable.id)).all()
    return describe(ctx, ROUTE_TABLES, p, _views(ctx, list(tables)))
