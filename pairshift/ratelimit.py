"""Client-side rate limiting of provider calls: a token bucket per provider + model, shared in a process.

Why a client-side limit at all: the goal of an eval is to run exactly as fast as the provider's limit allows
and no faster (PRODUCT §6), so a 429 should be rare, not the pacing mechanism. Each model gets two buckets
from ``Model.limits`` -- requests/min and tokens/min -- and a concurrency cap. The buckets are *reserving*
buckets (like ``golang.org/x/time/rate``'s ``Reserve``): taking tokens is a synchronous, lock-protected
computation that may drive the balance negative and answers "wait this long", so one bucket serves every
event loop and thread of the process without asyncio locks bound to a loop.

Burst: a bucket banks at most ``burst_seconds`` of its rate (default 0: one token) and starts empty, so the
calls in any window of T seconds stay within ``rate * T + 1``. That keeps inside both limit styles seen in
practice: continuously replenished buckets (Anthropic, OpenAI) and sliding windows (the fake server); a
banked burst would let a paused eval fire a volley into a sliding window that still holds its last calls.

``retry-after``: a 429 that still happens pushes the bucket's next-available time (:meth:`Limiter.penalize`):
every caller of that model waits until then, including those already sleeping on a reservation. Their
reservations are void: the buckets restart empty at the end of the block and every waiter reserves again
then, after a random jitter of up to ``PENALTY_JITTER`` of the retry-after, so the calls resume at the rate,
one after another, instead of all at the instant the block ends.

Across workers (PRODUCT §12): these buckets are per process, so two workers would each send the full
rate. A model whose limits set ``requests_per_minute`` therefore gets its own task queue,
``<main queue>-model-<model id>`` (:func:`model_task_queue`): EvalWorkflow sends that model's eval batches
there, each batch making at most ``calls_per_batch`` calls (:func:`batch_route`), and every worker polling
the queue sets Temporal's task-queue rate limit to ``requests/s / calls_per_batch`` activities per second
(:func:`task_queue_activities_per_second`), which the server enforces across all pollers. Models without a
request rate stay on the main queue, as before.

Why per model, not per provider: limits are configured per model (as providers publish them), and one queue
has one rate; a name listed among a snapshot's aliases uses the snapshot's queue. Why a cap on calls per
batch: Temporal limits activities, not calls, so the call rate holds only if each activity's call count is
bounded. The size is a trade: bigger batches keep a 10,000-case eval's history small, smaller ones lower the
burst, which is at most a few batches on top of the steady rate. Why a few: the server splits a queue's rate
evenly among the queue's partitions (4 by default) and each banks one dispatch, so the fleet starts with up to
one batch per partition and then runs at between a quarter of the limit (backlog in one partition) and the
limit; a model queue given one partition (dynamic config ``matching.numTaskqueueReadPartitions`` and
``...Write...`` = 1) runs smoothly at the full rate. Limited per process only: tokens/min, and model-graded
judge calls made inside a batch.
"""

from __future__ import annotations

import asyncio
import math
import random
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from pairshift.contracts.evals import BatchRoute

DEFAULT_CONCURRENCY = 16
DEFAULT_BURST_SECONDS = 0.0  # no banked burst: at most rate * T + 1 requests in any window of T seconds
BATCH_SECONDS = 10.0  # a provider-queue batch lasts about this long at the model's rate (see the docstring)
MIN_BATCH_CALLS = 20  # = the most epochs an eval may have, so one case's epochs always fit in a batch
MAX_BATCH_CALLS = 200  # the same cap as the main queue's automatic batches (pairshift.evals.batch_ranges)
PENALTY_JITTER = 0.1  # after a 429, waiters resume up to this share of the retry-after late, at random


class TokenBucket:
    """``rate`` tokens per second, at most ``capacity`` banked; reservations may go into debt."""

    def __init__(self, rate_per_s: float, capacity: float, *, clock: Any = time.monotonic) -> None:
        if rate_per_s <= 0:
            raise ValueError(f"a token bucket needs a positive rate, got {rate_per_s}")
        self.rate = rate_per_s
        self.capacity = max(1.0, capacity)
        self._clock = clock
        self._tokens = 0.0  # starts empty: no burst at start beyond the steady rate (module docstring)
        self._updated = clock()
        self._lock = threading.Lock()

    def _refill(self, now: float) -> None:
        self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    def reserve(self, n: float = 1.0) -> float:
        """Take ``n`` tokens now; returns the seconds to wait before they may be used (0 if available)."""
        with self._lock:
            now = self._clock()
            self._refill(now)
            self._tokens -= n
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def adjust(self, n: float) -> None:
        """Give back (n > 0) or take more (n < 0) tokens, e.g. once a call's real token count is known."""
        with self._lock:
            self._refill(self._clock())
            self._tokens = min(self.capacity, self._tokens + n)

    def drain(self) -> None:
        """Forget banked tokens (after a 429 the provider's own bucket is empty)."""
        with self._lock:
            self._refill(self._clock())
            self._tokens = min(self._tokens, 0.0)

    def restart_at(self, when: float) -> None:
        """Empty, with no debt, from ``when`` on: reservations taken before are void (a 429 voided them)."""
        with self._lock:
            self._tokens, self._updated = 0.0, max(when, self._clock())


@dataclass(frozen=True)
class Limits:
    """A model's limits as ``Model.limits`` holds them (``None``: unlimited)."""

    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    concurrency: int = DEFAULT_CONCURRENCY
    calls_per_batch: int | None = None  # provider-queue batch size; None = from the rate (batch_route)

    @classmethod
    def from_mapping(cls, limits: Mapping[str, Any] | None) -> Limits:
        limits = limits or {}
        per_batch = limits.get("calls_per_batch")
        return cls(
            requests_per_minute=limits.get("requests_per_minute"),
            tokens_per_minute=limits.get("tokens_per_minute"),
            concurrency=int(limits.get("concurrency") or DEFAULT_CONCURRENCY),
            calls_per_batch=int(per_batch) if per_batch else None,
        )


class Limiter:
    """The limits of one provider + model in this process: buckets, a 429 block and a concurrency cap."""

    def __init__(self, limits: Limits, *, burst_seconds: float = DEFAULT_BURST_SECONDS) -> None:
        self.limits = limits
        rpm, tpm = limits.requests_per_minute, limits.tokens_per_minute
        self.requests = TokenBucket(rpm / 60, rpm / 60 * burst_seconds) if rpm else None
        self.tokens = TokenBucket(tpm / 60, tpm / 60 * max(burst_seconds, 1.0)) if tpm else None
        self._blocked_until = 0.0
        self._penalties = 0  # counts 429 blocks: a reservation taken before the latest one is void
        self._jitter = 0.0  # seconds: the spread of the waiters released when a block ends
        self._lock = threading.Lock()
        # asyncio.Semaphore binds to the loop it first waits on; tests, CLIs and workers each have theirs.
        self._semaphores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        with self._lock:
            sem = self._semaphores.get(loop)
            if sem is None:
                sem = self._semaphores[loop] = asyncio.Semaphore(self.limits.concurrency)
            return sem

    def penalize(self, retry_after_s: float) -> None:
        """A 429 said "not before ``retry_after_s``": block every caller of this model until then."""
        with self._lock:
            self._blocked_until = max(self._blocked_until, time.monotonic() + retry_after_s)
            self._jitter = max(self._jitter, retry_after_s * PENALTY_JITTER)
            self._penalties += 1
            until = self._blocked_until
        for bucket in (self.requests, self.tokens):
            if bucket:
                bucket.restart_at(until)

    def settle(self, estimated_tokens: float, actual_tokens: float) -> None:
        """Correct the token bucket once a call's real usage is known."""
        if self.tokens:
            self.tokens.adjust(estimated_tokens - actual_tokens)

    async def _wait_unblocked(self) -> None:
        blocked = False
        while (left := self._blocked_until - time.monotonic()) > 0:
            blocked = True
            await asyncio.sleep(left)
        if blocked:  # spread the waiters a 429 held, so they do not all reserve at one instant
            await asyncio.sleep(random.uniform(0.0, self._jitter))

    async def acquire(self, estimated_tokens: float = 0.0) -> None:
        """Wait until one request of about ``estimated_tokens`` may be sent."""
        while True:
            await self._wait_unblocked()
            penalties = self._penalties
            waits = [0.0]
            if self.requests:
                waits.append(self.requests.reserve(1.0))
            if self.tokens and estimated_tokens > 0:
                waits.append(self.tokens.reserve(estimated_tokens))
            if max(waits) > 0:
                await asyncio.sleep(max(waits))
            if self._penalties == penalties:
                return
            # A 429 came while this reservation waited: it is void, reserve again once the block ends.

    @asynccontextmanager
    async def slot(self, estimated_tokens: float = 0.0) -> AsyncIterator[None]:
        """Hold a concurrency slot and a rate reservation for one call."""
        async with self._semaphore():
            await self.acquire(estimated_tokens)
            yield


_limiters: dict[tuple[str, str], Limiter] = {}
_limiters_lock = threading.Lock()


def limiter_for(provider: str, model: str, limits: Mapping[str, Any] | None) -> Limiter:
    """The process-wide limiter of ``provider``/``model``; rebuilt when its configured limits change."""
    wanted = Limits.from_mapping(limits)
    with _limiters_lock:
        current = _limiters.get((provider, model))
        if current is None or current.limits != wanted:
            current = _limiters[(provider, model)] = Limiter(wanted)
        return current


def reset_limiters() -> None:
    """Forget every limiter (tests and benchmarks that reconfigure limits between runs)."""
    with _limiters_lock:
        _limiters.clear()


def task_queue_activities_per_second(limits: Mapping[str, Any] | None, calls_per_batch: int) -> float | None:
    """Task-queue rate for a model's queue whose activities each make ``calls_per_batch`` calls."""
    rpm = Limits.from_mapping(limits).requests_per_minute
    if not rpm or calls_per_batch < 1:
        return None
    return rpm / 60 / calls_per_batch


# ---------------------------------------------------------------- per-model task queues (across workers)


def model_task_queue(main_queue: str, model_id: str) -> str:
    """The task queue of a rate-limited model's batches, named after the main queue (never shared)."""
    return f"{main_queue}-model-{model_id}"


def calls_per_batch(limits: Mapping[str, Any] | None) -> int | None:
    """Calls per provider-queue batch: configured, or about ``BATCH_SECONDS`` of the rate; None = no rate."""
    parsed = Limits.from_mapping(limits)
    if not parsed.requests_per_minute:
        return None
    if parsed.calls_per_batch:
        return parsed.calls_per_batch
    per_batch = math.ceil(parsed.requests_per_minute / 60 * BATCH_SECONDS)
    return min(MAX_BATCH_CALLS, max(MIN_BATCH_CALLS, per_batch))


def batch_route(model_id: str, limits: Mapping[str, Any] | None) -> BatchRoute | None:
    """The route of a model's batches: its own queue when it has a request rate, else None (main queue)."""
    per_batch = calls_per_batch(limits)
    return BatchRoute(model_id=model_id, calls_per_batch=per_batch) if per_batch else None


def route_batch_cases(route: BatchRoute, epochs: int, requested: int | None = None) -> int:
    """Cases per batch on a model queue: as many as keep ``cases * epochs`` within the route's call budget.

    A smaller requested size is kept (fewer calls per activity only slows the fleet down). One case is the
    floor, so an eval with more epochs than ``calls_per_batch`` makes ``epochs`` calls per batch.
    """
    fit = max(1, route.calls_per_batch // max(1, epochs))
    return min(fit, requested) if requested else fit


def model_queue_rates(
    main_queue: str, models: Iterable[tuple[str, Mapping[str, Any] | None]]
) -> dict[str, float]:
    """``{task queue: activities/s}`` for every (model id, limits) with a request rate: what workers poll."""
    rates: dict[str, float] = {}
    for model_id, limits in models:
        route = batch_route(model_id, limits)
        rate = task_queue_activities_per_second(limits, route.calls_per_batch) if route else None
        if route and rate:
            rates[model_task_queue(main_queue, route.model_id)] = rate
    return rates


def batch_ranges(n_cases: int, batch_cases: int | None = None) -> list[tuple[int, int]]:
    """Case index ranges of an arm's batches (automatic size: about 25 batches, 10..200 cases each)."""
    size = batch_cases or min(200, max(10, -(-n_cases // 25)))
    return [(start, min(start + size, n_cases)) for start in range(0, n_cases, size)]
