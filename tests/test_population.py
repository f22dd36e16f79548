"""The production-like traffic model (pairshift.sim.population): its shape, and its running sums against a
brute-force per-unit computation."""

from __future__ import annotations

import numpy as np
import pytest

from pairshift.sim.population import Population, Propensity, S, Shift, first_latencies, stage_traffic


def brute_force(traffic, in_canary_calls: np.ndarray, arm: int, k: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Sums over units of the calls up to check ``k`` of one arm, computed per unit with plain loops."""
    c = traffic.calls
    out = {"units": 0.0, "calls": 0.0, "calls_sq": 0.0, "err": 0.0, "err_sq": 0.0, "err_x_calls": 0.0}
    out |= {"score_n": 0.0, "score": 0.0, "score_sq": 0.0, "score_x_n": 0.0, "cost_sq": 0.0}
    units: dict[int, list[int]] = {}
    for i in np.flatnonzero(in_canary_calls == arm):
        if c.check[i] <= k:
            units.setdefault(int(c.unit[i]), []).append(i)
    factor = 1.0 - traffic.shift.score / traffic.pop.score_mean if arm else 1.0
    for u, idx in units.items():
        n = len(idx)
        e = sum(c.u_err[i] < traffic.p_err[arm][u] for i in idx)
        scored = [
            i for i in idx if c.u_err[i] >= traffic.p_err[arm][u] and c.u_scored[i] < traffic.pop.scored_share
        ]
        sn, ss = len(scored), sum(c.score[i] * factor for i in scored)
        cost = sum(c.cost[i] for i in idx) * (traffic.shift.cost_ratio if arm else 1.0)
        out["units"] += 1
        out["calls"] += n
        out["calls_sq"] += n * n
        out["err"] += e
        out["err_sq"] += e * e
        out["err_x_calls"] += e * n
        out["score_n"] += sn
        out["score"] += ss
        out["score_sq"] += ss * ss
        out["score_x_n"] += ss * sn
        out["cost_sq"] += cost * cost
    return out


def test_canary_sums_match_a_per_unit_computation() -> None:
    rng = np.random.default_rng(4)
    pop = Population(units=3_000, errors=Propensity(0.05, 0.05, 0.5))
    shift = Shift(error=0.05, score=0.1, cost_ratio=1.5)
    traffic = stage_traffic(rng, pop, shift, rate_per_s=1.0, hours=3, check_minutes=15)
    state = rng.bit_generator.state
    arms = traffic.canary(rng, 0.3)
    rng.bit_generator.state = state  # replay the assignment draw to know each call's arm
    in_canary = rng.random(pop.units) < 0.3
    arm_of_call = in_canary[traffic.calls.unit].astype(int)
    for k in (0, 5, traffic.checks - 1):
        for arm in (0, 1):
            expected = brute_force(traffic, arm_of_call, arm, k)
            for name, value in expected.items():
                assert arms[arm, S[name], k] == pytest.approx(value, rel=1e-9, abs=1e-9), (name, arm, k)


def test_population_shape_heavy_tails_and_exact_shift() -> None:
    rng = np.random.default_rng(1)
    pop = Population(units=100_000)
    traffic = stage_traffic(rng, pop, Shift(error=0.01), rate_per_s=5, hours=24, check_minutes=15)
    calls_per_unit = np.diff(traffic.unit_offsets)
    busiest = np.sort(calls_per_unit)[::-1]
    assert busiest[: pop.units // 20].sum() > 0.3 * calls_per_unit.sum()  # top 5% of units: >30% of calls
    p_control, p_candidate = traffic.p_err
    assert p_control.mean() == pytest.approx(0.01, abs=0.001)
    assert (p_control == 0.5).mean() == pytest.approx(0.01, abs=0.002)
    assert p_candidate.mean() - p_control.mean() == pytest.approx(0.01)
    per_check = traffic.totals[S["calls"]]
    assert per_check.max() > 2 * per_check.min()  # the daily cycle


def test_first_latencies_one_per_unit_in_arrival_order() -> None:
    rng = np.random.default_rng(2)
    (lc, kc), (lt, kt) = first_latencies(
        rng, Population(units=50_000), Shift(latency_ratio=2.0), 0.2, rate_per_s=5, hours=12, check_minutes=15
    )
    assert np.all(np.diff(kc) >= 0) and np.all(np.diff(kt) >= 0)
    assert 0.15 < lt.size / (lt.size + lc.size) < 0.25
    assert np.percentile(lt, 95) / np.percentile(lc, 95) == pytest.approx(2.0, rel=0.1)
