"""Planning an eval: resolve the request, pick the arms, reuse a baseline, choose the judge.

An eval compares a deployment's active pair (baseline) with a target pair on the deployment's golden dataset,
as the 2x2 factorial of PRODUCT §1/§6. :func:`plan_eval` validates the request, runs only the arms that differ
from baseline, reuses a recent identical baseline run, chooses a judge of another model family when the
dataset has model-graded assertions, and creates the ``EvalRun`` rows (idempotently: run ids are derived from
the eval id). The registry lookups here (:func:`model_spec`, :func:`load_cases`, and :func:`find_model` from
:mod:`pairshift.registry.lookup`) are shared with :mod:`pairshift.evals.batches`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from pydantic import BaseModel, Field
from sqlmodel import Session, col, select

from pairshift.datasets import MODEL_GRADED_TYPES, Case
from pairshift.policy import EvalPolicy, Policy
from pairshift.prompts import TemplateProblem, render
from pairshift.providers import CallParams, ModelSpec
from pairshift.registry.lookup import find_model
from pairshift.registry.models import (
    Dataset,
    DatasetCase,
    DatasetVersion,
    Deployment,
    EvalRun,
    Model,
    PolicyRow,
    PromptVersion,
    utcnow,
)
from pairshift.registry.store import Registry
from pairshift.stats import ArmName

BASELINE_MAX_AGE = timedelta(days=7)  # older baselines may predate provider-side changes to a snapshot


class EvalInputError(ValueError):
    """A request that names something the registry does not hold, or that cannot run (exit code 2)."""


class ArmFailed(RuntimeError):
    """An arm cannot go on (model not found/retired, bad request, bad credentials); never retried."""


class EvalTuning(BaseModel):
    """Knobs of how an eval is executed (not what it measures); the defaults suit the embedded setup."""

    batch_cases: int | None = Field(None, ge=1, description="Cases per batch activity; None = automatic.")
    parallel_batches: int = Field(8, ge=1, le=64, description="Batch activities in flight across all arms.")
    heartbeat_timeout_s: float = Field(
        30.0, gt=0, description="A batch silent this long is retried elsewhere."
    )
    batch_timeout_s: float = Field(4 * 3600.0, gt=0, description="start_to_close of one batch activity.")


class EvalRequest(BaseModel):
    """EvalWorkflow's input: evaluate ``deployment``'s active pair against (to_prompt or active, to_model)."""

    deployment: str
    to_model: str
    to_prompt: str | None = None
    epochs: int | None = Field(None, ge=1, le=20, description="None = the deployment's policy.")
    dataset: str | None = Field(None, description="None = the deployment's dataset.")
    no_cache: bool = Field(False, description="Bypass the response cache and baseline reuse.")
    migration: str | None = None
    requested_by: str = "unknown"
    from_model: str | None = Field(
        None,
        description="Baseline model; None = the active model (alias drift compares the previous snapshot).",
    )
    eval_policy: EvalPolicy | None = Field(
        None, description="None = the deployment's policy (a migration passes its own)."
    )
    tuning: EvalTuning = Field(default_factory=EvalTuning)


class ArmPlan(BaseModel):
    """One arm of the factorial: its pair and the run that holds (or will hold) its results."""

    arm: ArmName
    pair: str
    prompt: str
    model: str
    run_id: str
    reused: bool = False


class EvalPlan(BaseModel):
    """What an eval will run; small, carried by the workflow."""

    eval_id: str
    deployment: str
    baseline_pair: str
    target_pair: str
    dataset_name: str
    dataset_version: str
    dataset_hash: str
    n_cases: int
    epochs: int
    policy: EvalPolicy
    arms: list[ArmPlan]
    judge: str | None = None
    no_cache: bool = False
    warnings: list[str] = Field(default_factory=list)

    def arm(self, name: str) -> ArmPlan | None:
        return next((a for a in self.arms if a.arm == name), None)


# ---------------------------------------------------------------- registry lookups


def model_spec(row: Model, name: str) -> ModelSpec:
    """A call spec for ``name`` (the id asked for, possibly an alias) with the row's provider and prices."""
    return ModelSpec.from_model(row, id=name)


def model_family(model_id: str, provider: str) -> str:
    """The vendor family of a model, for choosing a judge that does not grade its own family."""
    lowered = model_id.lower()
    for prefix, family in (
        ("claude", "anthropic"),
        ("gpt", "openai"),
        ("chatgpt", "openai"),
        ("o1", "openai"),
        ("o3", "openai"),
        ("o4", "openai"),
        ("gemini", "google"),
        ("gemma", "google"),
        ("llama", "meta"),
        ("mistral", "mistral"),
        ("mixtral", "mistral"),
        ("qwen", "qwen"),
        ("deepseek", "deepseek"),
    ):
        if lowered.startswith(prefix):
            return family
    if provider == "sim":  # sim snapshots stand in for distinct vendors: sim-classic, sim-fresh, ...
        return "-".join(lowered.split("-")[:2])
    return provider


def choose_judge(s: Session, under_test: Sequence[Model], today: date) -> tuple[str | None, list[str]]:
    """A live registry model of another family than every model under test; a warning when none exists."""
    families = {model_family(m.id, m.provider) for m in under_test}
    live = [
        m
        for m in s.exec(select(Model).order_by(col(Model.id))).all()
        if not m.is_alias and (m.retires_on is None or m.retires_on > today)
    ]
    other = [m for m in live if model_family(m.id, m.provider) not in families]
    if other:
        return other[0].id, []
    fallback = under_test[-1].id if under_test else None
    return fallback, [
        (
            f"judge {fallback} is of the same family as a model under test ({', '.join(sorted(families))}); "
            "add a model of another family to the registry for unbiased model-graded assertions"
        )
    ]


def load_cases(s: Session, dataset_version: str, start: int = 0, stop: int | None = None) -> list[Case]:
    query = select(DatasetCase).where(
        DatasetCase.dataset_version == dataset_version, DatasetCase.idx >= start
    )
    if stop is not None:
        query = query.where(DatasetCase.idx < stop)
    return [Case.model_validate(row.data) for row in s.exec(query.order_by(col(DatasetCase.idx))).all()]


def run_id_for(eval_id: str, arm: str) -> str:
    """Deterministic, so a retried planning activity finds the runs it already created."""
    return f"run-{uuid.uuid5(uuid.NAMESPACE_URL, f'pairshift-eval:{eval_id}').hex[:12]}-{arm}"


# ---------------------------------------------------------------- planning


@dataclass
class _Resolved:
    deployment: str
    prompts: dict[str, PromptVersion]  # "old" / "new"
    models: dict[str, Model]  # "old" / "new"
    names: dict[str, str]  # model names as asked ("old" / "new")
    dataset_name: str
    dataset_version: str
    dataset_hash: str
    n_cases: int
    policy: EvalPolicy


def _resolve(s: Session, req: EvalRequest) -> _Resolved:
    dep = s.get(Deployment, req.deployment)
    if dep is None:
        raise EvalInputError(f"unknown deployment {req.deployment!r} (see `pairshift get deployments`)")
    new_prompt_id = req.to_prompt or dep.active_prompt
    prompts = {"old": s.get(PromptVersion, dep.active_prompt), "new": s.get(PromptVersion, new_prompt_id)}
    if prompts["new"] is None:
        raise EvalInputError(f"unknown prompt version {new_prompt_id!r} (expected name@version)")
    old_model = req.from_model or dep.active_model
    models = {"old": find_model(s, old_model), "new": find_model(s, req.to_model)}
    if models["new"] is None:
        raise EvalInputError(f"unknown model {req.to_model!r} (see `pairshift get models`)")
    if prompts["old"] is None or models["old"] is None:
        raise EvalInputError(f"deployment {dep.name}'s active pair {dep.active_pair} is not in the registry")
    if (new_prompt_id, req.to_model) == (dep.active_prompt, old_model):
        raise EvalInputError(f"nothing to evaluate: {dep.active_prompt}+{old_model} is the baseline pair")
    ds_name = req.dataset or dep.dataset
    head = s.get(Dataset, ds_name) if ds_name else None
    if head is None:
        raise EvalInputError(
            f"deployment {dep.name} has no dataset" if not ds_name else f"unknown dataset {ds_name!r}"
        )
    version = s.get(DatasetVersion, head.current_version)
    assert version is not None  # apply writes the version before the head
    policy_row = s.get(PolicyRow, dep.policy)
    policy = Policy.model_validate(policy_row.spec).eval if policy_row else EvalPolicy()
    if req.eval_policy is not None:
        policy = req.eval_policy
    if req.epochs is not None:
        policy = policy.model_copy(update={"epochs": req.epochs})
    return _Resolved(
        dep.name,
        prompts,
        models,
        {"old": old_model, "new": req.to_model},  # type: ignore[arg-type]
        ds_name,
        version.id,
        version.content_hash,
        version.n_cases,
        policy,
    )


def _check_renders(prompts: Sequence[PromptVersion], cases: Sequence[Case]) -> None:
    """Every prompt renders every case and has valid call params: a bad case fails now, not later."""
    for prompt in prompts:
        try:
            CallParams(**prompt.params)
        except ValueError as exc:
            raise EvalInputError(f"prompt {prompt.id}: params are not valid call params: {exc}") from None
        for case in cases:
            try:
                render(prompt.system, prompt.template, case.vars)
            except TemplateProblem as exc:
                raise EvalInputError(f"prompt {prompt.id} cannot render case {case.id!r}: {exc}") from None


def validate_request(registry: Registry, req: EvalRequest) -> None:
    """Refuse a request that cannot run (the CLI calls this before starting a workflow)."""
    with registry.session() as s:
        r = _resolve(s, req)
        _check_renders(list({p.id: p for p in r.prompts.values()}.values()), load_cases(s, r.dataset_version))


def _arm_pairs(r: _Resolved) -> list[tuple[ArmName, str, str]]:
    """(arm, prompt id, model name) of every arm to run: only those that differ from baseline."""
    p0, p1 = r.prompts["old"].id, r.prompts["new"].id
    m0, m1 = r.names["old"], r.names["new"]
    arms: list[tuple[ArmName, str, str]] = [("baseline", p0, m0)]
    if p0 != p1 and m0 != m1:
        return arms + [("prompt_only", p1, m0), ("model_only", p0, m1), ("joint", p1, m1)]
    return arms + [("prompt_only", p1, m0)] if p0 != p1 else arms + [("model_only", p0, m1)]


def reusable_baseline(s: Session, pair: str, dataset_hash: str, epochs: int) -> EvalRun | None:
    """A recent, finished, error-free run of the same pair on the same cases with the same epochs."""
    since = utcnow() - BASELINE_MAX_AGE
    runs = s.exec(
        select(EvalRun)
        .where(
            EvalRun.pair == pair,
            EvalRun.dataset_hash == dataset_hash,
            EvalRun.epochs == epochs,
            EvalRun.status == "done",
        )
        .order_by(col(EvalRun.finished_at).desc())
    ).all()
    for run in runs:
        finished = run.finished_at
        if finished is not None and finished.tzinfo is None:
            finished = finished.replace(tzinfo=since.tzinfo)
        if finished and finished >= since and run.summary and run.summary.get("errors", 1) == 0:
            return run
    return None


def plan_eval(registry: Registry, req: EvalRequest, eval_id: str, *, today: date | None = None) -> EvalPlan:
    """Validate, choose arms, reuse a baseline, choose the judge and create the EvalRun rows (idempotent)."""
    with registry.session() as s:
        r = _resolve(s, req)
        cases = load_cases(s, r.dataset_version)
        _check_renders(list({p.id: p for p in r.prompts.values()}.values()), cases)
        judge, warnings = None, []
        if any(
            a.base_type in MODEL_GRADED_TYPES
            or any(c.base_type in MODEL_GRADED_TYPES for c in a.assert_ or [])
            for case in cases
            for a in case.assert_
        ):
            judge, warnings = choose_judge(s, [r.models["old"], r.models["new"]], today or date.today())
        arms = [_plan_arm(s, r, req, eval_id, arm, prompt, model) for arm, prompt, model in _arm_pairs(r)]
        p1, m1 = r.prompts["new"].id, r.names["new"]
        return EvalPlan(
            eval_id=eval_id,
            deployment=r.deployment,
            baseline_pair=arms[0].pair,
            target_pair=f"{p1}+{m1}",
            dataset_name=r.dataset_name,
            dataset_version=r.dataset_version,
            dataset_hash=r.dataset_hash,
            n_cases=r.n_cases,
            epochs=r.policy.epochs,
            policy=r.policy,
            arms=arms,
            judge=judge,
            no_cache=req.no_cache,
            warnings=warnings,
        )


def _plan_arm(
    s: Session, r: _Resolved, req: EvalRequest, eval_id: str, arm: ArmName, prompt: str, model: str
) -> ArmPlan:
    pair, run_id = f"{prompt}+{model}", run_id_for(eval_id, arm)
    if arm == "baseline" and not req.no_cache and s.get(EvalRun, run_id) is None:
        reused = reusable_baseline(s, pair, r.dataset_hash, r.policy.epochs)
        if reused is not None:
            return ArmPlan(arm=arm, pair=pair, prompt=prompt, model=model, run_id=reused.id, reused=True)
    if s.get(EvalRun, run_id) is None:
        s.add(
            EvalRun(
                id=run_id,
                deployment=r.deployment,
                migration=req.migration,
                arm=arm,
                pair=pair,
                prompt=prompt,
                model=model,
                dataset_version=r.dataset_version,
                dataset_hash=r.dataset_hash,
                epochs=r.policy.epochs,
            )
        )
    return ArmPlan(arm=arm, pair=pair, prompt=prompt, model=model, run_id=run_id)


def batch_ranges(n_cases: int, batch_cases: int | None = None) -> list[tuple[int, int]]:
    """Case index ranges of an arm's batches (automatic size: about 25 batches, 10..200 cases each)."""
    size = batch_cases or min(200, max(10, -(-n_cases // 25)))
    return [(start, min(start + size, n_cases)) for start in range(0, n_cases, size)]
