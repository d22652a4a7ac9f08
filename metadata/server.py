"""The metadata service's listeners: one socket per VPC, bound to 169.254.169.254:80 inside the
VPC's network namespace (created there by a helper thread; a socket keeps its namespace for
life), all served by this process. Each request resolves its instance from the database by
(VPC, source address) with a fresh session, so state changes apply to the next request.

Every request is logged to `<state_dir>/metadata.log` (one JSON object a line: time, vpc,
source, instance, method, path, status) and to the `ec2emu.metadata` logger.
"""
from __future__ import annotations

import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from sqlalchemy import select

from hypervisor import host

from . import identity
from .tree import InstanceFacts, MetadataApp, Signer

log = logging.getLogger("ec2emu.metadata")

METADATA_ADDRESS = "169.254.169.254"
# Every state in which the guest may still run. Stopping and shutting-down included, as on AWS:
# a guest asked to stop while its boot still reads metadata (the tiny image's agent runs inside
# rcS, and busybox init powers off only once rcS ends) must get its answers, or it never stops.
# The instance keeps its private address until terminated, so no other row can claim it meanwhile.
SERVED_STATES = ("pending", "running", "stopping", "shutting-down")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30  # idle keep-alive connections do not hold a thread forever
    server: "_VpcServer"

    def version_string(self) -> str:
        return "EC2ws"

    def log_message(self, format, *args) -> None:  # noqa: A002  (our own log instead)
        pass

    def setup(self) -> None:
        super().setup()
        self._default_ttl = self.connection.getsockopt(socket.IPPROTO_IP, socket.IP_TTL)
        self._ttl = self._default_ttl

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(min(length, 65536))
        source = self.client_address[0]
        owner = self.server.owner
        try:
            reply, facts = owner.app.handle_full(self.command, self.path, self.headers, source,
                                                 self.server.vpc_id)
        except Exception:
            log.exception("metadata request %s %s from %s", self.command, self.path, source)
            reply, facts = (500, {"Content-Type": "text/plain"}, b""), None
        status, headers, body = reply[0], reply[1], reply[2]
        # Logged before answering: whoever got the answer can find it in the log.
        owner.record(self.server.vpc_id, source, facts.instance.id if facts else None,
                     self.command, self.path, status)
        # The token response leaves with TTL = the hop limit; others with the default. A new
        # request means the previous answer arrived, so nothing in flight changes TTL.
        ttl = getattr(reply, "ip_ttl", None) or self._default_ttl
        if ttl != self._ttl:
            self.connection.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
            self._ttl = ttl
        self.send_response(status)
        for k, v in headers.items():
            if k.lower() != "content-length":
                self.send_header(k, v)
        self.send_header("Content-Length", headers.get("Content-Length", str(len(body))))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = do_OPTIONS = _serve


class _VpcServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, sock: socket.socket, owner: "MetadataServer", vpc_id: str):
        super().__init__(sock.getsockname(), _Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        self.owner, self.vpc_id = owner, vpc_id


def _accepting(sock: socket.socket) -> bool:
    """Still a listening socket (an outside `ss -K` or a crash of the serving thread ends that)."""
    try:
        return sock.fileno() >= 0 and bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
    except OSError:
        return False


class MetadataServer:
    def __init__(self, session_factory, state_dir, port: int = 80, config=None):
        from emulator.config import Config

        self.session_factory = session_factory
        self.config = config or Config(state_dir=str(state_dir))  # (role credentials' key)
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.port = port
        key, cert = identity.load_or_create(self.state_dir)
        self.cert_path = identity.cert_path(self.state_dir)
        self.app = MetadataApp(self.lookup, Signer(key, cert), identity.token_secret(self.state_dir))
        self.log_path = self.state_dir / "metadata.log"
        self._log_lock = threading.Lock()
        self._lock = threading.Lock()
        self._servers: dict[str, tuple[_VpcServer, threading.Thread, str, int | None]] = {}

    # ----------------------------------------------------------------------------- listeners

    def listen(self, vpc_id: str, namespace: str) -> None:
        """Serve VPC `vpc_id` on 169.254.169.254:<port> inside `namespace` (idempotent; a
        namespace deleted and re-created since is noticed and listened on afresh)."""
        with self._lock:
            inode = host.netns_inode(namespace)
            if inode is None:
                raise FileNotFoundError(f"no network namespace {namespace}")
            current = self._servers.get(vpc_id)
            if current is not None:
                if (current[2] == namespace and current[3] == inode and current[1].is_alive()
                        and _accepting(current[0].socket)):
                    return
                log.warning("metadata service for %s: listener gone, opening it again", vpc_id)
                self._stop(vpc_id)
            sock = host.socket_in(namespace, socket.AF_INET, socket.SOCK_STREAM,
                                  bind=(METADATA_ADDRESS, self.port), listen=128)
            server = _VpcServer(sock, self, vpc_id)
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5},
                                      name=f"imds:{vpc_id}", daemon=True)
            thread.start()
            self._servers[vpc_id] = (server, thread, namespace, inode)
            log.info("metadata service for %s listening in %s", vpc_id, namespace)

    def heal(self) -> None:
        """Open again every listener whose socket was closed or whose namespace was re-created
        behind our back (listen is idempotent: a healthy one is left as it is)."""
        for vpc_id, namespace in self.listening().items():
            if host.netns_exists(namespace):
                self.listen(vpc_id, namespace)

    def close(self, vpc_id: str) -> None:
        with self._lock:
            self._stop(vpc_id)

    def close_all(self) -> None:
        with self._lock:
            for vpc_id in list(self._servers):
                self._stop(vpc_id)

    def listening(self) -> dict[str, str]:
        """vpc id -> namespace of the listeners open now."""
        with self._lock:
            return {v: s[2] for v, s in self._servers.items()}

    def _stop(self, vpc_id: str) -> None:
        entry = self._servers.pop(vpc_id, None)
        if entry is None:
            return
        server, thread, _ns, _inode = entry
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    # ----------------------------------------------------------------------------- lookups

    def lookup(self, vpc_id: str, source_ip: str) -> InstanceFacts | None:
        from emulator.addresses import interface_elastic_ips
        from emulator.attachments import listed_devices
        from emulator.instance_profiles import for_metadata
        from emulator.role_credentials import issue
        from emulator.spot import for_metadata as spot_notice
        from emulator.models import Instance, KeyPair, NetworkInterface, SecurityGroup, Subnet, Tag, Vpc
        from emulator.vpcs import gives_dns_names

        with self.session_factory() as session:
            rows = session.scalars(select(Instance).where(
                Instance.vpc_id == vpc_id, Instance.private_ip == source_ip,
                Instance.state.in_(SERVED_STATES))).all()
            if not rows:  # from one of its other interfaces' primary addresses
                owner = select(NetworkInterface.instance_id).where(
                    NetworkInterface.vpc_id == vpc_id, NetworkInterface.private_ip == source_ip)
                rows = session.scalars(select(Instance).where(
                    Instance.id.in_(owner), Instance.state.in_(SERVED_STATES))).all()
            if len(rows) != 1:
                return None
            row = rows[0]
            vpc = session.get(Vpc, row.vpc_id)
            subnet = session.get(Subnet, row.subnet_id)
            enis = session.scalars(select(NetworkInterface).where(NetworkInterface.instance_id == row.id)
                                   .order_by(NetworkInterface.device_index)).all()
            wanted_groups = {g for e in enis for g in e.security_group_ids} | set(row.security_group_ids or [])
            groups = {g.id: g.name for g in session.scalars(select(SecurityGroup).where(
                SecurityGroup.id.in_(wanted_groups)))}
            cidrs = dict(session.execute(select(Subnet.id, Subnet.cidr_block).where(
                Subnet.id.in_({e.subnet_id for e in enis}))).all()) if enis else {}
            elastic = interface_elastic_ips(session, {e.id for e in enis})
            interfaces = [{"device_index": e.device_index, "id": e.id, "mac": e.mac_address,
                           "ips": [e.private_ip, *(e.secondary_ips or [])], "subnet_id": e.subnet_id,
                           "subnet_cidr": cidrs.get(e.subnet_id, ""),
                           "groups": [(g, groups.get(g, "")) for g in e.security_group_ids],
                           # Elastic IPs on its addresses (the instance's own public IP aside)
                           "publics": {priv: pub for (eni_id, priv), pub in elastic.items()
                                       if eni_id == e.id and pub != row.public_ip}}
                          for e in enis if e.attachment_state in ("attached", "detaching")]
            key = None
            if row.key_name:
                key = session.scalars(select(KeyPair).where(
                    KeyPair.account_id == row.account_id, KeyPair.region == row.region,
                    KeyPair.name == row.key_name)).first()
            tags = {t.key: t.value for t in session.scalars(select(Tag).where(Tag.resource_id == row.id))}
            volumes = listed_devices(session, row.id)
            profile = for_metadata(session, row.id)
            notice = spot_notice(session, row.id, row.spot_request_id)
            session.expunge_all()
        role = None
        if profile is not None:
            association_id, p = profile
            credentials = issue(self.config, association_id, row.id, time.time())
            role = {"name": p.name, "credentials": credentials,
                    "info": {"Code": "Success", "LastUpdated": credentials["LastUpdated"],
                             "InstanceProfileArn": p.arn, "InstanceProfileId": p.id}}
        return InstanceFacts(
            instance=row,
            vpc_cidrs=[vpc.cidr_block] if vpc else [],
            subnet_cidr=subnet.cidr_block if subnet else "",
            security_groups=[(g, groups.get(g, "")) for g in row.security_group_ids or []],
            key_name=row.key_name if key else None,
            public_key=key.public_key if key else None,
            tags=tags, volume_devices=volumes, interfaces=interfaces, dns_names=gives_dns_names(vpc), role=role,
            spot_notice=notice)

    # ----------------------------------------------------------------------------- logging

    def record(self, vpc_id: str, source: str, instance_id: str | None, method: str, path: str,
               status: int) -> None:
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
        entry = {"time": stamp, "vpc": vpc_id,
                 "source": source, "instance": instance_id, "method": method, "path": path,
                 "status": status}
        log.info("%s %s %s %s %s -> %s", vpc_id, source, instance_id or "-", method, path, status)
        line = json.dumps(entry) + "\n"
        with self._log_lock, open(self.log_path, "a") as f:
            f.write(line)
