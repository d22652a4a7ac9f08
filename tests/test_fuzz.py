"""Property-based fuzzing of the wire layer against the real server.

Random requests are derived from botocore's EC2 model (operation, input shape, member names as
botocore's EC2Serializer puts them on the wire), then mangled: random member subsets, wrong
types, junk enum values, Name.N lists with odd N, huge and unicode strings, empty values, unknown
keys. Each is SigV4-signed for region eu-west-3 (so whatever the fuzzer creates stays out of the
us-east-1 namespace the other tests share) and POSTed to the session's server.

Properties: never an HTTP 500; every body is well-formed XML, either
`<{Action}Response xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">` starting with `<requestId>`
(status 200) or `<Response><Errors><Error><Code>` (any other status); and DryRun=true on an
implemented operation never answers 200.
"""
from __future__ import annotations

import os
import base64
import http.client
import xml.etree.ElementTree as ET
from urllib.parse import quote, urlencode, urlsplit

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from api import model
from emulator.registry import HANDLERS, load_handlers

load_handlers()

from .server import ACCESS_KEY, SECRET_KEY
from .test_wire import raw

REGION = "eu-west-3"
XMLNS = "http://ec2.amazonaws.com/doc/2016-11-15/"
CREDS = Credentials(ACCESS_KEY, SECRET_KEY)
SERVICE = model.service_model()
ALL_OPS = sorted(SERVICE.operation_names)
IMPLEMENTED = sorted(n for n in HANDLERS if n in SERVICE.operation_names)

# Shape/member name stem -> id prefix (AWS's), for members whose name ends in Id/Ids.
ID_PREFIXES = {
    "Instance": "i", "Image": "ami", "Kernel": "aki", "Ramdisk": "ari", "Vpc": "vpc",
    "Subnet": "subnet", "SecurityGroup": "sg", "Group": "sg", "KeyPair": "key", "Volume": "vol",
    "Snapshot": "snap", "NetworkInterface": "eni", "Allocation": "eipalloc", "RouteTable": "rtb",
    "InternetGateway": "igw", "Reservation": "r", "DhcpOptions": "dopt", "NetworkAcl": "acl",
    "NatGateway": "nat", "LaunchTemplate": "lt", "PlacementGroup": "pg", "TransitGateway": "tgw",
    "SpotInstanceRequest": "sir", "VpcEndpoint": "vpce", "PrefixList": "pl", "Fleet": "fleet",
    "CapacityReservation": "cr", "Host": "h", "VpcPeeringConnection": "pcx", "Association": "rtbassoc",
}
ANY_PREFIXES = sorted(set(ID_PREFIXES.values()) | {"eni-attach", "vpc-cidr-assoc", "ipam"})
FILTER_NAMES = [
    "instance-id", "instance-state-name", "instance-state-code", "instance-type", "image-id",
    "tag:Name", "tag-key", "tag-value", "tag:", "tag:*", "vpc-id", "subnet-id", "key-name",
    "key-pair-id", "owner-id", "owner-alias", "name", "state", "architecture", "resource-id",
    "resource-type", "key", "value", "availability-zone", "zone-name", "region-name", "group-id",
    "group-name", "is-default", "cidr", "cidr-block", "default-for-az", "launch-time",
    "reservation-id", "platform", "root-device-type", "is-public", "image-type",
    "instance.group-id", "network-interface.addresses.private-ip-address", "dns-name",
    "private-ip-address", "ip-address", "monitoring-state", "attribute-name", "opt-in-status",
]
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=24)
HUGE = st.builds(lambda ch, n: ch * n, st.sampled_from(["x", "\u00e9", "\u2603", "%", "&amp;", "\U0001f600", "a.b"]),
                 st.sampled_from([256, 4096, 70000]))
SPECIAL = st.sampled_from(["", " ", "*", "?", "%", "_", "\\", "'", '"', "<a/>", "]]>", "&", "null", "None",
                           "\x00", "\x01\x02", "\t\n\r", "true", "0", "-1", "1e999", "NaN",
                           "2016-11-15T00:00:00Z", "caf\u00e9", "\u202e\ufeff", "a" * 257])


def junk() -> st.SearchStrategy[str]:
    return st.one_of(SPECIAL, TEXT, HUGE)


def hexid(n: int) -> st.SearchStrategy[str]:
    return st.text("0123456789abcdef", min_size=n, max_size=n)


def id_strategy(prefix: str | None, known: dict, dirty: bool) -> st.SearchStrategy[str]:
    prefixes = st.just(prefix) if prefix else st.sampled_from(ANY_PREFIXES)
    fresh = st.builds(lambda p, h: f"{p}-{h}", prefixes, st.one_of(hexid(17), hexid(8)))
    wrong = st.builds(lambda p, h: f"{p}-{h}", prefixes,
                      st.one_of(st.text("0123456789abcdefABCDEFxyz-", max_size=20), TEXT))
    pool = known.get(prefix) if prefix else known.get("*")
    options = [fresh, fresh, wrong, junk()] if dirty else [fresh]
    if pool:
        options = [st.sampled_from(sorted(pool))] * 3 + options
    return st.one_of(*options)


def id_prefix(*names: str) -> tuple[bool, str | None]:
    """(looks like an id member, its prefix if known)."""
    for name in names:
        stem = name[:-1] if name.endswith("Ids") else name
        if not stem.endswith("Id"):
            continue
        stem = stem[:-2]
        for key in sorted(ID_PREFIXES, key=len, reverse=True):
            if stem.endswith(key):
                return True, ID_PREFIXES[key]
        return True, None
    if names and names[-1] in ("Resources", "TaggableResourceId", "ResourceIdList"):
        return True, None
    return False, None


def wire_name(member_name: str, member) -> str:
    """The flat Query name botocore's EC2Serializer gives a member."""
    ser = member.serialization
    if "queryName" in ser:
        return ser["queryName"]
    if "name" in ser:
        return ser["name"][0].upper() + ser["name"][1:]
    return member_name


class Gen:
    """Draws one wire tree (nested dicts of wire names -> str) for a shape."""

    def __init__(self, data, known: dict):
        self.data = data
        self.known = known
        # Clean requests (well-typed, valid enums, no junk keys) reach the handlers; dirty ones
        # probe the parser.
        self.dirty = self.chance(60)

    def draw(self, strategy):
        return self.data.draw(strategy)

    def chance(self, percent: int) -> bool:
        return self.draw(st.integers(0, 99)) < percent

    def mess(self, percent: int) -> bool:
        """Whether to break the model here (never in a clean request)."""
        return self.dirty and self.chance(percent)

    def structure(self, shape, depth: int):
        if self.mess(4):  # wrong type: a scalar where a structure belongs
            return self.draw(junk())
        members = shape.members
        required = set(shape.required_members)
        optional = sorted(n for n in members if n not in required)
        chosen = [n for n in sorted(required) if not self.mess(8)]
        if optional and depth < 4:
            limit = min(len(optional), 5 if depth == 0 else 2)
            chosen += self.draw(st.lists(st.sampled_from(optional), max_size=limit, unique=True))
        out = {}
        for name in chosen:
            member = members[name]
            key = wire_name(name, member)
            if self.mess(3):  # wrong spelling of a real member
                key = self.draw(st.sampled_from([name, key.lower(), member.serialization.get("name", name)]))
            out[key] = self.value(member, name, shape.name, depth + 1)
        return out

    def list(self, shape, name: str, parent: str, depth: int):
        if self.mess(4):  # a bare scalar where Name.N belongs
            return self.draw(junk())
        if not self.mess(20):
            indices = [str(i) for i in range(1, self.draw(st.integers(0, 3)) + 1)]
        else:  # odd N: gaps, zero, negative, huge, not a number
            indices = self.draw(st.lists(st.sampled_from(
                ["0", "1", "2", "3", "7", "100", "1001", "999999999", "2147483648", "-1", "01", "x", ""]),
                min_size=1, max_size=4, unique=True))
        return {i: self.value(shape.member, name, parent, depth + 1) for i in indices}

    def value(self, shape, name: str, parent: str, depth: int):
        kind = shape.type_name
        if kind == "structure":
            return self.structure(shape, depth)
        if kind == "list":
            return self.list(shape, name, parent, depth)
        if kind == "map":  # not in today's EC2 input model; kept for completeness
            return {"entry": {"1": {"key": self.draw(TEXT), "value": self.scalar(shape.value, name, parent)}}}
        if self.mess(3):  # a structure where a scalar belongs
            return {self.draw(st.sampled_from(["1", "Name", "", "Value"])): self.draw(junk())}
        return self.scalar(shape, name, parent)

    def scalar(self, shape, name: str, parent: str) -> str:
        kind = shape.type_name
        if self.mess(10):
            return self.draw(junk())
        if kind == "boolean":
            if self.mess(30):
                return self.draw(st.sampled_from(["TRUE", "False", "1", "yes", ""]))
            return self.draw(st.sampled_from(["true", "false"]))
        if kind in ("integer", "long"):
            if name in ("MinCount", "MaxCount"):  # keep RunInstances' fleet small and the run bounded
                return str(self.draw(st.integers(-1, 3)))
            if not self.dirty:
                return str(self.draw(st.integers(0, 1000)))
            return str(self.draw(st.one_of(
                st.integers(-3, 1001),
                st.sampled_from([0, -1, 5, 1000, 2**31 - 1, 2**31, -2**31 - 1, 2**63 - 1, 2**63, 2**64, 10**30]))))
        if kind in ("double", "float"):
            return self.draw(st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr),
                                       st.sampled_from(["1.5", "-0", "nan", "inf", "1e309", "0x10"])))
        if kind == "timestamp":
            return self.draw(st.one_of(
                st.datetimes().map(lambda d: d.isoformat() + "Z"),
                st.integers(-2**40, 2**40).map(str),
                st.sampled_from(["2016-11-15", "1970-01-01T00:00:00Z", "9999-12-31T23:59:59.999Z", "0"])))
        if kind == "blob":
            return self.draw(st.one_of(st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode()),
                                       st.sampled_from(["!!!", "YQ", "="])))
        enum = shape.enum
        if enum:
            return self.draw(junk()) if self.mess(30) else self.draw(st.sampled_from(enum))
        if parent == "Filter" and name == "Name":
            return self.draw(st.one_of(st.sampled_from(FILTER_NAMES), TEXT))
        is_id, prefix = id_prefix(shape.name, name)
        if is_id:
            return self.draw(id_strategy(prefix, self.known, self.dirty))
        if "KeyName" in name and self.known.get("key-name"):
            return self.draw(st.one_of(st.sampled_from(sorted(self.known["key-name"])), TEXT))
        if "Cidr" in name:
            return self.draw(st.sampled_from(["10.0.0.0/16", "172.31.0.0/20", "10.0.0.0/33", "::/0", "300.1.1.1/8"]))
        if name in ("AvailabilityZone", "ZoneName", "RegionName", "RegionNames", "ZoneNames"):
            return self.draw(st.sampled_from([REGION, REGION + "a", REGION + "z", "us-east-1a", "mars-1a"]))
        return self.draw(junk() if self.dirty else st.one_of(SPECIAL, TEXT))


def flatten(tree, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(tree, str):
        return [(prefix, tree)]
    out = []
    for key, child in tree.items():
        out += flatten(child, f"{prefix}.{key}" if prefix else key)
    return out


JUNK_KEYS = st.one_of(
    st.sampled_from(["Filter.0.Name", "Filter.1", "Filter.1.Value.x", "InstanceId.-1", ".", "..", "Foo",
                     "a.b.c.d", "Filter.1.Name.1", "MaxResults.1", "Action.1", "Version.2", "DryRun.1",
                     "X-Amz-Date", "Signature", "InstanceId.1.Foo", "Filter.1.Value", "=", "Filter..Name"]),
    TEXT.filter(bool))


def build_request(data, known: dict, operation: str | None = None) -> list[tuple[str, str]]:
    gen = Gen(data, known)
    if operation is None:
        pool = IMPLEMENTED if gen.chance(80) else ALL_OPS
        operation = data.draw(st.sampled_from(pool), label="operation")
    shape = SERVICE.operation_model(operation).input_shape
    params = flatten(gen.structure(shape, 0) if shape is not None else {})
    params = [(k, v) for k, v in params if k]
    if gen.mess(25):
        params += data.draw(st.lists(st.tuples(JUNK_KEYS, junk()), min_size=1, max_size=3), label="junk keys")
    head = [("Action", operation)]
    if not gen.mess(5):
        head.append(("Version", data.draw(st.sampled_from(["2016-11-15"] * 9 + ["2014-01-01"]))))
    return head + params


def signed_post(endpoint: str, params: list[tuple[str, str]], region: str = REGION) -> tuple[int, bytes]:
    body = urlencode(params, quote_via=quote).encode()
    req = AWSRequest(method="POST", url=endpoint + "/", data=body,
                     headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    SigV4Auth(CREDS, "ec2", region).add_auth(req)
    split = urlsplit(endpoint)
    conn = http.client.HTTPConnection(split.hostname, split.port, timeout=60)
    try:
        conn.request("POST", "/", body=body, headers=dict(req.headers.items()))
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def log_tail(server, lines: int = 40) -> str:
    try:
        return "\n".join(server.log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no server log)"


def check_response(action: str, status: int, payload: bytes, log=lambda: "") -> str | None:
    """Assert the wire properties; -> the error code, or None for a 200."""
    where = f"{action}: HTTP {status}: {payload[:2000]!r}"
    assert status != 500, f"{where}\n--- server log tail:\n{log()}"
    try:
        root = ET.fromstring(payload)
    except ET.ParseError as exc:
        raise AssertionError(f"body is not well-formed XML ({exc}): {where}") from None
    if status == 200:
        head = f'<{action}Response xmlns="{XMLNS}">'.encode()
        assert head in payload[:200], f"200 without {head!r}: {where}"
        assert root.tag == f"{{{XMLNS}}}{action}Response", where
        assert len(root) and root[0].tag == f"{{{XMLNS}}}requestId" and root[0].text, f"no requestId first: {where}"
        return None
    assert root.tag == "Response", f"error body is not <Response>: {where}"
    code = root.find("Errors/Error/Code")
    assert code is not None and code.text, f"error without Errors/Error/Code: {where}"
    assert root.find("RequestID") is not None and root.find("RequestID").text, f"error without RequestID: {where}"
    return code.text


@pytest.fixture(scope="module")
def known(server):
    """Real ids in eu-west-3 so some fuzzed requests reach the handlers' deeper paths."""
    ec2 = server.client(region=REGION)
    pools: dict[str, set[str]] = {}

    def add(prefix, *values):
        for v in values:
            if v:
                pools.setdefault(prefix, set()).add(v)
                if prefix != "key-name":
                    pools.setdefault("*", set()).add(v)

    images = ec2.describe_images(Owners=["ec2emu"])["Images"]
    for image in images:
        add(image["ImageId"].split("-")[0], image["ImageId"])
    add("key-name", ec2.create_key_pair(KeyName="fuzz-known-key")["KeyName"])
    add("key", *(k.get("KeyPairId") for k in ec2.describe_key_pairs()["KeyPairs"]))
    add("vpc", *(v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"]))
    add("subnet", *(s["SubnetId"] for s in ec2.describe_subnets()["Subnets"]))
    tiny = [i["ImageId"] for i in images if i.get("Name", "").startswith("ec2emu-tiny-")]
    assert tiny, "the tiny public image is missing: the fuzz would not reach any instance"
    res = ec2.run_instances(ImageId=tiny[0], MinCount=2, MaxCount=2, InstanceType="t2.micro")
    add("i", *(i["InstanceId"] for i in res["Instances"]))
    add("r", res["ReservationId"])
    add("sg", *(g["GroupId"] for i in res["Instances"] for g in i.get("SecurityGroups", [])))
    return pools


# Under CI the examples are derived from each test's name (the same every run: a red CI can be
# re-run and reproduced); elsewhere they are new each run, to find more.
FUZZ_SETTINGS = dict(deadline=None, database=None, derandomize=bool(os.environ.get("CI")), print_blob=True,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                            HealthCheck.filter_too_much, HealthCheck.large_base_example])


def fuzz_once(server, known, data, operation: str | None = None) -> None:
    params = build_request(data, known, operation)
    note(f"params: {params!r}"[:4000])
    status, payload = signed_post(server.endpoint, params)
    action = params[0][1]
    code = check_response(action, status, payload, lambda: log_tail(server))
    dry = [v for k, v in params if k == "DryRun"]
    if action in HANDLERS and dry and dry[-1].lower() == "true":
        assert status != 200, f"DryRun=true answered 200: {payload[:500]!r}"
        assert code != "DryRunOperation" or status == 412, f"DryRunOperation with HTTP {status}"


@settings(max_examples=300, **FUZZ_SETTINGS)
@given(data=st.data())
def test_fuzzed_requests_never_500_and_are_well_formed(server, known, data):
    """Any operation of the model, 80% of the time an implemented one."""
    fuzz_once(server, known, data)


@pytest.mark.parametrize("operation", IMPLEMENTED)
@settings(max_examples=6, **FUZZ_SETTINGS)
@given(data=st.data())
def test_fuzzed_requests_to_each_implemented_operation(server, known, operation, data):
    """Hypothesis does not sample operations evenly: this makes every handler see a few."""
    fuzz_once(server, known, data, operation)


@settings(max_examples=80, **FUZZ_SETTINGS)
@given(data=st.data())
def test_dry_run_never_succeeds(server, known, data):
    """DryRun=true on an implemented operation: DryRunOperation (412) or a client error."""
    action = data.draw(st.sampled_from([op for op in IMPLEMENTED
                                        if "DryRun" in (SERVICE.operation_model(op).input_shape.members
                                                        if SERVICE.operation_model(op).input_shape else {})]))
    params = [(k, v) for k, v in build_request(data, known, action) if k != "DryRun"] + [("DryRun", "true")]
    note(f"params: {params!r}"[:4000])
    status, payload = signed_post(server.endpoint, params)
    code = check_response(action, status, payload, lambda: log_tail(server))
    assert status != 200, f"{action} DryRun=true answered 200"
    if code == "DryRunOperation":
        assert status == 412, f"DryRunOperation with HTTP {status}"
    else:
        assert 400 <= status < 500, f"{action} DryRun=true: HTTP {status} {code}"


PUBLIC_KEY = base64.b64encode(
    b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl fuzz").decode()
NUL = "a\x00b"


def sample(shape, name: str, known: dict, poison: bool = False):
    """A plausible wire tree for a shape: required members only (all scalar members of a
    structure that requires none); free-text leaves are NUL-poisoned if asked."""
    kind = shape.type_name
    if kind == "structure":
        names = shape.required_members or [n for n, m in shape.members.items()
                                            if m.type_name not in ("structure", "list")][:4]
        return {wire_name(n, shape.members[n]): sample(shape.members[n], n, known, poison) for n in names}
    if kind == "list":
        return {"1": sample(shape.member, name, known, poison)}
    if kind == "boolean":
        return "false"
    if kind in ("integer", "long"):
        return "1"
    if kind in ("double", "float"):
        return "1.0"
    if kind == "timestamp":
        return "2030-01-01T00:00:00Z"
    if kind == "blob":
        return PUBLIC_KEY
    if shape.enum:
        return shape.enum[0]
    if poison:
        return NUL
    is_id, prefix = id_prefix(shape.name, name)
    if is_id:
        pool = sorted(known.get(prefix or "*", ()))
        return pool[0] if pool else f"{prefix or 'i'}-0123456789abcdef0"
    return {"ImageId": sorted(known.get("ami", ["ami-00000000"]))[0]}.get(name, "fuzz-" + name.lower())


def minimal_params(action: str, known: dict, **extra) -> list[tuple[str, str]]:
    shape = SERVICE.operation_model(action).input_shape
    tree = sample(shape, "", known) if shape is not None else {}
    for name, value in extra.items():
        tree[wire_name(name, shape.members[name])] = value
    return [("Action", action), ("Version", "2016-11-15")] + flatten(tree)


def test_dry_run_of_each_implemented_operation(server, known):
    """DryRun validates the request first, as AWS does: with only its required members, plausibly
    filled, each implemented op answers 412 DryRunOperation exactly when the same request without
    DryRun succeeds, and otherwise the very error that request earns."""
    succeeded = 0
    for action in IMPLEMENTED:
        shape = SERVICE.operation_model(action).input_shape
        if shape is None or "DryRun" not in shape.members:
            continue
        params = minimal_params(action, known, DryRun="true")
        status, payload = signed_post(server.endpoint, params)
        code = check_response(action, status, payload, lambda: log_tail(server))
        real = [(k, v) for k, v in params if v != "true" or k != wire_name("DryRun", shape.members["DryRun"])]
        assert len(real) == len(params) - 1
        real_status, real_payload = signed_post(server.endpoint, real)  # (after: nothing changed yet)
        real_code = check_response(action, real_status, real_payload, lambda: log_tail(server))
        if real_status == 200:
            succeeded += 1
            assert (status, code) == (412, "DryRunOperation"), (action, status, code, payload[:300])
        else:
            assert (status, code) == (real_status, real_code), (action, status, code, real_code)
    assert succeeded >= 10  # the minimal requests do reach the success path of many operations


def test_nul_and_control_characters_in_every_text_member(server, known):
    """Each free-text member of each implemented op, set to 'a\\x00b' (PostgreSQL refuses NUL in
    text; XML 1.0 cannot carry it): a client error or a success, never a 500 or broken XML."""
    failures = []
    for action in IMPLEMENTED:
        shape = SERVICE.operation_model(action).input_shape
        if shape is None:
            continue
        for name, member in shape.members.items():
            if name == "DryRun":
                continue
            poisoned = flatten({wire_name(name, member): sample(member, name, known, poison=True)})
            if not any(v == NUL for _, v in poisoned):
                continue
            keys = {k for k, _ in poisoned}
            params = [(k, v) for k, v in minimal_params(action, known) if k not in keys
                      and not any(k.startswith(p + ".") for p in keys)] + poisoned
            status, payload = signed_post(server.endpoint, params)
            try:
                check_response(action, status, payload)
            except AssertionError as exc:
                failures.append(f"{params!r}\n    {str(exc)[:300]}")
    assert not failures, (f"{len(failures)} requests failed:\n" + "\n".join(failures[:20])
                          + f"\n--- server log tail:\n{log_tail(server)}")


# ------------------------------------------------------------------------- hostile input classes
# What an outside probe found answering 500s, plain text or JSON, or stalling the event loop:
# timestamps no datetime holds, list members without their index or keys, id lists longer than
# a database binds, wildcards that backtrack, methods other than GET and POST, a URL httptools
# cannot read, values of megabytes. Every answer: below 500, EC2 XML, a short message.

OVERFLOWING_TIMES = ["1e20", "-1e20", "inf", "-inf", "nan", "1e400", "9" * 400, "-99999999999",
                     "99999-01-01T00:00:00Z", "0001-01-01T00:00:00-23:59"]
PATHOLOGICAL_WILDCARDS = ["*********Z", "*" * 40 + "Z", "?*" * 40 + "Z", "*a*a*a*a*a*a*a*a*a*a*b",
                          "*?*?*?*?*?*?*?*?*?*?*?*?x", "\\" * 50 + "*" * 50, "*" + "?" * 300]
UNUSUAL_METHODS = ["PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE"]
HUGE_SIZES = [70_000, 1_000_000, 10_000_000]


def _paths(shape, kinds: tuple[str, ...], prefix: str = "", depth: int = 0) -> list[tuple[str, object]]:
    """Wire paths (lists as .1) to the members of these types below a shape."""
    out = []
    if depth > 5:
        return out
    if shape.type_name == "structure":
        for name, member in shape.members.items():
            path = f"{prefix}.{wire_name(name, member)}" if prefix else wire_name(name, member)
            out += _paths(member, kinds, path, depth + 1)
    elif shape.type_name == "list":
        out += _paths(shape.member, kinds, f"{prefix}.1", depth + 1)
    elif shape.type_name in kinds:
        out.append((prefix, shape))
    return out


def _ops_with(kinds: tuple[str, ...]) -> list[tuple[str, str]]:
    found = []
    for op in IMPLEMENTED:
        shape = SERVICE.operation_model(op).input_shape
        if shape is not None:
            found += [(op, path) for path, _ in _paths(shape, kinds)]
    return sorted(found)


TIMESTAMP_MEMBERS = _ops_with(("timestamp",))
LIST_MEMBERS = sorted({(op, path) for op, path in _ops_with(("string", "structure", "integer", "boolean"))
                       if ".1" in path})
STRING_LIST_MEMBERS = sorted(
    (op, wire_name(name, m)) for op in IMPLEMENTED if SERVICE.operation_model(op).input_shape
    for name, m in SERVICE.operation_model(op).input_shape.members.items()
    if m.type_name == "list" and m.member.type_name == "string")
DESCRIBES_WITH_FILTERS = sorted(op for op in IMPLEMENTED if SERVICE.operation_model(op).input_shape
                                and "Filters" in SERVICE.operation_model(op).input_shape.members)
STRING_MEMBERS = _ops_with(("string",))


def _with(params: list[tuple[str, str]], key: str, value: str) -> list[tuple[str, str]]:
    return [(k, v) for k, v in params if k != key] + [(key, value)]


def check_hostile(action: str, status: int, payload: bytes, server) -> None:
    assert status < 500, f"{action}: HTTP {status}: {payload[:500]!r}\n--- server log tail:\n{log_tail(server)}"
    check_response(action, status, payload, lambda: log_tail(server))
    if status != 200:
        message = ET.fromstring(payload).find("Errors/Error/Message").text or ""
        assert len(message) <= 1024, f"{action}: a message of {len(message)} characters"


def hostile_request(server, known: dict, data) -> None:
    kind = data.draw(st.sampled_from(["timestamp", "list-keys", "wildcard", "method", "huge-value", "long-url"]),
                     label="input class")
    if kind == "timestamp":
        action, path = data.draw(st.sampled_from(TIMESTAMP_MEMBERS), label="timestamp member")
        params = _with(minimal_params(action, known), path, data.draw(st.sampled_from(OVERFLOWING_TIMES)))
    elif kind == "list-keys":
        action, path = data.draw(st.sampled_from(LIST_MEMBERS), label="list member")
        params = _with(minimal_params(action, known), path, data.draw(st.one_of(SPECIAL, TEXT)))
        how = data.draw(st.sampled_from(["bare", "no-leaf", "index-only"]))
        if how == "bare":  # Name.1.Member -> Name.Member, Name.1 -> Name
            params = [(k.replace(".1", "", 1) if k == path else k, v) for k, v in params]
        elif how == "no-leaf":  # the list item's own key left out: Filter.1 instead of Filter.1.Name
            params = [(k.rsplit(".", 1)[0] if k == path and not k.endswith(".1") else k, v) for k, v in params]
        else:  # only the index, no member at all
            params = [(k, v) for k, v in params if k != path] + [(path.split(".1")[0] + ".1", "")]
    elif kind == "wildcard":
        action = data.draw(st.sampled_from(DESCRIBES_WITH_FILTERS), label="describe")
        params = [("Action", action), ("Version", "2016-11-15"),
                  ("Filter.1.Name", data.draw(st.sampled_from(FILTER_NAMES))),
                  ("Filter.1.Value.1", data.draw(st.sampled_from(PATHOLOGICAL_WILDCARDS)))]
    elif kind == "huge-value":
        action, path = data.draw(st.sampled_from(STRING_MEMBERS), label="string member")
        size = data.draw(st.sampled_from(HUGE_SIZES))
        params = _with(minimal_params(action, known), path, data.draw(st.sampled_from(["x", "i-", "*"])) * size)
    elif kind == "method":
        method = data.draw(st.sampled_from(UNUSUAL_METHODS), label="method")
        status, headers, payload = raw(server, method, "/?Action=DescribeRegions&Version=2016-11-15")
        assert status == 405 and headers.get("x-amzn-requestid"), (method, status, headers, payload[:300])
        if method == "HEAD":
            assert payload == b""
        else:
            check_hostile("DescribeRegions", status, payload, server)
        return
    else:  # a GET whose request target httptools cannot read
        size = data.draw(st.sampled_from([66_000, 200_000]))
        status, headers, payload = raw(server, "GET", "/?Action=DescribeRegions&X=" + "a" * size)
        assert headers.get("x-amzn-requestid")
        check_hostile("DescribeRegions", status, payload, server)
        return
    note(f"params: {params!r}"[:3000])
    status, payload = signed_post(server.endpoint, params)
    check_hostile(params[0][1], status, payload, server)


@settings(max_examples=120, **FUZZ_SETTINGS)
@given(data=st.data())
def test_hostile_input_classes_answer_ec2_xml_below_500(server, known, data):
    hostile_request(server, known, data)


@pytest.mark.parametrize("action, member", STRING_LIST_MEMBERS)
def test_id_lists_longer_than_a_database_binds(server, known, action, member):
    """Name.N lists longer than a database binds in one statement (PostgreSQL: 65535 parameters;
    SQLite: 250000 as Debian builds it) on every implemented operation taking a list of strings:
    instance ids, the ones the probe sent, 260,000 times; the others 70,000 times."""
    count = 260_000 if member == "InstanceId" else 70_000
    is_id, prefix = id_prefix(member)
    params = [(k, v) for k, v in minimal_params(action, known) if not k.startswith(member + ".")]
    params += [(f"{member}.{n}", f"{prefix or 'i'}-{n:017x}") for n in range(1, count + 1)]
    status, payload = signed_post(server.endpoint, params)
    check_hostile(action, status, payload, server)
