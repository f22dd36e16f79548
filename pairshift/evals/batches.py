"""Running one batch of an eval arm: render, response cache, rate-limited provider call, score, store.

:func:`run_batch` runs the (case, epoch) calls of a case index range that are not stored yet. It is safe to
run twice (a retried or duplicated activity) because results are keyed by (run, case, epoch) and inserted with
ON CONFLICT DO NOTHING: nothing is repeated once stored and nothing is ever counted twice.

Where retries live: :func:`pairshift.providers.complete` retries 5xx/529/timeouts with backoff. A 429 that
carries ``retry-after`` is handed back here instead (``max_retry_after_s=0``) because the rate limit is
shared state: :mod:`pairshift.ratelimit` blocks every caller of the model until then, and the call is
queued again (at most ``RATE_LIMIT_RETRIES`` times). A call that still fails with a transient error (5xx,
529, a timeout, a lost connection, a 429) is not a result: nothing is stored for it, the batch's other cases
are, and the batch then raises :class:`ProviderOutage` (retryable), so Temporal retries the activity with its
backoff and the retry makes only the missing calls; an outage longer than the calls' own retries is waited
out, not recorded as failed cases (issue 12). Any other provider error that survives its retries is stored
as an error result (it counts as a failed case); a model that is not found, a bad request, bad credentials, a
forbidden model or an account out of quota fail the arm. Two errors belong to one case and the arm goes on:
the case's input is longer than the model's context window (kind ``context_length``), and a response whose
token limit ran out before any text (kind ``truncated``: reasoning used the budget up). Each result stores
its error kind.

The response cache (``response_cache``) is keyed by what determines an answer: how the model is called (its
provider, base URL, API and request rules), the snapshot, the rendered messages, the params and the epoch.
A pinned snapshot reads it; an alias never does (the provider may have repointed it since: serving the old
snapshot's answers would hide exactly the drift pairshift exists to catch), and its answers are written under
the snapshot the response names. Entries older than ``CACHE_MAX_AGE`` (the baseline reuse limit) are not
served; ``no_cache`` skips reads and replaces the stored answer.

Judge failures are the judge's (:class:`JudgeFailed`): the candidate's completion is queued for the cache
before it is scored and written with the case's result (:class:`_Writes`, also when the batch fails), so a
case whose grading failed keeps its answer, is stored with error kind ``grader_error`` (not a failure of the
arm) and is graded again, without a new provider call, when the activity is retried; the batch raises
``JudgeFailed`` (retryable, bounded by the workflow's policy) after its other cases are stored.
A judge that refuses for good (unknown or retired, bad credentials, a bad request) raises ``JudgeRefused``:
the eval stops naming the judge, and the arm under test is not marked failed.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, select

from pairshift.contracts.evals import BatchResult, BatchSpec
from pairshift.datasets import Case
from pairshift.evals.planning import CACHE_MAX_AGE, ArmFailed, call_fingerprint, case_pages, load_cases
from pairshift.external import prompt_row, request_for
from pairshift.prompts import TemplateProblem
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
    ProviderTimeout,
    ProviderUnavailable,
    QuotaExceeded,
    RateLimited,
    RetryPolicy,
    complete,
)
from pairshift.providers.cost import cost_usd
from pairshift.ratelimit import limiter_for
from pairshift.registry.models import (
    CachedResponse,
    EvalResult,
    EvalRun,
    PromptVersion,
    utcnow,
)
from pairshift.registry.store import Registry
from pairshift.resolver import ResolvedModel, resolve_model
from pairshift.scorers import Output, score_case

FATAL_ERRORS = (ModelNotFound, BadRequest, AuthError, PermissionDenied, QuotaExceeded)
RATE_LIMIT_RETRIES = 8
CALL_RETRY = RetryPolicy(max_retry_after_s=0.0)  # see the module docstring: 429 + retry-after come back here


JUDGE_ATTEMPTS = 3  # a judge call that is rate limited without retry-after or unavailable, at most
JUDGE_BACKOFF_S = 1.0  # doubled between the judge's attempts
GRADER_ERROR = "grader_error"  # the error kind of a case whose grading failed (the judge's failure)
FLUSH_ROWS = 32  # a batch writes its results (and their cached answers) this many at a time (_Writes)
FLUSH_S = 1.0  # ... or once the oldest waiting row has waited this long


class ProviderOutage(RuntimeError):
    """Some calls of the batch still failed transiently after their retries: nothing is stored for them (the
    batch's other results are), and the batch is retried by the activity's retry policy."""


class JudgeFailed(RuntimeError):
    """The judge failed on some cases after its retries; their answers are stored, grading is retried."""


class JudgeRefused(RuntimeError):
    """The judge refuses for good (not found, retired, credentials, bad request): the eval stops, naming it"""


def cache_key(
    spec: ModelSpec | str,
    model: str,
    messages: list[dict[str, Any]],
    params: dict[str, Any],
    epoch: int,
) -> str:
    """The response-cache key of one call: how the model is called, its snapshot, the request and the epoch.

    ``spec`` is the call's spec (a bare provider name keys by provider alone, as callers outside an eval do).
    """
    how = call_fingerprint(spec) if isinstance(spec, ModelSpec) else {"provider": spec}
    how = {**how, "id": None}  # the name asked for is not the answer's source: the snapshot is
    blob = json.dumps([how, model, messages, params, epoch], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass
class _Work:
    """Everything a batch needs, loaded once."""

    run: EvalRun
    spec: ModelSpec
    model: ResolvedModel
    prompt: PromptVersion
    cases: list[Case]
    done: set[tuple[str, int]]
    regrade: dict[tuple[str, int], EvalResult]  # stored answers whose grading failed: graded again
    judge: tuple[ModelSpec, ResolvedModel] | None


def _load_work(registry: Registry, batch: BatchSpec) -> _Work:
    with registry.session() as s:
        run = s.get(EvalRun, batch.run_id)
        if run is None:
            raise ArmFailed(f"eval run {batch.run_id} does not exist")
        model, prompt = resolve_model(s, run.model), prompt_row(s, run.prompt)
        if model is None or prompt is None:
            raise ArmFailed(f"eval run {run.id}: model {run.model} or prompt {run.prompt} left the registry")
        cases = load_cases(s, run.dataset_version, batch.start, batch.stop)
        ids = [c.id for c in cases]
        stored = s.exec(
            select(EvalResult).where(EvalResult.run_id == run.id, col(EvalResult.case_id).in_(ids))
        ).all()
        done = {(r.case_id, r.epoch) for r in stored if r.error_kind != GRADER_ERROR}
        regrade = {(r.case_id, r.epoch): r for r in stored if r.error_kind == GRADER_ERROR}
        judge_model = resolve_model(s, batch.judge) if batch.judge else None
        judge = (judge_model.spec(), judge_model) if judge_model else None
        return _Work(run, model.spec(), model, prompt, cases, done, regrade, judge)


def _store_rows(
    registry: Registry, cache: list[dict[str, Any]], results: list[dict[str, Any]], refresh: bool
) -> None:
    """Provider answers for the cache and case results, in one transaction of one statement each
    (executemany): a stored grader error is replaced once the case could be graded; ``refresh`` (no_cache)
    replaces a cached answer, else a stored one is kept."""
    with registry.session() as s:
        insert = pg_insert if s.get_bind().dialect.name == "postgresql" else sqlite_insert
        if cache:
            table = CachedResponse.__table__  # type: ignore[attr-defined]
            stmt = insert(table)
            stmt = (
                stmt.on_conflict_do_update(
                    index_elements=["key"], set_={k: stmt.excluded[k] for k in cache[0] if k != "key"}
                )
                if refresh
                else stmt.on_conflict_do_nothing()
            )
            s.connection().execute(stmt, cache)
        if results:
            table = EvalResult.__table__  # type: ignore[attr-defined]
            keys = ["run_id", "case_id", "epoch"]
            stmt = insert(table)
            stmt = stmt.on_conflict_do_update(
                index_elements=keys,
                set_={k: stmt.excluded[k] for k in results[0] if k not in keys},
                where=table.c.error_kind == GRADER_ERROR,
            )
            s.connection().execute(stmt, results)


def _store_cache(registry: Registry, cache: dict[str, Any], refresh: bool) -> None:
    """A provider answer in the cache (a judge's); ``refresh`` (no_cache) replaces a stored one."""
    _store_rows(registry, [cache], [], refresh)


class _Writes:
    """A batch's rows on their way to the registry: provider answers for the cache (each before its case is
    scored) and case results, written together in one transaction once ``FLUSH_ROWS`` are waiting or the
    oldest has waited ``FLUSH_S``, and at the end of the batch (:meth:`flush`, also when it fails).

    One transaction of a few executemany statements per flush instead of two per call: a call's own INSERTs
    were most of a batch's CPU (bench/results/scale.md, Eval speed). What a killed worker had not flushed
    yet is at most ``FLUSH_ROWS`` answers (or ``FLUSH_S`` of them): the retried batch makes those calls again.
    Within a flush an answer cached twice under one key is sent once, as the rows in turn would have left it
    (the first kept, or the last with ``refresh``).
    """

    def __init__(self, registry: Registry, refresh: bool) -> None:
        self.registry, self.refresh = registry, refresh
        self.cache: dict[str, dict[str, Any]] = {}
        self.results: list[dict[str, Any]] = []
        self.since: float | None = None  # when the oldest waiting row came
        self.lock = asyncio.Lock()

    def add_cache(self, row: dict[str, Any]) -> None:
        if self.refresh or row["key"] not in self.cache:
            self.cache[row["key"]] = row
        self.since = self.since if self.since is not None else time.monotonic()

    async def add_result(self, row: dict[str, Any]) -> None:
        self.results.append(row)
        self.since = self.since if self.since is not None else time.monotonic()
        if len(self.results) >= FLUSH_ROWS or time.monotonic() - self.since >= FLUSH_S:
            await self.flush()

    async def flush(self) -> None:
        async with self.lock:  # one flush at a time, in the order the rows came
            cache, results = list(self.cache.values()), self.results
            self.cache, self.results, self.since = {}, [], None
            if cache or results:
                await asyncio.to_thread(_store_rows, self.registry, cache, results, self.refresh)


def _fresh(created_at: Any) -> bool:
    """A cache entry young enough to serve (CACHE_MAX_AGE, the baseline reuse limit)."""
    if created_at.tzinfo is None:
        created_at = created_at.replace(tzinfo=UTC)
    return bool(created_at >= utcnow() - CACHE_MAX_AGE)


def _cached_completion(registry: Registry, key: str) -> Completion | None:
    with registry.session() as s:
        row = s.get(CachedResponse, key)
        return Completion.model_validate(row.completion) if row and _fresh(row.created_at) else None


def _read_model(model: ResolvedModel) -> str | None:
    """The snapshot a cache read is keyed by: a pinned snapshot's id; an alias never reads (module doc)."""
    return None if model.unpinned else model.snapshot


def _write_model(model: ResolvedModel, done: Completion) -> str:
    """The snapshot an answer is cached under: the pinned id asked for, or the one an alias answered as."""
    return model.row.id if not model.unpinned else done.resolved_model


async def call_limited(
    spec: ModelSpec,
    limits: dict[str, Any],
    system: str | None,
    user: str | Sequence[Message],
    params: CallParams,
    *,
    bucket: str | None = None,
) -> Completion:
    """One call through the model's process-wide limiter; 429 + retry-after push the bucket (module doc).
    Sent as JSON without the SDK where the wire allows (``complete(direct=True)``, :mod:`..providers.direct`).

    ``user`` is the user message, or the turns of a request (a ``prompt: external`` deployment's case).

    ``bucket`` names the provider limit (:attr:`ResolvedModel.bucket`, the row): an alias and the snapshot
    listing it share one; None keys by the name called.
    """
    limiter = limiter_for(spec.provider, bucket or spec.id, limits)
    turns = [Message(role="user", content=user)] if isinstance(user, str) else list(user)
    estimate = (len(system or "") + sum(len(t.content) for t in turns)) / 4 + params.max_tokens
    for attempt in range(RATE_LIMIT_RETRIES + 1):
        async with limiter.slot(estimate):
            try:
                done = await complete(spec, system, turns, params, retry=CALL_RETRY, direct=True)
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
    turns: list[Message]
    params: CallParams
    messages: list[dict[str, Any]]
    params_dict: dict[str, Any]
    key: str


def _prepare(work: _Work, case: Case, epoch: int) -> _Call:
    return prepare_call(work.prompt, work.spec, work.model, case, epoch)


def prepare_call(
    prompt: PromptVersion, spec: ModelSpec, model: ResolvedModel, case: Case, epoch: int
) -> _Call:
    """One (case, epoch) of an arm as it is sent: rendered, its params and its cache key ("": never read)."""
    system, turns, base = request_for(prompt, case.vars)  # rendered, or an external case's own
    params = CallParams(**{**base, "seed": epoch})  # the epoch's seed (planning refuses one set)
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": t.role, "content": t.content} for t in turns
    ]
    params_dict = params.model_dump(exclude_none=True)
    read = _read_model(model)
    key = cache_key(spec, read, messages, params_dict, epoch) if read else ""
    return _Call(case, epoch, system, turns, params, messages, params_dict, key)


def fully_cached(
    s: Session, prompt: PromptVersion, model: ResolvedModel, dataset_version: str, epochs: int
) -> bool:
    """Whether the response cache holds a fresh answer for every (case, epoch) of an arm of ``prompt`` on
    ``model``: its batches would make no provider call. Reads the first case alone first (a fresh arm
    misses there), then the cases a page at a time."""
    if _read_model(model) is None:
        return False
    spec, first = model.spec(), load_cases(s, dataset_version, 0, 1)
    probed = {c.id for c in first}
    for i, page in enumerate(itertools.chain([first], case_pages(s, dataset_version))):
        calls = [prepare_call(prompt, spec, model, c, e) for c in page for e in range(1, epochs + 1)]
        keys = {c.key for c in calls if i == 0 or c.case.id not in probed}
        if _cached_count(s, sorted(keys)) < len(keys):
            return False
    return True


def _cached_completions(registry: Registry, keys: list[str]) -> dict[str, Completion]:
    """Every cached response among ``keys``, in a few queries (one per call would dominate a re-run)."""
    found: dict[str, Completion] = {}
    with registry.session() as s:
        for i in range(0, len(keys), 500):
            rows = s.exec(select(CachedResponse).where(col(CachedResponse.key).in_(keys[i : i + 500]))).all()
            found.update(
                {row.key: Completion.model_validate(row.completion) for row in rows if _fresh(row.created_at)}
            )
    return found


def _cached_count(s: Session, keys: list[str]) -> int:
    """How many of ``keys`` have a fresh cached response (their answers are not read)."""
    count = 0
    for i in range(0, len(keys), 500):
        rows = s.exec(
            select(CachedResponse.created_at).where(col(CachedResponse.key).in_(keys[i : i + 500]))
        ).all()
        count += sum(1 for created_at in rows if _fresh(created_at))
    return count


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
    keys = [c.key for c in todo if c.key]
    hits = {} if batch.no_cache else await asyncio.to_thread(_cached_completions, registry, keys)
    ungraded: list[str] = []
    unavailable: list[ProviderError] = []
    writes = _Writes(registry, batch.no_cache)

    async def one(call: _Call) -> None:
        stored = work.regrade.get((call.case.id, call.epoch))
        done = _stored_completion(stored, work) if stored is not None else hits.get(call.key) or None
        try:
            graded = await _run_one(
                registry,
                work,
                call,
                done,
                judge,
                counters,
                no_cache=batch.no_cache,
                regraded=bool(stored),
                writes=writes,
            )
        except ProviderError as err:
            if not err.retryable:
                raise
            unavailable.append(err)  # not a result: the retried batch makes this call again
            return
        if graded is not None:
            ungraded.append(graded)
        counters.done += 1
        if on_progress:
            on_progress(counters.done, counters.total)

    try:
        try:
            async with asyncio.TaskGroup() as group:
                for call in todo:
                    group.create_task(one(call))
        finally:
            await writes.flush()  # what was answered is kept, also when the batch fails
    except* JudgeRefused as refused:
        raise refused.exceptions[0] from None
    except* FATAL_ERRORS as failed:
        err = failed.exceptions[0]
        assert isinstance(err, ProviderError)
        message = f"arm {work.run.arm} ({work.run.pair}) failed: {err.message}"
        await asyncio.to_thread(mark_failed, registry, work.run.id, message)
        raise ArmFailed(message) from None
    if unavailable:
        raise ProviderOutage(
            f"{len(unavailable)} of {len(todo)} calls of arm {work.run.arm} ({work.run.pair}) still failed "
            f"after their retries, stored nothing and are retried with the batch: {unavailable[-1].message}"
        )
    if ungraded:
        raise JudgeFailed(
            f"judge {batch.judge} failed on {len(ungraded)} case(s) of arm {work.run.arm} ({work.run.pair}), "
            f"their answers are stored and grading is retried: {ungraded[0]}"
        )
    return BatchResult(
        calls=counters.total, made=counters.made, cached=counters.cached, errors=counters.errors
    )


def _stored_completion(row: EvalResult, work: _Work) -> Completion:
    """The stored answer of a case whose grading failed: graded again without a new provider call."""
    return Completion(
        text=row.output or "",
        resolved_model=row.resolved_model or work.spec.id,
        input_tokens=row.input_tokens,
        output_tokens=row.output_tokens,
        latency_ms=row.latency_ms,
        cost_usd=row.cost_usd,
        finish_reason=row.finish_reason or "stop",
        cached_input_tokens=row.cached_input_tokens,
        dropped_params=row.dropped_params or [],
    )


def _make_judge(registry: Registry, work: _Work, no_cache: bool) -> Callable[[str], Any] | None:
    if work.judge is None:
        return None
    spec, model = work.judge
    params = CallParams(temperature=0, max_tokens=512)

    async def judge(prompt: str) -> str:
        messages = [{"role": "user", "content": prompt}]
        read = _read_model(model)
        if read and not no_cache:
            hit = await asyncio.to_thread(
                _cached_completion, registry, cache_key(spec, read, messages, params.model_dump(), 0)
            )
            if hit is not None:
                return hit.text
        done = await _judge_call(spec, model, prompt, params)
        key = cache_key(spec, _write_model(model, done), messages, params.model_dump(), 0)
        await asyncio.to_thread(_store_cache, registry, _cache_row(key, spec, done), no_cache)
        return done.text

    return judge


async def _judge_call(spec: ModelSpec, model: ResolvedModel, prompt: str, params: CallParams) -> Completion:
    """The judge's call, retried a few times when rate limited without retry-after or unavailable."""
    for attempt in range(JUDGE_ATTEMPTS):
        try:
            return await call_limited(spec, model.row.limits, None, prompt, params, bucket=model.bucket)
        except FATAL_ERRORS as err:
            raise JudgeRefused(
                f"judge {spec.id} refused: {err.message} (the arm under test is not at fault)"
            ) from None
        except (RateLimited, ProviderUnavailable, ProviderTimeout):
            if attempt == JUDGE_ATTEMPTS - 1:
                raise
            await asyncio.sleep(JUDGE_BACKOFF_S * 2**attempt)
    raise AssertionError("unreachable")


def _cache_row(key: str, spec: ModelSpec, done: Completion) -> dict[str, Any]:
    return {
        "key": key,
        "provider": spec.provider,
        "model": done.resolved_model,
        "completion": done.model_dump(mode="json"),
        "created_at": utcnow(),
    }


async def _run_one(
    registry: Registry,
    work: _Work,
    call: _Call,
    done: Completion | None,
    judge: Callable[[str], Any] | None,
    counters: _Counters,
    *,
    no_cache: bool = False,
    regraded: bool = False,
    via_batch: bool = False,
    writes: _Writes | None = None,
) -> str | None:
    """Send one call unless ``done`` (a cache hit, stored answer, batch line) is given; cache, score, store.

    ``via_batch``: ``done`` is a provider batch's fresh answer (cached like a call just made). ``writes``:
    the batch's rows waiting to be written (:class:`_Writes`); without it the case's rows are written now.

    Returns None, or why the judge could not grade it (the case is stored as a grader error, module doc).
    """
    case, epoch, messages, params_dict = call.case, call.epoch, call.messages, call.params_dict
    now, writes = writes is None, writes or _Writes(registry, no_cache)
    cached, error, error_kind = done is not None and not regraded and not via_batch, None, None
    if done is None:
        try:
            done = await call_limited(
                work.spec,
                work.model.row.limits,
                call.system,
                call.turns,
                call.params,
                bucket=work.model.bucket,
            )
            counters.made += 1
        except ContextLengthExceeded as err:  # this case's input is too long: its error, the arm goes on
            counters.made += err.attempts
            error, error_kind = err.message, err.kind
        except FATAL_ERRORS:
            raise
        except ProviderError as err:  # retries exhausted
            counters.made += err.attempts
            if err.retryable:  # transient: the batch is retried, nothing is stored for this case
                raise
            # the case fails, the arm goes on
            error, error_kind = err.message, err.kind
    if done is not None and (via_batch or not cached and not regraded):
        # queued before scoring: a judge failure never loses a paid answer
        key = cache_key(work.spec, _write_model(work.model, done), messages, params_dict, epoch)
        writes.add_cache(_cache_row(key, work.spec, done))
    if done is not None and done.truncated:
        error, error_kind = truncation_message(done, call.params), "truncated"
    output = Output(
        text=done.text if done else "",
        finish_reason=done.finish_reason if done else "error",
        latency_ms=done.latency_ms if done else 0.0,
        cost_usd=done.cost_usd if done else 0.0,
        error=error,
        prompt=call.turns[-1].content,
    )
    grader_error = None
    try:
        scored = await score_case(case, output, judge=judge)
    except (RateLimited, ProviderUnavailable, ProviderTimeout, ProviderError) as err:
        grader_error = f"case {case.id!r} epoch {epoch}: {err.message}"
        scored = None
    counters.cached += cached
    counters.errors += error is not None
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
        "error": error if grader_error is None else f"grader error (judge): {grader_error}",
        "error_kind": error_kind if grader_error is None else GRADER_ERROR,
        "cached_input_tokens": done.cached_input_tokens if done else 0,
        "dropped_params": (done.dropped_params or None) if done else None,
        "cached": cached,
        "via_batch": via_batch,
        "online_cost_usd": online_cost(work.spec, done) if via_batch and done else None,
        "passed": scored.passed if scored else False,
        "score": scored.score if scored else 0.0,
        "assertions": [r.model_dump() for r in scored.results] if scored else [],
        "created_at": utcnow(),
    }
    await writes.add_result(row)
    if now:
        await writes.flush()
    return grader_error


def online_cost(spec: ModelSpec, done: Completion) -> float:
    """What a batch answer would have cost online (same tokens, online prices)."""
    return cost_usd(
        spec,
        done.input_tokens,
        done.output_tokens,
        cached_input_tokens=done.cached_input_tokens,
        cache_write_5m_tokens=done.cache_write_tokens,
    )


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
