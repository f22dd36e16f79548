"""Mirroring in a shadow stage (issue 17 item 3): the user's request never waits for the mirrored call, the
candidate's answer is never served, and the budget (calls and dollars per hour, a bounded queue) holds, with
every request it refuses counted."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable

import pytest
from sqlalchemy import select
from test_router_support import DEPLOYMENT, apply_example

from pairshift.observations import hash_unit
from pairshift.policy import ShadowBudget
from pairshift.registry.models import Deployment, Model, Observation, ShadowPair
from pairshift.router import Router, bucket, load_split

VARIABLES = {"customer_tier": "gold", "ticket_body": "I was charged twice, order 12345, refund please"}
HELD = "gpt-4o-2024-08-06"  # the candidate's model on the HTTP sim, whose calls the sim can hold
MIGRATION = "migration-support-triage/run-1"


@pytest.fixture
def registry(sqlite_registry):
    return apply_example(sqlite_registry)


def shadow_split(registry, shadow: float, model: str = "sim-fresh-2025-09") -> None:
    """A shadow stage's split as set_canary_split sets it: candidate named, 0% served, ``shadow`` mirrored."""
    with registry.session() as s:
        dep = s.get(Deployment, DEPLOYMENT)
        dep.candidate_prompt, dep.candidate_model = "support-triage@2", model
        dep.canary_percent, dep.shadow_percent, dep.migration = 0.0, shadow, MIGRATION
        dep.redact = [r"(?i)order\s*\d+"]
        s.add(dep)


def on_http_sim(registry, sim) -> None:
    with registry.session() as s:
        s.add(Model(id=HELD, provider="openai", base_url=sim.openai_base_url))


def until(cond: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Poll ``cond`` (an HTTP stat of the sim server) until true."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def rows(registry, table):
    with registry.session() as s:
        return list(s.scalars(select(table).order_by(table.id)))


def with_budget(registry, **budget) -> Callable[[], object]:
    def load():
        with registry.session() as s:
            split = load_split(s, DEPLOYMENT)
        return dataclasses.replace(split, shadow_budget=ShadowBudget(**budget))

    return load


def test_the_users_request_returns_while_the_mirrored_call_is_held(registry, sim_server):
    on_http_sim(registry, sim_server)
    shadow_split(registry, 100, model=HELD)
    sim_server.settings(hold=[HELD])
    with Router(DEPLOYMENT, registry, refresh_s=0) as router:
        served = asyncio.run(router.complete("u1", VARIABLES))
        # the user has the control answer; the candidate's call is still held by the sim
        until(lambda: sim_server.stats(HELD).get("held") == 1)
        assert served.assignment.variant == "control" and router.mirror.pending == 1
        assert sim_server.stats(HELD).get("released") is None
        sim_server.settings(hold=[])
        assert router.mirror.wait_idle(10)
    (pair,) = rows(registry, ShadowPair)
    assert (pair.unit, pair.migration, pair.shadow) == (hash_unit("u1"), MIGRATION, 100)
    assert pair.candidate_pair == f"support-triage@2+{HELD}" and pair.candidate_outcome == "ok"
    assert pair.candidate_output and pair.candidate_latency_ms is not None
    assert "[REDACTED]" in pair.input and "12345" not in pair.input, "redacted by the deployment's rules"
    assert pair.control_output == served.output and pair.control_latency_ms == served.completion.latency_ms
    observed = rows(registry, Observation)
    assert [o.variant for o in observed] == ["control"], "a mirrored call is never a served observation"


def test_only_the_stage_share_of_units_is_mirrored_and_live_stages_mirror_nothing(registry):
    shadow_split(registry, 30)
    units = [f"u{i}" for i in range(60)]
    with Router(DEPLOYMENT, registry, refresh_s=0) as router:
        for u in units:
            asyncio.run(router.complete(u, VARIABLES))
        assert router.mirror.wait_idle(10)
    expected = {hash_unit(u) for u in units if bucket(MIGRATION, u) < 3000}
    assert 0 < len(expected) < len(units)
    assert {p.unit for p in rows(registry, ShadowPair)} == expected
    with registry.session() as s:  # the first live stage: 5% served, nothing mirrored
        dep = s.get(Deployment, DEPLOYMENT)
        dep.canary_percent, dep.shadow_percent = 5.0, 0.0
        s.add(dep)
    with Router(DEPLOYMENT, registry, refresh_s=0) as router:
        for u in units:
            asyncio.run(router.complete(u, VARIABLES))
        assert router.mirror.counts["offered"] == 0
    assert len(rows(registry, ShadowPair)) == len(expected)


@pytest.mark.parametrize(
    "budget, mirrored, refused",
    [
        ({"max_calls_per_hour": 3}, 3, "over_budget"),
        ({"max_cost_usd_per_hour": 1e-9}, 1, "over_budget"),  # the first call's spend exhausts it
    ],
)
def test_the_budget_holds_and_what_it_refuses_is_counted(registry, budget, mirrored, refused):
    shadow_split(registry, 100)
    with Router(DEPLOYMENT, registry, refresh_s=0, loader=with_budget(registry, **budget)) as router:
        for i in range(5):
            asyncio.run(router.complete(f"u{i}", VARIABLES))
            assert router.mirror.wait_idle(10)  # the spend of each call is known before the next request
        counts = dict(router.mirror.counts)
    assert counts["offered"] == 5 and counts["mirrored"] == mirrored and counts[refused] == 5 - mirrored
    assert len(rows(registry, ShadowPair)) == mirrored


def test_a_full_queue_drops_mirrors_instead_of_waiting(registry, sim_server):
    on_http_sim(registry, sim_server)
    shadow_split(registry, 100, model=HELD)
    sim_server.settings(hold=[HELD])
    load = with_budget(registry, max_queued=2)
    with Router(DEPLOYMENT, registry, refresh_s=0, loader=load) as router:
        for i in range(4):
            assert asyncio.run(router.complete(f"u{i}", VARIABLES)).assignment.variant == "control"
        until(lambda: sim_server.stats(HELD).get("held") == 2)
        assert dict(router.mirror.counts) == {"offered": 4, "mirrored": 2, "queue_full": 2}
        sim_server.settings(hold=[])
        assert router.mirror.wait_idle(10)
    assert len(rows(registry, ShadowPair)) == 2


def test_retention_deletes_shadow_pairs_at_the_cutoff(registry):
    from datetime import timedelta

    from pairshift.observations.retention import roll_up
    from pairshift.registry.models import utcnow

    shadow_split(registry, 100)
    with Router(DEPLOYMENT, registry, refresh_s=0) as router:
        asyncio.run(router.complete("u1", VARIABLES))
        assert router.mirror.wait_idle(10)
    assert len(rows(registry, ShadowPair)) == 1
    assert roll_up(registry, utcnow() - timedelta(days=1)).samples_deleted == 0
    assert roll_up(registry, utcnow() + timedelta(seconds=1)).samples_deleted == 1
    assert rows(registry, ShadowPair) == []
