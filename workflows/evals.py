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

Bounded history (issue 20; versioned by ``workflow.patched(CONTINUE_AS_NEW_PATCH)``): a run starts the online
batches in order and, once its history reaches ``tuning.events_per_run`` events (or Temporal suggests it),
starts no more, lets those in flight finish and continues as new with an :class:`EvalCarry` (the plan,
progress, a cursor into the batch list, each batch arm's round): a 100,000-case x 3-epoch x 4-arm eval is a
few runs of at most ~5,000 events each (bench/results/scale.md). A start that carries ``resume`` is refused
(:func:`refuse_resume`). Each provider batch is a :class:`ProviderBatchWorkflow` child, so its polls
(~1,200 events a day) are in its own history, which continues as new the same way.

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
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from pairshift.contracts.evals import (
        FLIPPED_CAP,
        ArmProgress,
        BatchArmCarry,
        BatchResult,
        BatchSpec,
        CollectResult,
        EvalCarry,
        EvalProgress,
        EvalReport,
        EvalRequest,
        PlanInput,
        PollCarry,
        PreflightInput,
        ProviderBatchJob,
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
# Runs hand over to a new run (continue-as-new) before their history grows past tuning.events_per_run, and
# each provider batch polls in a ProviderBatchWorkflow child of its own (issue 20).
CONTINUE_AS_NEW_PATCH = "eval-continue-as-new"
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


def hands_over(events: int, limit: int, suggested: bool) -> bool:
    """Whether a workflow run stops starting work and continues as new: its history has reached ``limit``
    events, or Temporal suggests it (the history's size). What is in flight finishes first, so a run ends
    at ``limit`` plus what its in-flight work adds (at most ``parallel_batches`` activities, or one round of
    provider batch children)."""
    return events >= limit or suggested


def refuse_resume(
    eval_id: str | None, *, continued_run_id: str | None, first_run_id: str | None
) -> str | None:
    """Why a run must refuse a ``resume`` carry (``eval_id``: the carried plan's eval id), or None.

    The carry is internal: only a run that Temporal started as the continuation of another
    (``continued_run_id``, which no client can set) takes it, and only when the carried plan is this chain's
    own (an eval's id is its first run's id). A start that carries one fails before anything is recorded.
    """
    if eval_id is None:
        return None
    if continued_run_id is None:
        return "resume: refused: the continue-as-new carry is internal; leave resume out of a start"
    if eval_id != first_run_id:
        return f"resume: refused: the carry is eval {eval_id!r}'s, but this chain began with {first_run_id!r}"
    return None


def _handing_over(limit: int) -> bool:
    info = workflow.info()
    return hands_over(info.get_current_history_length(), limit, info.is_continue_as_new_suggested())


def _failure_message(err: BaseException) -> tuple[str, str | None]:
    """The innermost ApplicationError's message and type (the activity's one line)."""
    cause: BaseException | None = err
    while isinstance(cause, (ActivityError, ChildWorkflowError)) and cause.cause is not None:
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
        self._handed_over = False

    @workflow.query
    def progress(self) -> EvalProgress:
        return self._progress

    @workflow.run
    async def run(self, request: EvalRequest) -> EvalReport:
        self._retry = BOUNDED_RETRY if workflow.patched(BOUNDED_RETRY_PATCH) else RETRY
        carry = request.resume
        info = workflow.info()
        why = refuse_resume(
            carry.plan.eval_id if carry else None,
            continued_run_id=info.continued_run_id,
            first_run_id=info.first_execution_run_id,
        )
        if why:
            raise ApplicationError(why, type="EvalInputError", non_retryable=True)
        try:
            if carry is not None:  # a run continued as new: plan and preflight are done, progress carried
                plan, self._progress = carry.plan, carry.progress
            else:
                plan = await self._plan(request)
            if workflow.patched(CONTINUE_AS_NEW_PATCH):
                carry = await self._run_in_runs(request, plan, carry)
                if carry is not None:
                    carry.progress.runs += 1
                    workflow.continue_as_new(request.model_copy(update={"resume": carry}))
            else:
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
        except (ActivityError, ChildWorkflowError) as err:
            if is_cancelled_exception(err) and workflow.patched(CANCELLED_IS_CANCELLED_PATCH):
                self._progress.phase = "cancelled"
                raise asyncio.CancelledError("the eval was cancelled") from None  # CANCELED, not failed
            self._progress.phase = "failed"
            message, kind = _failure_message(err)
            raise ApplicationError(message, type=kind or "EvalFailed", non_retryable=True) from err
        self._progress.phase = "done"
        return report

    async def _plan(self, request: EvalRequest) -> RoutedEvalPlan:
        """Plan (creates the arm runs) and preflight; sets the running progress."""
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
        return plan

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

    # ------------------------------------------------------------ runs of bounded history (issue 20)

    async def _run_in_runs(
        self, request: EvalRequest, plan: RoutedEvalPlan, carry: EvalCarry | None
    ) -> EvalCarry | None:
        """Run what is left of the batches in this run; the carry for the next run, or None when all are done.

        Online batches start in the order of :meth:`_batches` (at most ``parallel_batches`` in flight); once
        the history reaches ``tuning.events_per_run`` events no new batch (nor provider batch round) starts,
        what is in flight finishes, and the carry says where the next run picks up. Only ids, cursors and
        counts are carried, never results.
        """
        tuning = request.tuning
        state = carry or EvalCarry(plan=plan, progress=self._progress)
        state.progress = self._progress
        gate = asyncio.Semaphore(tuning.parallel_batches)
        batched = {arm for arm, mode in plan.modes.items() if mode == "batch"}
        if batched and not workflow.patched(BATCH_MODE_PATCH):  # always True here: kept for the marker
            batched = set()
        for arm in batched:
            state.batch_arms.setdefault(arm, BatchArmCarry())
        every = self._batches(request, plan)

        async def one(arm: str, spec: BatchSpec, queue: str | None) -> None:
            try:
                result: BatchResult = await workflow.execute_activity(
                    run_eval_batch,
                    spec,
                    task_queue=queue,
                    retry_policy=self._retry,
                    start_to_close_timeout=timedelta(seconds=tuning.batch_timeout_s),
                    heartbeat_timeout=timedelta(seconds=tuning.heartbeat_timeout_s),
                )
            finally:
                gate.release()
            self._progress.arms[arm].done += result.calls

        async def in_order(items: list[tuple[str, BatchSpec, str | None]], start: int) -> int:
            """Start ``items[start:]`` in order through the gate until handing over; the prefix done."""
            tasks: list[asyncio.Future[None]] = []
            for item in items[start:]:
                await gate.acquire()
                failed = any(t.done() and not t.cancelled() and t.exception() is not None for t in tasks)
                if failed or _handing_over(tuning.events_per_run):
                    gate.release()
                    self._handed_over = self._handed_over or not failed
                    break
                tasks.append(asyncio.ensure_future(one(*item)))
            await asyncio.gather(*tasks)
            return start + len(tasks)

        async def online() -> None:
            state.next_batch = await in_order([b for b in every if b[0] not in batched], state.next_batch)

        async def batch_arm(arm: str) -> None:
            arm_state = state.batch_arms[arm]
            while not arm_state.stored and arm_state.rounds < BATCH_ROUNDS:
                if _handing_over(tuning.events_per_run):
                    self._handed_over = True
                    return
                results = await self._provider_batch_round(request, plan, arm, arm_state.rounds)
                arm_state.rounds += 1
                arm_state.stored = not any(r.failed for r in results)
            if not arm_state.stored:  # what still failed runs online
                left = [b for b in every if b[0] == arm]
                arm_state.online_next = await in_order(left, arm_state.online_next)

        tasks = [asyncio.ensure_future(online())]
        tasks += [asyncio.ensure_future(batch_arm(a.arm)) for a in plan.arms if a.arm in batched]
        done, pending = await workflow.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        failed = next((t for t in done if t.exception() is not None), None)
        if failed is not None:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            raise failed.exception()  # type: ignore[misc]
        return state if self._handed_over else None

    async def _provider_batch_round(
        self, request: EvalRequest, plan: RoutedEvalPlan, arm: str, round_: int
    ) -> list[CollectResult]:
        """One round of ``arm``'s provider batches, each a ProviderBatchWorkflow child (polling there)."""
        run = next(a for a in plan.arms if a.arm == arm)
        size = max(1, request.tuning.provider_batch_requests // plan.epochs)
        jobs = [
            ProviderBatchJob(
                spec=ProviderBatchSpec(
                    run_id=run.run_id,
                    arm=arm,
                    start=lo,
                    stop=hi,
                    round=round_,
                    no_cache=plan.no_cache,
                    judge=plan.judge,
                ),
                tuning=request.tuning,
            )
            for lo, hi in batch_ranges(plan.n_cases, size)
        ]
        results = await asyncio.gather(
            *(
                workflow.execute_child_workflow(
                    ProviderBatchWorkflow.run,
                    job,
                    id=f"{workflow.info().workflow_id}-{arm}-r{round_}-{job.spec.start}",
                )
                for job in jobs
            )
        )
        total = plan.n_cases * plan.epochs
        progress = self._progress.arms[arm]
        progress.done = min(total, progress.done + sum(r.stored for r in results))
        return list(results)


@workflow.defn
class ProviderBatchWorkflow:
    """One provider batch of an eval arm: submit (once), poll on durable timers with backoff, collect.

    A child of EvalWorkflow (since ``CONTINUE_AS_NEW_PATCH``), so a batch's polls (~1,200 events a day) are in
    its own history, not the eval's; a poll window long enough to reach ``tuning.events_per_run`` events
    continues as new, carrying only the submit's cached count and the poll clock (:class:`PollCarry`).
    """

    @workflow.run
    async def run(self, job: ProviderBatchJob) -> CollectResult:
        spec, tuning = job.spec, job.tuning
        # Each call heartbeats: one lost with a killed worker is retried after the heartbeat timeout, not the
        # start-to-close timeout (10 minutes; 4 hours for collecting).
        beat = timedelta(seconds=tuning.heartbeat_timeout_s)
        try:
            carry = job.resume
            if carry is None:
                submitted = await workflow.execute_activity(
                    submit_provider_batch,
                    spec,
                    start_to_close_timeout=SHORT,
                    heartbeat_timeout=beat,
                    retry_policy=BOUNDED_RETRY,
                )
                if submitted.provider_batch_id is None:
                    return CollectResult(stored=submitted.cached)
                carry = PollCarry(cached=submitted.cached, delay=tuning.poll_first_s)
            ended = False
            while carry.waited < tuning.poll_window_h * 3600:
                if _handing_over(tuning.events_per_run):
                    carry.runs += 1
                    workflow.continue_as_new(job.model_copy(update={"resume": carry}))
                await workflow.sleep(carry.delay)
                carry.waited += carry.delay
                polled = await workflow.execute_activity(
                    poll_provider_batch,
                    spec,
                    start_to_close_timeout=SHORT,
                    heartbeat_timeout=beat,
                    retry_policy=BOUNDED_RETRY,
                )
                if polled.ended:
                    ended = True
                    break
                carry.delay = min(carry.delay * 2, tuning.poll_max_s)
            collected = await workflow.execute_activity(
                collect_provider_batch,
                spec.model_copy(update={"cancel": not ended}),
                start_to_close_timeout=timedelta(seconds=tuning.batch_timeout_s),
                heartbeat_timeout=beat,
                retry_policy=BOUNDED_RETRY,
            )
        except ActivityError as err:
            if is_cancelled_exception(err):
                raise asyncio.CancelledError("the eval was cancelled") from None
            message, kind = _failure_message(err)
            raise ApplicationError(message, type=kind or "EvalFailed", non_retryable=True) from err
        return collected.model_copy(update={"stored": collected.stored + carry.cached})


# What a worker running evals registers (the eval and its provider batch children).
EVAL_WORKFLOWS: list[type] = [EvalWorkflow, ProviderBatchWorkflow]
