"""The instance metadata service: the pure tree and IMDSv2 rules with fake rows, then one real
request path through a VPC namespace from a fake guest (root only)."""
from __future__ import annotations

import base64
import http.client
import json
import os
import secrets
import shutil
import socket
import subprocess
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from metadata import identity
from metadata.tree import VERSIONS, InstanceFacts, MetadataApp, Signer

ACCOUNT = "123456789012"
PUBKEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBvQ5yq0Zp5yH3m2Cw0Zf1b5Yb0pZ0g1Xq7W9Jt3b7rT"


def fake_instance(**kw) -> SimpleNamespace:
    row = dict(
        id="i-0123456789abcdef0", account_id=ACCOUNT, region="us-east-1", reservation_id="r-0aaaabbbbccccdddd",
        launch_index=0, image_id="ami-0fedcba9876543210", instance_type="t3.micro", kernel_id=None,
        ramdisk_id=None, state="running", key_name="mykey", vpc_id="vpc-0aaaaaaaaaaaaaaaa",
        subnet_id="subnet-0bbbbbbbbbbbbbbbb", availability_zone="us-east-1a", private_ip="172.31.0.10",
        public_ip="100.64.0.7", mac_address="0a:12:34:56:78:9a", network_interface_id="eni-0cccccccccccccccc",
        security_group_ids=["sg-0ddddddddddddddd1"], launch_time=datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc),
        user_data=base64.b64encode(b"#!/bin/sh\necho hello\n").decode(), architecture="x86_64",
        root_device_name="/dev/xvda",
        block_device_mappings=[{"DeviceName": "/dev/xvda", "Ebs": {"VolumeId": "vol-1"}},
                               {"DeviceName": "/dev/sdf", "Ebs": {"VolumeId": "vol-2"}}],
        metadata_options={})
    row.update(kw)
    return SimpleNamespace(**row)


def facts_for(row, **kw) -> InstanceFacts:
    base = dict(instance=row, vpc_cidrs=["172.31.0.0/16"], subnet_cidr="172.31.0.0/20",
                security_groups=[("sg-0ddddddddddddddd1", "default")], key_name="mykey",
                public_key=PUBKEY, tags={"Name": "web", "team": "blue"})
    base.update(kw)
    return InstanceFacts(**base)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("imds")
    key, cert = identity.load_or_create(d)
    return d, key, cert


class World:
    """Instances by (vpc, ip), a clock, and an app over them."""

    def __init__(self, keys):
        self.state_dir, key, cert = keys
        self.now = 1_700_000_000.0
        self.by_addr: dict = {}
        self.app = MetadataApp(lambda vpc, ip: self.by_addr.get((vpc, ip)), Signer(key, cert),
                               identity.token_secret(self.state_dir), clock=lambda: self.now)

    def add(self, facts: InstanceFacts) -> InstanceFacts:
        row = facts.instance
        self.by_addr[(row.vpc_id, row.private_ip)] = facts
        return facts

    def get(self, path, headers=None, ip="172.31.0.10", vpc="vpc-0aaaaaaaaaaaaaaaa", method="GET"):
        return self.app.handle(method, path, headers or {}, ip, vpc)


@pytest.fixture
def world(keys):
    w = World(keys)
    w.add(facts_for(fake_instance()))
    return w


def text(reply) -> str:
    status, _headers, body = reply
    assert status == 200, (status, body)
    return body.decode()


# ------------------------------------------------------------------------------ the tree

def test_versions_and_top_listings(world):
    versions = text(world.get("/")).split("\n")
    assert versions == list(VERSIONS) and versions[-1] == "latest" and "2021-03-23" in versions
    assert text(world.get("/latest")) == "dynamic\nmeta-data\nuser-data"
    assert text(world.get("/latest/")) == "dynamic\nmeta-data\nuser-data"
    for version in ("2021-03-23", "2009-04-04", "1.0", "2030-01-01"):
        assert text(world.get(f"/{version}/meta-data/instance-id")) == "i-0123456789abcdef0"
    assert world.get("/banana/meta-data/instance-id")[0] == 404
    assert world.get("/latest/meta-data/no-such-thing")[0] == 404
    assert world.get("/latest/meta-data/instance-id/extra")[0] == 404
    assert text(world.get("/latest/dynamic/")) == "instance-identity/"
    assert text(world.get("/latest/dynamic/instance-identity/")) == "document\npkcs7\nrsa2048\nsignature"


def test_meta_data_listing_and_values(world):
    listing = text(world.get("/latest/meta-data/"))
    assert listing == text(world.get("/latest/meta-data"))
    assert listing.split("\n") == [
        "ami-id", "ami-launch-index", "ami-manifest-path", "block-device-mapping/", "hostname",
        "instance-action", "instance-id", "instance-life-cycle", "instance-type", "local-hostname",
        "local-ipv4", "mac", "network/", "placement/", "profile", "public-hostname", "public-ipv4",
        "public-keys/", "reservation-id", "security-groups", "services/"]
    g = lambda p: text(world.get("/latest/meta-data/" + p))  # noqa: E731
    assert g("ami-id") == "ami-0fedcba9876543210"
    assert g("ami-launch-index") == "0"
    assert g("ami-manifest-path") == "(unknown)"
    assert g("block-device-mapping/") == "ami\nebs1\nroot"
    assert g("block-device-mapping/ami") == "/dev/xvda" and g("block-device-mapping/ebs1") == "sdf"
    assert g("hostname") == g("local-hostname") == "ip-172-31-0-10.ec2.internal"
    assert g("instance-action") == "none"
    assert g("instance-life-cycle") == "on-demand"
    assert g("instance-type") == "t3.micro"
    assert g("local-ipv4") == "172.31.0.10"
    assert g("mac") == "0a:12:34:56:78:9a"
    assert g("placement/") == "availability-zone\navailability-zone-id\nregion"
    assert g("placement/availability-zone") == "us-east-1a"
    assert g("placement/availability-zone-id") == "use1-az6"
    assert g("placement/region") == "us-east-1"
    assert g("profile") == "default-hvm"
    assert g("public-hostname") == "ec2-100-64-0-7.compute-1.amazonaws.com"
    assert g("public-ipv4") == "100.64.0.7"
    assert g("public-keys/") == "0=mykey"
    assert g("public-keys/0") == g("public-keys/0/") == "openssh-key"
    assert g("public-keys/0/openssh-key") == PUBKEY + " mykey\n"
    assert g("reservation-id") == "r-0aaaabbbbccccdddd"
    assert g("security-groups") == "default"
    assert g("services/") == "domain\npartition"
    assert g("services/domain") == "amazonaws.com" and g("services/partition") == "aws"
    assert g("network/") == "interfaces/" and g("network/interfaces/") == "macs/"
    assert g("network/interfaces/macs/") == "0a:12:34:56:78:9a/"
    mac = "network/interfaces/macs/0a:12:34:56:78:9a/"
    assert g(mac).split("\n") == [
        "device-number", "interface-id", "ipv4-associations/", "local-hostname", "local-ipv4s", "mac",
        "owner-id", "public-hostname", "public-ipv4s", "security-group-ids", "security-groups",
        "subnet-id", "subnet-ipv4-cidr-block", "vpc-id", "vpc-ipv4-cidr-block", "vpc-ipv4-cidr-blocks"]
    assert g(mac + "device-number") == "0"
    assert g(mac + "owner-id") == ACCOUNT
    assert g(mac + "local-ipv4s") == "172.31.0.10"
    assert g(mac + "public-ipv4s") == "100.64.0.7"
    assert g(mac + "ipv4-associations/100.64.0.7") == "172.31.0.10"
    assert g(mac + "security-group-ids") == "sg-0ddddddddddddddd1"
    assert g(mac + "subnet-id") == "subnet-0bbbbbbbbbbbbbbbb"
    assert g(mac + "subnet-ipv4-cidr-block") == "172.31.0.0/20"
    assert g(mac + "vpc-id") == "vpc-0aaaaaaaaaaaaaaaa"
    assert g(mac + "vpc-ipv4-cidr-block") == g(mac + "vpc-ipv4-cidr-blocks") == "172.31.0.0/16"
    assert world.get("/latest/meta-data/tags/instance/Name")[0] == 404  # tags not enabled


def test_optional_parts(keys):
    world = World(keys)
    row = fake_instance(public_ip=None, key_name=None, user_data=None, kernel_id="aki-01234567",
                        ramdisk_id="ari-01234567", region="eu-west-1", availability_zone="eu-west-1b",
                        metadata_options={"InstanceMetadataTags": "enabled"})
    world.add(facts_for(row, key_name=None, public_key=None))
    listing = text(world.get("/latest/meta-data/")).split("\n")
    for absent in ("public-hostname", "public-ipv4", "public-keys/"):
        assert absent not in listing
    for present in ("kernel-id", "ramdisk-id", "tags/"):
        assert present in listing
    assert text(world.get("/latest/meta-data/kernel-id")) == "aki-01234567"
    assert text(world.get("/latest/meta-data/hostname")) == "ip-172-31-0-10.eu-west-1.compute.internal"
    assert text(world.get("/latest/meta-data/placement/availability-zone-id")) == "euw1-az1"
    assert text(world.get("/latest/meta-data/tags/instance")) == "Name\nteam"
    assert text(world.get("/latest/meta-data/tags/instance/team")) == "blue"
    assert world.get("/latest/user-data")[0] == 404
    assert text(world.get("/latest/")) == "dynamic\nmeta-data"
    assert world.get("/latest/meta-data/public-ipv4")[0] == 404


def test_user_data_is_decoded(world):
    status, headers, body = world.get("/latest/user-data")
    assert status == 200 and body == b"#!/bin/sh\necho hello\n"
    status, headers, body = world.get("/latest/user-data", method="HEAD")
    assert status == 200 and body == b"" and headers["Content-Length"] == str(len(b"#!/bin/sh\necho hello\n"))


def test_identity_document_and_signatures(world, keys, tmp_path):
    _d, _key, cert = keys
    doc_text = text(world.get("/latest/dynamic/instance-identity/document"))
    doc = json.loads(doc_text)
    assert doc == {
        "accountId": ACCOUNT, "architecture": "x86_64", "availabilityZone": "us-east-1a",
        "billingProducts": None, "devpayProductCodes": None, "marketplaceProductCodes": None,
        "imageId": "ami-0fedcba9876543210", "instanceId": "i-0123456789abcdef0", "instanceType": "t3.micro",
        "kernelId": None, "pendingTime": "2024-05-06T07:08:09Z", "privateIp": "172.31.0.10",
        "ramdiskId": None, "region": "us-east-1", "version": "2017-09-30"}
    assert '  "accountId" : "123456789012",\n' in doc_text  # AWS's layout
    sig = base64.b64decode(text(world.get("/latest/dynamic/instance-identity/signature")))
    cert.public_key().verify(sig, doc_text.encode(), padding.PKCS1v15(), hashes.SHA256())
    if not shutil.which("openssl"):
        pytest.skip("openssl CLI absent")
    (tmp_path / "doc").write_text(doc_text)
    (tmp_path / "cert.pem").write_bytes(identity.cert_path(keys[0]).read_bytes())
    for name, extra in (("pkcs7", ["-content", str(tmp_path / "doc")]), ("rsa2048", [])):
        body = text(world.get(f"/latest/dynamic/instance-identity/{name}"))
        assert all(len(line) <= 64 for line in body.split("\n"))
        (tmp_path / name).write_text(f"-----BEGIN PKCS7-----\n{body}\n-----END PKCS7-----\n")
        out = subprocess.run(["openssl", "smime", "-verify", "-inform", "PEM", "-in", str(tmp_path / name),
                              "-certfile", str(tmp_path / "cert.pem"), "-CAfile", str(tmp_path / "cert.pem"),
                              *extra], capture_output=True)
        assert out.returncode == 0, out.stderr
        assert out.stdout.decode() == doc_text
    # The same key and certificate come back from the state dir.
    _k2, c2 = identity.load_or_create(keys[0])
    assert c2 == cert and isinstance(c2, x509.Certificate)


def test_tokens(world, keys):
    put = lambda ttl=None, **h: world.app.handle(  # noqa: E731
        "PUT", "/latest/api/token", {**({"X-aws-ec2-metadata-token-ttl-seconds": ttl} if ttl else {}), **h},
        "172.31.0.10", "vpc-0aaaaaaaaaaaaaaaa")
    for bad in (None, "0", "21601", "abc", "-5"):
        assert put(bad)[0] == 400, bad
    assert put("60", **{"X-Forwarded-For": "1.2.3.4"})[0] == 403
    reply = put("60")
    status, headers, token = reply
    assert status == 200 and headers["X-Aws-Ec2-Metadata-Token-Ttl-Seconds"] == "60" and token
    assert reply.ip_ttl == 1  # HttpPutResponseHopLimit default
    token = token.decode()
    ok = world.get("/latest/meta-data/instance-id", {"X-aws-ec2-metadata-token": token})
    assert ok[0] == 200 and ok[1]["X-Aws-Ec2-Metadata-Token-Ttl-Seconds"] == "60"
    assert world.get("/latest/meta-data/instance-id", {"X-aws-ec2-metadata-token": token + "x"})[0] == 401
    assert world.get("/latest/meta-data/instance-id", {"X-aws-ec2-metadata-token": "garbage"})[0] == 401
    assert put("21600")[0] == 200
    # A token works for its own instance only, even through another app with the same secret.
    other = world.add(facts_for(fake_instance(id="i-0999999999999999f", private_ip="172.31.0.11",
                                              public_ip=None)))
    assert world.get("/latest/meta-data/instance-id", {"X-aws-ec2-metadata-token": token},
                     ip="172.31.0.11")[0] == 401
    twin = MetadataApp(world.app.lookup, world.app.signer, identity.token_secret(keys[0]),
                       clock=lambda: world.now)
    assert twin.handle("GET", "/latest/meta-data/instance-id", {"x-aws-ec2-metadata-token": token},
                       "172.31.0.10", "vpc-0aaaaaaaaaaaaaaaa")[0] == 200
    world.now += 61
    assert world.get("/latest/meta-data/instance-id", {"X-aws-ec2-metadata-token": token})[0] == 401
    # HttpTokens=required: no token, 401; a valid token, 200.
    other.instance.metadata_options = {"HttpTokens": "required", "HttpPutResponseHopLimit": 3}
    assert world.get("/latest/meta-data/instance-id", ip="172.31.0.11")[0] == 401
    reply = world.app.handle("PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "5"},
                             "172.31.0.11", "vpc-0aaaaaaaaaaaaaaaa")
    assert reply.ip_ttl == 3
    got = world.get("/latest/meta-data/instance-id", {"x-aws-ec2-metadata-token": reply[2].decode()},
                    ip="172.31.0.11")
    assert got[0] == 200 and got[2] == b"i-0999999999999999f"
    # Endpoint disabled: 403, empty body, for everything.
    other.instance.metadata_options = {"HttpEndpoint": "disabled"}
    assert world.get("/latest/meta-data/", ip="172.31.0.11")[:3:2] == (403, b"")
    assert world.app.handle("PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "5"},
                            "172.31.0.11", "vpc-0aaaaaaaaaaaaaaaa")[0] == 403
    # Methods and paths.
    assert world.app.handle("POST", "/latest/meta-data/", {}, "172.31.0.10", "vpc-0aaaaaaaaaaaaaaaa")[0] == 405
    assert world.app.handle("PUT", "/latest/meta-data/", {"X-aws-ec2-metadata-token-ttl-seconds": "5"},
                            "172.31.0.10", "vpc-0aaaaaaaaaaaaaaaa")[0] == 405


def test_unknown_source_sees_nobody(world):
    for ip, vpc in (("172.31.0.99", "vpc-0aaaaaaaaaaaaaaaa"), ("172.31.0.10", "vpc-0ffffffffffffffff")):
        status, _h, body = world.app.handle("GET", "/latest/meta-data/instance-id", {}, ip, vpc)
        assert status == 404 and b"i-0" not in body
        assert world.app.handle("PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "9"},
                                ip, vpc)[0] == 404


# ------------------------------------------------------------------ through a real namespace

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(t) for t in ("ip", "nft", "dnsmasq", "busybox")),
    reason="needs root, iproute2, nftables, dnsmasq and busybox")


def _http(sock: socket.socket, method: str, path: str, headers: dict | None = None, timeout: float = 3.0):
    conn = http.client.HTTPConnection("169.254.169.254", timeout=timeout)
    sock.settimeout(timeout)
    sock.connect(("169.254.169.254", 80))
    conn.sock = sock
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


@needs_root
def test_real_requests_from_a_guest_namespace(tmp_path):
    from sqlalchemy import update

    from emulator import db
    from emulator.models import Base, Instance, KeyPair, SecurityGroup, Subnet, Tag, Vpc
    from hypervisor import host
    from hypervisor.network import Network
    from metadata.server import MetadataServer

    from .test_network import FakeGuest, our_leftovers, rid, sh

    engine = db.make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    Base.metadata.create_all(engine)
    Session = db.session_factory(engine)
    vpc_id, subnet_id, iid = rid("vpc"), rid("subnet"), rid("i")
    mac = "0a:aa:bb:cc:dd:01"
    with Session() as s:
        own = dict(account_id=ACCOUNT, region="us-east-1")
        s.add(Vpc(id=vpc_id, cidr_block="10.20.0.0/16", **own))
        s.add(Subnet(id=subnet_id, vpc_id=vpc_id, cidr_block="10.20.1.0/24", availability_zone="us-east-1a", **own))
        s.add(SecurityGroup(id="sg-0123456789abcdef0", vpc_id=vpc_id, name="web", description="w", **own))
        s.add(KeyPair(id="key-0123456789abcdef0", name="k1", key_type="ed25519", fingerprint="f",
                      public_key=PUBKEY, **own))
        s.add(Tag(resource_id=iid, key="Name", value="real", resource_type="instance", **own))
        s.add(Instance(id=iid, reservation_id="r-0123456789abcdef0", image_id="ami-0123456789abcdef0",
                       instance_type="t3.micro", state="running", key_name="k1", vpc_id=vpc_id,
                       subnet_id=subnet_id, availability_zone="us-east-1a", private_ip="10.20.1.10",
                       mac_address=mac, network_interface_id="eni-0123456789abcdef0",
                       security_group_ids=["sg-0123456789abcdef0"], user_data=base64.b64encode(b"hi").decode(),
                       metadata_options={}, **own))
        s.commit()

    net = Network(tmp_path / "net", prefix=f"ec2et{secrets.token_hex(3)}")
    server = MetadataServer(Session, tmp_path / "state")
    guests: list[FakeGuest] = []
    container = f"ec2t-ctr-{secrets.token_hex(3)}"
    try:
        ns = net.ensure_vpc(vpc_id, "us-east-1", [(subnet_id, "10.20.1.0/24")])
        server.listen(vpc_id, ns)
        server.listen(vpc_id, ns)  # idempotent
        g = FakeGuest(tmp_path, net.plug(iid, vpc_id, subnet_id, mac, "10.20.1.10", ""), mac)
        guests.append(g)
        assert g.dhcp()["ip"] == "10.20.1.10"
        # IMDSv1 with busybox wget (FACTS: its -T segfaults; use timeout).
        out = g.run("timeout", "5", "busybox", "wget", "-q", "-O", "-",
                    "http://169.254.169.254/latest/meta-data/instance-id").stdout
        assert out == iid
        out = g.run("timeout", "5", "busybox", "wget", "-q", "-O", "-",
                    "http://169.254.169.254/latest/meta-data/public-keys/0/openssh-key").stdout
        assert out == PUBKEY + " k1\n"
        # IMDSv2.
        status, token = _http(g.socket(), "PUT", "/latest/api/token",
                              {"X-aws-ec2-metadata-token-ttl-seconds": "300"})
        assert status == 200
        assert _http(g.socket(), "GET", "/latest/meta-data/security-groups",
                     {"X-aws-ec2-metadata-token": token}) == (200, "web")
        assert _http(g.socket(), "GET", "/latest/user-data") == (200, "hi")
        # ModifyInstanceMetadataOptions takes effect on the next request.
        with Session() as s:
            s.execute(update(Instance).where(Instance.id == iid).values(
                metadata_options={"HttpTokens": "required"}))
            s.commit()
        assert _http(g.socket(), "GET", "/latest/meta-data/instance-id")[0] == 401
        assert _http(g.socket(), "GET", "/latest/meta-data/instance-id",
                     {"X-aws-ec2-metadata-token": token}) == (200, iid)

        # Hop limit: a "container" behind the guest (one more hop, NATed) gets no token with
        # the default limit of 1, and gets one with 2; plain GETs reach it either way.
        sh("ip", "netns", "add", container)
        sh("ip", "link", "add", "ctr0", "netns", g.ns, "type", "veth", "peer", "name", "eth0", "netns", container)
        g.run("ip", "addr", "add", "192.168.77.1/24", "dev", "ctr0")
        g.run("ip", "link", "set", "ctr0", "up")
        g.run("sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        subprocess.run(
            ["ip", "netns", "exec", g.ns, "nft", "-f", "-"], check=True, text=True,
            input="table ip ctr {\n chain post {\n type nat hook postrouting priority srcnat;\n"
                  ' oifname "eth0" masquerade\n }\n}\n')
        sh("ip", "-n", container, "addr", "add", "192.168.77.2/24", "dev", "eth0")
        sh("ip", "-n", container, "link", "set", "eth0", "up")
        sh("ip", "-n", container, "route", "add", "default", "via", "192.168.77.1")
        ctr = lambda: host.socket_in(container)  # noqa: E731
        with Session() as s:
            s.execute(update(Instance).where(Instance.id == iid).values(metadata_options={}))
            s.commit()
        assert _http(ctr(), "GET", "/latest/meta-data/instance-id") == (200, iid)
        with pytest.raises(OSError):  # socket.timeout: the answer expires one hop short
            _http(ctr(), "PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "60"}, timeout=2)
        with Session() as s:
            s.execute(update(Instance).where(Instance.id == iid).values(
                metadata_options={"HttpPutResponseHopLimit": 2}))
            s.commit()
        assert _http(ctr(), "PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "60"})[0] == 200

        # Another address in the VPC (no instance there) learns nothing.
        stranger_mac = "0a:aa:bb:cc:dd:02"
        stranger = FakeGuest(tmp_path, net.plug(rid("i"), vpc_id, subnet_id, stranger_mac, "10.20.1.11", ""),
                             stranger_mac)
        guests.append(stranger)
        assert stranger.dhcp()["ip"] == "10.20.1.11"
        status, body = _http(stranger.socket(), "GET", "/latest/meta-data/instance-id")
        assert status == 404 and iid not in body
        # A stopped instance is not served.
        with Session() as s:
            s.execute(update(Instance).where(Instance.id == iid).values(state="stopped"))
            s.commit()
        assert _http(g.socket(), "GET", "/latest/meta-data/instance-id")[0] == 404

        lines = [json.loads(line) for line in (tmp_path / "state" / "metadata.log").read_text().splitlines()]
        mine = [e for e in lines if e["instance"] == iid]
        assert {"vpc": vpc_id, "source": "10.20.1.10", "instance": iid, "method": "GET",
                "path": "/latest/meta-data/instance-id", "status": 200}.items() <= mine[0].items()
        assert any(e["method"] == "PUT" and e["status"] == 200 for e in mine)
        assert any(e["source"] == "10.20.1.11" and e["instance"] is None and e["status"] == 404 for e in lines)
        assert any(e["source"] == "10.20.1.10" and e["status"] == 404 for e in lines)  # the stopped one

        # The namespace re-created under the server (a reconciler after a crash): listen()
        # notices the new namespace and binds there.
        with Session() as s:
            s.execute(update(Instance).where(Instance.id == iid).values(state="running",
                                                                        metadata_options={}))
            s.commit()
        net.remove_vpc(vpc_id)
        ns = net.ensure_vpc(vpc_id, "us-east-1", [(subnet_id, "10.20.1.0/24")])
        sh("ip", "link", "set", g.root_if, "master", net.plug(iid, vpc_id, subnet_id, mac, "10.20.1.10", ""))
        server.listen(vpc_id, ns)
        assert _http(g.socket(), "GET", "/latest/meta-data/local-ipv4") == (200, "10.20.1.10")
        server.close(vpc_id)
        assert server.listening() == {}
    finally:
        server.close_all()
        for g in guests:
            g.close()
        sh("ip", "netns", "del", container, check=False)
        net.teardown_all()
        engine.dispose()
    assert our_leftovers(net.prefix) == []


def test_every_attached_interface_is_listed(world):
    """network/interfaces/macs/ lists each attached interface (AWS's IMDS), primary first."""
    second = {"device_index": 1, "id": "eni-0eeeeeeeeeeeeeeee", "mac": "0a:00:00:00:00:02",
              "ips": ["172.31.16.5", "172.31.16.6"], "subnet_id": "subnet-0ffffffffffffffff",
              "subnet_cidr": "172.31.16.0/20", "groups": [("sg-0ddddddddddddddd2", "web")]}
    primary = {"device_index": 0, "id": "eni-0cccccccccccccccc", "mac": "0a:12:34:56:78:9a",
               "ips": ["172.31.0.10", "172.31.0.20"], "subnet_id": "subnet-0bbbbbbbbbbbbbbbb",
               "subnet_cidr": "172.31.0.0/20", "groups": [("sg-0ddddddddddddddd1", "default")]}
    world.add(facts_for(fake_instance(), interfaces=[primary, second]))
    g = lambda p: text(world.get("/latest/meta-data/" + p))  # noqa: E731
    assert g("network/interfaces/macs/") == "0a:00:00:00:00:02/\n0a:12:34:56:78:9a/"
    mine = "network/interfaces/macs/0a:00:00:00:00:02/"
    assert g(mine + "device-number") == "1" and g(mine + "interface-id") == "eni-0eeeeeeeeeeeeeeee"
    assert g(mine + "local-ipv4s") == "172.31.16.5\n172.31.16.6"
    assert g(mine + "local-hostname") == "ip-172-31-16-5.ec2.internal"
    assert g(mine + "subnet-id") == "subnet-0ffffffffffffffff"
    assert g(mine + "subnet-ipv4-cidr-block") == "172.31.16.0/20"
    assert g(mine + "security-group-ids") == "sg-0ddddddddddddddd2" and g(mine + "security-groups") == "web"
    assert g(mine + "vpc-id") == "vpc-0aaaaaaaaaaaaaaaa"
    assert world.get("/latest/meta-data/" + mine + "public-ipv4s")[0] == 404  # the public IP is the primary's
    primary_path = "network/interfaces/macs/0a:12:34:56:78:9a/"
    assert g(primary_path + "device-number") == "0" and g(primary_path + "public-ipv4s") == "100.64.0.7"
    assert g(primary_path + "local-ipv4s") == "172.31.0.10\n172.31.0.20"


def test_elastic_ips_on_other_addresses_are_listed_per_interface(world):
    """An Elastic IP on a secondary address, or on another interface's address: listed in that
    interface's public-ipv4s and ipv4-associations/ (the primary's own public IP first)."""
    second = {"device_index": 1, "id": "eni-0eeeeeeeeeeeeeeee", "mac": "0a:00:00:00:00:02",
              "ips": ["172.31.16.5"], "subnet_id": "subnet-0ffffffffffffffff", "subnet_cidr": "172.31.16.0/20",
              "groups": [], "publics": {"172.31.16.5": "100.64.9.2"}}
    primary = {"device_index": 0, "id": "eni-0cccccccccccccccc", "mac": "0a:12:34:56:78:9a",
               "ips": ["172.31.0.10", "172.31.0.20"], "subnet_id": "subnet-0bbbbbbbbbbbbbbbb",
               "subnet_cidr": "172.31.0.0/20", "groups": [], "publics": {"172.31.0.20": "100.64.9.1"}}
    world.add(facts_for(fake_instance(), interfaces=[primary, second]))
    g = lambda p: text(world.get("/latest/meta-data/network/interfaces/macs/" + p))  # noqa: E731
    assert g("0a:12:34:56:78:9a/public-ipv4s") == "100.64.0.7\n100.64.9.1"
    assert g("0a:12:34:56:78:9a/ipv4-associations/") == "100.64.0.7\n100.64.9.1"
    assert g("0a:12:34:56:78:9a/ipv4-associations/100.64.9.1") == "172.31.0.20"
    assert g("0a:12:34:56:78:9a/ipv4-associations/100.64.0.7") == "172.31.0.10"
    assert g("0a:00:00:00:00:02/public-ipv4s") == "100.64.9.2"
    assert g("0a:00:00:00:00:02/ipv4-associations/100.64.9.2") == "172.31.16.5"
    assert text(world.get("/latest/meta-data/public-ipv4")) == "100.64.0.7"  # the instance's own


def test_no_public_hostname_where_the_vpc_gives_no_dns_names(keys):
    """A public address in a VPC whose DNS attributes give no names: public-ipv4 is listed,
    public-hostname is not (at the top or under the interface's MAC), as on AWS."""
    world = World(keys)
    row = fake_instance()
    world.add(facts_for(row, dns_names=False))
    listing = text(world.get("/latest/meta-data/")).split("\n")
    assert "public-ipv4" in listing and "public-hostname" not in listing
    mac = text(world.get("/latest/meta-data/mac"))
    assert "public-hostname" not in text(world.get(f"/latest/meta-data/network/interfaces/macs/{mac}/")).split("\n")
    world = World(keys)  # the control: the same instance where names are given
    world.add(facts_for(fake_instance()))
    assert "public-hostname" in text(world.get("/latest/meta-data/")).split("\n")
