"""Production telemetry: the observation wire model, all-or-nothing batch storage, a non-blocking batched
writer, and the aggregates the canary gate and dashboards read (PRODUCT §2, §9).

- :class:`ObservationIn` is the wire shape of ``POST /v1/observations`` (and what :class:`~pairshift.router.Router`
  records). Unit keys are hashed (:func:`hash_unit`) before they are stored: the registry never holds a raw key.
- :func:`store_batch` validates every item against the registry (known deployment, a pair that deployment has
  served or is canarying) and inserts the whole batch in one bulk statement, or refuses it whole naming the
  bad item indices.
- :class:`ObservationWriter` sits between the hot path and the store: a bounded in-memory queue flushed by a
  daemon thread by size and by time; when full it drops the *oldest* item and counts it, so a caller is never
  blocked by a slow or unreachable registry.
- :func:`variant_stats` sums one migration's observations per variant into :class:`pairshift.gates.VariantStats`;
  :func:`window_aggregates` buckets them per time window for charts.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import BigInteger, Integer, and_, case, cast, distinct, func, select
from sqlalchemy.orm import Session

from pairshift.gates import VariantStats
from pairshift.registry.models import Deployment, LedgerEntry, Observation, utcnow
from pairshift.registry.store import Registry

log = logging.getLogger(__name__)

MAX_BATCH = 10_000  # PRODUCT §9: at most 10,000 observations a request
LATENCY_SAMPLE = 2_000  # VariantStats.latency_ms is a bounded sample (gates bootstrap it)
MAX_ERRORS_REPORTED = 20  # a refused batch names at most this many bad items
VARIANTS = ("control", "candidate")
_SAMPLE_PRIME = 1_000_003  # id * _SAMPLE_MULT mod prime: a cheap, deterministic pseudo-random row filter in SQL
_SAMPLE_MULT = 2_654_435_761
_table = Observation.__table__  # type: ignore[attr-defined]


def hash_unit(unit_key: str) -> str:
    """The stored form of a unit key: a SHA-256 prefix, stable, so distinct units can still be counted."""
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
    outcome: Literal["ok", "error", "invalid"]
    score: float | None = Field(default=None, ge=0, le=1)
    at: datetime | None = Field(default=None, description="ISO-8601; default the time received; naive = UTC")
    migration: str | None = Field(
        default=None, max_length=200,
        description="the migration resolve answered (optional; default the deployment's current one)",
    )

    @field_validator("at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        # The store keeps UTC; a naive time from a client is taken as UTC rather than refused.
        if value is not None and value.utcoffset() is None:
            return value.replace(tzinfo=timezone.utc)
        return value


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
    """A batch refused whole: nothing of it was stored. ``errors`` names the bad items by index."""

    def __init__(self, errors: list[ItemError], total_bad: int | None = None) -> None:
        self.errors = errors
        self.total_bad = total_bad if total_bad is not None else len(errors)
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
        raise BatchRejected(errors[:MAX_ERRORS_REPORTED], len(errors))
    return out


def store_batch(session: Session, items: Sequence[ObservationIn | Mapping[str, Any]]) -> int:
    """Validate every item and insert them all, or raise :class:`BatchRejected` and insert none.

    A pair is known to a deployment when it is its active or candidate pair or appears in its ledger (late
    telemetry of a pair that was just replaced is still accepted).
    """
    if len(items) > MAX_BATCH:
        raise BatchRejected([ItemError(index=MAX_BATCH, msg=f"a batch holds at most {MAX_BATCH:,} observations")],
                            len(items) - MAX_BATCH)
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
    rows: list[tuple[Any, ...]] = []
    for i, o in enumerate(obs):
        split = splits.get(o.deployment)
        if split is None:
            errors.append(ItemError(index=i, field="deployment", msg=f"unknown deployment {o.deployment!r}"))
            continue
        if o.pair not in known[o.deployment]:
            errors.append(ItemError(index=i, field="pair",
                                    msg=f"unknown pair {o.pair!r} for deployment {o.deployment!r}"))
            continue
        migration = o.migration or (split[2] if o.pair in split[:2] else None)
        rows.append((o.deployment, migration, o.pair, o.variant, hash_unit(o.unit), o.latency_ms, o.input_tokens,
                     o.output_tokens, o.cost_usd, o.outcome, o.score, o.at or now))
    if errors:
        raise BatchRejected(errors[:MAX_ERRORS_REPORTED], len(errors))
    _bulk_insert(session, rows)
    return len(rows)


_COLUMNS = ("deployment", "migration", "pair", "variant", "unit", "latency_ms", "input_tokens", "output_tokens",
            "cost_usd", "outcome", "score", "at")


def _bulk_insert(session: Session, rows: list[tuple[Any, ...]]) -> None:
    """One DB-API executemany. SQLAlchemy's per-row parameter processing cost ~15 us a row, 3x the insert
    itself, so rows go to the driver as tuples; ``at`` is written in the form SQLAlchemy itself stores."""
    conn = session.connection()
    dialect = conn.dialect
    if dialect.name == "sqlite":  # naive UTC text, as SQLAlchemy's SQLite DateTime writes and compares it
        rows = [r[:-1] + (r[-1].astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f"),) for r in rows]
    mark = "?" if dialect.paramstyle == "qmark" else "%s"
    sql = (f"INSERT INTO {_table.name} ({', '.join(_COLUMNS)}) "
           f"VALUES ({', '.join([mark] * len(_COLUMNS))})")
    conn.exec_driver_sql(sql, rows)


class ObservationWriter:
    """A bounded, batched, non-blocking path from the hot path to the store.

    ``put`` appends to an in-memory deque and returns; a daemon thread flushes up to ``batch_size`` items
    whenever that many are queued or ``flush_interval_s`` has passed. When the queue is full the oldest item is
    dropped (``dropped`` counts them): fresh telemetry matters more to a gate than old. A failed flush puts the
    batch back (newest first wins the space) and is retried at the next interval; a batch the store refuses
    is split and only the refused items are discarded (``rejected``).
    """

    def __init__(
        self,
        registry: Registry | None = None,
        *,
        sink: Callable[[list[ObservationIn]], Any] | None = None,
        max_queue: int = 100_000,
        batch_size: int = 5_000,
        flush_interval_s: float = 1.0,
    ) -> None:
        if (registry is None) == (sink is None):
            raise ValueError("ObservationWriter needs exactly one of registry or sink")
        self._sink = sink or self._registry_sink(registry)  # type: ignore[arg-type]
        self._queue: deque[ObservationIn] = deque(maxlen=max_queue)
        self._lock = threading.Lock()  # held only for O(1)/O(batch) deque work, never across I/O
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._flush_lock = threading.Lock()  # one flush at a time (thread vs an explicit flush())
        self._thread: threading.Thread | None = None
        self.max_queue, self.batch_size, self.flush_interval_s = max_queue, batch_size, flush_interval_s
        self.written = self.dropped = self.rejected = self.failed_flushes = 0
        self._failing = False

    @staticmethod
    def _registry_sink(registry: Registry) -> Callable[[list[ObservationIn]], Any]:
        def write(batch: list[ObservationIn]) -> int:
            with registry.session() as s:
                return store_batch(s, batch)

        return write

    def start(self) -> ObservationWriter:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="pairshift-observations", daemon=True)
            self._thread.start()
        return self

    def put(self, item: ObservationIn) -> None:
        """Queue one observation; never blocks on I/O. When full, the oldest queued item is dropped."""
        with self._lock:
            if len(self._queue) == self.max_queue:
                self.dropped += 1
            self._queue.append(item)  # a full deque with maxlen drops its left (oldest) end
            size = len(self._queue)
        if size >= self.batch_size:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._queue)

    def _take(self) -> list[ObservationIn]:
        with self._lock:
            n = min(self.batch_size, len(self._queue))
            return [self._queue.popleft() for _ in range(n)]

    def _requeue(self, batch: list[ObservationIn]) -> None:
        with self._lock:
            room = self.max_queue - len(self._queue)
            keep = batch[-room:] if room > 0 else []
            self.dropped += len(batch) - len(keep)
            self._queue.extendleft(reversed(keep))

    def flush(self) -> int:
        """Write everything queued now (synchronously); returns the number written. Stops at a failing store."""
        written = 0
        with self._flush_lock:
            while batch := self._take():
                if not self._write(batch):
                    break
                written += len(batch)
        return written

    def _write(self, batch: list[ObservationIn]) -> bool:
        try:
            self._sink(batch)
        except BatchRejected as exc:
            return self._write_accepted_part(batch, exc)
        except Exception as exc:  # noqa: BLE001 - any store failure: keep the data, retry later
            self.failed_flushes += 1
            if not self._failing:
                log.warning("observation store unreachable, keeping %d queued: %s", len(batch), exc)
                self._failing = True
            self._requeue(batch)
            return False
        if self._failing:
            log.info("observation store reachable again")
            self._failing = False
        self.written += len(batch)
        return True

    def _write_accepted_part(self, batch: list[ObservationIn], exc: BatchRejected) -> bool:
        # Store-side refusals are permanent (unknown deployment/pair): retrying them would loop forever.
        bad = {e.index for e in exc.errors}
        if exc.total_bad > len(exc.errors):  # not every bad item was named: discard the whole batch
            bad = set(range(len(batch)))
        log.warning("observation store refused %d item(s): %s", len(bad), exc)
        self.rejected += len(bad)
        rest = [o for i, o in enumerate(batch) if i not in bad]
        return self._write(rest) if rest else True

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            self.flush()

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the thread and flush what is queued (best effort when the store is down)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        self.flush()

    def __enter__(self) -> ObservationWriter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------- aggregates


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
    query = select(
        c.variant, func.count(), _count_if("error"), _count_if("invalid"), func.count(c.score),
        func.sum(c.score), func.sum(c.score * c.score), func.sum(c.cost_usd), func.sum(c.cost_usd * c.cost_usd),
        func.count(distinct(c.unit)),
    ).where(where).group_by(c.variant)
    out = {v: VariantStats(n=0, cost_sumsq=0.0, units=0) for v in VARIANTS}
    for variant, n, errors, invalid, score_n, s_sum, s_sq, cost, cost_sq, units in session.execute(query):
        if variant not in out:
            continue
        out[variant] = VariantStats(
            n=n, errors=errors or 0, invalid=invalid or 0, score_n=score_n, score_sum=s_sum or 0.0,
            score_sumsq=s_sq or 0.0, cost_sum=cost or 0.0, cost_sumsq=cost_sq or 0.0, units=units,
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
    query = select(
        bucket, c.variant, func.count(), _count_if("error"), _count_if("invalid"), func.count(c.score),
        func.avg(c.score), func.avg(c.latency_ms), func.sum(c.cost_usd),
    ).where(_filters(deployment, migration, since, until)).group_by(bucket, c.variant).order_by(bucket, c.variant)
    start = since.timestamp()
    return [
        WindowAggregate(
            variant=variant, start=datetime.fromtimestamp(start + b * window_s, timezone.utc), n=n,
            errors=errors or 0, invalid=invalid or 0, score_n=score_n,
            score_mean=None if score_mean is None else float(score_mean), latency_mean_ms=float(lat or 0.0),
            cost_sum=float(cost or 0.0),
        )
        for b, variant, n, errors, invalid, score_n, score_mean, lat, cost in session.execute(query)
    ]


def _epoch_seconds(session: Session, column: Any) -> Any:
    # Dialect-specific: SQLite stores UTC text, PostgreSQL a timestamptz.
    if session.get_bind().dialect.name == "sqlite":
        return func.julianday(column) * 86400.0 - 2440587.5 * 86400.0
    return func.extract("epoch", column)

