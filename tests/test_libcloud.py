"""libcloud, which reads namespaced XML strictly: its EC2 driver (SigV4) and its Eucalyptus driver (SigV2)."""
import pytest

from .helpers import unique
from .server import ACCESS_KEY, SECRET_KEY

libcloud = pytest.importorskip("libcloud")
from libcloud.compute.drivers.ec2 import EC2NodeDriver, EucNodeDriver  # noqa: E402


@pytest.fixture(scope="module")
def drivers(server):
    ec2 = EC2NodeDriver(ACCESS_KEY, SECRET_KEY, region="us-east-1", host="127.0.0.1", port=server.port,
                        secure=False)
    euca = EucNodeDriver(ACCESS_KEY, SECRET_KEY, host="127.0.0.1", port=server.port, secure=False)
    return ec2, euca


@pytest.mark.parametrize("which", ["ec2", "euca"])
def test_libcloud_lists_and_runs_a_node(drivers, which):
    driver = drivers[0] if which == "ec2" else drivers[1]
    zones = driver.ex_list_availability_zones()  # libcloud's Eucalyptus driver has no list_locations
    assert {z.name for z in zones} >= {"us-east-1a", "us-east-1b"}
    if which == "ec2":
        assert {loc.availability_zone.name for loc in driver.list_locations()} >= {"us-east-1a"}
    images = driver.list_images(ex_owner="ec2emu")
    tiny = next(i for i in images if i.name.startswith("ec2emu-tiny-"))
    name = unique("lc")
    key = driver.create_key_pair(name)
    assert key.fingerprint and key.private_key.startswith("-----BEGIN RSA PRIVATE KEY-----")
    assert name in {k.name for k in driver.list_key_pairs()}
    size = next(s for s in drivers[0].list_sizes() if s.id == "t2.micro")
    node = driver.create_node(name=name, image=tiny, size=size, ex_keyname=name)
    assert node.id.startswith("i-") and node.private_ips
    listed = {n.id: n for n in driver.list_nodes()}
    assert listed[node.id].extra["tags"].get("Name") == name
    assert driver.destroy_node(node)
    driver.delete_key_pair(key)
