"""The `none` driver: nothing boots, nothing is plumbed, but every contract of `base.Driver` is
kept, on a pretend host: executable documentation of the driver interface, and the driver of
API-only CI.

The pretend host is a dict (guests, VPC networks, address mappings, firewalls, disks and
snapshots), kept in `<state_dir>/none-host.json` when a state dir is given, so that a restarted
server finds what the host had, as it would with real guests that kept running while it was
down (and does not find what had not happened yet: a start still under way when the server died
left nothing). Guest events arrive after `delay` seconds, from a timer thread, as a real
hypervisor's events do; host state that a method changes changes before the method returns.
"""
from __future__ import annotations

import copy
import ipaddress
import json
import os
import queue
import threading
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from .base import (Driver, FirewallPort, HostEvent, InstanceSpec, InterfaceSpec, Listener,
                   SecurityGroupRules, SerialConsole, SubnetAcl, VpcSpec)
from .domainxml import LETTERS, device_letter
from .nftables import firewall_state

HOST_FILE = "none-host.json"


def _empty_host() -> dict:
    return {"guests": {}, "vpcs": {}, "disks": {}, "snapshots": {}}


class NoneDriver(Driver):
    name = "none"

    def __init__(self, listener: Listener, delay: float = 0.2, state_dir: str | os.PathLike | None = None,
                 fail_starts: int = 0):
        super().__init__(listener)
        self.delay = delay
        self.fail_starts = fail_starts  # tests: this many start() calls raise, as a host hiccup would
        self._lock = threading.RLock()
        self._timers: set[threading.Timer] = set()
        self._path = Path(state_dir) / HOST_FILE if state_dir else None
        self.host = _empty_host()
        if self._path is not None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self.host = json.loads(self._path.read_text())
            except FileNotFoundError:
                pass

    # ------------------------------------------------------------------------------ helpers

    def _save(self) -> None:
        """Every change to the pretend host is durable before it is reported."""
        if self._path is None:
            return
        tmp = self._path.with_name(self._path.name + ".tmp")
        tmp.write_text(json.dumps(self.host, indent=1, sort_keys=True))
        os.replace(tmp, self._path)

    @contextmanager
    def _changing(self):
        """Hold the lock over a change to the pretend host; save it if the change succeeds."""
        with self._lock:
            yield
            self._save()

    def _later(self, instance_id: str, event: HostEvent, change=None) -> None:
        """After `delay`, from a timer thread: apply `change` to the host (if any), then report."""
        def fire():
            with self._lock:
                self._timers.discard(timer)
                if change is not None:
                    if change() is False:
                        return  # overtaken by a later call (e.g. terminated before it booted)
                    self._save()
            self.report(instance_id, event)
        timer = threading.Timer(self.delay, fire)
        timer.daemon = True
        with self._lock:
            self._timers.add(timer)
        timer.start()

    def _vpc(self, vpc_id: str) -> dict:
        vpc = self.host["vpcs"].get(vpc_id)
        if vpc is None:
            raise LookupError(f"VPC {vpc_id} has no network (ensure_vpc first)")
        return vpc

    def _disk(self, disk_id: str) -> dict:
        disk = self.host["disks"].get(disk_id)
        if disk is None:
            raise LookupError(f"no disk {disk_id}")
        return disk

    # ---------------------------------------------------------------------------- lifecycle

    def start(self, spec: InstanceSpec) -> None:
        """See Driver.start."""
        iid = spec.instance_id
        with self._lock:
            if self.fail_starts > 0:
                self.fail_starts -= 1
                raise RuntimeError(f"injected host fault starting {iid} (none_fail_starts)")
            if spec.vpc_id:
                self.ensure_vpc(spec.vpc())
                vpc = self._vpc(spec.vpc_id)
                if spec.subnet_id not in dict(vpc["subnets"]):
                    raise ValueError(f"subnet {spec.subnet_id} is not in VPC {spec.vpc_id}")
                for other in self.host["vpcs"].values():  # one port per instance
                    other["ports"].pop(iid, None)
                self._plug(spec)
                for nic in spec.interfaces:
                    self._plug_interface(iid, nic)
            for d in spec.disks:  # LookupError (nothing changed): a volume is never made here
                self._disk(d.disk_id)
            defining = iid not in self.host["guests"]
            guest = self.host["guests"].setdefault(iid, {"state": "stopped", "disks": []})
            guest["vpc_id"] = spec.vpc_id
            for nic in spec.interfaces:
                guest.setdefault("nics", {})[nic.port_id] = {"mac": nic.mac.lower(), "device_index": nic.device_index}
            if defining:  # the definition's disks: its volumes in their slots, its instance store
                for d in spec.disks:
                    disk = self._disk(d.disk_id)
                    letter = "a" if d.disk_id == spec.root_disk else device_letter(d.device)
                    if "sharers" in disk:
                        disk["sharers"][iid] = letter
                        continue
                    if disk["attached_to"] not in (None, iid):
                        raise ValueError(f"{d.disk_id} is attached to {disk['attached_to']}")
                    disk["attached_to"] = iid
                    disk["letter"] = letter
                guest["root_disk"] = spec.root_disk
                guest["instance_store"] = {d.disk_id: {"size_gib": d.size_gib, "letter": device_letter(d.device)}
                                           for d in spec.instance_store}
            self._save()
            if guest["state"] == "running":
                self.report(iid, HostEvent.RUNNING)
                return
        self._settle(iid, HostEvent.RUNNING)

    def stop(self, instance_id: str, force: bool = False) -> None:
        """See Driver.stop."""
        with self._lock:
            guest = self.host["guests"].get(instance_id)
            if guest is None or guest["state"] != "running":
                self.report(instance_id, HostEvent.STOPPED)
                return
            self._unmap_instance(instance_id)
            self._save()
        self._settle(instance_id, HostEvent.STOPPED)

    def _settle(self, instance_id: str, event: HostEvent) -> None:
        """The guest reaches state `event` after `delay` (unless terminated meanwhile)."""
        def change():
            guest = self.host["guests"].get(instance_id)
            if guest is None or guest["state"] == event.value:
                return False  # gone, or two calls raced to the same state: one change, one report
            guest["state"] = event.value
            self._console(guest, "boot" if event == HostEvent.RUNNING else "power off")
        self._later(instance_id, event, change)

    @staticmethod
    def _console(guest: dict, what: str) -> None:
        """The pretend serial console: one line per boot, reboot or power-off (tests read it)."""
        if what != "power off":
            guest["boots"] = guest.get("boots", 0) + 1
            what = f"{what} {guest['boots']}"
        guest.setdefault("console", []).append(f"ec2emu-none: {what}")

    def reboot(self, instance_id: str) -> None:
        """See Driver.reboot: the pretend guest boots again at once (its console says so)."""
        with self._changing():
            guest = self.host["guests"].get(instance_id)
            if guest is not None and guest["state"] == "running":
                self._console(guest, "reboot, boot")

    def terminate(self, instance_id: str) -> None:
        """See Driver.terminate. The host work is done on return; the event follows after `delay`."""
        with self._lock:
            guest = self.host["guests"].pop(instance_id, None) or {}
            for disk in self.host["disks"].values():
                if disk["attached_to"] == instance_id:
                    disk["attached_to"] = None
                disk.get("sharers", {}).pop(instance_id, None)
            for vpc_id, vpc in list(self.host["vpcs"].items()):
                for pid in [p for p, port in vpc["ports"].items() if port.get("owner") == instance_id]:
                    self._unplug(vpc, pid)  # its other interfaces' ports
                plugged = instance_id in vpc["ports"]
                self._unplug(vpc, instance_id)
                if plugged or vpc_id == guest.get("vpc_id"):
                    self.remove_vpc(vpc_id)
            self._save()
        self._later(instance_id, HostEvent.TERMINATED)

    def _unmap_instance(self, instance_id: str) -> None:
        for vpc in self.host["vpcs"].values():
            port = vpc["ports"].get(instance_id)
            if port is not None:
                self._unmap(vpc, {port["ip"]})

    @staticmethod
    def _unmap(vpc: dict, private_ips: set) -> None:
        for pub in [p for p, priv in vpc["nat"].items() if priv in private_ips]:
            del vpc["nat"][pub]
            vpc["names"].pop(pub, None)

    def _unplug(self, vpc: dict, port_id: str) -> None:
        """A port goes, and the public mappings of all its addresses with it."""
        port = vpc["ports"].pop(port_id, None)
        if port is not None:
            self._unmap(vpc, {port["ip"], *port.get("secondary_ips", ())})

    def state(self, instance_id: str) -> str | None:
        """See Driver.state."""
        with self._lock:
            guest = self.host["guests"].get(instance_id)
            return None if guest is None else guest["state"]

    def reconcile_state(self, instance_id: str, recorded: str) -> str | None:
        """See Driver.reconcile_state: what the pretend host has, whatever `recorded` says."""
        return self.state(instance_id)

    def reconcile_host(self, specs: list[InstanceSpec]) -> None:
        """See Driver.reconcile_host."""
        with self._lock:
            wanted = {s.vpc_id: s.vpc() for s in specs if s.vpc_id}
            for vpc_id in set(self.host["vpcs"]) - set(wanted):
                self.host["vpcs"].pop(vpc_id)
            for vpc in wanted.values():
                self.ensure_vpc(vpc)
            plugged = {s.instance_id for s in specs} | {n.port_id for s in specs for n in s.interfaces}
            for vpc in self.host["vpcs"].values():
                vpc["ports"] = {i: p for i, p in vpc["ports"].items() if i in plugged}
                vpc["nat"], vpc["names"] = {}, {}
            for s in specs:
                if s.vpc_id:
                    self._plug(s)
                    for nic in s.interfaces:
                        self._plug_interface(s.instance_id, nic)
            self._save()

    def _plug(self, spec: InstanceSpec) -> None:
        self.host["vpcs"][spec.vpc_id]["ports"][spec.instance_id] = {
            "ip": spec.private_ip, "mac": spec.mac_address.lower(), "subnet_id": spec.subnet_id,
            "hostname": spec.hostname, "secondary_ips": list(spec.secondary_ips),
            "source_dest_check": spec.source_dest_check}
        if spec.public_ip:
            self.map_address(spec.vpc_id, spec.public_ip, spec.private_ip, spec.public_hostname)

    def _plug_interface(self, instance_id: str, nic: InterfaceSpec) -> None:
        self.host["vpcs"][nic.vpc_id]["ports"][nic.port_id] = {
            "ip": nic.ip, "mac": nic.mac.lower(), "subnet_id": nic.subnet_id, "hostname": nic.hostname,
            "secondary_ips": list(nic.secondary_ips), "owner": instance_id,
            "source_dest_check": nic.source_dest_check}

    # ------------------------------------------------------------------------ interfaces

    def attach_interface(self, instance_id: str, nic: InterfaceSpec) -> None:
        """See Driver.attach_interface."""
        with self._changing():
            guest = self.host["guests"].get(instance_id)
            if guest is None:
                raise LookupError(f"no guest {instance_id}")
            if nic.vpc_id not in self.host["vpcs"]:
                raise LookupError(f"VPC {nic.vpc_id} has no network")
            taken = {n["device_index"] for p, n in guest.get("nics", {}).items() if p != nic.port_id}
            if nic.device_index in taken or not 1 <= nic.device_index <= 2:
                raise ValueError(f"{instance_id}: no free NIC slot for device index {nic.device_index}")
            self._plug_interface(instance_id, nic)
            guest.setdefault("nics", {})[nic.port_id] = {"mac": nic.mac.lower(), "device_index": nic.device_index}

    def detach_interface(self, instance_id: str, port_id: str) -> None:
        """See Driver.detach_interface."""
        with self._changing():
            self.host["guests"].get(instance_id, {}).get("nics", {}).pop(port_id, None)
            for vpc in self.host["vpcs"].values():
                self._unplug(vpc, port_id)

    def set_addresses(self, instance_id: str, secondary_ips: Sequence[str], source_dest_check: bool = True) -> None:
        """See Driver.set_addresses."""
        with self._changing():
            for vpc in self.host["vpcs"].values():
                if instance_id in vpc["ports"]:
                    vpc["ports"][instance_id].update(secondary_ips=list(secondary_ips),
                                                     source_dest_check=source_dest_check)

    def console_output(self, instance_id: str) -> bytes:
        """See Driver.console_output: the pretend console's lines."""
        with self._lock:
            lines = (self.host["guests"].get(instance_id) or {}).get("console", [])
            return "".join(line + "\n" for line in lines).encode()

    def open_serial(self, instance_id: str) -> "PretendSerial":
        """See Driver.open_serial: a pretend terminal (see PretendSerial)."""
        with self._lock:
            guest = self.host["guests"].get(instance_id)
            if guest is None or guest["state"] != "running":
                raise LookupError(f"{instance_id} is not running")
        return PretendSerial(instance_id)

    def close(self) -> None:
        with self._lock:
            for t in self._timers:
                t.cancel()
            self._timers.clear()

    # ----------------------------------------------------------------------------- networks

    def ensure_vpc(self, vpc: VpcSpec) -> None:
        """See Driver.ensure_vpc."""
        subnets = [[sid, str(ipaddress.ip_network(cidr))] for sid, cidr in vpc.subnets]
        with self._changing():
            have = self.host["vpcs"].setdefault(vpc.vpc_id, {"ports": {}, "nat": {}, "names": {}})
            have.update(subnets=subnets, dns_domain=vpc.dns_domain, public_dns_domain=vpc.public_dns_domain,
                        dhcp_domain=vpc.dhcp_domain, dns_support=vpc.dns_support, dns_names=vpc.dns_names)

    def remove_vpc(self, vpc_id: str) -> bool:
        """See Driver.remove_vpc."""
        with self._lock:
            vpc = self.host["vpcs"].get(vpc_id)
            if vpc is None:
                return True
            if vpc["ports"]:
                return False
            del self.host["vpcs"][vpc_id]
            self._save()
            return True

    # ----------------------------------------------------------------------------- firewall

    def apply_firewall(self, vpc_id: str, groups: Sequence[SecurityGroupRules],
                       ports: Sequence[FirewallPort], acls: Sequence[SubnetAcl] = ()) -> None:
        """See Driver.apply_firewall. Kept as given (also for a VPC without a network yet, as the
        libvirt driver keeps it for when the network comes); `admits` evaluates it."""
        with self._changing():
            self.host.setdefault("firewalls", {})[vpc_id] = firewall_state(groups, ports, acls)

    def admits(self, vpc_id: str, src_ip: str, dst_ip: str, protocol: str, port: int | None = None) -> bool:
        """Would the applied firewall let a new connection from src_ip to dst_ip:port through?
        Both ends' groups are asked (egress of the source, ingress of the destination); an address
        that is not a listed port is not filtered on its side."""
        with self._lock:
            fw = copy.deepcopy(self.host.get("firewalls", {}).get(vpc_id)) or {"groups": {}, "ports": {}}
        groups_of = {p["ip"]: p["groups"] for p in fw["ports"].values()}

        def peer_matches(rule: dict, peer_ip: str) -> bool:
            if rule["cidr"] is not None:
                return ipaddress.ip_address(peer_ip) in ipaddress.ip_network(rule["cidr"])
            return rule["group_id"] in groups_of.get(peer_ip, [])

        def allowed(own_ip: str, direction: str, peer_ip: str) -> bool:
            if own_ip not in groups_of:
                return True
            for gid in groups_of[own_ip]:
                for r in fw["groups"][gid][direction]:
                    if r["protocol"] not in ("all", protocol) or not peer_matches(r, peer_ip):
                        continue
                    lo, hi = r["from_port"], r["to_port"]
                    if r["protocol"] in ("tcp", "udp") and port is not None and lo is not None:
                        if not lo <= port <= (hi if hi is not None else lo):
                            continue
                    return True
            return False
        return allowed(src_ip, "egress", dst_ip) and allowed(dst_ip, "ingress", src_ip)

    # ------------------------------------------------------------------------------ routing

    def apply_routes(self, vpc_id: str, routes: Mapping[str, Mapping[str, str | dict | None]]) -> None:
        """See Driver.apply_routes. Kept as given (`routes_of` reads it back)."""
        with self._changing():
            self.host.setdefault("routes", {})[vpc_id] = {cidr: dict(r) for cidr, r in routes.items()}

    def routes_of(self, vpc_id: str) -> dict | None:
        with self._lock:
            return copy.deepcopy(self.host.get("routes", {}).get(vpc_id))

    # ---------------------------------------------------------------------------- addresses

    def map_address(self, vpc_id: str, public_ip: str, private_ip: str, public_hostname: str = "") -> None:
        """See Driver.map_address."""
        with self._changing():
            vpc = self._vpc(vpc_id)
            for other in self.host["vpcs"].values():
                if other["nat"].pop(public_ip, None) is not None:
                    other["names"].pop(public_ip, None)
            for pub in [p for p, priv in vpc["nat"].items() if priv == private_ip]:
                del vpc["nat"][pub]
                vpc["names"].pop(pub, None)
            vpc["nat"][public_ip] = private_ip
            if public_hostname:
                vpc["names"][public_ip] = public_hostname

    def unmap_address(self, vpc_id: str, public_ip: str, private_ip: str) -> None:
        """See Driver.unmap_address."""
        with self._lock:
            vpc = self.host["vpcs"].get(vpc_id)
            if vpc is not None and vpc["nat"].get(public_ip) == private_ip:
                del vpc["nat"][public_ip]
                vpc["names"].pop(public_ip, None)
                self._save()

    # -------------------------------------------------------------------------------- disks

    def create_disk(self, disk_id: str, size_gib: int, key: bytes | None = None, shared: bool = False) -> None:
        """See Driver.create_disk."""
        self._new_disk(disk_id, size_gib, key, source=None, shared=shared)

    def clone_disk(self, disk_id: str, size_gib: int, *, image_path: str | None = None,
                   snapshot_id: str | None = None, key: bytes | None = None,
                   source_key: bytes | None = None, shared: bool = False) -> None:
        """See Driver.clone_disk. An image file's size is its file size, rounded up to GiB."""
        if (image_path is None) == (snapshot_id is None):
            raise ValueError("clone from exactly one of image_path and snapshot_id")
        with self._lock:
            if image_path is not None:
                if not os.path.exists(image_path):
                    raise LookupError(f"no image file {image_path}")
                need = -(-os.path.getsize(image_path) // 2**30)
                source = f"image:{image_path}"
            else:
                snap = self.host["snapshots"].get(snapshot_id)
                if snap is None or snap["deleted"]:
                    raise LookupError(f"no snapshot {snapshot_id}")
                if snap["encrypted"] and source_key is None:
                    raise ValueError(f"snapshot {snapshot_id} is encrypted: source_key needed")
                need, source = snap["size_gib"], f"snapshot:{snapshot_id}"
            if size_gib < need:
                raise ValueError(f"{size_gib} GiB is smaller than the source ({need} GiB)")
            self._new_disk(disk_id, size_gib, key, source, shared)

    def _new_disk(self, disk_id: str, size_gib: int, key: bytes | None, source: str | None,
                  shared: bool = False) -> None:
        """A disk: `attached_to` its guest; a shared one has `sharers` (guest -> letter) instead."""
        if size_gib < 1:
            raise ValueError("a disk has at least 1 GiB")
        if shared and key is not None:
            raise ValueError("shared (Multi-Attach) disks are not encrypted on this host")
        with self._lock:
            if disk_id not in self.host["disks"]:
                self.host["disks"][disk_id] = {"size_gib": size_gib, "encrypted": key is not None,
                                               "source": source, "attached_to": None,
                                               **({"sharers": {}} if shared else {})}
                self._save()

    def share_disk(self, disk_id: str, shared: bool, key: bytes | None = None) -> None:
        """See Driver.share_disk."""
        with self._changing():
            disk = self._disk(disk_id)
            if disk["attached_to"] or disk.get("sharers"):
                raise ValueError(f"{disk_id} is attached")
            if shared and key is not None:
                raise ValueError("shared (Multi-Attach) disks are not encrypted on this host")
            if shared:
                disk.setdefault("sharers", {})
            else:
                disk.pop("sharers", None)

    def _letters(self, instance_id: str) -> set[str]:
        """The device letters of the disks attached to a guest."""
        return {d.get("letter") for d in self.host["disks"].values() if d["attached_to"] == instance_id} | {
            d["sharers"][instance_id] for d in self.host["disks"].values() if instance_id in d.get("sharers", {})}

    def resize_disk(self, disk_id: str, size_gib: int, key: bytes | None = None) -> None:
        """See Driver.resize_disk."""
        with self._changing():
            disk = self._disk(disk_id)
            if size_gib < disk["size_gib"]:
                raise ValueError(f"{disk_id} has {disk['size_gib']} GiB: disks only grow")
            disk["size_gib"] = size_gib

    def attach_disk(self, instance_id: str, disk_id: str, key: bytes | None = None,
                    device: str | None = None) -> None:
        """See Driver.attach_disk."""
        with self._changing():
            disk = self._disk(disk_id)
            if instance_id not in self.host["guests"]:
                raise LookupError(f"no guest {instance_id}")
            sharers = disk.get("sharers")
            if sharers is None and disk["attached_to"] not in (None, instance_id):
                raise ValueError(f"{disk_id} is attached to {disk['attached_to']}")
            if disk["attached_to"] == instance_id or instance_id in (sharers or {}):
                return
            taken = self._letters(instance_id)
            letter = device_letter(device) if device else next(
                (c for c in LETTERS[LETTERS.index("f"):] + LETTERS[1:LETTERS.index("f")] if c not in taken), None)
            if letter is None or letter in taken or letter == "a":  # 'a': the root disk's
                raise ValueError(f"{instance_id} has a device at /dev/sd{letter} already")
            if sharers is not None:
                sharers[instance_id] = letter
            else:
                disk["attached_to"], disk["letter"] = instance_id, letter

    def detach_disk(self, instance_id: str, disk_id: str, force: bool = False) -> None:
        """See Driver.detach_disk."""
        with self._changing():
            disk = self.host["disks"].get(disk_id, {})
            if disk.get("attached_to") == instance_id:
                disk["attached_to"] = None
            disk.get("sharers", {}).pop(instance_id, None)

    def snapshot_disk(self, disk_id: str, snapshot_id: str, key: bytes | None = None) -> int:
        """See Driver.snapshot_disk (a pretend host stores nothing: 0 bytes)."""
        with self._changing():
            disk = self._disk(disk_id)
            self.host["snapshots"].setdefault(snapshot_id, {"size_gib": disk["size_gib"],
                                                            "encrypted": disk["encrypted"], "deleted": False})
        return 0

    def copy_snapshot(self, snapshot_id: str, new_snapshot_id: str, key: bytes | None = None,
                      new_key: bytes | None = None) -> int:
        """See Driver.copy_snapshot."""
        with self._changing():
            source = self.host["snapshots"].get(snapshot_id)
            if source is None or source["deleted"]:
                raise LookupError(f"no snapshot {snapshot_id}")
            self.host["snapshots"].setdefault(new_snapshot_id, {
                "size_gib": source["size_gib"], "encrypted": new_key is not None or source["encrypted"],
                "deleted": False})
        return 0

    def delete_disk(self, disk_id: str, key: bytes | None = None) -> None:
        """See Driver.delete_disk."""
        with self._lock:
            disk = self.host["disks"].get(disk_id)
            if disk is None:
                return
            if disk["attached_to"] or disk.get("sharers"):
                raise ValueError(f"{disk_id} is attached to {disk['attached_to'] or ', '.join(disk['sharers'])}")
            del self.host["disks"][disk_id]
            self._forget_deleted_snapshots()
            self._save()

    def delete_snapshot(self, snapshot_id: str, key: bytes | None = None) -> None:
        """See Driver.delete_snapshot: kept (marked deleted) while a disk was cloned from it."""
        with self._lock:
            snap = self.host["snapshots"].get(snapshot_id)
            if snap is not None:
                snap["deleted"] = True
                self._forget_deleted_snapshots()
                self._save()

    def _forget_deleted_snapshots(self) -> None:
        used = {d["source"] for d in self.host["disks"].values()}
        for sid in [s for s, snap in self.host["snapshots"].items()
                    if snap["deleted"] and f"snapshot:{s}" not in used]:
            del self.host["snapshots"][sid]


class PretendSerial(SerialConsole):
    """The none driver's serial port: a login prompt, then a shell that echoes what is typed and
    answers `echo WORDS` and `hostname` (the contract's documentation, and what the web console's
    tests type into)."""

    def __init__(self, instance_id: str):
        self.instance_id = instance_id
        self._out = queue.Queue()
        self._line = ""
        self._out.put(f"\r\nec2emu-none {instance_id} ttyS0\r\n\r\n$ ".encode())

    def read(self, timeout: float) -> bytes:
        try:
            data = self._out.get(timeout=timeout)
        except queue.Empty:
            return b""
        while not self._out.empty():
            data += self._out.get_nowait()
        return data

    def write(self, data: bytes) -> None:
        for ch in data.decode("utf-8", "replace"):
            if ch in "\r\n":
                self._out.put(b"\r\n" + self._answer(self._line.strip()) + b"$ ")
                self._line = ""
            elif ch in "\x7f\b":
                if self._line:
                    self._line = self._line[:-1]
                    self._out.put(b"\b \b")
            else:
                self._line += ch
                self._out.put(ch.encode())

    def _answer(self, command: str) -> bytes:
        if not command:
            return b""
        if command == "hostname":
            return f"{self.instance_id}\r\n".encode()
        if command == "echo" or command.startswith("echo "):
            return (command[5:] + "\r\n").encode()
        return f"sh: {command.split()[0]}: not found\r\n".encode()
