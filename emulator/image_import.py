"""The files behind images, and ImportImage.

Users bring their own images, as on AWS: a cloud disk (qcow2, raw, VMDK, VHD, VHDX, OVA), a Linux
kernel (bzImage) or an initramfs. Two ways in:

- RegisterImage with an ImageLocation that is a host path or a file:// URL (images.py calls
  `local_path`, `sniff`, `disk_image_row` and `copy_in_background` here). The file's kind is found
  from its content; the image is 'pending' until its copy is in place, then 'available'.
- ImportImage, DescribeImportImageTasks, CancelImportTask: a task (import-ami-...) fetches the disk
  (path, file:// or http(s):// URL; no S3 here), converts it to qcow2 and registers an AMI named
  after the task, in the background: 'active' (pending, validating, converting, preparing ami),
  then 'completed' with its ImageId, or 'deleted' with a StatusMessage saying why.

Every image file is a private copy, <image dir>/registered/<image id>.<ext>, so later changes to
the user's file never reach the image. Work in progress is a dot-file beside it, renamed into place
when complete. DeregisterImage `retire`s a copy: it is deleted as soon as no live instance (state
not terminated) uses the image as image, kernel or ramdisk; until then a marker file remembers it
and every later `sweep` looks again. Markers carry this emulator's identity (its database), so
emulators sharing an image dir never delete each other's files.

Background work runs in threads of its own (never in the ordered host-action worker, which boots
guests) with sessions of its own. Running import tasks write a heartbeat (`updated_at`) every few
seconds; a task whose heartbeat stopped (the emulator stopped mid-import) is reported 'deleted'.
"""
from __future__ import annotations

import bz2
import hashlib
import ipaddress
import json
import logging
import lzma
import math
import os
import shutil
import stat
import subprocess
import tarfile
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import unquote, urlsplit

from sqlalchemy import or_, select, update

from . import db
from .errors import (IncorrectState, InvalidConversionTaskId, InvalidConversionTaskIdMalformed,
                     InvalidParameterValue, MissingParameter, Unsupported)
from .ids import new_id, well_formed
from .models import Image, ImportImageTask, Instance, utcnow
from .query import Resource, Selector, describe
from .registry import Context, action
from .tags import refuse_other_tag_types, set_tags, tag_list, tag_specifications, tags_for

log = logging.getLogger("ec2emu.images")

REGISTERED_DIR = "registered"
GIB = 1 << 30
MAX_DOWNLOAD_BYTES = 64 * GIB  # a bigger download is refused
DOWNLOAD_SOCKET_TIMEOUT = 60  # seconds without a byte from the server
DOWNLOAD_DEADLINE = 4 * 3600  # seconds for a whole download
QEMU_IMG_INFO_TIMEOUT = 60
HEARTBEAT_SECONDS = 3.0
STALE_SECONDS = 300  # an active task without a heartbeat for this long was interrupted
ABANDONED_SECONDS = 24 * 3600  # a work file untouched this long belongs to no running job
TASK_RETENTION = timedelta(days=7)  # finished tasks stay visible this long, as on AWS
MAX_CONCURRENT_IMPORTS = 2
_IMPORT_SLOTS = threading.BoundedSemaphore(MAX_CONCURRENT_IMPORTS)
_MARKER = ".deregistered"

# ImportImage's DiskContainer.Format -> qemu-img's format name (None: a tar holding a VMDK).
IMPORT_FORMATS = {"RAW": "raw", "VMDK": "vmdk", "VHD": "vpc", "VHDX": "vhdx", "OVA": None,
                  "QCOW2": "qcow2", "VDI": "vdi"}
_FORMAT_NAMES = {v: k for k, v in IMPORT_FORMATS.items() if v}
DISK_FORMATS = frozenset(_FORMAT_NAMES)  # what qemu-img converts for us


class ImageFileError(Exception):
    """A file that cannot become an image, with a message for the user."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class Cancelled(Exception):
    pass


# ------------------------------------------------------------------------------ what a file is

@dataclass(frozen=True)
class Probe:
    kind: str  # machine | kernel | ramdisk
    format: str | None = None  # machines: qemu-img's format name
    virtual_size: int | None = None  # machines: bytes
    flat: bool = True  # a qcow2 with no backing or external data file: copied as it is

    @property
    def volume_gib(self) -> int:
        return max(1, math.ceil((self.virtual_size or 0) / GIB))

    @property
    def extension(self) -> str:
        return {"machine": "qcow2", "kernel": "vmlinuz", "ramdisk": "initrd.img"}[self.kind]


def local_path(location: str) -> str | None:
    """The host path an ImageLocation or Url names when it is local (an absolute path or a
    file:// URL), else None (an S3-style 'bucket/key' or an http(s) URL)."""
    if location.startswith("file:"):
        parts = urlsplit(location)
        if parts.netloc not in ("", "localhost"):
            raise ImageFileError(f"{location}: a file:// URL must name a file on this host "
                                 "(file:///path/to/disk.qcow2)")
        path = unquote(parts.path)
    elif location.startswith("/"):
        path = location
    else:
        return None
    if not os.path.isabs(path):
        raise ImageFileError(f"{location}: the path must be absolute")
    return os.path.normpath(path)


_HEAD = 0x10048  # enough to see every signature below (btrfs sits at 64 KiB)


def _read_head(path: str) -> tuple[bytes, int]:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ImageFileError(f"{path}: no such file") from None
    except OSError as exc:
        raise ImageFileError(f"{path}: cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise ImageFileError(f"{path}: not a regular file")
    try:
        with open(path, "rb") as f:
            return f.read(_HEAD), st.st_size
    except OSError as exc:
        raise ImageFileError(f"{path}: cannot be read ({exc.strerror})") from None


def _is_kernel(head: bytes) -> bool:
    return head[0x202:0x206] == b"HdrS"  # the x86 boot protocol header of a bzImage


_CPIO = (b"070701", b"070702", b"070707")


def _is_initramfs(path: str, head: bytes) -> bool:
    """A cpio archive, plain or compressed. Compressed files Python can open must hold a cpio
    archive (so a gzipped disk image is not taken for a ramdisk); zstd and lz4 are trusted."""
    if head.startswith(_CPIO):
        return True
    if head.startswith(b"\x28\xb5\x2f\xfd") or head.startswith(b"\x02\x21\x4c\x18"):  # zstd, lz4
        return True
    if head.startswith(b"\x1f\x8b"):
        opener, what = (lambda: zlib.decompressobj(16 + zlib.MAX_WBITS)), "gzip"
    elif head.startswith(b"\xfd7zXZ\x00"):
        opener, what = (lambda: lzma.LZMADecompressor(lzma.FORMAT_XZ)), "xz"
    elif head[:3] == b"BZh" and head[3:4].isdigit():
        opener, what = bz2.BZ2Decompressor, "bzip2"
    else:
        return False
    try:
        inner = opener().decompress(head)[:6]
    except (zlib.error, lzma.LZMAError, OSError, EOFError):
        inner = b"?"
    if len(inner) < 6 or inner in _CPIO:  # (bzip2 shows nothing before a whole block: trust it)
        return True
    raise ImageFileError(f"{path} is {what}-compressed but holds no initramfs (cpio archive); "
                         "if it is a compressed disk image, decompress it first")


def _plausible_raw(head: bytes, size: int) -> bool:
    """A raw file that looks like a disk: whole sectors, and a partition table, a file system,
    or a blank start (a fresh disk). Anything else is junk, not a disk."""
    if size == 0 or size % 512:
        return False
    return (head[510:512] == b"\x55\xaa"  # MBR (or a FAT boot sector)
            or head[512:520] == b"EFI PART"  # GPT
            or head[1080:1082] == b"\x53\xef"  # ext2/3/4
            or head[:4] in (b"XFSB", b"hsqs")  # XFS, squashfs
            or head[0x8001:0x8006] == b"CD001"  # ISO 9660
            or head[0x10040:0x10048] == b"_BHRfS_M"  # btrfs
            or not head.strip(b"\x00"))


def _vhd_footer(path: str) -> bool:
    """A fixed VHD has its 'conectix' footer only at the end (qemu-img probes it as raw)."""
    try:
        with open(path, "rb") as f:
            f.seek(-512, os.SEEK_END)
            return f.read(8) == b"conectix"
    except OSError:
        return False


def qemu_img_info(path: str, fmt: str | None = None) -> dict:
    cmd = ["qemu-img", "info", "-U", "--output=json"] + (["-f", fmt] if fmt else []) + [path]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=QEMU_IMG_INFO_TIMEOUT)
    except FileNotFoundError:
        raise ImageFileError("qemu-img is not installed on the emulator's host") from None
    except subprocess.TimeoutExpired:
        raise ImageFileError(f"{path}: qemu-img info took too long") from None
    if proc.returncode != 0:
        raise ImageFileError(f"{path}: not a disk image qemu-img can read ({proc.stderr.strip()})")
    return json.loads(proc.stdout)


def _disk_probe(path: str, head: bytes, size: int, declared: str | None = None,
                label: str | None = None) -> Probe:
    """label: how messages name the file (a download's URL rather than its scratch file)."""
    try:
        return _disk_probe_of(path, head, size, declared, label or path)
    except ImageFileError as exc:
        if label and label != path:
            raise ImageFileError(exc.message.replace(path, label)) from None
        raise


def _disk_probe_of(path: str, head: bytes, size: int, declared: str | None, label: str) -> Probe:
    info = qemu_img_info(path)
    fmt = info.get("format")
    if declared and declared != fmt:
        if declared == "vpc" and fmt == "raw" and _vhd_footer(path):
            info, fmt = qemu_img_info(path, "vpc"), "vpc"
        else:
            raise ImageFileError(f"{label} is not a {_FORMAT_NAMES.get(declared, declared)} disk "
                                 f"(qemu-img reads it as {_FORMAT_NAMES.get(fmt, fmt)})")
    if fmt == "raw" and not _plausible_raw(head, size):
        raise ImageFileError(f"{label} is not a disk image (qcow2, or raw with a partition table or "
                             "file system), a Linux kernel (bzImage) or an initramfs")
    if fmt not in DISK_FORMATS:
        raise ImageFileError(f"{label}: disk format {fmt} is not supported (use qcow2, raw, vmdk, "
                             "vhd, vhdx or vdi)")
    if info.get("encrypted"):
        raise ImageFileError(f"{label}: encrypted disk images are not supported")
    specific = (info.get("format-specific") or {}).get("data") or {}
    flat = fmt == "qcow2" and not info.get("backing-filename") and not specific.get("data-file")
    return Probe("machine", fmt, int(info.get("virtual-size") or 0), flat)


def sniff(path: str) -> Probe:
    """What a user's file is: a kernel, an initramfs or a disk (ImageFileError otherwise)."""
    head, size = _read_head(path)
    if _is_kernel(head):
        return Probe("kernel")
    if _is_initramfs(path, head):
        return Probe("ramdisk")
    return _disk_probe(path, head, size)


def sniff_disk(path: str, declared: str | None = None, label: str | None = None) -> Probe:
    """A disk to import (declared: qemu-img format the user named, or None to detect)."""
    head, size = _read_head(path)
    if _is_kernel(head) or head.startswith(_CPIO):
        raise ImageFileError(f"{label or path} is a Linux kernel or initramfs, not a disk image: "
                             "register it with RegisterImage instead")
    return _disk_probe(path, head, size, declared, label)


# ------------------------------------------------------------------------------- copies

def registered_dir(config) -> Path:
    path = Path(config.effective_image_dir).resolve() / REGISTERED_DIR
    path.mkdir(parents=True, exist_ok=True)
    return path


def _partial(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.partial")


def _run_qemu_img(args: list[str], cancelled: threading.Event | None) -> None:
    proc = subprocess.Popen(["qemu-img", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    while True:
        try:
            _, err = proc.communicate(timeout=1)
            break
        except subprocess.TimeoutExpired:
            if cancelled is not None and cancelled.is_set():
                proc.kill()
                proc.wait()
                raise Cancelled() from None
    if proc.returncode != 0:
        raise ImageFileError(f"qemu-img {args[0]} failed: {(err or '').strip()}")


def materialize(source: str, probe: Probe, dest: Path, cancelled: threading.Event | None = None) -> None:
    """Put the image's own copy of `source` at dest: qcow2 for disks (copied when already a
    self-contained qcow2, else converted), the file itself for kernels and ramdisks. The copy is
    checked to be what the source was probed to be."""
    tmp = _partial(dest)
    try:
        if probe.kind != "machine" or probe.flat:
            try:
                shutil.copyfile(source, tmp)
            except OSError as exc:
                raise ImageFileError(f"{source}: cannot be copied ({exc.strerror})") from None
        else:
            _run_qemu_img(["convert", "-U", "-f", probe.format, "-O", "qcow2", source, str(tmp)], cancelled)
        head, size = _read_head(str(tmp))
        ok = (_is_kernel(head) if probe.kind == "kernel" else
              _is_initramfs(str(tmp), head) if probe.kind == "ramdisk" else
              qemu_img_info(str(tmp), "qcow2").get("format") == "qcow2")
        if not ok:
            raise ImageFileError(f"{source} changed while it was being copied")
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _identity(config) -> str:
    """Which emulator a deregistration marker belongs to: its database."""
    return hashlib.sha256(config.effective_database_url.encode()).hexdigest()[:32]


def retire(factory, config, image_id: str, path: str) -> None:
    """After DeregisterImage: the image's copy goes as soon as no live instance uses it."""
    file = Path(path)
    if file.parent != registered_dir(config) or not file.name.startswith(image_id + "."):
        return  # not a copy of ours (e.g. a public image's file)
    if file.exists():
        file.with_name(file.name + _MARKER).write_text(_identity(config) + "\n")
    sweep(factory, config)


def sweep(factory, config) -> None:
    """Delete the copies of deregistered images that no live instance uses any more, and work
    files a stopped emulator left behind. Cheap; safe to call at any time (e.g. after an instance
    terminated)."""
    me = _identity(config)
    work = registered_dir(config)
    abandoned = time.time() - ABANDONED_SECONDS
    for scratch in work.glob(".*"):
        try:
            if not scratch.name.endswith(_MARKER) and scratch.stat().st_mtime < abandoned:
                scratch.unlink()
        except OSError:
            pass
    for marker in work.glob("*" + _MARKER):
        try:
            if marker.read_text().strip() != me:
                continue
        except OSError:
            continue
        file = marker.with_name(marker.name[:-len(_MARKER)])
        image_id = file.name.split(".", 1)[0]
        with factory() as session:
            if session.get(Image, image_id) is not None:
                marker.unlink(missing_ok=True)  # registered again? keep the file
                continue
            used = session.scalars(select(Instance.id).where(
                Instance.state != "terminated",
                or_(Instance.image_id == image_id, Instance.kernel_id == image_id,
                    Instance.ramdisk_id == image_id)).limit(1)).first()
        if used is None:
            file.unlink(missing_ok=True)
            marker.unlink(missing_ok=True)
            log.info("deleted %s: its image %s is deregistered and unused", file, image_id)


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
        materialize(source, probe, dest)
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

def _redacted(url: str) -> str:
    """A URL fit for a message: no query string (presigned URLs carry signatures there)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{':%d' % parts.port if parts.port else ''}{parts.path}"


def _loopback(host: str | None) -> bool:
    if host in (None, "", "localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def download(url: str, dest: Path, cancelled: threading.Event, progress: Callable[[float], None]) -> None:
    """Fetch url into dest, bounded in size and time. Proxies from the environment are used,
    except for this host's own addresses (no proxy can reach those)."""
    host = urlsplit(url).hostname
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({} if _loopback(host) else None))
    request = urllib.request.Request(url, headers={"User-Agent": "ec2emu-import-image/1"})
    shown = _redacted(url)
    deadline = time.monotonic() + DOWNLOAD_DEADLINE
    got = 0
    try:
        with opener.open(request, timeout=DOWNLOAD_SOCKET_TIMEOUT) as response, open(dest, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            if total and total > MAX_DOWNLOAD_BYTES:
                raise ImageFileError(f"{shown} is {total} bytes: more than the {MAX_DOWNLOAD_BYTES} "
                                     "bytes an import may download")
            while True:
                chunk = response.read(1 << 20)
                if not chunk:
                    break
                if cancelled.is_set():
                    raise Cancelled()
                if time.monotonic() > deadline:
                    raise ImageFileError(f"downloading {shown} took more than {DOWNLOAD_DEADLINE} s")
                got += len(chunk)
                if got > MAX_DOWNLOAD_BYTES:
                    raise ImageFileError(f"{shown} is more than the {MAX_DOWNLOAD_BYTES} bytes an "
                                         "import may download")
                out.write(chunk)
                if total:
                    progress(got / total)
    except urllib.error.HTTPError as exc:
        raise ImageFileError(f"Unable to download {shown}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise ImageFileError(f"Unable to download {shown}: {exc.reason}") from None
    except (OSError, ValueError) as exc:  # timeouts, resets, bad URLs
        raise ImageFileError(f"Unable to download {shown}: {exc}") from None
    if total and got != total:
        raise ImageFileError(f"Unable to download {shown}: the connection closed after {got} of "
                             f"{total} bytes")


def _is_ova(path: str) -> bool:
    head, _ = _read_head(path)
    return head[257:262] == b"ustar"


def extract_ova_disk(path: str, dest: Path, cancelled: threading.Event) -> None:
    """The first VMDK inside an OVA (a tar of an OVF descriptor and its disks)."""
    try:
        with tarfile.open(path) as tar:
            member = next((m for m in tar if m.isfile() and m.name.lower().endswith(".vmdk")), None)
            if member is None:
                raise ImageFileError("the OVA holds no .vmdk disk")
            with tar.extractfile(member) as src, open(dest, "wb") as out:
                while chunk := src.read(1 << 20):
                    if cancelled.is_set():
                        raise Cancelled()
                    out.write(chunk)
    except (tarfile.TarError, OSError) as exc:
        raise ImageFileError(f"the OVA cannot be read: {exc}") from None


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
    scratch: list[Path] = []
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
        for path in scratch:
            path.unlink(missing_ok=True)
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
    job.step("validating", 2)
    path = local_path(source)
    if path is None:
        tmp = work / f".{job.task_id}.download"
        scratch.append(tmp)
        download(source, tmp, job.cancelled, job.advance(2, 40))
        path = str(tmp)
    else:
        _read_head(path)  # a clear message if it is missing or unreadable
    if declared == "OVA" or (declared is None and _is_ova(path)):
        tmp = work / f".{job.task_id}.vmdk"
        scratch.append(tmp)
        extract_ova_disk(path, tmp, job.cancelled)
        path, declared = str(tmp), "VMDK"
    probe = sniff_disk(path, IMPORT_FORMATS[declared] if declared else None, _shown_source(source))
    size = os.path.getsize(path)
    job.step("converting", 45)
    with job.factory() as session:
        task = session.get(ImportImageTask, job.task_id)
        task.disk = {**(task.disk or {}), "Format": declared or _FORMAT_NAMES[probe.format],
                     "DiskImageSize": float(size)}
        session.commit()
    image_id = new_id("ami")
    dest = work / f"{image_id}.qcow2"
    materialize(path, probe, dest, job.cancelled)
    try:
        job.step("preparing ami", 90)
        with job.factory() as session:
            task = session.get(ImportImageTask, job.task_id)
            if task is None or task.status != "active":
                raise Cancelled()
            device = (task.disk or {}).get("DeviceName") or "/dev/sda1"
            description = task.description or f"Imported by ec2emu from {_shown_source(task.source)}"
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


def _shown_source(source: str) -> str:
    return source if local_path(source) is not None else _redacted(source)


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
        local = local_path(url)
    except ImageFileError as exc:
        raise InvalidParameterValue(exc.message) from None
    if local is None:
        parts = urlsplit(url)
        if parts.scheme == "s3":
            raise Unsupported("Importing from S3 is not supported: this emulator has no S3. Give a host "
                              "path, a file:// URL or an http(s):// URL.")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidParameterValue(f"Value ({_redacted(url) if parts.scheme else url}) for parameter "
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
