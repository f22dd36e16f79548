"""Registry health: row counts, proving the worker reaches the registry."""

from __future__ import annotations

from sqlalchemy import func
from sqlmodel import select

from pairshift.contracts import health as contract
from pairshift.contracts import implements
from pairshift.contracts.health import RegistryHealth
from pairshift.registry import open_registry
from pairshift.registry.models import Deployment, Model, PromptVersion


@implements(contract.registry_health)
def registry_health() -> RegistryHealth:
    with open_registry().session() as s:
        count = lambda m: s.exec(select(func.count()).select_from(m)).one()  # noqa: E731
        return RegistryHealth(
            models=count(Model), prompts=count(PromptVersion), deployments=count(Deployment)
        )
