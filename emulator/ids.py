"""Resource ids as AWS makes them today: a prefix and 17 lower-case hex digits."""
import re
import secrets


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(9)[:17]}"


_ID = re.compile(r"^([a-z]+(?:-[a-z]+)*)-([0-9a-f]{8}|[0-9a-f]{17})$")


def well_formed(value: str, prefix: str) -> bool:
    """True if value looks like an id with this prefix (8 or 17 hex digits, as AWS accepts)."""
    m = _ID.match(value or "")
    return bool(m) and m.group(1) == prefix
