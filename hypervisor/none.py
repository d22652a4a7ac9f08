"""The `none` driver: nothing boots, but transitions still arrive asynchronously, after a short
delay, from another thread, exactly as a real hypervisor's events do. For API-only CI."""
from __future__ import annotations

import threading

from .base import Driver, InstanceSpec, Listener


class NoneDriver(Driver):
    name = "none"

    def __init__(self, listener: Listener, delay: float = 0.2):
        super().__init__(listener)
        self.delay = delay
        self._running: set[str] = set()
        self._lock = threading.Lock()
        self._timers: set[threading.Timer] = set()

    def _later(self, instance_id: str, state: str) -> None:
        def fire():
            with self._lock:
                self._timers.discard(timer)
                if state == "running":
                    self._running.add(instance_id)
                else:
                    self._running.discard(instance_id)
            self.listener(instance_id, state)
        timer = threading.Timer(self.delay, fire)
        timer.daemon = True
        with self._lock:
            self._timers.add(timer)
        timer.start()

    def start(self, spec: InstanceSpec) -> None:
        self._later(spec.instance_id, "running")

    def stop(self, instance_id: str, force: bool = False) -> None:
        self._later(instance_id, "stopped")

    def reboot(self, instance_id: str) -> None:
        pass  # nothing runs, so nothing restarts; the instance stays running

    def terminate(self, instance_id: str) -> None:
        self._later(instance_id, "terminated")

    def state(self, instance_id: str) -> str | None:
        with self._lock:
            return "running" if instance_id in self._running else None

    def reconcile_state(self, instance_id: str, recorded: str) -> str | None:
        # Nothing real exists, so nothing can have vanished: the host "finished" whatever was
        # under way when the server went down.
        host = {"pending": "running", "running": "running", "stopping": "stopped",
                "stopped": "stopped"}.get(recorded)
        if host == "running":
            with self._lock:
                self._running.add(instance_id)
        return host

    def console_output(self, instance_id: str) -> bytes:
        return b""

    def close(self) -> None:
        with self._lock:
            for t in self._timers:
                t.cancel()
            self._timers.clear()
