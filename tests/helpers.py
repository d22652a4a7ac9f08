"""Small helpers shared by the end-to-end tests."""
import time
import uuid

import pytest
from botocore.exceptions import ClientError

# The rule a user adds to reach an instance's SSH server from anywhere (security groups are
# enforced: a guest test must open it before it connects).
SSH_ANYWHERE = [{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]

def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def error_of(call, *args, **kwargs) -> tuple[str, str]:
    """(code, message) of the error a boto3 call answers; fails the test if it succeeds."""
    with pytest.raises(ClientError) as exc:
        call(*args, **kwargs)
    return exc.value.response["Error"]["Code"], exc.value.response["Error"]["Message"]


def expect_error(code: str, call, *args, **kwargs) -> str:
    """error_of, asserting the code; -> the message."""
    got, message = error_of(call, *args, **kwargs)
    assert got == code, (got, message)
    return message


def aws_cli(server, *args: str):
    """The AWS CLI (`aws ... --output json`) against `server` as the test account -> its parsed
    JSON output (None when it prints nothing); a failure fails the test with its stderr."""
    import json
    import os
    import subprocess

    from .server import ACCESS_KEY, SECRET_KEY

    env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
               AWS_DEFAULT_REGION="us-east-1", AWS_PAGER="", AWS_CONFIG_FILE="/dev/null",
               AWS_SHARED_CREDENTIALS_FILE="/dev/null")
    env.pop("AWS_PROFILE", None)
    proc = subprocess.run(["aws", "--endpoint-url", server.endpoint, *args, "--output", "json"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout) if proc.stdout.strip() else None


def tiny_image(ec2) -> str:
    images = ec2.describe_images(Owners=["ec2emu"], Filters=[{"Name": "name", "Values": ["ec2emu-tiny-*"]}])
    return images["Images"][0]["ImageId"]


def fast_waiter(ec2, name: str):
    """boto3's waiter with a short poll (AWS's default is 15 s)."""
    waiter = ec2.get_waiter(name)
    return lambda **kw: waiter.wait(WaiterConfig={"Delay": 0.2, "MaxAttempts": 100}, **kw)


def eventually(check, what: str = "", within: float = 15, every: float = 0.1):
    """Call check until it returns something true (returned), failing after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"not within {within} s: {what}"
        time.sleep(every)
