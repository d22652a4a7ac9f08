"""What real clients (Terraform, Ansible, the AWS CLI, euca2ools...) call on their way and trip on,
end to end with boto3 against a server process: filter aliases, burstable credit options,
GetPasswordData, every instance attribute, STS GetCallerIdentity on the same endpoint, DryRun
that validates first, AWS's one-line message for an unknown instance type, quiet start-up."""
from .helpers import error_of, expect_error, tiny_image, unique
from .server import ACCOUNT


def launch(ec2, **kw) -> str:
    """One instance of the tiny image; -> its id."""
    return ec2.run_instances(ImageId=tiny_image(ec2), MinCount=1, MaxCount=1, **kw)["Instances"][0]["InstanceId"]


def _ids(ec2) -> set[str]:
    return {i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]}


# ------------------------------------------------------------------------------ filter aliases

def test_terraform_default_vpc_and_subnet_filters(ec2):
    """data "aws_vpc" { default = true } sends isDefault; data "aws_subnet" sends availabilityZone,
    availabilityZoneId, defaultForAz and cidrBlock: AWS accepts these beside the dashed names."""
    default = [v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"] if v["IsDefault"]]
    assert len(default) == 1
    for name in ("isDefault", "is-default"):
        found = ec2.describe_vpcs(Filters=[{"Name": name, "Values": ["true"]}])["Vpcs"]
        assert [v["VpcId"] for v in found] == default
        assert all(v["VpcId"] not in default for v in
                   ec2.describe_vpcs(Filters=[{"Name": name, "Values": ["false"]}])["Vpcs"])
    subnet = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": default}])["Subnets"][0]
    for name, value in (("availabilityZone", subnet["AvailabilityZone"]),
                        ("availabilityZoneId", subnet["AvailabilityZoneId"]),
                        ("cidrBlock", subnet["CidrBlock"])):
        found = ec2.describe_subnets(Filters=[{"Name": name, "Values": [value]},
                                              {"Name": "defaultForAz", "Values": ["true"]},
                                              {"Name": "vpc-id", "Values": default}])["Subnets"]
        assert [s["SubnetId"] for s in found] == [subnet["SubnetId"]], name
    assert ec2.describe_subnets(Filters=[{"Name": "ipv6-cidr-block-association.ipv6-cidr-block",
                                          "Values": ["2600:1f18::/64"]}])["Subnets"] == []
    expect_error("InvalidParameterValue", ec2.describe_vpcs, Filters=[{"Name": "isdefault", "Values": ["true"]}])


# --------------------------------------------------------------------------------- CPU credits

def test_credit_specifications_defaults_and_changes(ec2):
    t2 = launch(ec2, InstanceType="t2.micro")
    t3 = launch(ec2, InstanceType="t3.micro")
    t4g_arm = "t4g.micro"  # arm64 only: its default is only readable through the catalogue
    chosen = launch(ec2, InstanceType="t3a.small", CreditSpecification={"CpuCredits": "standard"})
    m5 = launch(ec2, InstanceType="m5.large")

    def credits(*ids):
        out = ec2.describe_instance_credit_specifications(InstanceIds=list(ids))["InstanceCreditSpecifications"]
        return {c["InstanceId"]: c["CpuCredits"] for c in out}

    assert credits(t2, t3, chosen) == {t2: "standard", t3: "unlimited", chosen: "standard"}
    assert ec2.describe_instance_types(InstanceTypes=[t4g_arm])["InstanceTypes"][0]["BurstablePerformanceSupported"]
    # Not burstable: AWS's error for a named instance, and for a credit option at launch.
    message = expect_error("InstanceCreditSpecification.NotSupported",
                           ec2.describe_instance_credit_specifications, InstanceIds=[m5])
    assert "m5.large" in message
    expect_error("InstanceCreditSpecification.NotSupported", launch, ec2, InstanceType="m5.large",
                 CreditSpecification={"CpuCredits": "standard"})
    expect_error("InvalidInstanceID.NotFound", ec2.describe_instance_credit_specifications,
                 InstanceIds=["i-0123456789abcdef0"])
    # None named: the unlimited ones only.
    unlimited = {c["InstanceId"] for c in ec2.describe_instance_credit_specifications()["InstanceCreditSpecifications"]}
    assert t3 in unlimited and not {t2, chosen, m5} & unlimited

    out = ec2.modify_instance_credit_specification(InstanceCreditSpecifications=[
        {"InstanceId": t2, "CpuCredits": "unlimited"}, {"InstanceId": m5, "CpuCredits": "unlimited"},
        {"InstanceId": "i-0123456789abcdef0", "CpuCredits": "standard"}])
    assert out["SuccessfulInstanceCreditSpecifications"] == [{"InstanceId": t2}]
    failed = {f["InstanceId"]: f["Error"]["Code"] for f in out["UnsuccessfulInstanceCreditSpecifications"]}
    assert failed == {m5: "InstanceCreditSpecification.NotSupported",
                      "i-0123456789abcdef0": "InvalidInstanceID.NotFound"}
    assert credits(t2) == {t2: "unlimited"}
    expect_error("InvalidParameterValue", ec2.modify_instance_credit_specification,
                 InstanceCreditSpecifications=[{"InstanceId": t3, "CpuCredits": "turbo"}])
    ec2.terminate_instances(InstanceIds=[t2, t3, chosen, m5])


def test_get_password_data_is_empty_for_linux(ec2):
    iid = launch(ec2)
    out = ec2.get_password_data(InstanceId=iid)
    assert out["InstanceId"] == iid and out["PasswordData"] == "" and out["Timestamp"]
    expect_error("InvalidInstanceID.NotFound", ec2.get_password_data, InstanceId="i-0123456789abcdef0")
    ec2.terminate_instances(InstanceIds=[iid])


def test_every_instance_attribute_terraform_reads(ec2):
    """Every attribute of the model's InstanceAttributeName, as Terraform's read-back asks them."""
    import base64
    script = "#!/bin/sh\necho hi\n"  # boto3 base64-encodes RunInstances' UserData itself
    iid = launch(ec2, UserData=script, DisableApiStop=True, InstanceInitiatedShutdownBehavior="terminate")
    names = ec2.meta.service_model.shape_for("InstanceAttributeName").enum
    answers = {name: ec2.describe_instance_attribute(InstanceId=iid, Attribute=name) for name in names}
    assert answers["disableApiStop"]["DisableApiStop"] == {"Value": True}
    assert answers["disableApiTermination"]["DisableApiTermination"] == {"Value": False}
    assert answers["instanceInitiatedShutdownBehavior"]["InstanceInitiatedShutdownBehavior"] == {"Value": "terminate"}
    assert answers["userData"]["UserData"] == {"Value": base64.b64encode(script.encode()).decode()}
    assert answers["instanceType"]["InstanceType"] == {"Value": "m1.small"}
    assert answers["groupSet"]["Groups"] and answers["rootDeviceName"]["RootDeviceName"]["Value"]
    ec2.modify_instance_attribute(InstanceId=iid, DisableApiStop={"Value": False})
    ec2.terminate_instances(InstanceIds=[iid])


# ----------------------------------------------------------------------------------------- STS

def test_sts_get_caller_identity_on_the_ec2_endpoint(server):
    from .conftest import OTHER_ACCESS_KEY, OTHER_ACCOUNT, OTHER_SECRET_KEY
    sts = server.client(service="sts")
    me = sts.get_caller_identity()
    assert (me["Account"], me["UserId"], me["Arn"]) == (ACCOUNT, ACCOUNT, f"arn:aws:iam::{ACCOUNT}:root")
    other = server.client(service="sts", access_key=OTHER_ACCESS_KEY, secret_key=OTHER_SECRET_KEY)
    assert other.get_caller_identity()["Account"] == OTHER_ACCOUNT
    code, message = error_of(sts.assume_role, RoleArn=f"arn:aws:iam::{ACCOUNT}:role/x", RoleSessionName="session")
    assert code == "InvalidAction" and "AssumeRole" in message
    bad = server.client(service="sts", secret_key="not-the-secret")
    assert error_of(bad.get_caller_identity)[0] == "SignatureDoesNotMatch"  # STS's error XML, parsed


def test_sts_answers_stss_xml(server):
    import requests
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from .server import ACCESS_KEY, SECRET_KEY
    request = AWSRequest(method="POST", url=server.endpoint + "/", data="Action=GetCallerIdentity&Version=2011-06-15",
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "sts", "us-east-1").add_auth(request)
    body = requests.post(request.url, data=request.body, headers=dict(request.headers)).text
    assert body.startswith('<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
                           f"<GetCallerIdentityResult><Arn>arn:aws:iam::{ACCOUNT}:root</Arn>"
                           f"<UserId>{ACCOUNT}</UserId><Account>{ACCOUNT}</Account></GetCallerIdentityResult>"
                           "<ResponseMetadata><RequestId>"), body


# -------------------------------------------------------------------------------------- DryRun

def test_dry_run_validates_first_and_changes_nothing(ec2):
    image = tiny_image(ec2)
    before = _ids(ec2)
    expect_error("InvalidAMIID.NotFound", ec2.run_instances, ImageId="ami-0123456789abcdef0",
                 MinCount=1, MaxCount=1, DryRun=True)
    expect_error("InvalidKeyPair.NotFound", ec2.run_instances, ImageId=image, MinCount=1, MaxCount=1,
                 KeyName=unique("nokey"), DryRun=True)
    expect_error("DryRunOperation", ec2.run_instances, ImageId=image, MinCount=1, MaxCount=1, DryRun=True,
                 TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "dry", "Value": "run"}]}])
    assert _ids(ec2) == before
    name = unique("key")
    expect_error("DryRunOperation", ec2.create_key_pair, KeyName=name, DryRun=True)
    expect_error("InvalidKeyPair.NotFound", ec2.describe_key_pairs, KeyNames=[name])
    expect_error("InvalidInstanceID.NotFound", ec2.terminate_instances, InstanceIds=["i-0123456789abcdef0"],
                 DryRun=True)
    iid = launch(ec2)
    expect_error("DryRunOperation", ec2.terminate_instances, InstanceIds=[iid], DryRun=True)
    state = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["State"]["Name"]
    assert state in ("pending", "running")
    ec2.terminate_instances(InstanceIds=[iid])


def test_unknown_instance_type_is_one_line(ec2):
    for kind in ("x9.foo", "u-24tb1.metal"):  # unknown to the model; in the model, not the catalogue
        message = expect_error("InvalidParameterValue", launch, ec2, InstanceType=kind)
        assert message == f"Invalid value '{kind}' for InstanceType.", message[:200]


def test_start_up_log_has_no_alembic_chatter(server):
    log = server.log.read_text()
    assert "ec2emu: EC2 API on" in log and "alembic" not in log
