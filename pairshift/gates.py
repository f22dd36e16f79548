"""Gate decisions: the eval gate (PRODUCT §6), the canary stage gate (PRODUCT §8) and the shadow stage gate.

Pure functions of summaries, counts and samples plus the policy: no I/O, no clocks, no global randomness
(the one bootstrap uses a fixed-seed numpy Generator), so workflows call them directly and replays agree.
Each decision comes with human sentences carrying the numbers, for the report, Slack and the audit log.

Stage gate, in order:

1. ``percent >= 100``: there is no concurrent control left to compare with; the stage passes once
   ``min_hours`` have elapsed.
2. Sample-ratio mismatch: an always-valid test of the observed candidate share of *units* against the
   configured percent -> ``srm``: the split is broken, so no comparison is trustworthy. Its power (80%, at
   the default alpha share 0.001): a 10% relative mismatch (1.1% of units instead of 1%) is flagged once the
   stage has seen about 253,000 units at 1%, 49,000 at 5% and 10,000 at 20%; half the configured share
   within about 14,000, 2,600 and 550 units (bench/results/calibration.md).
3. Every configured metric gets an always-valid interval for "how much worse is the candidate": error rate
   and invalid-output rate increase, mean score decrease, log cost-per-call ratio (normal-mixture confidence
   sequences, pairshift.sequential, on ratio estimators over *units* with cluster-robust variances,
   pairshift.unit_stats), and the latency-p95 ratio (each arm's beta-binomial quantile confidence sequence
   over one latency per unit, exact for independent units).
   **Error spending**: ``canary.alpha`` is split equally over the stages that have a control (percent < 100,
   and shadow stages; ``alpha_scope: canary``, the default; ``stage`` gives every stage the whole alpha),
   then a tenth of a stage's share (at most ``SRM_ALPHA``) to the SRM check and the rest equally over the
   gated metrics (Bonferroni). By the
   union bound the chance of *any* false rollback over the whole canary stays <= alpha however often stages
   are checked; the normal-mixture sequences are asymptotic (estimated variances, clustered data), and
   bench/results/calibration.md measures them on heavy-tailed, sticky, daily-cycled traffic.
4. A metric **breaches** when its interval lies wholly above the allowed margin (``max_increase``,
   ``max_decrease``, ``log(max_ratio)``): a rollback means "clearly worse than the policy allows", and the
   false-rollback guarantee holds for every candidate whose true degradation is within the margin, not only
   for an identical one. (A margin of 0 turns this into "clearly worse than control at all".) Any breach
   -> ``breach``, at any check, with however few samples: the interval is valid at every sample size.
5. Otherwise the stage **passes** only when every measured metric's interval lies wholly at or below its
   margin (non-inferior), the smaller arm has ``min_samples``, ``elapsed_hours >= min_hours``, and writers
   lost at most ``MAX_LOST_SHARE`` of either arm's calls before they reached the store (a stage does not pass
   on evidence it never saw: the drops are the oldest queued calls of an overloaded or cut-off writer, not a
   random sample); anything short of that is ``inconclusive`` (keep soaking; at ``max_hours`` the workflow
   asks a human).

The invalid-output rate has no field of its own in the policy; it is held to ``error_rate.max_increase``.

Shadow stage gate (:func:`shadow_gate`), for a stage ``{shadow: PERCENT}`` whose candidate answers mirrored
control requests and is never served (the two outputs of each sampled input are judged pairwise in both
orders, :mod:`pairshift.pairwise`):

1. No SRM check: both arms answer the same requests, so there is no split to break; the stage's whole alpha
   share goes to its metrics (:func:`shadow_metrics`: the error and invalid rates, latency p95 and cost per
   call of the mirrored requests in each arm, judged by the same code as step 3, and the win rate; ``score``
   is left out, the win rate is a shadow stage's measure of quality). The latency p95 reads the same order
   statistics as a live stage's (:func:`latency_ranks`, at :func:`metric_alpha`, a little below the shadow
   share), so it spends less than its share.
2. **Win rate**: the candidate's mean pair score (win 1, tie 0.5, loss 0 per order, averaged over the two
   orders) against 0.5, an as-good-as-control candidate's, as a ratio estimator over units (a unit's pair
   scores over its judged pairs, cluster-robust variance: one user's inputs may sway the judge one way) with
   a normal-mixture confidence sequence on ``0.5 - mean``. Breach when the whole interval lies above
   ``win_rate.max_decrease`` (the mean pair score is clearly below 0.5 - margin); non-inferior when it lies
   at or below it.
3. Steps 4 and 5 as above; ``min_samples`` holds for the judged pairs (auto: :func:`required_pairs`, from the
   pair scores' observed variance and design effect) and for each arm's calls (auto: :func:`required_samples`
   at equal allocation and the shadow metric alpha).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np

from pairshift import sequential as seq
from pairshift.contracts.evals import Effect
from pairshift.contracts.gates import GateDecision, StageCheck
from pairshift.paired import BlockingChange, RatioEstimate
from pairshift.policy import CanaryPolicy, EvalPolicy, Stage
from pairshift.unit_stats import RatioSums, VariantStats

SRM_ALPHA = 0.001  # at most this share of a stage's alpha goes to the SRM check (a broken split is blatant)
MIN_SAMPLES_FLOOR = 100  # never pass a stage on fewer calls per arm than this, whatever the power maths says
MIN_RATIO_SAMPLES = 50  # a p95 from fewer units, or a mean cost from fewer calls, is noise
UNREACHABLE_SAMPLES = 10**12  # min_samples when non-inferiority can never be shown (a margin of 0)
MAX_DESIGN_EFFECT = 50.0  # min_samples: auto never asks for more than this many times the iid sample
MAX_CASES_NAMED = 5
MAX_LOST_SHARE = 0.01  # a stage passes only if writers lost at most this share of an arm's calls


# ---------------------------------------------------------------- eval gate


def _pp(x: float, digits: int = 1) -> str:
    """A difference of rates in percentage points, signed."""
    return f"{round(x * 100, digits) + 0.0:+.{digits}f} points"  # + 0.0 turns -0.0 into 0.0


def eval_gate(
    joint_effect: Effect,
    blocking: dict[str, BlockingChange],
    cost: RatioEstimate | None,
    latency: RatioEstimate | None,
    policy: EvalPolicy,
    *,
    latency_unmeasured: str | None = None,
) -> GateDecision:
    """Pass / fail / inconclusive for the joint arm against baseline: pass rate, blocking, cost, latency.

    Every check reads the two-sided ``policy.confidence`` interval of its paired comparison: it passes when
    the interval lies within the allowed bound, fails only when the interval lies wholly beyond it (the
    candidate is *shown* worse than the policy allows), and is inconclusive otherwise. Each end errs with
    probability (1 - confidence) / 2, so a candidate exactly at a bound passes (or one within it fails) at
    most that often.
    """
    verdicts: list[tuple[str, str]] = [_noninferiority(joint_effect, policy)]
    for kind in policy.blocking:
        change = blocking.get(kind)
        if change is not None:
            verdicts += _blocking(kind, change, policy)
    verdicts.append(_ratio("cost per call", cost, policy.max_cost_ratio, "$", policy.confidence))
    if latency_unmeasured is not None:  # e.g. an arm answered through a provider batch API: no latency
        verdicts.append(("pass", f"latency p95: not judged: {latency_unmeasured}"))
    else:
        verdicts.append(_ratio("latency p95", latency, policy.max_latency_p95_ratio, "ms", policy.confidence))
    decisions = {v for v, _ in verdicts}
    decision: Literal["pass", "fail", "inconclusive"] = (
        "fail" if "fail" in decisions else "inconclusive" if "inconclusive" in decisions else "pass"
    )
    return GateDecision(decision=decision, reasons=[reason for _, reason in verdicts])


def _interval(ci: tuple[float, float], confidence: float, fmt: Any = _pp) -> str:
    return f"{confidence:.0%} interval [{fmt(ci[0])}, {fmt(ci[1])}]"


def _noninferiority(effect: Effect, policy: EvalPolicy) -> tuple[str, str]:
    lo, hi = effect.ci
    margin = -policy.max_regression
    said = f"joint - baseline pass rate {_pp(effect.estimate)} ({_interval(effect.ci, policy.confidence)})"
    if hi < margin:
        return "fail", f"{said}: shown worse than the allowed {_pp(margin)} (the upper end is below it)"
    if lo >= margin:
        return "pass", f"{said}: non-inferior, the lower end is within the allowed {_pp(margin)}"
    return (
        "inconclusive",
        f"{said}: the lower end is below the allowed {_pp(margin)}; more cases or epochs needed",
    )


def _named(cases: list[str]) -> str:
    named = ", ".join(cases[:MAX_CASES_NAMED])
    return named + (f" and {len(cases) - MAX_CASES_NAMED} more" if len(cases) > MAX_CASES_NAMED else "")


def _blocking(kind: str, change: BlockingChange, policy: EvalPolicy) -> list[tuple[str, str]]:
    """A blocking type fails the gate only when its failure rate is shown to rise beyond the tolerance."""
    if not change.newly_failing:
        return []
    e, tolerance = change.rate_change, policy.max_new_failure_rate
    said = (
        f"blocking assertion {kind} newly fails on {len(change.newly_failing)} case(s): "
        f"{_named(change.newly_failing)}; newly passes on {len(change.newly_passing)}; its failure rate "
        f"changed {_pp(e.estimate, 2)} ({_interval(e.ci, policy.confidence, lambda x: _pp(x, 2))})"
    )
    if e.ci[0] > tolerance:
        return [("fail", f"{said}: shown to rise more than the allowed {_pp(tolerance, 2)}")]
    return [("pass", f"{said}: not shown to rise more than the allowed {_pp(tolerance, 2)}")]


def _ratio(
    what: str, est: RatioEstimate | None, max_ratio: float, unit: str, confidence: float
) -> tuple[str, str]:
    if est is None:
        return "inconclusive", f"{what}: an arm has no call to measure; not judged"
    if est.baseline <= 0:
        if est.joint <= 0:
            return "pass", f"{what}: 0 in both arms"
        return "fail", f"{what}: {est.joint:.4g} {unit} in joint against 0 in baseline exceeds any ratio"
    lo, hi = est.ci
    said = (
        f"{what} ratio {est.ratio:.2f} ({_interval(est.ci, confidence, lambda x: f'{x:.2f}')}; "
        f"joint {est.joint:.4g} {unit} / baseline {est.baseline:.4g} {unit})"
    )
    if lo > max_ratio:
        return "fail", f"{said}: shown to exceed the allowed {max_ratio:g}"
    if hi <= max_ratio:
        return "pass", f"{said}: within the allowed {max_ratio:g}"
    return "inconclusive", f"{said}: the upper end exceeds the allowed {max_ratio:g}; more cases needed"


# ---------------------------------------------------------------- stage gate


def gated_metrics(canary: CanaryPolicy) -> list[str]:
    """The metric names the stage gate judges under this policy (a stage's alpha is split over them)."""
    m = canary.metrics
    names = ["error_rate", "invalid_rate"] if m.error_rate else []
    names += [name for name in ("score", "latency_p95", "cost_per_call") if getattr(m, name) is not None]
    return names


def is_shadow(stage: Stage) -> bool:
    """A shadow stage (``shadow: PERCENT``): the candidate answers mirrored requests, never served."""
    return stage.shadow is not None


def live_stages(canary: CanaryPolicy) -> int:
    """Stages with a control to compare with (percent < 100, or a shadow stage): the only ones that can roll
    back on a metric."""
    return max(1, sum(1 for s in canary.stages if is_shadow(s) or s.percent < 100))


def stage_alpha(canary: CanaryPolicy) -> float:
    """The false-rollback rate one stage may spend: ``canary.alpha`` split equally over the live stages
    (``alpha_scope: canary``, the default), or all of it in every stage (``alpha_scope: stage``)."""
    return canary.alpha if canary.alpha_scope == "stage" else canary.alpha / live_stages(canary)


def srm_alpha(canary: CanaryPolicy) -> float:
    """The SRM check's share of a stage's alpha: a tenth, at most ``SRM_ALPHA``."""
    return min(SRM_ALPHA, stage_alpha(canary) / 10)


def metric_alpha(canary: CanaryPolicy) -> float:
    """Each gated metric's share of a stage's alpha, after the SRM check's (Bonferroni)."""
    return (stage_alpha(canary) - srm_alpha(canary)) / max(1, len(gated_metrics(canary)))


def latency_ranks(canary: CanaryPolicy, size: int) -> tuple[int, int, int]:
    """The order statistics (1-based ranks) the latency gate reads from a sample of ``size`` units: the ends
    of the p95's confidence sequence at half the metric's alpha (one per arm) and the estimate."""
    return seq.quantile_ranks(size, 0.95, metric_alpha(canary) / 2)


def mixture_tau(margin: float) -> float:
    """Mixture scale of a metric's sequence: its margin (the test is quickest for effects of that size)."""
    return abs(margin) or 0.01


def srm_tau(share: float) -> float:
    """Mixture scale of the SRM sequence: tuned to a 10% relative mismatch of the smaller arm's share."""
    return 0.1 * min(share, 1.0 - share)


def required_samples(
    canary: CanaryPolicy,
    baseline_error_rate: float = 0.01,
    percent: float = 50.0,
    design_effect: float = 1.0,
    *,
    alpha: float | None = None,
) -> int:
    """``min_samples: auto``: calls in the smaller arm for a candidate as good as control to pass (``power``).

    Uses the first gated binary metric (error rate at ``baseline_error_rate``; else score, variance <= 1/4),
    the same mixture boundary and per-metric alpha as :func:`stage_gate`, the allocation of ``percent``, and
    the design effect of unit clustering (the cluster-robust over the per-call variance seen in control).
    ``alpha``: the metric's alpha when it is not :func:`metric_alpha`'s (a shadow stage's).
    """
    q = percent / 100.0
    if canary.metrics.error_rate is not None:
        margin = canary.metrics.error_rate.max_increase
        p = min(max(baseline_error_rate, 1e-4), 0.5)
        per_call_var = p * (1 - p)
    elif canary.metrics.score is not None:
        margin, per_call_var = canary.metrics.score.max_decrease, 0.25
    else:
        return MIN_SAMPLES_FLOOR
    if q >= 1.0:
        return MIN_SAMPLES_FLOOR
    alpha = metric_alpha(canary) if alpha is None else alpha
    v_needed = seq.required_variance(margin, mixture_tau(margin), alpha, canary.power)
    if v_needed <= 0:
        return UNREACHABLE_SAMPLES
    total = max(design_effect, 1.0) * per_call_var * (1 / q + 1 / (1 - q)) / v_needed
    return max(MIN_SAMPLES_FLOOR, math.ceil(total * min(q, 1 - q)))


def _design_effect(control: VariantStats) -> float:
    """Cluster-robust / per-call variance of control's error rate (1 when it cannot be told)."""
    _, clustered = control.errors.estimate("binary")
    _, per_call = seq.bounded_mean(control.errors.y, control.errors.y, control.errors.n)
    ratio = clustered / float(per_call) if math.isfinite(clustered) and float(per_call) > 0 else 1.0
    return min(max(ratio, 1.0), MAX_DESIGN_EFFECT)


def stage_gate(
    control: VariantStats,
    candidate: VariantStats,
    percent: float,
    canary: CanaryPolicy,
    *,
    elapsed_hours: float,
    min_hours: float,
) -> StageCheck:
    """Judge one canary check: ``breach`` (roll back now), ``pass``, ``inconclusive`` or ``srm``."""
    samples = {"control": control.n, "candidate": candidate.n}
    lost = {v: s.lost for v, s in (("control", control), ("candidate", candidate)) if s.lost}
    if percent >= 100:
        done = elapsed_hours >= min_hours
        reason = "no concurrent control at 100%: nothing to compare; the stage holds for min_hours only"
        return StageCheck(
            decision="pass" if done else "inconclusive", reasons=[reason], min_samples=0, samples=samples
        )
    srm = _srm(control, candidate, percent, srm_alpha(canary))
    if srm is not None:
        return StageCheck(decision="srm", reasons=[srm], min_samples=0, samples=samples)
    if canary.min_samples == "auto":
        ctrl_rate = (control.errors.y + 1) / (control.n + 2)
        min_samples = required_samples(canary, ctrl_rate, percent, _design_effect(control))
    else:
        min_samples = canary.min_samples
    alpha = metric_alpha(canary)
    metrics = {name: _judge_metric(name, control, candidate, canary, alpha) for name in gated_metrics(canary)}
    short = [_too_few(min(control.n, candidate.n), min_samples, "per arm")]
    return _settle(metrics, short, control, candidate, elapsed_hours, min_hours, min_samples, samples, lost)


def _too_few(smaller: int, min_samples: int, what: str) -> str | None:
    return (
        f"too few samples: {smaller:,} of the {min_samples:,} needed {what}"
        if smaller < min_samples
        else None
    )


def _settle(
    metrics: dict[str, dict[str, Any]],
    short: list[str | None],
    control: VariantStats,
    candidate: VariantStats,
    elapsed_hours: float,
    min_hours: float,
    min_samples: int,
    samples: dict[str, int],
    lost: dict[str, int],
) -> StageCheck:
    """Steps 4 and 5 of the stage gate (module docstring): any breach, else pass only if everything holds."""
    verdicts = {name: m["verdict"] for name, m in metrics.items()}
    reasons = [m.pop("reason") for m in metrics.values()]
    if "breach" in verdicts.values():
        decision: Literal["breach", "pass", "inconclusive"] = "breach"
    else:
        decision = "pass"
        for reason in filter(None, short):
            decision = "inconclusive"
            reasons.append(reason)
        if elapsed_hours < min_hours:
            decision = "inconclusive"
            reasons.append(f"the stage has run {elapsed_hours:.2f} of its {min_hours:g} minimum hours")
        if "inconclusive" in verdicts.values():
            decision = "inconclusive"
    for variant, stats in (("control", control), ("candidate", candidate)):
        if stats.lost:
            share = stats.lost / (stats.n + stats.lost)
            reasons.append(
                f"{stats.lost:,} {variant} call(s) ({share:.2%}) were lost by writers before the store"
                + (
                    f"; a stage does not pass on evidence it lost (at most {MAX_LOST_SHARE:.0%})"
                    if share > MAX_LOST_SHARE
                    else ""
                )
            )
            if share > MAX_LOST_SHARE and decision == "pass":
                decision = "inconclusive"
    return StageCheck(
        decision=decision,
        reasons=reasons,
        metrics=metrics,
        min_samples=min_samples,
        samples=samples,
        lost=lost,
    )


# ---------------------------------------------------------------- shadow stage gate


def shadow_metrics(canary: CanaryPolicy) -> list[str]:
    """The metrics a shadow stage judges: the live stages' without ``score`` (the pairwise win rate is a
    shadow stage's measure of quality; the candidate's outputs are never served, so never scored online),
    plus ``win_rate`` when the policy gates it."""
    names = [name for name in gated_metrics(canary) if name != "score"]
    return names + (["win_rate"] if canary.metrics.win_rate is not None else [])


def shadow_metric_alpha(canary: CanaryPolicy) -> float:
    """Each shadow metric's share of the stage's alpha: no SRM check, the rest split equally (Bonferroni)."""
    return stage_alpha(canary) / max(1, len(shadow_metrics(canary)))


PAIR_SCORE_VARIANCE = 0.25  # the largest variance of a 0..1 pair score: min_samples auto before any pair


def required_pairs(
    canary: CanaryPolicy, pair_variance: float = PAIR_SCORE_VARIANCE, design_effect: float = 1.0
) -> int:
    """``min_samples: auto`` for the win rate: judged pairs for a candidate as good as control (mean pair
    score 0.5) to show non-inferiority at ``win_rate.max_decrease`` with ``canary.power``, with the same
    mixture boundary and alpha as :func:`shadow_gate`. One sample against the known 0.5, so V = var / n."""
    if canary.metrics.win_rate is None:
        return MIN_SAMPLES_FLOOR
    margin = canary.metrics.win_rate.max_decrease
    v_needed = seq.required_variance(margin, mixture_tau(margin), shadow_metric_alpha(canary), canary.power)
    if v_needed <= 0:
        return UNREACHABLE_SAMPLES
    per_pair = min(max(pair_variance, 1e-4), PAIR_SCORE_VARIANCE)
    return max(MIN_SAMPLES_FLOOR, math.ceil(max(design_effect, 1.0) * per_pair / v_needed))


def _check_pairs(pairs: RatioSums) -> None:
    values = (pairs.y, pairs.n, pairs.yy, pairs.nn, pairs.yn, pairs.call_sq)
    if not all(math.isfinite(v) for v in values):
        raise ValueError("pair sums must be finite")
    if min(values) < 0 or pairs.y > pairs.n or pairs.call_sq > pairs.y or pairs.units > pairs.n:
        raise ValueError(
            f"pair sums out of range: {pairs.y:g} of score over {pairs.n:g} pairs in {pairs.units} units, "
            f"{pairs.call_sq:g} squared (each pair scores 0..1, each unit has at least one pair)"
        )
    if (pairs.n > 0) != (pairs.units > 0):
        raise ValueError(f"{pairs.n:g} pairs in {pairs.units} units: both or neither must be 0")


def _win_rate(pairs: RatioSums, canary: CanaryPolicy, alpha: float) -> dict[str, Any]:
    """The candidate's mean pair score against 0.5 (as good as control), clustered by unit, always-valid."""
    assert canary.metrics.win_rate is not None
    margin = canary.metrics.win_rate.max_decrease
    counts = {"pairs": int(pairs.n), "units": pairs.units}
    if pairs.n <= 0:
        why = "win_rate: no pair judged in both orders yet"
        return {"verdict": "inconclusive", "reason": why, "alpha": alpha, **counts}
    mean, var = pairs.estimate("bounded")
    decrease = 0.5 - mean
    out = _verdict(
        "win_rate", (0.5, mean), decrease, _cs(decrease, var, margin, alpha), margin, alpha, "decrease"
    )
    out["reason"] += (
        f"; {int(pairs.n):,} pair(s) judged in both orders over {pairs.units:,} unit(s), mean pair score "
        f"{mean:.4f} (0.5: as good as control)"
    )
    return {**out, **counts}


def shadow_gate(
    control: VariantStats,
    candidate: VariantStats,
    pairs: RatioSums,
    stage: Stage,
    canary: CanaryPolicy,
    *,
    elapsed_hours: float,
) -> StageCheck:
    """Judge one check of a shadow stage: ``breach`` (roll back now), ``pass`` or ``inconclusive``.

    ``control`` and ``candidate``: each arm's calls on the *mirrored* requests only (the same inputs);
    ``pairs``: the candidate's pair scores (:func:`pairshift.pairwise.pair_score`) summed by unit (y = sum of
    a unit's pair scores, n = its judged pairs). The error and invalid rates, latency p95 and cost per call
    are judged as :func:`stage_gate` judges them (the same code), the win rate as a one-sample comparison of
    the mean pair score with 0.5; steps 4 and 5 of the module docstring decide. Never ``srm``: both outputs
    answer the same requests, so there is no split to break. ``canary.min_samples`` holds for the judged
    pairs and for the smaller arm's calls; with ``auto`` each has its own (:func:`required_pairs`,
    :func:`required_samples`), and the check's ``min_samples`` is the pairs' (the calls' when the win rate
    is not gated).
    """
    if not is_shadow(stage):
        raise ValueError("shadow_gate judges a shadow stage (shadow: PERCENT); use stage_gate for this one")
    if not math.isfinite(elapsed_hours) or elapsed_hours < 0:
        raise ValueError(f"elapsed_hours must be a finite number >= 0, got {elapsed_hours!r}")
    _check_pairs(pairs)
    samples = {"control": control.n, "candidate": candidate.n, "pairs": int(pairs.n)}
    lost = {v: s.lost for v, s in (("control", control), ("candidate", candidate)) if s.lost}
    alpha = shadow_metric_alpha(canary)
    names = shadow_metrics(canary)
    # The latency p95 reads the order statistics the store fetched for a live stage (latency_ranks, at the
    # live metric alpha, a little below the shadow share): it spends less than its share, which is safe.
    metrics = {
        name: _win_rate(pairs, canary, alpha)
        if name == "win_rate"
        else _judge_metric(
            name, control, candidate, canary, metric_alpha(canary) if name == "latency_p95" else alpha
        )
        for name in names
    }
    judged = "win_rate" in names
    if canary.min_samples == "auto":
        ctrl_rate = (control.errors.y + 1) / (control.n + 2)
        calls_needed = required_samples(canary, ctrl_rate, 50.0, _design_effect(control), alpha=alpha)
        pairs_needed = MIN_SAMPLES_FLOOR
        if judged:
            _, per_pair = seq.bounded_mean(pairs.y, pairs.call_sq, pairs.n)
            observed = float(per_pair) * pairs.n if pairs.n > 0 else PAIR_SCORE_VARIANCE
            pairs_needed = required_pairs(canary, observed, _pair_design_effect(pairs))
    else:
        calls_needed = pairs_needed = canary.min_samples
    short = [_too_few(min(control.n, candidate.n), calls_needed, "per arm")]
    if judged:
        short.append(_too_few(int(pairs.n), pairs_needed, "judged pairs"))
    min_samples = pairs_needed if judged else calls_needed
    return _settle(
        metrics, short, control, candidate, elapsed_hours, stage.min_hours, min_samples, samples, lost
    )


def _pair_design_effect(pairs: RatioSums) -> float:
    """Cluster-robust / per-pair variance of the mean pair score (1 when it cannot be told)."""
    _, clustered = pairs.estimate("bounded")
    _, per_pair = seq.bounded_mean(pairs.y, pairs.call_sq, pairs.n)
    ratio = clustered / float(per_pair) if math.isfinite(clustered) and float(per_pair) > 0 else 1.0
    return min(max(ratio, 1.0), MAX_DESIGN_EFFECT)


def _srm(control: VariantStats, candidate: VariantStats, percent: float, alpha: float) -> str | None:
    """Units, not calls: a unit is assigned once, so units split Binomial(N, share) exactly."""
    nc, nt = control.units, candidate.units
    share = percent / 100.0
    diff, lo, hi = seq.share_mismatch(nc, nt, share, srm_tau(share), alpha)
    if float(lo) > 0 or float(hi) < 0:
        observed = nt / (nc + nt)
        return (
            f"sample ratio mismatch: candidate has {observed:.2%} of {nc + nt:,} units, configured "
            f"{percent:g}% (always-valid test at alpha {alpha:.2g}); the split is broken, so the comparison "
            "is not trustworthy"
        )
    return None


def _judge_metric(
    name: str, control: VariantStats, candidate: VariantStats, canary: CanaryPolicy, alpha: float
) -> dict[str, Any]:
    """One metric's always-valid interval for "how much worse the candidate is", its verdict and reason."""
    m = canary.metrics
    if name in ("error_rate", "invalid_rate"):
        assert m.error_rate is not None
        attr = "errors" if name == "error_rate" else "invalid"
        rc, vc = getattr(control, attr).estimate("binary")
        rt, vt = getattr(candidate, attr).estimate("binary")
        bounds = _cs(rt - rc, vc + vt, m.error_rate.max_increase, alpha)
        return _verdict(name, (rc, rt), rt - rc, bounds, m.error_rate.max_increase, alpha, "increase")
    if name == "score":
        assert m.score is not None
        if control.score.n == 0 or candidate.score.n == 0:
            return {"verdict": "not_measured", "reason": "score: not measured (an arm has no scored calls)"}
        mc, vc = control.score.estimate("bounded")
        mt, vt = candidate.score.estimate("bounded")
        margin = m.score.max_decrease
        return _verdict(
            name, (mc, mt), mc - mt, _cs(mc - mt, vc + vt, margin, alpha), margin, alpha, "decrease"
        )
    if name == "latency_p95":
        assert m.latency_p95 is not None
        return _latency(control, candidate, canary, m.latency_p95.max_ratio, alpha)
    assert m.cost_per_call is not None
    margin = math.log(m.cost_per_call.max_ratio)
    measured = _log_cost_ratio(control, candidate)
    if isinstance(measured, str):
        return {"verdict": "inconclusive", "reason": f"{name}: {measured}", "alpha": alpha}
    values, est, var = measured
    return _verdict(name, values, est, _cs(est, var, margin, alpha), margin, alpha, "ratio")


def _cs(est: float, var: float, margin: float, alpha: float) -> tuple[float, float]:
    lo, hi = seq.confidence_sequence(est, var, mixture_tau(margin), alpha)
    return float(lo), float(hi)


def _verdict(
    name: str,
    values: tuple[float, float],
    est: float,
    bounds: tuple[float, float],
    margin: float,
    alpha: float,
    kind: str,
) -> dict[str, Any]:
    lo, hi = bounds
    verdict = "breach" if lo > margin else "ok" if hi <= margin else "inconclusive"
    if kind == "ratio":
        shown = (math.exp(est), (math.exp(lo), math.exp(hi)), math.exp(margin))
        said = (
            f"ratio {shown[0]:.3f}, always-valid bound [{shown[1][0]:.3f}, {shown[1][1]:.3f}], "
            f"max {shown[2]:.3f}"
        )
    elif kind == "increase":
        shown = (est, (lo, hi), margin)
        said = (
            f"{kind} {_pp(est, 2)}, always-valid bound [{_pp(lo, 2)}, {_pp(hi, 2)}], "
            f"max {kind} {_pp(margin, 2)}"
        )
    else:
        shown = (est, (lo, hi), margin)
        said = f"{kind} {est:+.4f}, always-valid bound [{lo:+.4f}, {hi:+.4f}], max {kind} {margin:.4f}"
    sentence = {
        "breach": "candidate clearly worse than allowed",
        "ok": "non-inferior",
        "inconclusive": "not decided yet",
    }[verdict]
    reason = (
        f"{name}: {sentence}: control {values[0]:.4g}, candidate {values[1]:.4g}, {said} ({1 - alpha:.2%})"
    )
    key = "ratio" if kind == "ratio" else "difference"
    return {
        "control": values[0],
        "candidate": values[1],
        key: shown[0],
        "bound": list(shown[1]),
        "limit": shown[2],
        "alpha": alpha,
        "verdict": verdict,
        "reason": reason,
    }


def _latency(
    control: VariantStats, candidate: VariantStats, canary: CanaryPolicy, max_ratio: float, alpha: float
) -> dict[str, Any]:
    """Candidate / control p95 from each arm's quantile confidence sequence at alpha / 2 (exact).

    Breach when even the candidate's lowest plausible p95 over control's highest exceeds ``max_ratio``; ok
    when the candidate's highest over control's lowest is within it.
    """
    c, t = control.latency, candidate.latency
    if min(c.size, t.size) < MIN_RATIO_SAMPLES:
        why = (
            f"too few units with a latency ({c.size} control, {t.size} candidate; {MIN_RATIO_SAMPLES} needed)"
        )
        return {"verdict": "inconclusive", "reason": f"latency_p95: {why}", "alpha": alpha}
    (clo, cest, chi), (tlo, test, thi) = latency_ranks(canary, c.size), latency_ranks(canary, t.size)
    pc, pt = c.at(cest), t.at(test)
    if pc <= 0:
        return {
            "verdict": "inconclusive",
            "reason": "latency_p95: p95 is 0 in control; no ratio",
            "alpha": alpha,
        }
    with np.errstate(divide="ignore"):
        lo = t.at(tlo) / c.at(chi) if c.at(chi) < math.inf else 0.0
        hi = t.at(thi) / c.at(clo) if c.at(clo) > 0 else math.inf
    log = lambda x: math.log(x) if x > 0 else -math.inf  # noqa: E731
    return _verdict(
        "latency_p95",
        (pc, pt),
        math.log(pt / pc) if pt > 0 else -math.inf,
        (log(lo), log(hi)),
        math.log(max_ratio),
        alpha,
        "ratio",
    )


def _log_cost_ratio(
    control: VariantStats, candidate: VariantStats
) -> tuple[tuple[float, float], float, float] | str:
    """Candidate / control mean cost per call on the log scale; delta-method variance over units."""
    if min(control.n, candidate.n) < MIN_RATIO_SAMPLES:
        return f"too few calls ({control.n} control, {candidate.n} candidate; {MIN_RATIO_SAMPLES} needed)"
    mc, vc = control.cost.estimate("positive")
    mt, vt = candidate.cost.estimate("positive")
    if mc <= 0 or mt <= 0:
        if mc <= 0 and mt <= 0:
            return (0.0, 0.0), 0.0, 0.0
        # One free arm: the ratio is 0 or infinite, exactly (variance 0), so the verdict is immediate.
        return (mc, mt), (math.inf if mc <= 0 else -math.inf), 0.0
    return (mc, mt), math.log(mt / mc), vc / (mc * mc) + vt / (mt * mt)
