"""Per-model task queues: a model's request limit holds across worker processes (PRODUCT §12).

Pure parts (queue names, batch budgets, worker rates) are checked table-driven. The end-to-end test runs
an eval on the Temporal dev server with the target model behind the fake provider server: one provider
worker in this process and one `pairshift worker --queues providers` process poll the model's queue, each
with its own process-wide limiter at the model's full rate, so only Temporal's task-queue rate limit can
keep the two together within the limit. Without limits the same eval stays on the main queue.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sim_fixtures import SimHandle
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer, Worker
from test_evals_support import write_config

from activities.evals import EVAL_ACTIVITIES
from pairshift.apply import apply_path
from pairshift.contracts.evals import EvalRequest
from pairshift.ratelimit import (
    MAX_BATCH_CALLS,
    MIN_BATCH_CALLS,
    BatchRoute,
    batch_route,
    calls_per_batch,
    model_queue_rates,
    model_task_queue,
    reset_limiters,
    route_batch_cases,
)
from pairshift.registry.models import Model
from pairshift.registry.store import Registry, forget_registry, open_registry
from pairshift.settings import get_settings
from worker.main import ModelQueueWorkers, build_model_queue_worker, parse_queue_kinds
from workflows.evals import EVAL_WORKFLOWS, EvalWorkflow

MODEL = "sim-fresh-2025-09"
RPS = 15  # the model's limit: 900 requests/min
CALLS_PER_BATCH = 6  # 3 cases x 2 epochs per batch activity
N_CASES, EPOCHS = 60, 2
PARTITIONS = 4  # task-queue partitions of the dev server; each banks one dispatch (the first burst)


# ---------------------------------------------------------------- pure: names, budgets, rates


def test_model_queue_is_named_after_the_main_queue_and_the_registry_row() -> None:
    assert (
        model_task_queue("pairshift", "claude-sonnet-4-20250514")
        == "pairshift-model-claude-sonnet-4-20250514"
    )
    assert (
        model_task_queue("eval-test-1", "m") == "eval-test-1-model-m"
    )  # two stacks never share a model queue


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        (None, None),
        ({}, None),
        ({"concurrency": 4}, None),  # no request rate: the main queue
        ({"tokens_per_minute": 100_000}, None),  # tokens/min alone is held per process only
        ({"requests_per_minute": 60}, MIN_BATCH_CALLS),  # 10 s of 1/s = 10, raised to the floor
        ({"requests_per_minute": 600}, 100),  # 10 s of 10/s
        ({"requests_per_minute": 60_000}, MAX_BATCH_CALLS),
        ({"requests_per_minute": 600, "calls_per_batch": 7}, 7),  # configured
    ],
)
def test_calls_per_batch(limits: dict | None, expected: int | None) -> None:
    assert calls_per_batch(limits) == expected
    route = batch_route("m", limits)
    assert (route.calls_per_batch if route else None) == expected


@pytest.mark.parametrize(
    ("per_batch", "epochs", "requested", "cases"),
    [
        (100, 3, None, 33),  # 99 calls <= 100
        (100, 1, None, 100),
        (100, 3, 10, 10),  # a smaller requested size is kept
        (100, 3, 500, 33),  # a bigger one is not
        (10, 20, None, 1),  # more epochs than the budget: one case per batch
    ],
)
def test_route_batch_cases_keeps_each_batch_within_its_call_budget(
    per_batch: int, epochs: int, requested: int | None, cases: int
) -> None:
    assert route_batch_cases(BatchRoute(model_id="m", calls_per_batch=per_batch), epochs, requested) == cases


def test_worker_rates_hold_the_fleet_to_the_request_limit() -> None:
    rates = model_queue_rates(
        "pairshift",
        [
            ("fast", {"requests_per_minute": 600}),
            ("free", {}),
            ("tiny", {"requests_per_minute": 120, "calls_per_batch": 4}),
        ],
    )
    assert rates == pytest.approx({"pairshift-model-fast": 10 / 100, "pairshift-model-tiny": 2 / 4})


def test_queue_kinds_option() -> None:
    assert parse_queue_kinds("main,providers") == ("main", "providers")
    assert parse_queue_kinds(" providers ") == ("providers",)
    for bad in ("", "main,gpu", "provider"):
        with pytest.raises(ValueError, match="--queues takes a comma-separated subset of main,providers"):
            parse_queue_kinds(bad)


# ---------------------------------------------------------------- end to end on the dev server


@pytest.fixture
def served_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sim_server: SimHandle
) -> Iterator[Registry]:
    """The 60-case example with MODEL behind the fake server, set as the process registry; no limits yet."""
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    monkeypatch.setenv("PAIRSHIFT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PAIRSHIFT_DATABASE_URL", url)
    get_settings.cache_clear()
    reset_limiters()
    registry = open_registry(url)
    behind = {"provider": "anthropic", "base_url": sim_server.base_url}
    apply_path(
        registry, write_config(tmp_path / "config", n_cases=N_CASES, model_overrides={MODEL: behind}), by="t"
    )
    yield registry
    forget_registry(url)
    get_settings.cache_clear()


def set_limits(registry: Registry, limits: dict) -> None:
    # calls_per_batch is not in the config schema (yet); the registry row is what workers and plans read.
    with registry.session() as s:
        row = s.get(Model, MODEL)
        assert row is not None
        row.limits = limits
        s.add(row)


@pytest.fixture
async def main_worker(dev_env, served_registry: Registry) -> AsyncIterator[tuple[Client, str]]:
    queue = f"pq-{uuid.uuid4().hex[:8]}"
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        async with Worker(
            dev_env.client,
            task_queue=queue,
            workflows=EVAL_WORKFLOWS,
            activities=EVAL_ACTIVITIES,
            activity_executor=pool,
        ):
            yield dev_env.client, queue


async def run_eval(client: Client, queue: str, no_cache: bool = True) -> tuple[WorkflowHistory, dict]:
    req = EvalRequest(deployment="support-triage", to_model=MODEL, requested_by="test", no_cache=no_cache)
    handle = await client.start_workflow(
        EvalWorkflow.run, req, id=f"pq-{uuid.uuid4().hex[:8]}", task_queue=queue
    )
    report = await handle.result()
    return await handle.fetch_history(), report.model_dump(mode="json")


def batch_queues(history: WorkflowHistory) -> list[str]:
    return [
        e.activity_task_scheduled_event_attributes.task_queue.name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == "run_eval_batch"
    ]


def model_queue_pollers(history: WorkflowHistory, model_queue: str) -> set[str]:
    """Identities of the workers that started the batches scheduled on ``model_queue``."""
    scheduled = {
        e.event_id
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.task_queue.name == model_queue
    }
    return {
        e.activity_task_started_event_attributes.identity
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
        and e.activity_task_started_event_attributes.scheduled_event_id in scheduled
    }


async def test_eval_without_limits_runs_every_batch_on_the_main_queue(main_worker) -> None:
    client, queue = main_worker
    history, report = await run_eval(client, queue)
    assert report["arms"]["model_only"]["calls"] == N_CASES * EPOCHS
    assert set(batch_queues(history)) == {queue}


async def test_a_fully_cached_arm_of_a_rate_limited_model_runs_on_the_main_queue(
    main_worker, served_registry: Registry, sim_server: SimHandle
) -> None:
    """A re-run whose rate-limited arm the response cache answers in full makes no call, so planning gives it
    no route: its batches run on the main queue, not paced by the model queue's rate (nor waiting for a
    model-queue worker: none polls the model's queue during the re-run)."""
    client, queue = main_worker
    # A rate 10x the module's: the first run (which fills the cache) is paced by it, ~1 s instead of 8.
    limits = {"requests_per_minute": RPS * 600, "calls_per_batch": CALLS_PER_BATCH, "concurrency": 4}
    set_limits(served_registry, limits)
    model_queue = model_task_queue(queue, MODEL)
    other = await Client.connect(
        client.service_client.config.target_host,
        namespace=client.namespace,
        data_converter=pydantic_data_converter,
    )
    async with build_model_queue_worker(
        other, model_queue, model_queue_rates(queue, [(MODEL, limits)])[model_queue]
    ):
        first, _ = await run_eval(client, queue)
    assert set(batch_queues(first)) == {queue, model_queue}
    requests = sim_server.stats(MODEL)["requests"]

    async with asyncio.timeout(60):  # before: waits for a model-queue worker forever
        again, report = await run_eval(client, queue, no_cache=False)
    assert set(batch_queues(again)) == {queue}
    joint = report["arms"]["model_only"]
    assert joint["cached_calls"] == joint["calls"] == N_CASES * EPOCHS
    assert sim_server.stats(MODEL)["requests"] == requests + 1  # the preflight's call alone
    await Replayer(workflows=EVAL_WORKFLOWS, data_converter=pydantic_data_converter).replay_workflow(again)


async def test_model_queue_workers_follow_the_registry_limits(dev_env, served_registry: Registry) -> None:
    workers = ModelQueueWorkers(dev_env.client, main_queue=f"mq-{uuid.uuid4().hex[:8]}")
    model_queue = model_task_queue(workers.main_queue, MODEL)
    try:
        await workers.sync()
        assert workers.running == {}  # no model has a request rate: nothing but the main queue
        set_limits(served_registry, {"requests_per_minute": 600})
        await workers.sync()  # a model that gained limits is served without a restart
        rate, first, _ = workers.running[model_queue]
        assert rate == pytest.approx(10 / 100)
        await workers.sync()
        assert workers.running[model_queue][1] is first  # unchanged limits: the same worker keeps polling
        set_limits(served_registry, {"requests_per_minute": 2400})
        await workers.sync()  # a changed limit restarts the queue's worker at the new rate
        rate, second, _ = workers.running[model_queue]
        assert rate == pytest.approx(40 / 200) and second is not first
        set_limits(served_registry, {"requests_per_minute": 2400, "calls_per_batch": 50})
        await workers.sync()
        assert workers.running[model_queue][0] == pytest.approx(40 / 50)
    finally:
        await workers.shutdown()
    assert workers.running == {}


async def start_provider_process(
    client: Client, registry_url: str, queue: str, tmp: Path
) -> asyncio.subprocess.Process:
    """`pairshift worker --queues providers` for main queue ``queue``; returns once it polls MODEL's queue."""
    env = {
        **os.environ,
        "PAIRSHIFT_TEMPORAL_ADDRESS": client.service_client.config.target_host,
        "PAIRSHIFT_NAMESPACE": client.namespace,
        "PAIRSHIFT_TASK_QUEUE": queue,
        "PAIRSHIFT_DATABASE_URL": registry_url,
        "PAIRSHIFT_HOME": str(tmp / "worker-home"),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from pairshift.cli import main; main()",
        "worker",
        "--queues",
        "providers",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    seen: list[str] = []
    async with asyncio.timeout(30):
        while f"'{model_task_queue(queue, MODEL)}'" not in (line := (await proc.stdout.readline()).decode()):
            assert line, f"the provider worker exited: {''.join(seen)}"
            seen.append(line)
    return proc


async def sample_requests(sim: SimHandle, into: list[tuple[float, int]], done: asyncio.Event) -> None:
    """The fake server's request count for MODEL every 50 ms: the call rate as the provider sees it."""
    while not done.is_set():
        stats = await asyncio.to_thread(sim.stats, MODEL)
        into.append((time.monotonic(), int(stats.get("requests", 0))))
        await asyncio.sleep(0.05)  # a sampling period, not a wait for a condition


@pytest.mark.e2e
async def test_rate_limited_model_holds_its_limit_across_two_worker_processes(
    main_worker, served_registry: Registry, sim_server: SimHandle, tmp_path: Path
) -> None:
    client, queue = main_worker
    limits = {"requests_per_minute": RPS * 60, "calls_per_batch": CALLS_PER_BATCH, "concurrency": 4}
    set_limits(served_registry, limits)
    model_queue = model_task_queue(queue, MODEL)
    rate = model_queue_rates(queue, [(MODEL, limits)])[model_queue]
    proc = await start_provider_process(client, str(served_registry.engine.url), queue, tmp_path)
    samples: list[tuple[float, int]] = []
    done = asyncio.Event()
    try:
        # A second client: the SDK allows one worker per queue per client, and this one stands for a process.
        other = await Client.connect(
            client.service_client.config.target_host,
            namespace=client.namespace,
            data_converter=pydantic_data_converter,
        )
        async with build_model_queue_worker(other, model_queue, rate):
            sampler = asyncio.create_task(sample_requests(sim_server, samples, done))
            history, report = await run_eval(client, queue)
            done.set()
            await sampler
    finally:
        proc.terminate()
        await proc.wait()

    calls = N_CASES * EPOCHS
    assert report["arms"]["model_only"]["calls"] == calls and report["arms"]["model_only"]["errors"] == 0
    queues = batch_queues(history)
    assert queues.count(model_queue) == calls // CALLS_PER_BATCH  # every model-only batch, 10 calls each
    assert queues.count(queue) >= 1  # the baseline (in-process sim, no limits) stayed on the main queue
    assert len(model_queue_pollers(history, model_queue)) == 2  # both processes (pid@host) ran batches

    stats = sim_server.stats(MODEL)
    first = next(t for t, n in samples if n > 0)
    last = next(t for t, n in samples if n >= stats["requests"])
    burst = PARTITIONS * CALLS_PER_BATCH  # one banked dispatch per partition at the start
    observed = (stats["requests"] - burst) / (last - first)
    print(
        f"\n{stats['requests']} requests in {last - first:.2f}s: {observed:.1f}/s after the first burst "
        f"(limit {RPS}/s)"
    )
    # Two processes each allowed the full rate send about twice the limit (measured: 28-35/s at a limit of
    # 20/s, as fast as two shared cores go); the fleet held by the task-queue rate stays at or under it.
    assert observed <= RPS * 1.2

    # The routed path replays deterministically.
    await Replayer(workflows=EVAL_WORKFLOWS, data_converter=pydantic_data_converter).replay_workflow(history)
