"""pairshift.stats against values computed by hand or by a different route (Wilson's and Tango's closed
forms, a constrained maximum likelihood solved by scipy.optimize, Miller's cluster-robust sandwich written
out), never by calling the code under test twice."""

from __future__ import annotations

import math
import statistics

import pytest
from scipy import stats as sps
from scipy.optimize import brentq, minimize

from pairshift.stats import (
    CaseOutcome,
    factorial,
    flipped,
    mcnemar,
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


Z975 = float(sps.norm.ppf(0.975))


def wilson(k: int, n: int, z: float = Z975) -> tuple[float, float]:
    p = k / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)


def tango_z(improved: int, regressed: int, n: int, delta: float) -> float:
    """Tango (1998) score statistic for paired proportions, closed form."""
    a, b = 2 * n, -improved - regressed + (2 * n - improved + regressed) * delta
    c = -regressed * delta * (1 - delta)
    q21 = (math.sqrt(b * b - 4 * a * c) - b) / (2 * a)
    return (improved - regressed - n * delta) / math.sqrt(n * (2 * q21 + delta * (1 - delta)))


def reference_z(values: list[float], lo: float, hi: float, delta: float) -> float:
    """The score statistic by brute force: the multinomial on the observed values and the range's ends that
    maximises the likelihood subject to mean = delta, solved numerically (SLSQP)."""
    support = sorted(set(values) | {lo, hi})
    counts = [values.count(v) for v in support]
    n = len(values)

    def nll(p: list[float]) -> float:
        return -sum(c * math.log(max(q, 1e-300)) for c, q in zip(counts, p, strict=True) if c)

    cons = [
        {"type": "eq", "fun": lambda p: sum(p) - 1},
        {"type": "eq", "fun": lambda p: sum(q * v for q, v in zip(p, support, strict=True)) - delta},
    ]
    start = [(c + 0.5) / (n + 0.5 * len(support)) for c in counts]
    fit = minimize(nll, start, constraints=cons, bounds=[(0, 1)] * len(support), method="SLSQP", tol=1e-14)
    var = sum(q * (v - delta) ** 2 for q, v in zip(fit.x, support, strict=True))
    return (sum(values) / n - delta) * math.sqrt(n) / math.sqrt(var)


def reference_interval(values: list[float], lo: float, hi: float) -> tuple[float, float]:
    mean = sum(values) / len(values)
    lower = brentq(lambda d: reference_z(values, lo, hi, d) - Z975, lo + 1e-6, mean - 1e-9)
    upper = brentq(lambda d: reference_z(values, lo, hi, d) + Z975, mean + 1e-9, hi - 1e-6)
    return lower, upper


def tango_interval(improved: int, regressed: int, n: int) -> tuple[float, float]:
    mean = (improved - regressed) / n
    lower = brentq(lambda d: tango_z(improved, regressed, n, d) - Z975, -1 + 1e-12, mean)
    upper = brentq(lambda d: tango_z(improved, regressed, n, d) + Z975, mean, 1 - 1e-12)
    return lower, upper


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
    values = contrast(weights)
    bound = sum(abs(w) for w in weights.values()) / 2
    assert effect.estimate == pytest.approx(hand_estimate)
    assert effect.ci == pytest.approx(reference_interval(values, -bound, bound), abs=1e-5)
    assert effect.ci[0] <= hand_estimate <= effect.ci[1]
    z0 = reference_z(values, -bound, bound, 0.0)
    assert effect.p_value == pytest.approx(2 * sps.norm.sf(abs(z0)), abs=1e-5)


def test_joint_effect_is_tangos_interval() -> None:
    # joint - baseline per case: [0,-1,-1,0,1,0,0,-1]: 1 improved, 3 regressed of 8.
    effect = factorial(ARMS["baseline"], ARMS["prompt_only"], ARMS["model_only"], ARMS["joint"])["joint"]
    assert effect.estimate == pytest.approx(-0.25)
    assert effect.ci == pytest.approx(tango_interval(1, 3, 8), abs=1e-9)
    assert effect.p_value == pytest.approx(2 * sps.norm.sf(abs(tango_z(1, 3, 8, 0.0))))


def test_pass_rates_are_wilson_intervals_with_one_epoch() -> None:
    for name, rate in {"baseline": 0.75, "prompt_only": 0.75, "model_only": 0.625, "joint": 0.5}.items():
        summary = summarize_arm(ARMS[name])
        assert summary.pass_rate == pytest.approx(rate)
        assert summary.ci == pytest.approx(wilson(int(rate * 8), 8), abs=1e-9)


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


def test_epochs_are_clustered_by_case() -> None:
    # Cases are consistent across epochs, so the interval on per-case means must be wider than one that
    # treats the 30 calls as independent (Wilson on calls), by about the ratio of Miller's clustered SE.
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
    total = len(calls)
    mean = sum(calls) / total
    sandwich = sum(sum(v - mean for v in epochs) ** 2 for epochs in per_case) / total**2
    naive_se = statistics.pstdev(calls) / math.sqrt(total)
    assert math.sqrt(sandwich) > naive_se * 1.3
    summary = summarize_arm(arm_epochs(per_case))
    means = [sum(e) / 3 for e in per_case]
    assert summary.pass_rate == pytest.approx(mean)
    assert summary.ci == pytest.approx(reference_interval(means, 0.0, 1.0), abs=1e-5)
    naive = wilson(int(sum(calls)), total)
    assert summary.ci[1] - summary.ci[0] > 1.25 * (naive[1] - naive[0])
    assert summary.epochs == 3


def test_paired_effect_with_epochs_uses_per_case_means() -> None:
    a = arm_epochs([[1, 1, 1], [1, 0, 1], [0, 0, 0], [1, 1, 0], [1, 1, 1]])
    b = arm_epochs([[1, 0, 1], [0, 0, 1], [0, 0, 1], [1, 0, 0], [0, 1, 1]])
    diffs = [(2 - 3) / 3, (1 - 2) / 3, (1 - 0) / 3, (1 - 2) / 3, (2 - 3) / 3]
    effect = paired_effect(a, b, 0.95)
    assert effect.estimate == pytest.approx(sum(diffs) / 5)
    assert effect.ci == pytest.approx(reference_interval(diffs, -1.0, 1.0), abs=1e-5)


def test_zero_discordance_gives_the_wilson_width() -> None:
    all_pass = arm([1] * 8)
    z2 = Z975**2
    assert summarize_arm(all_pass).ci == pytest.approx((8 / (8 + z2), 1.0))
    same = paired_effect(all_pass, all_pass)
    assert same.ci == pytest.approx((-z2 / (8 + z2), z2 / (8 + z2)))
    assert same.p_value == 1.0


def test_one_improved_case_raises_the_lower_end() -> None:
    # 100 identical cases gave [-3.7, +3.7] points and 99 identical + 1 improved [-0.98, +2.98] before: adding
    # an improvement made the candidate look *safer* than no difference, and flipped inconclusive to pass.
    same = [CaseOutcome(case_id=f"c{i}", epoch=0, passed=True, score=1.0) for i in range(100)]
    better_base = [o.model_copy(update={"passed": i != 0}) for i, o in enumerate(same)]
    worse = [o.model_copy(update={"passed": i != 0}) for i, o in enumerate(same)]
    identical = paired_effect(same, same)
    improved = paired_effect(better_base, same)
    regressed = paired_effect(same, worse)
    assert identical.ci[0] == pytest.approx(-(Z975**2) / (100 + Z975**2))
    assert regressed.ci[0] < identical.ci[0] < improved.ci[0] < 0
    assert improved.ci == pytest.approx(tango_interval(1, 0, 100), abs=1e-9)
    assert improved.ci[0] < -0.02 < identical.ci[1]  # still inconclusive at a 2-point margin


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
    assert s.cost_per_case == pytest.approx(1.0 / 100)  # the errored call is left out
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
