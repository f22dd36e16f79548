"""The eval gate's paired evidence (pairshift.paired) and its operating characteristic on the findings that
broke the old gate: random blocking noise, point-estimate failures, the non-inferiority level."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from pairshift.gates import eval_gate
from pairshift.intervals import noninferiority_cases, score_statistic, z_critical
from pairshift.paired import blocking_change, paired_ratio, paired_ratios, power_note
from pairshift.policy import EvalPolicy
from pairshift.stats import CaseOutcome, paired_effect


def outcome(case: str, epoch: int = 0, *, failed: list[str] | None = None, **kw: object) -> CaseOutcome:
    return CaseOutcome(
        case_id=case, epoch=epoch, passed=not failed, score=1.0, assertion_types_failed=failed or [], **kw
    )  # type: ignore[arg-type]


def test_blocking_change_lists_new_failures_and_passes_per_epoch() -> None:
    base = [outcome("x"), outcome("y", failed=["is-json"]), outcome("z")]
    joint = [
        outcome("x"),
        outcome("x", 1, failed=["is-json", "regex"]),
        outcome("y"),
        outcome("z", failed=["regex"]),
    ]
    change = blocking_change(base, joint, "is-json", 0.95)
    assert change.newly_failing == ["x"] and change.newly_passing == ["y"]
    # per-case failure rates: x 0 -> 1/2, y 1 -> 0, z 0 -> 0
    assert change.rate_change.estimate == pytest.approx((0.5 - 1) / 3)
    assert blocking_change(base, joint, "equals", 0.95).newly_failing == []


def _random_blocking(rng: np.random.Generator, cases: int, epochs: int, rate: float) -> list[CaseOutcome]:
    fails = rng.random((cases, epochs)) < rate
    return [
        outcome(f"c{i}", e, failed=["is-json"] if fails[i, e] else None)
        for i in range(cases)
        for e in range(epochs)
    ]


def _blocking_rates(rng: np.random.Generator, reps: int, cases: int, epochs: int, rate: float) -> np.ndarray:
    """Per-case blocking failure rates of ``reps`` simulated evals (reps, cases): failures at random."""
    return (rng.random((reps, cases, epochs)) < rate).mean(axis=2)


def _z_of_rate_change(rb: np.ndarray, rj: np.ndarray, delta: float) -> np.ndarray:
    """The gate's statistic Z(delta) of the per-case failure-rate change (joint - baseline), one per row."""
    diffs = rj - rb
    support = np.union1d(np.unique(diffs), [-1.0, 1.0])
    counts = (diffs[:, :, None] == support[None, None, :]).sum(axis=1)
    return score_statistic(support, counts, delta)


def _blocking_outcomes(rates: np.ndarray, epochs: int) -> list[CaseOutcome]:
    """One eval's outcomes with these per-case failure rates (a case's failures in its first epochs)."""
    return [
        outcome(f"c{c}", e, failed=["is-json"] if e < round(r * epochs) else None)
        for c, r in enumerate(rates)
        for e in range(epochs)
    ]


@pytest.mark.parametrize("rate", [0.002, 0.005])
def test_random_blocking_failures_in_both_arms_rarely_fail_the_gate(rate: float) -> None:
    # Old rule: any newly failing case failed the eval: 67% of evals at 0.2%, 95% at 0.5% (200 cases x 3).
    # The gate fails a blocking type when the lower end of its interval lies above max_new_failure_rate, i.e.
    # when Z(max_new_failure_rate) > z: computed for 2,000 evals at once (the loop over blocking_change took
    # 3-5 s for 100); the first evals are checked against blocking_change itself.
    rng = np.random.default_rng(14)
    policy = EvalPolicy()
    runs, cases, epochs = 2_000, 200, 3
    rb, rj = (_blocking_rates(rng, runs, cases, epochs, rate) for _ in range(2))
    any_new = ((rj > 0) & (rb == 0)).any(axis=1)
    zc = z_critical(policy.confidence)
    fails = _z_of_rate_change(rb, rj, policy.max_new_failure_rate) > zc
    for i in range(8):  # the same evals through blocking_change: the same interval, the same decision
        base, joint = (_blocking_outcomes(r[i], epochs) for r in (rb, rj))
        change = blocking_change(base, joint, "is-json", policy.confidence)
        lower = change.rate_change.ci[0]
        assert bool(change.newly_failing) == any_new[i]
        assert (lower > policy.max_new_failure_rate) == fails[i]
        assert lower == -1.0 or _z_of_rate_change(rb[i : i + 1], rj[i : i + 1], lower)[0] == pytest.approx(zc)
    assert any_new.mean() > 0.5  # the old rule would have failed these
    assert fails.mean() <= 0.05


def test_a_real_blocking_regression_still_fails() -> None:
    rng = np.random.default_rng(3)
    base, joint = _random_blocking(rng, 200, 3, 0.002), _random_blocking(rng, 200, 3, 0.05)
    change = blocking_change(base, joint, "is-json", 0.95)
    from pairshift.paired import RatioEstimate

    same = RatioEstimate(baseline=1, joint=1, ratio=1, ci=(1, 1))
    effect = paired_effect(base, base)
    assert eval_gate(effect, {"is-json": change}, same, same, EvalPolicy()).decision == "fail"


def _z_at_margin(rng: np.random.Generator, n: int, reps: int, discordance: float, diff: float, margin: float):
    """The gate's pass-rate statistic Z(-margin) for ``reps`` simulated one-epoch evals (vectorised)."""
    p_improve, p_regress = discordance / 2 + diff / 2, discordance / 2 - diff / 2
    counts = rng.multinomial(n, [p_regress, 1 - discordance, p_improve], size=reps)
    estimate = (counts[:, 2] - counts[:, 0]) / n
    return score_statistic(np.array([-1.0, 0.0, 1.0]), counts, -margin), estimate


@pytest.mark.parametrize("n", [50, 100, 300])
def test_no_true_difference_is_not_failed_from_the_point_estimate(n: int) -> None:
    # Old rule: "fail" when the estimate fell below -margin: 12-29% of such evals at 50-300 cases with 15%
    # discordance.
    rng = np.random.default_rng(n)
    z, estimate = _z_at_margin(rng, n, 4_000, 0.15, 0.0, 0.02)
    fail = (z <= -z_critical(0.95)).mean()  # the upper end of the interval below -margin
    assert (estimate < -0.02).mean() > 0.1  # what the old rule failed
    assert fail <= 0.025  # the upper end's one-sided level bounds it (the truth is 2 points above)


def test_a_true_regression_at_the_margin_passes_at_most_the_one_sided_level() -> None:
    rng = np.random.default_rng(2)
    z, _ = _z_at_margin(rng, 300, 20_000, 0.15, -0.02, 0.02)
    passed = (z >= z_critical(0.95)).mean()
    se = math.sqrt(0.025 * 0.975 / 20_000)
    assert passed <= 0.025 + 3 * se  # nominal 2.5% per end; the old t interval passed 5.0%


def test_gate_decisions_agree_with_the_vectorised_statistic() -> None:
    rng = np.random.default_rng(5)
    zc = z_critical(0.95)
    for _ in range(30):
        n = int(rng.integers(50, 400))
        pattern = rng.choice([-1, 0, 1], size=n, p=[0.08, 0.85, 0.07])
        base = [outcome(f"c{i}") for i in range(n)]
        joint = [outcome(f"c{i}", failed=["x"] if d < 0 else None) for i, d in enumerate(pattern)]
        base = [o.model_copy(update={"passed": d <= 0}) for o, d in zip(base, pattern, strict=True)]
        effect = paired_effect(base, joint)
        values = np.array([float(j.passed) - float(b.passed) for b, j in zip(base, joint, strict=True)])
        counts = np.array([[np.sum(values == v) for v in (-1.0, 0.0, 1.0)]])
        z = float(score_statistic(np.array([-1.0, 0.0, 1.0]), counts, -0.02)[0])
        assert (effect.ci[0] >= -0.02) == (z >= zc)
        assert (effect.ci[1] < -0.02) == (z < -zc)


def test_paired_ratio_is_seeded_and_paired_by_case() -> None:
    rng = np.random.default_rng(1)
    n = 150
    case_cost = rng.lognormal(-6, 1.0, n)  # cases differ a lot; calls of a case are close
    base = [outcome(f"c{i}", e, cost_usd=case_cost[i] * (1 + 0.01 * e)) for i in range(n) for e in range(2)]
    joint = [o.model_copy(update={"cost_usd": o.cost_usd * 1.2}) for o in base]
    est = paired_ratio(base, joint, "cost", 0.95)
    assert est is not None and est.ratio == pytest.approx(1.2)
    # Pairing: every resample scales both arms alike, so the interval is (almost) the point.
    assert est.ci[0] == pytest.approx(1.2, abs=1e-9) and est.ci[1] == pytest.approx(1.2, abs=1e-9)
    assert paired_ratio(base, joint, "cost", 0.95) == est
    shuffled = [
        o.model_copy(update={"cost_usd": case_cost[(i // 2 + 7) % n] * 1.2}) for i, o in enumerate(base)
    ]
    wide = paired_ratio(base, shuffled, "cost", 0.95)
    assert wide is not None and wide.ci[1] - wide.ci[0] > 0.1


def test_both_ratios_from_one_set_of_resamples_are_each_ratio_alone() -> None:
    """The report draws the resamples once for the cost and the latency ratio: each interval is exactly the
    one its own bootstrap gives (the same cases, seed and chunks), errored calls and all."""
    rng = np.random.default_rng(3)

    def arm(scale: float) -> list[CaseOutcome]:
        return [
            outcome(
                f"c{i}",
                e,
                cost_usd=float(rng.lognormal(-6, 1)) * scale,
                latency_ms=float(rng.gamma(2, 100)),
                error=bool(rng.random() < 0.05),
            )
            for i in range(300)
            for e in range(2)
        ]

    base, joint = arm(1.0), arm(1.1)
    both = paired_ratios(base, joint, ("cost", "latency_p95"), 0.95)
    assert both == {stat: paired_ratio(base, joint, stat, 0.95) for stat in ("cost", "latency_p95")}
    assert paired_ratios(base, [], ("cost", "latency_p95"), 0.95) == {"cost": None, "latency_p95": None}


def test_latency_ratio_leaves_errored_calls_out() -> None:
    base = [outcome(f"c{i}", latency_ms=100.0 + i) for i in range(100)]
    joint = [outcome(f"c{i}", latency_ms=100.0 + i, error=i % 10 == 0) for i in range(100)]
    joint += [outcome("slow", latency_ms=60_000.0, error=True)]
    base += [outcome("slow", latency_ms=100.0)]
    est = paired_ratio(base, joint, "latency_p95", 0.95)
    assert est is not None and 0.95 < est.ratio < 1.05
    errored_only = [outcome("c0", latency_ms=5.0, error=True)]
    assert paired_ratio(base, errored_only, "latency_p95", 0.95) is None


def test_power_note_is_for_the_noninferiority_test() -> None:
    n = noninferiority_cases(0.15, 0.02, 0.95, 0.8)
    # Normal approximation of the same test, written out: margin sqrt(n) / sqrt(pi) - z ~ z_power.
    approx = ((z_critical(0.95) + sps.norm.ppf(0.8)) ** 2) * 0.15 / 0.02**2
    assert 0.9 * approx < n < 1.1 * approx
    assert noninferiority_cases(0.0, 0.02, 0.95) == math.ceil(z_critical(0.95) ** 2 * 0.98 / 0.02)
    note = power_note(300, 0.15, 0.02, 0.95)
    assert f"{n:,} cases" in note and "this eval has 300" in note and "95% interval" in note
    assert "never" in power_note(300, 0.15, 0.0, 0.95)


@pytest.mark.parametrize("stat", ["cost", "latency_p95"])
def test_an_interval_reaching_infinity_is_infinite_not_nan(stat: str) -> None:
    """Two of the baseline's three cases cost (or take) nothing: in ~30% of resamples the baseline's statistic
    is 0 and the ratio infinite. numpy interpolated the upper bound between two infinities as NaN: the report
    printed "nan" and a NaN bound compares False with every limit, so the gate could not read the interval."""
    field = "cost_usd" if stat == "cost" else "latency_ms"
    base = [outcome(f"c{i}", **{field: 0.0 if i else 1.0}) for i in range(3)]
    joint = [outcome(f"c{i}", **{field: 2.0}) for i in range(3)]
    est = paired_ratio(base, joint, stat, 0.95)  # type: ignore[arg-type]
    assert est is not None
    assert not math.isnan(est.ci[0]) and not math.isnan(est.ci[1])
    assert est.ci[1] == math.inf and est.ci[0] < math.inf
