"""The default images as a user meets them: what the Debian image is built with, and where a
server looks for the files (the shared cache `ec2emu images build` fills, whatever --state-dir)."""
import os
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

from emulator.images import DEBIAN_NAME, TINY_NAME
from hypervisor import debian_image
from hypervisor.imagebuild import default_images_dir

from .helpers import expect_error
from .server import Server


class _Stop(Exception):
    pass


def test_debian_image_has_curl_and_wget(monkeypatch, tmp_path):
    """The package list reaches mmdebstrap's --include (the image itself is rebuilt by CI)."""
    calls = []

    def fake_run(*cmd):
        calls.append(cmd)
        raise _Stop

    monkeypatch.setattr(debian_image, "_run", fake_run)
    with pytest.raises(_Stop):
        debian_image.build_debian(tmp_path / "out.qcow2", progress=lambda line: None)
    assert calls[0][0] == "mmdebstrap"
    include = next(a for a in calls[0] if a.startswith("--include="))
    packages = include.split("=", 1)[1].split(",")
    assert {"curl", "wget", "cloud-init", "openssh-server"} <= set(packages)


def _libvirt_missing() -> str | None:
    if shutil.which("virsh") is None:
        return "virsh missing"
    if subprocess.run(["virsh", "-c", "qemu:///system", "version"], capture_output=True).returncode:
        return "libvirtd is not running"
    if not Path(default_images_dir(), TINY_NAME + ".qcow2").exists():
        return f"images not built in {default_images_dir()} (ec2emu images build)"
    return None


@pytest.fixture
def libvirt_server(tmp_path):
    """A libvirt-driver server (no guest is ever booted here), its image settings as given."""
    why = _libvirt_missing()
    if why:
        pytest.skip(why)  # a failure under CI (conftest)
    from .conftest import CREDENTIALS
    servers = []

    def start(**env) -> Server:
        srv = Server(tmp_path / f"state{len(servers)}", hypervisor="libvirt")
        srv.env = {**{k: v for k, v in os.environ.items() if k not in ("EC2EMU_IMAGE_DIR", "EC2EMU_IMAGE_CACHE")},
                   "EC2EMU_NETWORK_PREFIX": "img" + secrets.token_hex(3), "EC2EMU_CREDENTIALS": CREDENTIALS, **env}
        servers.append(srv.start())
        return srv

    yield start
    from hypervisor.network import Network
    for srv in servers:
        srv.stop()  # nothing booted: this only makes sure no namespace outlives the test
        Network(str(srv.state_dir / "network"), prefix=srv.env["EC2EMU_NETWORK_PREFIX"]).teardown_all()


def _image(ec2, name: str) -> str:
    return ec2.describe_images(Owners=["ec2emu"], Filters=[{"Name": "name", "Values": [name]}])["Images"][0]["ImageId"]


def test_state_dir_server_finds_the_shared_image_cache(libvirt_server):
    """`ec2emu serve --state-dir DIR` with no image_dir: the default images are the shared cache's
    (a dry run checks everything a launch would, files included, and boots nothing)."""
    ec2 = libvirt_server(EC2EMU_IMAGE_CACHE=default_images_dir()).client()
    expect_error("DryRunOperation", ec2.run_instances, ImageId=_image(ec2, TINY_NAME + "*"),
                 MinCount=1, MaxCount=1, DryRun=True)


def test_launch_without_image_files_is_refused_at_once(libvirt_server, tmp_path):
    empty = tmp_path / "no-images"
    empty.mkdir()
    ec2 = libvirt_server(EC2EMU_IMAGE_CACHE=str(empty)).client()
    for name, hint in ((TINY_NAME, "`ec2emu images build`"), (DEBIAN_NAME, "`ec2emu images build --debian`")):
        image = _image(ec2, name + "*")
        message = expect_error("InvalidAMIID.Unavailable", ec2.run_instances, ImageId=image, MinCount=1, MaxCount=1)
        assert image in message and str(empty) in message and hint in message, message
    assert ec2.describe_instances()["Reservations"] == []
