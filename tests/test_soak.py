"""Soak: launch/terminate cycles in one VPC with overlapping lifetimes, from two client threads.

Every launch must reach SSH (a launch that lands while the previous guest's teardown runs once
died with "VPC ... has no network"), and afterwards nothing of ours is left on the host: no
domains, namespaces, veths or bridges, dnsmasq processes or instance files."""
import os
import subprocess
import threading

import pytest

from .helpers import tiny_image
from .test_guests import _domains, _key, _namespaces, _ssh, cloud, fast_waiter  # noqa: F401 (fixture)

pytestmark = [pytest.mark.slow, pytest.mark.soak]

CYCLES = int(os.environ.get("EC2EMU_SOAK_CYCLES", "100"))


def _our_links(prefix: str) -> list[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if f"alias {prefix}:" in line]


def _our_dnsmasqs(state_dir) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "dnsmasq" in line and str(state_dir) in line]


def test_launch_terminate_cycles_in_one_vpc(cloud):
    ec2 = cloud.client()
    key, pem = _key(ec2, cloud)
    image = tiny_image(ec2)
    launched: list[str] = []
    errors: list[str] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        client = cloud.client()
        try:
            for _ in range(n):
                iid = client.run_instances(ImageId=image, MinCount=1, MaxCount=1, KeyName=key,
                                           InstanceType="t2.micro")["Instances"][0]["InstanceId"]
                with lock:
                    launched.append(iid)
                fast_waiter(client, "instance_running")(InstanceIds=[iid])
                boot_id = _ssh(cloud, iid, pem, "cat /proc/sys/kernel/random/boot_id").strip()
                assert len(boot_id) == 36, boot_id
                # No wait for 'terminated': the next launch overlaps this guest's teardown.
                client.terminate_instances(InstanceIds=[iid])
        except BaseException as exc:  # noqa: BLE001 (reported by the test thread)
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=worker, args=(n,))
               for n in (CYCLES // 2, CYCLES - CYCLES // 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(launched) == CYCLES
    fast_waiter(ec2, "instance_terminated")(InstanceIds=launched)
    ended = [i for r in ec2.describe_instances(InstanceIds=launched)["Reservations"] for i in r["Instances"]]
    assert all(i["StateReason"]["Code"] == "Client.UserInitiatedShutdown" for i in ended), \
        [(i["InstanceId"], i["StateReason"]) for i in ended if i["StateReason"]["Code"] != "Client.UserInitiatedShutdown"]

    # Nothing of ours is left on the host (positive control: the launches above used all of it).
    assert not (set(launched) & _domains())
    assert not _namespaces(cloud.prefix)
    assert not _our_links(cloud.prefix)
    assert not _our_dnsmasqs(cloud.state_dir)
    assert not [p for p in (cloud.state_dir / "instances").iterdir() if p.name in launched]
