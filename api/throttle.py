"""AWS's request throttling, for users who test their retry code (off by default: `throttle`).

EC2 throttles each account per region and per API with token buckets (AWS's "Request throttling
for the Amazon EC2 API"): a bucket of N tokens, refilled at R tokens a second; a request takes
one, and one that finds none gets RequestLimitExceeded (HTTP 503), which every AWS SDK retries
with backoff. The categories and sizes below are AWS's documented ones. Buckets live in this
process (several API processes each throttle on their own).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from emulator.errors import RequestLimitExceeded

# (bucket size, refill per second)
NON_MUTATING = (100, 20)
UNFILTERED = (50, 10)  # non-mutating, with neither filters nor paging: a whole-account listing
MUTATING = (50, 5)
SPECIFIC = {"RunInstances": (5, 2), "StartInstances": (5, 2), "TerminateInstances": (100, 5)}
_READS = ("Describe", "Get", "List", "Search")


def bucket_of(action: str, params: dict) -> tuple[int, int]:
    if action in SPECIFIC:
        return SPECIFIC[action]
    if action.startswith(_READS):
        listing = action.startswith("Describe") and not any(
            k.startswith(("Filter", "MaxResults", "NextToken")) for k in params)
        return UNFILTERED if listing else NON_MUTATING
    return MUTATING


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class Throttle:
    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._buckets: dict[tuple[str, str, str], _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, account: str, region: str, action: str, params: dict) -> None:
        """Take a token for this request or raise RequestLimitExceeded."""
        size, rate = bucket_of(action, params)
        now = self._clock()
        with self._lock:
            b = self._buckets.setdefault((account, region, action), _Bucket(size, now))
            b.tokens = min(size, b.tokens + (now - b.stamp) * rate)
            b.stamp = now
            if b.tokens < 1:
                raise RequestLimitExceeded()
            b.tokens -= 1
