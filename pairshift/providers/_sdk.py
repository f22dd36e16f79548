"""What the Anthropic and OpenAI backends share: a cached SDK client, error translation and one timed attempt.

Both official SDKs are generated from the same template, so they expose the same error classes
(``APIError``, ``APIStatusError``, ``APITimeoutError``) and the same client constructor arguments; the
backends pass their SDK module in and keep only what differs (request shape, response parsing).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import TypeVar

from pairshift.providers.base import ModelSpec, cached_client, key_fingerprint, resolve_api_key, timed
from pairshift.providers.errors import ProviderError, ProviderTimeout, ProviderUnavailable, error_for_status

ClientT = TypeVar("ClientT")
ResponseT = TypeVar("ResponseT")


def sdk_client(
    sdk: ModuleType,
    client_class: Callable[..., ClientT],
    spec: ModelSpec,
    base_url: str | None,
    default_key_env: str,
) -> ClientT:
    """The SDK client for this spec on the running loop; one attempt per call (``complete`` owns retries)."""
    key = resolve_api_key(spec, default_key_env, base_url)
    cache_key = (sdk.__name__, base_url or "", spec.api_key_env or "", key_fingerprint(key))
    return cached_client(cache_key, lambda: client_class(api_key=key, base_url=base_url, max_retries=0))


def translate_error(sdk: ModuleType, spec: ModelSpec, exc: Exception) -> ProviderError:
    """An SDK error as the typed error the rest of pairshift acts on."""
    provider = sdk.__name__
    if isinstance(exc, sdk.APIStatusError):
        body = exc.body if isinstance(exc.body, dict) else {}
        # Anthropic's SDK hands over the whole body; OpenAI's either the whole body or its "error" member.
        error = body.get("error") if isinstance(body.get("error"), dict) else body
        return error_for_status(provider, spec.id, exc.status_code, exc.response.headers, error)
    if isinstance(exc, sdk.APITimeoutError):
        return ProviderTimeout(
            f"{provider} timed out after {spec.timeout_s}s for model {spec.id}", model=spec.id
        )
    return ProviderUnavailable(
        f"{provider} connection failed for model {spec.id}: {type(exc).__name__}", model=spec.id
    )


async def attempt(sdk: ModuleType, spec: ModelSpec, request: Awaitable[ResponseT]) -> tuple[ResponseT, float]:
    """Await one SDK request: (response, latency in ms), or the typed error."""
    try:
        return await timed(request)
    except sdk.APIError as exc:
        failure = translate_error(sdk, spec, exc)
    # Raised outside the handler so the SDK error (whose request headers carry the API key) is not chained
    # as __context__.
    raise failure
