"""Durable host tasks: a host action promised by a committed change survives a crash between
the commit and the action, and the restarted server performs it."""
import sqlite3
import time

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
    srv = Server(tmp_path / "state", {"EC2EMU_CRASH_AT": "after-commit:StopInstances"}, database_url="")
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

    crashy.env.pop("EC2EMU_CRASH_AT")
    crashy.start()
    ec2 = crashy.client()
    fast_waiter(ec2, "instance_stopped")(InstanceIds=[iid])
    assert ("instance.stop", iid, "done") in _tasks(crashy)


@pytest.mark.parametrize("failures", [2, 99])
def test_a_host_hiccup_is_retried_and_a_lasting_fault_is_reported(tmp_path, failures):
    """The host fails the first `failures` boots: two failures are a hiccup (the instance still
    comes up); a host that never boots it ends the launch with the real cause, not a bare
    'internal error' (AWS's Server.InternalError state reason)."""
    srv = Server(tmp_path / "state", {"EC2EMU_NONE_FAIL_STARTS": str(failures)}, database_url="").start()
    try:
        ec2 = srv.client()
        iid = ec2.run_instances(ImageId=tiny_image(ec2), MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
        if failures == 2:
            fast_waiter(ec2, "instance_running")(InstanceIds=[iid])
            assert ("instance.start", iid, "done") in _tasks(srv)
        else:
            deadline = time.monotonic() + 60  # (boto3's terminated waiter gives up on 'pending')
            while True:
                inst = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
                if inst["State"]["Name"] == "terminated" or time.monotonic() > deadline:
                    break
                time.sleep(0.3)
            assert inst["State"]["Name"] == "terminated"
            assert inst["StateReason"]["Code"] == "Server.InternalError"
            assert "injected host fault" in inst["StateReason"]["Message"], inst["StateReason"]
            assert ("instance.start", iid, "failed") in _tasks(srv)
    finally:
        srv.stop()


def test_a_failed_start_of_a_stopped_instance_leaves_it_stopped_with_its_volumes(tmp_path):
    """A restart the host cannot carry out goes back to 'stopped' with the cause (AWS does not end
    an instance whose start failed), its root volume kept; the first launch's failure (above)
    still ends the instance. Then, the host well again, the instance starts."""
    srv = Server(tmp_path / "state", database_url="").start()
    try:
        ec2 = srv.client()
        iid = ec2.run_instances(ImageId=tiny_image(ec2), MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
        fast_waiter(ec2, "instance_running")(InstanceIds=[iid])
        ec2.stop_instances(InstanceIds=[iid])
        fast_waiter(ec2, "instance_stopped")(InstanceIds=[iid])
        srv.env["EC2EMU_NONE_FAIL_STARTS"] = "4"  # every attempt of the next start (3 retries)
        srv.restart()
        ec2 = srv.client()
        ec2.start_instances(InstanceIds=[iid])
        deadline = time.monotonic() + 60
        while True:
            inst = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
            if inst["State"]["Name"] != "pending" or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert inst["State"]["Name"] == "stopped"
        assert inst["StateReason"]["Code"] == "Server.InternalError"
        assert "injected host fault" in inst["StateReason"]["Message"], inst["StateReason"]
        [root] = [m["Ebs"]["VolumeId"] for m in inst["BlockDeviceMappings"]]
        assert ec2.describe_volumes(VolumeIds=[root])["Volumes"][0]["State"] == "in-use"
        ec2.start_instances(InstanceIds=[iid])  # the 5th start: the host is well again
        fast_waiter(ec2, "instance_running")(InstanceIds=[iid])
    finally:
        srv.stop()
