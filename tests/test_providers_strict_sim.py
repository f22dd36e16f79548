"""The strict sim through the official SDKs: each rule a snapshot declares, in every wire format, refused with
the provider's own status and error body; the same request with the model's request rules is accepted."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import openai
import pytest
from sim_fixtures import SimHandle, sim_server, sim_server_session  # noqa: F401

from pairshift.providers import (
    AuthError,
    BadRequest,
    CallParams,
    ContextLengthExceeded,
    Message,
    ModelSpec,
    PermissionDenied,
    ProviderName,
    QuotaExceeded,
    RetryPolicy,
    complete,
)

TRIAGE = [Message(role="user", content="Tier: gold\nTicket: I was charged twice, please refund immediately")]
JSON_ONLY = "You triage support tickets. Reply with JSON only."
REASON, STRICT = "sim-reason-2026-03", "sim-strict-2026-05"
TEMPERATURE_0 = CallParams(temperature=0, max_tokens=400)


def spec(sim: SimHandle, model: str, provider: ProviderName, **fields: Any) -> ModelSpec:
    return sim.spec(model, provider, **fields)


# ---------------------------------------------------------------- the raw wire bodies


def test_openai_chat_refusals_carry_openai_s_own_bodies(sim_server: SimHandle) -> None:
    client = openai.OpenAI(base_url=sim_server.openai_base_url, api_key="sk-test", max_retries=0)
    base = {"model": REASON, "messages": [{"role": "user", "content": "Ticket: refund"}]}
    cases = [
        (
            {"temperature": 0, "max_completion_tokens": 400},
            "temperature",
            "unsupported_value",
            "Unsupported value: 'temperature' does not support 0 with this model. "
            "Only the default (1) value is supported.",
        ),
        (
            {"stop": ["\n"], "max_completion_tokens": 400},
            "stop",
            "unsupported_parameter",
            "Unsupported parameter: 'stop' is not supported with this model.",
        ),
        (
            {"max_tokens": 400},
            "max_tokens",
            "unsupported_parameter",
            "Unsupported parameter: 'max_tokens' is not supported with this model. "
            "Use 'max_completion_tokens' instead.",
        ),
    ]
    for extra, param, code, message in cases:
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(**base, **extra)
        assert info.value.status_code == 400
        assert info.value.body == {
            "message": message,
            "type": "invalid_request_error",
            "param": param,
            "code": code,
        }
    ok = client.chat.completions.create(**base, temperature=1, max_completion_tokens=400)
    assert ok.model == REASON and ok.choices[0].finish_reason == "stop"


def test_anthropic_strict_snapshot_refuses_temperature_with_anthropic_s_body(sim_server: SimHandle) -> None:
    client = anthropic.Anthropic(base_url=sim_server.base_url, api_key="sk-test", max_retries=0)
    kwargs: dict[str, Any] = {
        "model": STRICT,
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "Ticket: refund"}],
    }
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(**kwargs, extra_body={"temperature": 0})
    assert info.value.status_code == 400
    assert info.value.body["error"] == {
        "type": "invalid_request_error",
        "message": "`temperature` is deprecated for this model.",
    }
    assert client.messages.create(**kwargs).model == STRICT


# ---------------------------------------------------------------- through pairshift, every wire


@pytest.mark.parametrize(
    ("model", "provider", "fields", "param"),
    [
        (REASON, "openai", {}, "temperature"),
        (REASON, "openai", {"api": "responses"}, "temperature"),
        (REASON, "openai-compatible", {"drop_params": ("temperature",)}, "max_tokens"),
        (REASON, "anthropic", {}, "temperature"),
        (STRICT, "anthropic", {}, "temperature"),
        (STRICT, "openai", {}, "temperature"),
    ],
)
async def test_without_rules_each_wire_refuses_naming_the_parameter(
    sim_server: SimHandle, model: str, provider: ProviderName, fields: dict[str, Any], param: str
) -> None:
    # drop_params=() is "send everything": what a model row without known rules would do.
    target = spec(sim_server, model, provider, **{"drop_params": (), **fields})
    with pytest.raises(BadRequest) as info:
        await complete(target, JSON_ONLY, TRIAGE, TEMPERATURE_0)
    assert info.value.status == 400 and info.value.param == param and info.value.attempts == 1
    assert sim_server.stats(model)["refused"] == 1


@pytest.mark.parametrize(
    ("model", "provider", "fields"),
    [
        (REASON, "openai", {}),
        (REASON, "openai", {"api": "responses"}),
        (REASON, "openai-compatible", {"max_tokens_param": "max_completion_tokens"}),
        (STRICT, "anthropic", {}),
    ],
)
async def test_with_the_known_rules_nothing_is_refused_and_the_drops_are_reported(
    sim_server: SimHandle, model: str, provider: ProviderName, fields: dict[str, Any]
) -> None:
    from pairshift.providers.rules import known_rules

    rules = known_rules(model, provider).spec_fields()
    target = spec(sim_server, model, provider, **{**rules, **fields})
    params = CallParams(temperature=0, top_p=0.5, max_tokens=400, stop=["\n\n"] if model == REASON else None)
    done = await complete(target, JSON_ONLY, TRIAGE, params)
    assert json.loads(done.text)["team"] == "billing"  # the sim's seeded noise may move the severity
    expected = ["temperature", "top_p", "stop"] if model == REASON else ["temperature", "top_p"]
    assert done.dropped_params == expected
    assert sim_server.stats(model).get("refused", 0) == 0


@pytest.mark.parametrize(
    ("provider", "fields"),
    [("openai", {}), ("openai", {"api": "responses"}), ("anthropic", {})],
)
async def test_context_length_is_its_own_error_in_every_wire(
    sim_server: SimHandle, provider: ProviderName, fields: dict[str, Any]
) -> None:
    sim_server.settings(context_windows={"sim-classic-2024-06": 100})
    long_ticket = [Message(role="user", content="Ticket: " + "refund please " * 60)]
    with pytest.raises(ContextLengthExceeded) as info:
        await complete(
            spec(sim_server, "sim-classic-2024-06", provider, **fields), None, long_ticket, CallParams()
        )
    assert info.value.status == 400 and not info.value.retryable and info.value.attempts == 1
    short = await complete(
        spec(sim_server, "sim-classic-2024-06", provider, **fields), None, TRIAGE, CallParams()
    )
    assert short.finish_reason == "stop"


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_out_of_quota_is_fatal_and_never_retried(sim_server: SimHandle, provider: ProviderName) -> None:
    sim_server.settings(out_of_quota=["sim-classic-2024-06"])
    with pytest.raises(QuotaExceeded) as info:
        await complete(
            spec(sim_server, "sim-classic-2024-06", provider),
            None,
            TRIAGE,
            CallParams(),
            retry=RetryPolicy(max_attempts=4, initial_backoff_s=0.01),
        )
    assert info.value.attempts == 1 and sim_server.stats("sim-classic-2024-06")["requests"] == 1
    assert "billing" in str(info.value)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_403_is_a_permission_error_apart_from_401(
    sim_server: SimHandle, provider: ProviderName
) -> None:
    sim_server.settings(forbidden=["sim-classic-2024-06"])
    with pytest.raises(PermissionDenied) as denied:
        await complete(spec(sim_server, "sim-classic-2024-06", provider), None, TRIAGE, CallParams())
    assert denied.value.status == 403 and "permission" in str(denied.value)
    assert not isinstance(denied.value, AuthError)
    sim_server.settings(forbidden=[], require_api_key="the-right-key")
    with pytest.raises(AuthError) as unauthorized:
        await complete(spec(sim_server, "sim-classic-2024-06", provider), None, TRIAGE, CallParams())
    assert unauthorized.value.status == 401


@pytest.mark.parametrize(("provider", "fields"), [("openai", {}), ("openai", {"api": "responses"})])
async def test_reasoning_that_spends_the_budget_is_truncated_not_an_answer(
    sim_server: SimHandle, provider: ProviderName, fields: dict[str, Any]
) -> None:
    target = spec(sim_server, REASON, provider, **fields)
    cut = await complete(target, JSON_ONLY, TRIAGE, CallParams(max_tokens=150))  # thinks 192 by default
    assert (cut.text, cut.finish_reason, cut.truncated) == ("", "length", True)
    assert cut.reasoning_tokens == cut.output_tokens == 150
    low = await complete(target, JSON_ONLY, TRIAGE, CallParams(max_tokens=150, reasoning_effort="low"))
    assert low.text == '{"severity": "high", "team": "billing"}' and not low.truncated
    assert low.reasoning_tokens == 64 and low.output_tokens == 64 + 10
