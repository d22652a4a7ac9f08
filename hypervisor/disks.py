"""Disks and snapshots as chains of qcow2 layers, made with qemu-img; LUKS-encrypted when given a key.

Layout under the store's root:

* `layers/<name>.qcow2`: every qcow2 file of the store. A layer's backing file is another layer
  (or an image file outside the store), always by its absolute path, and layers never move, so
  a chain read by any process (a running guest's QEMU too) stays valid.
* `volumes/<disk id>.qcow2` -> the disk's active layer (a symlink), the one its guest writes.
* `snapshots/<snapshot id>.qcow2` -> the snapshot's layer (a symlink), frozen for ever.
* `images/<name>.qcow2` -> `layers/image~<file stem>~<version>.<fmt>`: the store's own frozen
  copy of an image file that disks were cloned from (and instance-store roots built on). Image
  files outside the store are replaced in place (`ec2emu images build`) or deleted (an import's
  sweep); a disk built on one directly would change or break with it. The version is the file's
  identity (inode, size, mtime): a rebuilt file gets a copy of its own, old ones stay for the
  disks on them. Kept for good (their names are never swept).
* `layers/<disk id>[~<n>].raw`: a shared disk (Multi-Attach): one sparse raw file, no chain.
  Two QEMUs cannot share a qcow2 writer (its metadata would be corrupted, and QEMU's image lock
  refuses it: FACTS.md); a raw file opened `shareable` by each can. Its name carries `.qcow2`
  all the same (`volumes/<id>.qcow2` -> `layers/<id>.raw`): names never say a format. A
  snapshot of it is a full copy converted into a new qcow2 layer (not incremental: raw has no
  layers to freeze); clones of snapshots into shared disks are full raw copies.

A snapshot freezes the disk's active layer as the snapshot and continues the disk in a new empty
overlay on it (`layers/<disk>+<snapshot>.qcow2`): it stores exactly what changed since the
disk's previous snapshot, and of a disk a running guest writes to, the driver makes the new
layer through the hypervisor at one instant (`freeze`), so the snapshot is crash-consistent.
A clone of a snapshot is a new overlay on its layer. Removing a name (delete_disk,
delete_snapshot) leaves layers that no name points at: `_sweep` removes those nobody needs and
merges one that a single layer still builds on into that layer (`qemu-img commit` of the child
into it, then it replaces the child under the child's path), so chains only hold named layers
and layers that two or more others share (a deleted snapshot that two clones use).

Crash safety: new layers are made under `.partial` names and renamed; names move by atomic
symlink replacement; a snapshot whose new layer exists but whose names were not moved yet is
finished by `_recover` (its guest may already write to the new layer: roll forward, never back);
a merge that stopped half-way is merely done again (committing the same clusters twice changes
nothing). Every operation can be run again after a crash at any point.

Encryption: every layer of an encrypted disk is encrypted with the disk's key (LUKS in qcow2),
its snapshots too, so opening any layer of the chain needs that one key, and each is opened with
the whole chain spelt out (`_open`). A clone of an encrypted snapshot gets a new key, so it is a
full re-encrypted copy, never an overlay (a chain never mixes two keys). Keys are handed to
qemu-img in a 0600 file on a tmpfs, never on a command line.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from .host import HostError, run

GIB = 2**30
LUKS_ITER_MS = 100   # PBKDF time per open: qemu's default 2 s would cost 2 CPU-s per attach here
SECRET_ID = "sec0"
KEY_DIR = "/dev/shm"  # a tmpfs: keys handed to qemu-img never reach a disk
KEY_FILE_PREFIX = "ec2emu-key-"  # + the writing process's pid + '-': swept when that process is gone


Freeze = Callable[[Path, Path], bool]  # (active layer, new layer) -> True if done live
Pull = Callable[[Path, Path | None], bool]  # (layer, new backing or None) -> True if done live


def _esc(path: str | os.PathLike) -> str:
    return str(path).replace(",", ",,")


class Disks:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()
        for sub in ("layers", "volumes", "snapshots", "images"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.sweep_key_files()  # (at start-up: what a killed run of ours left)

    # ------------------------------------------------------------------------------- names

    def path(self, disk_id: str) -> Path:
        """The disk's name: a symlink to its active layer (use layer() for what a guest opens)."""
        return self.root / "volumes" / f"{disk_id}.qcow2"

    def snapshot_path(self, snapshot_id: str) -> Path:
        """The snapshot's name: a symlink to its layer."""
        return self.root / "snapshots" / f"{snapshot_id}.qcow2"

    def _layer_path(self, name: str) -> Path:
        return self.root / "layers" / f"{name}.qcow2"

    def layer(self, disk_id: str) -> Path:
        """The file a guest opens for the disk (its active layer); LookupError if no such disk.
        An unfinished snapshot is finished first (a guest may already write its new layer)."""
        self._recover()
        if not self.path(disk_id).exists():
            raise LookupError(f"no disk {disk_id}")
        return self.path(disk_id).resolve()

    def snapshot_layer(self, snapshot_id: str) -> Path:
        if not self.snapshot_path(snapshot_id).exists():
            raise LookupError(f"no snapshot {snapshot_id}")
        return self.snapshot_path(snapshot_id).resolve()

    def stored(self, snapshot_id: str) -> int:
        """The bytes a snapshot's own layer stores (what changed since the one before it)."""
        return self.snapshot_layer(snapshot_id).stat().st_size

    @staticmethod
    def _link(link: Path, target: Path) -> None:
        """Point `link` at `target`, atomically (a new symlink renamed over the old)."""
        if link.is_symlink() and Path(os.readlink(link)) == target:
            return
        tmp = link.with_name(link.name + ".link-tmp")
        tmp.unlink(missing_ok=True)
        os.symlink(target, tmp)
        os.replace(tmp, link)

    def _names(self) -> dict[Path, list[Path]]:
        """layer -> the names (volume and snapshot symlinks) pointing at it."""
        named: dict[Path, list[Path]] = {}
        for sub in ("volumes", "snapshots", "images"):
            for link in (self.root / sub).glob("*.qcow2"):
                if link.is_symlink():
                    named.setdefault(Path(os.readlink(link)), []).append(link)
        return named

    def frozen_image(self, image_path: str | os.PathLike) -> Path:
        """The store's copy of an image file as it is now (made once per version of the file;
        see the layout above); LookupError if there is no such file."""
        source = Path(image_path).resolve()
        for _attempt in range(3):
            try:
                before = source.stat()
            except FileNotFoundError:
                raise LookupError(f"no image file {image_path}") from None
            version = hashlib.sha256(f"{source}|{before.st_ino}|{before.st_size}|{before.st_mtime_ns}"
                                     .encode()).hexdigest()[:12]
            fmt = "qcow2" if self.info(source)["format"] == "qcow2" else "raw"
            name = f"image~{source.stem}~{version}"
            layer = self.root / "layers" / f"{name}.{fmt}"
            if not layer.exists():
                self._make(layer, lambda partial: run(["cp", "--sparse=always", "--reflink=auto", str(source),
                                                       str(partial)], timeout=600))
                after = source.stat()
                if (after.st_ino, after.st_size, after.st_mtime_ns) != (before.st_ino, before.st_size,
                                                                        before.st_mtime_ns):
                    layer.unlink(missing_ok=True)  # replaced while copied: copy the new one
                    continue
            self._link(self.root / "images" / f"{name}.qcow2", layer)
            return layer
        raise RuntimeError(f"{image_path} kept changing while it was copied")

    def _layers(self) -> list[Path]:
        return sorted([*(self.root / "layers").glob("*.qcow2"), *(self.root / "layers").glob("*.raw")])

    def shared(self, disk_id: str) -> bool:
        """Whether the disk is a shared (raw, Multi-Attach) one; LookupError if no such disk."""
        return self.layer(disk_id).suffix == ".raw"

    def _new_layer_path(self, disk_id: str, suffix: str) -> Path:
        """A layer name for a disk's new whole-disk layer (made by share()): `<id>~<n>`, n unused."""
        n = 1
        while any((self.root / "layers" / f"{disk_id}~{n}{ext}").exists() for ext in (".qcow2", ".raw")):
            n += 1
        return self.root / "layers" / f"{disk_id}~{n}{suffix}"

    # ------------------------------------------------------------------------------ qemu-img

    @staticmethod
    def _key_dir() -> str | None:
        return KEY_DIR if os.path.isdir(KEY_DIR) else None

    @classmethod
    def sweep_key_files(cls) -> int:
        """Remove key files left by processes that died holding them (kill -9 between writing a
        key and running qemu-img); each file's name carries its writer's pid, so a live writer's
        (another emulator on this host) stay. Returns how many went."""
        removed = 0
        for path in Path(cls._key_dir() or tempfile.gettempdir()).glob(f"{KEY_FILE_PREFIX}*"):
            try:
                pid = int(path.name[len(KEY_FILE_PREFIX):].split("-", 1)[0])
            except ValueError:
                continue
            try:
                os.kill(pid, 0)
                continue  # its writer lives
            except ProcessLookupError:
                pass
            except PermissionError:
                continue  # alive, someone else's
            path.unlink(missing_ok=True)
            removed += 1
        return removed

    @contextmanager
    def _secret(self, *keys: bytes | None):
        """--object arguments for the keys given (the first one as SECRET_ID, a second as sec1)."""
        args, files = [], []
        try:
            for n, key in enumerate(k for k in keys if k is not None):
                fd, name = tempfile.mkstemp(dir=self._key_dir(), prefix=f"{KEY_FILE_PREFIX}{os.getpid()}-")
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

    def chain(self, path: Path) -> list[dict]:
        """qemu-img info of a layer and each of its backing files, top first."""
        out = json.loads(self._img("info", "-U", "--backing-chain", "--output=json", str(path)))
        return out if isinstance(out, list) else [out]

    def _backing(self, path: Path) -> Path | None:
        backing = self.info(path).get("full-backing-filename")
        return Path(backing) if backing else None

    def _open(self, path: Path, key: bytes | None, secret: str = SECRET_ID, locking: bool = True) -> list[str]:
        """How qemu-img opens an existing layer: by name when no layer is encrypted, else with
        every layer of its chain spelt out, each encrypted one given the key (all layers of an
        encrypted disk share it). locking=False: layers a running guest holds open read-only
        (frozen ones, which it never writes) may be written by a merge."""
        if key is None and locking:
            return [str(path)]
        parts, prefix = [], ""
        for layer in self.chain(path):
            parts += [f"{prefix}driver={layer['format']}", f"{prefix}file.filename={_esc(layer['filename'])}"]
            if layer.get("encrypted") and key is not None:
                parts.append(f"{prefix}encrypt.key-secret={secret}")
            if not locking:
                parts.append(f"{prefix}file.locking=off")
            prefix += "backing."
        return ["--image-opts", ",".join(parts)]

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

    def _overlay(self, partial: Path, backing: Path, fmt: str, size: int | None, key: bytes | None) -> None:
        """A qcow2 overlay on `backing`. With a size given the backing is not opened (-u): an
        encrypted one could not be without its key, and we know its format."""
        with self._secret(key) as secret:
            self._img("create", "-q", "-f", "qcow2", "-F", fmt, "-b", str(backing), *(["-u"] if size else []),
                      *secret, *self._luks(key), str(partial), *([str(size)] if size else []),
                      luks=key is not None)

    # ------------------------------------------------------------------------------ operations

    def create(self, disk_id: str, size_gib: int, key: bytes | None = None, shared: bool = False) -> None:
        """See Driver.create_disk."""
        if size_gib < 1:
            raise ValueError("a disk has at least 1 GiB")
        if self.path(disk_id).exists():
            return
        if shared:
            self._refuse_shared_key(key)
            raw = self.root / "layers" / f"{disk_id}.raw"

            def sparse(partial: Path) -> None:
                with open(partial, "wb") as f:
                    f.truncate(size_gib * GIB)
            self._make(raw, sparse)
            self._link(self.path(disk_id), raw)
            return

        def build(partial: Path) -> None:
            with self._secret(key) as secret:
                self._img("create", "-q", "-f", "qcow2", *secret, *self._luks(key), str(partial),
                          str(size_gib * GIB), luks=key is not None)
        layer = self._layer_path(disk_id)
        self._make(layer, build)
        self._link(self.path(disk_id), layer)

    def clone(self, disk_id: str, size_gib: int, *, image_path: str | None = None,
              snapshot_id: str | None = None, key: bytes | None = None,
              source_key: bytes | None = None, shared: bool = False) -> None:
        """See Driver.clone_disk."""
        if (image_path is None) == (snapshot_id is None):
            raise ValueError("clone from exactly one of image_path and snapshot_id")
        if self.path(disk_id).exists():
            return
        if shared:
            self._refuse_shared_key(key)
        if image_path:
            source = self.frozen_image(image_path)
        else:
            source = self.snapshot_layer(snapshot_id)
        info = self.info(source)
        size = size_gib * GIB
        if size < info["virtual-size"]:
            raise ValueError(f"{size_gib} GiB is smaller than the source ({info['virtual-size']} bytes)")
        encrypted_source = any(layer.get("encrypted") for layer in self.chain(source))
        if encrypted_source and source_key is None:
            raise ValueError(f"{source.name} is encrypted: source_key needed")

        def overlay(partial: Path) -> None:
            self._overlay(partial, source, info["format"], size, key)

        def copy(partial: Path) -> None:
            # A new key for the clone: its chain may not mix keys, so a flattened copy.
            with self._secret(source_key, key) as secret:  # sec0: the source's key, sec1: the new one
                self._img("convert", *secret, *self._open(source, source_key), "-O", "qcow2",
                          *self._luks(key, "sec1"), str(partial), luks=True)
            with self._secret(key) as secret:
                self._img("resize", "-q", *secret, *self._open(partial, key), str(size), luks=key is not None)
        def raw(partial: Path) -> None:  # a shared disk: a full sparse raw copy, then its size
            with self._secret(source_key) as secret:
                self._img("convert", *secret, *self._open(source, source_key), "-O", "raw", str(partial),
                          luks=source_key is not None)
            os.truncate(partial, size)

        if shared:
            layer = self.root / "layers" / f"{disk_id}.raw"
            self._make(layer, raw)
        else:
            layer = self._layer_path(disk_id)
            self._make(layer, copy if encrypted_source else overlay)
        self._link(self.path(disk_id), layer)

    @staticmethod
    def _refuse_shared_key(key: bytes | None) -> None:
        if key is not None:
            raise ValueError("shared (Multi-Attach) disks are not encrypted on this host")

    def share(self, disk_id: str, shared: bool, key: bytes | None = None) -> None:
        """Make a disk shared (a raw file, for Multi-Attach) or not (a qcow2 layer again), keeping
        its contents; no guest may have it open. Its whole chain is copied into one new layer and
        the disk's name moved onto it; what the old chain held only for the disk is swept (its
        snapshots keep their layers). Already so: nothing."""
        if self.shared(disk_id) == shared:
            return
        if shared:
            self._refuse_shared_key(key)
        old = self.layer(disk_id)
        new = self._new_layer_path(disk_id, ".raw" if shared else ".qcow2")

        def build(partial: Path) -> None:
            self._img("convert", *(["-f", "raw"] if not shared else []), str(old), "-O",
                      "raw" if shared else "qcow2", str(partial))
            if shared:
                os.truncate(partial, self.info(old)["virtual-size"])
        self._make(new, build)
        self._link(self.path(disk_id), new)
        self._sweep(key)

    def overlay(self, path: str | os.PathLike, backing: str | os.PathLike) -> None:
        """A qcow2 overlay of a qcow2 file's size at `path` (an instance's root disk), unless it
        exists. The backing path is made absolute (a relative one resolves from the overlay's
        directory) and its format given (`-F` is required: FACTS.md)."""
        if Path(path).exists():
            return
        try:
            frozen = self.frozen_image(backing)
        except LookupError:
            raise LookupError(f"image disk {backing} is missing: run `ec2emu images build`") from None
        self._make(Path(path), lambda partial: self._overlay(partial, frozen, "qcow2" if frozen.suffix == ".qcow2"
                                                             else "raw", None, None))

    def resize(self, disk_id: str, size_gib: int, key: bytes | None = None) -> None:
        """See Driver.resize_disk (offline; the driver resizes attached disks through libvirt)."""
        current = self.size(disk_id)
        if size_gib * GIB < current:
            raise ValueError(f"{disk_id} has {current // GIB} GiB: disks only grow")
        if size_gib * GIB == current:
            return
        layer = self.layer(disk_id)
        with self._secret(key) as secret:
            self._img("resize", "-q", *secret, *(["-f", "raw"] if layer.suffix == ".raw" else []),
                      *self._open(layer, key), str(size_gib * GIB), luks=key is not None)

    def size(self, disk_id: str) -> int:
        """Virtual size in bytes; LookupError if there is no such disk."""
        return self.info(self.layer(disk_id))["virtual-size"]

    def snapshot(self, disk_id: str, snapshot_id: str, key: bytes | None = None,
                 freeze: Freeze | None = None) -> int:
        """See Driver.snapshot_disk: the disk's active layer becomes the snapshot, the disk goes
        on in a new overlay on it. `freeze(active, new)` makes the new layer under a running
        guest and returns True (False: nobody runs the disk, qemu-img makes it here). Steps, each
        re-runnable: the new layer, then the snapshot's name, then the disk's (_recover finishes
        the names after a crash)."""
        layer = self.layer(disk_id)  # finishes an interrupted snapshot first
        if self.snapshot_path(snapshot_id).exists():
            return self.stored(snapshot_id)
        if layer.suffix == ".raw":
            # A shared disk: its contents now, converted into the snapshot's own qcow2 layer
            # (read without locks: guests hold it open, shareable). Not frozen at one instant
            # across its writers (it has many, each with its own cache-less writes in flight).
            own = self._layer_path(snapshot_id)
            self._make(own, lambda partial: self._img("convert", "-U", "-f", "raw", str(layer), "-O", "qcow2",
                                                      str(partial)))
            self._link(self.snapshot_path(snapshot_id), own)
            return self.stored(snapshot_id)
        new = self._layer_path(f"{disk_id}+{snapshot_id}")
        if not new.exists():
            if not (freeze and freeze(layer, new)):
                size = self.info(layer)["virtual-size"]
                self._make(new, lambda partial: self._overlay(partial, layer, "qcow2", size, key))
        self._finish_snapshot(disk_id, snapshot_id, new)
        return self.stored(snapshot_id)

    def _finish_snapshot(self, disk_id: str, snapshot_id: str, new: Path) -> None:
        frozen = self._backing(new)
        self._link(self.snapshot_path(snapshot_id), frozen)
        self._link(self.path(disk_id), new)

    def _recover(self) -> None:
        """Finish snapshots interrupted after their new layer was made: a layer `<disk>+<snap>`
        that no name points at, built on the layer the disk's name still points at."""
        named = self._names()
        for layer in self._layers():
            if "+" not in layer.stem or layer in named:
                continue
            disk_id, snapshot_id = layer.stem.split("+", 1)
            if self.path(disk_id).is_symlink() and self._backing(layer) == Path(os.readlink(self.path(disk_id))):
                self._finish_snapshot(disk_id, snapshot_id, layer)

    def copy_snapshot(self, snapshot_id: str, new_snapshot_id: str, key: bytes | None = None,
                      new_key: bytes | None = None) -> int:
        """See Driver.copy_snapshot: the chain flattened into one layer, re-encrypted with
        new_key if given."""
        if not self.snapshot_path(new_snapshot_id).exists():
            source = self.snapshot_layer(snapshot_id)

            def build(partial: Path) -> None:
                with self._secret(key, new_key) as secret:  # sec0: the source's key, sec1: the new one
                    self._img("convert", *secret, *self._open(source, key), "-O", "qcow2",
                              *self._luks(new_key, "sec1" if key is not None else SECRET_ID), str(partial),
                              luks=key is not None or new_key is not None)
            layer = self._layer_path(new_snapshot_id)
            self._make(layer, build)
            self._link(self.snapshot_path(new_snapshot_id), layer)
        return self.stored(new_snapshot_id)

    def delete(self, disk_id: str, key: bytes | None = None, pull: Pull | None = None) -> None:
        """See Driver.delete_disk (the driver checks that no guest has it)."""
        self._recover()
        self.path(disk_id).unlink(missing_ok=True)
        self._sweep(key, pull)

    def delete_snapshot(self, snapshot_id: str, key: bytes | None = None, pull: Pull | None = None) -> None:
        """See Driver.delete_snapshot."""
        self._recover()
        self.snapshot_path(snapshot_id).unlink(missing_ok=True)
        self._sweep(key, pull)

    def _sweep(self, key: bytes | None = None, pull: Pull | None = None) -> None:
        """Drop the layers no name points at: those nothing builds on are removed, one that a
        single layer builds on is merged into it, one that two or more share stays (until all but
        one of them are gone). Leftovers of interrupted steps (.partial files, temporary links)
        go too. An encrypted layer is merged only with `key` (else it stays for a later sweep)."""
        self._recover()
        for leftover in [*(self.root / "layers").glob("*.partial"), *self.root.glob("*/*.link-tmp")]:
            leftover.unlink(missing_ok=True)
        while True:
            named = self._names()
            layers = self._layers()
            children: dict[Path, list[Path]] = {}
            for layer in layers:
                backing = self._backing(layer)
                if backing is not None:
                    children.setdefault(backing, []).append(layer)
            progress = False
            for layer in layers:
                if layer in named:
                    continue
                kids = children.get(layer, [])
                if not kids:
                    layer.unlink(missing_ok=True)
                    progress = True
                elif len(kids) == 1 and self._merge(layer, kids[0], named, key, pull):
                    progress = True
            if not progress:
                return

    def _merge(self, layer: Path, child: Path, named: dict[Path, list[Path]], key: bytes | None,
               pull: Pull | None) -> bool:
        """Fold an unnamed layer into its only child; False if it cannot be now (encrypted and no
        key, or the key given is not its). A child that a running guest writes is pulled by the
        hypervisor (`pull`); any other child is committed into the layer (the layer now holds the
        child's view), which then replaces the child under the child's path: the child's own
        children keep their backing path. A child is written only if it is an active layer (then
        with image locking, so a guest holding it makes this fail rather than corrupt it);
        frozen layers may be held read-only by guests, which never notice (same contents)."""
        child_info, layer_info = self.chain(child)[:2]
        if (child_info.get("encrypted") or layer_info.get("encrypted")) and key is None:
            return False
        if child_info.get("encrypted") and not layer_info.get("encrypted"):
            # An encrypted disk made from a plain snapshot: committing it into the plain layer
            # would write its data in the clear. The plain layer stays (until the child goes).
            return False
        backing = self._backing(layer)
        if pull is not None and pull(child, backing):
            layer.unlink(missing_ok=True)
            return True
        active = any(link.parent.name == "volumes" for link in named.get(child, []))
        try:
            with self._secret(key) as secret:
                self._img("commit", "-q", "-d", *secret, *self._open(child, key, locking=active),
                          luks=key is not None)
        except HostError as exc:
            if key is not None and "Invalid password" in exc.stderr:
                return False
            raise
        os.replace(layer, child)
        return True
