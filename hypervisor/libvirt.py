"""The libvirt driver: instances are libvirt/QEMU domains booted straight from the AMI's kernel
and ramdisk, with a qcow2 overlay on the AMI's disk as root, plugged into their VPC's network.

States are reported from libvirt's lifecycle events (a thread runs libvirt's event loop), never
from timers: a domain that started is 'running', one that stopped is 'stopped', and one we
destroyed for termination is 'terminated' once its files are gone.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
import uuid
from pathlib import Path
from xml.etree import ElementTree
from xml.sax.saxutils import escape, quoteattr

import libvirt

from .base import Driver, InstanceSpec, Listener
from .network import Desired, Network, PortSpec, disable_ipv6

log = logging.getLogger("ec2emu.libvirt")

KERNEL_CMDLINE = "console=ttyS0 root=/dev/vda rw quiet panic=-1"
CONSOLE_TAIL = 64 * 1024

_event_loop_started = False
_event_loop_lock = threading.Lock()


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


def qemu_img(*args: str) -> None:
    proc = subprocess.run(["qemu-img", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"qemu-img {' '.join(args)}: {proc.stderr.strip()}")


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
        proc = subprocess.run(
            ["qemu-system-x86_64", "-accel", "kvm", "-m", "128", "-nographic", "-no-reboot",
             "-kernel", kernel, "-append", "console=ttyS0 panic=-1 root=/dev/nonexistent",
             "-serial", "stdio", "-monitor", "none", "-display", "none", "-nodefaults"],
            capture_output=True, timeout=timeout)
        out = proc.stdout
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout or b""
    return b"Linux version" in out


class LibvirtDriver(Driver):
    name = "libvirt"

    def __init__(self, listener: Listener, config, vpc_ready=None, vpc_gone=None):
        super().__init__(listener)
        self.config = config
        self.root = Path(config.state_dir).resolve() / "instances"
        self.root.mkdir(parents=True, exist_ok=True)
        self.network = Network(str(Path(config.state_dir).resolve() / "network"), prefix=config.network_prefix)
        self.vpc_ready = vpc_ready  # called (vpc id, namespace) once a VPC's namespace exists
        self.vpc_gone = vpc_gone  # called (vpc id) before a VPC's namespace is removed
        self._domain_type: str | None = None if config.domain_type == "auto" else config.domain_type
        self._probe_lock = threading.Lock()
        self._terminating: set[str] = set()
        self._stop_timers: dict[str, threading.Timer] = {}
        self._lock = threading.Lock()
        _start_event_loop()
        self.conn = libvirt.open(config.libvirt_uri)
        self.conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_event, None)
        self._probe_early()

    # ------------------------------------------------------------------------------ helpers

    def _dir(self, instance_id: str) -> Path:
        return self.root / instance_id

    def _domain(self, instance_id: str):
        try:
            return self.conn.lookupByName(instance_id)
        except libvirt.libvirtError:
            return None

    def domain_type(self, kernel: str | None) -> str:
        """'kvm' if KVM really boots a kernel here, else 'qemu' (TCG); probed once per state dir."""
        with self._probe_lock:
            if self._domain_type is None:
                remembered = Path(self.config.state_dir) / "domain-type"
                if remembered.exists():
                    self._domain_type = remembered.read_text().strip()
                else:
                    self._domain_type = "kvm" if kvm_works(kernel) else "qemu"
                    remembered.write_text(self._domain_type + "\n")
                log.info("guests run with domain type %s", self._domain_type)
            return self._domain_type

    def _probe_early(self) -> None:
        """Probe at start, in the background, with any kernel in the image dir: the first
        RunInstances then need not wait for it (up to 8 s where KVM hangs)."""
        kernels = sorted(Path(self.config.effective_image_dir).glob("*.vmlinuz"))
        if self._domain_type is None and kernels:
            threading.Thread(target=self.domain_type, args=(str(kernels[0]),), daemon=True,
                             name="kvm-probe").start()

    def _memory(self, spec: InstanceSpec) -> int:
        return max(self.config.min_memory_mib, int(spec.memory_mib * self.config.memory_scale))

    def domain_xml(self, spec: InstanceSpec, root_disk: Path, bridge: str) -> str:
        dtype = self.domain_type(spec.kernel_path)
        ident = smbios_uuid(spec.instance_id)
        console = self._dir(spec.instance_id) / "console.log"
        boot = ""
        if spec.kernel_path:
            boot = f"<kernel>{escape(spec.kernel_path)}</kernel>"
            if spec.ramdisk_path:
                boot += f"<initrd>{escape(spec.ramdisk_path)}</initrd>"
            boot += f"<cmdline>{KERNEL_CMDLINE}</cmdline>"
        tcg = (f"<tcg><tb-cache unit='MiB'>{self.config.tcg_tb_cache_mib}</tb-cache></tcg>"
               if dtype == "qemu" else "")
        return f"""<domain type='{dtype}'>
  <name>{spec.instance_id}</name>
  <uuid>{ident}</uuid>
  <title>ec2emu {spec.instance_id} {escape(spec.instance_type)}</title>
  <memory unit='MiB'>{self._memory(spec)}</memory>
  <vcpu>{max(1, min(spec.vcpus, self.config.max_vcpus))}</vcpu>
  <sysinfo type='smbios'>
    <bios><entry name='vendor'>Amazon EC2</entry></bios>
    <system>
      <entry name='manufacturer'>Amazon EC2</entry>
      <entry name='product'>{escape(spec.instance_type)}</entry>
      <entry name='serial'>{ident}</entry>
      <entry name='uuid'>{ident}</entry>
    </system>
  </sysinfo>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    {boot}
    <smbios mode='sysinfo'/>
  </os>
  <features><acpi/>{tcg}</features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <seclabel type='static' model='dac' relabel='no'><label>+0:+0</label></seclabel>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file={quoteattr(str(root_disk))}/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='bridge'>
      <mac address='{spec.mac_address}'/>
      <source bridge='{bridge}'/>
      <model type='virtio'/>
    </interface>
    <serial type='file'>
      <source path={quoteattr(str(console))} append='on'/>
      <target port='0'/>
    </serial>
    <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>
    <memballoon model='none'/>
  </devices>
</domain>"""
        # qemu runs as root without relabelling (seclabel above): libvirt's dynamic ownership
        # would otherwise chown the shared base images and kernels to libvirt-qemu (FACTS.md).

    # ---------------------------------------------------------------------------- actions

    def start(self, spec: InstanceSpec) -> None:
        try:
            self._start(spec)
        except Exception:
            log.exception("starting %s failed", spec.instance_id)
            self.listener(spec.instance_id, "vanished")

    def _start(self, spec: InstanceSpec) -> None:
        directory = self._dir(spec.instance_id)
        directory.mkdir(parents=True, exist_ok=True)
        root = directory / "root.qcow2"
        if not root.exists():
            if not spec.image_path or not os.path.exists(spec.image_path):
                raise RuntimeError(f"image disk {spec.image_path} is missing: run `ec2emu images build`")
            qemu_img("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", spec.image_path, str(root))
        namespace = self.network.ensure(spec.vpc())
        if self.vpc_ready:
            self.vpc_ready(spec.vpc_id, namespace)
        bridge = self.network.plug(spec.instance_id, spec.vpc_id, spec.subnet_id, spec.mac_address,
                                   spec.private_ip, spec.hostname)
        if spec.public_ip:
            self.network.map_public_ip(spec.vpc_id, spec.private_ip, spec.public_ip, spec.public_hostname)
        dom = self._domain(spec.instance_id)
        if dom is None:
            dom = self.conn.defineXML(self.domain_xml(spec, root, bridge))
        if not dom.isActive():
            dom.create()  # the STARTED event reports 'running'
            self._quiet_tap(dom)
        else:
            self.listener(spec.instance_id, "running")

    @staticmethod
    def _quiet_tap(dom) -> None:
        """The tap libvirt made lives in the root namespace: without this it would get an IPv6
        link-local address and speak neighbour discovery onto the guest's link."""
        for target in ElementTree.fromstring(dom.XMLDesc()).iterfind("devices/interface/target"):
            if target.get("dev"):
                disable_ipv6(target.get("dev"))

    def stop(self, instance_id: str, force: bool = False) -> None:
        dom = self._domain(instance_id)
        if dom is None or not dom.isActive():
            self._stopped(instance_id)
            return
        if force:
            dom.destroy()
            return
        dom.shutdown()  # ACPI power button; the guest powers off and the STOPPED event follows

        def force_off() -> None:
            d = self._domain(instance_id)
            if d is not None and d.isActive():
                log.warning("%s ignored ACPI shutdown for %ss: forcing it off", instance_id,
                            self.config.stop_timeout_seconds)
                d.destroy()
        timer = threading.Timer(self.config.stop_timeout_seconds, force_off)
        timer.daemon = True
        with self._lock:
            self._stop_timers[instance_id] = timer
        timer.start()

    def _cancel_force_off(self, instance_id: str) -> None:
        """The guest stopped by itself: its force-off deadline must not hit a later boot."""
        with self._lock:
            timer = self._stop_timers.pop(instance_id, None)
        if timer is not None:
            timer.cancel()

    def reboot(self, instance_id: str) -> None:
        dom = self._domain(instance_id)
        if dom is not None and dom.isActive():
            dom.reboot(libvirt.VIR_DOMAIN_REBOOT_ACPI_POWER_BTN)

    def terminate(self, instance_id: str) -> None:
        with self._lock:
            self._terminating.add(instance_id)
        dom = self._domain(instance_id)
        if dom is not None and dom.isActive():
            dom.destroy()  # the STOPPED event finishes the job
        else:
            self._cleanup(instance_id)

    def _cleanup(self, instance_id: str) -> None:
        dom = self._domain(instance_id)
        if dom is not None:
            try:
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
            except libvirt.libvirtError:
                dom.undefine()
        vpc_id = self.network.unplug(instance_id)
        if vpc_id and not self.network.ports_in(vpc_id):
            # A VPC with no guests needs no namespace: nothing stays behind on the host. Its
            # metadata listener goes first (an open socket keeps a deleted namespace alive).
            if self.vpc_gone:
                self.vpc_gone(vpc_id)
            self.network.remove_vpc(vpc_id)
        shutil.rmtree(self._dir(instance_id), ignore_errors=True)
        with self._lock:
            self._terminating.discard(instance_id)
        self.listener(instance_id, "terminated")

    def _stopped(self, instance_id: str) -> None:
        self.network.unmap_instance(instance_id)  # AWS releases a stopped instance's public IP
        self.listener(instance_id, "stopped")

    # ----------------------------------------------------------------------------- events

    def _on_event(self, conn, dom, event, detail, opaque) -> None:
        instance_id = dom.name()
        if not instance_id.startswith("i-"):
            return
        try:
            if event == libvirt.VIR_DOMAIN_EVENT_STARTED:
                self.listener(instance_id, "running")
            elif event == libvirt.VIR_DOMAIN_EVENT_STOPPED:
                self._cancel_force_off(instance_id)
                with self._lock:
                    ending = instance_id in self._terminating
                if ending:
                    self._cleanup(instance_id)
                else:
                    self._stopped(instance_id)
        except Exception:
            log.exception("handling libvirt event %s for %s", event, instance_id)

    # ------------------------------------------------------------------------------ state

    def reconcile_host(self, specs: list[InstanceSpec]) -> None:
        vpcs = {s.vpc_id: s.vpc() for s in specs}
        ports = [PortSpec(s.instance_id, s.vpc_id, s.subnet_id, s.mac_address, s.private_ip, s.hostname,
                          s.public_ip, s.public_hostname) for s in specs]
        self.network.sync(Desired(vpcs=list(vpcs.values()), ports=ports))
        if self.vpc_ready:
            for vpc_id in vpcs:
                self.vpc_ready(vpc_id, self.network.namespace_of(vpc_id))

    def state(self, instance_id: str) -> str | None:
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

    def close(self) -> None:
        try:
            self.conn.close()
        except libvirt.libvirtError:
            pass
