"""pairshift.providers through the official anthropic and openai SDKs against the fake server."""

from __future__ import annotations

import pickle
import time

import pytest
from sim_fixtures import SimHandle, sim_server, sim_server_session  # noqa: F401

from pairshift.providers import (
    AuthError,
    CallParams,
    Message,
    ModelNotFound,
    ModelSpec,
    ProviderName,
    ProviderUnavailable,
    RetryPolicy,
    anthropic_provider,
    complete,
)

TRIAGE = [Message(role="user", content="Tier: gold\nTicket: I was charged twice, please refund immediately")]
JSON_ONLY = "You triage support tickets. Reply with JSON only."
FAST = RetryPolicy(max_attempts=3, initial_backoff_s=0.01, max_backoff_s=0.02)
WIRES: list[ProviderName] = ["anthropic", "openai", "openai-compatible"]


@pytest.mark.parametrize("provider", WIRES)
async def test_text_usage_and_cost_are_parsed(sim_server: SimHandle, provider: ProviderName) -> None:
    spec = sim_server.spec("sim-classic-2024-06", provider, input_per_mtok=3.0, output_per_mtok=15.0)
    result = await complete(spec, JSON_ONLY, TRIAGE, CallParams(temperature=0, seed=1))
    assert result.text == '{"severity": "high", "team": "billing"}'
    assert result.resolved_model == "sim-classic-2024-06"
    # sim token rule: ceil(chars / 4) + 4 per message: system 50 chars -> 17, user 65 -> 21
    assert (result.input_tokens, result.output_tokens) == (38, 10)
    assert result.cost_usd == pytest.approx((38 * 3.0 + 10 * 15.0) / 1e6)
    assert result.finish_reason == "stop" and result.attempts == 1 and result.latency_ms > 0


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
async def test_alias_records_resolved_snapshot_and_follows_repointing(
    sim_server: SimHandle, provider: ProviderName
) -> None:
    spec = sim_server.spec("sim-latest", provider)
    before = await complete(spec, JSON_ONLY, TRIAGE, CallParams())
    sim_server.repoint("sim-latest", "sim-literal-2025-11")
    after = await complete(spec, JSON_ONLY, TRIAGE, CallParams())
    assert (before.resolved_model, after.resolved_model) == ("sim-fresh-2025-09", "sim-literal-2025-11")


async def test_mirror_serves_a_real_looking_snapshot_behind_its_alias(sim_server: SimHandle) -> None:
    result = await complete(sim_server.spec("gpt-4o", "openai"), JSON_ONLY, TRIAGE, CallParams(seed=0))
    assert result.resolved_model == "gpt-4o-2024-08-06"


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
async def test_429_waits_for_retry_after_then_succeeds(sim_server: SimHandle, provider: ProviderName) -> None:
    window_s = 0.4
    sim_server.rate_limit("sim-classic-2024-06", requests=1, per_seconds=window_s)
    spec = sim_server.spec("sim-classic-2024-06", provider)
    await complete(spec, JSON_ONLY, TRIAGE, CallParams())
    started = time.monotonic()
    # Backoff alone (10-20 ms) would hit the limit again; only waiting for retry-after succeeds
    # at the second attempt.
    result = await complete(spec, JSON_ONLY, TRIAGE, CallParams(), retry=FAST)
    assert result.attempts == 2
    assert time.monotonic() - started >= window_s * 0.9
    stats = sim_server.stats("sim-classic-2024-06")
    assert (stats["rate_limited"], stats["ok"]) == (1, 2)


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
async def test_overload_is_retried_a_bounded_number_of_times(
    sim_server: SimHandle, provider: ProviderName
) -> None:
    sim_server.faults("sim-fresh-2025-09", overloaded_529=1.0)
    with pytest.raises(ProviderUnavailable) as info:
        await complete(
            sim_server.spec("sim-fresh-2025-09", provider), JSON_ONLY, TRIAGE, CallParams(), retry=FAST
        )
    assert info.value.attempts == 3 and info.value.status == (529 if provider == "anthropic" else 503)
    assert sim_server.stats("sim-fresh-2025-09") == {"requests": 3, "fault_529": 3}


async def test_transient_faults_then_success(sim_server: SimHandle) -> None:
    sim_server.script_faults("sim-classic-2024-06", "500", "529")
    result = await complete(
        sim_server.spec("sim-classic-2024-06"), JSON_ONLY, TRIAGE, CallParams(), retry=FAST
    )
    assert result.attempts == 3
    assert sim_server.stats("sim-classic-2024-06")["requests"] == 3


async def test_timeouts_are_retried_as_unavailable(sim_server: SimHandle) -> None:
    sim_server.faults("sim-classic-2024-06", timeout=1.0, timeout_s=1.0)
    spec = sim_server.spec("sim-classic-2024-06", "openai", timeout_s=0.2)
    with pytest.raises(ProviderUnavailable, match="timed out"):
        await complete(
            spec, JSON_ONLY, TRIAGE, CallParams(), retry=FAST.model_copy(update={"max_attempts": 2})
        )
    assert sim_server.stats("sim-classic-2024-06")["fault_timeout"] == 2


@pytest.mark.parametrize("provider", WIRES)
async def test_retired_model_fails_at_once_naming_it(sim_server: SimHandle, provider: ProviderName) -> None:
    sim_server.retire("claude-sonnet-4-20250514")
    with pytest.raises(ModelNotFound) as info:
        await complete(sim_server.spec("claude-sonnet-4-20250514", provider), JSON_ONLY, TRIAGE, CallParams())
    assert "claude-sonnet-4-20250514" in str(info.value) and "retired" in str(info.value)
    assert info.value.attempts == 1 and not info.value.retryable and info.value.status == 404
    assert sim_server.stats()["total"] == {"not_found": 1}  # one request, no retry


async def test_wrong_key_is_an_auth_error_without_the_key(
    sim_server: SimHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim_server.settings(require_api_key="right-key-123")
    monkeypatch.setenv("PAIRSHIFT_TEST_KEY", "wrong-key-456")
    spec = sim_server.spec("sim-classic-2024-06", api_key_env="PAIRSHIFT_TEST_KEY")
    with pytest.raises(AuthError) as info:
        await complete(spec, JSON_ONLY, TRIAGE, CallParams())
    error = info.value
    shown = str(error) + repr(error) + repr(pickle.loads(pickle.dumps(error)).__dict__)
    assert "wrong-key-456" not in shown and error.__context__ is None and error.__cause__ is None
    monkeypatch.setenv("PAIRSHIFT_TEST_KEY", "right-key-123")  # read at call time, no restart
    assert (await complete(spec, JSON_ONLY, TRIAGE, CallParams())).text


async def test_missing_key_for_a_remote_host_fails_before_any_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PAIRSHIFT_ABSENT_KEY", raising=False)
    spec = ModelSpec(
        id="m", provider="anthropic", base_url="https://api.invalid", api_key_env="PAIRSHIFT_ABSENT_KEY"
    )
    with pytest.raises(AuthError, match="PAIRSHIFT_ABSENT_KEY"):
        await complete(spec, None, TRIAGE, CallParams())


async def test_sdk_client_is_built_once_per_target(sim_server: SimHandle) -> None:
    spec = sim_server.spec("sim-classic-2024-06")
    client = anthropic_provider._client(spec)
    assert anthropic_provider._client(spec) is client
    assert client.max_retries == 0  # retries live in complete(), not in the SDK
    assert anthropic_provider._client(spec.model_copy(update={"id": "other"})) is client
