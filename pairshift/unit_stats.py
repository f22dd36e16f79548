"""What the canary stage gate knows about one variant: sufficient statistics summed over *units*, not calls.

Assignment is sticky per unit, and units differ: one user's prompts fail half the time, another makes a
thousand calls a day. Calls of one unit are therefore not independent draws, and a variance that treats them
as such is too small exactly when a few heavy or error-prone units land in the small canary arm. Every rate
and mean the gate reads is a *ratio estimator over units*, ``sum_i y_i / sum_i n_i`` (errors over calls,
score over scored calls, cost over calls), with the cluster-robust variance of
:func:`pairshift.sequential.cluster_ratio`; the store keeps, per (migration, stage, variant, unit), the
counts and sums each needs, and sums them and their squares in SQL, so a check never reads per-call rows.

The variance used is the larger of the cluster-robust one and the per-call one (regularised like
:func:`pairshift.sequential.bounded_mean` for bounded metrics), so an arm with no errors yet, or a handful of
units, never gets a falsely certain interval.

Latency is judged on a quantile, for which sums do not suffice: each unit contributes *one* latency, that of
its first call in the stage that did not error. Those draws are independent across units, the sample only
grows as units arrive (it is fixed by the units, never resampled), and the gate reads only a few of its order
statistics (:class:`QuantileSample`), which the store fetches by rank.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from pydantic import BaseModel, Field

from pairshift import sequential as seq

Kind = Literal["binary", "bounded", "positive"]


def ratio_variance(
    kind: Kind,
    y: ArrayLike,
    n: ArrayLike,
    yy: ArrayLike,
    nn: ArrayLike,
    yn: ArrayLike,
    units: ArrayLike,
    call_sq: ArrayLike,
) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised :meth:`RatioSums.estimate`: the ratio and max(cluster-robust, per-call) variance."""
    r, cluster = seq.cluster_ratio(y, n, yy, nn, yn, units)
    if kind == "binary":
        _, per_call = seq.bounded_mean(y, y, n)
    elif kind == "bounded":
        _, per_call = seq.bounded_mean(y, call_sq, n)
    else:
        n_ = np.asarray(n, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            per_call = np.where(n_ > 0, np.maximum(np.asarray(call_sq) / n_ - r * r, 0.0) / n_, np.inf)
    return r, np.maximum(cluster, per_call)


class RatioSums(BaseModel):
    """One ratio metric summed over the units of a variant: y_i is a unit's numerator, n_i its denominator."""

    units: int = Field(0, ge=0, description="Units with n_i > 0.")
    y: float = 0.0
    n: float = 0.0
    yy: float = Field(0.0, description="Sum over units of y_i^2.")
    nn: float = Field(0.0, description="Sum over units of n_i^2.")
    yn: float = Field(0.0, description="Sum over units of y_i * n_i.")
    call_sq: float = Field(0.0, description="Sum over calls of the per-call value squared (1 per error).")

    @property
    def ratio(self) -> float:
        return self.y / self.n if self.n else 0.0

    def estimate(self, kind: Kind) -> tuple[float, float]:
        """The ratio and the variance the gate uses: max(cluster-robust, per-call) (module docstring)."""
        r, var = ratio_variance(kind, self.y, self.n, self.yy, self.nn, self.yn, self.units, self.call_sq)
        return float(r), float(var)

    @classmethod
    def from_units(cls, y: ArrayLike, n: ArrayLike, call_sq: float | None = None) -> RatioSums:
        """From per-unit numerators and denominators (tests and benches; the store sums in SQL)."""
        y_, n_ = np.asarray(y, dtype=float), np.asarray(n, dtype=float)
        return cls(
            units=int((n_ > 0).sum()),
            y=float(y_.sum()),
            n=float(n_.sum()),
            yy=float((y_ * y_).sum()),
            nn=float((n_ * n_).sum()),
            yn=float((y_ * n_).sum()),
            call_sq=float(y_.sum()) if call_sq is None else call_sq,
        )


class QuantileSample(BaseModel):
    """One latency per unit (its first call in the stage that did not error): size and some order stats."""

    size: int = Field(0, ge=0, description="Units with a latency.")
    order: dict[int, float] = Field(
        default_factory=dict, description="Order statistics by 1-based rank (the ranks the gate asked for)."
    )

    def at(self, rank: int) -> float:
        """The rank-th smallest latency; 0 below the sample, infinity above it."""
        if rank <= 0:
            return 0.0
        if rank > self.size:
            return math.inf
        if rank not in self.order:
            raise LookupError(f"latency order statistic {rank} of {self.size} was not fetched from the store")
        return self.order[rank]

    @classmethod
    def from_values(cls, values: ArrayLike, ranks: Iterable[int] | None = None) -> QuantileSample:
        """From all the per-unit latencies (tests and benches); ``ranks`` None keeps every order statistic."""
        v = np.sort(np.asarray(values, dtype=float))
        v = v[~np.isnan(v)]
        wanted = range(1, v.size + 1) if ranks is None else [r for r in ranks if 1 <= r <= v.size]
        return cls(size=int(v.size), order={int(r): float(v[r - 1]) for r in wanted})


class VariantStats(BaseModel):
    """Sufficient statistics of one variant in the current stage so far (the store computes them)."""

    n: int = Field(0, ge=0, description="Calls observed.")
    units: int = Field(0, ge=0, description="Distinct units observed (the SRM check counts these).")
    errors: RatioSums = Field(default_factory=RatioSums, description="y = errors, n = calls.")
    invalid: RatioSums = Field(default_factory=RatioSums, description="y = invalid outputs, n = calls.")
    score: RatioSums = Field(default_factory=RatioSums, description="y = sum of scores, n = scored calls.")
    cost: RatioSums = Field(
        default_factory=RatioSums, description="y = cost, n = calls; call_sq = sum cost^2."
    )
    latency: QuantileSample = Field(default_factory=QuantileSample)
    lost: int = Field(
        0, ge=0, description="Calls writers dropped before they reached the store (observation_losses)."
    )

    @classmethod
    def from_units(
        cls,
        calls: ArrayLike,
        errors: ArrayLike | None = None,
        *,
        invalid: ArrayLike | None = None,
        score_n: ArrayLike | None = None,
        score_sum: ArrayLike | None = None,
        score_sumsq: float | None = None,
        cost_sum: ArrayLike | None = None,
        cost_sumsq: float | None = None,
        first_latency: ArrayLike | None = None,
        ranks: Iterable[int] | None = None,
    ) -> VariantStats:
        """From per-unit arrays (one entry per unit); absent metrics are zeros."""
        c = np.asarray(calls, dtype=float)
        zero = np.zeros_like(c)

        def arr(a: ArrayLike | None) -> np.ndarray:
            return zero if a is None else np.asarray(a, dtype=float)

        return cls(
            n=int(c.sum()),
            units=int((c > 0).sum()),
            errors=RatioSums.from_units(arr(errors), c),
            invalid=RatioSums.from_units(arr(invalid), c),
            score=RatioSums.from_units(arr(score_sum), arr(score_n), score_sumsq or 0.0),
            cost=RatioSums.from_units(arr(cost_sum), c, cost_sumsq or 0.0),
            latency=QuantileSample.from_values(
                np.array([]) if first_latency is None else first_latency, ranks
            ),
        )
