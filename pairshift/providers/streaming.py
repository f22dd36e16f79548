"""Streamed model calls: text as it is generated, then the normalised :class:`Completion` with usage.

:func:`stream` is the streaming twin of :func:`pairshift.providers.complete`: the same retry policy, applied
only until the first event arrives (a stream that has started sending text is never sent again: the user has
seen it), and the same typed errors. Each backend opens one stream through the official SDK
(``stream=True``; OpenAI with ``stream_options.include_usage`` so the last chunk carries usage) or, for the
in-process sim and the Responses API, answers at once and yields the text in pieces.

Events: ``str`` (a text delta, never empty) any number of times, then exactly one :class:`Completion` whose
``latency_ms`` is the whole stream's wall time and whose ``ttft_ms`` field is the time to the first delta.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from pairshift.providers.base import (
    CallParams,
    Completion,
    FinishReason,
    Message,
    ModelSpec,
    RetryPolicy,
    _backend_for,
    _jitter,
)
from pairshift.providers.cost import cost_usd
from pairshift.providers.errors import ProviderError

StreamEvent = str | Completion
SIM_CHUNK_CHARS = 16  # the in-process sim's "tokens" per delta


async def stream(
    model: ModelSpec,
    system: str | None,
    messages: list[Message],
    params: CallParams,
    *,
    retry: RetryPolicy | None = None,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    direct: bool = False,
) -> AsyncIterator[StreamEvent]:
    """Stream one call (module doc); raises the typed :class:`ProviderError` like ``complete``.

    ``direct``: the serving path's stream, JSON over HTTP without the SDK (:mod:`pairshift.providers.direct`).
    """
    first, events = await start(model, system, messages, params, retry=retry, sleep=sleep, direct=direct)
    yield first
    async for event in events:
        yield event


async def start(
    model: ModelSpec,
    system: str | None,
    messages: list[Message],
    params: CallParams,
    *,
    retry: RetryPolicy | None = None,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    direct: bool = False,
    reads: bool = False,
    forward_usage: bool = True,
) -> tuple[Any, AsyncIterator[Any]]:
    """(the first event, the rest) of one stream, retried until that first event as :func:`stream` does; the
    rest is the backend's own iterator, with no layer in between (a serving path pays each layer per chunk).

    ``reads`` (with ``direct``, for a model called directly): the events are :class:`~pairshift.providers.
    direct.Read` (a network read's events, as sent, and their texts) instead of single texts, then the
    :class:`Completion`; ``forward_usage`` as in :func:`pairshift.providers.direct.reads`.
    """
    from pairshift.providers import direct as direct_calls

    policy = retry or RetryPolicy()
    attempt = 0
    while True:
        attempt += 1
        events: AsyncIterator[Any]
        if direct and direct_calls.supports(model):
            if reads:
                events = direct_calls.reads(model, system, messages, params, forward_usage=forward_usage)
            else:
                events = direct_calls.stream(model, system, messages, params)
        else:
            events = _open(model, system, messages, params)
        try:
            return await anext(events), events
        except ProviderError as err:
            err.attempts = attempt
            if policy.gives_up(attempt, err, model.max_attempts):
                raise
            await sleep(policy.delay_s(attempt, err, _jitter))


def _open(
    spec: ModelSpec, system: str | None, messages: list[Message], params: CallParams
) -> AsyncIterator[StreamEvent]:
    if spec.api == "chat" and spec.provider in ("openai", "openai-compatible"):
        return _openai(spec, system, messages, params)
    if spec.provider == "anthropic":
        return _anthropic(spec, system, messages, params)
    return _whole(spec, system, messages, params)


async def _whole(
    spec: ModelSpec, system: str | None, messages: list[Message], params: CallParams
) -> AsyncIterator[StreamEvent]:
    """A backend without streaming here (the in-process sim, the Responses API): one answer, in pieces."""
    started = time.perf_counter()
    completion = await _backend_for(spec)(spec, system, messages, params)
    ttft = (time.perf_counter() - started) * 1000
    text = completion.text
    for i in range(0, len(text), SIM_CHUNK_CHARS):
        yield text[i : i + SIM_CHUNK_CHARS]
    yield completion.model_copy(update={"ttft_ms": ttft})


async def _openai(
    spec: ModelSpec, system: str | None, messages: list[Message], params: CallParams
) -> AsyncIterator[StreamEvent]:
    import openai

    from pairshift.providers._sdk import translate_error
    from pairshift.providers.openai_provider import _FINISH_REASONS, client_for, request_kwargs
    from pairshift.providers.rules import outgoing

    sent, dropped = outgoing(spec, params)
    started = time.perf_counter()
    ttft: float | None = None
    parts: list[str] = []
    model, finish, usage = spec.id, "stop", None
    try:
        chunks = await client_for(spec).chat.completions.create(
            **request_kwargs(spec, system, messages, sent),
            stream=True,
            stream_options={"include_usage": True},
            timeout=spec.timeout_s,
        )
        async for chunk in chunks:
            model = chunk.model or model
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                if choice.finish_reason:
                    finish = choice.finish_reason
                delta = choice.delta.content if choice.delta else None
                if delta:
                    if ttft is None:
                        ttft = (time.perf_counter() - started) * 1000
                    parts.append(delta)
                    yield delta
    except openai.APIError as exc:
        failure = translate_error(openai, spec, exc)
    else:
        failure = None
    if failure is not None:
        raise failure  # outside the handler: the SDK error (its request holds the key) is not chained
    input_tokens = getattr(usage, "prompt_tokens", 0) or 0
    output_tokens = getattr(usage, "completion_tokens", 0) or 0
    details = getattr(usage, "prompt_tokens_details", None)
    cached = (getattr(details, "cached_tokens", 0) or 0) if details is not None else 0
    yield Completion(
        text="".join(parts),
        resolved_model=model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        latency_ms=(time.perf_counter() - started) * 1000,
        cost_usd=cost_usd(spec, input_tokens, output_tokens, cached_input_tokens=cached),
        finish_reason=_FINISH_REASONS.get(finish, "stop"),
        cached_input_tokens=cached,
        dropped_params=dropped,
        ttft_ms=ttft,
    )


async def _anthropic(
    spec: ModelSpec, system: str | None, messages: list[Message], params: CallParams
) -> AsyncIterator[StreamEvent]:
    import anthropic

    from pairshift.providers._sdk import translate_error
    from pairshift.providers.anthropic_provider import _STOP_REASONS, _client, request_kwargs
    from pairshift.providers.rules import outgoing

    sent, dropped = outgoing(spec, params)
    started = time.perf_counter()
    ttft: float | None = None
    parts: list[str] = []
    model, stop = spec.id, "end_turn"
    usage: dict[str, int] = {}
    try:
        events = await _client(spec).messages.create(
            **request_kwargs(spec, system, messages, sent), stream=True, timeout=spec.timeout_s
        )
        async for event in events:
            kind = event.type
            if kind == "message_start":
                model = event.message.model or model
                usage.update(_usage(event.message.usage))
            elif kind == "content_block_delta" and getattr(event.delta, "type", "") == "text_delta":
                if event.delta.text:
                    if ttft is None:
                        ttft = (time.perf_counter() - started) * 1000
                    parts.append(event.delta.text)
                    yield event.delta.text
            elif kind == "message_delta":
                stop = event.delta.stop_reason or stop
                usage.update({k: v for k, v in _usage(event.usage).items() if v})
    except anthropic.APIError as exc:
        failure = translate_error(anthropic, spec, exc)
    else:
        failure = None
    if failure is not None:
        raise failure
    read, write = usage.get("cache_read_input_tokens", 0), usage.get("cache_creation_input_tokens", 0)
    total_input = usage.get("input_tokens", 0) + read + write
    output_tokens = usage.get("output_tokens", 0)
    finish: FinishReason = _STOP_REASONS.get(stop, "stop")
    yield Completion(
        text="".join(parts),
        resolved_model=model,
        input_tokens=total_input,
        output_tokens=output_tokens,
        latency_ms=(time.perf_counter() - started) * 1000,
        cost_usd=cost_usd(
            spec, total_input, output_tokens, cached_input_tokens=read, cache_write_5m_tokens=write
        ),
        finish_reason=finish,
        cached_input_tokens=read,
        cache_write_tokens=write,
        dropped_params=dropped,
        ttft_ms=ttft,
    )


def _usage(usage: Any) -> dict[str, int]:
    names = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
    return {n: int(getattr(usage, n, 0) or 0) for n in names} if usage is not None else {}
