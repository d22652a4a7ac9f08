"""EBS snapshots, in the order of a snapshot's life: CreateSnapshot, CreateSnapshots,
DescribeSnapshots, CopySnapshot, Describe/Modify/ResetSnapshotAttribute, DeleteSnapshot; then the
host actions behind them.

A snapshot is 'pending' ("0%") until its host task has had the driver keep the volume's
point-in-time copy (driver.snapshot_disk, or copy_snapshot for CopySnapshot), then 'completed'
("100%") with the bytes the host stores for it (incremental: what changed since the volume's
previous snapshot), kept in the row (`stored_bytes`) for the benchmark: DescribeSnapshots has no
member for it (FullSnapshotSizeInBytes is the full size, not the increment). 'error' with a
StateMessage when the host failed.

Who sees a snapshot (in its own region): its owner, accounts given createVolumePermission, and
everyone when the group 'all' has it. Those may CreateVolume from it; only the owner changes or
deletes it. An encrypted snapshot keeps its volume's data key (ebs_encryption.py); so do
volumes made from it and copies of it.
"""
from __future__ import annotations

import re

from sqlalchemy import select, update

from hypervisor.host import crash_point

from . import ebs_encryption as crypto
from . import instances, volumes
from .images import snapshot_file, snapshots_settled
from .catalogue import REGIONS
from .errors import (IncorrectState, InvalidParameterCombination, InvalidParameterValue, InvalidSnapshotIDMalformed,
                     InvalidSnapshotInUse, InvalidSnapshotNotFound, InvalidUserIDMalformed, MissingParameter)
from .ids import new_id, well_formed
from .models import Image, Snapshot, utcnow
from .query import Resource, Selector, describe
from .registry import Context, Host, action, host_action, host_action_failed
from .tags import (delete_all_tags, refuse_other_tag_types, set_tags, tag_dict,
                   tag_list, tag_specifications, tags_for)

COPY_VOLUME_ID = "vol-ffffffff"  # what AWS shows as the volume of a copied snapshot
_ACCOUNT = re.compile(r"^\d{12}$")


# ------------------------------------------------------------------------------------ lookup

def _check_id(snapshot_id: str) -> None:
    if not well_formed(snapshot_id, "snap"):
        raise InvalidSnapshotIDMalformed(snapshot_id)


def _public(s: Snapshot) -> bool:
    return any(p.get("Group") == "all" for p in s.create_volume_permissions or [])


def _may_restore(s: Snapshot, account_id: str) -> bool:
    return (s.account_id == account_id or _public(s)
            or any(p.get("UserId") == account_id for p in s.create_volume_permissions or []))


def _visible(ctx: Context, snapshot_id: str, region: str | None = None) -> Snapshot:
    _check_id(snapshot_id)
    s = ctx.session.get(Snapshot, snapshot_id)
    if s is None or s.region != (region or ctx.region) or not _may_restore(s, ctx.account_id):
        raise InvalidSnapshotNotFound(snapshot_id)
    return s


def restorable(ctx: Context, snapshot_id: str, region: str | None = None) -> Snapshot:
    """A completed snapshot the caller may make a volume from (or copy), or AWS's error."""
    s = _visible(ctx, snapshot_id, region)
    if s.state != "completed":
        raise IncorrectState.snapshot(s.id, s.state)
    return s


def _owned(ctx: Context, snapshot_id: str, *, for_update: bool = False) -> Snapshot:
    _check_id(snapshot_id)
    s = ctx.session.get(Snapshot, snapshot_id, with_for_update=for_update or None)
    if s is None or s.region != ctx.region or s.account_id != ctx.account_id:
        raise InvalidSnapshotNotFound(snapshot_id)
    return s


# ------------------------------------------------------------------------------------ output

def _snapshot_out(s: Snapshot, tags: dict) -> dict:
    out = {
        "SnapshotId": s.id, "VolumeId": s.volume_id, "State": s.state, "StartTime": s.created_at,
        "Progress": s.progress, "OwnerId": s.account_id, "Description": s.description,
        "VolumeSize": s.volume_size, "Encrypted": s.encrypted, "StorageTier": "standard",
        "Tags": tag_list(tags),
    }
    if s.encrypted:
        out["KmsKeyId"] = s.kms_key_id
    if s.state_message:
        out["StateMessage"] = s.state_message
    if s.completed_at is not None:
        out["CompletionTime"] = s.completed_at
    return out


def _info(s: Snapshot, tags: dict) -> dict:
    """CreateSnapshots' SnapshotInfo."""
    return {"SnapshotId": s.id, "VolumeId": s.volume_id, "State": s.state, "StartTime": s.created_at,
            "Progress": s.progress, "OwnerId": s.account_id, "Description": s.description,
            "VolumeSize": s.volume_size, "Encrypted": s.encrypted, "Tags": tag_list(tags)}


# ------------------------------------------------------------------------------------ create

def _check_description(description: str | None) -> str:
    if len(description or "") > 255:
        raise InvalidParameterValue.too_long("description")
    return description or ""


def snapshot_of(ctx: Context, volume, description: str, tags: list[dict]) -> Snapshot:
    """A pending snapshot of the volume (which must exist on the host: available or in-use)."""
    if volume.state not in ("available", "in-use"):
        raise IncorrectState.volume(volume.id, volume.state)
    snapshot_id = new_id("snap")
    s = Snapshot(id=snapshot_id, account_id=ctx.account_id, region=ctx.region, volume_id=volume.id,
                 volume_size=volume.size, zone=volume.availability_zone, state="pending", progress="0%",
                 description=description, encrypted=volume.encrypted, kms_key_id=volume.kms_key_id,
                 wrapped_key=crypto.rewrap(ctx.config, volume.wrapped_key, volume.id, snapshot_id),
                 create_volume_permissions=[], created_at=utcnow())
    ctx.session.add(s)
    ctx.session.flush()
    if tags:
        set_tags(ctx, s.id, tags)
    ctx.host_task("snapshot.create", s.id, s.zone)
    return s


@action("CreateSnapshot")
def create_snapshot(ctx: Context, p: dict) -> dict:
    refuse_other_tag_types(p.get("TagSpecifications"), {"snapshot"})
    tags = tag_specifications(p.get("TagSpecifications"), "snapshot")
    description = _check_description(p.get("Description"))
    volume = volumes.get_volume(ctx, p["VolumeId"])
    s = snapshot_of(ctx, volume, description, tags)
    return _snapshot_out(s, tag_dict(tags))


@action("CreateSnapshots")
def create_snapshots(ctx: Context, p: dict) -> dict:
    """A crash-consistent set: one snapshot of each volume attached to the instance (its root
    left out with ExcludeBootVolume, any in ExcludeDataVolumeIds left out too)."""
    from . import attachments

    spec = p["InstanceSpecification"]
    if not spec.get("InstanceId"):
        raise MissingParameter("InstanceSpecification.InstanceId")
    instance = instances.get_instance(ctx, spec["InstanceId"])
    refuse_other_tag_types(p.get("TagSpecifications"), {"snapshot"})
    tags = tag_specifications(p.get("TagSpecifications"), "snapshot")
    description = _check_description(p.get("Description"))
    excluded = set(spec.get("ExcludeDataVolumeIds") or [])
    volumes.existing(ctx, list(excluded))
    copy_tags = p.get("CopyTagsFromSource")
    if copy_tags not in (None, "volume"):
        raise InvalidParameterValue.value(copy_tags, "CopyTagsFromSource", "Valid values: volume.")
    out = []
    for a in attachments.of_instance(ctx.session, instance.id):
        is_root = a.device == instance.root_device_name
        if (is_root and spec.get("ExcludeBootVolume")) or (a.volume_id in excluded and not is_root):
            continue
        volume = volumes.get_volume(ctx, a.volume_id)
        own = list(tags)
        if copy_tags:
            own = [{"Key": k, "Value": v} for k, v in tags_for(ctx, [volume.id]).get(volume.id, {}).items()
                   if not any(t["Key"] == k for t in tags)] + own
        s = snapshot_of(ctx, volume, description, own)
        out.append(_info(s, tag_dict(own)))
    return {"Snapshots": out}


# ---------------------------------------------------------------------------------- describe

SNAPSHOT_FILTERS = {
    "description": lambda s: s.description,
    "encrypted": lambda s: s.encrypted,
    "owner-id": lambda s: s.account_id,
    "owner-alias": lambda s: None,
    "progress": lambda s: s.progress,
    "snapshot-id": lambda s: s.id,
    "start-time": lambda s: s.created_at,
    "status": lambda s: s.state,
    "storage-tier": lambda s: "standard",
    "volume-id": lambda s: s.volume_id,
    "volume-size": lambda s: s.volume_size,
    "kms-key-id": lambda s: s.kms_key_id,
}

SNAPSHOTS = Resource(
    "Snapshots", lambda ctx, page, tags: [_snapshot_out(s, tags.get(s.id, {}) if s.account_id == ctx.account_id
                                                        else {}) for s in page],
    SNAPSHOT_FILTERS, (Selector("SnapshotIds", lambda s: s.id, InvalidSnapshotNotFound, _check_id),),
    max_results=(5, 1000), ids_exclude_max_results=("SnapshotIds", "snapshotSet"))


@action("DescribeSnapshots")
def describe_snapshots(ctx: Context, p: dict) -> dict:
    """Every snapshot the caller may restore (own, shared with it, public), narrowed by OwnerIds
    ('self' is the caller) and RestorableByUserIds (accounts that may restore it)."""
    rows = [s for s in ctx.session.scalars(select(Snapshot).where(Snapshot.region == ctx.region)
                                           .order_by(Snapshot.id)) if _may_restore(s, ctx.account_id)]
    owners = p.get("OwnerIds")
    if owners:
        wanted = {ctx.account_id if o == "self" else o for o in owners}
        for o in wanted:
            if not _ACCOUNT.match(o) and o not in ("amazon", "aws-marketplace", "aws-backup-vault"):
                raise InvalidUserIDMalformed(o)
        rows = [s for s in rows if s.account_id in wanted]
    restorers = p.get("RestorableByUserIds")
    if restorers:
        wanted = {ctx.account_id if r == "self" else r for r in restorers}
        for r in wanted:
            if not _ACCOUNT.match(r) and r != "all":
                raise InvalidUserIDMalformed(r)
        rows = [s for s in rows if any(_may_restore(s, r) for r in wanted if r != "all")
                or ("all" in wanted and _public(s))]
    return describe(ctx, SNAPSHOTS, p, rows)


# -------------------------------------------------------------------------------------- copy

@action("CopySnapshot")
def copy_snapshot(ctx: Context, p: dict) -> dict:
    """Called in the destination region: a standalone copy of a snapshot of SourceRegion (this
    region or another) that the caller may restore. The copy is the caller's, encrypted if the
    source is or if asked (with its KmsKeyId, else the account's default key)."""
    source_region = p["SourceRegion"]
    if source_region not in REGIONS:
        raise InvalidParameterValue.region(source_region)
    refuse_other_tag_types(p.get("TagSpecifications"), {"snapshot"})
    tags = tag_specifications(p.get("TagSpecifications"), "snapshot")
    source = restorable(ctx, p["SourceSnapshotId"], source_region)
    description = _check_description(p.get("Description") if p.get("Description") is not None
                                      else f"[Copied {source.id} from {source_region}]")
    s = copy_of(ctx, source, description, p.get("Encrypted"), p.get("KmsKeyId"), tags)
    return {"SnapshotId": s.id, "Tags": tag_list(tag_dict(tags))}


def copy_of(ctx: Context, source: Snapshot, description: str, encrypted: bool | None, kms_key_id: str | None,
            tags: list[dict]) -> Snapshot:
    """A pending copy of `source` (any region) owned by the caller in its region, made by the
    snapshot.copy host task: CopySnapshot's, and CopyImage's for each snapshot of the image."""
    encrypted, kms = crypto.encryption(ctx, encrypted, kms_key_id, inherited=source.encrypted)
    if source.encrypted and not kms_key_id and source.account_id == ctx.account_id \
            and source.region == ctx.region:
        kms = source.kms_key_id
    snapshot_id = new_id("snap")
    if source.encrypted:
        wrapped = crypto.rewrap(ctx.config, source.wrapped_key, source.id, snapshot_id)
    else:
        wrapped = crypto.new_wrapped_key(ctx.config, snapshot_id) if encrypted else None
    s = Snapshot(id=snapshot_id, account_id=ctx.account_id, region=ctx.region, volume_id=COPY_VOLUME_ID,
                 volume_size=source.volume_size, zone=source.zone, state="pending", progress="0%",
                 description=description, encrypted=encrypted, kms_key_id=kms, wrapped_key=wrapped,
                 source_snapshot_id=source.id, create_volume_permissions=[], created_at=utcnow(),
                 disk_path=snapshot_file(ctx.config, source))  # a file-backed one's copy shares the file
    ctx.session.add(s)
    ctx.session.flush()
    if tags:
        set_tags(ctx, s.id, tags)
    ctx.host_task("snapshot.copy", s.id, s.zone, source_encrypted=source.encrypted)
    return s


# -------------------------------------------------------------------------------- attributes

def _permissions(s: Snapshot) -> list[dict]:
    return [({"Group": "all"} if p.get("Group") == "all" else {"UserId": p["UserId"]})
            for p in s.create_volume_permissions or []]


@action("DescribeSnapshotAttribute")
def describe_snapshot_attribute(ctx: Context, p: dict) -> dict:
    s = _owned(ctx, p["SnapshotId"])
    attr = p["Attribute"]
    if attr == "createVolumePermission":
        return {"SnapshotId": s.id, "CreateVolumePermissions": _permissions(s)}
    if attr == "productCodes":
        return {"SnapshotId": s.id, "ProductCodes": []}
    raise InvalidParameterValue.value(attr, "attribute", "Valid values: createVolumePermission, productCodes.")


def _permission_changes(p: dict) -> tuple[list[dict], list[dict]]:
    """(add, remove) lists of {"UserId"} / {"Group": "all"}, from either request form."""
    attr = p.get("Attribute")
    if attr is not None and attr != "createVolumePermission":
        raise InvalidParameterValue.value(attr, "attribute",
                                          "Only the createVolumePermission attribute can be modified.")
    structured = p.get("CreateVolumePermission")
    legacy = p.get("UserIds") or p.get("GroupNames")
    if structured and legacy:
        raise InvalidParameterCombination.together("CreateVolumePermission", "UserId")
    if structured:
        add = structured.get("Add") or []
        remove = structured.get("Remove") or []
    else:
        operation = p.get("OperationType")
        if not legacy:
            raise MissingParameter("CreateVolumePermission")
        if operation not in ("add", "remove"):
            raise MissingParameter("OperationType") if operation is None else \
                InvalidParameterValue.value(operation, "operationType", "Valid values: add, remove.")
        items = ([{"UserId": u} for u in p.get("UserIds") or []]
                 + [{"Group": g} for g in p.get("GroupNames") or []])
        add, remove = (items, []) if operation == "add" else ([], items)
    for item in (*add, *remove):
        if item.get("Group") is not None and item["Group"] != "all":
            raise InvalidParameterValue.value(item["Group"], "group", "Valid values: all.")
        if item.get("UserId") is not None and not _ACCOUNT.match(item["UserId"]):
            raise InvalidUserIDMalformed(item["UserId"])
        if item.get("Group") is None and item.get("UserId") is None:
            raise MissingParameter("CreateVolumePermission.UserId")
    return add, remove


def _key_of(item: dict) -> dict:
    return {"Group": "all"} if item.get("Group") == "all" else {"UserId": item["UserId"]}


@action("ModifySnapshotAttribute")
def modify_snapshot_attribute(ctx: Context, p: dict) -> None:
    s = _owned(ctx, p["SnapshotId"], for_update=True)
    add, remove = _permission_changes(p)
    if s.encrypted and any(i.get("Group") == "all" for i in add):
        raise InvalidParameterValue("Encrypted snapshots cannot be shared publicly.")
    if s.encrypted and s.kms_key_id == crypto.key_arn(ctx, crypto.DEFAULT_ALIAS) and add:
        raise InvalidParameterValue("Snapshots encrypted with the AWS Managed CMK can't be shared. "
                                    "Specify another snapshot.")
    current = [_key_of(i) for i in s.create_volume_permissions or []]
    for item in map(_key_of, add):
        if item not in current:
            current.append(item)
    gone = [_key_of(i) for i in remove]
    s.create_volume_permissions = [i for i in current if i not in gone]
    return None


@action("ResetSnapshotAttribute")
def reset_snapshot_attribute(ctx: Context, p: dict) -> None:
    s = _owned(ctx, p["SnapshotId"])
    if p["Attribute"] != "createVolumePermission":
        raise InvalidParameterValue.value(p["Attribute"], "attribute", "Valid values: createVolumePermission.")
    s.create_volume_permissions = []
    return None


# ------------------------------------------------------------------------------------ delete

def _image_using(ctx: Context, snapshot_id: str) -> str | None:
    """The registered image (of any owner, in this region) whose block device mappings name it."""
    for image_id, mappings in ctx.session.execute(select(Image.id, Image.block_device_mappings).where(
            Image.region == ctx.region).order_by(Image.id)):
        if any((m.get("Ebs") or {}).get("SnapshotId") == snapshot_id for m in mappings or []):
            return image_id
    return None


@action("DeleteSnapshot")
def delete_snapshot(ctx: Context, p: dict) -> None:
    s = _owned(ctx, p["SnapshotId"], for_update=True)
    image_id = _image_using(ctx, s.id)
    if image_id:
        raise InvalidSnapshotInUse(s.id, image_id)
    zone = s.zone
    delete_all_tags(ctx, s.id)
    ctx.session.delete(s)
    # The host lets go of it after every task asked before (its own snapshot or copy, volumes
    # being made from it): they run first, in order. Volumes made from it keep working. An
    # encrypted one's key goes along WRAPPED (the row is gone when the task runs): the host needs
    # it to merge the snapshot's layer into the one layer that still builds on it.
    ctx.host_task("snapshot.delete", s.id, zone, wrapped_key=s.wrapped_key)
    return None


# ------------------------------------------------------------------------------- host side

def _complete(host: Host, snapshot_id: str, stored: int) -> None:
    with host.Session() as session:
        session.execute(update(Snapshot).where(Snapshot.id == snapshot_id, Snapshot.state == "pending")
                        .values(state="completed", progress="100%", stored_bytes=stored, completed_at=utcnow()))
        snapshots_settled(session, snapshot_id)  # an image made of it may be available now
        session.commit()


def _pending(host: Host, snapshot_id: str) -> tuple[Snapshot, bytes | None] | None:
    """The snapshot still waiting for its host work (None: deleted meanwhile, or done) and its key."""
    with host.Session() as session:
        s = session.get(Snapshot, snapshot_id)
        if s is None or s.state != "pending":
            return None
        return s, crypto.passphrase(host.config, s.wrapped_key, s.id)


@host_action("snapshot.create")
def create_on_host(host: Host, snapshot_id: str) -> None:
    found = _pending(host, snapshot_id)
    if found is None:
        return
    s, key = found
    stored = host.driver.snapshot_disk(s.volume_id, snapshot_id, key)
    crash_point(host.config, "snapshot.create:after-driver")
    _complete(host, snapshot_id, stored)


@host_action("snapshot.copy")
def copy_on_host(host: Host, snapshot_id: str, source_encrypted: bool = False) -> None:
    found = _pending(host, snapshot_id)
    if found is None:
        return
    s, key = found
    if s.disk_path:  # a copy of a public image's root: the same (never written) file
        _complete(host, snapshot_id, 0)
        return
    # An encrypted source: the copy has its data key (opened and re-encrypted with it); a plain
    # source copied encrypted: the copy's own new key.
    stored = host.driver.copy_snapshot(s.source_snapshot_id, snapshot_id, key if source_encrypted else None, key)
    crash_point(host.config, "snapshot.copy:after-driver")
    _complete(host, snapshot_id, stored)


def _failed(host: Host, snapshot_id: str, error: str) -> None:
    with host.Session() as session:
        session.execute(update(Snapshot).where(Snapshot.id == snapshot_id, Snapshot.state == "pending")
                        .values(state="error", state_message=error[:255]))
        snapshots_settled(session, snapshot_id)
        session.commit()


host_action_failed("snapshot.create")(_failed)
host_action_failed("snapshot.copy")(_failed)


@host_action("snapshot.delete")
def delete_on_host(host: Host, snapshot_id: str, wrapped_key: str | None = None) -> None:
    host.driver.delete_snapshot(snapshot_id, crypto.passphrase(host.config, wrapped_key, snapshot_id))
