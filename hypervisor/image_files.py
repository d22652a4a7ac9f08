"""The host side of users' image files: what a file is, and putting an image's own copy in place.

Users bring their own images, as on AWS: a cloud disk (qcow2, raw, VMDK, VHD, VHDX, VDI, OVA), a
Linux kernel (bzImage) or an initramfs, as a host path, a file:// URL or (ImportImage) an
http(s):// URL. This module knows files, qemu-img, HTTP and tar; it knows no database: the
emulator (emulator/image_import.py) decides what an image is and records it, and calls these
from its host actions, never on the API's event loop. The one exception is `kind_of`, a bounded
read of a file's head cheap enough for a request (RegisterImage's image id prefix depends on it).

Every image file is a private copy, <image dir>/registered/<image id>.<ext>, so later changes to
the user's file never reach the image. Work in progress is a dot-file beside it, renamed into place
when complete: every operation here can simply be run again after a crash. A deregistered image's
copy is marked by a `<file>.deregistered` file carrying the identity of the emulator that
deregistered it (its database), so emulators sharing an image dir never delete each other's files;
the emulator deletes the copy once no instance uses it (`retired_copies`).
"""
from __future__ import annotations

import bz2
import ipaddress
import json
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
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .host import HostError, run

REGISTERED_DIR = "registered"
GIB = 1 << 30
MAX_DOWNLOAD_BYTES = 64 * GIB  # a bigger download is refused
DOWNLOAD_SOCKET_TIMEOUT = 60  # seconds without a byte from the server
DOWNLOAD_DEADLINE = 4 * 3600  # seconds for a whole download
QEMU_IMG_INFO_TIMEOUT = 60
ABANDONED_SECONDS = 24 * 3600  # a work file untouched this long belongs to no running job
MARKER = ".deregistered"

# ImportImage's DiskContainer.Format -> qemu-img's format name (None: a tar holding a VMDK).
IMPORT_FORMATS = {"RAW": "raw", "VMDK": "vmdk", "VHD": "vpc", "VHDX": "vhdx", "OVA": None,
                  "QCOW2": "qcow2", "VDI": "vdi"}
FORMAT_NAMES = {v: k for k, v in IMPORT_FORMATS.items() if v}
DISK_FORMATS = frozenset(FORMAT_NAMES)  # what qemu-img converts for us
EXTENSIONS = {"machine": "qcow2", "kernel": "vmlinuz", "ramdisk": "initrd.img"}


class ImageFileError(Exception):
    """A file that cannot become an image, with a message for the user."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class Cancelled(Exception):
    pass


# ------------------------------------------------------------------------------ names of files

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


def url_scheme(url: str) -> tuple[str, str | None]:
    """(scheme, host name) of a URL: ImportImage takes http(s) URLs with a host."""
    parts = urlsplit(url)
    return parts.scheme, parts.hostname


def redacted(url: str) -> str:
    """A URL fit for a message: no query string (presigned URLs carry signatures there)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{':%d' % parts.port if parts.port else ''}{parts.path}"


def shown(source: str) -> str:
    """How messages name an import's source: a path as it is, a URL redacted."""
    return source if local_path(source) is not None else redacted(source)


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
        return EXTENSIONS[self.kind]


_HEAD = 0x10048  # enough to see every signature below (btrfs sits at 64 KiB)
KIND_HEAD = 64 * 1024  # what kind_of reads: a kernel's header and a ramdisk's first bytes


def _read_head(path: str, limit: int = _HEAD) -> tuple[bytes, int]:
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
            return f.read(limit), st.st_size
    except OSError as exc:
        raise ImageFileError(f"{path}: cannot be read ({exc.strerror})") from None


def _is_kernel(head: bytes) -> bool:
    return head[0x202:0x206] == b"HdrS"  # the x86 boot protocol header of a bzImage


_CPIO = (b"070701", b"070702", b"070707")
_INNER = 512  # decompressed bytes looked at: enough for a cpio magic, bounded for any input


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
    try:  # (bounded output: a head of zeros would otherwise inflate a thousandfold)
        inner = opener().decompress(head, _INNER)[:6]
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
        out = run(cmd, timeout=QEMU_IMG_INFO_TIMEOUT)
    except FileNotFoundError:
        raise ImageFileError("qemu-img is not installed on the emulator's host") from None
    except subprocess.TimeoutExpired:
        raise ImageFileError(f"{path}: qemu-img info took too long") from None
    except HostError as exc:
        raise ImageFileError(f"{path}: not a disk image qemu-img can read ({exc.stderr.strip()})") from None
    return json.loads(out)


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
            raise ImageFileError(f"{label} is not a {FORMAT_NAMES.get(declared, declared)} disk "
                                 f"(qemu-img reads it as {FORMAT_NAMES.get(fmt, fmt)})")
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


def kind_of(path: str) -> str:
    """'kernel', 'ramdisk' or 'machine' (anything else: whether it really is a disk is for
    `sniff`), from at most KIND_HEAD bytes of the file's head: no command, cheap enough for a
    request. ImageFileError for a missing, unreadable or irregular file, or a compressed file
    that holds no initramfs."""
    head, _ = _read_head(path, KIND_HEAD)
    if _is_kernel(head):
        return "kernel"
    if _is_initramfs(path, head):
        return "ramdisk"
    return "machine"


def sniff(path: str) -> Probe:
    """What a user's file is: a kernel, an initramfs or a disk (ImageFileError otherwise).
    Runs qemu-img for disks: host work, never in a request."""
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


def check_readable(path: str) -> None:
    """ImageFileError with a clear message if path is missing, irregular or unreadable."""
    _read_head(path, 0)


def is_ova(path: str) -> bool:
    head, _ = _read_head(path, 512)
    return head[257:262] == b"ustar"


# ------------------------------------------------------------------------------- copies

def registered_dir(image_dir: str) -> Path:
    """<image dir>/registered, where the images' own copies live (made if missing)."""
    path = Path(image_dir).resolve() / REGISTERED_DIR
    path.mkdir(parents=True, exist_ok=True)
    return path


def _partial(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.partial")


def _run_qemu_img(args: list[str], cancelled: threading.Event | None) -> None:
    """qemu-img, killed within a second of `cancelled` being set (conversions take minutes)."""
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
    checked to be what the source was probed to be. Run again, it makes the copy again."""
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


def remove(*paths: Path) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


# ----------------------------------------------------------------------- deregistered copies

def mark_retired(work: Path, image_id: str, path: str, identity: str) -> bool:
    """Mark `path`, the copy of a deregistered image, for deletion by its emulator (`identity`).
    False when it is no copy of ours (e.g. a public image's file): leave it alone."""
    file = Path(path)
    if file.parent != work or not file.name.startswith(image_id + "."):
        return False
    if file.exists():
        file.with_name(file.name + MARKER).write_text(identity + "\n")
    return True


@dataclass(frozen=True)
class RetiredCopy:
    """The copy of a deregistered image, waiting until no instance uses it."""
    image_id: str
    file: Path
    marker: Path

    def keep(self) -> None:
        """The image is back (registered again): the file is no longer to be deleted."""
        self.marker.unlink(missing_ok=True)

    def delete(self) -> None:
        self.file.unlink(missing_ok=True)
        self.marker.unlink(missing_ok=True)


def retired_copies(work: Path, identity: str) -> list[RetiredCopy]:
    """The copies this emulator (`identity`) marked as deregistered."""
    out = []
    for marker in work.glob("*" + MARKER):
        try:
            if marker.read_text().strip() != identity:
                continue
        except OSError:
            continue
        file = marker.with_name(marker.name[:-len(MARKER)])
        out.append(RetiredCopy(file.name.split(".", 1)[0], file, marker))
    return out


def clean_scratch(work: Path) -> None:
    """Delete work files a stopped emulator left behind (untouched for ABANDONED_SECONDS)."""
    abandoned = time.time() - ABANDONED_SECONDS
    for scratch in work.glob(".*"):
        try:
            if not scratch.name.endswith(MARKER) and scratch.stat().st_mtime < abandoned:
                scratch.unlink()
        except OSError:
            pass


# ------------------------------------------------------------------------------ ImportImage's

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
    name = redacted(url)
    deadline = time.monotonic() + DOWNLOAD_DEADLINE
    got = 0
    try:
        with opener.open(request, timeout=DOWNLOAD_SOCKET_TIMEOUT) as response, open(dest, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            if total and total > MAX_DOWNLOAD_BYTES:
                raise ImageFileError(f"{name} is {total} bytes: more than the {MAX_DOWNLOAD_BYTES} "
                                     "bytes an import may download")
            while True:
                chunk = response.read(1 << 20)
                if not chunk:
                    break
                if cancelled.is_set():
                    raise Cancelled()
                if time.monotonic() > deadline:
                    raise ImageFileError(f"downloading {name} took more than {DOWNLOAD_DEADLINE} s")
                got += len(chunk)
                if got > MAX_DOWNLOAD_BYTES:
                    raise ImageFileError(f"{name} is more than the {MAX_DOWNLOAD_BYTES} bytes an "
                                         "import may download")
                out.write(chunk)
                if total:
                    progress(got / total)
    except urllib.error.HTTPError as exc:
        raise ImageFileError(f"Unable to download {name}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise ImageFileError(f"Unable to download {name}: {exc.reason}") from None
    except (OSError, ValueError) as exc:  # timeouts, resets, bad URLs
        raise ImageFileError(f"Unable to download {name}: {exc}") from None
    if total and got != total:
        raise ImageFileError(f"Unable to download {name}: the connection closed after {got} of "
                             f"{total} bytes")


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
