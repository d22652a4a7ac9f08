"""The one describe pipeline: selection by ids or names, Filter.N (tag filters included),
MaxResults bounds and NextToken paging, then rendering.

Each Describe operation declares a `Resource`: its selectors (request member -> the row value it
names, AWS's malformed check and not-found error), its filters (filter name -> function(row) ->
value or list of values), its paging key, its MaxResults bounds as AWS documents them for the
operation, its renderer and output member. Tags are handled here for every tagged resource
(tag:Key, tag-key, tag-value). `describe` runs the pipeline over rows the handler already fetched
(plain Core rows on hot paths, catalogue entries, ORM objects): it issues no query but the one
for tags.
"""
from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from operator import attrgetter
from typing import Any

from .errors import EC2Error, InvalidNextToken, InvalidParameterCombination, InvalidParameterValue
from .times import iso8601

Getter = Callable[[Any], Any]


# AWS filter wildcards: * any run (also empty), ? exactly one character, a backslash makes the
# next character literal (\\ a backslash; a lone trailing backslash is itself). Matched without
# regular expressions: a backtracking regex of '*********Z' took seconds on a long name while
# the event loop, and so every other request, waited. `_glob` is the classic iterative match
# with one backtrack point (the last star): at most (len(text)+1) x (len(pattern)+1) steps.
STAR, ONE = object(), object()  # the wildcard tokens; every other token is one literal character


def tokens(value: str) -> tuple:
    """The pattern as tokens: literal characters, ONE, and STAR (a run of stars is one)."""
    out: list = []
    i, n = 0, len(value)
    while i < n:
        c = value[i]
        if c == "\\" and i + 1 < n:
            out.append(value[i + 1])
            i += 2
            continue
        if c == "*":
            if not out or out[-1] is not STAR:
                out.append(STAR)
        else:
            out.append(ONE if c == "?" else c)
        i += 1
    return tuple(out)


def _glob(p: tuple, t: str) -> tuple[bool, int]:
    """(whether the tokens `p` match all of `t`, the steps it took)."""
    pi = ti = steps = 0
    star, mark = -1, 0
    np_, nt = len(p), len(t)
    while ti < nt:
        steps += 1
        if pi < np_:
            tok = p[pi]
            if tok is STAR:  # remember it, first try matching nothing
                star, mark = pi, ti
                pi += 1
                continue
            if tok is ONE or tok == t[ti]:
                pi += 1
                ti += 1
                continue
        if star < 0:
            return False, steps
        mark += 1  # the last star takes one more character; the rest starts over after it
        pi, ti = star + 1, mark
    while pi < np_ and p[pi] is STAR:
        pi += 1
    return pi == np_, steps


@lru_cache(maxsize=4096)
def _matcher(value: str) -> Callable[[str], bool]:
    """A function text -> whether `value` (a filter value, wildcards and all) matches it whole.
    Common shapes take a string method (all linear); any other the general `_glob`."""
    p = tokens(value)
    inner = p[1:-1] if len(p) >= 2 and p[0] is STAR and p[-1] is STAR else None
    if all(isinstance(tok, str) for tok in p):
        literal = "".join(p)
        return literal.__eq__
    if p[-1] is STAR and all(isinstance(tok, str) for tok in p[:-1]):
        return lambda t, prefix="".join(p[:-1]): t.startswith(prefix)
    if p[0] is STAR and all(isinstance(tok, str) for tok in p[1:]):
        return lambda t, suffix="".join(p[1:]): t.endswith(suffix)
    if inner is not None and all(isinstance(tok, str) for tok in inner):
        return lambda t, middle="".join(inner): middle in t
    return lambda t: _glob(p, t)[0]


def _text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, datetime):
        return iso8601(v)
    return str(v)


def matches(actual: Any, wanted: Sequence[str]) -> bool:
    values = actual if isinstance(actual, (list, tuple, set)) else [actual]
    texts = [_text(v) for v in values if v is not None]
    return any(_matcher(w)(t) for w in wanted for t in texts)


def apply_filters(rows: Iterable, filters: list[dict] | None, spec: dict[str, Getter],
                  tags_of: Callable[[Any], dict[str, str]] | None = None) -> list:
    rows = list(rows)
    for f in filters or []:
        name, wanted = f.get("Name"), f.get("Values") or []
        if not name:
            raise InvalidParameterValue.filter(None)
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
            raise InvalidParameterValue.filter(name)
        rows = [r for r in rows if matches(getter(r), wanted)]
    return rows


def next_token(last_key) -> str:
    """The NextToken of a page whose last row has this paging key."""
    return base64.urlsafe_b64encode(f"ec2emu1:{last_key}".encode()).decode()


def token_key(token: str) -> str:
    """The paging key a NextToken names (rows after it come next), or AWS's InvalidNextToken."""
    try:
        marker, _, last = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        marker = ""
    if marker != "ec2emu1":
        raise InvalidNextToken(token) from None
    return last


def paginate(rows: list, max_results: int | None, next_token_: str | None,
             key: Getter = lambda r: r.id) -> tuple[list, str | None]:
    """Rows must already be in a stable order (by key), max_results within bounds
    (`check_max_results`). The token names the last key served."""
    start = 0
    if next_token_:
        last = token_key(next_token_)
        start = next((i for i, r in enumerate(rows) if key(r) > last), len(rows))
    if max_results is None:
        return rows[start:], None
    page = rows[start:start + max_results]
    if start + max_results < len(rows):
        return page, next_token(key(page[-1]))
    return page, None


def check_max_results(value: int | None, lowest: int, highest: int) -> None:
    if value is not None and not lowest <= value <= highest:
        raise InvalidParameterValue.max_results(value, lowest, highest)


@dataclass(frozen=True)
class Selector:
    """A request member naming rows (ids, or names): every value must name a row, else
    `not_found(*missing)` (AWS's error, which words one or several missing values)."""
    member: str  # e.g. "InstanceIds"
    key: Getter  # the row's value the member's values are compared with
    not_found: Callable[..., EC2Error]
    check: Callable[[str], None] | None = None  # raises AWS's malformed-id error for a value


@dataclass(frozen=True)
class Resource:
    """What one Describe operation lists and how."""
    output: str  # the output member holding the list, e.g. "Vpcs"
    render: Callable[[Any, list, Any], list]  # (ctx, page, tags of the page or None) -> output list
    filters: dict[str, Getter] = field(default_factory=dict)
    selectors: tuple[Selector, ...] = ()
    key: Getter = attrgetter("id")  # paging key; rows arrive sorted by it
    max_results: tuple[int, int] | None = (5, 1000)  # AWS's bounds; None: the operation has no paging
    tagged: bool = True  # rows have .id and tags: tag filters apply, the renderer gets them
    ids_exclude_max_results: tuple[str, str] | None = None  # (member, its wire name) AWS refuses with MaxResults


def select(rows: Iterable, p: dict, selectors: Sequence[Selector]) -> list:
    """The rows every selector in the request names (all rows when none is given)."""
    rows = list(rows)
    for s in selectors:
        wanted = p.get(s.member)
        if not wanted:
            continue
        if s.check is not None:
            for value in wanted:
                s.check(value)
        have = {s.key(r) for r in rows}
        missing = [v for v in dict.fromkeys(wanted) if v not in have]
        if missing:
            raise s.not_found(*missing)
        wanted = set(wanted)
        rows = [r for r in rows if s.key(r) in wanted]
    return rows


def _tag_filter(name: str | None) -> bool:
    return bool(name) and (name.startswith("tag:") or name in ("tag-key", "tag-value"))


# A Describe request's internal member (never on the wire: no Query parameter parses into it):
# answer only the number of rows selected and filtered.
COUNT_ONLY = "ec2emu:CountOnly"


def describe(ctx, res: Resource, p: dict, rows: Iterable, *, keep: Callable[[Any], bool] | None = None,
             filters: dict[str, Getter] | None = None) -> dict:
    """The whole Describe answer from rows the handler fetched (in `res.key` order): bounds, then
    selection (`res.selectors`), then `keep` (what the operation hides unless asked, e.g.
    non-running instances), then Filter.N (`res.filters` plus this request's `filters`), then the
    page, rendered. Tags are read once: for every row when a tag filter needs them, else for the
    page only."""
    from .tags import tags_for  # tags.py lists its own rows through this module

    limit = p.get("MaxResults")
    if res.ids_exclude_max_results and limit is not None and p.get(res.ids_exclude_max_results[0]):
        raise InvalidParameterCombination.together(res.ids_exclude_max_results[1], "maxResults")
    if res.max_results is not None:
        check_max_results(limit, *res.max_results)
    rows = select(rows, p, res.selectors)
    if keep is not None:
        rows = [r for r in rows if keep(r)]
    tags = None
    wanted = p.get("Filters")
    if wanted:
        if res.tagged and any(_tag_filter(f.get("Name")) for f in wanted):
            tags = tags_for(ctx, [r.id for r in rows])
        spec = {**res.filters, **filters} if filters else res.filters
        rows = apply_filters(rows, wanted, spec, (lambda r: tags[r.id]) if res.tagged else None)
    if p.get(COUNT_ONLY):  # how many rows the request selects, nothing rendered (the web console's counts)
        return {res.output: [], COUNT_ONLY: len(rows)}
    if res.max_results is None:
        page, token = rows, None
    else:
        page, token = paginate(rows, limit, p.get("NextToken"), res.key)
    if res.tagged and tags is None:
        tags = tags_for(ctx, [r.id for r in page])
    out = {res.output: res.render(ctx, page, tags)}
    if res.max_results is not None:
        out["NextToken"] = token
    return out
