"""Registry lookups shared by config, evals and migrations."""

from __future__ import annotations

from sqlmodel import Session, select

from pairshift.registry.models import Model


def find_model(s: Session, name: str) -> Model | None:
    """The model row for an id, or the snapshot row listing ``name`` among its aliases."""
    row = s.get(Model, name)
    if row is not None:
        return row
    return next((m for m in s.exec(select(Model)).all() if name in (m.aliases or [])), None)
