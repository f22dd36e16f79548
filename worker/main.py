"""Build and run the worker: the main task queue, and the task queues of rate-limited models (PRODUCT §12).

The main queue (``pairshift``) runs every workflow and activity. A model whose limits set
``requests_per_minute`` also has its own queue, ``pairshift-model-<model id>``, where EvalWorkflow sends
that model's eval batches (see :mod:`pairshift.ratelimit`); every worker polling it sets Temporal's
task-queue rate limit, so the fleet stays within the model's limit however many workers run. One process
polls all of them by default (``pairshift worker``); ``--queues providers`` runs a worker for the model
queues only, to add capacity for provider calls without adding workflow workers.

Which model queues exist is read from the registry at start and again every ``refresh_s`` seconds, so a
model that gains limits through ``pairshift apply`` is served without a restart, and a changed limit
restarts that queue's worker with the new rate (its in-flight batches are retried; a batch never repeats
a stored call). Every worker of a queue must use the same rate: the server keeps the last one a poller sent.
Sync activities run in a thread pool (registry I/O is blocking SQLAlchemy).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import signal
from collections.abc import Collection
from datetime import timedelta
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import select
from temporalio.client import Client
from temporalio.worker import Worker

from activities import ALL_ACTIVITIES
from activities.evals import run_eval_batch
from pairshift.ratelimit import model_queue_rates
from pairshift.registry import open_registry
from pairshift.registry.models import Model
from pairshift.settings import get_settings
from pairshift.telemetry.metrics import serve_metrics
from pairshift.telemetry.tracing import setup_tracing, shutdown_tracing
from pairshift.temporal_client import connect
from workflows import ALL_WORKFLOWS

log = logging.getLogger("pairshift.worker")

QUEUE_KINDS = ("main", "providers")
REFRESH_S = 30.0
MODEL_QUEUE_ACTIVITIES = (
    4  # batches per process per model queue; each paces its calls with the process limiter
)


def build_worker(client: Client, *, task_queue: str | None = None, max_workers: int = 32) -> Worker:
    """The worker of the main task queue: every workflow and activity."""
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=max_workers)
    return Worker(
        client,
        task_queue=task_queue or get_settings().task_queue,
        workflows=ALL_WORKFLOWS,
        activities=ALL_ACTIVITIES,
        activity_executor=executor,
        max_concurrent_activities=max_workers,
        # After a crash the server waits this long for the dead worker's sticky queue before handing the
        # workflow to another worker; the default 10 s would stall `migrate status` for as long.
        sticky_queue_schedule_to_start_timeout=timedelta(seconds=3),
    )


def build_model_queue_worker(client: Client, task_queue: str, activities_per_second: float) -> Worker:
    """A worker of one rate-limited model's queue: eval batches only, at the fleet-wide rate."""
    return Worker(
        client,
        task_queue=task_queue,
        activities=[run_eval_batch],
        max_concurrent_activities=MODEL_QUEUE_ACTIVITIES,
        max_task_queue_activities_per_second=activities_per_second,
    )


def registry_queue_rates(main_queue: str) -> dict[str, float]:
    """``{queue: activities/s}`` of every registry model with a request rate (blocking registry read)."""
    with open_registry().session() as s:
        return model_queue_rates(main_queue, [(m.id, m.limits) for m in s.exec(select(Model)).all()])


class ModelQueueWorkers:
    """The running workers of the model queues, kept in line with the registry by :meth:`sync`."""

    def __init__(self, client: Client, main_queue: str) -> None:
        self.client, self.main_queue = client, main_queue
        self.running: dict[str, tuple[float, Worker, asyncio.Task[None]]] = {}

    async def sync(self) -> None:
        """Start a worker for each new queue, restart one whose rate changed or that died; keep the others."""
        try:
            wanted = await asyncio.to_thread(registry_queue_rates, self.main_queue)
        except (
            SQLAlchemyError,
            OSError,
        ) as exc:  # the registry briefly unreachable: the next refresh retries
            log.warning("cannot read model limits from the registry: %s", exc)
            return
        for queue, rate in sorted(wanted.items()):
            current = self.running.get(queue)
            if current is not None and current[0] == rate and not current[2].done():
                continue
            if current is not None:
                if current[2].done():
                    log.warning("the worker of task queue %s stopped; starting it again", queue)
                await self._stop(queue)
            worker = build_model_queue_worker(self.client, queue, rate)
            self.running[queue] = (rate, worker, asyncio.create_task(worker.run()))
            print(f"worker polling task queue '{queue}' at {rate:.4g} batch activities/s", flush=True)

    async def _stop(self, queue: str) -> None:
        _, worker, task = self.running.pop(queue)
        await worker.shutdown()
        await asyncio.gather(task, return_exceptions=True)

    async def keep_in_sync(self, stop: asyncio.Event, refresh_s: float) -> None:
        while not stop.is_set():
            await self.sync()
            try:
                await asyncio.wait_for(stop.wait(), timeout=refresh_s)
            except TimeoutError:
                pass

    async def shutdown(self) -> None:
        for queue in list(self.running):
            await self._stop(queue)


def temporal_runtime(address: str) -> Any:
    """A Temporal runtime whose SDK metrics (task latencies, slots, polls) are served at ``address``."""
    from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=address)))


def parse_queue_kinds(value: str) -> tuple[str, ...]:
    """``main,providers`` -> ("main", "providers"); an unknown or empty list is a ValueError."""
    kinds = tuple(k.strip() for k in value.split(",") if k.strip())
    unknown = sorted(set(kinds) - set(QUEUE_KINDS))
    if unknown or not kinds:
        raise ValueError(f"--queues takes a comma-separated subset of {','.join(QUEUE_KINDS)}, got {value!r}")
    return kinds


async def run_worker(
    address: str | None = None,
    namespace: str | None = None,
    *,
    queues: Collection[str] = QUEUE_KINDS,
    refresh_s: float = REFRESH_S,
) -> None:
    """Run until SIGINT/SIGTERM, then shut down gracefully (in-flight activities finish or are retried).

    Observability (issue 19): traces export over OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set; Prometheus
    ``/metrics`` is served on ``PAIRSHIFT_WORKER_METRICS_ADDRESS`` and the Temporal SDK's own metrics on
    ``PAIRSHIFT_TEMPORAL_METRICS_ADDRESS`` when they are set."""
    settings = get_settings()
    setup_tracing("pairshift-worker")
    metrics_server = None
    if settings.worker_metrics_address:
        metrics_server = serve_metrics(settings.worker_metrics_address)
        print(f"worker metrics on http://{settings.worker_metrics_address}/metrics", flush=True)
    runtime = (
        temporal_runtime(settings.temporal_metrics_address) if settings.temporal_metrics_address else None
    )
    client = await connect(address, namespace, runtime=runtime)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    where = address or settings.temporal_address
    models = ModelQueueWorkers(client, settings.task_queue) if "providers" in queues else None
    main = build_worker(client) if "main" in queues else None
    tasks = [asyncio.create_task(stop.wait())]
    if main is not None:
        tasks.append(asyncio.create_task(main.run()))
        print(f"worker polling task queue '{main.task_queue}' on {where}", flush=True)
    if models is not None:
        print(f"worker polling the task queues of rate-limited models on {where}", flush=True)
        tasks.append(asyncio.create_task(models.keep_in_sync(stop, refresh_s)))
    try:
        # Whichever ends first -- a signal, or the main worker failing (e.g. a fatal poll error) -- stops all.
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.set()
        if models is not None:
            await models.shutdown()
        if main is not None:
            await main.shutdown()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        if metrics_server is not None:
            metrics_server.shutdown()
        shutdown_tracing()
    failure = next((r for r in results if isinstance(r, BaseException)), None)
    if failure is not None:
        raise failure
    print("worker stopped", flush=True)
