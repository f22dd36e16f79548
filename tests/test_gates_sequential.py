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
from pairshift.gates import VariantStats, metric_alpha, stage_gate
from pairshift.policy import CanaryPolicy

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


def test_calibration_path_agrees_with_stage_gate() -> None:
    cal = load_calibration()
    policy = CanaryPolicy()
    rng = np.random.default_rng(11)
    counts = cal.simulate(rng, 40, 24, 0.05, 9_000, 0.01, 0.025)
    breach, ok = cal.always_valid(counts, 0.01, metric_alpha(policy))
    compared = 0
    for i in range(40):
        for k in range(0, 24, 4):
            control = VariantStats(n=int(counts.nc[i, k]), errors=int(counts.xc[i, k]))
            candidate = VariantStats(n=int(counts.nt[i, k]), errors=int(counts.xt[i, k]))
            check = stage_gate(control, candidate, 5, policy, elapsed_hours=1, min_hours=2)
            if check.decision == "srm":
                continue
            verdict = check.metrics["error_rate"]["verdict"]
            expected = "breach" if breach[i, k] else "ok" if ok[i, k] else "inconclusive"
            assert verdict == expected
            compared += 1
    assert compared > 200
    assert breach.any() and (~breach).any()  # both verdicts were exercised


def test_peeking_every_check_keeps_false_rollbacks_under_alpha_unlike_naive_z() -> None:
    cal = load_calibration()
    rng = np.random.default_rng(5)
    counts = cal.simulate(rng, 3_000, 96, 0.05, 9_000, 0.01, 0.01)  # 24 h of 15-minute checks, no difference
    breach, _ = cal.always_valid(counts, 0.0, 0.05)
    false_rollbacks = breach.any(axis=1).mean()
    naive = cal.naive(counts, 0.0).any(axis=1).mean()
    assert false_rollbacks <= 0.05
    assert naive > 0.1  # the same data, tested naively at 0.05 at every check
