"""libvirt XML, built with ElementTree: the domain of an instance, a disk to hot-plug, a secret.

qemu runs as root without relabelling (`<seclabel>`): libvirt's dynamic ownership would otherwise
chown the shared base images and kernels to libvirt-qemu (FACTS.md).

PCI slots carry the EBS device letter (Amazon Linux on Nitro names `/dev/sdf` from the NVMe
controller; here the guest's images name it from the slot, see guest/tiny/usr/sbin/ec2emu-ebs-names):
the NIC and rng sit in slots 2 and 3 (NICs at device index 1 and 2 in 4 and 31), the disk for
letter L in slot 5 + (L - 'a'), the root disk being 'a' (slot 5), 'z' slot 30. A disk's serial is
the Nitro form of its volume id (`vol` and 17 hex digits, no dash: virtio-blk serials are 20
bytes, and a 21-byte `vol-...` arrives cut to 20).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
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
    root_disk: str | None        # an instance-store root's file (letter 'a'); None: the root is in `disks`
    bridge: str | None           # root-namespace bridge the NIC's tap joins; None: no NIC (a checkpoint)
    mac: str
    console_log: str
    kernel: str | None = None
    initrd: str | None = None
    tb_cache_mib: int = 0        # TCG translation cache (domain type 'qemu' only)
    disks: list[str] = field(default_factory=list)  # <disk> XML (disk()), a root volume first
    cmdline: str = KERNEL_CMDLINE


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
        _el(os_, "cmdline", spec.cmdline)
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
    if spec.root_disk:
        devices.append(disk_element(spec.root_disk, "vda", letter="a"))
    for xml in spec.disks:
        devices.append(fromstring(xml))
    if spec.bridge is not None:
        devices.append(nic_element(spec.mac, spec.bridge, 0))
    # A pty (the web console's serial console types into it: Driver.open_serial), its output
    # also logged to the console file (GetConsoleOutput) by virtlogd.
    serial = _el(devices, "serial", type="pty")
    _el(serial, "log", file=spec.console_log, append="on")
    _el(serial, "target", port="0")
    rng = _el(devices, "rng", model="virtio")
    _el(rng, "backend", "/dev/urandom", model="random")
    _pci(rng, RNG_SLOT)
    _el(devices, "memballoon", model="none")
    return tostring(d, encoding="unicode")


NIC_SLOT, RNG_SLOT = 2, 3
# The slots of the NICs at device index 0, 1, 2: the ones the disks' letters leave free.
NIC_SLOTS = (NIC_SLOT, 4, 31)


def nic_element(mac: str, bridge: str, device_index: int) -> Element:
    """A virtio NIC on a root-namespace bridge, in its device index's slot (ValueError beyond
    the slots there are)."""
    if not 0 <= device_index < len(NIC_SLOTS):
        raise ValueError(f"device index {device_index}: this host has NIC slots for 0..{len(NIC_SLOTS) - 1}")
    nic = _el(None, "interface", type="bridge")
    _el(nic, "mac", address=mac)
    _el(nic, "source", bridge=bridge)
    _el(nic, "model", type="virtio")
    _pci(nic, NIC_SLOTS[device_index])
    return nic


def nic(mac: str, bridge: str, device_index: int) -> str:
    return tostring(nic_element(mac, bridge, device_index), encoding="unicode")


def nics(domain_xml: str) -> dict[str, Element]:
    """MAC (lower case) -> <interface> element, of a domain's XML."""
    out = {}
    for e in fromstring(domain_xml).iterfind("devices/interface"):
        mac = e.find("mac")
        if mac is not None and mac.get("address"):
            out[mac.get("address").lower()] = e
    return out
FIRST_DISK_SLOT = 5  # letter 'a' (the root disk); 'b'..'z' follow: slots 6..30 of the 32
LETTERS = "abcdefghijklmnopqrstuvwxyz"
_DEVICE = re.compile(r"(?:/dev/)?(?:sd|xvd|vd|hd)([a-z])")


def _pci(parent: Element, slot: int) -> Element:
    return _el(parent, "address", type="pci", domain="0x0000", bus="0x00", slot=f"0x{slot:02x}", function="0x0")


def device_letter(device: str) -> str:
    """The letter of an EBS device name: '/dev/sdf', 'xvdf', 'sdf' -> 'f'. ValueError for a name
    that is not one disk letter (a partition like /dev/sda1 names the root, 'a')."""
    m = _DEVICE.fullmatch(device)
    if not m:
        raise ValueError(f"device name {device!r}: /dev/sdX or /dev/xvdX expected")
    return m.group(1)


def serial(disk_id: str) -> str:
    """The virtio serial of a volume: Nitro's form, 'vol-0123456789abcdef0' -> 'vol0123456789abcdef0'
    (20 bytes, what virtio-blk carries). Other ids are kept (cut to 20 by the guest if longer)."""
    return "vol" + disk_id[4:] if disk_id.startswith("vol-") else disk_id


def disk_id_of(serial_: str) -> str:
    """serial() reversed: 'vol0123...' -> 'vol-0123...'."""
    return "vol-" + serial_[3:] if serial_.startswith("vol") and not serial_.startswith("vol-") else serial_


def disk_element(path: str, target: str, serial_: str | None = None, secret_uuid: str | None = None,
                 letter: str | None = None, backing: list[tuple[str, str, bool]] | None = None,
                 shared: bool = False) -> Element:
    """A virtio <disk>. `backing`: its backing chain, (path, format, encrypted) from the top's
    backing down, given when a layer is encrypted (libvirt cannot open those by itself: each needs
    the secret; all layers of one disk share its key). `shared`: a Multi-Attach disk, a raw file
    several guests open at once: `<shareable/>` (QEMU then shares its image lock, which every
    holder must ask for) and no host cache (each guest's writes reach the file at once, so the
    others read them)."""
    disk = _el(None, "disk", type="file", device="disk")
    if shared:
        _el(disk, "driver", name="qemu", type="raw", cache="none", io="native")
    else:
        _el(disk, "driver", name="qemu", type="qcow2")
    source = _el(disk, "source", file=path)
    if secret_uuid:
        _el(_el(source, "encryption", format="luks"), "secret", type="passphrase", uuid=secret_uuid)
    if backing is not None:
        parent = disk
        for layer, fmt, encrypted in backing:
            parent = _el(parent, "backingStore", type="file")
            _el(parent, "format", type=fmt)
            src = _el(parent, "source", file=layer)
            if encrypted and secret_uuid:
                _el(_el(src, "encryption", format="luks"), "secret", type="passphrase", uuid=secret_uuid)
        _el(parent, "backingStore")
    _el(disk, "target", dev=target, bus="virtio")
    if serial_:
        _el(disk, "serial", serial(serial_))
    if shared:
        _el(disk, "shareable")
    if letter:
        _pci(disk, FIRST_DISK_SLOT + LETTERS.index(letter))
    return disk


def disk(path: str, target: str, disk_id: str, secret_uuid: str | None = None, letter: str | None = None,
         backing: list[tuple[str, str, bool]] | None = None, shared: bool = False) -> str:
    """A virtio disk for attachDeviceFlags; the guest finds it by its serial (serial(disk_id)) and
    its EBS name by its slot (`letter`; the target name is only a hint: FACTS.md)."""
    return tostring(disk_element(path, target, disk_id, secret_uuid, letter, backing, shared), encoding="unicode")


def letter_of(element: Element) -> str | None:
    """The EBS device letter a <disk> element's PCI slot carries, None if it has none."""
    address = element.find("address")
    if address is None or address.get("type") != "pci" or int(address.get("bus", "0"), 0) != 0:
        return None
    index = int(address.get("slot", "0"), 0) - FIRST_DISK_SLOT
    return LETTERS[index] if 0 <= index < len(LETTERS) else None


def free_letter(domain_xml: str, first: str = "f") -> str:
    """The first device letter from `first` (AWS suggests f..p) whose slot no device uses."""
    used = {int(a.get("slot", "0"), 0) for a in fromstring(domain_xml).iterfind("devices/*/address")
            if a.get("type") == "pci" and int(a.get("bus", "0"), 0) == 0}
    for c in LETTERS[LETTERS.index(first):] + LETTERS[1:LETTERS.index(first)]:
        if FIRST_DISK_SLOT + LETTERS.index(c) not in used:
            return c
    raise ValueError("no free device letter")


def letter_in_use(domain_xml: str, letter: str) -> bool:
    slot = FIRST_DISK_SLOT + LETTERS.index(letter)
    return any(a.get("type") == "pci" and int(a.get("bus", "0"), 0) == 0 and int(a.get("slot", "0"), 0) == slot
               for a in fromstring(domain_xml).iterfind("devices/*/address"))


def disk_snapshot(domain_xml: str, target: str, new_layer: str, secret_uuid: str | None = None) -> str:
    """A disk-only external snapshot of one disk (`target`) into `new_layer`; every other disk of
    the domain is left out (snapshot='no'), as libvirt would otherwise snapshot them all."""
    snap = _el(None, "domainsnapshot")
    disks_ = _el(snap, "disks")
    for d in fromstring(domain_xml).iterfind("devices/disk"):
        dev = d.find("target").get("dev")
        if dev != target:
            _el(disks_, "disk", name=dev, snapshot="no")
            continue
        disk_ = _el(disks_, "disk", name=dev, snapshot="external", type="file")
        _el(disk_, "driver", type="qcow2")
        source = _el(disk_, "source", file=new_layer)
        if secret_uuid:
            _el(_el(source, "encryption", format="luks"), "secret", type="passphrase", uuid=secret_uuid)
    return tostring(snap, encoding="unicode")


def volume_secret(uuid: str, path: str) -> str:
    """A libvirt secret (usage 'volume') holding a LUKS disk's passphrase, in libvirtd's memory
    only (ephemeral: a persistent secret's value lies in /etc/libvirt/secrets, unwrapped)."""
    s = _el(None, "secret", ephemeral="yes", private="yes")
    _el(s, "uuid", uuid)
    _el(_el(s, "usage", type="volume"), "volume", path)
    return tostring(s, encoding="unicode")


def disks(domain_xml: str) -> dict[str, tuple[str, Element]]:
    """disk id -> (target dev, <disk> element) of a domain's disks that have a serial (read back
    with disk_id_of)."""
    found = {}
    for d in fromstring(domain_xml).iterfind("devices/disk"):
        serial_, target = d.findtext("serial"), d.find("target")
        if serial_ and target is not None:
            found[disk_id_of(serial_)] = (target.get("dev"), d)
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
