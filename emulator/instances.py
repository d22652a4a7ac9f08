"""Instances: run, describe, start/stop/reboot/terminate, attributes, metadata options, console.

States follow AWS's machine (pending -> running -> stopping -> stopped -> ... -> shutting-down ->
terminated). A handler writes the intended state to the database; after the commit the driver is
told to act; the driver's events (`apply_hypervisor_event`) move the state on. Nothing waits on
a timer here.
"""
from __future__ import annotations

import base64
import functools
import hashlib
import json
import time
from datetime import datetime, timedelta

from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.orm import Session

from hypervisor import DiskSpec, HostEvent, InstanceSpec
from hypervisor.host import crash_point

from . import (addresses, attachments, block_devices, ebs_encryption, firewall, images, instance_profiles, keypairs,
               launch_templates, network_interfaces, placement_groups, routing, security_groups, spot, vpcs)
from .addresses import allocate_public_ip, elastic_ip_of, instance_gone
from .catalogue import DEFAULT_INSTANCE_TYPE, INSTANCE_TYPES, REGIONS, vcpus_and_memory
from .dns import private_dns_name, public_dns_name
from .errors import (IdempotentParameterMismatch, IncorrectInstanceState, InstanceCreditSpecificationNotSupported,
                     InstanceLimitExceeded,
                     InsufficientFreeAddressesInSubnet, InvalidAKIIDNotFound,
                     InvalidARIIDNotFound, InvalidInstanceIDMalformed, InvalidInstanceIDNotFound,
                     InvalidParameterCombination, InvalidParameterValue,
                     InvalidUserDataMalformed, MissingParameter, OperationNotPermitted,
                     UnsupportedOperation)
from .ids import new_id, well_formed
from .host_tasks import enqueue, unfinished_resources
from .models import Instance, Subnet, Tag, Volume, VolumeAttachment, Vpc, utcnow
from .models import InstanceState as S
from .times import aware
from .query import Resource, Selector, describe
from .registry import Context, Host, Interrupted, action, host_action, host_action_failed
from .tags import refuse_other_tag_types, set_tags, tag_list, tag_specifications, tags_for

STATE_CODES = {"pending": 0, "running": 16, "shutting-down": 32, "terminated": 48,
               "stopping": 64, "stopped": 80}
LIVE = ("pending", "running", "stopping", "stopped", "shutting-down")
DEFAULT_METADATA_OPTIONS = {"HttpTokens": "optional", "HttpPutResponseHopLimit": 1,
                            "HttpEndpoint": "enabled", "HttpProtocolIpv6": "disabled",
                            "InstanceMetadataTags": "disabled"}
MAX_USER_DATA = 16 * 1024
_NO_IMAGE_OF_KIND = {"kernel": InvalidAKIIDNotFound, "ramdisk": InvalidARIIDNotFound}


def _state(name: str) -> dict:
    return {"Code": STATE_CODES[name], "Name": name}


def _gmt(now: datetime) -> str:
    return now.strftime("%Y-%m-%d %H:%M:%S GMT")


# ------------------------------------------------------------------------------- addresses



# ----------------------------------------------------------------------------------- lookup

def _check_id(instance_id: str) -> None:
    if not well_formed(instance_id, "i"):
        raise InvalidInstanceIDMalformed(instance_id)


def _unexpired(ctx: Context, rows: list) -> list:
    """Terminated instances stay visible for a while, then vanish, as on AWS: expired rows met
    here are hidden and deleted (no query of its own on the describe path)."""
    cutoff = utcnow() - timedelta(seconds=ctx.config.terminated_retention_seconds)
    expired = {r.id for r in rows if r.state == "terminated" and r.terminated_at is not None
               and aware(r.terminated_at) < cutoff}
    if not expired:
        return rows
    ctx.session.execute(delete(Tag).where(Tag.resource_id.in_(expired)))
    ctx.session.execute(delete(Instance).where(Instance.id.in_(expired)))
    return [r for r in rows if r.id not in expired]


# Built once, run with parameters (statement construction costs more than a small query).
_ALL = select(*Instance.__table__.c).where(
    Instance.account_id == bindparam("account"), Instance.region == bindparam("region"))
_BY_IDS = _ALL.where(Instance.id.in_(bindparam("ids", expanding=True))).order_by(Instance.id)
_ALL = _ALL.order_by(Instance.id)


# Ids bound in one IN list at most: far below any database's bind-parameter limit (SQLite's is
# 32766, or 250000 as Debian builds it; PostgreSQL's 65535), however many ids a request names.
_IDS_PER_QUERY = 500


def _rows(ctx: Context, ids: list[str] | None = None) -> list:
    """Plain rows (read-only, no ORM bookkeeping: describing 1000 instances is a hot path),
    in id order; with ids, only those (the describe pipeline checks they all exist). More ids
    than one IN list holds read every row: the pipeline's selector keeps those named."""
    scope = {"account": ctx.account_id, "region": ctx.region}
    if ids and len(ids) <= _IDS_PER_QUERY:
        result = ctx.session.connection().execute(_BY_IDS, dict(scope, ids=ids))
    else:
        result = ctx.session.connection().execute(_ALL, scope)
    return _unexpired(ctx, result.all())


def get_instances(ctx: Context, ids: list[str]) -> list[Instance]:
    """The instances, as ORM objects to change, in the order asked; every one must exist."""
    for i in ids:
        _check_id(i)
    wanted = list(dict.fromkeys(ids))
    found = {}
    for start in range(0, len(wanted), _IDS_PER_QUERY):  # bounded IN lists, however many ids
        found.update((r.id, r) for r in ctx.session.scalars(select(Instance).where(
            Instance.account_id == ctx.account_id, Instance.region == ctx.region,
            Instance.id.in_(wanted[start:start + _IDS_PER_QUERY]))))
    missing = [i for i in ids if i not in found]
    if missing:
        raise InvalidInstanceIDNotFound(*missing)
    return [found[i] for i in dict.fromkeys(ids)]


def get_instance(ctx: Context, instance_id: str) -> Instance:
    return get_instances(ctx, [instance_id])[0]


# ---------------------------------------------------------------------------------- output

def _describe(row: Instance, tags: dict, groups: dict[str, str], volumes: list[dict], nics: list[dict],
              named: bool, placement_groups: dict[str, str], profile: dict | None) -> dict:
    region = row.region
    alive = row.state != "terminated"
    public_dns = public_dns_name(region, row.public_ip) if named else ""
    private_dns = private_dns_name(region, row.private_ip)
    sgs = [{"GroupId": g, "GroupName": groups.get(g, "")} for g in row.security_group_ids]
    attrs = row.attributes or {}
    zone_id = next((z.zone_id for z in REGIONS[region].zones if z.name == row.availability_zone), None)
    out = {
        "InstanceId": row.id, "ImageId": row.image_id, "State": _state(row.state),
        "PrivateDnsName": private_dns, "PublicDnsName": public_dns,
        "StateTransitionReason": row.state_transition_reason, "KeyName": row.key_name,
        "AmiLaunchIndex": row.launch_index, "ProductCodes": [], "InstanceType": row.instance_type,
        "LaunchTime": row.launch_time,
        "Placement": {"AvailabilityZone": row.availability_zone, "AvailabilityZoneId": zone_id,
                      "GroupName": placement_groups.get(row.placement_group_id, ""),
                      "GroupId": row.placement_group_id, "PartitionNumber": row.partition_number,
                      "Tenancy": "default"},
        "KernelId": row.kernel_id, "RamdiskId": row.ramdisk_id,
        "Monitoring": {"State": row.monitoring},
        "SubnetId": row.subnet_id if alive else None, "VpcId": row.vpc_id if alive else None,
        "PrivateIpAddress": row.private_ip, "PublicIpAddress": row.public_ip,
        "Architecture": row.architecture, "RootDeviceType": row.root_device_type,
        "RootDeviceName": row.root_device_name,
        "BlockDeviceMappings": [*(row.block_device_mappings or []), *volumes],
        "VirtualizationType": "hvm", "ClientToken": row.client_token or "",
        "Tags": tag_list(tags), "SecurityGroups": sgs,
        "SourceDestCheck": attrs.get("SourceDestCheck", True) if alive else None,
        "Hypervisor": "xen", "EbsOptimized": attrs.get("EbsOptimized", False),
        "EnaSupport": attrs.get("EnaSupport", True),
        "CpuOptions": _cpu_options(row.instance_type),
        "CapacityReservationSpecification": {"CapacityReservationPreference": "open"},
        "HibernationOptions": {"Configured": False},
        "MetadataOptions": {"State": "applied", **DEFAULT_METADATA_OPTIONS, **(row.metadata_options or {})},
        "EnclaveOptions": {"Enabled": False},
        "PlatformDetails": "Linux/UNIX", "UsageOperation": "RunInstances",
        "UsageOperationUpdateTime": row.launch_time,
        "PrivateDnsNameOptions": {"HostnameType": "ip-name", "EnableResourceNameDnsARecord": False,
                                  "EnableResourceNameDnsAAAARecord": False},
        "MaintenanceOptions": {"AutoRecovery": "default"},
        "CurrentInstanceBootMode": "legacy-bios", "BootMode": "legacy-bios",
        "IamInstanceProfile": profile,
        "InstanceLifecycle": "spot" if row.spot_request_id else None,
        "SpotInstanceRequestId": row.spot_request_id,
    }
    if row.state_reason_code:
        out["StateReason"] = {"Code": row.state_reason_code, "Message": row.state_reason_message}
    out["NetworkInterfaces"] = nics if alive and row.private_ip else []
    return out


def _cpu_options(instance_type: str) -> dict:
    vcpu = INSTANCE_TYPES.get(instance_type, {}).get("VCpuInfo", {})
    return {"CoreCount": vcpu.get("DefaultCores", 1), "ThreadsPerCore": vcpu.get("DefaultThreadsPerCore", 1)}


def describe_rows(ctx: Context, rows: list[Instance], tags: dict | None = None) -> list[dict]:
    tags = tags_for(ctx, [r.id for r in rows]) if tags is None else tags
    group_ids = {g for r in rows for g in r.security_group_ids}
    names = security_groups.group_names(ctx, group_ids)
    volumes = attachments.mappings_by_instance(ctx.session, ctx.account_id, ctx.region, [r.id for r in rows]) \
        if rows else {}
    nics = network_interfaces.for_instances(ctx, [r.id for r in rows if r.state != "terminated"])
    named = vpcs.dns_named(ctx.session, {r.vpc_id for r in rows})  # public DNS names given
    in_groups = placement_groups.names(ctx, {r.placement_group_id for r in rows})
    profiles = instance_profiles.profiles_of(ctx, [r.id for r in rows if r.state != "terminated"])
    return [_describe(r, tags.get(r.id, {}), names, volumes.get(r.id, []), nics.get(r.id, []), r.vpc_id in named,
                      in_groups, profiles.get(r.id)) for r in rows]


def _reservations(ctx: Context, rows: list[Instance], tags: dict | None = None) -> list[dict]:
    out: dict[str, dict] = {}
    for row, desc in zip(rows, describe_rows(ctx, rows, tags)):
        res = out.get(row.reservation_id)
        if res is None:
            res = out[row.reservation_id] = {"ReservationId": row.reservation_id, "OwnerId": row.account_id,
                                             "Groups": [], "Instances": []}
        res["Instances"].append(desc)
    return list(out.values())


# ------------------------------------------------------------------------------------- run

def _digest(p: dict) -> str:
    material = {k: v for k, v in p.items() if k not in ("ClientToken", "DryRun")}
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()


def _spec(ctx: Context, row: Instance) -> InstanceSpec:
    """What the host needs to bring the instance up. Its disks are its attached volumes (keys
    opened here, on the host's side: never stored or put in a task), the root one named: an
    instance without a root volume (instance-store-backed, or launched before roots were volumes)
    has its root as an overlay on its image's file. An image with no kernel of its own (one
    registered from a snapshot) boots the default kernel and ramdisk: guests here boot by direct
    kernel boot, and no image has a boot loader."""
    vcpus, memory = vcpus_and_memory(row.instance_type)
    image = images.image_by_id(ctx, row.image_id, any_owner=True)
    kernel_id = row.kernel_id or images.public_image_id(row.region, images.KERNEL_NAME)
    ramdisk_id = row.ramdisk_id or (None if row.kernel_id else images.public_image_id(row.region, images.RAMDISK_NAME))
    kernel = images.image_by_id(ctx, kernel_id, any_owner=True)
    ramdisk = images.image_by_id(ctx, ramdisk_id, any_owner=True) if ramdisk_id else None
    vpc = vpcs.host_spec(ctx, ctx.session.get(Vpc, row.vpc_id))
    attached = [a for a in attachments.of_instance(ctx.session, row.id) if a.state != "detaching"]
    volumes = {v.id: v for v in ctx.session.scalars(select(Volume).where(
        Volume.id.in_([a.volume_id for a in attached])))}
    disks = [DiskSpec(a.volume_id, a.device, ebs_encryption.passphrase(
        ctx.config, volumes[a.volume_id].wrapped_key, a.volume_id)) for a in attached if a.volume_id in volumes]
    root = next((a.volume_id for a in attached if a.device == row.root_device_name), None) \
        if row.root_device_type == "ebs" else None
    store = [DiskSpec(m["VirtualName"], m["DeviceName"], size_gib=m["SizeGiB"])
             for m in (row.attributes or {}).get("InstanceStore") or []]
    return InstanceSpec(instance_id=row.id, vcpus=vcpus, memory_mib=memory,
                        image_path=images.disk_file(ctx.config, image) if root is None else None,
                        root_disk=root, disks=disks, instance_store=store,
                        kernel_path=images.disk_file(ctx.config, kernel),
                        ramdisk_path=images.disk_file(ctx.config, ramdisk),
                        mac_address=row.mac_address, vpc_id=row.vpc_id, subnet_id=row.subnet_id,
                        private_ip=row.private_ip or "", public_ip=row.public_ip,
                        hostname=private_dns_name(row.region, row.private_ip), region=row.region,
                        dns_domain=vpc.dns_domain,
                        public_hostname=public_dns_name(row.region, row.public_ip) if vpc.dns_names else "",
                        public_dns_domain=vpc.public_dns_domain,
                        instance_type=row.instance_type, vpc_subnets=list(vpc.subnets),
                        dhcp_domain=vpc.dhcp_domain, dns_support=vpc.dns_support, dns_names=vpc.dns_names,
                        **network_interfaces.host_interfaces(ctx.session, row))


def _validate_user_data(data: str | None) -> None:
    if data is None:
        return
    try:
        raw = base64.b64decode(data, validate=True)
    except ValueError:
        raise InvalidUserDataMalformed() from None
    if len(raw) > MAX_USER_DATA:
        raise InvalidParameterValue.user_data_too_long(MAX_USER_DATA)


def _network(ctx: Context, p: dict) -> tuple[Subnet, list[str] | None, list[str] | None, str | None, bool | None]:
    """-> subnet, group ids, group names, wanted private ip, associate-public-ip override."""
    group_ids, group_names = p.get("SecurityGroupIds"), p.get("SecurityGroups")
    wanted_ip, public = p.get("PrivateIpAddress"), None
    subnet_id = p.get("SubnetId")
    nics = p.get("NetworkInterfaces") or []
    if nics:
        nic = network_interfaces.primary_of(nics)
        if subnet_id or group_ids or group_names:
            raise InvalidParameterCombination("Network interfaces and an instance-level security groups or subnet "
                                              "may not be specified on the same request")
        if nic.get("NetworkInterfaceId"):  # an existing interface becomes the primary one
            eni = network_interfaces.get_interface(ctx, nic["NetworkInterfaceId"])
            subnet_id, group_ids, wanted_ip = eni.subnet_id, None, None
        else:
            subnet_id = nic.get("SubnetId")
            group_ids = nic.get("Groups")
            wanted_ip = network_interfaces.WantedAddresses.of(nic).primary or wanted_ip
        public = nic.get("AssociatePublicIpAddress")
    zone = (p.get("Placement") or {}).get("AvailabilityZone")
    if zone and zone not in {z.name for z in REGIONS[ctx.region].zones}:
        raise InvalidParameterValue(f"Invalid availability zone: [{zone}]")
    if subnet_id:
        subnet = vpcs.get_subnet(ctx, subnet_id)
        if zone and zone != subnet.availability_zone:
            raise InvalidParameterValue(f"The specified availability zone {zone} and subnet {subnet_id} "
                                        f"are in different availability zones")
    else:
        subnet = vpcs.default_subnet(ctx, zone)
    return subnet, group_ids, group_names, wanted_ip, public


@action("RunInstances")
def run_instances(ctx: Context, p: dict) -> dict:
    return launch(ctx, p)


def launch(ctx: Context, p: dict, spot_request=None) -> dict:
    """RunInstances; also how a Spot request is fulfilled (`spot_request`: the request the one
    instance launched is for)."""
    min_count, max_count = p["MinCount"], p["MaxCount"]
    if min_count < 1:
        raise InvalidParameterValue.invalid(min_count, "minCount", "Must be at least 1.")
    if max_count < min_count:
        raise InvalidParameterValue("MinCount must be less than or equal to MaxCount")
    token = p.get("ClientToken")
    digest = _digest(p)  # of the request as sent (a template changed since does not make it another)
    if token:
        if len(token) > 64:
            raise InvalidParameterValue("The client token must be 64 characters or fewer")
        prior = ctx.session.scalars(select(Instance).where(
            Instance.account_id == ctx.account_id, Instance.region == ctx.region,
            Instance.client_token == token).order_by(Instance.launch_index)).all()
        if prior:
            if prior[0].request_digest != digest:
                raise IdempotentParameterMismatch()
            return _reservations(ctx, prior)[0]
    system_tags = []
    if p.get("LaunchTemplate"):
        p, system_tags = launch_templates.for_launch(ctx, p)
    if not p.get("ImageId"):
        raise MissingParameter("ImageId")
    image = images.launchable_image(ctx, p["ImageId"])
    images.note_launch(image)
    instance_type = p.get("InstanceType") or DEFAULT_INSTANCE_TYPE
    type_info = INSTANCE_TYPES.get(instance_type)
    if type_info is None:  # AWS's one line (the model's enum lists ~900 types; never on the wire)
        raise InvalidParameterValue.invalid(instance_type, "InstanceType")
    cpu_credits = _launch_credits(instance_type, p.get("CreditSpecification"))
    arches = type_info["ProcessorInfo"]["SupportedArchitectures"]
    if image.architecture not in arches:
        raise InvalidParameterValue(f"The instance type '{instance_type}' does not support the architecture "
                                    f"'{image.architecture}' of the specified AMI.")
    kernel_id = p.get("KernelId") or image.kernel_id
    ramdisk_id = p.get("RamdiskId") or image.ramdisk_id
    parts = []
    for ident, kind in ((kernel_id, "kernel"), (ramdisk_id, "ramdisk")):
        found = images.image_by_id(ctx, ident) if ident else None
        if ident and (found is None or found.image_type != kind):
            raise _NO_IMAGE_OF_KIND[kind](ident)
        parts.append(found)
    images.check_files(ctx, image, *parts)
    key_name = p.get("KeyName")
    if key_name:
        keypairs.get_by_name(ctx, key_name)
    _validate_user_data(p.get("UserData"))
    refuse_other_tag_types(p.get("TagSpecifications"), {"instance", "volume", "network-interface",
                                                        "spot-instances-request"})
    tags = tag_specifications(p.get("TagSpecifications"), "instance")
    volume_tags = tag_specifications(p.get("TagSpecifications"), "volume")
    interface_tags = tag_specifications(p.get("TagSpecifications"), "network-interface")
    disks = block_devices.plan(ctx, image, instance_type, p.get("BlockDeviceMappings"))
    subnet, group_ids, group_names, wanted_ip, public = _network(ctx, p)
    groups = security_groups.resolve_groups(ctx, subnet.vpc_id, group_ids, group_names, subnet_id=subnet.id)
    if wanted_ip and max_count > 1:
        raise InvalidParameterCombination("The parameter PrivateIpAddress cannot be used with MaxCount greater than 1")
    behaviour = p.get("InstanceInitiatedShutdownBehavior") or "stop"
    metadata = _metadata_options({}, p.get("MetadataOptions") or {})
    profile = instance_profiles.profile_of(ctx, p["IamInstanceProfile"]) if p.get("IamInstanceProfile") else None

    live = ctx.session.scalar(select(func.count()).select_from(Instance).where(
        Instance.account_id == ctx.account_id, Instance.region == ctx.region,
        Instance.state != "terminated"))
    room = ctx.config.max_instances - live
    if room < min_count:
        raise InstanceLimitExceeded(min_count, ctx.config.max_instances)
    launch_nics = network_interfaces.LaunchInterfaces.plan(ctx, p.get("NetworkInterfaces"), subnet, instance_type,
                                                           max_count)
    addresses = ([launch_nics.primary.private_ip] if launch_nics.primary else
                 network_interfaces.allocate_private_ips(ctx, subnet, min(max_count, room), wanted_ip))
    launch_nics.reserved = set(addresses)
    if len(addresses) < min_count:
        raise InsufficientFreeAddressesInSubnet(subnet.id, min_count)
    with_public = subnet.map_public_ip_on_launch if public is None else public
    group_id, partitions = placement_groups.place(ctx, p.get("Placement") or {}, instance_type,
                                                  subnet.availability_zone, len(addresses))
    planned = None if spot_request is not None else spot.plan(ctx, p, instance_type, subnet.availability_zone)
    reservation = new_id("r")
    now = utcnow()
    rows, taken, interfaces_made = [], set(), {}
    for index, ip in enumerate(addresses):
        public_ip = None
        if with_public:
            public_ip = allocate_public_ip(ctx, taken)
            taken.add(public_ip)
        row = Instance(
            id=new_id("i"), account_id=ctx.account_id, region=ctx.region, reservation_id=reservation,
            launch_index=index, image_id=image.id, instance_type=instance_type, kernel_id=kernel_id,
            ramdisk_id=ramdisk_id, state="pending", state_transition_reason="",
            state_reason_code="pending", state_reason_message="pending", key_name=key_name,
            vpc_id=subnet.vpc_id, subnet_id=subnet.id, availability_zone=subnet.availability_zone,
            private_ip=ip, public_ip=public_ip,
            mac_address=launch_nics.primary.mac_address if launch_nics.primary else network_interfaces.new_mac(),
            network_interface_id=launch_nics.primary.id if launch_nics.primary else new_id("eni"),
            security_group_ids=(list(launch_nics.primary.security_group_ids) if launch_nics.primary
                                else [g.id for g in groups]), launch_time=now, client_token=token,
            request_digest=digest, user_data=p.get("UserData"), architecture=image.architecture,
            root_device_name=image.root_device_name or "/dev/xvda", root_device_type=image.root_device_type,
            block_device_mappings=[],
            monitoring="enabled" if (p.get("Monitoring") or {}).get("Enabled") else "disabled",
            metadata_options=metadata, cpu_credits=cpu_credits,
            placement_group_id=group_id, partition_number=partitions[index],
            attributes={"DisableApiTermination": bool(p.get("DisableApiTermination")),
                        "DisableApiStop": bool(p.get("DisableApiStop")),
                        "InstanceInitiatedShutdownBehavior": behaviour,
                        "EbsOptimized": bool(p.get("EbsOptimized")), "SourceDestCheck": True,
                        "EnaSupport": True},
        )
        ctx.session.add(row)
        interfaces_made[row.id] = launch_nics.attach(ctx, row)
        rows.append(row)
    spot.link(ctx, rows, planned, spot_request)
    ctx.session.flush()
    made = {}
    for row in rows:
        if tags:
            set_tags(ctx, row.id, tags)
        if system_tags:
            set_tags(ctx, row.id, system_tags, system=True)
        if profile is not None:
            instance_profiles.associate(ctx, row.id, profile)
        for eni_id in interfaces_made[row.id] if interface_tags else ():
            set_tags(ctx, eni_id, interface_tags)
        made[row.id] = block_devices.create(ctx, row, disks)
        for volume_id in made[row.id] if volume_tags else ():
            set_tags(ctx, volume_id, volume_tags)
    firewall.changed(ctx, subnet.vpc_id)  # before the starts: each port is plugged already filtered
    routing.changed(ctx, subnet.vpc_id)  # (and routed as its subnet's table says)
    for row in rows:  # its first start makes its volumes' disks
        ctx.host_task("instance.start", row.id, row.availability_zone, disks=made[row.id])
    ctx.session.flush()  # the describe below reads tags on the connection, past the ORM
    return _reservations(ctx, rows)[0]


# ------------------------------------------------------------------------------- describe

INSTANCE_FILTERS = {
    "instance-id": lambda r: r.id,
    "instance-state-name": lambda r: r.state,
    "instance-state-code": lambda r: STATE_CODES[r.state],
    "instance-type": lambda r: r.instance_type,
    "image-id": lambda r: r.image_id,
    "kernel-id": lambda r: r.kernel_id,
    "ramdisk-id": lambda r: r.ramdisk_id,
    "key-name": lambda r: r.key_name,
    "availability-zone": lambda r: r.availability_zone,
    "subnet-id": lambda r: r.subnet_id,
    "vpc-id": lambda r: r.vpc_id,
    "private-ip-address": lambda r: r.private_ip,
    "ip-address": lambda r: r.public_ip,
    "private-dns-name": lambda r: private_dns_name(r.region, r.private_ip),
    "reservation-id": lambda r: r.reservation_id,
    "owner-id": lambda r: r.account_id,
    "launch-index": lambda r: r.launch_index,
    "ami-launch-index": lambda r: r.launch_index,
    "launch-time": lambda r: r.launch_time,
    "architecture": lambda r: r.architecture,
    "root-device-type": lambda r: r.root_device_type,
    "root-device-name": lambda r: r.root_device_name,
    "client-token": lambda r: r.client_token,
    "monitoring-state": lambda r: r.monitoring,
    "hypervisor": lambda r: "xen",
    "virtualization-type": lambda r: "hvm",
    "tenancy": lambda r: "default",
    "instance-lifecycle": lambda r: "spot" if r.spot_request_id else None,
    "spot-instance-request-id": lambda r: r.spot_request_id,
    "platform-details": lambda r: "Linux/UNIX",
    "state-reason-code": lambda r: r.state_reason_code,
    "state-reason-message": lambda r: r.state_reason_message,
    "instance.group-id": lambda r: r.security_group_ids,
    "group-id": lambda r: r.security_group_ids,
    "metadata-options.http-tokens": lambda r: {**DEFAULT_METADATA_OPTIONS, **(r.metadata_options or {})}["HttpTokens"],
    "metadata-options.http-endpoint": lambda r: {**DEFAULT_METADATA_OPTIONS, **(r.metadata_options or {})}["HttpEndpoint"],
    "placement-group-id": lambda r: r.placement_group_id,
    "placement-partition-number": lambda r: r.partition_number,
}


def _group_name_filter(ctx: Context, rows: list):
    """Getter for the group-name filters: the names of every row's groups, looked up in one
    query the first time a group-name filter is used (not one query per row)."""
    @functools.cache
    def names() -> dict[str, str]:
        return security_groups.group_names(ctx, {g for r in rows for g in r.security_group_ids})

    return lambda r: [names()[g] for g in r.security_group_ids if g in names()]


def _dns_name_filter(ctx: Context, rows: list):
    """Getter for dns-name: the public DNS name the instance shows, which it has only in a VPC
    giving DNS names (vpcs.dns_named, looked up once, the first time the filter is used)."""
    @functools.cache
    def named() -> set[str]:
        return vpcs.dns_named(ctx.session, {r.vpc_id for r in rows})

    return lambda r: public_dns_name(r.region, r.public_ip) if r.vpc_id in named() else None


_BY_INSTANCE_ID = Selector("InstanceIds", lambda r: r.id, InvalidInstanceIDNotFound, _check_id)

INSTANCES = Resource("Reservations", _reservations, INSTANCE_FILTERS,
                     (_BY_INSTANCE_ID,), ids_exclude_max_results=("InstanceIds", "instancesSet"))


@action("DescribeInstances")
def describe_instances(ctx: Context, p: dict) -> dict:
    rows = _rows(ctx, p.get("InstanceIds"))
    by_name = _group_name_filter(ctx, rows)
    in_group = functools.cache(lambda: placement_groups.names(ctx, {r.placement_group_id for r in rows}))
    return describe(ctx, INSTANCES, p, rows, filters={"instance.group-name": by_name, "group-name": by_name,
                                                      "placement-group-name": lambda r: in_group().get(r.placement_group_id),
                                                      "dns-name": _dns_name_filter(ctx, rows),
                                                      **network_interfaces.instance_filters(ctx, rows)})


STATUS_FILTERS = {
    "availability-zone": lambda r: r.availability_zone,
    "instance-state-name": lambda r: r.state,
    "instance-state-code": lambda r: STATE_CODES[r.state],
    "instance-status.status": lambda r: _health(r)["Status"],
    "instance-status.reachability": lambda r: _health(r)["Details"][0]["Status"],
    "system-status.status": lambda r: _health(r)["Status"],
    "system-status.reachability": lambda r: _health(r)["Details"][0]["Status"],
}


def _health(row: Instance) -> dict:
    if row.state == "running":
        return {"Status": "ok", "Details": [{"Name": "reachability", "Status": "passed"}]}
    if row.state == "pending":
        return {"Status": "initializing", "Details": [{"Name": "reachability", "Status": "initializing"}]}
    return {"Status": "not-applicable", "Details": [{"Name": "reachability", "Status": "not-applicable"}]}


def _statuses(ctx: Context, page: list, tags) -> list[dict]:
    zone_ids = {z.name: z.zone_id for z in REGIONS[ctx.region].zones}
    return [{
        "InstanceId": r.id, "AvailabilityZone": r.availability_zone,
        "AvailabilityZoneId": zone_ids.get(r.availability_zone), "InstanceState": _state(r.state),
        "InstanceStatus": _health(r), "SystemStatus": _health(r),
        "AttachedEbsStatus": _health(r), "Events": [],
    } for r in page]


INSTANCE_STATUSES = Resource("InstanceStatuses", _statuses, STATUS_FILTERS, (_BY_INSTANCE_ID,), tagged=False,
                             ids_exclude_max_results=("InstanceIds", "instancesSet"))


@action("DescribeInstanceStatus")
def describe_instance_status(ctx: Context, p: dict) -> dict:
    everything = p.get("IncludeAllInstances")
    return describe(ctx, INSTANCE_STATUSES, p, _rows(ctx, p.get("InstanceIds")),
                    keep=None if everything else (lambda r: r.state == "running"))


# ----------------------------------------------------------------------------- lifecycle

def _user_initiated(row: Instance, state: str, now: datetime) -> None:
    row.state = state
    row.state_transition_reason = f"User initiated ({_gmt(now)})"
    row.state_reason_code = "Client.UserInitiatedShutdown"
    row.state_reason_message = "Client.UserInitiatedShutdown: User initiated shutdown"


def interrupt(ctx: Context, row: Instance, state: str, code: str, message: str, now: datetime) -> None:
    """EC2 itself stops ('stopping') or terminates ('shutting-down') an instance (a Spot
    interruption): AWS's service-initiated reason, and the host task a user's call would ask."""
    row.state = state
    row.state_transition_reason = f"Service initiated ({_gmt(now)})"
    row.state_reason_code, row.state_reason_message = code, message
    if state == "stopping":
        ctx.host_task("instance.stop", row.id, row.availability_zone, force=False)
    else:
        ctx.host_task("instance.terminate", row.id, row.availability_zone)


def _has_root_volume(session: Session, row: Instance) -> bool:
    """A volume is attached (or being attached) at the instance's root device name."""
    return session.scalar(select(VolumeAttachment.volume_id).where(
        VolumeAttachment.instance_id == row.id, VolumeAttachment.device == row.root_device_name,
        VolumeAttachment.state != "detaching").limit(1)) is not None


def _change(row: Instance, previous: str) -> dict:
    return {"InstanceId": row.id, "CurrentState": _state(row.state), "PreviousState": _state(previous)}


@action("StartInstances")
def start_instances(ctx: Context, p: dict) -> dict:
    rows = get_instances(ctx, p["InstanceIds"])
    for row in rows:
        if row.state in ("stopping", "shutting-down", "terminated"):
            raise IncorrectInstanceState.cannot(row.id, "started")
        if row.state == "stopped" and row.root_device_type == "ebs" and not _has_root_volume(ctx.session, row):
            # its root volume was detached (and not attached again at the root device name)
            raise InvalidParameterValue.invalid(row.id, "instanceId", "Instance does not have a volume attached "
                                                f"at root ({row.root_device_name}).")
    changes, to_start = [], []
    taken: set[str] = set()
    for row in rows:
        previous = row.state
        if row.state == "stopped":
            row.state = "pending"
            row.state_transition_reason = ""
            row.state_reason_code = row.state_reason_message = None
            attachments.instance_started(ctx.session, row.id)  # its volumes now show in its metadata
            spot.started(ctx.session, row)
            subnet = ctx.session.get(Subnet, row.subnet_id)
            if subnet is not None and subnet.map_public_ip_on_launch and not row.public_ip:
                row.public_ip = allocate_public_ip(ctx, taken)  # AWS gives a new one at each start
                taken.add(row.public_ip)
            to_start.append(row)
        changes.append(_change(row, previous))
    for row in to_start:
        firewall.changed(ctx, row.vpc_id)  # (its VPC's network may have gone while it was stopped)
        routing.changed(ctx, row.vpc_id)
        ctx.host_task("instance.start", row.id, row.availability_zone)
    return {"StartingInstances": changes}


def _not_ending(rows: list[Instance], verb: str) -> list[Instance]:
    """The rows, unless one is shutting down or terminated (then AWS refuses the whole request)."""
    for row in rows:
        if row.state in (S.SHUTTING_DOWN, S.TERMINATED):
            raise IncorrectInstanceState.cannot(row.id, verb)
    return rows


@action("StopInstances")
def stop_instances(ctx: Context, p: dict) -> dict:
    rows = _not_ending(get_instances(ctx, p["InstanceIds"]), "stopped")
    for row in rows:
        if row.root_device_type != "ebs":
            raise UnsupportedOperation(f"The instance '{row.id}' does not have an 'ebs' root device type and "
                                       f"cannot be stopped.")
        if (row.attributes or {}).get("DisableApiStop") and row.state in ("pending", "running"):
            raise OperationNotPermitted(row.id, "stopped", "disableApiStop")
        if spot.one_time(ctx.session, row):
            raise UnsupportedOperation(f"You can't stop the Spot Instance '{row.id}' because it is associated with "
                                       "a one-time Spot Instance request. You can only stop Spot Instances "
                                       "associated with persistent Spot Instance requests.")
    now = utcnow()
    changes = []
    for row in rows:
        previous = row.state
        if row.state in ("pending", "running"):
            _user_initiated(row, "stopping", now)
            spot.user_stopped(ctx.session, row)
            ctx.host_task("instance.stop", row.id, row.availability_zone, force=bool(p.get("Force")))
        changes.append(_change(row, previous))
    return {"StoppingInstances": changes}


@action("RebootInstances")
def reboot_instances(ctx: Context, p: dict) -> None:
    rows = _not_ending(get_instances(ctx, p["InstanceIds"]), "rebooted")
    for row in rows:
        if row.state == "running":
            ctx.host_task("instance.reboot", row.id, row.availability_zone)
    return None


@action("TerminateInstances")
def terminate_instances(ctx: Context, p: dict) -> dict:
    rows = get_instances(ctx, p["InstanceIds"])
    for row in rows:
        if row.state != "terminated" and (row.attributes or {}).get("DisableApiTermination"):
            raise OperationNotPermitted(row.id, "terminated", "disableApiTermination")
    now = utcnow()
    changes = []
    for row in rows:
        previous = row.state
        if row.state not in ("shutting-down", "terminated"):
            _user_initiated(row, "shutting-down", now)
            ctx.host_task("instance.terminate", row.id, row.availability_zone)
        changes.append(_change(row, previous))
    return {"TerminatingInstances": changes}


def apply_hypervisor_event(session: Session, instance_id: str, state: str) -> bool:
    """Move an instance on from what the host really did. When the host must now act (tear the
    guest down after its own shutdown with behaviour 'terminate' or a lost guest; a terminated
    guest's firewall), a host task joins the same transaction; returns True then."""
    row = session.get(Instance, instance_id, with_for_update=True)
    if row is None or row.state == S.TERMINATED:
        return False
    now = utcnow()
    if state == HostEvent.RUNNING and row.state == S.PENDING:
        row.state = S.RUNNING
        row.state_reason_code = row.state_reason_message = None
    elif state == HostEvent.RUNNING and row.state == S.RUNNING and (row.attributes or {}).get(IMAGING):
        _imaged(row)  # up again after CreateImage's shutdown: a shutdown from now on is its own
    elif state == HostEvent.STOPPED and row.state == S.RUNNING and (row.attributes or {}).get(IMAGING):
        return False  # shut down for CreateImage's snapshots: it starts again after them
    elif state == HostEvent.STOPPED and row.state in (S.PENDING, S.RUNNING, S.STOPPING):
        if row.state != S.STOPPING:  # the guest powered itself off
            row.state_transition_reason = f"User initiated ({_gmt(now)})"
            row.state_reason_code = "Client.InstanceInitiatedShutdown"
            row.state_reason_message = "Client.InstanceInitiatedShutdown: Instance initiated shutdown"
            if (row.attributes or {}).get("InstanceInitiatedShutdownBehavior", "stop") == "terminate" \
                    or row.root_device_type != "ebs":  # an instance-store instance cannot be stopped
                row.state = S.SHUTTING_DOWN
                enqueue(session, "instance.terminate", row.id, row.availability_zone)
                return True
        row.state = S.STOPPED
        if row.public_ip and elastic_ip_of(session, row.id) is None:
            # AWS releases the (auto-assigned) public address of a stopped instance
            # (a stop we asked for unmapped it already; a guest's own poweroff did not)
            enqueue(session, "address.unmap", row.id, row.availability_zone, vpc_id=row.vpc_id,
                    public_ip=row.public_ip, private_ip=row.private_ip)
            row.public_ip = None
            return True
    elif state == HostEvent.TERMINATED:
        _terminated(row, now)
        # a route through one of its interfaces is a blackhole now
        routing.ask_if_targeted(session, row.vpc_id, [e.id for e in network_interfaces.of_instance(session, row.id)])
        network_interfaces.released(session, row.id)  # the host unplugged all its interfaces
        instance_gone(session, row.id)  # its Elastic IP is disassociated
        firewall.ask(session, row.vpc_id)  # its address leaves its groups' sets
        # The host detached its disks: the volumes are free (or deleted, DeleteOnTermination).
        attachments.release(session, row.id)
        return True
    elif state == HostEvent.VANISHED:  # the host lost the guest: AWS reports an internal error
        row.state_reason_code = "Server.InternalError"
        row.state_reason_message = "Server.InternalError: Internal error on launch"
        row.state_transition_reason = f"Server.InternalError ({_gmt(now)})"
        row.state = S.SHUTTING_DOWN
        enqueue(session, "instance.terminate", row.id, row.availability_zone)  # what is left goes too
        return True
    return False


def _terminated(row: Instance, now: datetime) -> None:
    row.state = "terminated"
    row.terminated_at = now
    row.private_ip = None
    row.public_ip = None


# ------------------------------------------------------------------------------- host side

def _host_spec(host: Host, session: Session, row: Instance) -> InstanceSpec:
    return _spec(host.context(session, row.account_id, row.region), row)


def _still(session: Session, instance_id: str, state: S) -> Instance | None:
    """The instance if the database still has it in `state` (an action that a later request
    overtook, e.g. a start followed by a terminate, then does nothing)."""
    row = session.get(Instance, instance_id)
    return row if row is not None and row.state == state else None


@host_action("instance.start")
def start_on_host(host: Host, instance_id: str, disks: list[str] | None = None) -> None:
    """Boot (or start again) the instance. A launch's task names the volumes made with it: their
    disks are made first (idempotently: a crash anywhere here runs it all again), then the guest
    is defined with them, then their attachments are 'attached'."""
    from .volumes import make_disk

    with host.Session() as session:
        # A launch's volumes get their disks even if the instance ended before this ran (those
        # kept by DeleteOnTermination=false are 'available' and must have one).
        row = session.get(Instance, instance_id) if disks else _still(session, instance_id, S.PENDING)
        if row is None:
            return
        image = images.image_by_id(host.context(session, row.account_id, row.region), row.image_id, any_owner=True)
        image_path = images.disk_file(host.config, image)
        root_device = row.root_device_name
        roots = set(session.scalars(select(VolumeAttachment.volume_id).where(
            VolumeAttachment.instance_id == instance_id, VolumeAttachment.device == root_device)))
    for volume_id in disks or ():
        make_disk(host, volume_id, image_path=image_path if volume_id in roots else None)
    crash_point(host.config, "instance.start:after-disks")
    with host.Session() as session:
        row = _still(session, instance_id, S.PENDING)
        spec = _host_spec(host, session, row) if row is not None else None
    if spec is None:
        return
    host.driver.start(spec)
    addresses.map_interface_addresses(host, [instance_id])  # Elastic IPs on its other addresses
    if disks:
        with host.Session() as session:
            session.execute(update(VolumeAttachment).where(
                VolumeAttachment.instance_id == instance_id, VolumeAttachment.volume_id.in_(disks),
                VolumeAttachment.state == "attaching").values(state="attached"))
            session.commit()


@host_action_failed("instance.start")
def start_failed(host: Host, instance_id: str, error: str) -> None:
    """A launch the host could not carry out, even after retries: as AWS reports a failed launch
    (Server.InternalError), but with the real cause in the message, and the host cleaned. A
    failed start of a stopped EBS-backed instance leaves it stopped, with the same reason."""
    with host.Session() as session:
        row = session.get(Instance, instance_id, with_for_update=True)
        if row is None or row.state != S.PENDING:
            return
        now = utcnow()
        row.state_reason_code = "Server.InternalError"
        message = f"Server.InternalError: the host could not start the instance: {error}"
        if len(message) > 255:  # the end says why (a command's error ends with its cause)
            message = message[:80] + " ... " + message[-170:]
        row.state_reason_message = message
        row.state_transition_reason = f"Server.InternalError ({_gmt(now)})"
        restart = session.scalar(select(VolumeAttachment.volume_id).where(
            VolumeAttachment.instance_id == row.id, VolumeAttachment.device == row.root_device_name,
            VolumeAttachment.state == "attached").limit(1)) is not None
        if restart:
            # A start of a stopped EBS-backed instance: it goes back to 'stopped', its volumes
            # kept (ending it would delete its DeleteOnTermination root: data lost for a hiccup).
            row.state = S.STOPPED
            if row.public_ip and elastic_ip_of(session, row.id) is None:
                # the address this start gave it goes (as at a stop; an Elastic IP stays)
                enqueue(session, "address.unmap", row.id, row.availability_zone, vpc_id=row.vpc_id,
                        public_ip=row.public_ip, private_ip=row.private_ip)
                row.public_ip = None
        else:
            row.state = S.SHUTTING_DOWN
            enqueue(session, "instance.terminate", row.id, row.availability_zone)
        session.commit()


@host_action("instance.stop")
def stop_on_host(host: Host, instance_id: str, force: bool = False) -> None:
    with host.Session() as session:
        stopping = _still(session, instance_id, S.STOPPING) is not None
    if stopping:
        host.driver.stop(instance_id, force)


@host_action("instance.reboot")
def reboot_on_host(host: Host, instance_id: str) -> None:
    with host.Session() as session:
        running = _still(session, instance_id, S.RUNNING) is not None
    if running:
        host.driver.reboot(instance_id)


# ------------------------------------------------------------- CreateImage's reboot

# An instance attribute naming the image a CreateImage (without NoReboot) is making of it: from
# the request until the guest runs again, its shutdown is that, not a stop.
IMAGING = "ImagingReboot"
# How long a clean shutdown for an image may take beyond the driver's own force-off deadline.
IMAGING_STOP_MARGIN_SECONDS = 30


def shut_down_for_image(ctx: Context, row: Instance, image_id: str) -> None:
    """CreateImage without NoReboot, as AWS does it: the instance is shut down cleanly, its
    volumes are snapshotted while it is down, then it starts again (its state stays 'running',
    as during a reboot). This writes the first task; the snapshot tasks follow it in the same
    ordered lane, and start_after_image() writes the last."""
    row.attributes = {**(row.attributes or {}), IMAGING: image_id}
    ctx.host_task("instance.image_stop", row.id, row.availability_zone)


def start_after_image(ctx: Context, row: Instance) -> None:
    ctx.host_task("instance.image_start", row.id, row.availability_zone)


@host_action("instance.image_stop")
def image_stop_on_host(host: Host, instance_id: str) -> None:
    """A clean shutdown (forced after the driver's deadline), waited for: the snapshot tasks
    behind this one then copy disks no guest writes."""
    with host.Session() as session:
        row = _still(session, instance_id, S.RUNNING)
        if row is None or not (row.attributes or {}).get(IMAGING):
            return
    if host.driver.state(instance_id) != "running":
        return
    host.driver.stop(instance_id)
    deadline = time.monotonic() + host.config.stop_timeout_seconds + IMAGING_STOP_MARGIN_SECONDS
    while host.driver.state(instance_id) == "running":
        if host.stopping:
            raise Interrupted()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{instance_id} did not shut down for its image")
        time.sleep(0.2)


@host_action("instance.image_start")
def image_start_on_host(host: Host, instance_id: str) -> None:
    """After the image's snapshots: the guest runs again (if the instance is still meant to run:
    a stop or terminate asked for meanwhile has its own task behind this one)."""
    with host.Session() as session:
        row = _still(session, instance_id, S.RUNNING)
        spec = _host_spec(host, session, row) if row is not None else None
    if spec is not None and host.driver.state(instance_id) != "running":
        host.driver.start(spec)  # its RUNNING event ends the imaging (events come in order)
        return
    with host.Session() as session:  # it never went down, or it is no longer meant to run
        row = session.get(Instance, instance_id, with_for_update=True)
        if row is not None:
            _imaged(row)
        session.commit()


def _imaged(row: Instance) -> None:
    if (row.attributes or {}).get(IMAGING):
        row.attributes = {k: v for k, v in row.attributes.items() if k != IMAGING}


@host_action("address.unmap")
def unmap_on_host(host: Host, instance_id: str, vpc_id: str, public_ip: str, private_ip: str) -> None:
    host.driver.unmap_address(vpc_id, public_ip, private_ip)


@host_action("instance.terminate")
def terminate_on_host(host: Host, instance_id: str) -> None:
    host.driver.terminate(instance_id)  # idempotent: whatever is left of the guest goes


def reconcile(host: Host) -> None:
    """At start-up, before the host worker runs: rebuild the host's plumbing for the live
    instances, then compare each with the host and ask for what is missing (write intent, act,
    record: an intent with no result is acted on again). Instances with an unfinished task are
    left to it."""
    with host.Session() as session:
        rows = session.scalars(select(Instance).where(Instance.state.in_(LIVE))).all()
        plugged = [r for r in rows if r.state in (S.PENDING, S.RUNNING, S.STOPPING, S.SHUTTING_DOWN)]
        host.driver.reconcile_host([_host_spec(host, session, r) for r in plugged])
        addresses.map_interface_addresses(host, [r.id for r in plugged])
        waiting = unfinished_resources(session)
        for row in rows:
            if row.id in waiting:
                continue
            _imaged(row)  # (its image's tasks are done: what the host has now is what counts)
            found = host.driver.reconcile_state(row.id, row.state)
            zone = row.availability_zone
            if row.state in (S.PENDING, S.RUNNING) and found == HostEvent.RUNNING:
                if row.state == S.PENDING:
                    apply_hypervisor_event(session, row.id, HostEvent.RUNNING)
            elif row.state == S.PENDING:
                enqueue(session, "instance.start", row.id, zone)
            elif row.state == S.STOPPING:
                if found == HostEvent.RUNNING:
                    enqueue(session, "instance.stop", row.id, zone)
                else:
                    apply_hypervisor_event(session, row.id, HostEvent.STOPPED)
            elif row.state == S.SHUTTING_DOWN:
                if found is None:
                    apply_hypervisor_event(session, row.id, HostEvent.TERMINATED)
                else:
                    enqueue(session, "instance.terminate", row.id, zone)
            elif row.state == S.RUNNING:
                apply_hypervisor_event(session, row.id,
                                       HostEvent.STOPPED if found == HostEvent.STOPPED else HostEvent.VANISHED)
        firewall.reconcile(session)
        routing.reconcile(session)
        session.commit()


# ---------------------------------------------------------------------------- attributes

_NEEDS_STOPPED = {"instanceType", "kernel", "ramdisk", "userData", "enaSupport", "sriovNetSupport"}


@action("DescribeInstanceAttribute")
def describe_instance_attribute(ctx: Context, p: dict) -> dict:
    row = get_instance(ctx, p["InstanceId"])
    attr = p["Attribute"]
    a = row.attributes or {}
    out: dict = {"InstanceId": row.id}
    value = {
        "instanceType": ("InstanceType", {"Value": row.instance_type}),
        "kernel": ("KernelId", {"Value": row.kernel_id} if row.kernel_id else {}),
        "ramdisk": ("RamdiskId", {"Value": row.ramdisk_id} if row.ramdisk_id else {}),
        "userData": ("UserData", {"Value": row.user_data} if row.user_data else {}),
        "disableApiTermination": ("DisableApiTermination", {"Value": a.get("DisableApiTermination", False)}),
        "disableApiStop": ("DisableApiStop", {"Value": a.get("DisableApiStop", False)}),
        "instanceInitiatedShutdownBehavior": ("InstanceInitiatedShutdownBehavior",
                                              {"Value": a.get("InstanceInitiatedShutdownBehavior", "stop")}),
        "rootDeviceName": ("RootDeviceName", {"Value": row.root_device_name}),
        "blockDeviceMapping": ("BlockDeviceMappings", [*(row.block_device_mappings or []), *map(
            attachments.mapping, attachments.of_instance(ctx.session, row.id))]),
        "productCodes": ("ProductCodes", []),
        "sourceDestCheck": ("SourceDestCheck", {"Value": a.get("SourceDestCheck", True)}),
        "groupSet": ("Groups", [{"GroupId": g, "GroupName": n} for g, n in
                                security_groups.group_names(ctx, row.security_group_ids).items()]),
        "ebsOptimized": ("EbsOptimized", {"Value": a.get("EbsOptimized", False)}),
        "sriovNetSupport": ("SriovNetSupport", {"Value": "simple"}),
        "enaSupport": ("EnaSupport", {"Value": a.get("EnaSupport", True)}),
        "enclaveOptions": ("EnclaveOptions", {"Enabled": False}),
    }.get(attr)
    if value is None:
        raise InvalidParameterValue.value(attr, "attribute")
    out[value[0]] = value[1]
    return out


@action("ModifyInstanceAttribute")
def modify_instance_attribute(ctx: Context, p: dict) -> None:
    row = get_instance(ctx, p["InstanceId"])
    changes: dict[str, object] = {}
    legacy = p.get("Attribute")
    if legacy:  # the old form: Attribute=name&Value=v
        if "Value" not in p:
            raise MissingParameter("Value")
        changes[legacy] = p["Value"]
    for member, attr in (("InstanceType", "instanceType"), ("Kernel", "kernel"), ("Ramdisk", "ramdisk"),
                         ("UserData", "userData"), ("DisableApiTermination", "disableApiTermination"),
                         ("DisableApiStop", "disableApiStop"), ("SourceDestCheck", "sourceDestCheck"),
                         ("InstanceInitiatedShutdownBehavior", "instanceInitiatedShutdownBehavior"),
                         ("EbsOptimized", "ebsOptimized"), ("EnaSupport", "enaSupport"),
                         ("SriovNetSupport", "sriovNetSupport")):
        if p.get(member) is not None:
            changes[attr] = p[member].get("Value")
    if p.get("Groups") is not None:
        changes["groupSet"] = p["Groups"]
    if p.get("BlockDeviceMappings") is not None:
        changes["blockDeviceMapping"] = p["BlockDeviceMappings"]
    if not changes:
        raise MissingParameter.no_attributes()
    if len(changes) > 1:
        raise InvalidParameterCombination("Only one attribute may be modified per request")
    (attr, value), = changes.items()
    if attr in _NEEDS_STOPPED and row.state != "stopped":
        raise IncorrectInstanceState.not_stopped(row.id)
    if row.state == "terminated":
        raise IncorrectInstanceState.terminated(row.id)
    attrs = dict(row.attributes or {})

    def flag(v) -> bool:
        return v if isinstance(v, bool) else str(v).lower() == "true"

    if attr == "instanceType":
        if value not in INSTANCE_TYPES:
            raise InvalidParameterValue.invalid(value, "InstanceType")
        if row.architecture not in INSTANCE_TYPES[value]["ProcessorInfo"]["SupportedArchitectures"]:
            raise InvalidParameterValue(f"The instance type '{value}' does not support the instance's architecture.")
        row.instance_type = value
    elif attr in ("kernel", "ramdisk"):
        image = images.image_by_id(ctx, value)
        if image is None or image.image_type != attr:
            raise _NO_IMAGE_OF_KIND[attr](value)
        setattr(row, f"{attr}_id", value)
    elif attr == "userData":
        raw = value if isinstance(value, bytes) else str(value).encode()
        if len(raw) > MAX_USER_DATA:
            raise InvalidParameterValue.user_data_too_long(MAX_USER_DATA)
        row.user_data = base64.b64encode(raw).decode()
    elif attr == "groupSet":
        groups = security_groups.resolve_groups(ctx, row.vpc_id, list(value), None)
        network_interfaces.set_groups(ctx.session, row, [g.id for g in groups], by_instance=True)
        firewall.changed(ctx, row.vpc_id)
    elif attr == "instanceInitiatedShutdownBehavior":
        if value not in ("stop", "terminate"):
            raise InvalidParameterValue.value(value, "InstanceInitiatedShutdownBehavior")
        attrs["InstanceInitiatedShutdownBehavior"] = value
    elif attr in ("disableApiTermination", "disableApiStop", "sourceDestCheck", "ebsOptimized", "enaSupport"):
        attrs[attr[0].upper() + attr[1:]] = flag(value)
        if attr == "sourceDestCheck":  # the instance's is its primary interface's
            network_interfaces.set_source_dest_check(ctx, row, attrs["SourceDestCheck"])
    elif attr == "sriovNetSupport":
        pass  # always 'simple' here
    elif attr == "blockDeviceMapping":
        _delete_on_termination(ctx, row, value)
    else:
        raise InvalidParameterValue.value(attr, "attribute")
    row.attributes = attrs
    return None


def _delete_on_termination(ctx: Context, row: Instance, mappings: list[dict]) -> None:
    """ModifyInstanceAttribute blockDeviceMapping: what changes is each attached volume's
    DeleteOnTermination, found by device name (and volume id, if given)."""
    attached = {a.device: a for a in attachments.of_instance(ctx.session, row.id)}
    for m in mappings:
        device = m.get("DeviceName")
        if not device:
            raise MissingParameter("BlockDeviceMapping.DeviceName")
        a = attached.get(device)
        ebs = m.get("Ebs") or {}
        if a is None or (ebs.get("VolumeId") and ebs["VolumeId"] != a.volume_id):
            raise InvalidParameterValue(f"No device is attached at {device} on instance {row.id}"
                                        + (f" with volume {ebs['VolumeId']}" if ebs.get("VolumeId") else ""))
        if ebs.get("DeleteOnTermination") is not None:
            a.delete_on_termination = bool(ebs["DeleteOnTermination"])


@action("ResetInstanceAttribute")
def reset_instance_attribute(ctx: Context, p: dict) -> None:
    row = get_instance(ctx, p["InstanceId"])
    attr = p["Attribute"]
    if attr in ("kernel", "ramdisk"):
        if row.state != "stopped":
            raise IncorrectInstanceState.not_stopped(row.id)
        image = images.image_by_id(ctx, row.image_id)
        setattr(row, f"{attr}_id", getattr(image, f"{attr}_id") if image else None)
    elif attr == "sourceDestCheck":
        row.attributes = {**(row.attributes or {}), "SourceDestCheck": True}
        network_interfaces.set_source_dest_check(ctx, row, True)
    else:
        raise InvalidParameterValue.value(attr, "attribute")
    return None


def _metadata_options(current: dict, p: dict) -> dict:
    out = dict(current)
    for key in DEFAULT_METADATA_OPTIONS:
        if p.get(key) is not None:
            out[key] = p[key]
    hops = out.get("HttpPutResponseHopLimit")
    if hops is not None and not 1 <= hops <= 64:
        raise InvalidParameterValue.value(hops, "HttpPutResponseHopLimit", "Expecting a value between 1 and 64.")
    return out


@action("ModifyInstanceMetadataOptions")
def modify_instance_metadata_options(ctx: Context, p: dict) -> dict:
    row = get_instance(ctx, p["InstanceId"])
    if row.state == "terminated":
        raise IncorrectInstanceState.terminated(row.id)
    row.metadata_options = _metadata_options(row.metadata_options or {}, p)
    return {"InstanceId": row.id, "InstanceMetadataOptions": {
        "State": "pending", **DEFAULT_METADATA_OPTIONS, **row.metadata_options}}


@action("GetConsoleOutput")
def get_console_output(ctx: Context, p: dict) -> dict:
    row = get_instance(ctx, p["InstanceId"])
    data = ctx.driver.console_output(row.id)[-64 * 1024:]
    return {"InstanceId": row.id, "Timestamp": utcnow(),
            "Output": base64.b64encode(data).decode() if data else None}


@action("GetPasswordData")
def get_password_data(ctx: Context, p: dict) -> dict:
    """Every image here is Linux: no Windows password is ever made, so the data is empty, as AWS
    answers for a Linux instance."""
    row = get_instance(ctx, p["InstanceId"])
    return {"InstanceId": row.id, "Timestamp": utcnow(), "PasswordData": ""}


# --------------------------------------------------------------------------- CPU credits

# Burstable families' default credit option (AWS's account defaults): T2 earns credits only,
# T3, T3a and T4g may burst past them.
_DEFAULT_CREDITS = {"t2": "standard", "t3": "unlimited", "t3a": "unlimited", "t4g": "unlimited"}
CPU_CREDIT_OPTIONS = ("standard", "unlimited")


def _burstable(instance_type: str) -> bool:
    return bool(INSTANCE_TYPES.get(instance_type, {}).get("BurstablePerformanceSupported"))


def _default_credits(instance_type: str) -> str | None:
    if not _burstable(instance_type):
        return None
    return _DEFAULT_CREDITS.get(instance_type.split(".")[0], "standard")


def _check_credits(value) -> str:
    if value not in CPU_CREDIT_OPTIONS:
        raise InvalidParameterValue.invalid(value, "CpuCredits", "Valid values: standard, unlimited.")
    return value


def _launch_credits(instance_type: str, spec: dict | None) -> str | None:
    """The credit option an instance launches with: the request's, else its type's default."""
    wanted = (spec or {}).get("CpuCredits")
    if wanted is None:
        return _default_credits(instance_type)
    if not _burstable(instance_type):
        raise InstanceCreditSpecificationNotSupported(instance_type)
    return _check_credits(wanted)


def credits_of(row) -> str | None:
    """The instance's option: what it was set to (kept across a resize, as AWS keeps it), else
    its current type's default; None for an instance that never was burstable."""
    return row.cpu_credits or _default_credits(row.instance_type)


INSTANCE_CREDITS = Resource(
    "InstanceCreditSpecifications",
    lambda ctx, page, tags: [{"InstanceId": r.id, "CpuCredits": credits_of(r)} for r in page],
    {"instance-id": lambda r: r.id}, (_BY_INSTANCE_ID,), tagged=False,
    ids_exclude_max_results=("InstanceIds", "InstanceId"))


@action("DescribeInstanceCreditSpecifications")
def describe_instance_credit_specifications(ctx: Context, p: dict) -> dict:
    """Named instances: their option (an instance with none is AWS's error). None named: the
    instances running 'unlimited', including any resized away from a burstable type."""
    named = bool(p.get("InstanceIds"))

    def keep(row) -> bool:
        credits = credits_of(row)
        if named and credits is None:
            raise InstanceCreditSpecificationNotSupported(row.instance_type)
        return credits == "unlimited" or (named and credits is not None)

    return describe(ctx, INSTANCE_CREDITS, p, _rows(ctx, p.get("InstanceIds")), keep=keep)


@action("ModifyInstanceCreditSpecification")
def modify_instance_credit_specification(ctx: Context, p: dict) -> dict:
    """Each instance on its own: the ones that cannot change are listed with their reason, the
    others change (AWS answers per instance, never failing the whole request for one)."""
    done, failed = [], []

    def fail(instance_id: str, error) -> None:
        failed.append({"InstanceId": instance_id, "Error": {"Code": error.code, "Message": error.message}})

    for index, item in enumerate(p["InstanceCreditSpecifications"], 1):
        instance_id = item.get("InstanceId") or ""
        if item.get("CpuCredits") is None:
            raise MissingParameter(f"InstanceCreditSpecification.{index}.CpuCredits")
        credits = _check_credits(item["CpuCredits"])
        if not well_formed(instance_id, "i"):
            fail(instance_id, InvalidInstanceIDMalformed(instance_id))
            continue
        row = ctx.session.get(Instance, instance_id)
        if row is None or row.account_id != ctx.account_id or row.region != ctx.region:
            fail(instance_id, InvalidInstanceIDNotFound(instance_id))
        elif row.state in (S.SHUTTING_DOWN, S.TERMINATED):
            fail(instance_id, IncorrectInstanceState.cannot(instance_id, "modified"))
        elif not _burstable(row.instance_type):
            fail(instance_id, InstanceCreditSpecificationNotSupported(row.instance_type))
        else:
            row.cpu_credits = credits
            done.append({"InstanceId": instance_id})
    return {"SuccessfulInstanceCreditSpecifications": done, "UnsuccessfulInstanceCreditSpecifications": failed}


def _monitor(ctx: Context, p: dict, state: str, shown: str) -> dict:
    rows = get_instances(ctx, p["InstanceIds"])
    for row in rows:
        row.monitoring = state
    return {"InstanceMonitorings": [{"InstanceId": r.id, "Monitoring": {"State": shown}} for r in rows]}


@action("MonitorInstances")
def monitor_instances(ctx: Context, p: dict) -> dict:
    return _monitor(ctx, p, "enabled", "pending")


@action("UnmonitorInstances")
def unmonitor_instances(ctx: Context, p: dict) -> dict:
    return _monitor(ctx, p, "disabled", "disabling")
