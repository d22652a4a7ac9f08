"""`ec2emu env`: the environment it prints, evaluated by bash in an otherwise empty environment, is
all the AWS CLI and boto3 need to act in the region and account it names (no --endpoint-url, no
profile)."""
import os
import subprocess
import sys

from .conftest import CREDENTIALS, OTHER_ACCESS_KEY
from .helpers import unique
from .server import ROOT


def in_env(*env_args: str, script: str) -> subprocess.CompletedProcess:
    """bash with nothing but PATH and HOME, `eval "$(ec2emu env ARGS)"`, then SCRIPT."""
    clean = {"PATH": os.path.dirname(sys.executable) + ":" + os.environ["PATH"], "HOME": "/nonexistent",
             "EC2EMU_CREDENTIALS": CREDENTIALS}
    command = f'eval "$({sys.executable} -m emulator.cli env {" ".join(env_args)})" && unset EC2EMU_CREDENTIALS\n{script}'
    done = subprocess.run(["bash", "-c", command], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_env_points_the_aws_cli_and_boto3_at_the_server(server, ec2):
    cli_key, boto_key = unique("envcli"), unique("envboto")
    done = in_env("--endpoint", server.endpoint, "--region", "eu-west-1", script=f"""
        aws ec2 create-key-pair --key-name {cli_key} --query KeyName --output text
        python3 -c 'import boto3; print(boto3.client("ec2").create_key_pair(KeyName="{boto_key}")["KeyName"])'
        python3 -c 'import boto3; print(boto3.client("sts").get_caller_identity()["Account"])'
    """)
    assert done.stdout.split() == [cli_key, boto_key, "123456789012"]
    west = server.client(region="eu-west-1")
    keys = {k["KeyName"] for k in west.describe_key_pairs(KeyNames=[cli_key, boto_key])["KeyPairs"]}
    assert keys == {cli_key, boto_key}
    # acted in the region it named, not the default one
    assert ec2.describe_key_pairs(Filters=[{"Name": "key-name", "Values": [cli_key, boto_key]}])["KeyPairs"] == []


def test_env_with_another_access_key_acts_in_its_account(server, other_account):
    key = unique("envother")
    done = in_env("--endpoint", server.endpoint, "--access-key", OTHER_ACCESS_KEY, script=f"""
        aws ec2 create-key-pair --key-name {key} --query KeyName --output text
    """)
    assert done.stdout.split() == [key]
    assert [k["KeyName"] for k in other_account.describe_key_pairs(KeyNames=[key])["KeyPairs"]] == [key]


def test_env_names_euca2ools_variables_and_refuses_what_it_cannot_serve():
    done = in_env("--endpoint", "http://127.0.0.1:1/", "--region", "ap-south-1", script="""
        echo "$EC2_URL $AWS_AUTH_REGION $AWS_ACCESS_KEY_ID $AWS_DEFAULT_REGION $AWS_ENDPOINT_URL"
    """)
    assert done.stdout.split() == ["http://127.0.0.1:1/", "ap-south-1", "AKIAIOSFODNN7EXAMPLE", "ap-south-1",
                                   "http://127.0.0.1:1"]
    for bad in (["--region", "mars-1"], ["--access-key", "AKIANOTCONFIGURED000"]):
        refused = subprocess.run([sys.executable, "-m", "emulator.cli", "env", *bad], cwd=ROOT,
                                 capture_output=True, text=True, timeout=60)
        assert refused.returncode != 0 and refused.stdout == "" and "ec2emu env:" in refused.stderr
