"""EC2 key pairs: create (the private key is returned once and never stored), import, describe, delete."""
from __future__ import annotations

from sqlalchemy import select

from . import keycrypto
from .errors import EC2Error
from .ids import new_id
from .models import KeyPair
from .query import apply_filters
from .registry import Context, action
from .tags import refuse_other_tag_types, set_tags, tag_list, tag_specifications, tags_for


def _check_name(name: str) -> None:
    if not name or len(name) > 255 or not name.isascii():
        raise EC2Error(f"Invalid key name '{name}': 1 to 255 ASCII characters", "InvalidParameterValue")


def _find(ctx: Context, name: str) -> KeyPair | None:
    return ctx.session.scalars(select(KeyPair).where(
        KeyPair.account_id == ctx.account_id, KeyPair.region == ctx.region, KeyPair.name == name)).first()


def get_by_name(ctx: Context, name: str) -> KeyPair:
    key = _find(ctx, name)
    if key is None:
        raise EC2Error(f"The key pair '{name}' does not exist", "InvalidKeyPair.NotFound")
    return key


def _store(ctx: Context, p: dict, key_type: str, public_key: str, fingerprint: str) -> tuple[KeyPair, list]:
    name = p["KeyName"]
    _check_name(name)
    refuse_other_tag_types(p.get("TagSpecifications"), {"key-pair"})
    tags = tag_specifications(ctx, p.get("TagSpecifications"), "key-pair")
    if _find(ctx, name) is not None:
        raise EC2Error(f"The keypair '{name}' already exists.", "InvalidKeyPair.Duplicate")
    key = KeyPair(id=new_id("key"), account_id=ctx.account_id, region=ctx.region, name=name,
                  key_type=key_type, fingerprint=fingerprint, public_key=public_key)
    ctx.session.add(key)
    ctx.session.flush()
    if tags:
        set_tags(ctx, key.id, tags)
    return key, tags


@action("CreateKeyPair")
def create_key_pair(ctx: Context, p: dict) -> dict:
    key_type = p.get("KeyType") or "rsa"
    made = keycrypto.create_key(key_type, p.get("KeyFormat") or "pem", comment=p["KeyName"])
    key, tags = _store(ctx, p, key_type, made.public_openssh, made.fingerprint)
    return {"KeyName": key.name, "KeyFingerprint": key.fingerprint, "KeyMaterial": made.private_material,
            "KeyPairId": key.id, "Tags": tag_list({t["Key"]: t.get("Value") or "" for t in tags})}


@action("ImportKeyPair")
def import_key_pair(ctx: Context, p: dict) -> dict:
    try:
        key_type, public, fingerprint = keycrypto.import_public_key(p["PublicKeyMaterial"])
    except keycrypto.KeyMaterialError as exc:
        raise EC2Error(f"Key is not in valid OpenSSH public key format ({exc})", "InvalidKey.Format") from None
    key, tags = _store(ctx, p, key_type, public, fingerprint)
    return {"KeyName": key.name, "KeyFingerprint": key.fingerprint, "KeyPairId": key.id,
            "Tags": tag_list({t["Key"]: t.get("Value") or "" for t in tags})}


KEY_FILTERS = {
    "key-pair-id": lambda k: k.id,
    "key-name": lambda k: k.name,
    "fingerprint": lambda k: k.fingerprint,
    "key-type": lambda k: k.key_type,
}


@action("DescribeKeyPairs")
def describe_key_pairs(ctx: Context, p: dict) -> dict:
    rows = ctx.session.scalars(select(KeyPair).where(
        KeyPair.account_id == ctx.account_id, KeyPair.region == ctx.region).order_by(KeyPair.name)).all()
    for wanted, attr in ((p.get("KeyNames"), "name"), (p.get("KeyPairIds"), "id")):
        if wanted:
            have = {getattr(k, attr) for k in rows}
            for w in wanted:
                if w not in have:
                    raise EC2Error(f"The key pair '{w}' does not exist", "InvalidKeyPair.NotFound")
            rows = [k for k in rows if getattr(k, attr) in wanted]
    tags = tags_for(ctx, [k.id for k in rows])
    rows = apply_filters(rows, p.get("Filters"), KEY_FILTERS, lambda k: tags[k.id])
    with_public = p.get("IncludePublicKey")
    return {"KeyPairs": [{
        "KeyPairId": k.id, "KeyFingerprint": k.fingerprint, "KeyName": k.name, "KeyType": k.key_type,
        "Tags": tag_list(tags[k.id]) or [], "CreateTime": k.created_at,
        "PublicKey": (k.public_key + " " + k.name) if with_public else None,
    } for k in rows]}


@action("DeleteKeyPair")
def delete_key_pair(ctx: Context, p: dict) -> dict:
    from .tags import delete_all_tags
    name, key_id = p.get("KeyName"), p.get("KeyPairId")
    if not name and not key_id:
        raise EC2Error("The request must contain the parameter KeyName or KeyPairId", "MissingParameter")
    if key_id:
        key = ctx.session.get(KeyPair, key_id)
        if key is None or key.account_id != ctx.account_id or key.region != ctx.region:
            raise EC2Error(f"The key pair '{key_id}' does not exist", "InvalidKeyPair.NotFound")
    else:
        key = _find(ctx, name)  # AWS answers success for a name that does not exist
    if key is None:
        return {"Return": True}
    delete_all_tags(ctx, key.id)
    ctx.session.delete(key)
    return {"Return": True, "KeyPairId": key.id}
