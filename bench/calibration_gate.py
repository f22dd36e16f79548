"""The canary stage gate, vectorised over checks, for the calibration bench (mirrors pairshift.gates).

Every function reads the cumulative per-check sums of :mod:`pairshift.sim.population` and calls the gate's own
maths (pairshift.unit_stats, pairshift.sequential, pairshift.gates); tests/test_gates_sequential.py checks it
against :func:`pairshift.gates.stage_gate` verdict by verdict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pairshift import sequential as seq
from pairshift.gates import (
    MIN_RATIO_SAMPLES,
    MIN_SAMPLES_FLOOR,
    metric_alpha,
    mixture_tau,
    srm_alpha,
    srm_tau,
)
from pairshift.policy import CanaryPolicy
from pairshift.sim.population import S
from pairshift.unit_stats import ratio_variance

METRICS = ("error_rate", "invalid_rate", "score", "cost_per_call")
_FIELDS = {  # metric -> (kind, y, n, yy, nn, yn, units, call_sq) in population.SUMS names
    "error_rate": ("binary", "err", "calls", "err_sq", "calls_sq", "err_x_calls", "units", "err"),
    "invalid_rate": ("binary", "inv", "calls", "inv_sq", "calls_sq", "inv_x_calls", "units", "inv"),
    "score": (
        "bounded",
        "score",
        "score_n",
        "score_sq",
        "score_n_sq",
        "score_x_n",
        "score_units",
        "score_call_sq",
    ),
    "cost_per_call": (
        "positive",
        "cost",
        "calls",
        "cost_sq",
        "calls_sq",
        "cost_x_calls",
        "units",
        "cost_call_sq",
    ),
}


def estimate(arm: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """The gate's ratio and variance for one arm's cumulative sums (shape (len(SUMS), checks))."""
    kind, *names = _FIELDS[metric]
    return ratio_variance(kind, *(arm[S[n]] for n in names))  # type: ignore[arg-type]


@dataclass
class Gate:
    """The stage gate's per-check verdicts, vectorised (mirrors pairshift.gates.stage_gate)."""

    policy: CanaryPolicy
    share: float

    def margins(self) -> dict[str, float]:
        m = self.policy.metrics
        assert m.error_rate and m.score and m.cost_per_call
        return {
            "error_rate": m.error_rate.max_increase,
            "invalid_rate": m.error_rate.max_increase,
            "score": m.score.max_decrease,
            "cost_per_call": math.log(m.cost_per_call.max_ratio),
        }

    def metric(self, arms: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """(breach, non-inferior) per check."""
        (rc, vc), (rt, vt) = estimate(arms[0], metric), estimate(arms[1], metric)
        margin, alpha = self.margins()[metric], metric_alpha(self.policy)
        with np.errstate(divide="ignore", invalid="ignore"):
            if metric == "score":
                est, var = rc - rt, vc + vt
                measured = (arms[0][S["score_n"]] > 0) & (arms[1][S["score_n"]] > 0)
            elif metric == "cost_per_call":
                est, var = np.log(rt / rc), vc / (rc * rc) + vt / (rt * rt)
                measured = np.minimum(arms[0][S["calls"]], arms[1][S["calls"]]) >= MIN_RATIO_SAMPLES
            else:
                est, var = rt - rc, vc + vt
                measured = np.ones_like(est, dtype=bool)
        lo, hi = seq.confidence_sequence(est, var, mixture_tau(margin), alpha)
        return measured & (lo > margin), (~measured & (metric == "score")) | (measured & (hi <= margin))

    def srm(self, arms: np.ndarray) -> np.ndarray:
        _, lo, hi = seq.share_mismatch(
            arms[0][S["units"]], arms[1][S["units"]], self.share, srm_tau(self.share), srm_alpha(self.policy)
        )
        return (lo > 0) | (hi < 0)

    def min_samples(self, arms: np.ndarray) -> np.ndarray:
        """``min_samples: auto`` per check, with the design effect seen in control."""
        m = self.policy.metrics.error_rate
        assert m is not None
        control = arms[0]
        rate = (control[S["err"]] + 1) / (control[S["calls"]] + 2)
        _, clustered = estimate(control, "error_rate")
        _, per_call = seq.bounded_mean(control[S["err"]], control[S["err"]], control[S["calls"]])
        deff = np.clip(np.nan_to_num(clustered / per_call, nan=1.0, posinf=1.0), 1.0, 50.0)
        v = seq.required_variance(m.max_increase, mixture_tau(m.max_increase), metric_alpha(self.policy), 0.8)
        p = np.clip(rate, 1e-4, 0.5)
        q = self.share
        total = deff * p * (1 - p) * (1 / q + 1 / (1 - q)) / v
        return np.maximum(MIN_SAMPLES_FLOOR, np.ceil(total * min(q, 1 - q)))


def old_iid_breach(arms: np.ndarray, margin: float, alpha: float) -> np.ndarray:
    """The gate these tables replaced: error rate with calls treated as independent."""
    c, t = arms[0], arms[1]
    est, var = seq.proportion_difference(c[S["err"]], c[S["calls"]], t[S["err"]], t[S["calls"]])
    lo, _ = seq.confidence_sequence(est, var, mixture_tau(margin), alpha)
    return lo > margin


def new_breach_at(arms: np.ndarray, margin: float, alpha: float) -> np.ndarray:
    """The clustered error-rate test at a given margin and alpha (for the comparison rows)."""
    (rc, vc), (rt, vt) = estimate(arms[0], "error_rate"), estimate(arms[1], "error_rate")
    lo, _ = seq.confidence_sequence(rt - rc, vc + vt, mixture_tau(margin), alpha)
    return lo > margin


# ---------------------------------------------------------------- latency (one latency per unit)


def latency_breach(
    samples: tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
    checks: int,
    max_ratio: float,
    alpha: float,
) -> np.ndarray:
    """Per check: does candidate p95's lower end over control p95's upper end exceed ``max_ratio``?"""
    bounds = []
    for (values, check), ends in zip(samples, ((0, 2), (0, 2)), strict=True):
        counts = np.bincount(check, minlength=checks).cumsum()
        ranks = seq.quantile_rank_table(counts, 0.95, alpha / 2)
        ordered = np.empty(0)
        lo_v, hi_v = np.zeros(checks), np.full(checks, np.inf)
        starts = np.r_[0, counts[:-1]]
        for k in range(checks):
            new = np.sort(values[starts[k] : counts[k]])
            if new.size:
                ordered = np.insert(ordered, np.searchsorted(ordered, new), new)
            size = ordered.size
            lo_r, hi_r = ranks[k, ends[0]], ranks[k, ends[1]]
            lo_v[k] = ordered[lo_r - 1] if 1 <= lo_r <= size else 0.0
            hi_v[k] = ordered[hi_r - 1] if 1 <= hi_r <= size else np.inf
        bounds.append((lo_v, hi_v, counts))
    (c_lo, c_hi, c_n), (t_lo, t_hi, t_n) = bounds
    enough = np.minimum(c_n, t_n) >= MIN_RATIO_SAMPLES
    with np.errstate(divide="ignore", invalid="ignore"):
        return enough & (t_lo / c_hi > max_ratio)
