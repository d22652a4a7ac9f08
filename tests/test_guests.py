"""Real guests: libvirt/QEMU domains booted from the default images, on their VPC's network, reading
the metadata service. Everything checked is what the guest itself saw or did: its serial console
(GetConsoleOutput), commands run over SSH from inside the VPC's namespace, the metadata request log.

One libvirt-backed server for the module; guests are shared where a test allows (boots cost ~5 CPU-s).
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from hypervisor.imagebuild import default_images_dir

from .helpers import expect_error, tiny_image, unique
from .server import ROOT, Server

pytestmark = pytest.mark.slow

IMAGE_CACHE = default_images_dir()
NEEDS = ("virsh", "qemu-system-x86_64", "dnsmasq", "nft", "ssh")


def _requirements() -> str | None:
    missing = [t for t in NEEDS if shutil.which(t) is None]
    if missing:
        return "missing " + ", ".join(missing)
    if not Path(IMAGE_CACHE, "ec2emu-tiny-busybox-2026.11-x86_64.qcow2").exists():
        return f"images not built in {IMAGE_CACHE} (ec2emu images build)"
    if subprocess.run(["virsh", "-c", "qemu:///system", "version"], capture_output=True).returncode:
        return "libvirtd is not running"
    return None


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    why = _requirements()
    if why:
        pytest.skip(why)  # a failure under CI (conftest)
    prefix = "e2e" + secrets.token_hex(3)
    from .conftest import CREDENTIALS
    srv = Server(tmp_path_factory.mktemp("guests"), hypervisor="libvirt", extra_env={
        "EC2EMU_IMAGE_DIR": IMAGE_CACHE, "EC2EMU_NETWORK_PREFIX": prefix, "EC2EMU_CREDENTIALS": CREDENTIALS,
        "EC2EMU_STOP_TIMEOUT_SECONDS": "30"}).start()
    srv.prefix = prefix
    # Security groups are enforced on the wire: the default group admits only its own members.
    # As an AWS user does, open SSH in it (from anywhere: the VPC router, where `ec2emu ssh` and
    # port-forward connect from, and the namespace playing the internet).
    srv.client().authorize_security_group_ingress(GroupName="default", IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    yield srv
    _terminate_everything(srv)
    srv.stop()
    from hypervisor.network import Network
    Network(srv.state_dir / "network", prefix=prefix).teardown_all()


def _terminate_everything(srv: Server) -> None:
    from .conftest import OTHER_ACCESS_KEY, OTHER_SECRET_KEY
    for client in (srv.client(), srv.client(access_key=OTHER_ACCESS_KEY, secret_key=OTHER_SECRET_KEY)):
        ids = [i["InstanceId"] for r in client.describe_instances()["Reservations"] for i in r["Instances"]
               if i["State"]["Name"] != "terminated"]
        if ids:
            client.terminate_instances(InstanceIds=ids)
            fast_waiter(client, "instance_terminated")(InstanceIds=ids)


def fast_waiter(ec2, name: str):
    """boto3's waiter, polling often and long enough for guests booting under TCG."""
    waiter = ec2.get_waiter(name)
    return lambda **kw: waiter.wait(WaiterConfig={"Delay": 0.5, "MaxAttempts": 360}, **kw)


def _key(ec2, srv: Server) -> tuple[str, Path]:
    name = unique("key")
    pem = srv.state_dir / f"{name}.pem"
    pem.write_text(ec2.create_key_pair(KeyName=name)["KeyMaterial"])
    pem.chmod(0o600)
    return name, pem


def _console(ec2, instance_id: str, pattern: str, timeout: float = 180) -> re.Match:
    deadline = time.monotonic() + timeout
    out = ""
    while time.monotonic() < deadline:
        out = ec2.get_console_output(InstanceId=instance_id).get("Output") or ""
        m = re.search(pattern, out)
        if m:
            return m
        time.sleep(1)
    raise AssertionError(f"{pattern!r} never appeared on {instance_id}'s console:\n{out[-3000:]}")


def _ssh(srv: Server, instance_id: str, pem: Path, command: str, timeout: float = 90, login=None) -> str:
    """`ec2emu ssh`, retried until the guest's SSH server answers."""
    cmd = [sys.executable, "-m", "emulator.cli", "ssh", instance_id, "--endpoint", srv.endpoint,
           "--state-dir", str(srv.state_dir), "-i", str(pem)]
    if login:
        cmd += ["-l", login]
    env = dict(os.environ, EC2EMU_NETWORK_PREFIX=srv.prefix)
    deadline = time.monotonic() + timeout
    while True:
        try:
            proc = subprocess.run(cmd + ["--", command], cwd=ROOT, env=env, capture_output=True,
                                  text=True, timeout=60)
        except subprocess.TimeoutExpired as hung:  # e.g. the guest reset under the session
            proc = subprocess.CompletedProcess(hung.cmd, -1, "", f"timed out: {hung.stderr!r}")
        if proc.returncode == 0 or time.monotonic() > deadline:
            return proc.stdout if proc.returncode == 0 else pytest.fail(
                f"ssh {instance_id} {command!r} failed ({proc.returncode}): {proc.stderr}")
        time.sleep(2)


def _metadata_log(srv: Server) -> list[dict]:
    path = srv.state_dir / "metadata.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _domains() -> set[str]:
    out = subprocess.run(["virsh", "-c", "qemu:///system", "list", "--all", "--name"],
                         capture_output=True, text=True).stdout
    return {line.strip() for line in out.splitlines() if line.strip()}


def _namespaces(prefix: str) -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.startswith(prefix)}


def _via_public_ip(srv: Server, pem: Path, public_ip: str) -> str:
    """SSH to a public address from the namespace playing the internet; what `echo` printed."""
    proc = subprocess.run(["ip", "netns", "exec", f"{srv.prefix}-internet", "ssh", "-i", str(pem),
                           "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                           "-o", "ConnectTimeout=10", f"ec2-user@{public_ip}", "echo via-public-ip"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


USER_DATA = """#!/bin/sh
echo "ud-marker $(wget -qO- http://169.254.169.254/latest/meta-data/instance-id) \
$(wget -qO- http://169.254.169.254/latest/meta-data/public-ipv4)"
"""


def test_instance_lifecycle_on_a_real_guest(cloud):
    ec2 = cloud.client()
    key, pem = _key(ec2, cloud)
    res = ec2.run_instances(ImageId=tiny_image(ec2), MinCount=1, MaxCount=1, InstanceType="t2.micro",
                            KeyName=key, UserData=USER_DATA)
    iid = res["Instances"][0]["InstanceId"]
    assert res["Instances"][0]["State"]["Name"] == "pending"
    fast_waiter(ec2, "instance_running")(InstanceIds=[iid])
    desc = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]

    # The guest read its own identity and public address from the metadata service.
    m = _console(ec2, iid, r"ud-marker (\S+) (\S+)")
    assert m.group(1) == iid and m.group(2) == desc["PublicIpAddress"]
    seen = [r for r in _metadata_log(cloud) if r["instance"] == iid]
    assert seen and seen[0]["source"] == desc["PrivateIpAddress"]
    assert {"PUT", "GET"} <= {r["method"] for r in seen}  # the agent speaks IMDSv2

    # SSH with the key pair's PEM, from inside the VPC; sudo as on Amazon Linux.
    out = _ssh(cloud, iid, pem, "id -un; sudo id -u; hostname; ip -4 -o addr show eth0")
    assert out.split()[:2] == ["ec2-user", "0"]
    assert desc["PrivateIpAddress"] in out

    # A port forward from the host's loopback reaches the guest's SSH server inside the VPC.
    from .server import free_port
    local = free_port()
    fwd = subprocess.Popen([sys.executable, "-m", "emulator.cli", "port-forward", iid, f"{local}:22",
                            "--endpoint", cloud.endpoint, "--state-dir", str(cloud.state_dir)],
                           cwd=ROOT, env=dict(os.environ, EC2EMU_NETWORK_PREFIX=cloud.prefix),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert "->" in fwd.stdout.readline()  # listening
        import socket
        with socket.create_connection(("127.0.0.1", local), timeout=10) as conn:
            assert conn.recv(64).startswith(b"SSH-2.0-")
    finally:
        fwd.terminate()
        fwd.wait(10)

    # The public address is 1:1 NAT from the namespace playing the internet.
    assert _via_public_ip(cloud, pem, desc["PublicIpAddress"]) == "via-public-ip"

    # IMDSv2 required, live: a token-less request is refused, one with a token answered.
    ec2.modify_instance_metadata_options(InstanceId=iid, HttpTokens="required")
    v1 = _ssh(cloud, iid, pem, "wget -qO- http://169.254.169.254/latest/meta-data/instance-id; echo rc=$?")
    assert "rc=1" in v1 and iid not in v1
    v2 = _ssh(cloud, iid, pem,
              "T=$(printf 'PUT /latest/api/token HTTP/1.0\\r\\nX-aws-ec2-metadata-token-ttl-seconds: 60\\r\\n\\r\\n'"
              " | nc 169.254.169.254 80 | tr -d '\\r' | sed '1,/^$/d');"
              " wget -qO- --header \"X-aws-ec2-metadata-token: $T\" http://169.254.169.254/latest/meta-data/instance-id")
    assert v2.strip() == iid
    assert any(r["instance"] == iid and r["status"] == 401 for r in _metadata_log(cloud))

    # Stop (ACPI, graceful), start again (a new public IP), reboot.
    ec2.stop_instances(InstanceIds=[iid])
    fast_waiter(ec2, "instance_stopped")(InstanceIds=[iid])
    _console(ec2, iid, r"ec2emu: (shutting down|poweroff)|reboot: Power down")
    assert iid in _domains()  # a stopped instance keeps its domain and disk
    ec2.start_instances(InstanceIds=[iid])
    fast_waiter(ec2, "instance_running")(InstanceIds=[iid])
    assert _ssh(cloud, iid, pem, "cat /etc/hostname; echo up").strip().endswith("up")
    # A new public address, reachable from the internet (the old one was released on stop).
    again = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["PublicIpAddress"]
    assert _via_public_ip(cloud, pem, again) == "via-public-ip"
    # Reboot: the guest really boots again (a new kernel boot id), and stays 'running'.
    boot = _ssh(cloud, iid, pem, "cat /proc/sys/kernel/random/boot_id").strip()
    ec2.reboot_instances(InstanceIds=[iid])
    deadline = time.monotonic() + 120
    while _ssh(cloud, iid, pem, "cat /proc/sys/kernel/random/boot_id", timeout=120).strip() == boot:
        assert time.monotonic() < deadline, "the guest never rebooted"
        time.sleep(1)
    assert ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["State"]["Name"] == "running"

    # Terminate: nothing of it stays on the host.
    ec2.terminate_instances(InstanceIds=[iid])
    fast_waiter(ec2, "instance_terminated")(InstanceIds=[iid])
    assert iid not in _domains()
    assert not (cloud.state_dir / "instances" / iid).exists()
    assert _namespaces(cloud.prefix) == set()  # its VPC had no other guest
    dnsmasq = subprocess.run(["pgrep", "-af", "dnsmasq"], capture_output=True, text=True).stdout
    assert cloud.prefix not in dnsmasq
    expect_error("IncorrectInstanceState", ec2.start_instances, InstanceIds=[iid])


def test_guests_see_only_their_own_metadata(cloud):
    from .conftest import OTHER_ACCESS_KEY, OTHER_SECRET_KEY
    mine = cloud.client()
    theirs = cloud.client(access_key=OTHER_ACCESS_KEY, secret_key=OTHER_SECRET_KEY)
    key, pem = _key(mine, cloud)
    zone = mine.describe_availability_zones()["AvailabilityZones"][0]["ZoneName"]
    a = mine.run_instances(ImageId=tiny_image(mine), MinCount=2, MaxCount=2, KeyName=key, UserData=USER_DATA,
                           Placement={"AvailabilityZone": zone})["Instances"]
    b = theirs.run_instances(ImageId=tiny_image(theirs), MinCount=1, MaxCount=1, UserData=USER_DATA,
                             Placement={"AvailabilityZone": zone})["Instances"][0]
    # Another account's default VPC overlaps: the same private address, a different VPC.
    assert b["PrivateIpAddress"] == a[0]["PrivateIpAddress"] and b["VpcId"] != a[0]["VpcId"]
    for client, inst in ((mine, a[0]), (mine, a[1]), (theirs, b)):
        fast_waiter(client, "instance_running")(InstanceIds=[inst["InstanceId"]])
        assert _console(client, inst["InstanceId"], r"ud-marker (\S+)").group(1) == inst["InstanceId"]

    # A guest claiming its neighbour's address gets nothing: the port drops spoofed frames.
    # (busybox nc cannot bind a source address: the route to the metadata address names it.)
    def ask_from(source: str) -> str:
        return ("gw=$(ip route get 169.254.169.254 | sed -n 's/.* via \\([0-9.]*\\) .*/\\1/p');"
                f" sudo ip route replace 169.254.169.254/32 ${{gw:+via $gw}} dev eth0 src {source}"
                " && echo routed=ok;"
                " printf 'GET /latest/meta-data/instance-id HTTP/1.0\\r\\n\\r\\n'"
                " | timeout 8 nc 169.254.169.254 80; echo rc=$?")
    own_ip = a[0]["PrivateIpAddress"]
    # Positive control: the same request, routed from its own address, is answered.
    own = _ssh(cloud, a[0]["InstanceId"], pem, ask_from(own_ip))
    assert "routed=ok" in own and a[0]["InstanceId"] in own and "rc=0" in own, own
    spoofed = a[1]["PrivateIpAddress"]
    before = len(_metadata_log(cloud))
    out = _ssh(cloud, a[0]["InstanceId"], pem,
               f"sudo ip addr add {spoofed}/32 dev eth0 && echo added=ok; {ask_from(spoofed)};"
               f" ( {ask_from(own_ip)} ) >/dev/null; sudo ip addr del {spoofed}/32 dev eth0 && echo removed=ok")
    assert "added=ok" in out and "routed=ok" in out and "removed=ok" in out, out  # really tried
    assert "rc=0" not in out and a[1]["InstanceId"] not in out and a[0]["InstanceId"] not in out, out
    assert not [r for r in _metadata_log(cloud)[before:] if r["source"] == spoofed]
    mine.terminate_instances(InstanceIds=[i["InstanceId"] for i in a])
    theirs.terminate_instances(InstanceIds=[b["InstanceId"]])
    fast_waiter(mine, "instance_terminated")(InstanceIds=[i["InstanceId"] for i in a])
    fast_waiter(theirs, "instance_terminated")(InstanceIds=[b["InstanceId"]])


def test_server_killed_while_guests_run(cloud):
    ec2 = cloud.client()
    key, pem = _key(ec2, cloud)
    ids = [i["InstanceId"] for i in ec2.run_instances(ImageId=tiny_image(ec2), MinCount=2, MaxCount=2,
                                                      KeyName=key)["Instances"]]
    fast_waiter(ec2, "instance_running")(InstanceIds=ids)
    _ssh(cloud, ids[0], pem, "true")

    cloud.stop(signal.SIGKILL)
    # While the server is down, one guest's domain vanishes behind its back.
    subprocess.run(["virsh", "-c", "qemu:///system", "destroy", ids[1]], capture_output=True)
    subprocess.run(["virsh", "-c", "qemu:///system", "undefine", ids[1]], capture_output=True)
    assert ids[0] in _domains()
    cloud.start()
    ec2 = cloud.client()

    states = {i["InstanceId"]: i for r in ec2.describe_instances(InstanceIds=ids)["Reservations"]
              for i in r["Instances"]}
    assert states[ids[0]]["State"]["Name"] == "running"  # kept running through the crash
    assert _ssh(cloud, ids[0], pem, "echo still-here").strip() == "still-here"
    fast_waiter(ec2, "instance_terminated")(InstanceIds=[ids[1]])  # (its clean-up is a host task)
    gone = ec2.describe_instances(InstanceIds=[ids[1]])["Reservations"][0]["Instances"][0]
    assert gone["State"]["Name"] == "terminated"
    assert gone["StateReason"]["Code"] == "Server.InternalError"

    # The guest powers itself off, with shutdown behaviour 'terminate': AWS terminates it.
    ec2.modify_instance_attribute(InstanceId=ids[0], InstanceInitiatedShutdownBehavior={"Value": "terminate"})
    _ssh(cloud, ids[0], pem, "sudo sh -c 'sleep 1; poweroff' </dev/null >/dev/null 2>&1 &")
    fast_waiter(ec2, "instance_terminated")(InstanceIds=[ids[0]])
    ended = ec2.describe_instances(InstanceIds=[ids[0]])["Reservations"][0]["Instances"][0]
    assert ended["StateReason"]["Code"] == "Client.InstanceInitiatedShutdown"
    assert ids[0] not in _domains() and not (cloud.state_dir / "instances" / ids[0]).exists()


CLOUD_INIT_USER_DATA = """Content-Type: multipart/mixed; boundary="XX"
MIME-Version: 1.0

--XX
Content-Type: text/cloud-config; charset="us-ascii"

#cloud-config
runcmd:
  - echo "cc-marker $(cloud-init query ds.meta_data.instance-id 2>/dev/null || true)" > /dev/console
--XX
Content-Type: text/x-shellscript; charset="us-ascii"

#!/bin/sh
echo "script-marker $(cat /var/lib/cloud/data/instance-id)" > /dev/console
--XX--
"""


# botocore's default credential chain in the guest, nothing configured: it finds the instance
# role's credentials through the metadata service (IMDSv2: the instance requires tokens).
BOTOCORE_CREDENTIALS = ("python3 -c 'import botocore.session as s; c = s.get_session().get_credentials()"
                        ".get_frozen_credentials(); print(\"creds\", c.access_key, c.secret_key, c.token)'")


def _role_credentials_work_from_the_guest(cloud, ec2, iid: str, pem, role: str) -> None:
    """What botocore in the guest found works against the API from the host, as the instance's
    account and assumed role; DisassociateIamInstanceProfile ends it at once."""
    out = _ssh(cloud, iid, pem, BOTOCORE_CREDENTIALS, login="admin", timeout=60)
    _, access_key, secret, token = next(line for line in out.splitlines() if line.startswith("creds ")).split()
    assert access_key.startswith("ASIA")
    creds = dict(access_key=access_key, secret_key=secret, session_token=token)
    as_role = cloud.client(**creds)
    assert as_role.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["InstanceId"] == iid
    me = cloud.client(service="sts", **creds).get_caller_identity()
    assert me["Arn"] == f"arn:aws:sts::123456789012:assumed-role/{role}/{iid}"
    seen = [(r["method"], r["path"], r["status"]) for r in _metadata_log(cloud) if r["instance"] == iid]
    assert ("PUT", "/latest/api/token", 200) in seen  # IMDSv2: a token first
    assert ("GET", f"/latest/meta-data/iam/security-credentials/{role}", 200) in seen
    assoc = ec2.describe_iam_instance_profile_associations(Filters=[{"Name": "instance-id", "Values": [iid]}])
    ec2.disassociate_iam_instance_profile(AssociationId=assoc["IamInstanceProfileAssociations"][0]["AssociationId"])
    with pytest.raises(ClientError) as refused:
        as_role.describe_instances(InstanceIds=[iid])
    assert refused.value.response["Error"]["Code"] == "AuthFailure"


def test_a_spot_interruption_notice_reaches_the_guest_before_its_termination(cloud):
    """`ec2emu spot interrupt`: the guest reads spot/instance-action (404 before the notice) and
    the rebalance recommendation, while it still runs; at the notice's end it is terminated."""
    ec2 = cloud.client()
    key, pem = _key(ec2, cloud)
    inst = ec2.run_instances(ImageId=tiny_image(ec2), MinCount=1, MaxCount=1, KeyName=key,
                             InstanceMarketOptions={"MarketType": "spot"})["Instances"][0]
    iid = inst["InstanceId"]
    fast_waiter(ec2, "instance_running")(InstanceIds=[iid])
    ask = ("for p in spot/instance-action events/recommendations/rebalance instance-life-cycle; do"
           " echo \"$p=$(timeout 5 wget -qO- http://169.254.169.254/latest/meta-data/$p || echo none)\"; done")
    before = _ssh(cloud, iid, pem, ask)
    assert "instance-life-cycle=spot" in before and "spot/instance-action=none" in before, before  # no notice yet
    done = subprocess.run([sys.executable, "-m", "emulator.cli", "spot", "interrupt", iid, "--notice", "25",
                           "--endpoint", cloud.endpoint], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    after = _ssh(cloud, iid, pem, ask)
    action = json.loads(re.search(r"spot/instance-action=(\{.*\})", after).group(1))
    assert action["action"] == "terminate" and action["time"].endswith("Z"), after
    assert '"noticeTime"' in after
    state = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["State"]["Name"]
    assert state == "running"  # the guest read its notice while it ran
    fast_waiter(ec2, "instance_terminated")(InstanceIds=[iid])
    ended = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    assert ended["StateReason"]["Code"] == "Server.SpotInstanceTermination"
    served = [r for r in _metadata_log(cloud) if r["instance"] == iid and r["path"].endswith("spot/instance-action")]
    assert [r["status"] for r in served] == [404, 200]


SERIAL_PASSWORD = "serial-Pw-42"


def test_the_web_consoles_serial_console_logs_in_to_a_real_guest(cloud):
    """The web console's serial console on a libvirt guest: its getty on ttyS0 answers through
    the WebSocket; ec2-user logs in with the password its user data set, runs a command and
    reads the answer; root may not log in there."""
    from .test_console import _read_until, _signed_in, _ws

    ec2 = cloud.client()
    user_data = ("#!/bin/sh\nsed -i \"s|^ec2-user:[^:]*:|ec2-user:$(mkpasswd -m sha512 "
                 f"{SERIAL_PASSWORD}):|\" /etc/shadow\necho password-set\n")
    iid = ec2.run_instances(ImageId=tiny_image(ec2), MinCount=1, MaxCount=1,
                            UserData=user_data)["Instances"][0]["InstanceId"]
    fast_waiter(ec2, "instance_running")(InstanceIds=[iid])
    _console(ec2, iid, r"user-data done rc=0")
    web = _signed_in(cloud)
    with _ws(cloud, web, iid) as conn:
        conn.send("\r")
        _read_until(conn, "login: ", within=30)
        conn.send("root\r")  # refused before any password (negative control: ec2-user below)
        assert "log in as ec2-user" in _read_until(conn, "log in as ec2-user", within=30)
        _read_until(conn, "login: ", within=30)
        conn.send("ec2-user\r")
        _read_until(conn, "Password: ", within=30)
        conn.send(SERIAL_PASSWORD + "\r")
        conn.send("echo serial-ok-$((6*7)) $(id -un | tr a-z A-Z)\r")  # the answer, not the echo of it
        _read_until(conn, "serial-ok-42 EC2-USER", within=30)
        conn.send("exit\r")
    _serial_console_in_chromium(cloud, iid)
    ec2.terminate_instances(InstanceIds=[iid])


def _serial_console_in_chromium(cloud, iid: str) -> None:
    """The same login as a person makes it: headless Chromium signs in to the web console, opens
    the instance's serial console, and types into the terminal; the guest's shell answers there."""
    from selenium.webdriver.common.keys import Keys

    from .test_console_browser import (_sign_in, _text, _wait, open_browser, shot, terminal_text,
                                       type_into_terminal)
    with open_browser() as browser:
        _sign_in(browser, cloud)
        browser.get(cloud.endpoint + f"/console/instances/{iid}/serial")
        _wait(browser, lambda b: _text(b, "status") == "connected", "connected")
        type_into_terminal(browser, Keys.ENTER)
        _wait(browser, lambda b: terminal_text(b).rstrip().endswith("login:"), "the getty's prompt", within=30)
        type_into_terminal(browser, "ec2-user" + Keys.ENTER)
        _wait(browser, lambda b: terminal_text(b).rstrip().endswith("Password:"), "the password prompt", within=30)
        type_into_terminal(browser, SERIAL_PASSWORD + Keys.ENTER)
        type_into_terminal(browser, "echo typed-in-chromium-$((6*7)) $(id -un)" + Keys.ENTER)
        _wait(browser, lambda b: "\ntyped-in-chromium-42 ec2-user\n" in terminal_text(b), "the guest's answer",
              within=30)
        shot(browser, "serial-console")  # the README's: a real guest's getty
        type_into_terminal(browser, "exit" + Keys.ENTER)


def test_cloud_init_image(cloud):
    ec2 = cloud.client()
    image = ec2.describe_images(Owners=["ec2emu"], Filters=[{"Name": "name", "Values": ["debian-12-cloudinit-*"]}])
    ami = image["Images"][0]["ImageId"]
    key, pem = _key(ec2, cloud)
    # t3.medium: 4 GiB, scaled to 512 MiB, which a systemd guest needs.
    # With an extra volume at launch (/dev/sdg): the Debian image's udev rule must name it, and
    # one hot-plugged later (/dev/sdf), as Amazon Linux on Nitro names EBS disks. With an
    # instance role, and IMDSv2 required (botocore in the guest must use it).
    role = unique("ci-role")
    iid = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, InstanceType="t3.medium", KeyName=key,
                            UserData=CLOUD_INIT_USER_DATA, IamInstanceProfile={"Name": role},
                            MetadataOptions={"HttpTokens": "required"}, BlockDeviceMappings=[
                                {"DeviceName": "/dev/sdg", "Ebs": {"VolumeSize": 1}}])["Instances"][0]["InstanceId"]
    fast_waiter(ec2, "instance_running")(InstanceIds=[iid])
    assert _console(ec2, iid, r"script-marker (\S+)", timeout=400).group(1) == iid
    _console(ec2, iid, r"cc-marker", timeout=120)
    final = _console(ec2, iid, r"Cloud-init v\. \S+ finished at .*Datasource (\S+)", timeout=120)
    assert final.group(1).startswith("DataSourceEc2")
    out = _ssh(cloud, iid, pem, "id -un; sudo cat /run/cloud-init/result.json", login="admin", timeout=120)
    assert out.split()[0] == "admin" and "DataSourceEc2" in out
    _role_credentials_work_from_the_guest(cloud, ec2, iid, pem, role)
    # Its serial console (systemd's serial-getty on ttyS0, from console=ttyS0) takes a login once
    # the user has a password, which the Debian image, as AWS's, does not give anyone.
    from .test_console import _read_until, _signed_in, _ws
    _ssh(cloud, iid, pem, f"echo admin:{SERIAL_PASSWORD} | sudo chpasswd", login="admin")
    with _ws(cloud, _signed_in(cloud), iid) as conn:
        conn.send("\r")
        _read_until(conn, "login: ", within=60)
        conn.send("admin\r")
        _read_until(conn, "Password: ", within=30)
        conn.send(SERIAL_PASSWORD + "\r")
        _read_until(conn, "$ ", within=60)
        conn.send("echo serial-ok-$((6*7)) $(id -un)\r")
        _read_until(conn, "serial-ok-42 admin", within=60)
        conn.send("exit\r")
    inst = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    at_launch = {m["DeviceName"]: m["Ebs"]["VolumeId"] for m in inst["BlockDeviceMappings"]}["/dev/sdg"]
    hot = ec2.create_volume(AvailabilityZone=inst["Placement"]["AvailabilityZone"], Size=1)["VolumeId"]
    fast_waiter(ec2, "volume_available")(VolumeIds=[hot])
    ec2.attach_volume(VolumeId=hot, InstanceId=iid, Device="/dev/sdf")
    fast_waiter(ec2, "volume_in_use")(VolumeIds=[hot])
    serial = "cat /sys/class/block/$(basename $(readlink -f /dev/{0}))/serial; echo"
    names = "; ".join(serial.format(d) for d in ("sdg", "xvdg", "sdf", "xvdf"))
    for _ in range(30):  # udev names a hot-plugged disk a moment after the attach is reported
        seen = _ssh(cloud, iid, pem, names + " 2>/dev/null; true", login="admin").split()
        if len(seen) == 4:
            break
        time.sleep(1)
    assert seen == [at_launch.replace("-", "")] * 2 + [hot.replace("-", "")] * 2, seen
    ec2.terminate_instances(InstanceIds=[iid])
    fast_waiter(ec2, "instance_terminated")(InstanceIds=[iid])
