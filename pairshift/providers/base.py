"""One async way to call any model: the types, the retry loop and the request rules a call obeys.

Everything in pairshift that calls a model (eval activities, the router, the demo) calls
:func:`complete`. It dispatches on ``ModelSpec.provider`` (and ``ModelSpec.api``) to a backend module
(``anthropic_provider``, ``openai_provider``, ``openai_responses`` or ``sim_provider``); each backend makes
exactly one attempt and translates its SDK's failures into the typed errors of
:mod:`pairshift.providers.errors`.

Where retries live (decided once, here):
    :func:`complete` runs the ONLY retry loop: a bounded number of attempts (the model's ``max_attempts``,
    else ``RetryPolicy.max_attempts``) that honours ``retry-after`` on 429 and backs off exponentially with
    jitter on 5xx / 529 / connection errors; a timeout is sent again at most ``max_timeout_attempts`` times in
    all, because the provider may bill a call it did not answer in time. The SDK clients are built with
    ``max_retries=0`` so they never retry underneath, and the Temporal activities that call :func:`complete`
    do not retry a call on top. Otherwise one slow provider would see 3 x 3 x N attempts.

Request rules (:mod:`pairshift.providers.rules`): a spec says which parameters its model refuses
(``drop_params``: not sent, and the completion says which were dropped), which field carries the token limit
(``max_tokens_param``), which OpenAI API serves it (``api``), its ``timeout_s`` and its ``max_attempts``.

Errors that must not be retried fail at once. Messages never contain API keys: keys are read from the
environment by name (``ModelSpec.api_key_env``) at call time and never stored on a spec, an error or a log
line.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import logging
import os
import random
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol, TypeVar
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field

from pairshift.providers.errors import AuthError, ProviderError, ProviderTimeout
from pairshift.telemetry import metrics, tracing

log = logging.getLogger(__name__)

ProviderName = Literal["anthropic", "openai", "openai-compatible", "sim"]
ApiName = Literal["chat", "responses"]
MaxTokensParam = Literal["max_tokens", "max_completion_tokens"]
# The call parameters a model may refuse; `drop_params` names them (LiteLLM's word for not sending them).
DroppableParam = Literal[
    "temperature", "top_p", "stop", "seed", "response_format", "reasoning_effort", "thinking_budget", "effort"
]


class ModelSpec(BaseModel):
    """What a call needs to know about a model: where it is, its prices and its request rules."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(description="model id as configured: a snapshot or an alias")
    provider: ProviderName
    base_url: str | None = Field(
        default=None, description="None -> ANTHROPIC_BASE_URL / OPENAI_BASE_URL / the SDK default"
    )
    api_key_env: str | None = Field(
        default=None,
        description="NAME of the env var holding the key (never the key); "
        "default ANTHROPIC_API_KEY / OPENAI_API_KEY",
    )
    input_per_mtok: float = Field(default=0.0, ge=0)
    output_per_mtok: float = Field(default=0.0, ge=0)
    cached_input_per_mtok: float | None = Field(
        default=None, ge=0, description="cache reads; None = 0.1x input (Anthropic) or the input price"
    )
    batch_input_per_mtok: float | None = Field(default=None, ge=0, description="None = half the input price")
    batch_output_per_mtok: float | None = Field(
        default=None, ge=0, description="None = half the output price"
    )
    timeout_s: float = Field(default=60.0, gt=0)
    max_attempts: int | None = Field(default=None, ge=1, description="None = the caller's RetryPolicy")
    drop_params: tuple[DroppableParam, ...] = Field(default=(), description="parameters never sent")
    max_tokens_param: MaxTokensParam | None = Field(
        default=None, description="None: max_completion_tokens for openai, max_tokens for openai-compatible"
    )
    api: ApiName = Field(default="chat", description="openai only: chat completions or the Responses API")

    @classmethod
    def from_model(cls, row: Any, *, id: str | None = None, **overrides: Any) -> ModelSpec:
        """The spec of a registry model row; ``id`` is the name to call (an alias the row lists, say).

        Request rules the row leaves unset come from the calendar's rules for the model's family
        (:func:`pairshift.providers.rules.effective_rules`), so naming a known model needs no extra config.
        """
        from pairshift.providers.rules import effective_rules

        prices = {
            name: getattr(row, name, None)
            for name in ("cached_input_per_mtok", "batch_input_per_mtok", "batch_output_per_mtok")
        }
        rules = effective_rules(row.id, row.provider, getattr(row, "request_rules", None) or {})
        fields: dict[str, Any] = dict(
            id=id or row.id,
            provider=row.provider,
            base_url=row.base_url,
            api_key_env=row.api_key_env,
            input_per_mtok=row.input_per_mtok,
            output_per_mtok=row.output_per_mtok,
            **{k: v for k, v in prices.items() if v is not None},
            **rules.spec_fields(),
        )
        fields.update(overrides)
        return cls(**fields)


class Message(BaseModel):
    """One turn of the conversation (the system text travels separately)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["user", "assistant"]
    content: str


class CallParams(BaseModel):
    """Parameters of a call, as a prompt version stores them (``params:``); checked per provider at apply."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float | None = Field(default=None, ge=0, le=2, description="Anthropic: 0..1")
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_tokens: int = Field(
        default=1024, gt=0, description="output limit; on reasoning models it includes the reasoning tokens"
    )
    response_format: Literal["json"] | None = Field(
        default=None, description="'json' -> OpenAI JSON mode; Anthropic has no JSON mode, not sent"
    )
    seed: int | None = Field(default=None, description="the eval engine passes seed=epoch")
    stop: list[str] | None = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = Field(
        default=None, description="OpenAI reasoning models (o-series, gpt-5 family)"
    )
    thinking_budget: int | None = Field(
        default=None, ge=1024, description="Anthropic extended thinking: budget_tokens, below max_tokens"
    )
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = Field(
        default=None, description="Anthropic output_config.effort"
    )
    cache_system: bool = Field(
        default=False, description="Anthropic: mark the system text as a prompt-cache breakpoint"
    )


# Keys a prompt's params may not set: the eval engine and the router own them. `seed` is the epoch (a prompt's
# own seed would collide with it and make every epoch the same call); the others are the request itself.
RESERVED_PARAMS: dict[str, str] = {
    "seed": "the eval engine sets it to the epoch number",
    "model": "the pair names the model",
    "messages": "they are rendered from the prompt's template",
    "system": "it is the prompt's `system` text",
    "prompt": "it is rendered from the prompt's template",
    "stream": "pairshift reads whole responses",
    "n": "pairshift makes one completion per call",
}


def reserved_param_problems(params: Any) -> list[tuple[str, str]]:
    """(key, why) of every reserved key among a prompt's params (:data:`RESERVED_PARAMS`)."""
    if not isinstance(params, dict):
        return []
    return [(key, RESERVED_PARAMS[key]) for key in params if key in RESERVED_PARAMS]


FinishReason = Literal["stop", "length", "refusal", "content_filter", "tool_calls", "error"]


class Completion(BaseModel):
    """The normalised result of one successful call."""

    text: str
    resolved_model: str = Field(description="the response's `model`: how alias drift is seen")
    input_tokens: int = Field(description="every input token, cached or not")
    output_tokens: int = Field(description="every output token, reasoning tokens included")
    latency_ms: float = Field(description="wall time of the successful attempt")
    cost_usd: float
    finish_reason: FinishReason
    attempts: int = Field(default=1, description="attempts made, including the successful one")
    cached_input_tokens: int = Field(default=0, description="input tokens read from the provider's cache")
    cache_write_tokens: int = Field(default=0, description="input tokens written to the cache (Anthropic)")
    reasoning_tokens: int = Field(default=0, description="output tokens spent on reasoning, not on text")
    dropped_params: list[str] = Field(default_factory=list, description="set by the prompt, not sent")
    ttft_ms: float | None = Field(default=None, description="streamed calls: time to the first text delta")

    @property
    def truncated(self) -> bool:
        """The token limit ran out before any text came (reasoning used it up): a config error."""
        return self.finish_reason == "length" and not self.text.strip()


class RetryPolicy(BaseModel):
    """The bounded retry loop of :func:`complete` (the only place calls are retried)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int = Field(default=4, ge=1)
    max_timeout_attempts: int = Field(
        default=2, ge=1, description="a call that timed out is sent at most this often (it may be billed)"
    )
    initial_backoff_s: float = Field(default=0.5, ge=0)
    max_backoff_s: float = Field(default=20.0, ge=0)
    honour_retry_after: bool = True
    max_retry_after_s: float = Field(
        default=120.0, ge=0, description="a longer retry-after fails at once (a quota, not a burst)"
    )

    def delay_s(self, attempt: int, error: ProviderError, rng: random.Random) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        retry_after = getattr(error, "retry_after", None)
        if self.honour_retry_after and retry_after is not None:
            # A little jitter on top keeps many workers that got the same header from returning
            # in the same millisecond and tripping the limit again.
            return retry_after * (1.0 + 0.1 * rng.random())
        base = min(self.max_backoff_s, self.initial_backoff_s * (2 ** (attempt - 1)))
        return base / 2 + rng.random() * base / 2  # "equal jitter": never zero, never above base

    def gives_up(self, attempt: int, error: ProviderError, model_attempts: int | None) -> bool:
        """Whether failed attempt ``attempt`` is the last: not retryable, budget spent, or a long wait."""
        budget = model_attempts or self.max_attempts
        if not error.retryable or attempt >= budget:
            return True
        if isinstance(error, ProviderTimeout) and attempt >= self.max_timeout_attempts:
            return True
        return (getattr(error, "retry_after", None) or 0.0) > self.max_retry_after_s


class Backend(Protocol):
    async def __call__(
        self, spec: ModelSpec, system: str | None, messages: list[Message], params: CallParams
    ) -> Completion: ...


_BACKEND_MODULES: dict[str, str] = {
    "anthropic": "pairshift.providers.anthropic_provider",
    "openai": "pairshift.providers.openai_provider",
    "openai-compatible": "pairshift.providers.openai_provider",
    "sim": "pairshift.providers.sim_provider",
}
_RESPONSES_MODULE = "pairshift.providers.openai_responses"
_jitter = random.Random()  # jitter only; the sim never uses this


def _backend(provider: str) -> Backend:
    # Imported lazily: the backend modules import this one for their types.
    backend: Backend = importlib.import_module(_BACKEND_MODULES[provider]).call
    return backend


def _backend_for(model: ModelSpec) -> Backend:
    """The backend of ``model``: its provider's, or the Responses API's for ``api: responses``."""
    if model.api == "responses" and model.provider in ("openai", "openai-compatible"):
        responses: Backend = importlib.import_module(_RESPONSES_MODULE).call
        return responses
    return _backend(model.provider)


def _direct_backend(model: ModelSpec) -> Backend | None:
    from pairshift.providers import direct

    return direct.call if direct.supports(model) else None


async def complete(
    model: ModelSpec,
    system: str | None,
    messages: list[Message],
    params: CallParams,
    *,
    retry: RetryPolicy | None = None,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    direct: bool = False,
) -> Completion:
    """Call ``model`` once logically: retried here (and only here) on transient failures.

    ``direct`` (the serving path, eval calls) sends OpenAI-chat and Anthropic calls as JSON over a shared HTTP
    client instead of through the SDK (:mod:`pairshift.providers.direct`); the same typed answers and errors.

    Raises the last :class:`ProviderError` when attempts are exhausted or the error is not
    retryable; ``error.attempts`` says how many were made. ``sleep`` waits between attempts (tests
    pass a recorder: patching ``asyncio.sleep`` itself would also catch every other event loop's
    sleeps, such as a uvicorn server ticking on another thread).
    """
    policy = retry or RetryPolicy()
    backend = _direct_backend(model) if direct else None
    backend = backend or _backend_for(model)
    attempt = 0
    with tracing.genai_span(model.id, model.provider) as span:  # one GenAI span for all the attempts
        while True:
            attempt += 1
            try:
                result = await backend(model, system, messages, params)
            except ProviderError as err:
                err.attempts = attempt
                if err.status == 429:
                    metrics.PROVIDER_RATE_LIMITED.labels(model.id).inc()
                if policy.gives_up(attempt, err, model.max_attempts):
                    metrics.PROVIDER_CALLS.labels(model.id, err.kind).inc()
                    tracing.record_error(span, err)
                    raise
                metrics.PROVIDER_RETRIES.labels(model.id).inc()
                delay = policy.delay_s(attempt, err, _jitter)
                log.info("retrying %s in %.2fs after attempt %d: %s", model.id, delay, attempt, err.message)
                await sleep(delay)
                continue
            done = result.model_copy(update={"attempts": attempt})
            _count_success(model.id, done)
            tracing.record_completion(span, done)
            return done


def _count_success(model_id: str, done: Completion) -> None:
    metrics.PROVIDER_CALLS.labels(model_id, "ok").inc()
    metrics.PROVIDER_COST.labels(model_id).inc(done.cost_usd)
    metrics.PROVIDER_TOKENS.labels(model_id, "input").inc(done.input_tokens)
    metrics.PROVIDER_TOKENS.labels(model_id, "output").inc(done.output_tokens)
    metrics.PROVIDER_LATENCY.labels(model_id).observe(done.latency_ms / 1000.0)


# ---- helpers shared by the SDK backends -------------------------------------------------------


def resolve_api_key(spec: ModelSpec, default_env: str, base_url: str | None) -> str:
    """The API key from the environment variable the spec names, read at call time.

    A loopback base URL (the fake server, a local vLLM) gets a dummy key when none is set.
    """
    env_name = spec.api_key_env or default_env
    key = os.environ.get(env_name)
    if key:
        return key
    if is_local_url(base_url):
        return "sk-local-dummy"
    raise AuthError(f"no API key for model {spec.id}: set the environment variable {env_name}", model=spec.id)


def is_local_url(url: str | None) -> bool:
    """True for loopback base URLs, where a dummy API key is acceptable."""
    host = urlparse(url).hostname if url else None
    return host in {"127.0.0.1", "localhost", "::1"}


def key_fingerprint(key: str) -> str:
    """A short hash to key client caches by; the key itself is never stored in a cache key."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


ClientT = TypeVar("ClientT")
# One cache per event loop: an SDK's async HTTP pool is bound to the loop it first ran on, and
# tests, workers and CLIs each run their own loop.
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, ...], Any]] = (
    weakref.WeakKeyDictionary()
)


def cached_client(key: tuple[str, ...], build: Callable[[], ClientT]) -> ClientT:
    """The SDK client for ``key`` on the running loop, built once (building one per call is slow)."""
    per_loop = _clients.setdefault(asyncio.get_running_loop(), {})
    if key not in per_loop:
        per_loop[key] = build()
    client: ClientT = per_loop[key]
    return client


async def timed(call: Awaitable[Any]) -> tuple[Any, float]:
    """Await ``call`` and return (result, elapsed milliseconds)."""
    start = time.perf_counter()
    result = await call
    return result, (time.perf_counter() - start) * 1000.0
