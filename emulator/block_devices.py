"""What an instance is launched with besides itself: its block device mappings (RunInstances'
BlockDeviceMappings merged over its image's), made into volumes and instance-store disks.

EBS mappings become volumes of the instance's zone (rows of volumes.py, checked by its rules),
attached at their device names from the start: the root volume a copy-on-write clone of the
image's root snapshot (or of the image's file, for an image registered from a disk with none),
the others blank or from their snapshots. They are 'in-use' at once; their disks are made by the
instance's first `instance.start` host task (volumes.make_disk, idempotent), after which the
attachments are 'attached'. `NoDevice` drops an image's mapping. `ephemeralN` mappings are
instance-store disks, only as many as the instance type has (the others are ignored, as AWS
ignores them): blank local disks that live and die with the instance, never volumes; they are
kept in the instance's attributes ("InstanceStore").
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from . import snapshots, volumes
from .catalogue import INSTANCE_TYPES
from .errors import InvalidBlockDeviceMapping, InvalidParameterValue
from .models import Image, Instance, Snapshot, VolumeAttachment, utcnow
from .registry import Context

_EPHEMERAL = re.compile(r"ephemeral(\d+)\Z")


@dataclass
class Planned:
    """One mapping of a launch: an EBS volume (ebs set) or an instance-store disk."""
    device: str
    ebs: dict | None = None             # the Ebs members (VolumeSize, VolumeType, Iops, ...)
    snapshot: Snapshot | None = None
    root: bool = False
    virtual_name: str | None = None     # ephemeralN
    size_gib: int = 0                   # instance store: the type's disk size


def _short(device: str) -> str:
    return device[5:] if device.startswith("/dev/") else device


def _store_disks(instance_type: str) -> tuple[int, int]:
    """(count, GiB each) of the type's instance-store disks; (0, 0) when it has none."""
    info = INSTANCE_TYPES.get(instance_type, {}).get("InstanceStorageInfo")
    if not info:
        return 0, 0
    disks = info["Disks"][0]
    return disks["Count"], disks["SizeInGB"]


def plan(ctx: Context, image: Image, instance_type: str, requested: list[dict] | None) -> list[Planned]:
    """The launch's mappings, checked (AWS's errors): the image's, each replaced or suppressed
    (NoDevice) by a request mapping of the same device name, then the request's new ones."""
    root = image.root_device_name
    merged: dict[str, dict] = {m["DeviceName"]: dict(m) for m in image.block_device_mappings or []}
    seen: set[str] = set()
    for m in requested or []:
        device = m.get("DeviceName")
        if not device:
            raise InvalidBlockDeviceMapping("The device name must be specified in a block device mapping.")
        if _short(device) in seen:
            raise InvalidBlockDeviceMapping(f"The device '{_short(device)}' is used in more than one "
                                            f"block-device mapping")
        seen.add(_short(device))
        volumes.check_device(device)
        kinds = [k for k in ("Ebs", "VirtualName", "NoDevice") if m.get(k) is not None]
        if len(kinds) > 1:
            raise InvalidBlockDeviceMapping(f"The block device mapping for {device} may have only one of "
                                            "Ebs, VirtualName and NoDevice.")
        if m.get("NoDevice") is not None:
            if device == root:
                raise InvalidBlockDeviceMapping(f"The root device {device} cannot be suppressed (NoDevice).")
            merged.pop(device, None)
            continue
        if m.get("VirtualName") is not None:
            if not _EPHEMERAL.match(m["VirtualName"]):
                raise InvalidBlockDeviceMapping(f"Invalid virtual name {m['VirtualName']}: ephemeralN expected.")
            if device == root:
                raise InvalidBlockDeviceMapping(f"The root device {device} must be an EBS volume.")
            merged[device] = {"DeviceName": device, "VirtualName": m["VirtualName"]}
            continue
        if m.get("Ebs") is None:
            raise InvalidBlockDeviceMapping(f"The block device mapping for {device} needs Ebs, VirtualName "
                                            "or NoDevice.")
        ebs = {k: v for k, v in m["Ebs"].items() if v is not None}
        if ebs.get("SnapshotId"):
            snapshots.restorable(ctx, ebs["SnapshotId"])  # the caller's own, shared or public
        image_ebs = (merged.get(device) or {}).get("Ebs")
        if image_ebs is not None:  # overriding the image's mapping of this device
            if ebs.get("SnapshotId") and ebs["SnapshotId"] != image_ebs.get("SnapshotId"):
                raise InvalidBlockDeviceMapping(f"The snapshot of {device} is the image's "
                                                f"({image_ebs.get('SnapshotId')}): it cannot be changed at launch.")
            if ebs.get("VolumeType") and ebs["VolumeType"] != image_ebs.get("VolumeType") \
                    and "Iops" not in ebs and "Throughput" not in ebs:
                image_ebs = {k: v for k, v in image_ebs.items() if k not in ("Iops", "Throughput")}
            ebs = {**image_ebs, **ebs}
        merged[device] = {"DeviceName": device, "Ebs": ebs}
    if root and image.root_device_type == "ebs" and "Ebs" not in (merged.get(root) or {}):
        raise InvalidBlockDeviceMapping.root_not_ebs(root)
    count, size = _store_disks(instance_type)
    out = []
    for device, m in merged.items():
        if "VirtualName" in m:
            if int(_EPHEMERAL.match(m["VirtualName"]).group(1)) < count:  # beyond the type's: ignored
                out.append(Planned(device, virtual_name=m["VirtualName"], size_gib=size))
            continue
        if "Ebs" not in m:
            continue
        ebs = m["Ebs"]
        snapshot = None
        if ebs.get("SnapshotId"):
            snapshot = ctx.session.get(Snapshot, ebs["SnapshotId"])  # an image's may be its owner's alone
            if snapshot is None or snapshot.region != ctx.region:
                raise InvalidBlockDeviceMapping(f"The snapshot {ebs['SnapshotId']} of {device} does not exist.")
        size_asked = ebs.get("VolumeSize")
        if snapshot is not None and size_asked is not None and size_asked < snapshot.volume_size:
            raise InvalidBlockDeviceMapping(f"Volume of size {size_asked}GB is smaller than snapshot "
                                            f"'{snapshot.id}', expect size >= {snapshot.volume_size}GB")
        if snapshot is None and size_asked is None:
            raise InvalidBlockDeviceMapping(f"The block device mapping for {device} needs a SnapshotId "
                                            "or a VolumeSize.")
        out.append(Planned(device, ebs=ebs, snapshot=snapshot, root=device == root))
    out.sort(key=lambda p: not p.root)
    return out


def _volume(ctx: Context, p: Planned, zone: str):
    ebs = p.ebs
    try:
        return volumes.new_volume(
            ctx, zone, size=ebs.get("VolumeSize"), volume_type=ebs.get("VolumeType"), iops=ebs.get("Iops"),
            throughput=ebs.get("Throughput"), encrypted=ebs.get("Encrypted"), kms_key_id=ebs.get("KmsKeyId"),
            snapshot=p.snapshot, state="in-use")
    except InvalidParameterValue as exc:  # say which mapping
        raise type(exc).worded(f"{exc.message} (block device mapping {p.device})") from None


def create(ctx: Context, row: Instance, planned: list[Planned]) -> list[str]:
    """The launch's volumes and attachments for one instance; returns the new volume ids (the
    disks its first start makes). Instance-store disks go in its attributes."""
    made = []
    for p in planned:
        if p.ebs is None:
            continue
        v = _volume(ctx, p, row.availability_zone)
        ctx.session.add(VolumeAttachment(
            volume_id=v.id, instance_id=row.id, device=p.device, state="attaching", attach_time=utcnow(),
            delete_on_termination=bool(p.ebs.get("DeleteOnTermination", True)), listed=True,
            account_id=ctx.account_id, region=ctx.region))
        made.append(v.id)
    store = [{"DeviceName": p.device, "VirtualName": p.virtual_name, "SizeGiB": p.size_gib}
             for p in planned if p.virtual_name]
    if store:
        row.attributes = {**(row.attributes or {}), "InstanceStore": store}
    ctx.session.flush()
    return made
