"""Network interfaces: DescribeNetworkInterfaces lists every instance's primary interface (its
eni- id, MAC, subnet and addresses are columns of the instance's row), from launch until the
instance is terminated. Creating, attaching and detaching interfaces of their own is left for
later (Terraform needs only this listing, e.g. to see that no interface still uses a security
group it is destroying)."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from . import security_groups
from .dns import private_dns_name, public_dns_name
from .errors import InvalidNetworkInterfaceIDNotFound
from .models import Instance
from .query import Resource, Selector, describe
from .registry import Context, action
from .tags import tag_list


@dataclass
class _Eni:
    """An instance's primary interface as the describe pipeline sees it (id: the eni- id)."""
    id: str
    row: Instance
    groups: dict[str, str]  # id -> name, for every group of the listed instances


def _association(r: Instance) -> dict | None:
    if not r.public_ip:
        return None
    return {"IpOwnerId": "amazon", "PublicIp": r.public_ip, "PublicDnsName": public_dns_name(r.region, r.public_ip)}


def _out(e: _Eni, tags: dict) -> dict:
    r = e.row
    dns = private_dns_name(r.region, r.private_ip)
    association = _association(r)
    return {
        "NetworkInterfaceId": r.network_interface_id, "SubnetId": r.subnet_id, "VpcId": r.vpc_id,
        "AvailabilityZone": r.availability_zone, "Description": "", "OwnerId": r.account_id,
        "RequesterManaged": False, "Status": "in-use", "MacAddress": r.mac_address, "InterfaceType": "interface",
        "PrivateIpAddress": r.private_ip, "PrivateDnsName": dns,
        "SourceDestCheck": (r.attributes or {}).get("SourceDestCheck", True),
        "Groups": [{"GroupId": g, "GroupName": e.groups.get(g, "")} for g in r.security_group_ids],
        "Attachment": {"AttachmentId": "eni-attach-" + r.network_interface_id[4:], "DeviceIndex": 0,
                       "NetworkCardIndex": 0, "InstanceId": r.id, "InstanceOwnerId": r.account_id,
                       "Status": "attached", "AttachTime": r.launch_time, "DeleteOnTermination": True},
        "Association": association, "Ipv6Addresses": [], "Ipv4Prefixes": [], "Ipv6Prefixes": [],
        "PrivateIpAddresses": [{"PrivateIpAddress": r.private_ip, "PrivateDnsName": dns, "Primary": True,
                                "Association": association}],
        "TagSet": tag_list(tags),
    }


def _public(e: _Eni) -> list:
    return [e.row.public_ip] if e.row.public_ip else []


ENI_FILTERS = {
    "network-interface-id": lambda e: e.id,
    "addresses.private-ip-address": lambda e: e.row.private_ip,
    "addresses.primary": lambda e: True,
    "addresses.association.public-ip": _public,
    "addresses.association.owner-id": lambda e: "amazon" if e.row.public_ip else None,
    "association.public-ip": _public,
    "association.ip-owner-id": lambda e: "amazon" if e.row.public_ip else None,
    "association.public-dns-name": lambda e: public_dns_name(e.row.region, e.row.public_ip) if e.row.public_ip else None,
    "attachment.attachment-id": lambda e: "eni-attach-" + e.id[4:],
    "attachment.instance-id": lambda e: e.row.id,
    "attachment.instance-owner-id": lambda e: e.row.account_id,
    "attachment.device-index": lambda e: 0,
    "attachment.status": lambda e: "attached",
    "attachment.attach-time": lambda e: e.row.launch_time,
    "attachment.delete-on-termination": lambda e: True,
    "attachment.network-card-index": lambda e: 0,
    "availability-zone": lambda e: e.row.availability_zone,
    "description": lambda e: "",
    "group-id": lambda e: e.row.security_group_ids,
    "group-name": lambda e: [e.groups.get(g, "") for g in e.row.security_group_ids],
    "interface-type": lambda e: "interface",
    "mac-address": lambda e: e.row.mac_address,
    "owner-id": lambda e: e.row.account_id,
    "private-ip-address": lambda e: e.row.private_ip,
    "private-dns-name": lambda e: private_dns_name(e.row.region, e.row.private_ip),
    "requester-managed": lambda e: False,
    "source-dest-check": lambda e: (e.row.attributes or {}).get("SourceDestCheck", True),
    "status": lambda e: "in-use",
    "subnet-id": lambda e: e.row.subnet_id,
    "vpc-id": lambda e: e.row.vpc_id,
}

INTERFACES = Resource("NetworkInterfaces", lambda ctx, page, tags: [_out(e, tags[e.id]) for e in page],
                      ENI_FILTERS, (Selector("NetworkInterfaceIds", lambda e: e.id, InvalidNetworkInterfaceIDNotFound),),
                      ids_exclude_max_results=("NetworkInterfaceIds", "networkInterfaceIds"))


@action("DescribeNetworkInterfaces")
def describe_network_interfaces(ctx: Context, p: dict) -> dict:
    rows = ctx.session.scalars(select(Instance).where(
        Instance.account_id == ctx.account_id, Instance.region == ctx.region, Instance.state != "terminated",
        Instance.private_ip.is_not(None)).order_by(Instance.network_interface_id)).all()
    groups = security_groups.group_names(ctx, {g for r in rows for g in r.security_group_ids})
    return describe(ctx, INTERFACES, p, [_Eni(r.network_interface_id, r, groups) for r in rows])
