"""Registry health: row counts, proving the worker reaches the registry."""

from __future__ import annotations

from pydantic import BaseModel
from sqlalchemy import func
from sqlmodel import select
from temporalio import activity

from pairshift.registry import open_registry
from pairshift.registry.models import Deployment, Model, PromptVersion


class RegistryHealth(BaseModel):
    models: int
    prompts: int
    deployments: int


@activity.defn
def registry_health() -> RegistryHealth:
    with open_registry().session() as s:
        count = lambda m: s.exec(select(func.count()).select_from(m)).one()  # noqa: E731
        return RegistryHealth(
            models=count(Model), prompts=count(PromptVersion), deployments=count(Deployment)
        )
