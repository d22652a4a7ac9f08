"""The web console (/console/), first part, over HTTP against a running server (none driver):
sign-in and its session cookie, CSRF on every change, the dashboard's counts, the instances
page (the JSON it polls follows state changes; launch, stop, terminate through the same handlers
as the API, AWS's errors shown), and accounts kept apart. Browser tests come with the rest of
issue 11."""
from __future__ import annotations

import re

import pytest
import requests

from .conftest import OTHER_ACCESS_KEY, OTHER_SECRET_KEY
from .helpers import eventually, tiny_image
from .server import ACCESS_KEY, SECRET_KEY


def _signed_in(server, access_key=ACCESS_KEY, secret_key=SECRET_KEY) -> requests.Session:
    web = requests.Session()
    answer = web.post(server.endpoint + "/console/sign-in", data={"access_key": access_key, "secret_key": secret_key},
                      allow_redirects=False, timeout=30)
    assert answer.status_code == 303, answer.text
    return web


def _csrf(html: str) -> str:
    return re.search(r'name="csrf" value="([0-9a-f]+)"', html).group(1)


def _state(web, server, iid: str) -> str | None:
    rows = web.get(server.endpoint + "/console/api/instances", timeout=30).json()["instances"]
    return next((r["state"] for r in rows if r["id"] == iid), None)


def test_sign_in_and_its_cookie(server):
    page = requests.get(server.endpoint + "/console", timeout=30)
    assert page.status_code == 200 and 'name="secret_key"' in page.text  # the sign-in form
    wrong = requests.post(server.endpoint + "/console/sign-in", data={"access_key": ACCESS_KEY, "secret_key": "nope"},
                          allow_redirects=False, timeout=30)
    assert wrong.status_code == 401 and "not able to validate" in wrong.text and "set-cookie" not in wrong.headers
    right = requests.post(server.endpoint + "/console/sign-in", data={"access_key": ACCESS_KEY, "secret_key": SECRET_KEY},
                          allow_redirects=False, timeout=30)
    cookie = right.headers["set-cookie"]
    assert right.status_code == 303 and "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
    web = requests.Session()
    web.cookies.update(right.cookies)
    assert "Dashboard" in web.get(server.endpoint + "/console/", timeout=30).text
    # A tampered cookie is no session (positive control just above).
    forged = requests.Session()
    value = right.cookies.get("ec2emu_console")
    forged.cookies.set("ec2emu_console", value.replace("123456789012", "210987654321", 1))
    assert 'name="secret_key"' in forged.get(server.endpoint + "/console/", timeout=30).text
    assert forged.get(server.endpoint + "/console/api/instances", timeout=30).status_code == 401


def test_launch_follow_stop_and_terminate(server, ec2):
    web = _signed_in(server)
    page = web.get(server.endpoint + "/console/instances", timeout=30).text
    csrf = _csrf(page)
    image = tiny_image(ec2)
    assert image in page  # the launch form offers the default images
    before = {i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]}
    # No CSRF token: refused, and nothing launched.
    refused = web.post(server.endpoint + "/console/instances/launch", data={"image_id": image}, allow_redirects=False,
                       timeout=30)
    assert refused.status_code == 403
    launched = web.post(server.endpoint + "/console/instances/launch", data={
        "csrf": csrf, "image_id": image, "instance_type": "t3.micro", "count": "1", "user_data": "#!/bin/sh\necho hi\n"},
        allow_redirects=False, timeout=30)
    assert launched.status_code == 303
    after = {i["InstanceId"]: i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]}
    new = set(after) - before
    assert len(new) == 1  # exactly one: the refused request launched nothing
    iid = new.pop()
    assert after[iid]["InstanceType"] == "t3.micro"
    assert ec2.describe_instance_attribute(InstanceId=iid, Attribute="userData")["UserData"]["Value"]
    # The page's JSON follows the state without a reload; the dashboard counts it.
    eventually(lambda: _state(web, server, iid) == "running", "running in the console's list", within=30)
    dashboard = web.get(server.endpoint + "/console/", timeout=30).text
    count = int(re.search(r'data-what="Instances"><b>(\d+)</b>', dashboard).group(1))
    assert count == sum(len(r["Instances"]) for r in ec2.describe_instances()["Reservations"])
    # Stop and terminate go through the API's handlers.
    assert web.post(server.endpoint + f"/console/instances/{iid}/stop", data={"csrf": csrf}, allow_redirects=False,
                    timeout=30).status_code == 303
    eventually(lambda: _state(web, server, iid) in ("stopping", "stopped"), "stopping", within=30)
    assert web.post(server.endpoint + f"/console/instances/{iid}/terminate", data={"csrf": csrf},
                    allow_redirects=False, timeout=30).status_code == 303
    eventually(lambda: ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["State"]["Name"]
               in ("shutting-down", "terminated"), "terminating", within=30)


def test_errors_are_aws_own_and_accounts_stay_apart(server, ec2):
    web = _signed_in(server)
    csrf = _csrf(web.get(server.endpoint + "/console/instances", timeout=30).text)
    bad = web.post(server.endpoint + "/console/instances/launch", data={"csrf": csrf, "image_id": "ami-nothex"},
                   timeout=30)
    assert bad.status_code == 400
    assert 'id="error"' in bad.text and "InvalidAMIID.Malformed: Invalid id: &#34;ami-nothex&#34;" in bad.text
    mine = ec2.run_instances(ImageId=tiny_image(ec2), MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    other = _signed_in(server, OTHER_ACCESS_KEY, OTHER_SECRET_KEY)
    listed = other.get(server.endpoint + "/console/instances", timeout=30).text
    assert mine not in listed and mine not in other.get(server.endpoint + "/console/api/instances", timeout=30).text
    assert mine in web.get(server.endpoint + "/console/instances", timeout=30).text  # positive control
    theirs = other.post(server.endpoint + f"/console/instances/{mine}/terminate",
                        data={"csrf": _csrf(listed)}, timeout=30)
    assert theirs.status_code == 400 and "InvalidInstanceID.NotFound" in theirs.text
    assert ec2.describe_instances(InstanceIds=[mine])["Reservations"][0]["Instances"][0]["State"]["Name"] in (
        "pending", "running")
    # Another account's CSRF token is not this session's.
    assert web.post(server.endpoint + f"/console/instances/{mine}/stop", data={"csrf": _csrf(listed)},
                    allow_redirects=False, timeout=30).status_code == 403
    ec2.terminate_instances(InstanceIds=[mine])
