"""Observations in: the wire model of production telemetry and all-or-nothing batch storage (PRODUCT §2, §9).

:class:`ObservationIn` is the wire shape of ``POST /v1/observations`` (and what
:class:`~pairshift.router.Router` records). Unit keys are hashed (:func:`hash_unit`) before they are stored:
the registry never holds a raw key. :func:`store_batch` validates every item against the registry (known
deployment, a pair that deployment has served or is canarying) and inserts the whole batch in one bulk
statement, or refuses it whole naming the bad item indices.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from pairshift.registry.models import Deployment, LedgerEntry, Observation, ObservationLoss, utcnow

if TYPE_CHECKING:
    from pairshift.observations.split_check import RoutingSplit

MAX_BATCH = 10_000  # PRODUCT §9: at most 10,000 observations a request
MAX_ERRORS_REPORTED = 20  # a refused batch names at most this many bad items
DETAIL_MAX = 200  # an observation's detail (a check's name, an exception type) is a label, not a log
MAX_LOSSES = 1_000  # loss reports in one request (one per deployment, migration and variant a writer saw)
_table = Observation.__table__  # type: ignore[attr-defined]
# Outcomes the gates count as an error of the observation's pair: a `fallback` is a call the assigned pair
# failed and a pair of the deployment's chain served (users were answered, the pair still failed).
ERROR_OUTCOMES = ("error", "fallback")
# Outcomes whose latency is not a call's: an error's, or a stream the client gave up (`abandoned`: neither an
# error nor an invalid output of the pair, but its latency is the client's patience). The latency gate's one
# draw per unit is the unit's first call of another outcome.
NO_LATENCY_OUTCOMES = (*ERROR_OUTCOMES, "abandoned")


UNIT_HASH_KEY_ENV = "PAIRSHIFT_UNIT_HASH_KEY"


Stage = tuple[str, float]  # (migration, percent): a canary stage, as unit_aggregates keys it


def hash_unit(unit_key: str) -> str:
    """The stored form of a unit key: a 128-bit digest, stable, so distinct units can still be counted.

    With ``PAIRSHIFT_UNIT_HASH_KEY`` set (a secret, the same on every process that records observations) the
    digest is an HMAC, so guessable keys such as emails cannot be recovered by hashing candidates; without it,
    a salted SHA-256.
    """
    key = os.environ.get(UNIT_HASH_KEY_ENV)
    if key:
        return hmac.new(key.encode(), unit_key.encode(), hashlib.sha256).hexdigest()[:32]
    return hashlib.sha256(b"pairshift-unit\x00" + unit_key.encode()).hexdigest()[:32]


class ObservationIn(BaseModel):
    """One production call's telemetry, as ``POST /v1/observations`` takes it (PRODUCT §9)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    deployment: str = Field(min_length=1, max_length=200)
    pair: str = Field(min_length=1, max_length=400, description="prompt@version+model, as resolve answered")
    variant: Literal["control", "candidate"]
    unit: str = Field(min_length=1, max_length=512, description="the unit key; stored hashed, never raw")
    latency_ms: float = Field(ge=0)
    input_tokens: int = Field(ge=0)
    output_tokens: int = Field(ge=0)
    cost_usd: float = Field(ge=0)
    outcome: Literal["ok", "error", "invalid", "fallback", "abandoned"]
    score: float | None = Field(default=None, ge=0, le=1)
    at: datetime | None = Field(default=None, description="ISO-8601; default the time received; naive = UTC")
    migration: str | None = Field(
        default=None,
        max_length=200,
        description="the migration resolve answered (optional; default the deployment's current one)",
    )
    percent: float | None = Field(
        default=None,
        ge=0,
        le=100,
        description="the percent resolve answered (optional): a call stored after the stage moved still "
        "counts in the stage that routed it; it must be the live split's, or the one it replaced within 2 "
        "minutes",
    )
    resolved_model: str | None = Field(
        default=None,
        max_length=200,
        description="the snapshot the provider answered as (the response's `model`); how alias drift is seen",
    )
    served_pair: str | None = Field(
        default=None, max_length=400, description="outcome fallback: the pair of the chain that served"
    )
    prompt_version: str | None = Field(
        default=None, max_length=200, description="the app's own prompt version (gateway, X-Pairshift-Prompt)"
    )
    ttft_ms: float | None = Field(default=None, ge=0, description="streamed calls: time to the first token")
    detail: str | None = Field(
        default=None,
        max_length=DETAIL_MAX,
        description="why the output is invalid or the call errored (the failing check, the exception type)",
    )

    @field_validator("at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        # The store keeps UTC; a naive time from a client is taken as UTC rather than refused.
        if value is not None and value.utcoffset() is None:
            return value.replace(tzinfo=UTC)
        return value


class LossIn(BaseModel):
    """Observations a writer dropped before the store (its queue was full), counted per variant."""

    model_config = ConfigDict(extra="forbid")

    deployment: str = Field(min_length=1, max_length=200)
    migration: str | None = Field(default=None, max_length=200)
    variant: Literal["control", "candidate"]
    lost: int = Field(ge=1, le=10**9)


class ObservationBatch(BaseModel):
    """The body of ``POST /v1/observations``."""

    model_config = ConfigDict(extra="forbid")

    observations: list[ObservationIn] = Field(max_length=MAX_BATCH)


class ItemError(BaseModel):
    """Why one item of a batch was refused."""

    index: int
    field: str | None = None
    msg: str


class BatchRejected(ValueError):
    """A batch refused whole: nothing of it was stored. ``errors`` names the bad items by index.

    ``errors`` holds at most ``MAX_ERRORS_REPORTED`` (the message); ``bad_indexes`` holds every bad item's
    index, so a caller can resend the good ones instead of losing them (None: unknown, e.g. an oversized
    batch).
    """

    def __init__(
        self, errors: list[ItemError], total_bad: int | None = None, bad_indexes: list[int] | None = None
    ) -> None:
        self.errors = errors
        self.total_bad = total_bad if total_bad is not None else len(errors)
        self.bad_indexes = bad_indexes
        first = errors[0]
        where = f"observation {first.index}" + (f" field {first.field}" if first.field else "")
        more = f" (and {self.total_bad - 1} more bad item(s))" if self.total_bad > 1 else ""
        super().__init__(f"{where}: {first.msg}{more}; nothing of this batch was stored")


def _coerce(items: Sequence[ObservationIn | Mapping[str, Any]]) -> list[ObservationIn]:
    out: list[ObservationIn] = []
    errors: list[ItemError] = []
    for i, item in enumerate(items):
        if isinstance(item, ObservationIn):
            out.append(item)
            continue
        try:
            out.append(ObservationIn.model_validate(item))
        except ValidationError as exc:
            e = exc.errors()[0]
            errors.append(ItemError(index=i, field=".".join(map(str, e["loc"])) or None, msg=e["msg"]))
    if errors:
        raise BatchRejected(errors[:MAX_ERRORS_REPORTED], len(errors), [e.index for e in errors])
    return out


def store_batch(session: Session, items: Sequence[ObservationIn | Mapping[str, Any]]) -> int:
    """Validate every item and insert them all, or raise :class:`BatchRejected` and insert none.

    A pair is known to a deployment when it is its active or candidate pair or appears in its ledger (late
    telemetry of a pair that was just replaced is still accepted).
    """
    if len(items) > MAX_BATCH:
        raise BatchRejected(
            [ItemError(index=MAX_BATCH, msg=f"a batch holds at most {MAX_BATCH:,} observations")],
            len(items) - MAX_BATCH,
        )
    obs = _coerce(items)
    if not obs:
        return 0
    names = {o.deployment for o in obs}
    deployments = {d.name: d for d in session.scalars(select(Deployment).where(Deployment.name.in_(names)))}
    known: dict[str, set[str]] = {name: set() for name in deployments}
    for name, pair in session.execute(
        select(LedgerEntry.deployment, LedgerEntry.pair).where(LedgerEntry.deployment.in_(names)).distinct()
    ):
        known[name].add(pair)
    for d in deployments.values():
        known[d.name].update(p for p in (d.active_pair, d.candidate_pair) if p)
    splits = {d.name: (d.active_pair, d.candidate_pair, d.migration) for d in deployments.values()}
    errors: list[ItemError] = []
    now = utcnow()
    from pairshift.observations.split_check import live_splits  # split_check builds on this module

    routing = {d.name: live_splits(d, now) for d in deployments.values() if d.migration}
    rows: list[tuple[Any, ...]] = []
    stages: list[Stage | None] = []
    for i, o in enumerate(obs):
        split = splits.get(o.deployment)
        if split is None:
            errors.append(ItemError(index=i, field="deployment", msg=f"unknown deployment {o.deployment!r}"))
            continue
        if o.pair not in known[o.deployment]:
            errors.append(
                ItemError(
                    index=i, field="pair", msg=f"unknown pair {o.pair!r} for deployment {o.deployment!r}"
                )
            )
            continue
        migration = o.migration or (split[2] if o.pair in split[:2] else None)
        stages.append(_stage_of(o, migration, routing.get(o.deployment, [])))
        rows.append(
            (
                o.deployment,
                migration,
                o.pair,
                o.variant,
                hash_unit(o.unit),
                o.latency_ms,
                o.input_tokens,
                o.output_tokens,
                o.cost_usd,
                o.outcome,
                o.score,
                o.resolved_model,
                o.served_pair,
                o.prompt_version,
                o.ttft_ms,
                o.detail,
                o.at or now,
            )
        )
    if errors:
        raise BatchRejected(errors[:MAX_ERRORS_REPORTED], len(errors), [e.index for e in errors])
    _bulk_insert(session, rows)
    add_to_unit_aggregates(session, rows, stages)
    return len(rows)


_COLUMNS = (
    "deployment",
    "migration",
    "pair",
    "variant",
    "unit",
    "latency_ms",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "outcome",
    "score",
    "resolved_model",
    "served_pair",
    "prompt_version",
    "ttft_ms",
    "detail",
    "at",  # last: _bulk_insert formats it
)


# A unit's aggregate columns, in the order ingest writes them (aggregates.py reads the same list).
UNIT_COLUMNS = (
    "calls",
    "errors",
    "invalid",
    "score_n",
    "score_sum",
    "score_sumsq",
    "cost_sum",
    "cost_sumsq",
    "first_latency_ms",
)
_AGG_SQL = (
    "INSERT INTO unit_aggregates (migration, percent, variant, unit, {cols}) VALUES ({marks}) "
    "ON CONFLICT (migration, percent, variant, unit) DO UPDATE SET {sums}, "
    "first_latency_ms = COALESCE(unit_aggregates.first_latency_ms, excluded.first_latency_ms)"
)


def _stage_of(o: ObservationIn, migration: str | None, splits: Sequence[RoutingSplit]) -> Stage | None:
    """The canary stage whose split routed this row: the live one (``splits[0]``), or the one it replaced
    (within the split check's grace) when only that one sends the row's unit to the row's variant.

    A call routed at 20% that is stored after the stage moved to 50% belongs to the 20% stage: counted in the
    50% stage, a unit the 50% split sends to the candidate would show a control row there (a sample-ratio
    mismatch, and one unit in both arms). A row that carries the ``percent`` resolve answered (the router's
    own rows, clients that send it back) is that stage's, 0% none; ``POST /v1/observations`` has checked it
    against the splits (:mod:`pairshift.observations.split_check`). Without it the stage is inferred, and a
    row both splits agree on, or neither, is the live stage's: late rows of the 20% split from units outside
    20-50% land in the 50% stage, ~17% of them candidates, a mismatch when there are many (a client that
    batches for minutes; a test's 2,000-call burst once rolled a stage back on it).
    """
    canarying = [x for x in splits if x.migration == migration and x.percent > 0]
    if migration is None or not canarying:
        return None
    if o.percent is not None:
        return (migration, o.percent) if o.percent > 0 else None
    for split in canarying:
        if split.assign(o.unit)[0] == o.variant:
            return migration, split.percent
    return (migration, splits[0].percent) if canarying[0] is splits[0] else None


def add_to_unit_aggregates(
    session: Session, rows: Sequence[tuple[Any, ...]], stages: Sequence[Stage | None]
) -> int:
    """Add stored rows (in ``_COLUMNS`` order) to their unit's row of the canary stage that routed them.

    ``stages[i]`` is row ``i``'s (migration, percent), see :func:`_stage_of`; rows of another migration (late
    telemetry of a finished one) or of a deployment not canarying have none and are left out. One upsert per
    (stage, variant, unit) touched, in key order, so concurrent batches on PostgreSQL never deadlock.
    """
    sums: dict[tuple[str, float, str, str], list[Any]] = {}
    for row, stage in zip(rows, stages, strict=True):
        _d, migration, _pair, variant, unit, latency, _i, _o, cost, outcome, score, *_rest = row
        if stage is None:
            continue
        acc = sums.setdefault((stage[0], stage[1], variant, unit), [0, 0, 0, 0, 0.0, 0.0, 0.0, 0.0, None])
        acc[0] += 1
        acc[1] += outcome in ERROR_OUTCOMES
        acc[2] += outcome == "invalid"
        if score is not None:
            acc[3] += 1
            acc[4] += score
            acc[5] += score * score
        acc[6] += cost
        acc[7] += cost * cost
        if acc[8] is None and outcome not in NO_LATENCY_OUTCOMES:
            acc[8] = latency  # the unit's first recorded call that did not error
    if not sums:
        return 0
    conn = session.connection()
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    sql = _AGG_SQL.format(
        cols=", ".join(UNIT_COLUMNS),
        marks=", ".join([mark] * (4 + len(UNIT_COLUMNS))),
        sums=", ".join(f"{c} = unit_aggregates.{c} + excluded.{c}" for c in UNIT_COLUMNS[:-1]),
    )
    conn.exec_driver_sql(sql, [(*key, *acc) for key, acc in sorted(sums.items())])
    return len(sums)


def _bulk_insert(session: Session, rows: list[tuple[Any, ...]]) -> None:
    """One DB-API executemany. SQLAlchemy's per-row parameter processing cost ~15 us a row, 3x the insert
    itself, so rows go to the driver as tuples; ``at`` is written in the form SQLAlchemy itself stores."""
    conn = session.connection()
    dialect = conn.dialect
    if dialect.name == "sqlite":  # naive UTC text, as SQLAlchemy's SQLite DateTime writes and compares it
        rows = [r[:-1] + (r[-1].astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f"),) for r in rows]
    mark = "?" if dialect.paramstyle == "qmark" else "%s"
    sql = f"INSERT INTO {_table.name} ({', '.join(_COLUMNS)}) VALUES ({', '.join([mark] * len(_COLUMNS))})"
    conn.exec_driver_sql(sql, rows)


def store_losses(session: Session, losses: Sequence[LossIn | Mapping[str, Any]]) -> int:
    """Add writers' loss counts to the current canary stage of their deployment; returns how many it kept.

    Like :func:`add_to_unit_aggregates`, a loss belongs to the stage live when it is reported (a writer
    reports at its first successful flush after the drop). A loss of another migration (a finished one), of a
    deployment not canarying or unknown is not a stage's evidence and is left out.
    """
    items = [x if isinstance(x, LossIn) else LossIn.model_validate(x) for x in losses[:MAX_LOSSES]]
    names = {x.deployment for x in items}
    if not names:
        return 0
    stages = {
        d.name: (d.migration, d.canary_percent)
        for d in session.scalars(select(Deployment).where(Deployment.name.in_(names)))
        if d.migration and d.canary_percent > 0
    }
    sums: dict[tuple[str, float, str], int] = {}
    for x in items:
        stage = stages.get(x.deployment)
        if stage is None or (x.migration is not None and x.migration != stage[0]):
            continue
        key = (stage[0], stage[1], x.variant)
        sums[key] = sums.get(key, 0) + x.lost
    if not sums:
        return 0
    conn = session.connection()
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    conn.exec_driver_sql(  # an upsert: concurrent writers on PostgreSQL add, never collide
        f"INSERT INTO {ObservationLoss.__tablename__} (migration, percent, variant, lost) "
        f"VALUES ({mark}, {mark}, {mark}, {mark}) ON CONFLICT (migration, percent, variant) "
        "DO UPDATE SET lost = observation_losses.lost + excluded.lost",
        [(*key, lost) for key, lost in sorted(sums.items())],
    )
    return sum(sums.values())
