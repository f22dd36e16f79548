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

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pairshift import providers
from pairshift.prompts import TemplateProblem
from pairshift.providers import (
    CallParams,
    Completion,
    Message,
    ModelSpec,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    QuotaExceeded,
    RateLimited,
)

if TYPE_CHECKING:
    from pairshift.router import Assignment, Router

log = logging.getLogger(__name__)

Outcome = Literal["ok", "error", "invalid"]


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
    assignment: Assignment
    completion: Completion
    outcome: Outcome
    latency_ms: float


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
) -> tuple[Outcome, float | None]:
    """(outcome, score) of a successful call; an app callback that raises makes the call invalid."""
    ok = not completion.truncated and json_mode_ok(params, text)
    value: float | None = None
    try:
        if validate is not None and ok:
            ok = bool(validate(text))
        if score is not None:
            raw = score(text)
            value = None if raw is None else min(max(float(raw), 0.0), 1.0)
    except Exception as exc:  # noqa: BLE001 - the app's callback; its failure is the output's, not the pair's
        log.warning(
            "a validate/score callback raised %s: the call is recorded as invalid", type(exc).__name__
        )
        return "invalid", None
    return ("ok" if ok else "invalid"), value


async def serve(
    router: Router,
    unit_key: str,
    request_for: RequestFor,
    *,
    validate: Callable[[str], bool] | None = None,
    score: Callable[[str], float | None] | None = None,
) -> Served:
    """Resolve ``unit_key``, call its pair, check, record; a failure is recorded and raised as ServeError."""
    assignment = router.resolve(unit_key)
    started = time.perf_counter()
    try:
        call = request_for(assignment)
        completion = await providers.complete(call.spec, call.system, call.messages, call.params)
    except (ProviderError, TemplateProblem, LookupError) as exc:
        latency_ms = (time.perf_counter() - started) * 1000
        router.record(unit_key, assignment, latency_ms=latency_ms, outcome="error")
        raise ServeError(assignment, exc) from None
    outcome, value = _checked(completion.text, call.params, completion, validate, score)
    router.record(
        unit_key,
        assignment,
        latency_ms=completion.latency_ms,
        input_tokens=completion.input_tokens,
        output_tokens=completion.output_tokens,
        cost_usd=completion.cost_usd,
        outcome=outcome,
        score=value,
        resolved_model=completion.resolved_model,
    )
    return Served(
        output=completion.text,
        assignment=assignment,
        completion=completion,
        outcome=outcome,
        latency_ms=completion.latency_ms,
    )
