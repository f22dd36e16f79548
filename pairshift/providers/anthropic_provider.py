"""Anthropic Messages API backend: one attempt through the official ``anthropic`` SDK.

Retries are not made here (the client has ``max_retries=0``); :func:`pairshift.providers.base.complete` owns
them. The seed travels as ``metadata.user_id = "seed-<n>"`` (a valid Anthropic field) because the Messages API
has no seed; the local fake server reads it back to seed the sim's noise. Anthropic has no plain JSON mode, so
``CallParams.response_format`` is not sent; the prompt text has to ask for JSON.
"""

from __future__ import annotations

import os
from typing import Any

import anthropic

from pairshift.providers._sdk import attempt, sdk_client
from pairshift.providers.base import (
    CallParams,
    Completion,
    FinishReason,
    Message,
    ModelSpec,
    cost_usd,
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
    return sdk_client(anthropic, anthropic.AsyncAnthropic, spec, base_url, "ANTHROPIC_API_KEY")


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


async def call(
    spec: ModelSpec, system: str | None, messages: list[Message], params: CallParams
) -> Completion:
    """One Messages API call, normalised; raises a typed :class:`ProviderError`."""
    request = _client(spec).messages.create(
        **request_kwargs(spec, system, messages, params), timeout=spec.timeout_s
    )
    response, latency_ms = await attempt(anthropic, spec, request)
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
