"""Gate decisions: the eval gate (PRODUCT §6) and the canary stage gate (PRODUCT §8).

Pure functions of summaries, counts and samples plus the policy: no I/O, no clocks, no global randomness
(the one bootstrap uses a fixed-seed numpy Generator), so workflows call them directly and replays agree.
Each decision comes with human sentences carrying the numbers, for the report, Slack and the audit log.

Stage gate, in order:

1. ``percent >= 100``: there is no concurrent control left to compare with; the stage passes once
   ``min_hours`` have elapsed.
2. Sample-ratio mismatch: an always-valid test (alpha ``SRM_ALPHA``) of the observed candidate share against
   the configured percent -> ``srm``: the split is broken, so no comparison is trustworthy. Distinct units are
   compared when the store supplies them (calls of one unit are correlated), else calls.
3. Every configured metric gets an always-valid interval (pairshift.sequential) for "how much worse is the
   candidate": error rate and invalid-output rate increase, mean score decrease, log latency-p95 ratio, log
   cost-per-call ratio. ``canary.alpha`` is split equally over the configured metrics (Bonferroni), so the
   chance of *any* false rollback over the stage stays <= alpha however often the stage is checked.
4. A metric **breaches** when its interval lies wholly above the allowed margin (``max_increase``,
   ``max_decrease``, ``log(max_ratio)``): a rollback means "clearly worse than the policy allows", and the
   false-rollback guarantee holds for every candidate whose true degradation is within the margin, not only
   for an identical one. (A margin of 0 turns this into "clearly worse than control at all".) Any breach
   -> ``breach``, at any check, with however few samples: the interval is valid at every sample size.
5. Otherwise the stage **passes** only when every measured metric's interval lies wholly at or below its
   margin (non-inferior), the smaller arm has ``min_samples``, and ``elapsed_hours >= min_hours``; anything
   short of that is ``inconclusive`` (keep soaking; at ``max_hours`` the workflow asks a human).

The invalid-output rate has no field of its own in the policy; it is held to ``error_rate.max_increase``.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from pairshift import sequential as seq
from pairshift.contracts.evals import ArmSummary, Effect
from pairshift.contracts.gates import GateDecision, StageCheck
from pairshift.policy import CanaryPolicy, EvalPolicy

SRM_ALPHA = 0.001  # a broken split must be unmistakable before a stage is stopped for it
MIN_SAMPLES_FLOOR = 100  # never pass a stage on fewer calls per arm than this, whatever the power maths says
MIN_RATIO_SAMPLES = 50  # a p95 or a mean cost from fewer calls is noise
UNREACHABLE_SAMPLES = 10**12  # min_samples when non-inferiority can never be shown (a margin of 0)
BOOTSTRAP_RESAMPLES = 500
BOOTSTRAP_SEED = 20_241_101
MAX_CASES_NAMED = 5


# ---------------------------------------------------------------- eval gate


def _pp(x: float, digits: int = 1) -> str:
    """A difference of rates in percentage points, signed."""
    return f"{round(x * 100, digits) + 0.0:+.{digits}f} points"  # + 0.0 turns -0.0 into 0.0


def eval_gate(
    baseline: ArmSummary,
    joint: ArmSummary,
    joint_effect: Effect,
    newly_failing_blocking: dict[str, list[str]],
    policy: EvalPolicy,
) -> GateDecision:
    """Pass / fail / inconclusive for joint vs baseline (non-inferiority, blocking, cost, latency)."""
    verdicts: list[tuple[str, str]] = [_noninferiority(joint_effect, policy)]
    for kind in policy.blocking:
        cases = newly_failing_blocking.get(kind, [])
        if cases:
            named = ", ".join(cases[:MAX_CASES_NAMED])
            more = f" and {len(cases) - MAX_CASES_NAMED} more" if len(cases) > MAX_CASES_NAMED else ""
            verdicts.append(
                ("fail", f"blocking assertion {kind} newly fails on {len(cases)} case(s): {named}{more}")
            )
    verdicts.append(
        _ratio("cost per case", baseline.cost_per_case, joint.cost_per_case, policy.max_cost_ratio, "$")
    )
    verdicts.append(
        _ratio(
            "latency p95", baseline.latency_p95_ms, joint.latency_p95_ms, policy.max_latency_p95_ratio, "ms"
        )
    )
    decisions = {v for v, _ in verdicts}
    decision: Literal["pass", "fail", "inconclusive"] = (
        "fail" if "fail" in decisions else "inconclusive" if "inconclusive" in decisions else "pass"
    )
    return GateDecision(decision=decision, reasons=[reason for _, reason in verdicts])


def _noninferiority(effect: Effect, policy: EvalPolicy) -> tuple[str, str]:
    lo, hi = effect.ci
    margin = -policy.max_regression
    level = f"{policy.confidence:.0%} CI [{_pp(lo)}, {_pp(hi)}]"
    said = f"joint - baseline pass rate {_pp(effect.estimate)} ({level})"
    if effect.estimate < margin or hi < margin:
        return "fail", f"{said} is worse than the allowed {_pp(margin)}"
    if lo >= margin:
        return "pass", f"{said}: non-inferior, the lower bound is within the allowed {_pp(margin)}"
    return (
        "inconclusive",
        f"{said}: the lower bound is below the allowed {_pp(margin)}; more cases or epochs needed",
    )


def _ratio(what: str, base: float, new: float, max_ratio: float, unit: str) -> tuple[str, str]:
    if base <= 0:
        if new <= 0:
            return "pass", f"{what}: 0 in both arms"
        return "fail", f"{what}: {new:.4g} {unit} in joint against 0 in baseline exceeds any ratio"
    ratio = new / base
    said = f"{what} ratio {ratio:.2f} (joint {new:.4g} {unit} / baseline {base:.4g} {unit})"
    if ratio > max_ratio:
        return "fail", f"{said} exceeds the allowed {max_ratio:g}"
    return "pass", f"{said} is within the allowed {max_ratio:g}"


# ---------------------------------------------------------------- stage gate


class VariantStats(BaseModel):
    """Aggregates of one variant's observations in the current stage so far (the store computes them)."""

    n: int = Field(..., ge=0, description="Calls observed.")
    errors: int = Field(0, ge=0)
    invalid: int = Field(0, ge=0, description="Calls whose output was invalid.")
    score_n: int = Field(0, ge=0, description="Calls carrying a 0..1 score.")
    score_sum: float = 0.0
    score_sumsq: float = 0.0
    latency_ms: list[float] = Field(
        default_factory=list, description="A bounded sample (<= ~2000, reservoir)."
    )
    cost_sum: float = 0.0
    cost_sumsq: float | None = Field(None, description="Sum of squared per-call costs; needed to gate cost.")
    units: int | None = Field(
        None, ge=0, description="Distinct unit keys; preferred to calls for the SRM check."
    )


def gated_metrics(canary: CanaryPolicy) -> list[str]:
    """The metric names the stage gate judges under this policy (alpha is split over them)."""
    m = canary.metrics
    names = ["error_rate", "invalid_rate"] if m.error_rate else []
    names += [name for name in ("score", "latency_p95", "cost_per_call") if getattr(m, name) is not None]
    return names


def metric_alpha(canary: CanaryPolicy) -> float:
    """The share of ``canary.alpha`` each gated metric's interval gets (Bonferroni)."""
    return canary.alpha / max(1, len(gated_metrics(canary)))


def mixture_tau(margin: float) -> float:
    """Mixture scale of a metric's sequence: its margin (the test is quickest for effects of that size)."""
    return abs(margin) or 0.01


def srm_tau(share: float) -> float:
    """Mixture scale of the SRM sequence: tuned to a 10% relative mismatch of the smaller arm's share."""
    return 0.1 * min(share, 1.0 - share)


def required_samples(canary: CanaryPolicy, baseline_error_rate: float = 0.01, percent: float = 50.0) -> int:
    """``min_samples: auto``: calls in the smaller arm for a candidate as good as control to pass (``power``).

    Uses the first gated binary metric (error rate at ``baseline_error_rate``; else score, variance <= 1/4),
    the same mixture boundary and per-metric alpha as :func:`stage_gate`, and the allocation of ``percent``.
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
    v_needed = seq.required_variance(margin, mixture_tau(margin), metric_alpha(canary), canary.power)
    if v_needed <= 0:
        return UNREACHABLE_SAMPLES
    total = per_call_var * (1 / q + 1 / (1 - q)) / v_needed
    return max(MIN_SAMPLES_FLOOR, math.ceil(total * min(q, 1 - q)))


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
    if percent >= 100:
        done = elapsed_hours >= min_hours
        reason = "no concurrent control at 100%: nothing to compare; the stage holds for min_hours only"
        return StageCheck(
            decision="pass" if done else "inconclusive", reasons=[reason], min_samples=0, samples=samples
        )
    srm = _srm(control, candidate, percent)
    if srm is not None:
        return StageCheck(decision="srm", reasons=[srm], min_samples=0, samples=samples)
    if canary.min_samples == "auto":
        ctrl_rate = (control.errors + 1) / (control.n + 2)
        min_samples = required_samples(canary, ctrl_rate, percent)
    else:
        min_samples = canary.min_samples
    alpha = metric_alpha(canary)
    metrics = {name: _judge_metric(name, control, candidate, canary, alpha) for name in gated_metrics(canary)}
    verdicts = {name: m["verdict"] for name, m in metrics.items()}
    reasons = [m.pop("reason") for m in metrics.values()]
    if "breach" in verdicts.values():
        decision: Literal["breach", "pass", "inconclusive"] = "breach"
    else:
        decision = "pass"
        smaller = min(control.n, candidate.n)
        if smaller < min_samples:
            decision = "inconclusive"
            reasons.append(f"too few samples: {smaller:,} of the {min_samples:,} needed per arm")
        if elapsed_hours < min_hours:
            decision = "inconclusive"
            reasons.append(f"the stage has run {elapsed_hours:.2f} of its {min_hours:g} minimum hours")
        if "inconclusive" in verdicts.values():
            decision = "inconclusive"
    return StageCheck(
        decision=decision, reasons=reasons, metrics=metrics, min_samples=min_samples, samples=samples
    )


def _srm(control: VariantStats, candidate: VariantStats, percent: float) -> str | None:
    use_units = control.units is not None and candidate.units is not None
    nc = control.units if use_units and control.units is not None else control.n
    nt = candidate.units if use_units and candidate.units is not None else candidate.n
    share = percent / 100.0
    diff, lo, hi = seq.share_mismatch(nc, nt, share, srm_tau(share), SRM_ALPHA)
    if float(lo) > 0 or float(hi) < 0:
        what = "units" if use_units else "calls"
        observed = nt / (nc + nt)
        return (
            f"sample ratio mismatch: candidate has {observed:.2%} of {nc + nt:,} {what}, configured "
            f"{percent:g}% "
            f"(always-valid test at alpha {SRM_ALPHA}); the split is broken, so the comparison is not "
            "trustworthy"
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
        xc, xt = getattr(control, attr), getattr(candidate, attr)
        est, var = seq.proportion_difference(xc, control.n, xt, candidate.n)
        margin = m.error_rate.max_increase
        values = (xc / control.n if control.n else 0.0, xt / candidate.n if candidate.n else 0.0)
        return _verdict(name, values, float(est), float(var), margin, alpha, "increase")
    if name == "score":
        assert m.score is not None
        if control.score_n == 0 or candidate.score_n == 0:
            return {"verdict": "not_measured", "reason": "score: not measured (an arm has no scored calls)"}
        mc, vc = seq.bounded_mean(control.score_sum, control.score_sumsq, control.score_n)
        mt, vt = seq.bounded_mean(candidate.score_sum, candidate.score_sumsq, candidate.score_n)
        return _verdict(
            name,
            (float(mc), float(mt)),
            float(mc - mt),
            float(vc + vt),
            m.score.max_decrease,
            alpha,
            "decrease",
        )
    gate = m.latency_p95 if name == "latency_p95" else m.cost_per_call
    assert gate is not None
    measured = (
        _log_p95_ratio(control, candidate) if name == "latency_p95" else _log_cost_ratio(control, candidate)
    )
    if isinstance(measured, str):
        return {"verdict": "inconclusive", "reason": f"{name}: {measured}"}
    values, est, var = measured
    return _verdict(name, values, est, var, math.log(gate.max_ratio), alpha, "ratio")


def _verdict(
    name: str, values: tuple[float, float], est: float, var: float, margin: float, alpha: float, kind: str
) -> dict[str, Any]:
    lo, hi = (float(b) for b in seq.confidence_sequence(est, var, mixture_tau(margin), alpha))
    verdict = "breach" if lo > margin else "ok" if hi <= margin else "inconclusive"
    if kind == "ratio":
        shown = (math.exp(est), (math.exp(lo), math.exp(hi)), math.exp(margin))
        low, high = shown[1]
        said = f"ratio {shown[0]:.3f}, always-valid bound [{low:.3f}, {high:.3f}], max {shown[2]:.3f}"
    else:
        shown = (est, (lo, hi), margin)
        said = (
            f"{kind} {_pp(est, 2)}, always-valid bound [{_pp(lo, 2)}, {_pp(hi, 2)}], max {kind} "
            f"{_pp(margin, 2)}"
            if kind == "increase"
            else f"{kind} {est:+.4f}, always-valid bound [{lo:+.4f}, {hi:+.4f}], max {kind} {margin:.4f}"
        )
    sentence = {
        "breach": "candidate clearly worse than allowed",
        "ok": "non-inferior",
        "inconclusive": "not decided yet",
    }[verdict]
    reason = (
        f"{name}: {sentence}: control {values[0]:.4g}, candidate {values[1]:.4g}, {said} ({1 - alpha:.1%})"
    )
    key = "ratio" if kind == "ratio" else "difference"
    return {
        "control": values[0],
        "candidate": values[1],
        key: shown[0],
        "bound": list(shown[1]),
        "limit": shown[2],
        "verdict": verdict,
        "reason": reason,
    }


def _log_p95_ratio(
    control: VariantStats, candidate: VariantStats
) -> tuple[tuple[float, float], float, float] | str:
    """Candidate / control latency p95 on the log scale, its variance from a seeded paired-arm bootstrap."""
    c = np.asarray(control.latency_ms, dtype=float)
    t = np.asarray(candidate.latency_ms, dtype=float)
    if min(c.size, t.size) < MIN_RATIO_SAMPLES:
        return f"too few latency samples ({c.size} control, {t.size} candidate; {MIN_RATIO_SAMPLES} needed)"
    pc, pt = float(np.quantile(c, 0.95)), float(np.quantile(t, 0.95))
    if pc <= 0 or pt <= 0:
        return "latency p95 is 0 in an arm; no ratio"
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    bc = np.quantile(c[rng.integers(0, c.size, (BOOTSTRAP_RESAMPLES, c.size))], 0.95, axis=1)
    bt = np.quantile(t[rng.integers(0, t.size, (BOOTSTRAP_RESAMPLES, t.size))], 0.95, axis=1)
    with np.errstate(divide="ignore"):
        log_ratios = np.log(bt) - np.log(bc)
    var = float(np.var(log_ratios[np.isfinite(log_ratios)], ddof=1))
    return (pc, pt), math.log(pt / pc), var


def _log_cost_ratio(
    control: VariantStats, candidate: VariantStats
) -> tuple[tuple[float, float], float, float] | str:
    """Candidate / control mean cost per call, log scale; delta-method variance from sums of squares."""
    if min(control.n, candidate.n) < MIN_RATIO_SAMPLES:
        return f"too few calls ({control.n} control, {candidate.n} candidate; {MIN_RATIO_SAMPLES} needed)"
    if control.cost_sumsq is None or candidate.cost_sumsq is None:
        return "cost_sumsq not supplied by the store; cost cannot be gated"
    mc, mt = control.cost_sum / control.n, candidate.cost_sum / candidate.n
    if mc <= 0 or mt <= 0:
        if mc <= 0 and mt <= 0:
            return (0.0, 0.0), 0.0, 0.0
        # One free arm: the ratio is 0 or infinite, exactly (variance 0), so the verdict is immediate.
        return (mc, mt), (math.inf if mc <= 0 else -math.inf), 0.0

    def rel_var(s: VariantStats, mean: float) -> float:
        assert s.cost_sumsq is not None
        return max(s.cost_sumsq / s.n - mean * mean, 0.0) / (s.n * mean * mean)

    return (mc, mt), math.log(mt / mc), rel_var(control, mc) + rel_var(candidate, mt)
