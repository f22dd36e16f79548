"""Migrations in the registry: validating a request into a plan, the migrations table and the audit log.

``plan_migration`` is called twice: by clients before they start a workflow (so a bad request exits 2 at
once) and by the workflow's first activity (so a start from the Temporal UI is validated just the same).
Nothing here moves traffic; that is ``pairshift.split``.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlmodel import Session, select

from pairshift.policy import Policy, format_validation_error
from pairshift.registry.lookup import find_model
from pairshift.registry.models import (
    AuditEvent,
    Deployment,
    MigrationRow,
    PolicyRow,
    PromptVersion,
    pair_id,
    utcnow,
)


class InvalidMigration(ValueError):
    """A migration request that cannot start; nothing was changed."""


class MigrationPlan(BaseModel):
    deployment: str
    from_prompt: str
    from_model: str
    to_prompt: str
    to_model: str
    dataset: str | None
    policy: Policy

    @property
    def from_pair(self) -> str:
        return pair_id(self.from_prompt, self.from_model)

    @property
    def to_pair(self) -> str:
        return pair_id(self.to_prompt, self.to_model)


def deployment_policy(s: Session, dep: Deployment, override: dict[str, Any] | None = None) -> Policy:
    if override is not None:
        try:
            return Policy.model_validate({"name": f"{dep.name}-request", **override})
        except ValidationError as exc:
            raise InvalidMigration(format_validation_error(exc, "policy")) from None
    row = s.get(PolicyRow, dep.policy)
    return Policy.model_validate(row.spec) if row else Policy()


def plan_migration(
    s: Session,
    *,
    deployment: str,
    to_model: str,
    to_prompt: str | None,
    policy: dict[str, Any] | None,
    today: date | None = None,
) -> MigrationPlan:
    dep = s.get(Deployment, deployment)
    if dep is None:
        raise InvalidMigration(f"unknown deployment {deployment}")
    model = find_model(s, to_model)
    if model is None:
        raise InvalidMigration(f"unknown model {to_model} (add it to the config and `pairshift apply`)")
    today = today or utcnow().date()
    if model.retires_on is not None and model.retires_on <= today:
        raise InvalidMigration(
            f"model {to_model} retired on {model.retires_on}: it cannot be a migration target"
        )
    target_prompt = to_prompt or dep.active_prompt
    if s.get(PromptVersion, target_prompt) is None:
        raise InvalidMigration(f"unknown prompt version {target_prompt}")
    if (target_prompt, to_model) == (dep.active_prompt, dep.active_model):
        raise InvalidMigration(
            f"{pair_id(target_prompt, to_model)} is already the active pair of {deployment}"
        )
    if dep.dataset is None:
        raise InvalidMigration(f"deployment {deployment} has no golden dataset: a migration needs evidence")
    return MigrationPlan(
        deployment=deployment,
        from_prompt=dep.active_prompt,
        from_model=dep.active_model,
        to_prompt=target_prompt,
        to_model=to_model,
        dataset=dep.dataset,
        policy=deployment_policy(s, dep, policy),
    )


def record_started(
    s: Session, *, run_id: str, workflow_id: str, plan: MigrationPlan, reason: str, requested_by: str
) -> None:
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
            )
        )


def record_phase(
    s: Session, *, run_id: str, phase: str, summary: dict[str, Any] | None = None, finished: bool = False
) -> None:
    row = s.get(MigrationRow, run_id)
    if row is None:
        return
    row.phase = phase
    row.updated_at = utcnow()
    if summary:
        row.summary = {**(row.summary or {}), **summary}
    if finished and row.finished_at is None:
        row.finished_at = utcnow()
    s.add(row)


class AuditIn(BaseModel):
    """An audit event as the workflow hands it over; ``key`` makes a retried write idempotent."""

    key: str
    event: str
    at: datetime
    actor: str | None = None
    channel: str | None = None
    stage: int | None = None
    accepted: bool = True
    detail: dict[str, Any] = {}


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
    q = select(AuditEvent).where(AuditEvent.migration == workflow_id)
    if run_id:
        q = q.where(AuditEvent.run_id == run_id)
    return list(s.exec(q.order_by(AuditEvent.at, AuditEvent.id)).all())
