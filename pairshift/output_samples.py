"""Example outputs, kept redacted and bounded: what a migration report shows beside its numbers.

An online check's failure rate says *that* a candidate breaks its outputs; a reader also wants to *see* a few
of them. Wherever pairshift serves an output (:mod:`pairshift.completion`), an output that fails an online
check is offered to the router's :class:`ExampleKeeper`, which keeps the first :data:`PER_CHECK` of each
(migration, variant, check) per process. Each is redacted (:func:`pairshift.capture.redact`: the
deployment's ``redact:`` regexes plus the built-in keys, bearer tokens and emails) and cut to
:data:`TEXT_MAX` characters *before* it is queued, so nothing unredacted or unbounded is stored; the router
stores its queue on its refresh thread, off the hot path (``output_samples``; retention deletes them with
the observations). :func:`failing_checks` reads the report's table: per variant, the commonest failing
checks with their counts and examples.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from pairshift.capture import redact
from pairshift.registry.models import MigrationRow, Observation, OutputSample, UnitAggregate, utcnow

PER_CHECK = 3  # examples kept per (migration, variant, check) and process
TEXT_MAX = 300  # characters of an example's input and output (a report line, not an archive)
JUDGE_TEXT_MAX = 4000  # characters of a judged sample's input and output (the judge reads them whole)
CHECKS_SHOWN = 3  # failing checks a report names per variant


def bounded(text: str, limit: int = TEXT_MAX) -> str:
    """``text`` cut to ``limit`` characters, an ellipsis saying it was cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def input_text(request: Mapping[str, Any] | None) -> str:
    """The request as a report shows it: the variables as JSON, or the app's last message (the gateway)."""
    if not request:
        return ""
    if "vars" in request:
        return json.dumps(request["vars"], ensure_ascii=False, sort_keys=True, default=str)
    messages = request.get("messages") or []
    last = messages[-1] if messages else {}
    content = last.get("content", "") if isinstance(last, Mapping) else ""
    return content if isinstance(content, str) else json.dumps(content, ensure_ascii=False, default=str)


class ExampleKeeper:
    """Per router: decides which invalid outputs become examples and holds them, redacted, until stored."""

    def __init__(self, per_check: int = PER_CHECK) -> None:
        self.per_check = per_check
        self._taken: Counter[tuple[str | None, str, str]] = Counter()
        self._queue: list[OutputSample] = []
        self._lock = threading.Lock()

    def offer(
        self,
        *,
        deployment: str,
        migration: str | None,
        pair: str,
        variant: str,
        detail: str,
        request: Mapping[str, Any] | None,
        output: str,
        patterns: Sequence[re.Pattern[str]],
    ) -> bool:
        """Keep this invalid output if its check has fewer than ``per_check`` examples here; True if kept."""
        key = (migration, variant, detail)
        with self._lock:
            if self._taken[key] >= self.per_check:
                return False
            self._taken[key] += 1
        sample = OutputSample(
            deployment=deployment,
            migration=migration,
            pair=pair,
            variant=variant,
            kind="invalid",
            detail=detail,
            # redact first, then cut: a cut must not leave half a secret the pattern no longer matches
            input=bounded(redact(input_text(request), patterns)),
            output=bounded(redact(output, patterns)),
            at=utcnow(),
        )
        with self._lock:
            self._queue.append(sample)
        return True

    def queue_for_judge(
        self,
        assignment: Any,
        unit_hash: str,
        percent: float,
        request: Mapping[str, Any] | None,
        output: str,
        patterns: Sequence[re.Pattern[str]],
    ) -> None:
        """Queue a served output for the canary's judge (redacted, bounded at :data:`JUDGE_TEXT_MAX`)."""
        sample = OutputSample(
            deployment=assignment.deployment,
            migration=assignment.migration,
            pair=assignment.pair,
            variant=assignment.variant,
            kind="judge",
            unit=unit_hash,
            percent=percent,
            input=bounded(redact(input_text(request), patterns), JUDGE_TEXT_MAX),
            output=bounded(redact(output, patterns), JUDGE_TEXT_MAX),
            at=utcnow(),
        )
        with self._lock:
            self._queue.append(sample)

    def take(self) -> list[OutputSample]:
        with self._lock:
            taken, self._queue = self._queue, []
        return taken


def store(session: Session, samples: Sequence[OutputSample]) -> int:
    session.add_all(samples)
    session.commit()
    return len(samples)


class FailingCheck(BaseModel):
    """One online check (or reason) outputs of a variant failed, how often, and a few redacted examples."""

    check: str
    calls: int
    examples: list[dict[str, str]] = []  # {"input", "output"}


def failing_checks(
    session: Session,
    deployment: str,
    migration: str,
    since: datetime | None = None,
    *,
    limit: int = CHECKS_SHOWN,
    examples: int = PER_CHECK,
) -> dict[str, list[FailingCheck]]:
    """Per variant: the commonest reasons outputs were invalid in the migration, with examples."""
    o = Observation.__table__.c  # type: ignore[attr-defined]
    where = [o.deployment == deployment, o.migration == migration, o.outcome == "invalid"]
    if since is not None:
        where.append(o.at >= since)
    detail = func.coalesce(o.detail, "(no detail)")
    rows = session.execute(select(o.variant, detail, func.count()).where(*where).group_by(o.variant, detail))
    out: dict[str, list[FailingCheck]] = {}
    for variant, check, n in sorted(rows, key=lambda r: (r[0], -r[2], r[1])):
        if len(out.setdefault(variant, [])) < limit:
            out[variant].append(FailingCheck(check=check, calls=int(n)))
    s = OutputSample.__table__.c  # type: ignore[attr-defined]
    for variant, checks in out.items():
        for fc in checks:
            q = (
                select(s.input, s.output)
                .where(
                    s.deployment == deployment,
                    s.migration == migration,
                    s.kind == "invalid",
                    s.variant == variant,
                    s.detail == fc.check,
                )
                .order_by(s.at, s.id)
                .limit(examples)
            )
            fc.examples = [{"input": i, "output": t} for i, t in session.execute(q)]
    return out


class StageFigures(BaseModel):
    """One stage's quality per variant: calls, invalid rate and mean score (judge and app scores) with 95%
    unit-clustered intervals, the gate's estimates (pairshift.unit_stats)."""

    percent: float
    variant: str
    calls: int
    invalid_rate: float
    invalid_ci: tuple[float, float]
    scored: int
    score: float | None = None
    score_ci: tuple[float, float] | None = None


def ci95(est: float, var: float) -> tuple[float, float]:
    """The 95% normal interval of a rate or 0..1 mean, clipped to [0, 1] (infinite variance: [0, 1])."""
    half = 1.959964 * math.sqrt(max(var, 0.0)) if math.isfinite(var) else math.inf
    return (max(0.0, est - half), min(1.0, est + half))


def stage_figures(session: Session, migration: str) -> list[StageFigures]:
    """Per stage (percent, ascending) and variant: the quality figures a report shows (see StageFigures)."""
    from pairshift.observations import stage_stats

    a = UnitAggregate.__table__.c  # type: ignore[attr-defined]
    percents = sorted(session.scalars(select(a.percent).where(a.migration == migration).distinct()))
    out: list[StageFigures] = []
    for percent in percents:
        for variant, st in stage_stats(session, migration, percent).items():
            if st.n == 0:
                continue
            rate, var = st.invalid.estimate("binary")
            fig = StageFigures(
                percent=percent,
                variant=variant,
                calls=int(st.n),
                invalid_rate=rate,
                invalid_ci=ci95(rate, var),
                scored=int(st.score.n),
            )
            if st.score.n:
                mean, svar = st.score.estimate("bounded")
                fig.score, fig.score_ci = mean, ci95(mean, svar)
            out.append(fig)
    return out


def migration_key(session: Session, workflow_id: str) -> str | None:
    """The split key (``workflow id/first run id``) that observations of the latest migration carry."""
    row = session.scalars(
        select(MigrationRow)
        .where(MigrationRow.workflow_id == workflow_id)  # type: ignore[arg-type]
        .order_by(MigrationRow.started_at.desc())  # type: ignore[attr-defined]
    ).first()
    return None if row is None else f"{workflow_id}/{row.run_id}"


class CanaryQuality(BaseModel):
    """What ``migrate report`` shows of the canary: failing checks with examples, figures per stage."""

    checks: dict[str, list[FailingCheck]] = {}
    stages: list[StageFigures] = []


def canary_quality(registry: Any, deployment: str, workflow_id: str) -> CanaryQuality:
    """:func:`failing_checks` of the latest migration ``workflow_id`` over its canary (``migrate report``)."""
    with registry.session() as s:
        key = migration_key(s, workflow_id)
        if key is None:
            return CanaryQuality()
        return CanaryQuality(checks=failing_checks(s, deployment, key), stages=stage_figures(s, key))


def delete_older_than(session: Session, cutoff: datetime) -> int:
    """Delete examples stored before ``cutoff`` (retention); returns how many."""
    result = session.execute(delete(OutputSample).where(OutputSample.at < cutoff))  # type: ignore[arg-type]
    session.commit()
    return int(result.rowcount or 0)


def render_markdown(checks: dict[str, list[FailingCheck]], stages: Sequence[StageFigures] = ()) -> str:
    """The report's section: figures per stage, then per variant each failing check, its count, examples."""
    table = ["## Canary quality", ""]
    if stages:
        table += [
            "| stage | variant | calls | invalid rate (95%) | score (95%), scored |",
            "| --- | --- | --- | --- | --- |",
        ]
        for f in stages:
            inv = f"{f.invalid_rate:.2%} [{f.invalid_ci[0]:.2%}, {f.invalid_ci[1]:.2%}]"
            score = (
                f"{f.score:.3f} [{f.score_ci[0]:.3f}, {f.score_ci[1]:.3f}], {f.scored:,}"
                if f.score is not None and f.score_ci is not None
                else "-"
            )
            table.append(f"| {f.percent:g}% | {f.variant} | {f.calls:,} | {inv} | {score} |")
        table.append("")
    if not checks:
        return "\n".join([*table, "No output failed an online check."]) + "\n"
    head = f"Top failing online checks (examples redacted, cut to {TEXT_MAX} characters):"
    lines = [*table, head, ""]
    for variant in ("candidate", "control"):
        for fc in checks.get(variant, []):
            lines.append(f"- {variant}: {fc.check} ({fc.calls:,} calls)")
            for ex in fc.examples:
                lines.append(f"    - input: {ex['input']}")
                lines.append(f"      output: {ex['output']!r}")
    return "\n".join(lines) + "\n"
