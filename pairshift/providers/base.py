"""One async way to call any model: the types, the typed errors, the retry loop and the cost.

Everything in pairshift that calls a model (eval activities, the router, the demo) calls
:func:`complete`. It dispatches on ``ModelSpec.provider`` to a backend module
(``anthropic_provider``, ``openai_provider`` or ``sim_provider``); each backend makes exactly one
attempt and translates its SDK's failures into the typed errors below.

Where retries live (decided once, here):
    :func:`complete` runs the ONLY retry loop: a bounded number of attempts
    (``RetryPolicy.max_attempts``) that honours ``retry-after`` on 429 and backs off exponentially
    with jitter on 5xx / 529 / timeouts / connection errors. The SDK clients are built with
    ``max_retries=0`` so they never retry underneath, and the Temporal activities that call
    :func:`complete` do not retry a call on top: an exhausted call is recorded as an error of that
    case (not a failed activity). Otherwise one slow provider would see 3 x 3 x N attempts.

Errors that must not be retried (:class:`ModelNotFound`, :class:`BadRequest`, :class:`AuthError`)
fail at once. Messages never contain API keys: keys are read from the environment by name
(``ModelSpec.api_key_env``) at call time and never stored on a spec, an error or a log line.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import importlib
import logging
import os
import random
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal, Protocol, TypeVar
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)

ProviderName = Literal["anthropic", "openai", "openai-compatible", "sim"]


class ModelSpec(BaseModel):
    """What a call needs to know about a model; built from the registry row."""

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
    timeout_s: float = Field(default=60.0, gt=0)

    @classmethod
    def from_model(cls, row: Any, *, id: str | None = None, **overrides: Any) -> ModelSpec:
        """The spec of a registry model row; ``id`` is the name to call (an alias the row lists, say)."""
        return cls(
            id=id or row.id,
            provider=row.provider,
            base_url=row.base_url,
            api_key_env=row.api_key_env,
            input_per_mtok=row.input_per_mtok,
            output_per_mtok=row.output_per_mtok,
            **overrides,
        )


class Message(BaseModel):
    """One turn of the conversation (the system text travels separately)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["user", "assistant"]
    content: str


class CallParams(BaseModel):
    """Sampling parameters of a call, as a prompt version stores them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int = Field(default=1024, gt=0)
    response_format: Literal["json"] | None = Field(
        default=None, description="'json' -> OpenAI JSON mode; Anthropic has no JSON mode, not sent"
    )
    seed: int | None = Field(default=None, description="the eval engine passes seed=epoch")
    stop: list[str] | None = None


FinishReason = Literal["stop", "length", "refusal", "content_filter", "tool_calls", "error"]


class Completion(BaseModel):
    """The normalised result of one successful call."""

    text: str
    resolved_model: str = Field(description="the response's `model`: how alias drift is seen")
    input_tokens: int
    output_tokens: int
    latency_ms: float = Field(description="wall time of the successful attempt")
    cost_usd: float
    finish_reason: FinishReason
    attempts: int = Field(default=1, description="attempts made, including the successful one")


class ProviderError(Exception):
    """A failed call. ``retryable`` says whether trying the same request again can help."""

    retryable: bool = False

    def __init__(self, message: str, *, model: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.model = model
        self.status = status
        self.attempts = 1

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only constructors do not pickle by default; Temporal and process pools pickle.
        return _rebuild_error, (type(self), self.message, self.model, self.status, self.__dict__)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(model={self.model!r}, status={self.status!r}, message={self.message!r})"
        )


def _rebuild_error(
    cls: type[ProviderError], message: str, model: str, status: int | None, state: dict[str, Any]
) -> ProviderError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    return err


class RateLimited(ProviderError):
    """429: the provider's rate limit was hit; ``retry_after`` seconds is when to try again."""

    retryable = True

    def __init__(
        self, message: str, *, model: str, status: int | None = 429, retry_after: float | None = None
    ) -> None:
        super().__init__(message, model=model, status=status)
        self.retry_after = retry_after


class ProviderUnavailable(ProviderError):
    """5xx, 529 overloaded, 408/409, timeouts and connection errors: transient, retryable."""

    retryable = True


class ModelNotFound(ProviderError):
    """404/410: the model does not exist here or was retired. Never retried."""


class BadRequest(ProviderError):
    """400/413/422 and other 4xx: the request itself is wrong. Never retried."""


class AuthError(ProviderError):
    """401/403 or a missing API key. Never retried."""


class RetryPolicy(BaseModel):
    """The bounded retry loop of :func:`complete` (the only place calls are retried)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int = Field(default=4, ge=1)
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


def cost_usd(spec: ModelSpec, input_tokens: int, output_tokens: int) -> float:
    """Price of one call from the spec's price per million tokens."""
    cost = input_tokens * spec.input_per_mtok / 1e6 + output_tokens * spec.output_per_mtok / 1e6
    return round(cost, 12)  # drop float dust so sums and equality in reports stay readable


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
_jitter = random.Random()  # jitter only; the sim never uses this


def _backend(provider: str) -> Backend:
    # Imported lazily: the backend modules import this one for their types.
    module = importlib.import_module(_BACKEND_MODULES[provider])
    backend: Backend = module.call
    return backend


async def complete(
    model: ModelSpec,
    system: str | None,
    messages: list[Message],
    params: CallParams,
    *,
    retry: RetryPolicy | None = None,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> Completion:
    """Call ``model`` once logically: retried here (and only here) on transient failures.

    Raises the last :class:`ProviderError` when attempts are exhausted or the error is not
    retryable; ``error.attempts`` says how many were made. ``sleep`` waits between attempts (tests
    pass a recorder: patching ``asyncio.sleep`` itself would also catch every other event loop's
    sleeps, such as a uvicorn server ticking on another thread).
    """
    policy = retry or RetryPolicy()
    backend = _backend(model.provider)
    attempt = 0
    while True:
        attempt += 1
        try:
            result = await backend(model, system, messages, params)
            return result.model_copy(update={"attempts": attempt})
        except ProviderError as err:
            err.attempts = attempt
            too_long = getattr(err, "retry_after", None) or 0.0
            if not err.retryable or attempt >= policy.max_attempts or too_long > policy.max_retry_after_s:
                raise
            delay = policy.delay_s(attempt, err, _jitter)
            log.info("retrying %s in %.2fs after attempt %d: %s", model.id, delay, attempt, err.message)
            await sleep(delay)


# ---- helpers shared by the SDK backends -------------------------------------------------------


def error_for_status(
    provider: str, model: str, status: int, headers: Mapping[str, str], api_message: str | None
) -> ProviderError:
    """Translate an HTTP error status into the typed error the rest of pairshift acts on."""
    detail = f": {api_message}" if api_message else ""
    if status == 429:
        return RateLimited(
            f"{provider} rate limit hit for model {model}{detail}",
            model=model,
            retry_after=parse_retry_after(headers),
        )
    if status in (404, 410):
        return ModelNotFound(
            f"model {model} was not found at {provider} (HTTP {status}); it may be retired - "
            f"check its retirement date and replacement{detail}",
            model=model,
            status=status,
        )
    if status in (401, 403):
        return AuthError(
            f"{provider} refused the credentials for model {model} (HTTP {status}){detail}",
            model=model,
            status=status,
        )
    if status in (408, 409) or status >= 500:
        return ProviderUnavailable(
            f"{provider} unavailable for model {model} (HTTP {status}){detail}", model=model, status=status
        )
    return BadRequest(
        f"{provider} rejected the request for model {model} (HTTP {status}){detail}",
        model=model,
        status=status,
    )


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from ``retry-after-ms`` (OpenAI, the sim) or ``retry-after`` (seconds or HTTP date)."""
    value_ms = headers.get("retry-after-ms")
    if value_ms:
        try:
            return max(0.0, float(value_ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None  # an unreadable header: fall back to exponential backoff
    return max(0.0, when.timestamp() - time.time())


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
