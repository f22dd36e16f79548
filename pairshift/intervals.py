"""Score intervals for the mean of a bounded per-case value: the eval's pass rates, paired differences and 2x2
contrasts (PRODUCT §6).

A per-case value lies in a known range ``[lo, hi]`` (a pass rate in [0, 1], a paired difference in [-1, 1],
the interaction contrast in [-2, 2]) and takes few distinct values (multiples of 1/epochs). The interval for
its mean is the set of ``delta`` a *score test* does not reject: the test statistic is

    Z(delta) = (mean - delta) * sqrt(n) / sqrt(V(delta)),

where ``V(delta)`` is the variance of one case's value under the distribution that is most likely given the
data *and* has mean ``delta`` (the restricted maximum-likelihood estimate of a multinomial on the observed
values plus the range's ends). With one epoch and a paired difference this is exactly Tango's (1998) score
interval for paired proportions; for a single arm's pass rate it is exactly Wilson's interval. Unlike a t
interval it needs no fallback when every case agrees: 100 identical cases give Wilson's ``z^2/(n + z^2)``
half-width (3.7 points), and one improved case among 100 raises the lower end rather than collapsing the
interval. Observed values never outside the range are assumed; the restricted estimate may put mass on an
unobserved end of the range, which is what keeps the interval honest at zero discordance.

Everything is vectorised over rows (many data sets on one support), so the calibration bench runs the same
code as the gate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats as sps
from scipy.optimize import brentq

FloatArray = NDArray[np.float64]
_BISECTIONS = 64  # the Lagrange multiplier is found to double precision within this many halvings


def support_counts(values: ArrayLike, lo: float, hi: float) -> tuple[FloatArray, FloatArray]:
    """The distinct values (with ``lo`` and ``hi`` always included) and how many cases took each."""
    x = np.asarray(values, dtype=float)
    if x.size and (x.min() < lo - 1e-12 or x.max() > hi + 1e-12):
        raise ValueError(f"values outside the range [{lo}, {hi}]")
    support, counts = np.unique(np.clip(x, lo, hi), return_counts=True)
    full = np.union1d(support, [lo, hi])
    out = np.zeros(full.size)
    out[np.searchsorted(full, support)] = counts
    return full, out


def score_statistic(support: ArrayLike, counts: ArrayLike, delta: ArrayLike) -> FloatArray:
    """Z(delta) for each row of ``counts`` (cases per support value); ``support`` is sorted, its ends are
    the range.

    0 where every case equals ``delta`` (no evidence either way); +-inf where the data rule ``delta`` out.
    """
    s = np.asarray(support, dtype=float)
    c = np.atleast_2d(np.asarray(counts, dtype=float))
    d0 = np.broadcast_to(np.asarray(delta, dtype=float), c.shape[:1]).copy()[:, None]
    n = c.sum(axis=1, keepdims=True)
    mean = (c * s).sum(axis=1, keepdims=True) / n
    dev = s[None, :] - d0  # (rows, support)
    lo_dev, hi_dev = dev[:, :1], dev[:, -1:]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        # The multiplier's domain keeps every fitted probability non-negative: N + nu * dev >= 0 at both ends.
        nu_lo, nu_hi = -n / hi_dev, -n / lo_dev

        def g(nu: FloatArray) -> FloatArray:
            den = n + nu * dev
            return np.where(c > 0, c * dev / den, 0.0).sum(axis=1, keepdims=True)

        # At an end of the domain an observed end value's term is infinite; say so exactly (rounding could
        # flip it).
        g_lo = np.where(c[:, -1:] > 0, np.inf, g(nu_lo))
        g_hi = np.where(c[:, :1] > 0, -np.inf, g(nu_hi))
        a, b = nu_lo.copy(), nu_hi.copy()
        for _ in range(_BISECTIONS):
            mid = (a + b) / 2
            pos = g(mid) > 0  # g decreases in nu
            a, b = np.where(pos, mid, a), np.where(pos, b, mid)
        nu = np.where(g_hi > 0, nu_hi, np.where(g_lo < 0, nu_lo, (a + b) / 2))
        den = n + nu * dev
        p = np.where(c > 0, c / den, 0.0)
        var = (p * dev * dev).sum(axis=1, keepdims=True)
        # Mass the data cannot place on observed values goes to the unobserved end of the range (KKT
        # boundary).
        var += np.where(g_hi > 0, g_hi / -lo_dev * lo_dev * lo_dev, 0.0)
        var += np.where(g_lo < 0, -g_lo / hi_dev * hi_dev * hi_dev, 0.0)
        z = (mean - d0) * np.sqrt(n) / np.sqrt(var)
        z = np.where(mean == d0, 0.0, z)
        z = np.where(np.isnan(z), np.sign(mean - d0) * np.inf, z)
    return z[:, 0]


# The scalar form of score_statistic for one data set on a small support, as plain float arithmetic: the same
# operations in the same order (numpy sums fewer than 8 terms one after the other), so the same bits, at about
# a tenth of the time: numpy's per-call overhead on 3-element arrays was most of an eval summary's CPU (every
# interval is a root search of ~30 statistics, each 64 bisections). A larger support, or a division by zero
# where numpy would give an infinity, takes the array code.
_SCALAR_SUPPORT = 7


def _one_row_statistic(support: FloatArray, counts: FloatArray) -> Callable[[float], float]:
    """``delta -> Z(delta)`` for one row of counts; ``delta`` strictly inside the support's ends."""

    def by_arrays(delta: float) -> float:
        return float(score_statistic(support, counts, delta)[0])

    if support.size > _SCALAR_SUPPORT:
        return by_arrays
    s, c = support.tolist(), counts.tolist()
    n = sum(c)
    mean = sum(ci * si for ci, si in zip(c, s, strict=True)) / n
    seen = [(ci, si) for ci, si in zip(c, s, strict=True) if ci > 0]
    first_seen, last_seen = c[0] > 0, c[-1] > 0

    def by_floats(delta: float) -> float:
        lo_dev, hi_dev = s[0] - delta, s[-1] - delta
        terms = [(ci, si - delta) for ci, si in seen]

        def g(nu: float) -> float:
            return sum(ci * dev / (n + nu * dev) for ci, dev in terms)

        nu_lo, nu_hi = -n / hi_dev, -n / lo_dev
        g_lo = math.inf if last_seen else g(nu_lo)
        g_hi = -math.inf if first_seen else g(nu_hi)
        a, b = nu_lo, nu_hi
        for _ in range(_BISECTIONS):
            mid = (a + b) / 2
            if g(mid) > 0:
                a = mid
            else:
                b = mid
        nu = nu_hi if g_hi > 0 else nu_lo if g_lo < 0 else (a + b) / 2
        var = sum(ci / (n + nu * dev) * dev * dev for ci, dev in terms)
        if g_hi > 0:
            var += g_hi / -lo_dev * lo_dev * lo_dev
        if g_lo < 0:
            var += -g_lo / hi_dev * hi_dev * hi_dev
        if mean == delta:
            return 0.0
        z = (mean - delta) * math.sqrt(n) / math.sqrt(var)
        return math.copysign(math.inf, mean - delta) if math.isnan(z) else z

    def z_at(delta: float) -> float:
        try:
            return by_floats(delta)
        except (ZeroDivisionError, ValueError, OverflowError):
            return by_arrays(delta)

    return z_at


def z_critical(confidence: float) -> float:
    """The two-sided normal quantile of ``confidence``: each end errs with (1 - confidence) / 2."""
    return float(sps.norm.ppf(0.5 + confidence / 2))


def score_interval(
    values: Sequence[float] | ArrayLike, confidence: float, lo: float, hi: float
) -> tuple[float, tuple[float, float], float]:
    """Mean, two-sided score interval at ``confidence`` and the two-sided p-value of "mean = 0".

    One value gives the whole range (nothing is known from one case).
    """
    support, counts = support_counts(values, lo, hi)
    n = counts.sum()
    if n == 0:
        raise ValueError("no values")
    mean = float((support * counts).sum() / n)
    if n < 2:
        return mean, (lo, hi), 1.0
    z = z_critical(confidence)

    z_at = _one_row_statistic(support, counts)

    def excess(delta: float, target: float) -> float:
        return z_at(delta) - target

    eps = 1e-12 * (hi - lo)
    lower = lo if mean <= lo + eps else brentq(excess, lo + eps, mean, args=(z,), xtol=1e-12)
    upper = hi if mean >= hi - eps else brentq(excess, mean, hi - eps, args=(-z,), xtol=1e-12)
    p = 1.0
    if lo < 0.0 < hi:
        z0 = z_at(0.0)
        p = 1.0 if z0 == 0 else float(2 * sps.norm.sf(abs(z0)))
    return mean, (float(lower), float(upper)), p


def noninferiority_cases(
    discordance: float, margin: float, confidence: float, power: float = 0.8, max_cases: int = 10**7
) -> int:
    """Cases a paired pass-rate test needs to show a candidate with no true difference non-inferior at
    ``margin``.

    Planning model: a share ``discordance`` of cases flips (half each way, one epoch's worth of variance), the
    gate's score test at ``-margin`` with the lower end of the two-sided ``confidence`` interval. Solved for
    the smallest n whose power reaches ``power`` (normal approximation of the mean; the restricted variance
    exact).
    """
    if margin <= 0:
        return max_cases
    z = z_critical(confidence)
    zb = float(sps.norm.ppf(power))
    pi = min(max(discordance, 0.0), 1.0)
    support = np.array([-1.0, 0.0, 1.0])
    shares = np.array([[pi / 2, 1 - pi, pi / 2]])
    v_null = float(_restricted_variance(support, shares, -margin))

    def ok(n: int) -> bool:
        # P(Z(-margin) >= z) with mean ~ N(0, pi / n): margin sqrt(n) - z sqrt(V) >= zb sqrt(pi)
        return margin * math.sqrt(n) - z * math.sqrt(v_null) >= zb * math.sqrt(pi)

    lo_n, hi_n = 1, 1
    while not ok(hi_n):
        hi_n *= 2
        if hi_n >= max_cases:
            return max_cases
    while lo_n < hi_n:
        mid = (lo_n + hi_n) // 2
        lo_n, hi_n = (lo_n, mid) if ok(mid) else (mid + 1, hi_n)
    return hi_n


def _restricted_variance(support: FloatArray, counts: FloatArray, delta: float) -> float:
    """V(delta) of :func:`score_statistic` (recovered from Z; used for planning only)."""
    n = counts.sum()
    mean = float((support * counts).sum() / n)
    zval = float(score_statistic(support, counts, delta)[0])
    return ((mean - delta) * math.sqrt(n) / zval) ** 2 if zval not in (0.0,) else 0.0
