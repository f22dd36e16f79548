"""The serving path's and evals' provider calls: JSON over one shared HTTP client
(:mod:`pairshift.providers.http1`: pooled keep-alive HTTP/1.1 connections, httpx's interface), without the
SDKs.

``Router.complete``, ``/complete`` and the gateway answer users while they wait, so the time pairshift adds to
a call is the product's cost (``make bench``: bench/results/gateway.md). The official SDKs spend most of it
on typing (transforming the request through TypedDicts, constructing a pydantic object for the response
and for every streamed chunk); here the request is the same body the SDK backends build (the
``request_kwargs`` of :mod:`pairshift.providers.openai_provider` and ``anthropic_provider``), sent as JSON,
and only what is recorded is read from the answer: text, resolved model, usage, finish reason. A stream is
read by network read (:func:`reads`): the events a read completed are parsed once with ``json.loads`` (no
model objects) and handed on together with their bytes as sent, so a gateway speaking the provider's wire
forwards them unchanged in one write; the first delta's time is the ttft.

Errors are the SDK backends' typed errors: a status with the body's ``error`` object through
:func:`~pairshift.providers.errors.error_for_status`, a timeout as ``ProviderTimeout``, a connection failure
as ``ProviderUnavailable``. Covered: OpenAI chat completions (``openai``, ``openai-compatible`` with ``api:
chat``) and the Anthropic Messages API; anything else (the in-process sim, the Responses API) goes through
its usual backend (:func:`supports`). Eval calls go this way too (``pairshift.evals.batches.call_limited``):
through the SDK a call was ~2.4 ms of the eval worker's CPU, most of an unlimited eval's
(bench/results/scale.md, Eval speed); the providers' batch APIs keep the SDKs.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import weakref
from collections.abc import AsyncIterator
from typing import Any, NamedTuple

import httpx

from pairshift.providers import http1
from pairshift.providers.base import (
    CallParams,
    Completion,
    FinishReason,
    Message,
    ModelSpec,
    resolve_api_key,
)
from pairshift.providers.cost import cost_usd
from pairshift.providers.errors import ProviderError, ProviderTimeout, ProviderUnavailable, error_for_status
from pairshift.providers.rules import outgoing

ANTHROPIC_VERSION = "2023-06-01"
OPENAI_URL, ANTHROPIC_URL = "https://api.openai.com/v1", "https://api.anthropic.com"
_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content_filter",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
}
_STOP: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "refusal": "refusal",
    "tool_use": "tool_calls",
}

# One client per event loop (a connection pool is bound to the loop it first ran on), shared by every model:
# pooled HTTP/1.1 keep-alive connections (pairshift.providers.http1; httpx's interface, so tests may put an
# httpx.AsyncClient with a mock transport here). The environment's proxies apply as with the SDKs.
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, http1.Client | httpx.AsyncClient] = (
    weakref.WeakKeyDictionary()
)


def _client() -> http1.Client | httpx.AsyncClient:
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        client = _clients[loop] = http1.Client()
    return client


def supports(spec: ModelSpec) -> bool:
    """Whether the serving path calls ``spec`` directly (module doc); else through its usual backend."""
    if spec.provider in ("openai", "openai-compatible"):
        return spec.api == "chat"
    return spec.provider == "anthropic"


def _request(
    spec: ModelSpec, system: str | None, messages: list[Message], params: CallParams, stream: bool
) -> tuple[str, dict[str, str], dict[str, Any], list[str], str]:
    """(url, headers, JSON body, dropped params, provider name) of one call."""
    sent, dropped = outgoing(spec, params)
    if spec.provider == "anthropic":
        from pairshift.providers.anthropic_provider import request_kwargs as anthropic_kwargs

        base = (spec.base_url or os.environ.get("ANTHROPIC_BASE_URL") or ANTHROPIC_URL).rstrip("/")
        key = resolve_api_key(spec, "ANTHROPIC_API_KEY", base)
        body = anthropic_kwargs(spec, system, messages, sent)
        body.update(body.pop("extra_body", {}))
        headers = {"x-api-key": key, "anthropic-version": ANTHROPIC_VERSION}
        if stream:
            body["stream"] = True
        return f"{base}/v1/messages", headers, body, dropped, "anthropic"
    from pairshift.providers.openai_provider import client_for, request_kwargs

    base = spec.base_url or os.environ.get("OPENAI_BASE_URL")
    if not base:
        client_for(spec)  # raises BadRequest for an openai-compatible model without base_url
        base = OPENAI_URL
    base = base.rstrip("/")
    key = resolve_api_key(spec, "OPENAI_API_KEY", base)
    body = request_kwargs(spec, system, messages, sent)
    if stream:
        body["stream"], body["stream_options"] = True, {"include_usage": True}
    headers = {"authorization": f"Bearer {key}"}
    for env, header in (("OPENAI_ORG_ID", "openai-organization"), ("OPENAI_PROJECT_ID", "openai-project")):
        if os.environ.get(env):  # what the SDK sends when they are set
            headers[header] = os.environ[env]
    return f"{base}/chat/completions", headers, body, dropped, "openai"


def _error(provider: str, spec: ModelSpec, status: int, headers: httpx.Headers, raw: bytes) -> ProviderError:
    try:
        body = json.loads(raw)
    except ValueError:
        body = raw.decode(errors="replace")[:500] or None
    error = body.get("error") if isinstance(body, dict) and isinstance(body.get("error"), dict) else body
    return error_for_status(provider, spec.id, status, headers, error)


def _json(provider: str, spec: ModelSpec, raw: bytes | str) -> dict[str, Any]:
    """A JSON object of the provider's answer; anything else is the provider's failure, typed."""
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise ProviderUnavailable(
            f"{provider} answered something that is not a JSON object for model {spec.id}", model=spec.id
        )
    return data


def _transport_error(provider: str, spec: ModelSpec, exc: httpx.HTTPError) -> ProviderError:
    if isinstance(exc, httpx.TimeoutException):
        return ProviderTimeout(
            f"{provider} timed out after {spec.timeout_s}s for model {spec.id}", model=spec.id
        )
    return ProviderUnavailable(
        f"{provider} connection failed for model {spec.id}: {type(exc).__name__}", model=spec.id
    )


async def call(
    spec: ModelSpec, system: str | None, messages: list[Message], params: CallParams
) -> Completion:
    """One call, normalised like the SDK backends' (a :class:`Backend` for :func:`..base.complete`)."""
    url, headers, body, dropped, provider = _request(spec, system, messages, params, stream=False)
    started = time.perf_counter()
    try:
        response = await _client().post(url, json=body, headers=headers, timeout=spec.timeout_s)
    except httpx.HTTPError as exc:
        failure = _transport_error(provider, spec, exc)
    else:
        failure = None
    if failure is not None:
        raise failure  # outside the handler: the request (its headers hold the key) is not chained
    latency_ms = (time.perf_counter() - started) * 1000
    if response.status_code >= 400:
        raise _error(provider, spec, response.status_code, response.headers, response.content)
    data = _json(provider, spec, response.content)
    if provider == "anthropic":
        return _anthropic_completion(spec, data, latency_ms, dropped)
    return _openai_completion(spec, data, latency_ms, dropped)


def _openai_completion(
    spec: ModelSpec, data: dict[str, Any], latency_ms: float, dropped: list[str]
) -> Completion:
    choice = (data.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    refusal = message.get("refusal")
    finish: FinishReason = (
        "refusal" if refusal else _FINISH.get(choice.get("finish_reason") or "stop", "stop")
    )
    usage = data.get("usage") or {}
    input_tokens, output_tokens = usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return Completion(
        text=message.get("content") or refusal or "",
        resolved_model=data.get("model") or spec.id,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        latency_ms=latency_ms,
        cost_usd=cost_usd(spec, input_tokens, output_tokens, cached_input_tokens=cached),
        finish_reason=finish,
        cached_input_tokens=cached,
        reasoning_tokens=(usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0,
        dropped_params=dropped,
    )


def _anthropic_usage(usage: dict[str, Any]) -> tuple[int, int, int, int]:
    """(input tokens in all, cache reads, 5-minute writes, 1-hour writes) of an Anthropic usage object."""
    read = usage.get("cache_read_input_tokens") or 0
    written = usage.get("cache_creation_input_tokens") or 0
    one_hour = (usage.get("cache_creation") or {}).get("ephemeral_1h_input_tokens") or 0
    write_5m = max(0, written - one_hour)
    return (usage.get("input_tokens") or 0) + read + write_5m + one_hour, read, write_5m, one_hour


def _anthropic_completion(
    spec: ModelSpec, data: dict[str, Any], latency_ms: float, dropped: list[str], ttft_ms: float | None = None
) -> Completion:
    text = "".join(b.get("text", "") for b in data.get("content") or () if b.get("type") == "text")
    usage = data.get("usage") or {}
    total_input, read, write_5m, write_1h = _anthropic_usage(usage)
    output_tokens = usage.get("output_tokens") or 0
    return Completion(
        text=text,
        resolved_model=data.get("model") or spec.id,
        input_tokens=total_input,
        output_tokens=output_tokens,
        latency_ms=latency_ms,
        cost_usd=cost_usd(
            spec,
            total_input,
            output_tokens,
            cached_input_tokens=read,
            cache_write_5m_tokens=write_5m,
            cache_write_1h_tokens=write_1h,
        ),
        finish_reason=_STOP.get(data.get("stop_reason") or "end_turn", "stop"),
        cached_input_tokens=read,
        cache_write_tokens=write_5m + write_1h,
        dropped_params=dropped,
        ttft_ms=ttft_ms,
    )


class Read(NamedTuple):
    """What one network read of a stream brought: its complete server-sent events as the provider sent them
    (``data``, the bytes a gateway speaking the provider's wire forwards unchanged) and their text deltas."""

    data: bytes
    texts: list[str]
    end: bool = False  # the stream's last read: at its last event ([DONE], message_stop), or the close
    # with ``end`` at the last event: the stream's Completion (usage, finish), so that a gateway re-encoding
    # the stream sends its end now, not once the response closes; the same one follows the response's close
    completion: Completion | None = None


def wire_of(spec: ModelSpec) -> str | None:
    """The wire ``spec``'s direct stream speaks (``openai``, ``anthropic``); None when not called directly."""
    if not supports(spec):
        return None
    return "anthropic" if spec.provider == "anthropic" else "openai"


async def stream(
    spec: ModelSpec, system: str | None, messages: list[Message], params: CallParams
) -> AsyncIterator[str | Completion]:
    """One streamed call: text deltas, then the :class:`Completion` (the events of
    :func:`pairshift.providers.streaming.stream`)."""
    async for event in reads(spec, system, messages, params, forward_usage=False):
        if isinstance(event, Completion):
            yield event
        else:
            for text in event.texts:
                yield text


async def reads(
    spec: ModelSpec,
    system: str | None,
    messages: list[Message],
    params: CallParams,
    *,
    forward_usage: bool = True,
) -> AsyncIterator[Read | Completion]:
    """One streamed call read by network read: a :class:`Read` per read that completed events, then the
    :class:`Completion`. The events before the first text are held until it (or the end) arrives, so a
    failure before the first text is still a failure before the first event (retried, or the chain's).

    Each event is parsed once (``json.loads``) for what is recorded: the text, the resolved model, usage,
    the finish reason; the bytes are kept as they came. ``forward_usage`` False leaves OpenAI's usage-only
    chunk (asked for here to record usage) out of ``data``, as a client that did not ask for it expects. An
    ``error`` event is not forwarded: the reads before it are yielded, then it is raised, typed.

    The stream's last event (``[DONE]``, ``message_stop``) is handed on at once, with ``end``; the response is
    then read to its end (a provider may send the chunked end later), so its connection goes back to the pool
    before the :class:`Completion` is yielded: a gateway's client has the whole answer without waiting for it.
    """
    url, headers, body, dropped, provider = _request(spec, system, messages, params, stream=True)
    started = time.perf_counter()
    failure: ProviderError | None = None
    ended = False  # the stream's last event was read and handed on (with end=True)
    final: Completion | None = None  # the Completion, made at the last event
    try:
        async with _client().stream(
            "POST", url, json=body, headers=headers, timeout=spec.timeout_s
        ) as response:
            if response.status_code >= 400:
                raise _error(provider, spec, response.status_code, response.headers, await response.aread())
            events = _OpenAIEvents(spec, forward_usage) if provider == "openai" else _AnthropicEvents(spec)
            buffered = b""  # the bytes of an event not complete yet
            held, held_texts = b"", []  # events not handed on: before the first text, and the stream's end
            async for received in response.aiter_bytes():
                if ended:
                    continue  # read to its end, so that the connection is pooled
                buffered += received
                if b"\r" in buffered:  # CRLF line ends: the same events
                    buffered = buffered.replace(b"\r\n", b"\n")
                end = buffered.rfind(b"\n\n")
                if end < 0:
                    continue
                complete, buffered = buffered[:end], buffered[end + 2 :]
                read = events.read(complete, started)
                held, held_texts = held + read.data, held_texts + read.texts
                if events.failed is not None:
                    if events.ttft_ms is not None and held:  # what came before the error goes on
                        yield Read(held, held_texts)
                    raise events.failed
                if events.last:  # the stream's last event: the end goes on now, the rest is read after it
                    ended = True
                    final = events.completion((time.perf_counter() - started) * 1000, dropped)
                    yield Read(held, held_texts, end=True, completion=final)
                    held, held_texts = b"", []
                elif events.ttft_ms is not None and not events.ending and held:
                    yield Read(held, held_texts)
                    held, held_texts = b"", []
            if buffered.strip() and not ended:  # a last event without its blank line
                read = events.read(buffered.rstrip(b"\n"), started)
                held, held_texts = held + read.data, held_texts + read.texts
                if events.failed is not None:
                    if events.ttft_ms is not None and held:
                        yield Read(held, held_texts)
                    raise events.failed
    except httpx.HTTPError as exc:
        # after the last event the answer is whole: a connection failing while it is read to its end is
        # only a connection not pooled
        failure = None if ended else _transport_error(provider, spec, exc)
    if failure is not None:
        raise failure
    if held:  # the end of a stream without its last event ([DONE], message_stop), once the response closed
        yield Read(held, held_texts, end=True)
    yield final or events.completion((time.perf_counter() - started) * 1000, dropped)


def _payload(event: bytes) -> bytes | None:
    """The ``data:`` payload of one server-sent event (None when it has none)."""
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            return line[5:].lstrip(b" ")
    return None


class _OpenAIEvents:
    """What a chat completions stream says, event by event."""

    def __init__(self, spec: ModelSpec, forward_usage: bool) -> None:
        self.spec, self.forward_usage = spec, forward_usage
        self.ttft_ms: float | None = None
        self.failed: ProviderError | None = None  # an error event: what came before it is still read
        self.ending = False  # the finish, the usage or [DONE] was read: what follows is the stream's end
        self.last = False  # [DONE] was read: nothing follows
        self.parts: list[str] = []
        self.model, self.finish, self.usage = spec.id, "stop", None

    def read(self, block: bytes, started: float) -> Read:
        """The events of ``block`` (complete events) to forward and their texts."""
        kept: list[bytes] = []
        texts: list[str] = []
        for event in block.split(b"\n\n"):
            payload = _payload(event)
            if not payload or payload == b"[DONE]":  # read to the end: an unread response is not pooled
                self.ending = self.ending or payload == b"[DONE]"
                self.last = self.last or payload == b"[DONE]"
                kept.append(event)
                continue
            chunk = _json("openai", self.spec, payload)
            if chunk.get("error"):
                self.failed = error_for_status("openai", self.spec.id, 500, {}, chunk["error"])
                break
            self.model = chunk.get("model") or self.model
            choices = chunk.get("choices") or ()
            if chunk.get("usage"):
                self.usage, self.ending = chunk["usage"], True
                if not choices and not self.forward_usage:
                    continue
            for choice in choices:
                if choice.get("finish_reason"):
                    self.finish, self.ending = choice["finish_reason"], True
                delta = (choice.get("delta") or {}).get("content")
                if delta:
                    texts.append(delta)
            kept.append(event)
        if texts:
            if self.ttft_ms is None:
                self.ttft_ms = (time.perf_counter() - started) * 1000
            self.parts += texts
        return Read(_joined(kept), texts)

    def completion(self, latency_ms: float, dropped: list[str]) -> Completion:
        usage = self.usage or {}
        input_tokens, output_tokens = usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
        return Completion(
            text="".join(self.parts),
            resolved_model=self.model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            latency_ms=latency_ms,
            cost_usd=cost_usd(self.spec, input_tokens, output_tokens, cached_input_tokens=cached),
            finish_reason=_FINISH.get(self.finish, "stop"),
            cached_input_tokens=cached,
            reasoning_tokens=(usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0,
            dropped_params=dropped,
            ttft_ms=self.ttft_ms,
        )


class _AnthropicEvents:
    """What a Messages stream says, event by event."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.ttft_ms: float | None = None
        self.failed: ProviderError | None = None  # an error event: what came before it is still read
        self.ending = False  # message_delta or message_stop was read: what follows is the stream's end
        self.last = False  # message_stop was read: nothing follows
        self.parts: list[str] = []
        self.message: dict[str, Any] = {"model": spec.id, "usage": {}, "stop_reason": None}

    def read(self, block: bytes, started: float) -> Read:
        """The events of ``block`` (complete events) to forward and their texts."""
        kept: list[bytes] = []
        texts: list[str] = []
        message = self.message
        for event in block.split(b"\n\n"):
            payload = _payload(event)
            if not payload:
                kept.append(event)
                continue
            data = _json("anthropic", self.spec, payload)
            kind = data.get("type")
            if kind == "content_block_delta":
                delta = data.get("delta") or {}
                text = delta.get("text") if delta.get("type") == "text_delta" else None
                if text:
                    texts.append(text)
            elif kind == "message_start":
                start = data.get("message") or {}
                message["model"] = start.get("model") or message["model"]
                message["usage"].update(start.get("usage") or {})
            elif kind == "message_stop":
                self.ending = self.last = True
            elif kind == "message_delta":
                self.ending = True
                stop = (data.get("delta") or {}).get("stop_reason")
                message["stop_reason"] = stop or message["stop_reason"]
                message["usage"].update({k: v for k, v in (data.get("usage") or {}).items() if v})
            elif kind == "error":
                error = data.get("error") or {}
                status = 529 if error.get("type") == "overloaded_error" else 500
                self.failed = error_for_status("anthropic", self.spec.id, status, {}, error)
                break
            kept.append(event)
        if texts:
            if self.ttft_ms is None:
                self.ttft_ms = (time.perf_counter() - started) * 1000
            self.parts += texts
        return Read(_joined(kept), texts)

    def completion(self, latency_ms: float, dropped: list[str]) -> Completion:
        message = {**self.message, "content": [{"type": "text", "text": "".join(self.parts)}]}
        return _anthropic_completion(self.spec, message, latency_ms, dropped, self.ttft_ms)


def _joined(events: list[bytes]) -> bytes:
    return b"".join(event + b"\n\n" for event in events)
