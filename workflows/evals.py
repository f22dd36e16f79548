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

Batch arms (policy ``eval.mode`` batch / auto, issue 18; versioned by ``workflow.patched(BATCH_MODE_PATCH)``):
each case range of ``tuning.provider_batch_requests`` calls is one provider batch. ``submit_provider_batch``
stores the batch id before it returns; the workflow then waits on durable timers (first poll after
``poll_first_s``, doubling up to ``poll_max_s``, for at most ``poll_window_h``) with one short
``poll_provider_batch`` per look, so no activity holds a worker slot while the provider works, and a worker
killed meanwhile resumes polling the same batch. ``collect_provider_batch`` stores the results like online
answers. What errored, expired or was canceled goes once more in a follow-up batch (round 1), then online
through ``run_eval_batch`` (which runs only what is still missing). Batch arms do not take the
``parallel_batches`` gate and do not use the model's rate-limited queue: batch limits are the provider's own.
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
        CollectResult,
        EvalProgress,
        EvalReport,
        EvalRequest,
        PlanInput,
        PreflightInput,
        ProviderBatchSpec,
        ReportInput,
        RoutedEvalPlan,
        SummarizeInput,
        build_eval_report,
        collect_provider_batch,
        plan_eval,
        poll_provider_batch,
        preflight_eval,
        run_eval_batch,
        submit_provider_batch,
        summarize_eval_run,
    )
    from pairshift.ratelimit import batch_ranges, model_task_queue, route_batch_cases

NON_RETRYABLE = ["EvalInputError", "ArmFailed", "PreflightRefused"]
PROVIDER_QUEUES_PATCH = "provider-task-queues"
PREFLIGHT_PATCH = "eval-preflight"
# A cancelled eval (its parent cancelled or aborted) ends CANCELED, not failed (issue 23).
CANCELLED_IS_CANCELLED_PATCH = "eval-cancel-is-cancel"
# Arms whose plan says "batch" go through the providers' batch APIs (issue 18).
BATCH_MODE_PATCH = "eval-batch-mode"
BATCH_ROUNDS = 2  # the first batch, then one follow-up batch of what failed; what still fails runs online
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
        batched = {arm for arm, mode in plan.modes.items() if mode == "batch"}
        if batched and not workflow.patched(BATCH_MODE_PATCH):
            batched = set()

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

        async def batch_arm(arm: str) -> None:
            if await self._provider_batches(request, plan, arm):
                return
            online = [b for b in self._batches(request, plan) if b[0] == arm]
            await asyncio.gather(*(one(a, spec, queue) for a, spec, queue in online))

        tasks = [
            asyncio.ensure_future(one(arm, spec, queue))
            for arm, spec, queue in self._batches(request, plan)
            if arm not in batched
        ]
        tasks += [asyncio.ensure_future(batch_arm(a.arm)) for a in plan.arms if a.arm in batched]
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

    async def _provider_batches(self, request: EvalRequest, plan: RoutedEvalPlan, arm: str) -> bool:
        """Run ``arm`` through provider batches (a first round, then a retry round); True when all stored."""
        run = next(a for a in plan.arms if a.arm == arm)
        size = max(1, request.tuning.provider_batch_requests // plan.epochs)
        total = plan.n_cases * plan.epochs
        for round_ in range(BATCH_ROUNDS):
            specs = [
                ProviderBatchSpec(
                    run_id=run.run_id,
                    arm=arm,
                    start=lo,
                    stop=hi,
                    round=round_,
                    no_cache=plan.no_cache,
                    judge=plan.judge,
                )
                for lo, hi in batch_ranges(plan.n_cases, size)
            ]
            results = await asyncio.gather(*(self._one_provider_batch(request, spec) for spec in specs))
            self._progress.arms[arm].done = min(
                total, self._progress.arms[arm].done + sum(r.stored for r in results)
            )
            if not any(r.failed for r in results):
                return True
        return False

    async def _one_provider_batch(self, request: EvalRequest, spec: ProviderBatchSpec) -> CollectResult:
        """Submit (once), wait on durable timers with backoff, collect."""
        tuning = request.tuning
        # Each call heartbeats: one lost with a killed worker is retried after the heartbeat timeout, not the
        # start-to-close timeout (10 minutes; 4 hours for collecting).
        beat = timedelta(seconds=tuning.heartbeat_timeout_s)
        submitted = await workflow.execute_activity(
            submit_provider_batch,
            spec,
            start_to_close_timeout=SHORT,
            heartbeat_timeout=beat,
            retry_policy=self._retry,
        )
        if submitted.provider_batch_id is None:
            return CollectResult(stored=submitted.cached)
        delay, waited, ended = tuning.poll_first_s, 0.0, False
        while waited < tuning.poll_window_h * 3600:
            await workflow.sleep(delay)
            waited += delay
            polled = await workflow.execute_activity(
                poll_provider_batch,
                spec,
                start_to_close_timeout=SHORT,
                heartbeat_timeout=beat,
                retry_policy=self._retry,
            )
            if polled.ended:
                ended = True
                break
            delay = min(delay * 2, tuning.poll_max_s)
        collected = await workflow.execute_activity(
            collect_provider_batch,
            spec.model_copy(update={"cancel": not ended}),
            start_to_close_timeout=timedelta(seconds=tuning.batch_timeout_s),
            heartbeat_timeout=beat,
            retry_policy=self._retry,
        )
        return collected.model_copy(update={"stored": collected.stored + submitted.cached})
