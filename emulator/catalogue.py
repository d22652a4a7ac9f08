"""Static catalogue data for the EC2 emulator: regions, availability zones and
instance types.

Pure data, no I/O.  Instance-type records are shaped exactly like botocore's
``InstanceTypeInfo`` output shape (what ``DescribeInstanceTypes`` returns) and
are generated from a compact table (one row per type plus per-family traits)
rather than written out by hand.  Values mirror a recent real
``describe-instance-types`` response.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Zone",
    "Region",
    "REGIONS",
    "INSTANCE_TYPES",
    "DEFAULT_INSTANCE_TYPE",
    "vcpus_and_memory",
]


# --------------------------------------------------------------------------
# Regions and availability zones
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Zone:
    name: str  # e.g. "us-east-1a"
    zone_id: str  # e.g. "use1-az6"


@dataclass(frozen=True)
class Region:
    name: str
    opt_in: bool  # True for regions an account has to opt in to
    zones: tuple[Zone, ...]


# (region, opt-in, zone-id prefix, "letter:az-number ...").  Zone-name ->
# zone-id mappings are per-account in real AWS for regions launched before
# 2019; the ones here are a realistic, commonly seen mapping.  Regions launched
# later map a->az1, b->az2, ... for every account.
_REGION_TABLE: tuple[tuple[str, bool, str, str], ...] = (
    ("us-east-1", False, "use1", "a:6 b:1 c:2 d:4 e:3 f:5"),
    ("us-east-2", False, "use2", "a:1 b:2 c:3"),
    ("us-west-1", False, "usw1", "a:3 c:1"),
    ("us-west-2", False, "usw2", "a:2 b:1 c:3 d:4"),
    ("ca-central-1", False, "cac1", "a:1 b:2 d:4"),
    ("eu-west-1", False, "euw1", "a:3 b:1 c:2"),
    ("eu-west-2", False, "euw2", "a:2 b:3 c:1"),
    ("eu-west-3", False, "euw3", "a:1 b:2 c:3"),
    ("eu-central-1", False, "euc1", "a:2 b:3 c:1"),
    ("eu-north-1", False, "eun1", "a:1 b:2 c:3"),
    ("ap-south-1", False, "aps1", "a:1 b:3 c:2"),
    ("ap-northeast-1", False, "apne1", "a:4 c:1 d:2"),
    ("ap-northeast-2", False, "apne2", "a:1 b:2 c:3 d:4"),
    ("ap-northeast-3", False, "apne3", "a:3 b:1 c:2"),
    ("ap-southeast-1", False, "apse1", "a:2 b:1 c:3"),
    ("ap-southeast-2", False, "apse2", "a:1 b:3 c:2"),
    ("sa-east-1", False, "sae1", "a:1 b:2 c:3"),
    # Opt-in regions (launched after March 2019).
    ("ap-east-1", True, "ape1", "a:1 b:2 c:3"),
    ("me-south-1", True, "mes1", "a:1 b:2 c:3"),
    ("af-south-1", True, "afs1", "a:1 b:2 c:3"),
    ("eu-south-1", True, "eus1", "a:1 b:2 c:3"),
    ("ap-south-2", True, "aps2", "a:1 b:2 c:3"),
    ("ap-southeast-3", True, "apse3", "a:1 b:2 c:3"),
    ("ap-southeast-4", True, "apse4", "a:1 b:2 c:3"),
    ("eu-central-2", True, "euc2", "a:1 b:2 c:3"),
    ("eu-south-2", True, "eus2", "a:1 b:2 c:3"),
    ("me-central-1", True, "mec1", "a:1 b:2 c:3"),
    ("il-central-1", True, "ilc1", "a:1 b:2 c:3"),
    ("ca-west-1", True, "caw1", "a:1 b:2 c:3"),
)


def _region(name: str, opt_in: bool, prefix: str, spec: str) -> Region:
    zones = []
    for item in spec.split():
        letter, az = item.split(":")
        zones.append(Zone(f"{name}{letter}", f"{prefix}-az{az}"))
    return Region(name, opt_in, tuple(zones))


REGIONS: dict[str, Region] = {row[0]: _region(*row) for row in _REGION_TABLE}


# --------------------------------------------------------------------------
# Instance types
# --------------------------------------------------------------------------

#: AWS's documented default for RunInstances when InstanceType is omitted.
DEFAULT_INSTANCE_TYPE = "m1.small"

# Per-family traits.  Keys:
#   gen      CurrentGeneration            hv     Hypervisor
#   arch     SupportedArchitectures       i386   max MiB for which i386 is also offered
#   mfr      ProcessorInfo.Manufacturer   ghz    SustainedClockSpeedInGhz (None: omitted)
#   feat     ProcessorInfo.SupportedFeatures
#   virt     SupportedVirtualizationTypes root   SupportedRootDeviceTypes
#   boot     SupportedBootModes           pg     PlacementGroupInfo strategies
#   ebs_opt  EbsOptimizedSupport for sizes with an EBS-optimized row entry
#   nvme     EbsInfo.NvmeSupport          att    MaximumEbsAttachments
#   limit    AttachmentLimitType          ena    EnaSupport
#   ipv6     Ipv6Supported                eit    EncryptionInTransitSupported
#   hib/burst/dh/ar  Hibernation/BurstablePerformance/DedicatedHosts/AutoRecovery
#   tpm/phc/flex/rm  NitroTpm/Phc/FlexibleEnaQueues/RebootMigration support
#   secif    report Ipv4AddressesPerSecondaryInterface (0)
#   encl     min vCPUs for Nitro Enclaves support (0: never)
_XEN_PREV = dict(
    gen=False, hv="xen", arch=("x86_64",), i386=0, mfr="Intel", ghz=None, feat=(),
    virt=("hvm", "paravirtual"), root=("ebs", "instance-store"), boot=("legacy-bios",),
    pg=("partition", "spread"), ebs_opt="supported", nvme="unsupported", att=39,
    limit="shared", ena="unsupported", ipv6=False, eit=False, hib=False, burst=False,
    dh=False, ar=False, tpm=False, phc=False, flex=False, rm=False, secif=False, encl=0,
)
_NITRO = dict(
    gen=True, hv="nitro", arch=("x86_64",), i386=0, mfr="Intel", ghz=None, feat=(),
    virt=("hvm",), root=("ebs",), boot=("legacy-bios", "uefi"),
    pg=("cluster", "partition", "spread"), ebs_opt="default", nvme="required", att=27,
    limit="shared", ena="required", ipv6=True, eit=False, hib=True, burst=False,
    dh=True, ar=True, tpm=True, phc=False, flex=False, rm=True, secif=False, encl=4,
)
_GRAVITON = dict(_NITRO, arch=("arm64",), mfr="AWS", boot=("uefi",), encl=2)
_BURST = dict(_NITRO, pg=("partition", "spread"), burst=True, encl=0)
_INTEL7 = dict(_NITRO, ghz=3.2, eit=True, phc=True, secif=True, att=32,
               limit="dedicated", feat=("nested-virtualization",))
_FLEX = dict(_INTEL7, pg=("partition", "spread"), dh=False, encl=0)

_FAMILIES: dict[str, dict] = {
    "t1": dict(_XEN_PREV, i386=4096, root=("ebs",), ar=True, rm=True),
    "m1": dict(_XEN_PREV, i386=4096),
    "c1": dict(_XEN_PREV, i386=4096),
    "m3": dict(_XEN_PREV, ghz=2.5, hib=True, dh=True, ar=True),
    "t2": dict(_BURST, hv="xen", i386=4096, ghz=2.3, virt=("hvm",),
               boot=("legacy-bios",), ebs_opt="unsupported", nvme="unsupported",
               att=40, ena="unsupported", dh=False, tpm=False),
    "t3": dict(_BURST, ghz=2.5),
    "t3a": dict(_BURST, mfr="AMD", ghz=2.2, dh=False),
    "t4g": dict(_BURST, arch=("arm64",), mfr="AWS", ghz=2.5, boot=("uefi",), dh=False),
    "m5": dict(_NITRO, gen=False, ghz=3.1),
    "r5": dict(_NITRO, gen=False, ghz=3.1),
    "c5": dict(_NITRO, gen=False, ghz=3.4),
    "m6i": dict(_NITRO, gen=False, ghz=3.5, eit=True, flex=True),
    "c6i": dict(_NITRO, ghz=3.5, eit=True, flex=True),
    "m6a": dict(_NITRO, mfr="AMD", ghz=3.6, eit=True, feat=("amd-sev-snp",)),
    "m6g": dict(_GRAVITON, ghz=2.5),
    "c6g": dict(_GRAVITON, ghz=2.5),
    "r6g": dict(_GRAVITON, ghz=2.5),
    "m7g": dict(_GRAVITON, ghz=2.6, eit=True, phc=True, secif=True),
    "c7g": dict(_GRAVITON, ghz=2.6, eit=True, secif=True),
    "m7i": _INTEL7,
    "m7i-flex": _FLEX,
    "c7i-flex": _FLEX,
}

# One row per instance type:
#  name, vCPUs, cores, threads/core, ValidCores (None: not reported), MiB,
#  NetworkPerformance, max ENIs, IPv4/ENI, IPv6/ENI, baseline Gbps, peak Gbps,
#  default ENA queues/ENI,
#  EBS-optimized (baseline Mbps, baseline IOPS, max Mbps, max IOPS) or None,
#  instance store (disk count, GB per disk, 'hdd'|'ssd') or None.
# fmt: off
_ROWS: tuple[tuple, ...] = (
    ('t1.micro',         1, 1, 1, None,            627, 'Very Low',           2,  2,  0,  0.07, 0.28, 1, None,                       None),
    ('m1.small',         1, 1, 1, None,           1740, 'Low',                2,  4,  0,   0.3,  1.2, 1, None,                       (1, 160, 'hdd')),
    ('m1.medium',        1, 1, 1, None,           3788, 'Moderate',           2,  6,  0,   0.3,  1.2, 1, None,                       (1, 410, 'hdd')),
    ('m1.large',         2, 2, 1, None,           7680, 'Moderate',           3, 10,  0,   0.7,  2.8, 2, (500, 4000, 500, 4000),     (2, 420, 'hdd')),
    ('m1.xlarge',        4, 4, 1, None,          15360, 'High',               4, 15,  0,   1.0, 10.0, 4, (1000, 8000, 1000, 8000),   (4, 420, 'hdd')),
    ('c1.medium',        2, 2, 1, None,           1740, 'Moderate',           2,  6,  0,   0.3,  1.2, 1, None,                       (1, 350, 'hdd')),
    ('c1.xlarge',        8, 8, 1, None,           7168, 'High',               4, 15,  0,   1.0, 10.0, 4, (1000, 8000, 1000, 8000),   (4, 420, 'hdd')),
    ('m3.medium',        1, 1, 1, None,           3840, 'Moderate',           2,  6,  0,   0.3,  1.2, 1, None,                       (1, 4, 'ssd')),
    ('m3.large',         2, 1, 2, (1,),           7680, 'Moderate',           3, 10,  0,   0.7,  2.8, 2, None,                       (1, 32, 'ssd')),
    ('m3.xlarge',        4, 2, 2, (1, 2),        15360, 'High',               4, 15,  0,   1.0, 10.0, 4, (500, 4000, 500, 4000),     (2, 40, 'ssd')),
    ('m3.2xlarge',       8, 4, 2, (1, 2, 3, 4),  30720, 'High',               4, 30,  0,   1.0, 10.0, 8, (1000, 8000, 1000, 8000),   (2, 80, 'ssd')),
    ('t2.nano',          1, 1, 1, None,            512, 'Low to Moderate',    2,  2,  2, 0.032, 0.512, 1, None,                       None),
    ('t2.micro',         1, 1, 1, None,           1024, 'Low to Moderate',    2,  2,  2, 0.064, 1.024, 1, None,                       None),
    ('t2.small',         1, 1, 1, None,           2048, 'Low to Moderate',    3,  4,  4, 0.128, 1.024, 1, None,                       None),
    ('t2.medium',        2, 2, 1, None,           4096, 'Low to Moderate',    3,  6,  6, 0.256, 1.024, 1, None,                       None),
    ('t2.large',         2, 2, 1, None,           8192, 'Low to Moderate',    3, 12, 12, 0.512, 1.024, 1, None,                       None),
    ('t2.xlarge',        4, 4, 1, None,          16384, 'Moderate',           3, 15, 15,  0.75, 1.024, 1, None,                       None),
    ('t2.2xlarge',       8, 8, 1, None,          32768, 'Moderate',           3, 15, 15,   1.0, 1.024, 1, None,                       None),
    ('t3.nano',          2, 1, 2, (1,),            512, 'Up to 5 Gigabit',    2,  2,  2, 0.032,  5.0, 2, (43, 250, 2085, 11800),     None),
    ('t3.micro',         2, 1, 2, (1,),           1024, 'Up to 5 Gigabit',    2,  2,  2, 0.064,  5.0, 2, (87, 500, 2085, 11800),     None),
    ('t3.small',         2, 1, 2, (1,),           2048, 'Up to 5 Gigabit',    3,  4,  4, 0.128,  5.0, 2, (174, 1000, 2085, 11800),   None),
    ('t3.medium',        2, 1, 2, (1,),           4096, 'Up to 5 Gigabit',    3,  6,  6, 0.256,  5.0, 2, (347, 2000, 2085, 11800),   None),
    ('t3.large',         2, 1, 2, (1,),           8192, 'Up to 5 Gigabit',    3, 12, 12, 0.512,  5.0, 2, (695, 4000, 2780, 15700),   None),
    ('t3.xlarge',        4, 2, 2, (2,),          16384, 'Up to 5 Gigabit',    4, 15, 15, 1.024,  5.0, 4, (695, 4000, 2780, 15700),   None),
    ('t3.2xlarge',       8, 4, 2, (2, 4),        32768, 'Up to 5 Gigabit',    4, 15, 15, 2.048,  5.0, 8, (695, 4000, 2780, 15700),   None),
    ('t3a.nano',         2, 1, 2, (1,),            512, 'Up to 5 Gigabit',    2,  2,  2, 0.032,  5.0, 8, (45, 250, 2085, 11800),     None),
    ('t3a.micro',        2, 1, 2, (1,),           1024, 'Up to 5 Gigabit',    2,  2,  2, 0.064,  5.0, 8, (90, 500, 2085, 11800),     None),
    ('t3a.small',        2, 1, 2, (1,),           2048, 'Up to 5 Gigabit',    2,  4,  4, 0.128,  5.0, 8, (175, 1000, 2085, 11800),   None),
    ('t3a.medium',       2, 1, 2, (1,),           4096, 'Up to 5 Gigabit',    3,  6,  6, 0.256,  5.0, 8, (350, 2000, 2085, 11800),   None),
    ('t3a.large',        2, 1, 2, (1,),           8192, 'Up to 5 Gigabit',    3, 12, 12, 0.512,  5.0, 8, (695, 4000, 2780, 15700),   None),
    ('t4g.nano',         2, 2, 1, (1, 2),          512, 'Up to 5 Gigabit',    2,  2,  2, 0.032,  5.0, 2, (43, 250, 2085, 11800),     None),
    ('t4g.micro',        2, 2, 1, (1, 2),         1024, 'Up to 5 Gigabit',    2,  2,  2, 0.064,  5.0, 2, (87, 500, 2085, 11800),     None),
    ('t4g.small',        2, 2, 1, (1, 2),         2048, 'Up to 5 Gigabit',    3,  4,  4, 0.128,  5.0, 2, (174, 1000, 2085, 11800),   None),
    ('t4g.medium',       2, 2, 1, (1, 2),         4096, 'Up to 5 Gigabit',    3,  6,  6, 0.256,  5.0, 2, (347, 2000, 2085, 11800),   None),
    ('t4g.large',        2, 2, 1, (1, 2),         8192, 'Up to 5 Gigabit',    3, 12, 12, 0.512,  5.0, 2, (695, 4000, 2780, 15700),   None),
    ('m5.large',         2, 1, 2, (1,),           8192, 'Up to 10 Gigabit',   3, 10, 10,  0.75, 10.0, 8, (650, 3600, 4750, 18750),   None),
    ('m5.xlarge',        4, 2, 2, (2,),          16384, 'Up to 10 Gigabit',   4, 15, 15,  1.25, 10.0, 8, (1150, 6000, 4750, 18750),  None),
    ('m5.2xlarge',       8, 4, 2, (2, 4),        32768, 'Up to 10 Gigabit',   4, 15, 15,   2.5, 10.0, 8, (2300, 12000, 4750, 18750), None),
    ('m5.4xlarge',      16, 8, 2, (2, 4, 6, 8),  65536, 'Up to 10 Gigabit',   8, 30, 30,   5.0, 10.0, 8, (4750, 18750, 4750, 18750), None),
    ('m6i.large',        2, 1, 2, (1,),           8192, 'Up to 12.5 Gigabit', 3, 10, 10, 0.781, 12.5, 2, (650, 3600, 10000, 40000),  None),
    ('m6a.large',        2, 1, 2, (1,),           8192, 'Up to 12.5 Gigabit', 3, 10, 10, 0.781, 12.5, 2, (650, 3600, 10000, 40000),  None),
    ('m6g.medium',       1, 1, 1, None,           4096, 'Up to 10 Gigabit',   2,  4,  4,   0.5, 10.0, 8, (315, 2500, 4750, 20000),   None),
    ('m6g.large',        2, 2, 1, (1, 2),         8192, 'Up to 10 Gigabit',   3, 10, 10,  0.75, 10.0, 8, (630, 3600, 4750, 20000),   None),
    ('m6g.xlarge',       4, 4, 1, (1, 2, 3, 4),  16384, 'Up to 10 Gigabit',   4, 15, 15,  1.25, 10.0, 8, (1188, 6000, 4750, 20000),  None),
    ('m7i.large',        2, 1, 2, (1,),           8192, 'Up to 12.5 Gigabit', 3, 10, 10, 0.781, 12.5, 2, (650, 3600, 10000, 40000),  None),
    ('m7i.xlarge',       4, 2, 2, (1, 2),        16384, 'Up to 12.5 Gigabit', 4, 15, 15, 1.562, 12.5, 4, (1250, 6000, 10000, 40000), None),
    ('m7i-flex.large',   2, 1, 2, (1,),           8192, 'Up to 12.5 Gigabit', 3, 10, 10,  0.39, 12.5, 1, (312, 2500, 10000, 40000),  None),
    ('m7g.medium',       1, 1, 1, None,           4096, 'Up to 12.5 Gigabit', 2,  4,  4,  0.52, 12.5, 1, (315, 2500, 10000, 40000),  None),
    ('m7g.large',        2, 2, 1, (1, 2),         8192, 'Up to 12.5 Gigabit', 3, 10, 10, 0.937, 12.5, 2, (630, 3600, 10000, 40000),  None),
    ('c5.large',         2, 1, 2, (1,),           4096, 'Up to 10 Gigabit',   3, 10, 10,  0.75, 10.0, 8, (650, 4000, 4750, 20000),   None),
    ('c5.xlarge',        4, 2, 2, (2,),           8192, 'Up to 10 Gigabit',   4, 15, 15,  1.25, 10.0, 8, (1150, 6000, 4750, 20000),  None),
    ('c5.2xlarge',       8, 4, 2, (2, 4),        16384, 'Up to 10 Gigabit',   4, 15, 15,   2.5, 10.0, 8, (2300, 10000, 4750, 20000), None),
    ('c6i.large',        2, 1, 2, (1,),           4096, 'Up to 12.5 Gigabit', 3, 10, 10, 0.781, 12.5, 2, (650, 3600, 10000, 40000),  None),
    ('c6g.medium',       1, 1, 1, None,           2048, 'Up to 10 Gigabit',   2,  4,  4,   0.5, 10.0, 8, (315, 2500, 4750, 20000),   None),
    ('c7g.medium',       1, 1, 1, None,           2048, 'Up to 12.5 Gigabit', 2,  4,  4,  0.52, 12.5, 1, (315, 2500, 10000, 40000),  None),
    ('c7g.large',        2, 2, 1, (1, 2),         4096, 'Up to 12.5 Gigabit', 3, 10, 10, 0.937, 12.5, 2, (630, 3600, 10000, 40000),  None),
    ('c7g.xlarge',       4, 4, 1, (1, 2, 3, 4),   8192, 'Up to 12.5 Gigabit', 4, 15, 15, 1.876, 12.5, 4, (1250, 6000, 10000, 40000), None),
    ('c7i-flex.large',   2, 1, 2, (1,),           4096, 'Up to 12.5 Gigabit', 3, 10, 10,  0.39, 12.5, 1, (312, 2500, 10000, 40000),  None),
    ('r5.large',         2, 1, 2, (1,),          16384, 'Up to 10 Gigabit',   3, 10, 10,  0.75, 10.0, 8, (650, 3600, 4750, 18750),   None),
    ('r5.xlarge',        4, 2, 2, (2,),          32768, 'Up to 10 Gigabit',   4, 15, 15,  1.25, 10.0, 8, (1150, 6000, 4750, 18750),  None),
    ('r6g.medium',       1, 1, 1, None,           8192, 'Up to 10 Gigabit',   2,  4,  4,   0.5, 10.0, 8, (315, 2500, 4750, 20000),   None),
)
# fmt: on

FREE_TIER_ELIGIBLE: frozenset[str] = frozenset(
    {"t3.micro", "t3.small", "t4g.micro", "t4g.small", "c7i-flex.large", "m7i-flex.large"}
)

# Per-type deviations from what the row + family traits produce; deep-merged.
_OVERRIDES: dict[str, dict] = {
    "t2.nano": {"SupportedUsageClasses": ["on-demand"],
                "ProcessorInfo": {"SustainedClockSpeedInGhz": 2.4}},
    "t2.micro": {"ProcessorInfo": {"SustainedClockSpeedInGhz": 2.5}},
    "t2.small": {"ProcessorInfo": {"SustainedClockSpeedInGhz": 2.5}},
    # 312.5 Mbps baseline, reported as an integer 312 but 39.0625 MB/s.
    "m7i-flex.large": {"EbsInfo": {"EbsOptimizedInfo": {"BaselineThroughputInMBps": 39.0625}}},
    "c7i-flex.large": {"EbsInfo": {"EbsOptimizedInfo": {"BaselineThroughputInMBps": 39.0625}}},
}
# Flexible-ENA-queue families report queue limits on the network card.
_FLEX_CARD = {"AdditionalFlexibleNetworkInterfaces": 0, "MaximumEnaQueueCount": 6,
              "MaximumEnaQueueCountPerInterface": 2}
_OVERRIDES.update(
    {name: {"NetworkInfo": {"NetworkCards": [_FLEX_CARD]}} for name in ("m6i.large", "c6i.large")}
)


def _merge(base: dict, extra: dict) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        elif (isinstance(value, list) and value and isinstance(value[0], dict)
              and isinstance(base.get(key), list)):
            for target, patch in zip(base[key], value):
                _merge(target, patch)
        else:
            base[key] = value


def _flag(value: bool) -> str:
    return "supported" if value else "unsupported"


def _build(row: tuple) -> dict:
    (name, vcpus, cores, tpc, valid_cores, mib, perf, enis, ipv4, ipv6,
     base_gbps, peak_gbps, ena_queues, ebs, store) = row
    f = _FAMILIES[name.split(".")[0]]

    arch = list(f["arch"])
    if mib <= f["i386"]:
        arch.insert(0, "i386")
    processor: dict = {"SupportedArchitectures": arch}
    if f["ghz"] is not None:
        processor["SustainedClockSpeedInGhz"] = f["ghz"]
    if f["feat"]:
        processor["SupportedFeatures"] = list(f["feat"])
    processor["Manufacturer"] = f["mfr"]

    vcpu: dict = {"DefaultVCpus": vcpus, "DefaultCores": cores, "DefaultThreadsPerCore": tpc}
    if valid_cores is not None:
        vcpu["ValidCores"] = list(valid_cores)
        vcpu["ValidThreadsPerCore"] = [1, 2] if tpc == 2 else [1]

    ebs_info: dict = {
        "EbsOptimizedSupport": f["ebs_opt"] if ebs else "unsupported",
        "EncryptionSupport": "supported",
    }
    if ebs:
        b_mbps, b_iops, m_mbps, m_iops = ebs
        ebs_info["EbsOptimizedInfo"] = {
            "BaselineBandwidthInMbps": b_mbps,
            "BaselineThroughputInMBps": b_mbps / 8,
            "BaselineIops": b_iops,
            "MaximumBandwidthInMbps": m_mbps,
            "MaximumThroughputInMBps": m_mbps / 8,
            "MaximumIops": m_iops,
        }
    ebs_info.update(NvmeSupport=f["nvme"], MaximumEbsAttachments=f["att"],
                    AttachmentLimitType=f["limit"])

    network: dict = {
        "NetworkPerformance": perf,
        "MaximumNetworkInterfaces": enis,
        "MaximumNetworkCards": 1,
        "DefaultNetworkCardIndex": 0,
        "NetworkCards": [{
            "NetworkCardIndex": 0,
            "NetworkPerformance": perf,
            "MaximumNetworkInterfaces": enis,
            "BaselineBandwidthInGbps": float(base_gbps),
            "PeakBandwidthInGbps": float(peak_gbps),
            "DefaultEnaQueueCountPerInterface": ena_queues,
        }],
        "Ipv4AddressesPerInterface": ipv4,
        "Ipv6AddressesPerInterface": ipv6,
        "Ipv6Supported": f["ipv6"],
        "EnaSupport": f["ena"],
        "EfaSupported": False,
        "EncryptionInTransitSupported": f["eit"],
        "EnaSrdSupported": False,
        "FlexibleEnaQueuesSupport": _flag(f["flex"]),
        "ConnectionTrackingConfiguration": {
            "DefaultTcpEstablishedTimeout": 432000,
            "DefaultUdpTimeout": 30,
            "DefaultUdpStreamTimeout": 180,
        },
        "SecondaryNetworkSupported": False,
    }
    if f["secif"]:
        network["Ipv4AddressesPerSecondaryInterface"] = 0

    info: dict = {
        "InstanceType": name,
        "CurrentGeneration": f["gen"],
        "FreeTierEligible": name in FREE_TIER_ELIGIBLE,
        "SupportedUsageClasses": ["on-demand", "spot"],
        "SupportedRootDeviceTypes": list(f["root"]),
        "SupportedVirtualizationTypes": list(f["virt"]),
        "BareMetal": False,
        "Hypervisor": f["hv"],
        "ProcessorInfo": processor,
        "VCpuInfo": vcpu,
        "MemoryInfo": {"SizeInMiB": mib},
        "InstanceStorageSupported": store is not None,
    }
    if store is not None:
        count, size, disk_type = store
        info["InstanceStorageInfo"] = {
            "TotalSizeInGB": count * size,
            "Disks": [{"SizeInGB": size, "Count": count, "Type": disk_type}],
            "NvmeSupport": "unsupported",
            "EncryptionSupport": "unsupported",
        }
    info.update(
        EbsInfo=ebs_info,
        NetworkInfo=network,
        PlacementGroupInfo={"SupportedStrategies": list(f["pg"])},
        HibernationSupported=f["hib"],
        BurstablePerformanceSupported=f["burst"],
        DedicatedHostsSupported=f["dh"],
        AutoRecoverySupported=f["ar"],
        SupportedBootModes=list(f["boot"]),
        NitroEnclavesSupport=_flag(bool(f["encl"]) and vcpus >= f["encl"]),
        NitroTpmSupport=_flag(f["tpm"]),
    )
    if f["tpm"]:
        info["NitroTpmInfo"] = {"SupportedVersions": ["2.0"]}
    info.update(
        PhcSupport=_flag(f["phc"]),
        RebootMigrationSupport=_flag(f["rm"]),
        SupportedInRegion=True,
    )
    if name in _OVERRIDES:
        _merge(info, _OVERRIDES[name])
    return info


INSTANCE_TYPES: dict[str, dict] = {row[0]: _build(row) for row in _ROWS}


def vcpus_and_memory(instance_type: str) -> tuple[int, int]:
    """Return ``(vCPUs, memory MiB)`` for ``instance_type``; KeyError if unknown."""
    info = INSTANCE_TYPES[instance_type]
    return info["VCpuInfo"]["DefaultVCpus"], info["MemoryInfo"]["SizeInMiB"]
