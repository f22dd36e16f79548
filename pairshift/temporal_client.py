"""Connecting to Temporal the one way every client, worker and replayer of pairshift does it."""

from __future__ import annotations

from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from pairshift.settings import get_settings
from pairshift.telemetry.tracing import temporal_interceptors


async def connect(address: str | None = None, namespace: str | None = None, *, runtime: Any = None) -> Client:
    """A client with the pydantic data converter (workflow inputs are pydantic models).

    When tracing is active (:mod:`pairshift.telemetry.tracing`) the client carries Temporal's tracing
    interceptor, which a worker built on it inherits. ``runtime`` is a ``temporalio.runtime.Runtime``
    (the worker's, exporting the SDK's own metrics to Prometheus)."""
    settings = get_settings()
    return await Client.connect(
        address or settings.temporal_address,
        namespace=namespace or settings.namespace,
        data_converter=pydantic_data_converter,
        interceptors=temporal_interceptors(),
        runtime=runtime,
    )
