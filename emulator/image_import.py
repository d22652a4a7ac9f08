"""Images from users' files, on the database side: RegisterImage's copy, DeregisterImage's
clean-up, and ImportImage / DescribeImportImageTasks / CancelImportTask.

Users bring their own images, as on AWS: a cloud disk (qcow2, raw, VMDK, VHD, VHDX, OVA), a Linux
kernel (bzImage) or an initramfs. Two ways in:

- RegisterImage with an ImageLocation that is a host path or a file:// URL: images.py writes the
  image 'pending' (its kind, hence its id's prefix, from a cheap look at the file's head) and an
  `image.register_file` host task, which probes the file with qemu-img, sizes the root mapping,
  copies the file and makes the image 'available', or 'failed' with a StateReason saying why.
- ImportImage, DescribeImportImageTasks, CancelImportTask: a task (import-ami-...) fetches the disk
  (path, file:// or http(s):// URL; no S3 here), converts it to qcow2 and registers an AMI named
  after the task, in an `image.import` host task: 'active' (pending, validating, converting,
  preparing ami), then 'completed' with its ImageId, or 'deleted' with a StatusMessage saying why.

The file work itself (probing, copying, converting, downloading, unpacking, deregistration markers)
is hypervisor/image_files.py; this module records what it finds. Host tasks are durable (written
with the request's change, run after its commit, run again at start-up after a crash) and image
ones run in the 'images' lane, one at a time, so a long copy never holds up a guest's boot. Each
action here may therefore run twice: it checks the database first, and its files have fixed names
that a second run simply overwrites. A running import writes a heartbeat (`updated_at`) every few
seconds, which also tells it when it was cancelled; an active import no host task will carry on
whose heartbeat stopped is reported 'deleted'.
"""
from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from sqlalchemy import or_, select, update

from hypervisor import image_files as files
from hypervisor.image_files import IMPORT_FORMATS, Cancelled, ImageFileError, Probe

from .errors import (IncorrectState, InvalidBlockDeviceMapping, InvalidConversionTaskId,
                     InvalidConversionTaskIdMalformed, InvalidParameterValue, MissingParameter,
                     Unsupported)
from .host_tasks import unfinished_resources
from .ids import new_id, well_formed
from .models import Image, ImportImageTask, Instance, utcnow
from .times import aware
from .query import Resource, Selector, describe
from .registry import Context, Host, Interrupted, action, host_action, host_action_failed
from .tags import refuse_other_tag_types, set_tags, tag_dict, tag_list, tag_specifications, tags_for

log = logging.getLogger("ec2emu.images")

HEARTBEAT_SECONDS = 3.0
STALE_SECONDS = 300  # an active task without a heartbeat for this long was interrupted
TASK_RETENTION = timedelta(days=7)  # finished tasks stay visible this long, as on AWS
# No bound on concurrent imports any more (it was a semaphore of 2): the images lane runs one host
# task at a time, imports and RegisterImage copies alike.


def _work(config) -> Path:
    return files.registered_dir(config.effective_image_dir)


def _identity(config) -> str:
    """Which emulator a deregistration marker belongs to: its database."""
    return hashlib.sha256(config.effective_database_url.encode()).hexdigest()[:32]


# --------------------------------------------------------------------- RegisterImage's copy

def root_mapping(device: str, size_gib: int | None) -> dict:
    """An image's root EBS mapping; size None until the disk has been probed."""
    ebs = {"DeleteOnTermination": True, "VolumeSize": size_gib, "VolumeType": "gp2", "Encrypted": False}
    return {"DeviceName": device, "Ebs": {k: v for k, v in ebs.items() if v is not None}}


def disk_image_row(*, image_id: str, account_id: str, region: str, name: str, description: str | None,
                   location: str, architecture: str, virtualization: str, root_device: str,
                   mappings: list[dict], kernel_id: str | None = None, ramdisk_id: str | None = None,
                   attributes: dict | None = None, state: str = "pending",
                   disk_path: str | None = None) -> Image:
    """An EBS-backed machine image whose root disk is a file of ours."""
    return Image(
        id=image_id, account_id=account_id, region=region, name=name, description=description,
        image_type="machine", state=state, architecture=architecture, public=False, owner_alias=None,
        kernel_id=kernel_id, ramdisk_id=ramdisk_id, root_device_type="ebs", root_device_name=root_device,
        virtualization_type=virtualization, platform_details="Linux/UNIX", image_location=location,
        block_device_mappings=mappings, launch_permissions=[], attributes=attributes or {},
        disk_path=disk_path)


def _sized(mappings: list[dict], root: str, source: str, probe: Probe) -> list[dict]:
    """The mappings with the root volume sized to the disk (when the user gave no size), or
    ImageFileError when the size the user gave is too small for it."""
    out = [{**m, "Ebs": dict(m["Ebs"])} if "Ebs" in m else dict(m) for m in mappings]
    mine = next((m for m in out if m["DeviceName"] == root and "Ebs" in m), None)
    if mine is None:  # (RegisterImage always writes one)
        out.insert(0, root_mapping(root, probe.volume_gib))
    elif mine["Ebs"].get("VolumeSize") is None:
        mine["Ebs"]["VolumeSize"] = probe.volume_gib
    elif mine["Ebs"]["VolumeSize"] < probe.volume_gib:
        raise ImageFileError(InvalidBlockDeviceMapping.too_small(
            mine["Ebs"]["VolumeSize"], source, probe.volume_gib).message)
    return out


@host_action("image.register_file")
def register_file(host: Host, image_id: str, source: str) -> None:
    """Probe the file a 'pending' image was registered from, copy it, and make the image
    'available' (or 'failed', with a StateReason, when the file cannot be that image). Run again
    (after a crash) it probes and copies again; once the image is no longer pending, it is a no-op."""
    with host.Session() as session:
        img = session.get(Image, image_id)
        if img is None or img.state != "pending":  # done before a crash, or deregistered
            return
        kind, root, mappings = img.image_type, img.root_device_name, img.block_device_mappings or []
    try:
        probe = files.sniff(source)
        if probe.kind != kind:
            raise ImageFileError(f"{source} changed after RegisterImage: it is no longer "
                                 f"{'a disk image' if kind == 'machine' else 'a Linux ' + kind}")
        if kind == "machine":
            mappings = _sized(mappings, root, source, probe)
        dest = _work(host.config) / f"{image_id}.{probe.extension}"
        files.materialize(source, probe, dest)
    except ImageFileError as exc:
        log.warning("image %s failed: %s", image_id, exc.message)
        _fail_image(host, image_id, exc.message)
        return
    try:
        with host.Session() as session:
            # locked: a DeregisterImage at the same time either deleted the row first (the file
            # goes here) or waits and then sees disk_path (and retires the file)
            img = session.get(Image, image_id, with_for_update=True)
            if img is None or img.state != "pending":  # deregistered meanwhile
                dest.unlink(missing_ok=True)
                return
            img.block_device_mappings = mappings
            img.disk_path = str(dest)
            img.state = "available"
            session.commit()
    except Exception:
        dest.unlink(missing_ok=True)
        raise


@host_action_failed("image.register_file")
def _register_file_failed(host: Host, image_id: str, error: str) -> None:
    with host.Session() as session:
        img = session.get(Image, image_id)
        location = img.image_location if img is not None else image_id
    _fail_image(host, image_id, f"copying {location} failed: {error}")


def _fail_image(host: Host, image_id: str, message: str) -> None:
    with host.Session() as session:
        img = session.get(Image, image_id)
        if img is not None and img.state == "pending":
            img.state = "failed"
            img.attributes = {**(img.attributes or {}),
                              "StateReason": {"Code": "Client.InvalidImage", "Message": message[:255]}}
            session.commit()


# ----------------------------------------------------------------- DeregisterImage's clean-up

@host_action("image.retire")
def retire(host: Host, image_id: str, path: str) -> None:
    """After DeregisterImage: the image's copy goes as soon as no live instance uses it (a marker
    remembers it until then). Idempotent: marking twice, sweeping twice change nothing."""
    if files.mark_retired(_work(host.config), image_id, path, _identity(host.config)):
        sweep(host)


def sweep(host: Host) -> None:
    """Delete the copies of deregistered images that no live instance uses any more, and work
    files a stopped emulator left behind. Cheap; safe to call at any time."""
    work = _work(host.config)
    files.clean_scratch(work)
    for copy in files.retired_copies(work, _identity(host.config)):
        with host.Session() as session:
            if session.get(Image, copy.image_id) is not None:
                copy.keep()  # registered again? keep the file
                continue
            used = session.scalars(select(Instance.id).where(
                Instance.state != "terminated",
                or_(Instance.image_id == copy.image_id, Instance.kernel_id == copy.image_id,
                    Instance.ramdisk_id == copy.image_id)).limit(1)).first()
        if used is None:
            copy.delete()
            log.info("deleted %s: its image %s is deregistered and unused", copy.file, copy.image_id)


# ------------------------------------------------------------------------------ ImportImage

class _Job:
    """One import task at work: its steps, a heartbeat thread, and whether it was cancelled."""

    def __init__(self, factory, task_id: str, stopping: threading.Event | None = None):
        self.factory, self.task_id = factory, task_id
        self.stopping = stopping or threading.Event()  # the process shuts down: stop, stay pending
        self.cancelled = threading.Event()
        self.progress: int | None = None
        self._stop = threading.Event()

    def write(self, **fields) -> None:
        """Update the task if it is still active (one statement: never over a cancel or the end)."""
        with self.factory() as session:
            done = session.execute(update(ImportImageTask).where(
                ImportImageTask.id == self.task_id, ImportImageTask.status == "active").values(
                updated_at=utcnow(), **fields))
            session.commit()
        if done.rowcount == 0:
            self.cancelled.set()

    def step(self, message: str, progress: int) -> None:
        self.check()
        self.progress = progress
        self.write(status_message=message, progress=str(progress))
        self.check()

    def advance(self, low: int, high: int) -> Callable[[float], None]:
        return lambda fraction: setattr(self, "progress", low + int((high - low) * min(1.0, fraction)))

    def check(self) -> None:
        if self.cancelled.is_set():
            raise Cancelled()

    def __enter__(self) -> "_Job":
        def beat() -> None:
            while not self._stop.wait(HEARTBEAT_SECONDS):
                if self.stopping.is_set():
                    self.cancelled.set()  # the copy/download loops stop at their next check
                try:
                    self.write(**({"progress": str(self.progress)} if self.progress is not None else {}))
                except Exception:
                    log.exception("heartbeat of %s", self.task_id)
        threading.Thread(target=beat, name=f"beat-{self.task_id}", daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()

    def end(self, status_message: str | None) -> None:
        """Finish as 'deleted': cancelled (keeping the cancel's message) or failed."""
        with self.factory() as session:
            task = session.get(ImportImageTask, self.task_id)
            if task is None or task.status in ("completed", "deleted"):
                return
            if task.status == "active":
                task.status_message = status_message
            task.status = "deleted"
            task.progress = None
            task.updated_at = utcnow()
            task.disk = {**(task.disk or {}), "Status": "deleted"}
            session.commit()


def _scratch(work: Path, task_id: str) -> tuple[Path, Path]:
    """An import's work files (a download, an OVA's disk): fixed names, so a rerun reuses them."""
    return work / f".{task_id}.download", work / f".{task_id}.vmdk"


def _imported_image_id(task_id: str) -> str:
    """The AMI an import makes: derived from the task, so a rerun after a crash writes the same
    file rather than leaving an orphan copy behind."""
    return f"ami-{hashlib.sha256(task_id.encode()).hexdigest()[:17]}"


@host_action("image.import")
def run_import(host: Host, task_id: str) -> None:
    """The whole ImportImage job. Run again after a crash it starts over (an import no longer
    active just ends: a cancel becomes 'deleted', a completed one stays)."""
    job = _Job(host.Session, task_id, host.stopping)
    work = _work(host.config)
    try:
        with job:
            _import(job, work)
    except Cancelled:
        if job.stopping.is_set():
            raise Interrupted() from None  # not the user's cancel: the task runs again later
        job.end(None)
    except ImageFileError as exc:
        log.info("import %s failed: %s", task_id, exc.message)
        job.end(f"ClientError: {exc.message}")
    except Exception as exc:
        log.exception("import %s failed", task_id)
        job.end(f"ServerError: {exc}")
    finally:
        files.remove(*_scratch(work, task_id))
        try:
            sweep(host)
        except Exception:
            log.exception("sweeping deregistered image files")


@host_action_failed("image.import")
def _import_failed(host: Host, task_id: str, error: str) -> None:
    _Job(host.Session, task_id).end(f"ServerError: {error}")


def _import(job: _Job, work: Path) -> None:
    with job.factory() as session:
        task = session.get(ImportImageTask, job.task_id)
        if task is None or task.status != "active":
            raise Cancelled()
        source, declared = task.source, (task.disk or {}).get("Format")
    download, vmdk = _scratch(work, job.task_id)
    job.step("validating", 2)
    path = files.local_path(source)
    if path is None:
        files.download(source, download, job.cancelled, job.advance(2, 40))
        path = str(download)
    else:
        files.check_readable(path)  # a clear message if it is missing or unreadable
    if declared == "OVA" or (declared is None and files.is_ova(path)):
        files.extract_ova_disk(path, vmdk, job.cancelled)
        path, declared = str(vmdk), "VMDK"
    probe = files.sniff_disk(path, IMPORT_FORMATS[declared] if declared else None, files.shown(source))
    size = Path(path).stat().st_size
    job.step("converting", 45)
    with job.factory() as session:
        task = session.get(ImportImageTask, job.task_id)
        task.disk = {**(task.disk or {}), "Format": declared or files.FORMAT_NAMES[probe.format],
                     "DiskImageSize": float(size)}
        session.commit()
    image_id = _imported_image_id(job.task_id)
    dest = work / f"{image_id}.qcow2"
    files.materialize(path, probe, dest, job.cancelled)
    try:
        job.step("preparing ami", 90)
        with job.factory() as session:
            task = session.get(ImportImageTask, job.task_id)
            if task is None or task.status != "active":
                raise Cancelled()
            device = (task.disk or {}).get("DeviceName") or "/dev/sda1"
            description = task.description or f"Imported by ec2emu from {files.shown(task.source)}"
            attributes = {"BootMode": task.boot_mode} if task.boot_mode else {}
            session.add(disk_image_row(
                image_id=image_id, account_id=task.account_id, region=task.region, name=task.id,
                description=description[:255], location=f"{task.account_id}/{task.id}",
                architecture=task.architecture or "x86_64", virtualization="hvm", root_device=device,
                mappings=[root_mapping(device, probe.volume_gib)], attributes=attributes,
                state="available", disk_path=str(dest)))
            task.status, task.status_message, task.progress = "completed", None, None
            task.image_id = image_id
            task.architecture = task.architecture or "x86_64"
            task.platform = task.platform or "Linux"
            task.license_type = task.license_type or "BYOL"
            task.disk = {**(task.disk or {}), "DeviceName": device, "Status": "completed"}
            task.updated_at = utcnow()
            session.commit()
    except BaseException:
        dest.unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------- the API

def _check_task_id(task_id: str) -> None:
    if not any(well_formed(task_id, p) for p in ("import-ami", "import-snap", "import-i")):
        raise InvalidConversionTaskIdMalformed(task_id)


def _expire_stale(rows: list[ImportImageTask], queued: set[str]) -> None:
    """Tasks whose worker stopped beating end 'deleted', unless a host task will still carry them
    on (`queued`: waiting in the images lane, under way, or to be run again after a restart)."""
    limit = utcnow() - timedelta(seconds=STALE_SECONDS)
    for t in rows:
        if t.status in ("active", "deleting") and aware(t.updated_at) < limit and t.id not in queued:
            if t.status == "active":
                t.status_message = ("ServerError: the import was interrupted (the emulator stopped "
                                    "before it finished); run ImportImage again")
            t.status, t.progress = "deleted", None
            t.disk = {**(t.disk or {}), "Status": "deleted"}


def _task_out(t: ImportImageTask, tags: dict) -> dict:
    d = t.disk or {}
    detail = {k: v for k, v in {
        "Description": d.get("Description"), "DeviceName": d.get("DeviceName"),
        "DiskImageSize": d.get("DiskImageSize"), "Format": d.get("Format"), "Url": t.source,
        "Status": d.get("Status") or ("active" if t.status == "active" else t.status),
    }.items() if v is not None}
    return {
        "ImportTaskId": t.id, "Status": t.status, "StatusMessage": t.status_message,
        "Progress": t.progress, "ImageId": t.image_id, "Description": t.description,
        "Architecture": t.architecture, "Platform": t.platform, "LicenseType": t.license_type,
        "Hypervisor": None, "Encrypted": False, "BootMode": t.boot_mode,
        "UsageOperation": t.usage_operation, "SnapshotDetails": [detail], "Tags": tag_list(tags),
    }


def _own_tasks(ctx: Context):
    return select(ImportImageTask).where(ImportImageTask.account_id == ctx.account_id,
                                         ImportImageTask.region == ctx.region)


def _choice(p: dict, key: str, allowed: tuple[str, ...], name: str) -> str | None:
    value = p.get(key)
    if value is not None and value not in allowed:
        raise InvalidParameterValue.value(value, name, f"Valid values: {', '.join(allowed)}")
    return value


@action("ImportImage")
def import_image(ctx: Context, p: dict) -> dict:
    refuse_other_tag_types(p.get("TagSpecifications"), {"import-image-task"})
    tags = tag_specifications(p.get("TagSpecifications"), "import-image-task")
    token = p.get("ClientToken")
    if token:
        prior = ctx.session.scalars(_own_tasks(ctx).where(ImportImageTask.client_token == token)).first()
        if prior is not None:
            return _task_out(prior, tags_for(ctx, [prior.id])[prior.id])
    containers = p.get("DiskContainers") or []
    if not containers:
        raise MissingParameter("DiskContainer")
    if len(containers) > 1:
        raise Unsupported("Importing more than one disk is not supported by this emulator: import the "
                          "root disk alone.")
    disk = containers[0]
    if disk.get("UserBucket"):
        raise Unsupported("Importing from S3 (DiskContainer.UserBucket) is not supported: this emulator "
                          "has no S3. Give DiskContainer.Url as a host path, a file:// URL or an "
                          "http(s):// URL instead.")
    if disk.get("SnapshotId"):
        raise Unsupported("Importing from a snapshot (DiskContainer.SnapshotId) is not supported by "
                          "this emulator: give DiskContainer.Url instead.")
    url = disk.get("Url")
    if not url:
        raise MissingParameter("DiskContainer.Url")
    try:
        local = files.local_path(url)
    except ImageFileError as exc:
        raise InvalidParameterValue(exc.message) from None
    if local is None:
        scheme, hostname = files.url_scheme(url)
        if scheme == "s3":
            raise Unsupported("Importing from S3 is not supported: this emulator has no S3. Give a host "
                              "path, a file:// URL or an http(s):// URL.")
        if scheme not in ("http", "https") or not hostname:
            raise InvalidParameterValue(f"Value ({files.redacted(url) if scheme else url}) for parameter "
                                        "DiskContainer.Url is invalid: give a host path, a file:// URL or an "
                                        "http(s):// URL.")
    fmt = (disk.get("Format") or "").upper() or None
    if fmt is not None and fmt not in IMPORT_FORMATS:
        raise InvalidParameterValue.value(disk["Format"], "DiskContainer.Format",
                                          f"Valid values: {', '.join(IMPORT_FORMATS)}")
    if p.get("Encrypted"):
        raise Unsupported("Encrypted imports are not supported by this emulator yet.")
    description = p.get("Description")
    if len(description or "") > 255 or len(disk.get("Description") or "") > 255:
        raise InvalidParameterValue.too_long("description")
    architecture = _choice(p, "Architecture", ("i386", "x86_64", "arm64"), "Architecture")
    platform = _choice(p, "Platform", ("Linux", "Windows"), "Platform")
    license_type = _choice(p, "LicenseType", ("AWS", "BYOL"), "LicenseType")
    task = ImportImageTask(
        id=new_id("import-ami"), account_id=ctx.account_id, region=ctx.region, status="active",
        status_message="pending", progress="1", description=description, platform=platform,
        architecture=architecture, license_type=license_type, boot_mode=p.get("BootMode"),
        usage_operation=p.get("UsageOperation"), client_token=token, source=url,
        disk={k: v for k, v in {"Format": fmt, "Description": disk.get("Description"),
                                "DeviceName": disk.get("DeviceName")}.items() if v is not None},
        updated_at=utcnow())
    ctx.session.add(task)
    ctx.session.flush()
    if tags:
        set_tags(ctx, task.id, tags)
    ctx.host_task("image.import", task.id)
    return _task_out(task, tag_dict(tags))


TASK_FILTERS = {
    "task-state": lambda t: t.status,
    "import-task-id": lambda t: t.id,
    "image-id": lambda t: t.image_id,
}


TASKS = Resource("ImportImageTasks", lambda ctx, page, tags: [_task_out(t, tags[t.id]) for t in page], TASK_FILTERS,
                 (Selector("ImportTaskIds", lambda t: t.id, InvalidConversionTaskId, _check_task_id),),
                 max_results=(1, 1000))


def _current(t: ImportImageTask) -> bool:
    """Finished tasks age out of listings, as on AWS (those asked for by id are still shown)."""
    return t.status in ("active", "deleting") or aware(t.created_at) >= utcnow() - TASK_RETENTION


@action("DescribeImportImageTasks")
def describe_import_image_tasks(ctx: Context, p: dict) -> dict:
    rows = list(ctx.session.scalars(_own_tasks(ctx).order_by(ImportImageTask.id)))
    _expire_stale(rows, unfinished_resources(ctx.session))
    return describe(ctx, TASKS, p, rows, keep=None if p.get("ImportTaskIds") else _current)


@action("CancelImportTask")
def cancel_import_task(ctx: Context, p: dict) -> dict:
    task_id = p.get("ImportTaskId")
    if not task_id:
        raise MissingParameter("ImportTaskId")
    _check_task_id(task_id)
    task = ctx.session.scalars(_own_tasks(ctx).where(ImportImageTask.id == task_id)).first()
    if task is None:
        raise InvalidConversionTaskId(task_id)
    _expire_stale([task], unfinished_resources(ctx.session))
    if task.status != "active":
        raise IncorrectState.not_cancellable(task_id, task.status)
    reason = p.get("CancelReason")
    task.status = "deleting"
    task.status_message = f"User cancelled: {reason}" if reason else "User cancelled"
    task.updated_at = utcnow()
    return {"ImportTaskId": task_id, "PreviousState": "active", "State": "deleting"}
