"""The fake server's batch APIs through the official SDKs: OpenAI Files + Batch API, Anthropic batches.

Each test drives the server the way a batch client must (create, poll, read the results), and checks the
statuses, counts, result files and strict refusals the real services give.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import anthropic
import openai
import pytest
from sim_fixtures import SimHandle, sim_server, sim_server_session  # noqa: F401

SYSTEM = "You triage support tickets. Reply with JSON only."


def chat_line(
    custom_id: str, model: str = "gpt-4o", seed: int = 0, url: str = "/v1/chat/completions"
) -> dict:
    body = {
        "model": model,
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"Tier: gold\nTicket: refund {custom_id}"},
        ],
        "max_completion_tokens": 200,
        "seed": seed,
    }
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def jsonl(lines: list[dict]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def oai(sim: SimHandle) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key="test", base_url=sim.openai_base_url, max_retries=0)


async def upload(client: openai.AsyncOpenAI, lines: list[dict]) -> str:
    f = await client.files.create(file=("requests.jsonl", jsonl(lines)), purpose="batch")
    assert f.purpose == "batch" and f.bytes == len(jsonl(lines)) and f.object == "file"
    return f.id


async def until_over(client: openai.AsyncOpenAI, batch_id: str) -> tuple[Any, list[str]]:
    seen: list[str] = []
    while True:
        batch = await client.batches.retrieve(batch_id)
        if not seen or seen[-1] != batch.status:
            seen.append(batch.status)
        if batch.status in ("completed", "expired", "cancelled", "failed"):
            return batch, seen
        await asyncio.sleep(0.02)  # polling, as a batch client must


async def read_lines(client: openai.AsyncOpenAI, file_id: str | None) -> dict[str, dict]:
    if file_id is None:
        return {}
    content = await client.files.content(file_id)
    return {row["custom_id"]: row for row in map(json.loads, content.text.splitlines())}


async def test_openai_batch_runs_through_the_sdk(sim_server: SimHandle) -> None:
    sim_server.settings(batch_delay_ms=400)
    client = oai(sim_server)
    lines = [chat_line(f"c{i}", seed=i) for i in range(7)]
    file_id = await upload(client, lines)
    batch = await client.batches.create(
        input_file_id=file_id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"run": "r1"},
    )
    assert batch.status == "validating" and batch.output_file_id is None and batch.metadata == {"run": "r1"}
    batch, seen = await until_over(client, batch.id)
    assert seen[0] == "validating" and seen[-1] == "completed" and "in_progress" in seen
    assert batch.request_counts is not None
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (
        7,
        7,
        0,
    )
    assert batch.error_file_id is None and batch.completed_at is not None
    out = await read_lines(client, batch.output_file_id)
    assert set(out) == {line["custom_id"] for line in lines}
    row = out["c3"]
    assert row["error"] is None and row["response"]["status_code"] == 200
    completion = row["response"]["body"]
    assert completion["object"] == "chat.completion" and completion["model"] == "gpt-4o-2024-08-06"
    # The same request answered online gives the same output (the sim is deterministic).
    online = await client.chat.completions.create(**lines[3]["body"])
    assert online.choices[0].message.content == completion["choices"][0]["message"]["content"]
    await client.close()


async def test_openai_per_request_errors_go_to_the_error_file(sim_server: SimHandle) -> None:
    sim_server.retire("gpt-5-2025-08-07")
    client = oai(sim_server)
    file_id = await upload(client, [chat_line("gone", model="gpt-5-2025-08-07")])
    batch, _ = await until_over(
        client,
        (
            await client.batches.create(
                input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
            )
        ).id,
    )
    assert batch.status == "completed" and batch.output_file_id is None
    assert batch.request_counts is not None and batch.request_counts.failed == 1
    errors = await read_lines(client, batch.error_file_id)
    assert errors["gone"]["response"]["status_code"] == 404
    assert errors["gone"]["response"]["body"]["error"]["code"] == "model_not_found"
    await client.close()


async def test_openai_failure_and_expiry_rates_are_seeded(sim_server: SimHandle) -> None:
    async def run() -> tuple[str, dict[str, dict], dict[str, dict]]:
        sim_server.settings(batch_failure_rate=0.25, batch_expire_rate=0.15, fault_seed=11)
        client = oai(sim_server)
        file_id = await upload(client, [chat_line(f"c{i}", seed=i) for i in range(40)])
        created = await client.batches.create(
            input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        batch, _ = await until_over(client, created.id)
        out, errs = (
            await read_lines(client, batch.output_file_id),
            await read_lines(client, batch.error_file_id),
        )
        assert batch.request_counts is not None
        assert (batch.request_counts.completed, batch.request_counts.failed) == (len(out), len(errs))
        await client.close()
        return batch.status, out, errs

    status, out, errs = await run()
    assert status == "expired" and len(out) + len(errs) == 40
    kinds = {("expired" if e["error"] else e["response"]["status_code"]) for e in errs.values()}
    assert kinds == {"expired", 500}
    assert all(e["error"]["code"] == "batch_expired" for e in errs.values() if e["error"])
    assert 5 <= len(errs) <= 25
    again = await run()
    assert set(again[1]) == set(out) and set(again[2]) == set(errs)


async def test_openai_cancel(sim_server: SimHandle) -> None:
    sim_server.settings(batch_delay_ms=60_000, batch_cancel_ms=50)
    client = oai(sim_server)
    file_id = await upload(client, [chat_line(f"c{i}") for i in range(5)])
    batch = await client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    cancelled = await client.batches.cancel(batch.id)
    assert cancelled.status == "cancelling" and cancelled.cancelling_at is not None
    batch, seen = await until_over(client, batch.id)
    assert batch.status == "cancelled" and batch.output_file_id is None
    errors = await read_lines(client, batch.error_file_id)
    assert {e["error"]["code"] for e in errors.values()} == {"batch_cancelled"} and len(errors) == 5
    with pytest.raises(openai.BadRequestError, match="status 'cancelled'"):
        await client.batches.cancel(batch.id)
    await client.close()


async def test_openai_strict_refusals(sim_server: SimHandle) -> None:
    client = oai(sim_server)
    with pytest.raises(openai.BadRequestError, match="purpose"):
        await client.files.create(file=("x.jsonl", b"{}\n"), purpose="nonsense")  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError, match="Must be .jsonl"):
        await client.files.create(file=("x.csv", b"a,b\n"), purpose="batch")
    with pytest.raises(openai.NotFoundError, match="No such File object"):
        await client.batches.create(
            input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h"
        )
    good = await upload(client, [chat_line("a")])
    with pytest.raises(openai.BadRequestError, match="endpoint"):
        await client.batches.create(input_file_id=good, endpoint="/v1/nope", completion_window="24h")  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError, match="completion_window"):
        await client.batches.create(
            input_file_id=good, endpoint="/v1/chat/completions", completion_window="1h"
        )  # type: ignore[arg-type]
    other = await client.files.create(file=("notes.jsonl", b"{}\n"), purpose="user_data")
    with pytest.raises(openai.BadRequestError, match="purpose 'user_data'"):
        await client.batches.create(
            input_file_id=other.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
    with pytest.raises(openai.NotFoundError, match="No batch found"):
        await client.batches.retrieve("batch_nope")
    # A file with bad lines validates to `failed`, naming each line; nothing runs.
    bad = await upload(
        client,
        [
            chat_line("a"),
            chat_line("a"),
            chat_line("b", url="/v1/responses"),
            chat_line("c", model="gpt-5-2025-08-07"),
            {"custom_id": "d", "method": "POST", "url": "/v1/chat/completions"},
        ],
    )
    batch = await client.batches.create(
        input_file_id=bad, endpoint="/v1/chat/completions", completion_window="24h"
    )
    batch, _ = await until_over(client, batch.id)
    assert batch.status == "failed" and batch.errors is not None and batch.errors.data is not None
    codes = [(e.code, e.line) for e in batch.errors.data]
    assert codes == [
        ("duplicate_custom_id", 2),
        ("invalid_url", 3),
        ("mismatched_model", 4),
        ("missing_required_parameter", 5),
    ]
    assert sim_server.stats().get("total", {}).get("batch_requests", 0) == 0
    await client.close()


def anthropic_request(custom_id: str, model: str = "claude-sonnet-4-20250514", seed: int = 0) -> dict:
    params = {
        "model": model,
        "max_tokens": 200,
        "system": SYSTEM,
        "messages": [{"role": "user", "content": f"Tier: gold\nTicket: refund {custom_id}"}],
        "metadata": {"user_id": f"seed-{seed}"},
    }
    return {"custom_id": custom_id, "params": params}


def ant(sim: SimHandle) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(api_key="test", base_url=sim.base_url, max_retries=0)


async def until_ended(client: anthropic.AsyncAnthropic, batch_id: str) -> Any:
    while True:
        batch = await client.messages.batches.retrieve(batch_id)
        if batch.processing_status == "ended":
            return batch
        await asyncio.sleep(0.02)  # polling, as a batch client must


async def test_anthropic_failures_expiry_and_listing(sim_server: SimHandle) -> None:
    sim_server.settings(batch_failure_rate=0.3, batch_expire_rate=0.2, fault_seed=3, batch_delay_ms=100)
    client = ant(sim_server)
    batch = await client.messages.batches.create(
        requests=[anthropic_request(f"c{i}", seed=i) for i in range(30)]
    )
    assert batch.request_counts.processing == 30
    batch = await until_ended(client, batch.id)
    counts = batch.request_counts
    assert counts.processing == 0 and counts.succeeded + counts.errored + counts.expired == 30
    assert counts.errored >= 3 and counts.expired >= 2
    results = {r.custom_id: r.result async for r in await client.messages.batches.results(batch.id)}
    by_type: dict[str, int] = {}
    for result in results.values():
        by_type[result.type] = by_type.get(result.type, 0) + 1
    assert by_type == {"succeeded": counts.succeeded, "errored": counts.errored, "expired": counts.expired}
    errored = next(r for r in results.values() if r.type == "errored")
    assert errored.error.error.type == "api_error"
    listed = [b.id async for b in client.messages.batches.list()]
    assert listed == [batch.id]
    await client.close()


async def test_anthropic_cancel_and_strict_refusals(sim_server: SimHandle) -> None:
    sim_server.settings(batch_delay_ms=60_000)
    client = ant(sim_server)
    batch = await client.messages.batches.create(requests=[anthropic_request(f"c{i}") for i in range(4)])
    with pytest.raises(anthropic.AnthropicError, match="results_url"):
        await client.messages.batches.results(batch.id)  # the SDK refuses without results_url; the route too
    assert sim_server.http.get(f"/v1/messages/batches/{batch.id}/results").status_code == 400
    canceled = await client.messages.batches.cancel(batch.id)
    assert canceled.cancel_initiated_at is not None
    batch = await until_ended(client, batch.id)
    assert batch.request_counts.canceled == 4
    results = [r.result.type async for r in await client.messages.batches.results(batch.id)]
    assert results == ["canceled"] * 4
    with pytest.raises(anthropic.BadRequestError):
        await client.messages.batches.cancel(batch.id)
    with pytest.raises(anthropic.BadRequestError, match="custom_id"):
        await client.messages.batches.create(requests=[anthropic_request("has space")])
    with pytest.raises(anthropic.BadRequestError, match="duplicate"):
        await client.messages.batches.create(requests=[anthropic_request("a"), anthropic_request("a")])
    with pytest.raises(anthropic.NotFoundError):
        await client.messages.batches.retrieve("msgbatch_nope")
    created = sim_server.http.get("/_admin/batches").json()["batches"]
    assert [(b["wire"], len(b["custom_ids"])) for b in created] == [("anthropic", 4)]
    await client.close()
