"""Run a real `ec2emu serve` process for tests, and make clients for it.

EC2EMU_TEST_DATABASE_URL (a PostgreSQL server URL, e.g. postgresql+psycopg://postgres@127.0.0.1/postgres)
makes every server get a fresh database of its own on that server; otherwise SQLite in a temp dir.
"""
from __future__ import annotations

import atexit
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
from botocore.config import Config as BotoConfig

ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
ACCOUNT = "123456789012"
ROOT = Path(__file__).resolve().parent.parent
# Booted checkpoints (hypervisor/checkpoints.py) are named by their inputs: the libvirt servers
# of one test run share a directory of them, so each is built once per run, not per server.
CHECKPOINTS = Path(tempfile.mkdtemp(prefix="ec2emu-test-checkpoints-"))
atexit.register(shutil.rmtree, CHECKPOINTS, True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fresh_database_url() -> str:
    admin = os.environ.get("EC2EMU_TEST_DATABASE_URL")
    if not admin:
        return ""
    from sqlalchemy import create_engine, text
    name = "ec2emu_test_" + secrets.token_hex(4)
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return admin.rsplit("/", 1)[0] + "/" + name


class Server:
    """One emulator process. restart() keeps the same state (database and state dir)."""

    def __init__(self, state_dir: Path, extra_env: dict | None = None, database_url: str | None = None,
                 hypervisor: str = "none"):
        self.state_dir = state_dir
        self.hypervisor = hypervisor
        self.port = free_port()
        self.database_url = fresh_database_url() if database_url is None else database_url
        self.env = dict(os.environ, **{"EC2EMU_CHECKPOINT_DIR": str(CHECKPOINTS), **(extra_env or {})})
        self.proc: subprocess.Popen | None = None
        self.log = state_dir / "server.log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Server":
        self.state_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "emulator.cli", "serve", "--port", str(self.port),
               "--state-dir", str(self.state_dir), "--hypervisor", self.hypervisor]
        if self.database_url:
            cmd += ["--database-url", self.database_url]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=open(self.log, "ab"),
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited:\n" + self.log.read_text())
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("server did not start:\n" + self.log.read_text())

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self, sig: int = signal.SIGTERM) -> "Server":
        self.stop(sig)
        return self.start()

    def client(self, region: str = "us-east-1", access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY,
               service: str = "ec2", session_token: str | None = None, **config):
        return boto3.client(service, endpoint_url=self.endpoint, region_name=region,
                            aws_access_key_id=access_key, aws_secret_access_key=secret_key,
                            aws_session_token=session_token,
                            config=BotoConfig(**{"retries": {"max_attempts": 1}, **config}))
