"""Planning an eval: resolve the request, pick the arms, reuse a baseline, take the policy's judge.

An eval compares a deployment's active pair (baseline) with a target pair on the deployment's golden dataset,
as the 2x2 factorial of PRODUCT §1/§6. :func:`plan_eval` validates the request, runs only the arms that differ
from baseline, reuses a recent identical baseline run, takes the policy's judge when the dataset has
model-graded assertions (:mod:`pairshift.judges`: refused when missing, unknown or retired), and creates the
``EvalRun`` rows (idempotently: run ids are derived from the eval id). The request itself is resolved by
:func:`pairshift.resolver.resolve`, like a migration's; the registry lookups here (:func:`model_spec`,
:func:`load_cases`) are shared with :mod:`pairshift.evals.batches`.
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal

from sqlmodel import Session, col, func, select

from pairshift import judges
from pairshift.contracts.evals import ArmName, ArmPlan, BatchRoute, EvalRequest, RoutedEvalPlan
from pairshift.datasets import Case
from pairshift.external import is_external, prompt_row, request_for
from pairshift.policy import EvalPolicy
from pairshift.prompts import TemplateProblem
from pairshift.providers import CallParams, ModelSpec, provider_problems, reserved_param_problems
from pairshift.providers.batch_api import offers_batch
from pairshift.ratelimit import batch_route
from pairshift.registry.models import (
    DatasetCase,
    EvalRun,
    Model,
    PromptVersion,
    utcnow,
)
from pairshift.registry.store import Registry
from pairshift.resolver import InvalidRequest, ResolvedModel, resolve, resolve_model
from pairshift.scorers.model_graded import grading_prompts_version

BASELINE_MAX_AGE = timedelta(days=7)  # older baselines may predate provider-side changes to a snapshot
CACHE_MAX_AGE = BASELINE_MAX_AGE  # a cached answer is evidence too: it expires with the reuse limit


class EvalInputError(InvalidRequest):
    """An eval request that cannot run (exit code 2); EvalWorkflow's failure carries this type's name."""


class ArmFailed(RuntimeError):
    """An arm cannot go on (model not found/retired, bad request, bad credentials); never retried."""


# ---------------------------------------------------------------- registry lookups


def model_spec(row: Model, name: str) -> ModelSpec:
    """A call spec for ``name`` (the id asked for, possibly an alias) with the row's provider and prices."""
    return ResolvedModel(name, row).spec()


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


def load_cases(s: Session, dataset_version: str, start: int = 0, stop: int | None = None) -> list[Case]:
    """The cases of a dataset version with index in [start, stop), in order."""
    query = select(DatasetCase).where(
        DatasetCase.dataset_version == dataset_version, DatasetCase.idx >= start
    )
    if stop is not None:
        query = query.where(DatasetCase.idx < stop)
    return [Case.model_validate(row.data) for row in s.exec(query.order_by(col(DatasetCase.idx))).all()]


CASE_PAGE = 250  # cases read at a time when planning checks every case


def case_pages(s: Session, dataset_version: str, size: int | None = None) -> Iterator[list[Case]]:
    """The dataset version's cases in order, ``size`` at a time (issue 20: never all of them at once)."""
    start, size = 0, size or CASE_PAGE
    while True:
        page = load_cases(s, dataset_version, start, start + size)
        if not page:
            last = s.exec(
                select(func.max(DatasetCase.idx)).where(DatasetCase.dataset_version == dataset_version)
            ).one()
            if last is None or last < start:
                return
            start += size  # a gap in the indices: go on past it
            continue
        yield page
        start += size


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
    """The request through :func:`pairshift.resolver.resolve`, plus the eval's own policy overrides."""
    try:
        r = resolve(
            s,
            deployment=req.deployment,
            to_model=req.to_model,
            to_prompt=req.to_prompt,
            from_model=req.from_model,
            dataset=req.dataset,
        )
    except InvalidRequest as exc:
        raise EvalInputError(str(exc)) from None
    plan = r.plan
    policy = req.eval_policy if req.eval_policy is not None else plan.policy.eval
    if req.epochs is not None:
        policy = policy.model_copy(update={"epochs": req.epochs})
    return _Resolved(
        plan.deployment,
        {"old": r.from_prompt, "new": r.to_prompt},
        {"old": r.from_model, "new": r.to_model},
        {"old": plan.from_model, "new": plan.to_model},
        plan.dataset,
        r.dataset.id,
        r.dataset.content_hash,
        r.dataset.n_cases,
        policy,
    )


def _params_problem(prompt: PromptVersion) -> EvalInputError | None:
    for key, why in reserved_param_problems(prompt.params):
        return EvalInputError(f"prompt {prompt.id}: params.{key} is reserved, a prompt cannot set it ({why})")
    try:
        CallParams(**prompt.params)
    except ValueError as exc:
        return EvalInputError(f"prompt {prompt.id}: params are not valid call params: {exc}")
    return None


def _render_problem(prompt: PromptVersion, case: Case) -> EvalInputError | None:
    try:
        _, _, params = request_for(prompt, case.vars)
        if is_external(prompt.id):  # a captured request's own call parameters
            CallParams(**params)
    except TemplateProblem as exc:
        return EvalInputError(f"prompt {prompt.id} cannot render case {case.id!r}: {exc}")
    except ValueError as exc:
        return EvalInputError(f"case {case.id!r}: vars.params are not call params: {exc}")
    return None


def _check_cases(prompts: Sequence[PromptVersion], pages: Iterable[Sequence[Case]]) -> tuple[str, str] | None:
    """Every prompt renders every case and has valid call params: a bad case fails now, not later.

    One pass over ``pages`` (the cases a page at a time). The problem raised is the one checking each prompt
    in turn over the whole list would raise first: the earliest prompt's, at its first bad case. Also returns
    the first model-graded assertion (case id, type), or None (:func:`pairshift.judges.first_model_graded`).
    """
    problems: list[EvalInputError | None] = [_params_problem(p) for p in prompts]
    graded = None
    for page in pages:
        if problems[0] is not None:
            break  # the first prompt's problem is the one to report
        for i, prompt in enumerate(prompts):
            if problems[i] is None:
                problems[i] = next((e for case in page if (e := _render_problem(prompt, case))), None)
        graded = graded or judges.first_model_graded(page)
    for problem in problems:
        if problem is not None:
            raise problem
    return graded


CHECKED_KEPT = 256  # (prompts, dataset) pairs whose case check a worker process remembers
_checked: dict[tuple[tuple[tuple[str, str], ...], str], tuple[str, str] | None] = {}
_checked_lock = threading.Lock()  # planning activities run on a worker's threads


def _checked_cases(s: Session, r: _Resolved) -> tuple[str, str] | None:
    """:func:`_check_cases` of the plan's prompts over its dataset version, once per process for each
    (prompt contents, dataset contents): both are immutable, so a re-run's planning (a cached re-run: most of
    its planning was this check) does not render every case again. Only a check that passed is kept."""
    prompts = _distinct(r.prompts.values())
    key = (tuple((p.id, p.content_hash) for p in prompts), r.dataset_hash)
    with _checked_lock:
        if key in _checked:
            return _checked[key]
    graded = _check_cases(prompts, case_pages(s, r.dataset_version))
    with _checked_lock:
        while len(_checked) >= CHECKED_KEPT:
            del _checked[next(iter(_checked))]
        _checked[key] = graded
    return graded


def _check_pairs(r: _Resolved) -> None:
    """Each arm's prompt params against its model's provider (Anthropic's temperature is 0..1, ...)."""
    for _, prompt_id, name in _arm_pairs(r):
        prompt = next(p for p in r.prompts.values() if p.id == prompt_id)
        row = next(m for k, m in r.models.items() if r.names[k] == name)
        spec = model_spec(row, name)
        for field, problem in provider_problems(spec.provider, CallParams(**prompt.params), spec.api):
            raise EvalInputError(f"prompt {prompt.id} on model {name}: params.{field} {problem}")


def validate_request(registry: Registry, req: EvalRequest) -> None:
    """Refuse a request that cannot run (the CLI calls this before starting a workflow)."""
    with registry.session() as s:
        r = _resolve(s, req)
        _check_cases(_distinct(r.prompts.values()), case_pages(s, r.dataset_version))
        _check_pairs(r)


def _distinct(prompts: Iterable[PromptVersion]) -> list[PromptVersion]:
    return list({p.id: p for p in prompts}.values())


def _arm_pairs(r: _Resolved) -> list[tuple[ArmName, str, str]]:
    """(arm, prompt id, model name) of every arm to run: only those that differ from baseline."""
    p0, p1 = r.prompts["old"].id, r.prompts["new"].id
    m0, m1 = r.names["old"], r.names["new"]
    arms: list[tuple[ArmName, str, str]] = [("baseline", p0, m0)]
    if p0 != p1 and m0 != m1:
        return arms + [("prompt_only", p1, m0), ("model_only", p0, m1), ("joint", p1, m1)]
    return arms + [("prompt_only", p1, m0)] if p0 != p1 else arms + [("model_only", p0, m1)]


def call_fingerprint(spec: ModelSpec) -> dict[str, object]:
    """How a model is called, as far as it can change an answer: where, which API, what is not sent."""
    return {
        "id": spec.id,
        "provider": spec.provider,
        "base_url": spec.base_url,
        "api": spec.api,
        "drop_params": list(spec.drop_params),
        "max_tokens_param": spec.max_tokens_param,
    }


def evidence_key(
    prompt: PromptVersion,
    model: ResolvedModel,
    judge: ResolvedModel | None,
    dataset_hash: str,
    epochs: int,
) -> str | None:
    """What determines an arm's answers and grades; None when they cannot be known in advance.

    The resolved snapshot and how it is called (base URL, API, request rules), the prompt's content, the judge
    (its snapshot, how it is called, the grading prompts' wording), the cases and the epochs. An alias (or an
    alias judge) gets None: the provider may have repointed it since any earlier run, so its evidence is
    gathered again every time, never reused.
    """
    if model.unpinned or (judge is not None and judge.unpinned):
        return None
    blob = {
        "prompt": [prompt.id, prompt.content_hash],
        "model": [model.snapshot, call_fingerprint(model.spec())],
        "judge": None
        if judge is None
        else [judge.snapshot, call_fingerprint(judge.spec()), grading_prompts_version()],
        "dataset": dataset_hash,
        "epochs": epochs,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()


def reusable_baseline(
    s: Session, pair: str, dataset_hash: str, epochs: int, key: str | None = None
) -> EvalRun | None:
    """A recent, finished, error-free run with the same evidence key (pair, cases, snapshot, judge...)."""
    if key is None:
        return None
    since = utcnow() - BASELINE_MAX_AGE
    runs = s.exec(
        select(EvalRun)
        .where(
            EvalRun.pair == pair,
            EvalRun.dataset_hash == dataset_hash,
            EvalRun.epochs == epochs,
            EvalRun.evidence_key == key,
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


def plan_eval(
    registry: Registry, req: EvalRequest, eval_id: str, *, today: date | None = None
) -> RoutedEvalPlan:
    """Validate, choose arms, reuse a baseline, choose the judge and create the EvalRun rows (idempotent).

    Each fresh arm whose model has a request rate gets a route to that model's own task queue, unless the
    response cache answers all of its calls (``cached_arms``: it makes none, so it waits on no queue's rate).
    """
    with registry.session() as s:
        r = _resolve(s, req)
        graded = _checked_cases(s, r)
        _check_pairs(r)
        judge, warnings = _judge(s, r, graded, today or date.today())
        judge_model = resolve_model(s, judge) if judge else None
        arms = [
            _plan_arm(s, r, req, eval_id, arm, prompt, model, judge_model)
            for arm, prompt, model in _arm_pairs(r)
        ]
        p1, m1 = r.prompts["new"].id, r.names["new"]
        routes = _routes(r, arms)
        cached = _cached_arms(s, r, req, [a for a in arms if a.arm in routes])
        return RoutedEvalPlan(
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
            routes={arm: route for arm, route in routes.items() if arm not in cached},
            modes=_modes(r, arms, warnings),
            cached_arms=cached,
        )


def _judge(
    s: Session, r: _Resolved, graded: tuple[str, str] | None, today: date
) -> tuple[str | None, list[str]]:
    """The policy's judge when the dataset needs one, ``graded`` the first model-graded assertion (refused
    when missing, unknown or retired)."""
    if graded is None:
        return None, []
    if r.policy.judge is None:
        raise EvalInputError(judges.missing_judge_message(f"dataset {r.dataset_name}", graded))
    resolved = resolve_model(s, r.policy.judge)
    row = resolved.row if resolved else None
    problem = judges.judge_problem(row, r.policy.judge, today)
    if problem is not None or row is None:
        raise EvalInputError(f"{problem} ({judges.JUDGE_KEY})")
    warning = judges.same_family_warning(row, [r.models["old"], r.models["new"]])
    return r.policy.judge, [warning] if warning else []


def _cached_arms(s: Session, r: _Resolved, req: EvalRequest, arms: Sequence[ArmPlan]) -> list[str]:
    """Those of the (routed) ``arms`` whose every (case, epoch) the response cache answers (none with
    ``no_cache``)."""
    from pairshift.evals.batches import fully_cached  # batches builds on this module

    if req.no_cache:
        return []
    cached = []
    for arm in arms:
        prompt, model = prompt_row(s, arm.prompt), resolve_model(s, arm.model)
        if arm.reused or prompt is None or model is None:
            continue
        if fully_cached(s, prompt, model, r.dataset_version, r.policy.epochs):
            cached.append(arm.arm)
    return cached


def _routes(r: _Resolved, arms: Sequence[ArmPlan]) -> dict[str, BatchRoute]:
    """Each fresh arm's batch route, from the limits of the row its model name resolved to."""
    resolved = {r.names[k]: ResolvedModel(r.names[k], r.models[k]) for k in ("old", "new")}
    routes = {}
    for arm in arms:
        model = resolved[arm.model]
        route = None if arm.reused else batch_route(model.bucket, model.row.limits)
        if route is not None:
            routes[arm.arm] = route
    return routes


def _modes(
    r: _Resolved, arms: Sequence[ArmPlan], warnings: list[str]
) -> dict[str, Literal["online", "batch"]]:
    """Each fresh arm's eval mode (policy ``eval.mode``): batch where asked and the provider offers it."""
    mode, calls = r.policy.mode, r.n_cases * r.policy.epochs
    modes: dict[str, Literal["online", "batch"]] = {}
    if mode == "online":
        return modes
    resolved = {r.names[k]: ResolvedModel(r.names[k], r.models[k]) for k in ("old", "new")}
    for arm in arms:
        spec = resolved[arm.model].spec()
        if arm.reused or (mode == "auto" and calls <= r.policy.batch_min_calls):
            continue
        if not offers_batch(spec):
            if mode == "batch":
                warnings.append(
                    f"arm {arm.arm}: model {arm.model} ({spec.provider}) has no batch API; it runs online"
                )
            continue
        modes[arm.arm] = "batch"
    return modes


def _plan_arm(
    s: Session,
    r: _Resolved,
    req: EvalRequest,
    eval_id: str,
    arm: ArmName,
    prompt: str,
    model: str,
    judge: ResolvedModel | None,
) -> ArmPlan:
    pair, run_id = f"{prompt}+{model}", run_id_for(eval_id, arm)
    row = next(m for k, m in r.models.items() if r.names[k] == model)
    version = next(p for p in r.prompts.values() if p.id == prompt)
    key = evidence_key(version, ResolvedModel(model, row), judge, r.dataset_hash, r.policy.epochs)
    if arm == "baseline" and not req.no_cache and s.get(EvalRun, run_id) is None:
        reused = reusable_baseline(s, pair, r.dataset_hash, r.policy.epochs, key)
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
                evidence_key=key,
            )
        )
    return ArmPlan(arm=arm, pair=pair, prompt=prompt, model=model, run_id=run_id)
