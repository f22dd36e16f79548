"""The Alembic migrations build exactly the schema the models declare, on SQLite and PostgreSQL.

A model column without a migration (or the reverse) works in a test that creates tables from the models and
fails on a user's upgraded registry; autogenerate's comparison names the difference.
"""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlmodel import SQLModel

from pairshift.registry import models  # noqa: F401  (registers every table on SQLModel.metadata)
from pairshift.registry.store import Registry


def _structural(diff: list) -> list:
    # Index and type details differ by dialect in harmless ways; tables and columns must match exactly.
    ops = {"add_table", "remove_table", "add_column", "remove_column"}
    flat = [d for item in diff for d in (item if isinstance(item, list) else [item])]
    return [d for d in flat if d[0] in ops]


def test_migrations_match_the_models(registry: Registry) -> None:
    with registry.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    assert _structural(diff) == []
