"""Unit tests for emulator.catalogue (pure data: regions, zones, instance types)."""

import dataclasses
import re

import pytest

from emulator import catalogue
from emulator.catalogue import (
    DEFAULT_INSTANCE_TYPE,
    INSTANCE_TYPES,
    REGIONS,
    Region,
    Zone,
    vcpus_and_memory,
)

botocore_session = pytest.importorskip("botocore.session")


@pytest.fixture(scope="module")
def ec2_model():
    return botocore_session.get_session().get_service_model("ec2")


def _check(value, shape, path, errors):
    """Recursively check ``value`` against a botocore output ``shape``."""
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(value, dict):
            errors.append(f"{path}: expected dict, got {type(value).__name__}")
            return
        for key, sub in value.items():
            if key not in shape.members:
                errors.append(f"{path}.{key}: not a member of {shape.name}")
            else:
                _check(sub, shape.members[key], f"{path}.{key}", errors)
    elif kind == "list":
        if not isinstance(value, list):
            errors.append(f"{path}: expected list, got {type(value).__name__}")
            return
        for i, item in enumerate(value):
            _check(item, shape.member, f"{path}[{i}]", errors)
    elif kind in ("integer", "long"):
        if type(value) is not int:
            errors.append(f"{path}: expected int, got {value!r}")
    elif kind in ("double", "float"):
        if type(value) is not float:
            errors.append(f"{path}: expected float, got {value!r}")
    elif kind == "boolean":
        if type(value) is not bool:
            errors.append(f"{path}: expected bool, got {value!r}")
    elif kind == "string":
        if type(value) is not str:
            errors.append(f"{path}: expected str, got {value!r}")
        elif shape.enum and value not in shape.enum:
            errors.append(f"{path}: {value!r} not in enum {shape.name}")
    else:  # pragma: no cover - no other shape types are used here
        errors.append(f"{path}: unexpected shape type {kind}")


# ---------------------------------------------------------------- instance types


def test_catalogue_size_and_required_types():
    assert 50 <= len(INSTANCE_TYPES) <= 80
    required = """t1.micro m1.small m1.medium m1.large m1.xlarge c1.medium c1.xlarge
        m3.medium m3.large t2.nano t2.micro t2.small t2.medium t2.large t2.xlarge
        t2.2xlarge t3.nano t3.micro t3.small t3.medium t3.large t3.xlarge t3.2xlarge
        t3a.micro t3a.small t3a.medium t4g.nano t4g.micro t4g.small t4g.medium
        m5.large m5.xlarge m5.2xlarge m5.4xlarge m6g.medium m6g.large c5.large
        c5.xlarge c5.2xlarge r5.large r5.xlarge m7i.large c7g.medium""".split()
    missing = [t for t in required if t not in INSTANCE_TYPES]
    assert not missing


def test_every_instance_type_matches_botocore_shape(ec2_model):
    shape = ec2_model.shape_for("InstanceTypeInfo")
    errors = []
    for name, info in INSTANCE_TYPES.items():
        _check(info, shape, name, errors)
    assert not errors, "\n".join(errors[:50])


def test_checker_catches_bad_values(ec2_model):
    """Guard against the shape checker silently accepting anything."""
    shape = ec2_model.shape_for("InstanceTypeInfo")
    bad = {
        "InstanceType": "m1.small",
        "Bogus": 1,
        "Hypervisor": "kvm",
        "MemoryInfo": {"SizeInMiB": 1.5},
        "ProcessorInfo": {"SustainedClockSpeedInGhz": 3},
        "BareMetal": "false",
        "SupportedBootModes": "uefi",
    }
    errors = []
    _check(bad, shape, "bad", errors)
    assert len(errors) == 6


def test_dict_keys_match_names_and_are_valid_enum_values(ec2_model):
    enum = set(ec2_model.shape_for("InstanceType").enum)
    for name, info in INSTANCE_TYPES.items():
        assert info["InstanceType"] == name
        assert name in enum


def test_core_members_present():
    core = {
        "InstanceType", "CurrentGeneration", "FreeTierEligible", "SupportedUsageClasses",
        "SupportedRootDeviceTypes", "SupportedVirtualizationTypes", "BareMetal",
        "Hypervisor", "ProcessorInfo", "VCpuInfo", "MemoryInfo",
        "InstanceStorageSupported", "EbsInfo", "NetworkInfo", "PlacementGroupInfo",
        "HibernationSupported", "BurstablePerformanceSupported",
        "DedicatedHostsSupported", "AutoRecoverySupported", "SupportedBootModes",
    }
    net = {
        "NetworkPerformance", "MaximumNetworkInterfaces", "MaximumNetworkCards",
        "DefaultNetworkCardIndex", "NetworkCards", "Ipv4AddressesPerInterface",
        "Ipv6AddressesPerInterface", "Ipv6Supported", "EnaSupport", "EfaSupported",
        "EncryptionInTransitSupported",
    }
    for name, info in INSTANCE_TYPES.items():
        assert core <= info.keys(), (name, core - info.keys())
        assert net <= info["NetworkInfo"].keys(), name
        assert {"EbsOptimizedSupport", "EncryptionSupport", "NvmeSupport"} <= info["EbsInfo"].keys()
        assert {"SupportedArchitectures", "Manufacturer"} <= info["ProcessorInfo"].keys()
        assert info["ProcessorInfo"]["SupportedArchitectures"]
        assert info["SupportedBootModes"]


def test_internal_consistency():
    for name, info in INSTANCE_TYPES.items():
        v = info["VCpuInfo"]
        assert v["DefaultVCpus"] == v["DefaultCores"] * v["DefaultThreadsPerCore"], name
        if "ValidCores" in v:
            assert max(v["ValidCores"]) == v["DefaultCores"], name
            assert v["DefaultThreadsPerCore"] in v["ValidThreadsPerCore"]
        assert info["MemoryInfo"]["SizeInMiB"] > 0
        net = info["NetworkInfo"]
        assert len(net["NetworkCards"]) == net["MaximumNetworkCards"]
        assert net["NetworkCards"][0]["MaximumNetworkInterfaces"] == net["MaximumNetworkInterfaces"]
        assert net["Ipv6Supported"] == (net["Ipv6AddressesPerInterface"] > 0), name
        assert info["InstanceStorageSupported"] == ("InstanceStorageInfo" in info), name
        if "InstanceStorageInfo" in info:
            st = info["InstanceStorageInfo"]
            assert st["TotalSizeInGB"] == sum(d["SizeInGB"] * d["Count"] for d in st["Disks"])
            assert "instance-store" in info["SupportedRootDeviceTypes"]
        if info["Hypervisor"] == "nitro":
            assert info["SupportedVirtualizationTypes"] == ["hvm"], name
            assert net["EnaSupport"] == "required", name
        if info["BurstablePerformanceSupported"]:
            assert name.startswith("t"), name


def test_generations_and_instance_store():
    for name in ("t1.micro", "m1.small", "m1.medium", "m1.large", "m1.xlarge",
                 "c1.medium", "c1.xlarge", "m3.medium", "m3.large"):
        info = INSTANCE_TYPES[name]
        assert info["CurrentGeneration"] is False, name
        assert info["Hypervisor"] == "xen", name
        assert "paravirtual" in info["SupportedVirtualizationTypes"], name
    for name in ("m1.small", "m1.xlarge", "c1.xlarge", "m3.medium", "m3.large"):
        assert INSTANCE_TYPES[name]["InstanceStorageSupported"] is True, name
    assert INSTANCE_TYPES["m1.small"]["InstanceStorageInfo"] == {
        "TotalSizeInGB": 160,
        "Disks": [{"SizeInGB": 160, "Count": 1, "Type": "hdd"}],
        "NvmeSupport": "unsupported",
        "EncryptionSupport": "unsupported",
    }
    for name in ("t3.micro", "t4g.micro", "m7i.large", "c7g.medium", "t2.micro"):
        assert INSTANCE_TYPES[name]["CurrentGeneration"] is True, name
        assert INSTANCE_TYPES[name]["InstanceStorageSupported"] is False, name


def test_architectures_and_hypervisors():
    for name, info in INSTANCE_TYPES.items():
        arch = info["ProcessorInfo"]["SupportedArchitectures"]
        family = name.split(".")[0]
        if family in ("t4g", "m6g", "c6g", "r6g", "m7g", "c7g"):
            assert arch == ["arm64"], name
            assert info["ProcessorInfo"]["Manufacturer"] == "AWS"
            assert info["SupportedBootModes"] == ["uefi"]
        else:
            assert "x86_64" in arch, name
    assert INSTANCE_TYPES["t2.micro"]["Hypervisor"] == "xen"
    assert INSTANCE_TYPES["t3.micro"]["Hypervisor"] == "nitro"
    assert INSTANCE_TYPES["m1.small"]["ProcessorInfo"]["SupportedArchitectures"] == ["i386", "x86_64"]


@pytest.mark.parametrize(
    "name, expected",
    [
        ("t1.micro", (1, 627)),
        ("m1.small", (1, 1740)),
        ("m1.medium", (1, 3788)),
        ("m1.large", (2, 7680)),
        ("m1.xlarge", (4, 15360)),
        ("c1.medium", (2, 1740)),
        ("c1.xlarge", (8, 7168)),
        ("m3.medium", (1, 3840)),
        ("m3.large", (2, 7680)),
        ("t2.nano", (1, 512)),
        ("t2.micro", (1, 1024)),
        ("t2.2xlarge", (8, 32768)),
        ("t3.nano", (2, 512)),
        ("t3.micro", (2, 1024)),
        ("t4g.medium", (2, 4096)),
        ("m5.large", (2, 8192)),
        ("m5.4xlarge", (16, 65536)),
        ("m6g.medium", (1, 4096)),
        ("c5.2xlarge", (8, 16384)),
        ("r5.xlarge", (4, 32768)),
        ("m7i.large", (2, 8192)),
        ("c7g.medium", (1, 2048)),
    ],
)
def test_vcpus_and_memory(name, expected):
    assert vcpus_and_memory(name) == expected


def test_vcpus_and_memory_unknown():
    with pytest.raises(KeyError):
        vcpus_and_memory("m99.huge")


def test_default_instance_type():
    assert DEFAULT_INSTANCE_TYPE == "m1.small"
    assert DEFAULT_INSTANCE_TYPE in INSTANCE_TYPES


# ---------------------------------------------------------------- regions / zones

_PREFIX = {
    "us-east-1": "use1", "us-east-2": "use2", "us-west-1": "usw1", "us-west-2": "usw2",
    "ca-central-1": "cac1", "eu-west-1": "euw1", "eu-west-2": "euw2", "eu-west-3": "euw3",
    "eu-central-1": "euc1", "eu-north-1": "eun1", "eu-south-1": "eus1",
    "ap-south-1": "aps1", "ap-northeast-1": "apne1", "ap-northeast-2": "apne2",
    "ap-northeast-3": "apne3", "ap-southeast-1": "apse1", "ap-southeast-2": "apse2",
    "ap-east-1": "ape1", "sa-east-1": "sae1", "me-south-1": "mes1", "af-south-1": "afs1",
}


def test_required_regions_present_with_real_zone_id_prefixes():
    for name, prefix in _PREFIX.items():
        region = REGIONS[name]
        assert isinstance(region, Region)
        assert region.name == name
        assert region.zones
        for zone in region.zones:
            assert isinstance(zone, Zone)
            assert re.fullmatch(re.escape(name) + r"[a-z]", zone.name), zone
            assert re.fullmatch(re.escape(prefix) + r"-az\d+", zone.zone_id), zone


def test_region_invariants():
    for key, region in REGIONS.items():
        assert key == region.name
        assert isinstance(region.zones, tuple)
        names = [z.name for z in region.zones]
        ids = [z.zone_id for z in region.zones]
        assert len(set(names)) == len(names), key
        assert len(set(ids)) == len(ids), key
        assert names == sorted(names), key
        assert 2 <= len(region.zones) <= 6, key
    all_ids = [z.zone_id for r in REGIONS.values() for z in r.zones]
    assert len(set(all_ids)) == len(all_ids)


def test_zone_counts_and_letters():
    assert [z.name[-1] for z in REGIONS["us-east-1"].zones] == list("abcdef")
    assert REGIONS["us-east-1"].zones[0] == Zone("us-east-1a", "use1-az6")
    assert [z.name for z in REGIONS["us-west-1"].zones] == ["us-west-1a", "us-west-1c"]
    assert len(REGIONS["us-west-2"].zones) == 4
    assert [z.name[-1] for z in REGIONS["ap-northeast-1"].zones] == ["a", "c", "d"]


def test_opt_in_flags():
    for name in ("ap-east-1", "me-south-1", "af-south-1", "eu-south-1"):
        assert REGIONS[name].opt_in is True, name
    for name in ("us-east-1", "us-east-2", "us-west-1", "us-west-2", "eu-west-1",
                 "eu-central-1", "ap-northeast-1", "ap-southeast-2", "sa-east-1",
                 "ca-central-1", "eu-north-1", "ap-northeast-3"):
        assert REGIONS[name].opt_in is False, name


def test_dataclasses_are_frozen():
    zone = REGIONS["us-east-1"].zones[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        zone.name = "x"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        REGIONS["us-east-1"].opt_in = True  # type: ignore[misc]


def test_module_exports():
    for name in catalogue.__all__:
        assert hasattr(catalogue, name)
