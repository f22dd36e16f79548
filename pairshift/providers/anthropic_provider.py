"""Anthropic Messages API backend: one attempt through the official ``anthropic`` SDK.

Retries are not made here (the client has ``max_retries=0``); :func:`pairshift.providers.base.complete` owns
them. The seed travels as ``metadata.user_id = "seed-<n>"`` (a valid Anthropic field) because the Messages API
has no seed; the local fake server reads it back to seed the sim's noise. Anthropic has no plain JSON mode, so
``CallParams.response_format`` is not sent; the prompt text has to ask for JSON.

Reasoning: ``thinking_budget`` sends extended thinking (``thinking: {type: enabled, budget_tokens}``; thinking
counts toward ``max_tokens``), ``effort`` sends ``output_config.effort``. ``cache_system`` marks the system
text as a prompt-cache breakpoint. Usage: ``input_tokens`` excludes cache reads and writes, which Anthropic
reports apart (``cache_read_input_tokens``, ``cache_creation_input_tokens`` split by TTL in
``cache_creation``); :class:`~pairshift.providers.base.Completion` counts them all as input and prices each
at its rate.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from pairshift.providers._sdk import attempt, sdk_client
from pairshift.providers.base import CallParams, Completion, FinishReason, Message, ModelSpec
from pairshift.providers.cost import cost_usd
from pairshift.providers.rules import outgoing

if TYPE_CHECKING:
    import anthropic

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
    import anthropic  # the SDK on first use: importing it costs ~2 s of CPU to every process that never calls

    base_url = spec.base_url or os.environ.get("ANTHROPIC_BASE_URL")
    return sdk_client(anthropic, anthropic.AsyncAnthropic, spec, base_url, "ANTHROPIC_API_KEY")


def request_kwargs(
    spec: ModelSpec, system: str | None, messages: list[Message], params: CallParams
) -> dict[str, Any]:
    """The keyword arguments of ``messages.create`` for this call (also used for batch requests).

    ``params`` are sent as they are: drop the model's refused ones first
    (:func:`~pairshift.providers.rules.outgoing`).
    """
    kwargs: dict[str, Any] = {
        "model": spec.id,
        "max_tokens": params.max_tokens,
        "messages": [{"role": m.role, "content": m.content} for m in messages],
    }
    if system:
        kwargs["system"] = (
            [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}]
            if params.cache_system
            else system
        )
    extra: dict[str, Any] = {}
    # This SDK generation dropped the sampling knobs from its typed arguments (newer Claude models refuse
    # them), but older snapshots, which are what migrations start from, still read them from the body.
    for name in ("temperature", "top_p"):
        if getattr(params, name) is not None:
            extra[name] = getattr(params, name)
    if params.thinking_budget is not None:
        extra["thinking"] = {"type": "enabled", "budget_tokens": params.thinking_budget}
    if params.effort is not None:
        extra["output_config"] = {"effort": params.effort}
    if extra:
        kwargs["extra_body"] = extra
    if params.stop:
        kwargs["stop_sequences"] = params.stop
    if params.seed is not None:
        kwargs["metadata"] = {"user_id": f"seed-{params.seed}"}
    return kwargs


def _cache_writes(usage: Any) -> tuple[int, int]:
    """(5-minute, 1-hour) cache writes; without the TTL split every write is a 5-minute one."""
    total = getattr(usage, "cache_creation_input_tokens", None) or 0
    split = getattr(usage, "cache_creation", None)
    one_hour = (getattr(split, "ephemeral_1h_input_tokens", None) or 0) if split is not None else 0
    return max(0, total - one_hour), one_hour


def completion_from(
    spec: ModelSpec, response: Any, latency_ms: float, dropped: list[str], *, batch: bool = False
) -> Completion:
    """A Messages API response (an SDK object) as a Completion, priced (at batch prices for a batch line)."""
    text = "".join(block.text for block in response.content if block.type == "text")
    usage = response.usage
    read = getattr(usage, "cache_read_input_tokens", None) or 0
    write_5m, write_1h = _cache_writes(usage)
    total_input = usage.input_tokens + read + write_5m + write_1h
    return Completion(
        text=text,
        resolved_model=response.model,
        input_tokens=total_input,
        output_tokens=usage.output_tokens,
        latency_ms=latency_ms,
        cost_usd=cost_usd(
            spec,
            total_input,
            usage.output_tokens,
            cached_input_tokens=read,
            cache_write_5m_tokens=write_5m,
            cache_write_1h_tokens=write_1h,
            batch=batch,
        ),
        finish_reason=_STOP_REASONS.get(response.stop_reason or "end_turn", "stop"),
        cached_input_tokens=read,
        cache_write_tokens=write_5m + write_1h,
        dropped_params=dropped,
    )


async def call(
    spec: ModelSpec, system: str | None, messages: list[Message], params: CallParams
) -> Completion:
    """One Messages API call, normalised; raises a typed :class:`ProviderError`."""
    sent, dropped = outgoing(spec, params)
    request = _client(spec).messages.create(
        **request_kwargs(spec, system, messages, sent), timeout=spec.timeout_s
    )
    import anthropic

    response, latency_ms = await attempt(anthropic, spec, request)
    return completion_from(spec, response, latency_ms, dropped)
