"""OpenAI Responses API backend (``api: responses`` on an ``openai`` model), via the official SDK.

For models served only there, or when a team standardises on it. The system text goes in ``instructions``,
the turns in ``input``, the token limit in ``max_output_tokens`` (reasoning tokens included),
``reasoning_effort`` as ``reasoning.effort`` and JSON mode as ``text.format``. The Responses API has no
``stop`` and no ``seed``: a stop list is refused before sending (add ``stop`` to the model's
``drop_params``), the seed rides in ``metadata.seed`` (the sim reads it back). A response cut by the limit
comes back ``incomplete`` (``incomplete_details.reason: max_output_tokens``): finish reason ``length``.
"""

from __future__ import annotations

from typing import Any

from pairshift.providers._sdk import attempt
from pairshift.providers.base import CallParams, Completion, FinishReason, Message, ModelSpec
from pairshift.providers.cost import cost_usd
from pairshift.providers.errors import BadRequest
from pairshift.providers.openai_provider import client_for
from pairshift.providers.rules import outgoing


def request_kwargs(
    spec: ModelSpec, system: str | None, messages: list[Message], params: CallParams
) -> dict[str, Any]:
    """The keyword arguments of ``responses.create`` for this call (``params`` already filtered)."""
    if params.stop:
        raise BadRequest(
            f"model {spec.id} is called through the Responses API, which has no stop sequences; "
            "add stop to the model's drop_params",
            model=spec.id,
            param="stop",
        )
    kwargs: dict[str, Any] = {
        "model": spec.id,
        "input": [{"role": m.role, "content": m.content} for m in messages],
        "max_output_tokens": params.max_tokens,
        "store": False,
    }
    if system:
        kwargs["instructions"] = system
    for name in ("temperature", "top_p"):
        if getattr(params, name) is not None:
            kwargs[name] = getattr(params, name)
    if params.reasoning_effort is not None:
        kwargs["reasoning"] = {"effort": params.reasoning_effort}
    if params.response_format == "json":
        kwargs["text"] = {"format": {"type": "json_object"}}
    if params.seed is not None:
        kwargs["metadata"] = {"seed": f"seed-{params.seed}"}
    return kwargs


def _finish(response: Any, refused: bool) -> FinishReason:
    if refused:
        return "refusal"
    reason = getattr(getattr(response, "incomplete_details", None), "reason", None)
    if response.status == "incomplete":
        return "content_filter" if reason == "content_filter" else "length"
    return "stop"


async def call(
    spec: ModelSpec, system: str | None, messages: list[Message], params: CallParams
) -> Completion:
    """One Responses API call, normalised; raises a typed :class:`ProviderError`."""
    sent, dropped = outgoing(spec, params)
    request = client_for(spec).responses.create(
        **request_kwargs(spec, system, messages, sent), timeout=spec.timeout_s
    )
    import openai  # the SDK on first use (openai_provider.client_for)

    response, latency_ms = await attempt(openai, spec, request)
    refusals = [
        part.refusal
        for item in response.output
        if item.type == "message"
        for part in item.content
        if part.type == "refusal"
    ]
    text = response.output_text or (refusals[0] if refusals else "")
    usage = response.usage
    input_tokens = usage.input_tokens if usage else 0
    output_tokens = usage.output_tokens if usage else 0
    cached = (usage.input_tokens_details.cached_tokens or 0) if usage else 0
    return Completion(
        text=text,
        resolved_model=response.model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        latency_ms=latency_ms,
        cost_usd=cost_usd(spec, input_tokens, output_tokens, cached_input_tokens=cached),
        finish_reason=_finish(response, bool(refusals)),
        cached_input_tokens=cached,
        reasoning_tokens=(usage.output_tokens_details.reasoning_tokens or 0) if usage else 0,
        dropped_params=dropped,
    )
