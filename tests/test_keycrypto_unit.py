"""Unit tests for emulator.keycrypto (EC2 key pair cryptography)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import shutil
import struct
import subprocess
import warnings

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa, x25519

from emulator.keycrypto import (
    KeyMaterialError,
    NewKey,
    create_key,
    import_public_key,
)

OPENSSL = shutil.which("openssl")
SSH_KEYGEN = shutil.which("ssh-keygen")
PUTTYGEN = shutil.which("puttygen")  # Debian package putty-tools
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="openssl binary not available")
needs_ssh_keygen = pytest.mark.skipif(SSH_KEYGEN is None, reason="ssh-keygen not available")
needs_puttygen = pytest.mark.skipif(PUTTYGEN is None, reason="puttygen (putty-tools) not available")

NOENC = serialization.NoEncryption()


# --------------------------------------------------------------------------
# helpers (independent of the module under test)
# --------------------------------------------------------------------------


def sstr(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def read_string(buf: bytes, pos: int) -> tuple[bytes, int]:
    (n,) = struct.unpack_from(">I", buf, pos)
    return buf[pos + 4 : pos + 4 + n], pos + 4 + n


def read_mpint(buf: bytes, pos: int) -> tuple[int, int]:
    raw, pos = read_string(buf, pos)
    return int.from_bytes(raw, "big", signed=True), pos


def openssh_line(pub) -> bytes:
    return pub.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)


def blob_of(pub) -> bytes:
    return base64.b64decode(openssh_line(pub).split()[1])


def rfc4716(blob: bytes, headers: list[str] | None = None, crlf: bool = False) -> bytes:
    b64 = base64.b64encode(blob).decode()
    lines = ["---- BEGIN SSH2 PUBLIC KEY ----"]
    lines += headers or []
    lines += [b64[i : i + 70] for i in range(0, len(b64), 70)]
    lines.append("---- END SSH2 PUBLIC KEY ----")
    nl = "\r\n" if crlf else "\n"
    return (nl.join(lines) + nl).encode()


def md5_spki(pub) -> str:
    der = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return ":".join(f"{b:02x}" for b in hashlib.md5(der).digest())


def sha256_b64(pub) -> str:
    return base64.b64encode(hashlib.sha256(blob_of(pub)).digest()).decode()


def run(cmd: str, *, input: bytes | None = None) -> bytes:
    res = subprocess.run(cmd, shell=True, input=input, capture_output=True, check=True, timeout=60)
    return res.stdout


def openssl_digest_out(out: bytes) -> str:
    # "SHA1(stdin)= a1:b2:..."  or  "(stdin)= a1:b2:..."
    return out.decode().strip().split("= ", 1)[-1].strip()


def write_secret(path, data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode()
    path.write_bytes(data)
    os.chmod(path, 0o600)
    return str(path)


def parse_ppk(text: str) -> dict:
    assert "\r" not in text
    lines = text.split("\n")
    assert lines[-1] == ""  # ends with a newline
    lines = lines[:-1]
    out: dict = {}
    i = 0

    def header(name):
        nonlocal i
        key, _, value = lines[i].partition(": ")
        assert key == name, (key, name)
        i += 1
        return value

    out["first"] = lines[0].partition(": ")
    i = 1
    out["encryption"] = header("Encryption")
    out["comment"] = header("Comment")
    n = int(header("Public-Lines"))
    pub_lines = lines[i : i + n]
    i += n
    m = int(header("Private-Lines"))
    priv_lines = lines[i : i + m]
    i += m
    out["mac"] = header("Private-MAC")
    assert i == len(lines)
    for ln in pub_lines[:-1] + priv_lines[:-1]:
        assert len(ln) == 64
    out["public"] = base64.b64decode("".join(pub_lines))
    out["private"] = base64.b64decode("".join(priv_lines))
    return out


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ed_key():
    return ed25519.Ed25519PrivateKey.generate()


# --------------------------------------------------------------------------
# create_key: PEM
# --------------------------------------------------------------------------


def test_create_rsa_pem():
    k = create_key("rsa", "pem")
    assert isinstance(k, NewKey)
    assert k.private_material.startswith("-----BEGIN RSA PRIVATE KEY-----\n")
    assert k.private_material.rstrip("\n").endswith("-----END RSA PRIVATE KEY-----")
    priv = serialization.load_pem_private_key(k.private_material.encode(), None)
    assert isinstance(priv, rsa.RSAPrivateKey)
    assert priv.key_size == 2048
    assert priv.public_key().public_numbers().e == 65537
    assert k.public_openssh == openssh_line(priv.public_key()).decode()
    assert k.public_openssh.startswith("ssh-rsa AAAA")
    assert len(k.public_openssh.split()) == 2  # no comment

    # fingerprint: SHA-1 of DER PKCS#8, colon hex, 20 bytes
    der = priv.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, NOENC)
    assert k.fingerprint == ":".join(f"{b:02x}" for b in hashlib.sha1(der).digest())
    assert len(k.fingerprint.split(":")) == 20
    assert k.fingerprint == k.fingerprint.lower()


def test_create_ed25519_pem():
    k = create_key("ed25519", "pem")
    assert k.private_material.startswith("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    assert k.private_material.endswith("-----END OPENSSH PRIVATE KEY-----\n")
    priv = serialization.load_ssh_private_key(k.private_material.encode(), None)
    assert isinstance(priv, ed25519.Ed25519PrivateKey)
    assert k.public_openssh == openssh_line(priv.public_key()).decode()
    assert k.public_openssh.startswith("ssh-ed25519 AAAA")
    assert len(k.public_openssh.split()) == 2
    assert k.fingerprint == sha256_b64(priv.public_key())
    assert len(k.fingerprint) == 44 and k.fingerprint.endswith("=")


def test_create_defaults_and_case():
    k = create_key("RSA")
    assert k.private_material.startswith("-----BEGIN RSA PRIVATE KEY-----")
    k = create_key("ED25519", "PEM")
    assert k.private_material.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")


@pytest.mark.parametrize("kt,kf", [("dsa", "pem"), ("ecdsa", "pem"), ("rsa", "der"), ("ed25519", "openssh")])
def test_create_rejects_bad_args(kt, kf):
    with pytest.raises(ValueError):
        create_key(kt, kf)


def test_created_keys_are_unique():
    a, b = create_key("ed25519"), create_key("ed25519")
    assert a.fingerprint != b.fingerprint
    assert a.private_material != b.private_material


# --------------------------------------------------------------------------
# create_key: PPK (PuTTY-User-Key-File-3)
# --------------------------------------------------------------------------


def _check_ppk_mac(p: dict, algorithm: str) -> None:
    data = (
        sstr(algorithm.encode())
        + sstr(p["encryption"].encode())
        + sstr(p["comment"].encode())
        + sstr(p["public"])
        + sstr(p["private"])
    )
    expected = hmac.new(b"", data, hashlib.sha256).hexdigest()
    assert p["mac"] == expected
    assert len(p["mac"]) == 64 and p["mac"] == p["mac"].lower()


def test_create_rsa_ppk():
    k = create_key("rsa", "ppk")
    p = parse_ppk(k.private_material)
    assert p["first"] == ("PuTTY-User-Key-File-3", ": ", "ssh-rsa")
    assert p["encryption"] == "none"
    _check_ppk_mac(p, "ssh-rsa")

    # public blob == the OpenSSH public key
    assert base64.b64encode(p["public"]).decode() == k.public_openssh.split()[1]
    t, pos = read_string(p["public"], 0)
    assert t == b"ssh-rsa"
    e, pos = read_mpint(p["public"], pos)
    n, pos = read_mpint(p["public"], pos)
    assert pos == len(p["public"])

    # private blob: mpint d, p, q, iqmp (q^-1 mod p)
    d, pos = read_mpint(p["private"], 0)
    pp, pos = read_mpint(p["private"], pos)
    q, pos = read_mpint(p["private"], pos)
    iqmp, pos = read_mpint(p["private"], pos)
    assert pos == len(p["private"])
    assert pp * q == n
    assert (q * iqmp) % pp == 1
    assert (e * d) % ((pp - 1) * (q - 1) // __import__("math").gcd(pp - 1, q - 1)) == 1
    # the key actually works
    priv = rsa.RSAPrivateNumbers(
        pp, q, d, d % (pp - 1), d % (q - 1), iqmp, rsa.RSAPublicNumbers(e, n)
    ).private_key()
    assert n.bit_length() == 2048

    # fingerprint is still the created-RSA one (SHA-1 of PKCS#8 DER)
    der = priv.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, NOENC)
    assert k.fingerprint == ":".join(f"{b:02x}" for b in hashlib.sha1(der).digest())


def test_create_ed25519_ppk():
    k = create_key("ed25519", "ppk")
    p = parse_ppk(k.private_material)
    assert p["first"] == ("PuTTY-User-Key-File-3", ": ", "ssh-ed25519")
    assert p["encryption"] == "none"
    _check_ppk_mac(p, "ssh-ed25519")
    assert base64.b64encode(p["public"]).decode() == k.public_openssh.split()[1]

    t, pos = read_string(p["public"], 0)
    assert t == b"ssh-ed25519"
    pub_raw, pos = read_string(p["public"], pos)
    assert pos == len(p["public"]) and len(pub_raw) == 32

    seed, pos = read_string(p["private"], 0)
    assert pos == len(p["private"]) and len(seed) == 32
    priv = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
    assert priv.public_key().public_bytes_raw() == pub_raw
    assert k.fingerprint == sha256_b64(priv.public_key())


def test_ppk_comment_is_covered_by_mac():
    k = create_key("ed25519", "ppk", comment="my-key")
    p = parse_ppk(k.private_material)
    assert p["comment"] == "my-key"
    _check_ppk_mac(p, "ssh-ed25519")
    tampered = dict(p, comment="other")
    with pytest.raises(AssertionError):
        _check_ppk_mac(tampered, "ssh-ed25519")


@needs_puttygen
def test_ppk_mac_matches_puttygens(tmp_path):
    """The known vector comes from PuTTY itself: puttygen writes a fixed key as PPK v3, and our
    MAC over the same fields must be the MAC in its file."""
    from emulator.keycrypto import ppk_mac

    key = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    src = tmp_path / "fixed"
    src.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                      serialization.NoEncryption()))
    out = tmp_path / "fixed.ppk"
    run(f"{PUTTYGEN} {src} -C fixed-vector -O private -o {out}")
    p = parse_ppk(out.read_text())
    assert p["first"] == ("PuTTY-User-Key-File-3", ": ", "ssh-ed25519") and p["encryption"] == "none"
    assert ppk_mac("ssh-ed25519", "none", "fixed-vector", p["public"], p["private"]) == p["mac"]


@needs_puttygen
@pytest.mark.parametrize("kt", ["rsa", "ed25519"])
def test_puttygen_loads_created_ppk(tmp_path, kt):
    """PuTTY itself verifies the MAC on loading the private key, and writing the
    same key back as PPK v3 gives a byte-identical file."""
    k = create_key(kt, "ppk", comment="test-key")
    ppk = tmp_path / "key.ppk"
    ppk.write_text(k.private_material)
    openssh = tmp_path / "key.openssh"
    run(f"{PUTTYGEN} {ppk} -O private-openssh -o {openssh}")
    assert run(f"{PUTTYGEN} {ppk} -O public-openssh").decode().split()[:2] == k.public_openssh.split()
    again = tmp_path / "again.ppk"
    run(f"{PUTTYGEN} {openssh} -C test-key -O private -o {again}")
    assert again.read_text() == k.private_material
    # and the OpenSSH private key it produced matches our public key
    data = openssh.read_bytes()
    if b"BEGIN OPENSSH PRIVATE KEY" in data:
        priv = serialization.load_ssh_private_key(data, None)
    else:  # puttygen writes RSA keys as PKCS#1 PEM
        priv = serialization.load_pem_private_key(data, None)
    assert openssh_line(priv.public_key()).decode() == k.public_openssh


@needs_puttygen
def test_puttygen_rejects_tampered_ppk(tmp_path):
    k = create_key("ed25519", "ppk", comment="test-key")
    ppk = tmp_path / "key.ppk"
    ppk.write_text(k.private_material.replace("Comment: test-key", "Comment: test-kex"))
    res = subprocess.run(
        [PUTTYGEN, str(ppk), "-O", "private-openssh", "-o", str(tmp_path / "o")],
        capture_output=True,
        timeout=60,
    )
    assert res.returncode != 0 and b"MAC" in res.stdout + res.stderr


# --------------------------------------------------------------------------
# cross-checks with openssl / ssh-keygen
# --------------------------------------------------------------------------


@needs_ssh_keygen
@pytest.mark.parametrize("kt", ["rsa", "ed25519"])
def test_ssh_keygen_loads_created_pem(tmp_path, kt):
    k = create_key(kt, "pem")
    path = write_secret(tmp_path / "key", k.private_material)
    out = run(f"{SSH_KEYGEN} -y -f {path}").decode().split()
    assert " ".join(out[:2]) == k.public_openssh


@needs_ssh_keygen
@pytest.mark.parametrize("kt", ["rsa", "ed25519"])
def test_ssh_keygen_loads_created_pem_with_newline(tmp_path, kt):
    # What `aws ec2 create-key-pair --query KeyMaterial --output text > k` writes.
    k = create_key(kt, "pem")
    path = write_secret(tmp_path / "key", k.private_material.rstrip("\n") + "\n")
    out = run(f"{SSH_KEYGEN} -y -f {path}").decode().split()
    assert " ".join(out[:2]) == k.public_openssh


@needs_openssl
def test_openssl_created_rsa_fingerprint(tmp_path):
    k = create_key("rsa", "pem")
    path = write_secret(tmp_path / "key.pem", k.private_material)
    out = run(f"{OPENSSL} pkcs8 -in {path} -inform PEM -outform DER -topk8 -nocrypt | {OPENSSL} sha1 -c")
    assert openssl_digest_out(out) == k.fingerprint


@needs_ssh_keygen
def test_ssh_keygen_created_ed25519_fingerprint(tmp_path):
    k = create_key("ed25519", "pem")
    path = write_secret(tmp_path / "key", k.private_material)
    out = run(f"{SSH_KEYGEN} -l -E sha256 -f {path}").decode().split()
    assert out[1] == "SHA256:" + k.fingerprint.rstrip("=")


@needs_openssl
def test_openssl_imported_rsa_fingerprint_from_private(tmp_path, rsa_key):
    # AWS doc: openssl rsa -in private.pem -pubout -outform DER | openssl md5 -c
    pem = rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, NOENC)
    path = write_secret(tmp_path / "key.pem", pem)
    out = run(f"{OPENSSL} rsa -in {path} -pubout -outform DER | {OPENSSL} md5 -c")
    _, _, fp = import_public_key(openssh_line(rsa_key.public_key()) + b" user@host")
    assert openssl_digest_out(out) == fp


@needs_openssl
@needs_ssh_keygen
def test_ssh_keygen_openssl_imported_rsa_fingerprint(tmp_path, rsa_key):
    # AWS doc: ssh-keygen -ef key -m PEM | openssl rsa -RSAPublicKey_in -outform DER | openssl md5 -c
    pem = rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, NOENC)
    path = write_secret(tmp_path / "id_rsa", pem)
    out = run(
        f"{SSH_KEYGEN} -ef {path} -m PEM | {OPENSSL} rsa -RSAPublicKey_in -outform DER 2>/dev/null | {OPENSSL} md5 -c"
    )
    _, _, fp = import_public_key(openssh_line(rsa_key.public_key()))
    assert openssl_digest_out(out) == fp


@needs_ssh_keygen
def test_ssh_keygen_imported_ed25519_fingerprint(tmp_path, ed_key):
    line = openssh_line(ed_key.public_key()) + b" me@example"
    path = tmp_path / "id.pub"
    path.write_bytes(line + b"\n")
    out = run(f"{SSH_KEYGEN} -l -E sha256 -f {path}").decode().split()
    _, _, fp = import_public_key(line)
    assert out[1] == "SHA256:" + fp.rstrip("=")


@needs_ssh_keygen
@pytest.mark.parametrize("kt", ["rsa", "ed25519"])
def test_import_ssh_keygen_generated_formats(tmp_path, kt):
    """Keys made by ssh-keygen, exported as RFC4716 / PKCS8 / PEM, all import alike."""
    path = tmp_path / "id"
    run(f"{SSH_KEYGEN} -q -t {kt} -N '' -C test@host -f {path}")
    pub = (tmp_path / "id.pub").read_bytes()
    base = import_public_key(pub)
    assert base[0] == kt
    assert base[1] == " ".join(pub.decode().split()[:2])
    # (OpenSSH cannot export ED25519 keys as PKCS8/PEM.)
    formats = ["RFC4716"] + (["PKCS8", "PEM"] if kt == "rsa" else [])
    for fmt in formats:
        exported = run(f"{SSH_KEYGEN} -e -m {fmt} -f {path}.pub")
        assert import_public_key(exported) == base, fmt


# --------------------------------------------------------------------------
# import_public_key: formats
# --------------------------------------------------------------------------


def _rsa_materials(pub) -> dict[str, bytes]:
    line = openssh_line(pub)
    spki_pem = pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    pkcs1_pem = pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
    spki_der = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    pkcs1_der = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    return {
        "openssh": line,
        "openssh_comment": line + b" alice@example.com",
        "openssh_comment_spaces_newline": line + b" a comment with spaces\n",
        "openssh_crlf": line + b" c\r\n",
        "spki_pem": spki_pem,
        "pkcs1_pem": pkcs1_pem,
        "pkcs1_pem_crlf": pkcs1_pem.replace(b"\n", b"\r\n"),
        "spki_der_raw": spki_der,
        "pkcs1_der_raw": pkcs1_der,
        "spki_der_b64": base64.b64encode(spki_der),
        "rfc4716": rfc4716(blob_of(pub)),
        "rfc4716_headers": rfc4716(
            blob_of(pub),
            headers=['Comment: "2048-bit RSA, converted by me@host from Open\\', 'SSH"', "x-Private: foo"],
            crlf=True,
        ),
    }


def test_import_rsa_all_formats_agree(rsa_key):
    pub = rsa_key.public_key()
    expected = ("rsa", openssh_line(pub).decode(), md5_spki(pub))
    for name, material in _rsa_materials(pub).items():
        assert import_public_key(material) == expected, name
    fp = expected[2]
    assert len(fp.split(":")) == 16 and fp == fp.lower()


def test_import_accepts_str(rsa_key):
    line = openssh_line(rsa_key.public_key()).decode()
    assert import_public_key(line)[2] == md5_spki(rsa_key.public_key())


def test_import_ed25519_all_formats_agree(ed_key):
    pub = ed_key.public_key()
    expected = ("ed25519", openssh_line(pub).decode(), sha256_b64(pub))
    spki_pem = pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    spki_der = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    materials = {
        "openssh": openssh_line(pub),
        "openssh_comment": openssh_line(pub) + b" bob@host\n",
        "spki_pem": spki_pem,
        "spki_der": spki_der,
        "rfc4716": rfc4716(blob_of(pub), headers=["Comment: ed"]),
    }
    for name, material in materials.items():
        assert import_public_key(material) == expected, name
    assert expected[2].endswith("=") and len(expected[2]) == 44


def test_import_vs_create_fingerprints():
    # Created ED25519: same fingerprint on re-import. Created RSA: imported
    # fingerprint is MD5 (different from the SHA-1 CreateKeyPair shows).
    k = create_key("ed25519")
    assert import_public_key(k.public_openssh.encode()) == ("ed25519", k.public_openssh, k.fingerprint)
    k = create_key("rsa")
    kt, line, fp = import_public_key(k.public_openssh.encode())
    assert (kt, line) == ("rsa", k.public_openssh)
    assert fp != k.fingerprint and len(fp.split(":")) == 16
    priv = serialization.load_pem_private_key(k.private_material.encode(), None)
    assert fp == md5_spki(priv.public_key())


@pytest.mark.parametrize("bits", [1024, 3072, 4096])
def test_import_rsa_sizes(bits):
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    kt, _, fp = import_public_key(openssh_line(key.public_key()))
    assert kt == "rsa" and fp == md5_spki(key.public_key())


def _fake_rsa_blob(bits: int) -> bytes:
    n = (1 << (bits - 1)) | 1 | (0xDEADBEEF << 8)
    nb = n.to_bytes((bits + 7) // 8, "big")
    if nb[0] & 0x80:
        nb = b"\x00" + nb
    return sstr(b"ssh-rsa") + sstr(b"\x01\x00\x01") + sstr(nb)


def test_import_rsa_size_limits():
    ok = _fake_rsa_blob(16384)
    assert import_public_key(b"ssh-rsa " + base64.b64encode(ok))[0] == "rsa"
    for bits in (512, 768, 1023, 16385, 20000):
        with pytest.raises(KeyMaterialError):
            import_public_key(b"ssh-rsa " + base64.b64encode(_fake_rsa_blob(bits)))


# --------------------------------------------------------------------------
# import_public_key: rejections
# --------------------------------------------------------------------------


def _other_keys():
    keys = {
        "ecdsa256": ec.generate_private_key(ec.SECP256R1()),
        "ecdsa384": ec.generate_private_key(ec.SECP384R1()),
        "ed448": ed448.Ed448PrivateKey.generate(),
        "x25519": x25519.X25519PrivateKey.generate(),
    }
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            keys["dsa"] = dsa.generate_private_key(key_size=1024)
    except Exception:  # pragma: no cover - DSA unavailable in this build
        pass
    return keys


@pytest.mark.filterwarnings("ignore:SSH DSA key support is deprecated")
@pytest.mark.parametrize("name", ["ecdsa256", "ecdsa384", "ed448", "x25519", "dsa"])
def test_import_rejects_other_algorithms(name):
    keys = _other_keys()
    if name not in keys:
        pytest.skip("DSA not supported by this cryptography build")
    pub = keys[name].public_key()
    materials = [
        pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
    ]
    if name in ("ecdsa256", "ecdsa384", "dsa"):
        line = openssh_line(pub)
        materials += [line, line + b" comment", rfc4716(blob_of(pub))]
    for m in materials:
        with pytest.raises(KeyMaterialError):
            import_public_key(m)


def test_import_rejects_handmade_dsa_openssh():
    blob = sstr(b"ssh-dss") + sstr(b"\x01" * 129) + sstr(b"\x02" * 21) + sstr(b"\x03" * 128) + sstr(b"\x04" * 128)
    with pytest.raises(KeyMaterialError):
        import_public_key(b"ssh-dss " + base64.b64encode(blob) + b" x")
    with pytest.raises(KeyMaterialError):
        import_public_key(rfc4716(blob))


JUNK = [
    b"",
    b"   \n",
    b"hello world",
    b"ssh-rsa",
    b"ssh-rsa not-base64!!",
    b"ssh-rsa AAAA",
    b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5",
    b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    b"---- BEGIN SSH2 PUBLIC KEY ----\nAAAA\n---- END SSH2 PUBLIC KEY ----\n",
    b"---- BEGIN SSH2 PUBLIC KEY ----\n",
    b"\x30\x03\x02\x01\x00",
    b"\x00\x01\x02\xff\xfe",
    base64.b64encode(b"just some bytes here"),
]


@pytest.mark.parametrize("material", JUNK)
def test_import_rejects_junk(material):
    with pytest.raises(KeyMaterialError) as ei:
        import_public_key(material)
    assert isinstance(ei.value, ValueError)
    assert str(ei.value)  # message for InvalidKey.Format


def test_import_rejects_private_keys(rsa_key, ed_key):
    for m in (
        rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, NOENC),
        rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, NOENC),
        ed_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, NOENC),
        rsa_key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, NOENC),
    ):
        with pytest.raises(KeyMaterialError):
            import_public_key(m)


def test_import_rejects_type_mismatch_and_trailing_data(rsa_key, ed_key):
    rsa_b64 = openssh_line(rsa_key.public_key()).split()[1]
    ed_b64 = openssh_line(ed_key.public_key()).split()[1]
    for m in (b"ssh-ed25519 " + rsa_b64, b"ssh-rsa " + ed_b64):
        with pytest.raises(KeyMaterialError):
            import_public_key(m)
    extra = base64.b64encode(blob_of(ed_key.public_key()) + b"\x00\x00\x00\x01x")
    with pytest.raises(KeyMaterialError):
        import_public_key(b"ssh-ed25519 " + extra)
    # truncated blob
    short = base64.b64encode(blob_of(rsa_key.public_key())[:-10])
    with pytest.raises(KeyMaterialError):
        import_public_key(b"ssh-rsa " + short)


def test_import_rejects_multiple_lines(rsa_key, ed_key):
    m = openssh_line(rsa_key.public_key()) + b"\n" + openssh_line(ed_key.public_key()) + b"\n"
    with pytest.raises(KeyMaterialError):
        import_public_key(m)


def test_import_rejects_certificates():
    with pytest.raises(KeyMaterialError):
        import_public_key(b"ssh-ed25519-cert-v01@openssh.com AAAAIHNzaC1lZDI1NTE5LWNlcnQtdjAxQG9wZW5zc2guY29t")
    with pytest.raises(KeyMaterialError):
        import_public_key(b"sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29t")


def test_error_is_value_error_with_reason():
    with pytest.raises(ValueError) as ei:
        import_public_key(b"nope")
    assert isinstance(ei.value, KeyMaterialError)
    assert ei.value.reason
