"""The registry's engine and sessions: one SQLAlchemy engine per URL, the schema brought up by Alembic.

``open_registry(url)`` is the one entry point: it upgrades the schema to head (idempotent, cheap when
current) and returns a ``Registry`` whose ``session()`` is a transaction: everything inside it commits
together or not at all (``pairshift apply`` relies on that).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, create_engine

from pairshift.settings import get_settings

_SCHEMA_DIR = Path(__file__).parent / "schema"
_lock = threading.Lock()
_registries: dict[str, "Registry"] = {}


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_SCHEMA_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # WAL: readers (router, CLI) never block the writer (worker)
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
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

    def upgrade(self) -> None:
        with self.engine.begin() as conn:
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
