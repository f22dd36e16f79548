"""The traffic generator: seeded, clock-free generate(), per-model behaviour, the sim path, paced run()."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select
from test_router_support import DEPLOYMENT, MIGRATION, T0, apply_example, set_split

from pairshift.gates import latency_ranks, stage_gate
from pairshift.observations import variant_stats
from pairshift.policy import CanaryPolicy
from pairshift.registry.models import Observation
from pairshift.router import Router
from pairshift.sim.traffic import (
    Behaviour,
    TrafficGenerator,
    TrafficProfile,
    judge_triage,
    profile_for,
    vars_from_dataset,
)


@pytest.fixture
def canary(sqlite_registry):
    apply_example(sqlite_registry)
    set_split(sqlite_registry, 50)
    return sqlite_registry


def _stats(registry, since=T0, until=None):
    with registry.session() as s:
        return variant_stats(s, DEPLOYMENT, MIGRATION, since=since, until=until, ranks_for=lambda n: [n // 2])


def test_generate_stores_observations_with_per_model_behaviour(canary):
    profile = profile_for(
        {
            "sim-classic-2024-06": {"error_rate": 0.01, "score_mean": 0.9, "latency_median_ms": 400},
            "sim-fresh-2025-09": {"error_rate": 0.20, "score_mean": 0.6, "latency_median_ms": 800},
        },
        seed=7,
    )
    with Router(DEPLOYMENT, canary, refresh_s=0) as router:
        out = TrafficGenerator(router, profile).generate(4_000, at=T0, spread_s=600)
    assert len(out) == 4_000 and out[0].at == T0 and out[-1].at < T0 + timedelta(seconds=600)
    stats = _stats(canary)
    c, t = stats["control"], stats["candidate"]
    assert c.n + t.n == 4_000 and 1_700 < t.n < 2_300
    assert c.errors.ratio < 0.03 and 0.15 < t.errors.ratio < 0.25
    assert c.score.ratio > 0.85 and t.score.ratio < 0.65
    assert c.latency.at(c.latency.size // 2) < t.latency.at(t.latency.size // 2)  # medians, one call per unit


def test_the_same_seed_gives_the_same_traffic(canary):
    profile = TrafficProfile(seed=3, default=Behaviour(error_rate=0.1, score_mean=0.5))
    with Router(DEPLOYMENT, canary, refresh_s=0) as router:
        first = TrafficGenerator(router, profile).generate(300, at=T0)
        second = TrafficGenerator(router, profile).generate(300, at=T0)
        other = TrafficGenerator(router, profile.model_copy(update={"seed": 4})).generate(300, at=T0)
    assert [o.model_dump() for o in first] == [o.model_dump() for o in second]
    assert [o.model_dump() for o in first] != [o.model_dump() for o in other]


def test_generate_picks_up_a_percent_the_workflow_just_set(canary):
    with Router(DEPLOYMENT, canary, refresh_s=0) as router:
        gen = TrafficGenerator(router, TrafficProfile(seed=1))
        set_split(canary, 0)
        assert all(o.variant == "control" for o in gen.generate(200, at=T0))
        set_split(canary, 100)
        later = T0 + timedelta(minutes=15)
        assert all(o.variant == "candidate" for o in gen.generate(200, at=later))
    assert _stats(canary, since=later)["candidate"].n == 200


def test_the_sim_path_sees_the_fresh_snapshot_wrap_json_in_prose(canary):
    from conftest import EXAMPLES

    pool = vars_from_dataset(EXAMPLES / "datasets" / "support-triage.jsonl", limit=200)
    # Candidate: the old prompt (v1, no "no prose") on the fresh snapshot, which wraps JSON in prose.
    set_split(canary, 50, candidate=("support-triage@1", "sim-fresh-2025-09"))
    with Router(DEPLOYMENT, canary, refresh_s=0) as router:
        TrafficGenerator(router, TrafficProfile(seed=2, use_sim=True, vars_pool=pool)).generate(600, at=T0)
    c, t = _stats(canary)["control"], _stats(canary)["candidate"]
    assert c.invalid.ratio < 0.05 and t.invalid.ratio > 0.3
    assert c.score.ratio > 0.8


def test_judge_triage():
    variables = {"customer_tier": "gold", "ticket_body": "I was charged twice"}
    assert judge_triage('{"severity": "medium", "team": "billing"}', variables) == (
        "ok",
        1.0,
    )  # 1 impact word + gold
    assert judge_triage('{"severity": "low", "team": "billing"}', variables) == ("ok", 0.0)
    assert judge_triage("Sure! ```json {}```", variables) == ("invalid", 0.0)
    assert judge_triage("[1]", variables) == ("invalid", 0.0)


async def test_run_paces_requests_through_the_router_and_its_writer(canary):
    from conftest import EXAMPLES

    pool = vars_from_dataset(EXAMPLES / "datasets" / "support-triage.jsonl", limit=50)
    with Router(DEPLOYMENT, canary, refresh_s=0) as router:
        synthetic = await TrafficGenerator(router, TrafficProfile(rate_per_s=400, seed=5)).run(0.25)
        simulated = await TrafficGenerator(
            router, TrafficProfile(rate_per_s=400, seed=6, use_sim=True, vars_pool=pool)
        ).run(0.25)
    # paced: about rate x duration, never a burst far beyond it (a loaded machine may fall behind)
    assert 20 <= synthetic <= 101 and 20 <= simulated <= 101
    with canary.session() as s:
        assert s.scalar(select(func.count()).select_from(Observation)) == synthetic + simulated


def test_use_sim_needs_a_vars_pool(canary):
    with Router(DEPLOYMENT, canary, refresh_s=0) as router:
        with pytest.raises(ValueError, match="vars_pool"):
            TrafficGenerator(router, TrafficProfile(use_sim=True))


def test_sticky_heterogeneous_units_cluster_errors(canary):
    # A few busy units, 2% of units failing half their calls, candidate identical to control: errors cluster
    # by unit (the cluster-robust variance far above the per-call one), and the unit-level gate stays calm.
    profile = TrafficProfile(seed=5, units=3_000, activity_sigma=1.5, error_prone_units=0.02)
    policy = CanaryPolicy()
    with Router(DEPLOYMENT, canary, refresh_s=0) as router:
        TrafficGenerator(router, profile).generate(20_000, at=T0, spread_s=600)
    with canary.session() as s:
        stats = variant_stats(
            s, DEPLOYMENT, MIGRATION, since=T0, ranks_for=lambda n: latency_ranks(policy, n)
        )
    c, t = stats["control"], stats["candidate"]
    assert c.n + t.n == 20_000 and c.units + t.units < 3_000
    _, clustered = c.errors.estimate("binary")
    per_call = c.errors.ratio * (1 - c.errors.ratio) / c.n
    assert clustered > 3 * per_call
    check = stage_gate(c, t, 50, policy, elapsed_hours=1, min_hours=2)
    assert check.metrics["error_rate"]["verdict"] != "breach"
    uniform = TrafficProfile(seed=5, units=3_000)
    with Router(DEPLOYMENT, canary, refresh_s=0) as router:
        units = {o.unit for o in TrafficGenerator(router, uniform).generate(3_000, at=T0)}
    assert len(units) > 1_500  # uniform drawing is unchanged: most units appear
