"""Operating characteristic of the eval gate (``make bench``): P(pass), P(fail) against the true difference.

Simulated evals of ``n`` cases x 3 epochs, two arms (baseline, joint), vectorised with numpy:

- cases: 70% pass reliably (p 0.98), 15% fail reliably (p 0.02), 15% are flaky (p uniform in 0.2-0.8): the
  epoch-to-epoch noise real evals show;
- discordance: 15% of cases change between the arms (reliable passes that regress to 0.02, reliable failures
  that improve to 0.98), in the proportion that gives the true difference of the row;
- blocking noise: every call of both arms fails ``is-json`` (a blocking type) at random with probability
  ``--blocking-noise`` (0.5% by default), which also fails the call.

The gate's pass-rate and blocking checks are run through the same functions as ``pairshift.gates.eval_gate``
(the score statistic of pairshift.intervals at the margin and at the tolerance); cost and latency are equal in
both arms and not simulated. The *old* columns run the gate this replaced (t interval with a zero-SD fallback,
"fail" when the estimate is below the margin, any newly failing blocking case fails) on the same evals.

Run: ``python bench/eval_gate_bench.py [--reps N] [--out bench/results/eval_gate.md]`` (also writes the SVG
plot beside it).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats as sps

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pairshift.intervals import score_statistic, z_critical  # noqa: E402
from pairshift.policy import EvalPolicy  # noqa: E402

EPOCHS = 3
DIFFS = (-0.06, -0.04, -0.03, -0.02, -0.01, 0.0, 0.01, 0.02)
SIZES = (100, 300, 1000)
SUPPORT = np.arange(-EPOCHS, EPOCHS + 1) / EPOCHS


def simulate(
    rng: np.random.Generator, n: int, reps: int, diff: float, noise: float
) -> tuple[np.ndarray, ...]:
    """Per replicate and case: passes (of 3 epochs) and blocking failures of both arms; the true diff."""
    kind = rng.random((reps, n))
    p = np.where(kind < 0.70, 0.98, np.where(kind < 0.85, 0.02, rng.uniform(0.2, 0.8, (reps, n))))
    reliable_pass, reliable_fail = kind < 0.70, (kind >= 0.70) & (kind < 0.85)
    discordant = round(0.15 * n)
    net = round(diff * n / 0.96)  # improved - regressed cases
    improve, regress = max(0, (discordant + net) // 2), max(0, (discordant - net) // 2)
    q = p.copy()
    order = rng.random((reps, n)).argsort(axis=1)  # a random order of cases per replicate
    for mask, count, value in ((reliable_pass, regress, 0.02), (reliable_fail, improve, 0.98)):
        ranked = np.where(np.take_along_axis(mask, order, axis=1), np.arange(n), n + np.arange(n))
        chosen = np.take_along_axis(order, ranked.argsort(axis=1)[:, :count], axis=1)
        np.put_along_axis(q, chosen, value, axis=1)
    true_diff = float((q - p).mean())

    def arm(prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        passed = rng.random((reps, n, EPOCHS)) < prob[..., None]
        blocked = rng.random((reps, n, EPOCHS)) < noise
        return (passed & ~blocked).sum(axis=2), blocked.sum(axis=2)

    (pb, bb), (pj, bj) = arm(p), arm(q)
    return pb, bb, pj, bj, np.array(true_diff)


def _counts(values: np.ndarray) -> np.ndarray:
    """Cases per support value k/3, -1..1, for each replicate."""
    idx = np.rint(values * EPOCHS).astype(int) + EPOCHS
    return np.stack([(idx == j).sum(axis=1) for j in range(SUPPORT.size)], axis=1)


def new_gate(pb, bb, pj, bj, policy: EvalPolicy) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    """(pass, fail) per replicate, as pairshift.gates.eval_gate decides (score statistics at the bounds)."""
    z = z_critical(policy.confidence)
    zm = score_statistic(SUPPORT, _counts((pj - pb) / EPOCHS), -policy.max_regression)
    zb = score_statistic(SUPPORT, _counts((bj - bb) / EPOCHS), policy.max_new_failure_rate)
    blocking_fail = zb > z  # the interval's lower end above the tolerance
    fail = (zm < -z) | blocking_fail
    return (zm >= z) & ~fail, fail


def old_gate(pb, bb, pj, bj, policy: EvalPolicy) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    """(pass, fail) per replicate under the replaced rules."""
    n = pb.shape[1]
    d = (pj - pb) / EPOCHS
    mean, sd = d.mean(axis=1), d.std(axis=1, ddof=1)
    half = sps.t.ppf(0.5 + policy.confidence / 2, n - 1) * sd / math.sqrt(n)
    z = float(sps.norm.ppf(0.5 + policy.confidence / 2))
    half = np.where(sd == 0, z * z / (n + z * z), half)
    lo, hi = mean - half, mean + half
    m = -policy.max_regression
    newly = ((bj > 0) & (bb == 0)).any(axis=1)
    fail = (mean < m) | (hi < m) | newly
    return (lo >= m) & ~fail, fail


def run(reps: int, seed: int, noise: float) -> tuple[list[dict[str, float]], float]:
    rng = np.random.default_rng(seed)
    policy = EvalPolicy()
    rows = []
    started = time.perf_counter()
    for n in SIZES:
        for diff in DIFFS:
            pb, bb, pj, bj, true = simulate(rng, n, reps, diff, noise)
            (np_, nf), (op, of) = new_gate(pb, bb, pj, bj, policy), old_gate(pb, bb, pj, bj, policy)
            rows.append(
                {
                    "n": n,
                    "diff": float(true),
                    "pass": np_.mean(),
                    "fail": nf.mean(),
                    "old_pass": op.mean(),
                    "old_fail": of.mean(),
                }
            )
    return rows, time.perf_counter() - started


def svg(rows: list[dict[str, float]]) -> str:
    """P(pass) (solid) and P(fail) (dashed) against the true difference, one colour per dataset size."""
    w, h, left, top, pw, ph = 640, 360, 60, 30, 540, 270
    x0, x1 = min(DIFFS) * 100 - 0.5, max(DIFFS) * 100 + 0.5

    def x(d: float) -> float:
        return left + (d * 100 - x0) / (x1 - x0) * pw

    def y(p: float) -> float:
        return top + (1 - p) * ph

    colours = {100: "#cf222e", 300: "#0969da", 1000: "#1a7f37"}
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        'font-family="sans-serif" font-size="11">',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#8c959f"/>',
        f'<line x1="{x(-0.02):.1f}" y1="{top}" x2="{x(-0.02):.1f}" y2="{top + ph}" '
        'stroke="#8c959f" stroke-dasharray="2,3"/>',
        f'<text x="{x(-0.02) + 3:.1f}" y="{top + 12}">margin -2 points</text>',
        f'<text x="{left + pw / 2}" y="{h - 8}" text-anchor="middle">'
        "true joint - baseline pass rate (points)</text>",
        f'<text x="14" y="{top + ph / 2}" transform="rotate(-90 14 {top + ph / 2})" '
        'text-anchor="middle">probability</text>',
    ]
    for p in (0.0, 0.25, 0.5, 0.75, 1.0):
        parts.append(f'<text x="{left - 6}" y="{y(p) + 4:.1f}" text-anchor="end">{p:g}</text>')
    for d in DIFFS:
        parts.append(f'<text x="{x(d):.1f}" y="{top + ph + 14}" text-anchor="middle">{d * 100:+g}</text>')
    for n, colour in colours.items():
        sub = sorted((r for r in rows if r["n"] == n), key=lambda r: r["diff"])
        for key, dash in (("pass", ""), ("fail", ' stroke-dasharray="6,4"')):
            pts = " ".join(f"{x(r['diff']):.1f},{y(r[key]):.1f}" for r in sub)
            parts.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')
        ly = top + 12 + 14 * list(colours).index(n)
        parts.append(f'<text x="{left + pw - 150}" y="{ly}" fill="{colour}">{n:,} cases</text>')
    parts.append(f'<text x="{left + 8}" y="{top + 12}">solid: P(pass), dashed: P(fail)</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--blocking-noise", type=float, default=0.005)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "eval_gate.md")
    args = parser.parse_args()
    rows, elapsed = run(args.reps, args.seed, args.blocking_noise)
    policy = EvalPolicy()
    mc = math.sqrt(0.25 / args.reps)
    at_margin = [r for r in rows if abs(r["diff"] + policy.max_regression) < 0.005]
    equal = [r for r in rows if abs(r["diff"]) < 1e-6]
    lines = [
        "# Eval gate operating characteristic",
        "",
        "Generated by `python bench/eval_gate_bench.py` (`make bench`); do not edit by hand. The plot: "
        "[eval_gate.svg](eval_gate.svg).",
        "",
        f"- {args.reps:,} simulated evals per row, 3 epochs, numpy seed {args.seed}; run time "
        f"{elapsed:.1f} s",
        "- cases: 70% reliable passes, 15% reliable failures, 15% flaky (pass probability uniform "
        "0.2-0.8); 15% of "
        "cases change between the arms; every call fails the blocking type `is-json` at random with "
        "probability "
        f"{args.blocking_noise:.1%} in both arms",
        f"- default policy: max_regression {policy.max_regression:g}, confidence {policy.confidence:g} "
        "(two-sided; "
        "each end 2.5%), max_new_failure_rate 0",
        f"- Monte Carlo standard error of a rate: at most {mc:.4f} (sqrt(p(1-p)/n)), "
        f"{math.sqrt(0.05 * 0.95 / args.reps):.4f} near 5%",
        "- *old*: the replaced gate on the same evals (t interval, fail on the point estimate, any newly "
        "failing "
        "blocking case fails)",
        "",
        "| cases | true difference (points) | P(pass) | P(fail) | P(inconclusive) | old P(pass) | old "
        "P(fail) |",
        "|---|---|---|---|---|---|---|",
        *[
            f"| {r['n']:,} | {r['diff'] * 100:+.2f} | {r['pass']:.4f} | {r['fail']:.4f} | "
            f"{1 - r['pass'] - r['fail']:.4f} | {r['old_pass']:.4f} | {r['old_fail']:.4f} |"
            for r in rows
        ],
        "",
        "Read: an equal candidate (difference 0) fails "
        + ", ".join(f"{r['fail']:.4f} at {r['n']:,} cases" for r in equal)
        + " (old: "
        + ", ".join(f"{r['old_fail']:.2f}" for r in equal)
        + "); a candidate at the margin passes "
        + ", ".join(f"{r['pass']:.4f} at {r['n']:,} cases ({r['diff'] * 100:+.2f} points)" for r in at_margin)
        + f" (each end of the interval: {(1 - policy.confidence) / 2:.3f}).",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    args.out.with_suffix(".svg").write_text(svg(rows))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
