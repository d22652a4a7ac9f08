"""The wire itself: raw HTTP against a real server, as AWS answers it."""
import datetime
import http.client
import subprocess
import urllib.parse
import xml.etree.ElementTree as ET

import botocore.auth
import botocore.credentials
from botocore.awsrequest import AWSRequest

from .helpers import expect_error, unique
from .server import ACCESS_KEY, SECRET_KEY

NS = "{http://ec2.amazonaws.com/doc/2016-11-15/}"


def send(server, params: dict, *, method="POST", signer="v4", secret=SECRET_KEY, key=ACCESS_KEY,
         region="us-east-1", when=None):
    url = server.endpoint + "/"
    if method == "GET":
        req = AWSRequest(method="GET", url=url, params=dict(params))
    else:
        req = AWSRequest(method="POST", url=url, data=dict(params),
                         headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    creds = botocore.credentials.Credentials(key, secret)
    if signer == "v4":
        auth = botocore.auth.SigV4Auth(creds, "ec2", region)
        if when:  # sign with a wrong clock
            real = botocore.auth.get_current_datetime
            botocore.auth.get_current_datetime = lambda: when
            try:
                auth.add_auth(req)
            finally:
                botocore.auth.get_current_datetime = real
        else:
            auth.add_auth(req)
    elif signer == "v4-presign":
        botocore.auth.SigV4QueryAuth(creds, "ec2", region, expires=300).add_auth(req)
    elif signer == "v2":
        botocore.auth.SigV2Auth(creds).add_auth(req)
    prepared = req.prepare()
    parsed = urllib.parse.urlsplit(prepared.url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    path = parsed.path + ("?" + parsed.query if parsed.query else "")
    conn.request(prepared.method, path, body=prepared.body, headers=dict(prepared.headers))
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


def wire_code(data: bytes) -> str:
    """The error code of a raw XML error response (the shape checked too)."""
    root = ET.fromstring(data)
    assert root.tag == "Response" and root.find("RequestID") is not None
    return root.find("Errors/Error/Code").text


def test_response_shape_namespace_and_request_id(server):
    status, data = send(server, {"Action": "DescribeAvailabilityZones", "Version": "2016-11-15"})
    assert status == 200
    assert b'<DescribeAvailabilityZonesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">' in data
    root = ET.fromstring(data)
    assert list(root)[0].tag == NS + "requestId"
    items = root.findall(f"{NS}availabilityZoneInfo/{NS}item")
    assert items and items[0].find(NS + "zoneName").text == "us-east-1a"


def test_get_and_any_version_and_v2_and_presigned(server):
    for signer, method in (("v4", "GET"), ("v2", "POST"), ("v2", "GET"), ("v4-presign", "GET")):
        status, data = send(server, {"Action": "DescribeRegions", "Version": "2014-10-01"},
                            method=method, signer=signer)
        assert status == 200, (signer, method, data)
        assert b"<regionInfo><item>" in data


def test_auth_failures(server):
    status, data = send(server, {"Action": "DescribeRegions", "Version": "2016-11-15"}, secret="wrong" * 8)
    assert status == 403 and wire_code(data) == "SignatureDoesNotMatch"
    status, data = send(server, {"Action": "DescribeRegions", "Version": "2016-11-15"}, key="AKIANOSUCHKEY0000000")
    assert status == 401 and wire_code(data) == "AuthFailure"
    status, data = send(server, {"Action": "DescribeRegions", "Version": "2016-11-15"}, signer=None)
    assert status == 401 and wire_code(data) == "MissingAuthenticationToken"
    stale = datetime.datetime.utcnow() - datetime.timedelta(minutes=20)
    status, data = send(server, {"Action": "DescribeRegions", "Version": "2016-11-15"}, when=stale)
    assert status == 400 and wire_code(data) == "RequestExpired"
    status, data = send(server, {"Action": "DescribeRegions", "Version": "2016-11-15"}, signer="v2",
                        secret="wrong" * 8)
    assert status == 403 and wire_code(data) == "SignatureDoesNotMatch"


def test_boto3_wrong_secret(server):
    bad = server.client(secret_key="not-the-secret")
    expect_error("SignatureDoesNotMatch", bad.describe_regions)


def test_protocol_errors(server):
    cases = [
        ({"Action": "NoSuchAction"}, "InvalidAction"),
        ({"Version": "2016-11-15"}, "MissingAction"),
        ({"Action": "RunInstances", "ImageId": "ami-12345678", "MinCount": "abc", "MaxCount": "1"},
         "InvalidParameterValue"),
        ({"Action": "RunInstances", "ImageId": "ami-12345678", "MaxCount": "1"}, "MissingParameter"),
        ({"Action": "RunInstances", "ImageId": "ami-12345678", "MinCount": "1", "MaxCount": "1",
          "InstanceType": "z9.mega"}, "InvalidParameterValue"),
        ({"Action": "DescribeInstances", "Bogus": "1"}, "UnknownParameter"),
        ({"Action": "DescribeInstances", "MaxResults": "1x"}, "InvalidParameterValue"),
        ({"Action": "DescribeInstances", "DryRun": "maybe"}, "InvalidParameterValue"),
    ]
    for params, code in cases:
        status, data = send(server, dict(params, Version="2016-11-15"))
        assert status == 400 and wire_code(data) == code, (params, data)


def test_unimplemented_operation_is_named(server):
    status, data = send(server, {"Action": "CreateFpgaImage", "Version": "2016-11-15",
                                 "InputStorageLocation.Bucket": "b", "InputStorageLocation.Key": "k"})
    assert status == 400 and wire_code(data) == "InvalidAction" and b"CreateFpgaImage" in data


def test_dry_run(server, ec2):
    status, data = send(server, {"Action": "DescribeInstances", "DryRun": "true", "Version": "2016-11-15"})
    assert status == 412 and wire_code(data) == "DryRunOperation"
    expect_error("DryRunOperation", ec2.describe_instances, DryRun=True)
    expect_error("DryRunOperation", ec2.create_key_pair, KeyName=unique("k"), DryRun=True)


def test_unknown_region_refused(server):
    bad = server.client(region="xx-nowhere-1")
    expect_error("AuthFailure", bad.describe_regions)


def test_aws_cli(server):
    env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
           "AWS_DEFAULT_REGION": "eu-west-1", "PATH": __import__("os").environ["PATH"],
           "HOME": "/tmp"}
    out = subprocess.run(["aws", "--endpoint-url", server.endpoint, "ec2", "describe-availability-zones",
                          "--query", "AvailabilityZones[].ZoneName", "--output", "text"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
    bad = subprocess.run(["aws", "--endpoint-url", server.endpoint, "ec2", "describe-instances",
                          "--instance-ids", "i-0123456789abcdef0"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "InvalidInstanceID.NotFound" in bad.stderr


def test_a_bare_list_member_reads_as_its_first_item(server, ec2):
    """libcloud's DescribeKeyPairs sends KeyName=NAME (no .1): AWS reads it as KeyName.1."""
    name = unique("bare")
    ec2.create_key_pair(KeyName=name)
    for signer in ("v4", "v2"):
        status, data = send(server, {"Action": "DescribeKeyPairs", "Version": "2016-11-15", "KeyName": name},
                            signer=signer)
        assert status == 200, data
        names = [e.text for e in ET.fromstring(data).iter(NS + "keyName")]
        assert names == [name]
    status, data = send(server, {"Action": "DescribeKeyPairs", "Version": "2016-11-15",
                                 "Filter.Name": "key-name", "Filter.Value": name})
    assert status == 200 and [e.text for e in ET.fromstring(data).iter(NS + "keyName")] == [name]
