"""EBS volumes, in the order of a volume's life: CreateVolume, DescribeVolumes, AttachVolume,
DetachVolume, ModifyVolume and DescribeVolumesModifications, DescribeVolumeStatus, volume
attributes, DeleteVolume; then the host actions behind them.

A volume lives in one availability zone (its host's) and is a disk there (the driver's
create_disk / clone_disk). States: creating -> available <-> in-use -> deleting, then the row
goes (the volume vanishes from DescribeVolumes, as on AWS); 'error' when the host could not make
it. Attachments (attachments.py's table): attaching -> attached -> detaching -> gone. Every state
that follows host work is recorded by the host action when the driver has returned, never on a
timer; each action is a durable host task in the volume's zone (host_tasks.py), idempotent, so a
crash at any step is finished by running the task again at the next start.

Encrypted volumes carry a wrapped data key (ebs_encryption.py); host tasks name the volume only.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

from sqlalchemy import func, select, update

from hypervisor.host import crash_point

from . import ebs_encryption as crypto
from . import attachments, instances, snapshots
from .catalogue import REGIONS
from .errors import (AttachmentLimitExceeded, IdempotentParameterMismatch, IncorrectModificationState,
                     IncorrectState, InvalidAttachmentNotFound, InvalidParameterCombination,
                     InvalidParameterValue, InvalidVolumeIDMalformed, InvalidVolumeModificationNotFound,
                     InvalidVolumeNotFound, InvalidVolumeZoneMismatch, MissingParameter, Unsupported,
                     UnsupportedOperation, VolumeInUse, VolumeModificationRateExceeded)
from .ids import new_id, well_formed
from .models import Snapshot, Volume, VolumeAttachment, utcnow
from .query import Resource, Selector, describe
from .registry import Context, Host, action, host_action, host_action_failed
from .tags import delete_all_tags, refuse_other_tag_types, set_tags, tag_dict, tag_list, tag_specifications

# ------------------------------------------------------------------------------ volume types


@dataclass(frozen=True)
class VolumeType:
    """AWS's documented limits of a volume type (EBS user guide, 'Amazon EBS volume types')."""
    sizes: tuple[int, int]                     # GiB
    iops: tuple[int, int] | None = None        # provisioned IOPS range; None: not settable
    iops_per_gib: int | None = None            # the most IOPS per GiB
    iops_required: bool = False
    default_iops: int | None = None
    throughput: tuple[int, int] | None = None  # MiB/s range; None: not settable
    default_throughput: int | None = None
    multi_attach: bool = False


VOLUME_TYPES = {
    "standard": VolumeType((1, 1024)),
    "gp2": VolumeType((1, 16384)),
    "gp3": VolumeType((1, 65536), (3000, 80000), 500, default_iops=3000, throughput=(125, 2000),
                      default_throughput=125),
    "io1": VolumeType((4, 16384), (100, 64000), 50, iops_required=True, multi_attach=True),
    "io2": VolumeType((4, 65536), (100, 256000), 1000, iops_required=True, multi_attach=True),
    "st1": VolumeType((125, 16384)),
    "sc1": VolumeType((125, 16384)),
}
DEFAULT_TYPE = "gp2"  # AWS's default for CreateVolume
GP3_BASELINE_IOPS = 3000
MAX_THROUGHPUT_PER_IOPS = 0.25  # gp3: MiB/s per provisioned IOPS
MULTI_ATTACH_LIMIT = 16         # instances one io1/io2 volume may be attached to


def _rules(volume_type: str) -> VolumeType:
    rules = VOLUME_TYPES.get(volume_type)
    if rules is None:
        raise InvalidParameterValue.value(volume_type, "volumeType",
                                          "Valid values: " + ", ".join(VOLUME_TYPES) + ".")
    return rules


def check_size(volume_type: str, size: int) -> None:
    low, high = _rules(volume_type).sizes
    if size > high:
        raise InvalidParameterValue(f"Volume of {size}GiB is too large; maximum is {high}GiB.")
    if size < low:
        raise InvalidParameterValue(f"Volume of {size}GiB is too small; minimum is {low}GiB.")


def performance(volume_type: str, size: int, iops: int | None,
                throughput: int | None) -> tuple[int | None, int | None]:
    """(IOPS, throughput) a volume of this type and size gets, given what was asked (None: the
    type's default), or AWS's error for a value the type does not take or allow."""
    rules = _rules(volume_type)
    if iops is not None and rules.iops is None:
        raise InvalidParameterCombination(f"The parameter iops is not supported for {volume_type} volumes.")
    if throughput is not None and rules.throughput is None:
        raise InvalidParameterCombination("throughput can only be specified for volumeType gp3.")
    if iops is None and rules.iops_required:
        raise InvalidParameterCombination(f"The parameter iops must be specified for {volume_type} volumes.")
    if rules.iops is not None:
        iops = rules.default_iops if iops is None else iops
        low, high = rules.iops
        if iops > high:
            raise InvalidParameterValue(f"Volume iops of {iops} is too high; maximum is {high}.")
        if iops < low:
            raise InvalidParameterValue(f"Volume iops of {iops} is too low; minimum is {low}.")
        baseline = GP3_BASELINE_IOPS if volume_type == "gp3" else 0  # gp3's 3000 come with any size
        if iops > baseline and iops > size * rules.iops_per_gib:
            raise InvalidParameterValue(f"Iops to volume size ratio of {iops / size:.6f} is too high; "
                                        f"maximum is {rules.iops_per_gib}.")
    if rules.throughput is not None:
        throughput = rules.default_throughput if throughput is None else throughput
        low, high = rules.throughput
        if throughput > high:
            raise InvalidParameterValue(f"Volume throughput of {throughput} is too high; maximum is {high}.")
        if throughput < low:
            raise InvalidParameterValue(f"Volume throughput of {throughput} is too low; minimum is {low}.")
        if throughput > rules.default_throughput and throughput / iops > MAX_THROUGHPUT_PER_IOPS:
            raise InvalidParameterValue(f"Throughput (MiBps) to iops ratio of {throughput / iops:.6f} is too "
                                        f"high; maximum is {MAX_THROUGHPUT_PER_IOPS:.6f} MiBps per iops.")
    return iops, throughput


def shown_iops(v: Volume) -> int | None:
    """DescribeVolumes' Iops: provisioned, or gp2's baseline (3 per GiB, 100 to 16000)."""
    if v.volume_type == "gp2":
        return min(16000, max(100, 3 * v.size))
    return v.iops


# ------------------------------------------------------------------------------------ lookup

def _check_id(volume_id: str) -> None:
    if not well_formed(volume_id, "vol"):
        raise InvalidVolumeIDMalformed(volume_id)


def get_volume(ctx: Context, volume_id: str, *, for_update: bool = False) -> Volume:
    """The caller's volume in this region (locked for the transaction when it will change)."""
    _check_id(volume_id)
    v = ctx.session.get(Volume, volume_id, with_for_update=for_update or None)
    if v is None or v.account_id != ctx.account_id or v.region != ctx.region:
        raise InvalidVolumeNotFound(volume_id)
    return v


def existing(ctx: Context, volume_ids) -> None:
    """Every id names one of the caller's volumes (one query, however many ids), or AWS's error."""
    for volume_id in volume_ids:
        _check_id(volume_id)
    have = set(ctx.session.scalars(select(Volume.id).where(Volume.account_id == ctx.account_id,
                                                           Volume.region == ctx.region)))
    missing = [v for v in volume_ids if v not in have]
    if missing:
        raise InvalidVolumeNotFound(*missing)


def _attachments_of(ctx: Context, volume_ids) -> dict[str, list[VolumeAttachment]]:
    out: dict[str, list[VolumeAttachment]] = {}
    rows = ctx.session.scalars(select(VolumeAttachment).where(
        VolumeAttachment.account_id == ctx.account_id, VolumeAttachment.region == ctx.region)
        .order_by(VolumeAttachment.attach_time, VolumeAttachment.instance_id))
    wanted = set(volume_ids)
    for a in rows:
        if a.volume_id in wanted:
            out.setdefault(a.volume_id, []).append(a)
    return out


def _zone_id(region: str, zone: str) -> str | None:
    return next((z.zone_id for z in REGIONS[region].zones if z.name == zone), None)


# ------------------------------------------------------------------------------------ output

def _attachment_out(a: VolumeAttachment) -> dict:
    return {"VolumeId": a.volume_id, "InstanceId": a.instance_id, "Device": a.device, "State": a.state,
            "AttachTime": a.attach_time, "DeleteOnTermination": a.delete_on_termination}


def _volume_out(v: Volume, attachments: list[VolumeAttachment], tags: dict) -> dict:
    out = {
        "VolumeId": v.id, "Size": v.size, "SnapshotId": v.snapshot_id or "",
        "AvailabilityZone": v.availability_zone, "AvailabilityZoneId": _zone_id(v.region, v.availability_zone),
        "State": v.state, "CreateTime": v.created_at,
        "Attachments": [_attachment_out(a) for a in attachments],
        "Encrypted": v.encrypted, "VolumeType": v.volume_type, "Iops": shown_iops(v),
        "MultiAttachEnabled": v.multi_attach, "FastRestored": False, "Tags": tag_list(tags),
    }
    if v.encrypted:
        out["KmsKeyId"] = v.kms_key_id
    if v.throughput is not None:
        out["Throughput"] = v.throughput
    return out


# ------------------------------------------------------------------------------------ create

def _zone(ctx: Context, p: dict) -> str:
    zone, zone_id = p.get("AvailabilityZone"), p.get("AvailabilityZoneId")
    if zone and zone_id:
        raise InvalidParameterCombination.together("AvailabilityZone", "AvailabilityZoneId")
    zones = REGIONS[ctx.region].zones
    if zone_id:
        found = next((z.name for z in zones if z.zone_id == zone_id), None)
        if found is None:
            raise InvalidParameterValue(f"Invalid availability zone ID: [{zone_id}]")
        return found
    if not zone:
        raise MissingParameter("AvailabilityZone")
    if zone not in {z.name for z in zones}:
        raise InvalidParameterValue(f"Invalid availability zone: [{zone}]")
    return zone


def _digest(p: dict) -> str:
    material = {k: v for k, v in p.items() if k not in ("ClientToken", "DryRun")}
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()


@action("CreateVolume")
def create_volume(ctx: Context, p: dict) -> dict:
    token = p.get("ClientToken")
    if token:
        if len(token) > 64:
            raise InvalidParameterValue("The client token must be 64 characters or fewer")
        prior = ctx.session.scalars(select(Volume).where(
            Volume.account_id == ctx.account_id, Volume.region == ctx.region, Volume.client_token == token)).first()
        if prior is not None:
            if (prior.attributes or {}).get("RequestDigest") != _digest(p):
                raise IdempotentParameterMismatch()
            return _volume_out(prior, [], _tags(ctx, prior.id))
    refuse_other_tag_types(p.get("TagSpecifications"), {"volume"})
    tags = tag_specifications(p.get("TagSpecifications"), "volume")
    zone = _zone(ctx, p)
    snapshot = snapshots.restorable(ctx, p["SnapshotId"]) if p.get("SnapshotId") else None
    if p.get("Size") is None and snapshot is None:
        raise MissingParameter("size")
    v = new_volume(ctx, zone, size=p.get("Size"), volume_type=p.get("VolumeType"), iops=p.get("Iops"),
                   throughput=p.get("Throughput"), multi_attach=bool(p.get("MultiAttachEnabled")),
                   encrypted=p.get("Encrypted"), kms_key_id=p.get("KmsKeyId"), snapshot=snapshot,
                   attributes={"AutoEnableIO": False, **({"RequestDigest": _digest(p)} if token else {})},
                   client_token=token)
    if tags:
        set_tags(ctx, v.id, tags)
    # What the disk is made from goes in the task: the snapshot may be deleted before it runs
    # (a file-backed one leaves no layer on the host, only its file, named here).
    from .images import snapshot_file
    ctx.host_task("volume.create", v.id, zone,
                  source_encrypted=bool(snapshot is not None and snapshot.encrypted),
                  source_file=snapshot_file(ctx.config, snapshot) if snapshot is not None else None)
    return _volume_out(v, [], tag_dict(tags))


def new_volume(ctx: Context, zone: str, *, size: int | None, volume_type: str | None, iops: int | None,
               throughput: int | None, encrypted: bool | None, kms_key_id: str | None, snapshot=None,
               multi_attach: bool = False, state: str = "creating", attributes: dict | None = None,
               client_token: str | None = None) -> Volume:
    """A new volume's row (added and flushed), checked by AWS's rules for its type, size,
    performance and encryption: CreateVolume's, and RunInstances' for a launch's volumes (which
    makes the disk itself, so those start 'in-use'). size None: the snapshot's."""
    volume_type = volume_type or DEFAULT_TYPE
    _rules(volume_type)
    size = snapshot.volume_size if size is None else size
    check_size(volume_type, size)
    if snapshot is not None and size < snapshot.volume_size:
        raise InvalidParameterValue(f"Volume of {size}GiB is too small; minimum is {snapshot.volume_size}GiB.")
    iops, throughput = performance(volume_type, size, iops, throughput)
    if multi_attach and not _rules(volume_type).multi_attach:
        raise InvalidParameterCombination("Multi-Attach is supported only for io1 and io2 volumes.")
    encrypted, kms = crypto.encryption(ctx, encrypted, kms_key_id,
                                       inherited=snapshot is not None and snapshot.encrypted)
    if multi_attach and encrypted:
        refuse_encrypted_multi_attach()
    if snapshot is not None and snapshot.encrypted and not kms_key_id:
        kms = snapshot.kms_key_id  # a volume from an encrypted snapshot keeps its key unless told
    volume_id = new_id("vol")
    wrapped = None
    if encrypted:
        # From an encrypted snapshot the volume keeps the snapshot's data key (so its host task
        # can open the snapshot even if the snapshot is deleted before the task runs); any
        # other encrypted volume gets a fresh one.
        wrapped = (crypto.rewrap(ctx.config, snapshot.wrapped_key, snapshot.id, volume_id)
                   if snapshot is not None and snapshot.encrypted else crypto.new_wrapped_key(ctx.config, volume_id))
    v = Volume(id=volume_id, account_id=ctx.account_id, region=ctx.region, availability_zone=zone,
               size=size, volume_type=volume_type, iops=iops, throughput=throughput, multi_attach=multi_attach,
               encrypted=encrypted, kms_key_id=kms, wrapped_key=wrapped,
               snapshot_id=snapshot.id if snapshot is not None else None, state=state,
               attributes=attributes if attributes is not None else {"AutoEnableIO": False},
               client_token=client_token, created_at=utcnow())
    ctx.session.add(v)
    ctx.session.flush()
    return v


def refuse_encrypted_multi_attach():
    """A shared disk is one raw file several guests open; this host encrypts qcow2 layers only."""
    raise Unsupported("Encrypted Multi-Attach volumes are not supported by this emulator's hosts yet.")


def _tags(ctx: Context, resource_id: str) -> dict:
    from .tags import tags_for
    return tags_for(ctx, [resource_id]).get(resource_id, {})


# ---------------------------------------------------------------------------------- describe

def _volume_rows(ctx: Context) -> list[Volume]:
    return list(ctx.session.scalars(select(Volume).where(
        Volume.account_id == ctx.account_id, Volume.region == ctx.region).order_by(Volume.id)))


VOLUME_FILTERS = {
    "availability-zone": lambda v: v.availability_zone,
    "create-time": lambda v: v.created_at,
    "encrypted": lambda v: v.encrypted,
    "fast-restored": lambda v: False,
    "multi-attach-enabled": lambda v: v.multi_attach,
    "size": lambda v: v.size,
    "snapshot-id": lambda v: v.snapshot_id or "",
    "status": lambda v: v.state,
    "volume-id": lambda v: v.id,
    "volume-type": lambda v: v.volume_type,
    "iops": lambda v: shown_iops(v),
    "throughput": lambda v: v.throughput,
}

_ATTACHMENT_FILTERS = {
    "attachment.attach-time": lambda a: a.attach_time,
    "attachment.delete-on-termination": lambda a: a.delete_on_termination,
    "attachment.device": lambda a: a.device,
    "attachment.instance-id": lambda a: a.instance_id,
    "attachment.status": lambda a: a.state,
}


def _render_volumes(ctx: Context, page: list[Volume], tags) -> list[dict]:
    attached = _attachments_of(ctx, [v.id for v in page])
    return [_volume_out(v, attached.get(v.id, []), tags.get(v.id, {})) for v in page]


_BY_VOLUME_ID = Selector("VolumeIds", lambda v: v.id, InvalidVolumeNotFound, _check_id)
VOLUMES = Resource("Volumes", _render_volumes, VOLUME_FILTERS, (_BY_VOLUME_ID,), max_results=(5, 500),
                   ids_exclude_max_results=("VolumeIds", "volumeSet"))


@action("DescribeVolumes")
def describe_volumes(ctx: Context, p: dict) -> dict:
    rows = _volume_rows(ctx)
    attached = _attachments_of(ctx, [v.id for v in rows]) if any(
        (f.get("Name") or "").startswith("attachment.") for f in p.get("Filters") or []) else {}
    by_attachment = {name: (lambda v, get=get: [get(a) for a in attached.get(v.id, [])])
                     for name, get in _ATTACHMENT_FILTERS.items()}
    return describe(ctx, VOLUMES, p, rows, filters=by_attachment)


# ------------------------------------------------------------------------------------ attach

# AWS's device names for Linux (EC2 user guide, 'Device names on Linux instances'): /dev/sd[a-z]
# (with partitions 1-15), /dev/xvd[a-z] and /dev/xvd[a-d][a-z]; given with or without /dev/.
_DEVICE = re.compile(r"^(?:/dev/)?(?:sd[a-z](?:[1-9]|1[0-5])?|xvd[a-z]|xvd[a-d][a-z])$")


def _short(device: str) -> str:
    """The attachment point a device name takes: with or without /dev/, and sdX and xvdX are one
    (Xen-era kernels rename sdf to xvdf, so AWS treats them as the same point)."""
    name = device[5:] if device.startswith("/dev/") else device
    return "xvd" + name[2:] if name.startswith("sd") else name


def check_device(device: str) -> str:
    if not _DEVICE.match(device or ""):
        raise InvalidParameterValue(f"Value ({device}) for parameter device is invalid. "
                                    f"{device} is not a valid EBS device name.")
    return device


def _device_taken(device: str) -> InvalidParameterValue:
    return InvalidParameterValue(f"Invalid value '{device}' for unixDevice. Attachment point {device} is already in use")


@action("AttachVolume")
def attach_volume(ctx: Context, p: dict) -> dict:
    volume = get_volume(ctx, p["VolumeId"], for_update=True)
    instance = instances.get_instance(ctx, p["InstanceId"])
    device = check_device(p["Device"])
    if volume.availability_zone != instance.availability_zone:
        raise InvalidVolumeZoneMismatch(volume.id, instance.id)
    current = _attachments_of(ctx, [volume.id]).get(volume.id, [])
    if volume.state == "in-use":
        if not volume.multi_attach or any(a.instance_id == instance.id for a in current):
            raise VolumeInUse.attached(volume.id)
        if len(current) >= MULTI_ATTACH_LIMIT:
            raise AttachmentLimitExceeded(volume.id, MULTI_ATTACH_LIMIT)
    elif volume.state != "available":
        raise IncorrectState.not_available(volume.id)
    if instance.state not in ("running", "stopped"):
        raise IncorrectState.instance_not_running(instance.id)
    if volume.multi_attach:
        _check_multi_attach(instance, device)
    # An instance-store root always holds the root device; an EBS root only while attached
    # (a detached root volume goes back there, or another volume takes its place).
    taken = {_short(instance.root_device_name or "")} if instance.root_device_type != "ebs" else set()
    taken |= {_short(d) for d in ctx.session.scalars(select(VolumeAttachment.device).where(
        VolumeAttachment.instance_id == instance.id))}
    if _short(device) in taken:
        raise _device_taken(device)
    a = VolumeAttachment(volume_id=volume.id, instance_id=instance.id, device=device, state="attaching",
                         attach_time=utcnow(), delete_on_termination=False, listed=False,
                         account_id=ctx.account_id, region=ctx.region)
    ctx.session.add(a)
    volume.state = "in-use"
    ctx.session.flush()
    ctx.host_task("volume.attach", volume.id, volume.availability_zone, instance_id=instance.id)
    return _attachment_out(a)


def _check_multi_attach(instance, device: str) -> None:
    """AWS's rules for a Multi-Attach volume's attachments (EBS user guide, 'Multi-Attach
    considerations'): Nitro instances only, and never as a boot volume."""
    from .catalogue import INSTANCE_TYPES

    if (INSTANCE_TYPES.get(instance.instance_type) or {}).get("Hypervisor") != "nitro":
        raise UnsupportedOperation(f"Multi-Attach is not supported for this instance type "
                                   f"({instance.instance_type}): it needs an instance built on the Nitro System.")
    if instance.root_device_name and _short(device) == _short(instance.root_device_name):
        raise InvalidParameterValue(f"Invalid value '{device}' for unixDevice. Multi-Attach enabled volumes "
                                    "can't be attached as boot volumes.")


# ------------------------------------------------------------------------------------ detach

@action("DetachVolume")
def detach_volume(ctx: Context, p: dict) -> dict:
    volume = get_volume(ctx, p["VolumeId"], for_update=True)
    instance_id, device = p.get("InstanceId"), p.get("Device")
    if instance_id:
        instances.get_instance(ctx, instance_id)
    current = _attachments_of(ctx, [volume.id]).get(volume.id, [])
    if not current:
        raise IncorrectState.volume(volume.id, volume.state)
    if instance_id:
        a = next((a for a in current if a.instance_id == instance_id), None)
        if a is None:
            raise InvalidAttachmentNotFound.not_attached(volume.id, instance_id)
    elif len(current) > 1:
        raise MissingParameter("InstanceId")  # a Multi-Attach volume: which attachment?
    else:
        a = current[0]
    if device and a.device != device:
        raise InvalidAttachmentNotFound.not_as_device(volume.id, a.instance_id, device)
    owner = instances.get_instance(ctx, a.instance_id)
    if a.device == owner.root_device_name and owner.state not in ("stopped", "terminated"):
        # a guest's root file system cannot be pulled from under it (once stopped, it may go)
        raise IncorrectState(f"Unable to detach root volume '{volume.id}' from instance '{owner.id}'")
    force = bool(p.get("Force"))
    if a.state != "detaching" or force:  # again while detaching: only Force asks anything new
        a.state = "detaching"
        ctx.host_task("volume.detach", volume.id, volume.availability_zone, instance_id=a.instance_id, force=force)
    return _attachment_out(a)


# ------------------------------------------------------------------------------------ modify

def _modification_out(v: Volume) -> dict:
    return dict(v.modification or {}, VolumeId=v.id)


@action("ModifyVolume")
def modify_volume(ctx: Context, p: dict) -> dict:
    volume = get_volume(ctx, p["VolumeId"], for_update=True)
    if volume.state not in ("available", "in-use"):
        raise IncorrectState.volume(volume.id, volume.state)
    if (volume.modification or {}).get("ModificationState") in ("modifying", "optimizing"):
        raise IncorrectModificationState(volume.id)
    target_type = p.get("VolumeType") or volume.volume_type
    same_type = target_type == volume.volume_type
    size = p.get("Size") if p.get("Size") is not None else volume.size
    if size < volume.size:
        raise InvalidParameterValue("New size cannot be smaller than existing size")
    check_size(target_type, size)
    rules = _rules(target_type)
    iops = p.get("Iops")
    if iops is None and rules.iops is not None:  # kept for the same type, else AWS's default (3000)
        iops = volume.iops if same_type and volume.iops is not None else 3000
    throughput = p.get("Throughput")
    if throughput is None and rules.throughput is not None and same_type:
        throughput = volume.throughput
    iops, throughput = performance(target_type, size, iops, throughput)
    multi = volume.multi_attach if p.get("MultiAttachEnabled") is None else bool(p["MultiAttachEnabled"])
    if multi and not rules.multi_attach:
        raise InvalidParameterCombination("Multi-Attach is supported only for io1 and io2 volumes.")
    if multi != volume.multi_attach:
        # AWS turns Multi-Attach on or off after creation for io2 only; this host also needs the
        # volume detached (its disk changes format: raw when shared, qcow2 otherwise).
        if target_type != "io2":
            raise InvalidParameterCombination("Multi-Attach can be enabled or disabled after creation "
                                              "for io2 volumes only.")
        if volume.state == "in-use":
            raise IncorrectState.volume(volume.id, volume.state)
        if multi and volume.encrypted:
            refuse_encrypted_multi_attach()
    if (target_type, size, iops, throughput, multi) == (volume.volume_type, volume.size, volume.iops,
                                                        volume.throughput, volume.multi_attach):
        raise InvalidParameterValue("New configuration is the same as the existing configuration.")
    _check_modification_rate(ctx, volume)
    volume.modification = {k: v for k, v in {
        "ModificationState": "modifying", "StartTime": utcnow().isoformat(), "Progress": 0,
        "TargetSize": size, "TargetVolumeType": target_type, "TargetIops": iops, "TargetThroughput": throughput,
        "TargetMultiAttachEnabled": multi,
        "OriginalSize": volume.size, "OriginalVolumeType": volume.volume_type, "OriginalIops": shown_iops(volume),
        "OriginalThroughput": volume.throughput, "OriginalMultiAttachEnabled": volume.multi_attach,
    }.items() if v is not None}
    ctx.host_task("volume.modify", volume.id, volume.availability_zone)
    return {"VolumeModification": _modification_row(volume)}


def _check_modification_rate(ctx: Context, volume: Volume) -> None:
    """AWS's cooldown: a volume's modification starts at least 6 hours (config) after the last."""
    from datetime import datetime, timedelta

    from .times import aware

    started = (volume.modification or {}).get("StartTime")
    if started and utcnow() - aware(datetime.fromisoformat(started)) < timedelta(
            seconds=ctx.config.volume_modification_cooldown_seconds):
        raise VolumeModificationRateExceeded()


def _modification_row(v: Volume) -> dict:
    """The stored modification with its times as datetimes (JSON keeps ISO text)."""
    from datetime import datetime
    out = _modification_out(v)
    for key in ("StartTime", "EndTime"):
        if isinstance(out.get(key), str):
            out[key] = datetime.fromisoformat(out[key])
    return out


MODIFICATION_FILTERS = {
    "modification-state": lambda v: v.modification.get("ModificationState"),
    "volume-id": lambda v: v.id,
    "start-time": lambda v: v.modification.get("StartTime"),
    "original-size": lambda v: v.modification.get("OriginalSize"),
    "target-size": lambda v: v.modification.get("TargetSize"),
    "original-volume-type": lambda v: v.modification.get("OriginalVolumeType"),
    "target-volume-type": lambda v: v.modification.get("TargetVolumeType"),
    "original-iops": lambda v: v.modification.get("OriginalIops"),
    "target-iops": lambda v: v.modification.get("TargetIops"),
    "original-throughput": lambda v: v.modification.get("OriginalThroughput"),
    "target-throughput": lambda v: v.modification.get("TargetThroughput"),
    "original-multi-attach-enabled": lambda v: v.modification.get("OriginalMultiAttachEnabled"),
    "target-multi-attach-enabled": lambda v: v.modification.get("TargetMultiAttachEnabled"),
}

MODIFICATIONS = Resource("VolumesModifications", lambda ctx, page, tags: [_modification_row(v) for v in page],
                         MODIFICATION_FILTERS,
                         (Selector("VolumeIds", lambda v: v.id, InvalidVolumeModificationNotFound),),
                         max_results=(1, 500), tagged=False)


@action("DescribeVolumesModifications")
def describe_volumes_modifications(ctx: Context, p: dict) -> dict:
    rows = _volume_rows(ctx)
    have = {v.id for v in rows}
    for volume_id in p.get("VolumeIds") or []:  # a volume that does not exist is that error first
        _check_id(volume_id)
        if volume_id not in have:
            raise InvalidVolumeNotFound(volume_id)
    return describe(ctx, MODIFICATIONS, p, [v for v in rows if v.modification])


# ------------------------------------------------------------------------------------ status

def _status(v: Volume) -> str:
    return {"creating": "insufficient-data", "error": "impaired"}.get(v.state, "ok")


def _statuses(ctx: Context, page: list[Volume], tags) -> list[dict]:
    attached = _attachments_of(ctx, [v.id for v in page])
    out = []
    for v in page:
        io = "not-applicable" if v.volume_type not in ("io1", "io2", "gp3") else (
            "normal" if _status(v) == "ok" else "insufficient-data")
        passed = {"ok": "passed", "impaired": "failed"}.get(_status(v), "insufficient-data")
        out.append({
            "VolumeId": v.id, "AvailabilityZone": v.availability_zone,
            "AvailabilityZoneId": _zone_id(v.region, v.availability_zone),
            "VolumeStatus": {"Status": _status(v), "Details": [{"Name": "io-enabled", "Status": passed},
                                                                {"Name": "io-performance", "Status": io}]},
            "Events": [], "Actions": [],
            "AttachmentStatuses": [{"InstanceId": a.instance_id, "IoPerformance": io}
                                   for a in attached.get(v.id, [])],
        })
    return out


STATUS_FILTERS = {
    "availability-zone": lambda v: v.availability_zone,
    "volume-status.status": _status,
    "volume-status.details-name": lambda v: ["io-enabled", "io-performance"],
    "volume-status.details-status": lambda v: {"ok": "passed", "impaired": "failed"}.get(_status(v),
                                                                                         "insufficient-data"),
    "event.event-type": lambda v: [], "event.description": lambda v: [], "event.event-id": lambda v: [],
    "event.not-after": lambda v: [], "event.not-before": lambda v: [],
    "action.code": lambda v: [], "action.description": lambda v: [], "action.event-id": lambda v: [],
}
VOLUME_STATUSES = Resource("VolumeStatuses", _statuses, STATUS_FILTERS, (_BY_VOLUME_ID,), max_results=(5, 1000),
                           tagged=False)


@action("DescribeVolumeStatus")
def describe_volume_status(ctx: Context, p: dict) -> dict:
    return describe(ctx, VOLUME_STATUSES, p, [v for v in _volume_rows(ctx) if v.state != "deleting"])


# -------------------------------------------------------------------------------- attributes

@action("DescribeVolumeAttribute")
def describe_volume_attribute(ctx: Context, p: dict) -> dict:
    volume = get_volume(ctx, p["VolumeId"])
    attr = p["Attribute"]
    if attr == "autoEnableIO":
        return {"VolumeId": volume.id, "AutoEnableIO": {"Value": bool((volume.attributes or {}).get("AutoEnableIO"))}}
    if attr == "productCodes":
        return {"VolumeId": volume.id, "ProductCodes": list((volume.attributes or {}).get("ProductCodes") or [])}
    raise InvalidParameterValue.value(attr, "attribute", "Valid values: autoEnableIO, productCodes.")


@action("ModifyVolumeAttribute")
def modify_volume_attribute(ctx: Context, p: dict) -> None:
    volume = get_volume(ctx, p["VolumeId"])
    value = (p.get("AutoEnableIO") or {}).get("Value")
    if value is None:
        raise MissingParameter.no_attributes()
    volume.attributes = {**(volume.attributes or {}), "AutoEnableIO": bool(value)}
    return None


# ------------------------------------------------------------------------------------ delete

@action("DeleteVolume")
def delete_volume(ctx: Context, p: dict) -> None:
    volume = get_volume(ctx, p["VolumeId"], for_update=True)
    current = _attachments_of(ctx, [volume.id]).get(volume.id, [])
    if current:
        raise VolumeInUse.attached_to(volume.id, current[0].instance_id)
    if volume.state == "deleting":
        return None  # already on its way
    volume.state = "deleting"
    ctx.host_task("volume.delete", volume.id, volume.availability_zone)
    return None


# ------------------------------------------------------------------------------- host side

def _key(host: Host, v: Volume) -> bytes | None:
    return crypto.passphrase(host.config, v.wrapped_key, v.id)


def make_disk(host: Host, volume_id: str, source_encrypted: bool = False, image_path: str | None = None) -> None:
    """Have the host make a volume's disk, unless it exists (the driver's calls are idempotent):
    blank, or a copy-on-write clone of its snapshot (of the host file behind a snapshot that is
    one, e.g. a public image's root) or of `image_path` (the root of an image with no snapshot, a
    disk registered from a file). source_encrypted: the snapshot is encrypted (told by the task:
    its row may be gone by now; its data stays on the host until the tasks before its delete ran)."""
    from .images import snapshot_file

    with host.Session() as session:
        v = session.get(Volume, volume_id)
        if v is None:
            return
        size, snapshot_id, key, shared = v.size, v.snapshot_id, _key(host, v), v.multi_attach
        snapshot = session.get(Snapshot, snapshot_id) if snapshot_id else None
        path = snapshot_file(host.config, snapshot) if snapshot is not None else image_path
    if path:
        host.driver.clone_disk(volume_id, size, image_path=path, key=key, shared=shared)
    elif snapshot_id:
        host.driver.clone_disk(volume_id, size, snapshot_id=snapshot_id, key=key,
                               source_key=key if source_encrypted else None, shared=shared)
    else:
        host.driver.create_disk(volume_id, size, key, shared)


@host_action("volume.create")
def create_on_host(host: Host, volume_id: str, source_encrypted: bool = False,
                   source_file: str | None = None) -> None:
    """source_file: the host file behind the volume's snapshot if it is one (its row may be gone)."""
    with host.Session() as session:
        v = session.get(Volume, volume_id)
        if v is None or v.state != "creating":
            return  # deleted before its disk was made (its delete task follows), or done already
    make_disk(host, volume_id, source_encrypted, image_path=source_file)
    crash_point(host.config, "volume.create:after-driver")
    with host.Session() as session:
        session.execute(update(Volume).where(Volume.id == volume_id, Volume.state == "creating")
                        .values(state="available"))
        session.commit()


@host_action_failed("volume.create")
def create_failed(host: Host, volume_id: str, error: str) -> None:
    with host.Session() as session:
        session.execute(update(Volume).where(Volume.id == volume_id, Volume.state == "creating")
                        .values(state="error"))
        session.commit()


@host_action("volume.attach")
def attach_on_host(host: Host, volume_id: str, instance_id: str) -> None:
    with host.Session() as session:
        a = session.get(VolumeAttachment, (volume_id, instance_id))
        v = session.get(Volume, volume_id)
        if a is None or v is None or a.state != "attaching":
            return  # detached or released meanwhile: nothing to attach
        device, key = a.device, _key(host, v)
    host.driver.attach_disk(instance_id, volume_id, key, device=device)
    crash_point(host.config, "volume.attach:after-driver")
    with host.Session() as session:
        session.execute(update(VolumeAttachment).where(
            VolumeAttachment.volume_id == volume_id, VolumeAttachment.instance_id == instance_id,
            VolumeAttachment.state == "attaching").values(state="attached"))
        session.commit()


def _end_attachment(session, volume_id: str, instance_id: str) -> None:
    """The attachment is over: its row goes; the volume is available unless attached elsewhere."""
    attachments.lock_volume(session, volume_id)
    a = session.get(VolumeAttachment, (volume_id, instance_id))
    if a is not None:
        session.delete(a)
        session.flush()
    others = session.scalar(select(func.count()).select_from(VolumeAttachment).where(
        VolumeAttachment.volume_id == volume_id))
    if not others:
        session.execute(update(Volume).where(Volume.id == volume_id, Volume.state == "in-use")
                        .values(state="available"))


@host_action_failed("volume.attach")
def attach_failed(host: Host, volume_id: str, error: str) -> None:
    """The host could not attach it: the attachment ends, as AWS ends a failed one."""
    with host.Session() as session:
        for a in session.scalars(select(VolumeAttachment).where(
                VolumeAttachment.volume_id == volume_id, VolumeAttachment.state == "attaching")).all():
            _end_attachment(session, volume_id, a.instance_id)
        session.commit()


@host_action("volume.detach")
def detach_on_host(host: Host, volume_id: str, instance_id: str, force: bool = False) -> None:
    with host.Session() as session:
        a = session.get(VolumeAttachment, (volume_id, instance_id))
        if a is None or a.state != "detaching":
            return
    host.driver.detach_disk(instance_id, volume_id, force=force)
    crash_point(host.config, "volume.detach:after-driver")
    with host.Session() as session:
        a = session.get(VolumeAttachment, (volume_id, instance_id))
        if a is not None and a.state == "detaching":
            _end_attachment(session, volume_id, instance_id)
        session.commit()


@host_action_failed("volume.detach")
def detach_failed(host: Host, volume_id: str, error: str) -> None:
    """The guest did not let go: the volume stays attached (DetachVolume with Force then forces)."""
    with host.Session() as session:
        session.execute(update(VolumeAttachment).where(
            VolumeAttachment.volume_id == volume_id, VolumeAttachment.state == "detaching").values(state="attached"))
        session.commit()


@host_action("volume.modify")
def modify_on_host(host: Host, volume_id: str) -> None:
    with host.Session() as session:
        v = session.get(Volume, volume_id)
        # 'optimizing': a crash came between the two records below; the rest is run again.
        if v is None or (v.modification or {}).get("ModificationState") not in ("modifying", "optimizing"):
            return
        target, key = v.modification["TargetSize"], _key(host, v)
        grow = target > v.size
        share = v.modification.get("TargetMultiAttachEnabled")
        reshape = share is not None and share != v.modification.get("OriginalMultiAttachEnabled")
    if reshape:  # before any growth: a raw file and a qcow2 chain grow differently
        host.driver.share_disk(volume_id, share, key)
    if grow:
        host.driver.resize_disk(volume_id, target, key)
    crash_point(host.config, "volume.modify:after-driver")
    # The new size and performance hold from here; AWS then 'optimizes' before 'completed'.
    # Both are recorded now that the host has done its part (nothing is left to wait for).
    for state, progress in (("optimizing", 50), ("completed", 100)):
        with host.Session() as session:
            v = session.get(Volume, volume_id)
            if v is None:
                return
            m = dict(v.modification)
            v.size = m["TargetSize"]
            v.volume_type = m["TargetVolumeType"]
            v.iops = m.get("TargetIops")
            v.throughput = m.get("TargetThroughput")
            v.multi_attach = m.get("TargetMultiAttachEnabled", v.multi_attach)
            m.update(ModificationState=state, Progress=progress)
            if state == "completed":
                m["EndTime"] = utcnow().isoformat()
            v.modification = m
            session.commit()


@host_action_failed("volume.modify")
def modify_failed(host: Host, volume_id: str, error: str) -> None:
    with host.Session() as session:
        v = session.get(Volume, volume_id)
        if v is not None and v.modification:
            v.modification = {**v.modification, "ModificationState": "failed",
                              "StatusMessage": error[:255], "EndTime": utcnow().isoformat()}
            session.commit()


@host_action("volume.delete")
def delete_on_host(host: Host, volume_id: str) -> None:
    with host.Session() as session:  # its key: merging what the host kept for it reads its layers
        v = session.get(Volume, volume_id)
        key = _key(host, v) if v is not None and v.state == "deleting" else None
    host.driver.delete_disk(volume_id, key)  # (a missing disk is nothing to do)
    crash_point(host.config, "volume.delete:after-driver")
    with host.Session() as session:
        v = session.get(Volume, volume_id)
        if v is not None and v.state == "deleting":
            ctx = host.context(session, v.account_id, v.region)
            delete_all_tags(ctx, v.id)
            session.delete(v)
        session.commit()


@host_action_failed("volume.delete")
def delete_failed(host: Host, volume_id: str, error: str) -> None:
    with host.Session() as session:
        session.execute(update(Volume).where(Volume.id == volume_id, Volume.state == "deleting")
                        .values(state="error"))
        session.commit()
