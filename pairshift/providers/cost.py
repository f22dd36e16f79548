"""What one call costs, from the model's prices and the call's usage (cached input and batch included).

Both providers bill cached input below the input price, so a call's input splits in three:

- OpenAI: ``usage.prompt_tokens`` counts every input token and ``prompt_tokens_details.cached_tokens`` the
  cached ones among them, billed at the model's cached-input price (listed per model on OpenAI's pricing
  page: e.g. gpt-5 $1.25 input, $0.125 cached input per Mtok).
- Anthropic: ``usage.input_tokens`` counts only the uncached tokens; ``cache_read_input_tokens`` are billed
  at 0.1x the input price and ``cache_creation_input_tokens`` at 1.25x (5-minute cache) or 2x (1-hour
  cache), as Anthropic's pricing page states.

:class:`~pairshift.providers.base.Completion` carries the total input and the cached and cache-written
subsets, whatever the provider. Batch APIs bill half the standard prices (both providers' pricing pages)
unless the model lists its own batch prices; the cache multipliers apply on top.
"""

from __future__ import annotations

from pairshift.providers.base import ModelSpec

ANTHROPIC_CACHE_READ = 0.1
ANTHROPIC_CACHE_WRITE_5M = 1.25
ANTHROPIC_CACHE_WRITE_1H = 2.0
BATCH_DISCOUNT = 0.5


def cached_input_price(spec: ModelSpec) -> float:
    """USD per Mtok of cache reads: the model's own price, else Anthropic's 0.1x rule, else the input price.

    An OpenAI-style model without a known cached price is charged the full input price: an unknown discount
    must not make a candidate look cheaper than it is.
    """
    if spec.cached_input_per_mtok is not None:
        return spec.cached_input_per_mtok
    if spec.provider == "anthropic":
        return spec.input_per_mtok * ANTHROPIC_CACHE_READ
    return spec.input_per_mtok


def cost_usd(
    spec: ModelSpec,
    input_tokens: int,
    output_tokens: int,
    *,
    cached_input_tokens: int = 0,
    cache_write_5m_tokens: int = 0,
    cache_write_1h_tokens: int = 0,
    batch: bool = False,
) -> float:
    """Price of one call; ``input_tokens`` counts every input token (cached and cache-written ones too)."""
    uncached = max(0, input_tokens - cached_input_tokens - cache_write_5m_tokens - cache_write_1h_tokens)
    input_price, output_price, read_price = (
        spec.input_per_mtok,
        spec.output_per_mtok,
        cached_input_price(spec),
    )
    if batch:
        input_price = (
            spec.batch_input_per_mtok
            if spec.batch_input_per_mtok is not None
            else input_price * BATCH_DISCOUNT
        )
        output_price = (
            spec.batch_output_per_mtok
            if spec.batch_output_per_mtok is not None
            else output_price * BATCH_DISCOUNT
        )
        read_price *= BATCH_DISCOUNT
    cost = (
        uncached * input_price
        + cached_input_tokens * read_price
        + cache_write_5m_tokens * input_price * ANTHROPIC_CACHE_WRITE_5M
        + cache_write_1h_tokens * input_price * ANTHROPIC_CACHE_WRITE_1H
        + output_tokens * output_price
    ) / 1e6
    return round(cost, 12)  # drop float dust so sums and equality in reports stay readable
