"""Activities of MigrationWorkflow: validate, record, move traffic, read the stage gate, notify.

Each is idempotent (a retry after a crash changes nothing twice) and thin: the logic lives in
``pairshift.migration_records``, ``pairshift.split``, ``pairshift.observations`` and ``pairshift.gates``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError

from pairshift import notices, split
from pairshift.gates import StageCheck, stage_gate
from pairshift.migration_records import (
    AuditIn,
    InvalidMigration,
    MigrationPlan,
    plan_migration,
    record_audit,
    record_phase,
    record_started,
)
from pairshift.policy import CanaryPolicy
from pairshift.registry import open_registry


class PrepareInput(BaseModel):
    workflow_id: str
    run_id: str
    deployment: str
    to_model: str
    to_prompt: str | None
    policy: dict[str, Any] | None
    reason: str
    requested_by: str


@activity.defn
def prepare_migration(req: PrepareInput) -> MigrationPlan:
    """Validate the request into a plan and record the migration; a bad request fails without retries."""
    try:
        with open_registry().session() as s:
            plan = plan_migration(
                s,
                deployment=req.deployment,
                to_model=req.to_model,
                to_prompt=req.to_prompt,
                policy=req.policy,
            )
            record_started(
                s,
                run_id=req.run_id,
                workflow_id=req.workflow_id,
                plan=plan,
                reason=req.reason,
                requested_by=req.requested_by,
            )
            return plan
    except InvalidMigration as exc:
        raise ApplicationError(str(exc), type="InvalidMigration", non_retryable=True) from None


class PhaseInput(BaseModel):
    run_id: str
    phase: str
    summary: dict[str, Any] | None = None
    finished: bool = False


@activity.defn
def record_migration_phase(inp: PhaseInput) -> None:
    with open_registry().session() as s:
        record_phase(s, run_id=inp.run_id, phase=inp.phase, summary=inp.summary, finished=inp.finished)


class AuditBatch(BaseModel):
    workflow_id: str
    run_id: str
    events: list[AuditIn]


@activity.defn
def record_audit_events(batch: AuditBatch) -> int:
    with open_registry().session() as s:
        return record_audit(s, workflow_id=batch.workflow_id, run_id=batch.run_id, events=batch.events)


class _TrafficInput(BaseModel):
    """A traffic move of one migration; each subclass's fields are exactly its canary function's keywords."""

    deployment: str
    migration: str


class SplitInput(_TrafficInput):
    prompt: str
    model: str
    percent: float


@activity.defn
def set_canary_split(inp: SplitInput) -> datetime:
    """Route the stage's share to the candidate; returns when it took effect (metrics count from then)."""
    with open_registry().session() as s:
        return split.set_split(s, **inp.model_dump())


class RestoreInput(_TrafficInput):
    reason: str
    by: str
    evidence: dict[str, Any] = {}


@activity.defn
def restore_baseline(inp: RestoreInput) -> bool:
    """100% back to the active pair; when traffic had moved, the ledger says so and why."""
    with open_registry().session() as s:
        return split.restore_baseline(s, **inp.model_dump())


class PromoteInput(_TrafficInput):
    prompt: str
    model: str
    by: str
    reason: str
    evidence: dict[str, Any]


@activity.defn
def promote_pair(inp: PromoteInput) -> bool:
    with open_registry().session() as s:
        return split.promote(s, **inp.model_dump())


class StageCheckInput(BaseModel):
    deployment: str
    migration: str
    since: datetime
    percent: float
    canary: CanaryPolicy
    elapsed_hours: float
    min_hours: float


@activity.defn
def check_stage(inp: StageCheckInput) -> StageCheck:
    """Read candidate and control aggregates since the stage started and judge them (pure gate)."""
    from pairshift.gates import VariantStats
    from pairshift.observations import variant_stats

    with open_registry().session() as s:
        stats = variant_stats(s, inp.deployment, inp.migration, inp.since)
    empty = VariantStats(n=0)
    return stage_gate(
        stats.get("control", empty),
        stats.get("candidate", empty),
        inp.percent,
        inp.canary,
        elapsed_hours=inp.elapsed_hours,
        min_hours=inp.min_hours,
    )


@activity.defn
def send_notice(notice: notices.Notice) -> list[str]:
    """Send a notice through every channel; never fails (a channel that errors is logged and skipped)."""
    return notices.send(notice)


ALL = [
    prepare_migration,
    record_migration_phase,
    record_audit_events,
    set_canary_split,
    restore_baseline,
    promote_pair,
    check_stage,
    send_notice,
]
