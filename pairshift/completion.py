"""One way to serve a completion: ``Router.complete``, ``POST /v1/deployments/{name}/complete``, the gateway.

:func:`serve` resolves the unit, builds the provider request of its pair (``request_for``: render the pair's
prompt with the app's variables, or pass the app's own messages on), calls the provider through
:func:`pairshift.providers.complete` (the only retry loop), applies the checks (``validate``, the prompt's
JSON mode) and records one observation, whatever happened. A failure raises :class:`ServeError`, which names
the pair and carries the HTTP status an API answers (:func:`http_status`): 502 for a provider that refused
(unknown or retired model, bad request, credentials), 503 for one that is unavailable or rate limited after
the retry budget, 504 for a timeout, 422 for a prompt that cannot be rendered with the variables sent.

Callbacks are the app's code: a ``validate`` or ``score`` that raises records the call as ``invalid`` (the
output was not what the app could use), never as an error of the pair, and never fails the request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import case, func, or_, select, update

from pairshift import notices, online_checks, providers
from pairshift.contracts.migration import pair_id
from pairshift.contracts.notices import Notice
from pairshift.observations.store import DETAIL_MAX
from pairshift.prompts import TemplateProblem
from pairshift.providers import (
    CallParams,
    Completion,
    Message,
    ModelNotFound,
    ModelSpec,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    QuotaExceeded,
    RateLimited,
    StreamEvent,
)
from pairshift.providers import direct as direct_calls
from pairshift.providers.cost import cost_usd
from pairshift.providers.direct import Read
from pairshift.providers.streaming import start as start_stream
from pairshift.registry.models import Deployment, Observation, utcnow

if TYPE_CHECKING:
    from pairshift.datasets import Case
    from pairshift.registry.store import Registry
    from pairshift.router import Assignment, Router, Split

log = logging.getLogger(__name__)

Outcome = Literal["ok", "error", "invalid", "fallback", "abandoned"]
CHARS_PER_TOKEN = 4  # an abandoned stream's output tokens are estimated from its text (no usage yet)


@dataclass(frozen=True)
class Call:
    """The provider request of one pair: the model, the system text, the turns and the call parameters."""

    spec: ModelSpec
    system: str | None
    messages: list[Message]
    params: CallParams


RequestFor = Callable[["Assignment"], Call]


@dataclass(frozen=True)
class Served:
    """A served completion: where the unit was routed, the provider's answer and what was recorded."""

    output: str
    assignment: Assignment  # where the unit was routed
    served: Assignment  # the pair that answered: the assigned one, or a pair of the fallback chain
    completion: Completion
    outcome: Outcome
    latency_ms: float
    fallback_from: str | None = None  # the assigned pair, when a fallback served


class ServeError(Exception):
    """A completion that could not be served; the observation of the failed call was recorded."""

    def __init__(self, assignment: Assignment, cause: ProviderError | TemplateProblem | LookupError) -> None:
        self.assignment, self.cause = assignment, cause
        what = getattr(cause, "message", None) or str(cause)
        super().__init__(f"pair {assignment.pair} of deployment {assignment.deployment} failed: {what}")
        self.message = str(self)

    @property
    def status(self) -> int:
        return http_status(self.cause)

    @property
    def kind(self) -> str:
        if isinstance(self.cause, TemplateProblem):
            return "template"
        if isinstance(self.cause, ProviderError):
            return self.cause.kind
        return "unknown_pair"

    def detail(self) -> dict[str, object]:
        """The JSON detail of an API error: which pair, model and provider status failed, and how."""
        return {
            "deployment": self.assignment.deployment,
            "pair": self.assignment.pair,
            "variant": self.assignment.variant,
            "model": self.assignment.model,
            "kind": self.kind,
            "provider_status": getattr(self.cause, "status", None),
        }


def http_status(error: BaseException) -> int:
    """The status an API answers for a failed completion (module doc)."""
    if isinstance(error, TemplateProblem):
        return 422
    if isinstance(error, ProviderTimeout):
        return 504
    if isinstance(error, RateLimited | ProviderUnavailable | QuotaExceeded):
        return 503
    return 502


def json_mode_ok(params: CallParams, text: str) -> bool:
    """A prompt in JSON mode whose output is not a JSON value is invalid (the deployment's built-in check)."""
    if params.response_format != "json":
        return True
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _checked(
    text: str,
    params: CallParams,
    completion: Completion,
    validate: Callable[[str], bool] | None,
    score: Callable[[str], float | None] | None,
    checks: Case | None = None,
) -> tuple[Outcome, float | None, str | None]:
    """(outcome, score, detail) of a successful call; ``detail`` says why an output is invalid.

    ``checks`` are the deployment's online checks (:mod:`pairshift.online_checks`): the first one the output
    fails is the detail. An app callback that raises makes the call invalid, its exception type named.
    """
    detail: str | None = None
    if completion.truncated:
        detail = "truncated: the output hit max_tokens"
    elif not json_mode_ok(params, text):
        detail = "not JSON: the prompt's response_format is json"
    elif checks is not None and (failed := online_checks.failure(checks, text)) is not None:
        detail = failed[:DETAIL_MAX]
    value: float | None = None
    step = "validate"
    try:
        if validate is not None and detail is None and not validate(text):
            detail = "validate returned False"
        step = "score"
        if score is not None:
            raw = score(text)
            value = None if raw is None else min(max(float(raw), 0.0), 1.0)
    except Exception as exc:  # noqa: BLE001 - the app's callback; its failure is the output's, not the pair's
        log.warning("a %s callback raised %s: the call is recorded as invalid", step, type(exc).__name__)
        return "invalid", None, f"{step} raised {type(exc).__name__}"[:DETAIL_MAX]
    return ("ok" if detail is None else "invalid"), value, detail


# ---- the fallback rate notice

NOTICE_MIN_CALLS = 20  # fewer calls in the hour say nothing about a rate (1 fallback in 3 calls is noise)


def fallback_notice_due(
    calls: int, fallbacks: int, rate: float, last_sent_s: float | None, now_s: float, min_calls: int = 20
) -> bool:
    """Whether a fallback-rate notice goes out now: over ``rate`` of at least ``min_calls`` calls in the hour,
    and none sent in the last hour (one notice an hour while the rate stays high)."""
    if calls < min_calls or fallbacks <= rate * calls:
        return False
    return last_sent_s is None or now_s - last_sent_s >= 3600.0


FLEET_CHECK_S = 60.0  # a process reads the fleet's rate at most this often (only while it serves fallbacks)


class FallbackWindow:
    """Calls and fallbacks of one deployment over the last hour, in one-minute buckets (no per-call list).

    The per-process view: a router with a registry decides from the fleet's (:func:`fleet_notice`); this
    window then only paces its reads of the fleet (:meth:`fleet_check_due`)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[int, list[int]] = {}  # minute -> [calls, fallbacks]
        self._lock = threading.Lock()
        self.last_sent_s: float | None = None
        self.last_fleet_check_s: float | None = None
        self.checking: threading.Thread | None = None  # the last fleet check (tests join it)

    def add(self, fallback: bool) -> tuple[int, int]:
        """Count one call; returns (calls, fallbacks) over the last 60 minutes."""
        now = self._clock()
        minute = int(now // 60)
        with self._lock:
            bucket = self._buckets.setdefault(minute, [0, 0])
            bucket[0] += 1
            bucket[1] += fallback
            for old in [m for m in self._buckets if m <= minute - 60]:
                del self._buckets[old]
            calls = sum(b[0] for b in self._buckets.values())
            fallbacks = sum(b[1] for b in self._buckets.values())
        return calls, fallbacks

    def due(self, calls: int, fallbacks: int, rate: float) -> bool:
        """Whether to send the notice now; marks it sent when so."""
        now = self._clock()
        with self._lock:
            if not fallback_notice_due(calls, fallbacks, rate, self.last_sent_s, now, NOTICE_MIN_CALLS):
                return False
            self.last_sent_s = now
            return True

    def fleet_check_due(self) -> bool:
        """Whether to read the fleet's rate now (at most once every :data:`FLEET_CHECK_S`); marks it read."""
        now = self._clock()
        with self._lock:
            if self.last_fleet_check_s is not None and now - self.last_fleet_check_s < FLEET_CHECK_S:
                return False
            self.last_fleet_check_s = now
            return True


def _notice(split: Split, calls: int, fallbacks: int, scope: str) -> Notice:
    return Notice(
        kind="fallback_rate",
        deployment=split.deployment,
        migration=split.migration,
        title=f"{split.deployment}: {fallbacks / calls:.1%} of calls in the last hour were served by the "
        f"fallback chain (notice above {split.fallback_notice_rate:.1%})",
        text="The assigned pair is failing (a retired or unavailable model?); the chain serves users "
        f"(counted {scope}).",
        facts={"calls": calls, "fallbacks": fallbacks, "threshold": split.fallback_notice_rate},
        channel=split.notice_channel,
    )


def fleet_notice(registry: Registry, split: Split) -> Notice | None:
    """The fleet-wide decision: the deployment's calls and fallbacks over the last hour from the registry's
    observations (every process's), and the hour's one notice claimed on the deployment row, so that one
    process sends it whatever the number of processes. None when not due or another process claimed it."""
    now = utcnow()
    since = now - timedelta(hours=1)
    table = Observation.__table__  # type: ignore[attr-defined]
    with registry.session() as s:
        calls, fallbacks = s.execute(
            select(
                func.count(), func.coalesce(func.sum(case((table.c.outcome == "fallback", 1), else_=0)), 0)
            ).where(table.c.deployment == split.deployment, table.c.at >= since)
        ).one()
        if not fallback_notice_due(int(calls), int(fallbacks), split.fallback_notice_rate, None, 0.0):
            return None
        claimed = s.execute(
            update(Deployment.__table__)  # type: ignore[attr-defined]
            .where(
                Deployment.__table__.c.name == split.deployment,  # type: ignore[attr-defined]
                or_(
                    Deployment.__table__.c.fallback_notice_at.is_(None),  # type: ignore[attr-defined]
                    Deployment.__table__.c.fallback_notice_at <= since,  # type: ignore[attr-defined]
                ),
            )
            .values(fallback_notice_at=now)
        ).rowcount
    if claimed != 1:
        return None
    return _notice(split, int(calls), int(fallbacks), "over the fleet: every process's observations")


def _send(notice: Notice | None) -> None:
    if notice is not None:
        notices.send(notice)


def _fleet_check(registry: Registry, split: Split) -> None:
    try:
        _send(fleet_notice(registry, split))
    except Exception as exc:  # noqa: BLE001 - a notice is best effort; serving goes on
        log.warning("fallback-rate check of %s failed: %s", split.deployment, exc)


def _count(router: Router, *, fallback: bool) -> None:
    window = router.fallbacks
    calls, fallbacks = window.add(fallback)
    if not fallback:
        return
    split = router.split
    registry = router.notice_registry()
    if registry is not None:  # fleet-wide: read the registry now and then, off the hot path
        if window.fleet_check_due():
            window.checking = threading.Thread(
                target=_fleet_check, args=(registry, split), name="pairshift-fallback-notice", daemon=True
            )
            window.checking.start()
        return
    if window.due(calls, fallbacks, split.fallback_notice_rate):  # a router without a registry: its own view
        # Off the hot path: a channel (Slack) may be slow; sending never raises.
        notice = _notice(split, calls, fallbacks, "as this process saw them")
        threading.Thread(
            target=notices.send, args=(notice,), name="pairshift-fallback-notice", daemon=True
        ).start()


# Failures a fallback chain answers: the model is gone (404/410), or unavailable, rate limited or out of quota
# after the retry budget, or timed out. A request the model refused (400, 401, 403, context length) is not
# the model's outage: another model would refuse it too, or it needs fixing, so it is not retried elsewhere.
FALLBACK_ERRORS = (ModelNotFound, RateLimited, ProviderUnavailable, QuotaExceeded)


def chain_for(split: Split, assignment: Assignment) -> list[Assignment]:
    """The pairs tried after ``assignment`` fails: the deployment's chain, minus its own model."""
    out = []
    for prompt, model in split.fallback:
        if model == assignment.model:
            continue
        p = prompt or assignment.prompt
        out.append(assignment.model_copy(update={"pair": pair_id(p, model), "prompt": p, "model": model}))
    return out


async def _call(request_for: RequestFor, assignment: Assignment) -> tuple[Call, Completion]:
    call = request_for(assignment)
    return call, await providers.complete(call.spec, call.system, call.messages, call.params, direct=True)


async def serve(
    router: Router,
    unit_key: str,
    request_for: RequestFor,
    *,
    validate: Callable[[str], bool] | None = None,
    score: Callable[[str], float | None] | None = None,
    prompt_version: str | None = None,
    capture_request: Mapping[str, Any] | None = None,
) -> Served:
    """Resolve ``unit_key``, call its pair (then its chain), check, record; a failure is recorded and raised.

    When the assigned pair fails with one of :data:`FALLBACK_ERRORS` the deployment's chain is tried in
    order; the first pair that answers serves, and the observation says ``fallback`` (an error of the
    assigned pair for the canary gate) and which pair served. When every pair fails, the assigned pair's
    error is recorded and raised.
    """
    assignment = router.resolve(unit_key)
    started = time.perf_counter()
    served_by = assignment
    try:
        call, completion = await _call(request_for, assignment)
    except (ProviderError, TemplateProblem, LookupError) as exc:
        rescued = None
        if isinstance(exc, FALLBACK_ERRORS):
            rescued = await _fallback(router, request_for, assignment, exc)
        if rescued is None:
            latency_ms = (time.perf_counter() - started) * 1000
            router.record(
                unit_key,
                assignment,
                latency_ms=latency_ms,
                outcome="error",
                prompt_version=prompt_version,
                detail=type(exc).__name__,
            )
            _count(router, fallback=False)
            _mirror(
                router,
                unit_key,
                assignment,
                request_for,
                validate,
                capture_request,
                None,
                "error",
                latency_ms,
            )
            raise ServeError(assignment, exc) from None
        served_by, call, completion = rescued
    fallback = served_by is not assignment
    if fallback:
        outcome: Outcome = "fallback"
        value, detail = None, None
        latency_ms = (
            time.perf_counter() - started
        ) * 1000  # what the user waited, the failed attempts included
    else:
        outcome, value, detail = _checked(
            completion.text, call.params, completion, validate, score, router.split.online_checks
        )
        latency_ms = completion.latency_ms
    router.record(
        unit_key,
        assignment,
        latency_ms=latency_ms,
        input_tokens=completion.input_tokens,
        output_tokens=completion.output_tokens,
        cost_usd=completion.cost_usd,
        outcome=outcome,
        score=value,
        resolved_model=completion.resolved_model,
        served_pair=served_by.pair if fallback else None,
        prompt_version=prompt_version,
        detail=detail,
    )
    _count(router, fallback=fallback)
    if not fallback:
        router.sample_for_judge(unit_key, assignment, capture_request, completion.text)
    _mirror(
        router, unit_key, assignment, request_for, validate, capture_request, completion, outcome, latency_ms
    )
    if outcome == "ok":
        router.sample(assignment, capture_request, completion.text)
    elif outcome == "invalid" and detail is not None:
        router.keep_invalid(assignment, capture_request, completion.text, detail)
    return Served(
        output=completion.text,
        assignment=assignment,
        served=served_by,
        completion=completion,
        outcome=outcome,
        latency_ms=latency_ms,
        fallback_from=assignment.pair if fallback else None,
    )


def _mirror(
    router: Router,
    unit_key: str,
    assignment: Assignment,
    request_for: RequestFor,
    validate: Callable[[str], bool] | None,
    request: Mapping[str, Any] | None,
    completion: Completion | None,
    outcome: Outcome,
    latency_ms: float,
) -> None:
    """A shadow stage mirrors a control request to the candidate (pairshift.mirror): queued, never awaited;
    the candidate's output goes through the same checks as control's. A request control failed (an error, or
    a fallback pair served it) is mirrored too, so both arms' error rates are over the same inputs; it has no
    control output to judge."""
    if not router.split.mirror_threshold or outcome == "abandoned":
        return
    answered = completion is not None and outcome in ("ok", "invalid")
    checks = router.split.online_checks

    def check(text: str, params: CallParams, done: Completion) -> tuple[str, str | None]:
        out, _, detail = _checked(text, params, done, validate, None, checks)
        return out, detail

    try:
        router.mirror_request(
            unit_key,
            assignment,
            request_for,
            check,
            request,
            completion.text if answered and completion is not None else "",
            outcome,
            latency_ms,
            completion.cost_usd if completion is not None else 0.0,
        )
    except Exception as exc:  # noqa: BLE001 - mirroring never fails the user's request
        log.warning("mirroring a request of %s failed: %s", assignment.deployment, exc)


async def _fallback(
    router: Router, request_for: RequestFor, assignment: Assignment, error: Exception
) -> tuple[Assignment, Call, Completion] | None:
    """The first pair of the chain that answers, or None when the chain is empty or every pair fails."""
    for alt in chain_for(router.split, assignment):
        try:
            call, completion = await _call(request_for, alt)
        except (ProviderError, TemplateProblem, LookupError) as exc:
            log.warning("fallback %s of %s failed too: %s", alt.pair, assignment.deployment, exc)
            continue
        log.info("%s failed (%s); served by fallback %s", assignment.pair, type(error).__name__, alt.pair)
        return alt, call, completion
    return None


# ---- streaming


async def _open_stream(
    request_for: RequestFor, assignment: Assignment, wire: str | None, forward_usage: bool
) -> tuple[Call, AsyncIterator[Any], Any, bool]:
    """(the call, the stream's events after the first, the first, whether its reads are in ``wire``)."""
    call = request_for(assignment)
    raw = wire is not None and direct_calls.wire_of(call.spec) == wire
    first, events = await start_stream(
        call.spec,
        call.system,
        call.messages,
        call.params,
        direct=True,
        reads=True,
        forward_usage=forward_usage,
    )
    return call, events, first, raw


async def open_stream(
    router: Router,
    unit_key: str,
    request_for: RequestFor,
    *,
    prompt_version: str | None = None,
    capture_request: Mapping[str, Any] | None = None,
    wire: str | None = None,
    forward_usage: bool = True,
) -> Streaming:
    """The streaming twin of :func:`serve`: resolve, open the pair's stream (or its chain's, when the pair
    fails before its first event), and hand back a :class:`Streaming` whose :meth:`Streaming.reads` yields the
    text and records the observation (time to first token included) when the stream ends.

    A failure before the first event is recorded and raised as :class:`ServeError`, so an API can still answer
    with a status; a failure after it is recorded as an error of the pair and raised from ``reads()``.

    ``wire`` (``openai`` or ``anthropic``): the wire the caller answers in; when the serving model's direct
    stream speaks it, :attr:`Streaming.raw` is set and each read's ``data`` is what to send on unchanged
    (``forward_usage`` as in :func:`pairshift.providers.direct.reads`).
    """
    assignment = router.resolve(unit_key)
    started = time.perf_counter()
    try:
        call, events, first, raw = await _open_stream(request_for, assignment, wire, forward_usage)
        served_by = assignment
    except (ProviderError, TemplateProblem, LookupError) as exc:
        opened = None
        if isinstance(exc, FALLBACK_ERRORS):
            for alt in chain_for(router.split, assignment):
                try:
                    opened = (alt, *await _open_stream(request_for, alt, wire, forward_usage))
                    break
                except (ProviderError, TemplateProblem, LookupError) as chained:
                    log.warning("fallback %s of %s failed too: %s", alt.pair, assignment.deployment, chained)
        if opened is None:
            latency_ms = (time.perf_counter() - started) * 1000
            router.record(
                unit_key,
                assignment,
                latency_ms=latency_ms,
                outcome="error",
                prompt_version=prompt_version,
                detail=type(exc).__name__,
            )
            _count(router, fallback=False)
            raise ServeError(assignment, exc) from None
        served_by, call, events, first, raw = opened
    streaming = Streaming(
        router, unit_key, assignment, served_by, call, events, first, started, prompt_version
    )
    streaming.raw = raw
    streaming.capture_request = capture_request
    streaming.request_for = request_for
    return streaming


async def _close(events: AsyncIterator[StreamEvent]) -> None:
    """Close a provider stream (its HTTP response: the provider stops generating); never raises an error."""
    aclose = getattr(events, "aclose", None)
    if aclose is None:
        return
    try:
        await aclose()
    except Exception as exc:  # noqa: BLE001 - the stream is being given up: its close failing changes nothing
        log.debug("closing an abandoned stream failed: %s", exc)


class Streaming:
    """An opened stream: where the unit was routed, who serves it, and the text to come (:meth:`texts`)."""

    def __init__(
        self,
        router: Router,
        unit_key: str,
        assignment: Assignment,
        served: Assignment,
        call: Call,
        events: AsyncIterator[StreamEvent],
        first: StreamEvent,
        started: float,
        prompt_version: str | None,
    ) -> None:
        self.router, self.unit_key, self.assignment, self.served = router, unit_key, assignment, served
        self.call, self._events, self._first, self._started = call, events, first, started
        self.prompt_version = prompt_version
        self.fallback_from = assignment.pair if served is not assignment else None
        self.completion: Completion | None = None  # set when the stream ended
        self.capture_request: Mapping[str, Any] | None = None
        self.ttft_ms: float | None = None
        self.raw = False  # whether each read's data is the caller's wire, to send on unchanged
        self.request_for: RequestFor | None = None  # builds the candidate's call when a shadow stage mirrors

    async def reads(self) -> AsyncIterator[Read]:
        """The stream read by network read (text deltas and, when :attr:`raw`, the events as sent); at the
        end the observation is recorded and :attr:`completion` is set.

        A stream the client abandons (it stops reading: the generator is closed or its task cancelled) is
        recorded as outcome ``abandoned`` (``fallback`` when the chain was serving it) with the time to first
        token, the output tokens seen so far (estimated from the text, about 4 characters a token: the usage
        comes only at a stream's end) and their cost; the provider's stream is closed, so it stops generating.
        """
        event = self._first
        seen = 0  # characters of text handed on
        try:
            while not isinstance(event, Completion):
                if isinstance(event, str):  # a backend streaming text (the in-process sim)
                    event = Read(b"", [event])
                if self.ttft_ms is None and event.texts:
                    self.ttft_ms = (time.perf_counter() - self._started) * 1000
                for text in event.texts:
                    seen += len(text)
                yield event
                event = await anext(self._events)
        except ProviderError as exc:
            latency_ms = (time.perf_counter() - self._started) * 1000
            self.router.record(
                self.unit_key,
                self.assignment,
                latency_ms=latency_ms,
                outcome="error",
                prompt_version=self.prompt_version,
                ttft_ms=self.ttft_ms,
                detail=type(exc).__name__,
            )
            _count(self.router, fallback=False)
            raise
        except (GeneratorExit, asyncio.CancelledError):
            self._record_abandoned(seen)
            await _close(self._events)
            raise
        # Closed here, not left to the garbage collector: an async generator finalised by it costs the event
        # loop a self-pipe wake-up (call_soon_threadsafe) on every stream.
        await _close(self._events)
        self.completion = event
        self._record(event)

    def _record_abandoned(self, chars: int) -> None:
        fallback = self.fallback_from is not None
        tokens = -(-chars // CHARS_PER_TOKEN)
        self.router.record(
            self.unit_key,
            self.assignment,
            latency_ms=(time.perf_counter() - self._started) * 1000,
            output_tokens=tokens,
            cost_usd=cost_usd(self.call.spec, 0, tokens),
            outcome="fallback" if fallback else "abandoned",
            served_pair=self.served.pair if fallback else None,
            prompt_version=self.prompt_version,
            ttft_ms=self.ttft_ms,
            detail="abandoned by the client",
        )
        _count(self.router, fallback=fallback)

    def _record(self, completion: Completion) -> None:
        fallback = self.fallback_from is not None
        outcome: Outcome = "fallback"
        detail: str | None = None
        if not fallback:
            checks = self.router.split.online_checks
            outcome, _, detail = _checked(completion.text, self.call.params, completion, None, None, checks)
        self.router.record(
            self.unit_key,
            self.assignment,
            latency_ms=(time.perf_counter() - self._started) * 1000,
            input_tokens=completion.input_tokens,
            output_tokens=completion.output_tokens,
            cost_usd=completion.cost_usd,
            outcome=outcome,
            resolved_model=completion.resolved_model,
            served_pair=self.served.pair if fallback else None,
            prompt_version=self.prompt_version,
            ttft_ms=self.ttft_ms,
            detail=detail,
        )
        _count(self.router, fallback=fallback)
        if not fallback:
            self.router.sample_for_judge(
                self.unit_key, self.assignment, self.capture_request, completion.text
            )
        if self.request_for is not None:
            _mirror(
                self.router,
                self.unit_key,
                self.assignment,
                self.request_for,
                None,
                self.capture_request,
                completion,
                outcome,
                completion.latency_ms,
            )
        if outcome == "ok":
            self.router.sample(self.assignment, self.capture_request, completion.text)
        elif outcome == "invalid" and detail is not None:
            self.router.keep_invalid(self.assignment, self.capture_request, completion.text, detail)
