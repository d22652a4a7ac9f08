"""Instances on the `none` driver: the API and AWS's state machine, end to end with boto3."""
import base64
import ipaddress
import re

import pytest

from .helpers import eventually, expect_error, fast_waiter, tiny_image, unique


@pytest.fixture(scope="module")
def image(ec2):
    return tiny_image(ec2)


def run(ec2, image, **kw):
    kw.setdefault("MinCount", 1)
    kw.setdefault("MaxCount", 1)
    return ec2.run_instances(ImageId=image, **kw)


def _console(ec2, iid: str) -> str:
    return ec2.get_console_output(InstanceId=iid).get("Output") or ""  # (botocore decodes it)


def test_run_describe_and_state_machine(ec2, image):
    key = unique("key")
    ec2.create_key_pair(KeyName=key)
    res = run(ec2, image, InstanceType="t2.micro", KeyName=key,
              UserData="#!/bin/sh\necho hello\n",
              TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "web"}]}])
    assert re.fullmatch(r"r-[0-9a-f]{17}", res["ReservationId"])
    assert res["OwnerId"] == "123456789012"
    inst = res["Instances"][0]
    iid = inst["InstanceId"]
    assert re.fullmatch(r"i-[0-9a-f]{17}", iid)
    assert inst["State"] == {"Code": 0, "Name": "pending"}
    assert inst["InstanceType"] == "t2.micro" and inst["KeyName"] == key
    assert inst["Tags"] == [{"Key": "Name", "Value": "web"}]
    # Address from the default subnet of its zone, skipping AWS's reserved addresses.
    subnet = ec2.describe_subnets(SubnetIds=[inst["SubnetId"]])["Subnets"][0]
    net = ipaddress.ip_network(subnet["CidrBlock"])
    ip = ipaddress.ip_address(inst["PrivateIpAddress"])
    assert ip in net and int(ip) - int(net.network_address) >= 4 and ip != net.broadcast_address
    assert subnet["DefaultForAz"] and subnet["AvailabilityZone"] == inst["Placement"]["AvailabilityZone"]
    assert inst["PrivateDnsName"] == f"ip-{str(ip).replace('.', '-')}.ec2.internal"
    assert inst["PublicIpAddress"] and inst["PublicDnsName"].endswith(".compute-1.amazonaws.com")
    assert inst["NetworkInterfaces"][0]["MacAddress"] and inst["SecurityGroups"][0]["GroupName"] == "default"

    fast_waiter(ec2, "instance_running")(InstanceIds=[iid])
    desc = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    assert desc["State"]["Name"] == "running" and "StateReason" not in desc

    attr = ec2.describe_instance_attribute(InstanceId=iid, Attribute="userData")
    assert base64.b64decode(attr["UserData"]["Value"]) == b"#!/bin/sh\necho hello\n"

    # Attributes that need a stopped instance are refused while it runs.
    expect_error("IncorrectInstanceState", ec2.modify_instance_attribute,
                 InstanceId=iid, InstanceType={"Value": "t2.small"})

    stop = ec2.stop_instances(InstanceIds=[iid])["StoppingInstances"][0]
    assert stop["PreviousState"]["Name"] == "running" and stop["CurrentState"]["Name"] == "stopping"
    fast_waiter(ec2, "instance_stopped")(InstanceIds=[iid])
    desc = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    assert desc["StateReason"]["Code"] == "Client.UserInitiatedShutdown"
    assert desc["StateTransitionReason"].startswith("User initiated (")
    assert "PublicIpAddress" not in desc  # AWS releases it on stop

    ec2.modify_instance_attribute(InstanceId=iid, InstanceType={"Value": "t2.small"})
    assert ec2.describe_instance_attribute(InstanceId=iid, Attribute="instanceType")["InstanceType"]["Value"] == "t2.small"

    start = ec2.start_instances(InstanceIds=[iid])["StartingInstances"][0]
    assert start["PreviousState"]["Name"] == "stopped" and start["CurrentState"]["Name"] == "pending"
    fast_waiter(ec2, "instance_running")(InstanceIds=[iid])
    assert ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["PublicIpAddress"]
    assert _console(ec2, iid).endswith("ec2emu-none: boot 2\n")  # the second boot (none driver's console)
    ec2.reboot_instances(InstanceIds=[iid])  # the host reboots the guest: a third boot
    eventually(lambda: _console(ec2, iid).endswith("ec2emu-none: reboot, boot 3\n"), "the reboot reached the host")
    assert ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["State"]["Name"] == "running"

    term = ec2.terminate_instances(InstanceIds=[iid])["TerminatingInstances"][0]
    assert term["CurrentState"]["Name"] == "shutting-down"
    fast_waiter(ec2, "instance_terminated")(InstanceIds=[iid])
    gone = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    assert gone["State"] == {"Code": 48, "Name": "terminated"}  # still visible for a while
    assert "PrivateIpAddress" not in gone
    expect_error("IncorrectInstanceState", ec2.start_instances, InstanceIds=[iid])
    expect_error("IncorrectInstanceState", ec2.stop_instances, InstanceIds=[iid])
    again = ec2.terminate_instances(InstanceIds=[iid])["TerminatingInstances"][0]
    assert again["PreviousState"]["Name"] == again["CurrentState"]["Name"] == "terminated"


def test_waiter_sees_pending_before_running(ec2, image):
    iid = run(ec2, image)["Instances"][0]["InstanceId"]
    first = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["State"]["Name"]
    assert first == "pending"
    fast_waiter(ec2, "instance_running")(InstanceIds=[iid])
    status = ec2.describe_instance_status(InstanceIds=[iid])["InstanceStatuses"][0]
    assert status["InstanceState"]["Name"] == "running" and status["InstanceStatus"]["Status"] == "ok"
    ec2.terminate_instances(InstanceIds=[iid])


def test_min_max_count_and_launch_index(ec2, image):
    res = run(ec2, image, MinCount=2, MaxCount=3)
    assert len(res["Instances"]) == 3
    assert sorted(i["AmiLaunchIndex"] for i in res["Instances"]) == [0, 1, 2]
    assert len({i["PrivateIpAddress"] for i in res["Instances"]}) == 3
    expect_error("InvalidParameterValue", run, ec2, image, MinCount=3, MaxCount=2)
    ec2.terminate_instances(InstanceIds=[i["InstanceId"] for i in res["Instances"]])


def test_client_token_idempotency(ec2, image):
    token = unique("tok")
    a = run(ec2, image, ClientToken=token)
    b = run(ec2, image, ClientToken=token)
    assert a["ReservationId"] == b["ReservationId"]
    assert a["Instances"][0]["InstanceId"] == b["Instances"][0]["InstanceId"]
    expect_error("IdempotentParameterMismatch", run, ec2, image, ClientToken=token, InstanceType="t2.large")
    ec2.terminate_instances(InstanceIds=[a["Instances"][0]["InstanceId"]])


def test_placement_subnet_and_groups(ec2, image):
    zone = ec2.describe_availability_zones()["AvailabilityZones"][2]["ZoneName"]
    inst = run(ec2, image, Placement={"AvailabilityZone": zone})["Instances"][0]
    assert inst["Placement"]["AvailabilityZone"] == zone
    subnet = ec2.describe_subnets(Filters=[{"Name": "availability-zone", "Values": [zone]}])["Subnets"][0]
    assert inst["SubnetId"] == subnet["SubnetId"]
    group = ec2.create_security_group(GroupName=unique("grp"), Description="web")["GroupId"]
    inst2 = run(ec2, image, SubnetId=subnet["SubnetId"], SecurityGroupIds=[group],
                PrivateIpAddress=str(ipaddress.ip_network(subnet["CidrBlock"])[200]))["Instances"][0]
    assert inst2["SecurityGroups"] == [{"GroupId": group, "GroupName": inst2["SecurityGroups"][0]["GroupName"]}]
    assert inst2["PrivateIpAddress"].endswith(".200")
    name = inst2["SecurityGroups"][0]["GroupName"]
    for f in ("group-name", "instance.group-name"):
        found = ec2.describe_instances(Filters=[{"Name": f, "Values": [name]}])["Reservations"]
        assert [i["InstanceId"] for r in found for i in r["Instances"]] == [inst2["InstanceId"]]
    expect_error("InvalidIPAddress.InUse", run, ec2, image, SubnetId=subnet["SubnetId"],
                 PrivateIpAddress=inst2["PrivateIpAddress"])
    expect_error("DependencyViolation", ec2.delete_security_group, GroupId=group)
    ec2.terminate_instances(InstanceIds=[inst["InstanceId"], inst2["InstanceId"]])


def test_bad_references(ec2, image):
    expect_error("InvalidAMIID.NotFound", run, ec2, "ami-0123456789abcdef0")
    expect_error("InvalidAMIID.Malformed", run, ec2, "notanami")
    expect_error("InvalidKeyPair.NotFound", run, ec2, image, KeyName=unique("nokey"))
    expect_error("InvalidSubnetID.NotFound", run, ec2, image, SubnetId="subnet-0123456789abcdef0")
    expect_error("InvalidGroup.NotFound", run, ec2, image, SecurityGroupIds=["sg-0123456789abcdef0"])
    expect_error("InvalidParameterValue", run, ec2, image, InstanceType="t4g.micro")  # arm64 type, x86 image
    assert expect_error("InvalidInstanceID.NotFound", ec2.describe_instances, InstanceIds=["i-0123456789abcdef0"]) \
        == "The instance ID 'i-0123456789abcdef0' does not exist"
    assert expect_error("InvalidInstanceID.NotFound", ec2.terminate_instances,
                        InstanceIds=["i-0123456789abcdef0", "i-0123456789abcdef1"]) \
        == "The instance IDs 'i-0123456789abcdef0, i-0123456789abcdef1' do not exist"
    assert expect_error("InvalidInstanceID.Malformed", ec2.describe_instances, InstanceIds=["i-xyz"]) \
        == 'Invalid id: "i-xyz"'
    expect_error("InvalidParameterCombination", ec2.describe_instances,
                 InstanceIds=["i-0123456789abcdef0"], MaxResults=5)


def test_termination_protection_and_shutdown_behaviour(ec2, image):
    iid = run(ec2, image, DisableApiTermination=True)["Instances"][0]["InstanceId"]
    expect_error("OperationNotPermitted", ec2.terminate_instances, InstanceIds=[iid])
    assert ec2.describe_instance_attribute(InstanceId=iid, Attribute="disableApiTermination")[
        "DisableApiTermination"]["Value"] is True
    ec2.modify_instance_attribute(InstanceId=iid, DisableApiTermination={"Value": False})
    ec2.modify_instance_attribute(InstanceId=iid, InstanceInitiatedShutdownBehavior={"Value": "terminate"})
    assert ec2.describe_instance_attribute(InstanceId=iid, Attribute="instanceInitiatedShutdownBehavior")[
        "InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"
    ec2.terminate_instances(InstanceIds=[iid])


def test_filters_and_paging(ec2, image):
    tag = unique("batch")
    res = run(ec2, image, MinCount=7, MaxCount=7,
              TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "batch", "Value": tag}]}])
    ids = {i["InstanceId"] for i in res["Instances"]}
    by_tag = ec2.describe_instances(Filters=[{"Name": "tag:batch", "Values": [tag]}])
    assert {i["InstanceId"] for r in by_tag["Reservations"] for i in r["Instances"]} == ids
    wild = ec2.describe_instances(Filters=[{"Name": "tag:batch", "Values": [tag[:-3] + "*"]},
                                           {"Name": "instance-type", "Values": ["m1.small"]}])
    assert {i["InstanceId"] for r in wild["Reservations"] for i in r["Instances"]} == ids
    assert ec2.describe_instances(Filters=[{"Name": "tag-key", "Values": ["batch"]},
                                           {"Name": "tag-value", "Values": [tag]}])["Reservations"]
    none = ec2.describe_instances(Filters=[{"Name": "tag:batch", "Values": [tag]},
                                           {"Name": "instance-state-name", "Values": ["stopped"]}])
    assert none["Reservations"] == []
    expect_error("InvalidParameterValue", ec2.describe_instances, Filters=[{"Name": "bogus", "Values": ["x"]}])
    seen, token, pages = [], None, 0
    while True:
        kw = {"Filters": [{"Name": "tag:batch", "Values": [tag]}], "MaxResults": 5}
        if token:
            kw["NextToken"] = token
        page = ec2.describe_instances(**kw)
        seen += [i["InstanceId"] for r in page["Reservations"] for i in r["Instances"]]
        pages += 1
        token = page.get("NextToken")
        if not token:
            break
    assert pages == 2 and sorted(seen) == sorted(ids)
    known = sorted(ids)[0]  # the existing ones are not named among the missing
    assert expect_error("InvalidInstanceID.NotFound", ec2.describe_instance_status,
                        InstanceIds=["i-0123456789abcdef2", known, "i-0123456789abcdef3"]) \
        == "The instance IDs 'i-0123456789abcdef2, i-0123456789abcdef3' do not exist"
    paginator = ec2.get_paginator("describe_instances")
    got = [i["InstanceId"] for p in paginator.paginate(Filters=[{"Name": "tag:batch", "Values": [tag]}],
                                                        PaginationConfig={"PageSize": 5})
           for r in p["Reservations"] for i in r["Instances"]]
    assert sorted(got) == sorted(ids)
    ec2.terminate_instances(InstanceIds=list(ids))


def test_metadata_options_console_and_monitoring(ec2, image):
    iid = run(ec2, image, MetadataOptions={"HttpTokens": "required"})["Instances"][0]["InstanceId"]
    desc = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    assert desc["MetadataOptions"]["HttpTokens"] == "required"
    out = ec2.modify_instance_metadata_options(InstanceId=iid, HttpTokens="optional", HttpPutResponseHopLimit=2)
    assert out["InstanceMetadataOptions"]["HttpPutResponseHopLimit"] == 2
    expect_error("InvalidParameterValue", ec2.modify_instance_metadata_options, InstanceId=iid,
                 HttpPutResponseHopLimit=65)
    fast_waiter(ec2, "instance_running")(InstanceIds=[iid])
    console = ec2.get_console_output(InstanceId=iid)
    assert console["InstanceId"] == iid and console["Output"] == "ec2emu-none: boot 1\n"
    mon = ec2.monitor_instances(InstanceIds=[iid])["InstanceMonitorings"][0]
    assert mon["Monitoring"]["State"] == "pending"
    desc = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    assert desc["Monitoring"]["State"] == "enabled"
    ec2.terminate_instances(InstanceIds=[iid])


def test_other_account_and_region_see_nothing(ec2, other_account, server, image):
    iid = run(ec2, image)["Instances"][0]["InstanceId"]
    expect_error("InvalidInstanceID.NotFound", other_account.describe_instances, InstanceIds=[iid])
    assert iid not in str(other_account.describe_instances())
    west = server.client(region="us-west-2")
    expect_error("InvalidInstanceID.NotFound", west.describe_instances, InstanceIds=[iid])
    expect_error("InvalidInstanceID.NotFound", other_account.terminate_instances, InstanceIds=[iid])
    ec2.terminate_instances(InstanceIds=[iid])


def test_instance_types_and_offerings(ec2):
    types = ec2.describe_instance_types(InstanceTypes=["m1.small", "t2.micro"])["InstanceTypes"]
    small = next(t for t in types if t["InstanceType"] == "m1.small")
    assert small["CurrentGeneration"] is False and small["VCpuInfo"]["DefaultVCpus"] == 1
    assert small["MemoryInfo"]["SizeInMiB"] == 1740
    arm = ec2.describe_instance_types(Filters=[{"Name": "processor-info.supported-architecture",
                                                "Values": ["arm64"]}])["InstanceTypes"]
    assert arm and all("arm64" in t["ProcessorInfo"]["SupportedArchitectures"] for t in arm)
    offers = ec2.describe_instance_type_offerings(LocationType="availability-zone",
                                                  Filters=[{"Name": "instance-type", "Values": ["t2.micro"]}])
    zones = {o["Location"] for o in offers["InstanceTypeOfferings"]}
    assert zones == {z["ZoneName"] for z in ec2.describe_availability_zones()["AvailabilityZones"]}
