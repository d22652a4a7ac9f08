"""Disks with real qemu-img (no guest): what is written reads back through clones and snapshots,
encrypted disks hold no plaintext and refuse a wrong key, and every step can be run again."""
from __future__ import annotations

import os
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


def write(disks, path, pattern: int, offset: int = 0, key=None, size: str = "64k") -> None:
    proc = qemu_io(disks, path, f"write -P {pattern} {offset} {size}", key)
    assert proc.returncode == 0 and "wrote" in proc.stdout, proc.stdout + proc.stderr


def holds(disks, path, pattern: int, offset: int = 0, key=None, size: str = "64k") -> bool:
    proc = qemu_io(disks, path, f"read -P {pattern} {offset} {size}", key)
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
    assert "backing-filename" not in disks.info(disks.snapshot_path("snap-1"))  # the first layer
    with pytest.raises(ValueError):
        disks.clone("vol-2", 1, snapshot_id="snap-1")  # smaller than the source
    disks.clone("vol-2", 3, snapshot_id="snap-1")
    info = disks.info(disks.path("vol-2"))
    assert info["backing-filename"] == str(disks.snapshot_layer("snap-1")) and info["virtual-size"] == 3 * GIB
    assert holds(disks, disks.path("vol-2"), 0xAB)
    write(disks, disks.path("vol-2"), 0xEF)  # copy-on-write: the snapshot is untouched
    assert holds(disks, disks.snapshot_path("snap-1"), 0xAB)

    # Deleting the snapshot while vol-1 and vol-2 build on it keeps its layer (nameless);
    # deleting vol-2 then merges it into vol-1's layer.
    kept = disks.snapshot_layer("snap-1")
    disks.delete_snapshot("snap-1")
    assert kept.exists() and holds(disks, disks.path("vol-2"), 0xEF) and holds(disks, disks.path("vol-1"), 0xCD)
    with pytest.raises(LookupError):
        disks.clone("vol-3", 3, snapshot_id="snap-1")
    disks.delete("vol-2")
    disks.delete("vol-2")
    assert not kept.exists() and holds(disks, disks.path("vol-1"), 0xCD)
    assert "backing-filename" not in disks.info(disks.path("vol-1"))
    with pytest.raises(LookupError):
        disks.snapshot("vol-2", "snap-2")
    assert files(disks) == ["layers/vol-1+snap-1.qcow2", "volumes/vol-1.qcow2"]


def files(disks) -> list[str]:
    return sorted(str(p.relative_to(disks.root)) for p in disks.root.rglob("*") if p.is_file() or p.is_symlink())


def test_snapshots_are_incremental_and_chains_merge(tmp_path):
    disks = Disks(tmp_path / "store")
    disks.create("vol-1", 1)
    write(disks, disks.path("vol-1"), 0x01, size="100M")
    first = disks.snapshot("vol-1", "snap-1")
    assert 100 << 20 <= first <= 1.1 * (100 << 20)
    write(disks, disks.path("vol-1"), 0x02, offset=200 << 20, size="10M")
    second = disks.snapshot("vol-1", "snap-2")
    assert 10 << 20 <= second <= 1.1 * (10 << 20)  # only what changed since snap-1
    assert disks.stored("snap-2") == second
    write(disks, disks.path("vol-1"), 0x03, size="1M")
    disks.snapshot("vol-1", "snap-3")
    assert holds(disks, disks.snapshot_path("snap-2"), 0x01, size="100M")  # through the chain
    assert holds(disks, disks.snapshot_path("snap-1"), 0, offset=200 << 20)  # point in time
    assert len(disks.chain(disks.layer("vol-1"))) == 4

    # Deleting middle and oldest snapshots merges their layers: the chain shrinks, data stays.
    disks.delete_snapshot("snap-2")
    assert len(disks.chain(disks.layer("vol-1"))) == 3
    assert disks.stored("snap-3") > 10 << 20  # snap-2's data moved up into snap-3
    disks.delete_snapshot("snap-1")
    assert len(disks.chain(disks.layer("vol-1"))) == 2
    assert holds(disks, disks.snapshot_path("snap-3"), 0x03, size="1M")
    assert holds(disks, disks.snapshot_path("snap-3"), 0x01, offset=1 << 20, size="99M")
    assert holds(disks, disks.snapshot_path("snap-3"), 0x02, offset=200 << 20, size="10M")
    # A standalone copy of a chained snapshot outlives it.
    disks.snapshot("vol-1", "snap-4")
    copied = disks.copy_snapshot("snap-4", "snap-5")
    assert copied >= 110 << 20 and "backing-filename" not in disks.info(disks.snapshot_path("snap-5"))
    disks.delete_snapshot("snap-4")
    disks.delete_snapshot("snap-3")
    disks.delete("vol-1")
    assert files(disks) == ["layers/snap-5.qcow2", "snapshots/snap-5.qcow2"]
    assert holds(disks, disks.snapshot_path("snap-5"), 0x02, offset=200 << 20, size="10M")


class Crash(Exception):
    pass


def crash_after(monkeypatch, nth: int):
    """From now on the store's nth step (a qemu-img run, a rename or a symlink swap: every
    change it makes to the files) raises Crash after it is done."""
    import hypervisor.disks as module
    count = {"n": 0}

    def step(real):
        def wrapped(*args, **kwargs):
            result = real(*args, **kwargs)
            count["n"] += 1
            if count["n"] == nth:
                raise Crash(f"crash after step {nth}")
            return result
        return wrapped
    monkeypatch.setattr(module, "run", step(module.run))
    monkeypatch.setattr(module.os, "replace", step(os.replace))
    return count


@pytest.mark.parametrize("operation", ["snapshot", "delete_snapshot", "delete", "clone", "copy_snapshot"])
def test_a_crash_after_any_step_converges_when_run_again(tmp_path, monkeypatch, operation):
    """Every operation, crashed after each of its steps in turn, then run again: the same files
    as an uninterrupted run, no leftovers, the data intact."""
    def setup(root):
        disks = Disks(root)
        disks.create("vol-1", 1)
        write(disks, disks.path("vol-1"), 0x01)
        disks.snapshot("vol-1", "snap-1")
        write(disks, disks.path("vol-1"), 0x02, offset=1 << 20)
        disks.snapshot("vol-1", "snap-2")
        disks.clone("vol-2", 1, snapshot_id="snap-1")
        write(disks, disks.path("vol-1"), 0x03, offset=2 << 20)
        return disks
    act = {"snapshot": lambda d: d.snapshot("vol-1", "snap-3"),
           "delete_snapshot": lambda d: (d.delete_snapshot("snap-2"), d.delete_snapshot("snap-1")),
           "delete": lambda d: (d.delete_snapshot("snap-1"), d.delete("vol-2")),
           "clone": lambda d: d.clone("vol-3", 2, snapshot_id="snap-2"),
           "copy_snapshot": lambda d: d.copy_snapshot("snap-2", "snap-9")}[operation]
    reference = setup(tmp_path / "reference")
    act(reference)
    expected = files(reference)
    nth = 1
    while True:
        disks = setup(tmp_path / f"crash{nth}")
        with monkeypatch.context() as m:
            count = crash_after(m, nth)
            try:
                act(disks)
                crashed = False
            except Crash:
                crashed = True
        act(disks)  # run again after the crash
        assert files(disks) == expected, f"crash after step {nth}"
        assert holds(disks, disks.path("vol-1"), 0x03, offset=2 << 20), f"crash after step {nth}"
        assert holds(disks, disks.path("vol-1"), 0x02, offset=1 << 20)
        assert holds(disks, disks.path("vol-1"), 0x01)
        for name in ("vol-2", "vol-3"):
            if disks.path(name).exists():
                assert holds(disks, disks.path(name), 0x01)
        if not crashed:
            break
        assert count["n"] >= nth
        nth += 1
    assert nth > 1  # it did crash at least once


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
    frozen = disks.frozen_image(image)  # the overlay's base: the store's copy of the file
    assert disks.info(disks.path("vol-1"))["backing-filename"] == str(frozen)
    assert frozen.parent == tmp_path / "store" / "layers" and holds(disks, frozen, 0x5A)
    write(disks, disks.path("vol-1"), 0x11, offset=1 << 20)
    assert holds(disks, image, 0x5A) and holds(disks, image, 0, offset=1 << 20)  # the image never written
    # the image file rebuilt in place (a new file renamed over it): the clone keeps its data, a
    # new clone gets the new contents
    rebuilt = tmp_path / "rebuilt.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(rebuilt), "64M"], check=True)
    write(disks, rebuilt, 0x77)
    os.replace(rebuilt, image)
    assert holds(disks, disks.path("vol-1"), 0x5A) and not holds(disks, disks.path("vol-1"), 0x77)
    disks.clone("vol-3", 1, image_path=str(image))
    assert holds(disks, disks.path("vol-3"), 0x77) and disks.frozen_image(image) != frozen
    disks.delete("vol-1")
    assert frozen.exists()  # image copies are kept (instance-store roots outside the store use them)
    # an instance-store root (an overlay outside the store) builds on the copy too
    root = tmp_path / "root.qcow2"
    disks.overlay(root, image)
    assert disks.info(root)["backing-filename"] == str(disks.frozen_image(image))
    image.unlink()  # the file gone (an import's sweep): what was built on it still reads
    assert holds(disks, root, 0x77) and holds(disks, disks.path("vol-3"), 0x77)
    image = tmp_path / "image2.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "64M"], check=True)
    write(disks, image, 0x5A)
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


def test_encrypted_chains(tmp_path):
    """Every layer of an encrypted disk is encrypted with its key: snapshots, and the new layers
    the disk goes on in; merging them needs the key (without it the layer waits)."""
    disks = Disks(tmp_path / "store")
    disks.create("vol-1", 1, key=KEY)
    proc = qemu_io(disks, disks.path("vol-1"), f"write -P 0x41 0 {len(MARKER)}", KEY)
    assert proc.returncode == 0, proc.stderr
    disks.snapshot("vol-1", "snap-1", key=KEY)
    write(disks, disks.path("vol-1"), 0x42, offset=1 << 20, key=KEY)
    disks.snapshot("vol-1", "snap-2", key=KEY)
    write(disks, disks.path("vol-1"), 0x43, offset=2 << 20, key=KEY)
    assert all(layer["encrypted"] for layer in disks.chain(disks.layer("vol-1")))
    for layer in disks._layers():
        assert b"A" * len(MARKER) not in layer.read_bytes()
    assert holds(disks, disks.snapshot_path("snap-2"), 0x42, offset=1 << 20, key=KEY)
    assert not holds(disks, disks.snapshot_path("snap-2"), 0x42, offset=1 << 20, key=OTHER_KEY)
    disks.resize("vol-1", 2, key=KEY)
    assert disks.size("vol-1") == 2 * GIB

    disks.delete_snapshot("snap-1")  # no key: the layer waits, nameless
    assert len(disks._layers()) == 3
    disks.delete_snapshot("snap-1", key=OTHER_KEY)  # not its key: still waits
    assert len(disks._layers()) == 3
    disks.delete_snapshot("snap-1", key=KEY)
    assert len(disks._layers()) == 2
    assert holds(disks, disks.snapshot_path("snap-2"), 0x41, key=KEY, size=str(len(MARKER)))
    assert holds(disks, disks.path("vol-1"), 0x43, offset=2 << 20, key=KEY)
    # A clone of the chained snapshot, with its own key: a flattened re-encrypted copy.
    disks.clone("vol-2", 2, snapshot_id="snap-2", key=OTHER_KEY, source_key=KEY)
    assert holds(disks, disks.path("vol-2"), 0x42, offset=1 << 20, key=OTHER_KEY)
    assert "backing-filename" not in disks.info(disks.path("vol-2"))
    disks.copy_snapshot("snap-2", "snap-3", key=KEY, new_key=KEY)
    disks.delete_snapshot("snap-2", key=KEY)
    disks.delete("vol-1", key=KEY)
    assert files(disks) == ["layers/snap-3.qcow2", "layers/vol-2.qcow2", "snapshots/snap-3.qcow2",
                            "volumes/vol-2.qcow2"]
    assert holds(disks, disks.snapshot_path("snap-3"), 0x42, offset=1 << 20, key=KEY)


def test_an_encrypted_disk_over_a_plain_snapshot_is_never_merged_into_it(tmp_path):
    """An encrypted volume made from a plain snapshot is an encrypted overlay on the plain layer.
    When only it needs that layer, merging would write the volume's data into the plain file (in
    the clear): the plain layer stays instead. Positive control: a plain disk's layer merges."""
    disks = Disks(tmp_path / "store")
    disks.create("vol-0", 1)
    write(disks, disks.path("vol-0"), 0x51)
    disks.snapshot("vol-0", "snap-0")
    disks.clone("vol-1", 1, snapshot_id="snap-0", key=KEY)  # encrypted, on the plain layer
    disks.clone("vol-2", 1, snapshot_id="snap-0")            # plain, on the same layer
    proc = qemu_io(disks, disks.path("vol-1"), f"write -P 0x41 {1 << 20} {len(MARKER)}", KEY)
    assert proc.returncode == 0, proc.stderr
    disks.delete("vol-0")
    disks.delete_snapshot("snap-0")
    disks.snapshot("vol-1", "snap-1", key=KEY)
    disks.delete_snapshot("snap-1", key=KEY)  # vol-1's layers merge among themselves...
    disks.delete("vol-2")                     # ...and the plain layer is vol-1's alone now
    disks.delete("vol-9", key=KEY)            # (a sweep with the key, as the API's deletes run)
    chain = disks.chain(disks.layer("vol-1"))
    assert [bool(layer.get("encrypted")) for layer in chain] == [True, False]  # the plain layer stayed
    for layer in disks._layers():
        assert b"A" * len(MARKER) not in layer.read_bytes()  # no plaintext of vol-1 anywhere
    assert holds(disks, disks.path("vol-1"), 0x51, key=KEY)  # its data, through both layers
    # Control: a plain disk over a plain snapshot layer that only it needs does merge.
    disks.create("vol-3", 1)
    disks.snapshot("vol-3", "snap-3")
    disks.delete_snapshot("snap-3")
    assert len(disks.chain(disks.layer("vol-3"))) == 1


def raw_io(path, command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["qemu-io", "-f", "raw", str(path), "-c", command], capture_output=True, text=True,
                          timeout=60)


def test_shared_disks_are_raw_and_snapshot_into_qcow2(tmp_path):
    """A shared (Multi-Attach) disk is one sparse raw file; its snapshots are qcow2 layers that
    clone into plain or shared disks; share() turns a disk shared and back keeping its data."""
    disks = Disks(tmp_path / "store")
    disks.create("vol-s", 1, shared=True)
    disks.create("vol-s", 1, shared=True)  # idempotent
    raw = disks.layer("vol-s")
    assert raw.suffix == ".raw" and disks.shared("vol-s") and raw.stat().st_blocks == 0  # sparse
    assert disks.info(raw)["format"] == "raw" and disks.size("vol-s") == GIB
    with pytest.raises(ValueError):
        disks.create("vol-e", 1, KEY, shared=True)
    proc = raw_io(raw, "write -P 0x5a 1M 64k")
    assert proc.returncode == 0, proc.stderr
    disks.resize("vol-s", 2)
    assert disks.size("vol-s") == 2 * GIB and disks.layer("vol-s") == raw
    assert disks.snapshot("vol-s", "snap-s") > 0
    assert disks.layer("vol-s") == raw  # the disk goes on in the same file
    assert disks.info(disks.snapshot_layer("snap-s"))["format"] == "qcow2"
    raw_io(raw, "write -P 0x11 1M 64k")  # later writes do not reach the snapshot
    disks.clone("vol-c", 2, snapshot_id="snap-s")  # a plain clone: an overlay
    assert holds(disks, disks.path("vol-c"), 0x5a, 1 << 20)
    disks.clone("vol-d", 3, snapshot_id="snap-s", shared=True)  # a shared clone: a raw copy
    assert disks.shared("vol-d") and disks.size("vol-d") == 3 * GIB
    assert raw_io(disks.layer("vol-d"), "read -P 0x5a 1M 64k").returncode == 0
    assert "verification failed" not in raw_io(disks.layer("vol-d"), "read -P 0x5a 1M 64k").stdout
    # share() both ways keeps the data; the old file goes
    disks.share("vol-c", True)
    assert disks.shared("vol-c") and "verification failed" not in raw_io(
        disks.layer("vol-c"), "read -P 0x5a 1M 64k").stdout
    disks.share("vol-s", False)
    assert not disks.shared("vol-s") and not raw.exists()
    assert holds(disks, disks.path("vol-s"), 0x11, 1 << 20) and disks.size("vol-s") == 2 * GIB
    for d in ("vol-s", "vol-c", "vol-d"):
        disks.delete(d)
    disks.delete_snapshot("snap-s")
    assert list((tmp_path / "store" / "layers").iterdir()) == []


def test_key_files_of_dead_processes_are_swept_at_start(tmp_path):
    """A key file a killed process left in /dev/shm goes when a store opens (at start-up); a live
    process's stays (positive control), and keys in use are named so they can be swept."""
    from hypervisor import disks as disks_module

    dead = subprocess.Popen(["true"])
    dead.wait()
    key_dir = Disks._key_dir() or __import__("tempfile").gettempdir()
    orphan = os.path.join(key_dir, f"{disks_module.KEY_FILE_PREFIX}{dead.pid}-abc")
    mine = os.path.join(key_dir, f"{disks_module.KEY_FILE_PREFIX}{os.getpid()}-abc")
    for name in (orphan, mine):
        with open(name, "w") as f:
            f.write("x")
    try:
        store = Disks(tmp_path / "store")
        assert not os.path.exists(orphan) and os.path.exists(mine)
        with store._secret(KEY) as args:
            written = args[1].split("file=")[1].split(",")[0]
            assert os.path.basename(written).startswith(f"{disks_module.KEY_FILE_PREFIX}{os.getpid()}-")
        assert not os.path.exists(written)
    finally:
        for name in (orphan, mine):
            if os.path.exists(name):
                os.unlink(name)
