"""Helpers shared by the router, observation, API and traffic tests (no tests of its own)."""

from __future__ import annotations

import functools
import sqlite3
import tempfile
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url

from pairshift.apply import apply_path
from pairshift.registry.models import Deployment
from pairshift.registry.store import Registry, forget_registry, open_registry

DEPLOYMENT = "support-triage"
MIGRATION = "migration-support-triage"
ACTIVE_PAIR = "support-triage@1+sim-classic-2024-06"
CANDIDATE = ("support-triage@2", "sim-fresh-2025-09")
CANDIDATE_PAIR = "support-triage@2+sim-fresh-2025-09"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def apply_example(registry: Registry) -> Registry:
    """The example config applied: deployment support-triage on support-triage@1 + sim-classic-2024-06.

    A SQLite registry gets a copy of the config applied once per process (an apply is ~0.1 s on SQLite, and
    dozens of tests start here); PostgreSQL applies. The copy replaces the database's content whole, so it is
    only for a registry nothing was written to yet."""
    from conftest import EXAMPLES

    url = make_url(registry.url)
    if url.get_backend_name() != "sqlite" or not url.database or not _empty(registry):
        apply_path(registry, EXAMPLES, by="test")
        return registry
    registry.engine.dispose()  # no pooled connection holds the old content
    with closing(sqlite3.connect(_applied_example())) as src, closing(sqlite3.connect(url.database)) as dst:
        src.backup(dst)
    return registry


def _empty(registry: Registry) -> bool:
    """No row in any table but Alembic's."""
    with registry.engine.connect() as conn:
        tables = [t for t in inspect(conn).get_table_names() if t != "alembic_version"]
        union = " UNION ALL ".join(f'SELECT 1 FROM "{t}"' for t in tables)
        return conn.execute(text(f"SELECT EXISTS ({union})")).scalar() == 0


@functools.cache
def _applied_example() -> str:
    """A SQLite database, at head, with the example config applied (one per test process)."""
    from conftest import EXAMPLES

    path = Path(tempfile.mkdtemp(prefix="pairshift-example-")) / "registry.db"
    url = f"sqlite:///{path}"
    apply_path(open_registry(url), EXAMPLES, by="test")
    forget_registry(url)
    return str(path)


def move_split(registry: Registry, percent: float) -> None:
    """Move the migration's split to ``percent`` through ``pairshift.split.set_split``, as the
    set_canary_split activity does (the split it replaces is kept, and when it changed)."""
    from pairshift import split

    with registry.session() as s:
        split.set_split(
            s,
            deployment=DEPLOYMENT,
            migration=MIGRATION,
            prompt=CANDIDATE[0],
            model=CANDIDATE[1],
            percent=percent,
        )


def set_split(
    registry: Registry,
    percent: float,
    *,
    migration: str | None = MIGRATION,
    candidate: tuple[str, str] | None = CANDIDATE,
) -> None:
    """Move the deployment's canary split as a migration's activity would."""
    with registry.session() as s:
        dep = s.get(Deployment, DEPLOYMENT)
        assert dep is not None
        dep.candidate_prompt, dep.candidate_model = candidate or (None, None)
        dep.canary_percent = percent
        dep.migration = migration
        s.add(dep)


def obs(**kw: Any) -> dict[str, Any]:
    """One observation as a client would post it, with fields overridden by ``kw``."""
    base = {
        "deployment": DEPLOYMENT,
        "pair": ACTIVE_PAIR,
        "variant": "control",
        "unit": "u1",
        "latency_ms": 100.0,
        "input_tokens": 10,
        "output_tokens": 5,
        "cost_usd": 0.001,
        "outcome": "ok",
        "score": None,
        "at": T0.isoformat(),
    }
    return base | kw
