"""A provider outage during an eval is waited out, never stored as failed cases (issue 12, chaos finding).

The chaos bench saw a 30 s outage of the provider mid-eval store ~335 (case, epoch) results as provider
errors: each call's own retries (a few seconds) ran out and the error became evidence. Now a call that still
fails transiently stores nothing, the batch's other results are kept, and the batch fails retryably, so
Temporal retries it with backoff; the retry makes only the missing calls. A batch whose retries are exhausted
marks its arm's run failed instead of leaving it ``running``.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import uuid
from pathlib import Path

import pytest
from sqlmodel import select
from temporalio.common import RetryPolicy
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Worker
from test_evals_support import eval_registry, write_config  # noqa: F401 - fixture

from activities.evals import EVAL_ACTIVITIES, run_eval_batch
from pairshift import evals
from pairshift.apply import apply_path
from pairshift.contracts.evals import BatchSpec, EvalRequest
from pairshift.evals import batches
from pairshift.registry.models import EvalResult, EvalRun
from pairshift.registry.store import Registry
from workflows.evals import EVAL_WORKFLOWS, EvalWorkflow

FRESH = "sim-fresh-2025-09"


@pytest.fixture
def behind_http(eval_registry: Registry, sim_server, tmp_path: Path, monkeypatch) -> Registry:  # noqa: F811
    """sim-fresh served over HTTP by the fake provider (so its calls can fail); two attempts per call."""
    behind = {"provider": "anthropic", "base_url": sim_server.base_url}
    apply_path(eval_registry, write_config(tmp_path / "c", model_overrides={FRESH: behind}), by="t")
    retry = evals.RetryPolicy(max_attempts=2, initial_backoff_s=0.01, max_retry_after_s=0.0)
    monkeypatch.setattr(batches, "CALL_RETRY", retry)
    return eval_registry


def _results(registry: Registry, run_id: str) -> list[EvalResult]:
    with registry.session() as s:
        return list(s.exec(select(EvalResult).where(EvalResult.run_id == run_id)).all())


def _run(registry: Registry, run_id: str) -> EvalRun:
    with registry.session() as s:
        return s.get(EvalRun, run_id)


async def test_an_outage_stores_nothing_and_the_retried_batch_makes_only_the_missing_calls(
    behind_http: Registry, sim_server
) -> None:
    plan = evals.plan_eval(behind_http, EvalRequest(deployment="support-triage", to_model=FRESH), "outage")
    spec = BatchSpec(run_id=plan.arms[1].run_id, start=0, stop=3)
    # 8 faults for the batch's first 8 requests: every call's first attempt fails, and each of 2 to 4 calls
    # fails both its attempts (which ones depends on the order the 6 concurrent calls reach the server).
    sim_server.script_faults(FRESH, *["500", "529"] * 4)
    with pytest.raises(evals.ProviderOutage, match="[234] of 6 calls .* still failed after their retries"):
        await evals.run_batch(behind_http, spec)
    rows = _results(behind_http, spec.run_id)
    assert all(r.error is None for r in rows), "the outage is not stored as failed cases"
    assert 2 <= len(rows) <= 4, "the calls that succeeded are kept"
    retried = await evals.run_batch(behind_http, spec)
    assert (retried.calls, retried.made, retried.errors) == (6, 6 - len(rows), 0)  # only the missing calls
    assert len(_results(behind_http, spec.run_id)) == 6
    assert _run(behind_http, spec.run_id).status == "running"


@pytest.mark.parametrize(("attempt", "status"), [(2, "running"), (3, "failed")])
async def test_a_batch_that_exhausts_its_retries_marks_its_run_failed(
    behind_http: Registry, sim_server, attempt: int, status: str
) -> None:
    plan = evals.plan_eval(behind_http, EvalRequest(deployment="support-triage", to_model=FRESH), "spent")
    spec = BatchSpec(run_id=plan.arms[1].run_id, start=0, stop=3)
    sim_server.faults(FRESH, error_500=1.0)
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=attempt, retry_policy=RetryPolicy(maximum_attempts=3))
    with pytest.raises(evals.ProviderOutage):
        await env.run(run_eval_batch, spec)
    run = _run(behind_http, spec.run_id)
    assert run.status == status, run.error
    if status == "failed":
        assert run.error.startswith("cases 0-3 failed on attempt 3: 6 of 6 calls") and run.finished_at


async def test_an_eval_waits_out_an_outage_and_stores_every_case_once(
    behind_http: Registry, sim_server, dev_env
) -> None:
    """3 in 10 requests answered 500 or 529, so about 1 call in 11 fails both its attempts: before, those were
    stored as errored cases of model_only (about 5 of 60; none with probability 0.4%)."""
    sim_server.settings(faults={FRESH: {"error_500": 0.15, "overloaded_529": 0.15}}, fault_seed=12)
    queue = f"eval-outage-{uuid.uuid4().hex[:8]}"
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        async with Worker(
            dev_env.client,
            task_queue=queue,
            workflows=EVAL_WORKFLOWS,
            activities=EVAL_ACTIVITIES,
            activity_executor=pool,
        ):
            report = await dev_env.client.execute_workflow(
                EvalWorkflow.run,
                EvalRequest(deployment="support-triage", to_model=FRESH, requested_by="test"),
                id=f"eval-outage-{uuid.uuid4().hex[:8]}",
                task_queue=queue,
            )
    arm = report.arms["model_only"]
    assert (arm.calls, arm.errors) == (60, 0), arm
    rows = _results(behind_http, arm.run_id)
    assert len(rows) == len({(r.case_id, r.epoch) for r in rows}) == 60
    answered = sim_server.answers()  # by request: the 60 (case, epoch) calls and the preflight's
    assert (len(answered), max(answered.values())) == (61, 1), "every call answered once, none twice"
