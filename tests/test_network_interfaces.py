"""Network interfaces: every instance's primary interface, from launch to termination, and
interfaces of their own: created, attached, detached, given secondary addresses, deleted."""
from __future__ import annotations

import json

import pytest

from .helpers import eventually, expect_error, fast_waiter, tiny_image, unique


def test_primary_interfaces_listed(ec2):
    vpc = ec2.create_vpc(CidrBlock="10.50.0.0/16")["Vpc"]["VpcId"]
    sid = ec2.create_subnet(VpcId=vpc, CidrBlock="10.50.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName=unique("eni"), Description="d", VpcId=vpc)["GroupId"]
    ec2.modify_subnet_attribute(SubnetId=sid, MapPublicIpOnLaunch={"Value": True})
    res = ec2.run_instances(ImageId=tiny_image(ec2), MinCount=2, MaxCount=2, SubnetId=sid, SecurityGroupIds=[group])
    instances = res["Instances"]
    ids = [i["InstanceId"] for i in instances]
    try:
        enis = [i["NetworkInterfaces"][0]["NetworkInterfaceId"] for i in instances]
        got = ec2.describe_network_interfaces(NetworkInterfaceIds=enis)["NetworkInterfaces"]
        assert sorted(e["NetworkInterfaceId"] for e in got) == sorted(enis)
        by_id = {e["NetworkInterfaceId"]: e for e in got}
        for inst in instances:
            e = by_id[inst["NetworkInterfaces"][0]["NetworkInterfaceId"]]
            assert e["Status"] == "in-use" and e["VpcId"] == vpc and e["SubnetId"] == sid
            assert e["PrivateIpAddress"] == inst["PrivateIpAddress"]
            assert e["MacAddress"] == inst["NetworkInterfaces"][0]["MacAddress"]
            assert e["Attachment"]["InstanceId"] == inst["InstanceId"]
            assert e["Attachment"]["DeviceIndex"] == 0 and e["Attachment"]["Status"] == "attached"
            assert e["Groups"] == [{"GroupId": group, "GroupName": ec2.describe_security_groups(
                GroupIds=[group])["SecurityGroups"][0]["GroupName"]}]
            assert e["Association"]["PublicIp"] == inst["PublicIpAddress"]
            assert e["PrivateIpAddresses"][0]["Primary"] is True
        # filters Terraform and others use
        f = lambda name, *values: [e["NetworkInterfaceId"] for e in ec2.describe_network_interfaces(  # noqa: E731
            Filters=[{"Name": name, "Values": list(values)}])["NetworkInterfaces"]]
        assert sorted(f("group-id", group)) == sorted(enis)
        assert sorted(f("vpc-id", vpc)) == sorted(enis)
        assert f("attachment.instance-id", ids[0]) == [instances[0]["NetworkInterfaces"][0]["NetworkInterfaceId"]]
        assert f("private-ip-address", instances[1]["PrivateIpAddress"], "10.50.9.9") == [
            e for e in enis if by_id[e]["PrivateIpAddress"] == instances[1]["PrivateIpAddress"]]
        assert f("association.public-ip", instances[0]["PublicIpAddress"]) == [enis[0]]
        assert f("mac-address", by_id[enis[1]]["MacAddress"]) == [enis[1]]
        assert sorted(f("subnet-id", sid)) == sorted(enis) and f("status", "available") == []
        missing = "eni-0123456789abcdef0"
        assert expect_error("InvalidNetworkInterfaceID.NotFound", ec2.describe_network_interfaces,
                            NetworkInterfaceIds=[missing]) == f"The networkInterface ID '{missing}' does not exist"
        # a security group in use by interfaces cannot be deleted
        expect_error("DependencyViolation", ec2.delete_security_group, GroupId=group)
    finally:
        ec2.terminate_instances(InstanceIds=ids)
    fast_waiter(ec2, "instance_terminated")(InstanceIds=ids)
    assert ec2.describe_network_interfaces(Filters=[{"Name": "group-id", "Values": [group]}])[
        "NetworkInterfaces"] == []
    expect_error("InvalidNetworkInterfaceID.NotFound", ec2.describe_network_interfaces, NetworkInterfaceIds=enis[:1])
    ec2.delete_security_group(GroupId=group)
    ec2.delete_subnet(SubnetId=sid)
    ec2.delete_vpc(VpcId=vpc)


# ------------------------------------------------------------------ interfaces of their own

def _host(server) -> dict:
    """What the `none` driver holds (none-host.json: guests' NICs, VPC ports, firewalls)."""
    try:
        return json.loads((server.state_dir / "none-host.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):  # (replaced atomically; not written yet)
        return {}


def _eni(ec2, eni_id: str) -> dict:
    return ec2.describe_network_interfaces(NetworkInterfaceIds=[eni_id])["NetworkInterfaces"][0]


@pytest.fixture(scope="module")
def net(ec2):
    """A VPC with a subnet in each of two zones and a group."""
    vpc = ec2.create_vpc(CidrBlock="10.51.0.0/16")["Vpc"]["VpcId"]
    zones = [z["ZoneName"] for z in ec2.describe_availability_zones()["AvailabilityZones"]][:2]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.51.{i + 1}.0/24", AvailabilityZone=z)["Subnet"]["SubnetId"]
               for i, z in enumerate(zones)]
    group = ec2.create_security_group(GroupName=unique("eni"), Description="d", VpcId=vpc)["GroupId"]
    yield {"vpc": vpc, "subnet": subnets[0], "other_zone_subnet": subnets[1], "group": group}


def test_create_describe_modify_delete(ec2, net):
    created = ec2.create_network_interface(
        SubnetId=net["subnet"], Groups=[net["group"]], Description="mine", SecondaryPrivateIpAddressCount=2,
        TagSpecifications=[{"ResourceType": "network-interface", "Tags": [{"Key": "role", "Value": "db"}]}],
    )["NetworkInterface"]
    eni = created["NetworkInterfaceId"]
    assert eni.startswith("eni-") and len(eni) == 21
    assert created["Status"] == "available" and created["SubnetId"] == net["subnet"] and created["VpcId"] == net["vpc"]
    assert created["Description"] == "mine" and created["Groups"][0]["GroupId"] == net["group"]
    assert created["TagSet"] == [{"Key": "role", "Value": "db"}] and "Attachment" not in created
    addresses = created["PrivateIpAddresses"]
    assert [a["Primary"] for a in addresses] == [True, False, False]
    assert addresses[0]["PrivateIpAddress"] == created["PrivateIpAddress"]
    assert len({a["PrivateIpAddress"] for a in addresses}) == 3
    assert all(a["PrivateIpAddress"].startswith("10.51.1.") for a in addresses)
    got = _eni(ec2, eni)
    assert got["MacAddress"] == created["MacAddress"] and got["PrivateIpAddresses"] == addresses

    f = lambda name, *values: [e["NetworkInterfaceId"] for e in ec2.describe_network_interfaces(  # noqa: E731
        Filters=[{"Name": name, "Values": list(values)}])["NetworkInterfaces"]]
    assert eni in f("status", "available") and eni not in f("status", "in-use")
    assert f("tag:role", "db") == [eni] and f("description", "mine") == [eni]
    assert f("addresses.private-ip-address", addresses[2]["PrivateIpAddress"]) == [eni]

    attr = lambda name: ec2.describe_network_interface_attribute(  # noqa: E731
        NetworkInterfaceId=eni, Attribute=name)
    assert attr("description")["Description"] == {"Value": "mine"}
    assert attr("sourceDestCheck")["SourceDestCheck"] == {"Value": True}
    assert [g["GroupId"] for g in attr("groupSet")["Groups"]] == [net["group"]]
    assert "Attachment" not in attr("attachment")
    ec2.modify_network_interface_attribute(NetworkInterfaceId=eni, Description={"Value": "renamed"})
    ec2.modify_network_interface_attribute(NetworkInterfaceId=eni, SourceDestCheck={"Value": False})
    default = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [net["vpc"]]},
                                                    {"Name": "group-name", "Values": ["default"]}])[
        "SecurityGroups"][0]["GroupId"]
    ec2.modify_network_interface_attribute(NetworkInterfaceId=eni, Groups=[default, net["group"]])
    got = _eni(ec2, eni)
    assert got["Description"] == "renamed" and got["SourceDestCheck"] is False
    assert [g["GroupId"] for g in got["Groups"]] == [default, net["group"]]
    expect_error("InvalidParameterCombination", ec2.modify_network_interface_attribute, NetworkInterfaceId=eni,
                 Description={"Value": "x"}, SourceDestCheck={"Value": True})
    expect_error("InvalidAttachmentID.NotFound", ec2.modify_network_interface_attribute, NetworkInterfaceId=eni,
                 Attachment={"AttachmentId": "eni-attach-0123456789abcdef0", "DeleteOnTermination": True})
    # A group an interface has cannot be deleted.
    expect_error("DependencyViolation", ec2.delete_security_group, GroupId=net["group"])
    expect_error("DependencyViolation", ec2.delete_subnet, SubnetId=net["subnet"])

    # Secondary addresses: assigned (by count, by address), unassigned.
    wanted = "10.51.1.200"
    assigned = ec2.assign_private_ip_addresses(NetworkInterfaceId=eni, PrivateIpAddresses=[wanted])
    assert assigned["AssignedPrivateIpAddresses"] == [{"PrivateIpAddress": wanted}]
    more = ec2.assign_private_ip_addresses(NetworkInterfaceId=eni, SecondaryPrivateIpAddressCount=1)
    extra = more["AssignedPrivateIpAddresses"][0]["PrivateIpAddress"]
    secondary = [a["PrivateIpAddress"] for a in _eni(ec2, eni)["PrivateIpAddresses"] if not a["Primary"]]
    assert secondary == [addresses[1]["PrivateIpAddress"], addresses[2]["PrivateIpAddress"], wanted, extra]
    expect_error("InvalidIPAddress.InUse", ec2.assign_private_ip_addresses, NetworkInterfaceId=eni,
                 PrivateIpAddresses=[wanted])
    ec2.unassign_private_ip_addresses(NetworkInterfaceId=eni, PrivateIpAddresses=[wanted, extra])
    assert len(_eni(ec2, eni)["PrivateIpAddresses"]) == 3
    assert expect_error("InvalidParameterValue", ec2.unassign_private_ip_addresses, NetworkInterfaceId=eni,
                        PrivateIpAddresses=[wanted]) == \
        f"Some of the specified addresses are not assigned to interface {eni}"
    # The primary address is not a secondary one: it cannot be unassigned.
    expect_error("InvalidParameterValue", ec2.unassign_private_ip_addresses, NetworkInterfaceId=eni,
                 PrivateIpAddresses=[created["PrivateIpAddress"]])

    ec2.delete_network_interface(NetworkInterfaceId=eni)
    assert expect_error("InvalidNetworkInterfaceID.NotFound", ec2.delete_network_interface,
                        NetworkInterfaceId=eni) == f"The networkInterface ID '{eni}' does not exist"
    expect_error("InvalidNetworkInterfaceID.NotFound", ec2.describe_network_interfaces, NetworkInterfaceIds=[eni])
    assert f("tag:role", "db") == []
    expect_error("InvalidNetworkInterfaceId.Malformed", ec2.delete_network_interface, NetworkInterfaceId="eni-xyz")
    # Its addresses are free again.
    again = ec2.create_network_interface(SubnetId=net["subnet"], PrivateIpAddress=created["PrivateIpAddress"])
    ec2.delete_network_interface(NetworkInterfaceId=again["NetworkInterface"]["NetworkInterfaceId"])


def test_create_errors(ec2, net):
    taken = ec2.create_network_interface(SubnetId=net["subnet"], PrivateIpAddress="10.51.1.50")[
        "NetworkInterface"]["NetworkInterfaceId"]
    try:
        assert expect_error("InvalidIPAddress.InUse", ec2.create_network_interface, SubnetId=net["subnet"],
                            PrivateIpAddress="10.51.1.50") == "Address 10.51.1.50 is in use."
        expect_error("InvalidParameterValue", ec2.create_network_interface, SubnetId=net["subnet"],
                     PrivateIpAddress="10.51.9.9")
        expect_error("InvalidParameterValue", ec2.create_network_interface, SubnetId=net["subnet"],
                     PrivateIpAddress="10.51.1.1")  # reserved by AWS
        expect_error("InvalidParameterCombination", ec2.create_network_interface, SubnetId=net["subnet"],
                     SecondaryPrivateIpAddressCount=1,
                     PrivateIpAddresses=[{"PrivateIpAddress": "10.51.1.60", "Primary": False}])
        expect_error("InvalidSubnetID.NotFound", ec2.create_network_interface, SubnetId="subnet-0123456789abcdef0")
        expect_error("InvalidGroup.NotFound", ec2.create_network_interface, SubnetId=net["subnet"],
                     Groups=["sg-0123456789abcdef0"])
        # A listed address without its address (the model lets it through): an error, not a 500.
        expect_error("MissingParameter", ec2.create_network_interface, SubnetId=net["subnet"],
                     PrivateIpAddresses=[{"Primary": True}])
        # An Elastic IP goes on an address the interface has, of an interface that exists.
        alloc = ec2.allocate_address(Domain="vpc")["AllocationId"]
        try:
            msg = expect_error("InvalidParameterValue", ec2.associate_address, AllocationId=alloc,
                               NetworkInterfaceId=taken, PrivateIpAddress="10.51.1.51")
            assert "10.51.1.51 is not assigned to the network interface " + taken in msg
            expect_error("InvalidNetworkInterfaceID.NotFound", ec2.associate_address, AllocationId=alloc,
                         NetworkInterfaceId="eni-0123456789abcdef0")
            assert "AssociationId" not in ec2.describe_addresses(AllocationIds=[alloc])["Addresses"][0]
        finally:
            ec2.release_address(AllocationId=alloc)
        # An address an interface holds is not given to an instance either.
        expect_error("InvalidIPAddress.InUse", ec2.run_instances, ImageId=tiny_image(ec2), MinCount=1, MaxCount=1,
                     SubnetId=net["subnet"], PrivateIpAddress="10.51.1.50")
        # Listed addresses: the one marked primary is the primary.
        listed = ec2.create_network_interface(SubnetId=net["subnet"], PrivateIpAddresses=[
            {"PrivateIpAddress": "10.51.1.61", "Primary": False},
            {"PrivateIpAddress": "10.51.1.62", "Primary": True}])["NetworkInterface"]
        assert listed["PrivateIpAddress"] == "10.51.1.62"
        assert [(a["PrivateIpAddress"], a["Primary"]) for a in listed["PrivateIpAddresses"]] == [
            ("10.51.1.62", True), ("10.51.1.61", False)]
        ec2.delete_network_interface(NetworkInterfaceId=listed["NetworkInterfaceId"])
    finally:
        ec2.delete_network_interface(NetworkInterfaceId=taken)


def test_attach_detach_and_terminate(server, ec2, net):
    """Attach, the errors AWS answers, detach, and what termination does to each interface; the
    host (the `none` driver) is given the NIC, its own port and its addresses' firewall."""
    res = ec2.run_instances(ImageId=tiny_image(ec2), MinCount=2, MaxCount=2, SubnetId=net["subnet"],
                            SecurityGroupIds=[net["group"]])
    iid, other_iid = [i["InstanceId"] for i in res["Instances"]]
    fast_waiter(ec2, "instance_running")(InstanceIds=[iid, other_iid])
    primary = res["Instances"][0]["NetworkInterfaces"][0]
    eni = ec2.create_network_interface(SubnetId=net["subnet"], Groups=[net["group"]],
                                       SecondaryPrivateIpAddressCount=1)["NetworkInterface"]
    eni_id = eni["NetworkInterfaceId"]
    kept = ec2.create_network_interface(SubnetId=net["subnet"])["NetworkInterface"]["NetworkInterfaceId"]
    far = ec2.create_network_interface(SubnetId=net["other_zone_subnet"])["NetworkInterface"]["NetworkInterfaceId"]
    try:
        attachment = ec2.attach_network_interface(NetworkInterfaceId=eni_id, InstanceId=iid, DeviceIndex=1)
        att_id = attachment["AttachmentId"]
        assert att_id.startswith("eni-attach-")
        eventually(lambda: _eni(ec2, eni_id)["Attachment"]["Status"] == "attached", "attached")
        got = _eni(ec2, eni_id)
        assert got["Status"] == "in-use" and got["Attachment"]["InstanceId"] == iid
        assert got["Attachment"]["DeviceIndex"] == 1 and got["Attachment"]["DeleteOnTermination"] is False
        assert got["Attachment"]["AttachmentId"] == att_id
        # The host: a NIC with its MAC at index 1, its own port, its addresses in the firewall.
        host = _host(server)
        assert host["guests"][iid]["nics"][eni_id] == {"mac": eni["MacAddress"], "device_index": 1}
        port = host["vpcs"][net["vpc"]]["ports"][eni_id]
        ips = [a["PrivateIpAddress"] for a in eni["PrivateIpAddresses"]]
        assert port["owner"] == iid and port["ip"] == ips[0] and port["secondary_ips"] == ips[1:]
        eventually(lambda: _host(server)["firewalls"][net["vpc"]]["ports"].get(eni_id) == {
            "ip": ips[0], "groups": [net["group"]], "secondary_ips": ips[1:]}, "the interface's firewall port")
        # DescribeInstances lists both interfaces, by device index.
        nics = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["NetworkInterfaces"]
        assert [(n["NetworkInterfaceId"], n["Attachment"]["DeviceIndex"]) for n in nics] == [
            (primary["NetworkInterfaceId"], 0), (eni_id, 1)]
        assert ec2.describe_network_interface_attribute(NetworkInterfaceId=eni_id, Attribute="attachment")[
            "Attachment"]["AttachmentId"] == att_id
        # DescribeInstances' network-interface.* filters match any of an instance's interfaces.
        by = lambda name, value: [i["InstanceId"] for r in ec2.describe_instances(Filters=[  # noqa: E731
            {"Name": name, "Values": [value]}])["Reservations"] for i in r["Instances"]]
        assert by("network-interface.network-interface-id", eni_id) == [iid]
        assert by("network-interface.addresses.private-ip-address", ips[1]) == [iid]  # a secondary address
        assert by("network-interface.mac-address", eni["MacAddress"]) == [iid]
        assert by("network-interface.network-interface-id", primary["NetworkInterfaceId"]) == [iid]
        assert {iid, other_iid} <= set(by("network-interface.attachment.device-index", "0"))
        assert iid in by("network-interface.attachment.device-index", "1")
        assert other_iid not in by("network-interface.attachment.device-index", "1")
        assert by("network-interface.network-interface-id", kept) == []  # not attached: no instance

        # Misuse, answered as AWS does.
        assert expect_error("InvalidParameterValue", ec2.attach_network_interface, NetworkInterfaceId=kept,
                            InstanceId=iid, DeviceIndex=1) == \
            f"Instance '{iid}' already has an interface attached at device index '1'."
        expect_error("InvalidNetworkInterface.InUse", ec2.attach_network_interface, NetworkInterfaceId=eni_id,
                     InstanceId=other_iid, DeviceIndex=1)
        expect_error("InvalidParameterValue", ec2.attach_network_interface, NetworkInterfaceId=far,
                     InstanceId=other_iid, DeviceIndex=1)  # another availability zone
        expect_error("AttachmentLimitExceeded", ec2.attach_network_interface, NetworkInterfaceId=kept,
                     InstanceId=iid, DeviceIndex=2)  # a t2.micro has 2 interfaces at most
        assert expect_error("InvalidNetworkInterface.InUse", ec2.delete_network_interface,
                            NetworkInterfaceId=eni_id) == f"The network interface '{eni_id}' is currently in use."
        expect_error("InvalidNetworkInterface.InUse", ec2.delete_network_interface,
                     NetworkInterfaceId=primary["NetworkInterfaceId"])
        assert expect_error("OperationNotPermitted", ec2.detach_network_interface,
                            AttachmentId=primary["Attachment"]["AttachmentId"]) == \
            "The network interface at device index 0 cannot be detached."
        expect_error("InvalidAttachmentID.NotFound", ec2.detach_network_interface,
                     AttachmentId="eni-attach-0123456789abcdef0")
        expect_error("InvalidInstanceID.NotFound", ec2.attach_network_interface, NetworkInterfaceId=kept,
                     InstanceId="i-0123456789abcdef0", DeviceIndex=1)
        # With two interfaces, the instance's groups are no longer one thing to set.
        assert expect_error("InvalidInstanceID", ec2.modify_instance_attribute, InstanceId=iid,
                            Groups=[net["group"]]) == (f"There are multiple interfaces attached to instance '{iid}'. "
                                                       "Please specify an interface ID for the operation instead.")
        # The primary interface's groups are the instance's.
        default = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [net["vpc"]]},
                                                        {"Name": "group-name", "Values": ["default"]}])[
            "SecurityGroups"][0]["GroupId"]
        ec2.modify_network_interface_attribute(NetworkInterfaceId=primary["NetworkInterfaceId"], Groups=[default])
        assert [g["GroupId"] for g in ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0][
            "SecurityGroups"]] == [default]
        eventually(lambda: _host(server)["firewalls"][net["vpc"]]["ports"][iid]["groups"] == [default],
                   "the primary port's groups")

        # Secondary addresses of an attached interface reach its port.
        new_ip = ec2.assign_private_ip_addresses(NetworkInterfaceId=eni_id, SecondaryPrivateIpAddressCount=1)[
            "AssignedPrivateIpAddresses"][0]["PrivateIpAddress"]
        eventually(lambda: _host(server)["vpcs"][net["vpc"]]["ports"][eni_id]["secondary_ips"] == [*ips[1:], new_ip],
                   "the port admits the new address")
        # ... and of a primary one to the instance's own port.
        primary_extra = ec2.assign_private_ip_addresses(
            NetworkInterfaceId=primary["NetworkInterfaceId"], SecondaryPrivateIpAddressCount=1)[
            "AssignedPrivateIpAddresses"][0]["PrivateIpAddress"]
        eventually(lambda: _host(server)["vpcs"][net["vpc"]]["ports"][iid]["secondary_ips"] == [primary_extra],
                   "the instance's port admits its new secondary address")

        # Source/destination check off: the port may send from any address (a NAT instance's);
        # the instance's attribute is its primary interface's.
        ec2.modify_network_interface_attribute(NetworkInterfaceId=eni_id, SourceDestCheck={"Value": False})
        eventually(lambda: _host(server)["vpcs"][net["vpc"]]["ports"][eni_id]["source_dest_check"] is False,
                   "the interface's port without source/destination check")
        assert _host(server)["vpcs"][net["vpc"]]["ports"][iid]["source_dest_check"] is True  # the control
        ec2.modify_instance_attribute(InstanceId=iid, SourceDestCheck={"Value": False})
        eventually(lambda: _host(server)["vpcs"][net["vpc"]]["ports"][iid]["source_dest_check"] is False,
                   "the primary port without source/destination check")
        assert _eni(ec2, primary["NetworkInterfaceId"])["SourceDestCheck"] is False
        ec2.modify_network_interface_attribute(NetworkInterfaceId=primary["NetworkInterfaceId"],
                                               SourceDestCheck={"Value": True})
        assert ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["SourceDestCheck"] is True
        eventually(lambda: _host(server)["vpcs"][net["vpc"]]["ports"][iid]["source_dest_check"] is True,
                   "the primary port checked again")

        # Detach: the interface is available again, its NIC and port gone from the host.
        ec2.detach_network_interface(AttachmentId=att_id)
        eventually(lambda: _eni(ec2, eni_id)["Status"] == "available", "detached")
        assert "Attachment" not in _eni(ec2, eni_id)
        host = _host(server)
        assert eni_id not in host["guests"][iid].get("nics", {})
        assert eni_id not in host["vpcs"][net["vpc"]]["ports"] and iid in host["vpcs"][net["vpc"]]["ports"]

        # Attached again (to a stopped instance too: it has it at its next start), with
        # DeleteOnTermination set on one of them; termination deletes that one, detaches the other.
        ec2.attach_network_interface(NetworkInterfaceId=eni_id, InstanceId=iid, DeviceIndex=1)
        ec2.stop_instances(InstanceIds=[other_iid])
        fast_waiter(ec2, "instance_stopped")(InstanceIds=[other_iid])
        kept_att = ec2.attach_network_interface(NetworkInterfaceId=kept, InstanceId=other_iid,
                                                DeviceIndex=1)["AttachmentId"]
        eventually(lambda: _eni(ec2, kept)["Attachment"]["Status"] == "attached", "attached to a stopped instance")
        assert kept in _host(server)["guests"][other_iid]["nics"]
        ec2.modify_network_interface_attribute(NetworkInterfaceId=kept, Attachment={
            "AttachmentId": kept_att, "DeleteOnTermination": True})
        assert _eni(ec2, kept)["Attachment"]["DeleteOnTermination"] is True
        eventually(lambda: _eni(ec2, eni_id)["Attachment"]["Status"] == "attached", "attached again")
    finally:
        ec2.terminate_instances(InstanceIds=[iid, other_iid])
    fast_waiter(ec2, "instance_terminated")(InstanceIds=[iid, other_iid])
    assert _eni(ec2, eni_id)["Status"] == "available"  # DeleteOnTermination false: detached
    expect_error("InvalidNetworkInterfaceID.NotFound", ec2.describe_network_interfaces, NetworkInterfaceIds=[kept])
    expect_error("InvalidNetworkInterfaceID.NotFound", ec2.describe_network_interfaces,
                 NetworkInterfaceIds=[primary["NetworkInterfaceId"]])
    assert eni_id not in _host(server)["vpcs"].get(net["vpc"], {}).get("ports", {})
    for e in (eni_id, far):
        ec2.delete_network_interface(NetworkInterfaceId=e)


def test_run_instances_with_network_interfaces(server, ec2, net):
    """RunInstances' NetworkInterfaces: an existing interface as the primary one, another existing
    one and a new one at device index 1; what AWS refuses."""
    image = tiny_image(ec2)
    mine = ec2.create_network_interface(SubnetId=net["subnet"], Groups=[net["group"]])["NetworkInterface"]
    second = ec2.create_network_interface(SubnetId=net["subnet"])["NetworkInterface"]
    far = ec2.create_network_interface(SubnetId=net["other_zone_subnet"])["NetworkInterface"]["NetworkInterfaceId"]
    run = lambda nics, **kw: ec2.run_instances(ImageId=image, MinCount=1, MaxCount=kw.pop("n", 1),  # noqa: E731
                                               NetworkInterfaces=nics, **kw)["Instances"]
    expect_error("InvalidParameterValue", run, [{"DeviceIndex": 1, "SubnetId": net["subnet"]}])  # no index 0
    expect_error("InvalidParameterValue", run, [{"DeviceIndex": 0, "SubnetId": net["subnet"]},
                                                {"DeviceIndex": 0, "SubnetId": net["subnet"]}])
    expect_error("InvalidParameterCombination", run, [{"DeviceIndex": 0, "NetworkInterfaceId": mine[
        "NetworkInterfaceId"]}], n=2)
    expect_error("InvalidParameterValue", run, [{"DeviceIndex": 0, "SubnetId": net["subnet"]},
                                                {"DeviceIndex": 1, "NetworkInterfaceId": far}])  # other zone
    expect_error("AttachmentLimitExceeded", run, [{"DeviceIndex": i, "SubnetId": net["subnet"]} for i in range(3)])
    assert ec2.describe_network_interfaces(NetworkInterfaceIds=[mine["NetworkInterfaceId"]])[
        "NetworkInterfaces"][0]["Status"] == "available"  # nothing refused attached anything

    a = run([{"DeviceIndex": 0, "NetworkInterfaceId": mine["NetworkInterfaceId"]},
             {"DeviceIndex": 1, "NetworkInterfaceId": second["NetworkInterfaceId"]}])[0]
    b = run([{"DeviceIndex": 0, "SubnetId": net["subnet"], "Groups": [net["group"]]},
             {"DeviceIndex": 1, "SubnetId": net["subnet"], "SecondaryPrivateIpAddressCount": 1}], n=2,
            TagSpecifications=[{"ResourceType": "network-interface", "Tags": [{"Key": "made", "Value": "at-launch"}]}])
    ids = [a["InstanceId"]] + [i["InstanceId"] for i in b]
    try:
        assert a["PrivateIpAddress"] == mine["PrivateIpAddress"]
        assert [(n["NetworkInterfaceId"], n["MacAddress"], n["Attachment"]["DeviceIndex"]) for n in
                a["NetworkInterfaces"]] == [(mine["NetworkInterfaceId"], mine["MacAddress"], 0),
                                            (second["NetworkInterfaceId"], second["MacAddress"], 1)]
        assert [g["GroupId"] for g in a["SecurityGroups"]] == [net["group"]]
        expect_error("InvalidNetworkInterface.InUse", run, [{"DeviceIndex": 0, "NetworkInterfaceId": mine[
            "NetworkInterfaceId"]}])
        made = [i["NetworkInterfaces"][1] for i in b]
        assert all(m["Attachment"]["DeleteOnTermination"] is True and len(m["PrivateIpAddresses"]) == 2
                   for m in made)
        assert len({ip["PrivateIpAddress"] for m in made for ip in m["PrivateIpAddresses"]}
                   | {i["PrivateIpAddress"] for i in b}) == 6  # every address once
        # The launch's tags for interfaces are on those it made (not on the existing ones).
        tagged = [e["NetworkInterfaceId"] for e in ec2.describe_network_interfaces(
            Filters=[{"Name": "tag:made", "Values": ["at-launch"]}])["NetworkInterfaces"]]
        assert sorted(tagged) == sorted(n["NetworkInterfaceId"] for i in b for n in i["NetworkInterfaces"])
        fast_waiter(ec2, "instance_running")(InstanceIds=ids)
        host = _host(server)
        assert host["guests"][a["InstanceId"]]["nics"] == {
            second["NetworkInterfaceId"]: {"mac": second["MacAddress"], "device_index": 1}}
        assert host["vpcs"][net["vpc"]]["ports"][a["InstanceId"]]["mac"] == mine["MacAddress"]
        # The primary of an existing interface cannot be detached either.
        expect_error("OperationNotPermitted", ec2.detach_network_interface,
                     AttachmentId=a["NetworkInterfaces"][0]["Attachment"]["AttachmentId"])
    finally:
        ec2.terminate_instances(InstanceIds=ids)
    fast_waiter(ec2, "instance_terminated")(InstanceIds=ids)
    # The existing interfaces (DeleteOnTermination false) outlive the instance; the new ones go.
    left = ec2.describe_network_interfaces(NetworkInterfaceIds=[mine["NetworkInterfaceId"],
                                                                second["NetworkInterfaceId"]])["NetworkInterfaces"]
    assert [e["Status"] for e in left] == ["available", "available"]
    expect_error("InvalidNetworkInterfaceID.NotFound", ec2.describe_network_interfaces,
                 NetworkInterfaceIds=[made[0]["NetworkInterfaceId"]])
    for e in (mine["NetworkInterfaceId"], second["NetworkInterfaceId"], far):
        ec2.delete_network_interface(NetworkInterfaceId=e)


def test_run_instances_new_primary_interface_options(server, ec2, net):
    """A new primary interface takes its entry's secondary addresses (a count, or listed ones with
    the primary among them), description and DeleteOnTermination, as AWS's does; the host's port
    admits the secondaries; refusals: named addresses for several instances, more addresses than
    the type allows."""
    image = tiny_image(ec2)
    run = lambda nic, **kw: ec2.run_instances(  # noqa: E731
        ImageId=image, MinCount=1, MaxCount=kw.pop("n", 1), InstanceType=kw.pop("type", "t3.small"),
        NetworkInterfaces=[{"DeviceIndex": 0, "SubnetId": net["subnet"], **nic}], **kw)["Instances"]
    expect_error("InvalidParameterCombination", run, {"PrivateIpAddresses": [
        {"PrivateIpAddress": "10.51.1.200", "Primary": True}]}, n=2)
    expect_error("InvalidParameterCombination", run, {"SecondaryPrivateIpAddressCount": 1, "PrivateIpAddresses": [
        {"PrivateIpAddress": "10.51.1.201", "Primary": False}]})
    msg = expect_error("PrivateIpAddressLimitExceeded", run, {"SecondaryPrivateIpAddressCount": 2}, type="t3.nano")
    assert "limit of 2" in msg  # t3.nano: two IPv4 addresses per interface (t3.small, used below: four)
    expect_error("InvalidParameterValue", run, {"PrivateIpAddresses": [
        {"PrivateIpAddress": "10.51.1.200", "Primary": True}, {"PrivateIpAddress": "10.51.1.201", "Primary": True}]})

    counted = run({"SecondaryPrivateIpAddressCount": 2, "DeleteOnTermination": False, "Description": "kept"}, n=2)
    listed = run({"PrivateIpAddresses": [{"PrivateIpAddress": "10.51.1.211", "Primary": False},
                                         {"PrivateIpAddress": "10.51.1.210", "Primary": True}]})[0]
    ids = [i["InstanceId"] for i in counted] + [listed["InstanceId"]]
    kept = [i["NetworkInterfaces"][0]["NetworkInterfaceId"] for i in counted]
    try:
        assert listed["PrivateIpAddress"] == "10.51.1.210"
        assert [(a["PrivateIpAddress"], a["Primary"]) for a in listed["NetworkInterfaces"][0]["PrivateIpAddresses"]] \
            == [("10.51.1.210", True), ("10.51.1.211", False)]
        every = [a["PrivateIpAddress"] for i in counted for a in i["NetworkInterfaces"][0]["PrivateIpAddresses"]]
        assert len(every) == 6 and len(set(every)) == 6  # three each, none shared
        for i in counted:
            eni = _eni(ec2, i["NetworkInterfaces"][0]["NetworkInterfaceId"])
            assert eni["Description"] == "kept" and eni["Attachment"]["DeleteOnTermination"] is False
            assert eni["PrivateIpAddress"] == i["PrivateIpAddress"]
        fast_waiter(ec2, "instance_running")(InstanceIds=ids)
        eventually(lambda: _host(server)["vpcs"][net["vpc"]]["ports"][listed["InstanceId"]]["secondary_ips"]
                   == ["10.51.1.211"], "the port admits the listed secondary address")
    finally:
        ec2.terminate_instances(InstanceIds=ids)
    fast_waiter(ec2, "instance_terminated")(InstanceIds=ids)
    # DeleteOnTermination false: the primary interfaces outlive their instances, addresses and all
    for eni_id, i in zip(kept, counted):
        eni = _eni(ec2, eni_id)
        assert eni["Status"] == "available" and len(eni["PrivateIpAddresses"]) == 3
        ec2.delete_network_interface(NetworkInterfaceId=eni_id)
    # (positive control of the above: the default primary interface went with its instance)
    expect_error("InvalidNetworkInterfaceID.NotFound", ec2.describe_network_interfaces,
                 NetworkInterfaceIds=[listed["NetworkInterfaces"][0]["NetworkInterfaceId"]])


def test_elastic_ips_on_other_addresses(server, ec2, net):
    """Elastic IPs on an instance's secondary address and on an interface at device index 1, and
    on an interface not attached: listed per address (DescribeAddresses with the instance,
    DescribeNetworkInterfaces and DescribeInstances per private address), mapped by the host
    while the interface is attached (after the association, the attachment, the start), unmapped
    when disassociated, unassigned, detached; an address holds one Elastic IP; the interface's
    deletion disassociates it. The instance's own public address is untouched throughout."""
    def nat() -> dict:
        return _host(server).get("vpcs", {}).get(net["vpc"], {}).get("nat", {})

    def association(eni_id: str, private_ip: str) -> str | None:
        e = _eni(ec2, eni_id)
        return next(((a.get("Association") or {}).get("PublicIp") for a in e["PrivateIpAddresses"]
                     if a["PrivateIpAddress"] == private_ip), None)

    allocs = [ec2.allocate_address(Domain="vpc") for _ in range(3)]
    (a1, ip1), (a2, ip2), (a3, ip3) = ((a["AllocationId"], a["PublicIp"]) for a in allocs)
    inst = ec2.run_instances(ImageId=tiny_image(ec2), MinCount=1, MaxCount=1, InstanceType="t3.small",
                             NetworkInterfaces=[{"DeviceIndex": 0, "SubnetId": net["subnet"],
                                                 "SecondaryPrivateIpAddressCount": 1}])["Instances"][0]
    iid, primary_eni = inst["InstanceId"], inst["NetworkInterfaces"][0]["NetworkInterfaceId"]
    primary_ip = inst["PrivateIpAddress"]
    secondary = next(a["PrivateIpAddress"] for a in inst["NetworkInterfaces"][0]["PrivateIpAddresses"]
                     if not a["Primary"])
    extra = ec2.create_network_interface(SubnetId=net["subnet"])["NetworkInterface"]
    extra_id, extra_ip = extra["NetworkInterfaceId"], extra["PrivateIpAddress"]
    try:
        fast_waiter(ec2, "instance_running")(InstanceIds=[iid])
        # on the instance's secondary address (by instance id and private address)
        assoc1 = ec2.associate_address(AllocationId=a1, InstanceId=iid, PrivateIpAddress=secondary)["AssociationId"]
        got = ec2.describe_addresses(AllocationIds=[a1])["Addresses"][0]
        assert (got["AssociationId"], got["InstanceId"], got["NetworkInterfaceId"], got["PrivateIpAddress"]) == (
            assoc1, iid, primary_eni, secondary)
        assert [a["AllocationId"] for a in ec2.describe_addresses(
            Filters=[{"Name": "instance-id", "Values": [iid]}])["Addresses"]] == [a1]
        assert association(primary_eni, secondary) == ip1 and association(primary_eni, primary_ip) is None
        described = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
        assert "PublicIpAddress" not in described  # the instance's own (primary) address has none
        eventually(lambda: nat().get(ip1) == secondary, "the host maps the secondary address")
        # an address holds one Elastic IP: another one on it takes its place
        ec2.associate_address(AllocationId=a2, NetworkInterfaceId=primary_eni, PrivateIpAddress=secondary)
        assert "AssociationId" not in ec2.describe_addresses(AllocationIds=[a1])["Addresses"][0]
        eventually(lambda: nat().get(ip2) == secondary and ip1 not in nat(), "the second one replaced it")
        # on an interface not attached: associated, nothing mapped (no port)
        ec2.associate_address(AllocationId=a1, NetworkInterfaceId=extra_id)
        got = ec2.describe_addresses(AllocationIds=[a1])["Addresses"][0]
        assert got["NetworkInterfaceId"] == extra_id and got["PrivateIpAddress"] == extra_ip
        assert "InstanceId" not in got
        assert _eni(ec2, extra_id)["Association"]["PublicIp"] == ip1
        assert [e["NetworkInterfaceId"] for e in ec2.describe_network_interfaces(Filters=[
            {"Name": "addresses.association.public-ip", "Values": [ip1]}])["NetworkInterfaces"]] == [extra_id]
        assert ip1 not in nat()
        # attached to the running instance: mapped once plugged
        attachment = ec2.attach_network_interface(NetworkInterfaceId=extra_id, InstanceId=iid,
                                                  DeviceIndex=1)["AttachmentId"]
        eventually(lambda: nat().get(ip1) == extra_ip, "mapped once the interface is attached")
        assert ec2.describe_addresses(AllocationIds=[a1])["Addresses"][0]["InstanceId"] == iid
        described = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
        nics = {n["NetworkInterfaceId"]: n for n in described["NetworkInterfaces"]}
        assert nics[extra_id]["Association"]["PublicIp"] == ip1
        assert nics[extra_id]["Association"]["IpOwnerId"] == nics[extra_id]["OwnerId"]  # an Elastic IP: ours
        # the instance's primary address takes one too, by instance id: both kept
        ec2.associate_address(AllocationId=a3, InstanceId=iid)
        eventually(lambda: nat().get(ip3) == primary_ip, "the primary address mapped")
        assert nat().get(ip1) == extra_ip and nat().get(ip2) == secondary
        assert ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["PublicIpAddress"] == ip3
        # stop and start: still associated, mapped again after the start
        ec2.stop_instances(InstanceIds=[iid])
        fast_waiter(ec2, "instance_stopped")(InstanceIds=[iid])
        ec2.start_instances(InstanceIds=[iid])
        fast_waiter(ec2, "instance_running")(InstanceIds=[iid])
        eventually(lambda: nat().get(ip1) == extra_ip and nat().get(ip2) == secondary, "mapped after the start")
        # detached: still associated with the interface, no longer mapped
        ec2.detach_network_interface(AttachmentId=attachment)
        eventually(lambda: _eni(ec2, extra_id)["Status"] == "available", "detached")
        eventually(lambda: ip1 not in nat(), "unmapped with the port")
        assert nat().get(ip2) == secondary  # (the control: the instance's own are kept)
        assert ec2.describe_addresses(AllocationIds=[a1])["Addresses"][0]["NetworkInterfaceId"] == extra_id
        # the secondary address unassigned: its Elastic IP is disassociated and unmapped
        ec2.unassign_private_ip_addresses(NetworkInterfaceId=primary_eni, PrivateIpAddresses=[secondary])
        assert "AssociationId" not in ec2.describe_addresses(AllocationIds=[a2])["Addresses"][0]
        eventually(lambda: ip2 not in nat(), "unmapped with its address")
        # disassociated by association id
        ec2.disassociate_address(AssociationId=ec2.describe_addresses(AllocationIds=[a3])["Addresses"][0][
            "AssociationId"])
        eventually(lambda: ip3 not in nat(), "the primary's unmapped")
        # the interface deleted: its Elastic IP is free to release
        ec2.delete_network_interface(NetworkInterfaceId=extra_id)
        extra_id = None
        assert "AssociationId" not in ec2.describe_addresses(AllocationIds=[a1])["Addresses"][0]
    finally:
        ec2.terminate_instances(InstanceIds=[iid])
        fast_waiter(ec2, "instance_terminated")(InstanceIds=[iid])
        if extra_id:
            ec2.delete_network_interface(NetworkInterfaceId=extra_id)
        for a in (a1, a2, a3):
            ec2.release_address(AllocationId=a)
