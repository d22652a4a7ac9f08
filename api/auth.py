"""Server-side verification of AWS request signatures, as EC2 does it.

Supported:

* Signature Version 4 in the ``Authorization`` header
  (``AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...``);
* Signature Version 4 presigned query strings (``X-Amz-Algorithm``,
  ``X-Amz-Credential``, ``X-Amz-Date``, ``X-Amz-Expires``,
  ``X-Amz-SignedHeaders``, ``X-Amz-Signature``);
* Signature Version 2 query/form parameters (``AWSAccessKeyId``,
  ``SignatureVersion=2``, ``SignatureMethod=HmacSHA256|HmacSHA1``,
  ``Timestamp`` or ``Expires``, ``Signature``) as sent by libcloud's
  EC2/Eucalyptus drivers, boto2, euca2ools and botocore's SigV2Auth.

``verify_request`` is pure (no I/O besides the ``secret_for`` callback) and is
meant to run on every request.  Callers should pass ``path`` and ``raw_query``
exactly as received on the wire (still percent-encoded); ``form`` is the merged,
decoded parameter map (query string + urlencoded POST body).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import Callable, Mapping
from urllib.parse import parse_qsl, quote, unquote_to_bytes

from emulator.errors import (AuthError, AuthFailure, IncompleteSignature, InvalidParameterCombination,
                             InvalidParameterValue, MissingAuthenticationToken, MissingParameter, RequestExpired,
                             SignatureDoesNotMatch)

__all__ = ["AuthError", "Principal", "verify_request"]  # AuthError: the base of its errors (emulator/errors.py)

SERVICE = "ec2"
SERVICES = (SERVICE, "sts")  # STS's GetCallerIdentity is answered on the same endpoint (api/sts.py)
ALGORITHM_V4 = "AWS4-HMAC-SHA256"
TERMINATOR = "aws4_request"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
MAX_SKEW = timedelta(minutes=15)
MAX_PRESIGN_EXPIRES = 7 * 24 * 3600  # 604800 s, AWS's upper bound

_ISO_EXAMPLE = "Expected an ISO 8601 date-time, e.g. 2026-11-22T03:00:00Z."

_RFC3986_SAFE = "-_.~"
_UNRESERVED_ONLY = re.compile(r"[A-Za-z0-9\-_.~]*").fullmatch


@dataclass(frozen=True)
class Principal:
    access_key: str
    region: str | None  # from the SigV4 credential scope; None for SigV2
    service: str = SERVICE  # from the SigV4 credential scope; SigV2 is EC2's


# --------------------------------------------------------------------------- helpers

def _utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(timezone.utc)
    if now.tzinfo is None:
        return now.replace(tzinfo=timezone.utc)
    return now


def _eq(computed: str, provided: str) -> bool:
    return hmac.compare_digest(computed.encode("ascii"),
                               provided.encode("utf-8", "replace"))


def _split_query(raw_query: str) -> list[tuple[str, str]]:
    """Split an undecoded query string into (raw key, raw value) pairs."""
    pairs = []
    if raw_query:
        for part in raw_query.split("&"):
            if part:
                k, _, v = part.partition("=")
                pairs.append((k, v))
    return pairs


def _decode_component(raw: str, plus_is_space: bool) -> str:
    if plus_is_space and "+" in raw:
        raw = raw.replace("+", " ")
    if "%" not in raw:
        return raw
    return unquote_to_bytes(raw).decode("utf-8", "surrogateescape")


def _aws_quote(value: str) -> str:
    """RFC 3986 percent-encoding: unreserved characters kept, space as %20."""
    return quote(value.encode("utf-8", "surrogateescape"), safe=_RFC3986_SAFE)


def _canonical_query_v4(pairs: list[tuple[str, str]], plus_is_space: bool) -> str:
    encoded = []
    for k, v in pairs:
        if k == "X-Amz-Signature":
            continue
        # Components made only of unreserved characters are already canonical.
        if not _UNRESERVED_ONLY(k):
            k = _aws_quote(_decode_component(k, plus_is_space))
            if k == "X-Amz-Signature":
                continue
        if not _UNRESERVED_ONLY(v):
            v = _aws_quote(_decode_component(v, plus_is_space))
        encoded.append((k, v))
    encoded.sort()
    return "&".join(f"{k}={v}" for k, v in encoded)


def _canonical_uri(path: str) -> str:
    """Non-S3 canonical URI: dot segments and empty segments removed, then URI-encoded
    (the wire path is encoded once more, as AWS SDKs do for non-S3 services)."""
    if not path:
        return "/"
    if "?" in path:  # tolerate callers passing the full request target
        path = path.split("?", 1)[0]
    if "//" in path or "/." in path:
        out: list[str] = []
        for seg in path.split("/"):
            if not seg or seg == ".":
                continue
            if seg == "..":
                if out:
                    out.pop()
            else:
                out.append(seg)
        norm = ("/" if path[0] == "/" else "") + "/".join(out)
        if path[-1] == "/" and out:
            norm += "/"
        path = norm or "/"
    return quote(path, safe="/~")


def _trimall(value: str) -> str:
    return " ".join(value.split())


@lru_cache(maxsize=1024)
def _signing_key(secret: str, datestamp: str, region: str, service: str) -> bytes:
    k = hmac.digest(("AWS4" + secret).encode("utf-8"), datestamp.encode("utf-8"), "sha256")
    k = hmac.digest(k, region.encode("utf-8"), "sha256")
    k = hmac.digest(k, service.encode("utf-8"), "sha256")
    return hmac.digest(k, TERMINATOR.encode("utf-8"), "sha256")


def _parse_amz_date(value: str) -> datetime | None:
    """ISO 8601 basic format, YYYYMMDD'T'HHMMSS'Z'."""
    if len(value) != 16 or value[8] != "T" or value[15] != "Z":
        return None
    digits = value[:8] + value[9:15]
    if not digits.isdigit() or not digits.isascii():
        return None
    try:
        return datetime(int(value[0:4]), int(value[4:6]), int(value[6:8]),
                        int(value[9:11]), int(value[11:13]), int(value[13:15]),
                        tzinfo=timezone.utc)
    except ValueError:
        return None


def _bad_amz_date(value: str) -> IncompleteSignature:
    return IncompleteSignature(f"Date must be in ISO-8601 'basic format'. Got '{value}'. "
                       "See http://en.wikipedia.org/wiki/ISO_8601")


def _parse_scope(credential: str, amz_date: str, date_source: str
                 ) -> tuple[str, str, str, str]:
    """Validate 'AKID/YYYYMMDD/region/service/aws4_request'; return its parts."""
    parts = credential.split("/")
    if len(parts) != 5:
        raise IncompleteSignature(
            "Credential must have exactly 5 slash-delimited elements, e.g. "
            f"keyid/date/region/service/term, got '{credential}'")
    access_key, datestamp, region, service, term = parts
    if not access_key:
        raise IncompleteSignature(f"Credential has an empty access key ID: '{credential}'")
    if term != TERMINATOR:
        raise IncompleteSignature("Credential should be scoped with a valid terminator: "
                          f"'{TERMINATOR}', not '{term}'.")
    if service not in SERVICES:
        raise IncompleteSignature(f"Credential should be scoped to correct service: '{SERVICE}'.")
    if not region:
        raise IncompleteSignature("Credential should be scoped to a valid region, not ''.")
    if datestamp != amz_date[:8]:
        raise IncompleteSignature(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of "
            f"date from HTTP: '{datestamp}' != '{amz_date[:8]}', from '{date_source}'.")
    return access_key, datestamp, region, service


# An AWS EC2 endpoint that names its region: ec2.eu-west-1.amazonaws.com, ec2-fips.us-east-1...,
# ec2.cn-north-1.amazonaws.com.cn, ec2.us-east-1.api.aws (a port may follow).
_REGIONAL_HOST = re.compile(r"ec2(?:-fips)?\.([a-z0-9-]+)\.(?:amazonaws\.com(?:\.cn)?|api\.aws)(?::\d+)?",
                            re.IGNORECASE)


def _check_scope_region(region: str, host: str) -> None:
    """A regional endpoint serves its own region only: a request signed for another one is
    refused there (not served in the scope's region)."""
    m = _REGIONAL_HOST.fullmatch(host.strip())
    if m and m.group(1).lower() != region:
        raise AuthFailure.region(region)


def _parse_authorization(value: str) -> tuple[str, str, str]:
    """Parse the SigV4 Authorization header; return (credential, signed_headers, signature)."""
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM_V4:
        raise IncompleteSignature(
            f"Unsupported Authorization Type: '{algorithm}'. Only {ALGORITHM_V4} "
            "(Signature Version 4) is accepted in the Authorization header.")
    fields: dict[str, str] = {}
    for item in rest.split(","):
        item = item.strip()
        if not item:
            continue
        name, eq, val = item.partition("=")
        if not eq:
            raise IncompleteSignature(
                f"Authorization header requires each component to be of the form "
                f"name=value; got '{item}'. Authorization={value}")
        fields[name.strip()] = val.strip()
    problems = [f"Authorization header requires '{name}' parameter."
                for name in ("Credential", "SignedHeaders", "Signature")
                if not fields.get(name)]
    if problems:
        raise IncompleteSignature(" ".join(problems) + f" Authorization={value}")
    return fields["Credential"], fields["SignedHeaders"], fields["Signature"]


def _signed_header_block(signed_headers: str, host: str,
                         headers: Mapping[str, str]) -> tuple[str, str]:
    names = signed_headers.lower().split(";")
    if "host" not in names:  # else the same signature would serve any endpoint
        raise IncompleteSignature("'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.")
    lines = []
    for name in names:
        if not name:
            raise IncompleteSignature(f"SignedHeaders is malformed: '{signed_headers}'")
        if name == "host":
            val = host if host else headers.get("host", "")
        else:
            val = headers.get(name, "")
        lines.append(f"{name}:{_trimall(val)}\n")
    return "".join(lines), ";".join(names)


def _verify_v4(method: str, path: str, canonical_headers: str, signed_names: str,
               query_pairs: list[tuple[str, str]], payload_hashes: tuple[str, ...],
               amz_date: str, scope: str, key: bytes, provided: str) -> str:
    """Try the candidate canonical requests; -> the payload hash of the one that matches
    ``provided``, or raise SignatureDoesNotMatch."""
    uri = _canonical_uri(path)
    raw_has_plus = any("+" in k or "+" in v for k, v in query_pairs)
    # '+' on the wire normally means space (form encoding; botocore's own GET
    # requests send it that way); fall back to a literal '+' only if present.
    plus_modes = (True, False) if raw_has_plus else (True,)
    head = f"{method.upper()}\n{uri}\n"
    tail = f"\n{canonical_headers}\n{signed_names}\n"
    for plus_is_space in plus_modes:
        cq = _canonical_query_v4(query_pairs, plus_is_space)
        for payload_hash in payload_hashes:
            creq = head + cq + tail + payload_hash
            sts = (f"{ALGORITHM_V4}\n{amz_date}\n{scope}\n"
                   + hashlib.sha256(creq.encode("utf-8", "surrogateescape")).hexdigest())
            sig = hmac.new(key, sts.encode("utf-8"), hashlib.sha256).hexdigest()
            if _eq(sig, provided):
                return payload_hash
    raise SignatureDoesNotMatch()


def _only_signed_parameters(payload_hash: str, headers: Mapping[str, str], body: bytes) -> None:
    """A signature whose payload hash is not the body's (UNSIGNED-PAYLOAD, STREAMING-..., as a
    presigned URL has) covers no body: parameters in a form body (another Action, say) were signed
    by no one, so the request is refused rather than let them count. (AWS documents
    UNSIGNED-PAYLOAD for S3 only; other services hash the body themselves, so such a request fails
    there as SignatureDoesNotMatch. A body that is not a form carries no parameters.)"""
    if not body or payload_hash.lower() == hashlib.sha256(body).hexdigest():
        return
    if "form-urlencoded" in headers.get("content-type", "application/x-www-form-urlencoded") \
            and parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
        raise IncompleteSignature(f"The request body is not signed (payload {payload_hash}): send every "
                                  "parameter in the signed query string, or sign the body.")


def _payload_hashes(headers: Mapping[str, str], body: bytes) -> tuple[str, ...]:
    declared = headers.get("x-amz-content-sha256")
    if declared is not None:
        declared = declared.strip()
        if declared == UNSIGNED_PAYLOAD or declared.startswith("STREAMING-"):
            return (declared,)
        # The header is signed, so the body must really hash to it.
        if not hmac.compare_digest(declared.lower().encode("utf-8", "replace"),
                                   hashlib.sha256(body or b"").hexdigest().encode()):
            raise SignatureDoesNotMatch()
        return (declared,)
    body_hash = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
    return (body_hash, UNSIGNED_PAYLOAD)


# --------------------------------------------------------------------------- SigV4

def _v4_header(method: str, host: str, path: str, query_pairs, headers, body,
               authorization: str, secret_for, now: datetime) -> Principal:
    credential, signed_headers, signature = _parse_authorization(authorization)

    amz_date = headers.get("x-amz-date")
    if amz_date is not None:
        amz_date = amz_date.strip()
        req_time = _parse_amz_date(amz_date)
        if req_time is None:
            raise _bad_amz_date(amz_date)
        date_source = "x-amz-date"
    else:
        http_date = headers.get("date")
        if not http_date:
            raise IncompleteSignature(
                "Authorization header requires existence of either a 'X-Amz-Date' or a "
                f"'Date' header. Authorization={authorization}")
        try:
            req_time = parsedate_to_datetime(http_date)
        except (TypeError, ValueError, IndexError):
            req_time = None
        if req_time is None:
            raise IncompleteSignature(f"Invalid 'Date' header: '{http_date}'")
        req_time = _utc(req_time).astimezone(timezone.utc)
        amz_date = req_time.strftime("%Y%m%dT%H%M%SZ")
        date_source = "date"

    access_key, datestamp, region, service = _parse_scope(credential, amz_date, date_source)
    _check_scope_region(region, host or headers.get("host", ""))
    secret = secret_for(access_key)
    if secret is None:
        raise AuthFailure()

    canonical_headers, signed_names = _signed_header_block(signed_headers, host, headers)
    key = _signing_key(secret, datestamp, region, service)
    scope = f"{datestamp}/{region}/{service}/{TERMINATOR}"
    payload_hash = _verify_v4(method, path, canonical_headers, signed_names, query_pairs,
                              _payload_hashes(headers, body), amz_date, scope, key, signature)
    _only_signed_parameters(payload_hash, headers, body)

    if abs(now - req_time) > MAX_SKEW:
        raise RequestExpired()
    return Principal(access_key, region, service)


def _v4_presigned(method: str, host: str, path: str, query_pairs, headers, body,
                  secret_for, now: datetime) -> Principal:
    params: dict[str, str] = {}
    for k, v in query_pairs:
        if k.startswith("X-Amz-"):
            params[k] = _decode_component(v, True)
    algorithm = params.get("X-Amz-Algorithm", "")
    if algorithm != ALGORITHM_V4:
        raise IncompleteSignature(f"X-Amz-Algorithm only supports '{ALGORITHM_V4}', got "
                          f"'{algorithm}'.")
    missing = [name for name in ("X-Amz-Credential", "X-Amz-Date", "X-Amz-SignedHeaders",
                                 "X-Amz-Signature") if not params.get(name)]
    if missing:
        raise IncompleteSignature(
            "Query-string authentication requires the X-Amz-Algorithm, X-Amz-Credential, "
            "X-Amz-Date, X-Amz-SignedHeaders and X-Amz-Signature parameters; missing: "
            + ", ".join(missing) + ".")

    amz_date = params["X-Amz-Date"]
    req_time = _parse_amz_date(amz_date)
    if req_time is None:
        raise _bad_amz_date(amz_date)

    expires: int | None = None
    raw_expires = params.get("X-Amz-Expires")
    if raw_expires is not None:
        if not raw_expires.isdigit() or not raw_expires.isascii():
            raise IncompleteSignature(f"X-Amz-Expires must be a non-negative integer, got "
                              f"'{raw_expires}'.")
        expires = int(raw_expires)
        if expires > MAX_PRESIGN_EXPIRES:
            raise IncompleteSignature("X-Amz-Expires must be less than a week (in seconds) that "
                              f"is 604800, got {expires}.")

    access_key, datestamp, region, service = _parse_scope(
        params["X-Amz-Credential"], amz_date, "X-Amz-Date")
    _check_scope_region(region, host or headers.get("host", ""))
    secret = secret_for(access_key)
    if secret is None:
        raise AuthFailure()

    canonical_headers, signed_names = _signed_header_block(
        params["X-Amz-SignedHeaders"], host, headers)
    key = _signing_key(secret, datestamp, region, service)
    scope = f"{datestamp}/{region}/{service}/{TERMINATOR}"
    payload_hash = _verify_v4(method, path, canonical_headers, signed_names, query_pairs,
                              _payload_hashes(headers, body), amz_date, scope, key,
                              params["X-Amz-Signature"])
    _only_signed_parameters(payload_hash, headers, body)

    if req_time - now > MAX_SKEW:  # signed in the future
        raise RequestExpired()
    if expires is None:
        if now - req_time > MAX_SKEW:
            raise RequestExpired()
    elif now > req_time + timedelta(seconds=expires):
        raise RequestExpired()
    return Principal(access_key, region, service)


# --------------------------------------------------------------------------- SigV2

def _parse_iso8601(value: str) -> datetime | None:
    try:
        dt = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return _utc(dt).astimezone(timezone.utc)


def _v2_string_to_sign_tail(form: Mapping[str, str]) -> str:
    pairs = []
    for key in sorted(form):
        if key == "Signature":
            continue
        pairs.append(f"{_aws_quote(key)}={_aws_quote(str(form[key]))}")
    return "&".join(pairs)


def _v2(method: str, host: str, path: str, headers, form: Mapping[str, str],
        secret_for, now: datetime) -> Principal:
    access_key = form.get("AWSAccessKeyId")
    signature = form.get("Signature")
    if not access_key:
        raise IncompleteSignature("The request must contain the parameter AWSAccessKeyId")
    if not signature:
        raise IncompleteSignature("The request must contain the parameter Signature")

    version = form.get("SignatureVersion")
    if version is None:
        raise AuthFailure("The request must contain the parameter SignatureVersion; "
                            "only SignatureVersion 2 (or Signature Version 4) is supported.")
    if version.strip() != "2":
        raise AuthFailure(f"SignatureVersion {version!r} is not supported; only "
                            "SignatureVersion 2 (or Signature Version 4) is supported.")

    method_name = form.get("SignatureMethod", "HmacSHA256")
    if method_name == "HmacSHA256":
        digest = hashlib.sha256
    elif method_name == "HmacSHA1":
        digest = hashlib.sha1
    else:
        raise AuthFailure(f"SignatureMethod {method_name!r} is not supported; use "
                            "HmacSHA256 or HmacSHA1.")

    timestamp = form.get("Timestamp")
    expires_param = form.get("Expires")
    if timestamp is not None and expires_param is not None:
        raise InvalidParameterCombination.together("Timestamp", "Expires")
    if timestamp is not None:
        req_time = _parse_iso8601(timestamp)
        if req_time is None:
            raise InvalidParameterValue.value(timestamp, "Timestamp", _ISO_EXAMPLE)
    elif expires_param is not None:
        req_time = _parse_iso8601(expires_param)
        if req_time is None:
            raise InvalidParameterValue.value(expires_param, "Expires", _ISO_EXAMPLE)
    else:
        raise MissingParameter("Timestamp or Expires")

    secret = secret_for(access_key)
    if secret is None:
        raise AuthFailure()

    host_l = (host or headers.get("host", "")).lower()
    hosts = [host_l]
    # Clients normally omit a default port from both Host and the string to sign;
    # accept a signature over the bare name if a proxy added ':80' / ':443'.
    for default_port in (":80", ":443"):
        if host_l.endswith(default_port):
            hosts.append(host_l[: -len(default_port)])
    tail = _v2_string_to_sign_tail(form)
    secret_b = secret.encode("utf-8")
    # An unescaped '+' that form decoding turned into a space: put it back before stripping
    # (a signature that starts with '+' would otherwise lose it: 1 request in 64).
    provided = signature.replace(" ", "+").strip()
    ok = False
    for h in hosts:
        sts = f"{method.upper()}\n{h}\n{path or '/'}\n{tail}"
        sig = base64.b64encode(hmac.new(secret_b, sts.encode("utf-8", "surrogateescape"),
                                        digest).digest()).decode("ascii")
        if _eq(sig, provided):
            ok = True
            break
    if not ok:
        raise SignatureDoesNotMatch()

    if timestamp is not None:
        if abs(now - req_time) > MAX_SKEW:
            raise RequestExpired()
    elif now >= req_time:
        raise RequestExpired()
    return Principal(access_key, None)


# --------------------------------------------------------------------------- entry point

def verify_request(method: str, host: str, path: str, raw_query: str,
                   headers: Mapping[str, str], body: bytes, form: Mapping[str, str],
                   secret_for: Callable[[str], str | None],
                   now: datetime | None = None) -> Principal:
    """Authenticate one request; return who signed it or raise an ``AuthError`` (or, for a
    malformed SigV2 Timestamp/Expires, the parameter error AWS answers: an ``EC2Error`` too).

    ``headers`` keys are expected lower-case.  ``host`` is the Host header as
    received (port included if the client sent one).  ``path`` and ``raw_query``
    are the undecoded request path and query string.  ``form`` is the merged,
    decoded query + urlencoded-body parameters (used for SigV2).
    """
    now = _utc(now)
    body = body or b""
    authorization = headers.get("authorization")
    if authorization is not None and not authorization.strip():
        authorization = None
    query_pairs = _split_query(raw_query)
    presigned = any(k == "X-Amz-Algorithm" or k == "X-Amz-Signature"
                    or k == "X-Amz-Credential" for k, _ in query_pairs)
    v2 = "AWSAccessKeyId" in form or "Signature" in form

    if (authorization is not None) + presigned + v2 > 1:
        raise IncompleteSignature(
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, "
            "Signature query string parameter or the Authorization header should be "
            "specified")
    if authorization is not None:
        return _v4_header(method, host, path, query_pairs, headers, body, authorization,
                          secret_for, now)
    if presigned:
        return _v4_presigned(method, host, path, query_pairs, headers, body, secret_for,
                             now)
    if v2:
        return _v2(method, host, path, headers, form, secret_for, now)
    if "X-Amz-Signature" in form or "X-Amz-Credential" in form:
        raise IncompleteSignature("Signature Version 4 authentication parameters must be sent in "
                          "the Authorization header or the URL query string, not the "
                          "request body.")
    raise MissingAuthenticationToken()
