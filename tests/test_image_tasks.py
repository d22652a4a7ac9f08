"""Image work is durable host tasks: a RegisterImage (from a host file) or an ImportImage whose
server dies right after the commit, before its task ran, still ends with the image made once the
server is back."""
import os
from pathlib import Path

import pytest
from botocore.exceptions import ConnectionClosedError, EndpointConnectionError, ReadTimeoutError

from .server import Server
from .test_host_tasks import _tasks
from .test_image_files import info, qemu_img, wait_image, wait_task


def _crashing_server(tmp_path: Path, action: str) -> Server:
    """A server (SQLite: the test reads its task table) that dies right after `action` commits."""
    return Server(tmp_path / "state", {"EC2EMU_CRASH_AT": f"after-commit:{action}"}, database_url="").start()


def _crash(srv: Server, call, **params) -> list[tuple]:
    """Make the call that kills the server; the image tasks it left behind."""
    with pytest.raises((ConnectionClosedError, EndpointConnectionError, ReadTimeoutError)):
        call(**params)
    srv.proc.wait(10)
    assert srv.proc.returncode == 70  # it died where the switch says, after the commit
    return [t for t in _tasks(srv) if t[0].startswith("image.")]


def _registered(srv: Server) -> Path:
    image_dir = os.environ.get("EC2EMU_IMAGE_DIR") or str(srv.state_dir / "images")
    return Path(image_dir).resolve() / "registered"


def _restart(srv: Server):
    srv.env.pop("EC2EMU_CRASH_AT")
    srv.start()
    return srv.client()


def test_register_image_from_a_file_survives_a_crash_after_commit(tmp_path):
    srv = _crashing_server(tmp_path, "RegisterImage")
    try:
        disk = tmp_path / "disk.qcow2"
        qemu_img("create", "-f", "qcow2", disk, "1536M")
        [(kind, image_id, state)] = _crash(srv, srv.client().register_image, Name="crashed-register",
                                           ImageLocation=str(disk))
        assert (kind, state) == ("image.register_file", "pending")  # committed, not yet acted on
        assert image_id.startswith("ami-")
        copy = _registered(srv) / f"{image_id}.qcow2"
        assert not copy.exists()

        ec2 = _restart(srv)
        img = wait_image(ec2, image_id, copy)
        assert img["State"] == "available" and img["Name"] == "crashed-register"
        assert img["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] == 2  # sized by the task
        assert info(copy)["virtual-size"] == 1536 << 20
        assert ("image.register_file", image_id, "done") in _tasks(srv)
    finally:
        srv.stop()


def test_import_image_survives_a_crash_after_commit(tmp_path):
    srv = _crashing_server(tmp_path, "ImportImage")
    try:
        disk = tmp_path / "disk.vmdk"
        qemu_img("create", "-f", "vmdk", disk, "1G")
        [(kind, task_id, state)] = _crash(srv, srv.client().import_image,
                                          DiskContainers=[{"Url": str(disk)}])
        assert (kind, state) == ("image.import", "pending") and task_id.startswith("import-ami-")

        ec2 = _restart(srv)
        task = wait_task(ec2, task_id)
        assert task["Status"] == "completed", task
        assert wait_image(ec2, task["ImageId"])["State"] == "available"
        assert info(_registered(srv) / f"{task['ImageId']}.qcow2")["format"] == "qcow2"
        assert ("image.import", task_id, "done") in _tasks(srv)
    finally:
        srv.stop()
