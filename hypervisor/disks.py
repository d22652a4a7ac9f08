"""Disks as qcow2 files, made with qemu-img: blank, cloned (a copy-on-write overlay on an image
or snapshot), resized, snapshotted (a standalone copy), deleted; LUKS-encrypted when given a key.

Layout under the store's root: `volumes/<disk id>.qcow2`, `snapshots/<snapshot id>.qcow2`. Files
are made under `.partial` names and renamed into place, so every operation can simply be run
again after a crash. A deleted snapshot that disks still use as their backing file stays in place, marked by an
empty `snapshots/<id>.deleted` (clones refuse it), until the last of those disks is deleted. Keys are handed to qemu-img in a 0600 file on a
tmpfs, never on a command line.
"""
from __future__ import annotations

import base64
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .host import HostError, run

GIB = 2**30
LUKS_ITER_MS = 100   # PBKDF time per open: qemu's default 2 s would cost 2 CPU-s per attach here
SECRET_ID = "sec0"


def _opts(path: Path, key_given: bool) -> list[str]:
    """How qemu-img opens an existing image (encrypted ones need the secret)."""
    if not key_given:
        return [str(path)]
    return ["--image-opts", f"driver=qcow2,file.filename={str(path).replace(',', ',,')},"
                            f"encrypt.key-secret={SECRET_ID}"]


class Disks:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()
        for sub in ("volumes", "snapshots"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def path(self, disk_id: str) -> Path:
        return self.root / "volumes" / f"{disk_id}.qcow2"

    def snapshot_path(self, snapshot_id: str) -> Path:
        return self.root / "snapshots" / f"{snapshot_id}.qcow2"

    def _deleted_mark(self, snapshot_id: str) -> Path:
        return self.root / "snapshots" / f"{snapshot_id}.deleted"

    # ------------------------------------------------------------------------------ qemu-img

    @contextmanager
    def _secret(self, *keys: bytes | None):
        """--object arguments for the keys given (the first one as SECRET_ID, a second as sec1)."""
        args, files = [], []
        try:
            for n, key in enumerate(k for k in keys if k is not None):
                fd, name = tempfile.mkstemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
                with os.fdopen(fd, "w") as f:
                    f.write(base64.b64encode(key).decode())
                files.append(name)
                args += ["--object", f"secret,id=sec{n},file={name},format=base64"]
            yield args
        finally:
            for name in files:
                os.unlink(name)

    @staticmethod
    def _img(*args: str, luks: bool = False) -> str:
        """qemu-img; LUKS key derivation benchmarks the CPU and fails now and then ("Unable to get
        accurate CPU usage", FACTS.md): such runs are retried."""
        for attempt in range(5):
            try:
                return run(["qemu-img", *args], timeout=600)
            except HostError as exc:
                if not (luks and "accurate CPU usage" in exc.stderr) or attempt == 4:
                    raise
        raise AssertionError("unreachable")

    def info(self, path: Path) -> dict:
        """qemu-img info (without opening an encrypted payload; -U: a running guest may hold it)."""
        return json.loads(self._img("info", "-U", "--output=json", str(path)))

    @staticmethod
    def _luks(key: bytes | None, secret: str = SECRET_ID) -> list[str]:
        return ["-o", f"encrypt.format=luks,encrypt.key-secret={secret},encrypt.iter-time={LUKS_ITER_MS}"] \
            if key is not None else []

    def _make(self, final: Path, build) -> None:
        """Run build(partial path) unless `final` exists, then rename the result into place."""
        if final.exists():
            return
        partial = final.with_name(final.name + ".partial")
        partial.unlink(missing_ok=True)
        build(partial)
        os.replace(partial, final)

    # ------------------------------------------------------------------------------ operations

    def create(self, disk_id: str, size_gib: int, key: bytes | None = None) -> None:
        """See Driver.create_disk."""
        if size_gib < 1:
            raise ValueError("a disk has at least 1 GiB")

        def build(partial: Path) -> None:
            with self._secret(key) as secret:
                self._img("create", "-q", "-f", "qcow2", *secret, *self._luks(key), str(partial),
                          str(size_gib * GIB), luks=key is not None)
        self._make(self.path(disk_id), build)

    def clone(self, disk_id: str, size_gib: int, *, image_path: str | None = None,
              snapshot_id: str | None = None, key: bytes | None = None,
              source_key: bytes | None = None) -> None:
        """See Driver.clone_disk."""
        if (image_path is None) == (snapshot_id is None):
            raise ValueError("clone from exactly one of image_path and snapshot_id")
        if self.path(disk_id).exists():
            return
        source = Path(image_path).resolve() if image_path else self.snapshot_path(snapshot_id)
        if not source.exists() or (snapshot_id and self._deleted_mark(snapshot_id).exists()):
            raise LookupError(f"no {'image file' if image_path else 'snapshot'} {image_path or snapshot_id}")
        info = self.info(source)
        if size_gib * GIB < info["virtual-size"]:
            raise ValueError(f"{size_gib} GiB is smaller than the source ({info['virtual-size']} bytes)")
        encrypted_source = bool(info.get("encrypted"))
        if encrypted_source and source_key is None:
            raise ValueError(f"{source.name} is encrypted: source_key needed")

        def overlay(partial: Path) -> None:
            self._overlay(partial, source, info["format"], size_gib * GIB, key)

        def copy(partial: Path) -> None:
            # An encrypted backing file would need its own key at every open: copy instead.
            with self._secret(source_key, key) as secret:  # sec0: the source's key, sec1: the new one
                self._img("convert", *secret, *_opts(source, True), "-O", "qcow2",
                          *self._luks(key, "sec1"), str(partial), luks=True)
            with self._secret(key) as secret:
                self._img("resize", "-q", *secret, *_opts(partial, key is not None), str(size_gib * GIB),
                          luks=key is not None)
        self._make(self.path(disk_id), copy if encrypted_source else overlay)

    def overlay(self, path: str | os.PathLike, backing: str | os.PathLike) -> None:
        """A qcow2 overlay of a qcow2 file's size at `path` (an instance's root disk), unless it
        exists. The backing path is made absolute (a relative one resolves from the overlay's
        directory) and its format given (`-F` is required: FACTS.md)."""
        backing = Path(backing).resolve()
        if not backing.exists():
            raise LookupError(f"image disk {backing} is missing: run `ec2emu images build`")
        self._make(Path(path), lambda partial: self._overlay(partial, backing, "qcow2", None, None))

    def _overlay(self, partial: Path, backing: Path, fmt: str, size: int | None, key: bytes | None) -> None:
        with self._secret(key) as secret:
            self._img("create", "-q", "-f", "qcow2", "-F", fmt, "-b", str(backing), *secret, *self._luks(key),
                      str(partial), *([str(size)] if size else []), luks=key is not None)

    def resize(self, disk_id: str, size_gib: int, key: bytes | None = None) -> None:
        """See Driver.resize_disk (offline; the driver resizes attached disks through libvirt)."""
        current = self.size(disk_id)
        if size_gib * GIB < current:
            raise ValueError(f"{disk_id} has {current // GIB} GiB: disks only grow")
        if size_gib * GIB == current:
            return
        with self._secret(key) as secret:
            self._img("resize", "-q", *secret, *_opts(self.path(disk_id), key is not None), str(size_gib * GIB),
                      luks=key is not None)

    def size(self, disk_id: str) -> int:
        """Virtual size in bytes; LookupError if there is no such disk."""
        if not self.path(disk_id).exists():
            raise LookupError(f"no disk {disk_id}")
        return self.info(self.path(disk_id))["virtual-size"]

    def snapshot(self, disk_id: str, snapshot_id: str, key: bytes | None = None) -> None:
        """See Driver.snapshot_disk: a flattened copy (-U: also of a disk a guest has open, which
        is then only crash-consistent)."""
        if not self.path(disk_id).exists():
            raise LookupError(f"no disk {disk_id}")

        def build(partial: Path) -> None:
            with self._secret(key) as secret:
                self._img("convert", "-U", *secret, *_opts(self.path(disk_id), key is not None), "-O", "qcow2",
                          *self._luks(key), str(partial), luks=key is not None)
        self._make(self.snapshot_path(snapshot_id), build)

    def copy_snapshot(self, snapshot_id: str, new_snapshot_id: str, key: bytes | None = None,
                      new_key: bytes | None = None) -> None:
        """See Driver.copy_snapshot: a flattened copy, re-encrypted with new_key if given."""
        source = self.snapshot_path(snapshot_id)
        if not source.exists() or self._deleted_mark(snapshot_id).exists():
            raise LookupError(f"no snapshot {snapshot_id}")

        def build(partial: Path) -> None:
            with self._secret(key, new_key) as secret:  # sec0: the source's key, sec1: the new one
                self._img("convert", *secret, *_opts(source, key is not None), "-O", "qcow2",
                          *self._luks(new_key, "sec1" if key is not None else SECRET_ID), str(partial),
                          luks=key is not None or new_key is not None)
        self._make(self.snapshot_path(new_snapshot_id), build)

    def delete(self, disk_id: str) -> None:
        """See Driver.delete_disk (the driver checks that no guest has it)."""
        self.path(disk_id).unlink(missing_ok=True)
        self._sweep()

    def delete_snapshot(self, snapshot_id: str) -> None:
        """See Driver.delete_snapshot."""
        if self.snapshot_path(snapshot_id).exists():
            self._deleted_mark(snapshot_id).touch()
            self._sweep()

    def _backing_users(self, path: Path) -> list[Path]:
        users = []
        for disk in (self.root / "volumes").glob("*.qcow2"):
            if self.info(disk).get("backing-filename") == str(path):
                users.append(disk)
        return users

    def _sweep(self) -> None:
        """Remove deleted snapshots that no disk uses any more (the file first: a crash between
        the two leaves a mark without a file, which is harmless)."""
        for mark in (self.root / "snapshots").glob("*.deleted"):
            path = self.snapshot_path(mark.name.removesuffix(".deleted"))
            if not self._backing_users(path):
                path.unlink(missing_ok=True)
                mark.unlink()
