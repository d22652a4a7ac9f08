"""AMIs, kernel images (aki-) and ramdisk images (ari-): the emulator's public images, then
RegisterImage, DescribeImages, DescribeImageAttribute, ModifyImageAttribute,
ResetImageAttribute and DeregisterImage, in the order of an image's life.

Who sees an image (in its own region only, as on AWS): its owner; everyone when it is public
(launch permission group 'all', kept in the `public` column); accounts named in its launch
permissions (`launch_permissions`: [{"UserId": ...}, {"OrganizationArn": ...}, ...]).

The public images belong to the emulator's own owner id (EMULATOR_OWNER_ID, alias 'ec2emu'),
never to the requesting account. Their ids are derived from (region, name), so they are stable
across restarts and databases and differ from region to region (see `public_image_id`).
Their files are where the image builder (`PUBLIC_IMAGES[...].file`) puts them: <public image dir>/
<file> (config image_dir, default the shared image cache), shared by every region; registering the
record never creates them. `disk_file` says where an image's file is now (a public image's follows
the config, whatever path an older start recorded); on a host that boots guests, RunInstances
refuses an image whose files are missing (`check_files`) instead of failing the launch later.

RegisterImage with an ImageLocation that is a host path or file:// URL registers the user's own
file: a disk (qcow2, raw...) as an EBS-backed AMI, a Linux kernel as an aki-, an initramfs as an
ari-, told apart by content (a bounded look at the file's head: `kind_of`). The image is 'pending'
until the `image.register_file` host task has probed the file (qemu-img), sized the root volume
and put the image's private copy in place, then 'available', or 'failed' with a StateReason
(image_import.py holds the task, and ImportImage; hypervisor/image_files.py the file work). Any
other ImageLocation (S3-style 'bucket/manifest.xml') is recorded only.

For RunInstances: `launchable_image` (the AMI a caller may launch, or AWS's error) and
`image_by_id` (kernel/ramdisk lookups).
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import select

from hypervisor import image_files as files

from .errors import (AuthFailure, InvalidAMIAttributeItemValue, InvalidAMIIDMalformed, InvalidAMIIDNotFound,
                     InvalidAMIIDUnavailable, InvalidAMINameDuplicate, InvalidAMINameMalformed,
                     InvalidBlockDeviceMapping, InvalidKernelIdMalformed, InvalidParameterCombination,
                     InvalidParameterValue, InvalidRamDiskIdMalformed, InvalidSnapshotIDMalformed,
                     InvalidUserIDMalformed, Malformed, MissingParameter)
from .ids import new_id, well_formed
from .image_import import disk_image_row, root_mapping
from .models import Image, Snapshot, utcnow
from .times import iso8601
from .query import Resource, Selector, describe
from .registry import Context, action
from .tags import delete_all_tags, refuse_other_tag_types, set_tags, tag_list, tag_specifications

EMULATOR_OWNER_ID = "000000000001"
EMULATOR_OWNER_ALIAS = "ec2emu"
# Owner aliases DescribeImages accepts in Owners (AWS's, plus ours).
OWNER_ALIASES = frozenset({EMULATOR_OWNER_ALIAS, "amazon", "aws-marketplace", "aws-backup-vault"})
IMAGE_PREFIXES = ("ami", "aki", "ari")
_TYPE_OF_PREFIX = {"ami": "machine", "aki": "kernel", "ari": "ramdisk"}


# ------------------------------------------------------------------------------ public images

@dataclass(frozen=True)
class PublicImage:
    name: str
    image_type: str  # machine | kernel | ramdisk
    file: str  # under <state dir>/images/, built by the image builder
    description: str
    root_size_gib: int | None = None  # machine images: the root volume (the file's virtual size, in GiB up)
    login_user: str | None = None


KERNEL_NAME = "ec2emu-kernel-debian-6.1-cloud-amd64"
RAMDISK_NAME = "ec2emu-initrd-debian-6.1-cloud-amd64"
TINY_NAME = "ec2emu-tiny-busybox-2026.11-x86_64"
DEBIAN_NAME = "debian-12-cloudinit-amd64-2026.11"

PUBLIC_IMAGES: tuple[PublicImage, ...] = (
    PublicImage(KERNEL_NAME, "kernel", KERNEL_NAME + ".vmlinuz",
                "Linux 6.1 cloud kernel (Debian linux-image-cloud-amd64) for direct kernel boot"),
    PublicImage(RAMDISK_NAME, "ramdisk", RAMDISK_NAME + ".initrd.img",
                "Initial ramdisk for the Debian 6.1 cloud kernel"),
    PublicImage(TINY_NAME, "machine", TINY_NAME + ".qcow2",
                "ec2emu tiny image: BusyBox userland on the Debian 6.1 cloud kernel, x86_64. "
                "Login user: ec2-user", root_size_gib=1, login_user="ec2-user"),
    PublicImage(DEBIAN_NAME, "machine", DEBIAN_NAME + ".qcow2",
                "Debian 12 (bookworm) with cloud-init on the Debian 6.1 cloud kernel, x86_64. "
                "Login user: admin", root_size_gib=2, login_user="admin"),
)
PUBLIC_CREATION_DATE = datetime(2026, 11, 1, tzinfo=timezone.utc)


def public_image_id(region: str, name: str) -> str:
    """The id a public image has in a region: prefix + 17 hex of sha256('<region>/<name>')."""
    kind = next(i.image_type for i in PUBLIC_IMAGES if i.name == name)
    prefix = {v: k for k, v in _TYPE_OF_PREFIX.items()}[kind]
    return f"{prefix}-{hashlib.sha256(f'{region}/{name}'.encode()).hexdigest()[:17]}"


def image_file(images_dir: str, file: str) -> str:
    return os.path.join(os.path.abspath(images_dir), file)


def public_snapshot_id(region: str, name: str) -> str:
    """The id of a public machine image's root snapshot in a region (stable, like the image's)."""
    return f"snap-{hashlib.sha256(f'{region}/{name}/root'.encode()).hexdigest()[:17]}"


def _root_mapping(snapshot_id: str, size_gib: int) -> list[dict]:
    """A public machine image's block device mappings, as AWS's EBS-backed images have them."""
    return [{"DeviceName": "/dev/xvda",
             "Ebs": {"DeleteOnTermination": True, "SnapshotId": snapshot_id, "VolumeSize": size_gib,
                     "VolumeType": "gp2", "Encrypted": False}}]


def register_public_images(ctx: Context) -> None:
    """Create the emulator's public images in ctx.region (idempotent; owner EMULATOR_OWNER_ID).
    Machine images are EBS-backed, as AWS's are: each has a public root snapshot whose data is
    the image's file (`Snapshot.disk_path`; volumes are copy-on-write clones of it); kernel and
    ramdisk images are files only. Rows of an older start without snapshots get them."""
    from .snapshots import COPY_VOLUME_ID  # snapshots imports instances, which imports this module

    kernel_id = public_image_id(ctx.region, KERNEL_NAME)
    ramdisk_id = public_image_id(ctx.region, RAMDISK_NAME)
    for spec in PUBLIC_IMAGES:
        image_id = public_image_id(ctx.region, spec.name)
        machine = spec.image_type == "machine"
        path = image_file(ctx.config.public_image_dir, spec.file)
        snapshot_id = public_snapshot_id(ctx.region, spec.name) if machine else None
        if machine and ctx.session.get(Snapshot, snapshot_id) is None:
            ctx.session.add(Snapshot(
                id=snapshot_id, account_id=EMULATOR_OWNER_ID, region=ctx.region, volume_id=COPY_VOLUME_ID,
                volume_size=spec.root_size_gib, zone=None, state="completed", progress="100%",
                description=f"Root volume of {spec.name}", encrypted=False, stored_bytes=None,
                completed_at=PUBLIC_CREATION_DATE, create_volume_permissions=[{"Group": "all"}],
                disk_path=path, created_at=PUBLIC_CREATION_DATE))
        known = ctx.session.get(Image, image_id)
        if known is not None:
            if machine and not _ebs_values(known, "SnapshotId"):
                known.block_device_mappings = _root_mapping(snapshot_id, spec.root_size_gib)
            continue
        img = Image(
            id=image_id, account_id=EMULATOR_OWNER_ID, region=ctx.region, created_at=PUBLIC_CREATION_DATE,
            name=spec.name, description=spec.description, image_type=spec.image_type,
            state="available", architecture="x86_64", public=True, owner_alias=EMULATOR_OWNER_ALIAS,
            kernel_id=kernel_id if machine else None, ramdisk_id=ramdisk_id if machine else None,
            root_device_type="ebs" if machine else "instance-store",
            root_device_name="/dev/xvda" if machine else None,
            virtualization_type="hvm" if machine else "paravirtual",
            platform_details="Linux/UNIX", image_location=f"{EMULATOR_OWNER_ALIAS}/{spec.name}",
            block_device_mappings=_root_mapping(snapshot_id, spec.root_size_gib) if machine else [],
            launch_permissions=[],
            attributes={"EnaSupport": True, "SriovNetSupport": "simple", "BootMode": "legacy-bios",
                        "LoginUser": spec.login_user} if machine else {},
            disk_path=path,
        )
        ctx.session.add(img)
    ctx.session.flush()


def snapshot_file(config, snapshot) -> str | None:
    """The host file behind a snapshot that is one (a public image's root), else None. A public
    one follows the configured image directory, as `disk_file` does."""
    if not snapshot.disk_path:
        return None
    if snapshot.account_id == EMULATOR_OWNER_ID:
        return image_file(config.public_image_dir, os.path.basename(snapshot.disk_path))
    return snapshot.disk_path


# ------------------------------------------------------------------------------- lookups

def _check_id(image_id: str) -> None:
    if not any(well_formed(image_id, p) for p in IMAGE_PREFIXES):
        raise InvalidAMIIDMalformed(image_id)


def _shared_with(img: Image, account_id: str) -> bool:
    return any(lp.get("UserId") == account_id for lp in img.launch_permissions or [])


def _visible(ctx: Context, img: Image | None) -> bool:
    return img is not None and img.region == ctx.region and (
        img.public or img.account_id == ctx.account_id or _shared_with(img, ctx.account_id))


def image_by_id(ctx: Context, image_id: str, *, any_owner: bool = False) -> Image | None:
    """The image (any type) with this id in ctx.region, or None. By default only if the caller
    may see it (its own, public or shared with it); any_owner=True skips that check, for the
    kernel/ramdisk an AMI names (the AMI's owner chose them, the launcher need not see them)."""
    img = ctx.session.get(Image, image_id) if image_id else None
    if img is None or img.region != ctx.region:
        return None
    return img if any_owner or _visible(ctx, img) else None


def launchable_image(ctx: Context, image_id: str) -> Image:
    """The AMI RunInstances may launch for the caller, or AWS's error."""
    if not well_formed(image_id or "", "ami"):
        raise InvalidAMIIDMalformed(image_id)
    img = image_by_id(ctx, image_id)
    if img is None or img.image_type != "machine":
        raise InvalidAMIIDNotFound(image_id)
    if img.state != "available":
        raise InvalidAMIIDUnavailable(image_id, img.state)
    return img


def disk_file(config, img: Image | None) -> str | None:
    """The host file behind an image now: a public image's is in the configured public image
    directory (its recorded path may be an older start's), any other image's is its own copy."""
    if img is None:
        return None
    if img.account_id == EMULATOR_OWNER_ID:
        spec = next((s for s in PUBLIC_IMAGES if s.name == img.name), None)
        if spec is not None:
            return image_file(config.public_image_dir, spec.file)
    return img.disk_path


def check_files(ctx: Context, image: Image, *parts: Image | None) -> None:
    """Where guests really boot: the AMI's disk file and its kernel's and ramdisk's must exist,
    else InvalidAMIID.Unavailable saying how to get them (three stat calls, no file reading)."""
    if ctx.config.hypervisor != "libvirt":
        return  # the `none` driver boots nothing
    for img in (image, *parts):
        if img is None or (img is image and _root_snapshot(ctx, img) is not None):
            continue  # its root is a snapshot (made by the host; a public one's file is its image's)
        path = disk_file(ctx.config, img)
        if path and os.path.isfile(path):
            continue
        if img.account_id == EMULATOR_OWNER_ID:
            how = (f"build the default images with `ec2emu images build"
                   f"{' --debian' if img.name == DEBIAN_NAME else ''}` (or set image_dir to where they are)")
        else:
            how = "register the image again from a file on this host"
        where = f"{path} is missing" if path else "it has no disk file (its location is not a host file)"
        raise InvalidAMIIDUnavailable.worded(
            f"The image {image.id} cannot be launched on this host: {img.id} ({img.name}): {where}; {how}.")


def _root_snapshot(ctx: Context, img: Image) -> Snapshot | None:
    """The snapshot an image's root volume is made from; None if the root has none (a disk
    registered from a file) or a public image's snapshot whose file is not there."""
    root = next((m for m in img.block_device_mappings or [] if m.get("DeviceName") == img.root_device_name), None)
    snapshot_id = ((root or {}).get("Ebs") or {}).get("SnapshotId")
    snap = ctx.session.get(Snapshot, snapshot_id) if snapshot_id else None
    if snap is not None and snap.disk_path and not os.path.isfile(snapshot_file(ctx.config, snap)):
        return None
    return snap


def note_launch(img: Image) -> None:
    """Record a launch (DescribeImageAttribute lastLaunchedTime)."""
    img.attributes = {**(img.attributes or {}), "LastLaunchedTime": iso8601(utcnow())}


def _owned(ctx: Context, image_id: str) -> Image:
    """An image the caller owns, for changes: NotFound if invisible, AuthFailure if not its own."""
    _check_id(image_id)
    img = image_by_id(ctx, image_id)
    if img is None:
        raise InvalidAMIIDNotFound(image_id)
    if img.account_id != ctx.account_id:
        raise AuthFailure.image(image_id)
    return img


# ------------------------------------------------------------------------------- RegisterImage

_NAME = re.compile(r"[A-Za-z0-9()\[\] ./\-'@_]{3,128}\Z")


def _check_name(name: str) -> None:
    if not _NAME.match(name or ""):
        raise InvalidAMINameMalformed()


def _named(ctx: Context, name: str) -> Image | None:
    return ctx.session.scalars(select(Image).where(Image.account_id == ctx.account_id,
                                                   Image.region == ctx.region, Image.name == name)).first()


def _check_attached_image(ctx: Context, image_id: str | None, malformed: type[Malformed]) -> None:
    if image_id is None:
        return
    if not well_formed(image_id, malformed.prefix):
        raise malformed(image_id)
    if image_by_id(ctx, image_id) is None:
        raise InvalidAMIIDNotFound(image_id)


def _mappings(raw: list[dict] | None) -> list[dict]:
    out = []
    for m in raw or []:
        device = m.get("DeviceName")
        if not device:
            raise MissingParameter("BlockDeviceMapping.DeviceName")
        item: dict = {"DeviceName": device}
        if m.get("NoDevice") is not None:
            item["NoDevice"] = ""
        elif m.get("VirtualName"):
            item["VirtualName"] = m["VirtualName"]
        elif m.get("Ebs") is not None:
            ebs = m["Ebs"]
            snap = ebs.get("SnapshotId")
            if snap is not None and not well_formed(snap, "snap"):
                raise InvalidSnapshotIDMalformed(snap)
            size = ebs.get("VolumeSize")
            if size is not None and not 1 <= size <= 65536:
                raise InvalidParameterValue(f"Volume of size {size}GB is not valid.")
            vtype = ebs.get("VolumeType") or "gp2"
            item["Ebs"] = {k: v for k, v in {
                "DeleteOnTermination": ebs.get("DeleteOnTermination", True), "SnapshotId": snap,
                "VolumeSize": size, "VolumeType": vtype, "Iops": ebs.get("Iops"),
                "Throughput": ebs.get("Throughput"), "Encrypted": ebs.get("Encrypted", False),
                "KmsKeyId": ebs.get("KmsKeyId"),
            }.items() if v is not None}
        out.append(item)
    return out


def _from_snapshots(ctx: Context, mappings: list[dict]) -> None:
    """EBS mappings naming a snapshot: it must be one the caller may restore, completed; the
    volume size defaults to the snapshot's (never smaller), and encryption follows it."""
    from .snapshots import restorable

    for m in mappings:
        ebs = m.get("Ebs") or {}
        if not ebs.get("SnapshotId"):
            continue
        snap = restorable(ctx, ebs["SnapshotId"])
        size = ebs.setdefault("VolumeSize", snap.volume_size)
        if size < snap.volume_size:
            raise InvalidBlockDeviceMapping(f"Volume of size {size}GB is smaller than snapshot '{snap.id}', "
                                            f"expect size >= {snap.volume_size}GB")
        ebs["Encrypted"] = snap.encrypted


@action("RegisterImage")
def register_image(ctx: Context, p: dict) -> dict:
    name = p["Name"]
    _check_name(name)
    refuse_other_tag_types(p.get("TagSpecifications"), {"image"})
    tags = tag_specifications(p.get("TagSpecifications"), "image")
    location, root = p.get("ImageLocation"), p.get("RootDeviceName")
    if not location and not root:
        raise MissingParameter("ImageLocation or RootDeviceName")
    mappings = _mappings(p.get("BlockDeviceMappings"))
    if root and not location and not any(m["DeviceName"] == root and "Ebs" in m for m in mappings):
        raise InvalidBlockDeviceMapping.root_not_ebs(root)
    _from_snapshots(ctx, mappings)
    if len(p.get("Description") or "") > 255:
        raise InvalidParameterValue.too_long("description")
    try:
        local = files.local_path(location) if location else None
    except files.ImageFileError as exc:
        raise InvalidParameterValue(exc.message) from None
    if local is not None and len(location) > 255:
        raise InvalidParameterValue.too_long("ImageLocation")
    virtualization = p.get("VirtualizationType") or (
        "hvm" if local else "paravirtual")  # AWS's documented default; files are whole disks
    if virtualization not in ("hvm", "paravirtual"):
        raise InvalidParameterValue.value(virtualization, "virtualizationType", "Valid values: hvm, paravirtual")
    sriov = p.get("SriovNetSupport")
    if sriov is not None and sriov != "simple":
        raise InvalidParameterValue.value(sriov, "sriovNetSupport", "Valid values: simple")
    _check_attached_image(ctx, p.get("KernelId"), InvalidKernelIdMalformed)
    _check_attached_image(ctx, p.get("RamdiskId"), InvalidRamDiskIdMalformed)
    existing = _named(ctx, name)
    if existing is not None:
        raise InvalidAMINameDuplicate(name, existing.id)
    attributes = {k: v for k, v in {
        "EnaSupport": p.get("EnaSupport"), "SriovNetSupport": sriov, "BootMode": p.get("BootMode"),
        "TpmSupport": p.get("TpmSupport"), "UefiData": p.get("UefiData"), "ImdsSupport": p.get("ImdsSupport"),
        "ProductCodes": [{"ProductCodeId": c, "ProductCodeType": "marketplace"}
                         for c in p.get("BillingProducts") or []] or None,
    }.items() if v is not None}
    if local is not None:
        return _register_file(ctx, p, local, virtualization, attributes, tags)
    img = Image(
        id=new_id("ami"), account_id=ctx.account_id, region=ctx.region, name=name,
        description=p.get("Description"), image_type="machine", state="available",
        architecture=p.get("Architecture") or "i386",  # AWS's documented default for EBS-backed
        public=False, owner_alias=None, kernel_id=p.get("KernelId"), ramdisk_id=p.get("RamdiskId"),
        root_device_type="instance-store" if location else "ebs",
        root_device_name=root or ("/dev/sda1" if location else None),
        virtualization_type=virtualization, platform_details="Linux/UNIX",
        image_location=location or f"{ctx.account_id}/{name}",
        block_device_mappings=mappings, launch_permissions=[], attributes=attributes, disk_path=None,
    )
    ctx.session.add(img)
    ctx.session.flush()
    if tags:
        set_tags(ctx, img.id, tags)
    return {"ImageId": img.id}


def _register_file(ctx: Context, p: dict, path: str, virtualization: str, attributes: dict,
                   tags: list[dict]) -> dict:
    """RegisterImage from a file on this host: an AMI, a kernel or a ramdisk by its content,
    'pending' until the image.register_file host task has probed and copied the file. Only
    what needs no probing is checked here (the request runs on the event loop)."""
    try:
        kind = files.kind_of(path)
    except files.ImageFileError as exc:
        raise InvalidParameterValue(f"ImageLocation {exc.message}") from None
    name, location = p["Name"], p["ImageLocation"]
    architecture = p.get("Architecture") or "x86_64"
    if kind == "machine":
        root = p.get("RootDeviceName") or "/dev/xvda"
        mappings = _mappings(p.get("BlockDeviceMappings"))
        mine = next((m for m in mappings if m["DeviceName"] == root), None)
        if mine is None:
            mappings.insert(0, root_mapping(root, None))  # sized by the task, from the disk
        elif "Ebs" not in mine:
            raise InvalidBlockDeviceMapping.root_not_ebs(root)
        img = disk_image_row(
            image_id=new_id("ami"), account_id=ctx.account_id, region=ctx.region, name=name,
            description=p.get("Description"), location=location, architecture=architecture,
            virtualization=virtualization, root_device=root, mappings=mappings,
            kernel_id=p.get("KernelId"), ramdisk_id=p.get("RamdiskId"), attributes=attributes)
    else:
        extra = [k for k in ("KernelId", "RamdiskId", "BlockDeviceMappings", "RootDeviceName") if p.get(k)]
        if extra:
            raise InvalidParameterCombination(f"{path} is a Linux {kind}: {' and '.join(extra)} apply to "
                                              "machine images only")
        img = Image(
            id=new_id("aki" if kind == "kernel" else "ari"), account_id=ctx.account_id,
            region=ctx.region, name=name, description=p.get("Description"), image_type=kind,
            state="pending", architecture=architecture, public=False, owner_alias=None,
            root_device_type="instance-store", root_device_name=None,
            virtualization_type=p.get("VirtualizationType") or "paravirtual",
            platform_details="Linux/UNIX", image_location=location, block_device_mappings=[],
            launch_permissions=[], attributes={}, disk_path=None)
    ctx.session.add(img)
    ctx.session.flush()
    if tags:
        set_tags(ctx, img.id, tags)
    ctx.host_task("image.register_file", img.id, source=path)
    return {"ImageId": img.id}


# ------------------------------------------------------------------------------ DescribeImages

def _ebs_values(img: Image, key: str) -> list:
    return [m["Ebs"].get(key) for m in img.block_device_mappings or [] if "Ebs" in m]


def _attr(img: Image, key: str):
    return (img.attributes or {}).get(key)


IMAGE_FILTERS = {
    "architecture": lambda i: i.architecture,
    "block-device-mapping.delete-on-termination": lambda i: _ebs_values(i, "DeleteOnTermination"),
    "block-device-mapping.device-name": lambda i: [m["DeviceName"] for m in i.block_device_mappings or []],
    "block-device-mapping.snapshot-id": lambda i: _ebs_values(i, "SnapshotId"),
    "block-device-mapping.volume-size": lambda i: _ebs_values(i, "VolumeSize"),
    "block-device-mapping.volume-type": lambda i: _ebs_values(i, "VolumeType"),
    "block-device-mapping.encrypted": lambda i: _ebs_values(i, "Encrypted"),
    "creation-date": lambda i: iso8601(i.created_at),
    "deprecation-time": lambda i: _attr(i, "DeprecationTime"),
    "description": lambda i: i.description,
    "ena-support": lambda i: bool(_attr(i, "EnaSupport")),
    "free-tier-eligible": lambda i: False,
    "hypervisor": lambda i: "xen",
    "image-allowed": lambda i: True,
    "image-id": lambda i: i.id,
    "image-type": lambda i: i.image_type,
    "imds-support": lambda i: _attr(i, "ImdsSupport"),
    "is-public": lambda i: i.public,
    "kernel-id": lambda i: i.kernel_id,
    "manifest-location": lambda i: i.image_location,
    "name": lambda i: i.name,
    "owner-alias": lambda i: i.owner_alias,
    "owner-id": lambda i: i.account_id,
    "platform": lambda i: None,  # 'windows' only; ours are all Linux/UNIX
    "platform-details": lambda i: i.platform_details,
    "product-code": lambda i: [c["ProductCodeId"] for c in _attr(i, "ProductCodes") or []],
    "product-code.type": lambda i: [c["ProductCodeType"] for c in _attr(i, "ProductCodes") or []],
    "ramdisk-id": lambda i: i.ramdisk_id,
    "root-device-name": lambda i: i.root_device_name,
    "root-device-type": lambda i: i.root_device_type,
    "source-image-id": lambda i: _attr(i, "SourceImageId"),
    "source-image-region": lambda i: _attr(i, "SourceImageRegion"),
    "source-instance-id": lambda i: _attr(i, "SourceInstanceId"),
    "sriov-net-support": lambda i: _attr(i, "SriovNetSupport"),
    "state": lambda i: i.state,
    "state-reason-code": lambda i: (_attr(i, "StateReason") or {}).get("Code"),
    "state-reason-message": lambda i: (_attr(i, "StateReason") or {}).get("Message"),
    "usage-operation": lambda i: "RunInstances",
    "virtualization-type": lambda i: i.virtualization_type,
}


def _mapping_out(m: dict) -> dict:
    return {k: v for k, v in m.items()}


def _image_out(img: Image, tags: dict) -> dict:
    a = img.attributes or {}
    return {
        "ImageId": img.id, "ImageLocation": img.image_location, "State": img.state,
        "StateReason": a.get("StateReason"),
        "OwnerId": img.account_id, "CreationDate": iso8601(img.created_at), "Public": img.public,
        "ProductCodes": a.get("ProductCodes"), "Architecture": img.architecture,
        "ImageType": img.image_type, "KernelId": img.kernel_id, "RamdiskId": img.ramdisk_id,
        "ImageOwnerAlias": img.owner_alias, "Name": img.name, "Description": img.description,
        "RootDeviceType": img.root_device_type, "RootDeviceName": img.root_device_name,
        "BlockDeviceMappings": [_mapping_out(m) for m in img.block_device_mappings or []],
        "VirtualizationType": img.virtualization_type, "Hypervisor": "xen",
        "EnaSupport": a.get("EnaSupport"), "SriovNetSupport": a.get("SriovNetSupport"),
        "BootMode": a.get("BootMode"), "TpmSupport": a.get("TpmSupport"),
        "ImdsSupport": a.get("ImdsSupport"), "DeprecationTime": a.get("DeprecationTime"),
        "SourceInstanceId": a.get("SourceInstanceId"), "LastLaunchedTime": a.get("LastLaunchedTime"),
        "SourceImageId": a.get("SourceImageId"), "SourceImageRegion": a.get("SourceImageRegion"),
        "PlatformDetails": img.platform_details, "UsageOperation": "RunInstances",
        "Tags": tag_list(tags),
    }


def _owner_matcher(ctx: Context, owners: list[str]):
    tests = []
    for o in owners:
        if o == "self":
            tests.append(lambda i: i.account_id == ctx.account_id)
        elif re.fullmatch(r"\d{12}", o):
            tests.append(lambda i, o=o: i.account_id == o)
        elif o in OWNER_ALIASES:
            tests.append(lambda i, o=o: i.owner_alias == o)
        else:
            raise InvalidUserIDMalformed(o)
    return lambda i: any(t(i) for t in tests)


def _executable_matcher(ctx: Context, users: list[str]):
    tests = []
    for u in users:
        if u == "all":
            tests.append(lambda i: i.public)
        elif u == "self" or re.fullmatch(r"\d{12}", u):
            who = ctx.account_id if u == "self" else u
            tests.append(lambda i, who=who: _shared_with(i, who))
        else:
            raise InvalidUserIDMalformed(u)
    return lambda i: any(t(i) for t in tests)


def _deprecated(img: Image, now: str) -> bool:
    when = _attr(img, "DeprecationTime")
    return bool(when) and when <= now


IMAGES = Resource("Images", lambda ctx, page, tags: [_image_out(i, tags[i.id]) for i in page], IMAGE_FILTERS,
                  (Selector("ImageIds", lambda i: i.id, InvalidAMIIDNotFound, _check_id),),
                  max_results=(1, 1000))  # AWS documents no minimum here (the JS SDK pages by 2)


def _listed(ctx: Context, p: dict):
    """What DescribeImages lists beyond the images asked for by id: Owners, ExecutableUsers,
    disabled and deprecated images only when asked."""
    tests = []
    if p.get("Owners"):
        tests.append(_owner_matcher(ctx, p["Owners"]))
    if p.get("ExecutableUsers"):
        tests.append(_executable_matcher(ctx, p["ExecutableUsers"]))
    if not p.get("IncludeDisabled"):
        tests.append(lambda i: i.state != "disabled")
    if not p.get("IncludeDeprecated") and not p.get("ImageIds"):
        now = iso8601(utcnow())  # owners always see their deprecated images
        tests.append(lambda i: i.account_id == ctx.account_id or not _deprecated(i, now))
    return lambda i: all(t(i) for t in tests)


@action("DescribeImages")
def describe_images(ctx: Context, p: dict) -> dict:
    rows = [i for i in ctx.session.scalars(select(Image).where(Image.region == ctx.region).order_by(Image.id))
            if _visible(ctx, i)]
    return describe(ctx, IMAGES, p, rows, keep=_listed(ctx, p))


# ------------------------------------------------------------------------------ attributes

def _value(v) -> dict:
    return {"Value": v} if v is not None else {}


def _launch_permissions(img: Image) -> list[dict]:
    return ([{"Group": "all"}] if img.public else []) + [dict(lp) for lp in img.launch_permissions or []]


@action("DescribeImageAttribute")
def describe_image_attribute(ctx: Context, p: dict) -> dict:
    image_id, attr = p["ImageId"], p["Attribute"]
    _check_id(image_id)
    img = image_by_id(ctx, image_id)
    if img is None:
        raise InvalidAMIIDNotFound(image_id)
    mine = img.account_id == ctx.account_id
    out: dict = {"ImageId": img.id}
    if attr in ("launchPermission", "blockDeviceMapping") and not mine:
        raise AuthFailure.image(image_id)
    a = img.attributes or {}
    if attr == "launchPermission":
        out["LaunchPermissions"] = _launch_permissions(img)
    elif attr == "blockDeviceMapping":
        out["BlockDeviceMappings"] = [_mapping_out(m) for m in img.block_device_mappings or []]
    elif attr == "productCodes":
        out["ProductCodes"] = a.get("ProductCodes") or []
    elif attr == "description":
        out["Description"] = _value(img.description)
    elif attr == "kernel":
        out["KernelId"] = _value(img.kernel_id)
    elif attr == "ramdisk":
        out["RamdiskId"] = _value(img.ramdisk_id)
    elif attr in _PLAIN_ATTRIBUTES:  # kept in img.attributes under the output member's name
        member = attr[0].upper() + attr[1:]
        out[member] = _value(a.get(member, _PLAIN_ATTRIBUTES[attr]))
    return out


# Attribute -> its default; the value lives in Image.attributes under the capitalised name.
_PLAIN_ATTRIBUTES = {"sriovNetSupport": None, "bootMode": None, "tpmSupport": None, "uefiData": None,
                     "imdsSupport": None, "lastLaunchedTime": None, "deregistrationProtection": "disabled"}


def _permission_changes(p: dict) -> tuple[list[dict], list[dict]] | None:
    """(add, remove) launch permissions from either request form, or None if none asked."""
    if p.get("LaunchPermission") is not None:
        lp = p["LaunchPermission"]
        return list(lp.get("Add") or []), list(lp.get("Remove") or [])
    listed = ([{"UserId": u} for u in p.get("UserIds") or []]
              + [{"Group": g} for g in p.get("UserGroups") or []]
              + [{"OrganizationArn": a} for a in p.get("OrganizationArns") or []]
              + [{"OrganizationalUnitArn": a} for a in p.get("OrganizationalUnitArns") or []])
    if p.get("Attribute") != "launchPermission" and not listed:
        return None
    op = p.get("OperationType")
    if op is None:
        raise MissingParameter("OperationType")
    if not listed:
        raise MissingParameter("UserId or UserGroup")
    return (listed, []) if op == "add" else ([], listed)


def _apply_permissions(img: Image, add: list[dict], remove: list[dict]) -> None:
    for item in add + remove:
        if item.get("UserId") is not None and not re.fullmatch(r"\d{12}", item["UserId"]):
            raise InvalidAMIAttributeItemValue(item["UserId"], "userId")
        if item.get("Group") is not None and item["Group"] != "all":
            raise InvalidAMIAttributeItemValue(item["Group"], "group")
        if not any(item.get(k) for k in ("UserId", "Group", "OrganizationArn", "OrganizationalUnitArn")):
            raise InvalidParameterValue("A launch permission must name a UserId, Group, OrganizationArn or "
                                        "OrganizationalUnitArn")
    current = [dict(lp) for lp in img.launch_permissions or []]
    for item in remove:
        if item.get("Group") == "all":
            img.public = False
        entry = {k: v for k, v in item.items() if k != "Group" and v is not None}
        if entry:
            current = [lp for lp in current if lp != entry]
    for item in add:
        if item.get("Group") == "all":
            img.public = True
        entry = {k: v for k, v in item.items() if k != "Group" and v is not None}
        if entry and entry not in current:
            current.append(entry)
    img.launch_permissions = current


@action("ModifyImageAttribute")
def modify_image_attribute(ctx: Context, p: dict) -> dict:
    img = _owned(ctx, p["ImageId"])
    attr = p.get("Attribute")
    known = {"launchPermission", "description", "productCodes", "imdsSupport"}
    if attr is not None and attr not in known:
        raise InvalidParameterValue.value(attr, "attribute", "Unknown attribute.")
    changed = False
    perms = _permission_changes(p)
    if perms is not None:
        _apply_permissions(img, *perms)
        changed = True
    description = (p.get("Description") or {}).get("Value") if p.get("Description") is not None else (
        p.get("Value") if attr == "description" else None)
    if description is not None or attr == "description":
        if len(description or "") > 255:
            raise InvalidParameterValue.too_long("description")
        img.description = description or ""
        changed = True
    imds = (p.get("ImdsSupport") or {}).get("Value") if p.get("ImdsSupport") is not None else (
        p.get("Value") if attr == "imdsSupport" else None)
    if imds is not None or attr == "imdsSupport":
        if imds != "v2.0":
            raise InvalidParameterValue.value(imds, "imdsSupport", "Valid values: v2.0")
        img.attributes = {**(img.attributes or {}), "ImdsSupport": "v2.0"}
        changed = True
    if p.get("ProductCodes") or attr == "productCodes":
        codes = p.get("ProductCodes") or []
        if not codes:
            raise MissingParameter("ProductCode")
        have = list((img.attributes or {}).get("ProductCodes") or [])
        for c in codes:
            if not any(h["ProductCodeId"] == c for h in have):
                have.append({"ProductCodeId": c, "ProductCodeType": "marketplace"})
        img.attributes = {**(img.attributes or {}), "ProductCodes": have}
        changed = True
    if not changed:
        raise InvalidParameterCombination("No attributes specified.")
    return {"Return": True}


@action("ResetImageAttribute")
def reset_image_attribute(ctx: Context, p: dict) -> dict:
    img = _owned(ctx, p["ImageId"])
    if p["Attribute"] == "launchPermission":
        img.public = False
        img.launch_permissions = []
    return {"Return": True}


# ------------------------------------------------------------------- images from disks

def snapshots_settled(session, snapshot_id: str) -> None:
    """A snapshot completed or failed: each pending image made of it (CreateImage, CopyImage)
    becomes available once all its snapshots have completed, failed if one of them failed."""
    for img in session.scalars(select(Image).where(Image.state == "pending")).all():
        ids = [s for s in _ebs_values(img, "SnapshotId") if s]
        if snapshot_id not in ids:
            continue
        states = [session.get(Snapshot, s) for s in ids]
        if any(s is None or s.state == "error" for s in states):
            img.state = "failed"
            img.attributes = {**(img.attributes or {}), "StateReason": {
                "Code": "Client.SnapshotCreationFailed", "Message": f"A snapshot of the image failed: {snapshot_id}"}}
        elif all(s.state == "completed" for s in states):
            img.state = "available"


def _new_name(ctx: Context, name: str) -> None:
    _check_name(name)
    existing = _named(ctx, name)
    if existing is not None:
        raise InvalidAMINameDuplicate(name, existing.id)


def _ebs_of(volume, snapshot_id: str, delete_on_termination: bool) -> dict:
    """An image's EBS mapping for a snapshot of `volume`, as AWS records it."""
    ebs = {"DeleteOnTermination": delete_on_termination, "SnapshotId": snapshot_id, "VolumeSize": volume.size,
           "VolumeType": volume.volume_type, "Encrypted": volume.encrypted}
    if volume.volume_type in ("io1", "io2", "gp3"):
        ebs["Iops"] = volume.iops
    if volume.throughput is not None:
        ebs["Throughput"] = volume.throughput
    if volume.encrypted:
        ebs["KmsKeyId"] = volume.kms_key_id
    return ebs


@action("CreateImage")
def create_image(ctx: Context, p: dict) -> dict:
    """An EBS-backed AMI of an instance (running or stopped): a snapshot of each attached volume
    (snapshots.py's machinery: incremental, crash-consistent), the image 'pending' until they all
    complete. Unless NoReboot, a running instance is shut down cleanly first, snapshotted while
    down and started again, as AWS does (instances.shut_down_for_image): its file systems are
    consistent in the image. With NoReboot the snapshots are crash-consistent."""
    from . import attachments, instances, snapshots

    from .errors import IncorrectInstanceState, UnsupportedOperation
    instance = instances.get_instance(ctx, p["InstanceId"])
    name = p["Name"]
    _new_name(ctx, name)
    if len(p.get("Description") or "") > 255:
        raise InvalidParameterValue.too_long("description")
    if instance.state not in ("running", "stopped"):
        raise IncorrectInstanceState.cannot(instance.id, "imaged")
    if instance.root_device_type != "ebs":
        raise UnsupportedOperation(f"The instance '{instance.id}' does not have an 'ebs' root device type: "
                                   f"only EBS-backed instances can be imaged with CreateImage.")
    refuse_other_tag_types(p.get("TagSpecifications"), {"image", "snapshot"})
    image_tags = tag_specifications(p.get("TagSpecifications"), "image")
    snapshot_tags = tag_specifications(p.get("TagSpecifications"), "snapshot")
    asked = {m.get("DeviceName"): m for m in p.get("BlockDeviceMappings") or []}
    image_id = new_id("ami")
    rebooting = instance.state == "running" and not p.get("NoReboot")
    if rebooting:
        if (instance.attributes or {}).get(instances.IMAGING):
            raise IncorrectInstanceState.cannot(instance.id, "imaged")  # one image at a time
        instances.shut_down_for_image(ctx, instance, image_id)
    mappings = []
    for a in attachments.of_instance(ctx.session, instance.id):
        if a.state != "attached" or (asked.get(a.device) or {}).get("NoDevice") is not None:
            continue
        from .volumes import get_volume
        volume = get_volume(ctx, a.volume_id)
        snap = snapshots.snapshot_of(ctx, volume, f"Created by CreateImage({instance.id}) for {image_id}",
                                     snapshot_tags)
        mappings.append({"DeviceName": a.device, "Ebs": _ebs_of(volume, snap.id, a.delete_on_termination)})
    if not any(m["DeviceName"] == instance.root_device_name for m in mappings):
        raise InvalidBlockDeviceMapping.root_not_ebs(instance.root_device_name)
    if rebooting:  # after the snapshot tasks: it runs again once they have copied its disks
        instances.start_after_image(ctx, instance)
    store = {m["DeviceName"]: m for m in (instance.attributes or {}).get("InstanceStore") or []}
    for device, m in asked.items():
        if m.get("VirtualName"):
            store[device] = m
    mappings += [{"DeviceName": d, "VirtualName": m["VirtualName"]} for d, m in store.items()
                 if (asked.get(d) or {}).get("NoDevice") is None]
    source = image_by_id(ctx, instance.image_id, any_owner=True)
    img = Image(
        id=image_id, account_id=ctx.account_id, region=ctx.region, name=name, description=p.get("Description"),
        image_type="machine", state="pending", architecture=instance.architecture, public=False, owner_alias=None,
        kernel_id=instance.kernel_id, ramdisk_id=instance.ramdisk_id, root_device_type="ebs",
        root_device_name=instance.root_device_name, virtualization_type="hvm", platform_details="Linux/UNIX",
        image_location=f"{ctx.account_id}/{name}", block_device_mappings=mappings, launch_permissions=[],
        attributes={"EnaSupport": True, "SriovNetSupport": "simple", "BootMode": "legacy-bios",
                    "SourceInstanceId": instance.id,
                    **({"LoginUser": source.attributes.get("LoginUser")}
                       if source is not None and (source.attributes or {}).get("LoginUser") else {})},
        disk_path=None)
    ctx.session.add(img)
    ctx.session.flush()
    if image_tags:
        set_tags(ctx, img.id, image_tags)
    return {"ImageId": img.id}


@action("CopyImage")
def copy_image(ctx: Context, p: dict) -> dict:
    """Called in the destination region: a copy of an EBS-backed image of SourceRegion that the
    caller may launch, its snapshots copied by CopySnapshot's machinery; 'pending' until they
    complete. An image registered from a host file has no snapshots to copy (not supported)."""
    from .catalogue import REGIONS
    from .errors import Unsupported
    from .snapshots import copy_of

    region = p["SourceRegion"]
    if region not in REGIONS:
        raise InvalidParameterValue.region(region)
    _check_id(p["SourceImageId"])
    source = ctx.session.get(Image, p["SourceImageId"])
    if source is None or source.region != region or not (
            source.public or source.account_id == ctx.account_id or _shared_with(source, ctx.account_id)):
        raise InvalidAMIIDNotFound(p["SourceImageId"])
    if source.image_type != "machine":
        raise InvalidParameterValue(f"Image {source.id} is a {source.image_type} image: only machine images "
                                    f"can be copied.")
    if source.state != "available":
        raise InvalidAMIIDUnavailable(source.id, source.state)
    _new_name(ctx, p["Name"])
    if not _ebs_values(source, "SnapshotId"):
        raise Unsupported(f"Image {source.id} has no snapshots (it was registered from a file or an S3 "
                          f"manifest): copying it is not supported by this emulator yet.")
    token = p.get("ClientToken")
    if token:
        prior = ctx.session.scalars(select(Image).where(Image.account_id == ctx.account_id,
                                                        Image.region == ctx.region)).all()
        for img in prior:
            if (img.attributes or {}).get("CopyClientToken") == token:
                return {"ImageId": img.id}
    image_id = new_id("ami")
    mappings = []
    for m in source.block_device_mappings or []:
        ebs = m.get("Ebs")
        if not ebs or not ebs.get("SnapshotId"):
            mappings.append(dict(m))
            continue
        snap = ctx.session.get(Snapshot, ebs["SnapshotId"])
        if snap is None:
            raise InvalidAMIIDUnavailable(source.id, "its snapshot is gone")
        copy = copy_of(ctx, snap, f"Copied for DestinationAmi {image_id} from SourceAmi {source.id} for "
                                  f"SourceSnapshot {snap.id}", p.get("Encrypted"), p.get("KmsKeyId"), [])
        mappings.append({"DeviceName": m["DeviceName"], "Ebs": {
            **{k: v for k, v in ebs.items() if k != "KmsKeyId"}, "SnapshotId": copy.id,
            "Encrypted": copy.encrypted, **({"KmsKeyId": copy.kms_key_id} if copy.encrypted else {})}})
    kernel = source.kernel_id and public_kernel_in(source.kernel_id, region, ctx.region)
    ramdisk = source.ramdisk_id and public_kernel_in(source.ramdisk_id, region, ctx.region)
    img = Image(
        id=image_id, account_id=ctx.account_id, region=ctx.region, name=p["Name"],
        description=p.get("Description") if p.get("Description") is not None else source.description,
        image_type="machine", state="pending", architecture=source.architecture, public=False, owner_alias=None,
        kernel_id=kernel or None, ramdisk_id=ramdisk or None, root_device_type="ebs",
        root_device_name=source.root_device_name, virtualization_type=source.virtualization_type,
        platform_details=source.platform_details, image_location=f"{ctx.account_id}/{p['Name']}",
        block_device_mappings=mappings, launch_permissions=[],
        attributes={k: v for k, v in {**(source.attributes or {}), "SourceImageId": source.id,
                                      "SourceImageRegion": region,
                                      "CopyClientToken": token}.items()
                    if v is not None and k not in ("LastLaunchedTime", "StateReason", "SourceInstanceId")},
        disk_path=None)
    ctx.session.add(img)
    ctx.session.flush()
    return {"ImageId": img.id}


def public_kernel_in(image_id: str, from_region: str, to_region: str) -> str | None:
    """The same public kernel or ramdisk image in another region (public ids differ per region),
    None for any other image (a copied AMI then boots the default kernel, see instances._spec)."""
    for spec in PUBLIC_IMAGES:
        if spec.image_type != "machine" and public_image_id(from_region, spec.name) == image_id:
            return public_image_id(to_region, spec.name)
    return None


# ------------------------------------------------------------------------------ DeregisterImage

@action("DeregisterImage")
def deregister_image(ctx: Context, p: dict) -> dict:
    img = _owned(ctx, p["ImageId"])
    # Locked and read afresh: a pending image's file task may have just committed its disk_path
    # (which this must retire) or waits here until the row is gone (and drops its file itself).
    img = ctx.session.get(Image, img.id, with_for_update=True, populate_existing=True)
    if (img.attributes or {}).get("DeregistrationProtection", "disabled") != "disabled":
        raise InvalidParameterValue(f"Image {img.id} has deregistration protection enabled.")
    delete_all_tags(ctx, img.id)
    ctx.session.delete(img)
    if img.disk_path and img.account_id != EMULATOR_OWNER_ID:  # a copy of a user's file
        ctx.host_task("image.retire", img.id, path=img.disk_path)
    return {"Return": True}
