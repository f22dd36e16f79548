"""The always-valid maths (pairshift.sequential) against its defining formulas, and the calibration study's
vectorised path against pairshift.gates.stage_gate itself."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from scipy import stats as sps

from pairshift import sequential as seq
from pairshift.gates import stage_gate
from pairshift.policy import CanaryPolicy
from pairshift.unit_stats import RatioSums, VariantStats

REPO = Path(__file__).resolve().parent.parent


def load_calibration() -> ModuleType:
    spec = importlib.util.spec_from_file_location("calibration", REPO / "bench" / "calibration_bench.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["calibration"] = module  # dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def msprt(estimate: float, theta: float, v: float, tau: float) -> float:
    """Johari et al. (2017) normal-mixture likelihood ratio of H0: effect = theta."""
    return math.sqrt(v / (v + tau**2)) * math.exp(tau**2 * (estimate - theta) ** 2 / (2 * v * (v + tau**2)))


@pytest.mark.parametrize(
    ("estimate", "v", "tau", "alpha"),
    [(0.01, 1e-5, 0.01, 0.05), (-0.3, 0.02, 0.2, 0.001), (0.0, 4e-7, 0.005, 0.01)],
)
def test_interval_ends_are_where_the_mixture_ratio_reaches_one_over_alpha(
    estimate: float, v: float, tau: float, alpha: float
) -> None:
    lo, hi = seq.confidence_sequence(estimate, v, tau, alpha)
    assert msprt(estimate, float(lo), v, tau) == pytest.approx(1 / alpha)
    assert msprt(estimate, float(hi), v, tau) == pytest.approx(1 / alpha)
    assert msprt(estimate, estimate, v, tau) < 1 / alpha


def test_bounded_mean_is_agresti_caffo_for_proportions() -> None:
    mean, var = seq.bounded_mean(7, 7, 500)
    p_tilde = 8 / 502
    assert float(mean) == pytest.approx(7 / 500)
    assert float(var) == pytest.approx(p_tilde * (1 - p_tilde) / 500)
    _, empty = seq.bounded_mean(0, 0, 0)
    assert math.isinf(float(empty))
    assert math.isinf(float(seq.half_width(float("inf"), 0.01, 0.05)))


def test_required_variance_gives_the_stated_power() -> None:
    margin, tau, alpha, power = 0.01, 0.01, 0.01, 0.8
    v = seq.required_variance(margin, tau, alpha, power)
    width = float(seq.half_width(v, tau, alpha))
    assert sps.norm.cdf((margin - width) / math.sqrt(v)) == pytest.approx(power)
    assert seq.required_variance(0.0, tau, alpha, power) == 0.0


def test_share_mismatch_uses_the_exact_binomial_variance() -> None:
    diff, lo, hi = seq.share_mismatch(9_500, 500, 0.05, 0.005, 0.001)
    assert float(diff) == pytest.approx(0.0)
    assert float(hi - lo) / 2 == pytest.approx(float(seq.half_width(0.05 * 0.95 / 10_000, 0.005, 0.001)))


def _sums_to_variant(arm: np.ndarray, k: int) -> VariantStats:
    """VariantStats from the bench's cumulative sums at check ``k`` (pairshift.sim.population.SUMS)."""
    from pairshift.sim.population import S

    def f(name: str) -> float:
        return float(arm[S[name], k])

    def ratio(y: str, n: str, yy: str, nn: str, yn: str, units: str, call_sq: str) -> RatioSums:
        return RatioSums(
            units=int(f(units)), y=f(y), n=f(n), yy=f(yy), nn=f(nn), yn=f(yn), call_sq=f(call_sq)
        )

    return VariantStats(
        n=int(f("calls")),
        units=int(f("units")),
        errors=ratio("err", "calls", "err_sq", "calls_sq", "err_x_calls", "units", "err"),
        invalid=ratio("inv", "calls", "inv_sq", "calls_sq", "inv_x_calls", "units", "inv"),
        score=ratio(
            "score", "score_n", "score_sq", "score_n_sq", "score_x_n", "score_units", "score_call_sq"
        ),
        cost=ratio("cost", "calls", "cost_sq", "calls_sq", "cost_x_calls", "units", "cost_call_sq"),
    )


def test_calibration_path_agrees_with_stage_gate() -> None:
    from pairshift.sim.population import Population, Shift, stage_traffic

    cal = load_calibration()
    policy = CanaryPolicy()
    rng = np.random.default_rng(11)
    pop = Population(units=30_000)
    traffic = stage_traffic(rng, pop, Shift(error=0.03, score=0.03), rate_per_s=3, hours=6, check_minutes=15)
    gate = cal.Gate(policy, 0.05)
    compared, verdicts = 0, set()
    for _ in range(8):
        arms = traffic.canary(rng, 0.05)
        flags = {m: gate.metric(arms, m) for m in cal.METRICS}
        srm = gate.srm(arms)
        for k in range(0, traffic.checks, 3):
            check = stage_gate(
                _sums_to_variant(arms[0], k),
                _sums_to_variant(arms[1], k),
                5,
                policy,
                elapsed_hours=1,
                min_hours=2,
            )
            assert (check.decision == "srm") == bool(srm[k])
            if check.decision == "srm":
                continue
            for metric, (breach, ok) in flags.items():
                got = check.metrics[metric]["verdict"]
                expected = "breach" if breach[k] else "ok" if ok[k] else "inconclusive"
                assert got == expected or (got == "not_measured" and not breach[k]), (metric, k)
                verdicts.add(got)
                compared += 1
    assert compared > 100
    assert {"breach", "ok", "inconclusive"} <= verdicts  # every verdict was exercised


def test_quantile_sequence_covers_at_every_check() -> None:
    # Exact by Ville's inequality for independent draws: the chance the p95 ever leaves its sequence, looking
    # after every draw up to 3,000, is at most alpha (it was 1.55% at an alpha of 1% for the old bootstrap).
    alpha, t_max = 0.05, 3_000
    ranks = seq.quantile_rank_table(np.arange(1, t_max + 1), 0.95, alpha)
    below = np.cumsum(np.random.default_rng(0).random((4_000, t_max)) < 0.95, axis=1)  # #draws <= true p95
    missed = ((below < ranks[:, 0]) | (below > ranks[:, 2] - 1)).any(axis=1).mean()
    assert missed <= alpha
    assert seq.quantile_ranks(1_000, 0.95, alpha) == tuple(int(x) for x in ranks[999])


def test_latency_at_the_exact_ratio_rarely_breaches_when_checked_every_15_minutes() -> None:
    from pairshift.sim.population import Population, Shift, first_latencies

    cal = load_calibration()
    rng = np.random.default_rng(3)
    pop = Population(units=20_000)
    alpha, runs, breaches = 0.05, 150, 0
    for _ in range(runs):
        samples = first_latencies(
            rng, pop, Shift(latency_ratio=1.3), 0.05, rate_per_s=2, hours=6, check_minutes=15
        )
        breaches += bool(cal.latency_breach(samples, 24, 1.3, alpha).any())
    assert breaches / runs <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / runs)
    # ...and a candidate well beyond the ratio is caught.
    slow = first_latencies(rng, pop, Shift(latency_ratio=2.0), 0.05, rate_per_s=2, hours=6, check_minutes=15)
    assert cal.latency_breach(slow, 24, 1.3, alpha).any()


def test_peeking_every_check_keeps_false_rollbacks_under_alpha_unlike_naive_z() -> None:
    rng = np.random.default_rng(5)
    nt = rng.binomial(9_000, 0.05, (3_000, 96))  # 24 h of 15-minute checks, no difference
    nc = 9_000 - nt
    xt, xc = rng.binomial(nt, 0.01), rng.binomial(nc, 0.01)
    nt, nc, xt, xc = (np.cumsum(a, axis=1) for a in (nt, nc, xt, xc))
    est, var = seq.proportion_difference(xc, nc, xt, nt)
    lo, _ = seq.confidence_sequence(est, var, 0.01, 0.05)
    pool = (xc + xt) / (nc + nt)
    z = (xt / nt - xc / nc) / np.sqrt(pool * (1 - pool) * (1 / nc + 1 / nt))
    assert (lo > 0).any(axis=1).mean() <= 0.05
    assert (np.nan_to_num(z) > 1.96).any(axis=1).mean() > 0.1  # the same data, tested naively at every check
