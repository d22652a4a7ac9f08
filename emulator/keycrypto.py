"""Cryptography behind EC2 key pairs (CreateKeyPair / ImportKeyPair).

Everything here mirrors what AWS does:

* ``create_key`` makes a 2048-bit RSA or an ED25519 key and returns the
  private key material the way CreateKeyPair returns it:

  - ``pem`` + RSA      -> traditional PKCS#1 ``-----BEGIN RSA PRIVATE KEY-----``
  - ``pem`` + ED25519  -> OpenSSH ``-----BEGIN OPENSSH PRIVATE KEY-----``
  - ``ppk``            -> unencrypted ``PuTTY-User-Key-File-3`` (PuTTY manual,
    appendix C), with a Private-MAC computed as HMAC-SHA-256 under an empty
    key over string(alg) || string("none") || string(comment) ||
    string(public blob) || string(private blob).

* Fingerprints (see "Verify the fingerprint of your key pair" in the EC2 user
  guide):

  - created RSA   -> SHA-1 of the DER PKCS#8 private key, colon hex
                     (``openssl pkcs8 -topk8 -nocrypt -outform DER | openssl sha1 -c``)
  - imported RSA  -> MD5 of the DER SubjectPublicKeyInfo, colon hex
                     (``openssl rsa -pubout -outform DER | openssl md5 -c``)
  - ED25519 (both)-> base64 of SHA-256 of the SSH wire public key blob, with
                     the ``=`` padding kept (``ssh-keygen -l`` shows it
                     without the padding).

* ``import_public_key`` accepts the formats ImportKeyPair documents: OpenSSH
  one-line public keys, PEM / base64 DER public keys (SubjectPublicKeyInfo or
  PKCS#1 ``RSA PUBLIC KEY``) and RFC 4716 SSH2 public key files. Only RSA
  (1024..16384 bits) and ED25519 keys are accepted; anything else raises
  :class:`KeyMaterialError` (-> EC2 ``InvalidKey.Format``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import struct
from dataclasses import dataclass

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

__all__ = [
    "KeyMaterialError",
    "NewKey",
    "create_key",
    "import_public_key",
    "KEY_TYPES",
    "KEY_FORMATS",
    "RSA_MIN_BITS",
    "RSA_MAX_BITS",
]

KEY_TYPES = ("rsa", "ed25519")
KEY_FORMATS = ("pem", "ppk")

RSA_CREATE_BITS = 2048
RSA_PUBLIC_EXPONENT = 65537
RSA_MIN_BITS = 1024
RSA_MAX_BITS = 16384

# The message AWS puts on InvalidKey.Format.
INVALID_FORMAT_MESSAGE = "Key is not in valid OpenSSH public key format"


class KeyMaterialError(ValueError):
    """Public key material that ImportKeyPair must refuse (InvalidKey.Format).

    ``str(exc)`` is the AWS-style message, suitable to return to the client;
    ``exc.reason`` carries a more precise explanation for logs/debugging.
    """

    def __init__(self, reason: str = "", message: str = INVALID_FORMAT_MESSAGE):
        super().__init__(message)
        self.reason = reason or message


@dataclass
class NewKey:
    private_material: str  # what CreateKeyPair returns as KeyMaterial
    public_openssh: str  # 'ssh-rsa AAAA...' / 'ssh-ed25519 AAAA...' (no comment)
    fingerprint: str


# --------------------------------------------------------------------------
# SSH wire encoding helpers (RFC 4251 section 5)
# --------------------------------------------------------------------------


def _ssh_string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _ssh_mpint(value: int) -> bytes:
    if value < 0:
        raise ValueError("negative mpint not supported here")
    if value == 0:
        return _ssh_string(b"")
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    if raw[0] & 0x80:
        raw = b"\x00" + raw
    return _ssh_string(raw)


class _WireReader:
    def __init__(self, data: bytes):
        self._data = data
        self._pos = 0

    def string(self) -> bytes:
        if self._pos + 4 > len(self._data):
            raise KeyMaterialError("truncated SSH public key blob")
        (length,) = struct.unpack_from(">I", self._data, self._pos)
        self._pos += 4
        if self._pos + length > len(self._data):
            raise KeyMaterialError("truncated SSH public key blob")
        out = self._data[self._pos : self._pos + length]
        self._pos += length
        return out

    def mpint(self) -> int:
        raw = self.string()
        if raw and raw[0] & 0x80:
            raise KeyMaterialError("negative integer in SSH public key blob")
        return int.from_bytes(raw, "big")

    def at_end(self) -> bool:
        return self._pos == len(self._data)


def _b64_lines(data: bytes, width: int = 64) -> list[str]:
    text = base64.b64encode(data).decode("ascii")
    return [text[i : i + width] for i in range(0, len(text), width)] or [""]


def _colon_hex(digest: bytes) -> str:
    return ":".join(f"{b:02x}" for b in digest)


# --------------------------------------------------------------------------
# Public key helpers
# --------------------------------------------------------------------------


def _openssh_public(public_key) -> str:
    """'ssh-rsa AAAA...' / 'ssh-ed25519 AAAA...' without a comment."""
    return public_key.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode("ascii")


def _public_blob(public_key) -> bytes:
    """The SSH wire encoding of a public key (what authorized_keys base64s)."""
    return base64.b64decode(_openssh_public(public_key).split()[1])


def _ed25519_fingerprint(public_key: ed25519.Ed25519PublicKey) -> str:
    # base64, with the '=' padding kept (AWS shows e.g. '...Xk=').
    return base64.b64encode(hashlib.sha256(_public_blob(public_key)).digest()).decode(
        "ascii"
    )


def _imported_rsa_fingerprint(public_key: rsa.RSAPublicKey) -> str:
    spki_der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return _colon_hex(hashlib.md5(spki_der).digest())


def _created_rsa_fingerprint(private_key: rsa.RSAPrivateKey) -> str:
    pkcs8_der = private_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return _colon_hex(hashlib.sha1(pkcs8_der).digest())


# --------------------------------------------------------------------------
# PuTTY private key file (PPK v3, unencrypted)
# --------------------------------------------------------------------------


def ppk_mac(
    algorithm: str,
    encryption: str,
    comment: str,
    public_blob: bytes,
    private_blob: bytes,
    mac_key: bytes = b"",
) -> str:
    """Private-MAC of a PPK v3 file (hex). For 'Encryption: none' the key is empty."""
    data = (
        _ssh_string(algorithm.encode("utf-8"))
        + _ssh_string(encryption.encode("utf-8"))
        + _ssh_string(comment.encode("utf-8"))
        + _ssh_string(public_blob)
        + _ssh_string(private_blob)
    )
    return hmac.new(mac_key, data, hashlib.sha256).hexdigest()


def _ppk_private_blob(private_key) -> tuple[str, bytes]:
    if isinstance(private_key, rsa.RSAPrivateKey):
        nums = private_key.private_numbers()
        # PuTTY: mpint d, mpint p, mpint q, mpint iqmp (= q^-1 mod p, which is
        # exactly PKCS#1's "coefficient" as cryptography exposes it).
        blob = (
            _ssh_mpint(nums.d)
            + _ssh_mpint(nums.p)
            + _ssh_mpint(nums.q)
            + _ssh_mpint(nums.iqmp)
        )
        return "ssh-rsa", blob
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        # PuTTY stores the EdDSA private integer little-endian, fixed length
        # (32 bytes) as an SSH string: i.e. the raw 32-byte seed.
        seed = private_key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return "ssh-ed25519", _ssh_string(seed)
    raise TypeError(f"unsupported key type for PPK: {type(private_key).__name__}")


def _to_ppk(private_key, comment: str = "") -> str:
    if "\n" in comment or "\r" in comment:
        raise ValueError("PPK comment may not contain CR or LF")
    algorithm, private_blob = _ppk_private_blob(private_key)
    public_blob = _public_blob(private_key.public_key())
    encryption = "none"
    pub_lines = _b64_lines(public_blob)
    priv_lines = _b64_lines(private_blob)
    mac = ppk_mac(algorithm, encryption, comment, public_blob, private_blob)
    out = [
        f"PuTTY-User-Key-File-3: {algorithm}",
        f"Encryption: {encryption}",
        f"Comment: {comment}",
        f"Public-Lines: {len(pub_lines)}",
        *pub_lines,
        f"Private-Lines: {len(priv_lines)}",
        *priv_lines,
        f"Private-MAC: {mac}",
    ]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------
# CreateKeyPair
# --------------------------------------------------------------------------


def _pem(private_key, fmt: serialization.PrivateFormat) -> str:
    return private_key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()).decode("ascii")


def create_key(key_type: str, key_format: str = "pem", *, comment: str = "") -> NewKey:
    """Generate a key pair as CreateKeyPair does.

    ``comment`` only matters for the PPK format (its ``Comment:`` header);
    callers may pass the key pair name.
    """
    key_type = (key_type or "rsa").lower()
    key_format = (key_format or "pem").lower()
    if key_type not in KEY_TYPES:
        raise ValueError(f"unsupported key type {key_type!r}")
    if key_format not in KEY_FORMATS:
        raise ValueError(f"unsupported key format {key_format!r}")

    if key_type == "rsa":
        private_key = rsa.generate_private_key(
            public_exponent=RSA_PUBLIC_EXPONENT, key_size=RSA_CREATE_BITS
        )
        fingerprint = _created_rsa_fingerprint(private_key)
        if key_format == "pem":
            # AWS returns the PKCS#1 PEM without a trailing newline.
            material = _pem(private_key, serialization.PrivateFormat.TraditionalOpenSSL).rstrip("\n")
    else:
        private_key = ed25519.Ed25519PrivateKey.generate()
        fingerprint = _ed25519_fingerprint(private_key.public_key())
        if key_format == "pem":
            # Keep the trailing newline: OpenSSH refuses an OpenSSH-format
            # private key file without it ("error in libcrypto").
            material = _pem(private_key, serialization.PrivateFormat.OpenSSH)

    if key_format == "ppk":
        material = _to_ppk(private_key, comment)

    return NewKey(
        private_material=material,
        public_openssh=_openssh_public(private_key.public_key()),
        fingerprint=fingerprint,
    )


# --------------------------------------------------------------------------
# ImportKeyPair
# --------------------------------------------------------------------------

_SSH_KEY_TYPES = {"ssh-rsa", "ssh-ed25519"}
_REJECTED_SSH_TYPE_PREFIXES = (b"ssh-dss", b"ecdsa-", b"sk-", b"ssh-ed448", b"x509v3-")
_B64_RE = re.compile(rb"^[A-Za-z0-9+/]+={0,2}$")


def _b64decode_strict(text: bytes) -> bytes:
    if not text or not _B64_RE.match(text):
        raise KeyMaterialError("invalid base64 data")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KeyMaterialError(f"invalid base64 data: {exc}") from None


def _key_from_ssh_blob(blob: bytes, expected_type: str | None = None):
    reader = _WireReader(blob)
    key_type = reader.string().decode("ascii", "replace")
    if expected_type is not None and key_type != expected_type:
        raise KeyMaterialError(
            f"key type {expected_type!r} does not match blob type {key_type!r}"
        )
    if key_type == "ssh-rsa":
        e = reader.mpint()
        n = reader.mpint()
        if not reader.at_end():
            raise KeyMaterialError("trailing data in ssh-rsa public key blob")
        try:
            return rsa.RSAPublicNumbers(e, n).public_key()
        except ValueError as exc:
            raise KeyMaterialError(f"invalid RSA public key: {exc}") from None
    if key_type == "ssh-ed25519":
        raw = reader.string()
        if not reader.at_end():
            raise KeyMaterialError("trailing data in ssh-ed25519 public key blob")
        if len(raw) != 32:
            raise KeyMaterialError("ssh-ed25519 public key must be 32 bytes")
        try:
            return ed25519.Ed25519PublicKey.from_public_bytes(raw)
        except ValueError as exc:
            raise KeyMaterialError(f"invalid ED25519 public key: {exc}") from None
    raise KeyMaterialError(f"unsupported key type {key_type!r}")


def _parse_openssh_line(text: bytes):
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(lines) != 1:
        raise KeyMaterialError("expected a single OpenSSH public key line")
    fields = lines[0].split(None, 2)
    if len(fields) < 2:
        raise KeyMaterialError("OpenSSH public key needs a type and base64 data")
    key_type = fields[0].decode("ascii", "replace")
    if key_type not in _SSH_KEY_TYPES:
        raise KeyMaterialError(f"unsupported key type {key_type!r}")
    return _key_from_ssh_blob(_b64decode_strict(fields[1]), expected_type=key_type)


def _parse_rfc4716(text: bytes):
    lines = [ln.strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    if (
        len(lines) < 3
        or lines[0] != b"---- BEGIN SSH2 PUBLIC KEY ----"
        or lines[-1] != b"---- END SSH2 PUBLIC KEY ----"
    ):
        raise KeyMaterialError("malformed RFC 4716 public key file")
    body = lines[1:-1]
    i = 0
    # Headers: "Tag: value", continued onto the next line by a trailing '\'.
    while i < len(body) and b":" in body[i]:
        while body[i].endswith(b"\\"):
            i += 1
            if i >= len(body):
                raise KeyMaterialError("unterminated RFC 4716 header")
        i += 1
    b64 = b"".join(body[i:])
    return _key_from_ssh_blob(_b64decode_strict(b64))


def _load_der_public(der: bytes):
    try:
        return serialization.load_der_public_key(der)  # SubjectPublicKeyInfo
    except (ValueError, UnsupportedAlgorithm, TypeError) as exc:
        spki_error = str(exc)
    # PKCS#1 RSAPublicKey DER: wrap it in PEM armour and let the PEM loader,
    # which understands "RSA PUBLIC KEY", handle it.
    pem = (
        b"-----BEGIN RSA PUBLIC KEY-----\n"
        + "\n".join(_b64_lines(der)).encode("ascii")
        + b"\n-----END RSA PUBLIC KEY-----\n"
    )
    try:
        return serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm, TypeError) as exc:
        raise KeyMaterialError(f"not a DER public key: {spki_error}; {exc}") from None


def _parse_pem(text: bytes):
    m = re.search(rb"-----BEGIN ([A-Z0-9 ]+)-----", text)
    label = m.group(1).decode() if m else ""
    if "PRIVATE" in label:
        raise KeyMaterialError("a private key was supplied; import the public key")
    if label not in ("PUBLIC KEY", "RSA PUBLIC KEY"):
        raise KeyMaterialError(f"unsupported PEM block {label!r}")
    try:
        return serialization.load_pem_public_key(text.strip() + b"\n")
    except (ValueError, UnsupportedAlgorithm, TypeError) as exc:
        raise KeyMaterialError(f"invalid PEM public key: {exc}") from None


def _parse_public_key(material: bytes):
    stripped = material.strip()
    if not stripped:
        raise KeyMaterialError("empty public key material")
    if stripped.startswith(b"---- BEGIN SSH2 PUBLIC KEY ----"):
        return _parse_rfc4716(stripped)
    if stripped.startswith(b"-----BEGIN "):
        return _parse_pem(stripped)
    first = stripped.split(None, 1)[0]
    if first.decode("ascii", "replace") in _SSH_KEY_TYPES:
        return _parse_openssh_line(stripped)
    if first.startswith(_REJECTED_SSH_TYPE_PREFIXES) or first.endswith(
        b"-cert-v01@openssh.com"
    ):
        raise KeyMaterialError(f"unsupported key type {first.decode('ascii', 'replace')!r}")
    if material[:1] == b"\x30":  # raw DER SEQUENCE
        return _load_der_public(material)
    # "Base64 encoded DER format": base64 of a DER public key without PEM armour.
    joined = b"".join(stripped.split())
    if _B64_RE.match(joined):
        try:
            der = base64.b64decode(joined, validate=True)
        except (binascii.Error, ValueError):
            der = b""
        if der[:1] == b"\x30":
            return _load_der_public(der)
    raise KeyMaterialError("unrecognised public key format")


def import_public_key(material: bytes) -> tuple[str, str, str]:
    """Validate ImportKeyPair material.

    Returns ``(key_type, public_openssh, fingerprint)`` with key_type
    ``'rsa'`` or ``'ed25519'``. Raises :class:`KeyMaterialError` otherwise.
    """
    if isinstance(material, str):
        material = material.encode("utf-8", "replace")
    if not isinstance(material, (bytes, bytearray, memoryview)):
        raise KeyMaterialError("public key material must be bytes")
    public_key = _parse_public_key(bytes(material))

    if isinstance(public_key, rsa.RSAPublicKey):
        bits = public_key.key_size
        if bits < RSA_MIN_BITS or bits > RSA_MAX_BITS:
            raise KeyMaterialError(
                f"RSA key length {bits} not supported "
                f"({RSA_MIN_BITS}..{RSA_MAX_BITS} bits)"
            )
        return "rsa", _openssh_public(public_key), _imported_rsa_fingerprint(public_key)
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "ed25519", _openssh_public(public_key), _ed25519_fingerprint(public_key)
    raise KeyMaterialError(
        f"unsupported key algorithm {type(public_key).__name__}; "
        "only RSA and ED25519 keys can be imported"
    )
