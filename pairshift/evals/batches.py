"""Running one batch of an eval arm: render, response cache, rate-limited provider call, score, store.

:func:`run_batch` runs the (case, epoch) calls of a case index range that are not stored yet. It is safe to
run twice (a retried or duplicated activity) because results are keyed by (run, case, epoch) and inserted with
ON CONFLICT DO NOTHING: nothing is repeated once stored and nothing is ever counted twice.

Where retries live: :func:`pairshift.providers.complete` retries 5xx/529/timeouts with backoff. A 429 that
carries ``retry-after`` is handed back here instead (``max_retry_after_s=0``) because the rate limit is
shared state: :mod:`pairshift.ratelimit` blocks every caller of the model until then, and the call is
queued again (at most ``RATE_LIMIT_RETRIES`` times). A call that still fails is stored as an error result
(it counts as a failed case); a model that is not found, a bad request, bad credentials, a forbidden model or
an account out of quota fail the arm. Two errors belong to one case and the arm goes on: the case's input is
longer than the model's context window (kind ``context_length``), and a response whose token limit ran out
before any text (kind ``truncated``: reasoning used the budget up). Each result stores its error kind.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, select

from pairshift.contracts.evals import BatchResult, BatchSpec
from pairshift.datasets import Case
from pairshift.evals.planning import ArmFailed, load_cases, model_spec
from pairshift.prompts import TemplateProblem, render
from pairshift.providers import (
    AuthError,
    BadRequest,
    CallParams,
    Completion,
    ContextLengthExceeded,
    Message,
    ModelNotFound,
    ModelSpec,
    PermissionDenied,
    ProviderError,
    QuotaExceeded,
    RateLimited,
    RetryPolicy,
    complete,
)
from pairshift.ratelimit import limiter_for
from pairshift.registry.lookup import find_model
from pairshift.registry.models import (
    CachedResponse,
    EvalResult,
    EvalRun,
    Model,
    PromptVersion,
    utcnow,
)
from pairshift.registry.store import Registry
from pairshift.scorers import Output, score_case

FATAL_ERRORS = (ModelNotFound, BadRequest, AuthError, PermissionDenied, QuotaExceeded)
RATE_LIMIT_RETRIES = 8
CALL_RETRY = RetryPolicy(max_retry_after_s=0.0)  # see the module docstring: 429 + retry-after come back here


def cache_key(
    provider: str, model: str, messages: list[dict[str, Any]], params: dict[str, Any], epoch: int
) -> str:
    """The response-cache key of one call: everything that determines the output, the epoch included."""
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
        done = {
            (c, e)
            for c, e in s.exec(
                select(EvalResult.case_id, EvalResult.epoch).where(
                    EvalResult.run_id == run.id, col(EvalResult.case_id).in_(ids)
                )
            ).all()
        }
        judge_row = find_model(s, batch.judge) if batch.judge else None
        judge = (model_spec(judge_row, batch.judge), judge_row) if judge_row and batch.judge else None
        return _Work(run, model_spec(model, run.model), model, prompt, cases, done, judge)


def _insert_ignore(s: Session, table: Any, values: dict[str, Any]) -> None:
    """INSERT ... ON CONFLICT DO NOTHING: a duplicate (run, case, epoch) or cache key is kept once."""
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


async def call_limited(
    spec: ModelSpec, limits: dict[str, Any], system: str | None, user: str, params: CallParams
) -> Completion:
    """One call through the model's process-wide limiter; 429 + retry-after push the bucket (module doc)."""
    limiter = limiter_for(spec.provider, spec.id, limits)
    estimate = (len(system or "") + len(user)) / 4 + params.max_tokens
    for attempt in range(RATE_LIMIT_RETRIES + 1):
        async with limiter.slot(estimate):
            try:
                done = await complete(
                    spec, system, [Message(role="user", content=user)], params, retry=CALL_RETRY
                )
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
    params = CallParams(
        **{**work.prompt.params, "seed": epoch}
    )  # the epoch's seed (planning refuses one set)
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user}
    ]
    params_dict = params.model_dump(exclude_none=True)
    key = cache_key(work.spec.provider, _cache_model(work.model, work.spec.id), messages, params_dict, epoch)
    return _Call(case, epoch, system, user, params, messages, params_dict, key)


def _cached_completions(registry: Registry, keys: list[str]) -> dict[str, Completion]:
    """Every cached response among ``keys``, in a few queries (one per call would dominate a re-run)."""
    found: dict[str, Completion] = {}
    with registry.session() as s:
        for i in range(0, len(keys), 500):
            rows = s.exec(select(CachedResponse).where(col(CachedResponse.key).in_(keys[i : i + 500]))).all()
            found.update({row.key: Completion.model_validate(row.completion) for row in rows})
    return found


class _Counters:
    def __init__(self, total: int, already: int) -> None:
        self.total, self.done, self.made, self.cached, self.errors = total, already, 0, 0, 0


async def run_batch(
    registry: Registry, batch: BatchSpec, on_progress: Callable[[int, int], None] | None = None
) -> BatchResult:
    """Run every (case, epoch) of the batch not stored yet; see the module docstring for the guarantees."""
    work = await asyncio.to_thread(_load_work, registry, batch)
    epochs = range(1, work.run.epochs + 1)
    try:
        todo = [
            _prepare(work, case, e) for case in work.cases for e in epochs if (case.id, e) not in work.done
        ]
    except (TemplateProblem, ValueError, TypeError) as exc:  # bad input: retrying cannot fix it
        message = f"arm {work.run.arm} ({work.run.pair}) cannot prepare its requests: {exc}"
        await asyncio.to_thread(mark_failed, registry, work.run.id, message)
        raise ArmFailed(message) from None
    counters = _Counters(len(work.cases) * len(epochs), len(work.cases) * len(epochs) - len(todo))
    judge = _make_judge(registry, work, batch.no_cache)
    hits = (
        {}
        if batch.no_cache
        else await asyncio.to_thread(_cached_completions, registry, [c.key for c in todo])
    )

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
    return BatchResult(
        calls=counters.total, made=counters.made, cached=counters.cached, errors=counters.errors
    )


def _make_judge(registry: Registry, work: _Work, no_cache: bool) -> Callable[[str], Any] | None:
    if work.judge is None:
        return None
    spec, row = work.judge
    params = CallParams(temperature=0, max_tokens=512)

    async def judge(prompt: str) -> str:
        key = cache_key(
            spec.provider,
            _cache_model(row, spec.id),
            [{"role": "user", "content": prompt}],
            params.model_dump(),
            0,
        )
        hit = None if no_cache else await asyncio.to_thread(_cached_completion, registry, key)
        if hit is not None:
            return hit.text
        done = await call_limited(spec, row.limits, None, prompt, params)
        await asyncio.to_thread(_store_cache_only, registry, key, spec, done)
        return done.text

    return judge


def _store_cache_only(registry: Registry, key: str, spec: ModelSpec, done: Completion) -> None:
    with registry.session() as s:
        _insert_ignore(
            s,
            CachedResponse,
            {
                "key": key,
                "provider": spec.provider,
                "model": done.resolved_model,
                "completion": done.model_dump(mode="json"),
                "created_at": utcnow(),
            },
        )


async def _run_one(
    registry: Registry,
    work: _Work,
    call: _Call,
    done: Completion | None,
    judge: Callable[[str], Any] | None,
    counters: _Counters,
) -> None:
    """Send one call unless ``done`` (a cache hit) is given, score it, store it."""
    case, epoch, messages, params_dict = call.case, call.epoch, call.messages, call.params_dict
    cached, error, error_kind = done is not None, None, None
    if done is None:
        try:
            done = await call_limited(work.spec, work.model.limits, call.system, call.user, call.params)
            counters.made += 1
        except ContextLengthExceeded as err:  # this case's input is too long: its error, the arm goes on
            counters.made += err.attempts
            error, error_kind = err.message, err.kind
        except FATAL_ERRORS:
            raise
        except ProviderError as err:  # retries exhausted: the case fails, the arm goes on
            counters.made += err.attempts
            error, error_kind = err.message, err.kind
    if done is not None and done.truncated:
        error, error_kind = truncation_message(done, call.params), "truncated"
    counters.cached += cached
    counters.errors += error is not None
    output = Output(
        text=done.text if done else "",
        finish_reason=done.finish_reason if done else "error",
        latency_ms=done.latency_ms if done else 0.0,
        cost_usd=done.cost_usd if done else 0.0,
        error=error,
        prompt=call.user,
    )
    scored = await score_case(case, output, judge=judge)
    row = {
        "run_id": work.run.id,
        "case_id": case.id,
        "epoch": epoch,
        "messages": messages,
        "params": params_dict,
        "resolved_model": done.resolved_model if done else None,
        "output": output.text,
        "finish_reason": output.finish_reason,
        "latency_ms": output.latency_ms,
        "input_tokens": done.input_tokens if done else 0,
        "output_tokens": done.output_tokens if done else 0,
        "cost_usd": output.cost_usd,
        "error": error,
        "error_kind": error_kind,
        "cached_input_tokens": done.cached_input_tokens if done else 0,
        "dropped_params": (done.dropped_params or None) if done else None,
        "cached": cached,
        "passed": scored.passed,
        "score": scored.score,
        "assertions": [r.model_dump() for r in scored.results],
        "created_at": utcnow(),
    }
    cache_row = None
    if done is not None and not cached:
        real_key = cache_key(work.spec.provider, done.resolved_model, messages, params_dict, epoch)
        cache_row = {
            "key": real_key,
            "provider": work.spec.provider,
            "model": done.resolved_model,
            "completion": done.model_dump(mode="json"),
            "created_at": utcnow(),
        }
    await asyncio.to_thread(_store, registry, row, cache_row)


def truncation_message(done: Completion, params: CallParams) -> str:
    """Why a response with no text is a configuration error rather than a wrong answer."""
    spent = f" ({done.reasoning_tokens} reasoning tokens)" if done.reasoning_tokens else ""
    return (
        f"truncated: model {done.resolved_model} used its whole token limit (max_tokens {params.max_tokens})"
        f"{spent} before writing any text; raise the prompt's max_tokens or lower its reasoning_effort"
    )


def mark_failed(registry: Registry, run_id: str, message: str) -> None:
    """Mark an arm's run failed, with why (the arm cannot go on)."""
    with registry.session() as s:
        run = s.get(EvalRun, run_id)
        if run is not None:
            run.status, run.error, run.finished_at = "failed", message, utcnow()
            s.add(run)
