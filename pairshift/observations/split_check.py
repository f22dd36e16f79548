"""Observations from outside the process checked against the split: a client cannot choose its own variant.

A canary gate compares candidate with control, so whoever could label rows freely could steer it: all
candidate rows ``error`` forces a rollback, good-looking ones push a bad candidate through. ``POST
/v1/observations`` therefore recomputes, for every row, where the router sent its unit: the variant and pair
under the deployment's live split (the same bucket :func:`pairshift.router.bucket` gives), or under the split
it replaced when that change is younger than :data:`GRACE` (rows routed just before a stage moved are still
on their way); a row that carries the ``percent`` resolve answered is checked against that split only. A
row that agrees with neither, names a migration other than the live one, or carries an ``at`` outside
``[now - 15 min, now + 1 min]`` refuses the whole batch, naming the row.

The in-process router's writer does not come through here: it routes and records in one process.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from pairshift.observations.store import MAX_ERRORS_REPORTED, BatchRejected, ItemError, ObservationIn
from pairshift.registry.models import Deployment

GRACE = timedelta(minutes=2)  # router refresh (2 s) + writer flush (1 s) + a client's own batching
MAX_AGE = timedelta(minutes=15)
MAX_AHEAD = timedelta(minutes=1)


@dataclass(frozen=True)
class RoutingSplit:
    """What decides a unit's variant: the owning migration, both pairs and the candidate's percent."""

    migration: str | None
    active_pair: str
    candidate_pair: str | None
    percent: float

    def assign(self, unit: str) -> tuple[str, str]:
        """(variant, pair) the router gives ``unit`` under this split."""
        from pairshift.router import bucket

        threshold = round(min(max(self.percent, 0.0), 100.0) * 100) if self.candidate_pair else 0
        if self.candidate_pair and bucket(self.migration, unit) < threshold:
            return "candidate", self.candidate_pair
        return "control", self.active_pair


def _splits(dep: Deployment, now: datetime) -> list[RoutingSplit]:
    live = RoutingSplit(dep.migration, dep.active_pair, dep.candidate_pair, dep.canary_percent)
    changed = dep.split_changed_at
    if changed is not None and changed.tzinfo is None:
        changed = changed.replace(tzinfo=UTC)
    prev = dep.previous_split
    if not prev or changed is None or now - changed > GRACE:
        return [live]
    try:
        before = RoutingSplit(
            prev.get("migration"),
            str(prev["active_pair"]),
            prev.get("candidate_pair"),
            float(prev["percent"]),
        )
    except (KeyError, TypeError, ValueError):  # an unreadable history entry only narrows what is accepted
        return [live]
    return [live, before]


def _why_not(o: ObservationIn, splits: list[RoutingSplit], now: datetime) -> ItemError | None:
    at = o.at or now
    if not now - MAX_AGE <= at <= now + MAX_AHEAD:
        return ItemError(
            index=-1,
            field="at",
            msg=f"at {at.isoformat()} is outside [now - 15 min, now + 1 min] (now {now.isoformat()})",
        )
    for split in splits:
        if o.migration is not None and o.migration != split.migration:
            continue
        if o.percent is not None and o.percent != split.percent:
            continue
        variant, pair = split.assign(o.unit)
        if (o.variant, o.pair) == (variant, pair):
            return None
    live = splits[0]
    if o.migration is not None and all(o.migration != s.migration for s in splits):
        return ItemError(
            index=-1,
            field="migration",
            msg=f"migration {o.migration!r} is not the live migration of {o.deployment!r} ({live.migration})",
        )
    if o.percent is not None and all(o.percent != s.percent for s in splits):
        return ItemError(
            index=-1,
            field="percent",
            msg=f"percent {o.percent:g} is neither the live split's ({live.percent:g}) nor, within "
            f"{GRACE.seconds // 60} minutes of the change, the one it replaced",
        )
    variant, pair = live.assign(o.unit)
    field = "pair" if o.variant == variant else "variant"
    return ItemError(
        index=-1,
        field=field,
        msg=f"{o.variant} on {o.pair} disagrees with the split: this unit is routed {variant} on {pair}",
    )


def live_splits(dep: Deployment, now: datetime) -> list[RoutingSplit]:
    """The splits a row of ``dep`` may agree with: the live one, then the one it replaced within GRACE."""
    return _splits(dep, now)


def check_against_split(
    session: Session, items: Sequence[ObservationIn], *, now: datetime | None = None
) -> None:
    """Raise :class:`BatchRejected` naming each row the split disagrees with; return when all agree."""
    errors = split_errors(session, items, now=now)
    if errors:
        raise BatchRejected(errors[:MAX_ERRORS_REPORTED], len(errors))


def split_errors(
    session: Session, items: Sequence[ObservationIn], *, now: datetime | None = None
) -> list[ItemError]:
    """Every row the split disagrees with, by index (``POST /v1/traces`` skips them; see above)."""
    now = now or datetime.now(UTC)
    names = {o.deployment for o in items}
    deps = {d.name: d for d in session.scalars(select(Deployment).where(Deployment.name.in_(names)))}
    splits = {name: _splits(dep, now) for name, dep in deps.items()}
    errors: list[ItemError] = []
    for i, o in enumerate(items):
        if o.deployment not in splits:
            errors.append(ItemError(index=i, field="deployment", msg=f"unknown deployment {o.deployment!r}"))
            continue
        why = _why_not(o, splits[o.deployment], now)
        if why is not None:
            errors.append(why.model_copy(update={"index": i}))
    return errors
