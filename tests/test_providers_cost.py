"""What a call costs, cached input included: each provider's formula with the figures of its pricing page, and
the same figures reached through the official SDKs against the sim's prompt cache.

Figures (USD per million tokens):
- OpenAI gpt-5: input 1.25, cached input 0.125, output 10.00. OpenAI's pricing page could not be read with the
  tools at hand; these are the figures several independent price tables quote from it, and LiteLLM's
  (``cache_read_input_token_cost``).
- Anthropic Claude Sonnet 4.6: base input 3, 5-minute cache writes 3.75 (1.25x), 1-hour cache writes 6 (2x),
  cache hits 0.30 (0.1x), output 15, from Anthropic's pricing table (as the pages quoting it reproduce it).
- Batch: both providers bill half the standard prices.
"""

from __future__ import annotations

import pytest
from sim_fixtures import SimHandle, sim_server, sim_server_session  # noqa: F401

from pairshift.providers import CallParams, Message, ModelSpec, complete, cost_usd

GPT5 = ModelSpec(
    id="gpt-5-2025-08-07",
    provider="openai",
    input_per_mtok=1.25,
    output_per_mtok=10.0,
    cached_input_per_mtok=0.125,
)
SONNET = ModelSpec(id="claude-sonnet-4-6", provider="anthropic", input_per_mtok=3.0, output_per_mtok=15.0)


def test_openai_cached_tokens_are_billed_at_the_cached_price() -> None:
    # 2,000 prompt tokens of which 1,536 were cached, 500 completion tokens (reasoning included).
    cost = cost_usd(GPT5, 2000, 500, cached_input_tokens=1536)
    assert cost == pytest.approx((464 * 1.25 + 1536 * 0.125 + 500 * 10.0) / 1e6)
    assert cost == pytest.approx(0.005772)
    # Before: every prompt token at the input price, about twice the input cost of this call.
    assert cost_usd(GPT5, 2000, 500) == pytest.approx(0.0075)


def test_anthropic_cache_reads_and_writes_at_their_multipliers() -> None:
    read = cost_usd(SONNET, 2100, 500, cached_input_tokens=2000)
    assert read == pytest.approx((100 * 3.0 + 2000 * 0.30 + 500 * 15.0) / 1e6)
    write_5m = cost_usd(SONNET, 2100, 500, cache_write_5m_tokens=2000)
    assert write_5m == pytest.approx((100 * 3.0 + 2000 * 3.75 + 500 * 15.0) / 1e6)
    write_1h = cost_usd(SONNET, 2100, 500, cache_write_1h_tokens=2000)
    assert write_1h == pytest.approx((100 * 3.0 + 2000 * 6.0 + 500 * 15.0) / 1e6)


def test_batch_prices_are_half_unless_the_model_lists_its_own() -> None:
    assert cost_usd(SONNET, 1000, 1000, batch=True) == pytest.approx((1000 * 1.5 + 1000 * 7.5) / 1e6)
    own = GPT5.model_copy(update={"batch_input_per_mtok": 0.5, "batch_output_per_mtok": 4.0})
    assert cost_usd(own, 1000, 1000, batch=True) == pytest.approx((1000 * 0.5 + 1000 * 4.0) / 1e6)
    # Cache reads in a batch: the cached price, halved as well.
    assert cost_usd(GPT5, 1000, 0, cached_input_tokens=1000, batch=True) == pytest.approx(1000 * 0.0625 / 1e6)


LONG_SYSTEM = "You triage support tickets. Reply with JSON only. " + "Policy clause. " * 400  # ~1.5k tokens
TICKET = [Message(role="user", content="Tier: gold\nTicket: I was charged twice, please refund")]


async def test_openai_sdk_cached_call_costs_the_formula(sim_server: SimHandle) -> None:
    target = sim_server.spec("sim-classic-2024-06", "openai").model_copy(
        update={"input_per_mtok": 1.25, "output_per_mtok": 10.0, "cached_input_per_mtok": 0.125}
    )
    first = await complete(target, LONG_SYSTEM, TICKET, CallParams(temperature=0))
    second = await complete(target, LONG_SYSTEM, TICKET, CallParams(temperature=0))
    assert first.cached_input_tokens == 0
    cached = second.cached_input_tokens
    assert cached > 1024 and cached % 128 == 0 and second.input_tokens == first.input_tokens
    expected = ((second.input_tokens - cached) * 1.25 + cached * 0.125 + second.output_tokens * 10.0) / 1e6
    assert second.cost_usd == pytest.approx(expected)
    assert second.cost_usd < first.cost_usd


async def test_anthropic_sdk_cache_write_then_read_cost_the_formula(sim_server: SimHandle) -> None:
    target = sim_server.spec("sim-classic-2024-06", "anthropic").model_copy(
        update={"input_per_mtok": 3.0, "output_per_mtok": 15.0}
    )
    params = CallParams(temperature=0, cache_system=True)
    write = await complete(target, LONG_SYSTEM, TICKET, params)
    read = await complete(target, LONG_SYSTEM, TICKET, params)
    system_tokens = write.cache_write_tokens
    assert system_tokens > 1024 and read.cached_input_tokens == system_tokens
    rest = write.input_tokens - system_tokens
    assert write.cost_usd == pytest.approx(
        (rest * 3.0 + system_tokens * 3.75 + write.output_tokens * 15.0) / 1e6
    )
    assert read.cost_usd == pytest.approx(
        (rest * 3.0 + system_tokens * 0.30 + read.output_tokens * 15.0) / 1e6
    )
    plain = await complete(target, LONG_SYSTEM, TICKET, CallParams(temperature=0))
    assert (plain.cached_input_tokens, plain.cache_write_tokens) == (0, 0)  # no cache_control, no caching
