"""A canary stage's quality figures from stored data: invalid rate by check, the judge's scores and spend.

Two readers (issue 17 item 4):

- ``pairshift migrate report`` adds, per stage and variant, how often each online check failed
  (:func:`stage_check_rates`) and what the canary judge scored and spent per stage (:func:`judge_by_stage`);
- MigrationWorkflow, when a live stage ends, asks the ``stage_quality`` activity for :func:`stage_quality`
  (both arms' calls, invalid rate with its top checks, the judged score with its interval, the judge's spend
  in the stage and that day, and up to two redacted examples per arm) and posts it in the migration's thread.
  A shadow stage's figures are those of the migration report's shadow section (:mod:`pairshift.shadow_report`:
  both arms over the same mirrored requests, the pairwise win rate with its interval, side-by-side examples
  worst first), read by :func:`shadow_stage_quality`.

An invalid observation names the check it failed in ``detail`` but not its stage (unit aggregates, which are
per stage, keep counts only), so checks are counted over the stage's *time window*: from the audit log's
``stage_started`` event to the next one (the report), or the window the workflow passes (the notice). The
denominator is the variant's calls in the same window, so the rates of one stage and variant add up to at most
its invalid rate over that window. Calls routed within seconds of a stage change (a router refreshes its split
every few seconds) may count in the neighbouring stage; the stage's calls and invalid rate with its interval
come from the unit aggregates the gate reads, which attribute every call exactly. Observations are deleted
after ``retention_days``: a report of an older migration shows no checks.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from pairshift.contracts.quality import (
    CHECKS_PER_ARM,
    EXAMPLE_CHARS,
    EXAMPLES_PER_ARM,
    ArmQuality,
    Example,
    JudgeSpend,
    ShadowQuality,
    SideBySide,
    StageCheckRate,
    StageQuality,
    StageQualityInput,
)
from pairshift.observations import VARIANTS, stage_stats
from pairshift.online_judge import spent_today
from pairshift.output_samples import bounded, ci95
from pairshift.registry.models import AuditEvent, MigrationRow, Observation, OutputSample, ShadowPair
from pairshift.registry.store import Registry
from pairshift.shadow_report import stage_figures as shadow_stage_figures
from pairshift.unit_stats import RatioSums

# What MigrationWorkflow writes when a stage's split takes effect: "stage 2: 20% to support-triage@2+model".
STAGE_STARTED = re.compile(r"^stage (\d+): ([0-9.]+)% to ")

Window = tuple[float, datetime, datetime | None]  # (percent, since, until; None = still open)


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def stage_windows(events: Sequence[tuple[datetime, str]]) -> list[Window]:
    """Each stage's (percent, since, until) from ``stage_started`` audit events (time, detail), oldest first.

    A stage lasts until the next one starts; the last one is open (its migration's later calls carry no
    migration key once the split is restored or promoted). Events whose detail does not parse are skipped.
    """
    starts = [
        (float(m.group(2)), _aware(at))
        for at, detail in sorted(events, key=lambda e: _aware(e[0]))
        if (m := STAGE_STARTED.match(detail or ""))
    ]
    return [(p, at, starts[i + 1][1] if i + 1 < len(starts) else None) for i, (p, at) in enumerate(starts)]


def audit_windows(session: Session, workflow_id: str, run_id: str) -> list[Window]:
    """The stage windows of one migration (``run_id`` is its first run: continued runs audit under it)."""
    a = AuditEvent.__table__.c  # type: ignore[attr-defined]
    rows = session.execute(
        select(a.at, a.detail).where(
            a.migration == workflow_id, a.run_id == run_id, a.event == "stage_started"
        )
    )
    return stage_windows([(at, (detail or {}).get("detail", "")) for at, detail in rows])


def check_rates(
    session: Session,
    deployment: str,
    migration: str,
    percent: float,
    since: datetime,
    until: datetime | None,
    *,
    limit: int = CHECKS_PER_ARM,
) -> list[StageCheckRate]:
    """Per variant, the ``limit`` commonest failing checks of one stage window, each with its rate."""
    c = Observation.__table__.c  # type: ignore[attr-defined]
    where = [c.deployment == deployment, c.migration == migration, c.at >= since]
    if until is not None:
        where.append(c.at < until)
    calls = {
        v: int(n)
        for v, n in session.execute(select(c.variant, func.count()).where(*where).group_by(c.variant))
    }
    detail = func.coalesce(c.detail, "(no detail)")
    rows = session.execute(
        select(c.variant, detail, func.count())
        .where(*where, c.outcome == "invalid")
        .group_by(c.variant, detail)
    ).all()
    out: list[StageCheckRate] = []
    taken: dict[str, int] = {}
    for variant, check, n in sorted(rows, key=lambda r: (r[0], -r[2], r[1])):
        if taken.get(variant, 0) >= limit:
            continue
        taken[variant] = taken.get(variant, 0) + 1
        of = calls.get(variant, 0)
        out.append(
            StageCheckRate(
                percent=percent,
                variant=variant,
                check=check,
                calls=int(n),
                of_calls=of,
                rate=n / of if of else 0.0,
            )
        )
    return out


def stage_check_rates(
    session: Session, deployment: str, workflow_id: str, run_id: str, *, limit: int = CHECKS_PER_ARM
) -> list[StageCheckRate]:
    """Every stage's :func:`check_rates` of one migration (the report), stages in the order they ran."""
    key = f"{workflow_id}/{run_id}"
    out: list[StageCheckRate] = []
    for percent, since, until in audit_windows(session, workflow_id, run_id):
        out += check_rates(session, deployment, key, percent, since, until, limit=limit)
    return out


def judge_by_stage(session: Session, deployment: str, migration: str) -> list[JudgeSpend]:
    """Per stage (percent, ascending): samples the judge scored, replies it could not read, its cost."""
    s = OutputSample.__table__.c  # type: ignore[attr-defined]
    rows = session.execute(
        select(
            s.percent,
            func.count(s.score),
            func.sum(case((s.score.is_(None), 1), else_=0)),
            func.coalesce(func.sum(s.cost_usd), 0.0),
        )
        .where(
            s.deployment == deployment, s.migration == migration, s.kind == "judge", s.judged_at.is_not(None)
        )
        .group_by(s.percent)
        .order_by(s.percent)
    )
    return [
        JudgeSpend(percent=float(p), judged=int(n), unreadable=int(bad or 0), cost_usd=round(float(cost), 9))
        for p, n, bad, cost in rows
        if p is not None
    ]


def judged_scores(
    session: Session, deployment: str, migration: str, percent: float
) -> dict[str, tuple[int, float, tuple[float, float]]]:
    """Per variant of one stage: (samples judged, mean judge score, its 95% unit-clustered interval)."""
    s = OutputSample.__table__.c  # type: ignore[attr-defined]
    per_unit = (
        select(
            s.variant,
            s.unit,
            func.sum(s.score).label("y"),
            func.count(s.score).label("n"),
            func.sum(s.score * s.score).label("yy"),
        )
        .where(
            s.deployment == deployment,
            s.migration == migration,
            s.kind == "judge",
            s.percent == percent,
            s.score.is_not(None),
        )
        .group_by(s.variant, s.unit)
        .subquery()
    )
    u = per_unit.c
    rows = session.execute(
        select(
            u.variant,
            func.count(),
            func.sum(u.y),
            func.sum(u.n),
            func.sum(u.y * u.y),
            func.sum(u.n * u.n),
            func.sum(u.y * u.n),
            func.sum(u.yy),
        ).group_by(u.variant)
    )
    out: dict[str, tuple[int, float, tuple[float, float]]] = {}
    for variant, units, y, n, yy, nn, yn, call_sq in rows:
        sums = RatioSums(
            units=int(units),
            y=float(y),
            n=float(n),
            yy=float(yy),
            nn=float(nn),
            yn=float(yn),
            call_sq=float(call_sq),
        )
        mean, var = sums.estimate("bounded")
        out[variant] = (int(n), mean, ci95(mean, var))
    return out


def examples(
    session: Session,
    deployment: str,
    migration: str,
    percent: float,
    variant: str,
    since: datetime,
    until: datetime | None,
    *,
    limit: int = EXAMPLES_PER_ARM,
) -> list[Example]:
    """Up to ``limit`` redacted outputs of one arm of a stage: invalid ones of the window first (they show
    what broke), then the judge's lowest-scored samples of the stage, cut to :data:`EXAMPLE_CHARS`."""
    s = OutputSample.__table__.c  # type: ignore[attr-defined]
    base = [s.deployment == deployment, s.migration == migration, s.variant == variant]
    window = [s.at >= since] + ([s.at < until] if until is not None else [])
    out = [
        Example(
            kind="invalid",
            why=check or "(no detail)",
            input=bounded(i, EXAMPLE_CHARS),
            output=bounded(o, EXAMPLE_CHARS),
        )
        for check, i, o in session.execute(
            select(s.detail, s.input, s.output)
            .where(*base, *window, s.kind == "invalid")
            .order_by(s.at, s.id)
            .limit(limit)
        )
    ]
    if len(out) < limit:
        out += [
            Example(
                kind="judged",
                why=f"judge score {score:.2f}",
                input=bounded(i, EXAMPLE_CHARS),
                output=bounded(o, EXAMPLE_CHARS),
            )
            for score, i, o in session.execute(
                select(s.score, s.input, s.output)
                .where(*base, s.kind == "judge", s.percent == percent, s.score.is_not(None))
                .order_by(s.score, s.id)
                .limit(limit - len(out))
            )
        ]
    return out


def shadow_stage_quality(session: Session, inp: StageQualityInput, shadow: float) -> StageQuality:
    """A shadow stage's figures when it ended: both arms over the mirrored requests, the pairwise win rate, a
    few side-by-side examples (worst for the candidate first), and the judge's spend on the stage's pairs."""
    figs = shadow_stage_figures(session, inp.migration, shadow)
    arms = [
        ArmQuality(variant=variant, calls=a.calls, invalid_rate=a.invalid_rate, invalid_ci=a.invalid_ci)
        for variant, a in (("control", figs.control), ("candidate", figs.candidate))
    ]
    out = _notice(
        inp,
        arms,
        shadow=ShadowQuality(
            shadow=shadow,
            mirrored=figs.mirrored,
            judged=figs.judged,
            wins=figs.wins,
            ties=figs.ties,
            losses=figs.losses,
            win_rate=figs.win_rate,
            win_rate_ci=figs.win_rate_ci,
            examples=[
                SideBySide(**{k: bounded(v, EXAMPLE_CHARS) for k, v in e.items()})
                for e in figs.examples[:EXAMPLES_PER_ARM]
            ],
        ),
    )
    if inp.judge:
        c = ShadowPair.__table__.c  # type: ignore[attr-defined]
        where = (c.migration == inp.migration, c.shadow == shadow)
        cost = session.execute(select(func.coalesce(func.sum(c.judge_cost_usd), 0.0)).where(*where)).one()[0]
        stage = JudgeSpend(percent=inp.percent, judged=figs.judged, cost_usd=round(float(cost), 9))
        _add_judge_spend(session, inp, out, stage)
    return out


def _notice(inp: StageQualityInput, arms: list[ArmQuality], **figures: Any) -> StageQuality:
    """A stage's notice: which stage, how it ended and why, its arms and any further ``figures``."""
    return StageQuality(
        deployment=inp.deployment,
        index=inp.index,
        percent=inp.percent,
        ended=inp.ended,
        why=inp.why,
        arms=arms,
        **figures,
    )


def _add_judge_spend(session: Session, inp: StageQualityInput, out: StageQuality, stage: JudgeSpend) -> None:
    """The judge's model, its daily cap, its spend on this stage and its spend today."""
    out.judge, out.judge_cap_usd, out.judge_stage = inp.judge, inp.judge_cap_usd, stage
    out.judge_spent_today_usd = round(spent_today(session, inp.deployment, inp.until), 9)


def stage_quality(session: Session, inp: StageQualityInput) -> StageQuality:
    """The figures of one stage when it ended (see the module docstring), for its Slack notice."""
    if inp.shadow is not None:
        return shadow_stage_quality(session, inp, inp.shadow)
    stats = stage_stats(session, inp.migration, inp.percent)
    rates = check_rates(session, inp.deployment, inp.migration, inp.percent, inp.since, inp.until)
    judged = judged_scores(session, inp.deployment, inp.migration, inp.percent) if inp.judge else {}
    arms = []
    for variant in VARIANTS:
        st = stats[variant]
        rate, var = st.invalid.estimate("binary") if st.n else (0.0, 0.0)
        arm = ArmQuality(
            variant=variant,
            calls=int(st.n),
            invalid_rate=rate,
            invalid_ci=ci95(rate, var),
            checks=[r for r in rates if r.variant == variant],
            examples=examples(
                session, inp.deployment, inp.migration, inp.percent, variant, inp.since, inp.until
            ),
        )
        if variant in judged:
            arm.judged, arm.judged_score, arm.judged_ci = judged[variant]
        arms.append(arm)
    out = _notice(inp, arms)
    if inp.judge:
        spend = [
            j for j in judge_by_stage(session, inp.deployment, inp.migration) if j.percent == inp.percent
        ]
        _add_judge_spend(session, inp, out, spend[0] if spend else JudgeSpend(percent=inp.percent))
    return out


def report_figures(
    registry: Registry, deployment: str, workflow_id: str
) -> tuple[list[StageCheckRate], list[JudgeSpend]]:
    """Per stage of the latest migration ``workflow_id``: check rates and judge spend (``migrate report``)."""
    with registry.session() as s:
        row = s.scalars(
            select(MigrationRow)
            .where(MigrationRow.workflow_id == workflow_id)  # type: ignore[arg-type]
            .order_by(MigrationRow.started_at.desc())  # type: ignore[attr-defined]
        ).first()
        if row is None:
            return [], []
        key = f"{workflow_id}/{row.run_id}"
        return stage_check_rates(s, deployment, workflow_id, row.run_id), judge_by_stage(s, deployment, key)


def render_markdown(rates: Sequence[StageCheckRate], judge: Sequence[JudgeSpend]) -> str:
    """The report's per-stage tables: invalid rate by check (control vs candidate), then the judge's spend."""
    lines: list[str] = []
    if rates:
        lines += [
            "Invalid rate by check per stage (calls in the stage's time window):",
            "",
            "| stage | variant | check | calls | rate |",
            "| --- | --- | --- | --- | --- |",
        ]
        for r in rates:
            lines.append(
                f"| {r.percent:g}% | {r.variant} | {r.check} | {r.calls:,} of {r.of_calls:,} | {r.rate:.2%} |"
            )
        lines.append("")
    if judge:
        lines += [
            "Canary judge per stage:",
            "",
            "| stage | judged | unreadable | cost |",
            "| --- | --- | --- | --- |",
        ]
        lines += [f"| {j.percent:g}% | {j.judged:,} | {j.unreadable:,} | ${j.cost_usd:.4f} |" for j in judge]
        lines.append("")
    return "\n".join(lines)
