"""Configuration: built-in defaults < TOML file < EC2EMU_* environment < command-line flags.

One frozen object is built at start and handed down; nothing else reads the environment.
"""
from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

# AWS's documentation example credentials: what a CI user types without thinking.
DEFAULT_ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
DEFAULT_SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
DEFAULT_ACCOUNT = "123456789012"


@dataclass(frozen=True)
class Credential:
    access_key: str
    secret_key: str
    account_id: str


@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 8773
    state_dir: str = "/var/lib/ec2emu"
    database_url: str = ""  # empty: SQLite file in state_dir
    hypervisor: str = "auto"  # 'libvirt', 'none', or 'auto': libvirt where its daemon answers
    default_region: str = "us-east-1"
    credentials: tuple[Credential, ...] = field(
        default_factory=lambda: (Credential(DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY, DEFAULT_ACCOUNT),))
    auth: bool = True  # False accepts any signature (throwaway CI only)
    # Seconds the `none` driver takes to "boot"/"stop": it reports transitions asynchronously,
    # as a real hypervisor does, so clients observe pending before running.
    none_transition_seconds: float = 0.2
    none_fail_starts: int = 0  # tests only: the `none` driver's first N starts fail (a host hiccup)
    # How long terminated instances stay visible (AWS: about an hour).
    terminated_retention_seconds: int = 3600
    max_instances: int = 5000
    # AWS's default VPC quotas (an increase is a config change here, a support ticket there)
    vpcs_per_region: int = 5                 # the default VPC included
    internet_gateways_per_region: int = 5
    subnets_per_vpc: int = 200
    security_groups_per_vpc: int = 2500
    # Where the default images' files are (and, under registered/, copies of registered images);
    # empty: the default images from the shared cache `ec2emu images build` fills
    # ($EC2EMU_IMAGE_CACHE, else /var/cache/ec2emu/images), registered copies in <state_dir>/images.
    image_dir: str = ""
    # The master key that wraps every encrypted EBS volume's data key (base64 of 32 bytes). Empty:
    # a key made once in <state_dir>/ebs-master.key (0600). Processes sharing one database (several
    # API processes, one host agent per zone) must share it: set it here then.
    ebs_master_key: str = ""
    # How long an instance role's credentials live (AWS: 6 hours); new ones every sixth of it.
    role_credentials_seconds: int = 6 * 3600
    # libvirt driver
    libvirt_uri: str = "qemu:///system"
    domain_type: str = "auto"  # 'kvm', 'qemu' (TCG), or 'auto': try KVM once, fall back to TCG
    memory_scale: float = 0.125  # guest RAM = instance type's RAM x this (a t2.micro gets 128 MiB)
    min_memory_mib: int = 128
    max_vcpus: int = 2
    tcg_tb_cache_mib: int = 32  # TCG translation cache: QEMU's default (1 GiB) balloons RSS
    stop_timeout_seconds: int = 60  # ACPI shutdown, then forced off
    # Start guests by restoring a booted checkpoint where their ramdisk supports it
    # (hypervisor/checkpoints.py); false: every start is a cold boot.
    checkpoints: bool = True
    checkpoint_dir: str = ""  # empty: <state_dir>/checkpoints (state dirs may share one)
    # ModifyVolume: AWS's wait between the starts of two modifications of one volume (6 hours;
    # VolumeModificationRateExceeded). Shorter only to exercise chains of changes quickly.
    volume_modification_cooldown_seconds: int = 6 * 3600
    # This process runs the host's side: the host workers, the reconciler, the watchdog, the
    # metadata listeners. Exactly one process per host does; more API processes on the same
    # database set it false and only answer requests (README: several API processes).
    host_agent: bool = True
    network_prefix: str = "ec2emu"  # names of our namespaces; one emulator per prefix per host
    # Public addresses handed to instances in subnets that map public IPs ("the internet" side).
    public_ip_pool: str = "100.64.0.0/16"
    # Tests only: a named point where the process exits at once (crash-recovery tests), e.g.
    # 'after-commit:StopInstances' (the change is durable, its host task not yet run) or
    # 'terminate:after-undefine' (in the middle of host work; see hypervisor.host.crash_point).
    # Empty in any real use.
    crash_at: str = ""
    # AWS's request throttling (token buckets per account, region and API; RequestLimitExceeded):
    # off by default, on to test a client's retries.
    throttle: bool = False

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{Path(self.state_dir) / 'ec2emu.sqlite'}"

    @property
    def effective_image_dir(self) -> str:
        """Where copies of registered images go (under registered/): per state directory."""
        return self.image_dir or str(Path(self.state_dir) / "images")

    @property
    def public_image_dir(self) -> str:
        """Where the default (public) images' files are: shared by every state directory, so
        `ec2emu images build` once serves any `ec2emu serve --state-dir DIR`."""
        if self.image_dir:
            return self.image_dir
        from hypervisor.imagebuild import default_images_dir
        return default_images_dir()

    def account_for(self, access_key: str) -> Credential | None:
        for c in self.credentials:
            if c.access_key == access_key:
                return c
        return None


_FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def _coerce(name: str, value):
    kind = _FIELDS[name].type
    if name == "credentials":
        if isinstance(value, str):  # env: "KEY:SECRET:ACCOUNT,KEY:SECRET:ACCOUNT"
            value = [dict(zip(("access_key", "secret_key", "account_id"), item.split(":", 2)))
                     for item in value.split(",") if item]
        return tuple(Credential(**c) for c in value)
    if kind == "bool" and isinstance(value, str):
        return value.lower() in ("1", "true", "yes", "on")
    if kind == "int":
        return int(value)
    if kind == "float":
        return float(value)
    return value


def load_config(config_file: str | None = None, overrides: dict | None = None) -> Config:
    values: dict = {}
    path = config_file or os.environ.get("EC2EMU_CONFIG")
    if path:
        with open(path, "rb") as f:
            for k, v in tomllib.load(f).items():
                k = k.replace("-", "_")
                if k not in _FIELDS:
                    raise SystemExit(f"unknown setting {k!r} in {path}")
                values[k] = _coerce(k, v)
    for k in _FIELDS:
        env = os.environ.get("EC2EMU_" + k.upper())
        if env is not None:
            values[k] = _coerce(k, env)
    for k, v in (overrides or {}).items():
        if v is not None:
            values[k] = _coerce(k, v)
    return Config(**values)
