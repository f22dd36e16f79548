"""Retention (issue 20 item 4): old observations become daily rollups and go; none counted twice or lost."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from test_router_support import ACTIVE_PAIR, CANDIDATE_PAIR, DEPLOYMENT, MIGRATION, apply_example, set_split

from pairshift.observations import store_batch
from pairshift.observations.retention import cutoff_for, roll_up, rollups
from pairshift.registry.models import Observation
from pairshift.registry.store import Registry

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _obs(at: datetime, i: int, **kw: object) -> dict:
    return {
        "deployment": DEPLOYMENT,
        "pair": ACTIVE_PAIR,
        "variant": "control",
        "unit": f"u{i}",
        "latency_ms": 100.0 + i,
        "input_tokens": 10,
        "output_tokens": 5,
        "cost_usd": 0.001,
        "outcome": "error" if i % 10 == 0 else "ok",
        "score": 0.5 if i % 2 else None,
        "at": at.isoformat(),
    } | kw


def _store(registry: Registry, items: list[dict]) -> None:
    with registry.session() as s:
        store_batch(s, items)


def _count(registry: Registry) -> int:
    with registry.session() as s:
        return s.scalar(select(func.count()).select_from(Observation)) or 0


def test_old_calls_become_daily_rollups_with_the_same_sums(registry: Registry) -> None:
    apply_example(registry)
    old = [_obs(NOW - timedelta(days=40, hours=h % 30), i) for i, h in enumerate(range(0, 300, 3))]
    fresh = [_obs(NOW - timedelta(days=2), 1000 + i) for i in range(7)]
    _store(registry, old + fresh)
    cutoff = cutoff_for(NOW, 30)
    result = roll_up(registry, cutoff)
    assert result.rolled_up == len(old) and _count(registry) == len(fresh)
    with registry.session() as s:
        days = rollups(s, DEPLOYMENT)
    assert sum(r.calls for r in days) == len(old)
    assert sum(r.errors for r in days) == sum(o["outcome"] == "error" for o in old)
    assert sum(r.input_tokens for r in days) == 10 * len(old)
    assert sum(r.latency_ms_sum for r in days) == pytest.approx(sum(o["latency_ms"] for o in old))
    assert max(r.latency_ms_max for r in days) == max(o["latency_ms"] for o in old)
    assert sum(r.score_n for r in days) == sum(o["score"] is not None for o in old)
    assert len({r.day for r in days}) == result.days == 2  # 40 days ago, and the hours spilling into day 41
    assert roll_up(registry, cutoff).rolled_up == 0, "a second run finds nothing to do"


def test_a_late_call_in_a_rolled_up_day_is_added_to_it(registry: Registry) -> None:
    apply_example(registry)
    day = datetime(2026, 10, 1, 9, tzinfo=UTC)
    _store(registry, [_obs(day, 1)])
    roll_up(registry, cutoff_for(NOW, 30))
    _store(registry, [_obs(day + timedelta(hours=3), 3, latency_ms=900.0)])
    roll_up(registry, cutoff_for(NOW, 30))
    with registry.session() as s:
        (row,) = rollups(s, DEPLOYMENT)
    assert (row.calls, row.latency_ms_max, row.latency_ms_sum) == (2, 900.0, 1001.0)
    assert _count(registry) == 0


def test_a_running_migrations_calls_are_kept_whatever_their_age(registry: Registry) -> None:
    apply_example(registry)
    at = NOW - timedelta(days=45)
    _store(registry, [_obs(at, 4)])  # stored before the migration: migration NULL, never "live"
    set_split(registry, 5)
    _store(
        registry,
        [
            _obs(at, 1, migration=MIGRATION),
            _obs(at, 2, migration=MIGRATION, pair=CANDIDATE_PAIR, variant="candidate"),
            _obs(at, 3, migration="an-ended-migration"),
        ],
    )
    result = roll_up(registry, cutoff_for(NOW, 30))
    assert (result.rolled_up, result.kept_live) == (2, 2) and _count(registry) == 2
    set_split(registry, 0, migration=None, candidate=None)  # the migration ended
    assert roll_up(registry, cutoff_for(NOW, 30)).rolled_up == 2 and _count(registry) == 0


@pytest.mark.parametrize("days", [0, -3])
def test_a_retention_below_one_day_is_refused(days: int) -> None:
    with pytest.raises(ValueError, match="retention_days must be at least 1"):
        cutoff_for(NOW, days)


def test_prune_from_the_cli(use_registry: str, cli) -> None:
    from pairshift.registry import open_registry

    registry = apply_example(open_registry(use_registry))
    _store(registry, [_obs(datetime.now(UTC) - timedelta(days=10), i) for i in range(4)])
    kept = cli("observations", "prune", "--json")
    assert kept.code == 0, kept.err
    assert kept.json()["rolled_up"] == 0, "the default retention (30 days) keeps 10-day-old calls"
    pruned = cli("observations", "prune", "--older-than-days", "7", "--json")
    assert pruned.code == 0 and pruned.json()["rolled_up"] == 4 and _count(registry) == 0
    bad = cli("observations", "prune", "--older-than-days", "0")
    assert bad.code == 2 and "--older-than-days" in bad.err


async def test_the_retention_workflow_rolls_up_as_of_its_clock(use_registry: str, time_skipping_env) -> None:
    import uuid
    from concurrent.futures import ThreadPoolExecutor

    from temporalio.worker import Worker

    from activities.retention import roll_up_observations
    from pairshift.contracts.retention import RetentionRequest
    from pairshift.registry import open_registry
    from workflows.retention import RetentionWorkflow

    registry = apply_example(open_registry(use_registry))
    _store(registry, [_obs(datetime.now(UTC) - timedelta(days=3), i) for i in range(5)])
    queue = f"retention-{uuid.uuid4().hex[:8]}"
    client = time_skipping_env.client
    # The server's clock stays at the real time here: awaiting a result with automatic time skipping let the
    # server jump to its next timer (a workflow's 10-year run timeout) whenever the worker had not taken the
    # workflow task yet: "now" was once 2036 here, and the rollup walked 3,650 empty days (20-37 s).
    began = datetime.now(UTC)
    with ThreadPoolExecutor(2) as pool, time_skipping_env.auto_time_skipping_disabled():
        async with Worker(
            client,
            task_queue=queue,
            workflows=[RetentionWorkflow],
            activities=[roll_up_observations],
            activity_executor=pool,
        ):
            kept = await client.execute_workflow(
                RetentionWorkflow.run, RetentionRequest(), id=f"{queue}-a", task_queue=queue
            )
            pruned = await client.execute_workflow(
                RetentionWorkflow.run, RetentionRequest(retention_days=2), id=f"{queue}-b", task_queue=queue
            )
    assert (kept.rolled_up, pruned.rolled_up) == (0, 5) and _count(registry) == 0
    # as of the workflow's clock (the time-skipping server's, here the real time): 30 and 2 days before it
    assert abs(kept.cutoff - (began - timedelta(days=30))) < timedelta(minutes=5), kept.cutoff
    assert abs(pruned.cutoff - (began - timedelta(days=2))) < timedelta(minutes=5), pruned.cutoff
