"""Eval activities: thin wrappers that run :mod:`pairshift.evals` against the process's registry.

Failures that retrying cannot fix (bad input, a retired model, a bad request, bad credentials) are raised
as non-retryable ``ApplicationError``s whose ``type`` names the class, so EvalWorkflow fails at once with the
one-line message (naming the model). Everything else (the registry briefly unavailable, a worker killed
mid-batch, a provider outage longer than the calls' own retries) is retried by Temporal; a retried batch skips
the (case, epoch) results already stored. A batch whose last attempt fails (the retry policy's
``maximum_attempts`` reached, or an error type the policy does not retry) marks its arm's run failed with the
error, so no run is left ``running`` once its eval has failed.

The plan says where each arm's batches go (:class:`~pairshift.contracts.evals.RoutedEvalPlan`): a model with
a request rate gets its own task queue so its limit holds across workers (:mod:`pairshift.ratelimit`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

from pairshift import evals
from pairshift.contracts import evals as contract
from pairshift.contracts import implements
from pairshift.contracts.evals import (
    BatchResult,
    BatchSpec,
    CollectResult,
    EvalReport,
    PlanInput,
    PollResult,
    PreflightInput,
    PreflightResult,
    ProviderBatchSpec,
    ReportInput,
    RoutedEvalPlan,
    RunSummary,
    SubmitResult,
    SummarizeInput,
)
from pairshift.evals import provider_batches
from pairshift.evals.preflight import PreflightRefused, preflight
from pairshift.registry import open_registry
from pairshift.telemetry import metrics

T = TypeVar("T")
HEARTBEAT_EVERY_S = 2.0  # heartbeats also while a batch waits on the rate limiter, not only per finished call


def _start_heartbeats(details: Callable[[], object] = lambda: None) -> asyncio.Task[None]:
    """Heartbeat every ``HEARTBEAT_EVERY_S`` (or a quarter of the heartbeat timeout) until cancelled: an
    activity lost with its worker is retried after its heartbeat timeout, not its start-to-close timeout."""
    timeout = activity.info().heartbeat_timeout
    every = min(HEARTBEAT_EVERY_S, timeout.total_seconds() / 4) if timeout else HEARTBEAT_EVERY_S

    async def ticker() -> None:
        while True:
            activity.heartbeat(details())
            await asyncio.sleep(every)

    return asyncio.create_task(ticker())


def _non_retryable(exc: Exception) -> ApplicationError:
    return ApplicationError(str(exc), type=type(exc).__name__, non_retryable=True)


def _retries_exhausted(exc: Exception) -> bool:
    """Whether Temporal will not retry this activity after ``exc`` (its last attempt, or a type not
    retried)."""
    info = activity.info()
    policy = info.retry_policy
    if policy is None:
        return False
    if type(exc).__name__ in (policy.non_retryable_error_types or ()):
        return True
    return bool(policy.maximum_attempts) and info.attempt >= policy.maximum_attempts


@implements(contract.plan_eval)
def plan_eval(data: PlanInput) -> RoutedEvalPlan:
    try:
        return evals.plan_eval(open_registry(), data.request, data.eval_id)
    except evals.EvalInputError as exc:
        raise _non_retryable(exc) from None


@implements(contract.preflight_eval)
async def preflight_eval(data: PreflightInput) -> PreflightResult:
    """One call per distinct (prompt, model) of the plan before any batch (a refusal is not retried)."""
    try:
        return await preflight(open_registry(), data.plan)
    except PreflightRefused as exc:
        raise _non_retryable(exc) from None


@implements(contract.run_eval_batch)
async def run_eval_batch(batch: BatchSpec) -> BatchResult:
    """Run the missing (case, epoch) calls of one case range; heartbeats ``{done, total}``."""
    progress = {"done": 0, "total": 0}

    def on_progress(done: int, total: int) -> None:
        progress.update(done=done, total=total)

    beat = _start_heartbeats(lambda: dict(progress))
    try:
        result = await evals.run_batch(open_registry(), batch, on_progress)
    except (evals.ArmFailed, evals.JudgeRefused) as exc:
        raise _non_retryable(exc) from None
    except Exception as exc:
        if _retries_exhausted(exc):
            message = f"cases {batch.start}-{batch.stop} failed on attempt {activity.info().attempt}: {exc}"
            await asyncio.to_thread(evals.mark_failed, open_registry(), batch.run_id, message)
        raise
    finally:
        beat.cancel()
    metrics.EVAL_CALLS.labels("made").inc(result.made)
    metrics.EVAL_CALLS.labels("cached").inc(result.cached)
    metrics.EVAL_CALLS.labels("error").inc(result.errors)
    return result


@implements(contract.submit_provider_batch)
async def submit_provider_batch(spec: ProviderBatchSpec) -> SubmitResult:
    """Send the range's missing calls as one provider batch; its id is stored before this returns (once)."""
    beat = _start_heartbeats()
    try:
        return await provider_batches.submit(open_registry(), spec)
    except (evals.ArmFailed, evals.JudgeRefused) as exc:
        raise _non_retryable(exc) from None
    except evals.FATAL_ERRORS as exc:
        raise _non_retryable(
            evals.ArmFailed(f"arm {spec.arm}: batch submit refused: {exc.message}")
        ) from None
    finally:
        beat.cancel()


@implements(contract.poll_provider_batch)
async def poll_provider_batch(spec: ProviderBatchSpec) -> PollResult:
    """One look at a submitted provider batch (never waits: the workflow's timers do)."""
    beat = _start_heartbeats()
    try:
        return await provider_batches.poll(open_registry(), spec)
    except evals.FATAL_ERRORS as exc:
        raise _non_retryable(evals.ArmFailed(f"arm {spec.arm}: batch poll refused: {exc.message}")) from None
    finally:
        beat.cancel()


@implements(contract.collect_provider_batch)
async def collect_provider_batch(spec: ProviderBatchSpec) -> CollectResult:
    """Store an ended batch's results (cache, score, results table); cancel it first if still running."""
    beat = _start_heartbeats()
    try:
        result = await provider_batches.collect(open_registry(), spec, cancel=spec.cancel)
    except (evals.ArmFailed, evals.JudgeRefused) as exc:
        raise _non_retryable(exc) from None
    except evals.FATAL_ERRORS as exc:
        raise _non_retryable(
            evals.ArmFailed(f"arm {spec.arm}: batch results refused: {exc.message}")
        ) from None
    finally:
        beat.cancel()
    metrics.EVAL_CALLS.labels("made").inc(result.stored)
    return result


@implements(contract.summarize_eval_run)
def summarize_eval_run(data: SummarizeInput) -> RunSummary:
    """Summarise one run's stored results and mark it done."""
    return evals.summarize_run(open_registry(), data.run_id, data.confidence)


@implements(contract.build_eval_report)
def build_eval_report(data: ReportInput) -> EvalReport:
    """Effects, flips and the gate; the full report is stored, a capped one is returned to the workflow."""
    return evals.build_report(open_registry(), data.plan, data.summaries).capped(data.flipped_cap)


EVAL_ACTIVITIES: list[Callable[..., object] | Callable[..., Awaitable[object]]] = [
    plan_eval,
    preflight_eval,
    run_eval_batch,
    submit_provider_batch,
    poll_provider_batch,
    collect_provider_batch,
    summarize_eval_run,
    build_eval_report,
]
