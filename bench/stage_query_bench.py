"""How long a canary gate check's query takes against the per-unit aggregates (``make bench``).

The stage gate never reads calls: ``observations.stage_stats`` sums one stage's rows of ``unit_aggregates``
(one row per unit, kept at ingest) and fetches a few latency order statistics by rank through an index. Its
cost grows with the units of the stage, not with its calls. This bench fills one stage with ``--units`` unit
rows (90% control, 10% candidate, and as many rows of another stage around them) on SQLite and, when
127.0.0.1:5432 answers, PostgreSQL, and times ``stage_stats`` with the gate's latency ranks (median of 5
runs after one warm-up).

With PostgreSQL it then measures the gate at volume (issue 20): ``--observations`` calls (default 10 million)
spread over 60 days in ``observations`` beside a 300,000-unit stage, and times a gate check, ingest of a
5,000-call batch into the full table, a day's window of raw calls (``variant_stats``), and retention folding
the calls older than 30 days into daily rollups (``observations.retention``), with the table's size before
and after.

Run: ``python bench/stage_query_bench.py [--units 100000 300000] [--observations 10000000]
[--out bench/results/stage_query.md]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pairshift.gates import latency_ranks  # noqa: E402
from pairshift.observations import stage_stats, store_batch, variant_stats  # noqa: E402
from pairshift.observations.retention import cutoff_for, roll_up  # noqa: E402
from pairshift.policy import CanaryPolicy  # noqa: E402
from pairshift.registry.store import forget_registry, open_registry  # noqa: E402

PG_ADMIN = os.environ.get("PAIRSHIFT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
MIGRATION = "migration-bench/run"
_INSERT = (
    "INSERT INTO unit_aggregates (migration, percent, variant, unit, calls, errors, invalid, score_n, "
    "score_sum, score_sumsq, cost_sum, cost_sumsq, first_latency_ms) VALUES ({})"
)


def fill(registry, units: int) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(1)
    for percent in (5.0, 20.0):  # the stage measured (20%) and an earlier one beside it
        calls = rng.poisson(rng.lognormal(0, 1.5, units)) + 1
        errors = rng.binomial(calls, 0.01)
        lat = rng.lognormal(6.5, 0.4, units)
        variant = np.where(rng.random(units) < 0.1, "candidate", "control")
        rows = [
            (MIGRATION, percent, str(variant[i]), f"{percent}-{i:08d}", int(calls[i]), int(errors[i]), 0,
             0, 0.0, 0.0, float(calls[i]) * 0.002, float(calls[i]) * 4e-6, float(lat[i]))
            for i in range(units)
        ]  # fmt: skip
        with registry.session() as s:
            conn = s.connection()
            mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
            for i in range(0, units, 50_000):
                conn.exec_driver_sql(_INSERT.format(", ".join([mark] * 13)), rows[i : i + 50_000])
    if registry.engine.dialect.name == "postgresql":
        with registry.engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE unit_aggregates")


def time_check(registry) -> float:  # type: ignore[no-untyped-def]
    policy = CanaryPolicy()
    timings = []
    for i in range(6):
        started = time.perf_counter()
        with registry.session() as s:
            stats = stage_stats(s, MIGRATION, 20.0, ranks_for=lambda n: latency_ranks(policy, n))
        if i:
            timings.append(time.perf_counter() - started)
    assert stats["control"].latency.size > 0
    return float(np.median(timings))


DEPLOYMENT, ACTIVE, CANDIDATE = "bench", "bench@1+sim-a", "bench@2+sim-b"
_FILL_OBSERVATIONS = """
INSERT INTO observations (deployment, migration, pair, variant, unit, latency_ms, input_tokens, output_tokens,
                          cost_usd, outcome, score, at)
SELECT %(dep)s,
       CASE WHEN g > %(n)s * 0.9 THEN %(mig)s END,
       CASE WHEN g %% 10 = 0 THEN %(cand)s ELSE %(active)s END,
       CASE WHEN g %% 10 = 0 THEN 'candidate' ELSE 'control' END,
       md5((g %% 200000)::text),
       50 + random() * 900, 200 + (g %% 300), 40 + (g %% 90), 0.0004 + random() * 0.002,
       CASE WHEN g %% 97 = 0 THEN 'error' WHEN g %% 89 = 0 THEN 'invalid' ELSE 'ok' END,
       CASE WHEN g %% 3 = 0 THEN random() END,
       %(now)s - ((%(n)s - g)::float8 / %(n)s) * interval '60 days'
FROM generate_series(1, %(n)s) AS g
"""


def _deployment(registry) -> None:  # type: ignore[no-untyped-def]
    from pairshift.registry.models import Deployment

    with registry.session() as s:
        s.add(
            Deployment(
                name=DEPLOYMENT,
                active_prompt="bench@1",
                active_model="sim-a",
                candidate_prompt="bench@2",
                candidate_model="sim-b",
                canary_percent=20.0,
                migration=MIGRATION,
            )
        )


def _median_ms(fn, runs: int = 5) -> float:  # type: ignore[no-untyped-def]
    timings = []
    for i in range(runs + 1):
        started = time.perf_counter()
        fn()
        if i:  # the first run warms the caches
            timings.append(time.perf_counter() - started)
    return float(np.median(timings)) * 1000


def at_volume(url: str, n: int) -> list[tuple[str, str]]:
    """Gate, ingest, window and retention figures with ``n`` calls in ``observations`` (PostgreSQL)."""
    from datetime import UTC, datetime, timedelta

    import psycopg

    registry = open_registry(url)
    fill(registry, 300_000)
    _deployment(registry)
    now = datetime.now(UTC)
    started = time.perf_counter()
    with psycopg.connect(url) as conn:
        conn.execute(
            _FILL_OBSERVATIONS,
            {"dep": DEPLOYMENT, "n": n, "mig": MIGRATION, "cand": CANDIDATE, "active": ACTIVE, "now": now},
        )
        conn.execute("ANALYZE observations")
    load_s = time.perf_counter() - started
    size = "SELECT pg_size_pretty(pg_total_relation_size('observations'))"
    with registry.engine.connect() as conn:
        before = conn.exec_driver_sql(size).scalar_one()
    policy = CanaryPolicy()

    def gate() -> None:
        with registry.session() as s:
            stage_stats(s, MIGRATION, 20.0, ranks_for=lambda k: latency_ranks(policy, k))

    def window() -> None:
        with registry.session() as s:
            variant_stats(s, DEPLOYMENT, MIGRATION, now - timedelta(days=1))

    batch = [
        {"deployment": DEPLOYMENT, "pair": ACTIVE, "variant": "control", "unit": f"u{i}", "latency_ms": 120.0,
         "input_tokens": 200, "output_tokens": 40, "cost_usd": 0.001, "outcome": "ok", "migration": MIGRATION}
        for i in range(5_000)
    ]  # fmt: skip

    def ingest() -> None:
        with registry.session() as s:
            store_batch(s, batch)

    gate_ms, window_ms, ingest_ms = _median_ms(gate), _median_ms(window), _median_ms(ingest)
    with registry.session() as s:
        day = variant_stats(s, DEPLOYMENT, MIGRATION, now - timedelta(days=1))
    in_window = sum(v.n for v in day.values())
    started = time.perf_counter()
    rolled = roll_up(registry, cutoff_for(now, 30))
    roll_s = time.perf_counter() - started
    with registry.engine.connect() as conn:
        after_rows = conn.exec_driver_sql("SELECT count(*) FROM observations").scalar_one()
    gate_after_ms = _median_ms(gate)
    return [
        ("calls in `observations` (60 days, 200,000 units; the last 10% in the live migration)", f"{n:,}"),
        ("load time (server-side generate_series, with its indexes)", f"{load_s:.0f} s"),
        ("table size with its indexes", before),
        ("gate check (`stage_stats`, 300,000-unit stage; target <= 200 ms)", f"{gate_ms:.0f} ms"),
        ("ingest of a 5,000-call batch into the full table (`store_batch`)", f"{ingest_ms:.0f} ms"),
        (f"a day's window of raw calls (`variant_stats`, {in_window:,} calls)", f"{window_ms:.0f} ms"),
        (
            "retention at 30 days (`roll_up`: calls folded and deleted)",
            f"{rolled.rolled_up:,} calls into {rolled.rollup_rows:,} rollup rows over {rolled.days} days "
            f"in {roll_s:.0f} s ({rolled.rolled_up / roll_s:,.0f} calls/s); {rolled.kept_live:,} kept: live",
        ),
        ("calls left after retention", f"{after_rows:,}"),
        ("gate check after retention", f"{gate_after_ms:.0f} ms"),
    ]


def _pg_url() -> str | None:
    with socket.socket() as s:
        s.settimeout(0.5)
        if s.connect_ex(("127.0.0.1", 5432)) != 0:
            return None
    import psycopg

    name = f"pairshift_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"


def _drop_pg(url: str) -> None:
    import psycopg

    forget_registry(url)
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, nargs="+", default=[100_000, 300_000])
    parser.add_argument("--observations", type=int, default=10_000_000, help="0 skips the volume section")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "stage_query.md")
    args = parser.parse_args()
    rows = []
    for units in args.units:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'registry.db'}"
            registry = open_registry(url)
            fill(registry, units)
            rows.append(("sqlite", units, time_check(registry)))
            forget_registry(url)
        pg = _pg_url()
        if pg:
            try:
                registry = open_registry(pg)
                fill(registry, units)
                rows.append(("postgresql", units, time_check(registry)))
            finally:
                _drop_pg(pg)
    volume: list[tuple[str, str]] = []
    pg = _pg_url() if args.observations else None
    if pg:
        try:
            volume = at_volume(pg, args.observations)
        finally:
            _drop_pg(pg)
    lines = [
        "# Stage gate query time over per-unit aggregates",
        "",
        f"Generated by `python bench/stage_query_bench.py` ({platform.python_version()}, {os.cpu_count()} "
        "CPUs, "
        "shared with other work while measured); do not edit by hand.",
        "",
        "`observations.stage_stats` for one stage: sums, squares and products over its unit rows in SQL, "
        "plus "
        "the latency order statistics the gate's quantile test asks for (6 index lookups). Median of 5 runs.",
        "",
        "| store | units in the stage (and as many in another stage) | gate query |",
        "|---|---|---|",
        *[f"| {store} | {units:,} | {seconds * 1000:.0f} ms |" for store, units, seconds in rows],
        "",
    ]
    if volume:
        lines += [
            "## At volume (PostgreSQL)",
            "",
            f"`python bench/stage_query_bench.py --observations {args.observations}`. The gate reads the "
            "per-unit aggregates kept at ingest, never the calls, so its time does not grow with the table; "
            "retention keeps the table itself bounded.",
            "",
            "| what | figure |",
            "|---|---|",
            *[f"| {what} | {figure} |" for what, figure in volume],
            "",
        ]
    elif args.observations:
        lines += ["PostgreSQL did not answer on 127.0.0.1:5432: the volume section was not measured.", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
