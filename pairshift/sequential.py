"""Always-valid confidence sequences: the maths under the canary gates (PRODUCT §8), vectorised with numpy.

A canary stage is checked every ``check_every_minutes``; a fixed-sample test repeated at every check raises
its false alarm rate far above its nominal level (bench/results/calibration.md shows it). A *confidence
sequence* is an interval that covers the true value at every check simultaneously with probability
``1 - alpha``, so a gate may look as often as it likes.

We use the normal-mixture boundary (Robbins 1970; the mixture SPRT of Johari et al. 2017, "Peeking at A/B
tests", and its confidence-sequence form in Howard et al. 2021, "Time-uniform, nonparametric, nonasymptotic
confidence sequences", eq. 14): for an asymptotically normal estimate with variance ``V`` and a N(0, tau^2)
mixture over the effect, the set of effects ``theta`` with mixture likelihood ratio below ``1/alpha`` is

    |estimate - theta| < sqrt( V (V + tau^2) / tau^2 * (2 log(1/alpha) + log((V + tau^2) / V)) ).

It depends on the data only through the estimate and its variance, so unequal allocation (1% candidate vs
99% control) only enters through ``V = var_control / n_control + var_candidate / n_candidate`` (the
two-stream form Johari et al. use); the guarantee is Ville's inequality on the mixture martingale, in
"information time" ``1/V``. With an estimated variance the guarantee is asymptotic (Waudby-Smith et al.
2021, "Time-uniform central limit theory"); the calibration study measures it at canary sample sizes.

``tau`` tunes where the boundary is tightest: a mixture scale equal to the effect one cares about (the gate's
margin) makes the test quickest for effects of that size.

Variances of bounded metrics (rates, 0..1 scores) are estimated with two pseudo-observations, one at 0 and
one at 1 (for a proportion this is Agresti-Caffo's "add one success and one failure"), so an arm with no
errors yet, or a handful of identical scores, never gets a zero variance and a falsely certain interval.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats as sps
from scipy.optimize import brentq
from scipy.special import betaln

FloatArray = NDArray[np.float64]


def half_width(variance: ArrayLike, tau: float, alpha: float) -> FloatArray:
    """Half-width of the two-sided normal-mixture confidence sequence at level ``alpha``.

    Infinite where the variance is infinite or not positive-and-finite (no information yet).
    """
    if tau <= 0:
        raise ValueError(f"mixture scale tau must be positive, got {tau}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    v = np.asarray(variance, dtype=float)
    t2 = tau * tau
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        w = np.sqrt(v * (v + t2) / t2 * (2.0 * math.log(1.0 / alpha) + np.log((v + t2) / v)))
    # v == 0 only happens for metrics without pseudo-observations (a deterministic cost): exact, width 0.
    return np.where(v == 0, 0.0, np.where(np.isfinite(w) & (v > 0), w, np.inf))


def confidence_sequence(
    estimate: ArrayLike, variance: ArrayLike, tau: float, alpha: float
) -> tuple[FloatArray, FloatArray]:
    """(lower, upper) of the always-valid interval around ``estimate``."""
    est = np.asarray(estimate, dtype=float)
    w = half_width(variance, tau, alpha)
    return est - w, est + w


def bounded_mean(total: ArrayLike, total_sq: ArrayLike, n: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Mean of a 0..1 metric and the variance of that mean, with pseudo-observations at 0 and 1.

    ``total`` = sum of values, ``total_sq`` = sum of squares (for a 0/1 metric both are the count of ones).
    The mean is the raw mean; only the variance is regularised. ``n == 0`` gives mean 0 and infinite variance.
    """
    t = np.asarray(total, dtype=float)
    s = np.asarray(total_sq, dtype=float)
    k = np.asarray(n, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(k > 0, t / k, 0.0)
        m_reg = (t + 1.0) / (k + 2.0)
        var_one = np.maximum((s + 1.0) / (k + 2.0) - m_reg * m_reg, 0.0)
        var_mean = np.where(k > 0, var_one / k, np.inf)
    return mean, var_mean


def proportion_difference(
    x_control: ArrayLike, n_control: ArrayLike, x_candidate: ArrayLike, n_candidate: ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """Candidate rate - control rate and its variance (each arm's rate variance from :func:`bounded_mean`)."""
    mc, vc = bounded_mean(x_control, x_control, n_control)
    mt, vt = bounded_mean(x_candidate, x_candidate, n_candidate)
    return mt - mc, vc + vt


def required_variance(margin: float, tau: float, alpha: float, power: float) -> float:
    """The largest estimate variance at which a true difference of 0 shows non-inferiority with ``power``.

    Non-inferior means the sequence's upper bound is below ``margin``; with the estimate ~ N(0, V) that holds
    with probability ``Phi((margin - w(V)) / sqrt(V))``. Solved for V; 0 when ``margin`` is 0 (never).
    """
    if margin <= 0:
        return 0.0
    z = float(sps.norm.ppf(power))

    def slack(log_v: float) -> float:
        v = math.exp(log_v)
        return margin - float(half_width(v, tau, alpha)) - z * math.sqrt(v)

    # slack > 0 as V -> 0 (the width shrinks like sqrt(V log(1/V))) and < 0 once sqrt(V) exceeds the margin.
    lo, hi = math.log(margin * margin) - 60.0, math.log(margin * margin)
    return math.exp(brentq(slack, lo, hi, xtol=1e-12))


def share_mismatch(
    n_control: ArrayLike, n_candidate: ArrayLike, share: float, tau: float, alpha: float
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Sample-ratio mismatch as a confidence sequence: observed candidate share - configured share.

    Under a correct split the variance is known exactly (``share (1 - share) / N``), so nothing is estimated.
    Returns (difference, lower, upper); a mismatch is an interval that excludes 0.
    """
    nc = np.asarray(n_control, dtype=float)
    nt = np.asarray(n_candidate, dtype=float)
    total = nc + nt
    with np.errstate(divide="ignore", invalid="ignore"):
        diff = np.where(total > 0, nt / total - share, 0.0)
        var = np.where(total > 0, share * (1.0 - share) / total, np.inf)
    lo, hi = confidence_sequence(diff, var, tau, alpha)
    return diff, lo, hi


def cluster_ratio(
    y: ArrayLike, n: ArrayLike, yy: ArrayLike, nn: ArrayLike, yn: ArrayLike, units: ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """A ratio ``sum(y) / sum(n)`` over units and its cluster-robust (CR1) variance.

    ``y``, ``n`` are the sums over units of each unit's numerator and denominator, ``yy``, ``nn``, ``yn`` the
    sums of their squares and products. The variance is the delta-method (linearisation) variance of a ratio
    estimator with units as clusters, ``m / (m - 1) * sum_i (y_i - R n_i)^2 / (sum n)^2``: calls of one unit
    share that unit's propensities, so they are not independent draws. Infinite below two units.
    """
    y_, n_, yy_, nn_, yn_, m = (np.asarray(a, dtype=float) for a in (y, n, yy, nn, yn, units))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(n_ > 0, y_ / n_, 0.0)
        resid = np.maximum(yy_ - 2.0 * r * yn_ + r * r * nn_, 0.0)
        var = np.where((m >= 2) & (n_ > 0), m / (m - 1.0) * resid / (n_ * n_), np.inf)
    return r, var


def _beta_binomial_log_martingale(t: FloatArray, b: FloatArray, q: float, concentration: float) -> FloatArray:
    """log of the beta-binomial mixture likelihood ratio of "P(X <= quantile) = q", ``b`` of ``t`` below."""
    a0, b0 = q * concentration, (1.0 - q) * concentration
    return betaln(a0 + b, b0 + t - b) - betaln(a0, b0) - b * math.log(q) - (t - b) * math.log1p(-q)


QUANTILE_CONCENTRATION = 200.0  # prior weight of the mixture: tightest for samples of a few hundred to 10^5


def quantile_rank_table(sizes: ArrayLike, q: float, alpha: float) -> NDArray[np.int64]:
    """:func:`quantile_ranks` for many sample sizes at once: an array of shape (len(sizes), 3)."""
    t = np.asarray(sizes, dtype=float)
    log_bound = math.log(1.0 / alpha)

    def excess(b: FloatArray) -> FloatArray:
        return _beta_binomial_log_martingale(t, b, q, QUANTILE_CONCENTRATION) - log_bound

    centre = q * t

    def root(lo: FloatArray, hi: FloatArray, rising: bool) -> FloatArray:
        # bisection on the count; excess is convex in b with its minimum near q * t
        for _ in range(60):
            mid = (lo + hi) / 2
            above = excess(mid) >= 0
            lo, hi = (
                (np.where(above, lo, mid), np.where(above, mid, hi))
                if rising
                else (np.where(above, mid, lo), np.where(above, hi, mid))
            )
        return (lo + hi) / 2

    lower_b = np.where(excess(np.zeros_like(t)) < 0, 0.0, root(np.zeros_like(t), centre, rising=False))
    upper_b = np.where(excess(t) < 0, t, root(centre, t.copy(), rising=True))
    # Accepted counts are ceil(lower_b) .. floor(upper_b); X_(b) <= Q* < X_(b+1) for an accepted count b.
    lo_rank = np.maximum(0, np.ceil(lower_b - 1e-9))
    hi_rank = np.minimum(t + 1, np.floor(upper_b + 1e-9) + 1)
    est = np.maximum(1, np.ceil(q * t))
    out = np.stack([lo_rank, est, hi_rank], axis=-1).astype(np.int64)
    out[t <= 0] = (0, 1, 1)
    return out


def quantile_ranks(size: int, q: float, alpha: float) -> tuple[int, int, int]:
    """Ranks (1-based) of the order statistics that bound an always-valid confidence sequence for the
    ``q``-quantile after ``size`` independent draws, and the rank of the point estimate.

    The ``q``-quantile's count ``B`` = #{draws <= quantile} is Binomial(size, q) however the draws are
    distributed (continuous), so a beta-binomial mixture of its likelihood ratio is a nonnegative martingale
    and, by Ville's inequality, ``B`` stays in the accepted set ``{b : mixture < 1/alpha}`` at every size at
    once with probability ``1 - alpha`` (Howard & Ramdas 2022, "Sequential estimation of quantiles with
    applications to A/B-testing and best-arm identification"). The quantile then lies in
    ``[X_(lo), X_(hi)]``; ``lo = 0`` means no lower end yet (0), ``hi = size + 1`` no upper end (infinity).
    The guarantee is exact, not asymptotic, for independent draws from one distribution.
    """
    lo, est, hi = (int(x) for x in quantile_rank_table([size], q, alpha)[0])
    return lo, est, hi
