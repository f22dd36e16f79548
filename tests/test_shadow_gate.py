"""The shadow stage gate (pairshift.gates.shadow_gate): pairwise win rate, errors, latency and cost of the
candidate on mirrored requests against control's answers to the same requests."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from test_gates import LAT, variant

from pairshift.gates import (
    MIN_SAMPLES_FLOOR,
    UNREACHABLE_SAMPLES,
    gated_metrics,
    is_shadow,
    live_stages,
    metric_alpha,
    required_pairs,
    required_samples,
    shadow_gate,
    shadow_metric_alpha,
    shadow_metrics,
    srm_alpha,
    stage_alpha,
)
from pairshift.pairwise import Preference, pair_score, parse_preference
from pairshift.policy import CanaryMetrics, CanaryPolicy, Stage, WinRateGate
from pairshift.unit_stats import RatioSums, VariantStats


def shadow_stage(min_hours: float = 2.0) -> Stage:
    """A shadow stage: 10% of units mirrored, no candidate answer served."""
    return Stage(shadow=10, min_hours=min_hours, max_hours=12)


def pairs(units: int, per_unit: int, mean: float, spread: float = 0.25) -> RatioSums:
    """``per_unit`` pairs in each of ``units`` units, half scoring mean - spread and half mean + spread."""
    y = np.full(units, per_unit * mean)
    n = np.full(units, float(per_unit))
    call_sq = units * per_unit * (mean * mean + spread * spread)
    return RatioSums.from_units(y, n, call_sq)


def clustered_pairs(means: list[float], per_unit: int) -> RatioSums:
    """Units whose inputs sway the judge: every pair of a unit scores that unit's mean (0..1)."""
    m = np.asarray(means, dtype=float)
    return RatioSums.from_units(
        m * per_unit, np.full(m.size, float(per_unit)), float((m * m).sum() * per_unit)
    )


CONTROL = variant(20_000, 200)
SAME = variant(20_000, 200)

SHADOW_CASES = [
    # (id, candidate, pairs, elapsed, min_hours, decision, words)
    (
        "clearly worse pairs breach early",
        SAME,
        pairs(2_000, 3, 0.30),
        0.5,
        2,
        "breach",
        ["win_rate: candidate clearly worse"],
    ),
    ("as good as control, after min_hours", SAME, pairs(3_000, 3, 0.5), 3, 2, "pass", ["non-inferior"]),
    ("better than control", SAME, pairs(3_000, 3, 0.7), 3, 2, "pass", []),
    (
        "as good as control, before min_hours",
        SAME,
        pairs(3_000, 3, 0.5),
        1.5,
        2,
        "inconclusive",
        ["has run 1.50 of its 2 minimum hours"],
    ),
    (
        "too few pairs",
        SAME,
        pairs(30, 2, 0.5),
        3,
        2,
        "inconclusive",
        ["too few samples: 60 of the 637 needed judged pairs"],
    ),
    ("no pair yet", SAME, RatioSums(), 3, 2, "inconclusive", ["no pair judged in both orders yet"]),
    # the margin: 0.5 - 0.05 = 0.45
    ("exactly at the margin: never decided", SAME, pairs(200_000, 5, 0.45), 3, 2, "inconclusive", []),
    ("just beyond the margin, much data", SAME, pairs(100_000, 5, 0.43), 3, 2, "breach", ["win_rate"]),
    ("just within the margin, much data", SAME, pairs(100_000, 5, 0.47), 3, 2, "pass", []),
    (
        # 20 units at 0.2 and 20 at 0.62 (mean 0.41): as 10,000 independent pairs this would breach, but
        # it is 40 units' worth of evidence
        "a few units sway the judge: clustered, not a breach",
        SAME,
        clustered_pairs([0.2] * 20 + [0.62] * 20, 250),
        3,
        2,
        "inconclusive",
        ["10,000 pair(s) judged in both orders over 40 unit(s)"],
    ),
    (
        "more errors on the mirrored requests",
        variant(20_000, 1_200),
        pairs(3_000, 3, 0.5),
        0.5,
        2,
        "breach",
        ["error_rate: candidate clearly worse"],
    ),
    (
        "slower on the same requests",
        variant(20_000, 200, latency=2 * LAT),
        pairs(3_000, 3, 0.5),
        3,
        2,
        "breach",
        ["latency_p95: candidate clearly worse"],
    ),
    (
        # stage_gate would call this split broken; a shadow stage has no split
        "half the units: never srm",
        variant(20_000, 200, units=2_000),
        pairs(3_000, 3, 0.5),
        3,
        2,
        "pass",
        [],
    ),
]


@pytest.mark.parametrize(
    ("candidate", "judged", "elapsed", "min_hours", "decision", "words"),
    [c[1:] for c in SHADOW_CASES],
    ids=[c[0] for c in SHADOW_CASES],
)
def test_shadow_gate(
    candidate: VariantStats,
    judged: RatioSums,
    elapsed: float,
    min_hours: float,
    decision: str,
    words: list[str],
) -> None:
    check = shadow_gate(
        CONTROL, candidate, judged, shadow_stage(min_hours), CanaryPolicy(), elapsed_hours=elapsed
    )
    assert check.decision == decision, check.reasons
    text = " | ".join(check.reasons)
    for word in words:
        assert word in text, text
    assert check.samples == {"control": CONTROL.n, "candidate": candidate.n, "pairs": int(judged.n)}


def test_the_clustered_case_would_breach_as_independent_pairs() -> None:
    """The clustered case above only holds because units are clusters: the same pairs as independent draws
    (each its own unit) breach."""
    means = np.array([0.2] * 20 + [0.62] * 20)
    independent = RatioSums.from_units(np.repeat(means, 250), np.ones(10_000), float((means**2).sum() * 250))
    check = shadow_gate(CONTROL, SAME, independent, shadow_stage(), CanaryPolicy(), elapsed_hours=3)
    assert check.decision == "breach"


def test_metrics_payload_and_alpha() -> None:
    policy = CanaryPolicy()
    check = shadow_gate(CONTROL, SAME, pairs(3_000, 3, 0.48), shadow_stage(), policy, elapsed_hours=3)
    assert set(check.metrics) == {"error_rate", "invalid_rate", "latency_p95", "cost_per_call", "win_rate"}
    win = check.metrics["win_rate"]
    assert win["control"] == 0.5 and win["candidate"] == pytest.approx(0.48)
    assert win["difference"] == pytest.approx(0.02) and win["limit"] == 0.05
    assert win["bound"][0] < 0.02 < win["bound"][1] <= 0.05
    assert win["pairs"] == 9_000 and win["units"] == 3_000 and win["verdict"] == "ok"
    # no SRM share: the stage's alpha split over its five metrics
    assert (
        win["alpha"] == pytest.approx(stage_alpha(policy) / 5) == pytest.approx(shadow_metric_alpha(policy))
    )
    assert check.metrics["error_rate"]["alpha"] == win["alpha"]
    # latency reads the order statistics the store fetches for any stage (latency_ranks): their alpha
    assert check.metrics["latency_p95"]["alpha"] == metric_alpha(policy) < win["alpha"]
    assert check.decision == "pass" and check.min_samples >= MIN_SAMPLES_FLOOR


def test_score_is_not_a_shadow_metric_and_win_rate_not_a_live_one() -> None:
    policy = CanaryPolicy()
    assert "score" in gated_metrics(policy) and "win_rate" not in gated_metrics(policy)
    assert shadow_metrics(policy) == [
        "error_rate",
        "invalid_rate",
        "latency_p95",
        "cost_per_call",
        "win_rate",
    ]


def test_an_ungated_win_rate_is_not_judged() -> None:
    policy = CanaryPolicy(metrics=CanaryMetrics(win_rate=None))
    check = shadow_gate(CONTROL, SAME, pairs(2_000, 3, 0.3), shadow_stage(), policy, elapsed_hours=3)
    assert check.decision == "pass" and "win_rate" not in check.metrics
    check = shadow_gate(CONTROL, SAME, RatioSums(), shadow_stage(), policy, elapsed_hours=3)
    assert check.decision == "pass"  # no pair needed when the win rate is not gated


def test_a_margin_of_zero() -> None:
    policy = CanaryPolicy(metrics=CanaryMetrics(win_rate=WinRateGate(max_decrease=0.0)))
    equal = shadow_gate(CONTROL, SAME, pairs(100_000, 5, 0.5), shadow_stage(), policy, elapsed_hours=3)
    assert equal.decision == "inconclusive" and equal.min_samples == UNREACHABLE_SAMPLES
    worse = shadow_gate(CONTROL, SAME, pairs(20_000, 5, 0.46), shadow_stage(), policy, elapsed_hours=3)
    assert worse.decision == "breach"


def test_numeric_min_samples_counts_pairs() -> None:
    policy = CanaryPolicy(min_samples=10_000)
    check = shadow_gate(CONTROL, SAME, pairs(3_000, 3, 0.5), shadow_stage(), policy, elapsed_hours=3)
    assert check.decision == "inconclusive" and check.min_samples == 10_000
    assert "too few samples: 9,000 of the 10,000 needed judged pairs" in " | ".join(check.reasons)
    assert "too few samples: 20,000 of the 10,000" not in " | ".join(check.reasons)
    few_calls = shadow_gate(
        variant(5_000, 50), variant(5_000, 50), pairs(4_000, 3, 0.5), shadow_stage(), policy, elapsed_hours=3
    )
    assert few_calls.decision == "inconclusive"
    assert " | ".join(few_calls.reasons).endswith("too few samples: 5,000 of the 10,000 needed per arm")


def test_auto_min_samples_counts_pairs_and_calls_apart() -> None:
    """Pairs are a sample of the mirrored calls: they need their own count, not the calls' (before, a
    stage with plenty of pairs stayed inconclusive because its pairs were held to the calls' number)."""
    policy = CanaryPolicy()
    judged = pairs(800, 3, 0.5, spread=0.1)
    check = shadow_gate(CONTROL, SAME, judged, shadow_stage(), policy, elapsed_hours=3)
    calls_needed = required_samples(policy, 201 / 20_002, 50.0, alpha=shadow_metric_alpha(policy))
    assert check.min_samples < 2_400 < calls_needed < CONTROL.n
    assert check.decision == "pass", check.reasons
    short = shadow_gate(
        variant(2_000, 20), variant(2_000, 20), judged, shadow_stage(), policy, elapsed_hours=3
    )
    assert short.decision == "inconclusive"
    needed = required_samples(policy, 21 / 2_002, 50.0, alpha=shadow_metric_alpha(policy))
    assert f"too few samples: 2,000 of the {needed:,} needed per arm" in " | ".join(short.reasons)


def test_required_pairs_shapes() -> None:
    policy = CanaryPolicy()
    assert MIN_SAMPLES_FLOOR < required_pairs(policy, 0.1) < required_pairs(policy, 0.25)
    assert required_pairs(policy, 0.25) == required_pairs(policy, 3.0)  # a 0..1 score's variance <= 1/4
    tight = CanaryPolicy(metrics=CanaryMetrics(win_rate=WinRateGate(max_decrease=0.025)))
    assert required_pairs(tight, 0.25) > 3 * required_pairs(policy, 0.25)
    assert required_pairs(policy, 0.1, design_effect=3.0) > 2.5 * required_pairs(policy, 0.1)
    zero = CanaryPolicy(metrics=CanaryMetrics(win_rate=WinRateGate(max_decrease=0.0)))
    assert required_pairs(zero) == UNREACHABLE_SAMPLES
    assert required_pairs(CanaryPolicy(metrics=CanaryMetrics(win_rate=None))) == MIN_SAMPLES_FLOOR


def test_a_shadow_stage_takes_its_share_of_alpha() -> None:
    base = CanaryPolicy()
    stages = [shadow_stage(), *base.stages]  # the shadow flow owns the stage's ordering rules
    policy = base.model_copy(update={"stages": stages})
    assert is_shadow(stages[0]) and not any(is_shadow(s) for s in base.stages)
    assert live_stages(policy) == live_stages(base) + 1 == 5
    live = (live_stages(policy) - 1) * (srm_alpha(policy) + len(gated_metrics(policy)) * metric_alpha(policy))
    shadow = len(shadow_metrics(policy)) * shadow_metric_alpha(policy)
    assert live + shadow == pytest.approx(policy.alpha)  # the union bound over the whole canary


def test_a_position_biased_judge_with_unreadable_replies_does_not_fail_an_identical_candidate() -> None:
    """A judge that answers "A" 80% of the time whatever it sees, and sometimes garbles its reply, judging
    a candidate identical to control: the two orders cancel the bias, garbled pairs drop out, it passes."""
    rng = np.random.default_rng(3)
    units, per_unit = 2_000, 5
    sums, counts, squares = np.zeros(units), np.zeros(units), 0.0
    replies = {"A": '{"winner": "A"}', "B": '```json\n{"winner": "B"}\n```', "bad": "I think the first."}
    for u in range(units):
        for _ in range(per_unit):
            said = rng.choice(["A", "B", "bad"], size=2, p=[0.78, 0.2, 0.02])
            got: list[Preference | None] = [parse_preference(replies[str(s)]) for s in said]
            score = pair_score(got[0], got[1])
            if score is None:
                continue
            sums[u] += score
            counts[u] += 1
            squares += score * score
    judged = RatioSums.from_units(sums, counts, squares)
    assert 0.95 * units * per_unit < judged.n < units * per_unit  # some pairs dropped
    check = shadow_gate(CONTROL, SAME, judged, shadow_stage(), CanaryPolicy(), elapsed_hours=3)
    assert check.decision == "pass", check.reasons
    assert check.metrics["win_rate"]["candidate"] == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize(
    ("judged", "elapsed", "message"),
    [
        (pairs(10, 1, 0.5), -1.0, "elapsed_hours must be a finite number >= 0"),
        (pairs(10, 1, 0.5), math.nan, "elapsed_hours"),
        (pairs(10, 1, 0.5), math.inf, "elapsed_hours"),
        (RatioSums(units=1, y=3.0, n=2.0), 1.0, "pair sums out of range"),  # a pair scores at most 1
        (RatioSums(units=1, y=-1.0, n=2.0), 1.0, "pair sums out of range"),
        (RatioSums(units=3, y=1.0, n=2.0), 1.0, "pair sums out of range"),  # more units than pairs
        (RatioSums(units=0, y=1.0, n=2.0), 1.0, "both or neither must be 0"),
        (RatioSums(units=1, y=1.0, n=2.0, call_sq=1.5), 1.0, "pair sums out of range"),
        (RatioSums(units=1, y=math.nan, n=2.0), 1.0, "must be finite"),
        (RatioSums(units=1, y=1.0, n=math.inf), 1.0, "must be finite"),
    ],
)
def test_bad_inputs_are_refused(judged: RatioSums, elapsed: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        shadow_gate(CONTROL, SAME, judged, shadow_stage(), CanaryPolicy(), elapsed_hours=elapsed)


def test_a_live_stage_is_refused() -> None:
    with pytest.raises(ValueError, match="use stage_gate"):
        shadow_gate(CONTROL, SAME, pairs(10, 1, 0.5), Stage(percent=5), CanaryPolicy(), elapsed_hours=1)


def _load_bench() -> ModuleType:
    path = Path(__file__).resolve().parent.parent / "bench" / "shadow_calibration_bench.py"
    spec = importlib.util.spec_from_file_location("shadow_calibration", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["shadow_calibration"] = module  # dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("drift", "margin"), [(0.0, 0.05), (0.2, 0.05), (0.1, 0.025), (0.0, 0.0)])
def test_calibration_bench_path_agrees_with_shadow_gate(drift: float, margin: float) -> None:
    """bench/shadow_calibration_bench.py vectorises the win-rate gate over canaries and checks; its verdicts,
    bounds and passes must be shadow_gate's (identical, clearly worse, near the margin, margin 0)."""
    bench = _load_bench()
    rng = np.random.default_rng(11)
    sc = bench.Scenario("test", drift=drift, margin=margin)
    sums = bench.simulate(rng, sc, bench.unit_table(rng, sc.judge), 6, 300.0, 96, 24.0)
    policy = bench.policy_for(margin)
    hours = np.arange(1, 97) / 4
    bench.agree_with_shadow_gate(sums, policy, hours, which=6)  # asserts verdict by verdict
    verdicts = bench.gate(sums, policy, hours)
    if drift == 0.2:
        assert verdicts["breach"].any(axis=1).all()
    if drift == 0.0 and margin > 0:
        assert verdicts["pass"][:, -1].all() and not verdicts["breach"].any()
    # the sums are the per-unit sums' sums: n counts pairs, units distinct units, y <= n
    y, n, yy, nn, yn, units, call_sq = sums
    assert (np.diff(n, axis=1) >= 0).all() and (y <= n).all() and (units <= n).all() and (nn >= n).all()
