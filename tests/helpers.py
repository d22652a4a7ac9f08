"""Small helpers shared by the end-to-end tests."""
import uuid

import pytest
from botocore.exceptions import ClientError


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def error_code(excinfo: pytest.ExceptionInfo) -> str:
    return excinfo.value.response["Error"]["Code"]


def error_of(call, **kwargs) -> tuple[str, str]:
    """(code, message) of the ClientError a call raises."""
    with pytest.raises(ClientError) as exc:
        call(**kwargs)
    return exc.value.response["Error"]["Code"], exc.value.response["Error"]["Message"]


def expect_error(code: str, fn, *args, **kwargs) -> ClientError:
    with pytest.raises(ClientError) as excinfo:
        fn(*args, **kwargs)
    assert error_code(excinfo) == code, excinfo.value.response
    return excinfo.value


def tiny_image(ec2) -> str:
    images = ec2.describe_images(Owners=["ec2emu"], Filters=[{"Name": "name", "Values": ["ec2emu-tiny-*"]}])
    return images["Images"][0]["ImageId"]


def fast_waiter(ec2, name: str):
    """boto3's waiter with a short poll (AWS's default is 15 s)."""
    waiter = ec2.get_waiter(name)
    return lambda **kw: waiter.wait(WaiterConfig={"Delay": 0.2, "MaxAttempts": 100}, **kw)
