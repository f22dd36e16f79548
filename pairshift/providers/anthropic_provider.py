"""Anthropic Messages API backend: one attempt through the official ``anthropic`` SDK.

Retries are not made here (the client has ``max_retries=0``); :func:`pairshift.providers.base.complete`
owns them. The seed travels as ``metadata.user_id = "seed-<n>"`` (a valid Anthropic field) because
the Messages API has no seed; the local fake server reads it back to seed the sim's noise. Anthropic has no plain JSON mode, so
``CallParams.response_format`` is not sent; the prompt text has to ask for JSON.
"""

from __future__ import annotations

import os
from typing import Any

import anthropic

from pairshift.providers.base import (
    CallParams,
    Completion,
    FinishReason,
    Message,
    ModelSpec,
    ProviderError,
    ProviderUnavailable,
    cached_client,
    cost_usd,
    error_for_status,
    key_fingerprint,
    resolve_api_key,
    timed,
)

_STOP_REASONS: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "refusal": "refusal",
    "tool_use": "tool_calls",
}


def _client(spec: ModelSpec) -> anthropic.AsyncAnthropic:
    base_url = spec.base_url or os.environ.get("ANTHROPIC_BASE_URL")
    key = resolve_api_key(spec, "ANTHROPIC_API_KEY", base_url)
    cache_key = ("anthropic", base_url or "", spec.api_key_env or "", key_fingerprint(key))
    return cached_client(
        cache_key, lambda: anthropic.AsyncAnthropic(api_key=key, base_url=base_url, max_retries=0)
    )


def request_kwargs(
    spec: ModelSpec, system: str | None, messages: list[Message], params: CallParams
) -> dict[str, Any]:
    """The keyword arguments of ``messages.create`` for this call (also used for batch requests)."""
    kwargs: dict[str, Any] = {
        "model": spec.id,
        "max_tokens": params.max_tokens,
        "messages": [{"role": m.role, "content": m.content} for m in messages],
    }
    if system:
        kwargs["system"] = system
    if params.temperature is not None:
        # This SDK generation dropped `temperature` from its typed arguments (newer Claude models
        # reject sampling knobs), but older snapshots, which are what migrations start from,
        # still read it from the body.
        kwargs["extra_body"] = {"temperature": params.temperature}
    if params.stop:
        kwargs["stop_sequences"] = params.stop
    if params.seed is not None:
        kwargs["metadata"] = {"user_id": f"seed-{params.seed}"}
    return kwargs


def _translate(spec: ModelSpec, exc: anthropic.APIError) -> ProviderError:
    if isinstance(exc, anthropic.APIStatusError):
        body = exc.body if isinstance(exc.body, dict) else {}
        error = body.get("error") if isinstance(body.get("error"), dict) else {}
        return error_for_status(
            "anthropic", spec.id, exc.status_code, exc.response.headers, error.get("message")
        )
    if isinstance(exc, anthropic.APITimeoutError):
        return ProviderUnavailable(f"anthropic timed out after {spec.timeout_s}s for model {spec.id}",
                                   model=spec.id)
    return ProviderUnavailable(f"anthropic connection failed for model {spec.id}: {type(exc).__name__}",
                               model=spec.id)


async def call(
    spec: ModelSpec, system: str | None, messages: list[Message], params: CallParams
) -> Completion:
    """One Messages API call, normalised; raises a typed :class:`ProviderError`."""
    client = _client(spec)
    failure: ProviderError | None = None
    try:
        response, latency_ms = await timed(
            client.messages.create(**request_kwargs(spec, system, messages, params), timeout=spec.timeout_s)
        )
    except anthropic.APIError as exc:
        failure = _translate(spec, exc)
    if failure is not None:
        # Raised outside the handler so the SDK error (whose request headers carry the API key)
        # is not chained as __context__.
        raise failure
    text = "".join(block.text for block in response.content if block.type == "text")
    usage = response.usage
    return Completion(
        text=text,
        resolved_model=response.model,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        latency_ms=latency_ms,
        cost_usd=cost_usd(spec, usage.input_tokens, usage.output_tokens),
        finish_reason=_STOP_REASONS.get(response.stop_reason or "end_turn", "stop"),
    )
