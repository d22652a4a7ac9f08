"""The emulator's instance-identity signing key and self-signed certificate, and the secret that
signs IMDSv2 tokens: made once in the state dir and reused (so signatures and tokens survive
restarts and agree across processes). Guests verify identity documents with the certificate
(`cert_path(state_dir)`), as they would with AWS's published one."""
from __future__ import annotations

import datetime
import fcntl
import os
import secrets
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

KEY_FILE = "imds-identity-key.pem"
CERT_FILE = "imds-identity-cert.pem"
TOKEN_SECRET_FILE = "imds-token-secret"


def cert_path(state_dir: str | os.PathLike) -> Path:
    return Path(state_dir) / CERT_FILE


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class _Lock:
    def __init__(self, state_dir: Path):
        self.path = state_dir / ".imds-identity.lock"

    def __enter__(self):
        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def load_or_create(state_dir: str | os.PathLike):
    """(private key, certificate), created on first use."""
    d = Path(state_dir)
    d.mkdir(parents=True, exist_ok=True)
    key_path, crt_path = d / KEY_FILE, d / CERT_FILE
    with _Lock(d):
        if key_path.exists() and crt_path.exists():
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            cert = x509.load_pem_x509_certificate(crt_path.read_bytes())
            return key, cert
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ec2emu"),
            x509.NameAttribute(NameOID.COMMON_NAME, "ec2emu instance identity"),
        ])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=3650))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(key, hashes.SHA256()))
        _write_private(key_path, key.private_bytes(serialization.Encoding.PEM,
                                                   serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
        crt_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return key, cert


def token_secret(state_dir: str | os.PathLike) -> bytes:
    """The HMAC secret for IMDSv2 tokens, created on first use."""
    d = Path(state_dir)
    d.mkdir(parents=True, exist_ok=True)
    path = d / TOKEN_SECRET_FILE
    with _Lock(d):
        if path.exists():
            data = path.read_bytes()
            if len(data) >= 32:
                return data
        data = secrets.token_bytes(32)
        _write_private(path, data)
        return data
