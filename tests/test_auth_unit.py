"""Unit tests for api.auth: requests are signed by botocore's own signers and
fed to verify_request the way the HTTP layer would."""
from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from unittest import mock
from urllib.parse import parse_qsl, urlsplit

import botocore.auth
import pytest
from botocore.auth import SigV2Auth, SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from api.auth import AuthError, Principal, verify_request
from emulator.errors import EC2Error

AK = "AKIAIOSFODNN7EXAMPLE"
SK = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
URL = "http://127.0.0.1:8773/"
FORM = {"Action": "DescribeRegions", "Version": "2016-11-15"}
GET_PARAMS = {
    "Action": "DescribeInstances",
    "Version": "2016-11-15",
    "Filter.1.Name": "tag:Name",
    "Filter.1.Value.1": "a b+c~d/e*f=g&h",
    "Filter.2.Name": "description",
    "Filter.2.Value.1": "caf\u00e9 \u2713",
}
CREDS = Credentials(AK, SK)
WRONG = Credentials(AK, "not-the-right-secret-key/AAAAAAAAAAAAAAAAAAAA")
UNKNOWN = Credentials("AKIAUNKNOWNUNKNOWN00", SK)


def secret_for(access_key: str) -> str | None:
    return {AK: SK}.get(access_key)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class SigV2SHA1Auth(SigV2Auth):
    """botocore's SigV2 signer, but with SignatureMethod=HmacSHA1 (as libcloud/boto2 may use)."""

    def calc_signature(self, request, params):
        params["SignatureMethod"] = "HmacSHA1"
        with mock.patch.object(botocore.auth, "sha256", hashlib.sha1):
            return super().calc_signature(request, params)


def post_request(data=None, headers=None) -> AWSRequest:
    return AWSRequest(
        method="POST", url=URL, data=dict(FORM if data is None else data),
        headers=dict({"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
                     **(headers or {})))


def get_request(params=None) -> AWSRequest:
    return AWSRequest(method="GET", url=URL, params=dict(GET_PARAMS if params is None else params))


def v4(req, creds=CREDS, region="us-east-1"):
    SigV4Auth(creds, "ec2", region).add_auth(req)
    return req.prepare()


def v4q(req, creds=CREDS, region="us-east-1", expires=300):
    SigV4QueryAuth(creds, "ec2", region, expires=expires).add_auth(req)
    return req.prepare()


def v2(req, creds=CREDS, signer=SigV2Auth):
    signer(creds).add_auth(req)
    return req.prepare()


def wire(prepared):
    """What the HTTP layer hands to verify_request for a prepared botocore request."""
    split = urlsplit(prepared.url)
    headers = {k.lower(): v for k, v in prepared.headers.items()}
    body = prepared.body or b""
    if isinstance(body, str):
        body = body.encode("utf-8")
    form = dict(parse_qsl(split.query, keep_blank_values=True))
    if body and headers.get("content-type", "").startswith("application/x-www-form-urlencoded") \
            or (prepared.method == "POST" and body and "content-type" not in headers):
        form.update(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    return dict(method=prepared.method, host=headers.get("host", split.netloc),
                path=split.path or "/", raw_query=split.query, headers=headers,
                body=body, form=form)


def verify(prepared, now=None, **override):
    args = wire(prepared)
    args.update(override)
    return verify_request(secret_for=secret_for, now=now or utcnow(), **args)


def expect(code, status, prepared, **kw):
    with pytest.raises(EC2Error) as ei:  # AuthError, or the parameter errors of SigV2
        verify(prepared, **kw)
    assert ei.value.code == code, (ei.value.code, ei.value.message)
    assert ei.value.status == status
    return ei.value


# ----------------------------------------------------------------------------- SigV4 header

def test_v4_header_post_valid():
    p = v4(post_request())
    assert "Authorization" in p.headers
    assert verify(p) == Principal(AK, "us-east-1")


def test_v4_header_get_with_query_valid():
    p = v4(get_request())
    assert "+" in urlsplit(p.url).query  # botocore puts spaces on the wire as '+'
    assert verify(p) == Principal(AK, "us-east-1")


def test_v4_region_from_scope():
    assert verify(v4(post_request(), region="eu-west-1")).region == "eu-west-1"
    assert verify(v4(get_request(), region="ap-southeast-2")).region == "ap-southeast-2"


class SigV4UnsignedUndeclared(SigV4Auth):
    """Signs UNSIGNED-PAYLOAD without the x-amz-content-sha256 header that declares it."""

    def payload(self, request):
        return "UNSIGNED-PAYLOAD"


def unsigned_payload(url=URL, data=None):
    """A header-signed POST whose payload hash is UNSIGNED-PAYLOAD: its body is signed by no one."""
    req = AWSRequest(method="POST", url=url, data=data, headers={
        "Content-Type": "application/x-www-form-urlencoded; charset=utf-8"} if data else {})
    req.context["payload_signing_enabled"] = False
    return v4(req)


def test_v4_unsigned_payload_header_counts_no_body_parameters():
    """UNSIGNED-PAYLOAD leaves the body unsigned: a form body's parameters are refused (they were
    accepted once); the same signature over parameters in the query string, no body, is served."""
    p = unsigned_payload(data=dict(FORM))
    assert p.headers["X-Amz-Content-SHA256"] == "UNSIGNED-PAYLOAD"
    assert "body is not signed" in expect("IncompleteSignature", 400, p).message
    query = URL + "?Action=DescribeRegions&Version=2016-11-15"
    assert verify(unsigned_payload(url=query)) == Principal(AK, "us-east-1")
    # undeclared: a signature over UNSIGNED-PAYLOAD with no header saying so
    req = AWSRequest(method="POST", url=URL, data=dict(FORM),
                     headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    SigV4UnsignedUndeclared(CREDS, "ec2", "us-east-1").add_auth(req)
    p = req.prepare()
    assert "X-Amz-Content-SHA256" not in p.headers
    expect("IncompleteSignature", 400, p)
    req = AWSRequest(method="POST", url=query)
    SigV4UnsignedUndeclared(CREDS, "ec2", "us-east-1").add_auth(req)
    assert verify(req.prepare()) == Principal(AK, "us-east-1")


def test_v4_unsigned_body_cannot_replace_the_signed_action():
    """The attack: Action=DescribeRegions signed in the query, Action=CreateKeyPair in an unsigned
    body (which the HTTP layer would merge over the query's): refused, whatever the body's type
    says it is, unless it is not a form at all."""
    p = unsigned_payload(url=URL + "?Action=DescribeRegions&Version=2016-11-15")
    body = b"Action=CreateKeyPair&KeyName=smuggled&Version=2016-11-15"
    form = {**wire(p)["form"], **dict(parse_qsl(body.decode()))}
    assert form["Action"] == "CreateKeyPair"
    assert verify(p) == Principal(AK, "us-east-1")  # as signed: no body
    headers = wire(p)["headers"]
    assert "content-type" not in headers and "content-type" not in p.headers["Authorization"]
    for content_type in ({"content-type": "application/x-www-form-urlencoded"}, {}):
        expect("IncompleteSignature", 400, p, body=body, form=form, headers={**headers, **content_type})
    octets = {**headers, "content-type": "application/octet-stream"}
    assert verify(p, body=b"\x00binary", headers=octets).access_key == AK


def test_v4_signed_body_declared_in_capitals():
    """A body signed under its hash in capitals is still signed: its parameters count."""
    body = b"Action=DescribeRegions&Version=2016-11-15"
    p = v4(post_request(headers={"X-Amz-Content-SHA256": hashlib.sha256(body).hexdigest().upper()}))
    assert verify(p) == Principal(AK, "us-east-1")


def test_v4_declared_content_sha256_must_match_body():
    body = b"Action=DescribeRegions&Version=2016-11-15"
    p = v4(post_request(headers={"X-Amz-Content-SHA256": hashlib.sha256(body).hexdigest()}))
    assert verify(p) == Principal(AK, "us-east-1")
    expect("SignatureDoesNotMatch", 403, p, body=b"Action=TerminateInstances&Version=2016-11-15")


def test_v4_date_header_instead_of_x_amz_date():
    p = v4(post_request(headers={"Date": "placeholder"}))
    assert "X-Amz-Date" not in p.headers and "Date" in p.headers
    assert verify(p) == Principal(AK, "us-east-1")


def test_v4_signed_header_whitespace_is_trimmed():
    p = v4(post_request(headers={"X-Custom": "  a   b\t c  "}))
    assert "x-custom" in p.headers["Authorization"]
    assert verify(p) == Principal(AK, "us-east-1")
    expect("SignatureDoesNotMatch", 403, p,
           headers={**wire(p)["headers"], "x-custom": "a b d"})


def test_v4_wrong_secret():
    expect("SignatureDoesNotMatch", 403, v4(post_request(), creds=WRONG))


def test_v4_unknown_key():
    err = expect("AuthFailure", 401, v4(post_request(), creds=UNKNOWN))
    assert err.message == "AWS was not able to validate the provided access credentials"


def test_v4_tampered_body():
    p = v4(post_request())
    expect("SignatureDoesNotMatch", 403, p, body=b"Action=DescribeRegions&Version=2016-11-16")


def test_v4_tampered_query_path_method_host():
    p = v4(get_request())
    q = wire(p)["raw_query"]
    expect("SignatureDoesNotMatch", 403, p, raw_query=q.replace("tag%3AName", "tag%3AOwner"))
    expect("SignatureDoesNotMatch", 403, p, raw_query=q + "&DryRun=true")
    expect("SignatureDoesNotMatch", 403, p, path="/other")
    expect("SignatureDoesNotMatch", 403, p, method="POST")
    expect("SignatureDoesNotMatch", 403, p, host="127.0.0.1:9999")


def test_v4_host_argument_used_when_header_dict_lacks_host():
    p = v4(post_request())
    args = wire(p)
    assert "host" not in args["headers"]
    assert verify(p, host="127.0.0.1:8773") == Principal(AK, "us-east-1")


def test_v4_stale_and_future_date():
    p = v4(post_request())
    err = expect("RequestExpired", 400, p, now=utcnow() + timedelta(minutes=20))
    assert err.message == "Request has expired."
    expect("RequestExpired", 400, p, now=utcnow() - timedelta(minutes=20))
    assert verify(p, now=utcnow() + timedelta(minutes=14)) == Principal(AK, "us-east-1")


@pytest.mark.parametrize("auth, fragment", [
    ("AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20260101/us-east-1/ec2/aws4_request, "
     "SignedHeaders=host;x-amz-date", "Signature"),
    ("AWS4-HMAC-SHA256 SignedHeaders=host;x-amz-date, Signature=abcd", "Credential"),
    ("AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20260101/us-east-1/aws4_request, "
     "SignedHeaders=host;x-amz-date, Signature=abcd", "5 slash-delimited"),
    ("AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/{d}/us-east-1/s3/aws4_request, "
     "SignedHeaders=host;x-amz-date, Signature=abcd", "service"),
    ("AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/{d}/us-east-1/ec2/aws5_request, "
     "SignedHeaders=host;x-amz-date, Signature=abcd", "terminator"),
    ("AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/19990101/us-east-1/ec2/aws4_request, "
     "SignedHeaders=host;x-amz-date, Signature=abcd", "Date in Credential scope"),
    ("AWS AKIAIOSFODNN7EXAMPLE:c2lnbmF0dXJl", "Unsupported Authorization Type"),
    ("AWS4-HMAC-SHA256 garbage", "name=value"),
])
def test_v4_malformed_authorization(auth, fragment):
    p = v4(post_request())
    headers = wire(p)["headers"]
    headers["authorization"] = auth.format(d=headers["x-amz-date"][:8])
    err = expect("IncompleteSignature", 400, p, headers=headers)
    assert fragment in err.message


def test_v4_missing_date_header():
    p = v4(post_request())
    headers = {k: v for k, v in wire(p)["headers"].items() if k != "x-amz-date"}
    err = expect("IncompleteSignature", 400, p, headers=headers)
    assert "X-Amz-Date" in err.message


# ----------------------------------------------------------------------------- SigV4 presigned

def test_v4_presigned_get_valid():
    p = v4q(get_request(), expires=300)
    assert "X-Amz-Signature=" in p.url and "Authorization" not in p.headers
    assert verify(p) == Principal(AK, "us-east-1")


def test_v4_presigned_post_form_moved_to_query_valid():
    p = v4q(post_request(), region="eu-west-1")
    assert "Action=DescribeRegions" in urlsplit(p.url).query
    assert verify(p) == Principal(AK, "eu-west-1")


def test_v4_presigned_expiry():
    p = v4q(get_request(), expires=60)
    assert verify(p, now=utcnow() + timedelta(seconds=30)).access_key == AK
    err = expect("RequestExpired", 400, p, now=utcnow() + timedelta(minutes=2))
    assert err.message == "Request has expired."
    # A long-lived presign stays valid beyond the 15 minute header skew window.
    long = v4q(get_request(), expires=3600)
    assert verify(long, now=utcnow() + timedelta(minutes=30)).access_key == AK
    expect("RequestExpired", 400, long, now=utcnow() + timedelta(minutes=61))
    expect("RequestExpired", 400, long, now=utcnow() - timedelta(minutes=20))


def test_v4_presigned_wrong_secret_unknown_key_tamper():
    expect("SignatureDoesNotMatch", 403, v4q(get_request(), creds=WRONG))
    expect("AuthFailure", 401, v4q(get_request(), creds=UNKNOWN))
    p = v4q(get_request())
    q = wire(p)["raw_query"]
    expect("SignatureDoesNotMatch", 403, p, raw_query=q.replace("DescribeInstances", "RunInstances"))
    expect("SignatureDoesNotMatch", 403, p, raw_query=q.replace("X-Amz-Expires=300", "X-Amz-Expires=900"))


def test_v4_presigned_malformed():
    p = v4q(get_request())
    q = wire(p)["raw_query"]
    no_sig = "&".join(x for x in q.split("&") if not x.startswith("X-Amz-Signature="))
    assert "X-Amz-Signature" in expect("IncompleteSignature", 400, p, raw_query=no_sig).message
    bad_cred = q.replace("%2Fec2%2F", "%2Fs3%2F")
    expect("IncompleteSignature", 400, p, raw_query=bad_cred)


def test_v4_presigned_literal_plus_in_query():
    """A client that sends a literal, unescaped '+' (signed as %2B) is still accepted."""
    p = v4q(get_request({"Action": "DescribeInstances", "Version": "2016-11-15",
                         "Filter.1.Name": "tag:K", "Filter.1.Value.1": "a+b"}))
    q = wire(p)["raw_query"]
    assert "a%2Bb" in q
    assert verify(p, raw_query=q.replace("a%2Bb", "a+b")).access_key == AK


# ----------------------------------------------------------------------------- SigV2

@pytest.mark.parametrize("signer, method", [(SigV2Auth, "HmacSHA256"), (SigV2SHA1Auth, "HmacSHA1")])
def test_v2_post_valid(signer, method):
    p = v2(post_request(), signer=signer)
    args = wire(p)
    assert args["form"]["SignatureMethod"] == method and args["form"]["SignatureVersion"] == "2"
    assert verify(p) == Principal(AK, None)


@pytest.mark.parametrize("signer", [SigV2Auth, SigV2SHA1Auth])
def test_v2_get_valid(signer):
    p = v2(get_request(), signer=signer)
    assert "Signature=" in p.url
    assert verify(p) == Principal(AK, None)


@pytest.mark.parametrize("signer", [SigV2Auth, SigV2SHA1Auth])
def test_v2_wrong_secret_unknown_key(signer):
    expect("SignatureDoesNotMatch", 403, v2(post_request(), creds=WRONG, signer=signer))
    expect("AuthFailure", 401, v2(post_request(), creds=UNKNOWN, signer=signer))


def test_v2_tampered_params_host_path():
    p = v2(post_request())
    args = wire(p)
    expect("SignatureDoesNotMatch", 403, p, form={**args["form"], "Version": "2014-01-01"})
    expect("SignatureDoesNotMatch", 403, p, form={**args["form"], "DryRun": "true"})
    expect("SignatureDoesNotMatch", 403, p, host="127.0.0.1:9999")
    expect("SignatureDoesNotMatch", 403, p, path="/services/Eucalyptus")
    expect("SignatureDoesNotMatch", 403, p, method="GET")
    # Host comparison is case-insensitive (lower-cased host in the string to sign).
    assert verify(p, host="127.0.0.1:8773".upper()).access_key == AK


def test_v2_stale_timestamp():
    p = v2(post_request())
    err = expect("RequestExpired", 400, p, now=utcnow() + timedelta(minutes=20))
    assert err.message == "Request has expired."
    expect("RequestExpired", 400, p, now=utcnow() - timedelta(minutes=20))


def _v2_custom(params: dict, creds=CREDS, path="/"):
    """Sign arbitrary SigV2 params (e.g. other Timestamp spellings) with botocore's calc_signature."""
    req = AWSRequest(method="GET", url="http://127.0.0.1:8773" + path)
    params = {"AWSAccessKeyId": creds.access_key, "SignatureVersion": "2",
              "SignatureMethod": "HmacSHA256", **params}
    _, sig = SigV2Auth(creds).calc_signature(req, params)
    params["Signature"] = sig
    req.params = params
    return req.prepare()


@pytest.mark.parametrize("fmt", ["%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S.000Z",
                                 "%Y-%m-%dT%H:%M:%S+00:00"])
def test_v2_timestamp_formats(fmt):
    p = _v2_custom({**FORM, "Timestamp": utcnow().strftime(fmt)})
    assert verify(p) == Principal(AK, None)
    expect("RequestExpired", 400, p, now=utcnow() + timedelta(minutes=20))


def test_v2_expires_param():
    future = (utcnow() + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    p = _v2_custom({**FORM, "Expires": future})
    assert verify(p) == Principal(AK, None)
    expect("RequestExpired", 400, p, now=utcnow() + timedelta(minutes=6))
    past = (utcnow() - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    expect("RequestExpired", 400, _v2_custom({**FORM, "Expires": past}))


def test_v2_eucalyptus_style_path():
    p = _v2_custom({**FORM, "Timestamp": utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")},
                   path="/services/Eucalyptus")
    assert wire(p)["path"] == "/services/Eucalyptus"
    assert verify(p) == Principal(AK, None)


def test_v2_signature_version_must_be_2():
    ts = utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")
    p = _v2_custom({**FORM, "Timestamp": ts, "SignatureVersion": "1"})
    err = expect("AuthFailure", 401, p)
    assert "SignatureVersion" in err.message


# ----------------------------------------------------------------------------- no auth

def test_no_auth_at_all():
    req = post_request()
    p = req.prepare()
    err = expect("MissingAuthenticationToken", 401, p)
    assert err.message == ("The request must contain either a valid (registered) AWS access "
                           "key ID or X.509 certificate.")
    expect("MissingAuthenticationToken", 401, get_request().prepare())


def test_two_mechanisms_rejected():
    p = v4(post_request())
    args = wire(p)
    expect("IncompleteSignature", 400, p,
           form={**args["form"], "AWSAccessKeyId": AK, "Signature": "x"})


# ----------------------------------------------------------------------------- the rarer paths

def test_v4_presigned_expires_must_be_a_small_integer():
    p = v4q(get_request())
    q = wire(p)["raw_query"]
    for bad, words in (("abc", "non-negative integer"), ("-5", "non-negative integer"),
                       ("604801", "less than a week")):
        err = expect("IncompleteSignature", 400, p, raw_query=q.replace("X-Amz-Expires=300", f"X-Amz-Expires={bad}"))
        assert words in err.message, err.message


def test_v4_parameters_in_the_body_are_refused():
    p = v4q(get_request())
    args = wire(p)
    err = expect("IncompleteSignature", 400, p, raw_query="", form={**FORM, **{
        k: v for k, v in args["form"].items() if k.startswith("X-Amz-")}})
    assert "not the request body" in err.message


def _ts() -> str:
    return utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")


def test_v2_parameter_faults():
    # No SignatureVersion, an unknown SignatureMethod: AuthFailure naming what is supported.
    p = _v2_custom({**FORM, "Timestamp": _ts()})
    form = wire(p)["form"]
    err = expect("AuthFailure", 401, p, form={k: v for k, v in form.items() if k != "SignatureVersion"})
    assert "SignatureVersion" in err.message
    err = expect("AuthFailure", 401, p, form={**form, "SignatureMethod": "HmacMD5"})
    assert "HmacSHA256 or HmacSHA1" in err.message
    # Timestamp and Expires together; neither; one that is not a date.
    expect("InvalidParameterCombination", 400, p, form={**form, "Expires": _ts()})
    expect("MissingParameter", 400, p, form={k: v for k, v in form.items() if k != "Timestamp"})
    err = expect("InvalidParameterValue", 400, p, form={**form, "Timestamp": "yesterday"})
    assert "Timestamp" in err.message
    expect("InvalidParameterValue", 400, p,
           form={**{k: v for k, v in form.items() if k != "Timestamp"}, "Expires": "soon"})


def test_v2_host_with_a_default_port_and_a_plus_read_as_a_space():
    """A proxy that adds ':80' to Host, and a client that sent the signature's '+' unescaped
    (form decoding makes it a space): both still verify; a wrong port does not."""
    when = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)  # fixed: the same signatures every run
    for attempt in range(1000):  # find a signature that starts with '+' (it once lost it)
        params = {"AWSAccessKeyId": AK, "SignatureVersion": "2", "SignatureMethod": "HmacSHA256",
                  **FORM, "Timestamp": "2026-11-30T12:00:00Z", "Nonce": str(attempt)}
        _, sig = SigV2Auth(CREDS).calc_signature(AWSRequest(method="GET", url="http://ec2.example/"), params)
        if sig.startswith("+"):
            break
    assert sig.startswith("+")
    form = {**params, "Signature": sig.replace("+", " ")}
    ok = verify_request(method="GET", host="ec2.example:80", path="/", raw_query="", headers={},
                        body=b"", form=form, secret_for=secret_for, now=when)
    assert ok.access_key == AK
    with pytest.raises(AuthError) as ei:
        verify_request(method="GET", host="ec2.example:81", path="/", raw_query="", headers={},
                       body=b"", form=form, secret_for=secret_for, now=when)
    assert ei.value.code == "SignatureDoesNotMatch"


# ------------------------------------------------- requests AWS refuses that once passed here

class SigV4WithoutHost(SigV4Auth):
    """botocore's signer, but leaving `host` out of SignedHeaders (a signature for any endpoint)."""

    def headers_to_sign(self, request):
        headers = super().headers_to_sign(request)
        del headers["host"]
        return headers


class SigV4QueryWithoutHost(SigV4QueryAuth):
    def headers_to_sign(self, request):
        headers = super().headers_to_sign(request)
        del headers["host"]
        return headers


HOST_UNSIGNED = "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization."


def test_v4_host_must_be_signed():
    req = post_request()
    SigV4WithoutHost(CREDS, "ec2", "us-east-1").add_auth(req)
    p = req.prepare()
    assert "SignedHeaders=content-type;x-amz-date," in p.headers["Authorization"]
    assert expect("IncompleteSignature", 400, p).message == HOST_UNSIGNED
    req = AWSRequest(method="GET", url=URL, params=dict(FORM), headers={"X-Custom": "1"})
    SigV4QueryWithoutHost(CREDS, "ec2", "us-east-1", expires=300).add_auth(req)
    p = req.prepare()
    assert wire(p)["form"]["X-Amz-SignedHeaders"] == "x-custom"
    assert expect("IncompleteSignature", 400, p).message == HOST_UNSIGNED


def presigned_unsigned_payload(params=FORM):
    """A presigned GET URL whose payload hash is UNSIGNED-PAYLOAD (botocore's for HTTPS with
    payload signing off; over plain HTTP it signs the empty body). The scheme is not signed."""
    req = AWSRequest(method="GET", url="https://127.0.0.1:8773/", params=dict(params))
    req.context["payload_signing_enabled"] = False
    SigV4QueryAuth(CREDS, "ec2", "us-east-1", expires=300).add_auth(req)
    return req.prepare()


def test_v4_presigned_refuses_parameters_in_the_body():
    """A presigned URL (UNSIGNED-PAYLOAD) signs no body: a form body's parameters, which would
    override the signed ones (another Action), are refused; the URL alone still works."""
    p = presigned_unsigned_payload()
    assert verify(p) == Principal(AK, "us-east-1")
    body = b"Action=CreateKeyPair&KeyName=smuggled&Version=2016-11-15"
    form = {**wire(p)["form"], **dict(parse_qsl(body.decode()))}
    for headers in ({"content-type": "application/x-www-form-urlencoded"}, {}):
        err = expect("IncompleteSignature", 400, p, body=body, form=form, headers=headers)
        assert "body" in err.message
    # a body that is not a form carries no parameters (the HTTP layer does not read it as one)
    assert verify(p, body=b"\x00binary", headers={"content-type": "application/octet-stream"}).access_key == AK


@pytest.mark.parametrize("host", ["ec2.us-east-1.amazonaws.com", "ec2.us-east-1.amazonaws.com:8773",
                                  "ec2-fips.us-east-1.amazonaws.com", "ec2.us-east-1.api.aws"])
def test_v4_scope_must_name_the_region_of_a_regional_host(host):
    url = f"http://{host}/"
    for presign in (False, True):
        def signed(region):
            if presign:
                return v4q(AWSRequest(method="GET", url=url, params=dict(FORM)), region=region)
            return v4(AWSRequest(method="POST", url=url, data=dict(FORM), headers={
                "Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}), region=region)
        assert verify(signed("us-east-1"), host=host) == Principal(AK, "us-east-1")
        err = expect("AuthFailure", 401, signed("eu-west-1"), host=host)
        assert err.message == "Credential should be scoped to a valid region, not 'eu-west-1'."


@pytest.mark.parametrize("host", ["127.0.0.1:8773", "ec2.amazonaws.com", "localhost", "ec2.internal.example"])
def test_v4_hosts_without_a_region_take_the_scopes(host):
    req = AWSRequest(method="POST", url=f"http://{host}/", data=dict(FORM),
                     headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    assert verify(v4(req, region="eu-west-1"), host=host).region == "eu-west-1"
