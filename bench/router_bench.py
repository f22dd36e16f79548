"""Router and ingest benchmark: ``Router.resolve`` latency in-process and observation ingest rate
into SQLite and PostgreSQL (when 127.0.0.1:5432 answers). Writes ``bench/results/router.md``.

Run: ``.venv/bin/python bench/router_bench.py`` (about half a minute). Targets: resolve p99 < 20 us,
ingest > 20,000 observations/s on SQLite.

- resolve: 200,000 distinct unit keys at a 20% canary, each call timed with ``perf_counter_ns`` after a
  50,000-call warm-up (the timer's own cost, ~0.1 us, is included: the figures are an upper bound).
- ingest: ``store_batch`` (validation against the registry + one executemany) of 10,000-item batches, the
  ``POST /v1/observations`` maximum, each in its own transaction; and the same through ``ObservationWriter``
  (queue + background flush), which is what ``Router.record`` uses.
"""

from __future__ import annotations

import os
import platform
import socket
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pairshift.apply import apply_path  # noqa: E402
from pairshift.observations import ObservationIn, ObservationWriter, store_batch  # noqa: E402
from pairshift.registry.models import Deployment  # noqa: E402
from pairshift.registry.store import forget_registry, open_registry  # noqa: E402
from pairshift.router import Router  # noqa: E402

DEPLOYMENT = "support-triage"
PG_ADMIN = os.environ.get("PAIRSHIFT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
RESOLVE_N, WARMUP_N = 200_000, 50_000
INGEST_BATCHES, BATCH = 10, 10_000


def _prepare(url: str):
    registry = open_registry(url)
    apply_path(registry, REPO / "examples", by="bench")
    with registry.session() as s:
        dep = s.get(Deployment, DEPLOYMENT)
        dep.candidate_prompt, dep.candidate_model = "support-triage@2", "sim-fresh-2025-09"
        dep.canary_percent, dep.migration = 20.0, "migration-support-triage"
        s.add(dep)
    return registry


def bench_resolve(registry) -> dict[str, float]:
    units = [f"user-{i}" for i in range(RESOLVE_N)]
    timings = [0] * RESOLVE_N
    clock = time.perf_counter_ns
    with Router(DEPLOYMENT, registry, refresh_s=2.0) as router:  # the refresh thread runs, as in production
        resolve = router.resolve
        for i in range(WARMUP_N):
            resolve(f"warm-{i}")
        for i, unit in enumerate(units):
            t0 = clock()
            resolve(unit)
            timings[i] = clock() - t0
        started = time.perf_counter()
        for unit in units:
            resolve(unit)
        throughput = RESOLVE_N / (time.perf_counter() - started)
    timings.sort()
    return {
        "median_us": timings[RESOLVE_N // 2] / 1000,
        "p99_us": timings[int(RESOLVE_N * 0.99)] / 1000,
        "max_us": timings[-1] / 1000,
        "per_s": throughput,
    }


def _batch(k: int) -> list[ObservationIn]:
    at = datetime.now(UTC)
    pairs = (
        ("control", "support-triage@1+sim-classic-2024-06"),
        ("candidate", "support-triage@2+sim-fresh-2025-09"),
    )
    return [
        ObservationIn(
            deployment=DEPLOYMENT,
            pair=pairs[i % 5 == 0][1],
            variant=pairs[i % 5 == 0][0],
            unit=f"user-{k}-{i}",
            latency_ms=420.0 + i % 100,
            input_tokens=180,
            output_tokens=40,
            cost_usd=0.0011,
            outcome="error" if i % 97 == 0 else "ok",
            score=0.9,
            at=at,
        )
        for i in range(BATCH)
    ]


def bench_ingest(registry) -> dict[str, float]:
    batches = [
        _batch(k) for k in range(INGEST_BATCHES)
    ]  # built outside the timing: the wire already parsed them
    started = time.perf_counter()
    for b in batches:
        with registry.session() as s:
            store_batch(s, b)
    direct = INGEST_BATCHES * BATCH / (time.perf_counter() - started)
    writer = ObservationWriter(
        registry, max_queue=INGEST_BATCHES * BATCH, batch_size=BATCH, flush_interval_s=0.05
    )
    started = time.perf_counter()
    with writer:
        for b in batches:
            for o in b:
                writer.put(o)
    via_writer = writer.written / (time.perf_counter() - started)
    return {"store_batch_per_s": direct, "writer_per_s": via_writer, "dropped": writer.dropped}


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
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'registry.db'}"
        registry = _prepare(url)
        results["resolve"] = bench_resolve(registry)
        results["sqlite"] = bench_ingest(registry)
        forget_registry(url)
    pg = _pg_url()
    if pg:
        try:
            results["postgresql"] = bench_ingest(_prepare(pg))
        finally:
            _drop_pg(pg)
    write_report(results)


def write_report(results: dict[str, dict[str, float]]) -> None:
    r = results["resolve"]
    lines = [
        "# Router and ingest benchmark",
        "",
        f"`bench/router_bench.py`, {datetime.now(UTC):%Y-%m-%d}, Python {platform.python_version()}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs (shared with other work while measured).",
        "",
        "## `Router.resolve` (in-process, 20% canary, 200,000 distinct units after a 50,000-call warm-up)",
        "",
        "| median | p99 | max | throughput | target |",
        "| --- | --- | --- | --- | --- |",
        f"| {r['median_us']:.2f} us | {r['p99_us']:.2f} us | {r['max_us']:.0f} us | {r['per_s']:,.0f} /s | "
        f"p99 < 20 us: {'met' if r['p99_us'] < 20 else 'MISSED'} |",
        "",
        "## Observation ingest (10 batches of 10,000, one transaction each)",
        "",
        "| store | `store_batch` | via `ObservationWriter` | target |",
        "| --- | --- | --- | --- |",
    ]
    for store in ("sqlite", "postgresql"):
        if store not in results:
            lines.append(f"| {store} | not measured (no server on 127.0.0.1:5432) | | |")
            continue
        i = results[store]
        target = (
            f"> 20,000/s: {'met' if i['store_batch_per_s'] > 20_000 else 'MISSED'}"
            if store == "sqlite"
            else ""
        )
        lines.append(
            f"| {store} | {i['store_batch_per_s']:,.0f} /s | {i['writer_per_s']:,.0f} /s "
            f"({i['dropped']:.0f} dropped) | {target} |"
        )
    lines += [
        "",
        "Statistics of timings: p99 is the 99th percentile of single-call `perf_counter_ns` timings; "
        "ingest includes validation against the registry, unit hashing and the bulk insert.",
        "",
    ]
    out = REPO / "bench" / "results" / "router.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
