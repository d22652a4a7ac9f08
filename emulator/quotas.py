"""AWS's default quotas on what an account creates, enforced before a create is stored.

Each quota is a config field (a quota increase is a config change, as it is a support ticket on
AWS). A count per region is taken under a lock on the account's region row, so two concurrent
creates cannot both take the last slot; a count inside a VPC runs under the VPC's own lock
(vpcs.lock_vpc), which its callers hold already."""
from __future__ import annotations

from sqlalchemy import func, select

from .models import RegionState
from .registry import Context


def _count(ctx: Context, model, *where) -> int:
    return ctx.session.scalar(select(func.count()).select_from(model).where(*where)) or 0


def per_region(ctx: Context, model, limit: int, error: type[Exception]) -> None:
    """Raise `error()` when the account already has `limit` rows of `model` in this region."""
    ctx.session.get(RegionState, (ctx.account_id, ctx.region), with_for_update=True)
    if _count(ctx, model, model.account_id == ctx.account_id, model.region == ctx.region) >= limit:
        raise error()


def per_vpc(ctx: Context, model, vpc_id: str, limit: int, error: type[Exception]) -> None:
    """Raise `error()` when the VPC already holds `limit` rows of `model` (call under lock_vpc)."""
    if _count(ctx, model, model.vpc_id == vpc_id) >= limit:
        raise error()
