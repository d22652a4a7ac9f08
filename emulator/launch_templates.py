"""Launch templates: CreateLaunchTemplate, CreateLaunchTemplateVersion, DescribeLaunchTemplates,
DescribeLaunchTemplateVersions, ModifyLaunchTemplate, DeleteLaunchTemplate,
DeleteLaunchTemplateVersions; and `for_launch`, RunInstances' merge of a template version with
its own parameters.

A version's data is kept as the request gave it: botocore's RequestLaunchTemplateData and
ResponseLaunchTemplateData have the same members, and those are RunInstances' own members (but
`RamDiskId`), so a launch is the template's data with the request's parameters laid over it.
As on AWS, little is checked when a template is made (names, user data, version numbers): what
names something that does not exist (an image, a key pair, a group, a subnet) comes back as the
answer's Warning, and fails the launch that uses it.
"""
from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime

from sqlalchemy import delete, func, select

from .errors import (EC2Error, InvalidLaunchTemplateIdMalformed, InvalidLaunchTemplateIdNotFound,
                     InvalidLaunchTemplateIdVersionNotFound, InvalidLaunchTemplateNameAlreadyExistsException,
                     InvalidLaunchTemplateNameMalformedException, InvalidLaunchTemplateNameNotFoundException,
                     InvalidParameterCombination, InvalidParameterValue, InvalidUserDataMalformed, MissingParameter)
from .catalogue import INSTANCE_TYPES
from .ids import new_id, well_formed
from .models import LaunchTemplate, LaunchTemplateVersion
from .query import Resource, Selector, describe
from .registry import Context, action
from .times import iso8601
from .tags import delete_all_tags, refuse_other_tag_types, set_tags, tag_dict, tag_list, tag_specifications

NAME = re.compile(r"[a-zA-Z0-9().\-/_]{3,128}")
MAX_VERSIONS = 10000  # per template, AWS's quota
# A data member of the template -> RunInstances' name for it (all others are the same).
RUN_NAMES = {"RamDiskId": "RamdiskId"}
ONLY_IN_TEMPLATES = {"ElasticGpuSpecifications", "InstanceRequirements"}  # nothing here launches them
ALL_TEMPLATES_MESSAGE = (
    "To describe the launch template data for all your launch templates, for ‘--versions’ specify ‘$Latest’, "
    "‘$Default’, or both, and omit ‘--launch-template-id’, ‘--launch-template-name’, and version numbers. To "
    "describe the launch template data for a specific launch template, specify ‘--launch-template-id’ or "
    "‘--launch-template-name’, and for ‘--versions’ specify one or more of the following values: ‘$Latest’, "
    "‘$Default’, or one or more version numbers.")


# ------------------------------------------------------------------------------- lookups

def _by_id(ctx: Context, template_id: str) -> LaunchTemplate:
    _check_id(template_id)
    row = ctx.session.get(LaunchTemplate, template_id)
    if row is None or row.account_id != ctx.account_id or row.region != ctx.region:
        raise InvalidLaunchTemplateIdNotFound(template_id)
    return row


def _by_name(ctx: Context, name: str) -> LaunchTemplate | None:
    return ctx.session.scalars(select(LaunchTemplate).where(
        LaunchTemplate.account_id == ctx.account_id, LaunchTemplate.region == ctx.region,
        LaunchTemplate.name == name)).first()


def get_template(ctx: Context, p: dict, both: str = "", lock: bool = False) -> LaunchTemplate:
    """The template a request names by LaunchTemplateId or LaunchTemplateName (one of them;
    `both`: AWS's message for naming both, where the operation has one)."""
    template_id, name = p.get("LaunchTemplateId"), p.get("LaunchTemplateName")
    if template_id and name:
        raise InvalidParameterCombination(both or "Either provide launch template ID or launch template name "
                                          "in the request, not both.")
    if template_id:
        row = _by_id(ctx, template_id)
    elif name:
        row = _by_name(ctx, name)
        if row is None:
            raise InvalidLaunchTemplateNameNotFoundException.named(name)
    else:
        raise MissingParameter("launch template ID or launch template name")
    if lock:  # whoever adds or removes versions holds the template (numbers are drawn from it)
        row = ctx.session.get(LaunchTemplate, row.id, with_for_update=True, populate_existing=True)
        if row is None:  # deleted meanwhile
            raise InvalidLaunchTemplateIdNotFound(template_id or name)
    return row


def _number(text) -> int | None:
    """A version number as a request writes it ('7'), else None ('²' and 20 digits too)."""
    text = str(text).strip()
    return int(text) if re.fullmatch(r"[0-9]{1,9}", text) and int(text) >= 1 else None


def _version_number(row: LaunchTemplate, version) -> int:
    """A version as a request names it ($Latest, $Default, a number) -> its number."""
    text = str(version).strip() if version is not None else "$Default"
    if text == "$Latest":
        return row.latest_version
    if text == "$Default":
        return row.default_version
    number = _number(text)
    if number is None:
        raise InvalidLaunchTemplateIdVersionNotFound(text, row.id)
    return number


def _version(ctx: Context, row: LaunchTemplate, version) -> LaunchTemplateVersion:
    number = _version_number(row, version)
    found = ctx.session.get(LaunchTemplateVersion, (row.id, number))
    if found is None:
        raise InvalidLaunchTemplateIdVersionNotFound(version if version is not None else number, row.id)
    return found


# ------------------------------------------------------------------------------- data

def jsonable(value):
    """Request data as a JSON column keeps it: times (botocore's timestamps, e.g. SpotOptions'
    ValidUntil) as ISO text; RunInstances parses them back from that."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return iso8601(value)
    return value


def _check_data(ctx: Context, data: dict) -> list[dict]:
    """Refuses what AWS refuses when a version is made; returns the Warning's errors: what
    the data names that does not exist (a launch with it would fail)."""
    user_data = data.get("UserData")
    if user_data is not None:
        try:
            base64.b64decode(user_data, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidUserDataMalformed() from None
    for spec in data.get("TagSpecifications") or []:
        tag_specifications([spec], spec.get("ResourceType") or "")  # the keys' rules ('aws:', lengths)
    from . import images, keypairs, security_groups, vpcs  # (they import nothing of this)

    checks = []
    if data.get("ImageId"):
        checks.append(lambda: images.launchable_image(ctx, data["ImageId"]))
    if data.get("InstanceType"):
        checks.append(lambda: _check_type(data["InstanceType"]))
    if data.get("KeyName"):
        checks.append(lambda: keypairs.get_by_name(ctx, data["KeyName"]))
    for group_id in data.get("SecurityGroupIds") or []:
        checks.append(lambda g=group_id: security_groups.get_group(ctx, g))
    for nic in data.get("NetworkInterfaces") or []:
        if nic.get("SubnetId"):
            checks.append(lambda s=nic["SubnetId"]: vpcs.get_subnet(ctx, s))
    errors = []
    for check in checks:
        try:
            check()
        except EC2Error as exc:
            errors.append({"Code": exc.code, "Message": exc.message})
    return errors


def _check_type(name: str) -> None:
    if name not in INSTANCE_TYPES:
        raise InvalidParameterValue.invalid(name, "InstanceType")


def _check_id(template_id: str) -> None:
    if not well_formed(template_id, "lt"):
        raise InvalidLaunchTemplateIdMalformed(template_id)


def _warning(errors: list[dict]) -> dict | None:
    return {"Errors": errors} if errors else None


# ------------------------------------------------------------------------------- rendering

def _created_by(row) -> str:
    return f"arn:aws:iam::{row.account_id}:root"


def _template_out(row: LaunchTemplate, tags: dict | None) -> dict:
    return {"LaunchTemplateId": row.id, "LaunchTemplateName": row.name, "CreateTime": row.created_at,
            "CreatedBy": _created_by(row), "DefaultVersionNumber": row.default_version,
            "LatestVersionNumber": row.latest_version, "Tags": tag_list(tags or {})}


def _version_out(template: LaunchTemplate, v: LaunchTemplateVersion) -> dict:
    return {"LaunchTemplateId": template.id, "LaunchTemplateName": template.name, "VersionNumber": v.version,
            "VersionDescription": v.description, "CreateTime": v.created_at, "CreatedBy": _created_by(template),
            "DefaultVersion": v.version == template.default_version, "LaunchTemplateData": v.data}


# ------------------------------------------------------------------------------- handlers

@action("CreateLaunchTemplate")
def create_launch_template(ctx: Context, p: dict) -> dict:
    name = p["LaunchTemplateName"]
    if not NAME.fullmatch(name):
        raise InvalidLaunchTemplateNameMalformedException()
    token = p.get("ClientToken")
    if token:
        prior = ctx.session.scalars(select(LaunchTemplate).where(
            LaunchTemplate.account_id == ctx.account_id, LaunchTemplate.region == ctx.region,
            LaunchTemplate.client_token == token)).first()
        if prior is not None:  # the same request again: the same template
            from .tags import tags_for
            return {"LaunchTemplate": _template_out(prior, tags_for(ctx, [prior.id])[prior.id])}
    data = jsonable(p["LaunchTemplateData"])
    refuse_other_tag_types(p.get("TagSpecifications"), {"launch-template"})
    tags = tag_specifications(p.get("TagSpecifications"), "launch-template")
    if _by_name(ctx, name) is not None:
        raise InvalidLaunchTemplateNameAlreadyExistsException()
    errors = _check_data(ctx, data)
    row = LaunchTemplate(id=new_id("lt"), account_id=ctx.account_id, region=ctx.region, name=name,
                         default_version=1, latest_version=1, client_token=token)
    ctx.session.add(row)
    ctx.session.add(LaunchTemplateVersion(template_id=row.id, version=1, description=p.get("VersionDescription"),
                                          data=data, created_at=row.created_at))
    ctx.session.flush()
    set_tags(ctx, row.id, tags)
    return {"LaunchTemplate": _template_out(row, tag_dict(tags)), "Warning": _warning(errors)}


@action("CreateLaunchTemplateVersion")
def create_launch_template_version(ctx: Context, p: dict) -> dict:
    row = get_template(ctx, p, lock=True)
    data = jsonable(p["LaunchTemplateData"])
    if p.get("SourceVersion") is not None:
        # The source's parameters, but those this request gives (each replaced whole).
        data = {**_version(ctx, row, p["SourceVersion"]).data, **data}
    count = ctx.session.scalar(select(func.count()).select_from(LaunchTemplateVersion).where(
        LaunchTemplateVersion.template_id == row.id))
    if count >= MAX_VERSIONS:
        raise InvalidParameterValue(f"You've reached the maximum of {MAX_VERSIONS} versions for launch template "
                                    f"{row.id}.")
    errors = _check_data(ctx, data)
    row.latest_version += 1
    version = LaunchTemplateVersion(template_id=row.id, version=row.latest_version,
                                    description=p.get("VersionDescription"), data=data)
    ctx.session.add(version)
    ctx.session.flush()
    return {"LaunchTemplateVersion": _version_out(row, version), "Warning": _warning(errors)}


LAUNCH_TEMPLATES = Resource("LaunchTemplates", lambda ctx, page, tags: [_template_out(r, tags[r.id]) for r in page], {
    "create-time": lambda r: r.created_at,
    "launch-template-name": lambda r: r.name,
}, (Selector("LaunchTemplateIds", lambda r: r.id, InvalidLaunchTemplateIdNotFound, _check_id),
    Selector("LaunchTemplateNames", lambda r: r.name, lambda *names: InvalidLaunchTemplateNameNotFoundException())),
    max_results=(1, 200), ids_exclude_max_results=("LaunchTemplateIds", "launchTemplateId"))


def _templates(ctx: Context) -> list[LaunchTemplate]:
    return ctx.session.scalars(select(LaunchTemplate).where(
        LaunchTemplate.account_id == ctx.account_id, LaunchTemplate.region == ctx.region)
        .order_by(LaunchTemplate.id)).all()


@action("DescribeLaunchTemplates")
def describe_launch_templates(ctx: Context, p: dict) -> dict:
    return describe(ctx, LAUNCH_TEMPLATES, p, _templates(ctx))


class _Row:
    """A version as the describe pipeline sees it (its paging key: the template, then the number)."""
    __slots__ = ("template", "version", "id", "key")

    def __init__(self, template: LaunchTemplate, version: LaunchTemplateVersion):
        self.template, self.version, self.id = template, version, template.id
        self.key = f"{template.id}:{version.version:06d}"


def _data(name: str):
    return lambda r: r.version.data.get(name)


VERSIONS = Resource("LaunchTemplateVersions", lambda ctx, page, tags: [_version_out(r.template, r.version)
                                                                       for r in page], {
    "create-time": lambda r: r.version.created_at,
    "ebs-optimized": _data("EbsOptimized"),
    "iam-instance-profile": lambda r: list((r.version.data.get("IamInstanceProfile") or {}).values()),
    "image-id": _data("ImageId"),
    "instance-type": _data("InstanceType"),
    "is-default-version": lambda r: r.version.version == r.template.default_version,
    "kernel-id": _data("KernelId"),
    "ram-disk-id": _data("RamDiskId"),
    "http-endpoint": lambda r: (r.version.data.get("MetadataOptions") or {}).get("HttpEndpoint"),
    "http-tokens": lambda r: (r.version.data.get("MetadataOptions") or {}).get("HttpTokens"),
}, key=lambda r: r.key, max_results=(1, 200), tagged=False)


@action("DescribeLaunchTemplateVersions")
def describe_launch_template_versions(ctx: Context, p: dict) -> dict:
    wanted = p.get("Versions") or []
    if not (p.get("LaunchTemplateId") or p.get("LaunchTemplateName")):
        # Every template's $Latest and/or $Default, and nothing else.
        if not wanted:
            raise MissingParameter.worded(ALL_TEMPLATES_MESSAGE)
        if any(v not in ("$Latest", "$Default") for v in wanted) or p.get("MinVersion") or p.get("MaxVersion"):
            raise InvalidParameterValue(ALL_TEMPLATES_MESSAGE)
        templates = _templates(ctx)
        numbers = {t.id: {_version_number(t, v) for v in wanted} for t in templates}
    else:
        template = get_template(ctx, p)
        templates = [template]
        if wanted:
            numbers = {template.id: {_version_number(template, v) for v in wanted}}
        else:
            numbers = {template.id: None}  # all of them, within MinVersion..MaxVersion
    rows = []
    for t in templates:
        q = select(LaunchTemplateVersion).where(LaunchTemplateVersion.template_id == t.id)
        if numbers[t.id] is not None and len(numbers[t.id]) <= 500:  # (more: all of them, kept below)
            q = q.where(LaunchTemplateVersion.version.in_(numbers[t.id]))
        else:
            if p.get("MinVersion"):
                q = q.where(LaunchTemplateVersion.version >= _version_number(t, p["MinVersion"]))
            if p.get("MaxVersion"):
                q = q.where(LaunchTemplateVersion.version <= _version_number(t, p["MaxVersion"]))
        found = [v for v in ctx.session.scalars(q.order_by(LaunchTemplateVersion.version))
                 if numbers[t.id] is None or v.version in numbers[t.id]]
        if numbers[t.id] is not None and len(templates) == 1:
            missing = sorted(numbers[t.id] - {v.version for v in found})
            if missing:
                raise InvalidLaunchTemplateIdVersionNotFound(missing[0], t.id)
        rows += [_Row(t, v) for v in found]
    return describe(ctx, VERSIONS, p, rows)


@action("ModifyLaunchTemplate")
def modify_launch_template(ctx: Context, p: dict) -> dict:
    row = get_template(ctx, p, both="Either provide launch template ID or launch template name to modify the template.",
                       lock=True)
    if p.get("DefaultVersion") is not None:
        text = str(p["DefaultVersion"])
        number = _number(text)
        if number is None or ctx.session.get(LaunchTemplateVersion, (row.id, number)) is None:
            raise InvalidLaunchTemplateIdVersionNotFound(text)
        row.default_version = number
    from .tags import tags_for
    return {"LaunchTemplate": _template_out(row, tags_for(ctx, [row.id])[row.id])}


@action("DeleteLaunchTemplate")
def delete_launch_template(ctx: Context, p: dict) -> dict:
    try:
        row = get_template(ctx, p, lock=True)
    except InvalidLaunchTemplateNameNotFoundException:
        raise InvalidLaunchTemplateNameNotFoundException() from None  # AWS's plural wording here
    from .tags import tags_for
    out = _template_out(row, tags_for(ctx, [row.id])[row.id])
    ctx.session.execute(delete(LaunchTemplateVersion).where(LaunchTemplateVersion.template_id == row.id))
    delete_all_tags(ctx, row.id)
    ctx.session.delete(row)
    return {"LaunchTemplate": out}


@action("DeleteLaunchTemplateVersions")
def delete_launch_template_versions(ctx: Context, p: dict) -> dict:
    row = get_template(ctx, p, lock=True)
    done, failed = [], []
    for text in p["Versions"]:
        ident = {"LaunchTemplateId": row.id, "LaunchTemplateName": row.name}
        number = _number(text)
        found = ctx.session.get(LaunchTemplateVersion, (row.id, number)) if number else None
        if found is None:
            failed.append({**ident, "VersionNumber": number, "ResponseError": {
                "Code": "launchTemplateVersionDoesNotExist",
                "Message": "The specified launch template version does not exist."}})
        elif number == row.default_version:
            failed.append({**ident, "VersionNumber": number, "ResponseError": {
                "Code": "unexpectedError",
                "Message": "You cannot delete the default version of a launch template. Set another version as "
                           "the default or delete the launch template."}})
        else:
            ctx.session.delete(found)
            done.append({**ident, "VersionNumber": number})
    ctx.session.flush()
    # $Latest names a version that exists: the highest left (the default one is never deleted).
    row.latest_version = ctx.session.scalar(select(func.max(LaunchTemplateVersion.version)).where(
        LaunchTemplateVersion.template_id == row.id))
    return {"SuccessfullyDeletedLaunchTemplateVersions": done,
            "UnsuccessfullyDeletedLaunchTemplateVersions": failed}


# ------------------------------------------------------------------------------- launching

def _merge_by(key: str, base: list[dict], over: list[dict]) -> list[dict]:
    """Lists of structures merged by a member (a device name, an index): the request's entry
    replaces the template's with the same value; the others are kept, the template's first."""
    mine = {e.get(key) for e in over}
    return [e for e in base if e.get(key) not in mine] + list(over)


def _merge_tags(base: list[dict], over: list[dict]) -> list[dict]:
    """TagSpecifications: per resource type, the template's tags with the request's laid over."""
    out: dict[str, dict[str, str]] = {}
    for spec in [*base, *over]:
        out.setdefault(spec.get("ResourceType"), {}).update(tag_dict(spec.get("Tags") or []))
    return [{"ResourceType": rtype, "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
            for rtype, tags in out.items()]


def for_launch(ctx: Context, p: dict) -> tuple[dict, list[dict]]:
    """RunInstances' parameters with its LaunchTemplate's version laid under them, and the
    system tags of the instances it launches (aws:ec2launchtemplate:id and :version, as AWS
    adds them). A request's member replaces the template's, but TagSpecifications (merged per
    resource type and key), BlockDeviceMappings (per device name), NetworkInterfaces (per device
    index), and Placement and MetadataOptions (per member)."""
    spec = p["LaunchTemplate"]
    row = get_template(ctx, spec, both="Either provide launch template ID or launch template name in the request, "
                                       "not both.")
    version = _version(ctx, row, spec.get("Version"))
    merged = dict(p)
    for name, value in version.data.items():
        if name in ONLY_IN_TEMPLATES:
            continue
        name = RUN_NAMES.get(name, name)
        mine = p.get(name)
        if mine is None:
            merged[name] = value
        elif name == "TagSpecifications":
            merged[name] = _merge_tags(value, mine)
        elif name == "BlockDeviceMappings":
            merged[name] = _merge_by("DeviceName", value, mine)
        elif name == "NetworkInterfaces":
            merged[name] = _merge_by("DeviceIndex", value, mine)
        elif name in ("Placement", "MetadataOptions"):
            merged[name] = {**value, **mine}
    return merged, [{"Key": "aws:ec2launchtemplate:id", "Value": row.id},
                    {"Key": "aws:ec2launchtemplate:version", "Value": str(version.version)}]
