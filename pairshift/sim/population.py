"""A production-like population of units for calibrating the canary gates (vectorised numpy, seeded).

Real traffic is not a stream of independent calls: assignment is sticky per unit, a few units make most of the
calls, a few units fail most of the time, and traffic follows the day. The model:

- **activity**: a unit's call rate is log-normal (``activity_sigma``; 1.5 puts ~40% of calls on the busiest 5%
  of units); calls arrive as a Poisson process whose rate follows a daily cycle (``daily_amplitude``) with a
  random phase per canary, so a stage starts at any time of day;
- **error and invalid-output propensities** per unit: a share of "bad" units at a high rate (``bad_share`` at
  ``bad_rate``: 1% of units failing half of their calls by default) and a Beta distribution for the rest;
- **score** (on a ``scored_share`` of the calls that did not error): a Beta per-unit mean, a Beta per call;
- **cost** and **latency**: log-normal per unit times log-normal per call; latency also rises with the daily
  load (``latency_daily``).

The candidate differs from control by a :class:`Shift` applied to every unit alike (the error propensity
``p`` becomes ``p + delta (1 - p) / (1 - mean p)``, so the call-weighted mean rises by exactly ``delta``; the
score scales so its mean falls by ``delta``; cost and latency scale by their ratios), coupled through shared
random numbers: each call has both outcomes, and a unit's arm picks one.

:func:`stage_traffic` simulates one realisation of a stage's calls for the whole population once, with the
within-unit running sums the stage gate needs (pairshift.unit_stats); :meth:`StageTraffic.canary` then draws
a canary's sticky assignment and returns both arms' cumulative sums at every check, cheaply, so many canaries
share one realisation (the bench estimates its Monte Carlo error between realisations).
:func:`first_latencies` draws the latency gate's one latency per unit directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]
# Cumulative per-check sums of each arm, in this order (pairshift.unit_stats.RatioSums fields by metric).
SUMS = (
    "calls", "units", "calls_sq",
    "err", "err_sq", "err_x_calls",
    "inv", "inv_sq", "inv_x_calls",
    "score_units", "score", "score_n", "score_sq", "score_n_sq", "score_x_n", "score_call_sq",
    "cost", "cost_sq", "cost_x_calls", "cost_call_sq",
)  # fmt: skip
S = {name: i for i, name in enumerate(SUMS)}


@dataclass(frozen=True)
class Propensity:
    """Per-unit rates: ``bad_share`` of units at ``bad_rate``, the rest Beta with the remaining mean."""

    mean: float
    bad_share: float = 0.01
    bad_rate: float = 0.5
    concentration: float = 20.0

    def draw(self, rng: np.random.Generator, n: int) -> F64:
        rest = (self.mean - self.bad_share * self.bad_rate) / (1.0 - self.bad_share)
        if rest <= 0:
            raise ValueError("bad units alone exceed the mean rate")
        p = rng.beta(rest * self.concentration, (1 - rest) * self.concentration, n)
        return np.where(rng.random(n) < self.bad_share, self.bad_rate, p)


@dataclass(frozen=True)
class Population:
    units: int = 500_000
    activity_sigma: float = 1.5
    daily_amplitude: float = 0.6
    errors: Propensity = field(default_factory=lambda: Propensity(0.01))
    invalid: Propensity = field(default_factory=lambda: Propensity(0.02, 0.005, 0.6))
    score_mean: float = 0.8
    score_unit_concentration: float = 4.0
    score_call_concentration: float = 10.0
    scored_share: float = 0.3
    cost_mean: float = 0.002
    cost_unit_sigma: float = 1.0
    cost_call_sigma: float = 0.3
    latency_median_ms: float = 800.0
    latency_unit_sigma: float = 0.3
    latency_call_sigma: float = 0.4
    latency_daily: float = 0.15


@dataclass(frozen=True)
class Shift:
    """How the candidate differs from control (0 / 1: identical)."""

    error: float = 0.0
    invalid: float = 0.0
    score: float = 0.0
    cost_ratio: float = 1.0
    latency_ratio: float = 1.0


def _raise(p: F64, delta: float) -> F64:
    """Every unit's rate raised so the mean rises by exactly ``delta``: p + delta (1 - p) / (1 - mean)."""
    return p + delta * (1.0 - p) / (1.0 - p.mean()) if delta else p


def _cycle(hours: F64, phase: float, amplitude: float) -> F64:
    return 1.0 + amplitude * np.sin(2 * math.pi * (hours + phase) / 24.0)


def _within_unit(y: F64, n: F64 | None, start: NDArray[np.int64], rank: F64) -> tuple[F64, F64, F64]:
    """Per-call increments of a unit's sum y_i^2, n_i^2 and y_i n_i (calls grouped by unit, in time order).

    ``n`` None means one per call (then the unit's prior count is the call's ``rank`` within its unit).
    """
    ex_y = np.cumsum(y) - y
    prior_y = ex_y - ex_y[start]
    if n is None:
        return y * (2 * prior_y + y), 2 * rank + 1, prior_y + rank * y + y
    ex_n = np.cumsum(n) - n
    prior_n = ex_n - ex_n[start]
    return y * (2 * prior_y + y), n * (2 * prior_n + n), prior_y * n + prior_n * y + y * n


@dataclass
class _Calls:
    """One stage's calls of a set of units, grouped by unit and in time order within a unit."""

    unit: NDArray[np.int64]
    check: NDArray[np.int64]
    u_err: F64
    u_inv: F64
    u_scored: F64
    score: F64
    cost: F64


@dataclass
class StageTraffic:
    """One realisation of a stage's calls for every unit, both potential outcomes (see the module doc)."""

    pop: Population
    shift: Shift
    checks: int
    calls: _Calls
    p_err: tuple[F64, F64]  # per unit: control, candidate
    p_inv: tuple[F64, F64]
    unit_offsets: NDArray[np.int64]  # calls of unit u: [offsets[u], offsets[u + 1])
    totals: F64  # control-version sums over all calls, shape (len(SUMS), checks), per check (not cumulative)

    def _sums(self, idx: NDArray[np.int64], arm: int) -> F64:
        """Per-check sums (not cumulative) of the calls ``idx`` (whole units) under one arm's outcomes."""
        c = self.calls
        unit, check = c.unit[idx], c.check[idx]
        # the position of each call's unit's first call within idx (idx holds whole units, in order)
        first = np.r_[True, unit[1:] != unit[:-1]]
        start = np.maximum.accumulate(np.where(first, np.arange(idx.size), 0))
        err = (c.u_err[idx] < self.p_err[arm][unit]).astype(float)
        ok = 1.0 - err
        inv = ok * (c.u_inv[idx] < self.p_inv[arm][unit])
        scored = ok * (c.u_scored[idx] < self.pop.scored_share)
        factor = 1.0 - self.shift.score / self.pop.score_mean if arm else 1.0
        score = scored * c.score[idx] * factor
        cost = c.cost[idx] * (self.shift.cost_ratio if arm else 1.0)
        ones = np.ones(idx.size)
        out = np.zeros((len(SUMS), self.checks))

        def add(name: str, w: F64) -> None:
            out[S[name]] = np.bincount(check, weights=w, minlength=self.checks)

        rank = (np.arange(idx.size) - start).astype(float)
        add("calls", ones)
        add("units", (rank == 0).astype(float))
        add("calls_sq", 2 * rank + 1.0)
        for name, y in (("err", err), ("inv", inv)):
            yy, _, yn = _within_unit(y, None, start, rank)
            add(name, y)
            add(f"{name}_sq", yy)
            add(f"{name}_x_calls", yn)
        yy, nn, yn = _within_unit(score, scored, start, rank)
        ex_n = np.cumsum(scored) - scored
        add("score_units", scored * ((ex_n - ex_n[start]) == 0))
        add("score", score)
        add("score_n", scored)
        add("score_sq", yy)
        add("score_n_sq", nn)
        add("score_x_n", yn)
        add("score_call_sq", score * score)
        yy, _, yn = _within_unit(cost, None, start, rank)
        add("cost", cost)
        add("cost_sq", yy)
        add("cost_x_calls", yn)
        add("cost_call_sq", cost * cost)
        return out

    def canary(self, rng: np.random.Generator, share: float) -> F64:
        """A fresh sticky assignment: cumulative sums per check, shape (2 arms, len(SUMS), checks)."""
        in_canary = rng.random(self.unit_offsets.size - 1) < share
        units = np.flatnonzero(in_canary)
        lo, hi = self.unit_offsets[units], self.unit_offsets[units + 1]
        keep = hi > lo
        lo, hi = lo[keep], hi[keep]
        lengths = hi - lo
        idx = np.repeat(lo - np.cumsum(np.r_[0, lengths[:-1]]), lengths) + np.arange(lengths.sum())
        if idx.size == 0:
            cand, cand_as_ctrl = np.zeros_like(self.totals), np.zeros_like(self.totals)
        else:
            cand, cand_as_ctrl = self._sums(idx, 1), self._sums(idx, 0)
        control = self.totals - cand_as_ctrl
        return np.cumsum(np.stack([control, cand]), axis=2)


def _draw_calls(
    rng: np.random.Generator, pop: Population, rate: F64, hours: float, phase: float
) -> tuple[_Calls, NDArray[np.int64], F64]:
    """Every unit's calls over ``hours`` (checks of ``rate.size``), grouped by unit, sorted in time."""
    n_units, checks = pop.units, rate.size
    activity = rng.lognormal(0.0, pop.activity_sigma, n_units)
    expected = rate.sum()  # calls in the stage
    per_unit = rng.poisson(expected * activity / activity.sum())
    offsets = np.r_[0, np.cumsum(per_unit)]
    total = int(offsets[-1])
    unit = np.repeat(np.arange(n_units), per_unit)
    # Sorted arrival times within each unit: normalised cumulative exponential spacings (n + 1 per unit),
    # mapped through the inverse of the stage's cumulative intensity (the daily cycle).
    spacings = rng.exponential(size=total + n_units)
    group = np.repeat(np.arange(n_units), per_unit + 1)
    csum = np.cumsum(spacings)
    ends = np.cumsum(per_unit + 1) - 1
    base = np.r_[0.0, csum[ends[:-1]]]
    span = csum[ends] - base
    keep = np.ones(total + n_units, dtype=bool)
    keep[ends] = False
    g = group[keep]
    u = (csum[keep] - base[g]) / span[g]
    cdf = np.cumsum(rate) / expected
    check = np.minimum(np.searchsorted(cdf, u, side="right"), checks - 1)
    mu = rng.beta(
        pop.score_mean * pop.score_unit_concentration,
        (1 - pop.score_mean) * pop.score_unit_concentration,
        n_units,
    )
    k = pop.score_call_concentration
    score = rng.beta(np.maximum(mu[unit] * k, 1e-3), np.maximum((1 - mu[unit]) * k, 1e-3))
    unit_cost = pop.cost_mean * rng.lognormal(-(pop.cost_unit_sigma**2) / 2, pop.cost_unit_sigma, n_units)
    cost = unit_cost[unit] * rng.lognormal(-(pop.cost_call_sigma**2) / 2, pop.cost_call_sigma, total)
    calls = _Calls(unit, check, rng.random(total), rng.random(total), rng.random(total), score, cost)
    return calls, offsets, activity


def stage_traffic(
    rng: np.random.Generator,
    pop: Population,
    shift: Shift,
    *,
    rate_per_s: float,
    hours: float,
    check_minutes: float,
) -> StageTraffic:
    """One realisation of a stage: ``hours`` of traffic at ``rate_per_s`` on average, checked every
    ``check_minutes`` (see the module doc)."""
    checks = int(round(hours * 60 / check_minutes))
    mid = (np.arange(checks) + 0.5) * check_minutes / 60
    phase = float(rng.uniform(0, 24))
    rate = rate_per_s * check_minutes * 60 * _cycle(mid, phase, pop.daily_amplitude)
    calls, offsets, _ = _draw_calls(rng, pop, rate, hours, phase)
    p_err = pop.errors.draw(rng, pop.units)
    p_inv = pop.invalid.draw(rng, pop.units)
    traffic = StageTraffic(
        pop=pop,
        shift=shift,
        checks=checks,
        calls=calls,
        p_err=(p_err, _raise(p_err, shift.error)),
        p_inv=(p_inv, _raise(p_inv, shift.invalid)),
        unit_offsets=offsets,
        totals=np.zeros((len(SUMS), checks)),
    )
    traffic.totals = traffic._sums(np.arange(calls.unit.size), 0)
    return traffic


def first_latencies(
    rng: np.random.Generator,
    pop: Population,
    shift: Shift,
    share: float,
    *,
    rate_per_s: float,
    hours: float,
    check_minutes: float,
) -> tuple[tuple[F64, NDArray[np.int64]], tuple[F64, NDArray[np.int64]]]:
    """Each arm's latency sample for one canary: one latency per unit (its first call; the share of first
    calls that error is too small to matter here), with the check in which it arrived, in arrival order."""
    checks = int(round(hours * 60 / check_minutes))
    mid = (np.arange(checks) + 0.5) * check_minutes / 60
    phase = float(rng.uniform(0, 24))
    rate = rate_per_s * check_minutes * 60 * _cycle(mid, phase, pop.daily_amplitude)
    activity = rng.lognormal(0.0, pop.activity_sigma, pop.units)
    lam = rate.sum() * activity / activity.sum()  # expected calls of each unit in the stage
    # First arrival: the cumulative intensity reaches an Exp(1) draw (never, when beyond the stage).
    reach = rng.exponential(size=pop.units) / lam
    arrived = reach < 1.0
    cdf = np.cumsum(rate) / rate.sum()
    check = np.minimum(np.searchsorted(cdf, reach[arrived], side="right"), checks - 1)
    n = check.size
    load = _cycle(mid, phase, pop.latency_daily)[check]
    lat = (
        pop.latency_median_ms
        * rng.lognormal(0, pop.latency_unit_sigma, n)
        * rng.lognormal(0, pop.latency_call_sigma, n)
        * load
    )
    candidate = rng.random(n) < share
    lat = np.where(candidate, lat * shift.latency_ratio, lat)
    order = np.argsort(check, kind="stable")
    lat, check, candidate = lat[order], check[order], candidate[order]
    return (lat[~candidate], check[~candidate]), (lat[candidate], check[candidate])
