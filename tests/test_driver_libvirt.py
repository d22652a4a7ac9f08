"""The libvirt driver's disk attach/detach and synchronous terminate, against the real libvirt
daemon, on a domain that is defined but never booted (no guest needed)."""
from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import threading

import pytest

from hypervisor import domainxml
from hypervisor.base import HostEvent

libvirt = pytest.importorskip("libvirt")


def _libvirt_up() -> bool:
    try:
        libvirt.open("qemu:///system").close()
        return True
    except libvirt.libvirtError:
        return False


pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("qemu-img") or not _libvirt_up(),
                                reason="needs root, qemu-img and a libvirt daemon")


@pytest.fixture
def driver(tmp_path):
    from emulator.config import Config
    from hypervisor.libvirt import LibvirtDriver
    events: list[tuple[str, str, str]] = []
    config = Config(state_dir=str(tmp_path / "state"), image_dir=str(tmp_path / "images"), domain_type="qemu",
                    network_prefix=f"ec2ed{secrets.token_hex(3)}")
    drv = LibvirtDriver(lambda iid, ev: events.append((iid, ev, threading.current_thread().name)), config)
    drv.events = events
    made: list[str] = []

    def define() -> str:
        iid = "i-" + secrets.token_hex(9)[:17]
        root = tmp_path / f"{iid}.qcow2"
        drv.disks._img("create", "-q", "-f", "qcow2", str(root), "64M")
        drv.conn.defineXML(domainxml.domain(domainxml.DomainSpec(
            name=iid, uuid=secrets.token_hex(16), domain_type="qemu", memory_mib=128, vcpus=1,
            instance_type="t3.nano", root_disk=str(root), bridge="virbr-none", mac="0a:00:00:00:00:09",
            console_log=str(tmp_path / "console.log"))))
        made.append(iid)
        return iid
    drv.define = define
    try:
        yield drv
    finally:
        for iid in made:
            dom = drv._domain(iid)
            if dom is not None:
                dom.undefine()
        for secret in drv.conn.listAllSecrets():
            if str(tmp_path) in (secret.usageID() or ""):
                secret.undefine()
        drv.network.teardown_all()
        drv.close()


def test_attach_detach_by_serial(driver):
    iid = driver.define()
    driver.create_disk("vol-0000000000000000a", 1)
    driver.create_disk("vol-0000000000000000b", 1, key=b"s" * 32)
    with pytest.raises(LookupError):
        driver.attach_disk(iid, "vol-00000000000000404")
    with pytest.raises(LookupError):
        driver.attach_disk("i-00000000000000404", "vol-0000000000000000a")
    driver.attach_disk(iid, "vol-0000000000000000a")
    driver.attach_disk(iid, "vol-0000000000000000a")  # idempotent: not twice
    driver.attach_disk(iid, "vol-0000000000000000b", key=b"s" * 32)
    xml = driver._domain(iid).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    disks = domainxml.disks(xml)
    assert set(disks) == {"vol-0000000000000000a", "vol-0000000000000000b"}
    assert {t for t, _ in disks.values()} == {"vdb", "vdc"}  # the root is vda
    enc = disks["vol-0000000000000000b"][1].find("source/encryption/secret")
    assert enc is not None  # private: libvirt hands its value to QEMU only
    assert driver.conn.secretLookupByUUIDString(enc.get("uuid")).usageID() == \
        str(driver.disks.path("vol-0000000000000000b"))
    with pytest.raises(ValueError):
        driver.delete_disk("vol-0000000000000000a")  # attached
    driver.resize_disk("vol-0000000000000000a", 2)  # offline: qemu-img
    assert driver.disks.size("vol-0000000000000000a") == 2 << 30
    driver.detach_disk(iid, "vol-0000000000000000a")
    driver.detach_disk(iid, "vol-0000000000000000a")
    assert set(domainxml.disks(driver._domain(iid).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))) == \
        {"vol-0000000000000000b"}
    driver.delete_disk("vol-0000000000000000a")
    assert not driver.disks.path("vol-0000000000000000a").exists()


def test_terminate_is_synchronous_and_keeps_volumes(driver):
    iid = driver.define()
    driver.create_disk("vol-0000000000000000c", 1)
    driver.attach_disk(iid, "vol-0000000000000000c")
    driver.terminate(iid)
    # Done on return, reported from the calling thread, not libvirt's event thread.
    assert driver._domain(iid) is None
    assert driver.events == [(iid, HostEvent.TERMINATED, threading.current_thread().name)]
    assert driver.disks.path("vol-0000000000000000c").exists()
    driver.delete_disk("vol-0000000000000000c")  # no guest holds it any more
    driver.terminate(iid)  # again: nothing left, still reported
    assert driver.events[-1][:2] == (iid, "terminated")


def test_remove_vpc_refuses_while_a_port_is_plugged(driver):
    from hypervisor.base import VpcSpec
    vpc = VpcSpec("vpc-" + secrets.token_hex(9)[:17], (("subnet-" + secrets.token_hex(9)[:17], "10.77.0.0/24"),))
    driver.ensure_vpc(vpc)
    driver.network.plug("i-" + secrets.token_hex(9)[:17], vpc.vpc_id, vpc.subnets[0][0], "0a:00:00:00:00:08",
                        "10.77.0.5", "")
    assert driver.remove_vpc(vpc.vpc_id) is False
    assert driver.network.namespace_of(vpc.vpc_id) in os.listdir("/run/netns")
    # Its firewall is applied in its namespace (ValueError for a group it was not given).
    from hypervisor.base import FirewallPort, SecurityGroupRules
    with pytest.raises(ValueError):
        driver.apply_firewall(vpc.vpc_id, [], [FirewallPort("i-0000000000000000a", "10.77.0.5", ("sg-1",))])
    driver.apply_firewall(vpc.vpc_id, [SecurityGroupRules("sg-0000000000000000a")],
                          [FirewallPort("i-0000000000000000a", "10.77.0.5", ("sg-0000000000000000a",))])
    table = subprocess.run(["ip", "netns", "exec", driver.network.namespace_of(vpc.vpc_id), "nft", "list", "table",
                            "inet", "ec2emu_sg"], capture_output=True, text=True).stdout
    assert "10.77.0.5 : jump in_0000000000000000a" in table
