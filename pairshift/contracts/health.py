"""HealthWorkflow's boundary: the request, the report, and the one activity that counts registry rows."""

from __future__ import annotations

from pydantic import BaseModel
from temporalio import activity


class HealthRequest(BaseModel):
    """HealthWorkflow's input: a note echoed back, to tell runs apart."""

    note: str = "ping"


class RegistryHealth(BaseModel):
    """Row counts: proof that the worker reaches the registry."""

    models: int
    prompts: int
    deployments: int


class HealthReport(BaseModel):
    """HealthWorkflow's result."""

    note: str
    registry: RegistryHealth


@activity.defn
def registry_health() -> RegistryHealth:
    """Count the registry's models, prompts and deployments."""
    raise NotImplementedError
