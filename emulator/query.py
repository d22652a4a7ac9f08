"""The one mechanism for Filter.N, tag filters, MaxResults/NextToken paging.

Each resource declares FILTERS: filter name -> function(row) -> value or list of values.
Tags are handled here for every resource (tag:Key, tag-key, tag-value).
"""
from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

from .errors import EC2Error

Getter = Callable[[Any], Any]


@lru_cache(maxsize=4096)
def _pattern(value: str) -> re.Pattern:
    # AWS filter wildcards: * any run, ? one character, backslash escapes them.
    out, i = [], 0
    while i < len(value):
        c = value[i]
        if c == "\\" and i + 1 < len(value):
            out.append(re.escape(value[i + 1]))
            i += 2
            continue
        out.append(".*" if c == "*" else "." if c == "?" else re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z", re.S)


def _text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, datetime):
        return v.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return str(v)


def matches(actual: Any, wanted: Sequence[str]) -> bool:
    values = actual if isinstance(actual, (list, tuple, set)) else [actual]
    texts = [_text(v) for v in values if v is not None]
    return any(_pattern(w).match(t) for w in wanted for t in texts)


def apply_filters(rows: Iterable, filters: list[dict] | None, spec: dict[str, Getter],
                  tags_of: Callable[[Any], dict[str, str]] | None = None) -> list:
    rows = list(rows)
    for f in filters or []:
        name, wanted = f.get("Name"), f.get("Values") or []
        if not name:
            raise EC2Error("The filter 'null' is invalid", "InvalidParameterValue")
        if name.startswith("tag:") and tags_of is not None:
            key = name[4:]
            getter = lambda r, key=key: tags_of(r).get(key)  # noqa: E731
        elif name == "tag-key" and tags_of is not None:
            getter = lambda r: list(tags_of(r).keys())  # noqa: E731
        elif name == "tag-value" and tags_of is not None:
            getter = lambda r: list(tags_of(r).values())  # noqa: E731
        elif name in spec:
            getter = spec[name]
        else:
            raise EC2Error(f"The filter '{name}' is invalid", "InvalidParameterValue")
        rows = [r for r in rows if matches(getter(r), wanted)]
    return rows


def only_ids(rows: list, ids: list[str] | None, missing: Callable[[str], Exception]) -> list:
    """The rows whose id was asked for (all rows when none was); an id not among them raises
    missing(id), AWS's NotFound for that resource."""
    if not ids:
        return rows
    by_id = {r.id: r for r in rows}
    for i in ids:
        if i not in by_id:
            raise missing(i)
    wanted = set(ids)
    return [r for r in rows if r.id in wanted]


def paginate(rows: list, max_results: int | None, next_token: str | None,
             key: Getter = lambda r: r.id, lowest: int = 5, highest: int = 1000) -> tuple[list, str | None]:
    """Rows must already be in a stable order (by key). The token names the last key served."""
    start = 0
    if next_token:
        try:
            marker, _, last = base64.urlsafe_b64decode(next_token.encode()).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            marker = ""
        if marker != "ec2emu1":
            raise EC2Error(f"Invalid NextToken value: {next_token}", "InvalidNextToken") from None
        start = next((i for i, r in enumerate(rows) if key(r) > last), len(rows))
    if max_results is None:
        return rows[start:], None
    if not lowest <= max_results <= highest:
        raise EC2Error(f"Value ( {max_results} ) for parameter maxResults is invalid. "
                       f"Expecting a value between {lowest} and {highest}.", "InvalidParameterValue")
    page = rows[start:start + max_results]
    if start + max_results < len(rows):
        return page, base64.urlsafe_b64encode(f"ec2emu1:{key(page[-1])}".encode()).decode()
    return page, None
