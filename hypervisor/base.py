"""The narrow interface between the emulator and the host: the driver's vocabulary.

The emulator says what should exist; a driver makes it so. Each method's contract is in its
docstring here; `none.py` is the executable documentation of these contracts, `libvirt.py` the
real thing.

Rules every driver keeps:

* **Idempotent, crash-safe.** Every method may be called again with the same arguments, also
  after a crash half-way through it (the emulator writes intent, acts, then records): doing again
  what is already done changes nothing and does not fail. Files are written under a temporary
  name and renamed into place, so a crash never leaves a half-made disk under its real name.
* **One caller thread.** The emulator calls driver methods from one ordered worker thread. A
  method does its host work in that thread and returns when it is done (or has been handed to
  the hypervisor, for the guest's own part of a boot or shutdown). Nothing else does host work.
* **Events report, they never act.** What a guest does by itself (it booted, powered off) comes
  back through the listener as a `HostEvent`, possibly from another thread. Work that follows
  from an event (e.g. terminating a guest that shut itself down) is the emulator's call, made
  through this interface again, from its worker.
* **Ids are the emulator's** (`i-`, `vpc-`, `subnet-`, `vol-`, `snap-`...); names the host needs
  are derived from them by the driver. DNS names are the emulator's too: the driver serves the
  names it is given and computes none.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum


class HostEvent(str, Enum):
    """What the host reports about a guest. Members are str, equal (and hash equal) to their
    values, so a listener may compare them with 'running' etc."""
    RUNNING = "running"        # the guest is up (booted, or found already running)
    STOPPED = "stopped"        # the guest is powered off; its disks and domain remain
    TERMINATED = "terminated"  # the guest and everything the host held for it are gone
    VANISHED = "vanished"      # the host failed to start the guest or lost it

    __str__ = str.__str__

    def __hash__(self) -> int:
        return str.__hash__(self.value)


Listener = Callable[[str, str], None]  # (instance id, HostEvent)


@dataclass(frozen=True)
class DiskSpec:
    """A disk an instance is defined with. For a volume, `disk_id` names a disk made by
    create_disk/clone_disk and `key` opens it if it is encrypted; for an instance-store disk,
    `disk_id` is its name ('ephemeral0') and `size_gib` its size. `device` is the name the user
    gave (/dev/sdf, /dev/xvdb...): its letter picks the PCI slot, as attach_disk's does."""
    disk_id: str
    device: str
    key: bytes | None = None
    size_gib: int = 0


@dataclass
class InstanceSpec:
    """Everything a driver needs to bring up one instance. The emulator computes every name.

    The root disk is either a volume (EBS-backed: `root_disk` names one of `disks`, which the
    guest boots from as its first disk, device letter 'a', whatever its device name) or, for an
    instance-store-backed instance (root_disk None), an overlay on `image_path` that the driver
    makes and owns. `disks`: the volumes (root included) the guest is defined with when it is
    defined (those attached later come by attach_disk); each must exist by then. `instance_store`:
    blank local disks (DiskSpec with size_gib), made by start and gone with terminate."""
    instance_id: str
    vcpus: int
    memory_mib: int
    image_path: str | None = None
    root_disk: str | None = None
    disks: list[DiskSpec] = field(default_factory=list)
    instance_store: list[DiskSpec] = field(default_factory=list)
    kernel_path: str | None = None
    ramdisk_path: str | None = None
    mac_address: str = ""
    vpc_id: str = ""
    subnet_id: str = ""
    private_ip: str = ""
    public_ip: str | None = None
    hostname: str = ""  # the private DNS name, e.g. 'ip-10-0-0-5.ec2.internal': DHCP host name + DNS
    region: str = ""
    instance_type: str = ""
    vpc_subnets: list[tuple[str, str]] = field(default_factory=list)  # (subnet id, cidr) of its VPC
    dns_domain: str = ""         # the VPC's private DNS domain ('ec2.internal'); '' = none served
    public_hostname: str = ""    # the public DNS name ('ec2-198-51-100-7.compute-1.amazonaws.com') or ''
    public_dns_domain: str = ""  # 'compute-1.amazonaws.com'; '' = public names not answered locally
    dhcp_domain: str = ""        # the VPC's DHCP option set's domain-name; '' = dns_domain
    dns_support: bool = True     # the VPC's resolver answers at all (enableDnsSupport)
    dns_names: bool = True       # it answers the instances' names (enableDnsSupport and -Hostnames)
    secondary_ips: tuple[str, ...] = ()  # the primary interface's secondary private addresses
    source_dest_check: bool = True       # False: the primary port may send from any address (NAT)
    interfaces: list[InterfaceSpec] = field(default_factory=list)  # attached at device index >= 1

    def vpc(self) -> VpcSpec:
        return VpcSpec(self.vpc_id, tuple(tuple(s) for s in self.vpc_subnets), self.dns_domain,
                       self.public_dns_domain, self.region, self.dhcp_domain, self.dns_support, self.dns_names)


@dataclass(frozen=True)
class InterfaceSpec:
    """A network interface attached at device_index >= 1 (an ENI: the primary one is the
    InstanceSpec's own fields). `port_id` names its plumbing (its eni- id): its own port on its
    subnet, pinned to its MAC and addresses like the primary's; DHCP answers its MAC with `ip`."""
    port_id: str
    device_index: int
    vpc_id: str
    subnet_id: str
    mac: str
    ip: str
    secondary_ips: tuple[str, ...] = ()
    hostname: str = ""
    source_dest_check: bool = True  # False: its port may send from any address (a NAT instance)


@dataclass(frozen=True)
class VpcSpec:
    """A VPC as the host needs it: its subnets (each a routed segment whose first host address is
    the gateway, DHCP and DNS server) and the DNS domains its resolver answers for."""
    vpc_id: str
    subnets: tuple[tuple[str, str], ...] = ()  # (subnet id, IPv4 cidr)
    dns_domain: str = ""
    public_dns_domain: str = ""
    region: str = ""
    dhcp_domain: str = ""  # the domain name DHCP hands out (its option set's); '' = dns_domain
    dns_support: bool = True  # False: its resolver answers nothing (AWS's enableDnsSupport false)
    dns_names: bool = True    # False: nor the instances' names (enableDnsHostnames false too)


# ----------------------------------------------------------------------------------- firewall

@dataclass(frozen=True)
class Rule:
    """One security-group permission: traffic of `protocol` to ports from_port..to_port (ICMP:
    type from_port, code to_port; None = any) from (ingress) or to (egress) a peer, which is
    either an IPv4 CIDR or the members of another security group of the same VPC."""
    protocol: str                 # 'tcp', 'udp', 'icmp' or 'all' (AWS's '-1')
    from_port: int | None = None
    to_port: int | None = None
    cidr: str | None = None
    group_id: str | None = None

    def __post_init__(self) -> None:
        if self.protocol not in ("tcp", "udp", "icmp", "all"):
            raise ValueError(f"protocol {self.protocol!r}: tcp, udp, icmp or all")
        if (self.cidr is None) == (self.group_id is None):
            raise ValueError("a rule has exactly one peer: cidr or group_id")


@dataclass(frozen=True)
class SecurityGroupRules:
    """A security group's permissions. AWS's defaults are the emulator's to send: a new group has
    one egress rule to 0.0.0.0/0; the default group admits its own members."""
    group_id: str
    ingress: tuple[Rule, ...] = ()
    egress: tuple[Rule, ...] = ()


@dataclass(frozen=True)
class AclEntry:
    """One network ACL entry: traffic of `protocol` (an IP protocol number; None = all) to ports
    from_port..to_port (TCP/UDP; None = any) or of ICMP type/code (None = any) from (ingress) or
    to (egress) an IPv4 CIDR is allowed or denied. Ports are the traffic's destination ports in
    both directions, as on AWS (a reply's are the client's ephemeral ones)."""
    rule_number: int
    action: str                   # 'allow' or 'deny'
    cidr: str
    protocol: int | None = None
    from_port: int | None = None
    to_port: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None

    def __post_init__(self) -> None:
        if self.action not in ("allow", "deny"):
            raise ValueError(f"action {self.action!r}: allow or deny")


@dataclass(frozen=True)
class SubnetAcl:
    """The network ACL a subnet uses: its entries per direction, lowest rule number first; what
    no entry matches is denied (AWS's '*' rule). Stateless: a reply meets the entries too."""
    subnet_id: str
    ingress: tuple[AclEntry, ...] = ()
    egress: tuple[AclEntry, ...] = ()


@dataclass(frozen=True)
class FirewallPort:
    """A plugged interface and the groups it is in (at most 5 on AWS). `instance_id` names the
    port (an instance's id for its primary interface, an eni- id for the others); `secondary_ips`
    are its other addresses, filtered (and members of its groups) like `ip`."""
    instance_id: str
    ip: str
    group_ids: tuple[str, ...]
    secondary_ips: tuple[str, ...] = ()


# ------------------------------------------------------------------------------------- driver

class SerialConsole:
    """A guest's serial port, opened by Driver.open_serial. One reader and one writer thread may
    use it at once."""

    def read(self, timeout: float) -> bytes:
        """What the guest wrote since the last read, waiting up to `timeout` seconds for something;
        b'' if nothing came. EOFError once the port is gone (the guest stopped)."""
        raise NotImplementedError

    def write(self, data: bytes) -> None:
        """Type `data` into the guest's port."""
        raise NotImplementedError

    def close(self) -> None:
        """Let go of the port (the guest runs on)."""


class Driver:
    """The host's side of the cloud. Methods raise NotImplementedError where a driver lacks a
    capability; every other failure raises (the emulator records it) unless the contract says
    the method reports it as an event instead."""
    name = "base"

    def __init__(self, listener: Listener):
        self.listener = listener

    def report(self, instance_id: str, event: HostEvent) -> None:
        """Tell the emulator what a guest did (the only way events leave a driver)."""
        self.listener(instance_id, HostEvent(event))

    # ------------------------------------------------------------------------- lifecycle

    def start(self, spec: InstanceSpec) -> None:
        """Bring the instance up: create its root disk if missing (an overlay on spec.image_path
        when it has no root volume; a root volume is never made here, LookupError if it is
        missing) and its instance-store disks, ensure its VPC's network (even one that is not
        there yet, or was removed meanwhile), plug its interface (DHCP lease with spec.hostname,
        anti-spoofing), map spec.public_ip if any, define the guest if missing (with spec.disks in
        their slots, the root volume first) and power it on. RUNNING is reported once it runs (at
        once if it already did). A failure raises: the caller tries again (every step is idempotent) and
        after its last try records the failure as the launch's. Also starts a stopped instance
        (its disk and domain are kept)."""
        raise NotImplementedError

    def stop(self, instance_id: str, force: bool = False) -> None:
        """Power the guest off: ACPI power button, then forced off after the configured timeout
        (force: at once). Its public-IP mapping goes now (AWS releases a stopped instance's public
        address); disks and the domain stay. STOPPED is reported when it is off (at once if it
        already was, or does not exist)."""
        raise NotImplementedError

    def reboot(self, instance_id: str) -> None:
        """Ask a running guest to reboot (ACPI), as AWS does: a hard reset if it has not reset
        itself after the configured stop timeout. No event: the instance stays 'running'. A guest
        that is not running is left alone."""
        raise NotImplementedError

    def terminate(self, instance_id: str) -> None:
        """Destroy the guest and everything the host holds for it, synchronously in the calling
        thread: power off, undefine, unplug its interface and public mappings, remove its root
        disk (the instance-store one) and files (instance-store disks), remove its VPC's network
        if no other port is plugged there; then report TERMINATED. Volumes, the root volume
        included, are detached and kept (deleting them is the emulator's call, by delete_disk).
        Calling it for an unknown instance just reports TERMINATED."""
        raise NotImplementedError

    def state(self, instance_id: str) -> str | None:
        """'running', 'stopped', or None if the host has no such guest (for the reconciler)."""
        raise NotImplementedError

    def reconcile_state(self, instance_id: str, recorded: str) -> str | None:
        """After a restart: what the host really has for an instance the database says is
        `recorded`: 'running', 'stopped', or None when the guest is gone. What the host has, never
        what the database hoped for (an unfinished start is None, not 'running')."""
        return self.state(instance_id)

    def reconcile_host(self, specs: list[InstanceSpec]) -> None:
        """After a restart or crash: make the host's plumbing (VPC networks, ports, public IPs)
        match the guests that should be up, removing what is ours and no longer wanted."""

    def console_output(self, instance_id: str) -> bytes:
        """The tail (up to 64 KiB) of the guest's serial console; b'' if there is none."""
        return b""

    def open_serial(self, instance_id: str) -> "SerialConsole":
        """The running guest's serial port, both ways (the web console's interactive terminal,
        as AWS's EC2 Serial Console): what the guest writes is read, what is written is typed.
        LookupError if the guest is not running; NotImplementedError where the driver has none."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the driver's connections and timers. Guests, networks and disks stay."""

    def heal(self) -> bool:
        """Called every few seconds while no host action runs: repair what can break behind the
        driver's back (its connection to the hypervisor, a VPC's DHCP/DNS daemon or namespace
        gone), idempotently. Returns True when guest events may have been missed meanwhile (a
        reconnect), so that the caller compares every instance with the host again. Raises when
        the host is still broken (the caller tries again later)."""
        return False

    # -------------------------------------------------------------------------- networks

    def ensure_vpc(self, vpc: VpcSpec) -> None:
        """Create or repair a VPC's network: its router, one segment per subnet with the gateway
        address, DHCP and DNS (for vpc.dns_domain and vpc.public_dns_domain, nothing forwarded),
        its internet gateway link. Subnets no longer listed are removed; plugged ports stay."""
        raise NotImplementedError

    def remove_vpc(self, vpc_id: str) -> bool:
        """Remove a VPC's network if no port is plugged into it (checked now, under the same
        lock as plugging). Returns True when it is gone (also when it never existed), False when
        it was left because ports are still plugged."""
        raise NotImplementedError

    # -------------------------------------------------------------------------- firewall

    def apply_firewall(self, vpc_id: str, groups: Sequence[SecurityGroupRules],
                       ports: Sequence[FirewallPort], acls: Sequence[SubnetAcl] = ()) -> None:
        """Enforce security groups in a VPC, replacing whatever was applied before, atomically:
        each listed port admits traffic that a rule of one of its groups admits (ingress to it,
        egress from it), plus replies to connections it was allowed to make or accept (stateful).
        A rule naming a group admits that group's listed members' addresses. Ports not listed are
        not filtered (only anti-spoofing applies). Every group a port or rule names must be in
        `groups` (ValueError otherwise).

        And network ACLs, before the groups: traffic entering a listed subnet must pass its ACL's
        ingress entries, traffic leaving it its egress entries (stateless, first match by rule
        number). Traffic between two addresses of one subnet, and traffic to or from the VPC
        router itself (DHCP, DNS, metadata), meets no ACL, as on AWS. Subnets not listed are not
        filtered."""
        raise NotImplementedError

    # ------------------------------------------------------------------------- interfaces

    def attach_interface(self, instance_id: str, nic: InterfaceSpec) -> None:
        """Plug an interface (its own port, anti-spoofing for its MAC and addresses, a DHCP lease
        for its MAC) and give the guest a virtio NIC with nic.mac on that port: hot-plugged if it
        runs, and in its definition (a stopped guest has it at its next start). The slot is the
        device index's. Already attached: the port's addresses and source/destination check are
        brought up to date only. LookupError if the guest does not exist."""
        raise NotImplementedError

    def detach_interface(self, instance_id: str, port_id: str) -> None:
        """Take the interface's NIC from the guest (definition and live; returns once the guest
        has let go, or after a few seconds if it does not: it loses it when it stops) and unplug
        its port, with the public mappings (map_address) of any of its addresses. Not attached,
        or no such guest: the port is unplugged all the same."""
        raise NotImplementedError

    def set_addresses(self, instance_id: str, secondary_ips: Sequence[str], source_dest_check: bool = True) -> None:
        """The primary interface's secondary addresses (anti-spoofing admits them) and its
        source/destination check (False: it may send from any address). Not plugged: nothing."""
        raise NotImplementedError

    # --------------------------------------------------------------------------- routing

    def apply_routes(self, vpc_id: str, routes: Mapping[str, Mapping[str, str | dict | None]]) -> None:
        """Route each subnet's traffic that leaves the VPC as its route table says, replacing what
        was applied before. routes: subnet CIDR -> {destination CIDR: None to leave by the internet
        gateway (only addresses mapped 1:1 by map_address may), a NAT gateway's public address
        to leave as (source NAT, egress only), or {"next_hop": a port's address} to hand it to that
        port (whose security groups' ingress rules admit it or not; its answers from addresses
        not its own pass only without source/destination check)}. A destination outside the VPC
        and not listed for a subnet has no path from it (nor do replies to it). Until the first
        call a VPC routes
        everything to its internet gateway (the behaviour before route tables reached the host).
        Kept for a VPC whose network is not there yet."""
        raise NotImplementedError

    # ------------------------------------------------------------------------- addresses

    def map_address(self, vpc_id: str, public_ip: str, private_ip: str, public_hostname: str = "") -> None:
        """1:1 NAT at the VPC's internet gateway: traffic to public_ip reaches private_ip, and
        private_ip's traffic to the internet leaves as public_ip. A public address lives in one
        place: mapping it moves it from wherever it was; a private address has one public address:
        its other mappings go. public_hostname (if given) resolves to private_ip inside the VPC.
        The VPC must have been ensured (LookupError otherwise)."""
        raise NotImplementedError

    def unmap_address(self, vpc_id: str, public_ip: str, private_ip: str) -> None:
        """Undo map_address if public_ip is mapped to private_ip in that VPC; otherwise nothing."""
        raise NotImplementedError

    # ----------------------------------------------------------------------------- disks

    def create_disk(self, disk_id: str, size_gib: int, key: bytes | None = None, shared: bool = False) -> None:
        """A blank disk of size_gib GiB (reads as zeros), LUKS-encrypted with `key` if given.
        `shared`: a Multi-Attach disk, which several guests may have attached at once (each
        guest's writes reach the others; no encryption: ValueError with a key)."""
        raise NotImplementedError

    def clone_disk(self, disk_id: str, size_gib: int, *, image_path: str | None = None,
                   snapshot_id: str | None = None, key: bytes | None = None,
                   source_key: bytes | None = None, shared: bool = False) -> None:
        """A disk of size_gib GiB (at least the source's size, else ValueError) holding the
        contents of an image file or of a snapshot made by snapshot_disk (exactly one of the
        two), as a copy-on-write overlay: the source is never written. `key` encrypts the new
        disk; `source_key` opens an encrypted snapshot (a clone of an encrypted source is a full
        re-encrypted copy, not an overlay). LookupError if the source does not exist. `shared`:
        as for create_disk (then a full copy)."""
        raise NotImplementedError

    def share_disk(self, disk_id: str, shared: bool, key: bytes | None = None) -> None:
        """Make a detached disk shared (see create_disk) or not, keeping its contents (ModifyVolume
        of MultiAttachEnabled). ValueError if a guest has it attached; LookupError if there is no
        such disk; already so: nothing."""
        raise NotImplementedError

    def resize_disk(self, disk_id: str, size_gib: int, key: bytes | None = None) -> None:
        """Grow a disk to size_gib GiB, live if a running guest has it attached (the guest sees
        the new size). Shrinking is refused (ValueError); the same size changes nothing."""
        raise NotImplementedError

    def attach_disk(self, instance_id: str, disk_id: str, key: bytes | None = None,
                    device: str | None = None) -> None:
        """Attach a disk to a guest as a virtio disk whose serial is the Nitro form of disk_id
        ('vol-0123...' -> 'vol0123...', 20 bytes: the guest finds /dev/disk/by-id/virtio-vol0123...):
        hot-plugged if it runs, and kept across stop/start. `device` is the name the user gave
        (/dev/sdf, /dev/xvdg, sdg...): its letter picks the disk's PCI slot, from which the default
        images make both /dev/sdX and /dev/xvdX (and partition names) point at it; without one,
        the first free letter from 'f'. ValueError if that letter is taken on the guest or the
        name has no single disk letter, or if another guest has the disk and it is not shared.
        Already attached to it: nothing. LookupError if the disk
        or guest does not exist."""
        raise NotImplementedError

    def detach_disk(self, instance_id: str, disk_id: str, force: bool = False) -> None:
        """Detach a disk from a guest; returns once the guest no longer has it (raises if the
        guest does not let go within a while). `force`: gone from the guest's definition at
        once; the running guest is asked to let go, but not waited for beyond a few seconds
        (a virtio disk cannot be pulled from a guest that ignores the unplug: it loses it when
        it acknowledges, at the latest when it stops); it returns normally. Until the guest lets
        go, the disk stays open by it (attaching it elsewhere fails). Not attached (or no such
        guest): nothing."""
        raise NotImplementedError

    def snapshot_disk(self, disk_id: str, snapshot_id: str, key: bytes | None = None) -> int:
        """Keep a point-in-time copy of a disk's contents (also of a disk a running guest writes
        to: crash-consistent, the guest is not stopped), encrypted with `key` if the disk is.
        Returns the bytes the snapshot stores (what changed since the disk's previous snapshot:
        snapshots are incremental; a disk cloned from a snapshot or image builds on it, so its
        first snapshot stores what changed since the clone). Again with the same ids: the same
        answer. LookupError if the disk does not exist."""
        raise NotImplementedError

    def copy_snapshot(self, snapshot_id: str, new_snapshot_id: str, key: bytes | None = None,
                      new_key: bytes | None = None) -> int:
        """A standalone copy of a snapshot (CopySnapshot: it must outlive its source), opened with
        `key` if the source is encrypted and encrypted with `new_key` if given. Returns the bytes
        it stores. LookupError if the source does not exist."""
        raise NotImplementedError

    def delete_disk(self, disk_id: str, key: bytes | None = None) -> None:
        """Remove a disk that no guest has attached (ValueError if one has), and what the host
        kept only for it (layers of deleted snapshots it built on). `key`, the disk's key if it
        is encrypted: merging what is kept into the layers that still need it reads encrypted
        layers, and without the key they stay unmerged until a later call brings it (never
        lost, only not yet merged). Missing: nothing."""
        raise NotImplementedError

    def delete_snapshot(self, snapshot_id: str, key: bytes | None = None) -> None:
        """Remove a snapshot. Disks cloned from it and later snapshots keep working: what they
        still need is kept, merged into the one that needs it when only one does (so chains do
        not grow without bound), until they are deleted. `key`: the snapshot's key if it is
        encrypted (see delete_disk). Missing: nothing."""
        raise NotImplementedError
