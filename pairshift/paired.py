"""The eval gate's paired evidence beyond the pass rate (PRODUCT §6): blocking-assertion changes, cost and
latency ratios, and the power of the non-inferiority test, all paired by case.

Pure functions of per-call outcomes; the one resampling (the bootstrap of the ratios) uses a numpy Generator
with a fixed seed, so the same outcomes always give the same interval and the gate replays.

- **Blocking assertions.** For each blocking type, a case's failure rate is the share of its epochs in which
  the type failed. The change joint - baseline, paired by case, gets the same score interval as the pass rate
  (pairshift.intervals); the gate fails only when the interval's lower end exceeds ``max_new_failure_rate``,
  i.e. when new failures are *shown* to outnumber new passes by more than the tolerance. An identical
  candidate whose JSON breaks at random 0.5% of the time newly fails on a few cases and newly passes on
  about as many; counting only the first would fail most such evals.
- **Cost and latency ratios** (joint / baseline, cost per call and latency p95) get a percentile bootstrap
  interval over cases: every resample draws cases with replacement and keeps all epochs of both arms of each
  drawn case together, so the case-level pairing and the epochs' correlation are kept.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from pairshift.contracts.evals import Effect
from pairshift.intervals import noninferiority_cases, score_interval
from pairshift.stats import ArmOutcomes, Outcomes, common_rates

BOOTSTRAP_RESAMPLES = 2_000
BOOTSTRAP_SEED = 20_241_101
_CHUNK = 200  # resamples computed at once, at most
# ... and at most this many weights per array (2 MB): big evals take fewer at once. The worker's peak RSS
# is the report's: at 1,000,000 (8 MB arrays, a few alive at once) it was ~25 MB over the batches' plateau
# from 5,000 cases on (bench/results/scale.md, Worker memory).
_CELLS = 250_000


class BlockingChange(BaseModel):
    """How one blocking assertion type changed from baseline to joint, paired by case."""

    newly_failing: list[str] = Field(
        ..., description="Cases failing in some joint epoch and no baseline one."
    )
    newly_passing: list[str] = Field(
        ..., description="Cases failing in some baseline epoch and no joint one."
    )
    rate_change: Effect = Field(..., description="Joint - baseline per-case failure rate, with its interval.")


class RatioEstimate(BaseModel):
    """Joint / baseline of a per-call statistic, with a paired bootstrap interval over cases."""

    baseline: float
    joint: float
    ratio: float = Field(..., description="joint / baseline (inf when only the baseline is 0).")
    ci: tuple[float, float]


def blocking_change(baseline: Outcomes, joint: Outcomes, kind: str, confidence: float) -> BlockingChange:
    """The blocking type ``kind``'s new failures and passes and the paired change of its failure rate."""
    cases, rb, rj = common_rates(baseline, joint, lambda arm: arm.fail_rates(kind))
    est, ci, p = score_interval(rj - rb, confidence, -1.0, 1.0)
    return BlockingChange(
        newly_failing=[str(c) for c in cases[(rj > 0) & (rb == 0)]],
        newly_passing=[str(c) for c in cases[(rb > 0) & (rj == 0)]],
        rate_change=Effect(estimate=est, ci=ci, p_value=p),
    )


def _statistic(values: np.ndarray, weights: np.ndarray, stat: str) -> np.ndarray:
    """Per resample (rows of ``weights``, one weight per call): the weighted mean or 95th percentile."""
    total = weights.sum(axis=1)
    if stat == "cost":
        with np.errstate(invalid="ignore", divide="ignore"):
            return (weights * values).sum(axis=1) / total
    cum = np.cumsum(weights, axis=1)  # values are sorted ascending
    idx = (cum < 0.95 * total[:, None]).sum(axis=1)
    return values[np.minimum(idx, values.size - 1)]


Stat = Literal["cost", "latency_p95"]


def paired_ratio(
    baseline: Outcomes,
    joint: Outcomes,
    stat: Stat,
    confidence: float,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> RatioEstimate | None:
    """Joint / baseline cost per call or latency p95, percentile bootstrap over cases; None without data.

    The resampled cases are those with a call that answered in either arm, sorted by case id; each arm's
    values sorted ascending (ties by case), one case index per value."""
    return paired_ratios(baseline, joint, (stat,), confidence, resamples=resamples, seed=seed)[stat]


def paired_ratios(
    baseline: Outcomes,
    joint: Outcomes,
    stats: Sequence[Stat],
    confidence: float,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> dict[Stat, RatioEstimate | None]:
    """:func:`paired_ratio` of each of ``stats``, over one set of resamples: drawing them is most of the work,
    and every stat resamples the same cases with the same seed, so each interval is the one it has alone."""
    fb, fj = ArmOutcomes.of(baseline), ArmOutcomes.of(joint)
    if not fb.ok_case.size or not fj.ok_case.size:
        return dict.fromkeys(stats)
    cases = np.union1d(fb.case_ids[np.unique(fb.ok_case)], fj.case_ids[np.unique(fj.ok_case)])

    def flat(arm: ArmOutcomes, stat: Stat) -> tuple[np.ndarray, np.ndarray]:
        values = arm.ok_cost if stat == "cost" else arm.ok_latency
        index = np.searchsorted(cases, arm.case_ids)[arm.ok_case]  # this arm's case -> its resampled index
        order = np.lexsort((index, values))
        return values[order], index[order]

    flats = {stat: (flat(fb, stat), flat(fj, stat)) for stat in stats}
    rng = np.random.default_rng(seed)
    ratios: dict[Stat, list[np.ndarray]] = {stat: [] for stat in stats}
    # The chunk size changes neither the resamples nor their order (the generator draws row after row).
    chunk = max(1, min(_CHUNK, _CELLS // max(cases.size, fb.ok_case.size, fj.ok_case.size)))
    for start in range(0, resamples, chunk):
        k = min(chunk, resamples - start)
        draws = rng.multinomial(cases.size, np.full(cases.size, 1 / cases.size), size=k).astype(float)
        for stat, ((xb, cb), (xj, cj)) in flats.items():
            sb, sj = _statistic(xb, draws[:, cb], stat), _statistic(xj, draws[:, cj], stat)
            with np.errstate(invalid="ignore", divide="ignore"):
                ratios[stat].append(np.where(sb > 0, sj / sb, np.where(sj > 0, np.inf, 1.0)))
    out: dict[Stat, RatioEstimate | None] = {}
    for stat, ((xb, _), (xj, _)) in flats.items():
        point_b = float(np.mean(xb) if stat == "cost" else np.percentile(xb, 95))
        point_j = float(np.mean(xj) if stat == "cost" else np.percentile(xj, 95))
        r = np.concatenate(ratios[stat])
        r = r[~np.isnan(r)]
        tail = (1 - confidence) / 2
        lo, hi = _quantiles(r, tail) if r.size else (0.0, math.inf)
        ratio = point_j / point_b if point_b > 0 else (math.inf if point_j > 0 else 1.0)
        out[stat] = RatioEstimate(baseline=point_b, joint=point_j, ratio=ratio, ci=(lo, hi))
    return out


_HUGE = np.finfo(float).max


def _quantiles(ratios: np.ndarray, tail: float) -> tuple[float, float]:
    """The ``tail`` and ``1 - tail`` quantiles of bootstrap ratios, some of which may be infinite (a resample
    whose baseline cost or latency is 0). numpy interpolates ``inf - inf`` to NaN, and a NaN bound compares
    False with every limit (the gate could not read it; the report printed "nan"): infinities are interpolated
    as the largest float and read back as infinite."""
    q = np.quantile(np.where(np.isinf(ratios), _HUGE, ratios), [tail, 1 - tail])
    lo, hi = (float(x) if x < _HUGE / 2 else math.inf for x in q)
    return lo, hi


def per_case_discordance(baseline: Outcomes, joint: Outcomes) -> float:
    """Mean squared per-case pass-rate difference: the share of cases that flip, with one epoch."""
    cases, pb, pj = common_rates(baseline, joint)
    return float(np.mean((pj - pb) ** 2)) if cases.size else 0.0


def power_note(n_cases: int, discordance: float, margin: float, confidence: float, power: float = 0.8) -> str:
    """The power of the test the gate runs, as a sentence: cases needed to show non-inferiority."""
    if margin <= 0:
        return (
            "max_regression is 0: non-inferiority at a margin of 0 can never be shown, so the "
            "pass-rate check is never better than inconclusive."
        )
    needed = noninferiority_cases(discordance, margin, confidence, power)
    level = f"the lower end of the {confidence:.0%} interval"
    return (
        f"Power: a candidate with no true difference passes the pass-rate check ({level} within "
        f"-{margin * 100:g} points) with {power:.0%} power from about {needed:,} cases at the discordance "
        f"seen here ({discordance:.1%} of per-case results differ); this eval has {n_cases:,}."
    )
