"""Figures read from /proc, shared by the benchmarks."""
from __future__ import annotations

from pathlib import Path


def rss_kib(pid: int) -> int | None:
    """A process's resident set (VmRSS), or None if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None
