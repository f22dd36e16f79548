"""eval.mode batch (issue 18): a 2x2 eval through the providers' batch APIs against the fake server.

Both models sit behind the fake server (Anthropic, then OpenAI wire); the same eval runs online and in batch
mode with the cache off, so every arm answers the same requests twice: the per-arm results must be equal,
the batch eval's cost half the online one's (and its online-equivalent cost equal to it), and the requests
must have gone through batches (the server counts them), not through the live API.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import json
import os
import signal
import uuid
from pathlib import Path

import pytest
from sim_fixtures import SimHandle, sim_server, sim_server_session  # noqa: F401 - fixtures
from sqlmodel import select
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer, Worker
from test_evals_support import eval_registry, write_config  # noqa: F401 - fixture

from activities.evals import EVAL_ACTIVITIES
from pairshift.apply import apply_path
from pairshift.contracts.evals import EvalReport, EvalRequest, EvalTuning
from pairshift.policy import EvalPolicy
from pairshift.providers import ProviderName
from pairshift.registry.models import EvalResult, ProviderBatch
from pairshift.registry.store import Registry
from workflows.evals import BATCH_MODE_PATCH, EVAL_WORKFLOWS, EvalWorkflow

HISTORIES = Path(__file__).resolve().parent / "histories"

N_CASES, EPOCHS = 8, 2
FAST_POLLS = EvalTuning(poll_first_s=0.05, poll_max_s=0.2)
SAME = {"pass_rate", "ci", "mean_score", "score_ci", "calls", "errors", "by_tag", "mcnemar_p", "pair"}
ARMS = ("baseline", "prompt_only", "model_only", "joint")


def serve_models(registry: Registry, sim: SimHandle, tmp_path: Path, provider: ProviderName) -> None:
    base = sim.base_url if provider == "anthropic" else sim.openai_base_url
    served = {"provider": provider, "base_url": base}
    overrides = {"sim-classic-2024-06": served, "sim-fresh-2025-09": served}
    apply_path(
        registry, write_config(tmp_path / provider, n_cases=N_CASES, model_overrides=overrides), by="test"
    )


async def run(client: Client, queue: str, mode: str, **extra: object) -> EvalReport:
    return await (await start(client, queue, mode, **extra)).result()


async def start(client: Client, queue: str, mode: str, **extra: object) -> WorkflowHandle:
    request = EvalRequest(
        deployment="support-triage",
        to_model="sim-fresh-2025-09",
        to_prompt="support-triage@2",
        requested_by="test",
        no_cache=True,
        eval_policy=EvalPolicy(epochs=EPOCHS, mode=mode),  # type: ignore[arg-type]
        tuning=extra.pop("tuning", FAST_POLLS),
        **extra,  # type: ignore[arg-type]
    )
    return await client.start_workflow(
        EvalWorkflow.run, request, id=f"eval-{mode}-{uuid.uuid4().hex[:8]}", task_queue=queue
    )


def patch_ids(history: dict) -> set[str]:
    """The workflow.patched ids a history recorded (marker details are base64 JSON payloads)."""
    ids = set()
    for event in history["events"]:
        for detail in event.get("markerRecordedEventAttributes", {}).get("details", {}).values():
            ids |= {json.loads(base64.b64decode(p["data"]))["id"] for p in detail.get("payloads", [])}
    return ids


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
async def test_batch_eval_equals_online_at_half_the_price(
    dev_env,
    eval_registry: Registry,  # noqa: F811
    sim_server: SimHandle,  # noqa: F811
    tmp_path: Path,
    provider: ProviderName,
) -> None:
    serve_models(eval_registry, sim_server, tmp_path, provider)
    sim_server.settings(batch_delay_ms=300)
    queue = f"eval-batch-{uuid.uuid4().hex[:8]}"
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        async with Worker(
            dev_env.client,
            task_queue=queue,
            workflows=EVAL_WORKFLOWS,
            activities=EVAL_ACTIVITIES,
            activity_executor=pool,
        ):
            online = await run(dev_env.client, queue, "online")
            live_before = sim_server.stats()["total"].get("requests", 0)
            handle = await start(dev_env.client, queue, "batch")
            batch = await handle.result()
    # The batch path is versioned, and its history replays on today's code.
    history = await handle.fetch_history()
    assert BATCH_MODE_PATCH in patch_ids(history.to_json_dict())
    replayed = await Replayer(
        workflows=EVAL_WORKFLOWS, data_converter=pydantic_data_converter
    ).replay_workflow(history)
    assert replayed.replay_failure is None
    if os.environ.get("PAIRSHIFT_RECORD_BATCH_HISTORY") and provider == "anthropic":  # refresh the kept copy
        (HISTORIES / "eval_batch_mode.json").write_text(history.to_json())
    calls = N_CASES * EPOCHS
    for arm in ARMS:
        a, b = online.arms[arm], batch.arms[arm]
        assert b.model_dump(include=SAME) == a.model_dump(include=SAME), arm
        assert a.mode == "online" and b.mode == "batch", arm
        assert b.cost_usd == pytest.approx(a.cost_usd / 2, rel=1e-9) and b.cost_usd > 0, arm
        assert b.online_cost_usd == pytest.approx(a.cost_usd, rel=1e-9), arm
        assert b.batch == {
            "batches": 1,
            "requests": calls,
            "succeeded": calls,
            "errored": 0,
            "expired": 0,
            "canceled": 0,
            "retried_in_batch": 0,
            "retried_online": 0,
        }, arm
    assert online.cost is not None and batch.cost is not None
    assert batch.cost.total_usd == pytest.approx(online.cost.total_usd / 2, rel=1e-9)
    assert batch.cost.online_equivalent_usd == pytest.approx(online.cost.total_usd, rel=1e-9)
    assert sorted(batch.cost.batch_arms) == sorted(ARMS)

    # The same verdicts but latency: online latencies are wall-clock times over HTTP (noise can make their
    # ratio pass, fail or stay inconclusive), and a batch measures none, so its latency is not judged.
    def judged(reasons: list[str]) -> list[str]:
        return [r for r in reasons if not r.startswith("latency p95")]

    assert judged(batch.gate.reasons) == judged(online.gate.reasons)
    assert any(
        r.startswith("latency p95: not judged: the baseline and joint arm(s)") for r in batch.gate.reasons
    )
    # The batch eval's answers came from batches: the live API saw only its preflight (one per arm's pair).
    stats = sim_server.stats()["total"]
    assert stats["batch_requests"] == 4 * calls
    assert stats.get("requests", 0) - live_before <= 4
    with eval_registry.session() as s:
        rows = s.exec(select(EvalResult).where(EvalResult.run_id == batch.arms["joint"].run_id)).all()
        assert len(rows) == calls and all(r.via_batch for r in rows)
        batches = s.exec(select(ProviderBatch)).all()
        assert len(batches) == 4 and all(b.provider_batch_id and b.status == "collected" for b in batches)


async def test_failed_lines_retry_in_a_batch_then_online(
    dev_env,
    eval_registry: Registry,  # noqa: F811
    sim_server: SimHandle,  # noqa: F811
    tmp_path: Path,
) -> None:
    serve_models(eval_registry, sim_server, tmp_path, "openai")
    queue = f"eval-batch-{uuid.uuid4().hex[:8]}"
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        async with Worker(
            dev_env.client,
            task_queue=queue,
            workflows=EVAL_WORKFLOWS,
            activities=EVAL_ACTIVITIES,
            activity_executor=pool,
        ):
            clean = await run(dev_env.client, queue, "online")
            sim_server.settings(batch_failure_rate=0.3, batch_expire_rate=0.2, fault_seed=5)
            batch = await run(dev_env.client, queue, "batch")
    calls = N_CASES * EPOCHS
    for arm in ARMS:
        a, b = clean.arms[arm], batch.arms[arm]
        assert b.model_dump(include=SAME) == a.model_dump(include=SAME), arm
        counts = b.batch
        assert counts is not None
        print(arm, counts)
        # Round 0 sent every call, round 1 what failed in it; what failed twice ran online: each once.
        assert counts["batches"] == 2 and counts["requests"] == calls + counts["retried_in_batch"], arm
        assert counts["errored"] + counts["expired"] == counts["requests"] - counts["succeeded"] > 0, arm
        assert counts["succeeded"] + counts["retried_online"] == calls, arm
    with eval_registry.session() as s:
        rows = s.exec(select(EvalResult.run_id, EvalResult.case_id, EvalResult.epoch)).all()
        assert len(rows) == len(set(rows))


@pytest.mark.e2e  # a worker process, SIGKILLed while the batches are in flight
async def test_killed_worker_polls_the_same_batches(
    dev_env,
    eval_registry: Registry,  # noqa: F811
    sim_server: SimHandle,  # noqa: F811
    tmp_path: Path,
) -> None:
    from test_eval_workflow_resume import _start_worker

    serve_models(eval_registry, sim_server, tmp_path, "anthropic")
    # The batches are still running when the worker dies, and a status request hangs: the worker is killed
    # while a poll activity is in flight. Its retry must come after the heartbeat timeout (2 s here), not the
    # activity's 10-minute start-to-close timeout (CI timed out twice when a kill landed inside a poll).
    sim_server.settings(batch_delay_ms=4000, batch_status_delay_ms=600_000)
    queue = f"eval-batch-kill-{uuid.uuid4().hex[:8]}"
    proc = _start_worker(queue, dev_env.client.service_client.config.target_host)
    try:
        tuning = EvalTuning(poll_first_s=0.3, poll_max_s=0.6, heartbeat_timeout_s=2)
        handle = await start(dev_env.client, queue, "batch", tuning=tuning)

        def submitted() -> int:
            with eval_registry.session() as s:
                rows = s.exec(select(ProviderBatch)).all()
                return sum(1 for r in rows if r.provider_batch_id)

        def polled() -> int:
            return sum(b["polls"] for b in sim_server.http.get("/_admin/batches").json()["batches"])

        while submitted() < 4 or polled() < 1:  # every batch id stored, a poll in flight: kill now
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else "worker died"
            await asyncio.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        sim_server.settings(batch_status_delay_ms=0)
        in_flight = sim_server.http.get("/_admin/batches").json()["batches"]
        assert len(in_flight) == 4
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            async with Worker(
                dev_env.client,
                task_queue=queue,
                workflows=EVAL_WORKFLOWS,
                activities=EVAL_ACTIVITIES,
                activity_executor=pool,
            ):
                report = await handle.result()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    created = sim_server.http.get("/_admin/batches").json()["batches"]
    assert [b["id"] for b in created] == [b["id"] for b in in_flight], "a batch was submitted again"
    sent = [cid for b in created for cid in b["custom_ids"]]
    assert len(sent) == len(set(sent)) == 4 * N_CASES * EPOCHS
    with eval_registry.session() as s:
        for arm in ARMS:
            keys = s.exec(
                select(EvalResult.case_id, EvalResult.epoch).where(
                    EvalResult.run_id == report.arms[arm].run_id
                )
            ).all()
            assert len(keys) == len(set(keys)) == N_CASES * EPOCHS, arm
        stored_ids = {b.provider_batch_id for b in s.exec(select(ProviderBatch)).all()}
    assert stored_ids == {b["id"] for b in created}
    assert all(report.arms[arm].batch["succeeded"] == N_CASES * EPOCHS for arm in ARMS)  # type: ignore[index]


@pytest.mark.parametrize(
    "provider, mode, min_calls, expected",
    [
        ("anthropic", "auto", N_CASES * EPOCHS - 1, "batch"),  # more calls than batch_min_calls
        ("anthropic", "auto", N_CASES * EPOCHS, None),  # not more: online
        ("openai", "batch", 100, "batch"),
        ("sim", "batch", 100, None),  # no batch API: online, with a warning
        ("anthropic", "online", 1, None),
    ],
)
def test_plan_chooses_each_arms_mode(
    eval_registry: Registry,  # noqa: F811
    sim_server: SimHandle,  # noqa: F811
    tmp_path: Path,
    provider: ProviderName,
    mode: str,
    min_calls: int,
    expected: str | None,
) -> None:
    from pairshift import evals

    if provider != "sim":
        serve_models(eval_registry, sim_server, tmp_path, provider)
    else:
        apply_path(eval_registry, write_config(tmp_path / "sim", n_cases=N_CASES), by="test")
    request = EvalRequest(
        deployment="support-triage",
        to_model="sim-fresh-2025-09",
        to_prompt="support-triage@2",
        eval_policy=EvalPolicy(epochs=EPOCHS, mode=mode, batch_min_calls=min_calls),  # type: ignore[arg-type]
        no_cache=True,
    )
    plan = evals.plan_eval(eval_registry, request, uuid.uuid4().hex)
    assert plan.modes == ({a: expected for a in ARMS} if expected else {})
    warned = [w for w in plan.warnings if "has no batch API" in w]
    assert len(warned) == (4 if provider == "sim" else 0)
