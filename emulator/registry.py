"""What handlers and host actions are, and where they are found.

Action name -> handler: handlers register with @action("Name") in their resource module, and
every resource module is listed in HANDLER_MODULES; `load_handlers` imports them and refuses to
start when a module that registers handlers is missing from the list (it would otherwise answer
InvalidAction for its operations without a word).

Host actions (@host_action("instance.start")) are what the host worker runs for a durable host
task (see host_tasks.py); they live beside the handlers that ask for them.
"""
from __future__ import annotations

import importlib
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from hypervisor import Driver

from .config import Config

# Every module of emulator/ that registers handlers, in no particular order.
HANDLER_MODULES = ("addresses", "ebs_encryption", "firewall", "image_import", "images", "instance_types",
                   "instances", "keypairs", "regions", "security_groups", "snapshots", "tags", "volumes", "vpcs",
                   "internet_gateways", "route_tables", "dhcp_options", "network_acls", "network_interfaces",
                   "routing", "nat_gateways", "launch_templates", "placement_groups",
                   "instance_profiles", "spot")


@dataclass
class Context:
    """What a handler knows of its request: who, where, and the open transaction."""
    account_id: str
    region: str
    request_id: str
    session: Session
    config: Config
    driver: Driver
    wrote_tasks: bool = False

    def host_task(self, kind: str, resource_id: str, zone: str | None = None, **args) -> None:
        """Ask the host to act once this transaction is durable: a HostTask row in the same
        transaction, run by the host worker after the commit (and after a crash, at start-up)."""
        from .host_tasks import enqueue  # host_tasks imports this module
        enqueue(self.session, kind, resource_id, zone, **args)
        self.wrote_tasks = True


class Interrupted(Exception):
    """Raised by a long host action that saw `Host.stopping`: its task stays pending and runs
    again at the next start (instead of holding the shutdown up)."""


@dataclass
class Host:
    """What a host action sees: its own short database sessions, the config and the driver;
    `stopping` is set when the process shuts down (long actions watch it)."""
    Session: sessionmaker
    config: Config
    driver: Driver
    stopping: threading.Event = field(default_factory=threading.Event)

    def context(self, session: Session, account_id: str, region: str) -> Context:
        return Context(account_id, region, "host-task", session, self.config, self.driver)


Handler = Callable[[Context, dict], dict | None]
HostAction = Callable[..., None]  # (host, resource id, **task args)
HANDLERS: dict[str, Handler] = {}
HOST_ACTIONS: dict[str, HostAction] = {}
# kind -> what to record when every attempt of a host action failed: (host, resource id, error)
HOST_ACTION_FAILED: dict[str, Callable[[Host, str, str], None]] = {}


def _registrar(table: dict, name: str) -> Callable:
    def register(fn):
        if name in table:
            raise RuntimeError(f"{name} registered twice")
        table[name] = fn
        return fn
    return register


def action(name: str) -> Callable[[Handler], Handler]:
    return _registrar(HANDLERS, name)


def host_action(kind: str) -> Callable[[HostAction], HostAction]:
    return _registrar(HOST_ACTIONS, kind)


def host_action_failed(kind: str) -> Callable:
    """Registers what records the final failure of a host action (after its retries)."""
    return _registrar(HOST_ACTION_FAILED, kind)


_REGISTERS = re.compile(r"^@?(host_)?action(_failed)?\(", re.M)


def load_handlers() -> None:
    """Import every handler module; a module of emulator/ that registers handlers but is not
    listed is a start-up error."""
    here = Path(__file__).resolve().parent
    unlisted = sorted(p.stem for p in here.glob("*.py")
                      if p.stem not in HANDLER_MODULES and _REGISTERS.search(p.read_text()))
    if unlisted:
        raise RuntimeError(f"emulator modules {unlisted} register handlers but are not in "
                           f"registry.HANDLER_MODULES")
    for name in HANDLER_MODULES:
        importlib.import_module(f"{__package__}.{name}")
