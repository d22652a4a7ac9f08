"""The database: engine, sessions, and schema migration at start."""
from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            # WAL lets readers run beside the writer; synchronous=FULL makes every commit
            # durable before we answer the client.
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.close()

        return engine
    return create_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)


def migrate(url: str) -> None:
    """Bring the schema to the newest Alembic revision."""
    from alembic import command

    command.upgrade(_alembic_config(url), "head")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def lock_for_write(session: Session) -> None:
    """Take the database's write lock now, before reading what this transaction will change.
    PostgreSQL locks the rows a transaction reads FOR UPDATE; SQLite ignores FOR UPDATE, and
    pysqlite begins a transaction only at its first write, so a read-modify-write there could
    undo a commit made between its read and its write (a guest's RUNNING event turned a
    TerminateInstances' shutting-down back into running). SQLite: BEGIN IMMEDIATE, which waits
    (the busy timeout) for the writer in progress; elsewhere nothing."""
    if session.get_bind().dialect.name == "sqlite":
        session.execute(text("BEGIN IMMEDIATE"))


def _alembic_config(url: str):
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def revision(message: str) -> None:
    """Autogenerate a migration from the models' difference to head (a developer's tool)."""
    import tempfile

    from alembic import command

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/scratch.sqlite"
        command.upgrade(_alembic_config(url), "head")
        command.revision(_alembic_config(url), message=message, autogenerate=True)
