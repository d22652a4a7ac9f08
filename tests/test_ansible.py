"""Ansible's amazon.aws collection (PyPI `ansible`, a test extra) against a server process: the
playbook tests/ansible/site.yml runs in phases (key pair, security group, an instance launched
without a subnet and tagged; rules changed and the instance stopped; started; all removed), each
checked by reading the emulator back with boto3, and the aws_ec2 inventory plugin lists the
instance with its tags."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from .helpers import expect_error, fast_waiter, tiny_image, unique
from .server import ACCESS_KEY, SECRET_KEY, ROOT

PLAYBOOKS = ROOT / "tests" / "ansible"


@pytest.fixture(scope="module")
def ansible(server, tmp_path_factory):
    """Runs an ansible command against the server: -> its parsed stdout (JSON) or its text."""
    if shutil.which("ansible-playbook") is None:
        pytest.skip("ansible missing: run scripts/install-deps.sh --test (the test extra)")
    home = tmp_path_factory.mktemp("ansible")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ANSIBLE_"))}
    env.update(AWS_ENDPOINT_URL=server.endpoint, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
               AWS_REGION="us-east-1", HOME=str(home), ANSIBLE_LOCAL_TEMP=str(home / "tmp"),
               ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_NOCOLOR="1",
               ANSIBLE_INVENTORY_UNPARSED_WARNING="false", ANSIBLE_LOCALHOST_WARNING="false")

    def run(*args: str) -> str:
        done = subprocess.run(list(args), cwd=home, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-5000:]
        return done.stdout
    return home, run


def plain(value):
    """ansible-inventory's JSON with its {"__ansible_unsafe": v} wrappers (data from outside) unwrapped."""
    if isinstance(value, dict):
        if value.keys() == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def playbook(ansible_run, phase: str, **extra) -> str:
    args = ["ansible-playbook", "-i", "localhost,", str(PLAYBOOKS / "site.yml"), "-e", f"phase={phase}"]
    for name, value in extra.items():
        args += ["-e", f"{name}={value}"]
    return ansible_run(*args)


def test_playbook_and_inventory(ansible, ec2, server):
    home, run = ansible
    name = unique("ans")
    image = tiny_image(ec2)

    out = playbook(run, "up", run=name, image_id=image)
    assert "failed=0" in out
    key = ec2.describe_key_pairs(KeyNames=[f"{name}-key"])["KeyPairs"][0]
    group = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [f"{name}-sg"]}])["SecurityGroups"]
    assert len(group) == 1
    group = group[0]
    default_vpc = [v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"] if v["IsDefault"]][0]
    assert group["VpcId"] == default_vpc and group["Description"] == "ansible's group"
    assert [(p["IpProtocol"], p["FromPort"], p["ToPort"], p["IpRanges"]) for p in group["IpPermissions"]] == \
        [("tcp", 22, 22, [{"CidrIp": "10.0.0.0/8", "Description": "ssh"}])]
    found = ec2.describe_instances(Filters=[{"Name": "tag:Run", "Values": [name]}])["Reservations"]
    assert len(found) == 1 and len(found[0]["Instances"]) == 1
    vm = found[0]["Instances"][0]
    instance_id = vm["InstanceId"]
    default_subnets = {s["SubnetId"] for s in ec2.describe_subnets(
        Filters=[{"Name": "vpc-id", "Values": [default_vpc]}, {"Name": "default-for-az", "Values": ["true"]}])["Subnets"]}
    assert vm["State"]["Name"] == "running" and vm["ImageId"] == image and vm["InstanceType"] == "t2.micro"
    assert vm["KeyName"] == key["KeyName"] and vm["SubnetId"] in default_subnets
    assert [g["GroupId"] for g in vm["SecurityGroups"]] == [group["GroupId"]]
    assert {t["Key"]: t["Value"] for t in vm["Tags"]} == {"Name": f"{name}-vm", "Run": name, "Role": "web",
                                                          "Owner": "ansible"}

    # The aws_ec2 inventory plugin: the instance, its tags as host variables, a group by its Role.
    inventory = home / "inv.aws_ec2.yml"
    inventory.write_text((PLAYBOOKS / "inventory.aws_ec2.yml.in").read_text()
                         .replace("@ENDPOINT@", server.endpoint).replace("@RUN@", name))
    listed = plain(json.loads(run("ansible-inventory", "-i", str(inventory), "--list")))
    assert listed["role_web"]["hosts"] == [instance_id]
    host = listed["_meta"]["hostvars"][instance_id]
    assert host["tags"] == {"Name": f"{name}-vm", "Run": name, "Role": "web", "Owner": "ansible"}
    assert host["ansible_host"] == vm["PrivateIpAddress"] and host["state"]["name"] == "running"

    playbook(run, "change", run=name, instance_id=instance_id)
    fast_waiter(ec2, "instance_stopped")(InstanceIds=[instance_id])
    group = ec2.describe_security_groups(GroupIds=[group["GroupId"]])["SecurityGroups"][0]
    assert [(p["IpProtocol"], p["FromPort"], p["ToPort"], p["IpRanges"]) for p in group["IpPermissions"]] == \
        [("tcp", 443, 443, [{"CidrIp": "0.0.0.0/0"}])]

    playbook(run, "start", run=name, instance_id=instance_id)
    fast_waiter(ec2, "instance_running")(InstanceIds=[instance_id])

    playbook(run, "down", run=name, instance_id=instance_id)
    vm = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    assert vm["State"]["Name"] == "terminated"
    expect_error("InvalidGroup.NotFound", ec2.describe_security_groups, GroupIds=[group["GroupId"]])
    expect_error("InvalidKeyPair.NotFound", ec2.describe_key_pairs, KeyNames=[key["KeyName"]])
