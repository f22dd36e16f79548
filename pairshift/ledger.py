"""The pair ledger: which pair served a deployment when, and the evidence that shipped it (PRODUCT §2).

Rows are only appended. ``replaced_at`` of a row is the ``shipped_at`` of the next row of the same
deployment, computed on read, so history is never rewritten.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlmodel import Session, select

from pairshift.registry.models import LedgerEntry, pair_id


class LedgerRow(BaseModel):
    """The `ledger --json` shape (PRODUCT §11)."""

    pair: str
    shipped_at: datetime
    replaced_at: datetime | None
    migration: str | None
    evidence: dict[str, Any]
    by: str
    reason: str


def append(
    s: Session,
    *,
    deployment: str,
    prompt: str,
    model: str,
    by: str,
    reason: str,
    migration: str | None,
    evidence: dict[str, Any],
    at: datetime | None = None,
) -> LedgerEntry:
    """Record that ``prompt`` + ``model`` serves ``deployment`` from now (or ``at``), with the evidence."""
    entry = LedgerEntry(
        deployment=deployment,
        pair=pair_id(prompt, model),
        prompt=prompt,
        model=model,
        by=by,
        reason=reason,
        migration=migration,
        evidence=evidence,
    )
    if at is not None:
        entry.shipped_at = at
    s.add(entry)
    return entry


def history(s: Session, deployment: str) -> list[LedgerRow]:
    """Which pair served ``deployment`` when (each row replaced by the next), oldest first."""
    rows = s.exec(
        select(LedgerEntry)
        .where(LedgerEntry.deployment == deployment)
        .order_by(LedgerEntry.shipped_at, LedgerEntry.id)
    ).all()
    out: list[LedgerRow] = []
    for i, r in enumerate(rows):
        nxt = rows[i + 1].shipped_at if i + 1 < len(rows) else None
        out.append(
            LedgerRow(
                pair=r.pair,
                shipped_at=r.shipped_at,
                replaced_at=nxt,
                migration=r.migration,
                evidence=r.evidence,
                by=r.by,
                reason=r.reason,
            )
        )
    return out


def serving_at(s: Session, deployment: str, when: datetime) -> LedgerRow | None:
    """Which pair served ``deployment`` at ``when`` (None before its first ledger row)."""
    for row in history(s, deployment):
        if row.shipped_at <= when and (row.replaced_at is None or when < row.replaced_at):
            return row
    return None
