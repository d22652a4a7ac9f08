"""The web console (/console/) over HTTP against a running server (none driver): sign-in and its
session cookie (and login CSRF), CSRF on every change, the dashboard's counts, the instances
page (the JSON it polls follows state changes; launch, stop, terminate through the same handlers
as the API, AWS's errors shown), the resource pages and their paging, the serial console's
WebSocket, and accounts kept apart. The browser's tests are test_console_browser.py; a real
guest's serial console is test_guests.py's."""
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
    # A sign-in posted from another site's page is refused (login CSRF); from ours it is not.
    other = requests.post(server.endpoint + "/console/sign-in", data={"access_key": ACCESS_KEY, "secret_key": SECRET_KEY},
                          headers={"Origin": "http://attacker.example"}, allow_redirects=False, timeout=30)
    assert other.status_code == 403 and "set-cookie" not in other.headers
    ours = requests.post(server.endpoint + "/console/sign-in", data={"access_key": ACCESS_KEY, "secret_key": SECRET_KEY},
                         headers={"Origin": server.endpoint}, allow_redirects=False, timeout=30)
    assert ours.status_code == 303 and "set-cookie" in ours.headers
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


def _do(web, server, action: str, csrf: str, **fields):
    return web.post(server.endpoint + f"/console/do/{action}", data={"csrf": csrf, **fields}, allow_redirects=False,
                    timeout=30)


def test_key_pairs_groups_volumes_and_network_pages(server, ec2):
    web = _signed_in(server)
    csrf = _csrf(web.get(server.endpoint + "/console/key-pairs", timeout=30).text)
    # A key pair: its private key is the answer's download, once.
    name = f"console-{csrf[:8]}"
    pem = _do(web, server, "CreateKeyPair", csrf, KeyName=name, KeyType="ed25519")
    assert pem.status_code == 200 and f'filename="{name}.pem"' in pem.headers["content-disposition"]
    assert pem.text.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert ec2.describe_key_pairs(KeyNames=[name])["KeyPairs"][0]["KeyType"] == "ed25519"
    assert f'data-name="{name}"' in web.get(server.endpoint + "/console/key-pairs", timeout=30).text
    assert _do(web, server, "DeleteKeyPair", "0" * 64, KeyName=name).status_code == 403  # no valid token
    assert _do(web, server, "DeleteKeyPair", csrf, KeyName=name).status_code == 303
    assert not ec2.describe_key_pairs(Filters=[{"Name": "key-name", "Values": [name]}])["KeyPairs"]
    assert _do(web, server, "TerminateInstances", csrf).status_code == 404  # not one of the console's actions
    # A security group's rule editor: add a rule, see it, remove it.
    group = ec2.create_security_group(GroupName=name, Description="console")["GroupId"]
    assert _do(web, server, "AuthorizeSecurityGroupIngress", csrf, GroupId=group, **{
        "IpPermissions.1.IpProtocol": "tcp", "IpPermissions.1.FromPort": "8080", "IpPermissions.1.ToPort": "8080",
        "IpPermissions.1.IpRanges.1.CidrIp": "198.51.100.0/24"}).status_code == 303
    rules = ec2.describe_security_groups(GroupIds=[group])["SecurityGroups"][0]["IpPermissions"]
    assert rules[0]["FromPort"] == 8080 and rules[0]["IpRanges"] == [{"CidrIp": "198.51.100.0/24"}]
    page = web.get(server.endpoint + "/console/security-groups", timeout=30).text
    assert "198.51.100.0/24" in page and group in page
    assert _do(web, server, "RevokeSecurityGroupIngress", csrf, GroupId=group, **{
        "IpPermissions.1.IpProtocol": "tcp", "IpPermissions.1.FromPort": "8080", "IpPermissions.1.ToPort": "8080",
        "IpPermissions.1.IpRanges.1.CidrIp": "198.51.100.0/24"}).status_code == 303
    assert not ec2.describe_security_groups(GroupIds=[group])["SecurityGroups"][0]["IpPermissions"]
    # AWS's refusal, shown on the page the form was on.
    refused = _do(web, server, "AuthorizeSecurityGroupIngress", csrf, GroupId=group, **{
        "IpPermissions.1.IpProtocol": "tcp", "IpPermissions.1.FromPort": "22", "IpPermissions.1.ToPort": "22",
        "IpPermissions.1.IpRanges.1.CidrIp": "not-a-cidr"})
    assert refused.status_code == 400 and 'id="error"' in refused.text and "InvalidParameterValue" in refused.text
    ec2.delete_security_group(GroupId=group)
    # A volume: create, attach to a running instance, snapshot, detach.
    iid = ec2.run_instances(ImageId=tiny_image(ec2), MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    inst = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    zone = inst["Placement"]["AvailabilityZone"]
    before = {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]}
    assert _do(web, server, "CreateVolume", csrf, AvailabilityZone=zone, Size="1", VolumeType="gp3").status_code == 303
    vol = ({v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]} - before).pop()
    eventually(lambda: ec2.describe_volumes(VolumeIds=[vol])["Volumes"][0]["State"] == "available", "available")
    eventually(lambda: _state(web, server, iid) == "running", "running")
    assert _do(web, server, "AttachVolume", csrf, VolumeId=vol, InstanceId=iid, Device="/dev/sdf").status_code == 303
    eventually(lambda: ec2.describe_volumes(VolumeIds=[vol])["Volumes"][0]["State"] == "in-use", "attached")
    assert _do(web, server, "CreateSnapshot", csrf, VolumeId=vol).status_code == 303
    page = web.get(server.endpoint + "/console/volumes", timeout=30).text
    assert f'data-id="{vol}"' in page and iid in page
    snap = ec2.describe_snapshots(Filters=[{"Name": "volume-id", "Values": [vol]}])["Snapshots"][0]["SnapshotId"]
    assert f'data-id="{snap}"' in page
    assert _do(web, server, "DetachVolume", csrf, VolumeId=vol).status_code == 303
    eventually(lambda: ec2.describe_volumes(VolumeIds=[vol])["Volumes"][0]["State"] == "available", "detached")
    # The network page lists the default VPC and its subnets; an Elastic IP is allocated.
    page = web.get(server.endpoint + "/console/network", timeout=30).text
    default_vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    assert f'data-id="{default_vpc}"' in page
    addresses = len(ec2.describe_addresses()["Addresses"])
    assert _do(web, server, "AllocateAddress", csrf, Domain="vpc").status_code == 303
    assert len(ec2.describe_addresses()["Addresses"]) == addresses + 1
    for path in ("images", "instances", ""):
        assert web.get(server.endpoint + f"/console/{path}", timeout=30).status_code == 200
    ec2.terminate_instances(InstanceIds=[iid])


def test_a_rule_without_ports_is_removed_from_the_editor(server, ec2):
    """The default group's own rule (all protocols, a group as its source) has no ports: its
    remove form must not send any (found by review)."""
    web = _signed_in(server)
    group = ec2.create_security_group(GroupName=f"noports-{id(web)}", Description="x")["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[
        {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": group}]}])
    page = web.get(server.endpoint + "/console/security-groups", timeout=30).text
    section = page[page.index(f'data-id="{group}"'):]
    form = re.search(r'<form method="post" action="/console/do/RevokeSecurityGroupIngress[^"]*"[^>]*>(.*?)</form>',
                     section, re.S).group(1)
    fields = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', form))
    assert "IpPermissions.1.FromPort" not in fields and fields["IpPermissions.1.Groups.1.GroupId"] == group
    assert _do(web, server, "RevokeSecurityGroupIngress", fields.pop("csrf"), **fields).status_code == 303
    assert not ec2.describe_security_groups(GroupIds=[group])["SecurityGroups"][0]["IpPermissions"]
    ec2.delete_security_group(GroupId=group)


def _ws(server, web, iid: str, origin: str | None = None):
    from websockets.sync.client import connect
    cookie = "; ".join(f"{k}={v}" for k, v in web.cookies.items())
    url = server.endpoint.replace("http://", "ws://") + f"/console/instances/{iid}/serial/ws"
    return connect(url, additional_headers={"Cookie": cookie, "Origin": origin or server.endpoint},
                   open_timeout=10)


def _read_until(conn, text: str, within: float = 10) -> str:
    import time
    seen, deadline = "", time.monotonic() + within
    while text not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"{text!r} not seen in {seen!r}"
        seen += conn.recv(timeout=left)
    return seen


def test_the_serial_console_over_a_websocket(server, ec2):
    """Typed into the guest's serial port and answered (the none driver's pretend terminal);
    refused to another site's page (its Origin), to a forged session and for another account's
    instance."""
    web = _signed_in(server)
    iid = ec2.run_instances(ImageId=tiny_image(ec2), MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    eventually(lambda: _state(web, server, iid) == "running", "running")
    assert 'id="terminal"' in web.get(server.endpoint + f"/console/instances/{iid}/serial", timeout=30).text
    # Its terminal, xterm.js, comes from this server (installed by scripts/install_xterm.py).
    script = requests.get(server.endpoint + "/console/static/xterm.js", timeout=30)
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert "Terminal" in script.text and len(script.content) > 100_000
    assert requests.get(server.endpoint + "/console/static/VERSION", timeout=30).status_code == 404  # only those two
    with _ws(server, web, iid) as conn:
        assert "ttyS0" in _read_until(conn, "$ ")
        conn.send("echo hello from the browser\r")
        assert "hello from the browser\r\n$ " in _read_until(conn, "browser\r\n$ ")
    from websockets.exceptions import ConnectionClosed, InvalidStatus
    for refused in (lambda: _ws(server, web, iid, origin="http://elsewhere.example"),
                    lambda: _ws(server, requests.Session(), iid)):
        try:
            with refused() as conn:
                conn.recv(timeout=5)
            raise AssertionError("a refused serial console answered")
        except (ConnectionClosed, InvalidStatus):
            pass
    other = _signed_in(server, OTHER_ACCESS_KEY, OTHER_SECRET_KEY)
    with _ws(server, other, iid) as conn:
        assert "no serial console: The instance ID" in _read_until(conn, "]")
    ec2.terminate_instances(InstanceIds=[iid])


def test_the_launch_form_takes_a_subnet_and_security_groups(server, ec2):
    web = _signed_in(server)
    page = web.get(server.endpoint + "/console/instances", timeout=30).text
    vpc = ec2.create_vpc(CidrBlock="10.77.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.77.1.0/24", AvailabilityZone="us-east-1b")["Subnet"]["SubnetId"]
    a = ec2.create_security_group(GroupName="console-a", Description="a", VpcId=vpc)["GroupId"]
    b = ec2.create_security_group(GroupName="console-b", Description="b", VpcId=vpc)["GroupId"]
    page = web.get(server.endpoint + "/console/instances", timeout=30).text
    assert subnet in page and a in page and b in page  # offered by the form
    before = {i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]}
    done = web.post(server.endpoint + "/console/instances/launch", data=[
        ("csrf", _csrf(page)), ("image_id", tiny_image(ec2)), ("subnet_id", subnet),
        ("security_group_id", a), ("security_group_id", b)], allow_redirects=False, timeout=30)
    assert done.status_code == 303
    (iid,) = {i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]} - before
    inst = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    assert inst["SubnetId"] == subnet and sorted(g["GroupId"] for g in inst["SecurityGroups"]) == sorted([a, b])
    ec2.terminate_instances(InstanceIds=[iid])


def test_volumes_are_paged_fifty_at_a_time(server):
    """More than a page of volumes (in a region of their own): 50 on the first page, the rest on
    the next, each once; the next page keeps the region; a token that is not one is AWS's error."""
    region = "eu-north-1"
    ec2 = server.client(region=region)
    made = {ec2.create_volume(AvailabilityZone=f"{region}a", Size=1)["VolumeId"] for _ in range(53)}
    web = _signed_in(server)
    first = web.get(server.endpoint + f"/console/volumes?region={region}", timeout=30).text
    ids = re.findall(r'<tr data-id="(vol-[0-9a-f]+)"', first)
    assert len(ids) == 50
    link = re.search(r'id="next-Volumes" href="([^"]+)"', first).group(1).replace("&amp;", "&")
    assert f"region={region}" in link and 'id="next-Snapshots"' not in first  # no snapshots here: one page
    second = web.get(server.endpoint + link, timeout=30).text
    rest = re.findall(r'<tr data-id="(vol-[0-9a-f]+)"', second)
    assert len(rest) == 3 and set(ids) | set(rest) == made and 'id="next-Volumes"' not in second
    assert "First page" in second
    bad = web.get(server.endpoint + f"/console/volumes?region={region}&Volumes-page=not-a-token", timeout=30)
    assert bad.status_code == 400 and "InvalidNextToken: Invalid NextToken value" in bad.text
    for vid in made:
        ec2.delete_volume(VolumeId=vid)
