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


def raw(server, method: str, target: str, body: bytes | None = None, headers: dict | None = None):
    """An unsigned request as sent: (status, headers lower-cased, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        conn.request(method, target, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def xml_error(headers: dict, data: bytes) -> tuple[str, str]:
    """(code, message) of an EC2 XML error whose request id is the header's too."""
    assert headers["content-type"].startswith("text/xml"), headers
    root = ET.fromstring(data)
    assert root.tag == "Response" and root.find("RequestID").text == headers["x-amzn-requestid"]
    return root.find("Errors/Error/Code").text, root.find("Errors/Error/Message").text


def test_methods_other_than_get_and_post_answer_ec2_xml(server):
    for method in ("PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"):
        status, headers, data = raw(server, method, "/?Action=DescribeRegions")
        assert status == 405 and headers["allow"] == "GET, POST", (method, status, headers, data)
        code, message = xml_error(headers, data)
        assert code == "UnsupportedOperation" and method in message
    status, headers, data = raw(server, "HEAD", "/?Action=DescribeRegions")
    assert status == 405 and headers["x-amzn-requestid"] and headers["content-length"] == "0" and data == b""
    # a method HTTP itself does not know fails in the server's parser, before the application
    status, headers, data = raw(server, "FOO", "/")
    assert status == 400 and xml_error(headers, data)[0] == "InvalidRequest"


def test_a_url_too_long_to_read_answers_ec2_xml(server):
    """httptools cannot read a request target over 65535 bytes: refused, in EC2's XML."""
    status, headers, data = raw(server, "GET", "/?Action=DescribeRegions&X=" + "a" * 70000)
    assert status == 414, (status, data[:300])
    code, message = xml_error(headers, data)
    assert code == "InvalidRequest" and "POST" in message
    status, _, data = raw(server, "GET", "/?Action=DescribeRegions&X=" + "a" * 60000)
    assert status == 401 and wire_code(data) == "MissingAuthenticationToken"  # read, then refused unsigned


def test_huge_values_are_not_echoed_whole(server):
    huge = "i-" + "x" * 10_000_000
    status, data = send(server, {"Action": "DescribeInstances", "Version": "2016-11-15", "InstanceId.1": huge})
    assert status == 400 and wire_code(data) == "InvalidInstanceID.Malformed"
    assert len(data) < 2000 and b"xxxxxxxxxx" in data
    status, data = send(server, {"Action": "DescribeInstances", "Version": "2016-11-15", "MaxResults": "9" * 10_000})
    assert status == 400 and wire_code(data) == "InvalidParameterValue" and len(data) < 2000


def test_more_instance_ids_than_the_database_binds(server):
    """260,000 InstanceId.N once hit SQLite's 'too many SQL variables' (a 500)."""
    ids = {f"InstanceId.{n}": f"i-{n:017x}" for n in range(1, 260_001)}
    status, data = send(server, {"Action": "DescribeInstances", "Version": "2016-11-15", **ids})
    assert status == 400 and wire_code(data) == "InvalidInstanceID.NotFound", data[:500]
    assert len(data) < 2000  # the 260,000 missing ids are not all named


def send_prepared(server, prepared, body=None, headers: dict | None = None):
    """A request botocore signed (for whatever Host its URL names), sent to the test server."""
    parsed = urllib.parse.urlsplit(prepared.url)
    sent = {"Host": parsed.netloc, **dict(prepared.headers), **(headers or {})}
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request(prepared.method, parsed.path + ("?" + parsed.query if parsed.query else ""),
                     body=prepared.body if body is None else body, headers=sent)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


REGIONS_PARAMS = {"Action": "DescribeAvailabilityZones", "Version": "2016-11-15"}


CREDS = botocore.credentials.Credentials(ACCESS_KEY, SECRET_KEY)
FORM_HEADERS = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}


def test_a_signature_must_cover_host(server):
    """SignedHeaders without host: the same signature would do for any endpoint."""
    from .test_auth_unit import SigV4WithoutHost
    req = AWSRequest(method="POST", url=server.endpoint + "/", data=dict(REGIONS_PARAMS), headers=FORM_HEADERS)
    SigV4WithoutHost(CREDS, "ec2", "us-east-1").add_auth(req)
    status, data = send_prepared(server, req.prepare())
    assert status == 400 and wire_code(data) == "IncompleteSignature" and b"SignedHeader" in data


def test_a_presigned_url_counts_no_body_parameters(server, ec2):
    """A presigned URL (UNSIGNED-PAYLOAD) sent with a form body holding another Action: refused and
    nothing created (the body's parameters once overrode the signed ones); without a body, served."""
    name = unique("smuggled")
    req = AWSRequest(method="GET", url=f"https://127.0.0.1:{server.port}/", params=dict(REGIONS_PARAMS))
    req.context["payload_signing_enabled"] = False  # UNSIGNED-PAYLOAD (the scheme is not signed)
    botocore.auth.SigV4QueryAuth(CREDS, "ec2", "us-east-1", expires=300).add_auth(req)
    presigned = req.prepare()
    status, data = send_prepared(server, presigned, body=f"Action=CreateKeyPair&KeyName={name}".encode(),
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 400 and wire_code(data) == "IncompleteSignature", data
    assert ec2.describe_key_pairs(Filters=[{"Name": "key-name", "Values": [name]}])["KeyPairs"] == []
    status, data = send_prepared(server, presigned)
    assert status == 200 and b"<zoneName>us-east-1a</zoneName>" in data


def test_an_unsigned_payload_counts_no_body_parameters(server, ec2):
    """Header-signed with x-amz-content-sha256: UNSIGNED-PAYLOAD, Action=DescribeRegions in the
    signed query and Action=CreateKeyPair in the unsigned body: refused, no key pair made; the
    same request without the body is served."""
    name = unique("smuggled")
    req = AWSRequest(method="POST", url=f"https://127.0.0.1:{server.port}/?" + urllib.parse.urlencode(REGIONS_PARAMS))
    req.context["payload_signing_enabled"] = False  # UNSIGNED-PAYLOAD (over https: the scheme is not signed)
    botocore.auth.SigV4Auth(CREDS, "ec2", "us-east-1").add_auth(req)
    signed = req.prepare()
    assert signed.headers["X-Amz-Content-SHA256"] == "UNSIGNED-PAYLOAD"
    assert "content-length" not in signed.headers["Authorization"]
    body = f"Action=CreateKeyPair&KeyName={name}&Version=2016-11-15".encode()
    status, data = send_prepared(server, signed, body=body, headers={
        "Content-Type": "application/x-www-form-urlencoded", "Content-Length": str(len(body))})
    assert status == 400 and wire_code(data) == "IncompleteSignature", data
    assert ec2.describe_key_pairs(Filters=[{"Name": "key-name", "Values": [name]}])["KeyPairs"] == []
    status, data = send_prepared(server, signed)
    assert status == 200 and b"<zoneName>us-east-1a</zoneName>" in data


def test_a_regional_endpoint_refuses_another_regions_scope(server):
    """Host ec2.us-east-1.amazonaws.com with an eu-west-1 credential scope: refused (it was served
    in eu-west-1)."""
    for region, expected in (("us-east-1", 200), ("eu-west-1", 401)):
        req = AWSRequest(method="POST", url="http://ec2.us-east-1.amazonaws.com/", data=dict(REGIONS_PARAMS),
                         headers=FORM_HEADERS)
        botocore.auth.SigV4Auth(CREDS, "ec2", region).add_auth(req)
        status, data = send_prepared(server, req.prepare())
        assert status == expected, data
    assert wire_code(data) == "AuthFailure" and b"scoped to a valid region, not 'eu-west-1'" in data
