"""The serving path's direct calls (pairshift.providers.direct) answer what the SDK backends answer, against
the fake provider server on both wires: the same completion (text, resolved model, usage, cost, finish
reason), the same stream, the same typed errors, the retry loop around them unchanged."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from pairshift import providers
from pairshift.providers import (
    CallParams,
    Completion,
    Message,
    ModelNotFound,
    ModelSpec,
    ProviderUnavailable,
    RateLimited,
    RetryPolicy,
)
from pairshift.providers import direct as direct_calls

MESSAGES = [Message(role="user", content="Tier: gold\nTicket: I was charged twice, refund please")]
SYSTEM = "You triage support tickets. Reply with JSON only, with the keys severity and team."
PARAMS = CallParams(temperature=0, max_tokens=200, seed=3)
NO_RETRY = RetryPolicy(max_attempts=1)
PRICE = {"input_per_mtok": 3.0, "output_per_mtok": 15.0}


def specs(sim) -> list[ModelSpec]:
    return [
        ModelSpec(id="gpt-4o-2024-08-06", provider="openai", base_url=sim.openai_base_url, **PRICE),
        ModelSpec(id="claude-sonnet-4-20250514", provider="anthropic", base_url=sim.base_url, **PRICE),
    ]


def same(a: Completion, b: Completion) -> None:
    fields = ("text", "resolved_model", "input_tokens", "output_tokens", "cost_usd", "finish_reason")
    assert {f: getattr(a, f) for f in fields} == {f: getattr(b, f) for f in fields}


@pytest.mark.parametrize("which", [0, 1], ids=["openai", "anthropic"])
async def test_a_direct_call_answers_what_the_sdk_answers(sim_server, which):
    spec = specs(sim_server)[which]
    assert direct_calls.supports(spec)
    via_sdk = await providers.complete(spec, SYSTEM, MESSAGES, PARAMS, retry=NO_RETRY)
    direct = await providers.complete(spec, SYSTEM, MESSAGES, PARAMS, retry=NO_RETRY, direct=True)
    same(via_sdk, direct)
    assert direct.text and direct.input_tokens > 0 and direct.cost_usd > 0


@pytest.mark.parametrize("which", [0, 1], ids=["openai", "anthropic"])
async def test_a_direct_stream_streams_what_the_sdk_streams(sim_server, which):
    spec = specs(sim_server)[which]

    async def events(direct: bool) -> tuple[list[str], Completion]:
        out = [
            e async for e in providers.stream(spec, SYSTEM, MESSAGES, PARAMS, retry=NO_RETRY, direct=direct)
        ]
        assert isinstance(out[-1], Completion) and all(isinstance(e, str) for e in out[:-1])
        return out[:-1], out[-1]

    sdk_texts, sdk_done = await events(False)
    texts, done = await events(True)
    assert "".join(texts) == "".join(sdk_texts) == done.text and len(texts) > 1
    same(sdk_done, done)
    assert done.ttft_ms is not None and 0 < done.ttft_ms <= done.latency_ms


@pytest.mark.parametrize("which", [0, 1], ids=["openai", "anthropic"])
async def test_errors_are_the_same_typed_errors(sim_server, which):
    spec = specs(sim_server)[which]
    sim_server.retire(spec.id)
    for direct in (False, True):
        with pytest.raises(ModelNotFound) as gone:
            await providers.complete(spec, SYSTEM, MESSAGES, PARAMS, retry=NO_RETRY, direct=direct)
        assert gone.value.status in (404, 410) and spec.id in str(gone.value)
        assert gone.value.__context__ is None  # the request (its headers hold the key) is not attached
    sim_server.retire()
    sim_server.rate_limit(spec.id, requests=1, per_seconds=60)
    await providers.complete(spec, SYSTEM, MESSAGES, PARAMS, retry=NO_RETRY, direct=True)
    with pytest.raises(RateLimited) as limited:
        await providers.complete(spec, SYSTEM, MESSAGES, PARAMS, retry=NO_RETRY, direct=True)
    assert limited.value.retry_after is not None
    with pytest.raises(RateLimited):  # a stream refused before its first event
        async for _ in providers.stream(spec, SYSTEM, MESSAGES, PARAMS, retry=NO_RETRY, direct=True):
            pass


async def test_an_unreachable_provider_is_unavailable_and_retried_by_the_one_loop():
    spec = ModelSpec(id="gpt-4o-2024-08-06", provider="openai", base_url="http://127.0.0.1:9/v1")
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    policy = RetryPolicy(max_attempts=3, initial_backoff_s=0.01)
    with pytest.raises(ProviderUnavailable) as failed:
        await providers.complete(spec, None, MESSAGES, PARAMS, retry=policy, sleep=sleep, direct=True)
    assert failed.value.attempts == 3 and len(slept) == 2
    assert str(failed.value) == "openai connection failed for model gpt-4o-2024-08-06: ConnectError"


async def test_an_answer_that_is_not_json_is_the_providers_failure_and_org_headers_are_sent(monkeypatch):
    monkeypatch.setenv("OPENAI_ORG_ID", "org-1")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj-1")
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, text="<html>a proxy's error page</html>")

    client = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    monkeypatch.setitem(direct_calls._clients, asyncio.get_running_loop(), client)
    spec = ModelSpec(id="gpt-4o-2024-08-06", provider="openai", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(ProviderUnavailable, match="not a JSON object"):
        await providers.complete(spec, None, MESSAGES, PARAMS, retry=NO_RETRY, direct=True)
    headers = seen[0].headers
    assert (headers["openai-organization"], headers["openai-project"]) == ("org-1", "proj-1")
    assert headers["authorization"] == "Bearer sk-local-dummy" and seen[0].url.path == "/v1/chat/completions"
    await client.aclose()


class _Parts(httpx.AsyncByteStream):
    """A response body arriving in the given network reads."""

    def __init__(self, parts: list[bytes]) -> None:
        self.parts = parts

    async def __aiter__(self):
        for part in self.parts:
            yield part


def _sse_stream(monkeypatch, parts: list[bytes]) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=_Parts(parts))

    client = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    monkeypatch.setitem(direct_calls._clients, asyncio.get_running_loop(), client)


def _chunk(text: str | None = None, usage: dict | None = None, finish: str | None = None) -> bytes:
    choices = (
        []
        if text is None and finish is None
        else [{"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish}]
    )
    body = {"id": "c1", "object": "chat.completion.chunk", "model": "gpt-4o-2024-08-06", "choices": choices}
    if usage:
        body["usage"] = usage
    return f"data: {json.dumps(body)}\n\n".encode()


OAI_SPEC = ModelSpec(id="gpt-4o-2024-08-06", provider="openai", base_url="http://127.0.0.1:9/v1", **PRICE)
USAGE = {"prompt_tokens": 10, "completion_tokens": 3}


async def test_reads_come_one_per_network_read_with_the_events_as_sent(monkeypatch):
    """Events that arrive together are one Read (one write for a gateway) with every text in it; an event
    cut across reads is read whole; OpenAI's usage-only chunk is left out unless asked for; CRLF works."""
    head = _chunk("Hel") + _chunk("lo")
    tail = _chunk(finish="stop") + _chunk(usage=USAGE) + b"data: [DONE]\n\n"
    cut = _chunk(" there")
    parts = [head, cut[:20], cut[20:] + tail.replace(b"\n", b"\r\n")]
    for forward_usage in (True, False):
        _sse_stream(monkeypatch, parts)
        events = [
            e async for e in direct_calls.reads(OAI_SPEC, None, MESSAGES, PARAMS, forward_usage=forward_usage)
        ]
        *read, done = events
        assert [r.texts for r in read] == [["Hel", "lo"], [" there"]]
        assert read[0].data == head
        usage_chunk = _chunk(usage=USAGE)
        assert (
            read[1].data
            == cut + _chunk(finish="stop") + (usage_chunk if forward_usage else b"") + b"data: [DONE]\n\n"
        )
        assert isinstance(done, Completion) and done.text == "Hello there" and done.output_tokens == 3
        assert done.ttft_ms is not None and done.input_tokens == 10


async def test_an_error_event_after_text_ends_the_reads_and_one_before_it_is_a_failure_to_open(monkeypatch):
    error = b'data: {"error": {"message": "overloaded", "type": "server_error"}}\n\n'
    _sse_stream(monkeypatch, [_chunk("Hi") + error + _chunk("never")])
    got: list = []
    with pytest.raises(ProviderUnavailable):
        async for event in direct_calls.reads(OAI_SPEC, None, MESSAGES, PARAMS):
            got.append(event)
    assert [(r.data, r.texts) for r in got] == [(_chunk("Hi"), ["Hi"])], "the text before the error went on"
    _sse_stream(monkeypatch, [_chunk() + error])  # before any text: nothing was sent, the stream did not open
    with pytest.raises(ProviderUnavailable):
        await providers.streaming.start(
            OAI_SPEC, None, MESSAGES, PARAMS, retry=NO_RETRY, direct=True, reads=True
        )


class _Gated(httpx.AsyncByteStream):
    """A body whose last part (the chunked end, say) comes only once ``gate`` is set, or fails then."""

    def __init__(self, first: bytes, gate: asyncio.Event, fail: bool = False) -> None:
        self.first, self.gate, self.fail = first, gate, fail

    async def __aiter__(self):
        yield self.first
        await self.gate.wait()
        if self.fail:
            raise httpx.ReadError("the connection broke after the last event")
        yield b""


@pytest.mark.parametrize("fail", [False, True], ids=["drained", "broken-after"])
async def test_the_end_goes_on_at_the_last_event_and_the_answer_is_read_to_its_end_after_it(
    monkeypatch, fail
):
    """[DONE] is handed on (end=True, with the stream's Completion) as soon as it is read, not when the
    provider's response closes (a provider may send its chunked end later); the response is then read to its
    end so that its connection is pooled, and a connection breaking meanwhile changes nothing: the answer was
    whole."""
    gate = asyncio.Event()
    body = _chunk("Hi") + _chunk(finish="stop") + _chunk(usage=USAGE) + b"data: [DONE]\n\n"

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, headers={"content-type": "text/event-stream"}, stream=_Gated(body, gate, fail)
        )

    client = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    monkeypatch.setitem(direct_calls._clients, asyncio.get_running_loop(), client)
    reads = direct_calls.reads(OAI_SPEC, None, MESSAGES, PARAMS, forward_usage=False)
    first = await asyncio.wait_for(anext(reads), 10)  # not waiting for the response's end
    assert first.end and first.data.endswith(b"data: [DONE]\n\n") and first.texts == ["Hi"]
    # with the end, what the stream said (a gateway re-encoding it sends its finish and usage now)
    assert first.completion is not None and first.completion.output_tokens == 3
    assert not gate.is_set()  # handed on while the response is still open
    gate.set()
    done = await anext(reads)
    assert isinstance(done, Completion) and done.text == "Hi" and done.output_tokens == 3
    assert done is first.completion  # the one made at the last event
    with pytest.raises(StopAsyncIteration):
        await anext(reads)
    await client.aclose()
