"""Booted checkpoints: guests restored from a saved boot instead of booting from nothing.

Under TCG most of a guest's start is the kernel's own boot. A checkpoint is that boot done once
per (kernel, ramdisk, memory, vCPUs, accelerator, QEMU and libvirt): a guest started with
`ec2emu.checkpoint` on its command line runs our initramfs to the point where it says
"checkpoint" on the console (guest/initramfs/init): every driver loaded but the disk's and the
RNG's, no NIC, a disk device no driver has looked at (a placeholder file behind it). libvirt
then saves it (virDomainSave): one file, the domain's XML in a header and QEMU's state after it.

An instance starts by restoring a copy of that file whose header names the instance: its name,
uuid, console log and root disk (the device the checkpoint has, now backed by the instance's
file). Given as a restore's replacement XML, libvirt would refuse the new uuid (a restore may
change host-side details only), so the copy is written with the instance's XML in its header;
QEMU's part is unchanged. Then the instance's NICs and other disks are hot-plugged, and the
initramfs goes on: its NIC appears, it loads the disk and RNG drivers (so the kernel's random
generator becomes ready only now, seeded from the host through virtio-rng), steps the clock from
the clock chip and mounts the root.

What every restored guest shares: the kernel's memory at the checkpoint (KASLR offsets, the
SMBIOS tables it read at boot: product uuid and serial of the checkpoint, not the instance).
What is its own: MAC, addresses, disks, host keys (made on its disk after the restore), random
numbers, boot id, clock, and all it reads from the metadata service.

Checkpoints are built lazily (the first instance of a kind boots cold meanwhile), in the
background, named by a hash of their inputs (new inputs: a new checkpoint), and kept in one
directory that several state directories may share. A ramdisk that never says "checkpoint"
(any but ours) is recorded as unsupported and its instances boot cold, as before.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import struct
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Callable
from xml.etree.ElementTree import Element, fromstring, tostring

log = logging.getLogger(__name__)

FORMAT = 2  # bump when what a checkpoint holds changes: old files are then never used (2: a pty serial)
FLAG = "ec2emu.checkpoint"
MARKER = b"ec2emu-initrd: checkpoint entropy="
BUILD_TIMEOUT = 60.0  # seconds for the boot to reach the marker (a busy 2-core machine: ~5 s)
TIMED_OUT = "in"  # how the reason for a build out of time starts
RETRY_AFTER = 3600.0  # seconds before a build that ran out of time is tried again
# The kernel's random generator is ready once 256 bits were credited: a checkpoint taken after
# that would hand every copy the same generator state. (Without virtio-rng's driver, which the
# initramfs loads after the checkpoint, it is far from it: ~0-20 bits from interrupts.)
READY_BITS = 256

# libvirt's save file (src/qemu/qemu_saveimage.h, version 2): a header of 16-byte magic and 19
# 32-bit words (version, data_len, was_running, format, cookieOffset, 14 unused); then data_len
# bytes: the domain XML, NUL, a "cookie" XML, NUL, zeros (libvirt leaves 64 KiB of room so the
# XML may be edited in place); then QEMU's migration stream.
MAGIC = b"LibvirtQemudSave"
HEADER = struct.Struct("<16s5I56x")


class CheckpointError(Exception):
    pass


def read_header(path: Path) -> tuple[tuple, str, bytes]:
    """(header fields, domain XML, cookie bytes including its NUL) of a libvirt save file."""
    with open(path, "rb") as f:
        fields = HEADER.unpack(f.read(HEADER.size))
        magic, version, data_len, _running, fmt, cookie_offset = fields
        if magic != MAGIC or version != 2 or fmt != 0:
            raise CheckpointError(f"{path}: not an uncompressed libvirt save file (version 2)")
        data = f.read(data_len)
    xml_end = cookie_offset or data.index(b"\0")
    xml = data[:xml_end].split(b"\0", 1)[0].decode()
    cookie = data[xml_end:].split(b"\0", 1)[0] + b"\0" if cookie_offset else b""
    return fields, xml, cookie


def write_copy(checkpoint: Path, dest: Path, xml: str) -> None:
    """A copy of a save file with `xml` as its domain XML (QEMU's state unchanged)."""
    fields, _, cookie = read_header(checkpoint)
    magic, version, data_len, running, fmt, _ = fields
    body = xml.encode() + b"\0"
    if len(body) + len(cookie) > data_len:
        raise CheckpointError(f"{checkpoint}: no room for the instance's XML in the header")
    header = HEADER.pack(magic, version, data_len, running, fmt, len(body) if cookie else 0)
    partial = dest.with_name(dest.name + ".partial")
    with open(checkpoint, "rb") as src, open(partial, "wb") as out:
        out.write(header + body + cookie + b"\0" * (data_len - len(body) - len(cookie)))
        offset, size = HEADER.size + data_len, os.fstat(src.fileno()).st_size
        out.flush()
        while offset < size:  # in the kernel (a reflink where the file system can)
            offset += os.copy_file_range(src.fileno(), out.fileno(), size - offset, offset) or size
    os.replace(partial, dest)


def instance_xml(saved_xml: str, *, name: str, uuid_: str, title: str, console_log: str,
                 root_disk: Element) -> str:
    """The checkpoint's saved (live) XML made the instance's: its name, uuid (also the SMBIOS
    one libvirt passes again; the guest keeps the one it read at the checkpoint), console file
    and root disk (the instance's <disk>, keeping the checkpoint disk's PCI address and alias)."""
    d = fromstring(saved_xml)
    d.attrib.pop("id", None)
    d.find("name").text = name
    d.find("uuid").text = uuid_
    if d.find("title") is not None:
        d.find("title").text = title
    for entry in d.iterfind("sysinfo/system/entry"):
        if entry.get("name") in ("serial", "uuid"):
            entry.text = uuid_
    for device in ("serial", "console"):  # (libvirt writes the serial port as both)
        for dev in d.iterfind(f"devices/{device}"):
            if dev.get("type") == "pty":  # the restore makes a new pty; its output goes to our log
                dev.attrib.pop("tty", None)
                for source in dev.findall("source"):
                    dev.remove(source)
                for log_ in dev.iterfind("log"):
                    log_.set("file", console_log)
            else:
                for source in dev.iterfind("source"):
                    source.set("path", console_log)
    devices = d.find("devices")
    old = [x for x in devices.iterfind("disk") if x.find("target").get("dev") == "vda"]
    if len(old) != 1:
        raise CheckpointError("the checkpoint has no single vda disk")
    new = fromstring(tostring(root_disk))
    for tag in ("address", "alias"):
        for x in new.findall(tag):
            new.remove(x)
        kept = old[0].find(tag)
        if kept is not None:
            new.append(kept)
    index = list(devices).index(old[0])
    devices.remove(old[0])
    devices.insert(index, new)
    return tostring(d, encoding="unicode")


def _file_identity(path: str) -> list:
    st = os.stat(path)
    return [os.path.realpath(path), st.st_size, st.st_mtime_ns]


class Checkpoints:
    """The checkpoint files of one directory, built on demand in background threads.

    `domain_xml(name, placeholder, console_log)` makes the checkpoint boot's domain XML (the
    driver's, so that it has the same devices as an instance's, less NICs and other disks)."""

    def __init__(self, directory: Path, conn: Callable, owner: str = "ec2emu"):
        self.dir = Path(directory)
        self.conn = conn
        self.domain_prefix = f"{owner}-checkpoint-"  # the build domains' names: one emulator's own
        self._building: set[str] = set()
        self._lock = threading.Lock()
        self._qemu_identity: list | None = None

    def key(self, kernel: str, ramdisk: str, memory_mib: int, vcpus: int, domain_type: str,
            tb_cache_mib: int, cmdline: str, instance_type: str) -> str:
        """The name of the checkpoint for these inputs. The instance type is one because the
        guest keeps the SMBIOS product name (AWS: the instance type) it read at the checkpoint."""
        if self._qemu_identity is None:
            qemu = shutil.which("qemu-system-x86_64") or "qemu-system-x86_64"
            self._qemu_identity = [_file_identity(qemu) if os.path.exists(qemu) else qemu,
                                   self.conn().getLibVersion()]
        inputs = [FORMAT, _file_identity(kernel), _file_identity(ramdisk), memory_mib, vcpus,
                  domain_type, tb_cache_mib, cmdline, instance_type, self._qemu_identity]
        return hashlib.sha256(json.dumps(inputs).encode()).hexdigest()[:24]

    def path(self, key: str) -> Path:
        return self.dir / f"{key}.save"

    def console_path(self, key: str) -> Path:
        """The checkpoint boot's console output, up to its marker line."""
        return self.dir / f"{key}.console"

    def ready(self, key: str) -> Path | None:
        """The checkpoint file for `key` if it is built, else None."""
        path = self.path(key)
        return path if path.exists() else None

    def unsupported(self, key: str) -> str | None:
        """Why `key` cannot be made, if a build found out. A build that ran out of time is tried
        again an hour later (a busy machine may have been slow); the other reasons stay."""
        marker = self.dir / f"{key}.unsupported"
        try:
            why, age = marker.read_text(), time.time() - marker.stat().st_mtime
        except FileNotFoundError:
            return None
        return None if why.startswith(TIMED_OUT) and age > RETRY_AFTER else why

    def build_soon(self, key: str, domain_xml: Callable[[str, str, str], str]) -> None:
        """Start building `key` in a background thread, unless it is built, being built here,
        or known unsupported."""
        if self.path(key).exists() or self.unsupported(key) is not None:
            return
        with self._lock:
            if key in self._building:
                return
            self._building.add(key)
        threading.Thread(target=self._build_logged, args=(key, domain_xml), daemon=True,
                         name=f"checkpoint-{key[:8]}").start()

    def _build_logged(self, key: str, domain_xml) -> None:
        try:
            self.build(key, domain_xml)
        except Exception:
            log.exception("checkpoint %s: the build failed (instances boot cold)", key)
        finally:
            with self._lock:
                self._building.discard(key)

    def build(self, key: str, domain_xml: Callable[[str, str, str], str]) -> bool:
        """Boot the checkpoint guest, wait for its marker, save it. True if a checkpoint was
        made; False (and recorded) when the ramdisk does not support it."""
        import libvirt
        self.dir.mkdir(parents=True, exist_ok=True)
        work = self.dir / f"{key}.{os.getpid()}.{threading.get_ident()}"
        work.mkdir()
        try:
            placeholder = work / "placeholder.qcow2"
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(placeholder), "1M"], check=True)
            console = work / "console.log"
            name = f"{self.domain_prefix}{key[:12]}-{uuid.uuid4().hex[:8]}"
            started = time.monotonic()
            dom = self.conn().createXML(domain_xml(name, str(placeholder), str(console)), 0)
            try:
                entropy = self._wait_for_marker(console, dom)
                if entropy is None:
                    why = (f"{TIMED_OUT} {BUILD_TIMEOUT:.0f} s, its ramdisk never said it was at a "
                           f"checkpoint (not ec2emu's initramfs?)")
                elif entropy >= READY_BITS:
                    why = f"its kernel's random generator was ready at the checkpoint ({entropy} bits)"
                else:
                    why = None
                if why:
                    (self.dir / f"{key}.unsupported").write_text(why + "\n")
                    log.warning("checkpoint %s: not made: %s; its instances boot cold", key, why)
                    return False
                saved = work / "checkpoint.save"
                dom.save(str(saved))  # pauses, writes, and ends the domain
                dom = None
                # What the boot printed: each restored guest's console starts with it, as if
                # it had booted (AWS's console output shows the kernel's boot).
                boot_log = console.read_bytes()
                end = boot_log.find(b"\n", boot_log.find(MARKER)) + 1
                self.console_path(key).write_bytes(boot_log[:end])
            finally:
                if dom is not None:
                    try:
                        dom.destroy()
                    except libvirt.libvirtError:
                        pass
            read_header(saved)  # a file we can rewrite, or CheckpointError
            os.replace(saved, self.path(key))  # last: the console file is there once it is
            log.info("checkpoint %s made in %.1f s (%d MiB)", key, time.monotonic() - started,
                     self.path(key).stat().st_size >> 20)
            return True
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def remove_leftovers(self) -> None:
        """Build domains of this emulator's that outlived their build (it was killed meanwhile):
        they would wait in their initramfs for ever."""
        import libvirt
        for dom in self.conn().listAllDomains(0):
            if dom.name().startswith(self.domain_prefix):
                log.warning("destroying %s, a checkpoint build left running", dom.name())
                try:
                    dom.destroy()
                except libvirt.libvirtError:
                    pass
        # and build directories nobody finished (a live build's is younger than its timeout)
        for work in self.dir.iterdir() if self.dir.exists() else []:
            if work.is_dir() and time.time() - work.stat().st_mtime > 2 * BUILD_TIMEOUT:
                shutil.rmtree(work, ignore_errors=True)

    @staticmethod
    def _wait_for_marker(console: Path, dom) -> int | None:
        deadline = time.monotonic() + BUILD_TIMEOUT
        while time.monotonic() < deadline:
            try:
                out = console.read_bytes()
            except FileNotFoundError:
                out = b""
            at = out.find(MARKER)
            if at >= 0:
                line = out[at + len(MARKER):].split(b"\n", 1)
                if len(line) == 2:  # the whole line is there ("N uptime=S")
                    try:
                        return int(line[0].split()[0])
                    except (ValueError, IndexError):
                        return READY_BITS
            if not dom.isActive():
                return None
            time.sleep(0.02)
        return None
