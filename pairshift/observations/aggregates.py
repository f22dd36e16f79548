"""Observations out: what the canary gate and dashboards read (PRODUCT §2, §9).

:func:`variant_stats` sums one migration's observations per variant into :class:`pairshift.gates.VariantStats`
(with a bounded, deterministic latency sample); :func:`window_aggregates` buckets them per time window for
charts. Both aggregate in SQL, so a week-long stage never ships its rows to Python.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
from pydantic import BaseModel
from sqlalchemy import BigInteger, Integer, and_, case, cast, distinct, func, select
from sqlalchemy.orm import Session

from pairshift.gates import VariantStats
from pairshift.registry.models import Observation

LATENCY_SAMPLE = 2_000  # VariantStats.latency_ms is a bounded sample (gates bootstrap it)
VARIANTS = ("control", "candidate")
_SAMPLE_PRIME = (
    1_000_003  # id * _SAMPLE_MULT mod prime: a cheap, deterministic pseudo-random row filter in SQL
)
_SAMPLE_MULT = 2_654_435_761
_table = Observation.__table__  # type: ignore[attr-defined]


def _filters(deployment: str, migration: str | None, since: datetime, until: datetime | None) -> Any:
    conds = [_table.c.deployment == deployment, _table.c.at >= since]
    if migration is not None:
        conds.append(_table.c.migration == migration)
    if until is not None:
        conds.append(_table.c.at < until)
    return and_(*conds)


def _count_if(outcome: str) -> Any:
    return func.sum(case((_table.c.outcome == outcome, 1), else_=0))


def variant_stats(
    session: Session,
    deployment: str,
    migration: str | None,
    since: datetime,
    until: datetime | None = None,
    *,
    latency_sample: int = LATENCY_SAMPLE,
) -> dict[str, VariantStats]:
    """Per variant ("control", "candidate", both always present) of one migration in [since, until).

    ``migration`` is the id observations carry (the deployment's ``migration`` column while it canaried);
    ``None`` takes every observation of the deployment in the window.
    """
    c = _table.c
    where = _filters(deployment, migration, since, until)
    query = (
        select(
            c.variant,
            func.count(),
            _count_if("error"),
            _count_if("invalid"),
            func.count(c.score),
            func.sum(c.score),
            func.sum(c.score * c.score),
            func.sum(c.cost_usd),
            func.sum(c.cost_usd * c.cost_usd),
            func.count(distinct(c.unit)),
        )
        .where(where)
        .group_by(c.variant)
    )
    out = {v: VariantStats(n=0, cost_sumsq=0.0, units=0) for v in VARIANTS}
    for variant, n, errors, invalid, score_n, s_sum, s_sq, cost, cost_sq, units in session.execute(query):
        if variant not in out:
            continue
        out[variant] = VariantStats(
            n=n,
            errors=errors or 0,
            invalid=invalid or 0,
            score_n=score_n,
            score_sum=s_sum or 0.0,
            score_sumsq=s_sq or 0.0,
            cost_sum=cost or 0.0,
            cost_sumsq=cost_sq or 0.0,
            units=units,
            latency_ms=_latency_sample(session, and_(where, c.variant == variant), n, latency_sample),
        )
    return out


def _latency_sample(session: Session, where: Any, n: int, cap: int) -> list[float]:
    """At most ``cap`` latencies, deterministic for the same rows (the gate's bootstrap must replay)."""
    c = _table.c
    query = select(c.latency_ms).where(where)
    if n > cap:
        # Pre-filter in SQL (2x oversampled) so a week-long stage never ships millions of rows to Python.
        keep = min(_SAMPLE_PRIME, int(_SAMPLE_PRIME * 2 * cap / n) + 1)
        mixed = (cast(c.id, BigInteger) * _SAMPLE_MULT) % _SAMPLE_PRIME
        query = query.where(mixed < keep)
    values = np.fromiter((row[0] for row in session.execute(query.order_by(c.id))), dtype=float)
    if values.size > cap:
        values = np.random.default_rng(values.size).choice(values, size=cap, replace=False)
    return values.tolist()


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
