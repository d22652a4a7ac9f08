"""The checkpoint file's header, rewritten for an instance (hypervisor/checkpoints.py), on a file
laid out as libvirt writes one (src/qemu/qemu_saveimage.c); the real thing is in
tests/test_checkpoint_guests.py."""
from __future__ import annotations

import os
import time
from xml.etree.ElementTree import fromstring

import pytest

from hypervisor import checkpoints
from hypervisor.checkpoints import HEADER, MAGIC, CheckpointError

SAVED = """<domain type='qemu'>
  <name>ec2emu-checkpoint-abc</name>
  <uuid>ec2aaaaa-0000-0000-0000-000000000000</uuid>
  <title>ec2emu ec2emu-checkpoint-abc t2.micro</title>
  <sysinfo type='smbios'><system>
    <entry name='serial'>ec2aaaaa-0000-0000-0000-000000000000</entry>
    <entry name='uuid'>ec2aaaaa-0000-0000-0000-000000000000</entry>
  </system></sysinfo>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
      <source file='/ckpt/placeholder.qcow2'/><target dev='vda' bus='virtio'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x05' function='0x0'/></disk>
    <serial type='file'><source path='/ckpt/console.log' append='on'/></serial>
    <console type='file'><source path='/ckpt/console.log' append='on'/></console>
  </devices>
</domain>"""
COOKIE = b"<cookie><cpu/></cookie>\0"
STREAM = os.urandom(3000) + b"QEVM" * 1000


def _save_file(path, xml: str = SAVED, room: int = 64 * 1024, fmt: int = 0):
    body = xml.encode() + b"\0"
    data_len = len(body) + len(COOKIE) + room
    with open(path, "wb") as f:
        f.write(HEADER.pack(MAGIC, 2, data_len, 1, fmt, len(body)))
        f.write(body + COOKIE + b"\0" * room)
        f.write(STREAM)
    return path


def test_a_copy_carries_the_new_xml_the_same_cookie_and_the_same_state(tmp_path):
    saved = _save_file(tmp_path / "c.save")
    copy = tmp_path / "i.save"
    checkpoints.write_copy(saved, copy, "<domain><name>i-1</name></domain>")
    fields, xml, cookie = checkpoints.read_header(copy)
    assert xml == "<domain><name>i-1</name></domain>" and cookie == COOKIE
    assert fields[:5] == checkpoints.read_header(saved)[0][:5]  # magic, version, data_len, running, format
    assert copy.read_bytes().endswith(STREAM) and copy.stat().st_size == saved.stat().st_size
    assert not (tmp_path / "i.save.partial").exists()


def test_an_xml_too_big_for_the_header_is_refused(tmp_path):
    saved = _save_file(tmp_path / "c.save", room=10)
    with pytest.raises(CheckpointError):
        checkpoints.write_copy(saved, tmp_path / "i.save", "<domain>" + "x" * (len(SAVED) + 100) + "</domain>")


@pytest.mark.parametrize("magic, fmt", [(b"LibvirtQemudPart", 0), (MAGIC, 1)])
def test_an_unfinished_or_compressed_file_is_refused(tmp_path, magic, fmt):
    path = _save_file(tmp_path / "c.save", fmt=fmt)
    if magic != MAGIC:
        data = bytearray(path.read_bytes())
        data[:16] = magic
        path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError):
        checkpoints.read_header(path)


def test_the_instance_xml_names_the_instance_and_keeps_the_disk_address():
    root = fromstring("<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
                      "<source file='/state/instances/i-1/root.qcow2'/><target dev='vda' bus='virtio'/>"
                      "<serial>vol0123</serial>"
                      "<address type='pci' domain='0x0000' bus='0x00' slot='0x07' function='0x0'/></disk>")
    xml = checkpoints.instance_xml(SAVED, name="i-1", uuid_="ec2bbbbb-1111-1111-1111-111111111111",
                                   title="ec2emu i-1 t2.micro", console_log="/state/instances/i-1/console.log",
                                   root_disk=root)
    d = fromstring(xml)
    assert d.findtext("name") == "i-1" and d.findtext("uuid") == "ec2bbbbb-1111-1111-1111-111111111111"
    assert {e.text for e in d.iterfind("sysinfo/system/entry")} == {"ec2bbbbb-1111-1111-1111-111111111111"}
    assert {s.get("path") for s in d.iterfind("devices/*/source") if s.get("path")} == {
        "/state/instances/i-1/console.log"}
    (disk,) = d.iterfind("devices/disk")
    assert disk.find("source").get("file") == "/state/instances/i-1/root.qcow2"
    assert disk.findtext("serial") == "vol0123"
    assert disk.find("address").get("slot") == "0x05"  # the checkpoint's, not the definition's


def test_a_timed_out_build_is_tried_again_later_other_refusals_stay(tmp_path):
    store = checkpoints.Checkpoints(tmp_path, conn=lambda: None)
    (tmp_path / "k1.unsupported").write_text(f"{checkpoints.TIMED_OUT} 60 s, its ramdisk never said ...\n")
    (tmp_path / "k2.unsupported").write_text("its kernel's random generator was ready\n")
    assert store.unsupported("k1") and store.unsupported("k2")
    old = time.time() - checkpoints.RETRY_AFTER - 10
    for k in ("k1", "k2"):
        os.utime(tmp_path / f"{k}.unsupported", (old, old))
    assert store.unsupported("k1") is None and store.unsupported("k2")
    assert store.unsupported("k3") is None


def test_a_pty_serial_gets_the_instances_log_and_a_new_pty():
    """The serial port is a pty (the web console types into it) logged to the console file: the
    restore makes a new pty (the checkpoint's is dropped) and logs to the instance's file."""
    saved = SAVED.replace(
        "<serial type='file'><source path='/ckpt/console.log' append='on'/></serial>",
        "<serial type='pty'><source path='/dev/pts/7'/><log file='/ckpt/console.log' append='on'/>"
        "<target port='0'/></serial>").replace(
        "<console type='file'><source path='/ckpt/console.log' append='on'/></console>",
        "<console type='pty' tty='/dev/pts/7'><source path='/dev/pts/7'/><log file='/ckpt/console.log' "
        "append='on'/><target type='serial' port='0'/></console>")
    root = fromstring("<disk type='file' device='disk'><source file='/state/i-1/root.qcow2'/>"
                      "<target dev='vda' bus='virtio'/></disk>")
    d = fromstring(checkpoints.instance_xml(saved, name="i-1", uuid_="ec2bbbbb-1111-1111-1111-111111111111",
                                            title="t", console_log="/state/i-1/console.log", root_disk=root))
    for device in ("serial", "console"):
        (dev,) = d.iterfind(f"devices/{device}")
        assert dev.get("type") == "pty" and dev.find("source") is None and dev.get("tty") is None
        assert dev.find("log").get("file") == "/state/i-1/console.log"
