"""HealthWorkflow: proves a worker is polling and can reach the registry (used by `make demo` and tests)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from pairshift.contracts.health import HealthReport, HealthRequest, registry_health


@workflow.defn
class HealthWorkflow:
    """Runs one activity that counts registry rows; completes with the counts."""

    @workflow.run
    async def run(self, request: HealthRequest) -> HealthReport:
        counts = await workflow.execute_activity(
            registry_health, start_to_close_timeout=timedelta(seconds=30)
        )
        return HealthReport(note=request.note, registry=counts)
