"""EBS encryption: the account's settings (Enable/Disable/GetEbsEncryptionByDefault,
GetEbsDefaultKmsKeyId, Modify/ResetEbsDefaultKmsKeyId), KMS key ids, and the data keys of
encrypted volumes and snapshots.

There is no KMS here. A KmsKeyId is checked for its form only (a key id, `alias/...`, or a key or
alias ARN) and shown as AWS shows it: the ARN of a key, `arn:aws:kms:REGION:ACCOUNT:key/UUID`; the
account's default key (`alias/aws/ebs`) and any alias get a UUID derived from (account, region,
alias), so the same alias always names the same key.

Each encrypted volume or snapshot has its own random 32-byte data key (the LUKS passphrase the
driver gets), stored only WRAPPED: AES-GCM under the emulator's master key, with the resource id as
associated data (a wrapped key copied onto another row does not open). The master key is the
config's `ebs_master_key`, else a file made once in the state dir (0600). Host tasks carry resource
ids only; a host action unwraps the key when it runs, and hands it to the driver, nothing else.
"""
from __future__ import annotations

import base64
import os
import re
import secrets
import threading
import uuid
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import InvalidParameterDependency, InvalidParameterValue
from .models import RegionState
from .registry import Context, action

DEFAULT_ALIAS = "alias/aws/ebs"
MASTER_KEY_FILE = "ebs-master.key"
DATA_KEY_BYTES = 32

# ------------------------------------------------------------------------------- master key

_master: dict[str, bytes] = {}  # a constant of the state dir or config, read once per process
_master_lock = threading.Lock()


def _master_key(config) -> bytes:
    source = config.ebs_master_key or str(Path(config.state_dir).resolve() / MASTER_KEY_FILE)
    with _master_lock:
        key = _master.get(source)
        if key is None:
            key = base64.b64decode(config.ebs_master_key) if config.ebs_master_key else _key_file(Path(source))
            if len(key) != 32:
                raise ValueError("ebs_master_key must be base64 of 32 bytes")
            _master[source] = key
        return key


def derived_key(config, purpose: str) -> bytes:
    """A key for another of the emulator's secrets (e.g. instance role credentials), derived from
    the master key: processes that share the master key (they must) share it too."""
    import hashlib
    import hmac

    return hmac.new(_master_key(config), b"ec2emu:" + purpose.encode(), hashlib.sha256).digest()


def _key_file(path: Path) -> bytes:
    """The master key file, made once: written whole under a temporary name, then linked into
    place (a second process racing to make it finds the first one's key, never half a file)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_bytes()


# -------------------------------------------------------------------------------- data keys

def new_wrapped_key(config, resource_id: str) -> str:
    """A fresh random data key for a resource, wrapped (the plain key is not kept)."""
    return wrap(config, secrets.token_bytes(DATA_KEY_BYTES), resource_id)


def wrap(config, key: bytes, resource_id: str) -> str:
    nonce = secrets.token_bytes(12)
    return base64.b64encode(nonce + AESGCM(_master_key(config)).encrypt(nonce, key, resource_id.encode())).decode()


def unwrap(config, wrapped: str | None, resource_id: str) -> bytes | None:
    """The plain data key of a resource (None when it has none: not encrypted)."""
    if not wrapped:
        return None
    raw = base64.b64decode(wrapped)
    return AESGCM(_master_key(config)).decrypt(raw[:12], raw[12:], resource_id.encode())


def passphrase(config, wrapped: str | None, resource_id: str) -> bytes | None:
    """What the driver gets as a resource's `key`: its data key as base64 text. LUKS takes the key
    as a passphrase, which qemu requires to be UTF-8 (32 random bytes rarely are: qemu-img
    refused them, 'Data from secret sec0 is not valid UTF-8'); the text keeps all 256 bits."""
    key = unwrap(config, wrapped, resource_id)
    return None if key is None else base64.b64encode(key)


def rewrap(config, wrapped: str | None, from_id: str, to_id: str) -> str | None:
    """The same data key wrapped for another resource (a snapshot keeps its volume's key)."""
    key = unwrap(config, wrapped, from_id)
    return None if key is None else wrap(config, key, to_id)


# ---------------------------------------------------------------------------------- KMS ids

_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_KEY_ID = re.compile(rf"^(?:{_UUID}|mrk-[0-9a-f]{{32}})$")
_ALIAS = re.compile(r"^alias/[A-Za-z0-9/_-]{1,250}$")
_ARN = re.compile(r"^arn:aws[a-z-]*:kms:([a-z0-9-]+):(\d{12}):(key/.+|alias/.+)$")


def _key_for_alias(account_id: str, region: str, alias: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"ec2emu-kms:{account_id}:{region}:{alias}"))


def key_arn(ctx: Context, kms_key_id: str | None) -> str:
    """The ARN DescribeVolumes/DescribeSnapshots show for a KmsKeyId the caller gave (None: the
    account's default key), or InvalidParameterValue for a value that is no KMS key id."""
    kms_key_id = kms_key_id or default_key_id(ctx)
    account, region, name = ctx.account_id, ctx.region, kms_key_id
    m = _ARN.match(kms_key_id)
    if m:
        region, account, name = m.group(1), m.group(2), m.group(3)
    if name.startswith("key/") and _KEY_ID.match(name[4:]):
        return f"arn:aws:kms:{region}:{account}:{name}"
    if _KEY_ID.match(name):
        return f"arn:aws:kms:{region}:{account}:key/{name}"
    if _ALIAS.match(name) and (not name.startswith("alias/aws/") or name == DEFAULT_ALIAS):
        return f"arn:aws:kms:{region}:{account}:key/{_key_for_alias(account, region, name)}"
    raise InvalidParameterValue.value(kms_key_id, "kmsKeyId")


# ------------------------------------------------------------------------- account settings

def _settings_row(ctx: Context) -> RegionState:
    row = ctx.session.get(RegionState, (ctx.account_id, ctx.region))
    if row is None:  # (the defaults are made before any handler runs; this is a safety net)
        row = RegionState(account_id=ctx.account_id, region=ctx.region, settings={})
        ctx.session.add(row)
    return row


def _setting(ctx: Context, name: str, default=None):
    return (_settings_row(ctx).settings or {}).get(name, default)


def _set(ctx: Context, name: str, value) -> None:
    row = _settings_row(ctx)
    row.settings = {**(row.settings or {}), name: value}  # a new dict: the JSON column sees the change


def encrypted_by_default(ctx: Context) -> bool:
    return bool(_setting(ctx, "EbsEncryptionByDefault", False))


def default_key_id(ctx: Context) -> str:
    return _setting(ctx, "EbsDefaultKmsKeyId") or DEFAULT_ALIAS


def encryption(ctx: Context, encrypted: bool | None, kms_key_id: str | None,
               inherited: bool = False) -> tuple[bool, str | None]:
    """(encrypted?, key ARN) for a new volume or snapshot copy: encrypted when asked, when its
    source is (`inherited`), or when the account encrypts by default (then Encrypted=false does
    not opt out, as on AWS). A KmsKeyId needs Encrypted=true (AWS: InvalidParameterDependency)."""
    if kms_key_id and not encrypted:
        raise InvalidParameterDependency.requires("KmsKeyId", "Encrypted")
    if not (encrypted or inherited or encrypted_by_default(ctx)):
        return False, None
    return True, key_arn(ctx, kms_key_id)


@action("EnableEbsEncryptionByDefault")
def enable_ebs_encryption_by_default(ctx: Context, p: dict) -> dict:
    _set(ctx, "EbsEncryptionByDefault", True)
    return {"EbsEncryptionByDefault": True}


@action("DisableEbsEncryptionByDefault")
def disable_ebs_encryption_by_default(ctx: Context, p: dict) -> dict:
    _set(ctx, "EbsEncryptionByDefault", False)
    return {"EbsEncryptionByDefault": False}


@action("GetEbsEncryptionByDefault")
def get_ebs_encryption_by_default(ctx: Context, p: dict) -> dict:
    return {"EbsEncryptionByDefault": encrypted_by_default(ctx), "SseType": "none"}


def _shown_default(ctx: Context) -> str:
    """GetEbsDefaultKmsKeyId's form: the alias ARN of AWS's managed key, else the key's ARN."""
    key = default_key_id(ctx)
    if key == DEFAULT_ALIAS:
        return f"arn:aws:kms:{ctx.region}:{ctx.account_id}:{DEFAULT_ALIAS}"
    return key_arn(ctx, key)


@action("GetEbsDefaultKmsKeyId")
def get_ebs_default_kms_key_id(ctx: Context, p: dict) -> dict:
    return {"KmsKeyId": _shown_default(ctx)}


@action("ModifyEbsDefaultKmsKeyId")
def modify_ebs_default_kms_key_id(ctx: Context, p: dict) -> dict:
    key_arn(ctx, p["KmsKeyId"])  # its form is checked
    _set(ctx, "EbsDefaultKmsKeyId", p["KmsKeyId"])
    return {"KmsKeyId": _shown_default(ctx)}


@action("ResetEbsDefaultKmsKeyId")
def reset_ebs_default_kms_key_id(ctx: Context, p: dict) -> dict:
    _set(ctx, "EbsDefaultKmsKeyId", None)
    return {"KmsKeyId": _shown_default(ctx)}
