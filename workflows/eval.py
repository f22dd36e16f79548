"""EvalWorkflow: the 2x2 regression eval of one deployment as durable Temporal work (PRODUCT §6).

Contract: takes one :class:`EvalRequest`, returns a small :class:`EvalReport` (ids and summaries; at most
``FLIPPED_CAP`` flipped cases, the full report is in the registry under ``report_id``). Query ``progress``
answers per-arm ``{done, total}`` calls. MigrationWorkflow runs it as a child and reads
``report.gate.decision`` and ``report.arms[arm].run_id``.

Steps: plan (validate, choose arms, reuse a baseline) -> every arm's case ranges as batch activities, at
most ``tuning.parallel_batches`` in flight across arms, interleaved so arms advance together -> summarise
each arm -> build the report. Only run ids and case index ranges cross the workflow boundary, never
outputs, so a 10,000-case, 3-epoch, 4-arm eval is a few hundred activities and well under a megabyte of
history. A failing arm (retired model, bad request) cancels the other batches and fails the workflow with
the activity's one-line message.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from pydantic import BaseModel, Field
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.evals import (
        PlanInput,
        ReportInput,
        SummarizeInput,
        build_eval_report,
        plan_eval,
        run_eval_batch,
        summarize_eval_run,
    )
    from pairshift.evals import BatchResult, BatchSpec, EvalPlan, EvalRequest, batch_ranges
    from pairshift.reports import FLIPPED_CAP, EvalReport

NON_RETRYABLE = ["EvalInputError", "ArmFailed"]
SHORT = timedelta(minutes=10)
RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30),
                    non_retryable_error_types=NON_RETRYABLE)


class ArmProgress(BaseModel):
    done: int = 0
    total: int = 0


class EvalProgress(BaseModel):
    phase: str = Field(description="planning | running | summarising | reporting | done | failed")
    arms: dict[str, ArmProgress] = Field(default_factory=dict)


def _failure_message(err: BaseException) -> tuple[str, str | None]:
    """The innermost ApplicationError's message and type (the activity's one line)."""
    cause: BaseException | None = err
    while isinstance(cause, ActivityError) and cause.cause is not None:
        cause = cause.cause
    if isinstance(cause, ApplicationError):
        return cause.message, cause.type
    return str(err), None


@workflow.defn
class EvalWorkflow:
    """Runs the arms of one eval as batch activities and returns the capped report."""

    def __init__(self) -> None:
        self._progress = EvalProgress(phase="planning")

    @workflow.query
    def progress(self) -> EvalProgress:
        return self._progress

    @workflow.run
    async def run(self, request: EvalRequest) -> EvalReport:
        try:
            plan = await workflow.execute_activity(
                plan_eval, PlanInput(request=request, eval_id=workflow.info().run_id),
                start_to_close_timeout=SHORT, retry_policy=RETRY)
            self._progress = EvalProgress(phase="running", arms={
                a.arm: ArmProgress(done=plan.n_cases * plan.epochs if a.reused else 0, total=plan.n_cases * plan.epochs)
                for a in plan.arms})
            await self._run_batches(request, plan)
            self._progress.phase = "summarising"
            summaries = await asyncio.gather(*(
                workflow.execute_activity(summarize_eval_run, SummarizeInput(run_id=a.run_id,
                                          confidence=plan.policy.confidence),
                                          start_to_close_timeout=SHORT, retry_policy=RETRY)
                for a in plan.arms))
            self._progress.phase = "reporting"
            report = await workflow.execute_activity(
                build_eval_report, ReportInput(plan=plan, summaries=list(summaries), flipped_cap=FLIPPED_CAP),
                start_to_close_timeout=SHORT, retry_policy=RETRY)
        except ActivityError as err:
            self._progress.phase = "failed"
            message, kind = _failure_message(err)
            raise ApplicationError(message, type=kind or "EvalFailed", non_retryable=True) from err
        self._progress.phase = "done"
        return report

    def _batches(self, request: EvalRequest, plan: EvalPlan) -> list[tuple[str, BatchSpec]]:
        per_arm = [[(a.arm, BatchSpec(run_id=a.run_id, start=lo, stop=hi, no_cache=plan.no_cache, judge=plan.judge))
                    for lo, hi in batch_ranges(plan.n_cases, request.tuning.batch_cases)]
                   for a in plan.arms if not a.reused]
        interleaved = []
        for i in range(max((len(b) for b in per_arm), default=0)):
            interleaved += [b[i] for b in per_arm if i < len(b)]
        return interleaved

    async def _run_batches(self, request: EvalRequest, plan: EvalPlan) -> None:
        gate = asyncio.Semaphore(request.tuning.parallel_batches)
        tuning = request.tuning

        async def one(arm: str, spec: BatchSpec) -> None:
            async with gate:
                result: BatchResult = await workflow.execute_activity(
                    run_eval_batch, spec, retry_policy=RETRY,
                    start_to_close_timeout=timedelta(seconds=tuning.batch_timeout_s),
                    heartbeat_timeout=timedelta(seconds=tuning.heartbeat_timeout_s))
            self._progress.arms[arm].done += result.calls

        tasks = [asyncio.ensure_future(one(arm, spec)) for arm, spec in self._batches(request, plan)]
        if not tasks:
            return
        done, pending = await workflow.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        failed = next((t for t in done if t.exception() is not None), None)
        if failed is None:
            return
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        raise failed.exception()  # type: ignore[misc]
