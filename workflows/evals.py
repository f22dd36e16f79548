"""EvalWorkflow: the 2x2 regression eval of one deployment as durable Temporal work (PRODUCT §6).

Contract: takes one :class:`EvalRequest`, returns a small :class:`EvalReport` (ids and summaries; at most
``FLIPPED_CAP`` flipped cases, the full report is in the registry under ``report_id``). Query ``progress``
answers per-arm ``{done, total}`` calls. MigrationWorkflow runs it as a child and reads
``report.gate.decision`` and ``report.arms[arm].run_id``.

Steps: plan (validate, choose arms, reuse a baseline) -> preflight (one call per distinct (prompt, model) and
the judge's: a request the provider refuses fails the eval here, naming the parameter and the config key that
fixes it, before any batch; versioned by ``workflow.patched(PREFLIGHT_PATCH)``) -> every arm's case ranges as
batch activities, at
most ``tuning.parallel_batches`` in flight across arms, interleaved so arms advance together -> summarise
each arm -> build the report. Only run ids and case index ranges cross the workflow boundary, never
outputs, so a 10,000-case, 3-epoch, 4-arm eval is a few hundred activities and well under a megabyte of
history. A failing arm (retired model, bad request) cancels the other batches and fails the workflow with
the activity's one-line message.

Rate limits across workers (PRODUCT §12): the plan carries a route per arm whose model has a request rate;
that arm's batches go to the model's own task queue (``<this workflow's queue>-model-<model id>``), sized
so that each makes at most the route's ``calls_per_batch`` calls, and the workers polling that queue hold
the whole fleet to the model's limit with Temporal's task-queue rate limit (:mod:`pairshift.ratelimit`).
Arms without a route stay on this workflow's queue with the old batch sizes. The routing is versioned
(``workflow.patched(PROVIDER_QUEUES_PATCH)``): histories recorded before it replay the single-queue path.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from pairshift.contracts.evals import (
        FLIPPED_CAP,
        ArmProgress,
        BatchResult,
        BatchSpec,
        EvalProgress,
        EvalReport,
        EvalRequest,
        PlanInput,
        PreflightInput,
        ReportInput,
        RoutedEvalPlan,
        SummarizeInput,
        build_eval_report,
        plan_eval,
        preflight_eval,
        run_eval_batch,
        summarize_eval_run,
    )
    from pairshift.ratelimit import batch_ranges, model_task_queue, route_batch_cases

NON_RETRYABLE = ["EvalInputError", "ArmFailed", "PreflightRefused"]
PROVIDER_QUEUES_PATCH = "provider-task-queues"
PREFLIGHT_PATCH = "eval-preflight"
# A cancelled eval (its parent cancelled or aborted) ends CANCELED, not failed (issue 23).
CANCELLED_IS_CANCELLED_PATCH = "eval-cancel-is-cancel"
SHORT = timedelta(minutes=10)
RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    non_retryable_error_types=NON_RETRYABLE,
)
# Every activity has an attempt limit (about 15 minutes of backoff at the 30 s cap), so no input can hang an
# eval and the migration waiting on it: an error that slips past the non-retryable types still ends the eval,
# named. TypeError and ValueError are bugs or bad input, never transient. Versioned: BOUNDED_RETRY_PATCH.
BOUNDED_RETRY_PATCH = "eval-bounded-retries"
BOUNDED_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=30,
    non_retryable_error_types=[*NON_RETRYABLE, "TypeError", "ValueError", "KeyError", "AttributeError"],
)


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
        self._retry = RETRY

    @workflow.query
    def progress(self) -> EvalProgress:
        return self._progress

    @workflow.run
    async def run(self, request: EvalRequest) -> EvalReport:
        self._retry = BOUNDED_RETRY if workflow.patched(BOUNDED_RETRY_PATCH) else RETRY
        try:
            plan = await workflow.execute_activity(
                plan_eval,
                PlanInput(request=request, eval_id=workflow.info().run_id),
                start_to_close_timeout=SHORT,
                retry_policy=self._retry,
            )
            if workflow.patched(PREFLIGHT_PATCH):
                self._progress = EvalProgress(phase="preflight")
                checked = await workflow.execute_activity(
                    preflight_eval,
                    PreflightInput(plan=plan),
                    start_to_close_timeout=SHORT,
                    retry_policy=self._retry,
                )
                plan = plan.model_copy(update={"warnings": [*plan.warnings, *checked.warnings]})
            self._progress = EvalProgress(
                phase="running",
                arms={
                    a.arm: ArmProgress(
                        done=plan.n_cases * plan.epochs if a.reused else 0, total=plan.n_cases * plan.epochs
                    )
                    for a in plan.arms
                },
            )
            await self._run_batches(request, plan)
            self._progress.phase = "summarising"
            summaries = await asyncio.gather(
                *(
                    workflow.execute_activity(
                        summarize_eval_run,
                        SummarizeInput(run_id=a.run_id, confidence=plan.policy.confidence),
                        start_to_close_timeout=SHORT,
                        retry_policy=self._retry,
                    )
                    for a in plan.arms
                )
            )
            self._progress.phase = "reporting"
            report = await workflow.execute_activity(
                build_eval_report,
                ReportInput(plan=plan, summaries=list(summaries), flipped_cap=FLIPPED_CAP),
                start_to_close_timeout=SHORT,
                retry_policy=self._retry,
            )
        except ActivityError as err:
            if is_cancelled_exception(err) and workflow.patched(CANCELLED_IS_CANCELLED_PATCH):
                self._progress.phase = "cancelled"
                raise asyncio.CancelledError("the eval was cancelled") from None  # CANCELED, not failed
            self._progress.phase = "failed"
            message, kind = _failure_message(err)
            raise ApplicationError(message, type=kind or "EvalFailed", non_retryable=True) from err
        self._progress.phase = "done"
        return report

    def _batches(self, request: EvalRequest, plan: RoutedEvalPlan) -> list[tuple[str, BatchSpec, str | None]]:
        """(arm, batch, task queue or None = this workflow's) of every fresh arm, interleaved across arms."""
        routed = workflow.patched(PROVIDER_QUEUES_PATCH)
        per_arm = []
        for a in plan.arms:
            if a.reused:
                continue
            route = plan.routes.get(a.arm) if routed else None
            queue = model_task_queue(workflow.info().task_queue, route.model_id) if route else None
            size = (
                route_batch_cases(route, plan.epochs, request.tuning.batch_cases)
                if route
                else request.tuning.batch_cases
            )
            per_arm.append(
                [
                    (
                        a.arm,
                        BatchSpec(
                            run_id=a.run_id, start=lo, stop=hi, no_cache=plan.no_cache, judge=plan.judge
                        ),
                        queue,
                    )
                    for lo, hi in batch_ranges(plan.n_cases, size)
                ]
            )
        interleaved = []
        for i in range(max((len(b) for b in per_arm), default=0)):
            interleaved += [b[i] for b in per_arm if i < len(b)]
        return interleaved

    async def _run_batches(self, request: EvalRequest, plan: RoutedEvalPlan) -> None:
        gate = asyncio.Semaphore(request.tuning.parallel_batches)
        tuning = request.tuning

        async def one(arm: str, spec: BatchSpec, queue: str | None) -> None:
            async with gate:
                result: BatchResult = await workflow.execute_activity(
                    run_eval_batch,
                    spec,
                    task_queue=queue,
                    retry_policy=self._retry,
                    start_to_close_timeout=timedelta(seconds=tuning.batch_timeout_s),
                    heartbeat_timeout=timedelta(seconds=tuning.heartbeat_timeout_s),
                )
            self._progress.arms[arm].done += result.calls

        tasks = [
            asyncio.ensure_future(one(arm, spec, queue)) for arm, spec, queue in self._batches(request, plan)
        ]
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
