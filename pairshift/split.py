"""The canary split as the router reads it: set a stage's share, restore the baseline, promote.

The split lives on the deployment row (candidate pair, percent, owning migration); the router refreshes
from it. Each change also keeps the split it replaced (``previous_split``, ``split_changed_at``), so that
observations routed just before a change can still be checked against the split that routed them. Each
function is idempotent, so a retried activity or a replayed compensation is harmless, and refuses to touch a
deployment whose split another migration owns.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Session

from pairshift import ledger
from pairshift.external import stated_prompts
from pairshift.registry.models import Deployment, utcnow


class SplitConflict(RuntimeError):
    """Another migration owns this deployment's split."""


def _deployment(s: Session, name: str, migration: str) -> Deployment:
    dep = s.get(Deployment, name, with_for_update=s.bind.dialect.name != "sqlite")
    if dep is None:
        raise LookupError(f"unknown deployment {name}")
    if dep.migration not in (None, migration):
        raise SplitConflict(f"deployment {name} is being migrated by {dep.migration}")
    return dep


def split_snapshot(dep: Deployment) -> dict[str, Any]:
    """The routing-relevant part of a deployment's split, as ``previous_split`` keeps it."""
    return {
        "migration": dep.migration,
        "active_pair": dep.active_pair,
        "candidate_pair": dep.candidate_pair,
        "percent": dep.canary_percent,
        "shadow": dep.shadow_percent,
    }


def _remember(dep: Deployment) -> None:
    dep.previous_split = split_snapshot(dep)
    dep.split_changed_at = dep.updated_at = utcnow()


def set_split(
    s: Session,
    *,
    deployment: str,
    migration: str,
    prompt: str,
    model: str,
    percent: float,
    shadow: float = 0.0,
) -> datetime:
    """Route ``percent`` of units to (prompt, model), and mirror ``shadow`` percent of units' control requests
    to it (a shadow stage: percent 0); returns when this split took effect."""
    dep = _deployment(s, deployment, migration)
    now = (migration, prompt, model, percent, shadow)
    if (
        dep.migration,
        dep.candidate_prompt,
        dep.candidate_model,
        dep.canary_percent,
        dep.shadow_percent,
    ) != now:
        _remember(dep)
        dep.migration, dep.candidate_prompt, dep.candidate_model = migration, prompt, model
        dep.canary_percent, dep.shadow_percent = percent, shadow
        s.add(dep)
    return dep.updated_at


def restore_baseline(
    s: Session,
    *,
    deployment: str,
    migration: str,
    reason: str = "rollback",
    by: str = "pairshift",
    evidence: dict[str, Any] | None = None,
) -> bool:
    """100% back to the active pair, with a ledger row saying why. Returns whether anything had to change."""
    dep = _deployment(s, deployment, migration)
    if dep.migration is None and dep.candidate_prompt is None and dep.canary_percent == 0:
        return False
    moved_from = dep.candidate_pair
    ledger.append(
        s,
        deployment=deployment,
        prompt=dep.active_prompt,
        model=dep.active_model,
        by=by,
        reason=f"rolled back from {moved_from}: {reason}",
        migration=migration,
        evidence=evidence or {},
    )
    _remember(dep)
    dep.migration = dep.candidate_prompt = dep.candidate_model = None
    dep.canary_percent = dep.shadow_percent = 0.0
    s.add(dep)
    return True


def promote(
    s: Session,
    *,
    deployment: str,
    migration: str,
    prompt: str,
    model: str,
    by: str,
    reason: str,
    evidence: dict[str, Any],
) -> bool:
    """Make (prompt, model) the active pair and write the ledger row. Idempotent per migration."""
    dep = _deployment(s, deployment, migration)
    if (dep.active_prompt, dep.active_model) == (prompt, model) and dep.migration is None:
        return False
    if dep.prompt_external:  # the pair's prompt is the app's: the ledger says which versions it stated
        evidence = {**evidence, "app_prompts": stated_prompts(s, deployment, migration)}
    _remember(dep)
    dep.active_prompt, dep.active_model = prompt, model
    dep.migration = dep.candidate_prompt = dep.candidate_model = None
    dep.canary_percent = dep.shadow_percent = 0.0
    s.add(dep)
    ledger.append(
        s,
        deployment=deployment,
        prompt=prompt,
        model=model,
        by=by,
        reason=reason,
        migration=migration,
        evidence=evidence,
    )
    return True
