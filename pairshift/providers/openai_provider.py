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

from pairshift.providers._sdk import attempt, sdk_client
from pairshift.providers.base import (
    BadRequest,
    CallParams,
    Completion,
    FinishReason,
    Message,
    ModelSpec,
    cost_usd,
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
        raise BadRequest(
            f"model {spec.id} is openai-compatible but has no base_url; set it in the model config",
            model=spec.id,
        )
    return sdk_client(openai, openai.AsyncOpenAI, spec, base_url, "OPENAI_API_KEY")


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


async def call(
    spec: ModelSpec, system: str | None, messages: list[Message], params: CallParams
) -> Completion:
    """One chat completion, normalised; raises a typed :class:`ProviderError`."""
    request = _client(spec).chat.completions.create(
        **request_kwargs(spec, system, messages, params), timeout=spec.timeout_s
    )
    response, latency_ms = await attempt(openai, spec, request)
    choice = response.choices[0]
    refusal = getattr(choice.message, "refusal", None)
    finish: FinishReason = (
        "refusal" if refusal else _FINISH_REASONS.get(choice.finish_reason or "stop", "stop")
    )
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
