"""EC2 key pairs: create (the private key is returned once and never stored), import, describe, delete."""
from __future__ import annotations

from sqlalchemy import select

from . import keycrypto
from .errors import (InvalidKeyFormat, InvalidKeyPairDuplicate, InvalidKeyPairNotFound, InvalidParameterValue,
                     MissingParameter)
from .ids import new_id
from .models import KeyPair
from .query import Resource, Selector, describe
from .registry import Context, action
from .tags import refuse_other_tag_types, set_tags, tag_dict, tag_list, tag_specifications


def _check_name(name: str) -> None:
    if not name or len(name) > 255 or not name.isascii():
        raise InvalidParameterValue(f"Invalid key name '{name}': 1 to 255 ASCII characters")


def _find(ctx: Context, name: str) -> KeyPair | None:
    return ctx.session.scalars(select(KeyPair).where(
        KeyPair.account_id == ctx.account_id, KeyPair.region == ctx.region, KeyPair.name == name)).first()


def get_by_name(ctx: Context, name: str) -> KeyPair:
    key = _find(ctx, name)
    if key is None:
        raise InvalidKeyPairNotFound(name)
    return key


def _store(ctx: Context, p: dict, key_type: str, public_key: str, fingerprint: str) -> tuple[KeyPair, list]:
    name = p["KeyName"]
    _check_name(name)
    refuse_other_tag_types(p.get("TagSpecifications"), {"key-pair"})
    tags = tag_specifications(p.get("TagSpecifications"), "key-pair")
    if _find(ctx, name) is not None:
        raise InvalidKeyPairDuplicate(name)
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
            "KeyPairId": key.id, "Tags": tag_list(tag_dict(tags))}


@action("ImportKeyPair")
def import_key_pair(ctx: Context, p: dict) -> dict:
    try:
        key_type, public, fingerprint = keycrypto.import_public_key(p["PublicKeyMaterial"])
    except keycrypto.KeyMaterialError as exc:
        raise InvalidKeyFormat(str(exc)) from None
    key, tags = _store(ctx, p, key_type, public, fingerprint)
    return {"KeyName": key.name, "KeyFingerprint": key.fingerprint, "KeyPairId": key.id,
            "Tags": tag_list(tag_dict(tags))}


KEY_FILTERS = {
    "key-pair-id": lambda k: k.id,
    "key-name": lambda k: k.name,
    "fingerprint": lambda k: k.fingerprint,
    "key-type": lambda k: k.key_type,
}


def _key_pairs(with_public: bool):
    def render(ctx: Context, rows: list, tags) -> list[dict]:
        return [{
            "KeyPairId": k.id, "KeyFingerprint": k.fingerprint, "KeyName": k.name, "KeyType": k.key_type,
            "Tags": tag_list(tags[k.id]) or [], "CreateTime": k.created_at,
            "PublicKey": (k.public_key + " " + k.name) if with_public else None,
        } for k in rows]
    return render


def _key_pair_resource(with_public: bool) -> Resource:
    return Resource("KeyPairs", _key_pairs(with_public), KEY_FILTERS,
                    (Selector("KeyNames", lambda k: k.name, InvalidKeyPairNotFound),
                     Selector("KeyPairIds", lambda k: k.id, InvalidKeyPairNotFound)),
                    key=lambda k: k.name, max_results=None)


KEY_PAIRS = {False: _key_pair_resource(False), True: _key_pair_resource(True)}


@action("DescribeKeyPairs")
def describe_key_pairs(ctx: Context, p: dict) -> dict:
    rows = ctx.session.scalars(select(KeyPair).where(
        KeyPair.account_id == ctx.account_id, KeyPair.region == ctx.region).order_by(KeyPair.name)).all()
    return describe(ctx, KEY_PAIRS[bool(p.get("IncludePublicKey"))], p, rows)


@action("DeleteKeyPair")
def delete_key_pair(ctx: Context, p: dict) -> dict:
    from .tags import delete_all_tags
    name, key_id = p.get("KeyName"), p.get("KeyPairId")
    if not name and not key_id:
        raise MissingParameter("KeyName or KeyPairId")
    if key_id:
        key = ctx.session.get(KeyPair, key_id)
        if key is None or key.account_id != ctx.account_id or key.region != ctx.region:
            raise InvalidKeyPairNotFound(key_id)
    else:
        key = _find(ctx, name)  # AWS answers success for a name that does not exist
    if key is None:
        return {"Return": True}
    delete_all_tags(ctx, key.id)
    ctx.session.delete(key)
    return {"Return": True, "KeyPairId": key.id}
