"""The EC2 Query protocol, both directions, driven by botocore's shapes.

Input: flat `Name.N.Member` parameters -> a dict keyed by model member names, typed and
validated (unknown names, missing required members, bad numbers/booleans/enums are AWS's
client errors). Output: a handler's dict -> the XML AWS sends, element names from
`locationName`, lists as <item>, booleans lower-case, times ISO-8601 with milliseconds.
"""
from __future__ import annotations

import base64
import binascii
import functools
from datetime import datetime, timezone
import re
from xml.sax.saxutils import escape as _xml_escape

from botocore.model import Shape

from emulator.errors import InvalidParameterValue, MissingParameter, UnknownParameter
from emulator.times import iso8601

from .model import XMLNS

# Characters XML 1.0 cannot carry at all (not even escaped): shown as U+FFFD.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
_SPECIAL = re.compile("[&<>\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def escape(text: str) -> str:
    if _SPECIAL.search(text) is None:  # the common case: nothing to do
        return text
    return _NOT_XML.sub("\ufffd", _xml_escape(text))


# Parameters of the protocol itself, not of any operation.
PROTOCOL_PARAMS = frozenset({
    "Action", "Version", "AWSAccessKeyId", "Signature", "SignatureMethod", "SignatureVersion",
    "Timestamp", "Expires", "SecurityToken", "X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date",
    "X-Amz-Expires", "X-Amz-SignedHeaders", "X-Amz-Signature", "X-Amz-Security-Token",
})


# ---------------------------------------------------------------------------------------- input

@functools.cache
def _input_members(shape: Shape) -> dict[str, tuple[str, Shape]]:
    """wire name -> (member name, member shape), as botocore's EC2 serializer names them."""
    out = {}
    for name, member in shape.members.items():
        ser = member.serialization
        if "queryName" in ser:
            wire = ser["queryName"]
        elif "name" in ser:
            wire = ser["name"][0].upper() + ser["name"][1:]
        else:
            wire = name
        out[wire] = (name, member)
    return out


def _tree(params: dict[str, str]) -> dict:
    root: dict = {}
    for key, value in params.items():
        if key in PROTOCOL_PARAMS:
            continue
        node = root
        parts = key.split(".")
        for part in parts[:-1]:
            nxt = node.get(part)
            if not isinstance(nxt, dict):
                nxt = node[part] = {} if nxt is None else {"": nxt}
            node = nxt
        last = parts[-1]
        if isinstance(node.get(last), dict):
            node[last][""] = value
        else:
            node[last] = value
    return root


def _bad(path: str, value, why: str = "") -> InvalidParameterValue:
    return InvalidParameterValue.invalid(value if isinstance(value, str) else "(structure)", path, why)


def _read(shape: Shape, node, path: str):
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(node, dict):
            raise _bad(path, node, "Expected a structure.")
        members = _input_members(shape)
        out = {}
        for wire, child in node.items():
            found = members.get(wire)
            if found is None:
                where = f"{path}.{wire}" if path else wire
                raise UnknownParameter(where)
            name, mshape = found
            out[name] = _read(mshape, child, f"{path}.{wire}" if path else wire)
        for req in shape.required_members:
            if req not in out:
                wire = next(w for w, (n, _) in members.items() if n == req)
                raise MissingParameter(f"{path + '.' if path else ''}{wire}")
        return out
    if kind == "list":
        # The Query protocol flattens every list to Name.N; AWS reads a bare member as the first
        # item (libcloud sends DescribeKeyPairs KeyName=x): Name=x is Name.1=x, and for a list of
        # structures Name.Member=x is Name.1.Member=x. An explicit Name.1 wins over the bare form.
        if not isinstance(node, dict):
            node = {"1": node}
        elif "" in node:
            node = {"1": node[""], **{k: v for k, v in node.items() if k != ""}}
        elif shape.member.type_name == "structure" and not any(k.isdigit() for k in node):
            node = {"1": node}
        items = []
        for index, child in node.items():
            if not index.isdigit() or int(index) < 1:
                raise UnknownParameter(f"{path}.{index}")
            items.append((int(index), child))
        items.sort(key=lambda p: p[0])
        return [_read(shape.member, child, f"{path}.{i}") for i, child in items]
    if kind == "map":
        entries = node.get("entry", node) if isinstance(node, dict) else None
        if not isinstance(entries, dict):
            raise _bad(path, node)
        out = {}
        for _, entry in sorted(entries.items(), key=lambda p: int(p[0]) if p[0].isdigit() else 0):
            if not isinstance(entry, dict) or "key" not in entry:
                raise _bad(path, entry)
            out[entry.get("key", entry.get("Key"))] = _read(shape.value, entry.get("value", entry.get("Value", "")), path)
        return out
    if isinstance(node, dict):
        if "" in node and len(node) == 1:
            node = node[""]
        else:
            raise _bad(path, node)
    return _scalar(shape, node, path)


def _scalar(shape: Shape, value: str, path: str):
    kind = shape.type_name
    if "\x00" in value:  # no AWS string may hold NUL (and PostgreSQL text cannot)
        raise InvalidParameterValue(f"Invalid value for {path}: NUL characters are not allowed.")
    if kind == "string":
        enum = shape.enum
        if enum and value not in enum:
            raise _bad(path, value, f"Valid values: {', '.join(enum)}")
        return value
    if kind in ("integer", "long"):
        try:
            number = int(value)
        except ValueError:
            raise _bad(path, value, "Expected an integer.") from None
        if kind == "integer" and not -2**31 <= number < 2**31:
            raise _bad(path, value, "Out of range.")
        return number
    if kind == "boolean":
        lowered = value.lower()
        if lowered not in ("true", "false"):
            raise _bad(path, value, "Expected true or false.")
        return lowered == "true"
    if kind in ("double", "float"):
        try:
            return float(value)
        except ValueError:
            raise _bad(path, value, "Expected a number.") from None
    if kind == "timestamp":
        try:
            stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            try:
                stamp = datetime.fromtimestamp(float(value), timezone.utc)
            except (ValueError, OverflowError, OSError):  # not a number, nan, inf, beyond year 9999
                raise _bad(path, value, "Expected an ISO 8601 time.") from None
        return stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)
    if kind == "blob":
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise _bad(path, value, "Expected base64.") from None
    return value


def parse_input(shape: Shape | None, params: dict[str, str]) -> dict:
    tree = _tree(params)
    if shape is None:
        if tree:
            raise UnknownParameter(next(iter(tree)))
        return {}
    return _read(shape, tree, "")


# --------------------------------------------------------------------------------------- output

# Each output shape gets a writer function, built once: rendering 1000 instances is a hot path.
_SCALAR, _BOOL, _NUMBER, _NESTED, _FLAT = range(5)
_WRITERS: dict[str, object] = {}


def _scalar_text(shape: Shape):
    kind = shape.type_name
    if kind == "timestamp":
        return lambda v: iso8601(v) if isinstance(v, datetime) else escape(str(v))
    if kind == "blob":
        return lambda v: base64.b64encode(v).decode() if isinstance(v, bytes) else escape(v)
    return lambda v: escape(v) if isinstance(v, str) else escape(str(v))


def _writer(shape: Shape):
    """A function (out, value) appending the XML of `value` as `shape` to the list `out`."""
    found = _WRITERS.get(shape.name)
    if found is not None:
        return found
    kind = shape.type_name
    if kind == "structure":
        fields: list = []

        def write_structure(out: list, value: dict) -> None:
            get = value.get
            for name, open_tag, close_tag, how, child_writer in fields:
                child = get(name)
                if child is None:
                    continue
                if how is _SCALAR:
                    out.append(open_tag + child_writer(child) + close_tag)
                elif how is _BOOL:
                    out.append(open_tag + ("true" if child else "false") + close_tag)
                elif how is _NUMBER:
                    out.append(f"{open_tag}{child}{close_tag}")
                elif how is _NESTED:
                    out.append(open_tag)
                    child_writer(out, child)
                    out.append(close_tag)
                else:  # a flattened list: its items carry the member's own name
                    for element in child:
                        out.append(open_tag)
                        child_writer(out, element)
                        out.append(close_tag)

        _WRITERS[shape.name] = write_structure  # before the members: shapes may recurse
        for name, member in shape.members.items():
            tag = member.serialization.get("name", name)
            mkind = member.type_name
            if mkind == "list" and member.serialization.get("flattened"):
                tag = member.member.serialization.get("name", tag)
                fields.append((name, f"<{tag}>", f"</{tag}>", _FLAT, _writer(member.member)))
            elif mkind == "boolean":
                fields.append((name, f"<{tag}>", f"</{tag}>", _BOOL, None))
            elif mkind in ("integer", "long", "double", "float"):
                fields.append((name, f"<{tag}>", f"</{tag}>", _NUMBER, None))
            elif mkind in ("structure", "list", "map"):
                fields.append((name, f"<{tag}>", f"</{tag}>", _NESTED, _writer(member)))
            else:
                fields.append((name, f"<{tag}>", f"</{tag}>", _SCALAR, _scalar_text(member)))
        return write_structure
    if kind == "list":
        item = shape.member.serialization.get("name", "member")
        open_tag, close_tag = f"<{item}>", f"</{item}>"
        element_writer = _writer(shape.member)

        def write_list(out: list, value) -> None:
            for element in value:
                out.append(open_tag)
                element_writer(out, element)
                out.append(close_tag)
        _WRITERS[shape.name] = write_list
        return write_list
    if kind == "map":
        value_writer = _writer(shape.value)

        def write_map(out: list, value: dict) -> None:
            for k, v in value.items():
                out.append(f"<entry><key>{escape(str(k))}</key><value>")
                value_writer(out, v)
                out.append("</value></entry>")
        _WRITERS[shape.name] = write_map
        return write_map
    if kind == "boolean":
        write = lambda out, v: out.append("true" if v else "false")  # noqa: E731
    else:
        text = _scalar_text(shape)
        write = lambda out, v: out.append(text(v))  # noqa: E731
    _WRITERS[shape.name] = write
    return write


def render_output(action: str, shape: Shape | None, result: dict | None, request_id: str) -> bytes:
    out = [f'<?xml version="1.0" encoding="UTF-8"?>\n<{action}Response xmlns="{XMLNS}">',
           f"<requestId>{request_id}</requestId>"]
    if shape is None:
        out.append("<return>true</return>")
    else:
        _writer(shape)(out, result or {})
    out.append(f"</{action}Response>")
    return "".join(out).encode()


# Error messages echo what the request said (ids, names, values): a 10 MB parameter must not come
# back whole. Longer messages are cut, as AWS cuts them.
MAX_MESSAGE = 1024


def render_error(code: str, message: str, request_id: str) -> bytes:
    if len(message) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE - 3] + "..."
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>{escape(code)}</Code>'
            f"<Message>{escape(message)}</Message></Error></Errors>"
            f"<RequestID>{request_id}</RequestID></Response>").encode()
