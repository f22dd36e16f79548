"""Helpers shared by the router, observation, API and traffic tests (no tests of its own)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pairshift.apply import apply_path
from pairshift.registry.models import Deployment
from pairshift.registry.store import Registry

DEPLOYMENT = "support-triage"
MIGRATION = "migration-support-triage"
ACTIVE_PAIR = "support-triage@1+sim-classic-2024-06"
CANDIDATE = ("support-triage@2", "sim-fresh-2025-09")
CANDIDATE_PAIR = "support-triage@2+sim-fresh-2025-09"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def apply_example(registry: Registry) -> Registry:
    """The example config applied: deployment support-triage on support-triage@1 + sim-classic-2024-06."""
    from conftest import EXAMPLES

    apply_path(registry, EXAMPLES, by="test")
    return registry


def set_split(
    registry: Registry,
    percent: float,
    *,
    migration: str | None = MIGRATION,
    candidate: tuple[str, str] | None = CANDIDATE,
) -> None:
    """Move the deployment's canary split as a migration's activity would."""
    with registry.session() as s:
        dep = s.get(Deployment, DEPLOYMENT)
        assert dep is not None
        dep.candidate_prompt, dep.candidate_model = candidate or (None, None)
        dep.canary_percent = percent
        dep.migration = migration
        s.add(dep)


def obs(**kw: Any) -> dict[str, Any]:
    """One observation as a client would post it, with fields overridden by ``kw``."""
    base = {
        "deployment": DEPLOYMENT,
        "pair": ACTIVE_PAIR,
        "variant": "control",
        "unit": "u1",
        "latency_ms": 100.0,
        "input_tokens": 10,
        "output_tokens": 5,
        "cost_usd": 0.001,
        "outcome": "ok",
        "score": None,
        "at": T0.isoformat(),
    }
    return base | kw
