"""The HTTP server's own refusals, in EC2's words.

uvicorn answers a request it cannot parse itself, before any application sees it, with a plain
text "Invalid HTTP request received." (HTTP 400). Two such cases matter here:

* a request target over 65535 bytes (a GET with a 64 KiB query string): httptools' URL parser
  keeps offsets in 16 bits and fails (h11, uvicorn's fallback, refuses any request head over its
  16 KiB `h11_max_incomplete_event_size` the same way);
* a request that is not HTTP at all (an unknown method such as FOO, a broken request line).

`http_protocol()` is uvicorn's protocol of choice (httptools where installed, else h11) with that
answer replaced by an EC2 XML error (`<Response><Errors>...`, a request id in the body and in
`x-amzn-requestid`). The connection is still closed afterwards: the parser's state is lost.
What stays uvicorn's: the limit itself (the URL cannot be read, so the request cannot be served),
and its log line.
"""
from __future__ import annotations

import asyncio
import uuid

from emulator.errors import EC2Error, InvalidRequest

from .protocol import render_error

MAX_URL = 65535  # what httptools.parse_url can read


def refusal(url_length: int | None) -> EC2Error:
    if url_length is not None and url_length > MAX_URL:
        return InvalidRequest.url_too_long(url_length, MAX_URL)
    return InvalidRequest.unreadable()


def response_bytes(err: EC2Error) -> bytes:
    """A whole HTTP/1.1 response carrying `err`, for a connection about to be closed."""
    request_id = str(uuid.uuid4())
    body = render_error(err.code, err.message, request_id)
    reason = {400: "Bad Request", 414: "URI Too Long"}.get(err.status, "Error")
    head = (f"HTTP/1.1 {err.status} {reason}\r\n"
            "content-type: text/xml;charset=UTF-8\r\n"
            f"content-length: {len(body)}\r\n"
            f"x-amzn-requestid: {request_id}\r\n"
            "connection: close\r\n\r\n")
    return head.encode("ascii") + body


def http_protocol() -> type[asyncio.Protocol]:
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as Base
    except ImportError:  # no httptools: uvicorn's pure-Python h11
        from uvicorn.protocols.http.h11_impl import H11Protocol as Base

    class EC2HttpProtocol(Base):  # type: ignore[misc, valid-type]
        def send_400_response(self, msg: str) -> None:
            url = getattr(self, "url", None)  # httptools' URL so far; h11 keeps none
            self.transport.write(response_bytes(refusal(len(url) if url is not None else None)))
            self.transport.close()

    return EC2HttpProtocol
