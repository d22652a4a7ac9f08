"""Instance lookups by id on a real database, with more ids than one IN list may bind: SQLite
refuses more than SQLITE_MAX_VARIABLE_NUMBER (250000 as Debian builds it) host parameters,
PostgreSQL 65535. A request may name any number of ids; none of them may become a 500."""
from datetime import datetime, timezone

import pytest

from emulator import db
from emulator.config import Config
from emulator.errors import InvalidInstanceIDNotFound
from emulator.instances import _rows, get_instances
from emulator.models import Instance
from emulator.registry import Context

ACCOUNT, REGION = "123456789012", "us-east-1"
REAL = [f"i-{n:017x}" for n in range(1, 1201)]  # more than two IN lists' worth
FAKE = [f"i-{n:017x}" for n in range(10**6, 10**6 + 260_000)]  # more than SQLite's 250000 binds


def _row(iid: str, account: str = ACCOUNT) -> Instance:
    return Instance(id=iid, account_id=account, region=REGION, reservation_id="r-1", image_id="ami-1",
                    instance_type="t2.micro", state="running", vpc_id="vpc-a", subnet_id="subnet-a",
                    availability_zone="us-east-1a", private_ip=None, mac_address="0a:00:00:00:00:01",
                    network_interface_id="eni-1", security_group_ids=[],
                    launch_time=datetime.now(timezone.utc), key_name=None)


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('ids')}/i.sqlite"
    db.migrate(url)
    Session = db.session_factory(db.make_engine(url))
    with Session() as s:
        s.add_all([_row(i) for i in REAL] + [_row("i-0000000000000ffff", account="210987654321")])
        s.commit()
    with Session() as s:
        yield Context(ACCOUNT, REGION, "req", s, Config(), None)


def test_get_instances_of_many_ids_all_found_in_the_order_asked(ctx):
    asked = list(reversed(REAL)) + REAL[:3]  # duplicates answered once
    assert [r.id for r in get_instances(ctx, asked)] == list(reversed(REAL))


def test_get_instances_of_more_ids_than_the_database_binds(ctx):
    with pytest.raises(InvalidInstanceIDNotFound) as exc:
        get_instances(ctx, REAL[:5] + FAKE)
    assert exc.value.ids == FAKE


def test_another_accounts_instance_among_many_ids_is_not_found(ctx):
    with pytest.raises(InvalidInstanceIDNotFound) as exc:
        get_instances(ctx, REAL + ["i-0000000000000ffff"])
    assert exc.value.ids == ["i-0000000000000ffff"]


def test_rows_of_many_ids(ctx):
    """Rows in id order holding every id asked (the describe pipeline's selector keeps those
    named and reports the missing ones), never another account's."""
    for asked in (REAL[:10], REAL[:700], REAL + FAKE):
        ids = [r.id for r in _rows(ctx, asked)]
        assert ids == sorted(ids) and set(asked) & set(REAL) <= set(ids) <= set(REAL)
    assert [r.id for r in _rows(ctx, REAL[:10])] == REAL[:10]
