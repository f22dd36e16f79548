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

from array import array
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
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


# ---------------------------------------------------------------- an arm's outcomes, folded


class ArmOutcomes:
    """One arm's outcomes folded into per-case numeric arrays: what every statistic here reads.

    A run's calls arrive a page at a time (:func:`pairshift.evals.results.load_arm`) and are folded by
    :class:`OutcomeFold`; no per-call object is kept. Memory is O(cases) numbers (case id, calls, passes,
    score sum, assertion-type failures, tags as case positions) plus three numbers per call that answered
    (latency, cost, case position: the latency p95 and the paired bootstrap need every call's value), a few
    tens of bytes per case where a list of :class:`CaseOutcome` took kilobytes per call (issue 20).

    Cases are kept in the order their first call arrived (the registry sends them sorted by case id), and a
    case's sums in the order of its calls, so every figure is the one the per-call computation gives.
    """

    def __init__(
        self,
        *,
        case_ids: np.ndarray,
        calls: np.ndarray,
        passes: np.ndarray,
        scores: np.ndarray,
        tags: dict[str, np.ndarray],
        type_fails: dict[str, tuple[np.ndarray, np.ndarray]],
        ok_case: np.ndarray,
        ok_latency: np.ndarray,
        ok_cost: np.ndarray,
        n_calls: int,
        errors: int,
        cost_usd: float,
        tokens: int,
        failed_types: dict[str, int],
        carried_types: dict[str, int],
        knows_carried: bool,
    ) -> None:
        self.case_ids, self.calls, self.passes, self.scores = case_ids, calls, passes, scores
        self.tags, self.type_fails = tags, type_fails
        self.ok_case, self.ok_latency, self.ok_cost = ok_case, ok_latency, ok_cost
        self.n_calls, self.errors, self.cost_usd, self.tokens = n_calls, errors, cost_usd, tokens
        self.failed_types, self.carried_types, self.knows_carried = failed_types, carried_types, knows_carried

    def __len__(self) -> int:
        return self.n_calls

    @property
    def pass_rates(self) -> np.ndarray:
        """Each case's mean pass over its epochs (case order)."""
        return self.passes / self.calls

    @property
    def mean_scores(self) -> np.ndarray:
        return self.scores / self.calls

    def fail_rates(self, kind: str) -> np.ndarray:
        """Each case's share of calls in which assertion type ``kind`` failed."""
        fails = np.zeros(self.case_ids.size)
        positions, counts = self.type_fails.get(kind, (np.empty(0, np.int64), np.empty(0, np.int64)))
        fails[positions] = counts
        return fails / self.calls

    def nbytes(self) -> int:
        """Bytes held by the arrays (for the memory bench)."""
        arrays = [self.case_ids, self.calls, self.passes, self.scores]
        arrays += [self.ok_case, self.ok_latency, self.ok_cost]
        arrays += list(self.tags.values()) + [a for pair in self.type_fails.values() for a in pair]
        return sum(a.nbytes for a in arrays)

    @classmethod
    def of(cls, outcomes: Outcomes) -> ArmOutcomes:
        """``outcomes`` folded (already folded: as they are). Calls are grouped by case, first-seen order."""
        if isinstance(outcomes, ArmOutcomes):
            return outcomes
        groups: dict[str, list[CaseOutcome]] = {}
        for o in outcomes:
            groups.setdefault(o.case_id, []).append(o)
        fold = OutcomeFold()
        for case_calls in groups.values():
            for o in case_calls:
                fold.add(
                    o.case_id,
                    passed=o.passed,
                    score=o.score,
                    tags=o.tags,
                    latency_ms=o.latency_ms,
                    cost_usd=o.cost_usd,
                    tokens=o.input_tokens + o.output_tokens,
                    error=o.error,
                    failed_types=o.assertion_types_failed,
                    types=o.assertion_types,
                )
        arm = fold.result()
        arm.cost_usd = float(sum(o.cost_usd for o in outcomes))  # summed in the calls' own order
        return arm


Outcomes = Sequence[CaseOutcome] | ArmOutcomes


class OutcomeFold:
    """Folds calls into an :class:`ArmOutcomes`, one call at a time; a case's calls must come together."""

    _FLUSH = 4_096  # case ids kept as Python strings before they are packed into a numpy array

    def __init__(self) -> None:
        self._ids: list[np.ndarray] = []
        self._pending: list[str] = []
        self._calls, self._passes, self._scores = array("q"), array("d"), array("d")
        self._tags: dict[str, array[int]] = {}
        self._fails: dict[str, tuple[array[int], array[int]]] = {}
        self._ok_case, self._ok_latency, self._ok_cost = array("q"), array("d"), array("d")
        self._n_calls = self._errors = self._tokens = 0
        self._cost = 0.0
        self._failed: dict[str, int] = defaultdict(int)
        self._carried: dict[str, int] = defaultdict(int)
        self._knows_carried = False
        self._case: str | None = None
        self._case_tags: set[str] = set()
        self._case_fails: dict[str, int] = defaultdict(int)

    def add(
        self,
        case_id: str,
        *,
        passed: bool,
        score: float,
        tags: Iterable[str],
        latency_ms: float,
        cost_usd: float,
        tokens: int,
        error: bool,
        failed_types: Sequence[str],
        types: Sequence[str],
    ) -> None:
        if case_id != self._case:
            self._close_case()
            self._case = case_id
            self._pending.append(case_id)
            self._calls.append(0)
            self._passes.append(0.0)
            self._scores.append(0.0)
            if len(self._pending) >= self._FLUSH:
                self._ids.append(np.array(self._pending))
                self._pending = []
        pos = len(self._calls) - 1
        self._calls[pos] += 1
        self._passes[pos] += float(passed)
        self._scores[pos] += score
        self._case_tags.update(tags)
        self._n_calls += 1
        self._cost += cost_usd
        self._tokens += tokens
        if error:
            self._errors += 1
        else:
            self._ok_case.append(pos)
            self._ok_latency.append(latency_ms)
            self._ok_cost.append(cost_usd)
        failed = set(failed_types)
        for t in failed:
            self._failed[t] += 1
            self._case_fails[t] += 1
        for t in set(types) | failed:
            self._carried[t] += 1
        self._knows_carried = self._knows_carried or bool(types)

    def _close_case(self) -> None:
        if self._case is None:
            return
        pos = len(self._calls) - 1
        for tag in self._case_tags:
            self._tags.setdefault(tag, array("q")).append(pos)
        for t, n in self._case_fails.items():
            positions, counts = self._fails.setdefault(t, (array("q"), array("q")))
            positions.append(pos)
            counts.append(n)
        self._case_tags = set()
        self._case_fails = defaultdict(int)

    def result(self) -> ArmOutcomes:
        self._close_case()
        self._case = None
        ids = self._ids + ([np.array(self._pending)] if self._pending else [])
        return ArmOutcomes(
            case_ids=np.concatenate(ids) if ids else np.empty(0, dtype=str),
            calls=np.frombuffer(self._calls, dtype=np.int64).copy(),
            passes=np.frombuffer(self._passes, dtype=float).copy(),
            scores=np.frombuffer(self._scores, dtype=float).copy(),
            tags={t: np.frombuffer(p, dtype=np.int64).copy() for t, p in self._tags.items()},
            type_fails={
                t: (np.frombuffer(p, dtype=np.int64).copy(), np.frombuffer(n, dtype=np.int64).copy())
                for t, (p, n) in self._fails.items()
            },
            ok_case=np.frombuffer(self._ok_case, dtype=np.int64).copy(),
            ok_latency=np.frombuffer(self._ok_latency, dtype=float).copy(),
            ok_cost=np.frombuffer(self._ok_cost, dtype=float).copy(),
            n_calls=self._n_calls,
            errors=self._errors,
            cost_usd=self._cost,
            tokens=self._tokens,
            failed_types=dict(self._failed),
            carried_types=dict(self._carried),
            knows_carried=self._knows_carried,
        )


# ---------------------------------------------------------------- per-case reduction


def _majority(rates: np.ndarray) -> np.ndarray:
    """Strict majority of epochs passed; ties fail (see the module docstring)."""
    return rates > 0.5


def _mean_interval(
    values: np.ndarray, confidence: float, lo: float, hi: float
) -> tuple[float, tuple[float, float], float]:
    """Mean, score interval within [lo, hi] and two-sided p-value against 0 (module docstring)."""
    return score_interval(values, confidence, lo, hi)


def sorted_cases(arm: ArmOutcomes) -> tuple[np.ndarray, np.ndarray]:
    """The arm's case ids sorted (by code point, as ``sorted`` sorts str) and the positions giving them."""
    order = np.argsort(arm.case_ids, kind="stable")
    return arm.case_ids[order], order


def _unpaired(ids: Sequence[np.ndarray]) -> list[str]:
    """Case ids in some of the arms but not all, sorted."""
    union, common = ids[0], ids[0]
    for other in ids[1:]:
        union, common = np.union1d(union, other), np.intersect1d(common, other)
    return [str(c) for c in np.setdiff1d(union, common)]


# ---------------------------------------------------------------- one arm


def summarize_arm(outcomes: Outcomes, confidence: float = 0.95) -> ArmSummary:
    """Pass rate, mean score, latency, cost and breakdowns of one arm (module docstring: conventions)."""
    arm = ArmOutcomes.of(outcomes)
    if not arm.n_calls:
        raise ValueError("cannot summarize an arm with no outcomes")
    pass_by_case = arm.pass_rates
    pass_rate, ci, _ = _mean_interval(pass_by_case, confidence, 0.0, 1.0)
    mean_score, score_ci, _ = _mean_interval(arm.mean_scores, confidence, 0.0, 1.0)
    ok_latency = arm.ok_latency
    p50, p95 = np.percentile(ok_latency, [50, 95]) if ok_latency.size else (0.0, 0.0)
    # An errored call is billed nothing here: counting it at 0 would make the arm with more errors look
    # cheaper, so cost per call is over the calls that answered.
    answered = arm.n_calls - arm.errors
    return ArmSummary(
        n_cases=int(pass_by_case.size),
        epochs=int(arm.calls.max()),
        calls=arm.n_calls,
        errors=arm.errors,
        pass_rate=pass_rate,
        ci=ci,
        mean_score=mean_score,
        score_ci=score_ci,
        latency_p50_ms=float(p50),
        latency_p95_ms=float(p95),
        cost_usd=arm.cost_usd,
        cost_per_case=arm.cost_usd / answered if answered else 0.0,
        tokens_per_case=float(arm.tokens) / arm.n_calls,
        by_tag=_by_tag(arm, confidence),
        by_assertion_type=_by_assertion_type(arm),
    )


def _by_tag(arm: ArmOutcomes, confidence: float) -> dict[str, TagStat]:
    result = {}
    rates = arm.pass_rates
    for tag in sorted(arm.tags):
        per_case = rates[arm.tags[tag]]
        rate, ci, _ = _mean_interval(per_case, confidence, 0.0, 1.0)
        result[tag] = TagStat(pass_rate=rate, ci=ci, n=len(per_case))
    return result


def _by_assertion_type(arm: ArmOutcomes) -> dict[str, AssertionTypeStat]:
    failed, carried = arm.failed_types, arm.carried_types
    # Without `assertion_types` the calls carrying a type are unknown; all calls is then the denominator.
    knows_carried = arm.knows_carried
    return {
        t: AssertionTypeStat(
            fail_rate=failed.get(t, 0) / (carried[t] if knows_carried else arm.n_calls), n=failed.get(t, 0)
        )
        for t in sorted(set(failed) | (set(carried) if knows_carried else set()))
    }


# ---------------------------------------------------------------- between arms


def paired_rates(
    arms: Sequence[Outcomes], value: Literal["pass", "score"] = "pass", what: str | None = None
) -> tuple[np.ndarray, list[np.ndarray]]:
    """The sorted case ids the arms share and each arm's per-case pass rate (or score) in that order.

    Refused (ValueError) when the arms do not hold the same cases."""
    folded = [ArmOutcomes.of(a) for a in arms]
    keyed = [sorted_cases(a) for a in folded]
    ids = [k[0] for k in keyed]
    if any(i.size != ids[0].size or not np.array_equal(i, ids[0]) for i in ids[1:]):
        only = _unpaired(ids)
        if what is not None:
            raise ValueError(f"arms {what} are not paired: they do not hold the same cases")
        raise ValueError(f"arms are not paired: {len(only)} case(s) in one arm only, e.g. {only[0]!r}")
    values = [
        (a.pass_rates if value == "pass" else a.mean_scores)[order]
        for a, (_, order) in zip(folded, keyed, strict=True)
    ]
    return ids[0], values


def paired_effect(
    a: Outcomes,
    b: Outcomes,
    confidence: float = 0.95,
    metric: Literal["pass", "score"] = "pass",
) -> Effect:
    """``b - a`` on the per-case pass rate (or score), paired by case, with the score interval on [-1, 1]."""
    _, (pa, pb) = paired_rates([a, b], metric)
    est, ci, p = _mean_interval(pb - pa, confidence, -1.0, 1.0)
    return Effect(estimate=est, ci=ci, p_value=p)


def mcnemar(a: Outcomes, b: Outcomes) -> McNemarResult:
    """Exact McNemar test on per-case majority verdicts (binomial test of the discordant cases at 1/2)."""
    _, (ra, rb) = paired_rates([a, b])
    va, vb = _majority(ra), _majority(rb)
    to_fail = int(np.sum(va & ~vb))
    to_pass = int(np.sum(vb & ~va))
    n = to_fail + to_pass
    p = 1.0 if n == 0 else float(sps.binomtest(to_fail, n, 0.5).pvalue)
    return McNemarResult(b_to_fail=to_fail, b_to_pass=to_pass, p_value=p)


def common_rates(
    a: Outcomes, b: Outcomes, rates: Callable[[ArmOutcomes], np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The sorted case ids both arms hold and each arm's per-case values there (pass rates by default)."""
    fa, fb = ArmOutcomes.of(a), ArmOutcomes.of(b)
    common, ia, ib = np.intersect1d(fa.case_ids, fb.case_ids, assume_unique=True, return_indices=True)
    get = rates or (lambda arm: arm.pass_rates)
    return common, get(fa)[ia], get(fb)[ib]


def flipped(a: Outcomes, b: Outcomes, from_arm: str, to_arm: str) -> list[Flip]:
    """Cases whose majority verdict differs between the arms, sorted by case id."""
    cases, ra, rb = common_rates(a, b)
    va, vb = _majority(ra), _majority(rb)
    flips = []
    for i in np.flatnonzero(va != vb):
        direction: Literal["regressed", "improved"] = "regressed" if va[i] else "improved"
        flips.append(Flip(case=str(cases[i]), from_arm=from_arm, to_arm=to_arm, direction=direction))
    return flips


def _contrast(arms: Mapping[str, Outcomes], weights: Mapping[str, float], confidence: float) -> Effect:
    """A per-case linear contrast of arm pass rates (weights sum to 0), with its score interval."""
    _, rates = paired_rates([arms[name] for name in weights], what=str(sorted(weights)))
    values = np.zeros(rates[0].size)
    for w, r in zip(weights.values(), rates, strict=True):
        values = values + w * r
    bound = float(sum(abs(w) for w in weights.values())) / 2
    est, ci, p = _mean_interval(values, confidence, -bound, bound)
    return Effect(estimate=est, ci=ci, p_value=p)


def factorial(
    baseline: Outcomes,
    prompt_only: Outcomes | None = None,
    model_only: Outcomes | None = None,
    joint: Outcomes | None = None,
    confidence: float = 0.95,
) -> dict[str, Effect]:
    """The 2x2 attribution on pass rate: ``prompt``, ``model``, ``interaction`` and ``joint`` effects.

    prompt = P1M0 - P0M0, model = P0M1 - P0M0, interaction = P1M1 - P1M0 - P0M1 + P0M0, joint = P1M1 - P0M0,
    each a per-case contrast (module docstring). Only what the arms define is returned, never a made-up 0: a
    model-only migration (baseline + model_only) gives ``model`` and ``joint`` (= model, since the model-only
    arm *is* the joint pair); a prompt-only one gives ``prompt`` and ``joint``; ``interaction`` needs all
    four.
    """
    arms: dict[str, Outcomes] = {"baseline": ArmOutcomes.of(baseline)}
    for name, outcomes in (("prompt_only", prompt_only), ("model_only", model_only), ("joint", joint)):
        if outcomes:
            arms[name] = ArmOutcomes.of(outcomes)
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
