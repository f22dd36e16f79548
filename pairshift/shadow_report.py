"""The migration report's shadow section: what each shadow stage saw, from its mirrored pairs.

Per shadow stage (``shadow_pairs`` of the migration, by mirror share): the candidate's pairwise win rate (its
mean pair score, 0.5 = as good as control) with a 95% interval clustered by unit, its wins, ties and losses;
error and invalid rates, latency p50/p95 and cost per call of both arms on the same mirrored inputs; and a few
side-by-side examples (input, control's output, the candidate's, the judge's two verdicts; redacted when they
were stored), the candidate's losses first. ``migrate report`` prints it after the canary's live figures
(``--json``: ``shadow_stages``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from pairshift.output_samples import bounded, migration_key
from pairshift.registry.models import ShadowPair
from pairshift.shadow import CONTROL_ERRORS, stage_pairs

EXAMPLES = 3  # side-by-side examples per shadow stage
EXAMPLE_MAX = 300  # characters of each text of an example (a report line, not an archive)
Z95 = 1.959964


class ArmFigures(BaseModel):
    """One arm of a shadow stage, on the mirrored requests."""

    calls: int
    error_rate: float
    invalid_rate: float
    invalid_ci: tuple[float, float]
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    cost_per_call_usd: float


class ShadowStageFigures(BaseModel):
    """One shadow stage: the pairwise verdicts and both arms over the same inputs, with a few examples."""

    shadow: float
    mirrored: int
    judged: int
    wins: int
    ties: int
    losses: int
    win_rate: float | None  # the candidate's mean pair score
    win_rate_ci: tuple[float, float] | None
    control: ArmFigures
    candidate: ArmFigures
    examples: list[dict[str, str]] = []  # {"input", "control", "candidate", "verdict"}


def _ci(est: float, var: float) -> tuple[float, float]:
    half = Z95 * math.sqrt(max(var, 0.0)) if math.isfinite(var) else math.inf
    return (max(0.0, est - half), min(1.0, est + half))


def _arm(stats: Any, latencies: list[float]) -> ArmFigures:
    rate, var = stats.invalid.estimate("binary")
    p50, p95 = (float(x) for x in np.percentile(latencies, [50, 95])) if latencies else (None, None)
    return ArmFigures(
        calls=int(stats.n),
        error_rate=stats.errors.y / stats.n if stats.n else 0.0,
        invalid_rate=rate,
        invalid_ci=_ci(rate, var),
        latency_p50_ms=p50,
        latency_p95_ms=p95,
        cost_per_call_usd=stats.cost.y / stats.n if stats.n else 0.0,
    )


def stage_figures(session: Session, migration: str, shadow: float) -> ShadowStageFigures:
    """The figures of one shadow stage of ``migration`` (module doc)."""
    control, candidate, pairs = stage_pairs(session, migration, shadow)
    c = ShadowPair.__table__.c  # type: ignore[attr-defined]
    where = (c.migration == migration, c.shadow == shadow)
    rows = session.execute(
        select(
            c.control_outcome, c.control_latency_ms, c.candidate_outcome, c.candidate_latency_ms, c.score
        ).where(*where)
    ).all()
    scores = [r.score for r in rows if r.score is not None]
    win_rate = win_ci = None
    if pairs.n:
        win_rate, var = pairs.estimate("bounded")
        win_ci = _ci(win_rate, var)
    examples = session.execute(
        select(c.input, c.control_output, c.candidate_output, c.verdict)
        .where(*where, c.score.is_not(None))
        .order_by(c.score, c.id)
        .limit(EXAMPLES)
    ).all()
    return ShadowStageFigures(
        shadow=shadow,
        mirrored=len(rows),
        judged=len(scores),
        wins=sum(s > 0.5 for s in scores),
        ties=sum(s == 0.5 for s in scores),
        losses=sum(s < 0.5 for s in scores),
        win_rate=win_rate,
        win_rate_ci=win_ci,
        control=_arm(control, [r[1] for r in rows if r[0] not in CONTROL_ERRORS]),
        candidate=_arm(candidate, [r[3] for r in rows if r[2] not in CONTROL_ERRORS and r[3] is not None]),
        examples=[
            {
                "input": bounded(i, EXAMPLE_MAX),
                "control": bounded(co, EXAMPLE_MAX),
                "candidate": bounded(ca or "", EXAMPLE_MAX),
                "verdict": v or "",
            }
            for i, co, ca, v in examples
        ],
    )


def shadow_figures(registry: Any, workflow_id: str) -> list[ShadowStageFigures]:
    """Every shadow stage of the latest migration ``workflow_id``, by mirror share (``migrate report``)."""
    with registry.session() as s:
        key = migration_key(s, workflow_id)
        if key is None:
            return []
        c = ShadowPair.__table__.c  # type: ignore[attr-defined]
        shares = sorted(s.scalars(select(c.shadow).where(c.migration == key).distinct()))
        return [stage_figures(s, key, share) for share in shares]


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f} ms"


def render_markdown(stages: list[ShadowStageFigures]) -> str:
    """The report's shadow section (empty when the migration had no shadow stage)."""
    if not stages:
        return ""
    lines = ["## Shadow stages (mirrored requests, never served)", ""]
    for f in stages:
        win = (
            f"{f.win_rate:.3f} [{f.win_rate_ci[0]:.3f}, {f.win_rate_ci[1]:.3f}]"
            if f.win_rate is not None and f.win_rate_ci is not None
            else "not judged"
        )
        lines += [
            f"### shadow {f.shadow:g}%: {f.mirrored:,} requests mirrored, "
            f"{f.judged:,} pairs judged in both orders",
            "",
            f"Candidate win rate (mean pair score, 0.5 = as good as control; 95%): {win}; "
            f"{f.wins:,} wins, {f.ties:,} ties, {f.losses:,} losses.",
            "",
            "| arm | calls | error rate | invalid rate (95%) | latency p50 | latency p95 | cost per call |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for name, a in (("control", f.control), ("candidate", f.candidate)):
            inv = f"{a.invalid_rate:.2%} [{a.invalid_ci[0]:.2%}, {a.invalid_ci[1]:.2%}]"
            lines.append(
                f"| {name} | {a.calls:,} | {a.error_rate:.2%} | {inv} | {_ms(a.latency_p50_ms)} | "
                f"{_ms(a.latency_p95_ms)} | ${a.cost_per_call_usd:.6f} |"
            )
        if f.examples:
            lines += [
                "",
                f"Side by side (the candidate's worst first; redacted, cut to {EXAMPLE_MAX} characters):",
            ]
            for ex in f.examples:
                lines += [
                    f"- input: {ex['input']}",
                    f"  control: {ex['control']!r}",
                    f"  candidate: {ex['candidate']!r}",
                    f"  judge: {ex['verdict']}",
                ]
        lines.append("")
    return "\n".join(lines)
