"""AWS's DNS names for instances, computed here only (the host's resolver is handed them)."""
from __future__ import annotations


def private_dns_domain(region: str) -> str:
    # AWS: us-east-1 keeps its historic ec2.internal domain; every other region <region>.compute.internal.
    return "ec2.internal" if region == "us-east-1" else f"{region}.compute.internal"


def public_dns_domain(region: str) -> str:
    return "compute-1.amazonaws.com" if region == "us-east-1" else f"{region}.compute.amazonaws.com"


def private_dns_name(region: str, ip: str | None) -> str:
    return f"ip-{ip.replace('.', '-')}.{private_dns_domain(region)}" if ip else ""


def public_dns_name(region: str, ip: str | None) -> str:
    return f"ec2-{ip.replace('.', '-')}.{public_dns_domain(region)}" if ip else ""
