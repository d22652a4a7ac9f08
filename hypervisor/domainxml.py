"""libvirt XML, built with ElementTree: the domain of an instance, a disk to hot-plug, a secret.

qemu runs as root without relabelling (`<seclabel>`): libvirt's dynamic ownership would otherwise
chown the shared base images and kernels to libvirt-qemu (FACTS.md)."""
from __future__ import annotations

from dataclasses import dataclass
from xml.etree.ElementTree import Element, SubElement, fromstring, tostring

from .imagebuild import KERNEL_CMDLINE


def _el(parent: Element | None, tag: str, text: str | None = None, **attrs: str) -> Element:
    e = Element(tag, attrs) if parent is None else SubElement(parent, tag, attrs)
    if text is not None:
        e.text = text
    return e


@dataclass
class DomainSpec:
    name: str
    uuid: str                    # also the SMBIOS system uuid and serial (starts with 'ec2')
    domain_type: str             # 'kvm' or 'qemu' (TCG)
    memory_mib: int
    vcpus: int
    instance_type: str
    root_disk: str
    bridge: str                  # root-namespace bridge the NIC's tap joins
    mac: str
    console_log: str
    kernel: str | None = None
    initrd: str | None = None
    tb_cache_mib: int = 0        # TCG translation cache (domain type 'qemu' only)


def domain(spec: DomainSpec) -> str:
    d = _el(None, "domain", type=spec.domain_type)
    _el(d, "name", spec.name)
    _el(d, "uuid", spec.uuid)
    _el(d, "title", f"ec2emu {spec.name} {spec.instance_type}")
    _el(d, "memory", str(spec.memory_mib), unit="MiB")
    _el(d, "vcpu", str(spec.vcpus))
    sysinfo = _el(d, "sysinfo", type="smbios")
    _el(_el(sysinfo, "bios"), "entry", "Amazon EC2", name="vendor")
    system = _el(sysinfo, "system")
    for name, value in (("manufacturer", "Amazon EC2"), ("product", spec.instance_type),
                        ("serial", spec.uuid), ("uuid", spec.uuid)):
        _el(system, "entry", value, name=name)
    os_ = _el(d, "os")
    _el(os_, "type", "hvm", arch="x86_64", machine="pc")
    if spec.kernel:
        _el(os_, "kernel", spec.kernel)
        if spec.initrd:
            _el(os_, "initrd", spec.initrd)
        _el(os_, "cmdline", KERNEL_CMDLINE)
    _el(os_, "smbios", mode="sysinfo")
    features = _el(d, "features")
    _el(features, "acpi")  # ACPI: hot-plug and the power button (graceful stop)
    if spec.domain_type == "qemu" and spec.tb_cache_mib:
        _el(_el(features, "tcg"), "tb-cache", str(spec.tb_cache_mib), unit="MiB")
    _el(d, "on_poweroff", "destroy")
    _el(d, "on_reboot", "restart")
    _el(d, "on_crash", "destroy")
    _el(_el(d, "seclabel", type="static", model="dac", relabel="no"), "label", "+0:+0")
    devices = _el(d, "devices")
    devices.append(disk_element(spec.root_disk, "vda"))
    nic = _el(devices, "interface", type="bridge")
    _el(nic, "mac", address=spec.mac)
    _el(nic, "source", bridge=spec.bridge)
    _el(nic, "model", type="virtio")
    serial = _el(devices, "serial", type="file")
    _el(serial, "source", path=spec.console_log, append="on")
    _el(serial, "target", port="0")
    _el(_el(devices, "rng", model="virtio"), "backend", "/dev/urandom", model="random")
    _el(devices, "memballoon", model="none")
    return tostring(d, encoding="unicode")


def disk_element(path: str, target: str, serial: str | None = None, secret_uuid: str | None = None) -> Element:
    disk = _el(None, "disk", type="file", device="disk")
    _el(disk, "driver", name="qemu", type="qcow2")
    source = _el(disk, "source", file=path)
    if secret_uuid:
        _el(_el(source, "encryption", format="luks"), "secret", type="passphrase", uuid=secret_uuid)
    _el(disk, "target", dev=target, bus="virtio")
    if serial:
        _el(disk, "serial", serial)
    return disk


def disk(path: str, target: str, serial: str, secret_uuid: str | None = None) -> str:
    """A virtio disk for attachDeviceFlags; the guest finds it by `serial` (the target name is
    only a hint: FACTS.md)."""
    return tostring(disk_element(path, target, serial, secret_uuid), encoding="unicode")


def volume_secret(uuid: str, path: str) -> str:
    """A libvirt secret (usage 'volume') holding a LUKS disk's passphrase."""
    s = _el(None, "secret", ephemeral="no", private="yes")
    _el(s, "uuid", uuid)
    _el(_el(s, "usage", type="volume"), "volume", path)
    return tostring(s, encoding="unicode")


def disks(domain_xml: str) -> dict[str, tuple[str, Element]]:
    """serial -> (target dev, <disk> element) of a domain's disks that have a serial."""
    found = {}
    for d in fromstring(domain_xml).iterfind("devices/disk"):
        serial, target = d.findtext("serial"), d.find("target")
        if serial and target is not None:
            found[serial] = (target.get("dev"), d)
    return found


def free_target(domain_xml: str) -> str:
    """The first virtio disk name (vdb, vdc, ...) the domain does not use."""
    used = {t.get("dev") for t in fromstring(domain_xml).iterfind("devices/disk/target")}
    for c in "bcdefghijklmnopqrstuvwxyz":
        if f"vd{c}" not in used:
            return f"vd{c}"
    raise ValueError("no free virtio disk name")


def tap_devices(domain_xml: str) -> list[str]:
    return [t.get("dev") for t in fromstring(domain_xml).iterfind("devices/interface/target") if t.get("dev")]
