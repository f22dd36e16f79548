"""Eval arms through the providers' batch APIs (issue 18): submit once, look, collect into the same tables.

A batch arm's case range becomes one provider batch (:mod:`pairshift.providers.batch_api`): every (case,
epoch) not stored yet whose answer is not in the response cache, keyed by a ``custom_id`` of (run, arm, case
index, epoch). Three steps, each a short activity; the waiting between them is the workflow's durable timers:

- :func:`submit` writes the ``provider_batches`` row (``submitting``, with the custom_id -> (case, epoch) map)
  before it asks the provider, and the provider's batch id right after, so a retried or resumed submit finds
  the row and returns the same batch: a batch is submitted once. The one window left is a worker killed
  between the provider's answer and that write: an OpenAI batch is found again by its
  ``metadata.pairshift_key``; an Anthropic batch (no metadata) is submitted a second time and its first copy
  is billed but never read. Cache hits and answers awaiting a regrade are stored here, without a request.
- :func:`poll` looks once; :func:`collect` reads an ended batch and stores each succeeded line exactly like
  an online answer (response cache, scoring, ``eval_results`` insert-if-absent, priced at batch prices with
  its online price beside it). Errored, expired and canceled lines are left unstored: the workflow retries
  them once in a follow-up batch (round 1), then online (:func:`pairshift.evals.batches.run_batch` runs what
  is still missing). Collecting twice stores nothing twice.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter

from pairshift.contracts.evals import BatchSpec, CollectResult, PollResult, ProviderBatchSpec, SubmitResult
from pairshift.evals.batches import (
    FATAL_ERRORS,
    _cached_completions,
    _Call,
    _Counters,
    _load_work,
    _make_judge,
    _prepare,
    _run_one,
    _stored_completion,
    _Work,
    mark_failed,
)
from pairshift.evals.planning import ArmFailed
from pairshift.providers import batch_api
from pairshift.providers.rules import outgoing
from pairshift.registry.models import EvalResult, ProviderBatch, utcnow
from pairshift.registry.store import Registry


def custom_id(run_id: str, arm: str, index: int, epoch: int) -> str:
    """The request's id in its batch: (run, arm, case index, epoch), within Anthropic's 64 [a-zA-Z0-9_-]."""
    run = hashlib.sha256(run_id.encode()).hexdigest()[:12]
    return f"r{run}-{arm}-c{index}-e{epoch}"


def _work(registry: Registry, spec: ProviderBatchSpec) -> _Work:
    batch = BatchSpec(
        run_id=spec.run_id, start=spec.start, stop=spec.stop, no_cache=spec.no_cache, judge=spec.judge
    )
    return _load_work(registry, batch)


def _calls(work: _Work, spec: ProviderBatchSpec) -> dict[str, _Call]:
    """Every (case, epoch) of the range not stored yet, by custom_id."""
    calls = {}
    for i, case in enumerate(work.cases):
        for epoch in range(1, work.run.epochs + 1):
            if (case.id, epoch) not in work.done:
                calls[custom_id(spec.run_id, spec.arm, spec.start + i, epoch)] = _prepare(work, case, epoch)
    return calls


def _row(registry: Registry, key: str) -> ProviderBatch | None:
    with registry.session() as s:
        row = s.get(ProviderBatch, key)
        if row is not None:
            s.expunge(row)
        return row


def _save(registry: Registry, row: ProviderBatch) -> None:
    with registry.session() as s:
        s.merge(row)


async def _store_free(
    registry: Registry, work: _Work, spec: ProviderBatchSpec, calls: dict[str, _Call]
) -> int:
    """Store the calls answered without a request (cache hits, answers to regrade); return how many."""
    hits = (
        {}
        if spec.no_cache
        else await asyncio.to_thread(_cached_completions, registry, [c.key for c in calls.values() if c.key])
    )
    judge = _make_judge(registry, work, spec.no_cache)
    counters = _Counters(len(calls), 0)
    free = 0
    for cid, call in list(calls.items()):
        stored = work.regrade.get((call.case.id, call.epoch))
        done = _stored_completion(stored, work) if stored is not None else hits.get(call.key)
        if done is None:
            continue
        await _run_one(
            registry, work, call, done, judge, counters, no_cache=spec.no_cache, regraded=stored is not None
        )
        del calls[cid]
        free += 1
    return free


async def submit(registry: Registry, spec: ProviderBatchSpec) -> SubmitResult:
    """Submit the range's missing calls as one provider batch, at most once (module docstring)."""
    row = await asyncio.to_thread(_row, registry, spec.key)
    if row is not None and row.provider_batch_id is not None:
        return SubmitResult(
            key=spec.key, provider_batch_id=row.provider_batch_id, requests=len(row.requests), resumed=True
        )
    if row is not None and row.status == "empty":
        return SubmitResult(key=spec.key)
    work = await asyncio.to_thread(_work, registry, spec)
    calls = _calls(work, spec)
    cached = await _store_free(registry, work, spec, calls)
    requests = {cid: [c.case.id, c.epoch] for cid, c in calls.items()}
    if row is None:
        row = ProviderBatch(
            key=spec.key,
            run_id=spec.run_id,
            arm=spec.arm,
            round=spec.round,
            provider=work.spec.provider,
            model=work.spec.id,
            requests=requests,
        )
    elif (found := await batch_api.find(work.spec, spec.key)) is not None:
        return await _submitted(registry, row, found, cached, resumed=True)
    row.requests, row.status = requests, "submitting" if calls else "empty"
    await asyncio.to_thread(_save, registry, row)  # before the provider is asked (module docstring)
    if not calls:
        return SubmitResult(key=spec.key, cached=cached)
    batch_calls = [batch_api.BatchCall(cid, c.system, c.turns, c.params) for cid, c in calls.items()]
    try:
        batch_id = await batch_api.create(work.spec, batch_calls, spec.key)
    except FATAL_ERRORS as err:
        message = f"arm {work.run.arm} ({work.run.pair}) failed: {err.message}"
        await asyncio.to_thread(mark_failed, registry, work.run.id, message)
        raise ArmFailed(message) from None
    return await _submitted(registry, row, batch_id, cached, resumed=False)


async def _submitted(
    registry: Registry, row: ProviderBatch, batch_id: str, cached: int, *, resumed: bool
) -> SubmitResult:
    row.provider_batch_id, row.status, row.submitted_at = batch_id, "submitted", utcnow()
    await asyncio.to_thread(_save, registry, row)
    return SubmitResult(
        key=row.key, provider_batch_id=batch_id, requests=len(row.requests), cached=cached, resumed=resumed
    )


async def poll(registry: Registry, spec: ProviderBatchSpec) -> PollResult:
    """One look at the batch of ``spec`` (an empty submission is over at once)."""
    row = await asyncio.to_thread(_row, registry, spec.key)
    if row is None or row.provider_batch_id is None or row.status in ("ended", "collected"):
        return PollResult(ended=True, status=row.status if row else "empty")
    work = await asyncio.to_thread(_work, registry, spec)
    state = await batch_api.look(work.spec, row.provider_batch_id)
    if state.ended:
        row.status = "ended"
        await asyncio.to_thread(_save, registry, row)
    return PollResult(ended=state.ended, status=state.status)


async def collect(registry: Registry, spec: ProviderBatchSpec, *, cancel: bool = False) -> CollectResult:
    """Store the ended batch's succeeded lines; ``cancel``: the window ran out, cancel it first."""
    row = await asyncio.to_thread(_row, registry, spec.key)
    if row is None or row.provider_batch_id is None:
        return CollectResult()
    if row.status == "collected":
        counts = {k: int(v) for k, v in row.counts.items()}
        return CollectResult(
            stored=counts.get("succeeded", 0),
            failed=len(row.requests) - counts.get("succeeded", 0),
            counts=counts,
        )
    work = await asyncio.to_thread(_work, registry, spec)
    state = await batch_api.look(work.spec, row.provider_batch_id)
    if not state.ended:
        if cancel and state.status not in ("canceling", "cancelling"):
            await batch_api.cancel(work.spec, row.provider_batch_id)
        raise RuntimeError(
            f"provider batch {row.provider_batch_id} has not ended ({state.status}); collect later"
        )
    if state.status == "failed":
        message = (
            f"arm {work.run.arm} ({work.run.pair}): provider batch refused: {'; '.join(state.errors[:3])}"
        )
        await asyncio.to_thread(mark_failed, registry, work.run.id, message)
        raise ArmFailed(message)
    calls = _calls(work, spec)
    first = next(iter(calls.values()), None)
    dropped = outgoing(work.spec, first.params)[1] if first else []
    lines = await batch_api.results(work.spec, row.provider_batch_id, dropped)
    judge = _make_judge(registry, work, spec.no_cache)
    counters = _Counters(len(row.requests), 0)
    counts: Counter[str] = Counter()
    for cid in row.requests:
        line = lines.get(cid) or batch_api.LineResult("errored", error="missing from the batch's results")
        counts[line.outcome] += 1
        call = calls.get(cid)
        if line.completion is None or call is None:  # failed, or stored meanwhile
            continue
        await _run_one(
            registry, work, call, line.completion, judge, counters, no_cache=spec.no_cache, via_batch=True
        )
    row.status, row.counts, row.collected_at = "collected", dict(counts), utcnow()
    await asyncio.to_thread(_save, registry, row)
    return CollectResult(
        stored=counts["succeeded"], failed=len(row.requests) - counts["succeeded"], counts=dict(counts)
    )


def batch_counts(registry: Registry, run_id: str) -> dict[str, int] | None:
    """A batch arm's tallies for the report (None: the run sent nothing through a batch API)."""
    from sqlmodel import col, func, select

    with registry.session() as s:
        rows = s.exec(select(ProviderBatch).where(ProviderBatch.run_id == run_id)).all()
        if not rows:
            return None
        online = s.exec(
            select(func.count())
            .select_from(EvalResult)
            .where(
                EvalResult.run_id == run_id,
                col(EvalResult.via_batch).is_(False),
                col(EvalResult.cached).is_(False),
            )
        ).one()
    tally: Counter[str] = Counter()
    for row in rows:
        tally.update({k: int(v) for k, v in row.counts.items()})
    sent = [r for r in rows if r.provider_batch_id]
    return {
        "batches": len(sent),
        "requests": sum(len(r.requests) for r in sent),
        **{k: tally.get(k, 0) for k in ("succeeded", "errored", "expired", "canceled")},
        "retried_in_batch": sum(len(r.requests) for r in sent if r.round > 0),
        "retried_online": int(online),
    }
