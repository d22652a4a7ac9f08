"""Per-VPC state on disk, and the lock that orders every change to the host's VPC plumbing.

`<state_dir>/<vpc id>/state.json` holds what a VPC should have (subnets, DNS domains, ports,
public mappings); dnsmasq's files live beside it. The lock is a thread lock plus an flock on
`<state_dir>/.lock` (other processes: the CLI, a second server on the same state dir), reentrant
within a thread, so that an operation may call another one."""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import threading
from contextlib import contextmanager
from pathlib import Path


def write_if_changed(path: Path, text: str) -> bool:
    """Atomically replace path's text if it differs; True if it changed."""
    try:
        if path.read_text() == text:
            return False
    except FileNotFoundError:
        pass
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return True


class VpcStore:
    def __init__(self, state_dir: str | os.PathLike):
        self.root = Path(state_dir)
        self.root.mkdir(parents=True, exist_ok=True)
        self._tlock = threading.RLock()
        self._depth = 0
        self._fd: int | None = None

    @contextmanager
    def locked(self):
        with self._tlock:
            if self._depth == 0:
                self._fd = os.open(self.root / ".lock", os.O_CREAT | os.O_RDWR, 0o600)
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)
                    os.close(self._fd)
                    self._fd = None

    def dir(self, vpc_id: str) -> Path:
        return self.root / vpc_id

    def load(self, vpc_id: str) -> dict | None:
        try:
            st = json.loads((self.dir(vpc_id) / "state.json").read_text())
        except FileNotFoundError:
            return None
        # Fields added later default to "none" (state written by an older version).
        st.setdefault("dns_domain", "")
        st.setdefault("public_dns_domain", "")
        st.setdefault("public_names", {})
        return st

    def save(self, st: dict) -> None:
        d = self.dir(st["vpc_id"])
        d.mkdir(parents=True, exist_ok=True)
        write_if_changed(d / "state.json", json.dumps(st, indent=1, sort_keys=True))

    def known(self) -> list[str]:
        """VPC ids with state."""
        return sorted(p.parent.name for p in self.root.glob("*/state.json"))

    def remove(self, vpc_id: str) -> None:
        shutil.rmtree(self.dir(vpc_id), ignore_errors=True)
