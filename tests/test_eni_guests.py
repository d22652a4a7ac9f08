"""Network interfaces on a real tiny guest (libvirt driver, one guest for the module): an attached
interface is a NIC the guest sees, with the interface's MAC, listed by the metadata service; its
own port answers for its addresses (the assigned ones only: anti-spoofing), DHCP gives its MAC
the interface's primary address; detached, the NIC and the port are gone.

The guest's primary interface is in subnet A (10.61.1.0/24), the extra one in subnet B
(10.61.2.0/24) of the same VPC and zone: the guest then reaches B's router address through the
extra NIC (its connected route), so the test connects from the router to the extra addresses.
The tiny image runs DHCP on a hot-plugged NIC (as Amazon Linux's ec2-net-utils does): it gets
the interface's primary address by itself; the test adds the secondary addresses by hand."""
from __future__ import annotations

import subprocess

import pytest

from .helpers import SSH_ANYWHERE, eventually, tiny_image
from .test_firewall import _connects, _namespace
from .test_guests import _console, _key, cloud, fast_waiter  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow

MD = "http://169.254.169.254/latest/meta-data/network/interfaces/macs/"


@pytest.fixture(scope="module")
def guest(cloud):  # noqa: F811
    ec2 = cloud.client()
    key, pem = _key(ec2, cloud)
    vpc = ec2.create_vpc(CidrBlock="10.61.0.0/16")["Vpc"]["VpcId"]
    zone = "us-east-1a"
    subnet_a, subnet_b = (ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.61.{n}.0/24", AvailabilityZone=zone)[
        "Subnet"]["SubnetId"] for n in (1, 2))
    group = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["SecurityGroups"][0]
    ec2.authorize_security_group_ingress(GroupId=group["GroupId"], IpPermissions=SSH_ANYWHERE)
    inst = ec2.run_instances(ImageId=tiny_image(ec2), MinCount=1, MaxCount=1, KeyName=key, InstanceType="t3.micro",
                             SubnetId=subnet_a)["Instances"][0]
    iid = inst["InstanceId"]
    fast_waiter(ec2, "instance_running")(InstanceIds=[iid])
    _console(ec2, iid, r"ec2emu-agent: ssh ready")
    yield {"ec2": ec2, "id": iid, "ip": inst["PrivateIpAddress"], "mac": inst["NetworkInterfaces"][0]["MacAddress"],
           "pem": pem, "ns": _namespace(cloud, vpc), "subnet_b": subnet_b}
    ec2.terminate_instances(InstanceIds=[iid])
    fast_waiter(ec2, "instance_terminated")(InstanceIds=[iid])


def _sh(g: dict, command: str) -> str:
    """A command in the guest, over SSH from inside its VPC's namespace."""
    out = subprocess.run(["ip", "netns", "exec", g["ns"], "ssh", "-o", "StrictHostKeyChecking=no",
                          "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5",
                          "-o", "BatchMode=yes", "-i", str(g["pem"]), f"ec2-user@{g['ip']}", command],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, (command, out.stderr)
    return out.stdout


def _nic_named(g: dict, mac: str) -> str:
    """The guest's name for the NIC with this MAC ('' when it has none)."""
    return _sh(g, f'for i in /sys/class/net/*; do [ "$(cat $i/address)" = "{mac}" ] && basename $i; done; true').strip()


def _state(ec2, eni_id: str) -> str:
    e = ec2.describe_network_interfaces(NetworkInterfaceIds=[eni_id])["NetworkInterfaces"][0]
    return (e.get("Attachment") or {}).get("Status") or e["Status"]


def test_interface_hot_plugged_into_the_guest_and_out(guest):
    ec2, g = guest["ec2"], guest
    eni = ec2.create_network_interface(SubnetId=g["subnet_b"], SecondaryPrivateIpAddressCount=1)["NetworkInterface"]
    eni_id, mac = eni["NetworkInterfaceId"], eni["MacAddress"]
    primary_ip, secondary_ip = (a["PrivateIpAddress"] for a in eni["PrivateIpAddresses"])
    stranger = "10.61.2.99"  # an address the interface does not have
    assert stranger not in (primary_ip, secondary_ip)
    assert _nic_named(g, g["mac"]) == "eth0" and _nic_named(g, mac) == ""  # the control: only eth0 yet

    attachment = ec2.attach_network_interface(NetworkInterfaceId=eni_id, InstanceId=g["id"],
                                              DeviceIndex=1)["AttachmentId"]
    eventually(lambda: _state(ec2, eni_id) == "attached", "attached", within=60)
    nic = eventually(lambda: _nic_named(g, mac), "the NIC in the guest", within=30)
    assert nic != "eth0"

    # The metadata service lists both interfaces, each with its own facts.
    macs = _sh(g, f"timeout 10 wget -qO- {MD}").split()
    assert sorted(macs) == sorted([g["mac"] + "/", mac + "/"])
    facts = {k: _sh(g, f"timeout 10 wget -qO- {MD}{mac}/{k}; echo").strip()
             for k in ("device-number", "interface-id", "subnet-id", "local-ipv4s")}
    assert facts == {"device-number": "1", "interface-id": eni_id, "subnet-id": g["subnet_b"],
                     "local-ipv4s": f"{primary_ip}\n{secondary_ip}"}
    assert _sh(g, f"timeout 10 wget -qO- {MD}{g['mac']}/device-number; echo").strip() == "0"

    # The guest asked DHCP on the new NIC, which answered its MAC with the interface's primary
    # address; eth0 kept the default route (the lease of a second NIC does not take it).
    _console(ec2, g["id"], rf"ec2emu: {nic} {primary_ip}/24")
    assert f"inet {primary_ip}/24" in _sh(g, f"ip -4 addr show dev {nic}")
    assert _sh(g, "ip route show default").split()[:5] == ["default", "via", "10.61.1.1", "dev", "eth0"]

    # Its addresses answer through its own port; one it was not given does not (anti-spoofing).
    _sh(g, f"sudo ip addr add {secondary_ip}/24 dev {nic} && sudo ip addr add {stranger}/24 dev {nic}")
    assert eventually(lambda: _connects(g["ns"], primary_ip, 22), "the interface's primary address", within=20)
    assert _connects(g["ns"], secondary_ip, 22)
    assert not _connects(g["ns"], stranger, 22)
    # Unassigned, the secondary address is refused; assigned now, the stranger is admitted
    # (a t3.micro interface has two addresses at most).
    ec2.unassign_private_ip_addresses(NetworkInterfaceId=eni_id, PrivateIpAddresses=[secondary_ip])
    assert eventually(lambda: not _connects(g["ns"], secondary_ip, 22), "an address unassigned", within=20)
    ec2.assign_private_ip_addresses(NetworkInterfaceId=eni_id, PrivateIpAddresses=[stranger])
    assert eventually(lambda: _connects(g["ns"], stranger, 22), "an address assigned later", within=20)

    ec2.detach_network_interface(AttachmentId=attachment)
    eventually(lambda: _state(ec2, eni_id) == "available", "detached", within=60)
    eventually(lambda: _nic_named(g, mac) == "", "the NIC gone from the guest", within=30)
    assert not _connects(g["ns"], primary_ip, 22)
    assert _connects(g["ns"], g["ip"], 22)  # the primary interface lives on (the control)
    assert _sh(g, f"timeout 10 wget -qO- {MD}").split() == [g["mac"] + "/"]
    ec2.delete_network_interface(NetworkInterfaceId=eni_id)


def test_interface_attached_to_a_stopped_instance_is_there_at_start(guest):
    ec2, g = guest["ec2"], guest
    ec2.stop_instances(InstanceIds=[g["id"]], Force=True)
    fast_waiter(ec2, "instance_stopped")(InstanceIds=[g["id"]])
    eni = ec2.create_network_interface(SubnetId=g["subnet_b"])["NetworkInterface"]
    eni_id, mac = eni["NetworkInterfaceId"], eni["MacAddress"]
    attachment = ec2.attach_network_interface(NetworkInterfaceId=eni_id, InstanceId=g["id"],
                                              DeviceIndex=1)["AttachmentId"]
    eventually(lambda: _state(ec2, eni_id) == "attached", "attached to the stopped instance", within=60)
    ec2.start_instances(InstanceIds=[g["id"]])
    fast_waiter(ec2, "instance_running")(InstanceIds=[g["id"]])

    def answers() -> bool:
        try:
            return _nic_named(g, g["mac"]) == "eth0"
        except (AssertionError, subprocess.TimeoutExpired):
            return False
    eventually(answers, "SSH after the start", within=180, every=2)
    nic = _nic_named(g, mac)
    assert nic not in ("", "eth0")  # there from the boot on, after the primary
    # configured at boot (rcS treats the NICs it finds as hot-plugged ones)
    eventually(lambda: f"inet {eni['PrivateIpAddress']}/24" in _sh(g, f"ip -4 addr show dev {nic}"),
               "the interface's address at boot", within=30)
    ec2.detach_network_interface(AttachmentId=attachment)
    eventually(lambda: _state(ec2, eni_id) == "available", "detached", within=60)
    eventually(lambda: _nic_named(g, mac) == "", "the NIC gone from the guest", within=30)
    ec2.delete_network_interface(NetworkInterfaceId=eni_id)
