"""api/protocol.py on its own: inputs parsed from the model as AWS reads them, faults answered
as EC2 errors (never an exception the HTTP layer would turn into a 500)."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from api import model
from api.protocol import parse_input
from emulator.errors import EC2Error


def parse(action: str, params: dict) -> dict:
    return parse_input(model.operation(action).input_shape, params)


def error(action: str, params: dict) -> EC2Error:
    with pytest.raises(EC2Error) as exc:
        parse(action, params)
    return exc.value


# ------------------------------------------------------------------------------- timestamps

UPLOAD_END = "ClientData.UploadEnd"
VALID_UNTIL = "InstanceMarketOptions.SpotOptions.ValidUntil"
RUN = {"ImageId": "ami-12345678", "MinCount": "1", "MaxCount": "1", "InstanceMarketOptions.MarketType": "spot"}


@pytest.mark.parametrize("value", ["1e20", "-1e20", "inf", "-inf", "nan", "1e400", "-99999999999", "x"])
@pytest.mark.parametrize("action, member, base", [("ImportImage", UPLOAD_END, {}), ("RunInstances", VALID_UNTIL, RUN)])
def test_timestamps_out_of_range_are_invalid_parameter_values(action, member, base, value):
    err = error(action, {**base, member: value})
    assert (err.code, err.status) == ("InvalidParameterValue", 400)
    assert member in err.message


@pytest.mark.parametrize("value, expected", [
    ("2030-01-02T03:04:05Z", datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)),
    ("2030-01-02T03:04:05.250+00:00", datetime(2030, 1, 2, 3, 4, 5, 250000, tzinfo=timezone.utc)),
    ("2030-01-02T03:04:05", datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)),
    ("0", datetime(1970, 1, 1, tzinfo=timezone.utc)),
    ("1e9", datetime(2001, 9, 9, 1, 46, 40, tzinfo=timezone.utc)),
])
def test_timestamps_in_range(value, expected):
    assert parse("ImportImage", {UPLOAD_END: value})["ClientData"]["UploadEnd"] == expected


# ---------------------------------------------------------------------- bare list members

def test_a_bare_list_member_is_its_first_item():
    """libcloud sends DescribeKeyPairs KeyName=x (no .1); AWS reads it as KeyName.1."""
    assert parse("DescribeKeyPairs", {"KeyName": "k"}) == {"KeyNames": ["k"]}
    assert parse("DescribeInstances", {"InstanceId": "i-1"}) == {"InstanceIds": ["i-1"]}
    assert parse("DescribeKeyPairs", {"KeyName": "k", "KeyName.2": "l"}) == {"KeyNames": ["k", "l"]}
    assert parse("DescribeKeyPairs", {"KeyName": "k", "KeyName.1": "explicit"}) == {"KeyNames": ["explicit"]}
    # a list of structures: Filter.Name is Filter.1.Name; nested lists too (Filter.1.Value)
    assert parse("DescribeKeyPairs", {"Filter.Name": "key-name", "Filter.Value": "k"}) == {
        "Filters": [{"Name": "key-name", "Values": ["k"]}]}
    assert parse("RunInstances", {**RUN, "SecurityGroupId": "sg-1"})["SecurityGroupIds"] == ["sg-1"]


def test_list_faults_are_still_refused():
    assert error("DescribeKeyPairs", {"KeyName.x": "k"}).code == "UnknownParameter"
    assert error("DescribeKeyPairs", {"KeyName.0": "k"}).code == "UnknownParameter"
    assert error("DescribeKeyPairs", {"Filter.1": "x"}).code == "InvalidParameterValue"
    assert error("DescribeKeyPairs", {"Filter.Bogus": "x"}).code == "UnknownParameter"


# --------------------------------------------------------------------------------- errors

def test_error_messages_are_cut_not_echoed_whole():
    from api.protocol import MAX_MESSAGE, render_error
    import xml.etree.ElementTree as ET
    short = ET.fromstring(render_error("InvalidParameterValue", "Invalid value 'x'", "r-1"))
    assert short.find("Errors/Error/Message").text == "Invalid value 'x'"
    long = ET.fromstring(render_error("InvalidParameterValue", f"Invalid value '{'<' * 10_000_000}'", "r-1"))
    message = long.find("Errors/Error/Message").text
    assert len(message) == MAX_MESSAGE and message.startswith("Invalid value '<<<") and message.endswith("...")
