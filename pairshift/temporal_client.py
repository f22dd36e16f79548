"""Connecting to Temporal the one way every client, worker and replayer of pairshift does it."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from pairshift.settings import get_settings


async def connect(address: str | None = None, namespace: str | None = None) -> Client:
    """A client with the pydantic data converter (workflow inputs are pydantic models)."""
    settings = get_settings()
    return await Client.connect(
        address or settings.temporal_address,
        namespace=namespace or settings.namespace,
        data_converter=pydantic_data_converter,
    )
