"""The gateway: the official openai and anthropic SDKs, pointed at `pairshift api` with a pairshift token as
the key, talk to a `prompt: external` deployment in the HTTP sim, plain and streaming, unchanged. Sticky
assignment per unit during a canary, observations with time to first token, the resolved model and the app's
prompt version; errors in each wire's shape; the fallback chain streaming too."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
import yaml
from conftest import EXAMPLES, api_token
from sqlalchemy import select

from pairshift import wire_stream
from pairshift.api import create_app
from pairshift.apply import apply_path
from pairshift.gateway import EventStream
from pairshift.observations import hash_unit
from pairshift.providers import Completion
from pairshift.providers import direct as direct_calls
from pairshift.providers.direct import Read
from pairshift.registry.models import Deployment, Observation, ShadowPair
from pairshift.router import bucket
from pairshift.sim.server import serve_in_thread

DEPLOYMENT = "chat-app"
GPT = "gpt-4o-2024-08-06"  # control: the HTTP sim's OpenAI mirror of sim-classic
CLAUDE = "claude-sonnet-4-20250514"  # candidate: the HTTP sim's Anthropic mirror of sim-classic
MIGRATION = "migration-chat-app"
CONTROL_PAIR, CANDIDATE_PAIR = f"external+{GPT}", f"external+{CLAUDE}"
MESSAGES = [{"role": "user", "content": "Tier: gold\nTicket: I was charged twice, refund please"}]


def _config(dst: Path, sim) -> Path:
    shutil.copytree(EXAMPLES, dst, ignore=shutil.ignore_patterns("*.py"))
    cfg = yaml.safe_load((dst / "pairshift.yaml").read_text())
    cfg["models"] += [
        {"id": GPT, "provider": "openai", "base_url": sim.openai_base_url, "max_attempts": 1},
        {"id": CLAUDE, "provider": "anthropic", "base_url": sim.base_url, "max_attempts": 1},
    ]
    cfg["deployments"].append(
        {"name": DEPLOYMENT, "prompt": "external", "model": GPT, "fallback": ["sim-fresh-2025-09"]}
    )
    (dst / "pairshift.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return dst


@pytest.fixture
def gateway(sqlite_registry, sim_server, tmp_path) -> Iterator[tuple[str, str]]:
    """(base URL, token): the API serving on a free port, the deployment canarying Claude to 50% of units."""
    apply_path(sqlite_registry, _config(tmp_path / "config", sim_server), by="test")
    with sqlite_registry.session() as s:
        dep = s.get(Deployment, DEPLOYMENT)
        dep.candidate_prompt, dep.candidate_model = "external", CLAUDE
        dep.canary_percent, dep.migration = 50, MIGRATION
        s.add(dep)
    app = create_app(sqlite_registry)
    server, thread, port = serve_in_thread(app, lifespan="on")
    try:
        global _flush, _state
        _flush, _state = app.state.pairshift.flush_observations, app.state.pairshift
        yield f"http://127.0.0.1:{port}", api_token(sqlite_registry, "complete")
    finally:
        server.should_exit = True
        thread.join(10)


_flush = None  # the serving app's writer flush: observations are written off the request path
_state = None  # the serving app's state (its routers)


def rows(registry, at_least: int = 0) -> list[Observation]:
    """The deployment's observations, once there are ``at_least`` of them (10 s at most): a stream's
    observation is recorded after its end reached the client, once the provider's response closed."""
    deadline = time.monotonic() + 10
    while True:
        _flush()
        with registry.session() as s:
            got = list(s.scalars(select(Observation).where(Observation.deployment == DEPLOYMENT)))
        if len(got) >= at_least or time.monotonic() > deadline:
            return got
        time.sleep(0.01)


def expected_variant(unit: str) -> str:
    return "candidate" if bucket(MIGRATION, unit) < 5_000 else "control"


def _oai(gateway, **kw) -> openai.OpenAI:
    base, token = gateway
    return openai.OpenAI(base_url=f"{base}/v1", api_key=token, max_retries=0, **kw)


def _claude(gateway, **kw) -> anthropic.Anthropic:
    base, token = gateway
    return anthropic.Anthropic(base_url=base, api_key=token, max_retries=0, **kw)


def test_openai_sdk_plain_and_streaming_with_sticky_units(gateway, sqlite_registry):
    client = _oai(gateway)
    units = [f"user-{i}" for i in range(12)]
    for unit in units:
        for _ in range(2):  # the same unit twice: the same pair
            raw = client.chat.completions.with_raw_response.create(
                model=DEPLOYMENT, messages=MESSAGES, user=unit, extra_headers={"X-Pairshift-Prompt": "app@7"}
            )
            answer = raw.parse()
            assert raw.headers["x-pairshift-variant"] == expected_variant(unit)
            assert answer.model == (CLAUDE if expected_variant(unit) == "candidate" else GPT)
            assert "team" in answer.choices[0].message.content.lower()
    stream = client.chat.completions.create(
        model=DEPLOYMENT,
        messages=MESSAGES,
        user=units[0],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == answer.choices[0].message.content or "team" in text.lower()
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    client.close()
    got = rows(sqlite_registry, at_least=2 * len(units) + 1)
    assert len(got) == 2 * len(units) + 1
    by_unit = {hash_unit(u): expected_variant(u) for u in units}
    assert {(o.unit, o.variant) for o in got} == set(by_unit.items()), "every unit stayed on its pair"
    assert {o.pair for o in got} == {CONTROL_PAIR, CANDIDATE_PAIR}
    assert all(o.resolved_model in (GPT, CLAUDE) and o.output_tokens > 0 and o.outcome == "ok" for o in got)
    assert {o.prompt_version for o in got} == {"app@7", None}
    streamed = [o for o in got if o.ttft_ms is not None]
    assert len(streamed) == 1 and 0 < streamed[0].ttft_ms <= streamed[0].latency_ms


def test_a_shadow_stage_mirrors_gateway_requests_plain_and_streaming_serving_only_control(
    gateway, sqlite_registry
):
    with sqlite_registry.session() as s:  # a shadow stage's split: 0% served, every unit's requests mirrored
        dep = s.get(Deployment, DEPLOYMENT)
        dep.canary_percent, dep.shadow_percent = 0.0, 100.0
        s.add(dep)
    client = _oai(gateway)
    raw = client.chat.completions.with_raw_response.create(
        model=DEPLOYMENT, messages=MESSAGES, user="u-plain"
    )
    assert raw.headers["x-pairshift-variant"] == "control" and raw.parse().model == GPT
    chunks = list(
        client.chat.completions.create(model=DEPLOYMENT, messages=MESSAGES, user="u-stream", stream=True)
    )
    assert {c.model for c in chunks} == {GPT}, "the user's stream is control's"
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    client.close()
    router = _state.routers[DEPLOYMENT]
    # a stream's mirror is offered once its observation is recorded, after the client has the stream's end;
    # the router's refresh thread or flush_samples stores answered mirrors
    deadline = time.monotonic() + 10
    while True:
        router.flush_samples()
        with sqlite_registry.session() as s:
            pairs = {p.unit: p for p in s.scalars(select(ShadowPair))}
        if len(pairs) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert set(pairs) == {hash_unit("u-plain"), hash_unit("u-stream")}, "both requests mirrored"
    assert router.mirror.counts["offered"] == 2
    for p in pairs.values():
        assert (p.candidate_pair, p.candidate_outcome, p.control_outcome) == (CANDIDATE_PAIR, "ok", "ok")
        assert "team" in p.candidate_output.lower() and "charged twice" in p.input
    assert pairs[hash_unit("u-plain")].control_output == raw.parse().choices[0].message.content
    assert pairs[hash_unit("u-stream")].control_output == streamed
    assert {o.variant for o in rows(sqlite_registry)} == {"control"}, "a mirrored call is never served"


def test_anthropic_sdk_plain_and_streaming(gateway, sqlite_registry):
    client = _claude(gateway)
    unit = next(u for u in (f"a-{i}" for i in range(100)) if expected_variant(u) == "candidate")
    answer = client.messages.create(
        model=DEPLOYMENT, max_tokens=200, messages=MESSAGES, metadata={"user_id": unit}
    )
    assert answer.model == CLAUDE and answer.usage.output_tokens > 0
    with client.messages.stream(
        model=DEPLOYMENT, max_tokens=200, messages=MESSAGES, metadata={"user_id": unit}
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == answer.content[0].text
    assert final.usage.output_tokens == answer.usage.output_tokens
    assert final.usage.input_tokens == answer.usage.input_tokens > 0
    client.close()
    got = rows(sqlite_registry, at_least=2)
    assert {(o.unit, o.pair, o.resolved_model) for o in got} == {(hash_unit(unit), CANDIDATE_PAIR, CLAUDE)}
    assert sorted(o.ttft_ms is not None for o in got) == [False, True]


def test_the_unit_header_wins_and_a_request_without_a_unit_is_its_own(gateway, sqlite_registry):
    client = _oai(gateway)
    client.chat.completions.create(
        model=DEPLOYMENT, messages=MESSAGES, user="body", extra_headers={"X-Pairshift-Unit": "header"}
    )
    client.chat.completions.create(model=DEPLOYMENT, messages=MESSAGES)
    client.chat.completions.create(model=DEPLOYMENT, messages=MESSAGES)
    client.close()
    units = [o.unit for o in rows(sqlite_registry)]
    assert units[0] == hash_unit("header") and len(set(units)) == 3


def test_errors_come_in_each_wires_shape(gateway, sqlite_registry):
    base, _ = gateway
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{base}/v1", api_key="ps_nope", max_retries=0).chat.completions.create(
            model=DEPLOYMENT, messages=MESSAGES
        )
    wrong_scope = api_token(sqlite_registry, "resolve")
    with pytest.raises(anthropic.PermissionDeniedError, match="complete"):
        anthropic.Anthropic(base_url=base, api_key=wrong_scope, max_retries=0).messages.create(
            model=DEPLOYMENT, max_tokens=10, messages=MESSAGES
        )
    client = _oai(gateway)
    with pytest.raises(openai.NotFoundError, match="no deployment"):
        client.chat.completions.create(model="nope", messages=MESSAGES)
    with pytest.raises(openai.BadRequestError, match="renders its own prompt"):
        client.chat.completions.create(model="support-triage", messages=MESSAGES)
    with pytest.raises(openai.BadRequestError, match="tools"):
        client.chat.completions.create(
            model=DEPLOYMENT,
            messages=MESSAGES,
            tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
        )
    with pytest.raises(openai.BadRequestError, match="stream_options"):
        client.chat.completions.create(
            model=DEPLOYMENT, messages=MESSAGES, stream_options={"include_usage": True}
        )
    client.close()
    assert rows(sqlite_registry) == []


def test_a_retired_candidate_is_served_by_the_chain_while_streaming(gateway, sqlite_registry, sim_server):
    sim_server.retire(CLAUDE)
    unit = next(u for u in (f"r-{i}" for i in range(100)) if expected_variant(u) == "candidate")
    client = _oai(gateway)
    raw = client.chat.completions.with_raw_response.create(
        model=DEPLOYMENT, messages=MESSAGES, user=unit, stream=True
    )
    assert raw.headers["x-pairshift-fallback-from"] == CANDIDATE_PAIR
    text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert "team" in text.lower()
    client.close()
    (row,) = rows(sqlite_registry)
    assert (row.pair, row.outcome, row.served_pair) == (
        CANDIDATE_PAIR,
        "fallback",
        "external+sim-fresh-2025-09",
    )


def test_a_provider_failure_without_a_chain_is_a_5xx_naming_the_pair(gateway, sqlite_registry, sim_server):
    with sqlite_registry.session() as s:
        s.get(Deployment, DEPLOYMENT).fallback = None
    sim_server.retire(GPT)
    unit = next(u for u in (f"c-{i}" for i in range(100)) if expected_variant(u) == "control")
    client = _oai(gateway)
    with pytest.raises(openai.InternalServerError, match=re.escape(CONTROL_PAIR)) as err:
        client.chat.completions.create(model=DEPLOYMENT, messages=MESSAGES, user=unit, stream=True)
    assert err.value.status_code == 502
    client.close()
    assert [o.outcome for o in rows(sqlite_registry)] == ["error"]


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
def test_a_stream_the_client_abandons_is_recorded(gateway, sqlite_registry, monkeypatch, wire):
    """The client reads the first delta and hangs up while the model still generates: the observation
    says `abandoned`, with the time to first token and the tokens seen so far; the provider stream closes."""
    closed = threading.Event()

    async def generating(spec, system, messages, params, **kw):  # one delta, then a model that goes on
        try:
            yield Read(wire_stream.OpenAIChunks(spec.id).delta("Hello there, "), ["Hello there, "])
            await asyncio.Event().wait()
        finally:
            closed.set()

    # the openai wire forwards the (openai) model's events; the anthropic wire re-encodes its text
    monkeypatch.setattr(direct_calls, "reads", generating)
    base, token = gateway
    path, body = (
        ("/v1/chat/completions", {"model": DEPLOYMENT, "messages": MESSAGES, "stream": True, "user": "u-1"})
        if wire == "openai"
        else ("/v1/messages", {"model": DEPLOYMENT, "messages": MESSAGES, "max_tokens": 100, "stream": True})
    )
    headers = {"authorization": f"Bearer {token}", "x-pairshift-prompt": "app@7"}
    with httpx.Client(base_url=base, timeout=10) as http:
        with http.stream("POST", path, json=body, headers=headers) as response:
            assert response.status_code == 200
            lines = response.iter_lines()
            assert any("Hello there" in line for line in lines)  # read up to the first delta, then leave
    assert closed.wait(10), "the provider's stream was never closed"
    (row,) = rows(sqlite_registry)
    assert (row.outcome, row.prompt_version, row.detail) == ("abandoned", "app@7", "abandoned by the client")
    assert row.ttft_ms is not None and 0 < row.ttft_ms <= row.latency_ms
    assert row.output_tokens == 4  # "Hello there, ": 13 characters seen, about 4 a token


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
def test_a_re_encoded_stream_ends_at_the_providers_last_event(gateway, sqlite_registry, monkeypatch, wire):
    """A stream re-encoded in the client's wire (the serving model speaks the other one) sends its finish and
    usage with the provider's last event, in one write with its last text, not once the provider's response
    has closed; the observation is recorded after that close."""
    gate = threading.Event()
    served = CLAUDE if wire == "openai" else GPT  # the other wire: re-encoded
    done = Completion(
        text="Hello there",
        resolved_model=served,
        input_tokens=12,
        output_tokens=3,
        latency_ms=1.0,
        cost_usd=0.0,
        finish_reason="stop",
    )

    async def ending(spec, system, messages, params, **kw):  # the last event read; the response still open
        yield Read(b"", ["Hello "])
        yield Read(b"", ["there"], end=True, completion=done)
        await asyncio.get_running_loop().run_in_executor(None, gate.wait, 10)
        yield done

    monkeypatch.setattr(direct_calls, "reads", ending)
    base, token = gateway
    variant = "candidate" if wire == "openai" else "control"
    unit = next(u for u in (f"e-{i}" for i in range(100)) if expected_variant(u) == variant)
    path, body, last = (
        ("/v1/chat/completions", {"stream": True, "stream_options": {"include_usage": True}}, "data: [DONE]")
        if wire == "openai"
        else ("/v1/messages", {"stream": True, "max_tokens": 100}, "event: message_stop")
    )
    body = {**body, "model": DEPLOYMENT, "messages": MESSAGES}
    headers = {"authorization": f"Bearer {token}", "x-pairshift-unit": unit}
    with (
        httpx.Client(base_url=base, timeout=10) as http,
        http.stream("POST", path, json=body, headers=headers) as r,
    ):
        lines = []
        it = r.iter_lines()
        for line in it:
            lines.append(line)
            if line == last:
                break
        assert not gate.is_set(), "the end came before the provider's response closed"
        gate.set()
        list(it)
    events = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    if wire == "openai":
        assert events[-1]["usage"]["completion_tokens"] == 3 and events[-2]["choices"][0]["finish_reason"]
    else:
        assert events[-1]["type"] == "message_delta" and events[-1]["usage"]["output_tokens"] == 3
    (row,) = rows(sqlite_registry, at_least=1)  # recorded by the API's loop once the response closed
    assert (row.outcome, row.output_tokens, row.resolved_model) == ("ok", 3, served)


def test_the_gateway_runs_online_checks_plain_and_streaming(gateway, sqlite_registry):
    with sqlite_registry.session() as s:  # before the API's first request loads the split
        dep = s.get(Deployment, DEPLOYMENT)
        dep.online_checks = [{"type": "not-icontains", "value": "team", "metric": "no-team"}]
        s.add(dep)
    client = _oai(gateway)
    answer = client.chat.completions.create(model=DEPLOYMENT, messages=MESSAGES, user="u-1")
    assert "team" in answer.choices[0].message.content.lower()
    text = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(model=DEPLOYMENT, messages=MESSAGES, user="u-1", stream=True)
        if c.choices
    )
    assert "team" in text.lower()
    client.close()
    got = rows(sqlite_registry, at_least=2)
    assert len(got) == 2 and {o.outcome for o in got} == {"invalid"}
    assert all(o.detail.startswith("online check no-team: ") for o in got)


@pytest.mark.parametrize("include_usage", [True, False])
def test_a_stream_in_the_models_own_wire_is_the_providers_stream(
    gateway, sqlite_registry, sim_server, include_usage
):
    """Both wires, the model's own: the events a client gets through the gateway are the provider's events
    (ids and times aside), the usage chunk only when asked for; what is recorded is read from them."""
    base, token = gateway
    control = next(u for u in (f"c-{i}" for i in range(100)) if expected_variant(u) == "control")
    candidate = next(u for u in (f"c-{i}" for i in range(100)) if expected_variant(u) == "candidate")
    oai = {"messages": MESSAGES, "stream": True}
    if include_usage:
        oai["stream_options"] = {"include_usage": True}
    claude = {"messages": MESSAGES, "stream": True, "max_tokens": 200}

    def events(url: str, body: dict, headers: dict) -> list[dict]:
        with httpx.Client(timeout=10) as http, http.stream("POST", url, json=body, headers=headers) as r:
            assert r.status_code == 200
            out = []
            for line in r.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    event = json.loads(line[6:])
                    for key in ("id", "created"):
                        event.pop(key, None)
                    event.get("message", {}).pop("id", None)
                    out.append(event)
            return out

    auth = {"authorization": f"Bearer {token}"}
    via_gateway = events(f"{base}/v1/chat/completions", {**oai, "model": DEPLOYMENT, "user": control}, auth)
    direct = events(f"{sim_server.openai_base_url}/chat/completions", {**oai, "model": GPT}, {})
    assert via_gateway == direct and len(direct) >= 2 + include_usage
    assert any("usage" in e for e in direct) == include_usage
    auth = {"x-api-key": token, "x-pairshift-unit": candidate}
    via_gateway = events(f"{base}/v1/messages", {**claude, "model": DEPLOYMENT}, auth)
    direct = events(f"{sim_server.base_url}/v1/messages", {**claude, "model": CLAUDE}, {})
    assert via_gateway == direct
    got = rows(sqlite_registry, at_least=2)
    assert sorted(o.pair for o in got) == sorted([CONTROL_PAIR, CANDIDATE_PAIR])
    assert all(o.outcome == "ok" and o.output_tokens > 0 and o.input_tokens > 0 and o.ttft_ms for o in got)
    assert {o.resolved_model for o in got} == {GPT, CLAUDE}


async def test_the_last_piece_is_written_with_the_bodys_end_before_the_work_after_it():
    """One write for a stream's end (the client waits for the body's end), and what the generator does after
    its last piece (recording the observation) runs once that write is out."""
    sent: list = []

    async def pieces():
        yield b"data: 1\n\n", False
        yield b"data: [DONE]\n\n", True
        sent.append("recorded")

    async def receive():
        await asyncio.Event().wait()  # the client stays

    async def send(message):
        sent.append(message)

    await EventStream(pieces())({"type": "http", "asgi": {"spec_version": "2.3"}}, receive, send)
    bodies = [(m["body"], m["more_body"]) for m in sent if isinstance(m, dict) and "body" in m]
    assert bodies == [(b"data: 1\n\n", True), (b"data: [DONE]\n\n", False)]
    assert sent[-1] == "recorded"


async def _stream_through(pieces, disconnect: asyncio.Event) -> list:
    """An EventStream of ``pieces`` to a client that hangs up once ``disconnect`` is set."""
    sent: list = []

    async def receive():
        await disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    await EventStream(pieces)({"type": "http", "asgi": {"spec_version": "2.3"}}, receive, send)
    await asyncio.sleep(0)  # the task was not left cancelled: it awaits on
    return sent


async def test_a_client_gone_mid_stream_cancels_the_stream_and_the_response_ends_quietly():
    gone, closed = asyncio.Event(), []

    async def pieces():
        try:
            yield b"data: 1\n\n", False
            gone.set()  # the client hangs up while the model still generates
            await asyncio.Event().wait()
            yield b"data: never\n\n", True
        finally:
            closed.append("closed")  # where Streaming.reads records `abandoned` and closes the provider

    sent = await asyncio.wait_for(_stream_through(pieces(), gone), 10)
    assert [m.get("body") for m in sent if "body" in m] == [b"data: 1\n\n"] and closed == ["closed"]


async def test_a_disconnect_after_the_last_piece_changes_nothing():
    gone, done = asyncio.Event(), []

    async def pieces():
        yield b"data: [DONE]\n\n", True
        gone.set()  # the client has the whole response and leaves
        await asyncio.sleep(0.01)  # the work after the last piece (recording) suspends meanwhile
        done.append("recorded")

    sent = await _stream_through(pieces(), gone)
    assert done == ["recorded"] and sent[-1] == {
        "type": "http.response.body",
        "body": b"data: [DONE]\n\n",
        "more_body": False,
    }


def test_the_wire_routes_are_served_before_the_router_with_the_apps_error_handlers(
    sqlite_registry, monkeypatch
):
    """POST on the two paths is answered by GatewayRoutes; a registry error there gets the app's own 503
    answer; another method goes on to the router (405), as do the OpenAPI entries of the routes."""
    from fastapi.testclient import TestClient
    from sqlalchemy.exc import OperationalError

    app = create_app(sqlite_registry)
    token = api_token(sqlite_registry, "complete")

    def unreachable(registry, token):
        raise OperationalError("SELECT", {}, Exception("database is locked"))

    monkeypatch.setattr(app.state.pairshift.token_cache, "lookup", unreachable)
    with TestClient(app) as client:
        body = {"model": DEPLOYMENT, "messages": MESSAGES}
        answer = client.post("/v1/chat/completions", json=body, headers={"authorization": f"Bearer {token}"})
        assert answer.status_code == 503
        assert answer.json() == {"error": "registry unavailable: OperationalError", "detail": []}
        assert client.post("/v1/messages", json=body).status_code == 401  # no key: the wire's own answer
        assert client.get("/v1/chat/completions").status_code == 405
        paths = client.get("/openapi.json").json()["paths"]
        assert "post" in paths["/v1/chat/completions"] and "post" in paths["/v1/messages"]
