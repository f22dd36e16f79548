"""Calibration of the shadow stage's win-rate gate (issue 17 item 3; ``make bench``).

Writes the section ``## Shadow stage: the pairwise win-rate gate`` of ``bench/results/calibration.md`` (the
file's other sections, written by bench/calibration_bench.py, are kept).

Each simulated canary runs one shadow stage: judged pairs arrive at ``--pairs-per-hour`` over the stage's
``max_hours``, each from a unit drawn from a heavy-tailed (log-normal) activity distribution, so a few units
contribute many pairs (sticky users). Each pair is judged in both orders by a simulated judge:

- the pair's latent quality difference (candidate - control, logit scale) is the candidate's shift, plus
  the unit's own preference (normal, per unit and canary: a user whose inputs make the judge prefer one
  side), plus the input's own noise (normal, shared by the two orders: the same two outputs);
- each order is a tie with a fixed probability, else the candidate's position wins with the logistic of the
  quality difference plus (shown as A) or minus (shown as B) the judge's **position bias**;
- the pair's score is :func:`pairshift.pairwise.pair_score` of the two verdicts (0, 0.25, 0.5, 0.75 or 1).

Every canary is checked every ``check_every_minutes`` from the start of the stage up to ``max_hours`` (a
breach may happen at any check; a pass needs ``min_hours``), with the gate's own maths: the cumulative
per-unit sums (:class:`pairshift.unit_stats.RatioSums`'s fields) at each check,
:func:`pairshift.unit_stats.ratio_variance`, :func:`pairshift.sequential.confidence_sequence` at
:func:`pairshift.gates.shadow_metric_alpha`, and for a pass :func:`pairshift.gates.required_pairs`; a few
canaries of every row are checked verdict by verdict against :func:`pairshift.gates.shadow_gate` itself.
Vectorised with numpy over pairs, canaries and checks.

Run: ``python bench/shadow_calibration_bench.py [--quick] [--out bench/results/calibration.md]``.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import optimize
from scipy import stats as sps
from scipy.special import expit

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from pairshift import sequential as seq  # noqa: E402
from pairshift.gates import (  # noqa: E402
    MAX_DESIGN_EFFECT,
    MIN_SAMPLES_FLOOR,
    PAIR_SCORE_VARIANCE,
    live_stages,
    mixture_tau,
    required_pairs,
    shadow_gate,
    shadow_metric_alpha,
    shadow_metrics,
    stage_alpha,
)
from pairshift.pairwise import pair_score  # noqa: E402
from pairshift.policy import CanaryMetrics, CanaryPolicy, Stage, WinRateGate  # noqa: E402
from pairshift.unit_stats import RatioSums, VariantStats, ratio_variance  # noqa: E402

SECTION = "## Shadow stage: the pairwise win-rate gate"
SHADOW = Stage(shadow=10, min_hours=6, max_hours=24)
SUMS = ("y", "n", "yy", "nn", "yn", "units", "call_sq")
BATCH = 500  # canaries simulated at once, each batch with a fresh population of units
POWER_BATCH = 50  # power rows have fewer canaries: 50 a population, so no row rests on one population
PREFERENCES = ("A", "B", "tie", None)
# pair_score of every (candidate shown as A, candidate shown as B) reply; NaN where the pair is dropped
PAIR_SCORES = np.array(
    [[np.nan if (v := pair_score(a, b)) is None else v for b in PREFERENCES] for a in PREFERENCES]  # type: ignore[arg-type]
)
GH_NODES, GH_WEIGHTS = np.polynomial.hermite_e.hermegauss(80)  # E f(Z), Z ~ N(0, 1)


@dataclass(frozen=True)
class Judge:
    """The simulated judge and traffic (module docstring)."""

    units: int = 20_000  # units that may send mirrored requests
    activity_sigma: float = 2.0  # log-normal sigma of a unit's share of pairs (heavy tail)
    unit_sd: float = 1.0  # per-unit preference of the judge, logit scale
    input_sd: float = 1.5  # per-input quality noise, logit scale
    bias: float = 1.0  # position bias toward output A, logit scale (0.73 for A on equal outputs)
    tie: float = 0.15  # probability an order is judged a tie
    unreadable: float = 0.01  # probability a reply cannot be read (its pair is dropped)


@dataclass(frozen=True)
class Scenario:
    name: str
    shift: float = 0.0  # the candidate's quality shift, logit scale, every input
    drift: float = 0.0  # share of inputs the candidate clearly loses in both orders (prose-wrapping drift)
    margin: float = 0.05
    judge: Judge = field(default_factory=Judge)
    pairs_per_hour: float | None = None  # None: --pairs-per-hour


def policy_for(margin: float) -> CanaryPolicy:
    """The default canary with a shadow stage first (so 5 stages share canary.alpha) and this margin."""
    base = CanaryPolicy(metrics=CanaryMetrics(win_rate=WinRateGate(max_decrease=margin)))
    return base.model_copy(update={"stages": [SHADOW, *base.stages]})


def expected_score(shift: float, judge: Judge) -> float:
    """The population's mean pair score (exact: the latent difference is normal; Gauss-Hermite)."""
    q = shift + math.hypot(judge.unit_sd, judge.input_sd) * GH_NODES
    first = float(GH_WEIGHTS @ expit(q + judge.bias)) / math.sqrt(2 * math.pi)
    second = float(GH_WEIGHTS @ expit(q - judge.bias)) / math.sqrt(2 * math.pi)
    return judge.tie * 0.5 + (1 - judge.tie) * (first + second) / 2


def shift_for(target: float, judge: Judge) -> float:
    """The quality shift at which the mean pair score is ``target``."""
    return float(optimize.brentq(lambda s: expected_score(s, judge) - target, -10, 10, xtol=1e-12))


UNIT_TABLE_BITS = 20  # units are drawn through a 1M-entry inverse-CDF table (weights resolved to 1e-6)


def unit_table(rng: np.random.Generator, judge: Judge) -> np.ndarray:
    """A population's units by inverse CDF: ``table[floor(u * len)]`` is a unit drawn by activity."""
    weights = rng.lognormal(0.0, judge.activity_sigma, judge.units)
    cdf = np.cumsum(weights / weights.sum())
    grid = (np.arange(1 << UNIT_TABLE_BITS) + 0.5) / (1 << UNIT_TABLE_BITS)
    return np.minimum(np.searchsorted(cdf, grid), judge.units - 1).astype(np.int64)


def simulate(
    rng: np.random.Generator,
    sc: Scenario,
    table: np.ndarray,
    canaries: int,
    pairs_per_hour: float,
    checks: int,
    hours: float,
) -> np.ndarray:
    """Cumulative sums at every check: shape (len(SUMS), canaries, checks)."""
    j = sc.judge
    per = rng.poisson(pairs_per_hour * hours, canaries)
    total = int(per.sum())
    canary = np.repeat(np.arange(canaries, dtype=np.int64), per)
    unit = table[rng.integers(0, table.size, total)]
    check = rng.integers(0, checks, total)
    # one sort by (canary, unit, check): a unit's pairs in time order (order within a check does not matter)
    cell = np.sort((canary * j.units + unit) * checks + check)
    key, check = cell // checks, cell % checks
    new = np.r_[True, key[1:] != key[:-1]]
    group = np.cumsum(new) - 1
    # the pair's latent quality difference, shared by its two orders: shift + the unit's + the input's
    q = sc.shift + j.unit_sd * rng.standard_normal(int(group[-1]) + 1)[group]
    q += j.input_sd * rng.standard_normal(total)

    def preference(shown_as_a: bool) -> np.ndarray:
        """The judge's reply in one order: 0 A, 1 B, 2 tie, 3 unreadable (one uniform decides)."""
        u = rng.random(total)
        rest = 1.0 - j.tie - j.unreadable
        won = u < rest * expit(q + j.bias if shown_as_a else q - j.bias)
        said = np.where(won == shown_as_a, 0, 1)  # the candidate's position when it won, else control's
        return np.where(u >= rest + j.tie, 3, np.where(u >= rest, 2, said))

    first, second = preference(True), preference(False)
    if sc.drift:  # clearly worse on these inputs: control's position wins in both orders
        lost = rng.random(total) < sc.drift
        first, second = np.where(lost, 1, first), np.where(lost, 0, second)
    s = PAIR_SCORES[first, second]
    kept = ~np.isnan(s)  # either order unreadable: the pair is dropped (pair_score None)
    s, key, check = s[kept], key[kept], check[kept]
    total = s.size
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    group = np.cumsum(np.r_[True, key[1:] != key[:-1]]) - 1
    # each pair's increments of its unit's sums (the unit's sums before the pair: exclusive cumsum in group)
    n_prev = (np.arange(total) - starts[group]).astype(float)
    cs = np.cumsum(s)
    y_prev = cs - s - np.r_[0.0, cs][starts][group]
    inc = {
        "y": s,
        "n": None,
        "yy": (2 * y_prev + s) * s,
        "nn": 2 * n_prev + 1,
        "yn": y_prev + (n_prev + 1) * s,
        "units": (n_prev == 0).astype(float),
        "call_sq": s * s,
    }
    where = (key // j.units) * checks + check
    out = np.empty((len(SUMS), canaries, checks))
    for i, name in enumerate(SUMS):
        out[i] = np.bincount(where, weights=inc[name], minlength=canaries * checks).reshape(canaries, checks)
    return out.cumsum(axis=2)


def gate(sums: np.ndarray, policy: CanaryPolicy, hours: np.ndarray) -> dict[str, np.ndarray]:
    """The win-rate verdicts of :func:`pairshift.gates.shadow_gate` at every check (vectorised)."""
    assert policy.metrics.win_rate is not None
    margin = policy.metrics.win_rate.max_decrease
    y, n, yy, nn, yn, units, call_sq = sums
    mean, var = ratio_variance("bounded", y, n, yy, nn, yn, units, call_sq)
    decrease = 0.5 - mean
    lo, hi = seq.confidence_sequence(decrease, var, mixture_tau(margin), shadow_metric_alpha(policy))
    lo, hi = np.where(n > 0, lo, -np.inf), np.where(n > 0, hi, np.inf)
    _, per_pair = seq.bounded_mean(y, call_sq, n)
    with np.errstate(divide="ignore", invalid="ignore"):
        deff = np.where(np.isfinite(var) & (per_pair > 0), var / per_pair, 1.0)
        deff = np.clip(deff, 1.0, MAX_DESIGN_EFFECT)
    pair_var = np.where(n > 0, per_pair * n, 0.25)
    needed = _required(policy, pair_var, deff)
    ok = (hi <= margin) & (n >= needed) & (hours >= SHADOW.min_hours)
    return {"breach": lo > margin, "pass": ok, "mean": mean, "lo": lo, "hi": hi, "needed": needed}


def _required(policy: CanaryPolicy, pair_var: np.ndarray, deff: np.ndarray) -> np.ndarray:
    """:func:`pairshift.gates.required_pairs`, vectorised (the same formula, checked against it)."""
    assert policy.metrics.win_rate is not None
    margin = policy.metrics.win_rate.max_decrease
    v = seq.required_variance(margin, mixture_tau(margin), shadow_metric_alpha(policy), policy.power)
    if v <= 0:
        return np.full(pair_var.shape, float(required_pairs(policy)))
    per_pair = np.minimum(np.maximum(pair_var, 1e-4), PAIR_SCORE_VARIANCE)
    return np.maximum(float(MIN_SAMPLES_FLOOR), np.ceil(np.maximum(deff, 1.0) * per_pair / v))


def agree_with_shadow_gate(sums: np.ndarray, policy: CanaryPolicy, hours: np.ndarray, which: int = 5) -> None:
    """A few canaries at a few checks, verdict by verdict, through :func:`pairshift.gates.shadow_gate`."""
    v = gate(sums, policy, hours)
    calls = np.full(2_000, 100.0)
    same = VariantStats.from_units(
        calls,
        calls / 100,
        cost_sum=calls * 0.01,
        cost_sumsq=float(calls.sum()) * 1e-4 * 1.01,
        first_latency=np.linspace(100.0, 300.0, calls.size),
    )
    assert policy.metrics.win_rate is not None
    margin = policy.metrics.win_rate.max_decrease
    for c in range(min(which, sums.shape[1])):
        for k in (0, sums.shape[2] // 3, sums.shape[2] - 1):
            y, n, yy, nn, yn, units, call_sq = (float(a) for a in sums[:, c, k])
            pairs = RatioSums(units=int(units), y=y, n=n, yy=yy, nn=nn, yn=yn, call_sq=call_sq)
            check = shadow_gate(same, same, pairs, SHADOW, policy, elapsed_hours=float(hours[k]))
            win = check.metrics["win_rate"]
            lo, hi = v["lo"][c, k], v["hi"][c, k]
            expect = "breach" if lo > margin else "ok" if hi <= margin else "inconclusive"
            assert win["verdict"] == expect, (win, expect)
            if n > 0:
                assert math.isclose(win["bound"][0], lo, rel_tol=1e-9, abs_tol=1e-12)
            assert (check.decision == "pass") == bool(v["pass"][c, k]), (check.reasons, v["needed"][c, k])


@dataclass
class Outcome:
    runs: int
    breached: int
    passed: int
    breach_pairs: list[float]
    breach_units: list[float]
    breach_hours: list[float]
    pass_hours: list[float]
    mean_score: float
    pairs: float
    units: float
    design_effect: float
    pair_variance: float = 0.0


def run(rng: np.random.Generator, sc: Scenario, canaries: int, pairs_per_hour: float, batch: int) -> Outcome:
    policy = policy_for(sc.margin)
    pairs_per_hour = sc.pairs_per_hour or pairs_per_hour
    minutes = policy.check_every_minutes
    hours_total = float(SHADOW.max_hours or SHADOW.min_hours)
    checks = int(round(hours_total * 60 / minutes))
    hours = np.arange(1, checks + 1) * minutes / 60
    out = Outcome(canaries, 0, 0, [], [], [], [], 0.0, 0.0, 0.0, 0.0)
    means, pairs, units, deffs, pvars = [], [], [], [], []
    done = 0
    while done < canaries:
        size = min(batch, canaries - done)
        table = unit_table(rng, sc.judge)  # a fresh population of activities every batch
        sums = simulate(rng, sc, table, size, pairs_per_hour, checks, hours_total)
        if done == 0:
            agree_with_shadow_gate(sums, policy, hours)
        v = gate(sums, policy, hours)
        breach = v["breach"]
        first_breach = np.where(breach.any(axis=1), breach.argmax(axis=1), checks)
        passing = v["pass"] & (np.arange(checks) < first_breach[:, None])
        out.breached += int(breach.any(axis=1).sum())
        out.passed += int(passing.any(axis=1).sum())
        hit = np.flatnonzero(first_breach < checks)
        out.breach_pairs += list(sums[SUMS.index("n"), hit, first_breach[hit]])
        out.breach_units += list(sums[SUMS.index("units"), hit, first_breach[hit]])
        out.breach_hours += list(hours[first_breach[hit]])
        passed = np.flatnonzero(passing.any(axis=1))
        out.pass_hours += list(hours[passing[passed].argmax(axis=1)])
        means.append(v["mean"][:, -1])
        pairs.append(sums[SUMS.index("n"), :, -1])
        units.append(sums[SUMS.index("units"), :, -1])
        y, n, yy, nn, yn, u, cq = sums[:, :, -1]
        _, clustered = ratio_variance("bounded", y, n, yy, nn, yn, u, cq)
        _, per_pair = seq.bounded_mean(y, cq, n)
        deffs.append(clustered / per_pair)
        pvars.append(per_pair * n)
        done += size
    out.mean_score = float(np.mean(np.concatenate(means)))
    out.pairs = float(np.mean(np.concatenate(pairs)))
    out.units = float(np.mean(np.concatenate(units)))
    out.design_effect = float(np.median(np.concatenate(deffs)))
    out.pair_variance = float(np.median(np.concatenate(pvars)))
    return out


def _cp(events: int, n: int, level: float = 0.95) -> tuple[float, float]:
    lo = float(sps.beta.ppf((1 - level) / 2, events, n - events + 1)) if events > 0 else 0.0
    hi = float(sps.beta.ppf(1 - (1 - level) / 2, events + 1, n - events)) if events < n else 1.0
    return lo, hi


def _rate(events: int, n: int) -> str:
    lo, hi = _cp(events, n)
    return f"{events / n:.4f} ({events:,}/{n:,}; 95% interval [{lo:.4f}, {hi:.4f}])"


def _median(xs: list[float]) -> str:
    return f"{np.median(xs):,.0f}" if xs else "-"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few canaries (smoke test)")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--canaries", type=int, default=4_000, help="per main calibration row")
    parser.add_argument("--power-canaries", type=int, default=400, help="per power row")
    parser.add_argument("--pairs-per-hour", type=float, default=300.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "calibration.md")
    args = parser.parse_args()
    if args.quick:
        args.canaries, args.power_canaries = 300, 100
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    judge = Judge()
    harsh = Judge(activity_sigma=2.5, unit_sd=2.0)
    at_margin = shift_for(0.45, judge)
    few = max(args.canaries // 5, 1)
    calibration = [
        (Scenario("identical candidate, default margin 0.05"), args.canaries),
        (
            Scenario(
                "identical candidate at its margin (margin 0: a breach = shown worse at all)", margin=0.0
            ),
            args.canaries,
        ),
        (
            Scenario("candidate exactly at the margin (mean pair score 0.45)", shift=at_margin),
            2 * args.canaries,
        ),
        (
            Scenario("identical candidate, harsher users (activity sigma 2.5, preference sd 2)", judge=harsh),
            few,
        ),
        (Scenario("exactly at the margin, harsher users", shift=shift_for(0.45, harsh), judge=harsh), few),
    ]
    power = [
        Scenario("drift on 10% of inputs (mean 0.45), margin 0.05", drift=0.10),
        Scenario("drift on 10% of inputs (mean 0.45), margin 0.025", drift=0.10, margin=0.025),
        Scenario(
            "drift on 10%, margin 0.025, 1,200 pairs an hour", drift=0.1, margin=0.025, pairs_per_hour=1200
        ),
        Scenario(
            "drift on 10%, margin 0.025, 3,000 pairs an hour", drift=0.1, margin=0.025, pairs_per_hour=3000
        ),
        Scenario("drift on 20% of inputs (mean 0.40), margin 0.05", drift=0.20),
    ]
    rows = [(sc, run(rng, sc, n, args.pairs_per_hour, BATCH)) for sc, n in calibration]
    power_rows = [(sc, run(rng, sc, args.power_canaries, args.pairs_per_hour, POWER_BATCH)) for sc in power]
    elapsed = time.perf_counter() - started
    text = _markdown(args, judge, rows, power_rows, elapsed)
    _write_section(args.out, text)
    print(text)
    return 0


def _markdown(args, judge, rows, power_rows, elapsed) -> str:  # type: ignore[no-untyped-def]
    policy = policy_for(0.05)
    alpha_w = shadow_metric_alpha(policy)
    hours = float(SHADOW.max_hours or SHADOW.min_hours)
    checks = int(hours * 60 / policy.check_every_minutes)
    stage = f"{{shadow: {SHADOW.shadow:g}, min_hours: {SHADOW.min_hours:g}, max_hours: {hours:g}}}"
    lines = [
        SECTION,
        "",
        "Generated by `python bench/shadow_calibration_bench.py` (`make bench`); do not edit by hand.",
        "",
        f"- A shadow stage `{stage}` first in the default canary: canary.alpha {policy.alpha:g} over "
        f"{live_stages(policy)} stages with a control = {stage_alpha(policy):.4g} a stage, no SRM share, "
        f"{len(shadow_metrics(policy))} metrics: the win rate's alpha {alpha_w:.5f}. Checked every "
        f"{policy.check_every_minutes:g} minutes from the start up to {hours:g} h ({checks} checks; a breach "
        "at any check, a pass from min_hours with min_samples auto).",
        f"- {args.pairs_per_hour:g} judged pairs an hour (about {args.pairs_per_hour * hours:,.0f} a stage) "
        f"from {judge.units:,} units with log-normal activity (sigma {judge.activity_sigma:g}): "
        f"heavy-tailed pairs per unit, a fresh population every {BATCH} canaries ({POWER_BATCH} in power "
        "rows). Each pair judged in both orders; latent quality difference = the candidate's shift + the "
        "unit's preference (sd "
        f"{judge.unit_sd:g}, logit: a user whose inputs make the judge prefer one side) + the input's (sd "
        f"{judge.input_sd:g}); ties {judge.tie:.0%} per order; position bias {judge.bias:g} on the logit "
        f"toward output A (the judge says A on {expit(judge.bias):.0%} of untied equal pairs); "
        f"{judge.unreadable:.0%} of replies unreadable (their pairs dropped).",
        "- Monte Carlo: 95% Clopper-Pearson intervals. A few canaries of every row are checked verdict by "
        f"verdict against `pairshift.gates.shadow_gate`. Seed {args.seed}; run time {elapsed:.0f} s on this "
        "machine (2 cores, shared with other work).",
        "",
        "### False breaches",
        "",
        "Every candidate here is within its margin (identical) or exactly at it, so any breach is false; "
        f"the rate must stay under the win rate's alpha {alpha_w:.5f} (its share of canary.alpha).",
        "",
        "| scenario | false breaches | mean pair score | pairs / units per stage | design effect "
        "| passed by max_hours (median hours) |",
        "|---|---|---|---|---|---|",
    ]
    for sc, o in rows:
        passed = f"{np.median(o.pass_hours):.2f}" if o.pass_hours else "-"
        lines.append(
            f"| {sc.name} | {_rate(o.breached, o.runs)} | {o.mean_score:.4f} | "
            f"{o.pairs:,.0f} / {o.units:,.0f} | {o.design_effect:.2f} | {o.passed / o.runs:.3f} ({passed}) |"
        )
    var, deff = rows[0][1].pair_variance, rows[0][1].design_effect
    loose = required_pairs(policy_for(0.05), var, deff)
    tight = required_pairs(policy_for(0.025), var, deff)
    lines += [
        "",
        "Design effect: the median over canaries of the cluster-robust over the per-pair variance of the "
        "mean pair score at the end of the stage. With the harsher users an identical candidate seldom "
        "shows non-inferiority within the stage (min_samples auto asks for the design effect times more "
        "pairs): the stage ends inconclusive and asks a human, it does not roll back.",
        "",
        "### Power: the prose-wrapping drift",
        "",
        "On a share of inputs the candidate's answer is clearly worse (its JSON wrapped in prose): the judge "
        "prefers control in both orders, whatever its position bias; on the other inputs the candidate is "
        "identical. A drift on 10% of inputs loses 10% more pairs outright and lowers the mean pair score to "
        "0.45: *exactly* the default margin 0.05, which the gate is built not to roll back (it is caught at "
        "about the false-breach rate). To catch it, set `canary.metrics.win_rate.max_decrease: 0.025`; the "
        f"price: an identical candidate then needs {tight:,} judged pairs to pass instead of {loose:,} "
        f"(`required_pairs` at the identical row's pair variance {var:.3f} and design effect {deff:.2f}), "
        f"more than a {hours:g} h stage of {args.pairs_per_hour:g} pairs an hour judges.",
        "",
        "| scenario | caught within the stage | median pairs at the breach | median units | median hours |",
        "|---|---|---|---|---|",
    ]
    for sc, o in power_rows:
        at = f"{np.median(o.breach_hours):.2f}" if o.breach_hours else "-"
        lines.append(
            f"| {sc.name} | {_rate(o.breached, o.runs)} | {_median(o.breach_pairs)} | "
            f"{_median(o.breach_units)} | {at} |"
        )
    lines.append("")
    return "\n".join(lines)


def _write_section(out: Path, text: str) -> None:
    """Replace this bench's section of ``out`` (or append it), keeping every other section as it is."""
    old = out.read_text() if out.exists() else "# Canary gate calibration on production-like traffic\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    new = pattern.sub(lambda _: text + "\n", old) if pattern.search(old) else old.rstrip("\n") + "\n\n" + text
    out.write_text(new.rstrip("\n") + "\n")


if __name__ == "__main__":
    sys.exit(main())
