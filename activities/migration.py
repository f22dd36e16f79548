"""Activities of MigrationWorkflow: resolve and record, move traffic, read the stage gate.

Each is idempotent (a retry after a crash changes nothing twice) and thin: the logic lives in
:mod:`pairshift.resolver`, :mod:`pairshift.migration_records`, :mod:`pairshift.split`,
:mod:`pairshift.observations` and :mod:`pairshift.gates`. Notices go through :mod:`activities.notices`.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from sqlalchemy.exc import DisconnectionError, OperationalError, SQLAlchemyError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from pairshift import split
from pairshift import stage_quality as quality_figures
from pairshift.contracts import implements
from pairshift.contracts import migration as contract
from pairshift.contracts import quality as quality_contract
from pairshift.contracts.gates import StageCheck
from pairshift.contracts.migration import (
    AuditBatch,
    MigrationPlan,
    PhaseInput,
    PrepareInput,
    PromoteInput,
    RestoreInput,
    SplitInput,
    StageCheckInput,
)
from pairshift.contracts.quality import JudgeStatus, StageQuality, StageQualityInput
from pairshift.gates import latency_ranks, shadow_gate, stage_gate
from pairshift.migration_records import record_audit, record_phase, record_started
from pairshift.observations import invalid_details, stage_stats
from pairshift.online_judge import JudgeRound, judge_round, spent_today
from pairshift.policy import Stage
from pairshift.registry import open_registry
from pairshift.registry.models import Deployment, utcnow
from pairshift.resolver import InvalidMigration, plan_migration
from pairshift.shadow import PairRound, judge_pairs, shadow_invalid_details, stage_pairs
from pairshift.telemetry import metrics


@implements(contract.prepare_migration)
def prepare_migration(req: PrepareInput) -> MigrationPlan:
    """Resolve the request into a plan and record the migration; a bad request fails without retries.

    An inline policy is refused here too (the workflow refuses it first): the plan's policy is always the
    registry's policy of the deployment."""
    if req.policy is not None:
        raise ApplicationError(
            "policy: an inline policy is refused: a deployment names its policy",
            type="InvalidMigration",
            non_retryable=True,
        )
    try:
        with open_registry().session() as s:
            plan = plan_migration(
                s,
                deployment=req.deployment,
                to_model=req.to_model,
                to_prompt=req.to_prompt,
                policy=None,
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


@implements(contract.record_migration_phase)
def record_migration_phase(inp: PhaseInput) -> None:
    with open_registry().session() as s:
        record_phase(s, run_id=inp.run_id, phase=inp.phase, summary=inp.summary, finished=inp.finished)
    metrics.MIGRATION_PHASES.labels(inp.phase).inc()


@implements(contract.record_audit_events)
def record_audit_events(batch: AuditBatch) -> int:
    """Append the batch's events not stored yet. The registry being unreachable is retried; a batch it refuses
    (a constraint, a value it cannot store) is refused for good (AuditRefused): the workflow splits it."""
    try:
        with open_registry().session() as s:
            return record_audit(s, workflow_id=batch.workflow_id, run_id=batch.run_id, events=batch.events)
    except (OperationalError, DisconnectionError):
        raise
    except (SQLAlchemyError, ValueError, TypeError) as exc:
        raise ApplicationError(str(exc)[:500], type="AuditRefused", non_retryable=True) from None


@implements(contract.set_canary_split)
def set_canary_split(inp: SplitInput) -> datetime:
    """Set the stage's split; another migration's split or an unknown deployment is refused for good."""
    try:
        with open_registry().session() as s:
            return split.set_split(s, **inp.model_dump())
    except (split.SplitConflict, LookupError) as exc:
        raise ApplicationError(str(exc), type=type(exc).__name__, non_retryable=True) from None


@implements(contract.restore_baseline)
def restore_baseline(inp: RestoreInput) -> bool:
    """Restore 100% baseline. A split another migration owns is not this one's: nothing of ours is live,
    nothing to restore. An unknown deployment cannot be restored: refused for good, loudly (the workflow
    audits and pages it)."""
    try:
        with open_registry().session() as s:
            return split.restore_baseline(s, **inp.model_dump())
    except split.SplitConflict:
        return False
    except LookupError as exc:
        raise ApplicationError(str(exc), type="RestoreImpossible", non_retryable=True) from None


@implements(contract.promote_pair)
def promote_pair(inp: PromoteInput) -> bool:
    try:
        with open_registry().session() as s:
            return split.promote(s, **inp.model_dump())
    except (split.SplitConflict, LookupError) as exc:
        raise ApplicationError(str(exc), type=type(exc).__name__, non_retryable=True) from None


@implements(contract.check_stage)
def check_stage(inp: StageCheckInput) -> StageCheck:
    if inp.canary.source == "prometheus":  # the policy's PromQL instead of pairshift's own observations
        check = _prometheus_check(inp)
        metrics.GATE_CHECKS.labels(check.decision).inc()
        return check
    if inp.shadow is not None:  # a shadow stage: the mirrored pairs, judged pairwise (pairshift.shadow)
        check = _shadow_check(inp)
        metrics.GATE_CHECKS.labels(check.decision).inc()
        return check
    judged = _judge_round(inp)
    # A stage is (migration, percent): its per-unit aggregates are kept at ingest since the split took effect.
    with open_registry().session() as s:
        stats = stage_stats(
            s, inp.migration, inp.percent, ranks_for=lambda size: latency_ranks(inp.canary, size)
        )
    check = stage_gate(
        stats["control"],
        stats["candidate"],
        inp.percent,
        inp.canary,
        elapsed_hours=inp.elapsed_hours,
        min_hours=inp.min_hours,
    )
    if check.decision == "breach" and stats["candidate"].invalid.y > 0:
        with open_registry().session() as s:
            top = invalid_details(s, inp.deployment, inp.migration, inp.since)
        check.reasons += [
            f"top reasons {variant} outputs were invalid: "
            + "; ".join(f"{detail} ({n:,} calls)" for detail, n in top[variant])
            for variant in ("candidate", "control")
            if top.get(variant)
        ]
    if judged is not None:
        check.reasons += judged.reasons()
    if inp.canary.judge is not None:
        check.judge = _judge_status(inp)
    metrics.GATE_CHECKS.labels(check.decision).inc()
    return check


def _judge_status(inp: StageCheckInput) -> JudgeStatus:
    """The judge's spend per stage of the migration, and today's for the deployment (``status`` key judge)."""
    assert inp.canary.judge is not None
    with open_registry().session() as s:
        return JudgeStatus(
            model=inp.canary.judge.model,
            cap_usd=inp.canary.judge.max_cost_usd_per_day,
            spent_today_usd=round(spent_today(s, inp.deployment, utcnow()), 9),
            stages=quality_figures.judge_by_stage(s, inp.deployment, inp.migration),
        )


def _judge_round(inp: StageCheckInput) -> JudgeRound | None:
    """The canary judge scores the migration's sampled outputs before the gate reads the stage (issue 17).

    Only the migration's own checks judge (a StageWatch's run beside them): one round at a time, so the daily
    cap holds."""
    if inp.canary.judge is None or activity.info().workflow_type == "StageWatchWorkflow":
        return None
    registry = open_registry()
    with registry.session() as s:
        dep = s.get(Deployment, inp.deployment)
        under_test = tuple(m for m in (dep.active_model, dep.candidate_model) if m) if dep else ()
    return asyncio.run(
        judge_round(
            registry, inp.deployment, inp.migration, inp.canary.judge, now=utcnow(), under_test=under_test
        )
    )


@implements(quality_contract.stage_quality)
def stage_quality(inp: StageQualityInput) -> StageQuality:
    """The figures of a stage that just ended, for its notice in the migration's thread (issue 17 item 4)."""
    with open_registry().session() as s:
        return quality_figures.stage_quality(s, inp)


def _shadow_check(inp: StageCheckInput) -> StageCheck:
    """A shadow stage's check: the judge compares the pairs mirrored since the last check (both orders, under
    the canary judge's daily cap; not from a StageWatch, as :func:`_judge_round`), then the shadow gate reads
    both arms over the same mirrored inputs and the pair scores."""
    assert inp.shadow is not None
    registry = open_registry()
    judged: PairRound | None = None
    judge = inp.canary.judge
    if judge is not None and activity.info().workflow_type != "StageWatchWorkflow":
        with registry.session() as s:
            dep = s.get(Deployment, inp.deployment)
            under_test = tuple(m for m in (dep.active_model, dep.candidate_model) if m) if dep else ()
        judged = asyncio.run(
            judge_pairs(
                registry,
                inp.deployment,
                inp.migration,
                inp.shadow,
                judge,
                now=utcnow(),
                under_test=under_test,
            )
        )
    with registry.session() as s:
        control, candidate, pairs = stage_pairs(
            s, inp.migration, inp.shadow, ranks_for=lambda size: latency_ranks(inp.canary, size)
        )
        top = shadow_invalid_details(s, inp.migration, inp.shadow)
    stage = Stage(shadow=inp.shadow, min_hours=inp.min_hours)
    check = shadow_gate(control, candidate, pairs, stage, inp.canary, elapsed_hours=inp.elapsed_hours)
    if check.decision == "breach" and top:
        check.reasons.append(
            "top reasons mirrored candidate outputs were invalid: "
            + "; ".join(f"{detail} ({n:,} calls)" for detail, n in top)
        )
    if judged is not None:
        check.reasons += judged.reasons()
    return check


def _prometheus_check(inp: StageCheckInput) -> StageCheck:
    from pairshift.telemetry import prometheus_source

    assert inp.canary.prometheus is not None  # the policy refuses source: prometheus without it
    values = prometheus_source.fetch(
        inp.canary.prometheus, deployment=inp.deployment, migration=inp.migration, since=inp.since
    )
    return prometheus_source.prometheus_gate(
        values, inp.percent, inp.canary, elapsed_hours=inp.elapsed_hours, min_hours=inp.min_hours
    )


ALL = [
    prepare_migration,
    record_migration_phase,
    record_audit_events,
    set_canary_split,
    restore_baseline,
    promote_pair,
    check_stage,
    stage_quality,
]
