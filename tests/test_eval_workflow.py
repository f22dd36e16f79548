"""EvalWorkflow end to end on the Temporal dev server with the in-process sim provider (30 cases, 2
epochs)."""

from __future__ import annotations

import concurrent.futures
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlmodel import select
from temporalio.client import Client, WorkflowFailureError
from temporalio.worker import Worker
from test_evals_support import eval_registry  # noqa: F401 - fixture

from activities.evals import EVAL_ACTIVITIES
from pairshift.contracts.evals import EvalReport, EvalRequest
from pairshift.registry.models import EvalRun, Model
from pairshift.registry.store import Registry
from workflows.evals import EVAL_WORKFLOWS, EvalWorkflow

ARM_KEYS = {
    "pair",
    "run_id",
    "pass_rate",
    "ci",
    "mean_score",
    "calls",
    "errors",
    "cached_calls",
    "latency_p50_ms",
    "latency_p95_ms",
    "cost_usd",
}
TOP_KEYS = {
    "deployment",
    "baseline_pair",
    "target_pair",
    "dataset",
    "epochs",
    "arms",
    "effects",
    "flipped",
    "gate",
}


@pytest.fixture
async def worker(dev_env, eval_registry) -> AsyncIterator[tuple[Client, str]]:  # noqa: F811
    queue = f"eval-test-{uuid.uuid4().hex[:8]}"
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        async with Worker(
            dev_env.client,
            task_queue=queue,
            workflows=EVAL_WORKFLOWS,
            activities=EVAL_ACTIVITIES,
            activity_executor=pool,
        ):
            yield dev_env.client, queue


async def run_eval(client: Client, queue: str, **request) -> EvalReport:
    req = EvalRequest(deployment="support-triage", requested_by="test", **request)
    return await client.execute_workflow(
        EvalWorkflow.run, req, id=f"eval-test-{uuid.uuid4().hex[:8]}", task_queue=queue
    )


async def test_four_arm_eval_has_the_json_keys_of_product_11(worker, eval_registry: Registry) -> None:  # noqa: F811
    client, queue = worker
    report = await run_eval(client, queue, to_model="sim-fresh-2025-09", to_prompt="support-triage@2")
    data = report.model_dump(mode="json")
    assert TOP_KEYS <= set(data)
    assert set(data["arms"]) == {"baseline", "prompt_only", "model_only", "joint"}
    assert len({a["run_id"] for a in data["arms"].values()}) == 4
    for arm in data["arms"].values():
        assert ARM_KEYS <= set(arm)
        assert arm["calls"] == 60 and arm["errors"] == 0  # 30 cases x 2 epochs (demo policy)
        assert arm["ci"][0] <= arm["pass_rate"] <= arm["ci"][1]
    assert set(data["effects"]) == {"prompt", "model", "interaction", "joint"}
    assert all(set(e) == {"estimate", "ci", "p_value"} for e in data["effects"].values())
    assert data["dataset"]["cases"] == 30 and data["epochs"] == 2
    assert data["gate"]["decision"] in {"pass", "fail", "inconclusive"} and data["gate"]["reasons"]
    assert all({"case", "from_arm", "to_arm", "direction"} <= set(f) for f in data["flipped"])
    # The sim's fresh snapshot wraps JSON in prose under prompt v1: the model effect is a clear regression.
    assert data["effects"]["model"]["ci"][1] < 0
    with eval_registry.session() as s:
        for arm in data["arms"].values():
            assert s.get(EvalRun, arm["run_id"]).status == "done"


async def test_model_only_eval_reuses_baseline_and_cache_makes_it_free(
    worker, eval_registry: Registry
) -> None:  # noqa: F811
    client, queue = worker
    first = await run_eval(client, queue, to_model="sim-fresh-2025-09")
    assert set(first.arms) == {"baseline", "model_only", "joint"}
    assert first.arms["joint"] == first.arms["model_only"]
    assert set(first.effects) == {"model", "joint"}
    assert first.effects["joint"] == first.effects["model"]
    assert not first.arms["baseline"].reused and first.arms["model_only"].cached_calls == 0

    second = await run_eval(client, queue, to_model="sim-fresh-2025-09")
    assert second.arms["baseline"].reused
    assert second.arms["baseline"].run_id == first.arms["baseline"].run_id
    fresh = second.arms["model_only"]
    assert fresh.run_id != first.arms["model_only"].run_id
    assert fresh.cached_calls == fresh.calls == 60
    assert fresh.pass_rate == first.arms["model_only"].pass_rate

    uncached = await run_eval(client, queue, to_model="sim-fresh-2025-09", no_cache=True)
    assert not uncached.arms["baseline"].reused and uncached.arms["model_only"].cached_calls == 0


async def test_retired_model_fails_the_eval_at_once_naming_it(worker, eval_registry: Registry) -> None:  # noqa: F811
    client, queue = worker
    with eval_registry.session() as s:  # in the registry, but the provider no longer serves it
        s.add(Model(id="sim-gone-2023-01", provider="sim"))
    with pytest.raises(WorkflowFailureError) as failure:
        await run_eval(client, queue, to_model="sim-gone-2023-01")
    cause = failure.value.cause  # refused in the preflight, before any batch
    assert cause.type == "PreflightRefused" and "sim-gone-2023-01" in cause.message
    assert "not found" in cause.message
    with eval_registry.session() as s:
        failed = s.exec(select(EvalRun).where(EvalRun.model == "sim-gone-2023-01")).one()
        assert failed.status == "failed" and "sim-gone-2023-01" in failed.error


async def test_unknown_names_fail_as_bad_input(worker) -> None:
    client, queue = worker
    with pytest.raises(WorkflowFailureError) as failure:
        await run_eval(client, queue, to_model="no-such-model")
    assert failure.value.cause.type == "EvalInputError"
    assert failure.value.cause.message.startswith("unknown model 'no-such-model' (see `pairshift get models`")


async def test_progress_query_counts_every_call(worker) -> None:
    client, queue = worker
    req = EvalRequest(deployment="support-triage", to_model="sim-fresh-2025-09", requested_by="test")
    handle = await client.start_workflow(
        EvalWorkflow.run, req, id=f"eval-test-{uuid.uuid4().hex[:8]}", task_queue=queue
    )
    await handle.result()
    progress = await handle.query(EvalWorkflow.progress)
    assert progress.phase == "done"
    assert {a: (p.done, p.total) for a, p in progress.arms.items()} == {
        "baseline": (60, 60),
        "model_only": (60, 60),
    }
