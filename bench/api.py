"""API benchmark: ec2emu against moto's server, the same boto3 workload on each, one run.

    python bench/api.py [--quick]

Starts `ec2emu serve` (fresh temp state dir, SQLite unless EC2EMU_TEST_DATABASE_URL, hypervisor
none, a free port) and `moto_server` (free port), runs the workload against each in turn, prints a
table of both figures and their ratio, and stops both servers (also on error or Ctrl-C).
Prints figures only; asserts nothing.
"""
from __future__ import annotations

import argparse
import atexit
import http.client
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlencode, urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import boto3  # noqa: E402
from botocore.auth import SigV4Auth  # noqa: E402
from botocore.awsrequest import AWSRequest  # noqa: E402
from botocore.config import Config as BotoConfig  # noqa: E402
from botocore.credentials import Credentials  # noqa: E402

from bench.procfs import rss_kib  # noqa: E402
from tests.server import ACCESS_KEY, SECRET_KEY, Server, free_port  # noqa: E402

REGION = "us-east-1"
INSTANCE_TYPE = "t2.micro"
HTTP_TIMEOUT = 120


# ------------------------------------------------------------------------------------ servers

def descendants(pid: int) -> list[int]:
    """pid and every process below it (from /proc's ppid links)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


class Emu:
    name = "ec2emu"

    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="ec2emu-bench-")
        self.server = Server(Path(self.tmp) / "state")

    def start(self):
        self.server.start()
        return self

    @property
    def endpoint(self) -> str:
        return self.server.endpoint

    @property
    def pid(self) -> int | None:
        return self.server.proc.pid if self.server.proc else None

    def stop(self):
        self.server.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def image_id(self, ec2) -> str:
        images = ec2.describe_images(Owners=["ec2emu"], Filters=[{"Name": "name", "Values": ["ec2emu-tiny-*"]}])
        images = images["Images"] or ec2.describe_images()["Images"]
        return sorted(images, key=lambda i: i.get("Name", ""))[0]["ImageId"]


class Moto:
    name = "moto"

    def __init__(self):
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log = tempfile.NamedTemporaryFile(prefix="moto-bench-", suffix=".log", delete=False)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        exe = Path(sys.executable).with_name("moto_server")
        cmd = [str(exe) if exe.exists() else (shutil.which("moto_server") or "moto_server"),
               "-H", "127.0.0.1", "-p", str(self.port)]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("moto_server exited:\n" + Path(self.log.name).read_text())
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                conn.request("GET", "/moto-api/")
                conn.getresponse().read()
                conn.close()
                return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("moto_server did not start")

    @property
    def pid(self) -> int | None:
        """The python process that serves (the shim may sit above it)."""
        if not self.proc:
            return None
        tree = descendants(self.proc.pid)
        best = None
        for pid in tree:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if b"python" in cmdline or b"moto" in cmdline:
                best = pid  # the deepest such process: descendants() lists parents first
        return best or self.proc.pid

    def stop(self):
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGINT)  # its own session: our process group
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
        self.proc = None
        try:
            os.unlink(self.log.name)
        except OSError:
            pass

    def image_id(self, ec2) -> str:
        images = ec2.describe_images()["Images"]
        x86 = [i for i in images if i.get("Architecture") == "x86_64"] or images
        return sorted(x86, key=lambda i: i["ImageId"])[0]["ImageId"]


# ------------------------------------------------------------------------------------ clients

CREDS = Credentials(ACCESS_KEY, SECRET_KEY)


def client(endpoint: str):
    session = boto3.session.Session()
    return session.client("ec2", endpoint_url=endpoint, region_name=REGION, aws_access_key_id=ACCESS_KEY,
                          aws_secret_access_key=SECRET_KEY,
                          config=BotoConfig(retries={"max_attempts": 1}, read_timeout=HTTP_TIMEOUT,
                                            max_pool_connections=4))


def raw_post(endpoint: str, params: dict) -> tuple[float, int, bytes]:
    """Sign (not timed), then time the HTTP exchange alone: connect, send, read the whole body."""
    body = urlencode(params).encode()
    req = AWSRequest(method="POST", url=endpoint + "/", data=body,
                     headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    SigV4Auth(CREDS, "ec2", REGION).add_auth(req)
    headers = dict(req.headers.items())
    split = urlsplit(endpoint)
    start = time.perf_counter()
    conn = http.client.HTTPConnection(split.hostname, split.port, timeout=HTTP_TIMEOUT)
    try:
        conn.request("POST", "/", body=body, headers=headers)
        resp = conn.getresponse()
        payload = resp.read()
    finally:
        conn.close()
    return time.perf_counter() - start, resp.status, payload


NEXT_TOKEN = re.compile(rb"<nextToken>([^<]+)</nextToken>")
INSTANCE_ID = re.compile(rb"<instanceId>i-[0-9a-f]+</instanceId>")


def describe_all_raw(endpoint: str) -> tuple[float, int]:
    """Server time for DescribeInstances of everything (MaxResults=1000, following NextToken)."""
    total, count, token = 0.0, 0, None
    for _ in range(50):  # bounded: 50 pages
        params = {"Action": "DescribeInstances", "Version": "2016-11-15", "MaxResults": "1000"}
        if token:
            params["NextToken"] = token
        seconds, status, payload = raw_post(endpoint, params)
        total += seconds
        if status != 200:
            raise RuntimeError(f"DescribeInstances: HTTP {status}: {payload[:500]!r}")
        count += len(INSTANCE_ID.findall(payload))
        m = NEXT_TOKEN.search(payload)
        if not m:
            break
        token = m.group(1).decode()
    return total, count


def describe_all_boto(ec2) -> tuple[float, int]:
    start, count, kwargs = time.perf_counter(), 0, {"MaxResults": 1000}
    for _ in range(50):
        page = ec2.describe_instances(**kwargs)
        count += sum(len(r["Instances"]) for r in page["Reservations"])
        if not page.get("NextToken"):
            break
        kwargs["NextToken"] = page["NextToken"]
    return time.perf_counter() - start, count


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))]


def throughput(endpoint: str, instance_id: str, threads: int, seconds: float, limit: int) -> tuple[float, int, int]:
    clients = [client(endpoint) for _ in range(threads)]  # made up front: client creation is slow
    lock = threading.Lock()
    state = {"done": 0, "errors": 0, "issued": 0}
    deadline = time.monotonic() + seconds

    def work(ec2):
        while time.monotonic() < deadline:
            with lock:
                if state["issued"] >= limit:
                    return
                state["issued"] += 1
            try:
                ec2.describe_instances(InstanceIds=[instance_id])
                ok = True
            except Exception:  # noqa: BLE001  (counted, not fatal)
                ok = False
            with lock:
                state["done" if ok else "errors"] += 1

    workers = [threading.Thread(target=work, args=(c,), daemon=True) for c in clients]
    start = time.monotonic()
    for w in workers:
        w.start()
    for w in workers:
        w.join(seconds + HTTP_TIMEOUT)
    elapsed = time.monotonic() - start
    return state["done"] / elapsed, state["done"], state["errors"]


def throughput_raw(endpoint: str, instance_id: str, threads: int, seconds: float) -> float:
    """Server capacity alone: each thread resends one pre-signed request on its own keep-alive
    connection (a signature stays valid for minutes), so no client-side signing or XML parsing
    competes with the server for the 2 CPUs."""
    body = urlencode({"Action": "DescribeInstances", "Version": "2016-11-15", "InstanceId.1": instance_id}).encode()
    req = AWSRequest(method="POST", url=endpoint + "/", data=body,
                     headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    SigV4Auth(CREDS, "ec2", REGION).add_auth(req)
    headers = dict(req.headers.items())
    split = urlsplit(endpoint)
    counts = [0] * threads
    deadline = time.monotonic() + seconds

    def work(n: int) -> None:
        conn = http.client.HTTPConnection(split.hostname, split.port, timeout=HTTP_TIMEOUT)
        try:
            while time.monotonic() < deadline:
                conn.request("POST", "/", body=body, headers=headers)
                resp = conn.getresponse()
                resp.read()
                if resp.status == 200:
                    counts[n] += 1
        except OSError:
            pass
        finally:
            conn.close()

    workers = [threading.Thread(target=work, args=(n,), daemon=True) for n in range(threads)]
    start = time.monotonic()
    for w in workers:
        w.start()
    for w in workers:
        w.join(seconds + HTTP_TIMEOUT)
    return sum(counts) / (time.monotonic() - start)


def wait_settled(ec2, seconds: float = 30) -> None:
    """Let ec2emu's none driver finish pending -> running (moto is instant) before measuring."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        page = ec2.describe_instances(Filters=[{"Name": "instance-state-name", "Values": ["pending"]}],
                                      MaxResults=1000)
        if not page["Reservations"]:
            return
        time.sleep(0.5)


def run_workload(target, args) -> dict:
    ec2 = client(target.endpoint)
    image = target.image_id(ec2)
    print(f"[{target.name}] {target.endpoint} image {image}", flush=True)
    out: dict = {}

    start = time.perf_counter()
    ids: list[str] = []
    for _ in range(args.batches):
        res = ec2.run_instances(ImageId=image, MinCount=args.per_batch, MaxCount=args.per_batch,
                                InstanceType=INSTANCE_TYPE)
        ids += [i["InstanceId"] for i in res["Instances"]]
    out["run"] = time.perf_counter() - start
    print(f"[{target.name}] RunInstances {args.batches}x{args.per_batch}: {out['run']:.2f} s", flush=True)
    wait_settled(ec2)

    raw, boto, counts = [], [], set()
    for _ in range(args.repeats):
        seconds, count = describe_all_raw(target.endpoint)
        raw.append(seconds)
        counts.add(count)
        seconds, count = describe_all_boto(ec2)
        boto.append(seconds)
        counts.add(count)
    out["desc_all_raw"], out["desc_all_boto"] = statistics.median(raw), statistics.median(boto)
    out["desc_all_count"] = "/".join(str(c) for c in sorted(counts))
    print(f"[{target.name}] DescribeInstances all ({out['desc_all_count']}): server "
          f"{out['desc_all_raw']:.3f} s, boto3 {out['desc_all_boto']:.3f} s", flush=True)

    one = ids[len(ids) // 2]
    lat = []
    for _ in range(args.latency_calls):
        t = time.perf_counter()
        ec2.describe_instances(InstanceIds=[one])
        lat.append(time.perf_counter() - t)
    out["lat_median"], out["lat_p95"] = statistics.median(lat) * 1000, percentile(lat, 95) * 1000
    raw_lat = [raw_post(target.endpoint, {"Action": "DescribeInstances", "Version": "2016-11-15",
                                          "InstanceId.1": one})[0] for _ in range(args.latency_calls)]
    out["lat_raw"] = statistics.median(raw_lat) * 1000

    rps, done, errors = throughput(target.endpoint, one, args.threads, args.seconds, args.limit)
    out["rps"], out["rps_note"] = rps, f"{done} ok, {errors} errors"
    print(f"[{target.name}] pid {target.pid}; describe-one: median {out['lat_median']:.1f} ms, p95 {out['lat_p95']:.1f} ms, "
          f"{rps:.0f} req/s ({out['rps_note']})", flush=True)

    out["rps_raw"] = throughput_raw(target.endpoint, one, args.threads, min(args.seconds, 5.0))
    print(f"[{target.name}] describe-one, raw HTTP, {args.threads} threads: {out['rps_raw']:.0f} req/s", flush=True)

    kib = rss_kib(target.pid) if target.pid else None
    out["rss"] = kib / 1024 if kib else float("nan")
    return out


def table(emu: dict, moto: dict, args) -> str:
    n = args.batches * args.per_batch
    rows = [
        # label, key, unit format, higher is better, target text
        (f"RunInstances {args.batches}x{args.per_batch}, wall (s)", "run", "{:.2f}", False, ""),
        (f"DescribeInstances all {n}, server (s, median of {args.repeats})", "desc_all_raw", "{:.3f}", False,
         "<= 0.3 s"),
        (f"DescribeInstances all {n}, boto3 call (s, median)", "desc_all_boto", "{:.3f}", False, ""),
        (f"describe-one latency, median (ms, {args.latency_calls} calls)", "lat_median", "{:.1f}", False, ""),
        ("describe-one latency, p95 (ms)", "lat_p95", "{:.1f}", False, ""),
        ("describe-one server time, median (ms, raw HTTP)", "lat_raw", "{:.1f}", False, ""),
        (f"describe-one throughput, {args.threads} threads (req/s)", "rps", "{:.0f}", True, ">= 5x moto"),
        (f"describe-one throughput, {args.threads} threads, raw HTTP (req/s)", "rps_raw", "{:.0f}", True,
         "(server capacity)"),
        ("server RSS after workload (MiB)", "rss", "{:.0f}", False, ""),
    ]
    width = max(len(r[0]) for r in rows) + 2
    lines = [f"{'':{width}}{'ec2emu':>10}{'moto':>10}{'ec2emu adv.':>13}   target",
             f"{'':{width}}{'':>10}{'':>10}{'(x, >1 good)':>13}"]
    for label, key, fmt, higher, target in rows:
        a, b = emu.get(key), moto.get(key)
        try:
            ratio = (a / b) if higher else (b / a)
            ratio_s = f"{ratio:.2f}"
        except (TypeError, ZeroDivisionError):
            ratio, ratio_s = None, "-"
        verdict = ""
        if key == "desc_all_raw" and a is not None:
            verdict = "met" if a <= 0.3 else "NOT met"
        elif key == "rps" and ratio is not None:
            verdict = "met" if ratio >= 5 else "NOT met"
        lines.append(f"{label:{width}}{fmt.format(a):>10}{fmt.format(b):>10}{ratio_s:>13}   "
                     f"{target}{(' (' + verdict + ')') if verdict else ''}")
    lines.append(f"{'instances seen by DescribeInstances all':{width}}{emu.get('desc_all_count', '-'):>10}"
                 f"{moto.get('desc_all_count', '-'):>10}")
    lines.append(f"{'throughput requests':{width}}  ec2emu {emu.get('rps_note')}; moto {moto.get('rps_note')}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run (2x10 instances, fewer calls)")
    args = parser.parse_args(argv)
    args.batches, args.per_batch, args.repeats = 10, 100, 5
    args.latency_calls, args.threads, args.seconds, args.limit = 200, 8, 10.0, 2000
    if args.quick:
        args.batches, args.per_batch, args.repeats, args.latency_calls, args.seconds, args.limit = 2, 10, 2, 20, 2.0, 200

    targets = [Emu(), Moto()]
    stopped = set()

    def stop_all(*_):
        for t in targets:
            if id(t) not in stopped:
                stopped.add(id(t))
                try:
                    t.stop()
                except Exception as exc:  # noqa: BLE001
                    print(f"stopping {t.name}: {exc}", file=sys.stderr)

    atexit.register(stop_all)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results = {}
    try:
        for target in targets:  # one at a time: each server gets the whole machine
            target.start()
            try:
                results[target.name] = run_workload(target, args)
            finally:
                stopped.add(id(target))
                target.stop()
    finally:
        stop_all()
    print()
    from importlib.metadata import version
    print(f"ec2emu vs moto {version('moto')}"
          + f" - same boto3 workload, {os.cpu_count()} CPUs, database "
          + ("PostgreSQL" if os.environ.get("EC2EMU_TEST_DATABASE_URL") else "SQLite"))
    print(table(results["ec2emu"], results["moto"], args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
