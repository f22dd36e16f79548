"""The eval engine's domain side (no Temporal): plan the arms, run batches of calls, summarise, report.

An eval compares a deployment's active pair (baseline) with a target pair on the deployment's golden
dataset, as the 2x2 factorial of PRODUCT §1/§6. The activities in ``activities/evals.py`` are thin wrappers
around the functions here:

- :func:`plan_eval` validates the request, picks the arms (only those that differ from baseline), reuses a
  recent identical baseline run, chooses the judge and creates the ``EvalRun`` rows;
- :func:`run_batch` runs the (case, epoch) calls of a case index range that are not stored yet: render,
  response cache, rate-limited provider call, score, insert-if-absent. It is safe to run twice (a retried
  or duplicated activity) because results are keyed by (run, case, epoch) and inserted with ON CONFLICT
  DO NOTHING: nothing is repeated once stored and nothing is ever counted twice;
- :func:`summarize_run` and :func:`build_report` turn stored results into statistics and the report.

Where retries live: :func:`pairshift.providers.complete` retries 5xx/529/timeouts with backoff. A 429 that
carries ``retry-after`` is handed back here instead (``max_retry_after_s=0``) because the rate limit is
shared state: :mod:`pairshift.ratelimit` blocks every caller of the model until then, and the call is
queued again (at most ``RATE_LIMIT_RETRIES`` times). A call that still fails is stored as an error result
(it counts as a failed case); a model that is not found, a bad request or bad credentials fail the arm.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, select

from pairshift.datasets import MODEL_GRADED_TYPES, Case
from pairshift.policy import EvalPolicy, Policy
from pairshift.prompts import TemplateProblem, render
from pairshift.providers import (
    AuthError,
    BadRequest,
    CallParams,
    Completion,
    Message,
    ModelNotFound,
    ModelSpec,
    ProviderError,
    RateLimited,
    RetryPolicy,
    complete,
)
from pairshift.ratelimit import limiter_for
from pairshift.registry.models import (
    CachedResponse,
    DatasetCase,
    EvalResult,
    EvalRun,
    Model,
    PolicyRow,
    PromptVersion,
    utcnow,
)
from pairshift.registry.store import Registry
from pairshift.reports import ArmInput, DatasetRef, EvalReport, FlippedOutputs, assemble_report
from pairshift.scorers import Output, score_case
from pairshift.stats import ArmName, ArmSummary, CaseOutcome, summarize_arm

FATAL_ERRORS = (ModelNotFound, BadRequest, AuthError)
RATE_LIMIT_RETRIES = 8
BASELINE_MAX_AGE = timedelta(days=7)  # older baselines may predate provider-side changes to a snapshot
CALL_RETRY = RetryPolicy(max_retry_after_s=0.0)  # see the module docstring: 429 + retry-after come back here


class EvalInputError(ValueError):
    """A request that names something the registry does not hold, or that cannot run (exit code 2)."""


class ArmFailed(RuntimeError):
    """An arm cannot go on (model not found/retired, bad request, bad credentials); never retried."""


class EvalTuning(BaseModel):
    """Knobs of how an eval is executed (not what it measures); the defaults suit the embedded setup."""

    batch_cases: int | None = Field(None, ge=1, description="Cases per batch activity; None = automatic.")
    parallel_batches: int = Field(8, ge=1, le=64, description="Batch activities in flight across all arms.")
    heartbeat_timeout_s: float = Field(30.0, gt=0, description="A batch silent this long is retried elsewhere.")
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
        None, description="Baseline model; None = the active model (alias drift compares the previous snapshot)."
    )
    eval_policy: EvalPolicy | None = Field(None, description="None = the deployment's policy (a migration passes its own).")
    tuning: EvalTuning = Field(default_factory=EvalTuning)


class ArmPlan(BaseModel):
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


class BatchSpec(BaseModel):
    run_id: str
    start: int = Field(ge=0, description="First case index (DatasetCase.idx), inclusive.")
    stop: int = Field(description="Last case index, exclusive.")
    no_cache: bool = False
    judge: str | None = None


class BatchResult(BaseModel):
    calls: int = Field(description="(case, epoch) pairs of the batch, stored before or now.")
    made: int = Field(0, description="Provider calls made by this execution.")
    cached: int = 0
    errors: int = 0


class RunSummary(BaseModel):
    run_id: str
    summary: ArmSummary
    cached_calls: int


# ---------------------------------------------------------------- registry lookups


def find_model(s: Session, name: str) -> Model | None:
    """The model row for an id, or the snapshot row listing ``name`` among its aliases."""
    row = s.get(Model, name)
    if row is not None:
        return row
    return next((m for m in s.exec(select(Model)).all() if name in (m.aliases or [])), None)


def model_spec(row: Model, name: str) -> ModelSpec:
    """A call spec for ``name`` (the id asked for, possibly an alias) with the row's provider and prices."""
    return ModelSpec(id=name, provider=row.provider, base_url=row.base_url, api_key_env=row.api_key_env,  # type: ignore[arg-type]
                     input_per_mtok=row.input_per_mtok, output_per_mtok=row.output_per_mtok)


def model_family(model_id: str, provider: str) -> str:
    """The vendor family of a model, for choosing a judge that does not grade its own family."""
    lowered = model_id.lower()
    for prefix, family in (("claude", "anthropic"), ("gpt", "openai"), ("chatgpt", "openai"), ("o1", "openai"),
                           ("o3", "openai"), ("o4", "openai"), ("gemini", "google"), ("gemma", "google"),
                           ("llama", "meta"), ("mistral", "mistral"), ("mixtral", "mistral"), ("qwen", "qwen"),
                           ("deepseek", "deepseek")):
        if lowered.startswith(prefix):
            return family
    if provider == "sim":  # sim snapshots stand in for distinct vendors: sim-classic, sim-fresh, ...
        return "-".join(lowered.split("-")[:2])
    return provider


def choose_judge(s: Session, under_test: Sequence[Model], today: date) -> tuple[str | None, list[str]]:
    """A live registry model of another family than every model under test; a warning when none exists."""
    families = {model_family(m.id, m.provider) for m in under_test}
    live = [m for m in s.exec(select(Model).order_by(col(Model.id))).all()
            if not m.is_alias and (m.retires_on is None or m.retires_on > today)]
    other = [m for m in live if model_family(m.id, m.provider) not in families]
    if other:
        return other[0].id, []
    fallback = under_test[-1].id if under_test else None
    return fallback, [f"judge {fallback} is of the same family as a model under test ({', '.join(sorted(families))}); "
                      "add a model of another family to the registry for unbiased model-graded assertions"]


def load_cases(s: Session, dataset_version: str, start: int = 0, stop: int | None = None) -> list[Case]:
    query = select(DatasetCase).where(DatasetCase.dataset_version == dataset_version, DatasetCase.idx >= start)
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
    from pairshift.registry.models import Dataset, DatasetVersion, Deployment

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
        raise EvalInputError(f"deployment {dep.name} has no dataset" if not ds_name else f"unknown dataset {ds_name!r}")
    version = s.get(DatasetVersion, head.current_version)
    assert version is not None  # apply writes the version before the head
    policy_row = s.get(PolicyRow, dep.policy)
    policy = Policy.model_validate(policy_row.spec).eval if policy_row else EvalPolicy()
    if req.eval_policy is not None:
        policy = req.eval_policy
    if req.epochs is not None:
        policy = policy.model_copy(update={"epochs": req.epochs})
    return _Resolved(dep.name, prompts, models, {"old": old_model, "new": req.to_model},  # type: ignore[arg-type]
                     ds_name, version.id, version.content_hash, version.n_cases, policy)


def _check_renders(prompts: Sequence[PromptVersion], cases: Sequence[Case]) -> None:
    """Every prompt renders every case and its params are valid call params: a bad case fails now, not later."""
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
    runs = s.exec(select(EvalRun).where(EvalRun.pair == pair, EvalRun.dataset_hash == dataset_hash,
                                        EvalRun.epochs == epochs, EvalRun.status == "done")
                  .order_by(col(EvalRun.finished_at).desc())).all()
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
        if any(a.base_type in MODEL_GRADED_TYPES or any(c.base_type in MODEL_GRADED_TYPES for c in a.assert_ or [])
               for case in cases for a in case.assert_):
            judge, warnings = choose_judge(s, [r.models["old"], r.models["new"]], today or date.today())
        arms = [_plan_arm(s, r, req, eval_id, arm, prompt, model) for arm, prompt, model in _arm_pairs(r)]
        p1, m1 = r.prompts["new"].id, r.names["new"]
        return EvalPlan(eval_id=eval_id, deployment=r.deployment, baseline_pair=arms[0].pair,
                        target_pair=f"{p1}+{m1}", dataset_name=r.dataset_name, dataset_version=r.dataset_version,
                        dataset_hash=r.dataset_hash, n_cases=r.n_cases, epochs=r.policy.epochs, policy=r.policy,
                        arms=arms, judge=judge, no_cache=req.no_cache, warnings=warnings)


def _plan_arm(s: Session, r: _Resolved, req: EvalRequest, eval_id: str, arm: ArmName, prompt: str,
              model: str) -> ArmPlan:
    pair, run_id = f"{prompt}+{model}", run_id_for(eval_id, arm)
    if arm == "baseline" and not req.no_cache and s.get(EvalRun, run_id) is None:
        reused = reusable_baseline(s, pair, r.dataset_hash, r.policy.epochs)
        if reused is not None:
            return ArmPlan(arm=arm, pair=pair, prompt=prompt, model=model, run_id=reused.id, reused=True)
    if s.get(EvalRun, run_id) is None:
        s.add(EvalRun(id=run_id, deployment=r.deployment, migration=req.migration, arm=arm, pair=pair,
                      prompt=prompt, model=model, dataset_version=r.dataset_version, dataset_hash=r.dataset_hash,
                      epochs=r.policy.epochs))
    return ArmPlan(arm=arm, pair=pair, prompt=prompt, model=model, run_id=run_id)


def batch_ranges(n_cases: int, batch_cases: int | None = None) -> list[tuple[int, int]]:
    """Case index ranges of an arm's batches (automatic size: about 25 batches, 10..200 cases each)."""
    size = batch_cases or min(200, max(10, -(-n_cases // 25)))
    return [(start, min(start + size, n_cases)) for start in range(0, n_cases, size)]


# ---------------------------------------------------------------- running a batch


def cache_key(provider: str, model: str, messages: list[dict[str, Any]], params: dict[str, Any], epoch: int) -> str:
    blob = json.dumps([provider, model, messages, params, epoch], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass
class _Work:
    """Everything a batch needs, loaded once."""

    run: EvalRun
    spec: ModelSpec
    model: Model
    prompt: PromptVersion
    cases: list[Case]
    done: set[tuple[str, int]]
    judge: tuple[ModelSpec, Model] | None


def _load_work(registry: Registry, batch: BatchSpec) -> _Work:
    with registry.session() as s:
        run = s.get(EvalRun, batch.run_id)
        if run is None:
            raise ArmFailed(f"eval run {batch.run_id} does not exist")
        model, prompt = find_model(s, run.model), s.get(PromptVersion, run.prompt)
        if model is None or prompt is None:
            raise ArmFailed(f"eval run {run.id}: model {run.model} or prompt {run.prompt} left the registry")
        cases = load_cases(s, run.dataset_version, batch.start, batch.stop)
        ids = [c.id for c in cases]
        done = {(c, e) for c, e in s.exec(select(EvalResult.case_id, EvalResult.epoch).where(
            EvalResult.run_id == run.id, col(EvalResult.case_id).in_(ids))).all()}
        judge_row = find_model(s, batch.judge) if batch.judge else None
        judge = (model_spec(judge_row, batch.judge), judge_row) if judge_row and batch.judge else None
        return _Work(run, model_spec(model, run.model), model, prompt, cases, done, judge)


def _insert_ignore(s: Session, table: Any, values: dict[str, Any]) -> None:
    """INSERT ... ON CONFLICT DO NOTHING: a duplicate (run, case, epoch) or cache key is silently kept once."""
    insert = pg_insert if s.get_bind().dialect.name == "postgresql" else sqlite_insert
    s.exec(insert(table).values(**values).on_conflict_do_nothing())  # type: ignore[call-overload]


def _store(registry: Registry, result: dict[str, Any], cache: dict[str, Any] | None) -> None:
    with registry.session() as s:
        _insert_ignore(s, EvalResult, result)
        if cache is not None:
            _insert_ignore(s, CachedResponse, cache)


def _cached_completion(registry: Registry, key: str) -> Completion | None:
    with registry.session() as s:
        row = s.get(CachedResponse, key)
        return Completion.model_validate(row.completion) if row else None


def _cache_model(model: Model, name: str) -> str:
    """The resolved model a cache key names: the snapshot; for an alias, the snapshot it last resolved to."""
    if model.id == name and not model.is_alias:
        return name
    return model.resolved_snapshot or model.id


async def call_limited(spec: ModelSpec, limits: dict[str, Any], system: str | None, user: str,
                       params: CallParams) -> Completion:
    """One call through the model's process-wide limiter; 429 + retry-after push the bucket (module doc)."""
    limiter = limiter_for(spec.provider, spec.id, limits)
    estimate = (len(system or "") + len(user)) / 4 + params.max_tokens
    for attempt in range(RATE_LIMIT_RETRIES + 1):
        async with limiter.slot(estimate):
            try:
                done = await complete(spec, system, [Message(role="user", content=user)], params, retry=CALL_RETRY)
            except RateLimited as err:
                if attempt == RATE_LIMIT_RETRIES or err.retry_after is None:
                    raise
                limiter.penalize(err.retry_after)
                continue
        limiter.settle(estimate, done.input_tokens + done.output_tokens)
        return done
    raise AssertionError("unreachable")


@dataclass
class _Call:
    """One (case, epoch) ready to send: rendered once, its cache key computed once."""

    case: Case
    epoch: int
    system: str | None
    user: str
    params: CallParams
    messages: list[dict[str, Any]]
    params_dict: dict[str, Any]
    key: str


def _prepare(work: _Work, case: Case, epoch: int) -> _Call:
    system, user = render(work.prompt.system, work.prompt.template, case.vars)
    params = CallParams(**work.prompt.params, seed=epoch)
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    params_dict = params.model_dump(exclude_none=True)
    key = cache_key(work.spec.provider, _cache_model(work.model, work.spec.id), messages, params_dict, epoch)
    return _Call(case, epoch, system, user, params, messages, params_dict, key)


def _cached_completions(registry: Registry, keys: list[str]) -> dict[str, Completion]:
    """Every cached response among ``keys``, in a few queries (one per call would dominate a cached re-run)."""
    found: dict[str, Completion] = {}
    with registry.session() as s:
        for i in range(0, len(keys), 500):
            rows = s.exec(select(CachedResponse).where(col(CachedResponse.key).in_(keys[i:i + 500]))).all()
            found.update({row.key: Completion.model_validate(row.completion) for row in rows})
    return found


class _Counters:
    def __init__(self, total: int, already: int) -> None:
        self.total, self.done, self.made, self.cached, self.errors = total, already, 0, 0, 0


async def run_batch(registry: Registry, batch: BatchSpec,
                    on_progress: Callable[[int, int], None] | None = None) -> BatchResult:
    """Run every (case, epoch) of the batch not stored yet; see the module docstring for the guarantees."""
    work = await asyncio.to_thread(_load_work, registry, batch)
    epochs = range(1, work.run.epochs + 1)
    todo = [_prepare(work, case, e) for case in work.cases for e in epochs if (case.id, e) not in work.done]
    counters = _Counters(len(work.cases) * len(epochs), len(work.cases) * len(epochs) - len(todo))
    judge = _make_judge(registry, work, batch.no_cache)
    hits = {} if batch.no_cache else await asyncio.to_thread(_cached_completions, registry, [c.key for c in todo])

    async def one(call: _Call) -> None:
        await _run_one(registry, work, call, hits.get(call.key), judge, counters)
        counters.done += 1
        if on_progress:
            on_progress(counters.done, counters.total)

    try:
        async with asyncio.TaskGroup() as group:
            for call in todo:
                group.create_task(one(call))
    except* FATAL_ERRORS as failed:
        err = failed.exceptions[0]
        assert isinstance(err, ProviderError)
        message = f"arm {work.run.arm} ({work.run.pair}) failed: {err.message}"
        await asyncio.to_thread(mark_failed, registry, work.run.id, message)
        raise ArmFailed(message) from None
    return BatchResult(calls=counters.total, made=counters.made, cached=counters.cached, errors=counters.errors)


def _make_judge(registry: Registry, work: _Work, no_cache: bool) -> Callable[[str], Any] | None:
    if work.judge is None:
        return None
    spec, row = work.judge
    params = CallParams(temperature=0, max_tokens=512)

    async def judge(prompt: str) -> str:
        key = cache_key(spec.provider, _cache_model(row, spec.id), [{"role": "user", "content": prompt}],
                        params.model_dump(), 0)
        hit = None if no_cache else await asyncio.to_thread(_cached_completion, registry, key)
        if hit is not None:
            return hit.text
        done = await call_limited(spec, row.limits, None, prompt, params)
        await asyncio.to_thread(_store_cache_only, registry, key, spec, done)
        return done.text

    return judge


def _store_cache_only(registry: Registry, key: str, spec: ModelSpec, done: Completion) -> None:
    with registry.session() as s:
        _insert_ignore(s, CachedResponse, {"key": key, "provider": spec.provider, "model": done.resolved_model,
                                           "completion": done.model_dump(mode="json"), "created_at": utcnow()})


async def _run_one(registry: Registry, work: _Work, call: _Call, done: Completion | None,
                   judge: Callable[[str], Any] | None, counters: _Counters) -> None:
    """Send one call unless ``done`` (a cache hit) is given, score it, store it."""
    case, epoch, messages, params_dict = call.case, call.epoch, call.messages, call.params_dict
    cached, error = done is not None, None
    if done is None:
        try:
            done = await call_limited(work.spec, work.model.limits, call.system, call.user, call.params)
            counters.made += 1
        except FATAL_ERRORS:
            raise
        except ProviderError as err:  # retries exhausted: the case fails, the arm goes on
            counters.made += err.attempts
            error = err.message
    counters.cached += cached
    counters.errors += error is not None
    output = Output(text=done.text if done else "", finish_reason=done.finish_reason if done else "error",
                    latency_ms=done.latency_ms if done else 0.0, cost_usd=done.cost_usd if done else 0.0,
                    error=error, prompt=call.user)
    scored = await score_case(case, output, judge=judge)
    row = {"run_id": work.run.id, "case_id": case.id, "epoch": epoch, "messages": messages, "params": params_dict,
           "resolved_model": done.resolved_model if done else None, "output": output.text,
           "finish_reason": output.finish_reason, "latency_ms": output.latency_ms,
           "input_tokens": done.input_tokens if done else 0, "output_tokens": done.output_tokens if done else 0,
           "cost_usd": output.cost_usd, "error": error, "cached": cached, "passed": scored.passed,
           "score": scored.score, "assertions": [r.model_dump() for r in scored.results], "created_at": utcnow()}
    cache_row = None
    if done is not None and not cached:
        real_key = cache_key(work.spec.provider, done.resolved_model, messages, params_dict, epoch)
        cache_row = {"key": real_key, "provider": work.spec.provider, "model": done.resolved_model,
                     "completion": done.model_dump(mode="json"), "created_at": utcnow()}
    await asyncio.to_thread(_store, registry, row, cache_row)


def mark_failed(registry: Registry, run_id: str, message: str) -> None:
    with registry.session() as s:
        run = s.get(EvalRun, run_id)
        if run is not None:
            run.status, run.error, run.finished_at = "failed", message, utcnow()
            s.add(run)


# ---------------------------------------------------------------- summaries


def load_outcomes(registry: Registry, run_id: str) -> list[CaseOutcome]:
    """The run's stored results as statistics inputs (tags from the dataset cases)."""
    with registry.session() as s:
        run = s.get(EvalRun, run_id)
        if run is None:
            raise ArmFailed(f"eval run {run_id} does not exist")
        tags = {row.case_id: row.data.get("tags", []) for row in
                s.exec(select(DatasetCase).where(DatasetCase.dataset_version == run.dataset_version)).all()}
        rows = s.exec(select(EvalResult).where(EvalResult.run_id == run_id)
                      .order_by(col(EvalResult.case_id), col(EvalResult.epoch))).all()
        return [CaseOutcome(case_id=r.case_id, epoch=r.epoch, passed=r.passed, score=r.score,
                            tags=tags.get(r.case_id, []), latency_ms=r.latency_ms, cost_usd=r.cost_usd,
                            input_tokens=r.input_tokens, output_tokens=r.output_tokens, error=r.error is not None,
                            assertion_types_failed=[a["type"] for a in r.assertions if not a["passed"]],
                            assertion_types=[a["type"] for a in r.assertions])
                for r in rows]


def summarize_run(registry: Registry, run_id: str, confidence: float = 0.95) -> RunSummary:
    """Summarise a run's results into ``EvalRun.summary`` and mark it done (a reused run is read, not rewritten)."""
    with registry.session() as s:
        run = s.get(EvalRun, run_id)
        if run is not None and run.status == "done" and run.summary:
            return RunSummary(run_id=run_id, summary=ArmSummary.model_validate(run.summary),
                              cached_calls=int(run.summary.get("cached_calls", 0)))
    outcomes = load_outcomes(registry, run_id)
    summary = summarize_arm(outcomes, confidence)
    with registry.session() as s:
        cached = len(s.exec(select(EvalResult.case_id).where(EvalResult.run_id == run_id,
                                                             col(EvalResult.cached).is_(True))).all())
        run = s.get(EvalRun, run_id)
        assert run is not None
        run.summary = {**summary.model_dump(mode="json"), "cached_calls": cached}
        run.status, run.finished_at = "done", utcnow()
        s.add(run)
    return RunSummary(run_id=run_id, summary=summary, cached_calls=cached)


# ---------------------------------------------------------------- the report

REPORT_KEY = "report"  # the full report lives in the target arm run's summary (no report table yet)


def build_report(registry: Registry, plan: EvalPlan, summaries: Sequence[RunSummary]) -> EvalReport:
    """Compute effects, flips and the gate from the stored results; store the full report; return it."""
    by_run = {s.run_id: s for s in summaries}
    arms = [ArmInput(arm=a.arm, pair=a.pair, run_id=a.run_id, reused=a.reused, summary=by_run[a.run_id].summary,
                     cached_calls=by_run[a.run_id].cached_calls) for a in plan.arms]
    outcomes = {a.arm: load_outcomes(registry, a.run_id) for a in plan.arms}
    target = plan.arms[-1].run_id  # joint, or the one changed arm: always a fresh run of this eval
    report = assemble_report(
        report_id=target, deployment=plan.deployment, baseline_pair=plan.baseline_pair,
        target_pair=plan.target_pair, epochs=plan.epochs, policy=plan.policy, arms=arms, outcomes=outcomes,
        dataset=DatasetRef(name=plan.dataset_name, hash=plan.dataset_hash, cases=plan.n_cases,
                           version=plan.dataset_version),
        judge=plan.judge, warnings=plan.warnings,
    )
    with registry.session() as s:
        run = s.get(EvalRun, target)
        assert run is not None
        run.summary = {**(run.summary or {}), REPORT_KEY: report.model_dump(mode="json")}
        s.add(run)
    return report


def load_report(registry: Registry, report_id: str) -> EvalReport:
    """The full stored report (every flipped case), by ``EvalReport.report_id``."""
    with registry.session() as s:
        run = s.get(EvalRun, report_id)
        if run is None or not run.summary or REPORT_KEY not in run.summary:
            raise EvalInputError(f"no eval report {report_id!r}")
        return EvalReport.model_validate(run.summary[REPORT_KEY])


def flipped_outputs(registry: Registry, report: EvalReport, limit: int = 50) -> list[FlippedOutputs]:
    """The first epoch's outputs of up to ``limit`` flipped cases, baseline next to the arm they flipped in."""
    out = []
    with registry.session() as s:
        for flip in report.flipped[:limit]:
            rows = {}
            for arm in ("baseline", flip.to_arm):
                rows[arm] = s.exec(select(EvalResult).where(EvalResult.run_id == report.arms[arm].run_id,
                                                            EvalResult.case_id == flip.case)
                                   .order_by(col(EvalResult.epoch))).first()
            text = {arm: (r.output or r.error or "") if r else "" for arm, r in rows.items()}
            out.append(FlippedOutputs(case=flip.case, to_arm=flip.to_arm, direction=flip.direction,
                                      baseline_output=text["baseline"], arm_output=text[flip.to_arm]))
    return out
