"""Temporary credentials of instance roles: what the metadata service hands a guest under
iam/security-credentials/ROLE, and what the API accepts back (api/app.py).

Nothing is stored. The session token carries (association id, instance id, expiry) under an
HMAC; the access key id (ASIA...) and the secret are derived from the token with the same key
(ebs_encryption.derived_key: every process sharing the master key agrees). A request signed
with them is accepted while the token's time lasts and its association holds (instance_profiles:
associated, its instance not ending): DisassociateIamInstanceProfile and termination end them at
once (AWS lets issued ones run to their expiry unless the role's sessions are revoked; the issue
asks for the stricter behaviour, which is also the safer one on a shared laptop).

Timing, as AWS's: credentials live `role_credentials_seconds` (6 hours), and new ones are made
available every sixth of that (hourly), long before the old ones expire; within one period every
read gets the same credentials.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timezone

from .ebs_encryption import derived_key

PREFIX = "ASIA"
PERIODS = 6  # new credentials this many times per lifetime
_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


@dataclass(frozen=True)
class RoleSession:
    association_id: str
    instance_id: str
    expiry: int  # epoch seconds


def _key(config) -> bytes:
    return derived_key(config, "instance-role-credentials")


def _digest(key: bytes, label: str, text: str) -> bytes:
    return hmac.new(key, f"{label}:{text}".encode(), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _access_key_id(key: bytes, token: str) -> str:
    digest = _digest(key, "akid", token)
    return PREFIX + "".join(_B32[b % 32] for b in digest[:16])


def _secret(key: bytes, token: str) -> str:
    return base64.b64encode(_digest(key, "secret", token)[:30]).decode()


def issue(config, association_id: str, instance_id: str, now: float) -> dict:
    """The credentials IMDS serves now: AWS's JSON members (Code, LastUpdated, Type, AccessKeyId,
    SecretAccessKey, Token, Expiration)."""
    lifetime = config.role_credentials_seconds
    period = max(1, lifetime // PERIODS)
    start = int(now) - int(now) % period
    expiry = start + lifetime
    key = _key(config)
    payload = f"{association_id}.{instance_id}.{expiry}"
    token = _b64(f"{payload}.{_b64(_digest(key, 'token', payload))}".encode())
    return {"Code": "Success", "LastUpdated": _iso(start), "Type": "AWS-HMAC",
            "AccessKeyId": _access_key_id(key, token), "SecretAccessKey": _secret(key, token),
            "Token": token, "Expiration": _iso(expiry)}


def open_session(config, access_key: str, token: str | None) -> tuple[RoleSession, str] | None:
    """(the session, the secret to check the signature with) for an ASIA key and its token, if
    this emulator issued them as a pair (expired or not: the caller decides); else None."""
    if not token or not access_key.startswith(PREFIX):
        return None
    key = _key(config)
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        association_id, instance_id, expiry, mac = raw.rsplit(".", 3)
        expiry_at = int(expiry)
    except (ValueError, UnicodeDecodeError):
        return None
    payload = f"{association_id}.{instance_id}.{expiry}"
    # Bytes, not str: compare_digest refuses a str with characters beyond ASCII (a 500 before).
    if not hmac.compare_digest(mac.encode(), _b64(_digest(key, "token", payload)).encode()):
        return None
    if not hmac.compare_digest(access_key.encode(), _access_key_id(key, token).encode()):
        return None
    return RoleSession(association_id, instance_id, expiry_at), _secret(key, token)
