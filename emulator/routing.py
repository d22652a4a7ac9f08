"""Route tables on the wire: what each subnet of a VPC may reach outside it, rendered from the
database, and the host task that applies it (`driver.apply_routes`).

A subnet uses its explicitly associated table, else the VPC's main one. Of its routes, the host
carries those that leave the VPC: to the internet gateway attached to the VPC (traffic leaves
by the internet link; only addresses mapped 1:1 may use it), and to an available public NAT
gateway whose own subnet routes that destination to the attached internet gateway (traffic
leaves as the gateway's Elastic IP, egress only), as AWS's NAT gateway needs a public subnet to
work, and to an instance or an interface attached to one (a NAT instance, a firewall appliance:
the traffic is handed to that interface's address, whose security groups admit it or not, and
whose answers from other addresses pass only with its source/destination check off). Every
other route (to a detached or deleted gateway, a deleted NAT gateway, a terminated instance, a
detached interface) gives no path: a blackhole. Routes more specific than the VPC's own range
(to an interface: AWS's middlebox routing) stay API-only: the host's local route wins.

Whatever changes that picture (a route created, replaced or deleted, an association, a gateway
attached or detached, a NAT gateway available or deleting, an instance launched or started in
the VPC: its subnet joins the host's network) calls `changed`: like `vpc.firewall`, the
`vpc.routes` task joins the request's transaction, reads the state when it runs, and covers the
other pending ones of its VPC. The reconciler asks for every VPC with instances at start-up.
"""
from __future__ import annotations

import ipaddress

from sqlalchemy import select
from sqlalchemy.orm import Session

from .host_tasks import enqueue_once, mark_covered, pending_now
from .models import (Instance, InternetGateway, NatGateway, NetworkInterface, Route, RouteTable, RouteTableAssociation,
                     Subnet, Vpc)
from .registry import Context, Host, host_action

KIND = "vpc.routes"


def changed(ctx: Context, vpc_id: str) -> None:
    """Ask for the VPC's routing to be applied again once this transaction commits."""
    enqueue_once(ctx.session, KIND, vpc_id)
    ctx.wrote_tasks = True


def ask(session: Session, vpc_id: str) -> None:
    """changed() for code that holds a session, not a request (host actions, the reconciler)."""
    enqueue_once(session, KIND, vpc_id)


def ask_if_targeted(session: Session, vpc_id: str | None, eni_ids) -> None:
    """ask(), when a route hands traffic to one of these interfaces (its attachment or its
    instance changed: the hop comes or goes)."""
    ids = list(eni_ids)
    if vpc_id and ids and session.scalar(select(Route.destination).where(
            Route.network_interface_id.in_(ids)).limit(1)) is not None:
        ask(session, vpc_id)


def _covers(route_destination: str, destination: str) -> bool:
    return ipaddress.IPv4Network(destination).subnet_of(ipaddress.IPv4Network(route_destination))


def desired(session: Session, vpc_id: str) -> dict[str, dict[str, str | dict | None]]:
    """subnet CIDR -> {destination: None (internet gateway), a NAT gateway's public address, or
    {"next_hop": an attached interface's private address}} (Driver.apply_routes' form)."""
    subnets = dict(session.execute(select(Subnet.id, Subnet.cidr_block).where(Subnet.vpc_id == vpc_id)).all())
    main, explicit = None, {}
    for table_id, subnet_id, is_main in session.execute(select(
            RouteTableAssociation.route_table_id, RouteTableAssociation.subnet_id, RouteTableAssociation.main)
            .where(RouteTableAssociation.vpc_id == vpc_id)):
        if is_main:
            main = table_id
        elif subnet_id:
            explicit[subnet_id] = table_id
    tables = list(session.scalars(select(RouteTable.id).where(RouteTable.vpc_id == vpc_id)))
    routes: dict[str, list[Route]] = {t: [] for t in tables}
    for r in session.scalars(select(Route).where(Route.route_table_id.in_(tables))):
        routes[r.route_table_id].append(r)
    igw = session.scalar(select(InternetGateway.id).where(InternetGateway.vpc_id == vpc_id))
    nats = {n.id: n for n in session.scalars(select(NatGateway).where(
        NatGateway.vpc_id == vpc_id, NatGateway.state == "available", NatGateway.connectivity_type == "public",
        NatGateway.public_ip.is_not(None)))}
    # interfaces a route may hand traffic to: attached to an instance that is not terminated
    hops = dict(session.execute(select(NetworkInterface.id, NetworkInterface.private_ip).join(
        Instance, Instance.id == NetworkInterface.instance_id).where(
        NetworkInterface.vpc_id == vpc_id, NetworkInterface.attachment_state == "attached",
        Instance.state != "terminated")).all())
    vpc_cidr = session.scalar(select(Vpc.cidr_block).where(Vpc.id == vpc_id))

    def table_of(subnet_id: str) -> str | None:
        return explicit.get(subnet_id, main)

    def to_internet(table_id: str | None, destination: str) -> bool:
        return igw is not None and any(r.gateway_id == igw and _covers(r.destination, destination)
                                       for r in routes.get(table_id, []))

    out: dict[str, dict[str, str | None]] = {}
    for subnet_id, cidr in sorted(subnets.items(), key=lambda s: s[1]):
        table_id = table_of(subnet_id)
        leaves: dict[str, str | None] = {}
        for r in routes.get(table_id, []):
            if igw is not None and r.gateway_id == igw:
                leaves[r.destination] = None
            elif r.nat_gateway_id in nats:
                nat = nats[r.nat_gateway_id]
                if to_internet(table_of(nat.subnet_id), r.destination):
                    leaves[r.destination] = nat.public_ip
            elif r.network_interface_id in hops and not (vpc_cidr and _covers(vpc_cidr, r.destination)):
                leaves[r.destination] = {"next_hop": hops[r.network_interface_id]}
        out[str(ipaddress.IPv4Network(cidr))] = leaves
    return out


@host_action(KIND)
def apply_on_host(host: Host, vpc_id: str) -> None:
    with host.Session() as session:
        covered = pending_now(session, KIND, vpc_id)
        routes = desired(session, vpc_id)
    host.driver.apply_routes(vpc_id, routes)
    with host.Session() as session:
        mark_covered(session, covered)


def reconcile(session: Session) -> None:
    """At start-up: apply every VPC's routing again for every VPC that has instances."""
    for vpc_id in session.scalars(select(Instance.vpc_id).where(Instance.state != "terminated").distinct()):
        ask(session, vpc_id)
