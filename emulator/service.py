"""The cloud: database, driver and handlers wired together. The API layer calls `Cloud.call`."""
from __future__ import annotations

import dataclasses
import logging
import threading
from pathlib import Path

from sqlalchemy.exc import IntegrityError

from hypervisor import make_driver, resolve_kind
from hypervisor.host import crash_point

from . import db, instances, regions, spot
from .config import Config
from .errors import DryRunOperation, EC2Error, IncorrectState, InvalidAction
from .host_tasks import LANES, HostWorker
from .registry import HANDLERS, Context, Host, load_handlers

load_handlers()

log = logging.getLogger("ec2emu")


class Cloud:
    handlers = HANDLERS

    def __init__(self, config: Config):
        config = dataclasses.replace(config, hypervisor=resolve_kind(config))
        self.config = config
        if not config.database_url:
            Path(config.state_dir).mkdir(parents=True, exist_ok=True)
        url = config.effective_database_url
        db.migrate(url)
        self.engine = db.make_engine(url)
        self.Session = db.session_factory(self.engine)
        self.metadata = None
        agent = config.host_agent
        if agent and config.hypervisor == "libvirt":
            # Guests read their metadata from a listener opened inside each VPC's namespace as
            # the driver brings the namespace up.
            from metadata.server import MetadataServer
            self.metadata = MetadataServer(self.Session, config.state_dir, config=config)
        # Host actions (boot, stop, plumbing) are durable tasks run after the commit, in order,
        # off the request path: RunInstances answers 'pending' at once, as AWS does.
        self.workers = [HostWorker(self.Session, lane, self.heal if lane == "guests" else None)
                        for lane in LANES]
        # An API-only process (host_agent false) acts on nothing and hears no guest: the host
        # agent of its host (one process, per DESIGN.md) runs the tasks it writes.
        self.driver = make_driver(config, self.on_hypervisor_event if agent else (lambda *event: None),
                                  vpc_ready=self.metadata.listen if self.metadata else None,
                                  vpc_gone=self.metadata.close if self.metadata else None)
        self.host = Host(self.Session, config, self.driver)
        self._ready: set[tuple[str, str]] = set()  # positive memo only: defaults never vanish
        self._ready_lock = threading.Lock()
        if agent:
            instances.reconcile(self.host)
            for worker in self.workers:  # after the reconciler: they run what a crash left unfinished
                worker.start(self.host)

    def close(self) -> None:
        self.host.stopping.set()  # long host actions (imports) stop and stay pending
        for worker in self.workers:
            worker.close()
        if self.metadata:
            self.metadata.close_all()
        self.driver.close()
        self.engine.dispose()

    def context(self, session, account_id: str, region: str, request_id: str) -> Context:
        return Context(account_id, region, request_id, session, self.config, self.driver)

    def ensure_defaults(self, account_id: str, region: str) -> None:
        """The default VPC, subnets, group and public images of an (account, region), created once."""
        if (account_id, region) in self._ready:
            return
        with self._ready_lock:
            if (account_id, region) in self._ready:
                return
            for attempt in range(3):
                with self.Session() as session:
                    ctx = self.context(session, account_id, region, "bootstrap")
                    try:
                        regions.ensure_region_defaults(ctx)
                        session.commit()
                        break
                    except IntegrityError:  # another worker made them first
                        session.rollback()
            self._ready.add((account_id, region))

    def call(self, action: str, params: dict, account_id: str, region: str, request_id: str) -> dict | None:
        """Run one handler in its own transaction. DryRun=true runs it the same way, every check
        included, then rolls the transaction back (host tasks are rows in it: none survive) and
        answers DryRunOperation, as AWS does only for a request that would have succeeded."""
        handler = HANDLERS.get(action)
        if handler is None:
            raise InvalidAction.not_implemented(action)
        self.ensure_defaults(account_id, region)
        for attempt in (1, 2):
            with self.Session() as session:
                ctx = self.context(session, account_id, region, request_id)
                try:
                    result = handler(ctx, params)
                    if params.get("DryRun"):
                        session.rollback()
                        raise DryRunOperation()
                    session.commit()
                    break
                except EC2Error:
                    session.rollback()
                    raise
                except IntegrityError as exc:
                    # Another request (maybe another API process) committed the same name, rule
                    # or client token first: the database's constraint stopped this one. Once
                    # more, from the start: the handler now sees the winner and answers as AWS
                    # does (a Duplicate error, or the first request's result for a ClientToken).
                    session.rollback()
                    log.info("conflict in %s (attempt %d): %s", action, attempt, exc.orig)
                    if attempt == 2:
                        raise IncorrectState.concurrent_change() from None
        crash_point(self.config, f"after-commit:{action}")  # tests only: die before the host acts
        if ctx.wrote_tasks:
            self.wake_workers()
        return result

    def heal(self) -> None:
        """The watchdog (the guests worker runs it when idle): repair the host, and when the
        driver may have missed guest events (it reconnected), compare every instance again."""
        if self.driver.heal():
            log.warning("the hypervisor connection was re-opened: reconciling every instance")
            instances.reconcile(self.host)
            self.wake_workers()
        if self.metadata:
            self.metadata.heal()
        if spot.sweep(self.host):  # Spot notices due, requests to fulfill
            self.wake_workers()

    def wake_workers(self) -> None:
        for worker in self.workers:
            worker.wake()

    def on_hypervisor_event(self, instance_id: str, state: str) -> None:
        """A driver's event (any thread): record it; host work it calls for is a task."""
        try:
            with self.Session() as session:
                db.lock_for_write(session)  # the state it reads is the state it changes
                follow_up = instances.apply_hypervisor_event(session, instance_id, state)
                session.commit()
            if follow_up:
                self.wake_workers()
        except Exception:  # a listener must never kill the driver's thread
            log.exception("applying hypervisor event %s %s", instance_id, state)
