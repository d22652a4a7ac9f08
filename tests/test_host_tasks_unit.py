"""The host worker without a server: order, retries, the failure hook, shutdown mid-retry."""
import pytest
from sqlalchemy import select

from emulator import db, host_tasks
from emulator.models import HostTask
from emulator.registry import HOST_ACTION_FAILED, HOST_ACTIONS, Host, Interrupted

calls: list[tuple] = []
failures: dict[str, int] = {}  # resource id -> how many more calls fail


def _act(host, resource_id, **args):
    calls.append((resource_id, args))
    if failures.get(resource_id, 0) > 0:
        failures[resource_id] -= 1
        raise OSError(f"hiccup on {resource_id}")


def _failed(host, resource_id, error):
    calls.append(("FAILED", resource_id, error))


@pytest.fixture
def world(tmp_path, monkeypatch):
    monkeypatch.setitem(HOST_ACTIONS, "test.act", _act)
    monkeypatch.setitem(HOST_ACTION_FAILED, "test.act", _failed)
    monkeypatch.setattr(host_tasks, "RETRY_PAUSES", (0, 0, 0))
    calls.clear()
    failures.clear()
    url = f"sqlite:///{tmp_path}/t.sqlite"
    db.migrate(url)
    Session = db.session_factory(db.make_engine(url))
    worker = host_tasks.HostWorker(Session)
    worker.host = Host(Session, None, None)
    return Session, worker


def _enqueue(Session, *ids):
    with Session() as s:
        for i in ids:
            host_tasks.enqueue(s, "test.act", i, "zone-a", n=i)
        s.commit()


def _states(Session):
    with Session() as s:
        return [(t.resource_id, t.state, t.attempts, t.error) for t in s.scalars(select(HostTask).order_by(HostTask.id))]


def _drain(Session, worker):
    while (task := worker._next()) is not None:
        worker.run(task)


def test_tasks_run_in_order_and_are_marked_done(world):
    Session, worker = world
    _enqueue(Session, "r-2", "r-1", "r-3")
    _drain(Session, worker)
    assert [c[0] for c in calls] == ["r-2", "r-1", "r-3"]
    assert calls[0][1] == {"n": "r-2"}
    assert [s[1] for s in _states(Session)] == ["done"] * 3


def test_a_hiccup_is_retried_and_a_lasting_fault_reported(world):
    Session, worker = world
    failures.update({"flaky": 2, "broken": 99})
    _enqueue(Session, "flaky", "broken", "after")
    _drain(Session, worker)
    states = {r: (st, n, err) for r, st, n, err in _states(Session)}
    assert states["flaky"] == ("done", 3, None)
    assert states["broken"][0:2] == ("failed", 4) and "hiccup on broken" in states["broken"][2]
    assert states["after"] == ("done", 1, None)  # the worker went on
    assert ("FAILED", "broken", "OSError: hiccup on broken") in calls
    assert not any(c[0] == "FAILED" and c[1] == "flaky" for c in calls)


def test_unknown_kinds_are_refused_when_written(world):
    Session, _ = world
    with Session() as s, pytest.raises(KeyError):
        host_tasks.enqueue(s, "test.nonsense", "x")


def test_shutdown_during_retries_leaves_the_task_pending(world):
    Session, worker = world
    failures["slow"] = 99
    _enqueue(Session, "slow")
    worker._stopping = True
    worker.run(worker._next())
    assert _states(Session) == [("slow", "pending", 0, None)]
    assert not any(c[0] == "FAILED" for c in calls)


def test_lanes_take_only_their_own_kinds(world, monkeypatch):
    Session, _ = world
    monkeypatch.setitem(HOST_ACTIONS, "image.test", _act)
    with Session() as s:
        host_tasks.enqueue(s, "image.test", "img-1")
        host_tasks.enqueue(s, "test.act", "guest-1")
        s.commit()
    images, guests = host_tasks.HostWorker(Session, "images"), host_tasks.HostWorker(Session, "guests")
    assert images._next().resource_id == "img-1"
    assert guests._next().resource_id == "guest-1"  # not held up behind the image task


def test_an_action_interrupted_by_the_shutdown_stays_pending(world, monkeypatch):
    Session, worker = world

    def long_action(host, resource_id, **args):
        calls.append(resource_id)
        raise Interrupted()
    monkeypatch.setitem(HOST_ACTIONS, "test.act", long_action)
    _enqueue(Session, "long")
    worker.run(worker._next())
    assert _states(Session) == [("long", "pending", 0, None)] and calls == ["long"]
