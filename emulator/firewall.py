"""Security groups and network ACLs on the wire: a VPC's whole firewall rendered from the database, and the host
task that applies it.

Whatever changes what a VPC's firewall must be (a rule authorized, revoked or modified, a group
deleted, an instance launched, started or given other groups; its address freed when it is
terminated, whatever ended it) calls `changed` (or `ask`, from a driver event): a
`vpc.firewall` host task joins the request's transaction, so the change and the promise to
enforce it commit together. The task reads the VPC's groups, rules and instances when it runs and
hands all of it to `driver.apply_firewall`, which replaces what was there at once. So one apply
covers every change committed before it reads: it marks the other pending tasks of its VPC that
it covered as done (several changes in a row become one apply).

Network ACLs ride along (network_acls.py calls `changed` for every entry or association
change): the task hands the driver each subnet's ACL entries too, enforced in the same nft
transaction as the groups.

A launch's task is written before its `instance.start` (tasks run in order): the new port's
rules are on the host before the port is plugged. The reconciler asks for every VPC's firewall
again at start-up (`reconcile`).

What the host does not enforce (no IPv6 on guest networks; prefix lists and protocols other
than TCP, UDP and ICMP are not modelled by the driver) admits nothing: a port's rules only ever
open what AWS's would.
"""
from __future__ import annotations

import ipaddress
import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from hypervisor import AclEntry, FirewallPort, Rule, SecurityGroupRules, SubnetAcl

from .host_tasks import enqueue_once, mark_covered, pending_now
from .models import Instance, NetworkInterface, SecurityGroup, SecurityGroupRule
from .registry import Context, Host, host_action

log = logging.getLogger("ec2emu.firewall")

KIND = "vpc.firewall"


def changed(ctx: Context, vpc_id: str) -> None:
    """Ask for the VPC's firewall to be applied again once this transaction commits (once per
    transaction: the task reads everything when it runs)."""
    enqueue_once(ctx.session, KIND, vpc_id)
    ctx.wrote_tasks = True


def ask(session: Session, vpc_id: str) -> None:
    """changed() for code that holds a session, not a request (driver events, the reconciler)."""
    enqueue_once(session, KIND, vpc_id)


def _rule(r: SecurityGroupRule) -> Rule | None:
    """A rule row as the driver's Rule; None for what the host does not filter (see the top)."""
    protocol = "all" if r.ip_protocol == "-1" else r.ip_protocol
    if protocol not in ("tcp", "udp", "icmp", "all"):
        return None
    if r.cidr_ipv4:
        peer = {"cidr": str(ipaddress.IPv4Network(r.cidr_ipv4, strict=False))}
    elif r.referenced_group_id:
        peer = {"group_id": r.referenced_group_id}
    else:
        return None
    if protocol == "all":
        return Rule("all", **peer)
    return Rule(protocol, None if r.from_port == -1 else r.from_port, None if r.to_port == -1 else r.to_port,
                **peer)


def _acl_entry(e: dict) -> AclEntry:
    """An ACL entry as DescribeNetworkAcls lists it -> the driver's AclEntry."""
    protocol = None if e["Protocol"] == "-1" else int(e["Protocol"])
    ports, icmp = e.get("PortRange") or {}, e.get("IcmpTypeCode") or {}
    icmp_type = icmp.get("Type")
    return AclEntry(e["RuleNumber"], e["RuleAction"], e["CidrBlock"], protocol, ports.get("From"), ports.get("To"),
                    None if icmp_type in (None, -1) else icmp_type,
                    None if icmp_type in (None, -1) or icmp.get("Code") in (None, -1) else icmp.get("Code"))


def acls(session: Session, vpc_id: str) -> list[SubnetAcl]:
    """Each subnet of the VPC with the entries of the network ACL it uses (the '*' rule is the
    driver's own default: left out)."""
    from .network_acls import CATCH_ALL, subnet_entries

    out = []
    for sid, entries in subnet_entries(session, vpc_id).items():
        mine = [e for e in entries if e["RuleNumber"] != CATCH_ALL and e.get("CidrBlock")]
        out.append(SubnetAcl(sid, tuple(_acl_entry(e) for e in mine if not e["Egress"]),
                             tuple(_acl_entry(e) for e in mine if e["Egress"])))
    return out


def desired(session: Session, vpc_id: str) -> tuple[list[SecurityGroupRules], list[FirewallPort]]:
    """The VPC's firewall as the database says it must be: every group of the VPC with its rules
    (rules naming a group that no longer exists dropped: it has no members), and every attached
    interface (a port: an instance's primary one is named by the instance id, the others by their
    eni- id; a stopped instance keeps its interfaces and groups, as on AWS)."""
    groups = {g: ([], []) for g in session.scalars(select(SecurityGroup.id).where(SecurityGroup.vpc_id == vpc_id))}
    if groups:
        for r in session.scalars(select(SecurityGroupRule).where(SecurityGroupRule.group_id.in_(list(groups)))
                                 .order_by(SecurityGroupRule.created_at, SecurityGroupRule.id)):
            rule = _rule(r)
            if rule is not None and (rule.group_id is None or rule.group_id in groups):
                groups[r.group_id][1 if r.is_egress else 0].append(rule)
    ports = [FirewallPort(iid if index == 0 else eni_id, ip, tuple(g for g in (gids or []) if g in groups),
                          tuple(secondary or ()))
             for eni_id, iid, index, ip, secondary, gids in session.execute(
                 select(NetworkInterface.id, NetworkInterface.instance_id, NetworkInterface.device_index,
                        NetworkInterface.private_ip, NetworkInterface.secondary_ips,
                        NetworkInterface.security_group_ids).where(
                     NetworkInterface.vpc_id == vpc_id, NetworkInterface.instance_id.is_not(None))
                 .order_by(NetworkInterface.instance_id, NetworkInterface.device_index))]
    return [SecurityGroupRules(gid, tuple(i), tuple(e)) for gid, (i, e) in sorted(groups.items())], ports


@host_action(KIND)
def apply_on_host(host: Host, vpc_id: str) -> None:
    with host.Session() as session:
        covered = pending_now(session, KIND, vpc_id)
        groups, ports = desired(session, vpc_id)
        subnet_acls = acls(session, vpc_id)
    host.driver.apply_firewall(vpc_id, groups, ports, subnet_acls)
    with host.Session() as session:
        mark_covered(session, covered)


def reconcile(session: Session) -> None:
    """At start-up (and after a reconnect): apply every VPC's firewall again, from the database,
    for every VPC that has instances (the host kept the last one applied meanwhile)."""
    for vpc_id in session.scalars(select(Instance.vpc_id).where(Instance.state != "terminated").distinct()):
        ask(session, vpc_id)
