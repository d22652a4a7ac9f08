"""What is real on the host. `make_driver` picks the configured driver."""
from __future__ import annotations

from .base import Driver, InstanceSpec, Listener


def make_driver(config, listener: Listener, vpc_ready=None) -> Driver:
    if config.hypervisor == "none":
        from .none import NoneDriver
        return NoneDriver(listener, config.none_transition_seconds)
    if config.hypervisor == "libvirt":
        from .libvirt import LibvirtDriver
        return LibvirtDriver(listener, config, vpc_ready=vpc_ready)
    raise SystemExit(f"unknown hypervisor driver {config.hypervisor!r} (libvirt or none)")


__all__ = ["Driver", "InstanceSpec", "Listener", "make_driver"]
