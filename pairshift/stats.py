"""Eval statistics: per-arm summaries, paired comparisons and the 2x2 factorial attribution (PRODUCT §6).

Pure functions of per-call outcomes: no I/O, no clocks, no randomness, so workflows may call them.

Conventions, chosen once and used everywhere in this module:

- **The case is the unit.** With epochs > 1 the calls of one case are not independent (Miller 2024,
  "Adding Error Bars to Evals", arXiv 2411.00640), so every statistic first reduces a case to its mean over
  epochs; rates are means of those per-case means (each case weighs the same, even if an epoch is missing).
  The standard error is ``sd(per-case values, ddof=1) / sqrt(n_cases)``: the cluster-robust standard error
  with clusters = cases and the usual ``n/(n-1)`` small-sample factor. With one epoch it is the ordinary SE.
- **Intervals** are score intervals on the per-case values (pairshift.intervals): the set of means a score
  test with the restricted maximum-likelihood variance does not reject, two-sided at ``confidence`` (each end
  errs with probability (1 - confidence) / 2). With one epoch a pass rate's interval is Wilson's and a paired
  difference's is Tango's; with more epochs the same construction runs on the per-case means. They need no
  fallback when every case agrees (20/20 passing -> [0.84, 1]) and they move monotonically with the data: one
  improved case among 100 identical ones raises the lower end (a t interval with a zero-SD fallback did not).
- **Paired effects** (``b - a``) are means of per-case contrasts of per-case pass rates, over the cases both
  arms share, with the score interval on the contrast's range; their p-value is the two-sided score test of
  "no difference", so "CI excludes 0" and "p < 1 - confidence" agree. The exact McNemar test is reported
  separately by :func:`mcnemar`.
- **Per-case verdicts** (McNemar, flipped cases): a case passes an arm when it passed in a strict majority
  of its epochs; a tie (e.g. 1 of 2) counts as a fail, because a case that passes only half the time is
  not a case users can rely on.
- An errored call is a failed call (the caller sets ``passed=False``). **Latency** is the latency of calls
  that did not error, in evals and in the canary alike: an error's latency (an instant refusal or a timeout)
  says nothing about the pair's speed, and the error is counted as an error instead.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field
from scipy import stats as sps

from pairshift.contracts.evals import ArmName, ArmSummary, AssertionTypeStat, Effect, Flip, TagStat
from pairshift.intervals import score_interval

ARMS: tuple[ArmName, ...] = ("baseline", "prompt_only", "model_only", "joint")


class CaseOutcome(BaseModel):
    """One call of one case in one epoch of an arm, as the eval activities record it."""

    case_id: str
    epoch: int
    passed: bool
    score: float = Field(..., description="Weighted mean of the assertion scores, 0..1.")
    tags: list[str] = Field(default_factory=list)
    assertion_types_failed: list[str] = Field(default_factory=list)
    assertion_types: list[str] = Field(
        default_factory=list,
        description="Assertion types the case carries (optional): the denominator of by_assertion_type fail "
        "rates.",
    )
    latency_ms: float = 0.0
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    error: bool = False


class McNemarResult(BaseModel):
    b_to_fail: int = Field(..., description="Cases passing in a and failing in b.")
    b_to_pass: int = Field(..., description="Cases failing in a and passing in b.")
    p_value: float = Field(..., description="Exact two-sided binomial test on the discordant cases.")


# ---------------------------------------------------------------- per-case reduction


def _per_case(outcomes: Iterable[CaseOutcome], value: Literal["pass", "score"]) -> dict[str, float]:
    """Mean over epochs of each case's pass (0/1) or score."""
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for o in outcomes:
        sums[o.case_id] += float(o.passed) if value == "pass" else o.score
        counts[o.case_id] += 1
    return {case: sums[case] / counts[case] for case in sums}


def _majority_pass(outcomes: Iterable[CaseOutcome]) -> dict[str, bool]:
    """Strict majority of epochs passed; ties fail (see the module docstring)."""
    return {case: rate > 0.5 for case, rate in _per_case(outcomes, "pass").items()}


def _mean_interval(
    values: np.ndarray, confidence: float, lo: float, hi: float
) -> tuple[float, tuple[float, float], float]:
    """Mean, score interval within [lo, hi] and two-sided p-value against 0 (module docstring)."""
    return score_interval(values, confidence, lo, hi)


# ---------------------------------------------------------------- one arm


def summarize_arm(outcomes: Sequence[CaseOutcome], confidence: float = 0.95) -> ArmSummary:
    """Pass rate, mean score, latency, cost and breakdowns of one arm (module docstring: conventions)."""
    if not outcomes:
        raise ValueError("cannot summarize an arm with no outcomes")
    pass_by_case = _per_case(outcomes, "pass")
    score_by_case = _per_case(outcomes, "score")
    pass_rate, ci, _ = _mean_interval(np.fromiter(pass_by_case.values(), float), confidence, 0.0, 1.0)
    mean_score, score_ci, _ = _mean_interval(np.fromiter(score_by_case.values(), float), confidence, 0.0, 1.0)
    ok_latency = np.array([o.latency_ms for o in outcomes if not o.error], dtype=float)
    p50, p95 = np.percentile(ok_latency, [50, 95]) if ok_latency.size else (0.0, 0.0)
    epochs_by_case: dict[str, int] = defaultdict(int)
    for o in outcomes:
        epochs_by_case[o.case_id] += 1
    cost = float(sum(o.cost_usd for o in outcomes))
    # An errored call is billed nothing here: counting it at 0 would make the arm with more errors look
    # cheaper, so cost per call is over the calls that answered.
    answered = sum(not o.error for o in outcomes)
    tokens = float(sum(o.input_tokens + o.output_tokens for o in outcomes))
    return ArmSummary(
        n_cases=len(pass_by_case),
        epochs=max(epochs_by_case.values()),
        calls=len(outcomes),
        errors=sum(o.error for o in outcomes),
        pass_rate=pass_rate,
        ci=ci,
        mean_score=mean_score,
        score_ci=score_ci,
        latency_p50_ms=float(p50),
        latency_p95_ms=float(p95),
        cost_usd=cost,
        cost_per_case=cost / answered if answered else 0.0,
        tokens_per_case=tokens / len(outcomes),
        by_tag=_by_tag(outcomes, confidence),
        by_assertion_type=_by_assertion_type(outcomes),
    )


def _by_tag(outcomes: Sequence[CaseOutcome], confidence: float) -> dict[str, TagStat]:
    tagged: dict[str, list[CaseOutcome]] = defaultdict(list)
    for o in outcomes:
        for tag in set(o.tags):
            tagged[tag].append(o)
    result = {}
    for tag in sorted(tagged):
        per_case = np.fromiter(_per_case(tagged[tag], "pass").values(), float)
        rate, ci, _ = _mean_interval(per_case, confidence, 0.0, 1.0)
        result[tag] = TagStat(pass_rate=rate, ci=ci, n=len(per_case))
    return result


def _by_assertion_type(outcomes: Sequence[CaseOutcome]) -> dict[str, AssertionTypeStat]:
    failed: dict[str, int] = defaultdict(int)
    carried: dict[str, int] = defaultdict(int)
    for o in outcomes:
        for t in set(o.assertion_types_failed):
            failed[t] += 1
        for t in set(o.assertion_types) | set(o.assertion_types_failed):
            carried[t] += 1
    # Without `assertion_types` the calls carrying a type are unknown; all calls is then the denominator.
    knows_carried = any(o.assertion_types for o in outcomes)
    return {
        t: AssertionTypeStat(
            fail_rate=failed[t] / (carried[t] if knows_carried else len(outcomes)), n=failed[t]
        )
        for t in sorted(set(failed) | (set(carried) if knows_carried else set()))
    }


# ---------------------------------------------------------------- between arms


def _paired_values(
    a: Sequence[CaseOutcome], b: Sequence[CaseOutcome], value: Literal["pass", "score"]
) -> tuple[dict[str, float], dict[str, float]]:
    pa, pb = _per_case(a, value), _per_case(b, value)
    if pa.keys() != pb.keys():
        only = sorted(pa.keys() ^ pb.keys())
        raise ValueError(f"arms are not paired: {len(only)} case(s) in one arm only, e.g. {only[0]!r}")
    return pa, pb


def paired_effect(
    a: Sequence[CaseOutcome],
    b: Sequence[CaseOutcome],
    confidence: float = 0.95,
    metric: Literal["pass", "score"] = "pass",
) -> Effect:
    """``b - a`` on the per-case pass rate (or score), paired by case, with the score interval on [-1, 1]."""
    pa, pb = _paired_values(a, b, metric)
    diffs = np.array([pb[c] - pa[c] for c in sorted(pa)], dtype=float)
    est, ci, p = _mean_interval(diffs, confidence, -1.0, 1.0)
    return Effect(estimate=est, ci=ci, p_value=p)


def mcnemar(a: Sequence[CaseOutcome], b: Sequence[CaseOutcome]) -> McNemarResult:
    """Exact McNemar test on per-case majority verdicts (binomial test of the discordant cases at 1/2)."""
    va, vb = _majority_pass(a), _majority_pass(b)
    if va.keys() != vb.keys():
        only = sorted(va.keys() ^ vb.keys())
        raise ValueError(f"arms are not paired: {len(only)} case(s) in one arm only, e.g. {only[0]!r}")
    to_fail = sum(va[c] and not vb[c] for c in va)
    to_pass = sum(vb[c] and not va[c] for c in va)
    n = to_fail + to_pass
    p = 1.0 if n == 0 else float(sps.binomtest(to_fail, n, 0.5).pvalue)
    return McNemarResult(b_to_fail=to_fail, b_to_pass=to_pass, p_value=p)


def flipped(a: Sequence[CaseOutcome], b: Sequence[CaseOutcome], from_arm: str, to_arm: str) -> list[Flip]:
    """Cases whose majority verdict differs between the arms, sorted by case id."""
    va, vb = _majority_pass(a), _majority_pass(b)
    flips = []
    for case in sorted(va.keys() & vb.keys()):
        if va[case] != vb[case]:
            direction: Literal["regressed", "improved"] = "regressed" if va[case] else "improved"
            flips.append(Flip(case=case, from_arm=from_arm, to_arm=to_arm, direction=direction))
    return flips


def _contrast(
    arms: Mapping[str, Sequence[CaseOutcome]], weights: Mapping[str, float], confidence: float
) -> Effect:
    """A per-case linear contrast of arm pass rates (weights sum to 0), with its score interval."""
    per_arm = {name: _per_case(arms[name], "pass") for name in weights}
    keys = [set(v) for v in per_arm.values()]
    if any(k != keys[0] for k in keys):
        raise ValueError(f"arms {sorted(weights)} are not paired: they do not hold the same cases")
    values = np.array(
        [sum(w * per_arm[name][case] for name, w in weights.items()) for case in sorted(keys[0])], dtype=float
    )
    bound = float(sum(abs(w) for w in weights.values())) / 2
    est, ci, p = _mean_interval(values, confidence, -bound, bound)
    return Effect(estimate=est, ci=ci, p_value=p)


def factorial(
    baseline: Sequence[CaseOutcome],
    prompt_only: Sequence[CaseOutcome] | None = None,
    model_only: Sequence[CaseOutcome] | None = None,
    joint: Sequence[CaseOutcome] | None = None,
    confidence: float = 0.95,
) -> dict[str, Effect]:
    """The 2x2 attribution on pass rate: ``prompt``, ``model``, ``interaction`` and ``joint`` effects.

    prompt = P1M0 - P0M0, model = P0M1 - P0M0, interaction = P1M1 - P1M0 - P0M1 + P0M0, joint = P1M1 - P0M0,
    each a per-case contrast (module docstring). Only what the arms define is returned, never a made-up 0: a
    model-only migration (baseline + model_only) gives ``model`` and ``joint`` (= model, since the model-only
    arm *is* the joint pair); a prompt-only one gives ``prompt`` and ``joint``; ``interaction`` needs all
    four.
    """
    arms: dict[str, Sequence[CaseOutcome]] = {"baseline": baseline}
    for name, outcomes in (("prompt_only", prompt_only), ("model_only", model_only), ("joint", joint)):
        if outcomes:
            arms[name] = outcomes
    if "joint" not in arms:
        changed = [n for n in ("prompt_only", "model_only") if n in arms]
        if len(changed) != 1:
            raise ValueError("factorial needs a joint arm, or exactly one of prompt_only / model_only")
        arms["joint"] = arms[changed[0]]
    effects = {}
    if "prompt_only" in arms:
        effects["prompt"] = _contrast(arms, {"prompt_only": 1, "baseline": -1}, confidence)
    if "model_only" in arms:
        effects["model"] = _contrast(arms, {"model_only": 1, "baseline": -1}, confidence)
    if "prompt_only" in arms and "model_only" in arms:
        weights = {"joint": 1, "prompt_only": -1, "model_only": -1, "baseline": 1}
        effects["interaction"] = _contrast(arms, weights, confidence)
    effects["joint"] = _contrast(arms, {"joint": 1, "baseline": -1}, confidence)
    return effects
