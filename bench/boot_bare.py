"""Boots the tiny image with bare QEMU (no libvirt) in a private network namespace.

    python bench/boot_bare.py [IMAGES_DIR]      3 boots: seconds to the first metadata request,
                                               and qemu's RSS with -accel tcg,tb-size=32

`bare_boot_seconds(images_dir)` is the figure bench/boot.py compares the emulator against.
`Lab` is the namespace harness, shared with tests/test_imagebuild.py:

    namespace ec2emu-t-XXXXXX (ours, deleted afterwards; nothing routes out of it)
      lo      127.0.0.1, 169.254.169.254/32  <- metadata server (this file, `serve-metadata`)
      br0     172.31.0.1/20                  <- dnsmasq: DHCP, fixed lease GUEST_MAC -> GUEST_IP
      tap0    in br0                         <- qemu's virtio-net (qemu runs in the namespace)

The guest's traffic stays inside the namespace: no user-mode (slirp) networking, no uplink,
IP forwarding off (a new namespace's default).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from hypervisor import imagebuild  # noqa: E402

GATEWAY = "172.31.0.1"
PREFIX = 20
GUEST_IP = "172.31.0.10"
GUEST_MAC = "52:54:00:ec:20:10"
METADATA_IP = "169.254.169.254"
TOOLS = ["ip", "qemu-system-x86_64", "qemu-img", "dnsmasq", "ssh", "ssh-keygen"]


def missing_tools() -> list[str]:
    return [t for t in TOOLS if shutil.which(t) is None]


def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def _stop(proc: subprocess.Popen | None, sig=signal.SIGTERM, timeout=5.0) -> None:
    """Ends a process we started (by its pid), escalating to SIGKILL."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Guest:
    """One qemu process running the kernel + initramfs + a qcow2 overlay of the tiny image."""

    def __init__(self, lab: Lab, proc: subprocess.Popen, started: float, serial: Path,
                 monitor: Path):
        self.lab, self.proc, self.started = lab, proc, started
        self.serial, self.monitor = serial, monitor

    def console(self) -> str:
        return self.serial.read_text(errors="replace") if self.serial.exists() else ""

    def wait_for_console(self, text: str, timeout: float) -> str:
        """Waits until `text` appears on the serial console; returns the console so far."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.console()
            if text in out:
                return out
            if self.proc.poll() is not None:
                raise AssertionError(f"qemu exited ({self.proc.returncode}) before {text!r}:\n"
                                     f"{out[-3000:]}")
            time.sleep(0.2)
        raise AssertionError(f"{text!r} not on the console after {timeout}s:\n"
                             f"{self.console()[-3000:]}")

    def ssh(self, command: str, user="ec2-user", timeout=30) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["ip", "netns", "exec", self.lab.netns, "ssh", "-i", str(self.lab.key),
             "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
             "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR",
             f"{user}@{GUEST_IP}", command],
            capture_output=True, text=True, timeout=timeout)

    def monitor_command(self, command: str) -> None:
        """One command on the QEMU human monitor (its unix socket)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(self.monitor))
            s.recv(4096)  # the banner
            s.sendall(command.encode() + b"\n")
            time.sleep(0.2)

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def wait_exit(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        _stop(self.proc)


class Lab:
    """A network namespace with a gateway bridge, dnsmasq, a metadata server and one tap.
    A context manager: everything it started is stopped, and the namespace deleted, on exit."""

    def __init__(self, workdir: Path, *, instance_id: str | None = None, user_data: str = "",
                 tokens_required: bool = False, prefix: str = "ec2emu-t-"):
        self.work = Path(workdir)
        self.netns = prefix + secrets.token_hex(3)
        self.instance_id = instance_id or "i-test" + secrets.token_hex(6)
        self.user_data = user_data
        self.tokens_required = tokens_required
        self.key = self.work / "id_ed25519"
        self.metadata_log = self.work / "metadata.log"
        self._procs: list[subprocess.Popen] = []
        self._guests: list[Guest] = []
        self._netns_made = False

    # -- set-up ------------------------------------------------------------------------------
    def __enter__(self) -> Lab:
        try:
            self._make_key()
            self._make_netns()
            self._start_dnsmasq()
            self._start_metadata()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _make_key(self) -> None:
        _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ec2emu-test",
            "-f", str(self.key))

    def _ip(self, *args: str) -> None:
        _sh("ip", "-n", self.netns, *args)

    def _make_netns(self) -> None:
        _sh("ip", "netns", "add", self.netns)
        self._netns_made = True
        self._ip("link", "set", "lo", "up")
        self._ip("addr", "add", f"{METADATA_IP}/32", "dev", "lo")
        self._ip("link", "add", "br0", "type", "bridge")
        self._ip("addr", "add", f"{GATEWAY}/{PREFIX}", "dev", "br0")
        self._ip("link", "set", "br0", "up")
        # The tap is made inside the namespace; qemu, started there too, opens it by name.
        self._ip("tuntap", "add", "dev", "tap0", "mode", "tap")
        self._ip("link", "set", "tap0", "master", "br0", "up")

    def _spawn(self, *cmd: str, log: Path) -> subprocess.Popen:
        with open(log, "ab") as out:
            proc = subprocess.Popen(["ip", "netns", "exec", self.netns, *cmd],
                                    stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self._procs.append(proc)
        return proc

    def _start_dnsmasq(self) -> None:
        hosts = self.work / "dhcp-hosts"
        hosts.write_text(f"{GUEST_MAC},{GUEST_IP},ip-{GUEST_IP.replace('.', '-')}\n")
        self._spawn(
            "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--user=root",
            "--interface=br0", "--bind-interfaces", "--no-resolv", "--no-hosts",
            f"--pid-file={self.work / 'dnsmasq.pid'}",
            f"--dhcp-leasefile={self.work / 'dnsmasq.leases'}",
            f"--dhcp-hostsfile={hosts}", "--dhcp-range=172.31.0.0,static,255.255.240.0,1h",
            # Option 121 (classless static routes), as a VPC sends it: the metadata address and
            # the default route (a client ignores option 3 when 121 is present, RFC 3442).
            f"--dhcp-option=121,{METADATA_IP}/32,{GATEWAY},0.0.0.0/0,{GATEWAY}",
            log=self.work / "dnsmasq.log")

    def _start_metadata(self) -> None:
        config = self.work / "metadata.json"
        config.write_text(json.dumps({
            "instance_id": self.instance_id,
            "local_hostname": f"ip-{GUEST_IP.replace('.', '-')}.ec2.internal",
            "public_key": (self.key.with_suffix(".pub")).read_text().strip(),
            "user_data": self.user_data,
            "tokens_required": self.tokens_required,
        }))
        proc = self._spawn(sys.executable, str(Path(__file__).resolve()), "serve-metadata",
                           str(config), str(self.metadata_log), log=self.work / "metadata.out")
        self._wait_listening(proc)

    def _wait_listening(self, proc: subprocess.Popen, timeout=10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.metadata_log.exists():
                return  # the server writes its log's first line once it is listening
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError("metadata server did not start: "
                           + (self.work / "metadata.out").read_text(errors="replace"))

    # -- guests ------------------------------------------------------------------------------
    def boot(self, images_dir: str, *, memory_mib=128, tb_size_mib: int | None = None) -> Guest:
        """Starts qemu on a fresh overlay of the tiny image; returns at once."""
        images = Path(images_dir)
        base = images / imagebuild.TINY_FILE
        for f in (imagebuild.KERNEL_FILE, imagebuild.INITRD_FILE, imagebuild.TINY_FILE):
            if not (images / f).exists():
                raise FileNotFoundError(f"{images / f} missing: run `ec2emu images build`")
        n = len(self._guests)
        overlay = self.work / f"overlay{n}.qcow2"
        _sh("qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base.resolve()),
            str(overlay))
        serial, monitor = self.work / f"serial{n}.log", self.work / f"monitor{n}.sock"
        accel = ["-machine", "pc,accel=tcg"] if tb_size_mib is None else \
            ["-machine", "pc", "-accel", f"tcg,tb-size={tb_size_mib}"]
        cmd = ["qemu-system-x86_64", *accel, "-m", str(memory_mib), "-smp", "1",
               "-nodefaults", "-display", "none", "-no-user-config",
               "-kernel", str(images / imagebuild.KERNEL_FILE),
               "-initrd", str(images / imagebuild.INITRD_FILE),
               "-append", imagebuild.KERNEL_CMDLINE,
               "-drive", f"file={overlay},if=virtio,format=qcow2",
               "-netdev", "tap,id=net0,ifname=tap0,script=no,downscript=no",
               "-device", f"virtio-net-pci,netdev=net0,mac={GUEST_MAC}",
               "-device", "virtio-rng-pci",
               "-serial", f"file:{serial}",
               "-monitor", f"unix:{monitor},server=on,wait=off"]
        started = time.time()
        proc = self._spawn(*cmd, log=self.work / f"qemu{n}.log")
        guest = Guest(self, proc, started, serial, monitor)
        self._guests.append(guest)
        return guest

    def requests(self) -> list[dict]:
        """The metadata server's log: one dict per request (t, method, path, token, status)."""
        if not self.metadata_log.exists():
            return []
        lines = self.metadata_log.read_text().splitlines()
        return [json.loads(line) for line in lines[1:] if line.strip()]

    def wait_for_request(self, since: float, timeout: float) -> dict:
        """The first metadata request logged at or after `since` (time.time())."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for req in self.requests():
                if req["t"] >= since:
                    return req
            time.sleep(0.02)
        raise AssertionError(f"no metadata request within {timeout}s")

    # -- tear-down ---------------------------------------------------------------------------
    def close(self) -> None:
        for guest in self._guests:
            guest.kill()
        for proc in reversed(self._procs):
            _stop(proc)
        self._procs.clear()
        if self._netns_made:
            subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)
            self._netns_made = False


# ---------------------------------------------------------------------------------------------
# The metadata server (run inside the namespace: `boot_bare.py serve-metadata CONFIG LOG`)

def serve_metadata(config_path: str, log_path: str) -> None:
    """A small IMDS: IMDSv2 token PUT (TTL 1..21600), GETs with or without a token (401 for a
    bad token, or for none when tokens are required), and the few paths the tiny image reads.
    Each request is logged as a JSON line with its time."""
    import http.server

    config = json.loads(Path(config_path).read_text())
    tokens: set[str] = set()
    log = open(log_path, "a", buffering=1)
    tree = {
        "/latest/meta-data/instance-id": config["instance_id"],
        "/latest/meta-data/local-hostname": config["local_hostname"],
        "/latest/meta-data/public-keys/": "0=ec2emu-test",
        "/latest/meta-data/public-keys/0/openssh-key": config["public_key"] + "\n",
    }
    if config["user_data"]:
        tree["/latest/user-data"] = config["user_data"]

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def _answer(self, status: int, body: str = "", token: bool = False) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            log.write(json.dumps({"t": time.time(), "method": self.command, "path": self.path,
                                  "token": token, "status": status}) + "\n")

        def do_PUT(self):
            if self.path != "/latest/api/token":
                return self._answer(404)
            try:
                ttl = int(self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", ""))
            except ValueError:
                ttl = 0
            if not 1 <= ttl <= 21600:
                return self._answer(400)
            token = secrets.token_urlsafe(32)
            tokens.add(token)
            self._answer(200, token)

        def do_GET(self):
            token = self.headers.get("X-aws-ec2-metadata-token")
            if (token is not None and token not in tokens) or \
                    (token is None and config["tokens_required"]):
                return self._answer(401, token=token is not None)
            body = tree.get(self.path)
            self._answer(200 if body is not None else 404, body or "", token=token is not None)

        def log_message(self, *args):  # the JSON log is enough
            pass

    server = http.server.ThreadingHTTPServer((METADATA_IP, 80), Handler)
    log.write(json.dumps({"listening": f"{METADATA_IP}:80"}) + "\n")
    server.serve_forever()


# ---------------------------------------------------------------------------------------------
# The benchmark

def _boot_once(images_dir: str, tb_size_mib: int | None, rss: bool) -> tuple[float, int]:
    """-> (seconds from qemu start to the first metadata request, qemu's RSS in KiB once the
    guest is SSH-ready, or 0 when rss is false)."""
    with tempfile.TemporaryDirectory(prefix="ec2emu-bench-") as work, \
            Lab(Path(work), prefix="ec2emu-b-") as lab:
        guest = lab.boot(images_dir, tb_size_mib=tb_size_mib)
        first = lab.wait_for_request(guest.started, timeout=180)
        if rss:
            guest.wait_for_console("ec2emu-agent: ssh ready", timeout=120)
        return first["t"] - guest.started, guest.rss_kib() if rss else 0


def bare_boot_seconds(images_dir: str) -> float:
    """Seconds from starting bare qemu (TCG, 128 MiB, 1 vCPU) to the guest's first metadata
    request: the floor any driver that boots this image can reach on this machine."""
    return _boot_once(images_dir, tb_size_mib=32, rss=False)[0]


def main(argv: list[str]) -> int:
    if argv[:1] == ["serve-metadata"]:
        serve_metadata(argv[1], argv[2])
        return 0
    if os.geteuid() != 0 or missing_tools():
        print(f"needs root and {', '.join(missing_tools()) or 'nothing else'}")
        return 1
    images_dir = argv[0] if argv else imagebuild.default_images_dir()
    imagebuild.build(images_dir, {"tiny"}, progress=lambda m: print(f"  build: {m}"))
    seconds, rss = [], []
    for run in range(3):
        s, r = _boot_once(images_dir, tb_size_mib=32, rss=True)
        seconds.append(s)
        rss.append(r)
        print(f"run {run + 1}: first metadata request {s:.2f} s after qemu start; "
              f"qemu RSS when SSH-ready {r / 1024:.0f} MiB (-accel tcg,tb-size=32)")
    print(f"bare qemu boot to first metadata request: median {statistics.median(seconds):.2f} s "
          f"(min {min(seconds):.2f}, max {max(seconds):.2f}); "
          f"RSS median {statistics.median(rss) / 1024:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
