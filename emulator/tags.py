"""Tags on every resource: CreateTags, DeleteTags, DescribeTags, and TagSpecifications on create."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import bindparam, delete, func, select

from .errors import (InvalidAMIIDNotFound, InvalidConversionTaskId, InvalidGroupNotFound, InvalidID,
                     InvalidInstanceIDNotFound, InvalidKeyPairNotFound, InvalidParameterValue,
                     InvalidSecurityGroupRuleIdNotFound, InvalidSnapshotNotFound, InvalidSubnetIDNotFound,
                     InvalidVolumeNotFound, InvalidVpcIDNotFound,
                     MissingParameter, NotFound, TagLimitExceeded)
from .errors import (InvalidAllocationIDNotFound, InvalidDhcpOptionIDNotFound, InvalidInternetGatewayIDNotFound,
                     InvalidNatGatewayIDNotFound, InvalidNetworkAclIDNotFound, InvalidNetworkInterfaceIDNotFound,
                     InvalidRouteTableIDNotFound)
from .errors import InvalidLaunchTemplateIdNotFound, InvalidPlacementGroupIdNotFound, InvalidSpotInstanceRequestIDNotFound
from .models import (Image, ImportImageTask, Instance, KeyPair, SecurityGroup, SecurityGroupRule, Snapshot, Subnet,
                     Tag, Volume, Vpc)
from .models import Address, DhcpOptions, InternetGateway, NatGateway, NetworkAcl, NetworkInterface, RouteTable
from .models import LaunchTemplate, PlacementGroup, SpotInstanceRequest
from .query import Resource, describe
from .registry import Context, action


@dataclass(frozen=True)
class Kind:
    resource_type: str
    model: type
    not_found: type[NotFound]  # AWS's error when an id of this kind does not exist


# id prefix -> kind. AWS's resource-type names (the ResourceType enum).
KINDS: dict[str, Kind] = {
    "i": Kind("instance", Instance, InvalidInstanceIDNotFound),
    "ami": Kind("image", Image, InvalidAMIIDNotFound),
    "aki": Kind("image", Image, InvalidAMIIDNotFound),
    "ari": Kind("image", Image, InvalidAMIIDNotFound),
    "import-ami": Kind("import-image-task", ImportImageTask, InvalidConversionTaskId),
    "key": Kind("key-pair", KeyPair, InvalidKeyPairNotFound),
    "sg": Kind("security-group", SecurityGroup, InvalidGroupNotFound),
    "sgr": Kind("security-group-rule", SecurityGroupRule, InvalidSecurityGroupRuleIdNotFound),
    "vpc": Kind("vpc", Vpc, InvalidVpcIDNotFound),
    "subnet": Kind("subnet", Subnet, InvalidSubnetIDNotFound),
    "igw": Kind("internet-gateway", InternetGateway, InvalidInternetGatewayIDNotFound),
    "rtb": Kind("route-table", RouteTable, InvalidRouteTableIDNotFound),
    "dopt": Kind("dhcp-options", DhcpOptions, InvalidDhcpOptionIDNotFound),
    "acl": Kind("network-acl", NetworkAcl, InvalidNetworkAclIDNotFound),
    "eni": Kind("network-interface", NetworkInterface, InvalidNetworkInterfaceIDNotFound),
    "eipalloc": Kind("elastic-ip", Address, InvalidAllocationIDNotFound),
    "nat": Kind("natgateway", NatGateway, InvalidNatGatewayIDNotFound),
    "vol": Kind("volume", Volume, InvalidVolumeNotFound),
    "snap": Kind("snapshot", Snapshot, InvalidSnapshotNotFound),
    "lt": Kind("launch-template", LaunchTemplate, InvalidLaunchTemplateIdNotFound),
    "pg": Kind("placement-group", PlacementGroup, InvalidPlacementGroupIdNotFound),
    "sir": Kind("spot-instances-request", SpotInstanceRequest, InvalidSpotInstanceRequestIDNotFound),
}

MAX_TAGS = 50


def kind_of(resource_id: str) -> Kind | None:
    return KINDS.get(resource_id.rsplit("-", 1)[0]) if "-" in resource_id else None


# Built once, run with parameters on the session's connection (Core, no ORM layer): on the
# describe path, building statements and ORM bookkeeping cost more than the queries.
_TAGS = select(Tag.resource_id, Tag.key, Tag.value).where(
    Tag.account_id == bindparam("account"), Tag.region == bindparam("region"))
_TAGS_OF_IDS = _TAGS.where(Tag.resource_id.in_(bindparam("ids", expanding=True)))
_TAGS_OF_TYPE = _TAGS.where(Tag.resource_type == bindparam("rtype"))


def tags_for(ctx: Context, ids) -> dict[str, dict[str, str]]:
    """resource id -> {key: value}, one query for any number of ids."""
    ids = list(ids)
    out: dict[str, dict[str, str]] = defaultdict(dict)
    if not ids:
        return out
    scope = {"account": ctx.account_id, "region": ctx.region}
    if len(ids) <= 500:
        result = ctx.session.connection().execute(_TAGS_OF_IDS, dict(scope, ids=ids))
    else:  # one scan beats a giant IN list
        result = ctx.session.connection().execute(_TAGS_OF_TYPE, dict(scope, rtype=kind_of(ids[0]).resource_type))
    for rid, key, value in result:
        out[rid][key] = value
    return out


def tag_list(tags: dict[str, str]) -> list[dict] | None:
    return [{"Key": k, "Value": v} for k, v in tags.items()] or None


def tag_dict(tags: list[dict]) -> dict[str, str]:
    """tag_list reversed: [{'Key', 'Value'}] (as a request gives them) -> {key: value}."""
    return {t["Key"]: t.get("Value") or "" for t in tags}


def _check(tags: list[dict], system: bool = False) -> None:
    for t in tags:
        key = t.get("Key")
        if key is None:
            raise MissingParameter("Tag.Key")
        if not 1 <= len(key) <= 128:
            raise InvalidParameterValue("Tag key exceeds the maximum length of 128 characters")
        if len(t.get("Value") or "") > 256:
            raise InvalidParameterValue("Tag value exceeds the maximum length of 256 characters")
        if key.lower().startswith("aws:") and not system:
            raise InvalidParameterValue("Tag keys starting with 'aws:' are reserved for internal use")


def set_tags(ctx: Context, resource_id: str, tags: list[dict], system: bool = False) -> None:
    """`system`: tags AWS itself sets (aws:...), e.g. aws:ec2launchtemplate:id; a request never may."""
    _check(tags, system)
    kind = kind_of(resource_id)
    existing = ctx.session.scalars(select(Tag).where(Tag.resource_id == resource_id,
                                                     Tag.account_id == ctx.account_id)).all()
    current = {t.key: t for t in existing}
    new_keys = {t["Key"] for t in tags} - current.keys()
    users = lambda keys: sum(1 for k in keys if not k.lower().startswith("aws:"))  # noqa: E731 (AWS's own: not counted)
    if users(current) + users(new_keys) > MAX_TAGS:
        raise TagLimitExceeded(resource_id, MAX_TAGS)
    for t in tags:
        row = current.get(t["Key"])
        if row is None:
            ctx.session.add(Tag(resource_id=resource_id, key=t["Key"], value=t.get("Value") or "",
                                resource_type=kind.resource_type, account_id=ctx.account_id,
                                region=ctx.region))
        else:
            row.value = t.get("Value") or ""


def tag_specifications(specs: list[dict] | None, resource_type: str) -> list[dict]:
    """The tags a create call asked for on resources of this type; other types are refused as AWS does."""
    tags: list[dict] = []
    for spec in specs or []:
        rtype = spec.get("ResourceType")
        if rtype is None:
            raise MissingParameter("TagSpecification.N.ResourceType")
        if rtype == resource_type:
            tags.extend(spec.get("Tags") or [])
    _check(tags)
    return tags


def refuse_other_tag_types(specs: list[dict] | None, allowed: set[str]) -> None:
    for spec in specs or []:
        if spec.get("ResourceType") not in allowed:
            raise InvalidParameterValue(
                f"'{spec.get('ResourceType')}' is not a valid taggable resource type for this operation.")


def delete_all_tags(ctx: Context, resource_id: str) -> None:
    ctx.session.execute(delete(Tag).where(Tag.resource_id == resource_id, Tag.account_id == ctx.account_id))


def _require_resources(ctx: Context, ids: list[str]) -> None:
    for rid in ids:
        kind = kind_of(rid)
        if kind is None:
            raise InvalidID(rid)
        row = ctx.session.get(kind.model, rid)
        visible = row is not None and row.region == ctx.region and (
            row.account_id == ctx.account_id)
        if not visible:
            raise kind.not_found(rid)


@action("CreateTags")
def create_tags(ctx: Context, p: dict) -> dict:
    ids, tags = p["Resources"], p["Tags"]
    _require_resources(ctx, ids)
    for rid in ids:
        set_tags(ctx, rid, tags)
    return {"Return": True}


@action("DeleteTags")
def delete_tags(ctx: Context, p: dict) -> dict:
    ids = p["Resources"]
    _require_resources(ctx, ids)
    if any(t.get("Key") is None for t in p.get("Tags") or []):
        raise MissingParameter("Tag.Key")  # (found by the fuzz test: a 500 before)
    if any(t["Key"].lower().startswith("aws:") for t in p.get("Tags") or []):
        raise InvalidParameterValue("Tag keys starting with 'aws:' are reserved for internal use")
    for rid in ids:
        for t in p.get("Tags") or [None]:
            q = delete(Tag).where(Tag.resource_id == rid, Tag.account_id == ctx.account_id)
            if t is None:  # all of the user's tags; AWS's own (aws:...) stay
                q = q.where(~func.lower(Tag.key).startswith("aws:"))
            else:
                q = q.where(Tag.key == t["Key"])
                if t.get("Value") is not None:  # a value given must match, as AWS does
                    q = q.where(Tag.value == t["Value"])
            ctx.session.execute(q)
    return {"Return": True}


TAG_FILTERS = {
    "key": lambda t: t.key,
    "value": lambda t: t.value,
    "resource-id": lambda t: t.resource_id,
    "resource-type": lambda t: t.resource_type,
}


TAGS = Resource("Tags", lambda ctx, page, tags: [{"ResourceId": t.resource_id, "ResourceType": t.resource_type,
                                                  "Key": t.key, "Value": t.value} for t in page],
                TAG_FILTERS, key=lambda t: f"{t.resource_id}\x00{t.key}", tagged=False)


@action("DescribeTags")
def describe_tags(ctx: Context, p: dict) -> dict:
    rows = ctx.session.scalars(select(Tag).where(Tag.account_id == ctx.account_id, Tag.region == ctx.region)
                               .order_by(Tag.resource_id, Tag.key)).all()
    filters = []
    for f in p.get("Filters") or []:
        if f.get("Name", "").startswith("tag:"):  # tag:Key here means key == Key and value in Values
            key = f["Name"][4:]
            filters.append({"Name": "key", "Values": [key]})
            filters.append({"Name": "value", "Values": f.get("Values") or []})
        else:
            filters.append(f)
    return describe(ctx, TAGS, {**p, "Filters": filters}, rows)
