"""Instance profiles on instances: RunInstances' IamInstanceProfile, AssociateIamInstanceProfile,
DescribeIamInstanceProfileAssociations, ReplaceIamInstanceProfileAssociation,
DisassociateIamInstanceProfile; what the metadata service serves under iam/ (`for_metadata`);
and `caller`, who a request signed with a role's credentials is (api/app.py, role_credentials.py).

There is no IAM in this emulator: a profile is named by its ARN or its name (the caller's
account's `instance-profile/NAME`), and its role has the profile's name (as the console makes
them). Its credentials act as the instance's account. An association holds while it is
`associated` and its instance is not ending (shutting-down, terminated): that one rule decides
what Describe says, what the metadata service serves and whether the credentials are accepted.
"""
from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from .errors import (IncorrectInstanceState, IncorrectState, InvalidAssociationIDNotFound, InvalidParameterValue,
                     MissingParameter)
from .ids import new_id
from .models import IamInstanceProfileAssociation as Association
from .models import Instance
from .query import Resource, describe
from .registry import Context, action

ENDING = ("shutting-down", "terminated")
_ARN = re.compile(r"^arn:aws:iam::(\d{12}):instance-profile/((?:[\w+=,.@-]+/)*)([\w+=,.@-]{1,128})$")
_NAME = re.compile(r"^[\w+=,.@-]{1,128}$")


@dataclass(frozen=True)
class Profile:
    arn: str

    @property
    def name(self) -> str:
        return self.arn.rsplit("/", 1)[1]

    @property
    def account_id(self) -> str:
        return self.arn.split(":")[4]

    @property
    def id(self) -> str:  # AWS's unique id of the profile (AIPA...), stable for its ARN
        return "AIPA" + _stable(self.arn, 17)

    @property
    def role_id(self) -> str:  # the role's unique id (AROA...), the first half of an assumed role's UserId
        return "AROA" + _stable(f"role:{self.account_id}:{self.name}", 17)


def _stable(text: str, n: int) -> str:
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:n]


def profile_of(ctx: Context, spec: dict | None) -> Profile:
    """IamInstanceProfile {Arn | Name} -> the profile, or AWS's refusal."""
    spec = spec or {}
    arn, name = spec.get("Arn"), spec.get("Name")
    if not arn and not name:
        raise MissingParameter("iamInstanceProfile.arn or iamInstanceProfile.name")
    if arn:
        m = _ARN.match(arn)
        if not m or m.group(1) != ctx.account_id or (name and name != m.group(3)):
            raise InvalidParameterValue(f"Value ({arn}) for parameter iamInstanceProfile.arn is invalid. "
                                        "Invalid IAM Instance Profile ARN")
        return Profile(arn)
    if not _NAME.match(name):
        raise InvalidParameterValue(f"Value ({name}) for parameter iamInstanceProfile.name is invalid. "
                                    "Invalid IAM Instance Profile name")
    return Profile(f"arn:aws:iam::{ctx.account_id}:instance-profile/{name}")


def _state(assoc: Association, instance_state: str | None) -> str:
    return "disassociated" if instance_state is None or instance_state in ENDING else assoc.state


def _out(assoc: Association, instance_state: str | None, state: str | None = None) -> dict:
    profile = Profile(assoc.arn)
    return {"AssociationId": assoc.id, "InstanceId": assoc.instance_id,
            "IamInstanceProfile": {"Arn": profile.arn, "Id": profile.id},
            "State": state or _state(assoc, instance_state), "Timestamp": assoc.created_at}


def associate(ctx: Context, instance_id: str, profile: Profile) -> Association:
    """A new association (RunInstances and AssociateIamInstanceProfile; the caller checked the
    instance has none)."""
    row = Association(id=new_id("iip-assoc"), account_id=ctx.account_id, region=ctx.region,
                      instance_id=instance_id, arn=profile.arn, state="associated")
    ctx.session.add(row)
    return row


def _current(session: Session, instance_id: str) -> Association | None:
    return session.scalars(select(Association).where(Association.instance_id == instance_id,
                                                     Association.state == "associated")).first()


def profiles_of(ctx: Context, instance_ids) -> dict[str, dict]:
    """instance id -> DescribeInstances' IamInstanceProfile {Arn, Id}: one query per 500 ids."""
    ids = list(dict.fromkeys(instance_ids))
    out = {}
    for start in range(0, len(ids), 500):
        rows = ctx.session.execute(select(Association.instance_id, Association.arn).where(
            Association.instance_id.in_(ids[start:start + 500]), Association.state == "associated")).all()
        out.update((iid, {"Arn": arn, "Id": Profile(arn).id}) for iid, arn in rows)
    return out


def _instance(ctx: Context, instance_id: str) -> Instance:
    from .instances import get_instance
    row = get_instance(ctx, instance_id)
    # one association at a time per instance: its row locked (instances are never deleted but expired)
    return ctx.session.get(Instance, row.id, with_for_update=True, populate_existing=True) or row


def _no_association(association_id: str) -> InvalidAssociationIDNotFound:
    return InvalidAssociationIDNotFound.worded(f"An invalid association-id of '{association_id}' was given")


def _association(ctx: Context, association_id: str) -> Association:
    row = ctx.session.get(Association, association_id)
    if row is None or row.account_id != ctx.account_id or row.region != ctx.region:
        raise _no_association(association_id)
    return row


@action("AssociateIamInstanceProfile")
def associate_iam_instance_profile(ctx: Context, p: dict) -> dict:
    profile = profile_of(ctx, p.get("IamInstanceProfile"))
    inst = _instance(ctx, p["InstanceId"])
    if inst.state not in ("pending", "running", "stopping", "stopped"):
        raise IncorrectInstanceState.worded(f"The instance '{inst.id}' is not in a valid state for this operation.")
    if _current(ctx.session, inst.id) is not None:
        raise IncorrectState.existing_association(inst.id)
    row = associate(ctx, inst.id, profile)
    ctx.session.flush()
    return {"IamInstanceProfileAssociation": _out(row, inst.state, "associating")}


def _end(ctx: Context, association_id: str) -> tuple[Association, Instance]:
    """End an association that holds (Replace, Disassociate): -> it and its instance, whose row
    is locked first (as Associate locks it), then the association read again."""
    row = _association(ctx, association_id)
    inst = _instance(ctx, row.instance_id)
    ctx.session.refresh(row)
    if _state(row, inst.state) != "associated":
        raise _no_association(row.id)
    row.state = "disassociated"
    return row, inst


@action("ReplaceIamInstanceProfileAssociation")
def replace_iam_instance_profile_association(ctx: Context, p: dict) -> dict:
    profile = profile_of(ctx, p.get("IamInstanceProfile"))
    _, inst = _end(ctx, p["AssociationId"])
    row = associate(ctx, inst.id, profile)
    ctx.session.flush()
    return {"IamInstanceProfileAssociation": _out(row, inst.state, "associating")}


@action("DisassociateIamInstanceProfile")
def disassociate_iam_instance_profile(ctx: Context, p: dict) -> dict:
    row, inst = _end(ctx, p["AssociationId"])
    return {"IamInstanceProfileAssociation": _out(row, inst.state, "disassociating")}


class _Row:
    __slots__ = ("assoc", "instance_state", "id")

    def __init__(self, assoc: Association, instance_state: str | None):
        self.assoc, self.instance_state, self.id = assoc, instance_state, assoc.id


ASSOCIATIONS = Resource("IamInstanceProfileAssociations",
                        lambda ctx, page, tags: [_out(r.assoc, r.instance_state) for r in page], {
                            "instance-id": lambda r: r.assoc.instance_id,
                            "state": lambda r: _state(r.assoc, r.instance_state),
                        }, key=lambda r: r.id, max_results=(5, 1000), tagged=False,
                        ids_exclude_max_results=("AssociationIds", "associationId"))


@action("DescribeIamInstanceProfileAssociations")
def describe_iam_instance_profile_associations(ctx: Context, p: dict) -> dict:
    rows = ctx.session.execute(select(Association, Instance.state).outerjoin(
        Instance, Instance.id == Association.instance_id).where(
        Association.account_id == ctx.account_id, Association.region == ctx.region)
        .order_by(Association.id)).all()
    wanted = p.get("AssociationIds")
    if wanted:
        have = {a.id for a, _ in rows}
        missing = [w for w in wanted if w not in have]
        if missing:
            raise _no_association(missing[0])
        rows = [(a, s) for a, s in rows if a.id in set(wanted)]
    return describe(ctx, ASSOCIATIONS, p, [_Row(a, s) for a, s in rows])


# ------------------------------------------------------------------------------- who is calling

@dataclass(frozen=True)
class RoleCaller:
    """The caller behind a role's credentials: its account, and STS's view of it."""
    account_id: str
    role_name: str
    instance_id: str
    role_id: str

    @property
    def arn(self) -> str:
        return f"arn:aws:sts::{self.account_id}:assumed-role/{self.role_name}/{self.instance_id}"

    @property
    def user_id(self) -> str:
        return f"{self.role_id}:{self.instance_id}"


def caller(session: Session, association_id: str, instance_id: str) -> RoleCaller | None:
    """Who credentials issued for this association act as, while it holds; else None."""
    row = session.execute(select(Association, Instance.state).join(
        Instance, Instance.id == Association.instance_id).where(
        Association.id == association_id, Association.instance_id == instance_id)).first()
    if row is None or _state(row[0], row[1]) != "associated":
        return None
    profile = Profile(row[0].arn)
    return RoleCaller(row[0].account_id, profile.name, instance_id, profile.role_id)


def for_metadata(session: Session, instance_id: str) -> tuple[str, Profile] | None:
    """(association id, profile) the metadata service serves for a running instance, if any."""
    row = _current(session, instance_id)
    return (row.id, Profile(row.arn)) if row is not None else None
