"""Build and run the worker. Sync activities run in a thread pool (registry I/O is blocking SQLAlchemy)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import signal

from temporalio.client import Client
from temporalio.worker import Worker

from activities import ALL_ACTIVITIES
from pairshift.settings import get_settings
from pairshift.temporal_client import connect
from workflows import ALL_WORKFLOWS

log = logging.getLogger("pairshift.worker")


def build_worker(client: Client, *, task_queue: str | None = None, max_workers: int = 32) -> Worker:
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=max_workers)
    return Worker(
        client,
        task_queue=task_queue or get_settings().task_queue,
        workflows=ALL_WORKFLOWS,
        activities=ALL_ACTIVITIES,
        activity_executor=executor,
        max_concurrent_activities=max_workers,
    )


async def run_worker(address: str | None = None, namespace: str | None = None) -> None:
    """Run until SIGINT/SIGTERM, then shut down gracefully (in-flight activities finish or are retried)."""
    client = await connect(address, namespace)
    worker = build_worker(client)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    settings = get_settings()
    print(f"worker polling task queue '{worker.task_queue}' on {address or settings.temporal_address}", flush=True)
    async with worker:
        await stop.wait()
    print("worker stopped", flush=True)
