"""Network-interface hot-plug benchmark: one tiny-image guest, an ENI attached and detached.

    python bench/eni.py [--trials N] [--image-dir DIR]

Prints, over N trials (default 5), median and max of:
  * AttachNetworkInterface answered -> the attachment 'attached' in DescribeNetworkInterfaces;
  * AttachNetworkInterface answered -> the NIC in the guest (a shell loop in the guest, started
    over SSH before the call, returns when /sys/class/net has the ENI's MAC; timed on the host
    when that SSH command exits);
  * DetachNetworkInterface answered -> the interface 'available', and -> the NIC gone from the guest.

Needs root, libvirtd and the built images; starts its own `ec2emu serve --hypervisor libvirt`
(temp state dir, its own network prefix) and cleans up as bench/net.py does. Prints figures
only; asserts nothing.
"""
from __future__ import annotations

import argparse
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

from bench.net import log, tcp_rule, wait_ssh  # noqa: E402
from hypervisor.imagebuild import default_images_dir  # noqa: E402
from hypervisor.network import Network  # noqa: E402
from tests.server import Server  # noqa: E402


def _watch(ns: str, pem: Path, ip: str, mac: str, present: bool) -> subprocess.Popen:
    """An SSH command that returns once the guest has (present) or lacks a NIC with this MAC."""
    test = f'grep -qx {mac} /sys/class/net/*/address 2>/dev/null'
    loop = f"until {test}; do usleep 10000; done" if present else f"while {test}; do usleep 10000; done"
    proc = subprocess.Popen(["ip", "netns", "exec", ns, "ssh", "-i", str(pem), "-o", "StrictHostKeyChecking=no",
                             "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "BatchMode=yes",
                             f"ec2-user@{ip}", f"echo ready; {loop}; echo done"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _both(status, wanted: str, watch: subprocess.Popen, since: float, timeout: float = 120) -> tuple[float, float]:
    """Seconds from `since` until status() == wanted, and until the guest-side watch returned
    (both polled every 20 ms)."""
    api = guest = None
    while api is None or guest is None:
        now = time.monotonic()
        if now - since > timeout:
            raise TimeoutError("not within the timeout")
        if api is None and status() == wanted:
            api = now - since
        if guest is None and watch.poll() is not None:
            guest = now - since
        time.sleep(0.02)
    return api, guest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--image-dir", default=str(default_images_dir()))
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ec2emu-bench-eni-"))
    prefix = "be" + secrets.token_hex(3)
    from tests.conftest import CREDENTIALS
    srv = Server(tmp, hypervisor="libvirt", extra_env={"EC2EMU_IMAGE_DIR": args.image_dir,
                                                      "EC2EMU_NETWORK_PREFIX": prefix,
                                                      "EC2EMU_CREDENTIALS": CREDENTIALS})
    ids: list[str] = []
    ec2 = None
    try:
        srv.start()
        ec2 = srv.client()
        ec2.authorize_security_group_ingress(GroupName="default", IpPermissions=tcp_rule(22))
        pem = tmp / "k.pem"
        pem.write_text(ec2.create_key_pair(KeyName="bench")["KeyMaterial"])
        pem.chmod(0o600)
        image = next(i["ImageId"] for i in ec2.describe_images(Owners=["ec2emu"])["Images"]
                     if i["Name"].startswith("ec2emu-tiny"))
        inst = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, KeyName="bench",
                                 InstanceType="t3.micro")["Instances"][0]
        ids = [inst["InstanceId"]]
        ip = inst["PrivateIpAddress"]
        ns = Network(tmp / "network", prefix=prefix).namespace_of(inst["VpcId"])
        log(f"booting {ids[0]} ({ip}) in {ns}")
        wait_ssh(ns, pem, ip)
        eni = ec2.create_network_interface(SubnetId=inst["SubnetId"])["NetworkInterface"]
        eni_id, mac = eni["NetworkInterfaceId"], eni["MacAddress"]

        def status() -> str:
            e = ec2.describe_network_interfaces(NetworkInterfaceIds=[eni_id])["NetworkInterfaces"][0]
            return (e.get("Attachment") or {}).get("Status") or e["Status"]
        figures: dict[str, list[float]] = {k: [] for k in ("attached", "in guest", "available", "gone")}
        for trial in range(args.trials):
            watch = _watch(ns, pem, ip, mac, present=True)
            attachment = ec2.attach_network_interface(NetworkInterfaceId=eni_id, InstanceId=ids[0],
                                                      DeviceIndex=1)["AttachmentId"]
            api, guest = _both(status, "attached", watch, time.monotonic())
            figures["attached"].append(api)
            figures["in guest"].append(guest)
            watch = _watch(ns, pem, ip, mac, present=False)
            ec2.detach_network_interface(AttachmentId=attachment)
            api, guest = _both(status, "available", watch, time.monotonic())
            figures["available"].append(api)
            figures["gone"].append(guest)
            log(f"trial {trial + 1}: " + ", ".join(f"{k} {v[-1] * 1000:.0f} ms" for k, v in figures.items()))
        print()
        print(f"ENI hot-plug on a t3.micro tiny guest under this host's hypervisor, {args.trials} trials "
              "(from the API's answer; median / max):")
        for label, key in (("attach -> 'attached'", "attached"), ("attach -> NIC in the guest", "in guest"),
                           ("detach -> 'available'", "available"), ("detach -> NIC gone from the guest", "gone")):
            v = figures[key]
            print(f"  {label:34} {statistics.median(v) * 1000:7.0f} ms / {max(v) * 1000:7.0f} ms")
        ec2.delete_network_interface(NetworkInterfaceId=eni_id)
    except KeyboardInterrupt:
        log("interrupted")
    finally:
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
