"""Table-driven tests of the eval gate and the canary stage gate (pairshift.gates)."""

from __future__ import annotations

import numpy as np
import pytest

from pairshift import sequential as seq
from pairshift.gates import (
    UNREACHABLE_SAMPLES,
    VariantStats,
    eval_gate,
    gated_metrics,
    live_stages,
    metric_alpha,
    mixture_tau,
    required_samples,
    srm_alpha,
    stage_alpha,
    stage_gate,
)
from pairshift.paired import BlockingChange, RatioEstimate
from pairshift.policy import CanaryMetrics, CanaryPolicy, ErrorRateGate, EvalPolicy
from pairshift.stats import Effect

# ---------------------------------------------------------------- eval gate


def ratio(value: float, ci: tuple[float, float] | None = None, base: float = 1.0) -> RatioEstimate:
    return RatioEstimate(
        baseline=base, joint=base * value, ratio=value, ci=ci or (value - 0.05, value + 0.05)
    )


def blocking(failing: int, passing: int, ci: tuple[float, float]) -> dict[str, BlockingChange]:
    return {
        "is-json": BlockingChange(
            newly_failing=[f"case-{i}" for i in range(failing)],
            newly_passing=[f"other-{i}" for i in range(passing)],
            rate_change=Effect(estimate=(failing - passing) / 600, ci=ci, p_value=0.5),
        )
    }


OK = Effect(estimate=0.0, ci=(-0.01, 0.01), p_value=1.0)
SAME_COST, SAME_LATENCY = ratio(1.0), ratio(1.0)

EVAL_CASES = [
    # (id, effect, blocking changes, cost ratio, latency ratio, decision, words in the reasons)
    ("non-inferior", OK, {}, SAME_COST, SAME_LATENCY, "pass", ["non-inferior", "95% interval"]),
    (
        "lower end exactly at margin",
        Effect(estimate=0.0, ci=(-0.02, 0.02), p_value=1),
        {},
        SAME_COST,
        SAME_LATENCY,
        "pass",
        [],
    ),
    (
        # Before, a point estimate below the margin failed although the interval reached well above it.
        "estimate below margin is not shown worse",
        Effect(estimate=-0.03, ci=(-0.06, 0.0), p_value=0.05),
        {},
        SAME_COST,
        SAME_LATENCY,
        "inconclusive",
        ["lower end is below the allowed -2.0 points"],
    ),
    (
        "upper end below margin",
        Effect(estimate=-0.04, ci=(-0.05, -0.021), p_value=0.01),
        {},
        SAME_COST,
        SAME_LATENCY,
        "fail",
        ["shown worse than the allowed -2.0 points"],
    ),
    (
        "wide interval",
        Effect(estimate=-0.01, ci=(-0.05, 0.03), p_value=0.6),
        {},
        SAME_COST,
        SAME_LATENCY,
        "inconclusive",
        ["lower end is below"],
    ),
    (
        "blocking rise shown",
        OK,
        blocking(7, 0, (0.004, 0.03)),
        SAME_COST,
        SAME_LATENCY,
        "fail",
        [
            "blocking assertion is-json newly fails on 7 case(s): case-0, case-1, case-2, case-3, case-4 "
            "and 2 more; newly passes on 0",
            "shown to rise more than the allowed +0.00 points",
        ],
    ),
    (
        # Before, one newly failing case failed the eval, however many cases newly passed.
        "blocking noise tolerated",
        OK,
        blocking(3, 2, (-0.004, 0.006)),
        SAME_COST,
        SAME_LATENCY,
        "pass",
        ["not shown to rise"],
    ),
    (
        "non-blocking type ignored",
        OK,
        {"contains": blocking(5, 0, (0.01, 0.02))["is-json"]},
        SAME_COST,
        SAME_LATENCY,
        "pass",
        [],
    ),
    (
        "cost ratio shown too high",
        OK,
        {},
        ratio(1.6, (1.52, 1.68)),
        SAME_LATENCY,
        "fail",
        ["cost per call ratio 1.60", "shown to exceed the allowed 1.5"],
    ),
    (
        # Before, the point estimate 1.6 failed on its own.
        "cost ratio above but not shown",
        OK,
        {},
        ratio(1.6, (1.3, 1.9)),
        SAME_LATENCY,
        "inconclusive",
        ["upper end exceeds the allowed 1.5"],
    ),
    ("cost ratio at the bound", OK, {}, ratio(1.45, (1.4, 1.5)), SAME_LATENCY, "pass", []),
    (
        "latency ratio shown too high",
        OK,
        {},
        SAME_COST,
        ratio(1.7, (1.55, 1.8)),
        "fail",
        ["latency p95 ratio 1.70"],
    ),
    ("no latency measured", OK, {}, SAME_COST, None, "inconclusive", ["latency p95: an arm has no call"]),
    (
        "fail beats inconclusive",
        Effect(estimate=-0.01, ci=(-0.05, 0.03), p_value=0.6),
        {},
        ratio(2.0, (1.8, 2.2)),
        SAME_LATENCY,
        "fail",
        [],
    ),
]


@pytest.mark.parametrize(
    ("effect", "changes", "cost", "latency", "decision", "words"),
    [c[1:] for c in EVAL_CASES],
    ids=[c[0] for c in EVAL_CASES],
)
def test_eval_gate(
    effect: Effect,
    changes: dict[str, BlockingChange],
    cost: RatioEstimate,
    latency: RatioEstimate | None,
    decision: str,
    words: list[str],
) -> None:
    result = eval_gate(effect, changes, cost, latency, EvalPolicy())
    assert result.decision == decision, result.reasons
    text = " | ".join(result.reasons)
    for word in words:
        assert word in text


def test_eval_gate_free_baseline_and_tolerance() -> None:
    free = RatioEstimate(baseline=0.0, joint=0.0, ratio=1.0, ci=(1.0, 1.0))
    assert eval_gate(OK, {}, free, SAME_LATENCY, EvalPolicy()).decision == "pass"
    paid = RatioEstimate(baseline=0.0, joint=0.01, ratio=float("inf"), ci=(float("inf"), float("inf")))
    result = eval_gate(OK, {}, paid, SAME_LATENCY, EvalPolicy())
    assert result.decision == "fail" and "against 0 in baseline" in " ".join(result.reasons)
    shown = blocking(7, 0, (0.004, 0.03))
    assert eval_gate(OK, shown, SAME_COST, SAME_LATENCY, EvalPolicy(max_new_failure_rate=0.005)).decision == (
        "pass"
    )
    assert eval_gate(OK, shown, SAME_COST, SAME_LATENCY, EvalPolicy(confidence=0.9)).reasons[0].count("90%")


def test_a_batched_arms_latency_is_not_judged() -> None:
    """A baseline answered through a provider batch API stores latency 0: against an online joint that read as
    "exceeds any ratio" and failed the eval (issue 18)."""
    batched = RatioEstimate(baseline=0.0, joint=850.0, ratio=float("inf"), ci=(float("inf"), float("inf")))
    assert eval_gate(OK, {}, SAME_COST, batched, EvalPolicy()).decision == "fail"
    why = "the baseline arm(s) ran through a provider batch API, which measures no call latency"
    result = eval_gate(OK, {}, SAME_COST, batched, EvalPolicy(), latency_unmeasured=why)
    assert result.decision == "pass" and f"latency p95: not judged: {why}" in result.reasons


# ---------------------------------------------------------------- stage gate

RNG_LAT = np.random.default_rng(7)
LAT = np.array([float(x) for x in RNG_LAT.lognormal(6.0, 0.4, 2000)])


def spread(total: int, calls: np.ndarray) -> np.ndarray:
    """``total`` events spread as evenly as possible over units (no clustering)."""
    m = calls.size
    out = np.minimum(calls, total // m + (np.arange(m) < total % m))
    return out.astype(float)


def variant(
    n: int,
    errors: int,
    *,
    latency: np.ndarray | list[float] | None = None,
    cost: float = 0.001,
    invalid: int = 0,
    scores: tuple[int, float, float] = (0, 0.0, 0.0),
    units: int | None = None,
) -> VariantStats:
    """A variant of ``n`` calls over ``units`` units (default 5 calls each), events spread evenly."""
    m = units or max(1, n // 5)
    calls = np.full(m, n // m, dtype=float)
    calls[: n % m] += 1
    score_n = spread(scores[0], calls)
    if latency is None:
        lat = np.resize(LAT, m)
    else:  # only the first len(latency) units have a call that did not error
        lat = np.full(m, np.nan)
        lat[: min(m, len(latency))] = np.asarray(latency, dtype=float)[:m]
    return VariantStats.from_units(
        calls,
        spread(errors, calls),
        invalid=spread(invalid, calls),
        score_n=score_n,
        score_sum=score_n * (scores[1] / scores[0] if scores[0] else 0.0),
        score_sumsq=scores[2],
        cost_sum=calls * cost,
        cost_sumsq=cost * cost * n * 1.01,
        first_latency=lat,
    )


def scores(n: int, mean: float) -> tuple[int, float, float]:
    return n, n * mean, n * (mean * mean + 0.01)  # per-call SD 0.1


STAGE_CASES = [
    # (id, control, candidate, percent, elapsed, min_hours, decision, words)
    (
        "breach early",
        variant(95_000, 950),
        variant(5_000, 400),
        5,
        0.5,
        6,
        "breach",
        ["error_rate: candidate clearly worse"],
    ),
    ("pass", variant(190_000, 1_900), variant(10_000, 100), 5, 7, 6, "pass", []),
    (
        "writers lost 2% of the candidate's calls",
        variant(190_000, 1_900),
        variant(10_000, 100).model_copy(update={"lost": 205}),
        5,
        7,
        6,
        "inconclusive",
        ["205 candidate call(s) (2.01%) were lost", "does not pass on evidence it lost"],
    ),
    (
        "writers lost 0.5% of control's calls: said, not blocking",
        variant(190_000, 1_900).model_copy(update={"lost": 955}),
        variant(10_000, 100),
        5,
        7,
        6,
        "pass",
        ["955 control call(s) (0.50%) were lost"],
    ),
    (
        "lost calls do not hide a breach",
        variant(95_000, 950),
        variant(5_000, 400).model_copy(update={"lost": 5_000}),
        5,
        0.5,
        6,
        "breach",
        ["error_rate: candidate clearly worse", "5,000 candidate call(s)"],
    ),
    ("worse, but within the margin", variant(760_000, 7_600), variant(40_000, 560), 5, 7, 6, "pass", []),
    (
        "too few samples",
        variant(29_700, 297),
        variant(300, 3),
        1,
        5,
        2,
        "inconclusive",
        ["too few samples: 300"],
    ),
    (
        "min hours not reached",
        variant(190_000, 1_900),
        variant(10_000, 100),
        5,
        1,
        6,
        "inconclusive",
        ["1.00 of its 6 minimum hours"],
    ),
    (
        "sample ratio mismatch",
        variant(188_000, 1_880),
        variant(12_000, 120),
        5,
        7,
        6,
        "srm",
        ["sample ratio mismatch", "units"],
    ),
    (
        "srm on units",
        variant(190_000, 1_900, units=50_000),
        variant(10_000, 100, units=3_500),
        5,
        7,
        6,
        "srm",
        ["units"],
    ),
    (
        "latency breach",
        variant(190_000, 1_900),
        variant(10_000, 100, latency=2 * LAT),
        5,
        1,
        6,
        "breach",
        ["latency_p95: candidate clearly worse"],
    ),
    (
        "cost breach",
        variant(190_000, 1_900),
        variant(10_000, 100, cost=0.002),
        5,
        1,
        6,
        "breach",
        ["cost_per_call: candidate clearly worse"],
    ),
    (
        "invalid breach",
        variant(190_000, 1_900, invalid=100),
        variant(10_000, 100, invalid=500),
        5,
        1,
        6,
        "breach",
        ["invalid_rate: candidate clearly worse"],
    ),
    (
        "score breach",
        variant(190_000, 1_900, scores=scores(50_000, 0.9)),
        variant(10_000, 100, scores=scores(3_000, 0.8)),
        5,
        7,
        6,
        "breach",
        ["score: candidate clearly worse"],
    ),
    (
        "score fine",
        variant(190_000, 1_900, scores=scores(50_000, 0.9)),
        variant(10_000, 100, scores=scores(3_000, 0.9)),
        5,
        7,
        6,
        "pass",
        [],
    ),
    (
        "small latency sample",
        variant(190_000, 1_900),
        variant(10_000, 100, latency=LAT[:10]),
        5,
        7,
        6,
        "inconclusive",
        ["too few units with a latency"],
    ),
    ("full traffic", VariantStats(), variant(10_000, 500), 100, 1, 0, "pass", ["no concurrent control"]),
]


@pytest.mark.parametrize(
    ("control", "candidate", "percent", "elapsed", "min_hours", "decision", "words"),
    [c[1:] for c in STAGE_CASES],
    ids=[c[0] for c in STAGE_CASES],
)
def test_stage_gate(
    control: VariantStats,
    candidate: VariantStats,
    percent: float,
    elapsed: float,
    min_hours: float,
    decision: str,
    words: list[str],
) -> None:
    check = stage_gate(
        control, candidate, percent, CanaryPolicy(), elapsed_hours=elapsed, min_hours=min_hours
    )
    assert check.decision == decision, check.reasons
    text = " | ".join(check.reasons)
    for word in words:
        assert word in text
    assert check.samples == {"control": control.n, "candidate": candidate.n}


def test_stage_gate_metrics_payload() -> None:
    check = stage_gate(
        variant(190_000, 1_900), variant(10_000, 100), 5, CanaryPolicy(), elapsed_hours=7, min_hours=6
    )
    err = check.metrics["error_rate"]
    assert err["control"] == pytest.approx(0.01) and err["candidate"] == pytest.approx(0.01)
    assert err["bound"][0] < 0 < err["bound"][1] <= err["limit"] == 0.01
    assert err["verdict"] == "ok" and err["alpha"] == pytest.approx(metric_alpha(CanaryPolicy()))
    assert check.metrics["score"]["verdict"] == "not_measured"
    assert check.metrics["latency_p95"]["ratio"] == pytest.approx(1.0, abs=0.05)
    assert check.min_samples == required_samples(CanaryPolicy(), 1_901 / 190_002, 5)


def test_numeric_min_samples() -> None:
    policy = CanaryPolicy(min_samples=20_000)
    check = stage_gate(variant(190_000, 1_900), variant(10_000, 100), 5, policy, elapsed_hours=7, min_hours=6)
    assert check.decision == "inconclusive" and check.min_samples == 20_000


def test_ungated_metrics_are_not_judged() -> None:
    policy = CanaryPolicy(
        metrics=CanaryMetrics(
            error_rate=ErrorRateGate(max_increase=0.01), score=None, latency_p95=None, cost_per_call=None
        )
    )
    slow = variant(10_000, 100, latency=3 * LAT, cost=0.01)
    check = stage_gate(variant(190_000, 1_900), slow, 5, policy, elapsed_hours=7, min_hours=6)
    assert check.decision == "pass"
    assert set(check.metrics) == {"error_rate", "invalid_rate"}


def test_required_samples_shapes() -> None:
    policy = CanaryPolicy()
    assert required_samples(policy, 0.01, 1) < required_samples(policy, 0.02, 1)
    strict = CanaryPolicy(metrics=CanaryMetrics(error_rate=ErrorRateGate(max_increase=0.005)))
    assert required_samples(strict, 0.01, 5) > 3 * required_samples(policy, 0.01, 5)
    zero = CanaryPolicy(metrics=CanaryMetrics(error_rate=ErrorRateGate(max_increase=0.0)))
    assert required_samples(zero, 0.01, 5) == UNREACHABLE_SAMPLES
    assert required_samples(policy, 0.01, 5, design_effect=3.0) > 2.5 * required_samples(policy, 0.01, 5)


def test_alpha_is_spent_across_the_canary() -> None:
    # Before, every stage and every metric spent alpha afresh, and nothing said so.
    policy = CanaryPolicy()  # 4 stages with a control (1, 5, 20, 50%), 5 gated metrics
    assert live_stages(policy) == 4
    assert stage_alpha(policy) == pytest.approx(0.05 / 4)
    assert srm_alpha(policy) == pytest.approx(0.001)
    assert metric_alpha(policy) == pytest.approx((0.0125 - 0.001) / 5)
    per_stage = CanaryPolicy(alpha_scope="stage")
    assert stage_alpha(per_stage) == pytest.approx(0.05)
    whole = live_stages(policy) * (srm_alpha(policy) + len(gated_metrics(policy)) * metric_alpha(policy))
    assert whole == pytest.approx(policy.alpha)


def _iid_breach(control: VariantStats, candidate: VariantStats, margin: float, alpha: float) -> bool:
    """The old gate's error-rate test: calls treated as independent (Agresti-Caffo per call)."""
    est, var = seq.proportion_difference(control.errors.y, control.n, candidate.errors.y, candidate.n)
    lo, _ = seq.confidence_sequence(est, var, mixture_tau(margin), alpha)
    return float(lo) > margin


def test_a_few_error_prone_units_in_the_canary_are_not_a_breach() -> None:
    # 2,000 candidate units; 8 heavy users whose calls fail half the time happened to land in the canary.
    rng = np.random.default_rng(1)
    normal = rng.poisson(2.0, 1_992) + 1
    calls = np.concatenate([normal, np.full(8, 60)])
    errors = np.concatenate([rng.binomial(normal, 0.005), rng.binomial(np.full(8, 60), 0.5)])
    candidate = VariantStats.from_units(calls, errors, first_latency=np.resize(LAT, calls.size))
    control = variant(400_000, 4_000, units=198_000)
    policy = CanaryPolicy()
    assert candidate.errors.ratio > 0.035  # 3 points above control's 1%, from 8 units
    assert _iid_breach(control, candidate, 0.01, metric_alpha(policy))  # the old gate rolled back
    check = stage_gate(control, candidate, 1, policy, elapsed_hours=3, min_hours=2)
    assert check.metrics["error_rate"]["verdict"] != "breach" and check.decision != "breach"
    # The same rate spread over many units is evidence, and breaches.
    spread_out = variant(int(calls.sum()), int(errors.sum()), units=2_000)
    assert stage_gate(control, spread_out, 1, policy, elapsed_hours=3, min_hours=2).decision == "breach"
