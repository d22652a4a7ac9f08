"""Tiny helpers for acting on the host: run a command (raising with its stderr), and do things
inside a network namespace from this process (Python 3.11 has no os.setns: libc's setns via
ctypes, in a short-lived helper thread, so the calling thread never changes namespace)."""
from __future__ import annotations

import ctypes
import logging
import os
import socket
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"

T = TypeVar("T")
_libc = ctypes.CDLL(None, use_errno=True)


class HostError(RuntimeError):
    """A host command failed. The message names the program and says what it printed first
    (it may end up, cut short, in an instance's state reason); `argv` has the whole command."""

    def __init__(self, argv: Sequence[str], code: int, stderr: str):
        self.argv, self.code, self.stderr = list(argv), code, stderr
        what = " ".join(a for a in list(argv)[:2] if not a.startswith("-"))
        super().__init__(f"{what} (exit {code}): {stderr.strip()}")

    def __repr__(self) -> str:
        return f"HostError({' '.join(self.argv)!r} -> exit {self.code}: {self.stderr.strip()!r})"


def crash_point(config, name: str) -> None:
    """Tests only: exit the process at once, as a crash would, when config.crash_at names this
    point (no clean-up, no flush: what is durable is all that survives)."""
    if config is not None and getattr(config, "crash_at", "") == name:
        logging.getLogger("ec2emu").critical("crash point %s reached: exiting (tests only)", name)
        os._exit(70)


def run(argv: Sequence[str], input: str | None = None, check: bool = True, timeout: float | None = 60,
        *, cwd: str | os.PathLike | None = None, env: Mapping[str, str] | None = None,
        output: str | os.PathLike | None = None) -> str:
    """Run a command; return its stdout; raise HostError with stderr when it fails (and `check`).

    The one way hypervisor/ runs a program. `output`: send stdout and stderr to that file instead
    of a pipe (for daemons, which could keep a pipe open after they fork); the file's text is then
    the error message. Output is decoded as UTF-8 with undecodable bytes replaced. A command still
    running after `timeout` seconds is killed and subprocess.TimeoutExpired raised (None: no limit).
    """
    argv = [str(a) for a in argv]
    if output is None:
        proc = subprocess.run(argv, input=input, capture_output=True, text=True, errors="replace",
                              timeout=timeout, cwd=cwd, env=env)
        out, err = proc.stdout, proc.stderr or proc.stdout
    else:
        with open(output, "w") as f:
            proc = subprocess.run(argv, input=input, stdin=None if input is not None else subprocess.DEVNULL,
                                  stdout=f, stderr=f, text=True, timeout=timeout, cwd=cwd, env=env)
        out = err = Path(output).read_text(errors="replace")
    if check and proc.returncode != 0:
        raise HostError(argv, proc.returncode, err)
    return out


def netns_path(name: str) -> str:
    return os.path.join(NETNS_DIR, name)


def netns_exists(name: str) -> bool:
    return os.path.exists(netns_path(name))


def netns_list() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def netns_inode(name: str) -> int | None:
    """Identity of a named namespace (changes when it is deleted and re-created)."""
    try:
        return os.stat(netns_path(name)).st_ino
    except FileNotFoundError:
        return None


def pid_netns_inode(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def in_netns(name: str, fn: Callable[[], T]) -> T:
    """Call fn() in a helper thread that has entered network namespace `name`.

    Sockets created there stay in that namespace for their whole life, whichever thread then
    uses them. The helper thread goes back to the original namespace before it ends."""
    result: dict = {}

    def body() -> None:
        try:
            own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
            try:
                target = os.open(netns_path(name), os.O_RDONLY)
                try:
                    _setns(target)
                finally:
                    os.close(target)
                try:
                    result["value"] = fn()
                finally:
                    _setns(own)
            finally:
                os.close(own)
        except BaseException as exc:  # noqa: BLE001  (re-raised in the caller)
            result["error"] = exc

    t = threading.Thread(target=body, name=f"netns:{name}", daemon=True)
    t.start()
    t.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


def socket_in(name: str, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM,
              bind: tuple | None = None, listen: int | None = None,
              reuse: bool = True) -> socket.socket:
    """A socket created (and optionally bound / listening) inside namespace `name`."""
    def make() -> socket.socket:
        s = socket.socket(family, type)
        try:
            if reuse:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if bind is not None:
                s.bind(bind)
            if listen is not None:
                s.listen(listen)
        except BaseException:
            s.close()
            raise
        return s
    return in_netns(name, make)
