"""Migrations in the registry: the migrations table (one row per run, its phase) and the audit log.

A request becomes a plan in :mod:`pairshift.resolver`; nothing here moves traffic, that is
:mod:`pairshift.split`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlmodel import Session, select

from pairshift.contracts.migration import AuditIn, MigrationPlan
from pairshift.registry.models import (
    AuditEvent,
    MigrationRow,
    utcnow,
)


def record_started(
    s: Session, *, run_id: str, workflow_id: str, plan: MigrationPlan, reason: str, requested_by: str
) -> None:
    """Insert the migrations row of run ``run_id`` (once: a retried activity inserts nothing)."""
    if s.get(MigrationRow, run_id) is None:  # an activity retry must not insert twice
        s.add(
            MigrationRow(
                run_id=run_id,
                workflow_id=workflow_id,
                deployment=plan.deployment,
                from_pair=plan.from_pair,
                to_pair=plan.to_pair,
                reason=reason,
                requested_by=requested_by,
                phase="notice",
                summary={"app_prompt": plan.app_prompt} if plan.app_prompt else None,
            )
        )


def record_phase(
    s: Session, *, run_id: str, phase: str, summary: dict[str, Any] | None = None, finished: bool = False
) -> None:
    """Move a run's row to ``phase``, merging ``summary`` into its summary; ``finished`` stamps the end.

    A finished row is final: a late write changes nothing. The check is part of the UPDATE itself, because a
    write read before the ending committed and written after it (an activity the cancel left running, e.g. the
    stage-1 ``awaiting_approval`` record) put its phase back over ``rolled_back`` on the finished row.
    """
    row = s.get(MigrationRow, run_id)
    if row is None or row.finished_at is not None:
        return
    now = utcnow()
    values: dict[str, Any] = {"phase": phase, "updated_at": now}
    if summary:
        values["summary"] = {**(row.summary or {}), **summary}
    if finished:
        values["finished_at"] = now
    s.execute(
        update(MigrationRow)
        .where(MigrationRow.run_id == run_id, MigrationRow.finished_at.is_(None))  # type: ignore[union-attr,arg-type]
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    s.expire(row)


def record_audit(s: Session, *, workflow_id: str, run_id: str, events: list[AuditIn]) -> int:
    """Append events not yet stored (by key), so a retried activity never writes an event twice."""
    existing = {
        e.detail.get("_key")
        for e in s.exec(
            select(AuditEvent).where(AuditEvent.migration == workflow_id, AuditEvent.run_id == run_id)
        )
    }
    added = 0
    for ev in events:
        if ev.key in existing:
            continue
        s.add(
            AuditEvent(
                migration=workflow_id,
                run_id=run_id,
                at=ev.at,
                event=ev.event,
                actor=ev.actor,
                channel=ev.channel,
                stage=ev.stage,
                accepted=ev.accepted,
                detail={**ev.detail, "_key": ev.key},
            )
        )
        added += 1
    return added


def audit_log(s: Session, workflow_id: str, run_id: str | None = None) -> list[AuditEvent]:
    """The audit events of a migration (all its runs, or one), oldest first."""
    q = select(AuditEvent).where(AuditEvent.migration == workflow_id)
    if run_id:
        q = q.where(AuditEvent.run_id == run_id)
    return list(s.exec(q.order_by(AuditEvent.at, AuditEvent.id)).all())
