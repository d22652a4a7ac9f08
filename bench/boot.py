"""Boot benchmark: ec2emu's libvirt driver against bare QEMU, on the tiny image, one run.

    python bench/boot.py [--guests N] [--image-dir DIR]

Prints, side by side:
  1. bare `qemu-system-x86_64` (bench/boot_bare.py: a private namespace, no libvirt) from its start
     to the guest's first metadata request: 3 boots, median;
  2. ec2emu booting cold (EC2EMU_CHECKPOINTS=false) and ec2emu restoring guests from a booted
     checkpoint (the default): RunInstances (the moment the boto3 call starts) to that instance's
     first request in the server's metadata.log, and to SSH ready (dropbear's banner read on port
     22 from inside the VPC's namespace): 3 instances one after the other, each terminated after;
     medians, and the ratio of cold to bare (target <= 1.1x); restored to SSH (target <= 1.5 s);
  3. the first instance after `ec2emu serve` starts (the server restarted, its state and the
     checkpoint cache kept), against the warm median (target <= 1.2x); and the very first
     instance of a fresh install (no checkpoint yet: it boots cold and has one built);
  4. VmRSS of a t2.micro guest's qemu process (128 MiB guest) once idle, 10 s after its first
     metadata request (measured on the instances of 2);
  5. N t2.micro instances (default 20) launched 4 per RunInstances (restored), each batch waited
     for (its first metadata requests, at most 180 s) before the next; then, after a minute idle:
     how many reached it and still run, total and mean qemu RSS, MemAvailable before/after,
     1-minute load, the guests' CPU use while idle. All are then terminated.

Needs root, libvirtd (`bash scripts/start-libvirt.sh`) and the built images. Starts its own
`ec2emu serve --hypervisor libvirt` servers (temp state dirs, network prefixes of their own) after
the bare boots, one at a time, so each side has the machine to itself. Everything is bounded in
time; at exit, on error or Ctrl-C the instances are terminated, the server stopped, leftover
domains of ours destroyed, the prefix's namespaces torn down and the temp dirs removed. Prints
figures only; asserts nothing.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import tests.server  # noqa: E402
from boot_bare import bare_boot_seconds  # noqa: E402
from procfs import rss_kib  # noqa: E402
from tests.server import Server  # noqa: E402
from hypervisor.imagebuild import default_images_dir  # noqa: E402

INSTANCE_TYPE = "t2.micro"
BATCH = 4
FIRST_REQUEST_TIMEOUT = 180.0   # per instance (section 2) and per batch (section 4)
IDLE_AFTER_FIRST = 10.0         # section 3: RSS this long after the first metadata request
IDLE_BEFORE_MEASURE = 60.0      # section 4: settle time before RSS / load / idle CPU
IDLE_CPU_WINDOW = 10.0          # section 4: qemu CPU time sampled over this window
TERMINATE_TIMEOUT = 180.0
TARGET_RATIO, TARGET_FIRST, TARGET_SSH, TARGET_IDLE = 1.1, 1.2, 1.5, 40
SSH_TIMEOUT = 120.0


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------ host facts

def mem_available_mib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def ksm_state() -> dict | None:
    """The host's kernel same-page merging: on or off, and MiB saved (pages_sharing: pages
    that point at a shared copy). None where the kernel has no KSM."""
    base = Path("/sys/kernel/mm/ksm")
    try:
        run = int((base / "run").read_text())
        sharing = int((base / "pages_sharing").read_text())
    except (OSError, ValueError):
        return None
    return {"run": run, "saved_mib": sharing * os.sysconf("SC_PAGE_SIZE") / 2**20}


def cpu_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def qemu_pids(instance_ids) -> dict[str, int]:
    """instance id -> pid of the qemu process whose command line names that domain
    (libvirt starts it with `-name guest=<domain name>,...`)."""
    wanted = set(instance_ids)
    found: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not args or b"qemu-system" not in os.path.basename(args[0]):
            continue
        for arg in args[1:]:
            for part in arg.decode(errors="replace").split(","):
                name = part.removeprefix("guest=")
                if name in wanted:
                    found[name] = int(entry.name)
    return found


# ------------------------------------------------------------------------------------ metadata log

def parse_time(stamp: str) -> float:
    for fmt in ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return datetime.strptime(stamp, fmt).replace(tzinfo=timezone.utc).timestamp()
        except ValueError:
            continue
    raise ValueError(f"unrecognised time {stamp!r}")


class MetadataLog:
    """Follows <state_dir>/metadata.log; remembers each instance's first request time."""

    def __init__(self, path: Path):
        self.path, self.offset, self.first = path, 0, {}
        self.subsecond = None  # whether the log's times carry fractions of a second

    def poll(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return
        complete = data[:data.rfind(b"\n") + 1]
        self.offset += len(complete)
        for line in complete.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            iid = entry.get("instance")
            if iid and iid not in self.first:
                self.first[iid] = parse_time(entry["time"])
                if self.subsecond is None:
                    self.subsecond = "." in entry["time"]

    def wait(self, instance_ids, timeout: float) -> dict[str, float]:
        """First-request times of those of `instance_ids` that made one within `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            self.poll()
            seen = {i: self.first[i] for i in instance_ids if i in self.first}
            if len(seen) == len(instance_ids) or time.monotonic() > deadline:
                return seen
            time.sleep(0.02)


# ------------------------------------------------------------------------------------ the emulator

class BenchServer(Server):
    def start(self) -> "BenchServer":
        # The server in a session of its own: a Ctrl-C on the terminal reaches the bench alone,
        # which then terminates the instances through the API before stopping the server.
        popen = functools.partial(subprocess.Popen, start_new_session=True)
        with mock.patch.object(tests.server.subprocess, "Popen", popen):
            return super().start()


class Emulator:
    def __init__(self, image_dir: str, checkpoints: bool):
        self.tmp = Path(tempfile.mkdtemp(prefix="ec2emu-bootbench-"))
        self.prefix = "eb" + secrets.token_hex(3)
        self.checkpoint_dir = self.tmp / "checkpoints"
        self.server = BenchServer(self.tmp / "state", hypervisor="libvirt", extra_env={
            "EC2EMU_IMAGE_DIR": image_dir, "EC2EMU_NETWORK_PREFIX": self.prefix,
            "EC2EMU_CHECKPOINTS": "true" if checkpoints else "false",
            "EC2EMU_CHECKPOINT_DIR": str(self.checkpoint_dir)})
        self.launched: list[str] = []
        self.ec2 = None
        self.metadata = MetadataLog(self.server.state_dir / "metadata.log")

    def start(self) -> "Emulator":
        self.server.start()
        self.ec2 = self.server.client(read_timeout=180, connect_timeout=10)
        images = self.ec2.describe_images(Owners=["ec2emu"],
                                          Filters=[{"Name": "name", "Values": ["ec2emu-tiny-*"]}])
        self.image = images["Images"][0]["ImageId"]
        # As a user does (the default group admits only its members): SSH from anywhere, so
        # that the banner can be read from the VPC's router namespace.
        self.ec2.authorize_security_group_ingress(GroupName="default", IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
        return self

    def run(self, count: int) -> tuple[float, list[str]]:
        """-> (time.time() as the RunInstances call starts, the new instance ids)."""
        started = time.time()
        res = self.ec2.run_instances(ImageId=self.image, MinCount=count, MaxCount=count,
                                     InstanceType=INSTANCE_TYPE)
        ids = [i["InstanceId"] for i in res["Instances"]]
        self.launched += ids
        return started, ids

    def restart(self) -> None:
        """The server stopped and started again on the same state (its guests keep running)."""
        self.server.restart()
        self.ec2 = self.server.client(read_timeout=180, connect_timeout=10)

    def ssh_ready(self, iid: str, timeout: float = SSH_TIMEOUT) -> float | None:
        """time.time() when the instance's SSH server first sent its banner, from inside its
        VPC's namespace (as `ec2emu ssh` connects); None if not within `timeout`."""
        from hypervisor.host import socket_in
        from hypervisor.network import Network
        inst = self.ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
        namespace = Network(str(self.server.state_dir / "network"), prefix=self.prefix).namespace_of(inst["VpcId"])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket_in(namespace) as s:
                    s.settimeout(1.0)
                    s.connect((inst["PrivateIpAddress"], 22))
                    if s.recv(64).startswith(b"SSH-"):
                        return time.time()
            except OSError:
                pass
            time.sleep(0.02)
        return None

    def restored(self, iid: str) -> bool:
        return f"{iid} restored from checkpoint" in self.server.log.read_text()

    def terminate(self, ids: list[str], timeout: float = TERMINATE_TIMEOUT) -> list[str]:
        """Terminates and waits; -> the ids not terminated within `timeout`."""
        if not ids:
            return []
        self.ec2.terminate_instances(InstanceIds=ids)
        deadline = time.monotonic() + timeout
        left = list(ids)
        while left and time.monotonic() < deadline:
            time.sleep(0.5)
            res = self.ec2.describe_instances(InstanceIds=left)
            left = [i["InstanceId"] for r in res["Reservations"] for i in r["Instances"]
                    if i["State"]["Name"] != "terminated"]
        return left

    def close(self) -> None:
        """Everything of ours goes, each step tried whatever the previous one did."""
        if self.ec2 is not None and self.server.proc and self.server.proc.poll() is None:
            try:
                res = self.ec2.describe_instances()
                live = [i["InstanceId"] for r in res["Reservations"] for i in r["Instances"]
                        if i["State"]["Name"] != "terminated"]
                if live:
                    log(f"cleanup: terminating {len(live)} instance(s)")
                    left = self.terminate(live)
                    if left:
                        log(f"cleanup: not terminated in time: {' '.join(left)}")
            except Exception as exc:  # noqa: BLE001
                log(f"cleanup: terminating through the API failed: {exc}")
        try:
            self.server.stop()
        except Exception as exc:  # noqa: BLE001
            log(f"cleanup: stopping the server: {exc}")
        self._destroy_leftover_domains()
        try:
            from hypervisor.network import Network
            Network(self.server.state_dir / "network", prefix=self.prefix).teardown_all()
        except Exception as exc:  # noqa: BLE001
            log(f"cleanup: network teardown: {exc}")
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _destroy_leftover_domains(self) -> None:
        """Domains of instances this run launched that survived (the server died, say)."""
        if not self.launched:
            return
        virsh = ["virsh", "-c", "qemu:///system"]
        try:
            out = subprocess.run(virsh + ["list", "--all", "--name"], capture_output=True, text=True,
                                 timeout=30).stdout
        except (OSError, subprocess.TimeoutExpired):
            return
        for name in set(out.split()) & set(self.launched):
            log(f"cleanup: destroying leftover domain {name}")
            for cmd in (["destroy", name], ["undefine", name]):
                try:
                    subprocess.run(virsh + cmd, capture_output=True, timeout=30)
                except (OSError, subprocess.TimeoutExpired):
                    pass


# ------------------------------------------------------------------------------------ sections

def section_bare(image_dir: str, out: dict) -> None:
    out["bare"] = []
    for run in range(3):
        seconds = bare_boot_seconds(image_dir)
        out["bare"].append(seconds)
        log(f"bare qemu run {run + 1}: first metadata request after {seconds:.2f} s")


def one_instance(emu: Emulator, what: str, rss: bool = False) -> dict:
    """One instance: RunInstances -> first metadata request and -> SSH banner (seconds), its
    qemu's RSS (MiB) IDLE_AFTER_FIRST s after its first request, whether it was restored; then
    terminated."""
    started, (iid,) = emu.run(1)
    seen = emu.metadata.wait([iid], FIRST_REQUEST_TIMEOUT)
    ssh = emu.ssh_ready(iid) if iid in seen else None
    got = {"metadata": seen[iid] - started if iid in seen else None,
           "ssh": ssh - started if ssh else None, "restored": emu.restored(iid), "rss": None}
    if rss and iid in seen:
        time.sleep(max(0.0, seen[iid] + IDLE_AFTER_FIRST - time.time()))
        pid = qemu_pids([iid]).get(iid)
        kib = rss_kib(pid) if pid else None
        got["rss"] = kib / 1024 if kib else None
    log(f"{what}: {iid} first metadata request {fmt(got['metadata'], '.2f')} s, SSH {fmt(got['ssh'], '.2f')} s "
        f"after RunInstances ({'restored' if got['restored'] else 'cold boot'})"
        + (f"; RSS {fmt(got['rss'], '.0f')} MiB" if rss else ""))
    if emu.terminate([iid]):
        log(f"{what}: {iid} not terminated within {TERMINATE_TIMEOUT:.0f} s")
    return got


def section_single(emu: Emulator, out: dict, label: str) -> None:
    runs = [one_instance(emu, f"{label} run {n + 1}", rss=True) for n in range(3)]
    out[label] = {k: [r[k] for r in runs if r[k] is not None] for k in ("metadata", "ssh", "rss")}
    out[label]["restored"] = sum(r["restored"] for r in runs)


def section_first(emu: Emulator, out: dict, label: str) -> None:
    """The first instance after the server (re)starts."""
    emu.restart()
    out[label + "_first"] = one_instance(emu, f"{label}: first instance after the server started")


def section_many(emu: Emulator, guests: int, out: dict) -> None:
    out["many_asked"] = guests
    out["mem_before"] = mem_available_mib()
    out["load_before"] = os.getloadavg()[0]
    launched, reached, note = [], {}, ""
    t0 = time.monotonic()
    while len(launched) < guests:
        count = min(BATCH, guests - len(launched))
        try:
            started, ids = emu.run(count)
        except Exception as exc:  # noqa: BLE001  (a refusal is a result: stop launching)
            note = f"RunInstances failed after {len(launched)}: {exc}"
            log(note)
            break
        launched += ids
        seen = emu.metadata.wait(ids, FIRST_REQUEST_TIMEOUT)
        reached.update(seen)
        slowest = max(seen.values()) - started if seen else float("nan")
        log(f"batch {len(launched) // BATCH + (len(launched) % BATCH > 0)}: {len(seen)}/{len(ids)} "
            f"reached metadata (slowest {slowest:.1f} s after RunInstances); "
            f"{len(reached)}/{len(launched)} so far; load {os.getloadavg()[0]:.2f}")
        if not seen:
            note = f"a batch made no metadata request within {FIRST_REQUEST_TIMEOUT:.0f} s: stopped launching"
            log(note)
            break
    out["many_launch_wall"] = time.monotonic() - t0
    out["many_launched"], out["many_reached"], out["many_note"] = len(launched), len(reached), note

    log(f"idling {IDLE_BEFORE_MEASURE:.0f} s before measuring")
    time.sleep(max(0.0, IDLE_BEFORE_MEASURE - IDLE_CPU_WINDOW))
    pids = qemu_pids(launched)
    before = {i: cpu_ticks(p) for i, p in pids.items()}
    t_cpu = time.monotonic()
    time.sleep(IDLE_CPU_WINDOW)
    after = {i: cpu_ticks(p) for i, p in pids.items()}
    window = time.monotonic() - t_cpu
    hz = os.sysconf("SC_CLK_TCK")
    ticks = sum(after[i] - before[i] for i in pids if before[i] is not None and after[i] is not None)
    out["idle_cpu_pct"] = 100.0 * ticks / hz / window  # % of one CPU, all guests together
    rss = [k / 1024 for k in (rss_kib(p) for p in pids.values()) if k]
    out["many_alive"] = len(rss)
    out["many_rss_total"] = sum(rss)
    out["many_rss_mean"] = statistics.mean(rss) if rss else float("nan")
    out["many_rss_range"] = (min(rss), max(rss)) if rss else (float("nan"), float("nan"))
    out["mem_after"] = mem_available_mib()
    out["load_after"] = os.getloadavg()[0]
    out["ksm"] = ksm_state()
    log(f"{len(rss)} qemu processes alive: RSS total {out['many_rss_total']:.0f} MiB; "
        f"MemAvailable {out['mem_after']:.0f} MiB; load {out['load_after']:.2f}")
    t_term = time.monotonic()
    left = emu.terminate(launched)
    out["many_terminate"] = time.monotonic() - t_term
    out["many_not_terminated"] = len(left)
    log(f"terminated {len(launched) - len(left)}/{len(launched)} in {out['many_terminate']:.1f} s")


# ------------------------------------------------------------------------------------ the table

def fmt(value, spec: str) -> str:
    try:
        return format(value, spec)
    except (TypeError, ValueError):
        return "-"


def med(values: list[float]):
    return statistics.median(values) if values else None


def table(out: dict) -> str:
    runs = lambda xs: " ".join(f"{x:.2f}" for x in xs) or "-"  # noqa: E731
    verdict = lambda ok: "" if ok is None else (" (met)" if ok else " (NOT met)")  # noqa: E731
    cold, rest = out.get("cold", {}), out.get("restored", {})
    bare = med(out.get("bare", []))
    cold_md, rest_md = med(cold.get("metadata", [])), med(rest.get("metadata", []))
    cold_ssh, rest_ssh = med(cold.get("ssh", [])), med(rest.get("ssh", []))
    ratio = cold_md / bare if bare and cold_md else None
    w = 58
    lines = [f"{'':{w}}{'bare qemu':>10}{'cold':>9}{'restored':>10}   target",
             f"{'1-2. start -> first metadata request, median of 3 (s)':{w}}{fmt(bare, '.2f'):>10}"
             f"{fmt(cold_md, '.2f'):>9}{fmt(rest_md, '.2f'):>10}   cold/bare <= {TARGET_RATIO}x: "
             f"{fmt(ratio, '.2f')}x{verdict(None if ratio is None else ratio <= TARGET_RATIO)}",
             f"{'     RunInstances -> SSH banner, median of 3 (s)':{w}}{'-':>10}{fmt(cold_ssh, '.2f'):>9}"
             f"{fmt(rest_ssh, '.2f'):>10}   restored <= {TARGET_SSH} s"
             f"{verdict(None if rest_ssh is None else rest_ssh <= TARGET_SSH)}",
             f"{'     each run, first request (s)':{w}}  bare {runs(out.get('bare', []))}; cold "
             f"{runs(cold.get('metadata', []))}; restored {runs(rest.get('metadata', []))}"
             f" ({rest.get('restored', 0)}/3 restored)",
             f"{'     each run, SSH (s)':{w}}  cold {runs(cold.get('ssh', []))}; restored {runs(rest.get('ssh', []))}"]
    for label, warm in (("cold", cold_ssh), ("restored", rest_ssh)):
        first = out.get(label + "_first")
        if first:
            r = first["ssh"] / warm if first.get("ssh") and warm else None
            lines.append(f"{'3. first instance after serve starts, ' + label + ' (s, SSH)':{w}}"
                         f"  {fmt(first['ssh'], '.2f')} ({'restored' if first['restored'] else 'cold boot'}); "
                         f"/ warm {fmt(r, '.2f')}x  target <= {TARGET_FIRST}x{verdict(None if r is None else r <= TARGET_FIRST)}")
    if out.get("fresh"):
        f = out["fresh"]
        lines.append(f"{'     first instance of a fresh install (no checkpoint yet)':{w}}  SSH {fmt(f['ssh'], '.2f')} s "
                     f"({'restored' if f['restored'] else 'cold boot'}); checkpoint built "
                     f"{fmt(out.get('checkpoint_built'), '.1f')} s after its RunInstances")
    rss_cold, rss_rest = med(cold.get("rss", [])), med(rest.get("rss", []))
    lines.append(f"{'4. qemu VmRSS, t2.micro (128 MiB guest), idle (MiB)':{w}}{'':>10}"
                 f"{fmt(rss_cold, '.0f'):>9}{fmt(rss_rest, '.0f'):>10}   (was 208)")
    if "many_asked" in out:
        alive = out.get("many_alive")
        ok = None if alive is None else min(out["many_reached"], alive) >= TARGET_IDLE
        lo, hi = out.get("many_rss_range", (None, None))
        lines += [
            f"5. {out['many_asked']} x {INSTANCE_TYPE}, {BATCH} per RunInstances, "
            f"each batch <= {FIRST_REQUEST_TIMEOUT:.0f} s to its first requests:",
            f"{'     launched / reached first metadata request':{w}}  {out['many_launched']} / "
            f"{out['many_reached']}   (target >= {TARGET_IDLE} idle{verdict(ok)})",
            f"{'     qemu processes alive ' + str(int(IDLE_BEFORE_MEASURE)) + ' s after the last batch':{w}}  {fmt(alive, 'd')}",
            f"{'     launch wall time, all batches (s)':{w}}  {fmt(out.get('many_launch_wall'), '.1f')}",
            f"{'     qemu RSS total / mean (min-max) (MiB)':{w}}  {fmt(out.get('many_rss_total'), '.0f')} / "
            f"{fmt(out.get('many_rss_mean'), '.0f')} ({fmt(lo, '.0f')}-{fmt(hi, '.0f')})",
            f"{'     host MemAvailable before / after (MiB)':{w}}  {fmt(out.get('mem_before'), '.0f')} / "
            f"{fmt(out.get('mem_after'), '.0f')}  (used by the guests: "
            f"{fmt(out.get('mem_before', 0) - out.get('mem_after', float('nan')), '.0f')})",
            f"{'     kernel same-page merging (KSM): on / MiB saved':{w}}  "
            f"{fmt((out.get('ksm') or {}).get('run'), 'd')} / {fmt((out.get('ksm') or {}).get('saved_mib'), '.0f')}",
            f"{'     1-minute load before / with all idle':{w}}  {fmt(out.get('load_before'), '.2f')} / "
            f"{fmt(out.get('load_after'), '.2f')}  ({os.cpu_count()} CPUs)",
            f"{'     idle guests CPU, all together (% of one CPU)':{w}}  {fmt(out.get('idle_cpu_pct'), '.1f')}",
            f"{'     terminate all (s) / not terminated':{w}}  {fmt(out.get('many_terminate'), '.1f')} / "
            f"{fmt(out.get('many_not_terminated'), 'd')}",
        ]
        if out.get("many_note"):
            lines.append(f"     note: {out['many_note']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guests", type=int, default=TARGET_IDLE, help=f"idle guests to launch in section 5 (default {TARGET_IDLE})")
    parser.add_argument("--image-dir", default=os.environ.get("EC2EMU_IMAGE_DIR") or default_images_dir())
    parser.add_argument("--ksm", choices=("on", "off", "leave"), default="leave",
                        help="the host's kernel same-page merging during the run (set back after; default: as it is)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root (network namespaces, libvirt's system instance)")
        return 1

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    out: dict = {}
    emu = None
    status = 0
    ksm_run = Path("/sys/kernel/mm/ksm/run")
    ksm_before = ksm_run.read_text().strip() if ksm_run.exists() else None
    if args.ksm != "leave" and ksm_before is not None:
        ksm_run.write_text("1" if args.ksm == "on" else "0")  # (off: 0 keeps merged pages merged)
    try:
        log(f"bare qemu, 3 boots ({args.image_dir})")
        section_bare(args.image_dir, out)
        for checkpoints in (False, True):
            label = "restored" if checkpoints else "cold"
            emu = Emulator(args.image_dir, checkpoints)
            log(f"starting ec2emu, {label} (libvirt, prefix {emu.prefix}, state {emu.server.state_dir})")
            emu.start()
            if checkpoints:  # a fresh install: its first instance boots cold and has a checkpoint built
                started = time.time()
                out["fresh"] = one_instance(emu, "fresh install, first instance")
                while not list(emu.checkpoint_dir.glob("*.save")) and time.time() - started < 180:
                    time.sleep(0.1)
                out["checkpoint_built"] = time.time() - started if list(emu.checkpoint_dir.glob("*.save")) else None
            section_single(emu, out, label)
            section_first(emu, out, label)
            if out.get(label, {}).get("metadata") and emu.metadata.subsecond is False:
                log("note: metadata.log times are whole seconds: section 2 is only accurate to 1 s")
            if checkpoints:
                section_many(emu, args.guests, out)
            log("cleaning up")
            emu.close()
            emu = None
    except KeyboardInterrupt:
        log("interrupted")
        status = 130
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 1
    except Exception as exc:  # noqa: BLE001
        log(f"failed: {type(exc).__name__}: {exc}")
        status = 1
    finally:
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # the clean-up is not interrupted
        try:
            if emu is not None:
                log("cleaning up")
                emu.close()
        finally:
            signal.signal(signal.SIGINT, old)
            if args.ksm != "leave" and ksm_before is not None:
                ksm_run.write_text(ksm_before)
    print(table(out), flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
