"""Placement groups: CreatePlacementGroup, DescribePlacementGroups, DeletePlacementGroup, and
`place`, what RunInstances asks of a group (AWS's rules; the host has one machine, so a group
changes where nothing runs, only what AWS would refuse and what DescribeInstances says).

The rules: a cluster group lives in one availability zone (the first instance's) and takes only
types that support it; a spread group holds at most 7 running instances per zone; a partition
group has 1-7 partitions, an instance goes to the one it asks for or the emptiest.
"""
from __future__ import annotations

from sqlalchemy import func, select

from .catalogue import INSTANCE_TYPES
from .errors import (InsufficientInstanceCapacity, InvalidParameterCombination, InvalidParameterValue,
                     InvalidPlacementGroupDuplicate, InvalidPlacementGroupIdMalformed,
                     InvalidPlacementGroupIdNotFound, InvalidPlacementGroupInUse, InvalidPlacementGroupUnknown)
from .ids import new_id, well_formed
from .models import Instance, PlacementGroup
from .query import Resource, Selector, describe
from .registry import Context, action
from .tags import delete_all_tags, refuse_other_tag_types, set_tags, tag_dict, tag_list, tag_specifications

SPREAD_PER_ZONE = 7
MAX_PARTITIONS = 7
LIVE = ("pending", "running", "stopping")  # what counts as running in a group (not what is ending)


def _check_id(group_id: str) -> None:
    if not well_formed(group_id, "pg"):
        raise InvalidPlacementGroupIdMalformed(group_id)


def _arn(row: PlacementGroup) -> str:
    return f"arn:aws:ec2:{row.region}:{row.account_id}:placement-group/{row.name}"


def _out(row: PlacementGroup, tags: dict | None) -> dict:
    return {"GroupName": row.name, "GroupId": row.id, "GroupArn": _arn(row), "State": "available",
            "Strategy": row.strategy, "PartitionCount": row.partition_count, "SpreadLevel": row.spread_level,
            "Tags": tag_list(tags or {})}


def _by_name(ctx: Context, name: str) -> PlacementGroup | None:
    return ctx.session.scalars(select(PlacementGroup).where(
        PlacementGroup.account_id == ctx.account_id, PlacementGroup.region == ctx.region,
        PlacementGroup.name == name)).first()


def get_group(ctx: Context, name: str | None = None, group_id: str | None = None) -> PlacementGroup:
    if group_id:
        _check_id(group_id)
        row = ctx.session.get(PlacementGroup, group_id)
        if row is None or row.account_id != ctx.account_id or row.region != ctx.region:
            raise InvalidPlacementGroupIdNotFound(group_id)
        if name and name != row.name:
            raise InvalidParameterCombination("The placement group name and ID name different groups.")
        return row
    row = _by_name(ctx, name or "")
    if row is None:
        raise InvalidPlacementGroupUnknown(name)
    return row


def _locked(ctx: Context, row: PlacementGroup) -> PlacementGroup:
    """The group's row, locked (and re-read): launches into it and its deletion go one at a time."""
    locked = ctx.session.get(PlacementGroup, row.id, with_for_update=True, populate_existing=True)
    if locked is None:  # deleted meanwhile
        raise InvalidPlacementGroupUnknown(row.name)
    return locked


@action("CreatePlacementGroup")
def create_placement_group(ctx: Context, p: dict) -> dict:
    name = p.get("GroupName")
    if not name:
        raise InvalidParameterValue("The placement group name must be provided.")  # (optional in the model)
    if len(name) > 255 or not name.isascii():
        raise InvalidParameterValue.invalid(name, "GroupName", "Up to 255 ASCII characters.")
    strategy = p.get("Strategy") or "cluster"
    count = p.get("PartitionCount")
    if strategy == "partition":
        count = 2 if count is None else count
        if not 1 <= count <= MAX_PARTITIONS:
            raise InvalidParameterValue(f"Invalid value '{count}' for PartitionCount. It must be between 1 and "
                                        f"{MAX_PARTITIONS}.")
    elif count is not None:
        raise InvalidParameterCombination("PartitionCount may only be given for a partition placement group.")
    level = p.get("SpreadLevel")
    if level and strategy != "spread":
        raise InvalidParameterCombination("SpreadLevel may only be given for a spread placement group.")
    if level == "host":
        raise InvalidParameterValue("The host spread level may be used only with placement groups on an Outpost.")
    refuse_other_tag_types(p.get("TagSpecifications"), {"placement-group"})
    tags = tag_specifications(p.get("TagSpecifications"), "placement-group")
    if _by_name(ctx, name) is not None:
        raise InvalidPlacementGroupDuplicate(name)
    row = PlacementGroup(id=new_id("pg"), account_id=ctx.account_id, region=ctx.region, name=name,
                         strategy=strategy, partition_count=count,
                         spread_level=(level or "rack") if strategy == "spread" else None)
    ctx.session.add(row)
    ctx.session.flush()
    set_tags(ctx, row.id, tags)
    return {"PlacementGroup": _out(row, tag_dict(tags))}


def _members(ctx: Context, row: PlacementGroup, zone: str | None = None):
    q = select(Instance.availability_zone, Instance.partition_number).where(
        Instance.placement_group_id == row.id, Instance.state.in_(LIVE))
    if zone is not None:
        q = q.where(Instance.availability_zone == zone)
    return ctx.session.execute(q).all()


@action("DeletePlacementGroup")
def delete_placement_group(ctx: Context, p: dict) -> dict:
    row = _locked(ctx, get_group(ctx, p["GroupName"]))  # a launch into it waits, or is waited for
    if ctx.session.scalar(select(func.count()).select_from(Instance).where(
            Instance.placement_group_id == row.id, Instance.state != "terminated")):
        raise InvalidPlacementGroupInUse.not_empty(row.name)
    delete_all_tags(ctx, row.id)
    ctx.session.delete(row)
    return {}


class _UnknownNames(InvalidPlacementGroupUnknown):
    def __init__(self, *names: str):
        super().__init__(names[0])


PLACEMENT_GROUPS = Resource("PlacementGroups", lambda ctx, page, tags: [_out(r, tags[r.id]) for r in page], {
    "group-name": lambda r: r.name,
    "group-arn": lambda r: _arn(r),
    "state": lambda r: "available",
    "strategy": lambda r: r.strategy,
    "spread-level": lambda r: r.spread_level,
}, (Selector("GroupNames", lambda r: r.name, _UnknownNames),
    Selector("GroupIds", lambda r: r.id, InvalidPlacementGroupIdNotFound, _check_id)), max_results=None)


@action("DescribePlacementGroups")
def describe_placement_groups(ctx: Context, p: dict) -> dict:
    rows = ctx.session.scalars(select(PlacementGroup).where(
        PlacementGroup.account_id == ctx.account_id, PlacementGroup.region == ctx.region)
        .order_by(PlacementGroup.id)).all()
    return describe(ctx, PLACEMENT_GROUPS, p, rows)


# ------------------------------------------------------------------------------- launching

def place(ctx: Context, placement: dict, instance_type: str, zone: str, count: int) -> tuple[str | None, list]:
    """RunInstances' Placement.GroupName/GroupId for `count` instances in `zone` -> (the group's
    id, each instance's partition number or None), or AWS's refusal. The group's row is locked:
    two launches into one group are counted one after the other."""
    name, group_id = placement.get("GroupName"), placement.get("GroupId")
    wanted_partition = placement.get("PartitionNumber")
    if not (name or group_id):
        if wanted_partition is not None:
            raise InvalidParameterCombination("PartitionNumber requires a partition placement group.")
        return None, [None] * count
    row = _locked(ctx, get_group(ctx, name, group_id))
    supported = INSTANCE_TYPES[instance_type].get("PlacementGroupInfo", {}).get("SupportedStrategies", [])
    if row.strategy not in supported:
        raise InvalidParameterCombination(f"The instance type '{instance_type}' does not support the "
                                          f"'{row.strategy}' placement strategy.")
    if wanted_partition is not None and row.strategy != "partition":
        raise InvalidParameterCombination("PartitionNumber requires a partition placement group.")
    if row.strategy == "cluster":
        zones = {z for z, _ in _members(ctx, row)}
        if zones and zone not in zones:
            raise InvalidPlacementGroupInUse.other_zone(row.name, sorted(zones)[0])
        return row.id, [None] * count
    if row.strategy == "spread":
        if len(_members(ctx, row, zone)) + count > SPREAD_PER_ZONE:
            raise InsufficientInstanceCapacity(
                f"A spread placement group holds at most {SPREAD_PER_ZONE} running instances per Availability "
                f"Zone: '{row.name}' cannot take {count} more in {zone}.")
        return row.id, [None] * count
    # partition: the one asked for, else each instance to the emptiest (lowest number first)
    if wanted_partition is not None:
        if not 1 <= wanted_partition <= row.partition_count:
            raise InvalidParameterValue(f"Invalid value '{wanted_partition}' for PartitionNumber. The placement "
                                        f"group '{row.name}' has {row.partition_count} partitions.")
        return row.id, [wanted_partition] * count
    load = {n: 0 for n in range(1, row.partition_count + 1)}
    for _z, n in _members(ctx, row):
        if n in load:
            load[n] += 1
    chosen = []
    for _ in range(count):
        n = min(load, key=lambda k: (load[k], k))
        load[n] += 1
        chosen.append(n)
    return row.id, chosen


def names(ctx: Context, group_ids) -> dict[str, str]:
    """group id -> name, one query (none when no instance is in a group)."""
    group_ids = [g for g in group_ids if g]
    if not group_ids:
        return {}
    return dict(ctx.session.execute(select(PlacementGroup.id, PlacementGroup.name).where(
        PlacementGroup.id.in_(group_ids))).all())
