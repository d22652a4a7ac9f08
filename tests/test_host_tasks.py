"""Durable host tasks: a host action promised by a committed change survives a crash between
the commit and the action, and the restarted server performs it."""
import sqlite3

import pytest
from botocore.exceptions import ConnectionClosedError, EndpointConnectionError, ReadTimeoutError

from .helpers import fast_waiter, tiny_image
from .server import Server


def _tasks(srv: Server) -> list[tuple]:
    """(kind, resource id, state) of every host task, straight from the server's SQLite file."""
    with sqlite3.connect(srv.state_dir / "ec2emu.sqlite") as db:
        return db.execute("SELECT kind, resource_id, state FROM host_tasks ORDER BY id").fetchall()


@pytest.fixture
def crashy(tmp_path):
    """A server (SQLite: the test reads its task table) that dies right after StopInstances
    commits, before the stop reaches the host."""
    srv = Server(tmp_path / "state", {"EC2EMU_CRASH_AFTER_COMMIT": "StopInstances"}, database_url="")
    srv.start()
    yield srv
    srv.stop()


def test_a_crash_after_commit_loses_no_host_action(crashy):
    ec2 = crashy.client()
    iid = ec2.run_instances(ImageId=tiny_image(ec2), MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    fast_waiter(ec2, "instance_running")(InstanceIds=[iid])
    assert ("instance.start", iid, "done") in _tasks(crashy)  # positive control: tasks are run

    with pytest.raises((ConnectionClosedError, EndpointConnectionError, ReadTimeoutError)):
        ec2.stop_instances(InstanceIds=[iid])
    crashy.proc.wait(10)
    assert crashy.proc.returncode == 70  # it died where the switch says, after the commit
    assert ("instance.stop", iid, "pending") in _tasks(crashy)  # committed, not yet acted on

    crashy.env.pop("EC2EMU_CRASH_AFTER_COMMIT")
    crashy.start()
    ec2 = crashy.client()
    fast_waiter(ec2, "instance_stopped")(InstanceIds=[iid])
    assert ("instance.stop", iid, "done") in _tasks(crashy)
