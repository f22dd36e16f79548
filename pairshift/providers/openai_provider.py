"""OpenAI chat completions backend (``openai`` and ``openai-compatible``) via the official SDK.

``openai-compatible`` covers vLLM, Ollama, Azure-style and LLM gateways: the same wire format at another
``base_url``. One attempt per call (``max_retries=0``); :func:`pairshift.providers.base.complete` owns
retries. The token limit goes in the model's ``max_tokens_param``: by default ``max_completion_tokens`` for
``openai`` (OpenAI's reasoning models refuse ``max_tokens``) and ``max_tokens`` for ``openai-compatible``
(what every compatible server understands; gateways in front of reasoning models want
``max_completion_tokens``, which the model's config says). Parameters the model refuses (``drop_params``) are
not sent. ``prompt_tokens`` counts every input token; ``prompt_tokens_details.cached_tokens`` the cached ones,
priced at the model's cached-input price. ``completion_tokens`` includes reasoning tokens.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from pairshift.providers._sdk import attempt, sdk_client
from pairshift.providers.base import CallParams, Completion, FinishReason, Message, ModelSpec
from pairshift.providers.cost import cost_usd
from pairshift.providers.errors import BadRequest
from pairshift.providers.rules import outgoing

if TYPE_CHECKING:
    import openai

_FINISH_REASONS: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content_filter",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
}


def client_for(spec: ModelSpec) -> openai.AsyncOpenAI:
    """The SDK client of an ``openai`` / ``openai-compatible`` spec (one per loop, key and base URL)."""
    import openai  # the SDK on first use: importing it costs ~1 s of CPU to every process that never calls

    base_url = spec.base_url or os.environ.get("OPENAI_BASE_URL")
    if spec.provider == "openai-compatible" and not base_url:
        raise BadRequest(
            f"model {spec.id} is openai-compatible but has no base_url; set it in the model config",
            model=spec.id,
        )
    return sdk_client(openai, openai.AsyncOpenAI, spec, base_url, "OPENAI_API_KEY")


def token_field(spec: ModelSpec) -> str:
    """The request field that carries the token limit for this model."""
    if spec.max_tokens_param is not None:
        return spec.max_tokens_param
    return "max_completion_tokens" if spec.provider == "openai" else "max_tokens"


def request_kwargs(
    spec: ModelSpec, system: str | None, messages: list[Message], params: CallParams
) -> dict[str, Any]:
    """The keyword arguments of ``chat.completions.create`` for this call (``params`` already filtered)."""
    wire_messages: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    wire_messages += [{"role": m.role, "content": m.content} for m in messages]
    kwargs: dict[str, Any] = {"model": spec.id, "messages": wire_messages}
    kwargs[token_field(spec)] = params.max_tokens
    for name in ("temperature", "top_p", "stop", "seed", "reasoning_effort"):
        if getattr(params, name) is not None:
            kwargs[name] = getattr(params, name)
    if params.response_format == "json":
        kwargs["response_format"] = {"type": "json_object"}
    return kwargs


def _detail(usage: Any, group: str, name: str) -> int:
    details = getattr(usage, group, None) if usage is not None else None
    return (getattr(details, name, None) or 0) if details is not None else 0


async def call(
    spec: ModelSpec, system: str | None, messages: list[Message], params: CallParams
) -> Completion:
    """One chat completion, normalised; raises a typed :class:`ProviderError`."""
    sent, dropped = outgoing(spec, params)
    request = client_for(spec).chat.completions.create(
        **request_kwargs(spec, system, messages, sent), timeout=spec.timeout_s
    )
    import openai

    response, latency_ms = await attempt(openai, spec, request)
    return completion_from(spec, response, latency_ms, dropped)


def completion_from(
    spec: ModelSpec, response: Any, latency_ms: float, dropped: list[str], *, batch: bool = False
) -> Completion:
    """A chat completion (an SDK object) as a Completion, priced (at batch prices for a batch line)."""
    choice = response.choices[0]
    refusal = getattr(choice.message, "refusal", None)
    finish: FinishReason = (
        "refusal" if refusal else _FINISH_REASONS.get(choice.finish_reason or "stop", "stop")
    )
    usage = response.usage
    input_tokens = usage.prompt_tokens if usage else 0
    output_tokens = usage.completion_tokens if usage else 0
    cached = _detail(usage, "prompt_tokens_details", "cached_tokens")
    return Completion(
        text=choice.message.content or refusal or "",
        resolved_model=response.model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        latency_ms=latency_ms,
        cost_usd=cost_usd(spec, input_tokens, output_tokens, cached_input_tokens=cached, batch=batch),
        finish_reason=finish,
        cached_input_tokens=cached,
        reasoning_tokens=_detail(usage, "completion_tokens_details", "reasoning_tokens"),
        dropped_params=dropped,
    )
