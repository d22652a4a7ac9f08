"""The instance metadata service's logic, with no sockets: AWS's tree for one instance, the
identity document and its signatures, IMDSv2 tokens, and `MetadataApp.handle`, which answers
one HTTP request given how to find the instance behind a (VPC, source address).

Choices where AWS leaves room (documented here, tested in tests/test_metadata.py):
  * HttpEndpoint 'disabled': every request gets 403 with an empty body (AWS documents 403; an
    empty body tells it apart from the HTML 403 of a refused token request).
  * A request whose (VPC, source address) matches no running/pending instance gets 404 with
    AWS's HTML body: nothing about any instance.
  * A token is valid only for the instance it was issued to: `<instance id>.<expiry>.<HMAC>`
    (HMAC-SHA256 with a secret kept in the state dir), so it survives restarts and works across
    processes. A token for another instance, or expired, or forged: 401.
  * The token PUT response carries `ip_ttl` = HttpPutResponseHopLimit; the server sets the
    socket's IP_TTL from it (see server.py).
  * PUT anywhere but /latest/api/token, or any other method: 405.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.serialization import pkcs7

from emulator.catalogue import REGIONS
from emulator.dns import private_dns_name, public_dns_name
from emulator.instances import DEFAULT_METADATA_OPTIONS

VERSIONS = (
    "1.0", "2007-01-19", "2007-03-01", "2007-08-29", "2007-10-10", "2007-12-15", "2008-02-01",
    "2008-09-01", "2009-04-04", "2011-01-01", "2011-05-01", "2012-01-12", "2014-02-25",
    "2014-11-05", "2015-10-20", "2016-04-29", "2016-06-30", "2016-09-02", "2018-03-28",
    "2018-08-17", "2018-09-24", "2019-10-01", "2020-10-27", "2021-01-03", "2021-03-23",
    "2021-07-15", "2022-09-24", "latest",
)
_DATED = re.compile(r"^\d{4}-\d{2}-\d{2}$")
TOKEN_HEADER = "x-aws-ec2-metadata-token"
TTL_HEADER = "x-aws-ec2-metadata-token-ttl-seconds"
MAX_TOKEN_TTL = 21600
LISTING = "__listing__"  # a directory whose listing is not its children's names (public-keys/)


@dataclass
class InstanceFacts:
    """What the tree is built from: the instance's row plus what it references."""
    instance: Any                       # emulator.models.Instance (or anything with its attributes)
    vpc_cidrs: list[str]                # the VPC's CIDR blocks, primary first
    subnet_cidr: str
    security_groups: list[tuple[str, str]] = field(default_factory=list)  # (id, name)
    key_name: str | None = None
    public_key: str | None = None       # OpenSSH public key of the key pair
    tags: dict[str, str] = field(default_factory=dict)
    # Device names of the EBS volumes attached when the instance was launched or last started
    # (AWS lists no volume attached since: block-device-mapping/ebsN).
    volume_devices: list[str] = field(default_factory=list)
    # Its attached interfaces, primary first: dicts with device_index, id, mac, ips (primary
    # first), subnet_id, subnet_cidr, groups [(id, name)], publics {private: Elastic IP} (the
    # instance's own public_ip aside). Empty: the primary alone, from the row.
    interfaces: list[dict] = field(default_factory=list)
    dns_names: bool = True              # its VPC gives public DNS names (both DNS attributes true)
    # Its instance profile, if it has one: {"name": role name, "info": iam/info's members,
    # "credentials": the role's current credentials (emulator/role_credentials.py)}.
    role: dict | None = None
    # A Spot Instance's interruption notice ({"action", "time", "rebalance"}, ISO times), if given.
    spot_notice: dict | None = None

    @property
    def options(self) -> dict:
        return {**DEFAULT_METADATA_OPTIONS, **(self.instance.metadata_options or {})}


class Reply(tuple):
    """(status, headers, body); `ip_ttl` asks the server for that IP TTL on this response."""

    def __new__(cls, status: int, headers: dict, body: bytes, ip_ttl: int | None = None):
        self = super().__new__(cls, (status, headers, body))
        self.ip_ttl = ip_ttl
        return self

    status = property(lambda self: self[0])
    headers = property(lambda self: self[1])
    body = property(lambda self: self[2])


# ---------------------------------------------------------------------------------- the tree

def _zone_id(region: str, zone: str) -> str | None:
    r = REGIONS.get(region)
    return next((z.zone_id for z in r.zones if z.name == zone), None) if r else None


def _iso(dt) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def _plain(iso: str) -> str:
    """An ISO time as IMDS writes it, to the second (2026-12-01T12:00:00Z)."""
    return iso[:19] + "Z"


def _block_devices(row, volume_devices: list[str]) -> dict:
    out = {"ami": row.root_device_name, "root": row.root_device_name}
    ebs = ephemeral = 0
    mappings = [*(row.block_device_mappings or []), *((getattr(row, "attributes", None) or {}).get("InstanceStore") or []),
                *({"DeviceName": d} for d in volume_devices)]
    for m in mappings:
        dev = m.get("DeviceName") or ""
        if dev == row.root_device_name:
            continue
        short = dev[5:] if dev.startswith("/dev/") else dev
        if m.get("VirtualName"):
            out[f"ephemeral{ephemeral}"] = short
            ephemeral += 1
        else:
            ebs += 1
            out[f"ebs{ebs}"] = short
    return out


def meta_data(f: InstanceFacts) -> dict:
    """AWS's meta-data/ tree: dicts are directories, strings are values."""
    row = f.instance
    region = row.region
    local_name = private_dns_name(region, row.private_ip)
    mac = row.mac_address
    interfaces = f.interfaces or [{
        "device_index": 0, "id": row.network_interface_id, "mac": mac, "ips": [row.private_ip or ""],
        "subnet_id": row.subnet_id, "subnet_cidr": f.subnet_cidr, "groups": f.security_groups}]
    macs = {}
    for nic in interfaces:
        macs[nic["mac"]] = {
            "device-number": str(nic["device_index"]),
            "interface-id": nic["id"],
            "local-hostname": private_dns_name(region, nic["ips"][0]),
            "local-ipv4s": "\n".join(nic["ips"]),
            "mac": nic["mac"],
            "owner-id": row.account_id,
            "security-group-ids": "\n".join(g for g, _ in nic["groups"]),
            "security-groups": "\n".join(n for _, n in nic["groups"]),
            "subnet-id": nic["subnet_id"],
            "subnet-ipv4-cidr-block": nic["subnet_cidr"],
            "vpc-id": row.vpc_id,
            "vpc-ipv4-cidr-block": f.vpc_cidrs[0] if f.vpc_cidrs else "",
            "vpc-ipv4-cidr-blocks": "\n".join(f.vpc_cidrs),
        }
        publics = nic.get("publics") or {}
        if publics:
            macs[nic["mac"]]["public-ipv4s"] = "\n".join(publics.values())
            macs[nic["mac"]]["ipv4-associations"] = {pub: priv for priv, pub in publics.items()}
    iface = macs[mac] if mac in macs else next(iter(macs.values()))
    tree: dict = {
        "ami-id": row.image_id,
        "ami-launch-index": str(row.launch_index),
        "ami-manifest-path": "(unknown)",
        "block-device-mapping": _block_devices(row, f.volume_devices),
        "hostname": local_name,
        "instance-action": "none",
        "instance-id": row.id,
        "instance-life-cycle": "spot" if getattr(row, "spot_request_id", None) else "on-demand",
        "instance-type": row.instance_type,
        "local-hostname": local_name,
        "local-ipv4": row.private_ip or "",
        "mac": mac,
        "network": {"interfaces": {"macs": macs}},
        "placement": {
            "availability-zone": row.availability_zone,
            "availability-zone-id": _zone_id(region, row.availability_zone) or "",
            "region": region,
        },
        "profile": "default-hvm",
        "reservation-id": row.reservation_id,
        "security-groups": "\n".join(n for _, n in f.security_groups),
        "services": {"domain": "amazonaws.com", "partition": "aws"},
    }
    if row.public_ip:
        if f.dns_names:  # AWS lists no public-hostname where the VPC gives no public DNS names
            public_name = public_dns_name(region, row.public_ip)
            tree["public-hostname"] = public_name
            iface["public-hostname"] = public_name
        tree["public-ipv4"] = row.public_ip
        iface["public-ipv4s"] = "\n".join([row.public_ip, *filter(None, [iface.get("public-ipv4s")])])
        iface["ipv4-associations"] = {row.public_ip: row.private_ip or "", **iface.get("ipv4-associations", {})}
    if f.key_name and f.public_key:
        key = f.public_key.strip()
        if len(key.split()) < 3:  # AWS shows the key with the key name as its comment
            key = f"{key} {f.key_name}"
        tree["public-keys"] = {LISTING: f"0={f.key_name}", "0": {"openssh-key": key + "\n"}}
    if row.kernel_id:
        tree["kernel-id"] = row.kernel_id
    if row.ramdisk_id:
        tree["ramdisk-id"] = row.ramdisk_id
    if f.spot_notice:
        n = f.spot_notice
        tree["spot"] = {"instance-action": json.dumps({"action": n["action"], "time": _plain(n["time"])})}
        if n["action"] == "terminate":
            tree["spot"]["termination-time"] = _plain(n["time"])
        tree["events"] = {"recommendations": {"rebalance": json.dumps({"noticeTime": _plain(n["rebalance"])})}}
    if f.role:
        tree["iam"] = {"info": json.dumps(f.role["info"], indent=2),
                       "security-credentials": {f.role["name"]: json.dumps(f.role["credentials"], indent=2)}}
    if f.options.get("InstanceMetadataTags") == "enabled":
        tree["tags"] = {"instance": dict(f.tags)}
    return tree


def identity_document(f: InstanceFacts) -> str:
    """The instance identity document, formatted as AWS does (`"key" : value`, two-space indent)."""
    row = f.instance
    doc = {
        "accountId": row.account_id,
        "architecture": row.architecture,
        "availabilityZone": row.availability_zone,
        "billingProducts": None,
        "devpayProductCodes": None,
        "marketplaceProductCodes": None,
        "imageId": row.image_id,
        "instanceId": row.id,
        "instanceType": row.instance_type,
        "kernelId": row.kernel_id,
        "pendingTime": _iso(row.launch_time),
        "privateIp": row.private_ip,
        "ramdiskId": row.ramdisk_id,
        "region": row.region,
        "version": "2017-09-30",
    }
    return json.dumps(doc, indent=2, separators=(",", " : "))


def _wrap64(data: bytes) -> str:
    text = base64.b64encode(data).decode()
    return "\n".join(text[i:i + 64] for i in range(0, len(text), 64))


class Signer:
    """Signs identity documents with the emulator's key and certificate (metadata/identity.py)."""

    def __init__(self, key, cert):
        self.key, self.cert = key, cert

    def signature(self, document: str) -> str:
        """Base64 SHA256-with-RSA (PKCS#1 v1.5) over the document."""
        return _wrap64(self.key.sign(document.encode(), padding.PKCS1v15(), hashes.SHA256()))

    def _pkcs7(self, document: str, detached: bool) -> str:
        # Binary: sign the document's exact bytes (no S/MIME newline canonicalisation).
        options = [pkcs7.PKCS7Options.Binary]
        if detached:
            options.append(pkcs7.PKCS7Options.DetachedSignature)
        der = (pkcs7.PKCS7SignatureBuilder().set_data(document.encode())
               .add_signer(self.cert, self.key, hashes.SHA256())
               .sign(serialization.Encoding.DER, options))
        return _wrap64(der)

    def pkcs7(self, document: str) -> str:
        """PKCS#7 detached signature (verify with the document as content), PEM body only."""
        return self._pkcs7(document, detached=True)

    def rsa2048(self, document: str) -> str:
        """PKCS#7 signed data with the document attached, PEM body only."""
        return self._pkcs7(document, detached=False)


# --------------------------------------------------------------------------------- tokens

class Tokens:
    """IMDSv2 session tokens: `<instance id>.<expiry>.<HMAC-SHA256>`, base64url, opaque to guests."""

    def __init__(self, secret: bytes):
        self.secret = secret

    def _mac(self, payload: str) -> str:
        digest = hmac.new(self.secret, payload.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def issue(self, instance_id: str, ttl: int, now: float) -> str:
        payload = f"{instance_id}.{int(now) + ttl}"
        raw = f"{payload}.{self._mac(payload)}"
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    def remaining(self, token: str, instance_id: str, now: float) -> int | None:
        """Seconds left if `token` is valid for this instance now, else None."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
            iid, expiry, mac = raw.rsplit(".", 2)
        except (ValueError, UnicodeDecodeError):
            return None
        if not hmac.compare_digest(mac, self._mac(f"{iid}.{expiry}")) or iid != instance_id:
            return None
        left = int(expiry) - int(now)
        return left if left > 0 else None


# ------------------------------------------------------------------------------------ HTTP

def _html(status: int, reason: str) -> bytes:
    return (f'<?xml version="1.0" encoding="iso-8859-1"?>\n'
            f'<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN"\n'
            f'\t"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">\n'
            f'<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en" lang="en">\n'
            f' <head>\n  <title>{status} - {reason}</title>\n </head>\n'
            f' <body>\n  <h1>{status} - {reason}</h1>\n </body>\n</html>\n').encode()


_REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed"}


def _error(status: int, extra: dict | None = None) -> Reply:
    return Reply(status, {"Content-Type": "text/html", **(extra or {})}, _html(status, _REASONS[status]))


def _text(body: str | bytes, extra: dict | None = None, content_type: str = "text/plain") -> Reply:
    data = body.encode() if isinstance(body, str) else body
    return Reply(200, {"Content-Type": content_type, **(extra or {})}, data)


def _listing(node: dict) -> str:
    if LISTING in node:
        return node[LISTING]
    return "\n".join(k + ("/" if isinstance(v, dict) else "") for k, v in sorted(node.items())
                     if k != LISTING)


def _walk(node, parts: list[str]):
    for part in parts:
        if not isinstance(node, dict) or part == LISTING or part not in node:
            return None
        node = node[part]
    return node


Lookup = Callable[[str, str], "InstanceFacts | None"]


class MetadataApp:
    """Answers IMDS requests. `lookup(vpc_id, source_ip)` finds the one running/pending instance
    with that private address in that VPC (or None); it is called on every request, so changes
    (ModifyInstanceMetadataOptions) take effect at once."""

    def __init__(self, lookup: Lookup, signer: Signer, token_secret: bytes,
                 clock: Callable[[], float] = time.time):
        self.lookup, self.signer, self.tokens, self.clock = lookup, signer, Tokens(token_secret), clock

    def handle(self, method: str, path: str, headers: Mapping[str, str], source_ip: str,
               vpc_id: str) -> Reply:
        reply, _facts = self.handle_full(method, path, headers, source_ip, vpc_id)
        return reply

    def handle_full(self, method: str, path: str, headers: Mapping[str, str], source_ip: str,
                    vpc_id: str) -> tuple[Reply, InstanceFacts | None]:
        """As `handle`, also returning the instance the request resolved to (for logging)."""
        h = {k.lower(): v for k, v in headers.items()}
        path = path.split("?", 1)[0].split("#", 1)[0]
        if "://" in path:  # absolute-form request target
            path = "/" + path.split("://", 1)[1].partition("/")[2]
        if method not in ("GET", "HEAD", "PUT"):
            return _error(405, {"Allow": "GET, HEAD, PUT"}), None
        facts = self.lookup(vpc_id, source_ip)
        if facts is None:
            return _error(404), None
        opts = facts.options
        if opts.get("HttpEndpoint") == "disabled":
            return Reply(403, {"Content-Type": "text/plain"}, b""), facts
        now = self.clock()
        if method == "PUT":
            return self._token(path, h, facts, now), facts
        left = None
        if TOKEN_HEADER in h:
            left = self.tokens.remaining(h[TOKEN_HEADER].strip(), facts.instance.id, now)
            if left is None:
                return _error(401), facts
        elif opts.get("HttpTokens") == "required":
            return _error(401), facts
        reply = self._get(path, facts)
        if left is not None and reply.status == 200:
            reply.headers["X-Aws-Ec2-Metadata-Token-Ttl-Seconds"] = str(left)
        if method == "HEAD":
            reply.headers["Content-Length"] = str(len(reply.body))
            reply = Reply(reply.status, reply.headers, b"")
        return reply, facts

    def _token(self, path: str, h: dict, facts: InstanceFacts, now: float) -> Reply:
        if path.rstrip("/") != "/latest/api/token":
            return _error(405, {"Allow": "GET, HEAD"})
        if "x-forwarded-for" in h:
            return _error(403)
        raw = (h.get(TTL_HEADER) or "").strip()
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_TOKEN_TTL:
            return _error(400)
        ttl = int(raw)
        token = self.tokens.issue(facts.instance.id, ttl, now)
        hops = int(facts.options.get("HttpPutResponseHopLimit") or 1)
        return Reply(200, {"Content-Type": "text/plain", "X-Aws-Ec2-Metadata-Token-Ttl-Seconds": str(ttl)},
                     token.encode(), ip_ttl=hops)

    def _get(self, path: str, facts: InstanceFacts) -> Reply:
        parts = [p for p in path.split("/") if p]
        if not parts:
            return _text("\n".join(VERSIONS))
        version, rest = parts[0], parts[1:]
        if version not in ("latest", "1.0") and not _DATED.match(version):
            return _error(404)
        row = facts.instance
        user_data = _decode_user_data(row.user_data)
        if not rest:
            return _text("\n".join(["dynamic", "meta-data"] + (["user-data"] if user_data is not None else [])))
        top, rest = rest[0], rest[1:]
        if top == "user-data" and not rest:
            return _text(user_data, content_type="application/octet-stream") if user_data is not None \
                else _error(404)
        if top == "meta-data":
            node = _walk(meta_data(facts), rest)
        elif top == "dynamic":
            node = _walk({"instance-identity": {"document": None, "pkcs7": None, "rsa2048": None,
                                                "signature": None}}, rest)
            if rest[:1] == ["instance-identity"] and len(rest) == 2 and rest[1] in (
                    "document", "pkcs7", "rsa2048", "signature"):
                doc = identity_document(facts)
                node = doc if rest[1] == "document" else getattr(self.signer, rest[1])(doc)
        else:
            node = None
        if node is None:
            return _error(404)
        if isinstance(node, dict):
            return _text(_listing(node))
        return _text(node)


def _decode_user_data(value: str | None) -> bytes | None:
    if not value:
        return None
    try:
        return base64.b64decode(value, validate=False)
    except ValueError:
        return value.encode()
