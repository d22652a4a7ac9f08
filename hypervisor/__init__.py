"""What is real on the host. `make_driver` picks the configured driver."""
from __future__ import annotations

from .base import (AclEntry, DiskSpec, Driver, FirewallPort, HostEvent, InstanceSpec, InterfaceSpec,
                   Listener, Rule, SecurityGroupRules, SubnetAcl, VpcSpec)


def resolve_kind(config) -> str:
    """'auto' means libvirt where a libvirt daemon answers (and the bindings are installed),
    else the API-only `none` driver."""
    if config.hypervisor != "auto":
        return config.hypervisor
    try:
        import libvirt
        libvirt.open(config.libvirt_uri).close()
        return "libvirt"
    except Exception:  # no bindings, no daemon: API-only
        return "none"


def make_driver(config, listener: Listener, vpc_ready=None, vpc_gone=None) -> Driver:
    if config.hypervisor == "none":
        from .none import NoneDriver
        return NoneDriver(listener, config.none_transition_seconds, state_dir=config.state_dir,
                          fail_starts=config.none_fail_starts)
    if config.hypervisor == "libvirt":
        from .libvirt import LibvirtDriver
        return LibvirtDriver(listener, config, vpc_ready=vpc_ready, vpc_gone=vpc_gone)
    raise SystemExit(f"unknown hypervisor driver {config.hypervisor!r} (libvirt or none)")


__all__ = ["AclEntry", "DiskSpec", "Driver", "FirewallPort", "HostEvent", "InstanceSpec", "InterfaceSpec",
           "Listener", "Rule", "SecurityGroupRules", "SubnetAcl", "VpcSpec", "make_driver", "resolve_kind"]
