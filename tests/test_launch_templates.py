"""Launch templates end to end with boto3 and the AWS CLI (none driver): versions, the default,
$Latest/$Default, RunInstances with a template and overrides merged as AWS merges them, AWS's
errors (messages as AWS's own, where moto's AWS-verified tests record them)."""
from __future__ import annotations

import base64

import pytest

from .helpers import aws_cli, expect_error, tiny_image, unique

MISSING_LT = "lt-0123456789abcdef0"


@pytest.fixture(scope="module")
def image(ec2):
    return tiny_image(ec2)


def _template(ec2, data: dict, **kw) -> dict:
    return ec2.create_launch_template(LaunchTemplateName=unique("lt"), LaunchTemplateData=data, **kw)


def _tags(inst: dict) -> dict:
    return {t["Key"]: t["Value"] for t in inst.get("Tags") or []}


def _run(ec2, spec: dict, **kw) -> dict:
    return ec2.run_instances(MinCount=1, MaxCount=1, LaunchTemplate=spec, **kw)["Instances"][0]


def test_create_describe_versions_and_the_default(ec2, image):
    made = _template(ec2, {"ImageId": image, "InstanceType": "t3.micro"}, VersionDescription="first",
                     TagSpecifications=[{"ResourceType": "launch-template", "Tags": [{"Key": "team", "Value": "a"}]}])
    lt = made["LaunchTemplate"]
    assert lt["LaunchTemplateId"].startswith("lt-") and len(lt["LaunchTemplateId"]) == 20
    assert (lt["DefaultVersionNumber"], lt["LatestVersionNumber"]) == (1, 1)
    assert lt["CreatedBy"] == "arn:aws:iam::123456789012:root"
    assert lt["Tags"] == [{"Key": "team", "Value": "a"}]
    assert "Warning" not in made
    lt_id, name = lt["LaunchTemplateId"], lt["LaunchTemplateName"]
    # A second version from the first: the first's data, the given members replaced.
    v2 = ec2.create_launch_template_version(LaunchTemplateId=lt_id, SourceVersion="1", VersionDescription="bigger",
                                            LaunchTemplateData={"InstanceType": "t3.small"})["LaunchTemplateVersion"]
    assert v2["VersionNumber"] == 2 and v2["DefaultVersion"] is False
    assert v2["LaunchTemplateData"] == {"ImageId": image, "InstanceType": "t3.small"}
    v3 = ec2.create_launch_template_version(LaunchTemplateName=name, LaunchTemplateData={"ImageId": image})
    assert v3["LaunchTemplateVersion"]["LaunchTemplateData"] == {"ImageId": image}  # no source: only what it says
    versions = ec2.describe_launch_template_versions(LaunchTemplateId=lt_id)["LaunchTemplateVersions"]
    assert sorted(v["VersionNumber"] for v in versions) == [1, 2, 3]
    got = ec2.describe_launch_template_versions(LaunchTemplateName=name, Versions=["$Latest", "$Default"])
    assert sorted(v["VersionNumber"] for v in got["LaunchTemplateVersions"]) == [1, 3]
    window = ec2.describe_launch_template_versions(LaunchTemplateId=lt_id, MinVersion="2", MaxVersion="3")
    assert [v["VersionNumber"] for v in window["LaunchTemplateVersions"]] == [2, 3]
    by_type = ec2.describe_launch_template_versions(LaunchTemplateId=lt_id, Filters=[
        {"Name": "instance-type", "Values": ["t3.small"]}])["LaunchTemplateVersions"]
    assert [v["VersionDescription"] for v in by_type] == ["bigger"]
    # The default moves; DescribeLaunchTemplates says so.
    modified = ec2.modify_launch_template(LaunchTemplateId=lt_id, DefaultVersion="2")["LaunchTemplate"]
    assert modified["DefaultVersionNumber"] == 2
    listed = ec2.describe_launch_templates(LaunchTemplateNames=[name])["LaunchTemplates"][0]
    assert (listed["DefaultVersionNumber"], listed["LatestVersionNumber"]) == (2, 3)
    assert ec2.describe_launch_templates(Filters=[{"Name": "tag:team", "Values": ["a"]}, {
        "Name": "launch-template-name", "Values": [name]}])["LaunchTemplates"][0]["LaunchTemplateId"] == lt_id
    # Deleting versions: the default cannot go; $Latest falls back to the highest left.
    out = ec2.delete_launch_template_versions(LaunchTemplateId=lt_id, Versions=["2", "3", "9"])
    assert [v["VersionNumber"] for v in out["SuccessfullyDeletedLaunchTemplateVersions"]] == [3]
    failed = {v["VersionNumber"]: v["ResponseError"]["Code"] for v in out["UnsuccessfullyDeletedLaunchTemplateVersions"]}
    assert failed == {2: "unexpectedError", 9: "launchTemplateVersionDoesNotExist"}
    assert ec2.describe_launch_templates(LaunchTemplateIds=[lt_id])["LaunchTemplates"][0]["LatestVersionNumber"] == 2
    deleted = ec2.delete_launch_template(LaunchTemplateName=name)["LaunchTemplate"]
    assert deleted["LaunchTemplateId"] == lt_id
    expect_error("InvalidLaunchTemplateId.NotFound", ec2.describe_launch_templates, LaunchTemplateIds=[lt_id])
    assert not [t for t in ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [lt_id]}])["Tags"]]


def test_errors_are_aws_own(ec2, image):
    name = _template(ec2, {"ImageId": image})["LaunchTemplate"]["LaunchTemplateName"]
    assert expect_error("InvalidLaunchTemplateName.AlreadyExistsException", ec2.create_launch_template,
                        LaunchTemplateName=name, LaunchTemplateData={"InstanceType": "t3.micro"}) == "Launch template name already in use."
    expect_error("InvalidLaunchTemplateName.MalformedException", ec2.create_launch_template,
                 LaunchTemplateName="has space", LaunchTemplateData={"InstanceType": "t3.micro"})
    assert expect_error("InvalidUserData.Malformed", ec2.create_launch_template, LaunchTemplateName=unique("lt"),
                        LaunchTemplateData={"UserData": "not base64!"}) == "Invalid BASE64 encoding of user data."
    assert expect_error("InvalidLaunchTemplateName.NotFoundException", ec2.describe_launch_template_versions,
                        LaunchTemplateName="no-such-template") == \
        "The specified launch template, with template name no-such-template, does not exist."
    assert expect_error("InvalidLaunchTemplateId.NotFound", ec2.describe_launch_template_versions,
                        LaunchTemplateId=MISSING_LT) == \
        f"The specified launch template, with template ID {MISSING_LT}, does not exist."
    expect_error("InvalidLaunchTemplateId.Malformed", ec2.describe_launch_template_versions, LaunchTemplateId="lt-zz")
    assert expect_error("InvalidLaunchTemplateName.NotFoundException", ec2.describe_launch_templates,
                        LaunchTemplateNames=["no-such-template"]) == \
        "At least one of the launch templates specified in the request does not exist."
    assert expect_error("InvalidLaunchTemplateName.NotFoundException", ec2.delete_launch_template,
                        LaunchTemplateName="no-such-template") == \
        "At least one of the launch templates specified in the request does not exist."
    assert expect_error("MissingParameter", ec2.delete_launch_template) == \
        "The request must contain the parameter launch template ID or launch template name"
    lt_id = ec2.describe_launch_templates(LaunchTemplateNames=[name])["LaunchTemplates"][0]["LaunchTemplateId"]
    assert expect_error("InvalidLaunchTemplateId.VersionNotFound", ec2.describe_launch_template_versions,
                        LaunchTemplateId=lt_id, Versions=["3"]) == \
        f"Could not find the specified version 3 for the launch template with ID {lt_id}."
    assert expect_error("InvalidLaunchTemplateId.VersionNotFound", ec2.modify_launch_template,
                        LaunchTemplateId=lt_id, DefaultVersion="2") == \
        "The launch template version 2 is not found for the specified launch template."
    assert expect_error("InvalidParameterCombination", ec2.modify_launch_template, LaunchTemplateId=lt_id,
                        LaunchTemplateName=name, DefaultVersion="1") == \
        "Either provide launch template ID or launch template name to modify the template."
    # Odd versions and times (found by review: 500s before).
    for odd in ("²", "99999999999999999999", "0", "-1"):
        expect_error("InvalidLaunchTemplateId.VersionNotFound", ec2.describe_launch_template_versions,
                     LaunchTemplateId=lt_id, Versions=[odd])
    timed = _template(ec2, {"ImageId": image, "InstanceMarketOptions": {"MarketType": "spot", "SpotOptions": {
        "SpotInstanceType": "one-time", "ValidUntil": "2099-01-01T00:00:00Z"}}})
    data = ec2.describe_launch_template_versions(LaunchTemplateId=timed["LaunchTemplate"]["LaunchTemplateId"])[
        "LaunchTemplateVersions"][0]["LaunchTemplateData"]
    assert data["InstanceMarketOptions"]["SpotOptions"]["ValidUntil"].year == 2099
    # Without a template: only $Latest and $Default of every template may be asked for.
    expect_error("MissingParameter", ec2.describe_launch_template_versions)
    expect_error("InvalidParameterValue", ec2.describe_launch_template_versions, Versions=["1"])
    everyone = ec2.describe_launch_template_versions(Versions=["$Latest"])["LaunchTemplateVersions"]
    assert lt_id in {v["LaunchTemplateId"] for v in everyone}
    # What names nothing is a warning at creation (as AWS answers), and the launch fails.
    made = _template(ec2, {"ImageId": "ami-0123456789abcdef0", "KeyName": "no-such-key"})
    codes = sorted(e["Code"] for e in made["Warning"]["Errors"])
    assert codes == ["InvalidAMIID.NotFound", "InvalidKeyPair.NotFound"]
    expect_error("InvalidAMIID.NotFound", ec2.run_instances, MinCount=1, MaxCount=1,
                 LaunchTemplate={"LaunchTemplateId": made["LaunchTemplate"]["LaunchTemplateId"]})
    # Another account sees none of it.


def test_another_account_sees_none_of_them(ec2, other_account, image):
    lt_id = _template(ec2, {"ImageId": image})["LaunchTemplate"]["LaunchTemplateId"]
    expect_error("InvalidLaunchTemplateId.NotFound", other_account.describe_launch_templates, LaunchTemplateIds=[lt_id])
    expect_error("InvalidLaunchTemplateId.NotFound", other_account.run_instances, MinCount=1, MaxCount=1,
                 LaunchTemplate={"LaunchTemplateId": lt_id})
    assert lt_id not in {t["LaunchTemplateId"] for t in other_account.describe_launch_templates()["LaunchTemplates"]}


def test_run_instances_from_versions_with_overrides(ec2, image):
    key = unique("key")
    ec2.create_key_pair(KeyName=key)
    user_data = base64.b64encode(b"#!/bin/sh\necho from-template\n").decode()
    made = _template(ec2, {
        "ImageId": image, "InstanceType": "t3.micro", "KeyName": key, "UserData": user_data,
        "MetadataOptions": {"HttpTokens": "required", "HttpPutResponseHopLimit": 3},
        "BlockDeviceMappings": [{"DeviceName": "/dev/sdf", "Ebs": {"VolumeSize": 2, "VolumeType": "gp3"}},
                                {"DeviceName": "/dev/sdg", "Ebs": {"VolumeSize": 3}}],
        "TagSpecifications": [{"ResourceType": "instance", "Tags": [{"Key": "k", "Value": "v1"},
                                                                    {"Key": "team", "Value": "a"}]},
                              {"ResourceType": "volume", "Tags": [{"Key": "disk", "Value": "yes"}]}]})
    lt_id = made["LaunchTemplate"]["LaunchTemplateId"]
    ec2.create_launch_template_version(LaunchTemplateId=lt_id, SourceVersion="1", LaunchTemplateData={
        "InstanceType": "t3.small",
        "TagSpecifications": [{"ResourceType": "instance", "Tags": [{"Key": "k", "Value": "v2"}]}]})
    # The default version (1): everything from the template.
    inst = _run(ec2, {"LaunchTemplateId": lt_id})
    assert (inst["ImageId"], inst["InstanceType"], inst["KeyName"]) == (image, "t3.micro", key)
    assert _tags(inst) == {"k": "v1", "team": "a", "aws:ec2launchtemplate:id": lt_id,
                           "aws:ec2launchtemplate:version": "1"}
    assert inst["MetadataOptions"]["HttpTokens"] == "required"
    attr = ec2.describe_instance_attribute(InstanceId=inst["InstanceId"], Attribute="userData")
    assert attr["UserData"]["Value"] == user_data
    devices = {m["DeviceName"] for m in ec2.describe_instances(InstanceIds=[inst["InstanceId"]])[
        "Reservations"][0]["Instances"][0]["BlockDeviceMappings"]}
    assert {"/dev/sdf", "/dev/sdg"} <= devices
    volumes = ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": [inst["InstanceId"]]}])
    assert all({"Key": "disk", "Value": "yes"} in v["Tags"] for v in volumes["Volumes"])  # the template's volume tags
    # $Latest by name, with overrides: the request's own members win, tags merge per key,
    # block devices per device name, metadata options per member.
    inst = _run(ec2, {"LaunchTemplateName": made["LaunchTemplate"]["LaunchTemplateName"], "Version": "$Latest"},
                InstanceType="t3.nano", MetadataOptions={"HttpPutResponseHopLimit": 5},
                BlockDeviceMappings=[{"DeviceName": "/dev/sdg", "Ebs": {"VolumeSize": 4}}],
                TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "mine", "Value": "x"}]}])
    assert inst["InstanceType"] == "t3.nano"
    assert _tags(inst) == {"k": "v2", "mine": "x", "aws:ec2launchtemplate:id": lt_id,
                           "aws:ec2launchtemplate:version": "2"}
    assert inst["MetadataOptions"]["HttpTokens"] == "required"  # version 2 kept version 1's options
    assert inst["MetadataOptions"]["HttpPutResponseHopLimit"] == 5
    volumes = ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": [inst["InstanceId"]]}])
    sizes = {v["Attachments"][0]["Device"]: v["Size"] for v in volumes["Volumes"]}
    assert sizes["/dev/sdf"] == 2 and sizes["/dev/sdg"] == 4
    assert not any(v.get("Tags") for v in volumes["Volumes"])  # version 2's TagSpecifications replaced 1's whole
    # A version that is not there; a template's network interfaces with an instance-level subnet.
    expect_error("InvalidLaunchTemplateId.VersionNotFound", _run, ec2, {"LaunchTemplateId": lt_id, "Version": "7"})
    subnet = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"][0]["SubnetId"]
    nic_lt = _template(ec2, {"ImageId": image, "NetworkInterfaces": [{"DeviceIndex": 0, "SubnetId": subnet}]})
    expect_error("InvalidParameterCombination", _run, ec2,
                 {"LaunchTemplateId": nic_lt["LaunchTemplate"]["LaunchTemplateId"]}, SubnetId=subnet)
    ok = _run(ec2, {"LaunchTemplateId": nic_lt["LaunchTemplate"]["LaunchTemplateId"]})
    assert ok["SubnetId"] == subnet
    # AWS's own tags stay: DeleteTags refuses them, and deleting all tags leaves them.
    expect_error("InvalidParameterValue", ec2.delete_tags, Resources=[inst["InstanceId"]],
                 Tags=[{"Key": "aws:ec2launchtemplate:id"}])
    ec2.delete_tags(Resources=[inst["InstanceId"]])
    left = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [inst["InstanceId"]]}])["Tags"]
    assert {t["Key"] for t in left} == {"aws:ec2launchtemplate:id", "aws:ec2launchtemplate:version"}
    ec2.terminate_instances(InstanceIds=[inst["InstanceId"], ok["InstanceId"]])


def test_the_aws_cli_runs_from_a_template(server, ec2, image):
    lt_id = _template(ec2, {"ImageId": image, "InstanceType": "t3.micro"})["LaunchTemplate"]["LaunchTemplateId"]
    out = aws_cli(server, "ec2", "run-instances", "--launch-template", f"LaunchTemplateId={lt_id},Version=$Latest",
                  "--count", "1")
    inst = out["Instances"][0]
    assert inst["InstanceType"] == "t3.micro"
    got = aws_cli(server, "ec2", "describe-launch-template-versions", "--launch-template-id", lt_id)
    assert got["LaunchTemplateVersions"][0]["LaunchTemplateData"]["ImageId"] == image
    ec2.terminate_instances(InstanceIds=[inst["InstanceId"]])
