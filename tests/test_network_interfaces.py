"""DescribeNetworkInterfaces: every instance's primary interface, from launch to termination."""
from __future__ import annotations

from .helpers import expect_error, fast_waiter, tiny_image, unique


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
