"""RetentionWorkflow: run daily by the Schedule ``pairshift-retention``; one idempotent activity.

Observations older than ``retention_days`` become daily rollups (pairshift.observations.retention): the
canary gate reads per-unit aggregates kept at ingest, so the table of calls need not grow without bound.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from pairshift.contracts.retention import (
        RetentionRequest,
        RollUpOrder,
        RollupResult,
        roll_up_observations,
    )


@workflow.defn
class RetentionWorkflow:
    """Roll up and delete the calls older than the retention, as of the workflow's clock."""

    @workflow.run
    async def run(self, req: RetentionRequest) -> RollupResult:
        return await workflow.execute_activity(
            roll_up_observations,
            RollUpOrder(now=workflow.now(), retention_days=req.retention_days),
            # a day is one transaction: a retried run resumes where the last one stopped
            start_to_close_timeout=timedelta(hours=2),
            retry_policy=RetryPolicy(maximum_attempts=5, maximum_interval=timedelta(minutes=5)),
        )
