"""The `none` driver keeps the contracts of base.Driver on a pretend host (no root, no libvirt)."""
from __future__ import annotations

import threading

import pytest

from hypervisor.base import FirewallPort, HostEvent, InstanceSpec, Rule, SecurityGroupRules, VpcSpec
from hypervisor.none import NoneDriver


class Events:
    def __init__(self):
        self.seen: list[tuple[str, str]] = []
        self.cond = threading.Condition()

    def __call__(self, instance_id: str, event: str) -> None:
        with self.cond:
            self.seen.append((instance_id, event))
            self.cond.notify_all()

    def wait(self, instance_id: str, event: str, timeout: float = 5.0) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: (instance_id, event) in self.seen, timeout), self.seen


def spec(iid="i-0000000000000000a", ip="10.0.0.5", public_ip=None, vpc="vpc-00000000000000001") -> InstanceSpec:
    return InstanceSpec(instance_id=iid, vcpus=1, memory_mib=128, mac_address="0A:00:00:00:00:01",
                        vpc_id=vpc, subnet_id="subnet-00000000000000001", private_ip=ip, public_ip=public_ip,
                        hostname=f"ip-{ip.replace('.', '-')}.ec2.internal", region="us-east-1",
                        vpc_subnets=[("subnet-00000000000000001", "10.0.0.0/24")], dns_domain="ec2.internal",
                        public_dns_domain="compute-1.amazonaws.com")


def test_host_event_is_its_string():
    assert HostEvent.RUNNING == "running" and {"running": 1}[HostEvent.RUNNING] == 1
    assert f"{HostEvent.VANISHED}" == "vanished" and HostEvent("stopped") is HostEvent.STOPPED


def test_a_restarted_driver_finds_what_the_host_had(tmp_path):
    events = Events()
    d = NoneDriver(events, delay=0.05, state_dir=tmp_path)
    d.start(spec())
    events.wait("i-0000000000000000a", "running")
    d.close()
    # A new server on the same state dir: the guest kept running.
    d2 = NoneDriver(Events(), delay=0.05, state_dir=tmp_path)
    assert d2.reconcile_state("i-0000000000000000a", "running") == "running"
    # A start still under way when the server died left a defined guest that never booted (as a
    # libvirt domain defined but not started): not 'running', so the reconciler starts it again.
    d2.start(spec("i-0000000000000000b", "10.0.0.6"))
    d2.close()  # its timer never fires
    d3 = NoneDriver(Events(), delay=0.05, state_dir=tmp_path)
    assert d3.reconcile_state("i-0000000000000000b", "pending") == "stopped"
    assert d3.state("i-0000000000000000a") == "running"
    # Without a state dir, a new driver has an empty host.
    assert NoneDriver(Events()).reconcile_state("i-0000000000000000a", "running") is None


def test_lifecycle_events_and_vpc_removal(tmp_path):
    events = Events()
    d = NoneDriver(events, delay=0.01, state_dir=tmp_path)
    a, b = spec(public_ip="198.51.100.7"), spec("i-0000000000000000b", "10.0.0.6")
    d.start(a)
    d.start(b)
    events.wait(a.instance_id, "running")
    assert d.host["vpcs"][a.vpc_id]["nat"] == {"198.51.100.7": "10.0.0.5"}
    d.start(a)  # already running: reported at once, nothing else changes
    assert events.seen.count((a.instance_id, "running")) == 2
    assert d.remove_vpc(a.vpc_id) is False  # ports are plugged: refused
    d.stop(a.instance_id)
    assert d.host["vpcs"][a.vpc_id]["nat"] == {}  # a stopping instance loses its public IP
    events.wait(a.instance_id, "stopped")
    d.terminate(a.instance_id)
    assert d.state(a.instance_id) is None  # done on return; the event follows
    events.wait(a.instance_id, "terminated")
    assert a.vpc_id in d.host["vpcs"]  # b still plugged
    d.terminate(b.instance_id)
    d.terminate(b.instance_id)  # idempotent
    assert d.host["vpcs"] == {} and d.remove_vpc(a.vpc_id) is True
    d.stop("i-000000000000000ff")  # unknown: reported stopped at once
    assert ("i-000000000000000ff", "stopped") in events.seen


def test_addresses_move_and_unmap(tmp_path):
    d = NoneDriver(Events(), state_dir=tmp_path)
    with pytest.raises(LookupError):
        d.map_address("vpc-00000000000000001", "198.51.100.1", "10.0.0.5")
    d.ensure_vpc(VpcSpec("vpc-00000000000000001", (("subnet-1", "10.0.0.0/24"),)))
    d.ensure_vpc(VpcSpec("vpc-00000000000000002", (("subnet-2", "10.0.0.0/24"),)))
    d.map_address("vpc-00000000000000001", "198.51.100.1", "10.0.0.5", "ec2-198-51-100-1.compute-1.amazonaws.com")
    d.map_address("vpc-00000000000000001", "198.51.100.2", "10.0.0.5")  # one public IP per private IP
    assert d.host["vpcs"]["vpc-00000000000000001"]["nat"] == {"198.51.100.2": "10.0.0.5"}
    d.map_address("vpc-00000000000000002", "198.51.100.2", "10.0.0.9")  # moves to the other VPC
    assert d.host["vpcs"]["vpc-00000000000000001"]["nat"] == {}
    d.unmap_address("vpc-00000000000000002", "198.51.100.2", "10.0.0.8")  # not that mapping
    assert d.host["vpcs"]["vpc-00000000000000002"]["nat"] == {"198.51.100.2": "10.0.0.9"}
    d.unmap_address("vpc-00000000000000002", "198.51.100.2", "10.0.0.9")
    assert d.host["vpcs"]["vpc-00000000000000002"]["nat"] == {}


def test_firewall_rules_are_evaluated(tmp_path):
    d = NoneDriver(Events(), state_dir=tmp_path)
    vpc = "vpc-00000000000000001"
    d.ensure_vpc(VpcSpec(vpc, (("subnet-1", "10.0.0.0/24"),)))
    web = SecurityGroupRules("sg-web", ingress=(Rule("tcp", 80, 80, cidr="0.0.0.0/0"),
                                                Rule("tcp", 22, 22, group_id="sg-admin")),
                             egress=(Rule("all", cidr="0.0.0.0/0"),))
    admin = SecurityGroupRules("sg-admin", egress=(Rule("tcp", 22, 22, group_id="sg-web"),))
    with pytest.raises(ValueError):
        d.apply_firewall(vpc, [web], [FirewallPort("i-1", "10.0.0.5", ("sg-web",))])  # sg-admin missing
    d.apply_firewall(vpc, [web, admin], [FirewallPort("i-1", "10.0.0.5", ("sg-web",)),
                                         FirewallPort("i-2", "10.0.0.6", ("sg-admin",))])
    assert d.admits(vpc, "203.0.113.9", "10.0.0.5", "tcp", 80)
    assert not d.admits(vpc, "203.0.113.9", "10.0.0.5", "tcp", 22)
    assert d.admits(vpc, "10.0.0.6", "10.0.0.5", "tcp", 22)       # group reference
    assert not d.admits(vpc, "10.0.0.6", "10.0.0.5", "tcp", 80)   # admin's egress allows only 22
    assert not d.admits(vpc, "10.0.0.5", "10.0.0.6", "tcp", 22)   # admin admits nothing in
    with pytest.raises(ValueError):
        Rule("tcp", 1, 2)  # no peer


def test_disk_contracts(tmp_path):
    d = NoneDriver(Events(), delay=0.01, state_dir=tmp_path)
    image = tmp_path / "image.qcow2"
    image.write_bytes(b"\0" * 1024)
    d.create_disk("vol-1", 2)
    d.create_disk("vol-1", 2)  # idempotent
    d.resize_disk("vol-1", 3)
    with pytest.raises(ValueError):
        d.resize_disk("vol-1", 1)
    d.snapshot_disk("vol-1", "snap-1")
    with pytest.raises(ValueError):
        d.clone_disk("vol-2", 2, snapshot_id="snap-1")  # smaller than the source
    d.clone_disk("vol-2", 4, snapshot_id="snap-1")
    d.clone_disk("vol-3", 1, image_path=str(image), key=b"k" * 32)
    with pytest.raises(LookupError):
        d.clone_disk("vol-4", 1, image_path=str(tmp_path / "nothing"))
    d.delete_snapshot("snap-1")  # vol-2 still needs it: kept, but no new clones
    assert "snap-1" in d.host["snapshots"]
    with pytest.raises(LookupError):
        d.clone_disk("vol-5", 4, snapshot_id="snap-1")
    d.start(spec())
    d.attach_disk("i-0000000000000000a", "vol-2")
    d.attach_disk("i-0000000000000000a", "vol-2")
    assert d.host["disks"]["vol-2"]["letter"] == "f"  # the first free EBS letter, as libvirt's
    with pytest.raises(ValueError):
        d.attach_disk("i-0000000000000000a", "vol-3", device="/dev/xvdf")  # the letter is taken
    with pytest.raises(ValueError):
        d.attach_disk("i-0000000000000000a", "vol-3", device="/dev/sda1")  # not one disk letter
    with pytest.raises(ValueError):
        d.delete_disk("vol-2")
    d.detach_disk("i-0000000000000000a", "vol-2")
    d.detach_disk("i-0000000000000000a", "vol-2")
    d.delete_disk("vol-2")
    assert "snap-1" not in d.host["snapshots"]  # its last clone went
    d.attach_disk("i-0000000000000000a", "vol-3", device="/dev/sdg")
    assert d.host["disks"]["vol-3"]["letter"] == "g"
    d.terminate("i-0000000000000000a")
    assert d.host["disks"]["vol-3"]["attached_to"] is None  # detached and kept
    # Disks survive a restart of the server.
    assert set(NoneDriver(Events(), state_dir=tmp_path).host["disks"]) == {"vol-1", "vol-3"}


def test_interfaces_attach_detach_and_go_with_their_instance(tmp_path):
    from hypervisor.base import InterfaceSpec
    events = Events()
    d = NoneDriver(events, delay=0.01, state_dir=tmp_path)
    iid, vpc = "i-0000000000000000a", "vpc-00000000000000001"
    nic = InterfaceSpec("eni-0000000000000000e", 1, vpc, "subnet-00000000000000001", "0A:00:00:00:00:0E",
                        "10.0.0.9", ("10.0.0.10",))
    with pytest.raises(LookupError):  # no such guest yet
        d.attach_interface(iid, nic)
    d.start(spec())
    events.wait(iid, "running")
    d.attach_interface(iid, nic)
    d.attach_interface(iid, nic)  # again: nothing new
    assert d.host["guests"][iid]["nics"] == {nic.port_id: {"mac": "0a:00:00:00:00:0e", "device_index": 1}}
    port = d.host["vpcs"][vpc]["ports"][nic.port_id]
    assert port["owner"] == iid and port["ip"] == "10.0.0.9" and port["secondary_ips"] == ["10.0.0.10"]
    with pytest.raises(ValueError):  # its device index is taken
        d.attach_interface(iid, InterfaceSpec("eni-0000000000000000f", 1, vpc, "subnet-00000000000000001",
                                              "0a:00:00:00:00:0f", "10.0.0.11"))
    d.set_addresses(iid, ["10.0.0.12"])
    assert d.host["vpcs"][vpc]["ports"][iid]["secondary_ips"] == ["10.0.0.12"]
    d.detach_interface(iid, nic.port_id)
    d.detach_interface(iid, nic.port_id)  # again: nothing
    assert nic.port_id not in d.host["vpcs"][vpc]["ports"] and iid in d.host["vpcs"][vpc]["ports"]
    d.attach_interface(iid, nic)
    d.terminate(iid)  # its interfaces' ports go with it
    events.wait(iid, "terminated")
    assert vpc not in d.host["vpcs"] or nic.port_id not in d.host["vpcs"][vpc]["ports"]
