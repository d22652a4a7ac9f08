"""Spot Instances: RequestSpotInstances, DescribeSpotInstanceRequests, CancelSpotInstanceRequests,
DescribeSpotPriceHistory; RunInstances' InstanceMarketOptions (`plan`, `link`); interruptions,
which a person triggers (`ec2emu spot interrupt`, the admin call InterruptSpotInstances) and the
watchdog carries out (`sweep`); and what the metadata service shows of them (`for_metadata`).

Prices are a deterministic series: one price per (instance type, zone, hour), between 30% and
45% of an on-demand price estimated from the type's vCPUs and memory (there is no market here).
A request whose maximum price is at least the current price is fulfilled at once, by the same
launch as RunInstances; a lower one stays open (price-too-low) until the price falls to it.

An interruption: the instance's metadata shows spot/instance-action (and termination-time for a
termination) and events/recommendations/rebalance at once; at the notice's end (two minutes by
default, as AWS gives) the instance is stopped or terminated as the request says (hibernate is
carried out as a stop), with AWS's state reason, and the request moves as AWS moves it: a
one-time request closes; a persistent one is open again (a termination: the next sweep launches
a new instance when the price allows) or disabled (a stop: StartInstances brings it back).
"""
from __future__ import annotations

import hashlib
import logging
import re
import secrets
from datetime import datetime, timedelta

from sqlalchemy import select

from .catalogue import INSTANCE_TYPES, REGIONS, vcpus_and_memory
from .errors import (EC2Error, IncorrectInstanceState, InvalidParameterCombination, InvalidParameterValue,
                     InvalidSpotInstanceRequestIDMalformed, InvalidSpotInstanceRequestIDNotFound, MissingParameter,
                     SpotMaxPriceTooLow, Unsupported)
from .ids import well_formed
from .models import Instance, SpotInstanceRequest, utcnow
from .query import Resource, Selector, apply_filters, check_max_results, describe, next_token, token_key
from .registry import Context, Host, action
from .tags import refuse_other_tag_types, set_tags, tag_dict, tag_list, tag_specifications
from .times import aware, iso8601

log = logging.getLogger("ec2emu.spot")
PRODUCTS = ("Linux/UNIX", "Linux/UNIX (Amazon VPC)")
DEFAULT_NOTICE_SECONDS = 120
LIVE = ("pending", "running")


# ------------------------------------------------------------------------------- prices

def on_demand(instance_type: str) -> float:
    """An on-demand price estimate (USD per hour): by vCPUs and memory, as AWS's general-purpose
    types roughly are priced."""
    vcpus, memory_mib = vcpus_and_memory(instance_type)
    return round(0.02 * vcpus + 0.005 * memory_mib / 1024, 6)


def price(instance_type: str, zone: str, at: datetime) -> float:
    """The Spot price of a type in a zone at a time: one per hour, the same on every run."""
    hour = int(aware(at).timestamp()) // 3600
    h = hashlib.sha256(f"{instance_type}|{zone}|{hour}".encode()).digest()
    return round(on_demand(instance_type) * (0.30 + 0.15 * int.from_bytes(h[:4], "big") / 2**32), 6)


def _text(value: float) -> str:
    return f"{value:.6f}"


def _max_price(text: str | None, instance_type: str) -> float:
    if text is None or text == "":
        return on_demand(instance_type)  # AWS's default maximum: the on-demand price
    try:
        value = float(text)
    except ValueError:
        raise InvalidParameterValue.invalid(text, "SpotPrice") from None
    if not value > 0:
        raise InvalidParameterValue.invalid(text, "SpotPrice")
    return value


def _too_low(max_price: float, current: float) -> str:
    return (f"Your Spot request price of {max_price:g} is lower than the minimum required Spot request "
            f"fulfillment price of {current:g}.")


# ------------------------------------------------------------------------------- launching

def _new_id() -> str:
    return f"sir-{secrets.token_hex(4)}"


def _check_behaviour(request_type: str, behaviour: str) -> None:
    if request_type not in ("one-time", "persistent"):
        raise InvalidParameterValue.invalid(request_type, "SpotInstanceType")
    if behaviour not in ("terminate", "stop", "hibernate"):
        raise InvalidParameterValue.invalid(behaviour, "InstanceInterruptionBehavior")
    if behaviour != "terminate" and request_type != "persistent":
        raise InvalidParameterCombination(f"The interruption behavior '{behaviour}' is supported only for "
                                          "persistent Spot requests.")


# RunInstances' members that are not a Spot request's launch specification
NOT_LAUNCHED = ("MinCount", "MaxCount", "ClientToken", "DryRun", "InstanceMarketOptions", "LaunchTemplate")


def _time(value) -> datetime | None:
    """A time as a request or a stored template gives it (datetime, or ISO text)."""
    if value is None or isinstance(value, datetime):
        return value
    try:
        return aware(datetime.fromisoformat(str(value).replace("Z", "+00:00")))
    except ValueError:
        raise InvalidParameterValue.invalid(value, "ValidUntil") from None


def plan(ctx: Context, p: dict, instance_type: str, zone: str) -> dict | None:
    """RunInstances' InstanceMarketOptions -> what its Spot requests will be (None: on-demand),
    or AWS's refusal (SpotMaxPriceTooLow: RunInstances never waits for a price). A request keeps
    the launch's parameters: a persistent one launches the same again."""
    from .launch_templates import jsonable

    options = p.get("InstanceMarketOptions")
    if not options:
        return None
    market = options.get("MarketType") or "spot"
    if market != "spot":
        raise Unsupported(f"The market type '{market}' is not supported by this emulator.")
    spot = options.get("SpotOptions") or {}
    request_type = spot.get("SpotInstanceType") or "one-time"
    behaviour = spot.get("InstanceInterruptionBehavior") or "terminate"
    _check_behaviour(request_type, behaviour)
    max_price = _max_price(spot.get("MaxPrice"), instance_type)
    current = price(instance_type, zone, utcnow())
    if max_price < current:
        raise SpotMaxPriceTooLow(_too_low(max_price, current))
    return {"max_price": max_price, "type": request_type, "behaviour": behaviour,
            "valid_until": _time(spot.get("ValidUntil")),
            "spec": jsonable({k: v for k, v in p.items() if k not in NOT_LAUNCHED}),
            "tags": tag_specifications(p.get("TagSpecifications"), "spot-instances-request")}


def link(ctx: Context, rows: list[Instance], planned: dict | None, request: SpotInstanceRequest | None = None) -> None:
    """Each new instance's Spot request: `request` (a request being fulfilled), else a new one
    per instance made active with it (RunInstances with InstanceMarketOptions)."""
    if planned is None and request is None:
        return
    now = utcnow()
    for row in rows:
        req = request
        if req is None:
            req = SpotInstanceRequest(id=_new_id(), account_id=ctx.account_id, region=ctx.region,
                                      spot_price=_text(planned["max_price"]), request_type=planned["type"],
                                      interruption_behavior=planned["behaviour"], valid_until=planned["valid_until"],
                                      launch_spec=planned["spec"])
            ctx.session.add(req)
            ctx.session.flush()
            if planned["tags"]:
                set_tags(ctx, req.id, planned["tags"])
        req.state, req.status_code, req.status_time = "active", "fulfilled", now
        req.status_message = "Your spot request is fulfilled."
        req.instance_id, req.launched_zone, req.interruption = row.id, row.availability_zone, None
        row.spot_request_id = req.id


def one_time(session, row: Instance) -> bool:
    """Whether a user may not stop this instance: a Spot Instance of a one-time request."""
    if not row.spot_request_id:
        return False
    req = session.get(SpotInstanceRequest, row.spot_request_id)
    return req is not None and req.request_type == "one-time"


def user_stopped(session, row: Instance) -> None:
    """StopInstances of a persistent request's Spot Instance: the request is disabled, as AWS's."""
    req = session.get(SpotInstanceRequest, row.spot_request_id) if row.spot_request_id else None
    if req is not None and req.instance_id == row.id and req.state == "active":
        _status(req, "disabled", "instance-stopped-by-user", "Spot Instance stopped due to user-initiated stop.")


def started(session, row: Instance) -> None:
    """StartInstances of a stopped Spot Instance (by its user, or after an interruption that
    stopped it: on AWS EC2 itself restarts those when capacity returns): its request is active."""
    req = session.get(SpotInstanceRequest, row.spot_request_id) if row.spot_request_id else None
    if req is not None and req.instance_id == row.id and req.state == "disabled":
        _status(req, "active", "fulfilled", "Your spot request is fulfilled.")


def _zone_of(ctx: Context, spec: dict) -> str:
    from . import vpcs
    if spec.get("SubnetId"):
        return vpcs.get_subnet(ctx, spec["SubnetId"]).availability_zone
    nics = spec.get("NetworkInterfaces") or []
    if nics and nics[0].get("SubnetId"):
        return vpcs.get_subnet(ctx, nics[0]["SubnetId"]).availability_zone
    return vpcs.default_subnet(ctx, (spec.get("Placement") or {}).get("AvailabilityZone")).availability_zone


def _status(req: SpotInstanceRequest, state: str, code: str, message: str) -> None:
    """Set a request's state and status; its time moves only when something changed."""
    message = message[:255]
    if (req.state, req.status_code, req.status_message) != (state, code, message):
        req.state, req.status_code, req.status_message, req.status_time = state, code, message, utcnow()


def _fulfill(ctx: Context, req: SpotInstanceRequest) -> None:
    """Launch the request's instance if the price allows now; else it waits (price-too-low)."""
    from .instances import launch

    spec = req.launch_spec
    instance_type = spec.get("InstanceType") or "m1.small"
    current = price(instance_type, _zone_of(ctx, spec), utcnow())
    if float(req.spot_price) < current:
        _status(req, "open", "price-too-low", _too_low(float(req.spot_price), current))
        return
    launch(ctx, {**spec, "MinCount": 1, "MaxCount": 1}, spot_request=req)


def _check_launch(ctx: Context, spec: dict) -> None:
    """AWS's refusal of a launch specification that could never launch (a bad image, key, group,
    subnet...), found by launching it and rolling that back: the same checks, none repeated here."""
    from .instances import launch

    savepoint = ctx.session.begin_nested()
    try:
        launch(ctx, {**spec, "MinCount": 1, "MaxCount": 1})
    finally:
        savepoint.rollback()


# ------------------------------------------------------------------------------- handlers

def _out(req: SpotInstanceRequest, tags: dict | None) -> dict:
    spec = req.launch_spec or {}
    launch_spec = {k: spec[k] for k in ("ImageId", "InstanceType", "KeyName", "SubnetId", "UserData",
                                        "BlockDeviceMappings", "IamInstanceProfile", "KernelId", "RamdiskId",
                                        "EbsOptimized", "NetworkInterfaces") if spec.get(k) is not None}
    if spec.get("SecurityGroupIds") or spec.get("SecurityGroups"):
        launch_spec["SecurityGroups"] = [{"GroupId": g} for g in spec.get("SecurityGroupIds") or []] + \
                                        [{"GroupName": g} for g in spec.get("SecurityGroups") or []]
    if spec.get("Placement"):
        launch_spec["Placement"] = spec["Placement"]
    launch_spec["Monitoring"] = {"Enabled": bool((spec.get("Monitoring") or {}).get("Enabled"))}
    return {"SpotInstanceRequestId": req.id, "SpotPrice": req.spot_price, "Type": req.request_type,
            "State": req.state, "Status": {"Code": req.status_code, "Message": req.status_message,
                                           "UpdateTime": req.status_time},
            "InstanceId": req.instance_id, "LaunchSpecification": launch_spec, "CreateTime": req.created_at,
            "ProductDescription": "Linux/UNIX", "LaunchedAvailabilityZone": req.launched_zone,
            "InstanceInterruptionBehavior": req.interruption_behavior, "ValidUntil": req.valid_until,
            "Tags": tag_list(tags or {})}


@action("RequestSpotInstances")
def request_spot_instances(ctx: Context, p: dict) -> dict:
    from .launch_templates import jsonable

    spec = jsonable(dict(p.get("LaunchSpecification") or {}))
    if not spec.get("ImageId"):
        raise MissingParameter("LaunchSpecification.ImageId")
    if spec.get("SecurityGroups") is None and spec.get("SecurityGroupIds") is None:
        spec.pop("SecurityGroups", None)
    instance_type = spec.get("InstanceType") or "m1.small"
    if instance_type not in INSTANCE_TYPES:
        raise InvalidParameterValue.invalid(instance_type, "InstanceType")
    spec["InstanceType"] = instance_type
    request_type = p.get("Type") or "one-time"
    behaviour = p.get("InstanceInterruptionBehavior") or "terminate"
    _check_behaviour(request_type, behaviour)
    max_price = _max_price(p.get("SpotPrice"), instance_type)
    count = p.get("InstanceCount") or 1
    if not 1 <= count <= 20:
        raise InvalidParameterValue.invalid(count, "InstanceCount", "It must be between 1 and 20.")
    valid_until = _time(p.get("ValidUntil"))
    if valid_until is not None and aware(valid_until) <= utcnow():
        raise InvalidParameterValue("The ValidUntil time must be in the future.")
    refuse_other_tag_types(p.get("TagSpecifications"), {"spot-instances-request"})
    tags = tag_specifications(p.get("TagSpecifications"), "spot-instances-request")
    made = []
    for _ in range(count):
        req = SpotInstanceRequest(id=_new_id(), account_id=ctx.account_id, region=ctx.region,
                                  spot_price=_text(max_price), request_type=request_type,
                                  interruption_behavior=behaviour, launch_spec=spec, valid_until=valid_until,
                                  state="open", status_code="pending-evaluation",
                                  status_message="Your Spot request has been submitted for review, and is "
                                                 "pending evaluation.")
        ctx.session.add(req)
        ctx.session.flush()
        set_tags(ctx, req.id, tags)
        _fulfill(ctx, req)
        if req.state == "open" and not made:
            _check_launch(ctx, spec)  # waiting for its price, but launchable when it comes
        made.append(req)
    ctx.session.flush()
    return {"SpotInstanceRequests": [_out(r, tag_dict(tags)) for r in made]}


def _check_id(value: str) -> None:
    if not well_formed(value, "sir"):
        raise InvalidSpotInstanceRequestIDMalformed(value)


REQUESTS = Resource("SpotInstanceRequests", lambda ctx, page, tags: [_out(r, tags[r.id]) for r in page], {
    "spot-instance-request-id": lambda r: r.id,
    "state": lambda r: r.state,
    "status-code": lambda r: r.status_code,
    "status-message": lambda r: r.status_message,
    "instance-id": lambda r: r.instance_id,
    "type": lambda r: r.request_type,
    "spot-price": lambda r: r.spot_price,
    "launched-availability-zone": lambda r: r.launched_zone,
    "launch.instance-type": lambda r: r.launch_spec.get("InstanceType"),
    "launch.image-id": lambda r: r.launch_spec.get("ImageId"),
    "launch.key-name": lambda r: r.launch_spec.get("KeyName"),
    "product-description": lambda r: "Linux/UNIX",
    "create-time": lambda r: r.created_at,
}, (Selector("SpotInstanceRequestIds", lambda r: r.id, InvalidSpotInstanceRequestIDNotFound, _check_id),),
    max_results=(5, 1000), ids_exclude_max_results=("SpotInstanceRequestIds", "spotInstanceRequestId"))


def _requests(ctx: Context) -> list[SpotInstanceRequest]:
    return ctx.session.scalars(select(SpotInstanceRequest).where(
        SpotInstanceRequest.account_id == ctx.account_id, SpotInstanceRequest.region == ctx.region)
        .order_by(SpotInstanceRequest.id)).all()


@action("DescribeSpotInstanceRequests")
def describe_spot_instance_requests(ctx: Context, p: dict) -> dict:
    return describe(ctx, REQUESTS, p, _requests(ctx))


@action("CancelSpotInstanceRequests")
def cancel_spot_instance_requests(ctx: Context, p: dict) -> dict:
    ids = p["SpotInstanceRequestIds"]
    for i in ids:
        _check_id(i)
    wanted, rows = list(dict.fromkeys(ids)), {}
    for start in range(0, len(wanted), 500):  # bounded IN lists, however many ids (the fuzz test's 70,000)
        rows.update((r.id, r) for r in ctx.session.scalars(select(SpotInstanceRequest).where(
            SpotInstanceRequest.account_id == ctx.account_id, SpotInstanceRequest.region == ctx.region,
            SpotInstanceRequest.id.in_(wanted[start:start + 500])).with_for_update()))
    missing = [i for i in ids if i not in rows]
    if missing:
        raise InvalidSpotInstanceRequestIDNotFound(*missing)
    now = utcnow()
    out = []
    for i in dict.fromkeys(ids):
        req = rows[i]
        if req.state in ("open", "active", "disabled"):
            running = req.state == "active" and req.instance_id is not None
            req.state, req.status_time = "cancelled", now
            # The instance runs on (AWS terminates nothing on a cancel).
            req.status_code = "request-canceled-and-instance-running" if running else "canceled-before-fulfillment"
            req.status_message = ("Your Spot request is canceled, but your instance is still running." if running
                                  else "You canceled your Spot request before it was fulfilled.")
        out.append({"SpotInstanceRequestId": req.id, "State": req.state})
    return {"CancelledSpotInstanceRequests": out}


@action("DescribeSpotPriceHistory")
def describe_spot_price_history(ctx: Context, p: dict) -> dict:
    check_max_results(p.get("MaxResults"), 1, 10000)
    now = utcnow()
    end = aware(p["EndTime"]) if p.get("EndTime") else now
    start = aware(p["StartTime"]) if p.get("StartTime") else end
    if start > end:
        raise InvalidParameterValue("The start time must be before the end time.")
    end = min(end, now)  # no prices from the future
    start = max(start, end - timedelta(days=90))  # AWS keeps 90 days
    types = p.get("InstanceTypes") or sorted(INSTANCE_TYPES)
    for t in types:
        if t not in INSTANCE_TYPES:
            raise InvalidParameterValue.invalid(t, "InstanceType")
    zones = [z.name for z in REGIONS[ctx.region].zones]
    if p.get("AvailabilityZone"):
        if p["AvailabilityZone"] not in zones:
            raise InvalidParameterValue(f"Invalid availability zone: [{p['AvailabilityZone']}]")
        zones = [p["AvailabilityZone"]]
    products = sorted(d for d in (p.get("ProductDescriptions") or PRODUCTS) if d in PRODUCTS)
    types, zones = sorted(types), sorted(zones)
    spec = {"availability-zone": lambda r: r["AvailabilityZone"], "instance-type": lambda r: r["InstanceType"],
            "product-description": lambda r: r["ProductDescription"], "spot-price": lambda r: r["SpotPrice"],
            "timestamp": lambda r: r["Timestamp"]}
    apply_filters([], p.get("Filters"), spec)  # an unknown filter is refused even with nothing to filter

    def key(r: dict) -> str:  # newest first, then type, zone, product: the order rows are made in
        return (f"{9999999999 - int(r['Timestamp'].timestamp()):010d}|{r['InstanceType']}|{r['AvailabilityZone']}"
                f"|{r['ProductDescription']}")
    after = token_key(p["NextToken"]) if p.get("NextToken") else None
    # One record per hour that began in the window (and the one in force at its start), made an
    # hour at a time and only until the page is full: a 90-day window of every type is millions.
    limit = p.get("MaxResults") or 1000
    page: list[dict] = []
    h = end.replace(minute=0, second=0, microsecond=0)
    first = start.replace(minute=0, second=0, microsecond=0)
    while h >= first and len(page) <= limit:
        rows = [{"AvailabilityZone": z, "InstanceType": t, "ProductDescription": d,
                 "SpotPrice": _text(price(t, z, h)), "Timestamp": h} for t in types for z in zones for d in products]
        rows = apply_filters(rows, p.get("Filters"), spec)
        page += [r for r in rows if after is None or key(r) > after][:limit + 1 - len(page)]
        h -= timedelta(hours=1)
    token = None
    if len(page) > limit:
        page = page[:limit]
        token = next_token(key(page[-1]))
    return {"SpotPriceHistory": page, "NextToken": token}


# ------------------------------------------------------------------------------- interruptions

@action("ec2emu:InterruptSpotInstances")
def interrupt_spot_instances(ctx: Context, p: dict) -> None:
    """The admin call (not EC2's: AWS's own is Fault Injection Service's): give these Spot
    Instances an interruption notice; the sweep carries it out `NoticeSeconds` later."""
    from .instances import get_instances

    text = str(p.get("NoticeSeconds") or DEFAULT_NOTICE_SECONDS)
    notice = int(text) if re.fullmatch(r"[0-9]{1,5}", text) else -1
    if not 0 <= notice <= 3600:
        raise InvalidParameterValue.invalid(notice, "NoticeSeconds", "It must be between 0 and 3600.")
    now = utcnow()
    for row in get_instances(ctx, p["InstanceIds"]):
        req = ctx.session.get(SpotInstanceRequest, row.spot_request_id, with_for_update=True) \
            if row.spot_request_id else None
        if req is None or req.instance_id != row.id or req.state not in ("active", "cancelled"):
            raise InvalidParameterValue(f"The instance '{row.id}' is not a Spot Instance.")
        if row.state not in LIVE:
            raise IncorrectInstanceState.worded(f"The instance '{row.id}' is not in the 'running' state.")
        action_ = req.interruption_behavior
        req.interruption = {"action": action_, "time": iso8601(now + timedelta(seconds=notice)),
                            "rebalance": iso8601(now)}
        req.status_code, req.status_message = MARKED[action_]
        req.status_time = now


def for_metadata(session, instance_id: str, spot_request_id: str | None) -> dict | None:
    """What the metadata service shows of a Spot Instance's notice: {"action", "time",
    "rebalance"}, or None (no notice: its paths answer 404, as AWS's do)."""
    if not spot_request_id:
        return None
    req = session.get(SpotInstanceRequest, spot_request_id)
    if req is None or req.instance_id != instance_id or not req.interruption:
        return None
    return dict(req.interruption)


MARKED = {  # an interruption's notice: the request's status
    "terminate": ("marked-for-termination", "Your Spot Instance is marked to be terminated."),
    "stop": ("marked-for-stop", "Your Spot Instance is marked to be stopped."),
    "hibernate": ("marked-for-hibernation", "Your Spot Instance is marked to be hibernated."),
}
REASONS = {
    "terminate": ("Server.SpotInstanceTermination", "Server.SpotInstanceTermination: Spot instance termination"),
    "stop": ("Server.SpotInstanceShutdown", "Server.SpotInstanceShutdown: Spot instance shutdown"),
}
AFTER = {  # (request type, action) -> the request's state and status after the interruption
    ("one-time", "terminate"): ("closed", "instance-terminated-no-capacity"),
    ("persistent", "terminate"): ("open", "instance-terminated-no-capacity"),
    ("persistent", "stop"): ("disabled", "instance-stopped-no-capacity"),
}


def _carry_out(ctx: Context, req: SpotInstanceRequest, now: datetime) -> None:
    from .instances import interrupt

    action_ = "stop" if req.interruption["action"] == "hibernate" else req.interruption["action"]
    row = ctx.session.get(Instance, req.instance_id, with_for_update=True)
    if row is not None and row.state in LIVE:
        interrupt(ctx, row, "stopping" if action_ == "stop" else "shutting-down", *REASONS[action_], now)
    state, code = AFTER[(req.request_type, action_)]
    _status(req, "cancelled" if req.state == "cancelled" else state, code,
            f"Your Spot Instance was {'stopped' if action_ == 'stop' else 'terminated'} because there was no "
            "Spot capacity available.")
    req.interruption = None
    if req.state == "open":
        req.instance_id = None


# What keeps a request open rather than failing it, when its launch is refused (AWS's statuses)
WAITING = {"InsufficientInstanceCapacity": "capacity-not-available", "InstanceLimitExceeded": "capacity-not-available",
           "InsufficientFreeAddressesInSubnet": "capacity-not-available",
           "InvalidPlacementGroup.InUse": "placement-group-constraint"}


def sweep(host: Host) -> bool:
    """The watchdog's round (every few seconds): carry out the notices that are due, move the
    requests whose instance the user terminated, end expired ones, and fulfill the open ones
    the price now allows. Only those rows are read; one transaction per request, whose failure
    never stops the round. -> whether host work was asked for."""
    now = utcnow()
    wrote = False
    with host.Session() as session:
        ending = select(Instance.id).where(Instance.state.in_(("shutting-down", "terminated")))
        due = session.scalars(select(SpotInstanceRequest.id).where(
            SpotInstanceRequest.interruption.is_not(None) | (SpotInstanceRequest.state == "open")
            | ((SpotInstanceRequest.state == "active") & SpotInstanceRequest.instance_id.in_(ending)))).all()
    for req_id in due:
        with host.Session() as session:
            req = session.get(SpotInstanceRequest, req_id, with_for_update=True)
            if req is None:
                continue
            ctx = host.context(session, req.account_id, req.region)
            try:
                _step(ctx, req, now)
                session.commit()
                wrote = wrote or ctx.wrote_tasks
            except EC2Error as exc:  # its launch was refused: wait (capacity) or fail (bad parameters)
                session.rollback()
                req = session.get(SpotInstanceRequest, req_id)
                waiting = WAITING.get(exc.code)
                _status(req, "open" if waiting else "failed", waiting or "bad-parameters", exc.message)
                session.commit()
            except Exception:  # noqa: BLE001 (a bug must not stop the other requests' round)
                session.rollback()
                log.exception("Spot request %s: its round failed", req_id)
    return wrote


def _step(ctx: Context, req: SpotInstanceRequest, now: datetime) -> None:
    if req.interruption:
        if _time(req.interruption["time"]) <= now:
            _carry_out(ctx, req, now)
        return
    if req.state == "active":
        row = ctx.session.get(Instance, req.instance_id) if req.instance_id else None
        if row is None or row.state not in ("shutting-down", "terminated"):
            return
        # The user terminated it: a one-time request is done; a persistent one launches again.
        message = "Spot Instance terminated due to user-initiated termination."
        if req.request_type == "one-time":
            _status(req, "closed", "instance-terminated-by-user", message)
            return
        _status(req, "open", "instance-terminated-by-user", message)
        req.instance_id = None
    if req.state != "open":
        return
    if req.valid_until is not None and aware(req.valid_until) <= now:
        _status(req, "cancelled", "schedule-expired",
                "Your Spot request has expired because it was not fulfilled before the specified date.")
        return
    _fulfill(ctx, req)

