"""Filter wildcards (emulator/query.py): AWS's semantics, and a time linear in the text for any
pattern (a backtracking regex once held the event loop for seconds). Cost is measured in the
matcher's own steps, never in wall-clock time."""
from __future__ import annotations

import functools
import itertools

import pytest

from emulator.query import ONE, STAR, _glob, _matcher, matches, tokens


def reference(pattern: str, text: str) -> bool:
    """Plain dynamic programming over the tokens: obviously right, used to check the others."""
    p = tokens(pattern)

    @functools.cache
    def m(i: int, j: int) -> bool:
        if i == len(p):
            return j == len(text)
        if p[i] is STAR:
            return m(i + 1, j) or (j < len(text) and m(i, j + 1))
        return j < len(text) and (p[i] is ONE or p[i] == text[j]) and m(i + 1, j + 1)
    return m(0, 0)


# (pattern, text, matches?) as AWS documents its filters: '*' any run of characters (also none),
# '?' exactly one, a backslash before a character makes it literal; the whole value must match.
CASES = [
    ("abc", "abc", True), ("abc", "abcd", False), ("abc", "ab", False), ("abc", "ABC", False),
    ("", "", True), ("", "a", False),
    ("*", "", True), ("*", "anything", True), ("**", "", True), ("***", "x", True),
    ("a*", "a", True), ("a*", "abc", True), ("a*", "ba", False),
    ("*c", "abc", True), ("*c", "c", True), ("*c", "cb", False),
    ("*b*", "abc", True), ("*b*", "b", True), ("*b*", "ac", False),
    ("a*c", "ac", True), ("a*c", "abbbc", True), ("a*c", "abcd", False),
    ("?", "a", True), ("?", "", False), ("?", "ab", False), ("??", "ab", True),
    ("a?c", "abc", True), ("a?c", "ac", False), ("a?c", "abbc", False),
    ("*?", "", False), ("*?", "a", True), ("?*", "abc", True), ("*?*", "", False),
    ("a*b*c", "aXbYc", True), ("a*b*c", "acb", False), ("a*b?c", "abbxc", True),
    ("*ab*ab", "xabyab", True), ("*ab*ab", "xabyabz", False), ("*aab", "aaab", True),
    ("*a?b*", "zzaxbzz", True), ("*a?b*", "zzab", False),
    (r"\*", "*", True), (r"\*", "a", False), (r"\?", "?", True), (r"\?", "a", False),
    (r"\*amazon\?\\", "*amazon?\\", True),  # AWS's own example
    (r"a\*b*", "a*bc", True), (r"a\*b*", "axbc", False), (r"\a", "a", True),
    ("a\\", "a\\", True), ("\\", "\\", True),  # a lone trailing backslash is itself
    ("line*", "line1\nline2", True), ("a?b", "a\nb", True),  # any character, newlines too
    ("caf\u00e9*", "caf\u00e9 \u2603", True), ("?", "\U0001f600", True),
    ("ec2emu-tiny-*", "ec2emu-tiny-20261130", True), ("*********Z", "a" * 50 + "Z", True),
]


@pytest.mark.parametrize("pattern, text, expected", CASES, ids=[f"{p!r}~{t[:12]!r}" for p, t, _ in CASES])
def test_semantics(pattern, text, expected):
    assert reference(pattern, text) is expected
    assert _matcher(pattern)(text) is expected  # the shape-specific fast paths
    assert _glob(tokens(pattern), text)[0] is expected  # the general loop on every case
    assert matches(text, [pattern]) is expected


def test_every_short_pattern_against_every_short_text():
    """Exhaustive over a small alphabet: the matcher and the reference never disagree."""
    for n in range(5):
        for pattern in map("".join, itertools.product("ab*?", repeat=n)):
            for m in range(5):
                for text in map("".join, itertools.product("ab", repeat=m)):
                    want = reference(pattern, text)
                    assert _glob(tokens(pattern), text)[0] is want, (pattern, text)
                    assert _matcher(pattern)(text) is want, (pattern, text)


def test_tokens():
    assert tokens("a**?\\*\\") == ("a", STAR, ONE, "*", "\\")


PATHOLOGICAL = [  # (pattern, text, matches?)
    ("*********Z", "a" * 20000, False),  # the probe's pattern: a backtracking regex took seconds
    ("*********Z?", "Z" * 20000, True),
    ("*a*a*a*a*a*a*a*a*b", "a" * 20000, False),  # exponential for a naive recursive matcher
    ("?*?*?*?*?*?*?*?*c", "ab" * 10000, False),
    ("*aaaaaaaaaaaaaaaaaaaab", "a" * 20000, False),  # a long segment retried at every position
    ("*a?b?c?d*", "a1b2c3" * 5000 + "a1b2c3d", True),
]


@pytest.mark.parametrize("pattern, text, expected", PATHOLOGICAL, ids=[p for p, _, _ in PATHOLOGICAL])
def test_pathological_patterns_take_at_most_text_times_pattern_steps(pattern, text, expected):
    p = tokens(pattern)
    matched, steps = _glob(p, text)
    assert matched is expected and _matcher(pattern)(text) is expected
    assert steps <= (len(text) + 1) * (len(p) + 1)


def test_runs_of_stars_collapse():
    assert tokens("*********Z") == (STAR, "Z")
    # so the probe's pattern is a suffix test, answered by str.endswith in the fast path
    assert _matcher("*********Z")("a" * 100000) is False
