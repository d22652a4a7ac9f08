"""State survives a restart, also after SIGKILL: every acknowledged change was durable."""
import signal
import time

import pytest

from .helpers import fast_waiter, tiny_image, unique
from .server import Server


def _state(ec2, iid: str) -> str:
    return ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["State"]["Name"]


@pytest.fixture
def own_server(tmp_path):
    srv = Server(tmp_path / "state").start()
    yield srv
    srv.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_state_survives_restart(own_server, sig):
    ec2 = own_server.client()
    key = unique("key")
    made = ec2.create_key_pair(KeyName=key)
    group = ec2.create_security_group(GroupName=unique("grp"), Description="d")["GroupId"]
    res = ec2.run_instances(ImageId=tiny_image(ec2), MinCount=2, MaxCount=2, KeyName=key,
                            SecurityGroupIds=[group],
                            TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "a", "Value": "b"}]}])
    ids = sorted(i["InstanceId"] for i in res["Instances"])
    fast_waiter(ec2, "instance_running")(InstanceIds=ids)
    # A slow host (the none driver takes a minute to power off): the stop is surely in flight
    # when the server dies.
    own_server.env["EC2EMU_NONE_TRANSITION_SECONDS"] = "60"
    own_server.restart()
    ec2 = own_server.client()
    ec2.stop_instances(InstanceIds=[ids[0]])
    time.sleep(0.5)  # (the host has been told: its stop task ran)
    assert _state(ec2, ids[0]) == "stopping"
    vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]

    own_server.env.pop("EC2EMU_NONE_TRANSITION_SECONDS")
    own_server.restart(sig)
    ec2 = own_server.client()
    assert ec2.describe_vpcs()["Vpcs"][0]["VpcId"] == vpc  # defaults not made twice
    assert len(ec2.describe_vpcs()["Vpcs"]) == 1
    assert ec2.describe_key_pairs(KeyNames=[key])["KeyPairs"][0]["KeyFingerprint"] == made["KeyFingerprint"]
    insts = {i["InstanceId"]: i for r in ec2.describe_instances(InstanceIds=ids)["Reservations"] for i in r["Instances"]}
    assert insts[ids[1]]["State"]["Name"] == "running"
    assert insts[ids[1]]["Tags"] == [{"Key": "a", "Value": "b"}]
    assert insts[ids[1]]["SecurityGroups"][0]["GroupId"] == group
    # The stop that was under way was finished by the reconciler.
    fast_waiter(ec2, "instance_stopped")(InstanceIds=[ids[0]])
    ec2.terminate_instances(InstanceIds=ids)
