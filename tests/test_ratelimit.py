"""The token bucket and the per-model limiter: pacing, token settling, retry-after blocking, a real server."""

from __future__ import annotations

import asyncio
import time

import pytest
from sim_fixtures import sim_server, sim_server_session  # noqa: F401 - fixtures

from pairshift.evals import call_limited
from pairshift.providers import CallParams
from pairshift.ratelimit import (
    Limiter,
    Limits,
    TokenBucket,
    limiter_for,
    reset_limiters,
    task_queue_activities_per_second,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_bucket_starts_empty_and_spaces_reservations_by_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10.0, 1.0, clock=clock)
    assert [round(bucket.reserve(), 3) for _ in range(4)] == [0.1, 0.2, 0.3, 0.4]
    clock.now = 10.0  # a long idle period banks no more than the capacity
    assert bucket.reserve() == 0.0 and bucket.reserve() == pytest.approx(0.1)


def test_bucket_settles_estimates_against_real_usage() -> None:
    clock = FakeClock()
    bucket = TokenBucket(100.0, 1000.0, clock=clock)
    assert bucket.reserve(500) == pytest.approx(5.0)  # 500 tokens estimated at 100/s
    bucket.adjust(400)  # the call used 100: 400 come back
    assert bucket.reserve(0) == pytest.approx(1.0)


async def test_retry_after_blocks_every_caller_until_then() -> None:
    limiter = Limiter(Limits())
    limiter.penalize(0.3)
    start = time.monotonic()
    await asyncio.gather(*(limiter.acquire() for _ in range(3)))
    assert time.monotonic() - start >= 0.3


async def test_limiter_paces_calls_under_a_server_window_without_a_429_storm(sim_server) -> None:  # noqa: F811
    sim_server.rate_limit("sim-classic-2024-06", requests=20, per_seconds=1.0)
    reset_limiters()
    spec = sim_server.spec("sim-classic-2024-06")
    limits = {"requests_per_minute": 20 * 60, "concurrency": 8}
    start = time.monotonic()
    await asyncio.gather(
        *(
            call_limited(spec, limits, None, f"Tier: gold\nTicket: case {i}", CallParams(max_tokens=50))
            for i in range(50)
        )
    )
    elapsed = time.monotonic() - start
    stats = sim_server.stats("sim-classic-2024-06")
    assert stats["ok"] == 50
    # Paced at exactly the window's rate, a call can land one over at a window edge (then waits out
    # retry-after); unpaced, 8 concurrent callers would collect a 429 on most of the 30 calls over the limit.
    assert stats.get("rate_limited", 0) <= 3
    assert elapsed >= 49 / 20  # 50 calls at 20/s, starting from an empty bucket


async def test_429_retry_after_is_honoured_when_no_limit_is_configured(sim_server) -> None:  # noqa: F811
    sim_server.rate_limit("sim-classic-2024-06", requests=5, per_seconds=0.5)
    reset_limiters()
    spec = sim_server.spec("sim-classic-2024-06")
    results = await asyncio.gather(
        *(
            call_limited(spec, {"concurrency": 4}, None, f"Ticket: {i}", CallParams(max_tokens=20))
            for i in range(15)
        )
    )
    assert len(results) == 15
    stats = sim_server.stats("sim-classic-2024-06")
    assert stats["ok"] == 15 and stats["rate_limited"] >= 1  # hit, then waited out, never gave up
    assert limiter_for("anthropic", "sim-classic-2024-06", {"concurrency": 4}).limits.concurrency == 4


def test_task_queue_rate_for_per_provider_queues() -> None:
    assert task_queue_activities_per_second(
        {"requests_per_minute": 600}, calls_per_batch=50
    ) == pytest.approx(0.2)
    assert task_queue_activities_per_second({}, calls_per_batch=50) is None
