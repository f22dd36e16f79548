"""AliasDriftWorkflow: the watcher of provider aliases that silently move to a new snapshot (PRODUCT §8).

Run every few hours by the Schedule ``pairshift-alias-drift``: for each deployment configured with an alias,
probe the alias; when the snapshot it resolves to changed, alert, run a model-only eval of the new snapshot as
a child EvalWorkflow, and record the new snapshot and the change (with the eval report id) in the registry
and the pair ledger. A probe that fails is reported and retried at the next run.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from pairshift.contracts.alias_drift import (
        AliasDriftRequest,
        AliasDriftResult,
        AliasQuery,
        Drift,
        DriftOutcome,
        DriftRecord,
        ProbeResult,
        ensure_snapshot_row,
        find_alias_targets,
        probe_alias,
        record_alias_drift,
    )
    from pairshift.contracts.evals import EvalRequest
    from pairshift.contracts.notices import Notice
    from workflows.evals import EvalWorkflow
    from workflows.notices import deliver_notice

DRIFT_USER = "pairshift-alias-drift"
REGISTRY = dict(
    start_to_close_timeout=timedelta(seconds=60),
    retry_policy=RetryPolicy(maximum_attempts=10, maximum_interval=timedelta(seconds=30)),
)
PROBE = dict(start_to_close_timeout=timedelta(minutes=2), retry_policy=RetryPolicy(maximum_attempts=3))


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
        for target, probe in zip(targets, probes, strict=True):
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
        await deliver_notice(
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
            report = await workflow.execute_child_workflow(
                EvalWorkflow.run,
                # the new snapshot against the one the alias served before (when the registry knows it)
                EvalRequest(
                    deployment=drift.deployment,
                    to_model=drift.to_snapshot,
                    from_model=drift.from_snapshot,
                    requested_by=DRIFT_USER,
                ),
                id=f"{workflow.info().workflow_id}-eval-{drift.deployment}",
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
