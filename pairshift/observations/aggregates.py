"""Observations out: what the canary gate and dashboards read (PRODUCT §2, §9).

:func:`stage_stats` reads one canary stage's per-unit aggregates (the ``unit_aggregates`` table, kept at
ingest by :func:`add_to_unit_aggregates`) into :class:`pairshift.unit_stats.VariantStats`: the sums over units
the gate's ratio estimators need, and the few latency order statistics its quantile test asks for.
:func:`variant_stats` computes the same from raw observations in a time window (one migration's calls
grouped by unit in SQL), and :func:`window_aggregates` buckets observations per time window for charts.
All of them aggregate in SQL, so a week-long stage never ships its rows to Python.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Float, Integer, and_, case, cast, func, select
from sqlalchemy.orm import Session

from pairshift.observations.store import ERROR_OUTCOMES, NO_LATENCY_OUTCOMES, UNIT_COLUMNS
from pairshift.registry.models import Observation, ObservationLoss, UnitAggregate
from pairshift.unit_stats import QuantileSample, RatioSums, VariantStats

VARIANTS = ("control", "candidate")
_table = Observation.__table__  # type: ignore[attr-defined]
_units = UnitAggregate.__table__  # type: ignore[attr-defined]

RanksFor = Callable[[int], Iterable[int]]


def _filters(deployment: str, migration: str | None, since: datetime, until: datetime | None) -> Any:
    conds = [_table.c.deployment == deployment, _table.c.at >= since]
    if migration is not None:
        conds.append(_table.c.migration == migration)
    if until is not None:
        conds.append(_table.c.at < until)
    return and_(*conds)


def _count_if(outcome: str) -> Any:
    """Calls with ``outcome``; "error" counts fallbacks too (the assigned pair failed; a chain served)."""
    if outcome == "error":
        return func.sum(case((_table.c.outcome.in_(ERROR_OUTCOMES), 1), else_=0))
    return func.sum(case((_table.c.outcome == outcome, 1), else_=0))


def _stats(session: Session, units: Any, ranks_for: RanksFor | None) -> dict[str, VariantStats]:
    """Sum a per-unit selectable (variant, unit and the UNIT_COLUMNS) into VariantStats per variant."""
    u = units.c
    f = lambda col: cast(col, Float)  # noqa: E731  (squares of big counts overflow 32-bit integers)
    sq = lambda a, b=None: func.sum(f(a) * f(a if b is None else b))  # noqa: E731
    query = select(
        u.variant,
        func.count(),
        func.sum(u.calls),
        sq(u.calls),
        func.sum(u.errors),
        sq(u.errors),
        sq(u.errors, u.calls),
        func.sum(u.invalid),
        sq(u.invalid),
        sq(u.invalid, u.calls),
        func.sum(case((u.score_n > 0, 1), else_=0)),
        func.sum(u.score_sum),
        func.sum(u.score_n),
        sq(u.score_sum),
        sq(u.score_n),
        sq(u.score_sum, u.score_n),
        func.sum(u.score_sumsq),
        func.sum(u.cost_sum),
        sq(u.cost_sum),
        sq(u.cost_sum, u.calls),
        func.sum(u.cost_sumsq),
        func.count(u.first_latency_ms),
    ).group_by(u.variant)
    out = {v: VariantStats() for v in VARIANTS}
    for row in session.execute(query):
        variant, m, calls, calls_sq = row[0], row[1], row[2] or 0, float(row[3] or 0)
        if variant not in out:
            continue
        v = [float(x or 0) for x in row[4:]]
        ratio = lambda y, yy, yn, n=calls, nn=calls_sq, units=m, call_sq=None: RatioSums(  # noqa: E731
            units=units, y=y, n=n, yy=yy, nn=nn, yn=yn, call_sq=y if call_sq is None else call_sq
        )
        size = int(v[17])
        ranks = sorted(set(ranks_for(size))) if ranks_for is not None else []
        out[variant] = VariantStats(
            n=int(calls),
            units=int(m),
            errors=ratio(v[0], v[1], v[2]),
            invalid=ratio(v[3], v[4], v[5]),
            score=RatioSums(units=int(v[6]), y=v[7], n=v[8], yy=v[9], nn=v[10], yn=v[11], call_sq=v[12]),
            cost=ratio(v[13], v[14], v[15], call_sq=v[16]),
            latency=QuantileSample(size=size, order=_order_stats(session, units, variant, size, ranks)),
        )
    return out


def _order_stats(
    session: Session, units: Any, variant: str, size: int, ranks: Sequence[int]
) -> dict[int, float]:
    """The requested order statistics of the per-unit latencies, each read through the index by rank."""
    u = units.c
    out: dict[int, float] = {}
    for rank in ranks:
        if not 1 <= rank <= size:
            continue
        # Walk the index from the nearer end: the p95's ranks sit near the top.
        ascending = rank <= size - rank + 1
        order = u.first_latency_ms.asc() if ascending else u.first_latency_ms.desc()
        offset = rank - 1 if ascending else size - rank
        query = (
            select(u.first_latency_ms)
            .where(u.variant == variant, u.first_latency_ms.is_not(None))
            .order_by(order)
            .limit(1)
            .offset(offset)
        )
        out[rank] = float(session.execute(query).scalar_one())
    return out


def stage_stats(
    session: Session, migration: str, percent: float, *, ranks_for: RanksFor | None = None
) -> dict[str, VariantStats]:
    """Per variant ("control", "candidate", both always present) of one canary stage, from unit_aggregates.

    ``ranks_for(size)`` names the latency order statistics to fetch for a sample of ``size`` units (the gate's
    :func:`pairshift.gates.latency_ranks`); None fetches none.
    """
    units = (
        select(_units.c.variant, _units.c.unit, *(getattr(_units.c, col) for col in UNIT_COLUMNS))
        .where(_units.c.migration == migration, _units.c.percent == percent)
        .subquery()
    )
    stats = _stats(session, units, ranks_for)
    losses = select(ObservationLoss).where(
        ObservationLoss.migration == migration, ObservationLoss.percent == percent
    )
    for loss in session.scalars(losses):
        if loss.variant in stats:
            stats[loss.variant].lost = loss.lost
    return stats


def variant_stats(
    session: Session,
    deployment: str,
    migration: str | None,
    since: datetime,
    until: datetime | None = None,
    *,
    ranks_for: RanksFor | None = None,
) -> dict[str, VariantStats]:
    """Per variant of one migration's observations in [since, until), grouped by unit in SQL.

    ``migration`` is the id observations carry (the deployment's ``migration`` column while it canaried);
    ``None`` takes every observation of the deployment in the window. ``ranks_for`` as in :func:`stage_stats`.
    """
    c = _table.c
    first_ok = func.min(case((c.outcome.notin_(NO_LATENCY_OUTCOMES), c.id)))
    grouped = (
        select(
            c.variant,
            c.unit,
            func.count().label("calls"),
            _count_if("error").label("errors"),
            _count_if("invalid").label("invalid"),
            func.count(c.score).label("score_n"),
            func.coalesce(func.sum(c.score), 0.0).label("score_sum"),
            func.coalesce(func.sum(c.score * c.score), 0.0).label("score_sumsq"),
            func.sum(c.cost_usd).label("cost_sum"),
            func.sum(c.cost_usd * c.cost_usd).label("cost_sumsq"),
            first_ok.label("first_ok"),
        )
        .where(_filters(deployment, migration, since, until))
        .group_by(c.variant, c.unit)
        .subquery()
    )
    first = _table.alias("first")
    g = grouped.c
    units = (
        select(
            g.variant,
            g.unit,
            *(getattr(g, col) for col in UNIT_COLUMNS[:-1]),
            first.c.latency_ms.label("first_latency_ms"),
        )
        .select_from(grouped.outerjoin(first, first.c.id == g.first_ok))
        .subquery()
    )
    return _stats(session, units, ranks_for)


def invalid_details(
    session: Session, deployment: str, migration: str, since: datetime, *, limit: int = 3
) -> dict[str, list[tuple[str, int]]]:
    """Per variant, the commonest reasons (``detail``) outputs were invalid since ``since``, most first.

    What a stage's report names when its invalid-output rate breaches: which online check (or app callback)
    failed, and how often. It reads raw observations, so callers ask only when it will be shown.
    """
    c = _table.c
    rows = session.execute(
        select(c.variant, func.coalesce(c.detail, "(no detail)"), func.count())
        .where(_filters(deployment, migration, since, None), c.outcome == "invalid")
        .group_by(c.variant, func.coalesce(c.detail, "(no detail)"))
    ).all()
    out: dict[str, list[tuple[str, int]]] = {}
    for variant, detail, n in sorted(rows, key=lambda r: (r[0], -r[2], r[1])):
        if len(out.setdefault(variant, [])) < limit:
            out[variant].append((detail, int(n)))
    return out


class WindowAggregate(BaseModel):
    """One variant's observations in one time window."""

    variant: str
    start: datetime
    n: int
    errors: int
    invalid: int
    score_n: int
    score_mean: float | None
    latency_mean_ms: float
    cost_sum: float


def window_aggregates(
    session: Session,
    deployment: str,
    since: datetime,
    until: datetime | None = None,
    *,
    migration: str | None = None,
    window_s: float = 900.0,
) -> list[WindowAggregate]:
    """Counts and means per (window, variant), windows of ``window_s`` seconds aligned to ``since``.

    ``migration=None`` takes every observation of the deployment.
    """
    if window_s <= 0:
        raise ValueError("window_s must be positive")
    c = _table.c
    epoch = _epoch_seconds(session, c.at) - since.timestamp()
    bucket = cast(func.floor(epoch / window_s), Integer).label("bucket")
    query = (
        select(
            bucket,
            c.variant,
            func.count(),
            _count_if("error"),
            _count_if("invalid"),
            func.count(c.score),
            func.avg(c.score),
            func.avg(c.latency_ms),
            func.sum(c.cost_usd),
        )
        .where(_filters(deployment, migration, since, until))
        .group_by(bucket, c.variant)
        .order_by(bucket, c.variant)
    )
    start = since.timestamp()
    return [
        WindowAggregate(
            variant=variant,
            start=datetime.fromtimestamp(start + b * window_s, UTC),
            n=n,
            errors=errors or 0,
            invalid=invalid or 0,
            score_n=score_n,
            score_mean=None if score_mean is None else float(score_mean),
            latency_mean_ms=float(lat or 0.0),
            cost_sum=float(cost or 0.0),
        )
        for b, variant, n, errors, invalid, score_n, score_mean, lat, cost in session.execute(query)
    ]


def _epoch_seconds(session: Session, column: Any) -> Any:
    # Dialect-specific: SQLite stores UTC text, PostgreSQL a timestamptz.
    if session.get_bind().dialect.name == "sqlite":
        return func.julianday(column) * 86400.0 - 2440587.5 * 86400.0
    return func.extract("epoch", column)
