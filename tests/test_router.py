"""The router: sticky buckets, the split's accuracy, serving through a registry outage, complete() and
record()."""

from __future__ import annotations

import logging
import math
import shutil
import time
from pathlib import Path

import pytest
from sqlalchemy import select
from test_router_support import (
    ACTIVE_PAIR,
    CANDIDATE_PAIR,
    DEPLOYMENT,
    MIGRATION,
    apply_example,
    set_split,
)

from pairshift.observations import hash_unit
from pairshift.registry.models import Observation
from pairshift.registry.store import forget_registry, open_registry
from pairshift.router import BUCKETS, Router, UnknownDeployment, bucket


def _wait_for(condition, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def test_no_migration_means_everyone_is_control_on_the_active_pair(registry):
    apply_example(registry)
    with Router(DEPLOYMENT, registry, refresh_s=0) as router:
        answers = {router.resolve(f"user-{i}") for i in range(2_000)}
    assert len(answers) == 1
    (a,) = answers
    assert (a.variant, a.pair, a.migration, a.model) == ("control", ACTIVE_PAIR, None, "sim-classic-2024-06")


def test_units_never_leave_the_candidate_as_the_percent_rises(registry):
    apply_example(registry)
    units = [f"user-{i}" for i in range(20_000)]
    previous: set[str] = set()
    with Router(DEPLOYMENT, registry, refresh_s=0) as router:
        for percent in (1, 5, 20, 50, 100):
            set_split(registry, percent)
            assert router.refresh()
            candidates = {u for u in units if router.resolve(u).variant == "candidate"}
            assert previous <= candidates, f"units left the candidate at {percent}%"
            assert router.resolve(next(iter(candidates))).pair == CANDIDATE_PAIR
            previous = candidates
    assert previous == set(units)  # 100%: everyone


@pytest.mark.parametrize("percent", [0.5, 1, 5, 20, 50, 99])
def test_split_matches_the_percent_within_four_sigma_over_100k_units(percent):
    n = 100_000
    threshold = round(percent * 100)
    candidates = sum(bucket(MIGRATION, f"unit-{i}") < threshold for i in range(n))
    p = percent / 100
    sigma = math.sqrt(p * (1 - p) / n)
    assert abs(candidates / n - p) < 4 * sigma, (candidates, n, percent)


def test_a_new_migration_reshuffles_units_and_buckets_cover_the_range():
    first = [bucket("migration-a", f"u{i}") for i in range(5_000)]
    second = [bucket("migration-b", f"u{i}") for i in range(5_000)]
    assert min(first) >= 0 and max(first) < BUCKETS
    same = sum(a == b for a, b in zip(first, second, strict=True))
    assert same < 50  # independent: ~5000/10000 = 0.5 expected collisions


def test_the_split_is_exactly_complementary(sqlite_registry):
    apply_example(sqlite_registry)
    set_split(sqlite_registry, 20)
    with Router(DEPLOYMENT, sqlite_registry, refresh_s=0) as router:
        variants = [router.resolve(f"u{i}").variant for i in range(10_000)]
        expected = sum(bucket(MIGRATION, f"u{i}") < 2_000 for i in range(10_000))
    assert variants.count("candidate") == expected
    assert variants.count("control") == 10_000 - expected


def test_unknown_deployment_fails_at_start(sqlite_registry):
    with pytest.raises(UnknownDeployment, match="unknown deployment 'nope'"):
        Router("nope", sqlite_registry).start()


def test_resolve_before_start_is_a_clear_error(sqlite_registry):
    with pytest.raises(RuntimeError, match="not started"):
        Router(DEPLOYMENT, sqlite_registry).resolve("u1")


def test_serves_the_last_split_through_a_registry_outage(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    folder = tmp_path / "db"
    url = f"sqlite:///{folder / 'registry.db'}"
    registry = apply_example(open_registry(url))
    set_split(registry, 20)
    units = [f"user-{i}" for i in range(2_000)]
    try:
        with Router(DEPLOYMENT, registry, refresh_s=0.02) as router:
            before = [router.resolve(u) for u in units]
            caplog.set_level(logging.WARNING, logger="pairshift.router")
            registry.engine.dispose()
            folder.rename(tmp_path / "gone")  # the database file is unreachable: every new connection fails
            _wait_for(lambda: router.refresh_failures >= 3)  # the background thread keeps trying
            assert [router.resolve(u) for u in units] == before
            assert sum(a.variant == "candidate" for a in before) > 0
            outage_logs = [r for r in caplog.records if "refresh failed" in r.getMessage()]
            assert len(outage_logs) == 1, "an outage is logged once, not once per refresh"
            assert router.last_error
            (tmp_path / "gone").rename(folder)
            set_split(registry, 50)
            _wait_for(lambda: router.split.percent == 50)  # recovered: the new split is picked up
            assert sum(router.resolve(u).variant == "candidate" for u in units) > sum(
                a.variant == "candidate" for a in before
            )
    finally:
        if not folder.exists() and (tmp_path / "gone").exists():
            shutil.move(str(tmp_path / "gone"), str(folder))
        forget_registry(url)


def test_a_failing_loader_keeps_the_split(sqlite_registry, monkeypatch: pytest.MonkeyPatch):
    apply_example(sqlite_registry)
    set_split(sqlite_registry, 50)
    with Router(DEPLOYMENT, sqlite_registry, refresh_s=0) as router:
        split = router.split

        def down():
            raise ConnectionError("registry down")

        monkeypatch.setattr(router, "_loader", down)
        assert router.refresh() is False and router.refresh() is False
        assert router.split is split and router.refresh_failures == 2
        assert "registry down" in (router.last_error or "")


async def test_complete_renders_calls_the_sim_and_records_a_hashed_observation(sqlite_registry):
    apply_example(sqlite_registry)
    set_split(sqlite_registry, 100)
    variables = {"customer_tier": "gold", "ticket_body": "I was charged twice, refund please"}
    with Router(DEPLOYMENT, sqlite_registry, refresh_s=0) as router:
        result = await router.complete("alice@example.com", variables, score=lambda text: 0.75)
        assert result.assignment.variant == "candidate" and result.assignment.pair == CANDIDATE_PAIR
        assert '"team": "billing"' in result.output
        assert result.completion.resolved_model == "sim-fresh-2025-09"
    # close() flushed the writer
    with sqlite_registry.session() as s:
        rows = s.scalars(select(Observation)).all()
    assert len(rows) == 1
    row = rows[0]
    assert (row.pair, row.variant, row.migration, row.outcome, row.score) == (
        CANDIDATE_PAIR,
        "candidate",
        MIGRATION,
        "ok",
        0.75,
    )
    assert row.unit == hash_unit("alice@example.com") and "alice" not in row.unit
    assert row.cost_usd == pytest.approx(result.completion.cost_usd) and row.output_tokens > 0
    assert row.resolved_model == "sim-fresh-2025-09", (
        "the response's model is recorded: how alias drift is seen"
    )


async def test_a_prompt_that_cannot_render_is_recorded_as_an_error_then_raised(sqlite_registry):
    apply_example(sqlite_registry)
    with Router(DEPLOYMENT, sqlite_registry, refresh_s=0) as router:
        with pytest.raises(Exception, match="ticket_body"):
            await router.complete("u1", {"customer_tier": "gold"})
        router.record("u2", router.resolve("u2"), latency_ms=12.5, outcome="invalid")
    with sqlite_registry.session() as s:
        outcomes = sorted(o.outcome for o in s.scalars(select(Observation)))
    assert outcomes == ["error", "invalid"]


def test_a_refresh_never_swaps_an_older_split_in_after_a_newer_one(sqlite_registry):
    """The background refresh and an explicit refresh() raced: the load that began first (the old stage's
    split) was swapped in last, and a stage's calls were routed at the previous percent (an SRM)."""
    import threading

    apply_example(sqlite_registry)
    set_split(sqlite_registry, 20)
    with Router(DEPLOYMENT, sqlite_registry, refresh_s=0) as router:
        real = router._loader
        entered, release = threading.Event(), threading.Event()

        def slow_first_load():
            split = real()  # reads the registry now: 20%
            if not entered.is_set():
                entered.set()
                release.wait(10)  # then stalls, as a refresh thread can
            return split

        router._loader = slow_first_load
        stale = threading.Thread(target=router.refresh)
        stale.start()
        assert entered.wait(10)
        set_split(sqlite_registry, 50)  # the next stage
        fresh = threading.Thread(target=router.refresh)
        fresh.start()
        fresh.join(0.5)  # without the lock it finishes here, before the stale load swaps in
        release.set()
        stale.join(10)
        fresh.join(10)
        assert router.split.percent == 50
