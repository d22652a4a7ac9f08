"""The libvirt driver: instances are libvirt/QEMU domains booted straight from the AMI's kernel
and ramdisk, with a root volume (a disk of disks.py, like any volume) as root, or a qcow2 overlay
on the AMI's disk for an instance-store-backed one, plugged into their VPC's network
(network.py); volumes are qcow2 files (disks.py) hot-plugged with their id as virtio serial.

Every method does its host work in the calling thread (the emulator's one host worker).
libvirt's event thread only reports: a domain that started is RUNNING, one that stopped by
itself (or by stop()) is STOPPED. Termination is synchronous: terminate() destroys the domain,
cleans up, and reports TERMINATED itself; the STOPPED event its destroy causes is ignored.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from xml.etree.ElementTree import fromstring, tostring

import libvirt

from . import checkpoints, domainxml
from .base import (Driver, FirewallPort, HostEvent, InstanceSpec, InterfaceSpec, Listener, SerialConsole,
                   SecurityGroupRules, SubnetAcl, VpcSpec)
from .disks import GIB, Disks
from .host import crash_point, run
from .imagebuild import KERNEL_CMDLINE
from .names import root_bridge_name
from .network import Desired, Network, PortSpec, disable_ipv6, firewall_state

log = logging.getLogger("ec2emu.libvirt")

PRESS_EVERY_SECONDS = 2.0  # a clean shutdown takes ~3.4 s under TCG: a second press is rare
DETACH_WAIT_SECONDS = 20  # a guest acknowledges an ACPI unplug in ~0.35 s (FACTS.md); TCG is slower
FORCE_DETACH_WAIT_SECONDS = 3  # a forced detach waits this long for the guest, then gives up
CONSOLE_TAIL = 64 * 1024

_event_loop_started = False
_event_loop_lock = threading.Lock()


class _LibvirtSerial(SerialConsole):
    """A libvirt console stream, non-blocking: read and write poll it (the event loop thread
    moves its data), so a reader never holds the connection."""
    POLL = 0.02

    def __init__(self, stream):
        self.stream = stream
        self._closed = False

    def read(self, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while True:
            try:
                data = self.stream.recv(65536)
            except libvirt.libvirtError as exc:
                raise EOFError(str(exc)) from None
            if data == -2:  # nothing yet
                if time.monotonic() >= deadline:
                    return b""
                time.sleep(self.POLL)
                continue
            if not data:  # the guest's port closed (it stopped)
                raise EOFError("the serial port closed")
            return data

    def write(self, data: bytes) -> None:
        while data:
            try:
                sent = self.stream.send(data)
            except libvirt.libvirtError as exc:
                raise EOFError(str(exc)) from None
            if sent == -2:
                time.sleep(self.POLL)
                continue
            data = data[sent:]

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                self.stream.abort()
            except libvirt.libvirtError:
                pass


class _Background:
    """A call run on its own thread; `result()` waits for it (and raises what it raised)."""

    def __init__(self, fn, *args):
        self._value, self._error = None, None
        self._thread = threading.Thread(target=self._run, args=(fn, *args), daemon=True)
        self._thread.start()

    def _run(self, fn, *args) -> None:
        try:
            self._value = fn(*args)
        except BaseException as exc:  # noqa: BLE001 (handed to the caller)
            self._error = exc

    def result(self, quiet: bool = False):
        """Its value, once it returned; what it raised is raised (`quiet`: None instead)."""
        self._thread.join()
        if self._error is not None and not quiet:
            raise self._error
        return self._value


def _start_event_loop() -> None:
    """libvirt delivers domain events only through a registered event loop, run in a thread.
    It must be registered before the first connection is opened."""
    global _event_loop_started
    with _event_loop_lock:
        if _event_loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _event_loop_started = True


def smbios_uuid(instance_id: str) -> str:
    """A UUID starting with 'ec2', stable per instance: cloud-init's ds-identify then says 'AWS'."""
    digest = uuid.uuid5(uuid.NAMESPACE_URL, "ec2emu:" + instance_id).hex
    return str(uuid.UUID("ec2" + digest[3:]))


def kvm_works(kernel: str | None, timeout: float = 8.0) -> bool:
    """Try it: boot the kernel under KVM and watch for its banner on the serial port. A /dev/kvm
    that exists is not proof (PVM-flavoured KVM hangs ordinary kernels; FACTS.md)."""
    if not os.path.exists("/dev/kvm") or not kernel or not os.path.exists(kernel):
        return False
    try:
        out = run(["qemu-system-x86_64", "-accel", "kvm", "-m", "128", "-nographic", "-no-reboot",
                   "-kernel", kernel, "-append", "console=ttyS0 panic=-1 root=/dev/nonexistent",
                   "-serial", "stdio", "-monitor", "none", "-display", "none", "-nodefaults"],
                  check=False, timeout=timeout)
    except subprocess.TimeoutExpired as exc:  # killed: what it printed until then counts
        out = exc.stdout or ""
        out = out.decode(errors="replace") if isinstance(out, bytes) else out
    return "Linux version" in out


def _host_probe_file() -> Path:
    """Where this host's KVM probe result is kept until the host reboots (/run is a tmpfs),
    named for what decides it: the host kernel, the QEMU binary, the KVM device."""
    qemu = shutil.which("qemu-system-x86_64") or ""
    facts = [os.uname().release, qemu]
    for path in (qemu, "/dev/kvm"):
        try:
            st = os.stat(path)
            facts += [st.st_size, st.st_mtime_ns, st.st_rdev]
        except OSError:
            facts.append(None)
    digest = hashlib.sha256(repr(facts).encode()).hexdigest()[:16]
    return Path("/run/ec2emu") / f"domain-type-{digest}"


class LibvirtDriver(Driver):
    name = "libvirt"

    def __init__(self, listener: Listener, config, vpc_ready=None, vpc_gone=None):
        super().__init__(listener)
        self.config = config
        state = Path(config.state_dir).resolve()
        self.root = state / "instances"
        self.root.mkdir(parents=True, exist_ok=True)
        self.network = Network(str(state / "network"), prefix=config.network_prefix)
        self.disks = Disks(state)
        self.vpc_ready = vpc_ready  # called (vpc id, namespace) once a VPC's namespace exists
        self.vpc_gone = vpc_gone  # called (vpc id) before a VPC's namespace is removed
        self._domain_type: str | None = None if config.domain_type == "auto" else config.domain_type
        self._probe_lock = threading.Lock()
        self._terminating: set[str] = set()  # destroyed by terminate(): their STOPPED event is not news
        self._stops: dict[str, threading.Event] = {}  # set: stop pressing
        self._reboots: dict[str, threading.Event] = {}  # set: the guest reset (or a later reboot took over)
        self._lock = threading.Lock()
        _start_event_loop()
        self._conn = None
        self._connects = 0  # how many times a connection was opened (1 + reconnects)
        self._conn_lock = threading.Lock()
        self.conn  # noqa: B018 (opens it now: a daemon that is not there fails the start-up)
        self.checkpoints = checkpoints.Checkpoints(
            Path(config.checkpoint_dir) if config.checkpoint_dir else state / "checkpoints",
            lambda: self.conn, owner=config.network_prefix)
        self.checkpoints.remove_leftovers()
        self._probe_early()

    @property
    def conn(self):
        """The libvirt connection, opened again if the daemon went away (libvirtd restarted):
        every host action after a restart of libvirtd finds a working connection."""
        with self._conn_lock:
            if self._conn is not None:
                try:
                    if self._conn.isAlive():
                        return self._conn
                except libvirt.libvirtError:
                    pass
                log.warning("the connection to libvirt was lost: opening it again")
                try:
                    self._conn.close()
                except libvirt.libvirtError:
                    pass
                self._conn = None
            conn = libvirt.open(self.config.libvirt_uri)
            conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_event, None)
            conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_REBOOT, self._on_reboot, None)
            self._conn, self._connects = conn, self._connects + 1
            return conn

    def heal(self) -> bool:
        """See Driver.heal: the connection, then each VPC's namespace and dnsmasq."""
        before = self._connects
        self.conn  # noqa: B018 (reconnects if needed)
        for vpc_id in self.network.heal():
            log.warning("VPC %s: its network was broken (namespace or dnsmasq gone) and is repaired", vpc_id)
            if self.vpc_ready:
                self.vpc_ready(vpc_id, self.network.namespace_of(vpc_id))
        return self._connects != before

    # ------------------------------------------------------------------------------ helpers

    def _dir(self, instance_id: str) -> Path:
        return self.root / instance_id

    def _domain(self, instance_id: str):
        """The guest's domain, None if libvirt has none. Any other failure (the daemon away)
        raises: a hiccup must never read as "the guest is gone" (the reconciler would end it)."""
        try:
            return self.conn.lookupByName(instance_id)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise

    def domain_type(self, kernel: str | None) -> str:
        """'kvm' if KVM really boots a kernel here, else 'qemu' (TCG); probed once per state dir,
        and once per host boot for all state dirs (the probe takes 8 s where KVM hangs, and a
        first RunInstances soon after `serve` starts would wait for it)."""
        with self._probe_lock:
            if self._domain_type is None:
                remembered = Path(self.config.state_dir) / "domain-type"
                host_wide = _host_probe_file()
                for known in (remembered, host_wide):
                    if known.exists() and known.read_text().strip() in ("kvm", "qemu"):
                        self._domain_type = known.read_text().strip()
                        break
                else:
                    self._domain_type = "kvm" if kvm_works(kernel) else "qemu"
                    try:
                        host_wide.parent.mkdir(parents=True, exist_ok=True)
                        host_wide.write_text(self._domain_type + "\n")
                    except OSError:
                        pass
                remembered.write_text(self._domain_type + "\n")
                log.info("guests run with domain type %s", self._domain_type)
            return self._domain_type

    def _probe_early(self) -> None:
        """Probe at start, in the background, with the default images' kernel: the first
        RunInstances then need not wait for it (up to 8 s where KVM hangs)."""
        kernels = sorted(Path(self.config.public_image_dir).glob("*.vmlinuz"))
        if self._domain_type is None and kernels:
            threading.Thread(target=self.domain_type, args=(str(kernels[0]),), daemon=True,
                             name="kvm-probe").start()

    def _memory(self, spec: InstanceSpec) -> int:
        return max(self.config.min_memory_mib, int(spec.memory_mib * self.config.memory_scale))

    def _vcpus(self, spec: InstanceSpec) -> int:
        return max(1, min(spec.vcpus, self.config.max_vcpus))

    def domain_xml(self, spec: InstanceSpec, root_disk: Path | None, bridge: str) -> str:
        return domainxml.domain(domainxml.DomainSpec(
            name=spec.instance_id, uuid=smbios_uuid(spec.instance_id), domain_type=self.domain_type(spec.kernel_path),
            memory_mib=self._memory(spec), vcpus=self._vcpus(spec),
            instance_type=spec.instance_type, root_disk=str(root_disk) if root_disk else None, bridge=bridge,
            mac=spec.mac_address, console_log=str(self._dir(spec.instance_id) / "console.log"),
            kernel=spec.kernel_path, initrd=spec.ramdisk_path, tb_cache_mib=self.config.tcg_tb_cache_mib,
            disks=self._defined_disks(spec)))

    def _defined_disks(self, spec: InstanceSpec) -> list[str]:
        """The <disk>s a new definition has besides an instance-store root: the root volume first
        (target vda, letter 'a': the kernel mounts root=/dev/vda), the other volumes and the
        instance-store disks in the slots of their device letters."""
        out, targets = [], iter(f"vd{c}" for c in "bcdefghijklmnopqrstuvwxyz")
        for disk in sorted(spec.disks, key=lambda d: d.disk_id != spec.root_disk):
            root = disk.disk_id == spec.root_disk
            letter = "a" if root else domainxml.device_letter(disk.device)
            out.append(self._disk_xml(disk.disk_id, "vda" if root else next(targets), letter, disk.key))
        for disk in spec.instance_store:
            out.append(domainxml.disk(str(self._store_path(spec.instance_id, disk)), next(targets), "",
                                      letter=domainxml.device_letter(disk.device)))
        return out

    def _store_path(self, instance_id: str, disk) -> Path:
        return self._dir(instance_id) / f"{disk.disk_id}.qcow2"

    # ---------------------------------------------------------------------------- lifecycle

    def start(self, spec: InstanceSpec) -> None:
        """See Driver.start."""
        marks = [("", time.monotonic())]  # where a start's time goes (the log line at the end)
        directory = self._dir(spec.instance_id)
        directory.mkdir(parents=True, exist_ok=True)
        root = None
        if spec.root_disk is None:  # instance store: the root is an overlay on the image, ours
            root = directory / "root.qcow2"
            if not spec.image_path:
                raise RuntimeError(f"{spec.instance_id} has no image disk")
            if not root.exists() and self._domain(spec.instance_id) is not None:
                log.warning("%s: its root disk %s was missing (deleted behind our back): a new one is made "
                            "from its image; what the old one held is lost", spec.instance_id, root)
            self.disks.overlay(root, spec.image_path)
        else:
            self.disks.layer(spec.root_disk)  # LookupError if the root volume is not there
        for disk in spec.instance_store:  # blank, local: made once, gone with the instance
            path = self._store_path(spec.instance_id, disk)
            if not path.exists():
                partial = path.with_name(path.name + ".partial")
                run(["qemu-img", "create", "-q", "-f", "qcow2", str(partial), str(disk.size_gib * GIB)])
                os.replace(partial, path)
        marks.append(("disks", time.monotonic()))
        # Defined before its network exists: the definition only names the port's bridge.
        dom = self._domain(spec.instance_id)
        if dom is None:
            dom = self.conn.defineXML(self.domain_xml(spec, root, root_bridge_name(spec.instance_id)))
        elif not dom.isActive():
            for disk in spec.disks:  # encrypted volumes: their keys (libvirt keeps them in memory
                if disk.key is not None:  # only), and their chains may have merged while it was off
                    self._secret(disk.disk_id, disk.key)
                    self._sync_definitions(disk.disk_id, disk.key)
        for nic in spec.interfaces:  # attached while it had no definition yet (or lost from it)
            self._define_nic(dom, nic, libvirt.VIR_DOMAIN_XML_INACTIVE, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
        marks.append(("definition", time.monotonic()))
        # The guest is started while its ports are made (each takes a few tenths of a second),
        # and runs only once they are whole: a restore needs no network until its NICs are
        # plugged (the guest waits for its NIC); a cold boot starts paused, its taps in their
        # ports' bridges (made first), and is resumed after.
        restoring = booting = None
        if not dom.isActive():
            saved = self._checkpoint_for(spec)
            if saved is not None:
                restoring = _Background(self._restore, spec, dom, *saved)
            else:
                for port_id in (spec.instance_id, *(nic.port_id for nic in spec.interfaces)):
                    self.network.port_bridge(port_id)
                booting = _Background(dom.createWithFlags, libvirt.VIR_DOMAIN_START_PAUSED)
        try:
            with self.network.locked():  # its VPC (re)made and the port plugged in one go
                self.ensure_vpc(spec.vpc(), repair=False)
                self.network.plug(spec.instance_id, spec.vpc_id, spec.subnet_id, spec.mac_address,
                                  spec.private_ip, spec.hostname, spec.secondary_ips,
                                  source_dest_check=spec.source_dest_check)
                for nic in spec.interfaces:
                    self._plug_interface(spec.instance_id, nic)
                if spec.public_ip:
                    self.map_address(spec.vpc_id, spec.public_ip, spec.private_ip, spec.public_hostname)
        except BaseException:
            restored = restoring is not None and restoring.result(quiet=True)
            started = booting is not None and booting.result(quiet=True) is not None
            if restored or started:  # a guest, but with no network
                self._destroy_unstarted(spec.instance_id, dom)
            raise
        marks.append(("network", time.monotonic()))
        if restoring is not None or booting is not None:
            if restoring is not None and restoring.result() and self._plug_restored(spec, dom):
                marks.append(("restore", time.monotonic()))
            elif booting is not None:
                booting.result()  # what the start raised, as dom.create() would
                try:
                    self._disable_tap_ipv6(dom)  # before the guest's first frame
                    dom.resume()
                except BaseException:
                    self._destroy_unstarted(spec.instance_id, dom)
                    raise
                marks.append(("boot", time.monotonic()))
            else:  # the restore failed
                dom.create()  # the STARTED event reports RUNNING
                marks.append(("boot", time.monotonic()))
            if booting is None:  # (a resumed boot's taps were done before it ran)
                self._disable_tap_ipv6(dom)
            log.info("%s started in %.2f s: %s", spec.instance_id, marks[-1][1] - marks[0][1],
                     ", ".join(f"{what} {t - marks[i][1]:.2f}" for i, (what, t) in enumerate(marks[1:])))
        else:
            self.report(spec.instance_id, HostEvent.RUNNING)

    # --------------------------------------------------------------------------- checkpoints

    CHECKPOINT_CMDLINE = f"{KERNEL_CMDLINE} {checkpoints.FLAG}"

    def _checkpoint_key(self, spec: InstanceSpec) -> str | None:
        """The key of the checkpoint `spec` could start from; None where it boots cold anyway
        (no kernel and ramdisk of ours to stop in)."""
        if not (self.config.checkpoints and spec.kernel_path and spec.ramdisk_path):
            return None
        return self.checkpoints.key(spec.kernel_path, spec.ramdisk_path, self._memory(spec), self._vcpus(spec),
                                    self.domain_type(spec.kernel_path), self.config.tcg_tb_cache_mib,
                                    self.CHECKPOINT_CMDLINE, spec.instance_type)

    def _checkpoint_domain(self, spec: InstanceSpec, name: str, placeholder: str, console_log: str) -> str:
        """The checkpoint boot: an instance of `spec`'s kind with a placeholder root and no NIC."""
        return domainxml.domain(domainxml.DomainSpec(
            name=name, uuid=smbios_uuid(name), domain_type=self.domain_type(spec.kernel_path),
            memory_mib=self._memory(spec), vcpus=self._vcpus(spec), instance_type=spec.instance_type,
            root_disk=placeholder, bridge=None, mac="", console_log=console_log, kernel=spec.kernel_path,
            initrd=spec.ramdisk_path, tb_cache_mib=self.config.tcg_tb_cache_mib, cmdline=self.CHECKPOINT_CMDLINE))

    def _checkpoint_for(self, spec: InstanceSpec) -> tuple[str, Path] | None:
        """(key, file) of the built checkpoint `spec` can be restored from. None where it boots
        cold: its kind has none (one is then built in the background, for the next) or cannot."""
        key = self._checkpoint_key(spec)
        if key is None:
            return None
        saved = self.checkpoints.ready(key)
        if saved is None:
            self.checkpoints.build_soon(key, lambda *a: self._checkpoint_domain(spec, *a))
            return None
        return key, saved

    def _restore(self, spec: InstanceSpec, dom, key: str, saved: Path) -> bool:
        """Start the defined, inactive domain from checkpoint `key` (hypervisor/checkpoints.py):
        restore a copy named for it (then `_plug_restored` hot-plugs the NICs and disks the
        checkpoint lacks). False where the restore failed: the caller boots it cold."""
        persistent = fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        devices = persistent.find("devices")
        disks = list(devices.iterfind("disk"))
        root = [d for d in disks if d.find("target").get("dev") == "vda"]
        copy = self._dir(spec.instance_id) / "checkpoint.save"
        started = time.monotonic()
        try:
            _, saved_xml, _ = checkpoints.read_header(saved)
            xml = checkpoints.instance_xml(
                saved_xml, name=spec.instance_id, uuid_=persistent.findtext("uuid"),
                title=persistent.findtext("title") or "", console_log=str(self._dir(spec.instance_id) / "console.log"),
                root_disk=root[0])
            checkpoints.write_copy(saved, copy, xml)
            with open(self._dir(spec.instance_id) / "console.log", "ab") as console:  # its boot, so far
                console.write(self.checkpoints.console_path(key).read_bytes())
            self.conn.restoreFlags(str(copy), None, 0)  # the STARTED event reports RUNNING
        except (libvirt.libvirtError, checkpoints.CheckpointError, OSError, IndexError) as exc:
            log.warning("%s: not restored from checkpoint %s (%s): booting it cold", spec.instance_id, key, exc)
            return False
        finally:
            copy.unlink(missing_ok=True)
        log.info("%s restored from checkpoint %s in %.2f s", spec.instance_id, key, time.monotonic() - started)
        return True

    def _destroy_unstarted(self, instance_id: str, dom) -> None:
        """Destroy a guest whose start failed after libvirt started it; its STOPPED event is not
        news (the start's failure is)."""
        with self._lock:
            self._terminating.add(instance_id)
        dom.destroy()

    @staticmethod
    def _disable_tap_ipv6(dom) -> None:
        """The taps live in the root namespace: without this each would get an IPv6 link-local
        address and speak neighbour discovery onto the guest's link."""
        for tap in domainxml.tap_devices(dom.XMLDesc()):
            disable_ipv6(tap)

    def _plug_restored(self, spec: InstanceSpec, dom) -> bool:
        """Hot-plug into a restored guest what its checkpoint lacks: the NICs (the guest waits
        for eth0; their ports exist now) and the disks but the root. False, the guest destroyed,
        when one cannot be plugged: the caller boots it cold."""
        persistent = fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        devices = persistent.find("devices")
        disks = [d for d in devices.iterfind("disk") if d.find("target").get("dev") != "vda"]
        try:
            for device in [*devices.iterfind("interface"), *disks]:
                dom.attachDeviceFlags(tostring(device, encoding="unicode"), libvirt.VIR_DOMAIN_AFFECT_LIVE)
        except libvirt.libvirtError as exc:
            log.warning("%s: restored, but a device could not be plugged (%s): booting it cold",
                        spec.instance_id, exc)
            self._destroy_unstarted(spec.instance_id, dom)
            return False
        return True

    def stop(self, instance_id: str, force: bool = False) -> None:
        """See Driver.stop."""
        self.network.unmap_instance(instance_id)  # AWS releases a stopped instance's public IP
        dom = self._domain(instance_id)
        if dom is None or not dom.isActive():
            self.report(instance_id, HostEvent.STOPPED)
            return
        if force:
            dom.destroy()  # the STOPPED event reports it
            return
        # The ACPI power button, pressed again until the guest is off (see _keep_pressing); forced
        # off after stop_timeout_seconds.
        stopped = threading.Event()
        self._cancel_force_off(instance_id)  # an earlier stop's or a reboot's presser ends first
        dom.shutdown()  # the guest powers off and the STOPPED event follows
        with self._lock:
            self._stops[instance_id] = stopped
        self._keep_pressing(instance_id, stopped, "shutdown", lambda d: d.shutdown(), "forcing it off",
                            lambda d: d.destroy())  # (the STOPPED event reports it)

    def _keep_pressing(self, instance_id: str, done: threading.Event, what: str, press, last_resort_is: str,
                       last_resort) -> None:
        """In a thread of its own: press(dom) every PRESS_EVERY_SECONDS until `done` is set or the
        guest is off, and last_resort(dom) once stop_timeout_seconds have passed. Pressed again
        because a press that reaches a guest before its acpid runs (soon after 'running', while
        it still boots) is lost: one press would leave such a guest to the last resort."""
        def run() -> None:
            deadline = time.monotonic() + self.config.stop_timeout_seconds
            while not done.wait(min(PRESS_EVERY_SECONDS, max(0.0, deadline - time.monotonic()))):
                d = self._domain(instance_id)
                if d is None or not d.isActive():
                    return
                if done.is_set():  # cancelled while this round looked the domain up
                    return
                if time.monotonic() >= deadline:
                    log.warning("%s ignored ACPI %s for %ss: %s", instance_id, what,
                                self.config.stop_timeout_seconds, last_resort_is)
                    last_resort(d)
                    return
                press(d)
        threading.Thread(target=run, name=f"{what}-{instance_id}", daemon=True).start()

    def _cancel_force_off(self, instance_id: str) -> None:
        """The guest stopped (or is to stop): neither an earlier stop's force-off deadline nor a
        reboot's presses may hit it or a later boot (a reboot press would turn a stop into a
        reboot: libvirt restarts a guest that powers off after one)."""
        with self._lock:
            pressers = [self._stops.pop(instance_id, None), self._reboots.pop(instance_id, None)]
        for done in pressers:
            if done is not None:
                done.set()

    def reboot(self, instance_id: str) -> None:
        """See Driver.reboot."""
        dom = self._domain(instance_id)
        if dom is None or not dom.isActive():
            return
        # As AWS does: the ACPI power button (libvirt turns the guest's power-off into a reset),
        # pressed again until the guest resets (libvirt's reboot event), a hard reset after
        # stop_timeout_seconds.
        rebooted = threading.Event()
        with self._lock:
            earlier = self._reboots.pop(instance_id, None)
            self._reboots[instance_id] = rebooted
        if earlier is not None:
            earlier.set()  # that reboot's presser stops: this one takes over
        dom.reboot(libvirt.VIR_DOMAIN_REBOOT_ACPI_POWER_BTN)
        self._keep_pressing(instance_id, rebooted, "reboot",
                            lambda d: d.reboot(libvirt.VIR_DOMAIN_REBOOT_ACPI_POWER_BTN), "resetting it",
                            lambda d: d.reset())

    def terminate(self, instance_id: str) -> None:
        """See Driver.terminate: all of it here, in the calling thread."""
        self._cancel_force_off(instance_id)
        dom = self._domain(instance_id)
        if dom is not None:
            if dom.isActive():
                with self._lock:
                    self._terminating.add(instance_id)
                try:
                    dom.destroy()  # synchronous: the guest is off when it returns
                except libvirt.libvirtError:
                    if dom.isActive():
                        raise
            try:
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
            except libvirt.libvirtError:
                dom.undefine()
        crash_point(self.config, "terminate:after-undefine")  # tests: a crash mid-teardown
        vpc_id = self.network.unplug(instance_id)
        if vpc_id:
            self.remove_vpc(vpc_id)  # a VPC with no guests needs no namespace
        shutil.rmtree(self._dir(instance_id), ignore_errors=True)
        self.report(instance_id, HostEvent.TERMINATED)

    # ----------------------------------------------------------------------------- events

    def _on_event(self, conn, dom, event, detail, opaque) -> None:
        """libvirt's event thread: report, never act on the host."""
        instance_id = dom.name()
        if not instance_id.startswith("i-"):
            return
        try:
            if event == libvirt.VIR_DOMAIN_EVENT_STARTED:
                self.report(instance_id, HostEvent.RUNNING)
            elif event == libvirt.VIR_DOMAIN_EVENT_STOPPED:
                self._cancel_force_off(instance_id)
                with self._lock:
                    ending = instance_id in self._terminating
                    self._terminating.discard(instance_id)
                if not ending:
                    self.report(instance_id, HostEvent.STOPPED)
        except Exception:
            log.exception("handling libvirt event %s for %s", event, instance_id)

    def _on_reboot(self, conn, dom, opaque) -> None:
        """libvirt's event thread: the guest reset itself (a reboot it was asked for happened)."""
        with self._lock:
            rebooted = self._reboots.get(dom.name())
        if rebooted is not None:
            rebooted.set()

    # ------------------------------------------------------------------------------ state

    def reconcile_host(self, specs: list[InstanceSpec]) -> None:
        """See Driver.reconcile_host."""
        vpcs = {s.vpc_id: s.vpc() for s in specs}
        ports = [PortSpec(s.instance_id, s.vpc_id, s.subnet_id, s.mac_address, s.private_ip, s.hostname,
                          s.public_ip, s.public_hostname, s.secondary_ips,
                          source_dest_check=s.source_dest_check) for s in specs]
        ports += [PortSpec(n.port_id, n.vpc_id, n.subnet_id, n.mac, n.ip, n.hostname, secondary_ips=n.secondary_ips,
                           owner=s.instance_id, source_dest_check=n.source_dest_check)
                  for s in specs for n in s.interfaces]
        self.network.sync(Desired(vpcs=list(vpcs.values()), ports=ports))
        if self.vpc_ready:
            for vpc_id in vpcs:
                self.vpc_ready(vpc_id, self.network.namespace_of(vpc_id))

    def state(self, instance_id: str) -> str | None:
        """See Driver.state."""
        dom = self._domain(instance_id)
        if dom is None:
            return None
        return "running" if dom.isActive() else "stopped"

    def console_output(self, instance_id: str) -> bytes:
        path = self._dir(instance_id) / "console.log"
        try:
            with open(path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - CONSOLE_TAIL))
                return f.read()
        except FileNotFoundError:
            return b""

    def open_serial(self, instance_id: str) -> "_LibvirtSerial":
        """See Driver.open_serial: the guest's pty serial port through libvirt's console stream
        (virsh console's way; FORCE takes it from another holder)."""
        dom = self._domain(instance_id)
        if dom is None or not dom.isActive():
            raise LookupError(f"{instance_id} is not running")
        stream = self.conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
        dom.openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
        return _LibvirtSerial(stream)

    def close(self) -> None:
        with self._conn_lock:
            try:
                if self._conn is not None:
                    self._conn.close()
            except libvirt.libvirtError:
                pass
            self._conn = None

    # ----------------------------------------------------------------------------- networks

    def ensure_vpc(self, vpc: VpcSpec, repair: bool = True) -> None:
        """See Driver.ensure_vpc. Then vpc_ready(vpc id, namespace) (its metadata listener).
        repair=False: Network.ensure's quick look (an instance's start)."""
        namespace = self.network.ensure(vpc, repair=repair)
        if self.vpc_ready:
            self.vpc_ready(vpc.vpc_id, namespace)

    def remove_vpc(self, vpc_id: str) -> bool:
        """See Driver.remove_vpc. vpc_gone(vpc id) first: an open socket keeps a namespace alive."""
        with self.network.locked():
            if self.network.ports_in(vpc_id):
                return False
            if self.vpc_gone:
                self.vpc_gone(vpc_id)
            return self.network.remove_vpc(vpc_id, only_if_empty=True)

    def apply_firewall(self, vpc_id: str, groups: Sequence[SecurityGroupRules],
                       ports: Sequence[FirewallPort], acls: Sequence[SubnetAcl] = ()) -> None:
        """See Driver.apply_firewall: nftables in the VPC's namespace (nftables.firewall_table
        and acl_table), kept for a VPC whose network is not there yet."""
        self.network.apply_firewall(vpc_id, firewall_state(groups, ports, acls))

    # ------------------------------------------------------------------------------ routing

    def apply_routes(self, vpc_id: str, routes: Mapping[str, Mapping[str, str | None]]) -> None:
        """See Driver.apply_routes: policy routing and source NAT in the VPC's namespace
        (Network.apply_routes)."""
        self.network.apply_routes(vpc_id, routes)

    # ---------------------------------------------------------------------------- addresses

    def map_address(self, vpc_id: str, public_ip: str, private_ip: str, public_hostname: str = "") -> None:
        """See Driver.map_address."""
        self.network.map_public_ip(vpc_id, private_ip, public_ip, public_hostname)

    def unmap_address(self, vpc_id: str, public_ip: str, private_ip: str) -> None:
        """See Driver.unmap_address."""
        self.network.unmap_public_ip(vpc_id, private_ip, public_ip)

    # ------------------------------------------------------------------------ interfaces

    def _plug_interface(self, instance_id: str, nic: InterfaceSpec) -> str:
        return self.network.plug(nic.port_id, nic.vpc_id, nic.subnet_id, nic.mac, nic.ip, nic.hostname,
                                 nic.secondary_ips, owner=instance_id, source_dest_check=nic.source_dest_check)

    @staticmethod
    def _define_nic(dom, nic: InterfaceSpec, xml_flags: int, affect: int) -> None:
        """Give the definition (INACTIVE, CONFIG) or the live guest (0, LIVE) the NIC, if it lacks it."""
        if nic.mac.lower() not in domainxml.nics(dom.XMLDesc(xml_flags)):
            dom.attachDeviceFlags(domainxml.nic(nic.mac, root_bridge_name(nic.port_id), nic.device_index), affect)

    def attach_interface(self, instance_id: str, nic: InterfaceSpec) -> None:
        """See Driver.attach_interface: the port first (filtered before the NIC exists), then the
        definition, then the live guest."""
        dom = self._domain(instance_id)
        if dom is None:
            raise LookupError(f"no guest {instance_id}")
        self._plug_interface(instance_id, nic)
        self._define_nic(dom, nic, libvirt.VIR_DOMAIN_XML_INACTIVE, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
        if dom.isActive():
            self._define_nic(dom, nic, 0, libvirt.VIR_DOMAIN_AFFECT_LIVE)
            for tap in domainxml.tap_devices(dom.XMLDesc()):
                disable_ipv6(tap)

    def detach_interface(self, instance_id: str, port_id: str) -> None:
        """See Driver.detach_interface: the NIC (found by its bridge) from the definition, then from
        the live guest, waiting DETACH_WAIT_SECONDS at most for the guest to let go; then the port."""
        dom = self._domain(instance_id)
        bridge = root_bridge_name(port_id)

        def find(xml_flags: int):
            return next((e for e in domainxml.nics(dom.XMLDesc(xml_flags)).values()
                         if e.find("source") is not None and e.find("source").get("bridge") == bridge), None)
        if dom is not None:
            found = find(libvirt.VIR_DOMAIN_XML_INACTIVE)
            if found is not None:
                dom.detachDeviceFlags(tostring(found, encoding="unicode"), libvirt.VIR_DOMAIN_AFFECT_CONFIG)
            found = find(0) if dom.isActive() else None
            if found is not None:
                try:
                    dom.detachDeviceFlags(tostring(found, encoding="unicode"), libvirt.VIR_DOMAIN_AFFECT_LIVE)
                except libvirt.libvirtError as exc:
                    if "already in the process of unplug" not in str(exc):
                        raise
                deadline = time.monotonic() + DETACH_WAIT_SECONDS
                while dom.isActive() and find(0) is not None and time.monotonic() < deadline:
                    time.sleep(0.1)
                if dom.isActive() and find(0) is not None:
                    log.warning("%s did not release its NIC on %s within %s s: it loses it when it stops",
                                instance_id, bridge, DETACH_WAIT_SECONDS)
        self.network.unplug(port_id)

    def set_addresses(self, instance_id: str, secondary_ips: Sequence[str], source_dest_check: bool = True) -> None:
        """See Driver.set_addresses."""
        with self.network.locked():
            for vpc_id in self.network.store.known():
                port = (self.network.store.load(vpc_id) or {}).get("ports", {}).get(instance_id)
                if port is not None:
                    self.network.plug(instance_id, vpc_id, port["subnet_id"], port["mac"], port["ip"],
                                      port.get("hostname", ""), secondary_ips, port.get("owner"),
                                      source_dest_check)

    # -------------------------------------------------------------------------------- disks

    def create_disk(self, disk_id: str, size_gib: int, key: bytes | None = None, shared: bool = False) -> None:
        """See Driver.create_disk."""
        self.disks.create(disk_id, size_gib, key, shared)

    def clone_disk(self, disk_id: str, size_gib: int, *, image_path: str | None = None,
                   snapshot_id: str | None = None, key: bytes | None = None,
                   source_key: bytes | None = None, shared: bool = False) -> None:
        """See Driver.clone_disk."""
        self.disks.clone(disk_id, size_gib, image_path=image_path, snapshot_id=snapshot_id, key=key,
                         source_key=source_key, shared=shared)

    def share_disk(self, disk_id: str, shared: bool, key: bytes | None = None) -> None:
        """See Driver.share_disk."""
        holders = {dom.name() for dom, _live, _t in self._holders(disk_id)}
        if holders:
            raise ValueError(f"{disk_id} is attached to {', '.join(sorted(holders))}")
        self.disks.share(disk_id, shared, key)

    def _holders(self, disk_id: str) -> list[tuple[object, bool, str]]:
        """(domain, live?, target dev) for every domain definition or running guest with the disk."""
        found = []
        for dom in self.conn.listAllDomains():
            try:
                xmls = [(False, dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))]
                if dom.isActive():
                    xmls.append((True, dom.XMLDesc()))
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    continue  # undefined since it was listed: it holds nothing
                raise
            for live, xml in xmls:
                if disk_id in domainxml.disks(xml):
                    found.append((dom, live, domainxml.disks(xml)[disk_id][0]))
        return found

    def resize_disk(self, disk_id: str, size_gib: int, key: bytes | None = None) -> None:
        """See Driver.resize_disk: through the running guest's QEMU if one has it open."""
        live = [(dom, target) for dom, is_live, target in self._holders(disk_id) if is_live]
        if not live:
            self.disks.resize(disk_id, size_gib, key)
            return
        current = self.disks.size(disk_id)
        if size_gib * GIB < current:
            raise ValueError(f"{disk_id} has {current // GIB} GiB: disks only grow")
        if size_gib * GIB > current:
            # A shared disk: the first guest's QEMU grows the file, each one then sees the size.
            for dom, target in live if self.disks.shared(disk_id) else live[:1]:
                dom.blockResize(target, size_gib * GIB, libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)

    def _secret_uuid(self, disk_id: str) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, "ec2emu-volume:" + disk_id))

    def _secret(self, disk_id: str, key: bytes) -> str:
        """The libvirt secret QEMU opens an encrypted disk with, (re)defined with its key; its
        uuid. Ephemeral: libvirt keeps it in memory only (a persistent one would lie on the host's
        disk unwrapped), so it is set again before every use that needs it (attach, a start, a
        live snapshot); a running QEMU keeps its own copy across a libvirtd restart."""
        secret_uuid = self._secret_uuid(disk_id)
        secret = self.conn.secretDefineXML(domainxml.volume_secret(secret_uuid, str(self.disks.path(disk_id))))
        secret.setValue(key)
        return secret_uuid

    def _disk_xml(self, disk_id: str, target: str, letter: str | None, key: bytes | None) -> str:
        """The <disk> of a volume: its active layer, serial, slot; an encrypted one with its
        backing chain spelt out, each encrypted layer opened with the volume's secret."""
        layer = self.disks.layer(disk_id)
        secret_uuid = backing = None
        if key is not None:
            secret_uuid = self._secret(disk_id, key)
            backing = [(item["filename"], item["format"], bool(item.get("encrypted")))
                       for item in self.disks.chain(layer)[1:]]
        return domainxml.disk(str(layer), target, disk_id, secret_uuid, letter, backing,
                              shared=layer.suffix == ".raw")

    def attach_disk(self, instance_id: str, disk_id: str, key: bytes | None = None,
                    device: str | None = None) -> None:
        """See Driver.attach_disk: to the live guest and to its definition, whichever lacks it,
        in the PCI slot of the device's letter (the first free one from 'f' without a device)."""
        dom = self._domain(instance_id)
        if dom is None:
            raise LookupError(f"no guest {instance_id}")
        self.disks.layer(disk_id)  # LookupError if there is no such disk
        config = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        wanted = [(libvirt.VIR_DOMAIN_AFFECT_CONFIG, config)]
        if dom.isActive():
            wanted.append((libvirt.VIR_DOMAIN_AFFECT_LIVE, dom.XMLDesc()))
        held = [domainxml.letter_of(domainxml.disks(xml)[disk_id][1]) for _f, xml in wanted
                if disk_id in domainxml.disks(xml)]
        letter = domainxml.device_letter(device) if device else (held[0] if held else None)
        letter = letter or domainxml.free_letter(config)
        for flag, xml in wanted:
            if disk_id in domainxml.disks(xml):
                continue
            if domainxml.letter_in_use(xml, letter):
                raise ValueError(f"{instance_id} has a device at /dev/sd{letter} already")
            dom.attachDeviceFlags(self._disk_xml(disk_id, domainxml.free_target(xml), letter, key), flag)

    def detach_disk(self, instance_id: str, disk_id: str, force: bool = False) -> None:
        """See Driver.detach_disk: from the definition, then from the live guest, waiting until
        the guest has let go (it must acknowledge the ACPI unplug). Forced: the unplug is asked
        for all the same (libvirt cannot take a virtio disk from a guest that does not let go),
        but only FORCE_DETACH_WAIT_SECONDS are waited for: the disk is then gone from the
        definition, and from the guest when it acknowledges or at the latest when it stops."""
        dom = self._domain(instance_id)
        if dom is None:
            return
        self._detach(dom, disk_id, libvirt.VIR_DOMAIN_XML_INACTIVE, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
        if not dom.isActive():
            return
        self._detach(dom, disk_id, 0, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        wait = FORCE_DETACH_WAIT_SECONDS if force else DETACH_WAIT_SECONDS
        deadline = time.monotonic() + wait
        while dom.isActive() and disk_id in domainxml.disks(dom.XMLDesc()):
            if time.monotonic() > deadline:
                if force:
                    log.warning("%s did not release %s within %s s: detached from its definition; "
                                "the guest loses it when it acknowledges the unplug or stops",
                                instance_id, disk_id, wait)
                    return
                raise RuntimeError(f"{instance_id} did not release {disk_id} within {wait} s")
            time.sleep(0.1)

    @staticmethod
    def _detach(dom, disk_id: str, xml_flags: int, affect: int) -> None:
        """Detach the disk from the definition (xml_flags INACTIVE, affect CONFIG) or the live
        guest (0, LIVE), if that one has it. A live unplug already asked for is not asked again
        (libvirt refuses a second request while the guest has not answered the first)."""
        found = domainxml.disks(dom.XMLDesc(xml_flags)).get(disk_id)
        if found is None:
            return
        try:
            dom.detachDeviceFlags(tostring(found[1], encoding="unicode"), affect)
        except libvirt.libvirtError as exc:
            if affect != libvirt.VIR_DOMAIN_AFFECT_LIVE or "already in the process of unplug" not in str(exc):
                raise

    def _freeze(self, disk_id: str, key: bytes | None):
        """Disks.snapshot's freeze: a running guest's QEMU makes the disk's new layer at one
        instant (an external disk-only snapshot of that disk alone: the active layer is frozen,
        writes go on in the new one), so the snapshot is crash-consistent."""
        def freeze(active: Path, new: Path) -> bool:
            live = [(dom, target) for dom, is_live, target in self._holders(disk_id) if is_live]
            if not live:
                return False
            dom, target = live[0]
            secret_uuid = self._secret(disk_id, key) if key is not None else None
            dom.snapshotCreateXML(
                domainxml.disk_snapshot(dom.XMLDesc(), target, str(new), secret_uuid),
                libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA
                | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC)
            return True
        return freeze

    def _pull(self, child: Path, backing: Path | None) -> bool:
        """Disks' merge of a layer into the active layer `child` of a running guest: a block pull
        down to `backing` (QEMU copies the layer's data up, then points the child at `backing`;
        None: the whole chain, the child then stands alone)."""
        for dom in self.conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
            try:
                xml = dom.XMLDesc()
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    continue
                raise
            for _disk_id, (target, element) in domainxml.disks(xml).items():
                source = element.find("source")
                if source is None or source.get("file") != str(child):
                    continue
                dom.blockRebase(target, str(backing) if backing else None, 0, 0)
                while True:
                    info = dom.blockJobInfo(target, 0)
                    if not info:
                        break
                    time.sleep(0.1)
                if self.disks._backing(child) != backing:
                    raise RuntimeError(f"pulling into {child} did not rebase it onto {backing}")
                return True
        return False

    def _sync_definitions(self, disk_id: str, key: bytes | None) -> None:
        """Definitions that name an older layer of the disk than its active one (a snapshot of a
        disk attached to a stopped guest) are pointed at the active layer, same slot and target.
        So are those of an encrypted disk whose spelt-out backing chain is no longer the disk's
        (layers merged since: libvirt would open the listed files, some of them gone)."""
        layer = str(self.disks.layer(disk_id))
        chain = [item["filename"] for item in self.disks.chain(Path(layer))[1:]] if key is not None else None
        for dom, live, target in self._holders(disk_id):
            if live:
                continue
            element = domainxml.disks(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))[disk_id][1]
            listed = [b.find("source").get("file") for b in element.iter("backingStore")
                      if b.find("source") is not None]
            if element.find("source").get("file") == layer and (chain is None or listed == chain):
                continue
            dom.detachDeviceFlags(tostring(element, encoding="unicode"), libvirt.VIR_DOMAIN_AFFECT_CONFIG)
            dom.attachDeviceFlags(self._disk_xml(disk_id, target, domainxml.letter_of(element), key),
                                  libvirt.VIR_DOMAIN_AFFECT_CONFIG)

    def snapshot_disk(self, disk_id: str, snapshot_id: str, key: bytes | None = None) -> int:
        """See Driver.snapshot_disk: the disk's active layer is frozen as the snapshot (through
        the running guest's QEMU if one has it: crash-consistent, the guest goes on)."""
        stored = self.disks.snapshot(disk_id, snapshot_id, key, freeze=self._freeze(disk_id, key))
        self._sync_definitions(disk_id, key)
        return stored

    def copy_snapshot(self, snapshot_id: str, new_snapshot_id: str, key: bytes | None = None,
                      new_key: bytes | None = None) -> int:
        """See Driver.copy_snapshot."""
        return self.disks.copy_snapshot(snapshot_id, new_snapshot_id, key, new_key)

    def delete_disk(self, disk_id: str, key: bytes | None = None) -> None:
        """See Driver.delete_disk."""
        holders = {dom.name() for dom, _live, _t in self._holders(disk_id)}
        if holders:
            raise ValueError(f"{disk_id} is attached to {', '.join(sorted(holders))}")
        self.disks.delete(disk_id, key, pull=self._pull)
        try:
            self.conn.secretLookupByUUIDString(self._secret_uuid(disk_id)).undefine()
        except libvirt.libvirtError:
            pass

    def delete_snapshot(self, snapshot_id: str, key: bytes | None = None) -> None:
        """See Driver.delete_snapshot."""
        self.disks.delete_snapshot(snapshot_id, key, pull=self._pull)
