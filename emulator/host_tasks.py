"""Durable host tasks and the worker that runs them.

A handler that needs the host to act (boot, stop, tear down...) does not act: it writes a
`HostTask` row in its own transaction (`Context.host_task`). Once that commits, the host worker
runs the task's host action (registered with `@host_action` in the resource's module), then marks
the row done. So the database never promises what the host forgets: a crash between the commit
and the action leaves a pending row, and the next start runs it (host actions are idempotent, so
running one twice is harmless).

Tasks run one at a time in id order within their lane, which orders every action on one resource
(a VPC's teardown can never overtake the next instance's start in that VPC) — the reason driver
events that need host work (a guest's own shutdown with behaviour 'terminate') enqueue a task too
instead of acting on the driver's thread. Two lanes, each its own worker: 'guests' (instances,
networks, addresses, disks) and 'images' (copies, conversions and downloads that may take
minutes and must not hold up a boot); a kind's lane is its prefix ('image.' -> images).
Tasks carry their zone: one worker per zone, each on its own host, is the scale-out path
(DESIGN.md); today one process runs both lanes.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from .models import HostTask, HostTaskState, utcnow
from .registry import HOST_ACTION_FAILED, HOST_ACTIONS, Host, Interrupted

log = logging.getLogger("ec2emu.host")

POLL_SECONDS = 2.0  # tasks written by another process (a second API worker) are found this late
HEAL_SECONDS = 3.0  # how often an idle worker runs its `idle` repair (a watchdog, in task order)
# A failing host action is tried again after these pauses (a libvirtd restart, a busy disk: host
# hiccups heal in seconds), then recorded as failed and its resource told (HOST_ACTION_FAILED).
RETRY_PAUSES = (0.5, 2.0, 5.0)


def enqueue(session: Session, kind: str, resource_id: str, zone: str | None = None, **args) -> HostTask:
    """Add a task to the open transaction: it exists if and only if that transaction commits."""
    if kind not in HOST_ACTIONS:
        raise KeyError(f"no host action {kind!r} is registered")
    task = HostTask(kind=kind, resource_id=resource_id, zone=zone, args=args, state=HostTaskState.PENDING)
    session.add(task)
    return task


def enqueue_once(session: Session, kind: str, resource_id: str) -> None:
    """enqueue, unless this transaction asked for the same already: for tasks that read the
    whole state they apply when they run (`vpc.firewall`, `vpc.routes`), one per transaction."""
    if not any(isinstance(o, HostTask) and o.kind == kind and o.resource_id == resource_id for o in session.new):
        enqueue(session, kind, resource_id)


def pending_now(session: Session, kind: str, resource_id: str) -> list[int]:
    """The ids of the pending tasks of this kind for this resource, as committed now. A task
    that reads the state it applies reads these first: every change they stand for is committed,
    so the state read next includes them all, and `mark_covered` can then retire exactly those
    (coalescing). Not "every id up to the newest": on PostgreSQL an id is drawn at insert, so a
    transaction still open may commit a lower id later, for a change this run did not see."""
    return list(session.scalars(select(HostTask.id).where(*_pending(kind, resource_id))))


def mark_covered(session: Session, ids: list[int]) -> None:
    """Mark done the pending tasks `pending_now` returned (their changes were applied)."""
    if ids:
        session.execute(update(HostTask).where(HostTask.id.in_(ids), HostTask.state == HostTaskState.PENDING)
                        .values(state=HostTaskState.DONE, finished_at=utcnow(), attempts=HostTask.attempts + 1))
        session.commit()


def _pending(kind: str, resource_id: str):
    return (HostTask.kind == kind, HostTask.resource_id == resource_id, HostTask.state == HostTaskState.PENDING)


LANES = ("guests", "images")
IMAGE_KINDS = "image."  # a kind with this prefix runs in the images lane, any other in guests


def unfinished_resources(session: Session) -> set[str]:
    """Resources with a task not yet run: the reconciler leaves them to their task."""
    return set(session.scalars(select(HostTask.resource_id).where(
        HostTask.state == HostTaskState.PENDING)))


class HostWorker:
    """Runs the pending host tasks of one lane in id order, one at a time, in its own thread."""

    def __init__(self, Session: sessionmaker, lane: str = "guests", idle: Callable[[], None] | None = None):
        """idle: run every HEAL_SECONDS while no task waits, in this worker's thread (so repairs
        never race a host action of the lane)."""
        if lane not in LANES:
            raise ValueError(f"lane {lane!r}: one of {LANES}")
        self.Session = Session
        self.lane = lane
        self.idle = idle
        in_images = HostTask.kind.startswith(IMAGE_KINDS, autoescape=True)
        self._mine = in_images if lane == "images" else ~in_images
        self.host: Host | None = None
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self, host: Host) -> None:
        self.host = host
        self._thread = threading.Thread(target=self._loop, name=f"host-{self.lane}", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def close(self) -> None:
        """Finish the task under way (if any) and stop; pending tasks stay for the next start."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=120)

    def _loop(self) -> None:
        healed = time.monotonic()
        while not self._stopping:
            try:
                task = self._next()
            except Exception:  # the database is away for a moment: try again later
                log.exception("reading host tasks")
                task = None
            if task is not None:
                self.run(task)
                continue
            if self.idle is not None and time.monotonic() - healed >= HEAL_SECONDS:
                healed = time.monotonic()
                try:
                    self.idle()
                except Exception as exc:  # noqa: BLE001 (still broken: the next round tries again)
                    log.warning("host repair (%s lane) failed: %s", self.lane, exc)
                continue
            self._wake.wait(min(POLL_SECONDS, HEAL_SECONDS))
            self._wake.clear()

    def _next(self) -> HostTask | None:
        with self.Session() as session:
            return session.scalars(select(HostTask).where(HostTask.state == HostTaskState.PENDING, self._mine)
                                   .order_by(HostTask.id).limit(1)).first()

    def run(self, task: HostTask) -> None:
        """Run one task's host action, again after a pause while it fails (RETRY_PAUSES), and
        record the outcome. Tasks behind it wait: order per resource is kept. When every attempt
        failed, the kind's failure hook tells the resource (e.g. an instance's state reason)."""
        action = HOST_ACTIONS[task.kind]
        error, attempts = None, 0
        for pause in (*RETRY_PAUSES, None):
            attempts += 1
            try:
                action(self.host, task.resource_id, **(task.args or {}))
                error = None
                break
            except Interrupted:
                log.info("host task %s %s %s interrupted by the shutdown: it runs again at the next start",
                         task.id, task.kind, task.resource_id)
                return
            except Exception as exc:  # noqa: BLE001 (recorded, and the worker goes on)
                error = f"{type(exc).__name__}: {exc}"
                log.warning("host task %s %s %s failed (attempt %d): %r", task.id, task.kind,
                            task.resource_id, attempts, exc, exc_info=pause is None)
                if pause is None:
                    break
                if self._stopping:
                    return  # left pending: the next start runs it again
                time.sleep(pause)
        if error is not None and task.kind in HOST_ACTION_FAILED:
            try:
                HOST_ACTION_FAILED[task.kind](self.host, task.resource_id, error)
            except Exception:  # noqa: BLE001
                log.exception("reporting the failure of host task %s", task.id)
        with self.Session() as session:
            session.execute(update(HostTask).where(HostTask.id == task.id).values(
                state=HostTaskState.FAILED if error else HostTaskState.DONE, error=error,
                attempts=HostTask.attempts + attempts, finished_at=utcnow()))
            session.commit()
