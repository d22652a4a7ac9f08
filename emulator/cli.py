"""`ec2emu`: serve the API, report coverage of the EC2 model."""
from __future__ import annotations

import argparse
import logging
import sys


def _serve(args) -> int:
    import uvicorn

    from api.app import create_app
    from api.server import http_protocol
    from emulator.config import load_config
    from emulator.service import Cloud

    config = load_config(args.config, {
        "host": args.host, "port": args.port, "state_dir": args.state_dir,
        "database_url": args.database_url, "hypervisor": args.hypervisor,
        "default_region": args.region,
    })
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)  # a dozen INFO lines per start, none useful
    cloud = Cloud(config)
    print(f"ec2emu: EC2 API on http://{config.host}:{config.port}/ "
          f"(driver {cloud.config.hypervisor}, database {config.effective_database_url.split('@')[-1]})", flush=True)
    if cloud.metadata:
        print(f"ec2emu: instance identity documents are signed by the certificate {cloud.metadata.cert_path}",
              flush=True)
    for cred in config.credentials:
        print(f"ec2emu: access key {cred.access_key}  secret {cred.secret_key}  account {cred.account_id}",
              flush=True)
    print(f"ec2emu: try: AWS_ACCESS_KEY_ID={config.credentials[0].access_key} "
          f"AWS_SECRET_ACCESS_KEY={config.credentials[0].secret_key} "
          f"aws --endpoint-url http://{config.host}:{config.port} --region {config.default_region} "
          f"ec2 describe-instances", flush=True)
    uvicorn.run(create_app(cloud), host=config.host, port=config.port, log_level="warning",
                access_log=False, http=http_protocol())
    return 0


def _coverage(args) -> int:
    from api import model
    from emulator.registry import HANDLERS, load_handlers
    load_handlers()

    names = model.operation_names()
    wanted = set()
    if args.tier1:
        with open(args.tier1) as f:
            wanted = {line.split("#")[0].strip() for line in f} - {""}
    done = [n for n in names if n in HANDLERS]
    for n in names:
        if args.all or n in HANDLERS or n in wanted:
            print(f"{'x' if n in HANDLERS else ' '} {n}{'  (tier 1)' if n in wanted else ''}")
    print(f"{len(done)} of {len(names)} operations implemented"
          + (f"; tier 1: {len(wanted & set(done))} of {len(wanted)}" if wanted else ""))
    return 0


def _config(args):
    from emulator.config import load_config
    return load_config(getattr(args, "config", None), {
        "state_dir": getattr(args, "state_dir", None), "image_dir": getattr(args, "image_dir", None)})


class _ImageProgress:
    """A progress bar over the image files to make: each step's line shows how many are ready."""

    def __init__(self, total: int):
        self.total, self.done = total, 0

    def __call__(self, line: str) -> None:
        if line.startswith(("wrote ", "cached ")) or line.startswith("debian: ready"):
            self.done = min(self.total, self.done + 1)
        filled = round(20 * self.done / self.total)
        print(f"ec2emu images [{'#' * filled}{'-' * (20 - filled)}] {self.done}/{self.total}  {line}", flush=True)


def _images_build(args) -> int:
    from pathlib import Path

    from hypervisor.imagebuild import build

    config = _config(args)
    images_dir = config.public_image_dir
    which = {"tiny"} | ({"debian"} if args.debian else set())
    progress = _ImageProgress(3 + (1 if args.debian else 0))  # kernel, ramdisk, tiny root (+ Debian root)
    out = build(images_dir, which, progress=progress)
    if args.debian:
        from hypervisor.debian_image import build_debian, up_to_date
        from emulator.images import DEBIAN_NAME
        target = Path(images_dir) / f"{DEBIAN_NAME}.qcow2"
        if args.force or not up_to_date(target):  # built from other packages: again
            build_debian(target, progress=progress)
        progress(f"debian: ready {target.name}")
        out[target.name] = str(target)
    for name, path in sorted(out.items()):
        print(f"ec2emu images: ready {path}")
    return 0


def _client(args):
    import boto3
    from botocore.config import Config as BotoConfig

    from emulator.config import DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY
    return boto3.client("ec2", endpoint_url=args.endpoint, region_name=args.region,
                        aws_access_key_id=args.access_key or DEFAULT_ACCESS_KEY,
                        aws_secret_access_key=args.secret_key or DEFAULT_SECRET_KEY,
                        config=BotoConfig(retries={"max_attempts": 2}))


def _guest(args) -> tuple[str, str, str]:
    """-> (namespace, private ip, login user) of a running instance, asked of the API."""
    from pathlib import Path

    from hypervisor.network import Network

    ec2 = _client(args)
    inst = ec2.describe_instances(InstanceIds=[args.instance_id])["Reservations"][0]["Instances"][0]
    if inst["State"]["Name"] != "running" or not inst.get("PrivateIpAddress"):
        raise SystemExit(f"{args.instance_id} is {inst['State']['Name']}, not running")
    user = "ec2-user"
    images = ec2.describe_images(ImageIds=[inst["ImageId"]]).get("Images") or []
    if images and "Login user: " in (images[0].get("Description") or ""):
        user = images[0]["Description"].split("Login user: ")[1].split()[0]
    config = _config(args)
    namespace = Network(str(Path(config.state_dir) / "network"), prefix=config.network_prefix).namespace_of(inst["VpcId"])
    return namespace, inst["PrivateIpAddress"], user


def _ssh(args) -> int:
    """ssh into a guest from inside its VPC's namespace: the host is never on a guest network."""
    import os
    namespace, ip, user = _guest(args)
    # Keepalives: a guest that resets (reboot, forced stop) never closes the TCP connection, and
    # without them the session would hang until the host's TCP gives up (many minutes).
    cmd = ["ip", "netns", "exec", namespace, "ssh", "-o", "StrictHostKeyChecking=no",
           "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10",
           "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"]
    if args.identity:
        cmd += ["-i", args.identity]
    cmd += [f"{args.login or user}@{ip}", *args.command]
    os.execvp(cmd[0], cmd)


def _port_forward(args) -> int:
    """127.0.0.1:LOCAL on the host -> the guest's PORT, connecting from inside the VPC namespace."""
    import socket
    import threading

    from hypervisor.host import socket_in

    namespace, ip, _ = _guest(args)
    local, _, remote = args.ports.partition(":")
    remote = remote or local
    listener = socket.create_server(("127.0.0.1", int(local)))
    print(f"ec2emu: 127.0.0.1:{local} -> {args.instance_id} {ip}:{remote} (Ctrl-C to stop)", flush=True)

    def pipe(a, b):
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def serve(client):
        upstream = socket_in(namespace)
        try:
            upstream.connect((ip, int(remote)))
        except OSError as exc:
            print(f"ec2emu: cannot reach {ip}:{remote}: {exc}", flush=True)
            client.close()
            return
        threading.Thread(target=pipe, args=(client, upstream), daemon=True).start()
        pipe(upstream, client)

    try:
        while True:
            client, _ = listener.accept()
            threading.Thread(target=serve, args=(client,), daemon=True).start()
    except KeyboardInterrupt:
        return 0


def _env(args) -> int:
    """The shell environment that points clients at this emulator, for `eval "$(ec2emu env)"`:
    boto3, the AWS CLI, the JavaScript SDK and Ansible (AWS_*), and euca2ools 3, which reads
    EC2_URL and signs for AWS_AUTH_REGION (else `undefined-<pid>`, which no region answers)."""
    import shlex

    from emulator.catalogue import REGIONS
    from emulator.config import load_config
    config = load_config(args.config, {"default_region": args.region})
    if config.default_region not in REGIONS:
        raise SystemExit(f"ec2emu env: no region {config.default_region!r} here (one of: {', '.join(REGIONS)})")
    if args.access_key:
        cred = config.account_for(args.access_key)
        if cred is None:
            raise SystemExit(f"ec2emu env: {args.access_key} is none of the configured access keys")
    else:
        cred = config.credentials[0]
    host = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(config.host, config.host)
    endpoint = (args.endpoint or f"http://{host}:{config.port}").rstrip("/")
    region = config.default_region
    print(f"# ec2emu at {endpoint}/, account {cred.account_id}, region {region}: eval \"$(ec2emu env)\"")
    print("unset AWS_PROFILE AWS_SESSION_TOKEN AWS_SECURITY_TOKEN  # else a real profile or token would be used")
    for name, value in (
            ("AWS_ENDPOINT_URL", endpoint),             # boto3, the AWS CLI, the JavaScript SDK v3
            ("AWS_ACCESS_KEY_ID", cred.access_key), ("AWS_SECRET_ACCESS_KEY", cred.secret_key),
            ("AWS_DEFAULT_REGION", region), ("AWS_REGION", region),  # AWS_REGION: the JS SDK, Ansible
            ("EC2_URL", endpoint + "/"),                # euca2ools
            ("AWS_AUTH_REGION", region),                # euca2ools: the region it signs for
            ("AWS_ACCESS_KEY", cred.access_key), ("AWS_SECRET_KEY", cred.secret_key),  # older tools' names
            ("EC2_ACCESS_KEY", cred.access_key), ("EC2_SECRET_KEY", cred.secret_key)):
        print(f"export {name}={shlex.quote(value)}")
    return 0


def _spot_interrupt(args) -> int:
    """The admin call InterruptSpotInstances (api/admin.py), signed with SigV4 as boto3 signs."""
    import urllib.error
    import urllib.request

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from api.admin import PATH
    from emulator.config import DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY

    form = {"Action": "InterruptSpotInstances", "NoticeSeconds": str(args.notice),
            **{f"InstanceId.{n}": iid for n, iid in enumerate([args.instance_id, *args.more], 1)}}
    request = AWSRequest("POST", args.endpoint.rstrip("/") + PATH, data=form,
                         headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    SigV4Auth(Credentials(args.access_key or DEFAULT_ACCESS_KEY, args.secret_key or DEFAULT_SECRET_KEY),
              "ec2", args.region).add_auth(request)
    prepared = request.prepare()
    body = prepared.body.encode() if isinstance(prepared.body, str) else prepared.body
    try:
        urllib.request.urlopen(urllib.request.Request(prepared.url, data=body, headers=dict(prepared.headers),
                                                      method="POST"), timeout=30)
    except urllib.error.HTTPError as exc:  # the API's XML error
        print(exc.read().decode(errors="replace"), file=sys.stderr)
        return 1
    print(f"ec2emu: interruption notice given; carried out in {args.notice} s")
    return 0


def _add_client_args(p) -> None:
    p.add_argument("instance_id")
    p.add_argument("--endpoint", default="http://127.0.0.1:8773")
    p.add_argument("--region", default="us-east-1")
    p.add_argument("--access-key")
    p.add_argument("--secret-key")
    p.add_argument("--state-dir")
    p.add_argument("--config")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ec2emu", description="A local EC2 emulator")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the EC2 API server")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--state-dir")
    serve.add_argument("--database-url")
    serve.add_argument("--hypervisor", choices=["libvirt", "none", "auto"])
    serve.add_argument("--region", help="region for requests that do not name one (SigV2)")
    serve.add_argument("--config", help="TOML file with settings (see README)")
    serve.set_defaults(fn=_serve)
    cov = sub.add_parser("coverage", help="list the EC2 model's operations this emulator implements")
    cov.add_argument("--all", action="store_true", help="list unimplemented operations too")
    cov.add_argument("--tier1", help="a file of operation names (one a line) to mark and count")
    cov.set_defaults(fn=_coverage)
    images = sub.add_parser("images", help="the default images").add_subparsers(dest="images", required=True)
    build = images.add_parser("build", help="build the default images from Debian packages (cached)")
    build.add_argument("--state-dir")
    build.add_argument("--image-dir")
    build.add_argument("--config")
    build.add_argument("--debian", action="store_true", help="also the Debian 12 + cloud-init image (minutes)")
    build.add_argument("--force", action="store_true", help="rebuild the Debian image even if present")
    build.set_defaults(fn=_images_build)
    ssh = sub.add_parser("ssh", help="ssh into an instance (from inside its VPC)")
    _add_client_args(ssh)
    ssh.add_argument("-i", "--identity", help="private key file (the PEM CreateKeyPair returned)")
    ssh.add_argument("-l", "--login", help="user (default: the image's login user)")
    ssh.add_argument("command", nargs="*", help="[-- COMMAND...] to run instead of a shell")
    ssh.set_defaults(fn=_ssh)
    fwd = sub.add_parser("port-forward", help="forward 127.0.0.1:LOCAL to an instance's port")
    _add_client_args(fwd)
    fwd.add_argument("ports", help="LOCAL[:REMOTE], e.g. 2222:22")
    fwd.set_defaults(fn=_port_forward)
    spot = sub.add_parser("spot", help="Spot Instances").add_subparsers(dest="spot", required=True)
    interrupt = spot.add_parser("interrupt", help="give Spot Instances an interruption notice (AWS's two minutes)")
    _add_client_args(interrupt)
    interrupt.add_argument("more", nargs="*", metavar="INSTANCE_ID", help="more instances")
    interrupt.add_argument("--notice", type=int, default=120, help="seconds until the stop or termination")
    interrupt.set_defaults(fn=_spot_interrupt)
    env = sub.add_parser("env", help='print the shell environment for clients: eval "$(ec2emu env)"')
    env.add_argument("--endpoint", help="the API's URL (default: http://HOST:PORT of the settings)")
    env.add_argument("--region", help="the region to act in (default: default_region)")
    env.add_argument("--access-key", help="one of the configured access keys (default: the first)")
    env.add_argument("--config", help="TOML file with settings (see README)")
    env.set_defaults(fn=_env)
    argv = sys.argv[1:] if argv is None else list(argv)
    tail: list[str] = []
    if "--" in argv:  # `ec2emu ssh ID [options] -- COMMAND...`
        cut = argv.index("--")
        argv, tail = argv[:cut], argv[cut + 1:]
    args = parser.parse_args(argv)
    if tail:
        if not hasattr(args, "command"):
            parser.error("'--' is only for `ec2emu ssh`")
        args.command = args.command + tail
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
