"""Instance types and where they are offered: a real catalogue (emulator/catalogue.py)."""
from __future__ import annotations

import copy

from .catalogue import INSTANCE_TYPES, REGIONS
from .errors import InvalidInstanceType
from .query import Resource, Selector, describe
from .registry import Context, action


def _get(path: str):
    """A filter getter following a dotted path of model member names through the type's dict."""
    parts = path.split(".")

    def get(info: dict):
        values = [info]
        for part in parts:
            nxt = []
            for v in values:
                v = v.get(part) if isinstance(v, dict) else None
                if isinstance(v, list):
                    nxt.extend(v)
                elif v is not None:
                    nxt.append(v)
            values = nxt
        return values
    return get


TYPE_FILTERS = {
    "instance-type": _get("InstanceType"),
    "current-generation": _get("CurrentGeneration"),
    "free-tier-eligible": _get("FreeTierEligible"),
    "bare-metal": _get("BareMetal"),
    "burstable-performance-supported": _get("BurstablePerformanceSupported"),
    "hypervisor": _get("Hypervisor"),
    "instance-storage-supported": _get("InstanceStorageSupported"),
    "memory-info.size-in-mib": _get("MemoryInfo.SizeInMiB"),
    "processor-info.supported-architecture": _get("ProcessorInfo.SupportedArchitectures"),
    "processor-info.sustained-clock-speed-in-ghz": _get("ProcessorInfo.SustainedClockSpeedInGhz"),
    "processor-info.manufacturer": _get("ProcessorInfo.Manufacturer"),
    "supported-root-device-type": _get("SupportedRootDeviceTypes"),
    "supported-usage-class": _get("SupportedUsageClasses"),
    "supported-virtualization-type": _get("SupportedVirtualizationTypes"),
    "supported-boot-mode": _get("SupportedBootModes"),
    "vcpu-info.default-vcpus": _get("VCpuInfo.DefaultVCpus"),
    "vcpu-info.default-cores": _get("VCpuInfo.DefaultCores"),
    "vcpu-info.default-threads-per-core": _get("VCpuInfo.DefaultThreadsPerCore"),
    "network-info.ena-support": _get("NetworkInfo.EnaSupport"),
    "network-info.ipv6-supported": _get("NetworkInfo.Ipv6Supported"),
    "network-info.maximum-network-interfaces": _get("NetworkInfo.MaximumNetworkInterfaces"),
    "ebs-info.ebs-optimized-support": _get("EbsInfo.EbsOptimizedSupport"),
    "ebs-info.encryption-support": _get("EbsInfo.EncryptionSupport"),
    "hibernation-supported": _get("HibernationSupported"),
}


TYPES = Resource("InstanceTypes", lambda ctx, page, tags: copy.deepcopy(page), TYPE_FILTERS,
                 (Selector("InstanceTypes", lambda t: t["InstanceType"], InvalidInstanceType),),
                 key=lambda t: t["InstanceType"], max_results=(5, 100), tagged=False)


@action("DescribeInstanceTypes")
def describe_instance_types(ctx: Context, p: dict) -> dict:
    return describe(ctx, TYPES, p, [INSTANCE_TYPES[n] for n in sorted(INSTANCE_TYPES)])


OFFERINGS = Resource("InstanceTypeOfferings",
                     lambda ctx, page, tags: [{"InstanceType": n, "LocationType": kind, "Location": loc}
                                              for n, loc, kind in page],
                     {"instance-type": lambda r: r[0], "location": lambda r: r[1]},
                     key=lambda r: f"{r[0]}\x00{r[1]}", tagged=False)


@action("DescribeInstanceTypeOfferings")
def describe_instance_type_offerings(ctx: Context, p: dict) -> dict:
    kind = p.get("LocationType") or "region"
    region = REGIONS[ctx.region]
    if kind == "region":
        locations = [ctx.region]
    elif kind == "availability-zone":
        locations = [z.name for z in region.zones]
    elif kind == "availability-zone-id":
        locations = [z.zone_id for z in region.zones]
    else:  # outposts and local zones: none here
        locations = []
    rows = sorted((name, loc, kind) for name in INSTANCE_TYPES for loc in locations)
    return describe(ctx, OFFERINGS, p, rows)
