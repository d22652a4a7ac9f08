"""Disks with real qemu-img (no guest): what is written reads back through clones and snapshots,
encrypted disks hold no plaintext and refuse a wrong key, and every step can be run again."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from hypervisor.disks import GIB, Disks
from hypervisor.host import HostError

pytestmark = pytest.mark.skipif(not (shutil.which("qemu-img") and shutil.which("qemu-io")),
                                reason="needs qemu-img and qemu-io (qemu-utils)")

KEY, OTHER_KEY = b"k" * 32, b"o" * 32
MARKER = "ec2emu-disk-marker-0123456789"


def qemu_io(disks: Disks, path, command: str, key: bytes | None = None) -> subprocess.CompletedProcess:
    """Run one qemu-io command on a disk file (opening it with `key` if given)."""
    with disks._secret(key) as secret:
        args = ["qemu-io", *secret, *(disks._open(path, key) if key else ["-f", "qcow2", str(path)]), "-c", command]
        return subprocess.run(args, capture_output=True, text=True, timeout=60)


def write(disks, path, pattern: int, offset: int = 0, key=None) -> None:
    proc = qemu_io(disks, path, f"write -P {pattern} {offset} 64k", key)
    assert proc.returncode == 0 and "wrote" in proc.stdout, proc.stdout + proc.stderr


def holds(disks, path, pattern: int, offset: int = 0, key=None) -> bool:
    proc = qemu_io(disks, path, f"read -P {pattern} {offset} 64k", key)
    return proc.returncode == 0 and "Pattern verification failed" not in proc.stdout + proc.stderr


def test_blank_resize_snapshot_clone_delete(tmp_path):
    disks = Disks(tmp_path / "store")
    disks.create("vol-1", 1)
    disks.create("vol-1", 1)  # idempotent
    assert disks.size("vol-1") == GIB and holds(disks, disks.path("vol-1"), 0)
    with pytest.raises(ValueError):
        disks.create("vol-0", 0)
    write(disks, disks.path("vol-1"), 0xAB)
    disks.resize("vol-1", 2)
    disks.resize("vol-1", 2)
    assert disks.size("vol-1") == 2 * GIB and holds(disks, disks.path("vol-1"), 0xAB)
    with pytest.raises(ValueError):
        disks.resize("vol-1", 1)

    disks.snapshot("vol-1", "snap-1")
    disks.snapshot("vol-1", "snap-1")
    write(disks, disks.path("vol-1"), 0xCD)  # later writes do not reach the snapshot
    assert "backing-filename" not in disks.info(disks.snapshot_path("snap-1"))  # standalone
    with pytest.raises(ValueError):
        disks.clone("vol-2", 1, snapshot_id="snap-1")  # smaller than the source
    disks.clone("vol-2", 3, snapshot_id="snap-1")
    info = disks.info(disks.path("vol-2"))
    assert info["backing-filename"] == str(disks.snapshot_path("snap-1")) and info["virtual-size"] == 3 * GIB
    assert holds(disks, disks.path("vol-2"), 0xAB)
    write(disks, disks.path("vol-2"), 0xEF)  # copy-on-write: the snapshot is untouched
    assert holds(disks, disks.snapshot_path("snap-1"), 0xAB)

    # Deleting the snapshot while vol-2 is its clone keeps the file; deleting vol-2 removes it.
    disks.delete_snapshot("snap-1")
    assert disks.snapshot_path("snap-1").exists() and holds(disks, disks.path("vol-2"), 0xEF)
    with pytest.raises(LookupError):
        disks.clone("vol-3", 3, snapshot_id="snap-1")
    disks.delete("vol-2")
    disks.delete("vol-2")
    assert not disks.snapshot_path("snap-1").exists()
    with pytest.raises(LookupError):
        disks.snapshot("vol-2", "snap-2")
    assert sorted(p.name for p in (tmp_path / "store").rglob("*") if p.is_file()) == ["vol-1.qcow2"]


def test_clone_of_an_image_is_an_overlay(tmp_path):
    image = tmp_path / "image.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "64M"], check=True)
    disks = Disks(tmp_path / "store")
    write(disks, image, 0x5A)
    with pytest.raises(LookupError):
        disks.clone("vol-1", 1, image_path=str(tmp_path / "missing.qcow2"))
    with pytest.raises(ValueError):
        disks.clone("vol-1", 1, image_path=str(image), snapshot_id="snap-1")
    disks.clone("vol-1", 1, image_path=str(image))
    assert disks.info(disks.path("vol-1"))["backing-filename"] == str(image)
    write(disks, disks.path("vol-1"), 0x11)
    assert holds(disks, image, 0x5A)
    # Encrypted overlay on a plain image (an encrypted root volume): plain base still readable.
    disks.clone("vol-2", 1, image_path=str(image), key=KEY)
    assert holds(disks, disks.path("vol-2"), 0x5A, key=KEY)


def test_encrypted_disks(tmp_path):
    disks = Disks(tmp_path / "store")
    disks.create("vol-1", 1, key=KEY)
    assert disks.info(disks.path("vol-1"))["encrypted"] is True
    proc = qemu_io(disks, disks.path("vol-1"), f"write -P 0x41 0 {len(MARKER)}", KEY)
    assert proc.returncode == 0, proc.stderr
    write(disks, disks.path("vol-1"), 0x42, offset=1 << 20, key=KEY)
    assert b"A" * len(MARKER) not in disks.path("vol-1").read_bytes()  # no plaintext in the file
    assert not holds(disks, disks.path("vol-1"), 0x42, offset=1 << 20, key=OTHER_KEY)  # wrong key
    disks.resize("vol-1", 2, key=KEY)
    assert disks.size("vol-1") == 2 * GIB

    disks.snapshot("vol-1", "snap-1", key=KEY)
    assert disks.info(disks.snapshot_path("snap-1"))["encrypted"] is True
    with pytest.raises(ValueError):
        disks.clone("vol-2", 2, snapshot_id="snap-1", key=OTHER_KEY)  # no source key
    # Re-encrypted with its own key (a full copy: an encrypted backing file would need two keys).
    disks.clone("vol-2", 3, snapshot_id="snap-1", key=OTHER_KEY, source_key=KEY)
    info = disks.info(disks.path("vol-2"))
    assert info["encrypted"] is True and "backing-filename" not in info and info["virtual-size"] == 3 * GIB
    assert holds(disks, disks.path("vol-2"), 0x42, offset=1 << 20, key=OTHER_KEY)
    with pytest.raises(HostError):
        disks.resize("vol-2", 4, key=KEY)  # the old key does not open the copy
