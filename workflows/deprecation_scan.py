"""DeprecationScanWorkflow: the daily watcher of provider retirement dates (PRODUCT §8).

Run daily by the Schedule ``pairshift-deprecation-scan``: plan the day's scan (an activity running the pure
:func:`pairshift.deprecation_plan.plan_scan`), start each planned MigrationWorkflow as an abandoned child with
the deterministic id ``migration-<deployment>`` (a live one is left alone), then record and send the due
reminders. ``today`` may be given, so people and tests can scan as of any day.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from pairshift.contracts.deprecation_scan import (
        PlannedStart,
        RemindersInput,
        ScanInput,
        ScanRequest,
        ScanResult,
        StartedMigration,
        plan_deprecation_scan,
        record_deprecation_reminders,
    )
    from pairshift.contracts.migration import MigrationRequest, migration_id
    from workflows.migration import MigrationWorkflow
    from workflows.notices import deliver_notice

SCAN_USER = "pairshift-deprecation-scan"
# Start the planned migrations together and send the reminders together: one after the other, each waited
# for its own workflow task, and a scan over 200 deployments took 180 s on a busy worker
# (bench/scale_migrations_bench.py); the migrations started first were running meanwhile.
PARALLEL_PATCH = "scan-parallel-starts"
REGISTRY = dict(
    start_to_close_timeout=timedelta(seconds=60),
    retry_policy=RetryPolicy(maximum_attempts=10, maximum_interval=timedelta(seconds=30)),
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
        together = workflow.patched(PARALLEL_PATCH)
        if together:
            outcomes = list(await asyncio.gather(*(self._start(start) for start in plan.starts)))
        else:
            outcomes = [await self._start(start) for start in plan.starts]
        for start, started in zip(plan.starts, outcomes, strict=True):
            if started:
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
            if together:
                await asyncio.gather(*(deliver_notice(sent.notice) for sent in result.reminders))
            else:
                for sent in result.reminders:
                    await deliver_notice(sent.notice)
        return result

    async def _start(self, start: PlannedStart) -> bool:
        """Start the migration as a child that outlives this scan; False when one is already running."""
        try:
            await workflow.start_child_workflow(
                MigrationWorkflow.run,
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
