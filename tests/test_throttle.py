"""AWS's request throttling (off by default): token buckets per account, region and API, and
boto3's own retries recover from RequestLimitExceeded."""
import pytest
from botocore.exceptions import ClientError

from api.throttle import MUTATING, NON_MUTATING, UNFILTERED, Throttle, bucket_of
from emulator.errors import RequestLimitExceeded

from .helpers import tiny_image
from .server import Server


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_buckets_and_refill():
    assert bucket_of("DescribeInstances", {"Filter.1.Name": "x"}) == NON_MUTATING
    assert bucket_of("DescribeInstances", {}) == UNFILTERED
    assert bucket_of("CreateTags", {}) == MUTATING
    assert bucket_of("RunInstances", {}) == (5, 2)
    clock = Clock()
    t = Throttle(clock)
    for _ in range(5):
        t.take("a", "r", "RunInstances", {})
    with pytest.raises(RequestLimitExceeded):
        t.take("a", "r", "RunInstances", {})
    t.take("b", "r", "RunInstances", {})  # another account, another bucket
    t.take("a", "eu-west-1", "RunInstances", {})  # another region too
    clock.now += 0.5  # one token back (2 a second)
    t.take("a", "r", "RunInstances", {})
    with pytest.raises(RequestLimitExceeded):
        t.take("a", "r", "RunInstances", {})
    clock.now += 100  # never more than the bucket holds
    for _ in range(5):
        t.take("a", "r", "RunInstances", {})
    with pytest.raises(RequestLimitExceeded):
        t.take("a", "r", "RunInstances", {})


def test_boto3_retries_recover(tmp_path):
    srv = Server(tmp_path / "state", {"EC2EMU_THROTTLE": "true"}).start()
    try:
        impatient = srv.client()  # max_attempts 1: sees the throttle
        image = tiny_image(impatient)
        codes = []
        for _ in range(30):  # far faster than 2 a second
            try:
                impatient.run_instances(ImageId=image, MinCount=1, MaxCount=1)
            except ClientError as exc:
                codes.append((exc.response["Error"]["Code"], exc.response["ResponseMetadata"]["HTTPStatusCode"]))
        assert codes and set(codes) == {("RequestLimitExceeded", 503)}, codes
        patient = srv.client(retries={"mode": "standard", "max_attempts": 10})
        ids = [patient.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
               for _ in range(8)]
        assert len(set(ids)) == 8  # every one went through, after retries
    finally:
        srv.stop()
