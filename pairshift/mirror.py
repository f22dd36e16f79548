"""Mirroring for a shadow stage: control requests copied to the candidate pair in the background, unserved.

During a shadow stage (``{shadow: P}``, pairshift.policy) the router serves every unit from control, and for
P% of units (sticky: the unit's bucket, as routing) it offers each of their requests to the router's
:class:`Mirror` once control has answered it (a request control failed is mirrored too: both arms' error rates
are then over the same inputs; it has no control output to judge). :meth:`Mirror.offer`
never blocks and never raises: it admits the request when the budget allows (``canary.shadow_budget``: calls
and dollars over the last hour, per serving process) and the queue has room, and otherwise drops it,
counted. The mirrored calls run on the mirror's own thread and event loop, at most :data:`CONCURRENCY` at a
time, so the user's request is never awaited by them, whatever loop or thread served it; the candidate's
answer goes nowhere but the store.

Each answered mirror becomes a :class:`~pairshift.registry.models.ShadowPair`: the input and both outputs
redacted by the deployment's rules and bounded (as the judge's samples are), the candidate's outcome from the
same checks control's output went through (JSON mode, online checks, the app's ``validate``), its latency and
cost, and control's. They are the shadow stage's observations: they never enter ``observations``, so no live
gate, SRM check or served-candidate count sees them. The router stores them on its refresh thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pairshift import providers
from pairshift.capture import redact
from pairshift.output_samples import JUDGE_TEXT_MAX, bounded, input_text
from pairshift.policy import ShadowBudget
from pairshift.prompts import TemplateProblem
from pairshift.providers import CallParams, Completion, Message, ModelSpec, ProviderError
from pairshift.registry.models import ShadowPair, utcnow

if TYPE_CHECKING:
    import re

    from pairshift.completion import Call
    from pairshift.router import Assignment

log = logging.getLogger(__name__)

CONCURRENCY = 4  # mirrored calls in flight per process
HOUR_S = 3600.0
STOP_WAIT_S = 5.0  # close() waits this long for calls in flight, then gives them up

Complete = Callable[[ModelSpec, str | None, list[Message], CallParams], Awaitable[Completion]]
Check = Callable[[str, CallParams, Completion], tuple[str, str | None]]  # text -> (outcome, detail)


@dataclass(frozen=True)
class MirrorJob:
    """One control request to mirror: the candidate to call, and what control answered."""

    unit_hash: str
    shadow: float  # the stage's mirror share
    control: Assignment
    candidate: Assignment
    request_for: Callable[[Assignment], Call]
    check: Check  # the outcome of the candidate's output under control's checks
    request: Mapping[str, Any] | None
    control_output: str
    control_outcome: str
    control_latency_ms: float
    control_cost_usd: float
    patterns: Sequence[re.Pattern[str]]


async def _direct(
    spec: ModelSpec, system: str | None, messages: list[Message], params: CallParams
) -> Completion:
    return await providers.complete(spec, system, messages, params, direct=True)


class Mirror:
    """Per router: admits mirrored requests within the budget, runs them off the user's path (module doc)."""

    def __init__(
        self, name: str, complete: Complete | None = None, clock: Callable[[], float] = time.monotonic
    ):
        self.name = name
        self._complete = complete or _direct
        self._clock = clock
        self._lock = threading.Condition()
        self._starts: deque[float] = deque()  # when admitted calls started, over the last hour
        self._spend: deque[tuple[float, float]] = deque()  # (when, cost) of answered calls, last hour
        self._pending = 0  # admitted, not finished
        self._done: list[ShadowPair] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._slots: asyncio.Semaphore | None = None
        self._closed = False
        self.counts: Counter[str] = Counter()  # offered, mirrored, over_budget, queue_full, answered, failed

    # ---- admission (the user's path: no I/O, no wait)

    def offer(self, job: MirrorJob, budget: ShadowBudget) -> bool:
        """Admit ``job`` if the budget and the queue allow; never blocks. True when it will be mirrored."""
        now = self._clock()
        with self._lock:
            self.counts["offered"] += 1
            if self._closed:
                self.counts["closed"] += 1
                return False
            self._forget(now)
            if (
                len(self._starts) >= budget.max_calls_per_hour
                or self._spent() >= budget.max_cost_usd_per_hour
            ):
                self.counts["over_budget"] += 1
                return False
            if self._pending >= budget.max_queued:
                self.counts["queue_full"] += 1
                return False
            self._starts.append(now)
            self._pending += 1
            self.counts["mirrored"] += 1
        try:
            loop = self._ensure_loop()
            loop.call_soon_threadsafe(lambda: loop.create_task(self._run(job)))
        except Exception as exc:  # noqa: BLE001 - mirroring is best effort; the user's request goes on
            log.warning("mirror %s: not started: %s", self.name, exc)
            self._finished(None, 0.0)
            return False
        return True

    def _forget(self, now: float) -> None:
        while self._starts and now - self._starts[0] >= HOUR_S:
            self._starts.popleft()
        while self._spend and now - self._spend[0][0] >= HOUR_S:
            self._spend.popleft()

    def _spent(self) -> float:
        return sum(cost for _, cost in self._spend)

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=loop.run_forever, name=f"pairshift-mirror-{self.name}", daemon=True
                )
                self._thread.start()
                self._loop = loop
            return self._loop

    # ---- the mirrored call (the mirror's thread)

    async def _run(self, job: MirrorJob) -> None:
        if self._slots is None:
            self._slots = asyncio.Semaphore(CONCURRENCY)
        row: ShadowPair | None = None
        cost = 0.0
        try:
            async with self._slots:
                row = await self._call(job)
                cost = row.candidate_cost_usd
        except Exception as exc:  # noqa: BLE001 - never let a mirror's failure surface anywhere but a count
            log.warning("mirror %s: a mirrored call failed unexpectedly: %s", self.name, exc)
        finally:
            self._finished(row, cost)

    async def _call(self, job: MirrorJob) -> ShadowPair:
        started = time.perf_counter()
        text: str | None = None
        latency: float | None = None
        cost, detail = 0.0, None
        try:
            call = job.request_for(job.candidate)
            completion = await self._complete(call.spec, call.system, call.messages, call.params)
            text, latency, cost = completion.text, completion.latency_ms, completion.cost_usd
            outcome, detail = job.check(text, call.params, completion)
        except (ProviderError, TemplateProblem, LookupError) as exc:
            outcome, detail = "error", type(exc).__name__  # an error has no answer latency
            waited = (time.perf_counter() - started) * 1000
            log.debug("mirror %s: candidate call failed after %.0f ms: %s", self.name, waited, exc)
        p = job.patterns
        return ShadowPair(
            deployment=job.control.deployment,
            migration=job.control.migration or "",
            shadow=job.shadow,
            unit=job.unit_hash,
            control_pair=job.control.pair,
            candidate_pair=job.candidate.pair,
            input=bounded(redact(input_text(job.request), p), JUDGE_TEXT_MAX),
            control_output=bounded(redact(job.control_output, p), JUDGE_TEXT_MAX),
            candidate_output=None if text is None else bounded(redact(text, p), JUDGE_TEXT_MAX),
            control_outcome=job.control_outcome,
            control_latency_ms=job.control_latency_ms,
            control_cost_usd=job.control_cost_usd,
            candidate_outcome=outcome,
            candidate_latency_ms=latency,
            candidate_cost_usd=cost,
            candidate_detail=detail,
            at=utcnow(),
        )

    def _finished(self, row: ShadowPair | None, cost: float) -> None:
        with self._lock:
            self._pending -= 1
            if row is None:
                self.counts["failed"] += 1
            else:
                self.counts["answered"] += 1
                self.counts["errors"] += row.candidate_outcome == "error"
                self._done.append(row)
            if cost:
                self._spend.append((self._clock(), cost))
            self._lock.notify_all()

    # ---- the router's side

    def take(self) -> list[ShadowPair]:
        """The answered mirrors not stored yet (the router stores them on its refresh thread)."""
        with self._lock:
            taken, self._done = self._done, []
        return taken

    @property
    def pending(self) -> int:
        with self._lock:
            return self._pending

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no mirrored call is queued or in flight; False when ``timeout`` passed first."""
        with self._lock:
            return self._lock.wait_for(lambda: self._pending == 0, timeout)

    def close(self, timeout: float = STOP_WAIT_S) -> None:
        """Take no more; wait up to ``timeout`` for calls in flight, then stop the mirror's loop."""
        with self._lock:
            self._closed = True
        self.wait_idle(timeout)
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
