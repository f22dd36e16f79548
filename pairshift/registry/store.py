"""The registry's engine and sessions: one SQLAlchemy engine per URL, the schema brought up by Alembic.

``open_registry(url)`` is the one entry point: it upgrades the schema to head and returns a ``Registry``
whose ``session()`` is a transaction: everything inside it commits together or not at all (``pairshift
apply`` relies on that).

The CLI, the worker and the API all open the registry when they start, so on a fresh database several
processes upgrade at once. The upgrade is therefore serialized across processes: an exclusive ``flock`` on a
file beside a SQLite database, ``pg_advisory_xact_lock`` on PostgreSQL. A schema already at head is detected
without taking any lock (the common case: every start after the first).
"""

from __future__ import annotations

import fcntl
import functools
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlmodel import Session, create_engine

from pairshift.settings import get_settings, masked_url

_SCHEMA_DIR = Path(__file__).parent / "schema"
_lock = threading.Lock()
_registries: dict[str, Registry] = {}
# Any fixed 64-bit key works; every pairshift process uses this one for its schema upgrades.
PG_SCHEMA_LOCK_KEY = 0x7061697273686674  # "pairshft"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_SCHEMA_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


@functools.cache
def _code_heads() -> frozenset[str]:
    """The head revisions of the schema scripts this code ships. Read once per process: loading the
    script directory executes every revision file, and each registry opened asks."""
    return frozenset(ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads())


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL (None for in-memory databases and other dialects)."""
    if not url.startswith("sqlite"):
        return None
    path = url.split("///", 1)[-1] if "///" in url else ""
    if not path or path == ":memory:" or path.startswith("file::memory:"):
        return None
    return Path(path)


@contextmanager
def _schema_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on a file beside a SQLite database, across processes (released on close)."""
    with open(path.with_name(path.name + ".lock"), "a+b") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        yield


def _ensure_wal(path: Path) -> None:
    """Put a SQLite file in WAL mode once (the mode is stored in the file).

    Switching needs an exclusive lock, and processes that all try it at once on a fresh file can deadlock
    (SQLite then answers "database is locked" at once, without waiting), so the switch happens under the
    schema lock; a file already in WAL mode is only read.
    """

    def mode() -> str:
        with closing(sqlite3.connect(path, timeout=30)) as conn:
            return conn.execute("PRAGMA journal_mode").fetchone()[0]

    if path.exists() and mode() == "wal":
        return
    with _schema_lock(path):
        with closing(sqlite3.connect(path, timeout=30)) as conn:
            conn.execute("PRAGMA journal_mode=WAL")


def _make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = sqlite_path(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            _ensure_wal(path)  # WAL: readers (router, CLI) never block the writer (worker)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(url, pool_pre_ping=True)


class Registry:
    """A handle on one registry database."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = _make_engine(url)

    def __repr__(self) -> str:
        return f"Registry({masked_url(self.url)!r})"

    def at_head(self) -> bool:
        """True when the database's schema revision is the newest one this code knows (no lock taken)."""
        with self.engine.connect() as conn:
            return set(MigrationContext.configure(conn).get_current_heads()) == _code_heads()

    def upgrade(self) -> None:
        """Bring the schema to head, serialized across processes; a no-op without a lock when current."""
        if self.at_head():
            return
        path = sqlite_path(self.url)
        if path is not None:
            with _schema_lock(path):
                self._upgrade_locked()
            return
        self._upgrade_locked()

    def _upgrade_locked(self) -> None:
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # Held until this transaction commits; PostgreSQL's DDL is transactional, so the next
                # process to get the lock reads the revision this one wrote and finds nothing to do.
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_SCHEMA_LOCK_KEY})
            cfg = alembic_config(self.url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: commits on success, rolls back on any exception."""
        with Session(self.engine, expire_on_commit=False) as s:
            try:
                yield s
                s.commit()
            except BaseException:
                s.rollback()
                raise

    def dispose(self) -> None:
        self.engine.dispose()


def open_registry(url: str | None = None) -> Registry:
    """The registry at ``url`` (default: settings), schema at head. Cached per URL within a process."""
    url = url or get_settings().registry_url
    with _lock:
        reg = _registries.get(url)
        if reg is None:
            reg = Registry(url)
            reg.upgrade()
            _registries[url] = reg
        return reg


def forget_registry(url: str) -> None:
    """Drop a cached handle (tests that delete their database)."""
    with _lock:
        reg = _registries.pop(url, None)
    if reg:
        reg.dispose()
