"""Table-driven tests of the eval gate and the canary stage gate (pairshift.gates)."""

from __future__ import annotations

import numpy as np
import pytest

from pairshift.contracts.evals import ArmSummary, Effect
from pairshift.gates import UNREACHABLE_SAMPLES, VariantStats, eval_gate, required_samples, stage_gate
from pairshift.policy import CanaryMetrics, CanaryPolicy, ErrorRateGate, EvalPolicy

# ---------------------------------------------------------------- eval gate


def summary(cost: float = 0.01, p95: float = 1000.0) -> ArmSummary:
    return ArmSummary(
        n_cases=200,
        epochs=3,
        calls=600,
        errors=0,
        pass_rate=0.9,
        ci=(0.85, 0.95),
        mean_score=0.9,
        score_ci=(0.85, 0.95),
        latency_p50_ms=p95 / 2,
        latency_p95_ms=p95,
        cost_usd=cost * 600,
        cost_per_case=cost,
        tokens_per_case=500,
    )


OK = Effect(estimate=0.0, ci=(-0.01, 0.01), p_value=1.0)

EVAL_CASES = [
    # (id, effect, newly failing blocking, joint cost, joint p95, decision, words in the reasons)
    ("non-inferior", OK, {}, 0.01, 1000, "pass", ["non-inferior"]),
    (
        "lower bound exactly at margin",
        Effect(estimate=0.0, ci=(-0.02, 0.02), p_value=1),
        {},
        0.01,
        1000,
        "pass",
        [],
    ),
    (
        "estimate below margin",
        Effect(estimate=-0.03, ci=(-0.06, 0.0), p_value=0.05),
        {},
        0.01,
        1000,
        "fail",
        ["-3.0 points", "worse than the allowed -2.0 points"],
    ),
    (
        "upper bound below margin",
        Effect(estimate=-0.019, ci=(-0.03, -0.021), p_value=0.01),
        {},
        0.01,
        1000,
        "fail",
        ["worse"],
    ),
    (
        "wide interval",
        Effect(estimate=-0.01, ci=(-0.05, 0.03), p_value=0.6),
        {},
        0.01,
        1000,
        "inconclusive",
        ["lower bound is below"],
    ),
    (
        "blocking newly fails",
        OK,
        {"is-json": [f"case-{i}" for i in range(7)]},
        0.01,
        1000,
        "fail",
        [
            "blocking assertion is-json newly fails on 7 case(s): case-0, case-1, case-2, case-3, case-4 and "
            "2 more"
        ],
    ),
    ("non-blocking type ignored", OK, {"contains": ["case-0"]}, 0.01, 1000, "pass", []),
    (
        "cost ratio too high",
        OK,
        {},
        0.016,
        1000,
        "fail",
        ["cost per case ratio 1.60", "exceeds the allowed 1.5"],
    ),
    ("cost ratio at the bound", OK, {}, 0.015, 1000, "pass", []),
    ("latency ratio too high", OK, {}, 0.01, 1510, "fail", ["latency p95 ratio 1.51"]),
    (
        "fail beats inconclusive",
        Effect(estimate=-0.01, ci=(-0.05, 0.03), p_value=0.6),
        {},
        0.02,
        1000,
        "fail",
        [],
    ),
]


@pytest.mark.parametrize(
    ("effect", "blocking", "cost", "p95", "decision", "words"),
    [c[1:] for c in EVAL_CASES],
    ids=[c[0] for c in EVAL_CASES],
)
def test_eval_gate(
    effect: Effect, blocking: dict[str, list[str]], cost: float, p95: float, decision: str, words: list[str]
) -> None:
    result = eval_gate(summary(), summary(cost, p95), effect, blocking, EvalPolicy())
    assert result.decision == decision
    text = " | ".join(result.reasons)
    for word in words:
        assert word in text


def test_eval_gate_free_baseline() -> None:
    assert eval_gate(summary(0.0), summary(0.0), OK, {}, EvalPolicy()).decision == "pass"
    result = eval_gate(summary(0.0), summary(0.01), OK, {}, EvalPolicy())
    assert result.decision == "fail" and "against 0 in baseline" in " ".join(result.reasons)


# ---------------------------------------------------------------- stage gate

RNG_LAT = np.random.default_rng(7)
LAT = [float(x) for x in RNG_LAT.lognormal(6.0, 0.4, 2000)]


def variant(
    n: int,
    errors: int,
    *,
    latency: list[float] | None = None,
    cost: float = 0.001,
    invalid: int = 0,
    scores: tuple[int, float, float] = (0, 0.0, 0.0),
    units: int | None = None,
) -> VariantStats:
    return VariantStats(
        n=n,
        errors=errors,
        invalid=invalid,
        score_n=scores[0],
        score_sum=scores[1],
        score_sumsq=scores[2],
        latency_ms=LAT if latency is None else latency,
        cost_sum=cost * n,
        cost_sumsq=cost * cost * n * 1.01,
        units=units,
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
        ["sample ratio mismatch"],
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
        variant(10_000, 100, latency=[2 * x for x in LAT]),
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
        ["too few latency samples"],
    ),
    ("full traffic", variant(0, 0), variant(10_000, 500), 100, 1, 0, "pass", ["no concurrent control"]),
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
    assert err["verdict"] == "ok"
    assert check.metrics["score"]["verdict"] == "not_measured"
    assert check.metrics["latency_p95"]["ratio"] == pytest.approx(1.0)
    assert check.min_samples == required_samples(CanaryPolicy(), 1_901 / 190_002, 5)


def test_numeric_min_samples_and_missing_cost_variance() -> None:
    policy = CanaryPolicy(min_samples=20_000)
    check = stage_gate(variant(190_000, 1_900), variant(10_000, 100), 5, policy, elapsed_hours=7, min_hours=6)
    assert check.decision == "inconclusive" and check.min_samples == 20_000
    no_sq = variant(10_000, 100).model_copy(update={"cost_sumsq": None})
    check = stage_gate(variant(190_000, 1_900), no_sq, 5, CanaryPolicy(), elapsed_hours=7, min_hours=6)
    assert check.decision == "inconclusive"
    assert "cost_sumsq not supplied" in " ".join(check.reasons)


def test_ungated_metrics_are_not_judged() -> None:
    policy = CanaryPolicy(
        metrics=CanaryMetrics(
            error_rate=ErrorRateGate(max_increase=0.01), score=None, latency_p95=None, cost_per_call=None
        )
    )
    slow = variant(10_000, 100, latency=[3 * x for x in LAT], cost=0.01)
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
