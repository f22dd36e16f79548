"""One way from a request to a plan: the deployment, both pairs, their model rows, the dataset and the policy.

Every caller that turns "migrate (or evaluate) deployment D to model M, prompt P" into something to run goes
through :func:`resolve`: the CLI before it starts a workflow (so a bad request exits 2 at once), the
``prepare_migration`` activity (so a start from the Temporal UI is checked the same way), the deprecation
scan before it starts a migration, and eval planning. They differ only in what they add on top:
:func:`plan_migration` refuses a retired target; :func:`pairshift.evals.plan_eval` renders every case and
picks the arms. The result's :class:`~pairshift.contracts.migration.MigrationPlan` is what flows on.

One model resolution (:func:`resolve_model`) serves every place that turns a model name into a call: apply,
eval planning and batches, the preflight, the router's split, the limiter and the per-model task queue. A
name is an id of the registry or an alias a snapshot row lists (the bundled calendar ships
``claude-sonnet-4-0`` that way); either way it resolves to ONE row, whose provider settings, limits and
request rules every caller uses, so the router serves what the eval evaluated and an alias and its snapshot
share one rate-limit bucket. The name as asked is what is sent to the provider (an alias stays an alias:
its response's ``model`` is how drift is seen).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from pydantic import ValidationError
from sqlmodel import Session

from pairshift.contracts.migration import MigrationPlan, pair_id
from pairshift.external import EXTERNAL, prompt_row, stated_prompt
from pairshift.people import load_people
from pairshift.policy import Policy, format_validation_error
from pairshift.providers.base import ModelSpec
from pairshift.registry.lookup import find_model
from pairshift.registry.models import (
    Dataset,
    DatasetVersion,
    Deployment,
    Model,
    PolicyRow,
    PromptVersion,
    utcnow,
)


@dataclass(frozen=True)
class ResolvedModel:
    """A model name as asked and the one registry row it resolves to (module docstring)."""

    name: str
    row: Model

    @property
    def unpinned(self) -> bool:
        """The provider may repoint the name: an alias row, or a name a snapshot row lists as an alias."""
        return self.row.is_alias or self.name != self.row.id

    @property
    def snapshot(self) -> str | None:
        """The snapshot the name is known to serve; for an alias the last one seen (None: never seen)."""
        if self.row.is_alias:
            return self.row.resolved_snapshot
        return self.row.id

    @property
    def bucket(self) -> str:
        """The name's provider-limit key (limiter, task queue): the row, shared by the aliases it lists."""
        return self.row.id

    def spec(self, **overrides: Any) -> ModelSpec:
        """The call spec: the row's provider, prices and request rules, calling the name as asked."""
        return ModelSpec.from_model(self.row, id=self.name, **overrides)


def resolve_model(s: Session, name: str) -> ResolvedModel | None:
    """The row ``name`` resolves to (an id, or an alias a snapshot lists); None when the registry has none."""
    row = find_model(s, name)
    return ResolvedModel(name, row) if row is not None else None


class InvalidRequest(ValueError):
    """A request that names something the registry does not hold, or that cannot run; nothing was changed."""


class InvalidMigration(InvalidRequest):
    """A migration request that cannot start."""


@dataclass(frozen=True)
class Resolution:
    """A resolved request: the plan (ids only, what flows on) and the registry rows it was resolved from."""

    plan: MigrationPlan
    deployment: Deployment
    from_prompt: PromptVersion
    to_prompt: PromptVersion
    from_model: Model  # the row plan.from_model names (for an alias, the snapshot row listing it)
    to_model: Model
    dataset: DatasetVersion  # the dataset's current version

    def model_row(self, name: str) -> Model | None:
        """The row of a model name of this plan (as asked: an alias stays an alias)."""
        return {self.plan.from_model: self.from_model, self.plan.to_model: self.to_model}.get(name)


def deployment_policy(s: Session, dep: Deployment, override: dict[str, Any] | None = None) -> Policy:
    """The policy of ``dep``: an inline override (validated), else its named policy, else the default."""
    if override is not None:
        try:
            return Policy.model_validate({"name": f"{dep.name}-request", **override})
        except ValidationError as exc:
            raise InvalidRequest(format_validation_error(exc, "policy")) from None
    row = s.get(PolicyRow, dep.policy)
    return Policy.model_validate(row.spec) if row else Policy()


def resolve(
    s: Session,
    *,
    deployment: str,
    to_model: str,
    to_prompt: str | None = None,
    from_model: str | None = None,
    dataset: str | None = None,
    policy: dict[str, Any] | None = None,
) -> Resolution:
    """Resolve a request against the registry, or raise :class:`InvalidRequest` naming what is wrong.

    The baseline is the deployment's active pair (``from_model`` replaces its model: alias drift compares the
    snapshot an alias served before); the target keeps the active prompt unless ``to_prompt`` names one.
    """
    dep = s.get(Deployment, deployment)
    if dep is None:
        raise InvalidRequest(f"unknown deployment {deployment!r} (see `pairshift get deployments`)")
    if dep.prompt_external and to_prompt not in (None, EXTERNAL):
        raise InvalidRequest(
            f"deployment {dep.name} has `prompt: external` (its prompt lives in the app): a migration "
            "changes its model only; ship a prompt change in the app (X-Pairshift-Prompt records its version)"
        )
    target_prompt_id = to_prompt or dep.active_prompt
    target_prompt = prompt_row(s, target_prompt_id)
    if target_prompt is None:
        raise InvalidRequest(f"unknown prompt version {target_prompt_id!r} (expected name@version)")
    target_model = find_model(s, to_model)
    if target_model is None:
        raise InvalidRequest(
            f"unknown model {to_model!r} (see `pairshift get models`; "
            "add it to the config and `pairshift apply`)"
        )
    baseline_model_id = from_model or dep.active_model
    baseline_prompt, baseline_model = (
        prompt_row(s, dep.active_prompt),
        find_model(s, baseline_model_id),
    )
    if baseline_prompt is None or baseline_model is None:
        raise InvalidRequest(f"deployment {dep.name}'s active pair {dep.active_pair} is not in the registry")
    if (target_prompt_id, to_model) == (dep.active_prompt, baseline_model_id):
        raise InvalidRequest(
            f"{pair_id(target_prompt_id, to_model)} is already the baseline pair of {dep.name}: nothing to do"
        )
    dataset_name = dataset or dep.dataset
    if dataset_name is None and dep.prompt_external and s.get(Dataset, f"{dep.name}-captured") is not None:
        dataset_name = f"{dep.name}-captured"  # what `pairshift datasets capture` wrote from its traffic
    if dataset_name is None:
        how = (
            f"capture one from its gateway traffic (pairshift datasets capture {dep.name} --sample R --max N)"
            if dep.prompt_external
            else "a migration needs evidence"
        )
        raise InvalidRequest(f"deployment {dep.name} has no golden dataset: {how}")
    head = s.get(Dataset, dataset_name)
    if head is None:
        raise InvalidRequest(f"unknown dataset {dataset_name!r} (see `pairshift get datasets`)")
    version = s.get(DatasetVersion, head.current_version)
    assert version is not None  # apply writes the version before the head
    plan = MigrationPlan(
        deployment=dep.name,
        from_prompt=dep.active_prompt,
        from_model=baseline_model_id,
        to_prompt=target_prompt_id,
        to_model=to_model,
        dataset=dataset_name,
        policy=deployment_policy(s, dep, policy),
        people=load_people(s),
        app_prompt=stated_prompt(s, dep.name) if dep.prompt_external else None,
    )
    return Resolution(plan, dep, baseline_prompt, target_prompt, baseline_model, target_model, version)


def plan_migration(
    s: Session,
    *,
    deployment: str,
    to_model: str,
    to_prompt: str | None,
    policy: dict[str, Any] | None,
    today: date | None = None,
) -> MigrationPlan:
    """The plan of a migration request; also refuses a target model that has retired by ``today``."""
    try:
        r = resolve(s, deployment=deployment, to_model=to_model, to_prompt=to_prompt, policy=policy)
    except InvalidRequest as exc:
        raise InvalidMigration(str(exc)) from None
    today = today or utcnow().date()
    if r.to_model.retires_on is not None and r.to_model.retires_on <= today:
        raise InvalidMigration(
            f"model {to_model} retired on {r.to_model.retires_on}: it cannot be a migration target"
        )
    return r.plan
