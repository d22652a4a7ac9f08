"""Key pairs, tags, regions/zones/account, the default VPC: end to end with boto3."""
import hashlib
import re
import subprocess

from cryptography.hazmat.primitives import serialization

from .helpers import expect_error, unique


def test_create_rsa_key_pair_fingerprint_is_sha1_of_pkcs8(ec2):
    name = unique("key")
    made = ec2.create_key_pair(KeyName=name)
    assert re.fullmatch(r"key-[0-9a-f]{17}", made["KeyPairId"])
    private = serialization.load_pem_private_key(made["KeyMaterial"].encode(), None)
    der = private.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    digest = hashlib.sha1(der).hexdigest()
    assert made["KeyFingerprint"] == ":".join(digest[i:i + 2] for i in range(0, 40, 2))
    listed = ec2.describe_key_pairs(KeyNames=[name], IncludePublicKey=True)["KeyPairs"][0]
    assert listed["KeyFingerprint"] == made["KeyFingerprint"] and listed["KeyType"] == "rsa"
    assert listed["PublicKey"].startswith("ssh-rsa ")
    expect_error("InvalidKeyPair.Duplicate", ec2.create_key_pair, KeyName=name)
    ec2.delete_key_pair(KeyName=name)
    expect_error("InvalidKeyPair.NotFound", ec2.describe_key_pairs, KeyNames=[name])


def _tool(tmp_path, material: str, *argv: str) -> str:
    """Run an outside tool (ssh-keygen, puttygen) on a key file made from `material`."""
    key = tmp_path / f"key-{len(list(tmp_path.iterdir()))}"
    key.write_text(material)
    key.chmod(0o600)
    return subprocess.run([*argv, str(key)], capture_output=True, text=True, check=True).stdout


def test_ed25519_and_import(ec2, tmp_path):
    made = ec2.create_key_pair(KeyName=unique("ed"), KeyType="ed25519")
    assert made["KeyMaterial"].startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    # AWS's ed25519 fingerprint is OpenSSH's SHA256 one, with base64's padding.
    openssh_fp = _tool(tmp_path, made["KeyMaterial"], "ssh-keygen", "-l", "-E", "sha256", "-f").split()[1]
    assert openssh_fp == "SHA256:" + made["KeyFingerprint"].rstrip("=")
    from cryptography.hazmat.primitives.asymmetric import rsa
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    openssh = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    name = unique("imp")
    out = ec2.import_key_pair(KeyName=name, PublicKeyMaterial=openssh + b" me@host",
                              TagSpecifications=[{"ResourceType": "key-pair", "Tags": [{"Key": "k", "Value": "v"}]}])
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    md5 = hashlib.md5(der).hexdigest()
    assert out["KeyFingerprint"] == ":".join(md5[i:i + 2] for i in range(0, 32, 2))
    listed = ec2.describe_key_pairs(Filters=[{"Name": "tag:k", "Values": ["v"]}, {"Name": "key-name", "Values": [name]}])
    assert [k["KeyName"] for k in listed["KeyPairs"]] == [name]
    expect_error("InvalidKey.Format", ec2.import_key_pair, KeyName=unique("bad"), PublicKeyMaterial=b"junk")
    ppk_name = unique("ppk")
    ppk = ec2.create_key_pair(KeyName=ppk_name, KeyFormat="ppk")
    assert ppk["KeyMaterial"].startswith("PuTTY-User-Key-File-3: ssh-rsa")
    # PuTTY loads it (checking its MAC) and finds the public key the API stores.
    public = _tool(tmp_path, ppk["KeyMaterial"], "puttygen", "-O", "public-openssh")
    stored = ec2.describe_key_pairs(KeyNames=[ppk_name], IncludePublicKey=True)["KeyPairs"][0]["PublicKey"]
    assert public.split()[:2] == stored.split()[:2]


def test_tags_lifecycle(ec2, other_account):
    vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    key = unique("tag")
    ec2.create_tags(Resources=[vpc], Tags=[{"Key": key, "Value": "one"}, {"Key": key + "2", "Value": ""}])
    tags = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [vpc]}, {"Name": "key", "Values": [key + "*"]}])
    assert {(t["Key"], t["Value"], t["ResourceType"]) for t in tags["Tags"]} == {
        (key, "one", "vpc"), (key + "2", "", "vpc")}
    assert ec2.describe_vpcs(Filters=[{"Name": f"tag:{key}", "Values": ["one"]}])["Vpcs"][0]["VpcId"] == vpc
    ec2.delete_tags(Resources=[vpc], Tags=[{"Key": key, "Value": "not-the-value"}])  # value must match
    assert len(ec2.describe_tags(Filters=[{"Name": "key", "Values": [key]}])["Tags"]) == 1
    ec2.delete_tags(Resources=[vpc], Tags=[{"Key": key}, {"Key": key + "2"}])
    assert ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [vpc]}, {"Name": "key", "Values": [key + "*"]}])["Tags"] == []
    expect_error("InvalidParameterValue", ec2.create_tags, Resources=[vpc], Tags=[{"Key": "aws:x", "Value": "y"}])
    assert expect_error("InvalidVpcID.NotFound", other_account.create_tags, Resources=[vpc],
                        Tags=[{"Key": "a", "Value": "b"}]) == f"The vpc ID '{vpc}' does not exist"
    expect_error("InvalidID", ec2.create_tags, Resources=["nonsense"], Tags=[{"Key": "a", "Value": "b"}])
    too_many = [{"Key": f"k{i}", "Value": "v"} for i in range(51)]
    expect_error("TagLimitExceeded", ec2.create_tags, Resources=[vpc], Tags=too_many)


def test_regions_and_zones(ec2, server):
    regions = {r["RegionName"]: r for r in ec2.describe_regions()["Regions"]}
    assert {"us-east-1", "eu-west-1", "ap-southeast-2"} <= regions.keys()
    assert regions["eu-west-1"]["Endpoint"] == "ec2.eu-west-1.amazonaws.com"
    zones = ec2.describe_availability_zones()["AvailabilityZones"]
    assert [z["ZoneName"] for z in zones][:2] == ["us-east-1a", "us-east-1b"]
    assert all(re.fullmatch(r"use1-az\d", z["ZoneId"]) for z in zones)
    west = server.client(region="us-west-2").describe_availability_zones()["AvailabilityZones"]
    assert all(z["RegionName"] == "us-west-2" for z in west)
    expect_error("InvalidParameterValue", ec2.describe_availability_zones, ZoneNames=["mars-1a"])
    attrs = {a["AttributeName"]: [v["AttributeValue"] for v in a["AttributeValues"]]
             for a in ec2.describe_account_attributes()["AccountAttributes"]}
    assert attrs["supported-platforms"] == ["VPC"] and attrs["default-vpc"][0].startswith("vpc-")


def test_default_vpc_and_subnets_per_region_and_account(ec2, other_account, server):
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    assert len(vpcs) == 1 and vpcs[0]["CidrBlock"] == "172.31.0.0/16"
    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpcs[0]["VpcId"]]}])["Subnets"]
    zones = ec2.describe_availability_zones()["AvailabilityZones"]
    assert len(subnets) == len(zones)
    assert all(s["CidrBlock"].endswith("/20") and s["DefaultForAz"] and s["MapPublicIpOnLaunch"] for s in subnets)
    assert subnets[0]["AvailableIpAddressCount"] <= 4091
    other = other_account.describe_vpcs()["Vpcs"]
    assert other[0]["OwnerId"] == "210987654321" and other[0]["IsDefault"]
    expect_error("InvalidVpcID.NotFound", ec2.describe_vpcs, VpcIds=[other[0]["VpcId"]])  # not ours
    west = server.client(region="eu-west-1").describe_vpcs()["Vpcs"]
    assert west[0]["IsDefault"] and west[0]["OwnerId"] == vpcs[0]["OwnerId"]
    expect_error("InvalidVpcID.NotFound", ec2.describe_vpcs, VpcIds=[west[0]["VpcId"]])  # other region
