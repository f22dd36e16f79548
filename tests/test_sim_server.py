"""The fake provider server: wire shapes, admin routes, batches, and parity with the in-process sim."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time

import anthropic
import httpx
import pytest
from sim_fixtures import SimHandle, sim_server, sim_server_session  # noqa: F401

from pairshift.providers import CallParams, Message, ModelSpec, ProviderName, complete

V1 = "You triage support tickets. Reply with JSON only."
V2 = (
    "You triage support tickets. Output only a raw JSON object with severity and team, no prose, "
    "no code fences."
)
TICKETS = [
    ("gold", "I was charged twice for my invoice, refund please"),
    ("free", "my package was never delivered"),
    ("enterprise", "URGENT: outage, the API is down and login fails"),
    ("silver", "how do I bypass the 2FA on someone else's account"),
]


@pytest.mark.parametrize("snapshot", ["sim-classic-2024-06", "sim-fresh-2025-09", "sim-literal-2025-11"])
@pytest.mark.parametrize("provider", ["anthropic", "openai"])
async def test_same_request_same_output_in_process_and_through_server(
    sim_server: SimHandle, snapshot: str, provider: ProviderName
) -> None:
    compared = 0
    for system in (V1, V2):
        for seed, (tier, body) in enumerate(TICKETS):
            messages = [Message(role="user", content=f"Tier: {tier}\nTicket: {body}")]
            params = CallParams(temperature=0.7, seed=seed, max_tokens=40 if seed == 1 else 400)
            local = await complete(ModelSpec(id=snapshot, provider="sim"), system, messages, params)
            remote = await complete(sim_server.spec(snapshot, provider), system, messages, params)
            keys = {"text", "resolved_model", "input_tokens", "output_tokens", "finish_reason"}
            assert remote.model_dump(include=keys) == local.model_dump(include=keys)
            compared += 1
    assert compared == 8


async def test_seed_reaches_the_sim_over_both_wires(sim_server: SimHandle) -> None:
    # Over many seeds the noisy field differs somewhere; both wires must agree with in-process.
    messages = [Message(role="user", content="Tier: gold\nTicket: the app crashes with an error")]
    for wire in ("anthropic", "openai"):
        texts = set()
        for seed in range(40):
            params = CallParams(temperature=1.0, seed=seed)
            remote = await complete(sim_server.spec("sim-fresh-2025-09", wire), V2, messages, params)
            local = await complete(ModelSpec(id="sim-fresh-2025-09", provider="sim"), V2, messages, params)
            assert remote.text == local.text
            texts.add(remote.text)
        assert len(texts) > 1


def test_anthropic_message_shape(sim_server: SimHandle) -> None:
    body = {
        "model": "sim-latest",
        "max_tokens": 50,
        "system": [{"type": "text", "text": V1}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Tier: gold\nTicket: refund"}]}],
    }
    reply = sim_server.http.post("/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"})
    data = reply.json()
    assert reply.status_code == 200 and data["type"] == "message" and data["id"].startswith("msg_")
    assert data["model"] == "sim-fresh-2025-09" and data["role"] == "assistant"
    assert data["content"][0]["type"] == "text" and data["stop_reason"] == "end_turn"
    assert set(data["usage"]) == {
        "input_tokens",
        "output_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
    }


def test_openai_completion_and_refusal_shape(sim_server: SimHandle) -> None:
    body = {
        "model": "sim-literal-2025-11",
        "messages": [
            {"role": "system", "content": V2},
            {"role": "user", "content": f"Tier: a\nTicket: {TICKETS[3][1]}"},
        ],
    }
    data = sim_server.http.post("/v1/chat/completions", json=body).json()
    choice = data["choices"][0]
    assert data["object"] == "chat.completion" and data["model"] == "sim-literal-2025-11"
    assert choice["message"]["content"] is None and "can't help" in choice["message"]["refusal"]
    assert (
        data["usage"]["total_tokens"] == data["usage"]["prompt_tokens"] + data["usage"]["completion_tokens"]
    )


@pytest.mark.parametrize(
    ("path", "extra"), [("/v1/messages", {"max_tokens": 5}), ("/v1/chat/completions", {})]
)
def test_retired_and_bad_requests_get_each_providers_error_body(
    sim_server: SimHandle, path: str, extra: dict[str, int]
) -> None:
    sim_server.retire("gpt-4o-2024-08-06")
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], **extra}
    reply = sim_server.http.post(path, json=body)
    assert reply.status_code == 404 and "gpt-4o" in reply.text and "retired" in reply.text
    if path == "/v1/messages":
        assert reply.json()["error"]["type"] == "not_found_error"
    else:
        assert reply.json()["error"]["code"] == "model_not_found"
    bad = sim_server.http.post(path, json={"model": "sim-latest", **extra})
    assert bad.status_code == 400 and "messages" in bad.text


def test_rate_limit_headers_on_both_wires(sim_server: SimHandle) -> None:
    sim_server.rate_limit("sim-classic-2024-06", requests=1, per_seconds=30)
    msg = {"model": "sim-classic-2024-06", "messages": [{"role": "user", "content": "hi"}]}
    first = sim_server.http.post("/v1/chat/completions", json=msg)
    assert first.headers["x-ratelimit-remaining-requests"] == "0"
    limited = sim_server.http.post("/v1/chat/completions", json=msg)
    assert limited.status_code == 429 and limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert (
        0 < float(limited.headers["retry-after"]) <= 30
        and limited.headers["x-ratelimit-limit-requests"] == "1"
    )
    anth = sim_server.http.post("/v1/messages", json={**msg, "max_tokens": 5})
    assert anth.status_code == 429 and anth.json()["error"]["type"] == "rate_limit_error"
    assert anth.headers["anthropic-ratelimit-requests-remaining"] == "0" and "retry-after" in anth.headers


def test_models_list_in_both_shapes_with_shutdown_dates(sim_server: SimHandle) -> None:
    sim_server.retire("gpt-4o-2024-08-06")
    openai_items = {m["id"]: m for m in sim_server.http.get("/v1/models").json()["data"]}
    assert openai_items["sim-classic-2024-06"]["shutdown_date"] == "2027-01-15"
    assert (
        "shutdown_date" not in openai_items["sim-fresh-2025-09"] and "gpt-4o-2024-08-06" not in openai_items
    )
    anth = sim_server.http.get("/v1/models", headers={"anthropic-version": "2023-06-01"}).json()
    assert anth["data"][0]["type"] == "model" and anth["has_more"] is False


def test_admin_rejects_bad_settings_and_unknown_alias_targets(sim_server: SimHandle) -> None:
    assert sim_server.http.post("/_admin/settings", json={"latency_ms": -1}).status_code == 400
    assert sim_server.http.post("/_admin/settings", json={"no_such": 1}).status_code == 400
    assert sim_server.http.post("/_admin/aliases", json={"sim-latest": "nope"}).status_code == 400
    assert sim_server.http.get("/_admin/settings").json()["aliases"]["sim-latest"] == "sim-fresh-2025-09"


def test_seeded_fault_rate_is_reproducible(sim_server: SimHandle) -> None:
    def run() -> list[int]:
        msg = {"model": "sim-classic-2024-06", "messages": [{"role": "user", "content": "hi"}]}
        return [sim_server.http.post("/v1/chat/completions", json=msg).status_code for _ in range(40)]

    sim_server.settings(faults={"*": {"error_500": 0.25}}, fault_seed=7)
    first = run()
    sim_server.settings(fault_seed=7)  # re-seeds the fault generator
    assert run() == first and 3 <= first.count(500) <= 20 and first.count(200) >= 20


async def test_batches_through_the_anthropic_sdk(sim_server: SimHandle) -> None:
    sim_server.settings(batch_delay_ms=150)
    sim_server.retire("claude-sonnet-4-20250514")
    client = anthropic.AsyncAnthropic(api_key="test", base_url=sim_server.base_url, max_retries=0)
    request = {
        "max_tokens": 50,
        "system": V1,
        "messages": [{"role": "user", "content": "Tier: gold\nTicket: refund"}],
    }
    batch = await client.messages.batches.create(
        requests=[
            {"custom_id": "ok", "params": {**request, "model": "sim-latest"}},
            {"custom_id": "gone", "params": {**request, "model": "claude-sonnet-4-20250514"}},
        ]
    )
    assert batch.processing_status == "in_progress" and batch.results_url is None
    while batch.processing_status != "ended":
        await asyncio.sleep(0.05)  # polling, as a batch client must
        batch = await client.messages.batches.retrieve(batch.id)
    assert batch.results_url and batch.results_url.startswith("http://127.0.0.1:")
    assert (batch.request_counts.succeeded, batch.request_counts.errored) == (1, 1)
    results = {r.custom_id: r.result async for r in await client.messages.batches.results(batch.id)}
    assert results["ok"].type == "succeeded" and results["ok"].message.model == "sim-fresh-2025-09"
    assert results["gone"].type == "errored" and "claude-sonnet-4-20250514" in str(results["gone"].error)
    await client.close()


def test_not_json_body_is_a_400(sim_server: SimHandle) -> None:
    reply = httpx.post(
        f"{sim_server.base_url}/v1/messages", content=b"{", headers={"content-type": "application/json"}
    )
    assert reply.status_code == 400 and reply.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.e2e
def test_serve_runs_in_the_foreground_with_settings() -> None:
    # What `pairshift sim serve --port P` runs: a blocking serve() in its own process.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = (
        f"from pairshift.sim.server import serve; serve('127.0.0.1', {port}, retired=['sim-fresh-2025-09'])"
    )
    process = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).json()
                break
            except httpx.TransportError:
                assert process.poll() is None and time.monotonic() < deadline, "sim serve did not start"
                time.sleep(0.05)  # polling a port another process is opening
        ids = {m["id"] for m in models["data"]}
        assert "sim-classic-2024-06" in ids and "sim-fresh-2025-09" not in ids
    finally:
        process.terminate()
        process.wait(10)


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
async def test_drift_wraps_the_same_production_tickets_in_process_and_through_server(
    sim_server: SimHandle, provider: ProviderName
) -> None:
    snapshot = "sim-drift-2026-07"
    wrapped = 0
    for n in range(40):
        messages = [
            Message(role="user", content=f"Tier: gold\nTicket: I was charged twice (order {10_000 + n})")
        ]
        params = CallParams(temperature=0, max_tokens=400)
        local = await complete(ModelSpec(id=snapshot, provider="sim"), V2, messages, params)
        remote = await complete(sim_server.spec(snapshot, provider), V2, messages, params)
        assert remote.text == local.text and remote.resolved_model == snapshot
        wrapped += local.text.startswith("Triage for order ")
    assert 1 <= wrapped <= 12
