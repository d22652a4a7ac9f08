"""The describe pipeline (emulator/query.py) on plain rows: selection, filters, bounds, paging."""
from __future__ import annotations

import base64
from types import SimpleNamespace

import pytest

from emulator.errors import (EC2Error, InvalidInstanceIDMalformed, InvalidInstanceIDNotFound, InvalidKeyPairNotFound)
from emulator.query import Resource, Selector, apply_filters, describe

ROWS = [SimpleNamespace(id=f"i-{n:02d}", name=f"n{n % 3}", state="running" if n % 2 else "stopped")
        for n in range(12)]


def _check(value: str) -> None:
    if not value.startswith("i-"):
        raise InvalidInstanceIDMalformed(value)


THINGS = Resource("Things", lambda ctx, page, tags: [r.id for r in page],
                  {"state": lambda r: r.state, "name": lambda r: r.name},
                  (Selector("Ids", lambda r: r.id, InvalidInstanceIDNotFound, _check),
                   Selector("Names", lambda r: r.name, InvalidKeyPairNotFound)),
                  tagged=False, ids_exclude_max_results=("Ids", "thingSet"))
SMALL_PAGES = Resource("Things", THINGS.render, THINGS.filters, max_results=(5, 100), tagged=False)
UNPAGED = Resource("Things", THINGS.render, THINGS.filters, max_results=None, tagged=False)


def run(p: dict, resource: Resource = THINGS, **kw) -> dict:
    return describe(None, resource, p, ROWS, **kw)


def error(p: dict, resource: Resource = THINGS) -> tuple[str, str]:
    with pytest.raises(EC2Error) as exc:
        run(p, resource)
    return exc.value.code, exc.value.message


def test_everything_without_selection():
    assert run({}) == {"Things": [r.id for r in ROWS], "NextToken": None}
    assert run({}, UNPAGED) == {"Things": [r.id for r in ROWS]}  # no paging: no NextToken member


def test_selection_by_id_and_name():
    assert run({"Ids": ["i-03", "i-01"]})["Things"] == ["i-01", "i-03"]  # rows keep their order
    assert run({"Names": ["n1"]})["Things"] == ["i-01", "i-04", "i-07", "i-10"]
    assert run({"Ids": ["i-01", "i-02"], "Names": ["n1"]})["Things"] == ["i-01"]  # both: each narrows


def test_missing_ids_named_all_at_once_in_request_order():
    assert error({"Ids": ["i-99"]}) == ("InvalidInstanceID.NotFound", "The instance ID 'i-99' does not exist")
    assert error({"Ids": ["i-98", "i-01", "i-97", "i-98"]}) == (
        "InvalidInstanceID.NotFound", "The instance IDs 'i-98, i-97' do not exist")
    assert error({"Names": ["zz", "yy"]}) == ("InvalidKeyPair.NotFound", "The key pair 'zz' does not exist")


def test_malformed_before_missing():
    assert error({"Ids": ["i-99", "bogus"]}) == ("InvalidInstanceID.Malformed", 'Invalid id: "bogus"')


def test_keep_applies_after_selection():
    """An id asked for but hidden by `keep` (e.g. a stopped instance in DescribeInstanceStatus) is
    not an error, it is just not listed."""
    out = run({"Ids": ["i-01", "i-02"]}, keep=lambda r: r.state == "running")
    assert out["Things"] == ["i-01"]


def test_filters():
    assert run({"Filters": [{"Name": "state", "Values": ["stopped"]},
                            {"Name": "name", "Values": ["n0", "n1"]}]})["Things"] == \
        ["i-00", "i-04", "i-06", "i-10"]
    assert run({"Filters": [{"Name": "name", "Values": ["n?"]}]})["Things"] == [r.id for r in ROWS]
    assert run({"Filters": [{"Name": "state", "Values": ["run*"]}]})["Things"] == [r.id for r in ROWS if r.state == "running"]
    assert run({"Filters": [{"Name": "state", "Values": ["RUN*"]}]})["Things"] == []  # case matters
    assert error({"Filters": [{"Name": "colour", "Values": ["x"]}]}) == (
        "InvalidParameterValue", "The filter 'colour' is invalid")
    assert error({"Filters": [{"Name": "tag:a", "Values": ["x"]}]})[0] == "InvalidParameterValue"  # untagged
    extra = {"colour": lambda r: "red" if r.id == "i-05" else "blue"}
    assert run({"Filters": [{"Name": "colour", "Values": ["red"]}]}, filters=extra)["Things"] == ["i-05"]


def test_tag_filters():
    tags = {"i-00": {"env": "prod", "team": "a"}, "i-01": {"env": "dev"}, "i-02": {}}
    rows = [SimpleNamespace(id=i) for i in tags]

    def ids(*filters):
        return [r.id for r in apply_filters(rows, list(filters), {}, lambda r: tags[r.id])]
    assert ids({"Name": "tag:env", "Values": ["prod"]}) == ["i-00"]
    assert ids({"Name": "tag:env", "Values": ["*"]}) == ["i-00", "i-01"]
    assert ids({"Name": "tag-key", "Values": ["team"]}) == ["i-00"]
    assert ids({"Name": "tag-value", "Values": ["d?v"]}) == ["i-01"]


def test_max_results_bounds_per_operation():
    assert error({"MaxResults": 4}) == (
        "InvalidParameterValue", "Value ( 4 ) for parameter maxResults is invalid. Expecting a value between 5 and 1000.")
    assert error({"MaxResults": 1001})[0] == "InvalidParameterValue"
    assert len(run({"MaxResults": 1000})["Things"]) == 12
    assert error({"MaxResults": 101}, SMALL_PAGES) == (
        "InvalidParameterValue", "Value ( 101 ) for parameter maxResults is invalid. Expecting a value between 5 and 100.")
    assert error({"Ids": ["i-01"], "MaxResults": 5}) == (
        "InvalidParameterCombination", "The parameter thingSet cannot be used with the parameter maxResults")


def test_paging_with_next_token():
    seen, token, pages = [], None, 0
    while True:
        out = run({"MaxResults": 5, **({"NextToken": token} if token else {})})
        seen += out["Things"]
        pages += 1
        token = out["NextToken"]
        if token is None:
            break
        assert base64.urlsafe_b64decode(token).decode() == f"ec2emu1:{seen[-1]}"  # the token format
    assert pages == 3 and seen == [r.id for r in ROWS]


def test_paging_follows_filters():
    first = run({"MaxResults": 5, "Filters": [{"Name": "state", "Values": ["running"]}]})
    assert first["Things"] == ["i-01", "i-03", "i-05", "i-07", "i-09"] and first["NextToken"]
    rest = run({"MaxResults": 5, "NextToken": first["NextToken"], "Filters": [{"Name": "state", "Values": ["running"]}]})
    assert rest == {"Things": ["i-11"], "NextToken": None}


def test_bad_next_token():
    assert error({"NextToken": "garbage"}) == ("InvalidNextToken", "Invalid NextToken value: garbage")
    forged = base64.urlsafe_b64encode(b"other:i-03").decode()
    assert error({"NextToken": forged})[0] == "InvalidNextToken"
