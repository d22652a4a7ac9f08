"""The HTTP face: one endpoint, `/`, speaking the EC2 Query protocol (POST form or GET query)."""
from __future__ import annotations

import logging
import re
import time
import uuid
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from emulator.catalogue import REGIONS
from emulator import instance_profiles, role_credentials
from emulator.errors import (AuthFailure, EC2Error, InternalError, InvalidAction, InvalidRequest, MissingAction,
                             RequestExpired, UnsupportedOperation)
from emulator.instance_profiles import RoleCaller
from emulator.service import Cloud

from . import admin, console, model, protocol, sts
from .auth import verify_request
from .throttle import Throttle

log = logging.getLogger("ec2emu.api")
XML = "text/xml;charset=UTF-8"
_HOST_REGION = re.compile(r"^ec2\.([a-z0-9-]+)\.")


def _region_from_host(host: str) -> str | None:
    m = _HOST_REGION.match(host)
    return m.group(1) if m and m.group(1) in REGIONS else None


class Api:
    def __init__(self, cloud: Cloud):
        self.cloud = cloud
        self.config = cloud.config
        self.throttle = Throttle() if cloud.config.throttle else None

    def authenticate(self, request: Request, raw_query: str, body: bytes,
                     params: dict) -> tuple[str, str, str, RoleCaller | None]:
        """-> (account id, region, signing service: 'ec2', or 'sts' for api/sts.py, and the role
        behind the request's credentials when they are an instance role's)."""
        headers = {k.lower(): v for k, v in request.headers.items()}
        host = headers.get("host", "")
        role = None
        if self.config.auth:
            token = headers.get("x-amz-security-token") or params.get("X-Amz-Security-Token") \
                or params.get("SecurityToken")
            sessions = {}

            def secret_for(key: str) -> str | None:
                if key.startswith(role_credentials.PREFIX):  # an instance role's (temporary)
                    found = role_credentials.open_session(self.config, key, token)
                    if found is None:
                        return None
                    sessions[key] = found[0]
                    return found[1]
                cred = self.config.account_for(key)
                return cred.secret_key if cred else None
            principal = verify_request(request.method, host, request.url.path, raw_query, headers,
                                       body, params, secret_for)
            session = sessions.get(principal.access_key)
            if session is not None:
                role = self._role(session)
                account = role.account_id
            else:
                account = self.config.account_for(principal.access_key).account_id
            region, service = principal.region, principal.service
        else:  # relaxed mode: trust whatever key is named, default account otherwise
            key = params.get("AWSAccessKeyId") or _key_in_header(headers.get("authorization", ""))
            cred = self.config.account_for(key or "") or self.config.credentials[0]
            account, region = cred.account_id, _scope_region(headers.get("authorization", ""))
            service = _scope_service(headers.get("authorization", "")) or "ec2"
        region = region or _region_from_host(host) or self.config.default_region
        if region not in REGIONS:
            raise AuthFailure.region(region)
        return account, region, service, role

    def _role(self, session: role_credentials.RoleSession) -> RoleCaller:
        """The role a correctly signed request with temporary credentials acts as: refused once
        they expired, and once their association ended (disassociated, instance terminated)."""
        if session.expiry <= time.time():
            raise RequestExpired()
        with self.cloud.Session() as db:
            role = instance_profiles.caller(db, session.association_id, session.instance_id)
        if role is None:
            raise AuthFailure()
        return role

    def handle(self, request: Request, raw_query: str, body: bytes, request_id: str) -> tuple[int, bytes]:
        params = dict(parse_qsl(raw_query, keep_blank_values=True))
        if body and "form-urlencoded" in request.headers.get("content-type", "application/x-www-form-urlencoded"):
            params.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        try:
            account, region, service, role = self.authenticate(request, raw_query, body, params)
            if service == "sts":
                return sts.handle(params, account, request_id, role)
            if request.url.path.rstrip("/") == admin.PATH:  # the emulator's own calls (api/admin.py)
                name, inputs = admin.parse(params)
                result = self.cloud.call(name, inputs, account, region, request_id)
                return 200, protocol.render_output(params["Action"], None, result, request_id)
            action = params.get("Action")
            if not action:
                raise MissingAction()
            op = model.operation(action)
            if op is None:
                raise InvalidAction(action)
            if self.throttle is not None:
                self.throttle.take(account, region, action, params)
            inputs = protocol.parse_input(op.input_shape, params)
            result = self.cloud.call(action, inputs, account, region, request_id)
            return 200, protocol.render_output(action, op.output_shape, result, request_id)
        except Exception as exc:  # never a traceback on the wire
            if not isinstance(exc, EC2Error):
                log.exception("request %s failed", request_id)
                exc = InternalError()
            if _scope_service(request.headers.get("authorization", "")) == "sts":
                return exc.status, sts.render_error(exc, request_id)  # e.g. its signature failed
            return exc.status, protocol.render_error(exc.code, exc.message, request_id)


def _key_in_header(auth: str) -> str | None:
    m = re.search(r"Credential=([^/,\s]+)", auth)
    return m.group(1) if m else None


def _scope_region(auth: str) -> str | None:
    m = re.search(r"Credential=[^/]+/\d{8}/([^/]+)/", auth)
    return m.group(1) if m else None


def _scope_service(auth: str) -> str | None:
    m = re.search(r"Credential=[^/]+/\d{8}/[^/]+/([^/]+)/", auth)
    return m.group(1) if m else None


def create_app(cloud: Cloud) -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    api = Api(cloud)
    app.include_router(console.router(cloud))  # /console/... (before the EC2 endpoint's any-path route)

    # Any path: AWS serves "/", Eucalyptus-era clients (libcloud, euca2ools) post to /services/Eucalyptus.
    @app.api_route("/{path:path}", methods=["GET", "POST"])
    async def ec2(request: Request) -> Response:
        body = await request.body()
        request_id = str(uuid.uuid4())
        raw_query = request.scope.get("query_string", b"").decode("latin-1")
        # Handled on the event loop itself: handlers do short database work and write host
        # tasks, never host work (the host workers run those after the commit; the one host read
        # here is GetConsoleOutput's 64 KiB tail); under the GIL a thread hand-off buys no
        # parallelism, only latency (measured: ~30% more describe calls/s than run_in_threadpool).
        status, payload = api.handle(request, raw_query, body, request_id)
        return Response(payload, status_code=status, media_type=XML,
                        headers={"x-amzn-requestid": request_id})

    # What the router refuses before the endpoint runs (a method other than GET and POST: PUT,
    # DELETE, PATCH, OPTIONS, HEAD, TRACE...) is an EC2 XML error too, never FastAPI's JSON.
    @app.exception_handler(HTTPException)
    async def refused(request: Request, exc: HTTPException) -> Response:
        request_id = str(uuid.uuid4())
        headers = {"x-amzn-requestid": request_id}
        if exc.status_code == 405:
            err: EC2Error = UnsupportedOperation.http_method(request.method)
            headers["allow"] = "GET, POST"  # (the router's own Allow lists a set, in any order)
        else:
            err = InvalidRequest(str(exc.detail), status=exc.status_code)
        payload = b"" if request.method == "HEAD" else protocol.render_error(err.code, err.message, request_id)
        return Response(payload, status_code=err.status, media_type=XML, headers=headers)

    @app.on_event("shutdown")
    def _close() -> None:
        cloud.close()

    return app
