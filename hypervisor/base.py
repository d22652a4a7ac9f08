"""The narrow interface between the emulator and the host.

The emulator says what should exist; a driver makes it so and reports back through the
listener when a guest really changed state ('running', 'stopped', 'terminated'), so that
instance states follow the hypervisor, not timers in the emulator.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum


class HostEvent(StrEnum):
    """What a driver reports about a guest (equal to the plain strings, too)."""
    RUNNING = "running"
    STOPPED = "stopped"
    TERMINATED = "terminated"
    VANISHED = "vanished"  # the host lost the guest (or could not bring it up)


Listener = Callable[[str, HostEvent], None]  # (instance id, what happened)


@dataclass
class InstanceSpec:
    """Everything a driver needs to bring up one instance."""
    instance_id: str
    vcpus: int
    memory_mib: int
    image_path: str | None = None
    kernel_path: str | None = None
    ramdisk_path: str | None = None
    mac_address: str = ""
    vpc_id: str = ""
    subnet_id: str = ""
    private_ip: str = ""
    public_ip: str | None = None
    hostname: str = ""  # the private DNS name, served by the VPC's DNS
    region: str = ""
    instance_type: str = ""
    vpc_subnets: list[tuple[str, str]] = field(default_factory=list)  # (subnet id, cidr) of its VPC


class Driver:
    name = "base"

    def __init__(self, listener: Listener):
        self.listener = listener

    def start(self, spec: InstanceSpec) -> None:
        raise NotImplementedError

    def stop(self, instance_id: str, force: bool = False) -> None:
        raise NotImplementedError

    def reboot(self, instance_id: str) -> None:
        raise NotImplementedError

    def terminate(self, instance_id: str) -> None:
        raise NotImplementedError

    def state(self, instance_id: str) -> str | None:
        """'running', 'stopped', or None if the host has no such guest (for the reconciler)."""
        raise NotImplementedError

    def reconcile_state(self, instance_id: str, recorded: str) -> str | None:
        """After a restart: what the host really has for an instance the database says is
        `recorded` ('running', 'stopped', or None when the guest is gone)."""
        return self.state(instance_id)

    def reconcile_host(self, specs: list[InstanceSpec]) -> None:
        """After a restart or crash: make the host's plumbing (networks, ...) match the guests
        that should be up, removing what is ours and no longer wanted."""

    def console_output(self, instance_id: str) -> bytes:
        return b""

    def close(self) -> None:
        pass
