"""Instance profiles and their roles' credentials, end to end with boto3 (none driver): the
associations' API and AWS's errors; the metadata service's iam/ tree (its lookup on the server's
own database); the credentials it serves accepted by the API as the instance's account (EC2 and
STS's assumed-role identity), refused once the association ends, the instance terminates or
they expire. The guest test (test_guests.py) reads them inside a real guest."""
from __future__ import annotations

import json
import time

import pytest

from emulator import db, role_credentials
from emulator.config import Config
from metadata.server import MetadataServer
from metadata.tree import meta_data

from .helpers import expect_error, fast_waiter, tiny_image, unique


@pytest.fixture(scope="module")
def image(ec2):
    return tiny_image(ec2)


@pytest.fixture(scope="module")
def metadata(server):
    """The metadata service's lookup, on the server's database and state dir (as it runs in the
    server; its listeners need guests)."""
    cfg = Config(state_dir=str(server.state_dir), database_url=server.database_url)
    Session = db.session_factory(db.make_engine(cfg.effective_database_url))
    return MetadataServer(Session, server.state_dir, config=cfg)


def _inst(ec2, iid: str) -> dict:
    return ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]


def _role_tree(metadata, inst: dict) -> dict | None:
    facts = metadata.lookup(inst["VpcId"], inst["PrivateIpAddress"])
    return meta_data(facts).get("iam")


def _client(server, creds: dict, service: str = "ec2"):
    return server.client(service=service, access_key=creds["AccessKeyId"], secret_key=creds["SecretAccessKey"],
                         session_token=creds["Token"])


def test_associations_and_their_errors(ec2, image):
    name = unique("web")
    inst = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, IamInstanceProfile={"Name": name})["Instances"][0]
    arn = f"arn:aws:iam::123456789012:instance-profile/{name}"
    assert inst["IamInstanceProfile"]["Arn"] == arn and inst["IamInstanceProfile"]["Id"].startswith("AIPA")
    iid = inst["InstanceId"]
    assoc = ec2.describe_iam_instance_profile_associations(Filters=[{"Name": "instance-id", "Values": [iid]}])[
        "IamInstanceProfileAssociations"]
    assert len(assoc) == 1 and assoc[0]["State"] == "associated" and assoc[0]["IamInstanceProfile"]["Arn"] == arn
    assoc_id = assoc[0]["AssociationId"]
    assert assoc_id.startswith("iip-assoc-")
    assert expect_error("IncorrectState", ec2.associate_iam_instance_profile, InstanceId=iid,
                        IamInstanceProfile={"Name": "other"}) == f"There is an existing association for instance {iid}"
    # Replace: a new association, the old one ends.
    other_arn = "arn:aws:iam::123456789012:instance-profile/team/other"
    new = ec2.replace_iam_instance_profile_association(AssociationId=assoc_id, IamInstanceProfile={"Arn": other_arn})
    assert new["IamInstanceProfileAssociation"]["State"] == "associating"
    new_id = new["IamInstanceProfileAssociation"]["AssociationId"]
    assert _inst(ec2, iid)["IamInstanceProfile"]["Arn"] == other_arn
    states = {a["AssociationId"]: a["State"] for a in ec2.describe_iam_instance_profile_associations(
        AssociationIds=[assoc_id, new_id])["IamInstanceProfileAssociations"]}
    assert states == {assoc_id: "disassociated", new_id: "associated"}
    gone = ec2.disassociate_iam_instance_profile(AssociationId=new_id)["IamInstanceProfileAssociation"]
    assert gone["State"] == "disassociating"
    assert "IamInstanceProfile" not in _inst(ec2, iid)
    assert expect_error("InvalidAssociationID.NotFound", ec2.disassociate_iam_instance_profile,
                        AssociationId=new_id) == f"An invalid association-id of '{new_id}' was given"
    expect_error("InvalidAssociationID.NotFound", ec2.describe_iam_instance_profile_associations,
                 AssociationIds=["iip-assoc-0123456789abcdef0"])
    # Another account's ARN, or a malformed one, is refused; so is an instance that does not exist.
    for bad in ("arn:aws:iam::210987654321:instance-profile/x", "arn:aws:iam::123456789012:role/x"):
        expect_error("InvalidParameterValue", ec2.associate_iam_instance_profile, InstanceId=iid,
                     IamInstanceProfile={"Arn": bad})
    expect_error("InvalidInstanceID.NotFound", ec2.associate_iam_instance_profile,
                 InstanceId="i-0123456789abcdef0", IamInstanceProfile={"Name": "x"})
    again = ec2.associate_iam_instance_profile(InstanceId=iid, IamInstanceProfile={"Name": name})
    assert again["IamInstanceProfileAssociation"]["State"] == "associating"
    ec2.terminate_instances(InstanceIds=[iid])


def test_credentials_act_as_the_instance_until_the_association_ends(server, ec2, other_account, image, metadata):
    name = unique("app")
    inst = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, IamInstanceProfile={"Name": name})["Instances"][0]
    iid = inst["InstanceId"]
    inst = _inst(ec2, iid)
    tree = _role_tree(metadata, inst)
    info = json.loads(tree["info"])
    assert info["Code"] == "Success" and info["InstanceProfileArn"] == inst["IamInstanceProfile"]["Arn"]
    assert info["InstanceProfileId"] == inst["IamInstanceProfile"]["Id"]
    assert list(tree["security-credentials"]) == [name]  # the role has the profile's name
    creds = json.loads(tree["security-credentials"][name])
    assert creds["Code"] == "Success" and creds["Type"] == "AWS-HMAC" and creds["AccessKeyId"].startswith("ASIA")
    assert json.loads(_role_tree(metadata, inst)["security-credentials"][name]) == creds  # stable within the hour
    # They work against the API, as the instance's account (the other account's key never sees it).
    as_role = _client(server, creds)
    assert [i["InstanceId"] for r in as_role.describe_instances(InstanceIds=[iid])["Reservations"]
            for i in r["Instances"]] == [iid]
    expect_error("InvalidInstanceID.NotFound", other_account.describe_instances, InstanceIds=[iid])
    me = _client(server, creds, "sts").get_caller_identity()
    assert me["Arn"] == f"arn:aws:sts::123456789012:assumed-role/{name}/{iid}"
    assert me["Account"] == "123456789012" and me["UserId"].startswith("AROA") and me["UserId"].endswith(":" + iid)
    # A tampered token, or the key with another token, is refused (positive control above).
    expect_error("AuthFailure", _client(server, {**creds, "Token": creds["Token"][:-2] + "AA"}).describe_regions)
    import base64
    odd = base64.urlsafe_b64encode("a.b.1.é".encode()).decode()  # not ASCII inside: refused, never a 500
    expect_error("AuthFailure", _client(server, {**creds, "Token": odd}).describe_regions)
    # Expired credentials: RequestExpired.
    cfg = Config(state_dir=str(server.state_dir), database_url=server.database_url)
    assoc_id = ec2.describe_iam_instance_profile_associations(Filters=[{"Name": "instance-id", "Values": [iid]}])[
        "IamInstanceProfileAssociations"][0]["AssociationId"]
    old = role_credentials.issue(cfg, assoc_id, iid, time.time() - 7 * 3600)
    expect_error("RequestExpired", _client(server, old).describe_regions)
    # The association ends: the same credentials are refused at once; the tree has no iam/.
    ec2.disassociate_iam_instance_profile(AssociationId=assoc_id)
    expect_error("AuthFailure", as_role.describe_regions)
    assert _role_tree(metadata, inst) is None
    # A new association: new credentials, which a termination ends.
    ec2.associate_iam_instance_profile(InstanceId=iid, IamInstanceProfile={"Name": name})
    fresh = json.loads(_role_tree(metadata, inst)["security-credentials"][name])
    assert fresh["AccessKeyId"] != creds["AccessKeyId"]
    assert _client(server, fresh).describe_regions()["Regions"]
    ec2.terminate_instances(InstanceIds=[iid])
    expect_error("AuthFailure", _client(server, fresh).describe_regions)
    fast_waiter(ec2, "instance_terminated")(InstanceIds=[iid])
    assert ec2.describe_iam_instance_profile_associations(Filters=[{"Name": "instance-id", "Values": [iid]}])[
        "IamInstanceProfileAssociations"][-1]["State"] == "disassociated"


def test_a_launch_template_carries_the_profile(ec2, image):
    name = unique("lt-role")
    lt = ec2.create_launch_template(LaunchTemplateName=unique("lt"), LaunchTemplateData={
        "ImageId": image, "IamInstanceProfile": {"Name": name}})["LaunchTemplate"]["LaunchTemplateId"]
    inst = ec2.run_instances(MinCount=1, MaxCount=1, LaunchTemplate={"LaunchTemplateId": lt})["Instances"][0]
    assert inst["IamInstanceProfile"]["Arn"].endswith(f":instance-profile/{name}")
    ec2.terminate_instances(InstanceIds=[inst["InstanceId"]])
