"""Retention: observations older than ``retention_days`` are folded into daily rollups, then deleted; example
outputs (``output_samples``, redacted text) older than the cutoff are deleted outright.

The canary gate never reads calls (it sums ``unit_aggregates``, kept at ingest), so old calls are only
history: a day of one pair in one variant keeps its counts, tokens, cost, latency sum and maximum and score
sums in ``observation_rollups``, and the calls go. Observations of a migration still running are kept
whatever their age (its report and any ``variant_stats`` window may still read them); they are rolled up by
the first run after it ends.

Each day is one transaction (roll up, then delete, the same rows): a run stopped halfway leaves every call
either still stored or in its rollup, never both and never neither, and the next run goes on where it stopped.
A late observation stamped in an already rolled-up day is added to that day's rollup.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import and_, case, delete, func, not_, or_, select
from sqlalchemy.orm import Session

from pairshift import output_samples, shadow
from pairshift.contracts.retention import RollupResult
from pairshift.observations.store import ERROR_OUTCOMES
from pairshift.registry.models import Deployment, Observation, ObservationRollup
from pairshift.registry.store import Registry

DEFAULT_RETENTION_DAYS = 30
_obs = Observation.__table__  # type: ignore[attr-defined]
_SUMS = ("calls", "errors", "invalid", "input_tokens", "output_tokens", "cost_usd", "latency_ms_sum")
_UPSERT = (
    "INSERT INTO observation_rollups (deployment, migration, pair, variant, day, {cols}, latency_ms_max, "
    "score_n, score_sum) VALUES ({marks}) ON CONFLICT (deployment, migration, pair, variant, day) "
    "DO UPDATE SET {sums}, latency_ms_max = CASE WHEN excluded.latency_ms_max > "
    "observation_rollups.latency_ms_max THEN excluded.latency_ms_max "
    "ELSE observation_rollups.latency_ms_max END, "
    "score_n = observation_rollups.score_n + excluded.score_n, "
    "score_sum = observation_rollups.score_sum + excluded.score_sum"
)


def cutoff_for(now: datetime, retention_days: int) -> datetime:
    if retention_days < 1:
        raise ValueError(f"retention_days must be at least 1, got {retention_days}")
    return now.astimezone(UTC) - timedelta(days=retention_days)


def _not_live(live: set[tuple[str, str]]) -> object:
    if not live:
        return True
    c = _obs.c
    live_rows = or_(*(and_(c.deployment == d, c.migration == m) for d, m in sorted(live)))
    # NOT (migration = m) is NULL, not true, for a call outside any migration: it would never be rolled up
    return not_(func.coalesce(live_rows, False))


def _roll_up_window(session: Session, start: datetime, end: datetime, keep: object) -> tuple[int, int]:
    c = _obs.c
    where = and_(c.at >= start, c.at < end, keep)
    errors = func.sum(case((c.outcome.in_(ERROR_OUTCOMES), 1), else_=0))
    invalid = func.sum(case((c.outcome == "invalid", 1), else_=0))
    groups = session.execute(
        select(
            c.deployment,
            c.migration,
            c.pair,
            c.variant,
            func.count(),
            errors,
            invalid,
            func.sum(c.input_tokens),
            func.sum(c.output_tokens),
            func.sum(c.cost_usd),
            func.sum(c.latency_ms),
            func.max(c.latency_ms),
            func.count(c.score),
            func.coalesce(func.sum(c.score), 0.0),
        )
        .where(where)
        .group_by(c.deployment, c.migration, c.pair, c.variant)
    ).all()
    if not groups:
        return 0, 0
    conn = session.connection()
    sqlite = conn.dialect.name == "sqlite"
    day = start.date().isoformat() if sqlite else start.date()  # SQLAlchemy's SQLite Date is ISO text
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    sql = _UPSERT.format(
        cols=", ".join(_SUMS),
        marks=", ".join([mark] * (5 + len(_SUMS) + 3)),
        sums=", ".join(f"{s} = observation_rollups.{s} + excluded.{s}" for s in _SUMS),
    )
    rows = [(d, m or "", p, v, day, *(x or 0 for x in rest)) for d, m, p, v, *rest in groups]
    conn.exec_driver_sql(sql, sorted(rows))
    deleted = session.execute(delete(Observation).where(where)).rowcount  # type: ignore[arg-type]
    return len(rows), int(deleted or 0)


def roll_up(registry: Registry, cutoff: datetime) -> RollupResult:
    """Fold every observation stamped before ``cutoff`` (not of a running migration) into daily rollups."""
    cutoff = cutoff.astimezone(UTC)
    result = RollupResult(cutoff=cutoff)
    with registry.session() as s:
        # Example outputs are text, not numbers: nothing to roll up, they go at the cutoff whatever runs.
        result.samples_deleted = output_samples.delete_older_than(s, cutoff)
        result.samples_deleted += shadow.delete_older_than(s, cutoff)  # a shadow stage's pairs, likewise
    with registry.session() as s:
        live = {(d.name, d.migration) for d in s.scalars(select(Deployment)) if d.migration}
        keep = _not_live(live)
        oldest = s.scalar(select(func.min(_obs.c.at)).where(_obs.c.at < cutoff, keep))
        if live:
            result.kept_live = int(
                s.scalar(select(func.count()).select_from(_obs).where(_obs.c.at < cutoff, not_(keep))) or 0
            )
    if oldest is None:
        return result
    if oldest.tzinfo is None:  # SQLite hands back naive UTC
        oldest = oldest.replace(tzinfo=UTC)
    start = datetime.combine(oldest.date(), time(), UTC)
    while start < cutoff:
        end = min(start + timedelta(days=1), cutoff)
        with registry.session() as s:  # one transaction per day: rolled up and deleted together
            written, deleted = _roll_up_window(s, start, end, keep)
        if deleted:
            result.days += 1
            result.rolled_up += deleted
            result.rollup_rows += written
        start = end
    return result


def rollups(session: Session, deployment: str, since: date | None = None) -> list[ObservationRollup]:
    """A deployment's rolled-up days, oldest first."""
    q = select(ObservationRollup).where(ObservationRollup.deployment == deployment)
    if since is not None:
        q = q.where(ObservationRollup.day >= since)
    return list(session.scalars(q.order_by(ObservationRollup.day, ObservationRollup.pair)))
