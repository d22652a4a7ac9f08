"""SQLAlchemy tables: one per resource kind, plus tags.

Columns hold what handlers filter or join on; nested AWS structures that are only ever read back
whole (block device mappings, metadata options) are JSON. Every resource row carries the
account and region that own it: queries always scope by both.
"""
from __future__ import annotations

from datetime import datetime, timezone
from enum import StrEnum

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class Owned:
    """Mixin: scoped to an account and a region."""
    account_id: Mapped[str] = mapped_column(String(12), index=True)
    region: Mapped[str] = mapped_column(String(32), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RegionState(Base):
    """Marks an (account, region) whose defaults (default VPC, subnets, group) exist.

    account_id '' marks region-wide defaults (the public images)."""
    __tablename__ = "region_state"
    account_id: Mapped[str] = mapped_column(String(12), primary_key=True)
    region: Mapped[str] = mapped_column(String(32), primary_key=True)
    settings: Mapped[dict] = mapped_column(JSON, default=dict)  # e.g. ebs encryption by default


class Tag(Base):
    __tablename__ = "tags"
    resource_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[str] = mapped_column(String(256), default="")
    resource_type: Mapped[str] = mapped_column(String(32))
    account_id: Mapped[str] = mapped_column(String(12))
    region: Mapped[str] = mapped_column(String(32))
    __table_args__ = (Index("ix_tags_scope", "account_id", "region", "resource_type"),)


class KeyPair(Owned, Base):
    __tablename__ = "key_pairs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    key_type: Mapped[str] = mapped_column(String(16))
    fingerprint: Mapped[str] = mapped_column(String(128))
    public_key: Mapped[str] = mapped_column(Text)
    __table_args__ = (UniqueConstraint("account_id", "region", "name", name="uq_key_pairs_name"),)


class Vpc(Owned, Base):
    __tablename__ = "vpcs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    cidr_block: Mapped[str] = mapped_column(String(43))
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    state: Mapped[str] = mapped_column(String(16), default="available")
    instance_tenancy: Mapped[str] = mapped_column(String(16), default="default")
    dhcp_options_id: Mapped[str] = mapped_column(String(32), default="default")
    enable_dns_support: Mapped[bool] = mapped_column(Boolean, default=True)
    enable_dns_hostnames: Mapped[bool] = mapped_column(Boolean, default=False)


class Subnet(Owned, Base):
    __tablename__ = "subnets"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    vpc_id: Mapped[str] = mapped_column(String(32), index=True)
    cidr_block: Mapped[str] = mapped_column(String(43))
    availability_zone: Mapped[str] = mapped_column(String(32))
    default_for_az: Mapped[bool] = mapped_column(Boolean, default=False)
    map_public_ip_on_launch: Mapped[bool] = mapped_column(Boolean, default=False)
    state: Mapped[str] = mapped_column(String(16), default="available")
    # ModifySubnetAttribute's other settings (EnableDns64, PrivateDnsHostnameTypeOnLaunch, ...)
    attributes: Mapped[dict | None] = mapped_column(JSON, nullable=True)


class SecurityGroup(Owned, Base):
    __tablename__ = "security_groups"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    vpc_id: Mapped[str] = mapped_column(String(32), index=True)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(String(255))
    __table_args__ = (UniqueConstraint("vpc_id", "name", name="uq_security_groups_name"),)


class SecurityGroupRule(Owned, Base):
    __tablename__ = "security_group_rules"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    group_id: Mapped[str] = mapped_column(String(32), index=True)
    is_egress: Mapped[bool] = mapped_column(Boolean)
    ip_protocol: Mapped[str] = mapped_column(String(16))  # '-1', 'tcp', 'udp', 'icmp', or a number
    from_port: Mapped[int] = mapped_column(Integer)  # -1 when not applicable
    to_port: Mapped[int] = mapped_column(Integer)
    cidr_ipv4: Mapped[str | None] = mapped_column(String(43), nullable=True)
    cidr_ipv6: Mapped[str | None] = mapped_column(String(64), nullable=True)
    prefix_list_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    referenced_group_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    referenced_user_id: Mapped[str | None] = mapped_column(String(12), nullable=True)
    description: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # What makes two rules the same rule (protocol, ports, peer), as one string: the unique
    # constraint below makes a duplicate impossible even between two API processes (a NULL in a
    # multi-column constraint would not count as equal).
    rule_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    __table_args__ = (UniqueConstraint("group_id", "is_egress", "rule_key", name="uq_security_group_rules_key"),)


class Image(Owned, Base):
    """An AMI, or a kernel (aki-) / ramdisk (ari-) image."""
    __tablename__ = "images"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    description: Mapped[str | None] = mapped_column(String(255), nullable=True)
    image_type: Mapped[str] = mapped_column(String(16), default="machine")  # machine|kernel|ramdisk
    state: Mapped[str] = mapped_column(String(16), default="available")
    architecture: Mapped[str] = mapped_column(String(16), default="x86_64")
    public: Mapped[bool] = mapped_column(Boolean, default=False)
    owner_alias: Mapped[str | None] = mapped_column(String(32), nullable=True)
    kernel_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    ramdisk_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    root_device_type: Mapped[str] = mapped_column(String(16), default="ebs")
    root_device_name: Mapped[str | None] = mapped_column(String(32), nullable=True)
    virtualization_type: Mapped[str] = mapped_column(String(16), default="hvm")
    platform_details: Mapped[str] = mapped_column(String(64), default="Linux/UNIX")
    image_location: Mapped[str | None] = mapped_column(String(255), nullable=True)
    block_device_mappings: Mapped[list] = mapped_column(JSON, default=list)
    launch_permissions: Mapped[list] = mapped_column(JSON, default=list)  # [{"UserId"|"Group": ...}]
    attributes: Mapped[dict] = mapped_column(JSON, default=dict)  # ena, sriov, boot mode, imds...
    disk_path: Mapped[str | None] = mapped_column(Text, nullable=True)  # host file behind it


class InstanceState(StrEnum):
    """AWS's instance states (the column holds the value; a StrEnum compares equal to it)."""
    PENDING = "pending"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    SHUTTING_DOWN = "shutting-down"
    TERMINATED = "terminated"


class Instance(Owned, Base):
    __tablename__ = "instances"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    reservation_id: Mapped[str] = mapped_column(String(32), index=True)
    launch_index: Mapped[int] = mapped_column(Integer, default=0)
    image_id: Mapped[str] = mapped_column(String(32))
    instance_type: Mapped[str] = mapped_column(String(32))
    kernel_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    ramdisk_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    state_transition_reason: Mapped[str] = mapped_column(String(255), default="")
    state_reason_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    state_reason_message: Mapped[str | None] = mapped_column(String(255), nullable=True)
    key_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    vpc_id: Mapped[str] = mapped_column(String(32))
    subnet_id: Mapped[str] = mapped_column(String(32))
    availability_zone: Mapped[str] = mapped_column(String(32))
    private_ip: Mapped[str | None] = mapped_column(String(15), nullable=True)
    public_ip: Mapped[str | None] = mapped_column(String(15), nullable=True, unique=True)
    mac_address: Mapped[str] = mapped_column(String(17))
    network_interface_id: Mapped[str] = mapped_column(String(32))
    security_group_ids: Mapped[list] = mapped_column(JSON, default=list)
    launch_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    terminated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    client_token: Mapped[str | None] = mapped_column(String(64), nullable=True)
    request_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    user_data: Mapped[str | None] = mapped_column(Text, nullable=True)  # base64, as sent
    architecture: Mapped[str] = mapped_column(String(16), default="x86_64")
    root_device_name: Mapped[str] = mapped_column(String(32), default="/dev/xvda")
    root_device_type: Mapped[str] = mapped_column(String(16), default="ebs")
    block_device_mappings: Mapped[list] = mapped_column(JSON, default=list)
    monitoring: Mapped[str] = mapped_column(String(16), default="disabled")
    metadata_options: Mapped[dict] = mapped_column(JSON, default=dict)
    attributes: Mapped[dict] = mapped_column(JSON, default=dict)  # disableApiTermination, ...
    # Burstable types' CPU credit option ('standard' | 'unlimited'), set at launch; None: never
    # burstable (a later resize to a burstable type gets that type's default).
    cpu_credits: Mapped[str | None] = mapped_column(String(16), nullable=True)
    # Its placement group (pg-...) and, in a partition group, its partition (1-7).
    placement_group_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    partition_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # A Spot Instance's request (sir-...); None: on-demand.
    spot_request_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    __table_args__ = (
        UniqueConstraint("subnet_id", "private_ip", name="uq_instances_private_ip"),
        # One launch per ClientToken, even between API processes (NULL tokens are all distinct).
        UniqueConstraint("account_id", "region", "client_token", "launch_index", name="uq_instances_client_token"),
        Index("ix_instances_client_token", "account_id", "region", "client_token"),
    )


class Volume(Owned, Base):
    """An EBS volume: a disk in one availability zone (its host's). State creating -> available
    <-> in-use -> deleting (then the row goes); 'error' when the host could not make it.
    `wrapped_key` is the data key of an encrypted volume, wrapped by the emulator's master key
    (ebs_encryption.py): the plain key is never stored, logged or put in a host task."""
    __tablename__ = "volumes"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    availability_zone: Mapped[str] = mapped_column(String(32))
    size: Mapped[int] = mapped_column(Integer)  # GiB
    volume_type: Mapped[str] = mapped_column(String(16))
    iops: Mapped[int | None] = mapped_column(Integer, nullable=True)
    throughput: Mapped[int | None] = mapped_column(Integer, nullable=True)
    multi_attach: Mapped[bool] = mapped_column(Boolean, default=False)
    encrypted: Mapped[bool] = mapped_column(Boolean, default=False)
    kms_key_id: Mapped[str | None] = mapped_column(String(255), nullable=True)  # the key's ARN
    wrapped_key: Mapped[str | None] = mapped_column(Text, nullable=True)
    snapshot_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    state: Mapped[str] = mapped_column(String(16), default="creating")
    attributes: Mapped[dict] = mapped_column(JSON, default=dict)  # AutoEnableIO, ProductCodes
    # The latest ModifyVolume (AWS's VolumeModification fields), None when never modified.
    modification: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    client_token: Mapped[str | None] = mapped_column(String(64), nullable=True)
    __table_args__ = (UniqueConstraint("account_id", "region", "client_token", name="uq_volumes_client_token"),)


class VolumeAttachment(Base):
    """A volume attached (or attaching, detaching) to an instance; the row goes once detached.
    The unique constraints are AWS's rules as invariants: a device name once per instance, a
    volume once per instance. `listed`: the instance has been started since it was attached, so
    the metadata service lists it (AWS lists only volumes present at launch or last start)."""
    __tablename__ = "volume_attachments"
    volume_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    instance_id: Mapped[str] = mapped_column(String(32), primary_key=True, index=True)
    device: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default="attaching")
    attach_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    delete_on_termination: Mapped[bool] = mapped_column(Boolean, default=False)
    listed: Mapped[bool] = mapped_column(Boolean, default=False)
    account_id: Mapped[str] = mapped_column(String(12))
    region: Mapped[str] = mapped_column(String(32))
    __table_args__ = (UniqueConstraint("instance_id", "device", name="uq_volume_attachments_device"),
                      Index("ix_volume_attachments_scope", "account_id", "region"))


class Snapshot(Owned, Base):
    """An EBS snapshot: pending -> completed (or error), driven by its host task. `stored_bytes`
    is what the host stores for it (incremental); `create_volume_permissions` lists
    {"UserId": ...} / {"Group": "all"}. `zone` is where its data lives (its volume's zone): the
    host lane that works on it."""
    __tablename__ = "snapshots"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    volume_id: Mapped[str] = mapped_column(String(32), index=True)
    volume_size: Mapped[int] = mapped_column(Integer)
    zone: Mapped[str | None] = mapped_column(String(32), nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    state_message: Mapped[str | None] = mapped_column(String(255), nullable=True)
    progress: Mapped[str] = mapped_column(String(8), default="0%")
    description: Mapped[str] = mapped_column(String(255), default="")
    encrypted: Mapped[bool] = mapped_column(Boolean, default=False)
    kms_key_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    wrapped_key: Mapped[str | None] = mapped_column(Text, nullable=True)
    stored_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # CopySnapshot: the source, read by the copy's host task (it may be in another region).
    source_snapshot_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # A snapshot whose data is a host file rather than a frozen disk layer: the public images'
    # root snapshots are their image files (volumes are cloned from the file, never written).
    disk_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    create_volume_permissions: Mapped[list] = mapped_column(JSON, default=list)


class ImportImageTask(Owned, Base):
    """An ImportImage task (import-ami-): a disk fetched, converted to qcow2 and registered as an
    AMI in the background. Status active -> completed (image_id set) or deleting -> deleted."""
    __tablename__ = "import_image_tasks"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default="active")  # active|deleting|deleted|completed
    status_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    progress: Mapped[str | None] = mapped_column(String(8), nullable=True)
    image_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    description: Mapped[str | None] = mapped_column(String(255), nullable=True)
    platform: Mapped[str | None] = mapped_column(String(16), nullable=True)
    architecture: Mapped[str | None] = mapped_column(String(16), nullable=True)
    license_type: Mapped[str | None] = mapped_column(String(32), nullable=True)
    boot_mode: Mapped[str | None] = mapped_column(String(16), nullable=True)
    usage_operation: Mapped[str | None] = mapped_column(String(64), nullable=True)
    client_token: Mapped[str | None] = mapped_column(String(64), nullable=True)
    source: Mapped[str] = mapped_column(Text)  # path, file:// or http(s):// URL of the disk
    disk: Mapped[dict] = mapped_column(JSON, default=dict)  # Format, DiskImageSize, Description...
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)  # heartbeat
    __table_args__ = (Index("ix_import_image_tasks_client_token", "account_id", "region", "client_token"),)


class HostTaskState(StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


class HostTask(Base):
    """A host action the database has promised (boot, stop, tear down, ...), written in the same
    transaction as the change that asks for it and consumed in id order by the host worker, which
    marks it done. Unfinished rows after a crash are run again at start-up (host actions are
    idempotent), so a crash between commit and action loses nothing.

    `zone` names the availability zone whose host must act: one host agent per zone may later
    consume only its own zone's tasks (DESIGN.md, scale beyond one machine)."""
    __tablename__ = "host_tasks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32))
    resource_id: Mapped[str] = mapped_column(String(64), index=True)
    zone: Mapped[str | None] = mapped_column(String(32), nullable=True)
    args: Mapped[dict] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(16), default=HostTaskState.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    __table_args__ = (Index("ix_host_tasks_state", "state", "id"),)


# ------------------------------------------------------------------- VPC routing and options

class InternetGateway(Owned, Base):
    """An internet gateway; `vpc_id` is the one VPC it is attached to (None: detached)."""
    __tablename__ = "internet_gateways"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    vpc_id: Mapped[str | None] = mapped_column(String(32), nullable=True, unique=True)


class RouteTable(Owned, Base):
    """A route table of a VPC; which one is the VPC's main table is its main association."""
    __tablename__ = "route_tables"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    vpc_id: Mapped[str] = mapped_column(String(32), index=True)


class Route(Base):
    """One route: a destination in a table, and its target (exactly one of the target columns;
    all None for the local route). `origin` is AWS's: CreateRouteTable (the local route and the
    default VPC's own), CreateRoute."""
    __tablename__ = "routes"
    route_table_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    destination: Mapped[str] = mapped_column(String(64), primary_key=True)
    gateway_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    nat_gateway_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    instance_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    network_interface_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    origin: Mapped[str] = mapped_column(String(32), default="CreateRoute")
    account_id: Mapped[str] = mapped_column(String(12))
    region: Mapped[str] = mapped_column(String(32))


class RouteTableAssociation(Base):
    """A subnet's explicit association with a table, or (main=True, subnet None) the VPC's main
    association. A subnet has at most one (the unique constraint); a VPC one main."""
    __tablename__ = "route_table_associations"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    route_table_id: Mapped[str] = mapped_column(String(32), index=True)
    vpc_id: Mapped[str] = mapped_column(String(32), index=True)
    subnet_id: Mapped[str | None] = mapped_column(String(32), nullable=True, unique=True)
    main: Mapped[bool] = mapped_column(Boolean, default=False)
    main_of: Mapped[str | None] = mapped_column(String(32), nullable=True, unique=True)  # vpc id when main
    account_id: Mapped[str] = mapped_column(String(12))
    region: Mapped[str] = mapped_column(String(32))


class DhcpOptions(Owned, Base):
    """A DHCP option set: [{"Key": "domain-name", "Values": [...]}, ...] as AWS lists them.
    `is_default`: the set AWS makes for an account in a region (new VPCs get it)."""
    __tablename__ = "dhcp_options"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    configurations: Mapped[list] = mapped_column(JSON, default=list)
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)


class NetworkAcl(Owned, Base):
    """A network ACL of a VPC. Entries as AWS lists them (NetworkAclEntry shapes)."""
    __tablename__ = "network_acls"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    vpc_id: Mapped[str] = mapped_column(String(32), index=True)
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    entries: Mapped[list] = mapped_column(JSON, default=list)


class NetworkAclAssociation(Base):
    """A subnet's association with an ACL that ReplaceNetworkAclAssociation made. A subnet
    without one uses its VPC's default ACL under an association id derived from its own
    (network_acls.implicit_association_id): AWS gives every subnet an association at once, and
    this keeps CreateSubnet's paths unaware of ACLs. One per subnet (the unique constraint)."""
    __tablename__ = "network_acl_associations"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    network_acl_id: Mapped[str] = mapped_column(String(32), index=True)
    vpc_id: Mapped[str] = mapped_column(String(32), index=True)
    subnet_id: Mapped[str] = mapped_column(String(32), unique=True)
    account_id: Mapped[str] = mapped_column(String(12))
    region: Mapped[str] = mapped_column(String(32))


class NetworkInterface(Owned, Base):
    """An elastic network interface (eni-). Every instance's primary interface is one (device
    index 0, made at launch, deleted with it); others are made by CreateNetworkInterface and
    attached at index >= 1. The primary's MAC, address and groups are also the instance row's
    columns (the hot paths read those); the two are changed together (network_interfaces.py).

    `secondary_ips`: secondary private addresses (AWS's PrivateIpAddresses with Primary false).
    Attachment: `instance_id` set while attaching/attached/detaching (`attachment_state`);
    `status` AWS's: available | in-use (| attaching | detaching while the host works)."""
    __tablename__ = "network_interfaces"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    vpc_id: Mapped[str] = mapped_column(String(32), index=True)
    subnet_id: Mapped[str] = mapped_column(String(32), index=True)
    availability_zone: Mapped[str] = mapped_column(String(32))
    mac_address: Mapped[str] = mapped_column(String(17))
    private_ip: Mapped[str] = mapped_column(String(15))
    secondary_ips: Mapped[list] = mapped_column(JSON, default=list)
    security_group_ids: Mapped[list] = mapped_column(JSON, default=list)
    description: Mapped[str] = mapped_column(String(255), default="")
    source_dest_check: Mapped[bool] = mapped_column(Boolean, default=True)
    interface_type: Mapped[str] = mapped_column(String(32), default="interface")
    status: Mapped[str] = mapped_column(String(16), default="available")
    instance_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    device_index: Mapped[int | None] = mapped_column(Integer, nullable=True)
    attachment_id: Mapped[str | None] = mapped_column(String(32), nullable=True, unique=True)
    attachment_state: Mapped[str | None] = mapped_column(String(16), nullable=True)
    attach_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    delete_on_termination: Mapped[bool] = mapped_column(Boolean, default=False)
    __table_args__ = (
        UniqueConstraint("subnet_id", "private_ip", name="uq_network_interfaces_private_ip"),
        # AWS's rule as an invariant: one interface per device index of an instance.
        UniqueConstraint("instance_id", "device_index", name="uq_network_interfaces_device_index"),
    )


# ------------------------------------------------------------------ Elastic IPs and NAT gateways

class Address(Owned, Base):
    """An Elastic IP (domain vpc), from the configured public pool. Associated with at most one
    thing: an instance's primary address (`instance_id`, `network_interface_id`, `private_ip`),
    any other address of an interface (`network_interface_id`, `private_ip`; `instance_id` unset
    whether or not the interface is attached), or a NAT gateway (`nat_gateway_id`, its interface
    and private address); `association_id` is set while associated. For an instance's primary
    address, the instance's `public_ip` column holds the address meanwhile (what
    DescribeInstances, the metadata service and the host's 1:1 NAT read)."""
    __tablename__ = "addresses"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)   # eipalloc-...
    public_ip: Mapped[str] = mapped_column(String(15), unique=True)
    association_id: Mapped[str | None] = mapped_column(String(32), nullable=True, unique=True)
    instance_id: Mapped[str | None] = mapped_column(String(32), nullable=True, unique=True)
    network_interface_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    private_ip: Mapped[str | None] = mapped_column(String(15), nullable=True)
    nat_gateway_id: Mapped[str | None] = mapped_column(String(32), nullable=True)


class NatGateway(Owned, Base):
    """A NAT gateway in a subnet: pending -> available, deleting -> deleted (failed when it
    could not be made). A public one holds an Elastic IP (`allocation_id`, `public_ip`); its own
    interface and private address come from its subnet, as on AWS."""
    __tablename__ = "nat_gateways"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    vpc_id: Mapped[str] = mapped_column(String(32), index=True)
    subnet_id: Mapped[str] = mapped_column(String(32), index=True)
    connectivity_type: Mapped[str] = mapped_column(String(16), default="public")
    state: Mapped[str] = mapped_column(String(16), default="pending")
    allocation_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    public_ip: Mapped[str | None] = mapped_column(String(15), nullable=True)
    private_ip: Mapped[str | None] = mapped_column(String(15), nullable=True)
    network_interface_id: Mapped[str] = mapped_column(String(32))
    failure_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    failure_message: Mapped[str | None] = mapped_column(String(255), nullable=True)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    client_token: Mapped[str | None] = mapped_column(String(64), nullable=True)


class LaunchTemplate(Owned, Base):
    """A launch template: a name and numbered versions (LaunchTemplateVersion), one of them the
    default; `latest_version` is the highest that exists."""
    __tablename__ = "launch_templates"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # lt-...
    name: Mapped[str] = mapped_column(String(128))
    default_version: Mapped[int] = mapped_column(Integer, default=1)
    latest_version: Mapped[int] = mapped_column(Integer, default=1)
    client_token: Mapped[str | None] = mapped_column(String(64), nullable=True)
    __table_args__ = (UniqueConstraint("account_id", "region", "name", name="uq_launch_templates_name"),)


class LaunchTemplateVersion(Base):
    """One version of a launch template: its data as the request gave it (the
    RequestLaunchTemplateData shape, which is also the response's)."""
    __tablename__ = "launch_template_versions"
    template_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    description: Mapped[str | None] = mapped_column(String(255), nullable=True)
    data: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PlacementGroup(Owned, Base):
    """A placement group: cluster (one zone), spread (at most 7 running instances per zone) or
    partition (1-7 partitions). Names are unique per account and region."""
    __tablename__ = "placement_groups"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # pg-...
    name: Mapped[str] = mapped_column(String(255))
    strategy: Mapped[str] = mapped_column(String(16))
    partition_count: Mapped[int | None] = mapped_column(Integer, nullable=True)
    spread_level: Mapped[str | None] = mapped_column(String(16), nullable=True)
    __table_args__ = (UniqueConstraint("account_id", "region", "name", name="uq_placement_groups_name"),)


class IamInstanceProfileAssociation(Owned, Base):
    """An instance profile associated with an instance: associated -> disassociated (by
    Disassociate, Replace or the instance's termination). At most one associated per instance.
    There is no IAM here: the profile is its ARN, and its role has the profile's name."""
    __tablename__ = "iam_instance_profile_associations"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # iip-assoc-...
    instance_id: Mapped[str] = mapped_column(String(32), index=True)
    arn: Mapped[str] = mapped_column(String(2048))
    state: Mapped[str] = mapped_column(String(16), default="associated")


class SpotInstanceRequest(Owned, Base):
    """A Spot Instance request: one instance at a time. States as AWS's (open -> active ->
    closed | cancelled | disabled, failed), with its status code and message. `interruption`: a
    notice given ({"action": terminate|stop|hibernate, "time": ISO, "rebalance": ISO}), carried
    out at its time (spot.py), then cleared."""
    __tablename__ = "spot_instance_requests"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # sir-...
    spot_price: Mapped[str] = mapped_column(String(32))  # the maximum price, as AWS shows it
    request_type: Mapped[str] = mapped_column(String(16), default="one-time")
    state: Mapped[str] = mapped_column(String(16), default="open", index=True)
    status_code: Mapped[str] = mapped_column(String(64), default="pending-evaluation")
    status_message: Mapped[str] = mapped_column(String(255), default="")
    status_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    instance_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    launch_spec: Mapped[dict] = mapped_column(JSON, default=dict)  # RunInstances' parameters
    interruption_behavior: Mapped[str] = mapped_column(String(16), default="terminate")
    launched_zone: Mapped[str | None] = mapped_column(String(32), nullable=True)
    valid_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    interruption: Mapped[dict | None] = mapped_column(JSON, nullable=True)
