"""Network benchmark: security groups on the wire, with two tiny-image guests in one VPC.

    python bench/net.py [--trials N] [--megabytes M] [--rounds R] [--image-dir DIR]

Prints:
  1. AuthorizeSecurityGroupIngress -> the first packet admitted: a prober inside the VPC
     namespace opens a new TCP connection to a guest's closed port every 2 ms (a dropped SYN is
     only retried after 1 s, so each attempt is a fresh socket); the first connection that
     completes is the first packet the new rule admitted. Timed from the moment the boto3 call
     returned (its answer) and from the moment it was made; N trials (default 10), each rule
     revoked again after; median and max (target: answered -> admitted <= 100 ms).
  2. Guest-to-guest TCP throughput and latency, A -> B in one subnet, the same two guests in
     three set-ups, alternated, R rounds each (default 3; medians):
       * rules: the VPC path (tap -> port bridge -> veth -> the subnet bridge in the VPC
         namespace) with 200 security-group rules installed (4 groups of 50 ingress rules, each
         guest in all of them, the rule admitting A's traffic last) and the default network ACL;
       * no tables: the same path with the security-group and ACL tables deleted;
       * plain bridge: both guests' taps moved onto one plain Linux bridge the bench makes (no
         address, no netfilter: nf_call_iptables off), then moved back. The guests cannot be
         reached over SSH meanwhile, so A runs the same script on a timer, and its results count
         only if it finished before the taps went back (checked against A's uptime).
     Throughput: busybox `dd | nc` of M MiB, timed by A's uptime. Latency: busybox ping (20
     echoes, median RTT) and a new TCP connection to a one-line server on B, read to EOF (20 in
     a row, mean; includes the guest's process start-up under this host's hypervisor).
     Printed: rules / plain bridge (target >= 0.9 for throughput; for latency plain / rules).

Needs root, libvirtd (`bash scripts/start-libvirt.sh`) and the built images. Starts its own
`ec2emu serve --hypervisor libvirt` (temp state dir, a network prefix of its own). At exit, on
error or Ctrl-C the instances are terminated, the server stopped, the prefix's namespaces torn
down and the temp dir removed. Prints figures only; asserts nothing.
"""
from __future__ import annotations

import argparse
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hypervisor.imagebuild import default_images_dir  # noqa: E402
from hypervisor.links import disable_ipv6  # noqa: E402
from hypervisor.names import root_bridge_name, root_veth_name  # noqa: E402
from hypervisor.network import Network  # noqa: E402
from tests.server import Server  # noqa: E402

PROBE_PORT = 7000
SINK_PORT = 5001
RULES_PER_GROUP, RULE_GROUPS = 50, 4
MEGABYTES = 64  # (--megabytes)
TARGET_MS, TARGET_RATIO = 100, 0.9

# Runs inside the VPC namespace: a fresh non-blocking connect every 2 ms; prints the wall-clock
# time the first one completes. 'ready' once it probes.
PROBER = r"""
import selectors, socket, sys, time
ip, port, limit = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
sel = selectors.DefaultSelector()
print("ready", flush=True)
end = time.monotonic() + limit
live = []
while time.monotonic() < end:
    s = socket.socket(); s.setblocking(False); s.connect_ex((ip, port))
    sel.register(s, selectors.EVENT_WRITE); live.append((time.monotonic(), s))
    for key, _ in sel.select(0.002):
        if key.fileobj.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
            print(f"admitted {time.time():.6f}", flush=True); sys.exit(0)
    while live and time.monotonic() - live[0][0] > 0.5:  # its SYN was dropped: give it up
        sel.unregister(live[0][1]); live.pop(0)[1].close()
print("timeout", flush=True)
"""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def ssh(ns: str, pem: Path, ip: str, command: str, timeout: float = 300) -> str:
    proc = subprocess.run(["ip", "netns", "exec", ns, "ssh", "-i", str(pem), "-o", "StrictHostKeyChecking=no",
                           "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5",
                           f"ec2-user@{ip}", command], capture_output=True, text=True, timeout=timeout)
    if proc.returncode:
        raise RuntimeError(f"ssh {ip} {command!r}: {proc.returncode} {proc.stderr}")
    return proc.stdout


def wait_ssh(ns: str, pem: Path, ip: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            ssh(ns, pem, ip, "true", timeout=30)
            return
        except (RuntimeError, subprocess.TimeoutExpired):
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def tcp_rule(port: int, cidr: str = "0.0.0.0/0") -> list[dict]:
    return [{"IpProtocol": "tcp", "FromPort": port, "ToPort": port, "IpRanges": [{"CidrIp": cidr}]}]


def authorize_to_admitted(ec2, group: str, ns: str, ip: str, trials: int) -> tuple[list[float], list[float]]:
    from_answer, from_request = [], []
    for n in range(trials):
        prober = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", PROBER, ip, str(PROBE_PORT), "10"],
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert prober.stdout.readline().strip() == "ready"
            time.sleep(0.3)  # probing a closed port for a moment first
            asked = time.time()
            ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=tcp_rule(PROBE_PORT))
            answered = time.time()
            line = prober.stdout.readline().split()
        finally:
            prober.kill()
            prober.wait()
        if line[:1] == ["admitted"]:
            at = float(line[1])
            from_answer.append((at - answered) * 1000)
            from_request.append((at - asked) * 1000)
            log(f"trial {n + 1}: admitted {from_answer[-1]:.1f} ms after the answer")
        else:
            log(f"trial {n + 1}: never admitted ({line})")
        ec2.revoke_security_group_ingress(GroupId=group, IpPermissions=tcp_rule(PROBE_PORT))
        time.sleep(0.5)
    return from_answer, from_request


# Run in guest A: throughput (dd | nc), TCP connection latency (20 connections to B's hello
# listener) and ping RTTs to B. $1: seconds to wait first (the plain-bridge run starts on a timer).
SCRIPT = r"""sleep $1
s=$(cut -d' ' -f1 /proc/uptime)
dd if=/dev/zero bs=1048576 count=%(mb)d 2>/dev/null | nc %(b)s %(sink)d
e=$(cut -d' ' -f1 /proc/uptime); echo elapsed $s $e
s=$(cut -d' ' -f1 /proc/uptime); i=0; ok=0
while [ $i -lt 20 ]; do
  echo | timeout 5 nc %(b)s %(probe)d | grep -q hello && ok=$((ok+1)); i=$((i+1))
done
e=$(cut -d' ' -f1 /proc/uptime); echo connects $ok $s $e
sudo ping -c 20 -i 0.2 %(b)s
echo done $(cut -d' ' -f1 /proc/uptime)
"""


def parse(out: str) -> tuple[float, float, float, float]:
    """-> (MB/s, TCP connection ms, ping median ms, A's uptime when done)."""
    m = re.search(r"elapsed ([\d.]+) ([\d.]+)", out)
    c = re.search(r"connects 20 ([\d.]+) ([\d.]+)", out)
    pings = [float(x) for x in re.findall(r"time=([\d.]+) ms", out)]
    done = re.search(r"done ([\d.]+)", out)
    if not (m and c and pings and done):
        raise RuntimeError(f"unexpected output: {out}")
    return (MEGABYTES / (float(m.group(2)) - float(m.group(1))), (float(c.group(2)) - float(c.group(1))) * 1000 / 20,
            statistics.median(pings), float(done.group(1)))


def transfer(ns: str, pem: Path, a: str) -> tuple[float, float, float]:
    """(MB/s, TCP connection ms, ping ms) from A to B over the VPC path."""
    return parse(ssh(ns, pem, a, "sh /tmp/bench.sh 0"))[:3]


def port_tap(instance_id: str) -> str:
    """The guest's tap: the port bridge's member that is not its veth into the VPC."""
    bridge = root_bridge_name(instance_id)
    members = [m.name for m in Path(f"/sys/class/net/{bridge}/brif").iterdir()]
    taps = [m for m in members if m != root_veth_name(instance_id)]
    if len(taps) != 1:
        raise RuntimeError(f"{bridge}: members {members}")
    return taps[0]


def move(taps: dict[str, str], bridge_of) -> None:
    for iid, tap in taps.items():
        subprocess.run(["ip", "link", "set", "dev", tap, "master", bridge_of(iid)], check=True)


def plain_bridge(ns: str, pem: Path, a: str, ids: list[str], plain: str, budget: float):
    """The same run with both taps on the plain bridge: -> (MB/s, ms, ms) or None when A had not
    finished within `budget` seconds (then nothing of it counts)."""
    taps = {iid: port_tap(iid) for iid in ids}
    ssh(ns, pem, a, "rm -f /tmp/bench.out; (setsid sh /tmp/bench.sh 3 </dev/null >/tmp/bench.out 2>&1 &)")
    try:
        move(taps, lambda _iid: plain)
        time.sleep(budget)
    finally:
        move(taps, root_bridge_name)
    back = float(ssh(ns, pem, a, "cut -d' ' -f1 /proc/uptime"))  # an upper bound of the move back
    out = ssh(ns, pem, a, "cat /tmp/bench.out")
    try:
        mbs, conn, rtt, done = parse(out)
    except RuntimeError:
        return None
    return (mbs, conn, rtt) if done < back else None


def fmt(r: tuple[float, float, float]) -> str:
    return f"{r[0]:.1f} MB/s, TCP connection {r[1]:.1f} ms, ping {r[2]:.3f} ms"


def sg_table(ns: str) -> bool:
    return subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "table", "inet", "ec2emu_sg"],
                          capture_output=True).returncode == 0


def main() -> None:
    global MEGABYTES
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--megabytes", type=int, default=MEGABYTES)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--image-dir", default=str(default_images_dir()))
    args = ap.parse_args()
    MEGABYTES = args.megabytes
    tmp = Path(tempfile.mkdtemp(prefix="ec2emu-bench-net-"))
    prefix = "bn" + secrets.token_hex(3)
    from tests.conftest import CREDENTIALS
    srv = Server(tmp, hypervisor="libvirt", extra_env={"EC2EMU_IMAGE_DIR": args.image_dir,
                                                      "EC2EMU_NETWORK_PREFIX": prefix,
                                                      "EC2EMU_CREDENTIALS": CREDENTIALS})
    ids: list[str] = []
    ec2 = None
    plain = ""
    try:
        srv.start()
        ec2 = srv.client()
        ec2.authorize_security_group_ingress(GroupName="default", IpPermissions=tcp_rule(22))
        pem = tmp / "k.pem"
        pem.write_text(ec2.create_key_pair(KeyName="bench")["KeyMaterial"])
        pem.chmod(0o600)
        image = next(i["ImageId"] for i in ec2.describe_images(Owners=["ec2emu"])["Images"]
                     if i["Name"].startswith("ec2emu-tiny"))
        zone = ec2.describe_availability_zones()["AvailabilityZones"][0]["ZoneName"]
        insts = ec2.run_instances(ImageId=image, MinCount=2, MaxCount=2, KeyName="bench", InstanceType="t2.micro",
                                  Placement={"AvailabilityZone": zone})["Instances"]
        ids = [i["InstanceId"] for i in insts]
        a, b = (i["PrivateIpAddress"] for i in insts)
        ns = Network(tmp / "network", prefix=prefix).namespace_of(insts[0]["VpcId"])
        default = ec2.describe_security_groups(GroupNames=["default"])["SecurityGroups"][0]["GroupId"]
        log(f"booting {ids} ({a}, {b}) in {ns}")
        for ip in (a, b):
            wait_ssh(ns, pem, ip)
        ssh(ns, pem, b, "printf '#!/bin/sh\\necho hello\\n' > /tmp/hello && printf '#!/bin/sh\\ncat >/dev/null\\n'"
                        " > /tmp/sink && chmod +x /tmp/hello /tmp/sink"
                        f" && (setsid nc -ll -p {PROBE_PORT} -e /tmp/hello </dev/null >/dev/null 2>&1 &)"
                        f" && (setsid nc -ll -p {SINK_PORT} -e /tmp/sink </dev/null >/dev/null 2>&1 &)")

        # 1. Authorize -> first packet admitted (the default group admits the router nothing on PROBE_PORT).
        log("1. AuthorizeSecurityGroupIngress -> first packet admitted")
        from_answer, from_request = authorize_to_admitted(ec2, default, ns, b, args.trials)

        # 2. 200 rules against no tables and a plain bridge.
        log(f"2. {RULE_GROUPS * RULES_PER_GROUP} rules: creating {RULE_GROUPS} groups")
        groups = []
        for g in range(RULE_GROUPS):
            gid = ec2.create_security_group(GroupName=f"bench-{g}", Description="bench")["GroupId"]
            ec2.authorize_security_group_ingress(GroupId=gid, IpPermissions=[
                {"IpProtocol": "tcp", "FromPort": 20000 + g * 100 + r, "ToPort": 20000 + g * 100 + r,
                 "IpRanges": [{"CidrIp": f"10.{g}.{r}.0/24"}]} for r in range(RULES_PER_GROUP)])
            groups.append(gid)
        for iid in ids:  # default last: the rule admitting A is the last one B's chain tries
            ec2.modify_instance_attribute(InstanceId=iid, Groups=[*groups, default])
        ssh(ns, pem, a, "cat > /tmp/bench.sh <<'EOF'\n"
                        + SCRIPT % {"mb": MEGABYTES, "b": b, "sink": SINK_PORT, "probe": PROBE_PORT} + "EOF")
        plain = "bnp" + prefix[2:]  # (set before it exists: the clean-up deletes it whatever happened)
        subprocess.run(["ip", "link", "add", "name", plain, "type", "bridge", "nf_call_iptables", "0",
                        "nf_call_arptables", "0"], check=True)
        disable_ipv6(plain)
        subprocess.run(["ip", "link", "set", "dev", plain, "up"], check=True)
        results: dict[str, list] = {"plain bridge": [], "no tables": [], "rules": []}
        for round_ in range(args.rounds):
            for table in ("ec2emu_sg", "ec2emu_acl"):
                subprocess.run(["ip", "netns", "exec", ns, "nft", "delete", "table", "inet", table], check=True)
            results["no tables"].append(transfer(ns, pem, a))
            log(f"round {round_ + 1}, no tables: {fmt(results['no tables'][-1])}")
            # Any change re-applies the whole firewall from the database.
            ec2.authorize_security_group_ingress(GroupId=default, IpPermissions=tcp_rule(30000 + round_, "10.9.9.9/32"))
            deadline = time.monotonic() + 10
            while not sg_table(ns) and time.monotonic() < deadline:
                time.sleep(0.05)
            count = subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "table", "inet", "ec2emu_sg"],
                                   capture_output=True, text=True).stdout.count(" accept")
            results["rules"].append(transfer(ns, pem, a))
            log(f"round {round_ + 1}, rules ({count} accept rules in the table): {fmt(results['rules'][-1])}")
            # A's timer: 3 s, then the run; give it twice the slowest VPC run so far, plus the pings.
            slowest = max(MEGABYTES / r[0] + 20 * r[1] / 1000 for r in results["no tables"] + results["rules"])
            for attempt in range(2):
                got = plain_bridge(ns, pem, a, ids, plain, 3 + 2 * slowest + 8 + 10 * attempt)
                if got is not None:
                    results["plain bridge"].append(got)
                    log(f"round {round_ + 1}, plain bridge: {fmt(got)}")
                    break
                log(f"round {round_ + 1}, plain bridge: not finished in time; again with more time")

        print()
        print("Security groups on the wire (two t2.micro tiny guests under this host's hypervisor)")
        if from_answer:
            print(f"  Authorize -> first packet admitted, {len(from_answer)}/{args.trials} trials:"
                  f" from the answer median {statistics.median(from_answer):.1f} ms, max {max(from_answer):.1f} ms;"
                  f" from the request median {statistics.median(from_request):.1f} ms"
                  f"  (target <= {TARGET_MS} ms from the answer)")
        else:
            print("  Authorize -> first packet admitted: never admitted")
        med = {k: [statistics.median(x[i] for x in v) if v else float("nan") for i in range(3)]
               for k, v in results.items()}
        print(f"  Guest to guest, A -> B in one subnet, {MEGABYTES} MiB by dd | nc; medians of"
              f" {[len(v) for v in results.values()]} runs (plain bridge, no tables, rules):")
        for name, (mbs, conn, rtt) in med.items():
            print(f"    {name:13s} {mbs:7.1f} MB/s   TCP connection {conn:6.1f} ms   ping {rtt:6.3f} ms")
        p, r = med["plain bridge"], med["rules"]
        print(f"  {RULE_GROUPS * RULES_PER_GROUP} rules against the plain bridge: throughput {r[0] / p[0]:.2f}x"
              f" (target >= {TARGET_RATIO}), TCP connection latency {p[1] / r[1]:.2f}x, ping {p[2] / r[2]:.2f}x"
              " (plain / rules: above 1 means the VPC path is as fast or faster)")
    except KeyboardInterrupt:
        log("interrupted")
    finally:
        if plain:
            subprocess.run(["ip", "link", "del", plain], capture_output=True)
        if ec2 is not None and ids:
            try:
                ec2.terminate_instances(InstanceIds=ids)
                ec2.get_waiter("instance_terminated").wait(InstanceIds=ids, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
            except Exception as exc:  # noqa: BLE001
                log(f"terminating: {exc}")
        srv.stop()
        Network(tmp / "network", prefix=prefix).teardown_all()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
