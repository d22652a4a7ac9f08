"""Spot Instances end to end with boto3, the AWS CLI and `ec2emu spot interrupt` (none driver):
the deterministic price history, requests fulfilled or left open by price, RunInstances'
InstanceMarketOptions, cancellation, what a user's termination does to a request, and
interruptions carried out as the request says, with AWS's state reasons. The guest test
(test_guests.py) reads the notice inside a real guest."""
from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from emulator import db
from emulator.config import Config
from emulator.spot import on_demand
from metadata.server import MetadataServer
from metadata.tree import meta_data

from .helpers import aws_cli, eventually, expect_error, fast_waiter, tiny_image
from .server import ROOT

HIGH = "1.0"  # above any price here
LOW = "0.000001"


@pytest.fixture(scope="module")
def image(ec2):
    return tiny_image(ec2)


def _req(ec2, req_id: str) -> dict:
    return ec2.describe_spot_instance_requests(SpotInstanceRequestIds=[req_id])["SpotInstanceRequests"][0]


def _inst(ec2, iid: str) -> dict:
    return ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]


def _interrupt(server, *ids: str, notice: int = 1) -> None:
    done = subprocess.run([sys.executable, "-m", "emulator.cli", "spot", "interrupt", *ids, "--notice", str(notice),
                           "--endpoint", server.endpoint], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_price_history_is_a_fixed_hourly_series(ec2):
    now = datetime.now(timezone.utc)
    ask = dict(InstanceTypes=["t3.micro", "m5.large"], ProductDescriptions=["Linux/UNIX"],
               StartTime=now - timedelta(hours=5), EndTime=now)
    first = ec2.describe_spot_price_history(**ask)["SpotPriceHistory"]
    assert first == ec2.describe_spot_price_history(**ask)["SpotPriceHistory"]  # the same on every call
    zones = {z["ZoneName"] for z in ec2.describe_availability_zones()["AvailabilityZones"]}
    assert {r["AvailabilityZone"] for r in first} == zones
    assert len(first) == 6 * 2 * len(zones)  # the hour in force at the start, and five more
    for r in first:
        od = on_demand(r["InstanceType"])
        assert 0.30 * od <= float(r["SpotPrice"]) <= 0.45 * od + 1e-6
        assert r["Timestamp"].minute == 0 and r["Timestamp"].second == 0
    stamps = [r["Timestamp"] for r in first]
    assert stamps == sorted(stamps, reverse=True)  # newest first, as AWS lists them
    assert len({r["SpotPrice"] for r in first}) > 6  # it moves
    one_zone = ec2.describe_spot_price_history(**ask, AvailabilityZone="us-east-1b",
                                               Filters=[{"Name": "instance-type", "Values": ["m5.large"]}])
    assert {(r["AvailabilityZone"], r["InstanceType"]) for r in one_zone["SpotPriceHistory"]} == {("us-east-1b", "m5.large")}
    paged = ec2.describe_spot_price_history(**ask, MaxResults=5)
    assert paged["SpotPriceHistory"] == first[:5] and paged["NextToken"]


def test_requests_fulfilled_or_open_by_price_and_cancelled(server, ec2, image):
    out = ec2.request_spot_instances(SpotPrice=HIGH, InstanceCount=2, LaunchSpecification={
        "ImageId": image, "InstanceType": "t3.micro"}, TagSpecifications=[
        {"ResourceType": "spot-instances-request", "Tags": [{"Key": "k", "Value": "v"}]}])["SpotInstanceRequests"]
    assert len(out) == 2 and all(r["SpotInstanceRequestId"].startswith("sir-") for r in out)
    assert {(r["State"], r["Status"]["Code"]) for r in out} == {("active", "fulfilled")}
    assert out[0]["Tags"] == [{"Key": "k", "Value": "v"}]
    inst = _inst(ec2, out[0]["InstanceId"])
    assert inst["InstanceLifecycle"] == "spot" and inst["SpotInstanceRequestId"] == out[0]["SpotInstanceRequestId"]
    spot_ids = {i["InstanceId"] for r in ec2.describe_instances(Filters=[
        {"Name": "instance-lifecycle", "Values": ["spot"]}])["Reservations"] for i in r["Instances"]}
    assert {r["InstanceId"] for r in out} <= spot_ids
    # Too low a price: it waits, open, and says why; a cancel ends it.
    low = ec2.request_spot_instances(SpotPrice=LOW, LaunchSpecification={"ImageId": image, "InstanceType": "t3.micro"})
    low = low["SpotInstanceRequests"][0]
    assert (low["State"], low["Status"]["Code"]) == ("open", "price-too-low") and "InstanceId" not in low
    assert "lower than the minimum required Spot request fulfillment price" in low["Status"]["Message"]
    gone = ec2.cancel_spot_instance_requests(SpotInstanceRequestIds=[low["SpotInstanceRequestId"],
                                                                     out[1]["SpotInstanceRequestId"]])
    assert {c["State"] for c in gone["CancelledSpotInstanceRequests"]} == {"cancelled"}
    assert _req(ec2, low["SpotInstanceRequestId"])["Status"]["Code"] == "canceled-before-fulfillment"
    assert _req(ec2, out[1]["SpotInstanceRequestId"])["Status"]["Code"] == "request-canceled-and-instance-running"
    assert _inst(ec2, out[1]["InstanceId"])["State"]["Name"] in ("pending", "running")  # a cancel stops nothing
    by_state = ec2.describe_spot_instance_requests(Filters=[{"Name": "state", "Values": ["cancelled"]}])
    assert {low["SpotInstanceRequestId"], out[1]["SpotInstanceRequestId"]} <= {
        r["SpotInstanceRequestId"] for r in by_state["SpotInstanceRequests"]}
    expect_error("InvalidSpotInstanceRequestID.NotFound", ec2.describe_spot_instance_requests,
                 SpotInstanceRequestIds=["sir-0123abcd"])
    expect_error("InvalidSpotInstanceRequestID.Malformed", ec2.cancel_spot_instance_requests,
                 SpotInstanceRequestIds=["sir-zz"])
    expect_error("InvalidParameterCombination", ec2.request_spot_instances, SpotPrice=HIGH,
                 InstanceInterruptionBehavior="stop", LaunchSpecification={"ImageId": image})
    # Waiting for its price, but never launchable: refused at once (a bad image), not later.
    expect_error("InvalidAMIID.NotFound", ec2.request_spot_instances, SpotPrice=LOW,
                 LaunchSpecification={"ImageId": "ami-0123456789abcdef0", "InstanceType": "t3.micro"})
    # The AWS CLI asks the same.
    cli = aws_cli(server, "ec2", "describe-spot-instance-requests", "--spot-instance-request-ids",
                  out[0]["SpotInstanceRequestId"])
    assert cli["SpotInstanceRequests"][0]["InstanceId"] == out[0]["InstanceId"]
    ec2.terminate_instances(InstanceIds=[r["InstanceId"] for r in out])


def test_run_instances_in_the_spot_market(ec2, image):
    assert expect_error("SpotMaxPriceTooLow", ec2.run_instances, ImageId=image, MinCount=1, MaxCount=1,
                        InstanceType="t3.micro", InstanceMarketOptions={
                            "MarketType": "spot", "SpotOptions": {"MaxPrice": LOW}}).startswith(
        "Your Spot request price of 1e-06 is lower than the minimum required Spot request fulfillment price of")
    inst = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.micro",
                             InstanceMarketOptions={"MarketType": "spot"})["Instances"][0]
    assert inst["InstanceLifecycle"] == "spot"
    req = _req(ec2, inst["SpotInstanceRequestId"])
    assert (req["State"], req["Type"], req["InstanceId"]) == ("active", "one-time", inst["InstanceId"])
    assert float(req["SpotPrice"]) == pytest.approx(on_demand("t3.micro"))  # the default maximum
    fast_waiter(ec2, "instance_running")(InstanceIds=[inst["InstanceId"]])
    assert "one-time Spot Instance request" in expect_error("UnsupportedOperation", ec2.stop_instances,
                                                           InstanceIds=[inst["InstanceId"]])
    # The user terminates it: its one-time request closes.
    ec2.terminate_instances(InstanceIds=[inst["InstanceId"]])
    closed = eventually(lambda: (r := _req(ec2, inst["SpotInstanceRequestId"]))["State"] == "closed" and r,
                        "the request closed", within=30)
    assert closed["Status"]["Code"] == "instance-terminated-by-user"


def test_an_interruption_terminates_after_its_notice(server, ec2, image):
    cfg = Config(state_dir=str(server.state_dir), database_url=server.database_url)
    metadata = MetadataServer(db.session_factory(db.make_engine(cfg.effective_database_url)), server.state_dir,
                              config=cfg)
    inst = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.micro",
                             InstanceMarketOptions={"MarketType": "spot"})["Instances"][0]
    iid = inst["InstanceId"]
    fast_waiter(ec2, "instance_running")(InstanceIds=[iid])
    inst = _inst(ec2, iid)
    tree = meta_data(metadata.lookup(inst["VpcId"], inst["PrivateIpAddress"]))
    assert tree["instance-life-cycle"] == "spot" and "spot" not in tree and "events" not in tree  # no notice yet
    _interrupt(server, iid, notice=4)
    req = _req(ec2, inst["SpotInstanceRequestId"])
    assert req["Status"]["Code"] == "marked-for-termination"
    tree = meta_data(metadata.lookup(inst["VpcId"], inst["PrivateIpAddress"]))
    action = json.loads(tree["spot"]["instance-action"])
    assert action["action"] == "terminate" and tree["spot"]["termination-time"] == action["time"]
    assert json.loads(tree["events"]["recommendations"]["rebalance"])["noticeTime"]
    assert _inst(ec2, iid)["State"]["Name"] == "running"  # the notice first, then the termination
    ended = eventually(lambda: (i := _inst(ec2, iid))["State"]["Name"] in ("shutting-down", "terminated") and i,
                       "the interruption carried out", within=30)
    assert ended["StateReason"]["Code"] == "Server.SpotInstanceTermination"
    assert ended["StateTransitionReason"].startswith("Service initiated")
    req = _req(ec2, inst["SpotInstanceRequestId"])
    assert (req["State"], req["Status"]["Code"]) == ("closed", "instance-terminated-no-capacity")
    # Not a Spot Instance: refused.
    plain = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    done = subprocess.run([sys.executable, "-m", "emulator.cli", "spot", "interrupt", plain, "--endpoint",
                           server.endpoint], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "is not a Spot Instance" in done.stderr
    bad = subprocess.run([sys.executable, "-m", "emulator.cli", "spot", "interrupt", iid, "--notice", "-5",
                          "--endpoint", server.endpoint], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "InvalidParameterValue" in bad.stderr
    ec2.terminate_instances(InstanceIds=[plain])


def test_a_persistent_request_stops_and_is_disabled(server, ec2, image):
    req = ec2.request_spot_instances(SpotPrice=HIGH, Type="persistent", InstanceInterruptionBehavior="stop",
                                     LaunchSpecification={"ImageId": image, "InstanceType": "t3.micro"})
    req = req["SpotInstanceRequests"][0]
    iid = req["InstanceId"]
    fast_waiter(ec2, "instance_running")(InstanceIds=[iid])
    _interrupt(server, iid, notice=1)
    stopped = eventually(lambda: (i := _inst(ec2, iid))["State"]["Name"] in ("stopping", "stopped") and i,
                         "the instance stopped", within=30)
    assert stopped["StateReason"]["Code"] == "Server.SpotInstanceShutdown"
    after = _req(ec2, req["SpotInstanceRequestId"])
    assert (after["State"], after["Status"]["Code"]) == ("disabled", "instance-stopped-no-capacity")
    fast_waiter(ec2, "instance_stopped")(InstanceIds=[iid])
    ec2.start_instances(InstanceIds=[iid])  # a stopped Spot Instance starts again
    fast_waiter(ec2, "instance_running")(InstanceIds=[iid])
    ec2.cancel_spot_instance_requests(SpotInstanceRequestIds=[req["SpotInstanceRequestId"]])
    ec2.terminate_instances(InstanceIds=[iid])


def test_a_persistent_request_launches_again_after_a_termination(ec2, image):
    group = ec2.create_security_group(GroupName=f"spot-{image[-6:]}-{datetime.now().timestamp():.0f}",
                                      Description="spot")["GroupId"]
    first = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.micro", SecurityGroupIds=[group],
                              InstanceMarketOptions={"MarketType": "spot", "SpotOptions": {
                                  "SpotInstanceType": "persistent"}}, TagSpecifications=[
                                  {"ResourceType": "spot-instances-request", "Tags": [{"Key": "k", "Value": "v"}]}])
    first = first["Instances"][0]["InstanceId"]
    req = _req(ec2, _inst(ec2, first)["SpotInstanceRequestId"])
    assert req["Tags"] == [{"Key": "k", "Value": "v"}]
    ec2.terminate_instances(InstanceIds=[first])
    again = eventually(lambda: (r := _req(ec2, req["SpotInstanceRequestId"])).get("InstanceId") not in (None, first)
                       and r, "a new instance for the request", within=30)
    assert again["State"] == "active"
    relaunched = _inst(ec2, again["InstanceId"])
    assert relaunched["SpotInstanceRequestId"] == req["SpotInstanceRequestId"]
    assert [g["GroupId"] for g in relaunched["SecurityGroups"]] == [group]  # the same launch again
    ec2.cancel_spot_instance_requests(SpotInstanceRequestIds=[req["SpotInstanceRequestId"]])
    ec2.terminate_instances(InstanceIds=[again["InstanceId"]])
