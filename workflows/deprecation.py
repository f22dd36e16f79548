"""DeprecationScanWorkflow and AliasDriftWorkflow: the scheduled watchers of the provider side (PRODUCT §8).

``DeprecationScanWorkflow`` (daily, Schedule ``pairshift-deprecation-scan``): plan the day's scan (an activity
running the pure :func:`pairshift.deprecation.plan_scan`), start each planned MigrationWorkflow as an abandoned
child with the deterministic id ``migration-<deployment>`` (a live one is left alone), then record and send
the due reminders. ``today`` may be given, so people and tests can scan as of any day.

``AliasDriftWorkflow`` (every few hours, Schedule ``pairshift-alias-drift``): for each deployment configured
with an alias, probe the alias; when the snapshot it resolves to changed, alert, run a model-only eval of the
new snapshot as a child EvalWorkflow, and record the new snapshot and the change (with the eval report id) in
the registry and the pair ledger. A probe that fails is reported and retried at the next run.
"""

from __future__ import annotations

import asyncio
from datetime import date, timedelta

from pydantic import BaseModel, Field
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ChildWorkflowError, WorkflowAlreadyStartedError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.deprecation import (
        AliasQuery,
        Drift,
        DriftRecord,
        ProbeResult,
        RemindersInput,
        ScanInput,
        SentReminder,
        ensure_snapshot_row,
        find_alias_targets,
        plan_deprecation_scan,
        probe_alias,
        record_alias_drift,
        record_deprecation_reminders,
    )
    from activities.migration import send_notice
    from pairshift.deprecation import PlannedStart, RetiredFlag
    from pairshift.evals import EvalRequest
    from pairshift.notifier import Notice
    from pairshift.reports import EvalReport
    from workflows.migration_types import MigrationRequest, migration_id

SCAN_USER = "pairshift-deprecation-scan"
DRIFT_USER = "pairshift-alias-drift"
REGISTRY = dict(
    start_to_close_timeout=timedelta(seconds=60),
    retry_policy=RetryPolicy(maximum_attempts=10, maximum_interval=timedelta(seconds=30)),
)
PROBE = dict(start_to_close_timeout=timedelta(minutes=2), retry_policy=RetryPolicy(maximum_attempts=3))
NOTICE = dict(start_to_close_timeout=timedelta(seconds=30), retry_policy=RetryPolicy(maximum_attempts=3))
# As MigrationWorkflow: Slack may be down or rate limiting; keep trying for up to an hour.
SLACK = dict(
    start_to_close_timeout=timedelta(seconds=30),
    schedule_to_close_timeout=timedelta(hours=1),
    retry_policy=RetryPolicy(maximum_attempts=0, maximum_interval=timedelta(minutes=2)),
)


async def notify(notice: Notice) -> None:
    """Log channel, then Slack when the policy names a channel; a notice never fails the workflow."""
    try:
        await workflow.execute_activity(send_notice, notice, **NOTICE)
        if notice.channel:
            await workflow.execute_activity("post_slack_notice", notice, **SLACK)
    except ActivityError:
        workflow.logger.warning("notice %s for %s could not be delivered", notice.kind, notice.deployment)


class ScanRequest(BaseModel):
    """The scan's input; the Schedule sends ``{}`` (today = the workflow's clock, UTC)."""

    today: date | None = Field(None, description="Scan as of this day; None = today (workflow time, UTC).")
    lead_days: int = Field(60, ge=1, le=366, description="Act on snapshots retiring within this many days.")


class StartedMigration(BaseModel):
    deployment: str
    id: str
    from_model: str
    to_model: str


class ScanResult(BaseModel):
    today: date
    started: list[StartedMigration] = Field(default_factory=list)
    already_running: list[str] = Field(default_factory=list, description="Left alone: a migration is live.")
    reminders: list[SentReminder] = Field(default_factory=list)
    flags: list[RetiredFlag] = Field(
        default_factory=list, description="Deployments still on a retired snapshot."
    )
    blocked: dict[str, str] = Field(
        default_factory=dict, description="Deployment -> why nothing was started."
    )


@workflow.defn
class DeprecationScanWorkflow:
    """One scan: plan, start migrations (once each, by deterministic id), send the due reminders."""

    @workflow.run
    async def run(self, req: ScanRequest) -> ScanResult:
        today = req.today or workflow.now().date()
        plan = await workflow.execute_activity(
            plan_deprecation_scan, ScanInput(today=today, lead_days=req.lead_days), **REGISTRY
        )
        result = ScanResult(
            today=today, flags=plan.flags, blocked=plan.blocked, already_running=plan.left_alone
        )
        for start in plan.starts:
            if await self._start(start):
                result.started.append(
                    StartedMigration(
                        deployment=start.deployment,
                        id=migration_id(start.deployment),
                        from_model=start.from_model,
                        to_model=start.to_model,
                    )
                )
            else:
                result.already_running.append(start.deployment)
        if plan.reminders:
            result.reminders = await workflow.execute_activity(
                record_deprecation_reminders,
                RemindersInput(
                    reminders=plan.reminders,
                    started={m.deployment: m.id for m in result.started},
                    left_alone=result.already_running,
                    blocked=plan.blocked,
                ),
                **REGISTRY,
            )
            for sent in result.reminders:
                await notify(sent.notice)
        return result

    async def _start(self, start: PlannedStart) -> bool:
        """Start the migration as a child that outlives this scan; False when one is already running."""
        try:
            await workflow.start_child_workflow(
                "MigrationWorkflow",
                MigrationRequest(
                    deployment=start.deployment,
                    to_model=start.to_model,
                    reason="deprecation",
                    requested_by=SCAN_USER,
                ),
                id=migration_id(start.deployment),
                parent_close_policy=ParentClosePolicy.ABANDON,
            )
        except WorkflowAlreadyStartedError:
            return False
        return True


class AliasDriftRequest(BaseModel):
    deployment: str | None = Field(
        None, description="Only this deployment; None = every deployment on an alias."
    )


class DriftOutcome(BaseModel):
    deployment: str
    alias: str
    from_snapshot: str | None
    to_snapshot: str
    note: str
    report_id: str | None = None
    gate: str | None = None
    eval_error: str | None = None


class AliasDriftResult(BaseModel):
    checked: list[str] = Field(default_factory=list, description="Deployments on an alias that were probed.")
    drifted: list[DriftOutcome] = Field(default_factory=list)
    probe_errors: dict[str, str] = Field(default_factory=dict)


@workflow.defn
class AliasDriftWorkflow:
    """Probe every alias a deployment uses; on a move: alert, evaluate the new snapshot, record."""

    @workflow.run
    async def run(self, req: AliasDriftRequest) -> AliasDriftResult:
        targets = await workflow.execute_activity(
            find_alias_targets, AliasQuery(deployment=req.deployment), **REGISTRY
        )
        probes: list[ProbeResult] = list(
            await asyncio.gather(*(workflow.execute_activity(probe_alias, t, **PROBE) for t in targets))
        )
        result = AliasDriftResult(checked=[t.deployment for t in targets])
        for target, probe in zip(targets, probes):
            if probe.error or probe.resolved is None:
                result.probe_errors[target.deployment] = probe.error or "no resolved model in the response"
            # Two witnesses: the probe's answer, else what production traffic was last answered by.
            seen = probe.resolved or target.observed_snapshot
            if seen is not None and seen != target.known_snapshot:
                drift = Drift(
                    deployment=target.deployment,
                    prompt=target.prompt,
                    alias=target.alias,
                    from_snapshot=target.known_snapshot,
                    to_snapshot=seen,
                    spec_from=target.spec_from,
                    channel=target.channel,
                    detected_at=workflow.now(),
                )
                result.drifted.append(await self._handle(drift))
        return result

    async def _handle(self, drift: Drift) -> DriftOutcome:
        await workflow.execute_activity(ensure_snapshot_row, drift, **REGISTRY)
        await notify(
            Notice(
                kind="alias_drift",
                deployment=drift.deployment,
                title=drift.note,
                channel=drift.channel,
                text=f"{drift.deployment} calls {drift.alias}, which now answers as {drift.to_snapshot}. "
                "A model-only eval of the new snapshot is running.",
                facts={"alias": drift.alias, "from": drift.from_snapshot, "to": drift.to_snapshot},
            )
        )
        record = DriftRecord(drift=drift)
        try:
            report: EvalReport = await workflow.execute_child_workflow(
                "EvalWorkflow",
                # the new snapshot against the one the alias served before (when the registry knows it)
                EvalRequest(
                    deployment=drift.deployment,
                    to_model=drift.to_snapshot,
                    from_model=drift.from_snapshot,
                    requested_by=DRIFT_USER,
                ),
                id=f"{workflow.info().workflow_id}-eval-{drift.deployment}",
                result_type=EvalReport,
            )
            record.report_id, record.gate = report.report_id, report.gate.decision
        except ChildWorkflowError as exc:  # the drift is recorded whatever the eval's fate
            record.eval_error = str(exc.cause or exc)
        await workflow.execute_activity(record_alias_drift, record, **REGISTRY)
        return DriftOutcome(
            deployment=drift.deployment,
            alias=drift.alias,
            from_snapshot=drift.from_snapshot,
            to_snapshot=drift.to_snapshot,
            note=drift.note,
            report_id=record.report_id,
            gate=record.gate,
            eval_error=record.eval_error,
        )
