"""Property tests of the describe pipeline's paging (Hypothesis; examples pinned under CI)."""
import os
from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.query import Resource, describe

ROWS = Resource("Items", lambda ctx, page, tags: [r.id for r in page], tagged=False)
PINNED = settings(derandomize=bool(os.environ.get("CI")), deadline=None, max_examples=200)
ids = st.lists(st.text("abcdef0123456789", min_size=1, max_size=6), unique=True, max_size=60).map(sorted)


def _rows(names):
    return [SimpleNamespace(id=n) for n in names]


def _all_pages(names, size, between=lambda names: names):
    out, token, rounds = [], None, 0
    while True:
        p = {"MaxResults": size, **({"NextToken": token} if token else {})}
        answer = describe(None, ROWS, p, _rows(names))
        out += answer["Items"]
        token = answer["NextToken"]
        rounds += 1
        if token is None:
            return out, rounds
        names = between(names)


@PINNED
@given(ids, st.integers(5, 1000))
def test_pages_cover_every_row_once_in_order(names, size):
    got, rounds = _all_pages(names, size)
    assert got == names
    assert rounds == max(1, -(-len(names) // size))  # no empty last page, even on exact multiples


@PINNED
@given(ids, st.integers(5, 20), st.data())
def test_rows_deleted_between_pages_are_skipped_never_repeated(names, size, data):
    gone = set(data.draw(st.lists(st.sampled_from(names), unique=True)) if names else [])
    got, _ = _all_pages(names, size, between=lambda current: [n for n in current if n not in gone])
    assert len(got) == len(set(got)) and got == sorted(got)  # each at most once, in order
    assert set(names) - gone <= set(got)  # every row that stayed was served
