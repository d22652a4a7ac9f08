"""hypervisor/image_files.kind_of without a server: what RegisterImage may ask in the request
itself, from a file's head alone, running no command."""
import gzip
import subprocess

import pytest

from hypervisor import image_files
from hypervisor.image_files import KIND_HEAD, ImageFileError, kind_of


@pytest.fixture(autouse=True)
def no_commands(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"kind_of ran a command: {args}")
    monkeypatch.setattr(subprocess, "run", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)


def _kernel() -> bytes:
    head = bytearray(4096)
    head[0x202:0x206] = b"HdrS"  # the x86 boot protocol header
    return bytes(head)


@pytest.mark.parametrize("content, kind", [
    (_kernel(), "kernel"),
    (b"070701" + b"0" * 200, "ramdisk"),  # a plain cpio archive
    (gzip.compress(b"070701" + b"0" * 5000), "ramdisk"),  # a gzipped one
    (b"\x28\xb5\x2f\xfd" + b"\x00" * 100, "ramdisk"),  # zstd: trusted
    (b"QFI\xfb" + b"\x00" * 1000, "machine"),  # a qcow2 header
    (b"this is not a disk image\n" * 100, "machine"),  # whether it is a disk is the task's question
])
def test_kinds(tmp_path, content, kind):
    path = tmp_path / "f"
    path.write_bytes(content)
    assert kind_of(str(path)) == kind


def test_refusals(tmp_path):
    with pytest.raises(ImageFileError, match="no such file"):
        kind_of(str(tmp_path / "missing"))
    with pytest.raises(ImageFileError, match="not a regular file"):
        kind_of(str(tmp_path))
    gzipped = tmp_path / "disk.img.gz"
    gzipped.write_bytes(gzip.compress(b"\x00" * (4 << 20)))
    with pytest.raises(ImageFileError, match="decompress it first"):
        kind_of(str(gzipped))


def test_reads_no_more_than_its_head(tmp_path, monkeypatch):
    path = tmp_path / "big"
    path.write_bytes(b"\x00" * (4 * KIND_HEAD))
    asked = []
    real = image_files._read_head
    monkeypatch.setattr(image_files, "_read_head", lambda p, limit=10**9: asked.append(limit) or real(p, limit))
    assert kind_of(str(path)) == "machine"
    assert asked == [KIND_HEAD] and KIND_HEAD <= 64 * 1024
