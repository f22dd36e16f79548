"""pairshift.stats against values computed by hand or by a different route (stdlib statistics, scipy.stats.t,
Miller's cluster-robust sandwich written out), never by calling the code under test twice."""

from __future__ import annotations

import math
import statistics

import pytest
from scipy import stats as sps
from scipy.special import betainc

from pairshift.stats import (
    CaseOutcome,
    factorial,
    flipped,
    mcnemar,
    minimum_detectable_effect,
    newly_failing,
    paired_effect,
    summarize_arm,
)

CASES = [f"c{i}" for i in range(8)]
# Per-case pass (one epoch) of the 2x2 arms; rates 6/8, 6/8, 5/8, 4/8.
PATTERNS = {
    "baseline": [1, 1, 1, 1, 0, 0, 1, 1],
    "prompt_only": [1, 1, 0, 1, 0, 1, 1, 1],
    "model_only": [1, 0, 1, 1, 0, 0, 1, 1],
    "joint": [1, 0, 0, 1, 1, 0, 1, 0],
}


def arm(pattern: list[int], epochs: int = 1, **extra: object) -> list[CaseOutcome]:
    return [
        CaseOutcome(case_id=CASES[i], epoch=e, passed=bool(p), score=float(p), **extra)  # type: ignore[arg-type]
        for e in range(epochs)
        for i, p in enumerate(pattern)
    ]


def arm_epochs(per_case: list[list[int]]) -> list[CaseOutcome]:
    return [
        CaseOutcome(case_id=f"c{i}", epoch=e, passed=bool(p), score=float(p))
        for i, epochs in enumerate(per_case)
        for e, p in enumerate(epochs)
    ]


def t_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean, half-width and two-sided p of a one-sample t, via stdlib statistics and scipy.stats.t."""
    n = len(values)
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(n)
    half = sps.t.ppf(0.5 + confidence / 2, n - 1) * se
    p = 2 * sps.t.sf(abs(mean / se), n - 1)
    return mean, half, p


def contrast(weights: dict[str, int]) -> list[float]:
    return [sum(w * PATTERNS[a][i] for a, w in weights.items()) for i in range(len(CASES))]


ARMS = {name: arm(p) for name, p in PATTERNS.items()}


@pytest.mark.parametrize(
    ("name", "hand_estimate", "weights"),
    [
        ("prompt", 0.0, {"prompt_only": 1, "baseline": -1}),
        ("model", -1 / 8, {"model_only": 1, "baseline": -1}),
        (
            "interaction",
            4 / 8 - 6 / 8 - 5 / 8 + 6 / 8,
            {"joint": 1, "prompt_only": -1, "model_only": -1, "baseline": 1},
        ),
        ("joint", -2 / 8, {"joint": 1, "baseline": -1}),
    ],
)
def test_factorial_effects_match_hand_values(
    name: str, hand_estimate: float, weights: dict[str, int]
) -> None:
    effects = factorial(ARMS["baseline"], ARMS["prompt_only"], ARMS["model_only"], ARMS["joint"], 0.95)
    effect = effects[name]
    mean, half, p = t_interval(contrast(weights))
    assert effect.estimate == pytest.approx(hand_estimate)
    assert mean == pytest.approx(hand_estimate)
    assert effect.ci == pytest.approx((mean - half, mean + half))
    assert effect.ci[0] <= hand_estimate <= effect.ci[1]
    assert effect.p_value == pytest.approx(p)


def test_joint_effect_literal_numbers() -> None:
    # joint - baseline per case: [0,-1,-1,0,1,0,0,-1]; mean -0.25, sd sqrt(3.5/7), SE 0.25, t = -1 on 7 df.
    effect = factorial(ARMS["baseline"], ARMS["prompt_only"], ARMS["model_only"], ARMS["joint"])["joint"]
    assert effect.estimate == pytest.approx(-0.25)
    assert effect.ci == pytest.approx((-0.25 - 2.364624 * 0.25, -0.25 + 2.364624 * 0.25), abs=1e-6)
    # Two-sided t p-value through the regularised incomplete beta: I_{v/(v+t^2)}(v/2, 1/2) with v = 7, t = 1.
    assert effect.p_value == pytest.approx(betainc(3.5, 0.5, 7 / 8))


def test_pass_rates_match_hand_values_and_cis_contain_them() -> None:
    for name, rate in {"baseline": 0.75, "prompt_only": 0.75, "model_only": 0.625, "joint": 0.5}.items():
        summary = summarize_arm(ARMS[name])
        mean, half, _ = t_interval([float(p) for p in PATTERNS[name]])
        assert summary.pass_rate == pytest.approx(rate)
        assert summary.ci == pytest.approx((max(0.0, mean - half), min(1.0, mean + half)))
        assert summary.ci[0] <= rate <= summary.ci[1]


def test_mcnemar_equals_exact_binomial_on_discordant_pairs() -> None:
    result = mcnemar(ARMS["baseline"], ARMS["joint"])
    # baseline pass & joint fail: c1, c2, c7; baseline fail & joint pass: c4.
    assert (result.b_to_fail, result.b_to_pass) == (3, 1)
    assert result.p_value == pytest.approx(sps.binomtest(3, 4, 0.5).pvalue)
    assert result.p_value == pytest.approx(10 / 16)  # P(X in {0,1,3,4}) for Binomial(4, 1/2)


def test_mcnemar_majority_rule_and_ties_fail() -> None:
    a = arm_epochs([[1, 1, 0], [1, 0], [0, 0, 1]])  # majority: pass, tie -> fail, fail
    b = arm_epochs([[0, 0, 1], [1, 1], [1, 1, 0]])  # fail, pass, pass
    result = mcnemar(a, b)
    assert (result.b_to_fail, result.b_to_pass) == (1, 2)
    assert result.p_value == pytest.approx(sps.binomtest(1, 3, 0.5).pvalue)
    assert mcnemar(a, a).p_value == 1.0


def test_flipped_cases_listed_with_direction() -> None:
    flips = flipped(ARMS["baseline"], ARMS["joint"], "baseline", "joint")
    assert [(f.case, f.direction) for f in flips] == [
        ("c1", "regressed"),
        ("c2", "regressed"),
        ("c4", "improved"),
        ("c7", "regressed"),
    ]
    assert all(f.from_arm == "baseline" and f.to_arm == "joint" for f in flips)


def test_clustered_se_with_epochs_equals_millers_sandwich() -> None:
    # Cases are consistent across epochs, so the clustered SE must exceed the naive iid SE over calls.
    per_case = [
        [1, 1, 1],
        [0, 0, 0],
        [1, 1, 0],
        [1, 1, 1],
        [0, 0, 1],
        [1, 1, 1],
        [0, 0, 0],
        [1, 0, 1],
        [1, 1, 1],
        [0, 0, 0],
    ]
    calls = [float(v) for epochs in per_case for v in epochs]
    n, total = len(per_case), len(calls)
    mean = sum(calls) / total
    # Miller (2024) cluster-robust variance: (1/N^2) sum over clusters of (sum of residuals in the cluster)^2,
    # with the n/(n-1) small-sample factor.
    sandwich = sum(sum(v - mean for v in epochs) ** 2 for epochs in per_case) / total**2 * n / (n - 1)
    clustered_se = math.sqrt(sandwich)
    naive_se = statistics.stdev(calls) / math.sqrt(total)
    assert clustered_se > naive_se * 1.3
    summary = summarize_arm(arm_epochs(per_case))
    half = (summary.ci[1] - summary.ci[0]) / 2
    assert summary.pass_rate == pytest.approx(mean)
    assert half == pytest.approx(sps.t.ppf(0.975, n - 1) * clustered_se)
    assert summary.epochs == 3


def test_paired_effect_with_epochs_uses_per_case_means() -> None:
    a = arm_epochs([[1, 1, 1], [1, 0, 1], [0, 0, 0], [1, 1, 0], [1, 1, 1]])
    b = arm_epochs([[1, 0, 1], [0, 0, 1], [0, 0, 1], [1, 0, 0], [0, 1, 1]])
    diffs = [(2 - 3) / 3, (1 - 2) / 3, (1 - 0) / 3, (1 - 2) / 3, (2 - 3) / 3]
    mean, half, p = t_interval(diffs, 0.9)
    effect = paired_effect(a, b, 0.9)
    assert effect.estimate == pytest.approx(mean)
    assert effect.ci == pytest.approx((mean - half, mean + half))
    assert effect.p_value == pytest.approx(p)


def test_zero_variance_falls_back_to_wilson_width() -> None:
    all_pass = arm([1] * 8)
    z2 = sps.norm.ppf(0.975) ** 2
    assert summarize_arm(all_pass).ci == pytest.approx((8 / (8 + z2), 1.0))
    same = paired_effect(all_pass, all_pass)
    assert same.ci == pytest.approx((-z2 / (8 + z2), z2 / (8 + z2)))
    assert same.p_value == 1.0


def test_summary_latency_cost_tokens_and_breakdowns() -> None:
    outcomes = [
        CaseOutcome(
            case_id=f"c{i}",
            epoch=0,
            passed=i % 4 != 0,
            score=0.5,
            latency_ms=float(i + 1),
            cost_usd=0.01,
            input_tokens=100,
            output_tokens=20,
            tags=["billing"] if i < 40 else ["shipping"],
            assertion_types=["is-json", "contains"],
            assertion_types_failed=["is-json"] if i % 4 == 0 else [],
        )
        for i in range(100)
    ] + [CaseOutcome(case_id="err", epoch=0, passed=False, score=0.0, latency_ms=99999.0, error=True)]
    s = summarize_arm(outcomes)
    assert (s.n_cases, s.calls, s.errors) == (101, 101, 1)
    assert s.latency_p50_ms == pytest.approx(50.5)  # 1..100 ms, errored call left out
    assert s.latency_p95_ms == pytest.approx(95.05)
    assert s.cost_usd == pytest.approx(1.0)
    assert s.cost_per_case == pytest.approx(1.0 / 101)
    assert s.tokens_per_case == pytest.approx(12000 / 101)
    assert s.by_tag["billing"].pass_rate == pytest.approx(30 / 40)
    assert s.by_tag["billing"].n == 40
    assert s.by_tag["shipping"].pass_rate == pytest.approx(45 / 60)
    assert s.by_assertion_type["is-json"].fail_rate == pytest.approx(25 / 100)
    assert s.by_assertion_type["is-json"].n == 25
    assert s.by_assertion_type["contains"].fail_rate == 0.0


def test_partial_factorial_returns_only_defined_effects() -> None:
    effects = factorial(ARMS["baseline"], model_only=ARMS["model_only"])
    assert set(effects) == {"model", "joint"}
    assert effects["joint"] == effects["model"]
    assert set(factorial(ARMS["baseline"], prompt_only=ARMS["prompt_only"])) == {"prompt", "joint"}
    with pytest.raises(ValueError, match="joint arm"):
        factorial(ARMS["baseline"])


def test_unpaired_arms_are_refused() -> None:
    with pytest.raises(ValueError, match="not paired"):
        paired_effect(ARMS["baseline"], ARMS["joint"][:-1])
    with pytest.raises(ValueError, match="no outcomes"):
        summarize_arm([])


def test_newly_failing_is_strict_per_epoch() -> None:
    a = [
        CaseOutcome(case_id="x", epoch=0, passed=True, score=1),
        CaseOutcome(case_id="y", epoch=0, passed=False, score=0, assertion_types_failed=["is-json"]),
    ]
    b = [
        CaseOutcome(case_id="x", epoch=0, passed=True, score=1),
        CaseOutcome(case_id="x", epoch=1, passed=False, score=0, assertion_types_failed=["is-json", "regex"]),
        CaseOutcome(case_id="y", epoch=0, passed=False, score=0, assertion_types_failed=["is-json"]),
    ]
    assert newly_failing(a, b, ["is-json"]) == {"is-json": ["x"]}
    assert newly_failing(a, b, ["equals"]) == {}


@pytest.mark.parametrize(("n", "p"), [(50, 0.9), (200, 0.8), (1000, 0.95)])
def test_minimum_detectable_effect_has_the_stated_power(n: int, p: float) -> None:
    d = minimum_detectable_effect(n, p, 0.95, 0.8)
    se = math.sqrt((p * (1 - p) + (p - d) * (1 - p + d)) / n)
    power = sps.norm.cdf(d / se - sps.norm.ppf(0.975))
    assert power == pytest.approx(0.8, abs=1e-6)
    assert minimum_detectable_effect(4 * n, p) < d
