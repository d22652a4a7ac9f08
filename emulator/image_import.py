"""Images from users' files, on the database side, and ImportImage.

Users bring their own images, as on AWS: a cloud disk (qcow2, raw, VMDK, VHD, VHDX, OVA), a Linux
kernel (bzImage) or an initramfs. Two ways in:

- RegisterImage with an ImageLocation that is a host path or a file:// URL (images.py finds the
  file's kind with hypervisor/image_files.py and calls `disk_image_row` and `copy_in_background`
  here); the image is 'pending' until its copy is in place, then 'available'.
- ImportImage, DescribeImportImageTasks, CancelImportTask: a task (import-ami-...) fetches the disk
  (path, file:// or http(s):// URL; no S3 here), converts it to qcow2 and registers an AMI named
  after the task, in the background: 'active' (pending, validating, converting, preparing ami),
  then 'completed' with its ImageId, or 'deleted' with a StatusMessage saying why.

The file work itself (probing, copying, converting, downloading, unpacking, deregistration markers)
is hypervisor/image_files.py; this module records what it finds. DeregisterImage `retire`s a copy:
it is deleted as soon as no live instance (state not terminated) uses the image as image, kernel or
ramdisk; until then a marker file remembers it and every later `sweep` looks again.

Background work runs in threads of its own (never in the ordered host-action worker, which boots
guests) with sessions of its own. Running import tasks write a heartbeat (`updated_at`) every few
seconds; a task whose heartbeat stopped (the emulator stopped mid-import) is reported 'deleted'.
"""
from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import or_, select, update

from hypervisor import image_files as files
from hypervisor.image_files import IMPORT_FORMATS, Cancelled, ImageFileError, Probe

from . import db
from .errors import (IncorrectState, InvalidConversionTaskId, InvalidConversionTaskIdMalformed,
                     InvalidParameterValue, MissingParameter, Unsupported)
from .ids import new_id, well_formed
from .models import Image, ImportImageTask, Instance, utcnow
from .query import Resource, Selector, describe
from .registry import Context, action
from .tags import refuse_other_tag_types, set_tags, tag_list, tag_specifications, tags_for

log = logging.getLogger("ec2emu.images")

HEARTBEAT_SECONDS = 3.0
STALE_SECONDS = 300  # an active task without a heartbeat for this long was interrupted
TASK_RETENTION = timedelta(days=7)  # finished tasks stay visible this long, as on AWS
MAX_CONCURRENT_IMPORTS = 2
_IMPORT_SLOTS = threading.BoundedSemaphore(MAX_CONCURRENT_IMPORTS)


# ------------------------------------------------------------------------------- copies

def registered_dir(config) -> Path:
    return files.registered_dir(config.effective_image_dir)


def _identity(config) -> str:
    """Which emulator a deregistration marker belongs to: its database."""
    return hashlib.sha256(config.effective_database_url.encode()).hexdigest()[:32]


def retire(factory, config, image_id: str, path: str) -> None:
    """After DeregisterImage: the image's copy goes as soon as no live instance uses it."""
    if files.mark_retired(registered_dir(config), image_id, path, _identity(config)):
        sweep(factory, config)


def sweep(factory, config) -> None:
    """Delete the copies of deregistered images that no live instance uses any more, and work
    files a stopped emulator left behind. Cheap; safe to call at any time (e.g. after an instance
    terminated)."""
    work = registered_dir(config)
    files.clean_scratch(work)
    for copy in files.retired_copies(work, _identity(config)):
        with factory() as session:
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


def session_factory(ctx: Context):
    """Sessions for background work (the request's own session is closed by then)."""
    factory = getattr(ctx, "session_factory", None)
    return factory if factory is not None else db.session_factory(ctx.session.get_bind())


def _thread(fn: Callable, *args, daemon: bool, name: str) -> None:
    def run() -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("%s failed", name)
    threading.Thread(target=run, name=name, daemon=daemon).start()


# --------------------------------------------------------------------- RegisterImage's copy

def root_mapping(device: str, size_gib: int) -> dict:
    return {"DeviceName": device, "Ebs": {"DeleteOnTermination": True, "VolumeSize": size_gib,
                                          "VolumeType": "gp2", "Encrypted": False}}


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


def copy_in_background(ctx: Context, image_id: str, source: str, probe: Probe) -> None:
    """After the commit: copy the file, then make the 'pending' image 'available' (or 'failed')."""
    factory, config = session_factory(ctx), ctx.config
    ctx.then(lambda: _thread(_copy_registered, factory, config, image_id, source, probe,
                             daemon=False, name=f"copy-{image_id}"))


def _copy_registered(factory, config, image_id: str, source: str, probe: Probe) -> None:
    dest = registered_dir(config) / f"{image_id}.{probe.extension}"
    try:
        files.materialize(source, probe, dest)
    except Exception as exc:
        message = exc.message if isinstance(exc, ImageFileError) else f"copying {source} failed: {exc}"
        log.warning("image %s failed: %s", image_id, message)
        with factory() as session:
            img = session.get(Image, image_id)
            if img is not None and img.state == "pending":
                img.state = "failed"
                img.attributes = {**(img.attributes or {}),
                                  "StateReason": {"Code": "Client.InvalidImage", "Message": message[:255]}}
                session.commit()
        return
    try:
        with factory() as session:
            img = session.get(Image, image_id)
            if img is None or img.state != "pending":  # deregistered meanwhile
                dest.unlink(missing_ok=True)
                return
            img.disk_path = str(dest)
            img.state = "available"
            session.commit()
    except Exception:
        dest.unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------------------ ImportImage

class _Job:
    """One import task at work: its steps, a heartbeat thread, and whether it was cancelled."""

    def __init__(self, factory, task_id: str):
        self.factory, self.task_id = factory, task_id
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


def _run_import(factory, config, task_id: str) -> None:
    job = _Job(factory, task_id)
    work = registered_dir(config)
    scratch = [work / f".{task_id}.download", work / f".{task_id}.vmdk"]
    try:
        with job:
            while not _IMPORT_SLOTS.acquire(timeout=1):
                job.check()
            try:
                _import(job, config, work, scratch)
            finally:
                _IMPORT_SLOTS.release()
    except Cancelled:
        job.end(None)
    except ImageFileError as exc:
        log.info("import %s failed: %s", task_id, exc.message)
        job.end(f"ClientError: {exc.message}")
    except Exception as exc:
        log.exception("import %s failed", task_id)
        job.end(f"ServerError: {exc}")
    finally:
        files.remove(*scratch)
        try:
            sweep(factory, config)
        except Exception:
            log.exception("sweeping deregistered image files")


def _import(job: _Job, config, work: Path, scratch: list[Path]) -> None:
    with job.factory() as session:
        task = session.get(ImportImageTask, job.task_id)
        if task is None or task.status != "active":
            raise Cancelled()
        source, declared = task.source, (task.disk or {}).get("Format")
    download, vmdk = scratch
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
    image_id = new_id("ami")
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


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def _expire_stale(rows: list[ImportImageTask]) -> None:
    """Tasks whose worker stopped beating (the emulator stopped mid-import) end 'deleted'."""
    limit = utcnow() - timedelta(seconds=STALE_SECONDS)
    for t in rows:
        if t.status in ("active", "deleting") and _aware(t.updated_at) < limit:
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
    factory, config, task_id = session_factory(ctx), ctx.config, task.id
    ctx.then(lambda: _thread(_run_import, factory, config, task_id, daemon=True, name=task_id))
    return _task_out(task, {t["Key"]: t.get("Value") or "" for t in tags})


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
    return t.status in ("active", "deleting") or _aware(t.created_at) >= utcnow() - TASK_RETENTION


@action("DescribeImportImageTasks")
def describe_import_image_tasks(ctx: Context, p: dict) -> dict:
    rows = list(ctx.session.scalars(_own_tasks(ctx).order_by(ImportImageTask.id)))
    _expire_stale(rows)
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
    _expire_stale([task])
    if task.status != "active":
        raise IncorrectState.not_cancellable(task_id, task.status)
    reason = p.get("CancelReason")
    task.status = "deleting"
    task.status_message = f"User cancelled: {reason}" if reason else "User cancelled"
    task.updated_at = utcnow()
    return {"ImportTaskId": task_id, "PreviousState": "active", "State": "deleting"}
