"""OpenAI chat completions backend (``openai`` and ``openai-compatible``) via the official SDK.

``openai-compatible`` covers vLLM, Ollama and LLM gateways: the same wire format at another
``base_url``. One attempt per call (``max_retries=0``); :func:`pairshift.providers.base.complete`
owns retries. ``openai`` sends ``max_completion_tokens`` (required by OpenAI's reasoning models);
``openai-compatible`` sends the older ``max_tokens``, which every compatible server understands.
"""

from __future__ import annotations

import os
from typing import Any

import openai

from pairshift.providers.base import (
    BadRequest,
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

_FINISH_REASONS: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content_filter",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
}


def _client(spec: ModelSpec) -> openai.AsyncOpenAI:
    base_url = spec.base_url or os.environ.get("OPENAI_BASE_URL")
    if spec.provider == "openai-compatible" and not base_url:
        raise BadRequest(f"model {spec.id} is openai-compatible but has no base_url; set it in the model config",
                         model=spec.id)
    key = resolve_api_key(spec, "OPENAI_API_KEY", base_url)
    cache_key = ("openai", base_url or "", spec.api_key_env or "", key_fingerprint(key))
    return cached_client(cache_key, lambda: openai.AsyncOpenAI(api_key=key, base_url=base_url, max_retries=0))


def request_kwargs(
    spec: ModelSpec, system: str | None, messages: list[Message], params: CallParams
) -> dict[str, Any]:
    """The keyword arguments of ``chat.completions.create`` for this call."""
    wire_messages: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    wire_messages += [{"role": m.role, "content": m.content} for m in messages]
    kwargs: dict[str, Any] = {"model": spec.id, "messages": wire_messages}
    token_field = "max_completion_tokens" if spec.provider == "openai" else "max_tokens"
    kwargs[token_field] = params.max_tokens
    if params.temperature is not None:
        kwargs["temperature"] = params.temperature
    if params.stop:
        kwargs["stop"] = params.stop
    if params.seed is not None:
        kwargs["seed"] = params.seed
    if params.response_format == "json":
        kwargs["response_format"] = {"type": "json_object"}
    return kwargs


def _translate(spec: ModelSpec, exc: openai.APIError) -> ProviderError:
    if isinstance(exc, openai.APIStatusError):
        body = exc.body if isinstance(exc.body, dict) else {}
        # The SDK hands over either the whole body or its "error" member.
        error = body.get("error") if isinstance(body.get("error"), dict) else body
        return error_for_status("openai", spec.id, exc.status_code, exc.response.headers, error.get("message"))
    if isinstance(exc, openai.APITimeoutError):
        return ProviderUnavailable(f"openai timed out after {spec.timeout_s}s for model {spec.id}", model=spec.id)
    return ProviderUnavailable(f"openai connection failed for model {spec.id}: {type(exc).__name__}",
                               model=spec.id)


async def call(
    spec: ModelSpec, system: str | None, messages: list[Message], params: CallParams
) -> Completion:
    """One chat completion, normalised; raises a typed :class:`ProviderError`."""
    client = _client(spec)
    failure: ProviderError | None = None
    try:
        response, latency_ms = await timed(
            client.chat.completions.create(**request_kwargs(spec, system, messages, params), timeout=spec.timeout_s)
        )
    except openai.APIError as exc:
        failure = _translate(spec, exc)
    if failure is not None:
        raise failure  # outside the handler: the SDK error's request carries the API key
    choice = response.choices[0]
    refusal = getattr(choice.message, "refusal", None)
    finish: FinishReason = "refusal" if refusal else _FINISH_REASONS.get(choice.finish_reason or "stop", "stop")
    input_tokens = response.usage.prompt_tokens if response.usage else 0
    output_tokens = response.usage.completion_tokens if response.usage else 0
    return Completion(
        text=choice.message.content or refusal or "",
        resolved_model=response.model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        latency_ms=latency_ms,
        cost_usd=cost_usd(spec, input_tokens, output_tokens),
        finish_reason=finish,
    )
