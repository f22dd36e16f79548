"""Calibration of the canary stage gates on production-like traffic (``make bench``).

Traffic comes from :mod:`pairshift.sim.population`: heavy-tailed calls per unit, heavy-tailed per-unit error
and invalid-output propensities (1% of units fail half their calls), sticky units, a daily cycle with a
random phase. Every stage is checked every ``check_every_minutes`` up to ``max_hours``, with the gate's own
functions (pairshift.unit_stats, pairshift.sequential, pairshift.gates), vectorised over the checks:

- **exact margin** (the real check): the candidate is worse than control by exactly each metric's allowed
  margin, all at once (error and invalid rate +1 point, score -0.02, cost x1.5, latency p95 x1.3); any
  breach is a false rollback, which must stay under the metric's alpha, and the whole canary's under
  ``canary.alpha``;
- **identical candidate**, to compare with the gate these tables replaced (calls treated as independent);
- **detection**: a +2-point error-rate rise at the 5% stage (1 point beyond the margin).

Canaries share a realisation of the population's traffic in blocks (each canary draws its own sticky
assignment); Monte Carlo standard errors come from the spread between blocks. Latency is simulated apart
(one latency per unit, the gate's sample), one realisation per canary.

Run: ``python bench/calibration_bench.py [--quick] [--out bench/results/calibration.md]``.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from calibration_gate import (  # noqa: E402
    METRICS,
    Gate,
    latency_breach,
    new_breach_at,
    old_iid_breach,
)

from pairshift import sequential as seq  # noqa: E402
from pairshift.gates import (  # noqa: E402
    gated_metrics,
    live_stages,
    metric_alpha,
    srm_alpha,
    srm_tau,
    stage_alpha,
)
from pairshift.policy import CanaryPolicy  # noqa: E402
from pairshift.sim.population import Population, Shift, first_latencies, stage_traffic  # noqa: E402

HEAVY_SIGMA = 2.5  # a harsher population: calls per unit far more concentrated on a few units
# Sections of the results file other benches write (kept as they are when this bench rewrites the file).
KEPT_SECTIONS = ("## Shadow stage: the pairwise win-rate gate",)  # bench/shadow_calibration_bench.py


# ---------------------------------------------------------------- scenarios


@dataclass
class Result:
    rates: dict[str, float]
    se: dict[str, float]
    events: dict[str, int]
    n: int
    extra: dict[str, float]


def _summarise(flags: dict[str, list[np.ndarray]], n: int, extra: dict[str, float] | None = None) -> Result:
    """flags: name -> per block, a boolean array over that block's canaries."""
    rates, se, events = {}, {}, {}
    for name, blocks in flags.items():
        per_block = np.array([b.mean() for b in blocks])
        allv = np.concatenate(blocks)
        rates[name] = float(allv.mean())
        events[name] = int(allv.sum())
        se[name] = float(per_block.std(ddof=1) / math.sqrt(len(blocks))) if len(blocks) > 1 else float("nan")
    return Result(rates, se, events, n, extra or {})


def run_margin(
    rng: np.random.Generator,
    policy: CanaryPolicy,
    stage: tuple[float, float, float],
    blocks: int,
    per_block: int,
    rate: float,
    shift: Shift,
    pop: Population | None = None,
) -> Result:
    pct, min_h, max_h = stage
    gate = Gate(policy, pct / 100)
    flags: dict[str, list[np.ndarray]] = {k: [] for k in (*METRICS, "srm", "any")}
    pop = pop or Population()
    for _ in range(blocks):
        traffic = stage_traffic(
            rng, pop, shift, rate_per_s=rate, hours=max_h, check_minutes=policy.check_every_minutes
        )
        block: dict[str, list[bool]] = {k: [] for k in flags}
        for _ in range(per_block):
            arms = traffic.canary(rng, pct / 100)
            anyb = gate.srm(arms)
            block["srm"].append(bool(anyb.any()))
            for metric in METRICS:
                breach, _ = gate.metric(arms, metric)
                block[metric].append(bool(breach.any()))
                anyb = anyb | breach
            block["any"].append(bool(anyb.any()))
        for k, v in block.items():
            flags[k].append(np.array(v))
    return _summarise(flags, blocks * per_block)


def run_identical(
    rng: np.random.Generator,
    policy: CanaryPolicy,
    stage: tuple[float, float, float],
    blocks: int,
    per_block: int,
    rate: float,
    pop: Population | None = None,
) -> Result:
    pct, _, max_h = stage
    gate = Gate(policy, pct / 100)
    names = ("new default", "old default", "new margin 0", "old margin 0")
    flags: dict[str, list[np.ndarray]] = {k: [] for k in names}
    pop = pop or Population()
    old_alpha = 0.05 / len(gated_metrics(policy))  # the replaced gate: all of alpha in every stage
    for _ in range(blocks):
        traffic = stage_traffic(
            rng, pop, Shift(), rate_per_s=rate, hours=max_h, check_minutes=policy.check_every_minutes
        )
        block: dict[str, list[bool]] = {k: [] for k in names}
        for _ in range(per_block):
            arms = traffic.canary(rng, pct / 100)
            block["new default"].append(bool(gate.metric(arms, "error_rate")[0].any()))
            block["old default"].append(bool(old_iid_breach(arms, 0.01, old_alpha).any()))
            block["new margin 0"].append(bool(new_breach_at(arms, 0.0, 0.05).any()))
            block["old margin 0"].append(bool(old_iid_breach(arms, 0.0, 0.05).any()))
        for k, v in block.items():
            flags[k].append(np.array(v))
    return _summarise(flags, blocks * per_block)


def run_detection(
    rng: np.random.Generator,
    policy: CanaryPolicy,
    stage: tuple[float, float, float],
    blocks: int,
    per_block: int,
    rate: float,
    rise: float,
) -> Result:
    pct, min_h, max_h = stage
    gate = Gate(policy, pct / 100)
    hours = (
        np.arange(1, int(round(max_h * 60 / policy.check_every_minutes)) + 1)
        * policy.check_every_minutes
        / 60
    )
    caught: list[np.ndarray] = []
    times: list[float] = []
    pop = Population()
    for _ in range(blocks):
        traffic = stage_traffic(
            rng,
            pop,
            Shift(error=rise),
            rate_per_s=rate,
            hours=max_h,
            check_minutes=policy.check_every_minutes,
        )
        block = []
        for _ in range(per_block):
            arms = traffic.canary(rng, pct / 100)
            breach, _ = gate.metric(arms, "error_rate")
            block.append(bool(breach.any()))
            if breach.any():
                times.append(float(hours[int(breach.argmax())]))
        caught.append(np.array(block))
    extra = {
        "median_hours": float(np.median(times)) if times else float("nan"),
        "p90_hours": float(np.quantile(times, 0.9)) if times else float("nan"),
    }
    return _summarise({"caught": caught}, blocks * per_block, extra)


def run_latency(
    rng: np.random.Generator,
    policy: CanaryPolicy,
    stage: tuple[float, float, float],
    canaries: int,
    rate: float,
    ratio: float,
) -> Result:
    pct, _, max_h = stage
    assert policy.metrics.latency_p95 is not None
    checks = int(round(max_h * 60 / policy.check_every_minutes))
    pop = Population()
    out = []
    for _ in range(canaries):
        samples = first_latencies(
            rng,
            pop,
            Shift(latency_ratio=ratio),
            pct / 100,
            rate_per_s=rate,
            hours=max_h,
            check_minutes=policy.check_every_minutes,
        )
        out.append(
            bool(
                latency_breach(
                    samples, checks, policy.metrics.latency_p95.max_ratio, metric_alpha(policy)
                ).any()
            )
        )
    blocks = [np.array(out[i : i + 50]) for i in range(0, len(out), 50)]
    return _summarise({"latency_p95": blocks}, canaries)


def srm_power(policy: CanaryPolicy, pct: float, relative: float = 0.1, power: float = 0.8) -> int:
    """Units after which a ``relative`` mismatch of the candidate share is flagged with ``power``.

    Normal approximation of the observed share; the always-valid half-width is the gate's.
    """
    share = pct / 100
    observed = share * (1 + relative)
    z = float(seq.sps.norm.ppf(power))
    lo, hi = 100, 10**9
    while lo < hi:  # smallest N with P(share estimate - width > share) >= power
        n = (lo + hi) // 2
        sd = math.sqrt(share * (1 - share) / n)
        width = float(seq.half_width(share * (1 - share) / n, srm_tau(share), srm_alpha(policy)))
        lo, hi = (lo, n) if abs(observed - share) - width >= z * sd else (n + 1, hi)
    return lo


# ---------------------------------------------------------------- report


def _cp_upper(events: int, n: int, level: float = 0.95) -> float:
    return float(seq.sps.beta.ppf(level, events + 1, n - events)) if events < n else 1.0


def _rate(r: Result, name: str) -> str:
    return f"{r.rates[name]:.4f} ({r.events[name]}/{r.n}; 95% upper {_cp_upper(r.events[name], r.n):.4f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few canaries (smoke test)")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--rate", type=float, default=10.0, help="mean requests per second, all units")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "calibration.md")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    policy = CanaryPolicy()
    stages = [(s.percent, s.min_hours, s.max_hours or s.min_hours) for s in policy.stages[:3]]
    m = policy.metrics
    assert m.error_rate and m.score and m.cost_per_call and m.latency_p95
    at_margin = Shift(
        error=m.error_rate.max_increase,
        invalid=m.error_rate.max_increase,
        score=m.score.max_decrease,
        cost_ratio=m.cost_per_call.max_ratio,
    )
    size = (
        {1.0: (40, 50), 5.0: (25, 40), 20.0: (20, 20)}
        if not args.quick
        else {p: (2, 5) for p, _, _ in stages}
    )
    lat_size = {1.0: 1000, 5.0: 500, 20.0: 200} if not args.quick else {p: 20 for p, _, _ in stages}
    started = time.perf_counter()
    margin_rows, lat_rows = [], []
    total_bound = 0.0
    for stage in stages:
        b, k = size[stage[0]]
        r = run_margin(rng, policy, stage, b, k, args.rate, at_margin)
        lat = run_latency(rng, policy, stage, lat_size[stage[0]], args.rate, m.latency_p95.max_ratio)
        margin_rows.append((stage, r))
        lat_rows.append(lat)
        total_bound += r.rates["any"] + lat.rates["latency_p95"]
    ident = run_identical(rng, policy, stages[0], *(size[1.0] if not args.quick else (2, 5)), args.rate)
    heavy = Population(activity_sigma=HEAVY_SIGMA)
    heavy_size = (20, 50) if not args.quick else (2, 5)
    ident_heavy = run_identical(rng, policy, stages[0], *heavy_size, args.rate, heavy)
    margin_heavy = run_margin(rng, policy, stages[0], *heavy_size, args.rate, at_margin, heavy)
    det = run_detection(rng, policy, stages[1], *((20, 25) if not args.quick else (2, 5)), args.rate, 0.02)
    elapsed = time.perf_counter() - started
    text = _document(
        args,
        policy,
        stages,
        margin_rows,
        lat_rows,
        (ident, ident_heavy, margin_heavy),
        det,
        total_bound,
        elapsed,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + _kept(args.out))
    print(text)


def _kept(out: Path) -> str:
    """The sections of ``out`` that other benches write (:data:`KEPT_SECTIONS`), to keep them."""
    old = out.read_text() if out.exists() else ""
    kept = [
        m.group(0).rstrip("\n")
        for head in KEPT_SECTIONS
        if (m := re.search(rf"^{re.escape(head)}\n.*?(?=^## |\Z)", old, re.S | re.M))
    ]
    return "".join("\n" + section + "\n" for section in kept)


def _document(args, policy, stages, margin_rows, lat_rows, idents, det, total_bound, elapsed) -> str:  # type: ignore[no-untyped-def]
    ident, heavy, heavy_margin = idents
    alpha_m = metric_alpha(policy)
    lines = [
        "# Canary gate calibration on production-like traffic",
        "",
        "Generated by `python bench/calibration_bench.py` (`make bench`); do not edit by hand.",
        "",
        "## Traffic and gate",
        "",
        f"- {args.rate:g} requests/s on average over a population of {Population().units:,} units: "
        "log-normal calls per "
        "unit (sigma 1.5), a daily cycle (amplitude 0.6, random phase per stage), sticky assignment per "
        "unit;",
        "- per-unit error propensity: 1% of units fail 50% of their calls, the rest Beta (mean 0.5%, "
        "concentration 20): "
        "1% overall; invalid outputs 2% overall (0.5% of units at 60%); score on 30% of calls (per-unit "
        "Beta mean "
        "0.8); cost and latency log-normal per unit and per call, latency +-15% with the daily load;",
        f"- default policy: canary.alpha {policy.alpha:g} over {live_stages(policy)} stages with a control "
        f"(alpha_scope canary) = {stage_alpha(policy):.4g} a stage: SRM check {srm_alpha(policy):.4g}, "
        "each of "
        f"{len(gated_metrics(policy))} metrics {alpha_m:.5f}; checks every {policy.check_every_minutes:g} "
        "minutes "
        "up to max_hours;",
        "- Monte Carlo: each row gives the rate, the events out of the canaries, and the 95% "
        "Clopper-Pearson upper "
        "bound; canaries share a traffic realisation in blocks, and +- is the standard error between blocks. "
        f"Seed {args.seed}; run time {elapsed:.0f} s on this machine.",
        "",
        "## False rollbacks with every metric exactly at its margin",
        "",
        "The candidate is worse than control by exactly what the policy allows, on every metric at once "
        "(error and "
        f"invalid rate +{policy.metrics.error_rate.max_increase * 100:g} point, score "
        f"-{policy.metrics.score.max_decrease:g}, "
        f"cost x{policy.metrics.cost_per_call.max_ratio:g}, latency p95 "
        f"x{policy.metrics.latency_p95.max_ratio:g}). "
        f"Each metric's false-breach rate must stay under its alpha {alpha_m:.5f}.",
        "",
        "| stage | canaries | error_rate | invalid_rate | score | cost_per_call | latency_p95 (canaries) "
        "| SRM | any (ratio metrics + SRM) +- se |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for ((pct, min_h, max_h), r), lat in zip(margin_rows, lat_rows, strict=True):
        lines.append(
            f"| {pct:g}% ({min_h:g}-{max_h:g} h) | {r.n:,} | {_rate(r, 'error_rate')} | "
            f"{_rate(r, 'invalid_rate')} | "
            f"{_rate(r, 'score')} | {_rate(r, 'cost_per_call')} | {_rate(lat, 'latency_p95')} | "
            f"{_rate(r, 'srm')} | "
            f"{r.rates['any']:.4f} +- {r.se['any']:.4f} |"
        )
    fifty = stage_alpha(policy)
    lines += [
        "",
        f"Whole canary (union bound over stages): the measured rates of the 1%, 5% and 20% stages (ratio "
        "metrics, SRM "
        f"and latency) sum to {total_bound:.4f}; the 50% stage is not simulated (its traffic is 4x the "
        "20% stage's) "
        f"and counts with its whole budget {fifty:.4f}: {total_bound + fifty:.4f} <= canary.alpha "
        f"{policy.alpha:g}.",
        "",
        "## An identical candidate at the 1% stage: the gate these tables replaced",
        "",
        "Error rate only, on the traffic above and on a harsher population whose calls per unit are "
        "log-normal "
        f"with sigma {HEAVY_SIGMA:g} (a few units make most calls). *old*: calls treated as independent, "
        "alpha "
        "0.01 for the metric in every stage (the replaced default); *new*: ratio estimator over units "
        "with the "
        "cluster-robust variance.",
        "",
        f"| test | false rollbacks, sigma 1.5 | false rollbacks, sigma {HEAVY_SIGMA:g} |",
        "|---|---|---|",
        f"| new, default policy (margin 1 point, alpha {alpha_m:.5f}) | {_rate(ident, 'new default')} | "
        f"{_rate(heavy, 'new default')} |",
        f"| old, default policy (margin 1 point, alpha {0.05 / 5:g}) | {_rate(ident, 'old default')} | "
        f"{_rate(heavy, 'old default')} |",
        f"| new, margin 0, alpha 0.05 | {_rate(ident, 'new margin 0')} | {_rate(heavy, 'new margin 0')} |",
        f"| old, margin 0, alpha 0.05 | {_rate(ident, 'old margin 0')} | {_rate(heavy, 'old margin 0')} |",
        "",
        f"Every metric exactly at its margin on the sigma {HEAVY_SIGMA:g} population, 1% stage: any false "
        "rollback "
        f"(ratio metrics and SRM) {_rate(heavy_margin, 'any')}; error rate "
        f"{_rate(heavy_margin, 'error_rate')}, "
        f"invalid rate {_rate(heavy_margin, 'invalid_rate')}, score {_rate(heavy_margin, 'score')}, cost "
        f"{_rate(heavy_margin, 'cost_per_call')}.",
        "",
        "## Detection: +2 points of error rate at the 5% stage",
        "",
        "| canaries | caught within the stage (24 h) | median hours to the breach | 90th percentile |",
        "|---|---|---|---|",
        f"| {det.n:,} | {det.rates['caught']:.3f} +- {det.se['caught']:.3f} "
        f"({det.events['caught']}/{det.n}) | "
        f"{det.extra['median_hours']:.2f} | {det.extra['p90_hours']:.2f} |",
        "",
        "## Power of the SRM check",
        "",
        "Units a stage needs before a 10% relative mismatch of the candidate share is flagged with 80% power "
        f"(always-valid test at alpha {srm_alpha(policy):.4g}, normal approximation):",
        "",
        "| stage | units | a broken split (half the share) |",
        "|---|---|---|",
        *[
            f"| {pct:g}% | {srm_power(policy, pct):,} | {srm_power(policy, pct, -0.5):,} |"
            for pct, _, _ in stages
        ],
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
