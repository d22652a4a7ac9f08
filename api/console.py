"""The web console at /console/ (issue 11): sign-in, a dashboard of counts, the instances page
(a list that follows state changes without reloading, a launch form, stop, start, reboot,
terminate, details, the serial console), and a page for each kind of resource. Served by the
API's own process.

Every action is an EC2 request made the API's way: the form becomes the operation's Query
parameters, parsed by the same protocol layer (api/protocol.py) and run by the same handler in
the same transaction (Cloud.call), so a rule is never written twice and errors are AWS's own
messages, shown to the person.

Sign-in takes an access key and its secret (the account's configured credentials). The session
is a cookie: `account.access-key.expiry` under an HMAC (a key derived from the master key),
HttpOnly, SameSite=Strict, Path=/console. Every change (POST) carries a CSRF token, an HMAC of
the session, checked before anything runs; the sign-in, which has no session yet, checks the
Origin instead. Pages are server-side templates (Jinja2) with a
little JavaScript; nothing is fetched from elsewhere, so it works offline.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import time
import uuid
from pathlib import Path

from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from emulator.catalogue import REGIONS
from emulator.ebs_encryption import derived_key
from emulator.errors import EC2Error
from emulator.query import COUNT_ONLY
from emulator.service import Cloud

from . import model, protocol

log = logging.getLogger("ec2emu.console")
COOKIE = "ec2emu_console"
SESSION_SECONDS = 12 * 3600
TEMPLATES = Environment(loader=FileSystemLoader(Path(__file__).parent / "console_templates"),
                        autoescape=select_autoescape(["html"]))
PAGE_SIZE = 50
# xterm.js, the serial console's terminal, as scripts/install_xterm.py installs it.
XTERM = Path(__file__).parent / "console_static" / "xterm"
STATIC = {"xterm.js": "text/javascript", "xterm.css": "text/css"}
ACTIONS = {"stop": "StopInstances", "start": "StartInstances", "reboot": "RebootInstances",
           "terminate": "TerminateInstances"}
# What the resource pages' forms may ask (POST /console/do/<Action>, the form's fields being the
# operation's own Query parameters): the page each goes back to.
DO = {"CreateKeyPair": "key-pairs", "ImportKeyPair": "key-pairs", "DeleteKeyPair": "key-pairs",
      "CreateSecurityGroup": "security-groups", "DeleteSecurityGroup": "security-groups",
      "AuthorizeSecurityGroupIngress": "security-groups", "RevokeSecurityGroupIngress": "security-groups",
      "CreateVolume": "volumes", "DeleteVolume": "volumes", "AttachVolume": "volumes", "DetachVolume": "volumes",
      "CreateSnapshot": "volumes", "DeleteSnapshot": "volumes",
      "CreateVpc": "network", "DeleteVpc": "network", "CreateSubnet": "network", "DeleteSubnet": "network",
      "AllocateAddress": "network", "ReleaseAddress": "network", "AssociateAddress": "network",
      "DisassociateAddress": "network", "DeregisterImage": "images"}
# page -> [(title, Describe action, its parameters, output member)]
PAGES = {
    "key-pairs": [("Key pairs", "DescribeKeyPairs", {}, "KeyPairs")],
    "security-groups": [("Security groups", "DescribeSecurityGroups", {}, "SecurityGroups")],
    "volumes": [("Volumes", "DescribeVolumes", {"MaxResults": str(PAGE_SIZE)}, "Volumes"),
                ("Snapshots", "DescribeSnapshots", {"Owner.1": "self", "MaxResults": str(PAGE_SIZE)}, "Snapshots")],
    "network": [("VPCs", "DescribeVpcs", {}, "Vpcs"), ("Subnets", "DescribeSubnets", {}, "Subnets"),
                ("Route tables", "DescribeRouteTables", {}, "RouteTables"),
                ("Internet gateways", "DescribeInternetGateways", {}, "InternetGateways"),
                ("Elastic IPs", "DescribeAddresses", {}, "Addresses")],
    "images": [("Images", "DescribeImages", {"Owner.1": "self", "Owner.2": "ec2emu"}, "Images")],
}


class Console:
    def __init__(self, cloud: Cloud):
        self.cloud = cloud
        self.key = derived_key(cloud.config, "console-session")

    # ---------------------------------------------------------------------------- sessions

    def _mac(self, text: str) -> str:
        return hmac.new(self.key, text.encode(), hashlib.sha256).hexdigest()

    def session_cookie(self, account_id: str, access_key: str) -> str:
        value = f"{account_id}.{access_key}.{int(time.time()) + SESSION_SECONDS}"
        return f"{value}.{self._mac(value)}"

    def account(self, request: Request) -> str | None:
        """The signed-in account, if the request's cookie is a valid, unexpired session whose
        access key is still configured for that account."""
        cookie = request.cookies.get(COOKIE, "")
        try:
            account_id, access_key, expiry, mac = cookie.rsplit(".", 3)
        except ValueError:
            return None
        if not hmac.compare_digest(mac.encode(), self._mac(f"{account_id}.{access_key}.{expiry}").encode()):
            return None
        cred = self.cloud.config.account_for(access_key)
        if not expiry.isdigit() or int(expiry) < time.time() or cred is None or cred.account_id != account_id:
            return None
        return account_id

    def csrf(self, request: Request) -> str:
        return self._mac("csrf:" + request.cookies.get(COOKIE, ""))

    def csrf_ok(self, request: Request, token: str) -> bool:
        return bool(request.cookies.get(COOKIE)) and hmac.compare_digest(token.encode(), self.csrf(request).encode())

    # ---------------------------------------------------------------------------- EC2 calls

    def call(self, action: str, flat: dict[str, str], account_id: str, region: str, count: bool = False) -> dict:
        """One EC2 request, as the API runs it: Query parameters parsed by the operation's
        shape, then its handler in its own transaction. EC2Error: AWS's refusal. `count`: a
        Describe's number of rows only (query.COUNT_ONLY: selected and filtered, not rendered)."""
        op = model.operation(action)
        inputs = protocol.parse_input(op.input_shape, flat)
        if count:
            inputs[COUNT_ONLY] = True
        return self.cloud.call(action, inputs, account_id, region, str(uuid.uuid4())) or {}

    def counts(self, account_id: str, region: str) -> dict[str, int]:
        def n(action: str, flat=None) -> int:
            return self.call(action, flat or {}, account_id, region, count=True)[COUNT_ONLY]
        return {"Instances": n("DescribeInstances"), "Volumes": n("DescribeVolumes"), "Snapshots": n("DescribeSnapshots", {"Owner.1": "self"}),
                "Images (yours)": n("DescribeImages", {"Owner.1": "self"}), "Key pairs": n("DescribeKeyPairs"),
                "Security groups": n("DescribeSecurityGroups"), "VPCs": n("DescribeVpcs"),
                "Subnets": n("DescribeSubnets"), "Elastic IPs": n("DescribeAddresses")}

    def instances(self, account_id: str, region: str, token: str = "") -> tuple[list[dict], str]:
        """A page of the account's instances (PAGE_SIZE, as AWS's console shows them) and the
        next page's token."""
        flat = {"MaxResults": str(PAGE_SIZE), **({"NextToken": token} if token else {})}
        answer = self.call("DescribeInstances", flat, account_id, region)
        rows = []
        for r in answer.get("Reservations") or []:
            for i in r["Instances"]:
                name = next((t["Value"] for t in i.get("Tags") or [] if t["Key"] == "Name"), "")
                rows.append({"id": i["InstanceId"], "name": name, "state": i["State"]["Name"],
                             "type": i["InstanceType"], "image": i["ImageId"],
                             "zone": i["Placement"]["AvailabilityZone"],
                             "private_ip": i.get("PrivateIpAddress") or "", "public_ip": i.get("PublicIpAddress") or ""})
        return rows, answer.get("NextToken") or ""


async def _pairs(request: Request) -> list[tuple[str, str]]:
    """A POSTed form (application/x-www-form-urlencoded), as the EC2 endpoint reads its own."""
    return parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)


async def _form(request: Request) -> dict[str, str]:
    return dict(await _pairs(request))


def _link(request: Request, param: str, value: str) -> str:
    """This page's address with `param` set to value (dropped when empty), other parameters kept."""
    query = [(k, v) for k, v in request.query_params.multi_items() if k != param]
    if value:
        query.append((param, value))
    return request.url.path + ("?" + urlencode(query) if query else "")


def _same_origin(request: Request) -> bool:
    """Whether a POST comes from this site's own page, or from no browser page at all (no
    Origin: curl). The sign-in needs it: it has no session yet for a CSRF token to hang on, and
    a form on another site could otherwise sign a person's browser in to the attacker's account."""
    origin, host = request.headers.get("origin"), request.headers.get("host", "")
    return origin is None or origin in (f"http://{host}", f"https://{host}")


def _region(request: Request, default: str) -> str:
    region = request.query_params.get("region") or default
    return region if region in REGIONS else default


def router(cloud: Cloud) -> APIRouter:
    console = Console(cloud)
    r = APIRouter(prefix="/console")
    for name in TEMPLATES.list_templates():  # compiled now, not in a person's first request of each page
        TEMPLATES.get_template(name)

    def page(name: str, request: Request, status: int = 200, **values) -> HTMLResponse:
        html = TEMPLATES.get_template(name).render(request=request, regions=sorted(REGIONS), **values)
        return HTMLResponse(html, status_code=status, headers={
            "Cache-Control": "no-store", "X-Frame-Options": "DENY",
            "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
                                       "script-src 'self' 'unsafe-inline'"})

    def signed_in(request: Request):
        account_id = console.account(request)
        region = _region(request, cloud.config.default_region)
        return account_id, region

    @r.get("")
    def bare() -> Response:
        return RedirectResponse("/console/", status_code=307)

    @r.get("/")
    def dashboard(request: Request) -> Response:
        account_id, region = signed_in(request)
        if account_id is None:
            return page("signin.html", request)
        return page("dashboard.html", request, account=account_id, region=region, csrf=console.csrf(request),
                    counts=console.counts(account_id, region))

    @r.post("/sign-in")
    async def sign_in(request: Request) -> Response:
        if not _same_origin(request):
            return Response("refused: a sign-in from another site's page", status_code=403)
        form = await _form(request)
        cred = cloud.config.account_for(form.get("access_key", "").strip())
        if cred is None or not hmac.compare_digest(cred.secret_key.encode(), form.get("secret_key", "").encode()):
            return page("signin.html", request, status=401,
                        error="AWS was not able to validate the provided access credentials")
        answer = RedirectResponse("/console/", status_code=303)
        answer.set_cookie(COOKIE, console.session_cookie(cred.account_id, cred.access_key), httponly=True,
                          samesite="strict", path="/console", max_age=SESSION_SECONDS)
        return answer

    @r.post("/sign-out")
    async def sign_out(request: Request) -> Response:
        if not console.csrf_ok(request, (await _form(request)).get("csrf", "")):
            return Response("refused: no valid CSRF token", status_code=403)
        answer = RedirectResponse("/console/", status_code=303)
        answer.delete_cookie(COOKIE, path="/console")
        return answer

    def instances_page(request: Request, account_id: str, region: str, error: str = "", status: int = 200):
        token = request.query_params.get("page", "")
        rows, next_token = console.instances(account_id, region, token)
        images = console.call("DescribeImages", {"Owner.1": "self", "Owner.2": "ec2emu"}, account_id, region)
        keys = console.call("DescribeKeyPairs", {}, account_id, region)
        groups = console.call("DescribeSecurityGroups", {}, account_id, region)
        subnets = console.call("DescribeSubnets", {}, account_id, region)
        return page("instances.html", request, status=status, account=account_id, region=region, error=error,
                    instances=rows, next_token=next_token, token=token, csrf=console.csrf(request),
                    images=[i for i in images.get("Images") or [] if i.get("ImageType", "machine") == "machine"],
                    key_pairs=[k["KeyName"] for k in keys.get("KeyPairs") or []],
                    groups=groups.get("SecurityGroups") or [], subnets=subnets.get("Subnets") or [])

    @r.get("/instances")
    def instances(request: Request) -> Response:
        account_id, region = signed_in(request)
        if account_id is None:
            return RedirectResponse("/console/", status_code=303)
        return instances_page(request, account_id, region)

    @r.get("/instances/{instance_id}")
    def instance_details(request: Request, instance_id: str) -> Response:
        """One instance: its addresses, metadata options, and its console output (GetConsoleOutput)."""
        account_id, region = signed_in(request)
        if account_id is None:
            return RedirectResponse("/console/", status_code=303)
        try:
            found = console.call("DescribeInstances", {"InstanceId.1": instance_id}, account_id, region)
            output = console.call("GetConsoleOutput", {"InstanceId": instance_id}, account_id, region)
        except EC2Error as exc:
            return page("base.html", request, status=exc.status, account=account_id, region=region,
                        csrf=console.csrf(request), error=f"{exc.code}: {exc.message}")
        text = base64.b64decode(output.get("Output") or "").decode("utf-8", "replace")
        return page("instance.html", request, account=account_id, region=region, csrf=console.csrf(request),
                    i=found["Reservations"][0]["Instances"][0], console_output=text)

    @r.get("/instances/{instance_id}/serial")
    def serial_page(request: Request, instance_id: str) -> Response:
        """The instance's serial console, in the browser (as AWS's EC2 Serial Console)."""
        account_id, region = signed_in(request)
        if account_id is None:
            return RedirectResponse("/console/", status_code=303)
        answer = page("serial.html", request, account=account_id, region=region, csrf=console.csrf(request),
                      instance_id=instance_id)
        host = request.headers.get("host", "")
        answer.headers["Content-Security-Policy"] += f"; connect-src 'self' ws://{host} wss://{host}"
        return answer

    @r.get("/static/{name}")
    def static(name: str) -> Response:
        """xterm.js and its stylesheet, served here: the console fetches nothing from elsewhere."""
        if name not in STATIC or not (XTERM / name).is_file():
            return Response("not installed (scripts/install_xterm.py)", status_code=404)
        return Response((XTERM / name).read_bytes(), media_type=STATIC[name],
                        headers={"Cache-Control": "public, max-age=3600"})

    @r.websocket("/instances/{instance_id}/serial/ws")
    async def serial(ws: WebSocket, instance_id: str) -> None:
        """Bytes both ways between the browser and the guest's serial port (Driver.open_serial).
        Only for the signed-in account's running instance, and only from this site's own pages:
        a browser sends the session cookie with any site's WebSocket, so the Origin must be ours."""
        account_id = console.account(ws)
        region = _region(ws, cloud.config.default_region)
        host = ws.headers.get("host", "")
        if account_id is None or ws.headers.get("origin") not in (f"http://{host}", f"https://{host}"):
            await ws.close(code=1008)  # policy violation
            return
        try:
            found = console.call("DescribeInstances", {"InstanceId.1": instance_id}, account_id, region)
            state = found["Reservations"][0]["Instances"][0]["State"]["Name"]
            if state != "running":
                raise LookupError(f"{instance_id} is {state}")
            port = cloud.driver.open_serial(instance_id)
        except (EC2Error, LookupError, NotImplementedError) as exc:
            await ws.accept()
            await ws.send_text(f"\r\n[ec2emu: no serial console: {getattr(exc, 'message', exc)}]\r\n")
            await ws.close()
            return
        await ws.accept()

        async def guest_to_browser() -> None:
            while True:
                data = await asyncio.to_thread(port.read, 0.5)
                if data:
                    await ws.send_text(data.decode("utf-8", "replace"))

        async def browser_to_guest() -> None:
            while True:
                text = await ws.receive_text()
                await asyncio.to_thread(port.write, text.encode())

        tasks = [asyncio.create_task(guest_to_browser()), asyncio.create_task(browser_to_guest())]
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in pending:
            t.cancel()
        for t in done:  # the browser went (WebSocketDisconnect) or the guest's port did (EOFError)
            if not isinstance(t.exception(), (WebSocketDisconnect, EOFError, type(None))):
                log.warning("serial console of %s: %s", instance_id, t.exception())
        port.close()
        try:
            await ws.close()
        except RuntimeError:  # already closed by the browser
            pass

    @r.get("/api/instances")
    def instances_json(request: Request) -> Response:
        """The page's instances, polled by its script (the same page: `page`, its token)."""
        account_id, region = signed_in(request)
        if account_id is None:
            return JSONResponse({"error": "not signed in"}, status_code=401)
        rows, _ = console.instances(account_id, region, request.query_params.get("page", ""))
        return JSONResponse({"instances": rows}, headers={"Cache-Control": "no-store"})

    def _act(request: Request, csrf: str, action: str, flat: dict[str, str]) -> Response:
        account_id, region = signed_in(request)
        if account_id is None:
            return RedirectResponse("/console/", status_code=303)
        if not console.csrf_ok(request, csrf):
            return Response("refused: no valid CSRF token", status_code=403)
        back = f"/console/instances?region={region}"
        try:
            console.call(action, flat, account_id, region)
        except EC2Error as exc:  # AWS's words, shown to the person
            return instances_page(request, account_id, region, f"{exc.code}: {exc.message}", exc.status)
        return RedirectResponse(back, status_code=303)

    @r.post("/instances/launch")
    async def launch(request: Request) -> Response:
        pairs = await _pairs(request)
        form = dict(pairs)
        count = form.get("count") or "1"
        flat = {"ImageId": form.get("image_id", ""), "InstanceType": form.get("instance_type") or "t2.micro",
                "MinCount": count, "MaxCount": count}
        if form.get("key_name"):
            flat["KeyName"] = form["key_name"]
        if form.get("user_data"):
            flat["UserData"] = base64.b64encode(form["user_data"].encode()).decode()
        if form.get("subnet_id"):
            flat["SubnetId"] = form["subnet_id"]
        groups = [v for k, v in pairs if k == "security_group_id" and v]
        flat.update((f"SecurityGroupId.{n}", g) for n, g in enumerate(groups, 1))
        return _act(request, form.get("csrf", ""), "RunInstances", flat)

    @r.post("/instances/{instance_id}/{verb}")
    async def instance_action(request: Request, instance_id: str, verb: str) -> Response:
        if verb not in ACTIONS:
            return Response("unknown action", status_code=404)
        return _act(request, (await _form(request)).get("csrf", ""), ACTIONS[verb], {"InstanceId.1": instance_id})

    def _resources(request: Request, name: str, account_id: str, region: str, error: str = "",
                   status: int = 200) -> Response:
        """A resource page: each section's Describe. A paged one (MaxResults) shows the page its
        query parameter `<Member>-page` names, and links to the first and the next page, keeping
        the other sections' pages."""
        sections, pagers = [], {}
        for title, action, flat, member in PAGES[name]:
            param = f"{member}-page"
            token = request.query_params.get(param, "") if "MaxResults" in flat else ""
            answer = console.call(action, {**flat, **({"NextToken": token} if token else {})}, account_id, region)
            sections.append((title, member, answer.get(member) or []))
            pagers[member] = {"first": _link(request, param, "") if token else "",
                              "next": _link(request, param, answer["NextToken"]) if answer.get("NextToken") else ""}
        zones = [z.name for z in REGIONS[region].zones]
        return page(f"{name}.html", request, status=status, account=account_id, region=region, error=error,
                    csrf=console.csrf(request), sections=sections, zones=zones, pagers=pagers)

    @r.get("/{name}")
    def resources(request: Request, name: str) -> Response:
        account_id, region = signed_in(request)
        if account_id is None:
            return RedirectResponse("/console/", status_code=303)
        if name not in PAGES:
            return Response("no such page", status_code=404)
        try:
            return _resources(request, name, account_id, region)
        except EC2Error as exc:  # a page token that is not one (InvalidNextToken)
            return page("base.html", request, status=exc.status, account=account_id, region=region,
                        csrf=console.csrf(request), error=f"{exc.code}: {exc.message}")

    @r.post("/do/{action}")
    async def do(request: Request, action: str) -> Response:
        """A resource page's form: the fields are the operation's own Query parameters."""
        account_id, region = signed_in(request)
        if account_id is None:
            return RedirectResponse("/console/", status_code=303)
        form = await _form(request)
        if not console.csrf_ok(request, form.pop("csrf", "")):
            return Response("refused: no valid CSRF token", status_code=403)
        if action not in DO:
            return Response("not an action of the console", status_code=404)
        flat = {k: v for k, v in form.items() if v != ""}
        try:
            result = console.call(action, flat, account_id, region)
        except EC2Error as exc:  # AWS's words, shown on the page the form was on
            return _resources(request, DO[action], account_id, region, f"{exc.code}: {exc.message}", exc.status)
        if action == "CreateKeyPair":  # the private key, once: a download, never stored
            return Response(result["KeyMaterial"], media_type="application/x-pem-file", headers={
                "Content-Disposition": f'attachment; filename="{result["KeyName"]}.pem"', "Cache-Control": "no-store"})
        return RedirectResponse(f"/console/{DO[action]}?region={region}", status_code=303)

    return r
