"""Time as AWS writes it, in one place: UTC, ISO 8601 with milliseconds ('2026-11-30T17:10:45.123Z')."""
from __future__ import annotations

from datetime import datetime, timezone


def aware(value: datetime) -> datetime:
    """A stored time as an aware UTC datetime (SQLite hands back naive UTC)."""
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def iso8601(value: datetime) -> str:
    return aware(value).isoformat(timespec="milliseconds")[:23] + "Z"
