"""The AWS SDK for JavaScript v3 (npm @aws-sdk/client-ec2 and client-sts, pinned in tests/js) run
against a server process: tests/js/flows.mjs runs a user's flows and prints each step's outcome as
JSON, checked here and read back with boto3. `scripts/install-deps.sh --test` installs node and
runs `npm ci` in tests/js."""
import json
import os
import shutil
import subprocess

import pytest

from .helpers import expect_error, unique
from .server import ACCESS_KEY, ACCOUNT, ROOT, SECRET_KEY

JS = ROOT / "tests" / "js"


@pytest.fixture(scope="module")
def flows(server):
    node = shutil.which("node")
    if node is None or not (JS / "node_modules" / "@aws-sdk" / "client-ec2").is_dir():
        pytest.skip("node or tests/js/node_modules missing: run scripts/install-deps.sh --test")
    run = unique("js")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_REGION="us-east-1")
    done = subprocess.run([node, "flows.mjs", server.endpoint, run], cwd=JS, env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    return run, json.loads(done.stdout)


def test_sts_and_the_default_vpc(flows, ec2):
    _, out = flows
    assert out["identity"] == {"account": ACCOUNT, "arn": f"arn:aws:iam::{ACCOUNT}:root", "userId": ACCOUNT}
    default = [v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"] if v["IsDefault"]]
    assert out["defaultVpcs"] == [{"id": default[0], "isDefault": True}]


def test_describe_images_paginated_two_a_page(flows, ec2):
    """paginateDescribeImages with pageSize 2 (once refused: 'between 5 and 1000')."""
    _, out = flows
    images = out["images"]
    assert "error" not in images, images
    pages = images["pages"]
    assert [len(p) for p in pages] == [2, 1]
    assert sorted(sum(pages, [])) == sorted(images["registered"]) and len(set(images["registered"])) == 3
    # the script deregistered them
    expect_error("InvalidAMIID.NotFound", ec2.describe_images, ImageIds=images["registered"])


def test_key_pair_flow_and_its_not_found_error(flows, ec2):
    run, out = flows
    key = out["keyPair"]
    assert "error" not in key, key
    assert key["name"] == f"{run}-key" and key["id"].startswith("key-")
    assert key["pemHead"] == "-----BEGIN RSA PRIVATE KEY-----"
    assert key["described"] == [{"name": key["name"], "id": key["id"], "fingerprint": key["fingerprint"]}]
    assert out["deletedKeyPair"]["error"]["name"] == "InvalidKeyPair.NotFound"
    assert out["deletedKeyPair"]["error"]["status"] == 400
    expect_error("InvalidKeyPair.NotFound", ec2.describe_key_pairs, KeyNames=[key["name"]])


def test_security_group_flow(flows, ec2):
    run, out = flows
    group = out["securityGroup"]
    assert "error" not in group, group
    default_vpc = out["defaultVpcs"][0]["id"]
    assert group["name"] == f"{run}-sg" and group["vpcId"] == default_vpc
    assert group["ingress"] == [{"protocol": "tcp", "from": 22, "to": 22, "cidrs": ["10.0.0.0/8"]}]
    assert out["deletedSecurityGroup"]["error"]["name"] == "InvalidGroup.NotFound"
    expect_error("InvalidGroup.NotFound", ec2.describe_security_groups, GroupIds=[group["id"]])


def test_instance_run_wait_terminate(flows, ec2):
    run, out = flows
    vm = out["instance"]
    assert "error" not in vm, vm
    assert vm["launched"] == "pending" and vm["waitRunning"] == "SUCCESS" and vm["state"] == "running"
    assert vm["vpcId"] == out["defaultVpcs"][0]["id"] and vm["subnetId"].startswith("subnet-")
    assert vm["tags"] == [{"Key": "Name", "Value": f"{run}-vm"}]
    assert vm["terminating"] == "shutting-down" and vm["waitTerminated"] == "SUCCESS"
    seen = ec2.describe_instances(InstanceIds=[vm["id"]])["Reservations"][0]["Instances"][0]
    assert seen["State"]["Name"] == "terminated"
