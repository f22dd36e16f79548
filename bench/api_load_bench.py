"""``pairshift api`` under concurrent load (issue 20 item 3). Writes ``bench/results/api_load.md``.

Run: ``.venv/bin/python bench/api_load_bench.py [--seconds 5] [--workers 1 2]`` (about two minutes).

Two processes on 127.0.0.1: ``pairshift api --workers W`` on a registry (PostgreSQL when 127.0.0.1:5432
answers, so several worker processes write without SQLite's single writer; else SQLite) holding the example
config with ``support-triage`` at a 20% canary, and this load generator: ``C`` concurrent clients (asyncio
and one pooled ``httpx.AsyncClient``, a request in flight per client) for ``--seconds`` per cell, each request
timed from send to the last byte. Routes: ``GET /v1/deployments/{name}/resolve`` (sticky hashing, no I/O),
``POST /v1/deployments/{name}/complete`` (render, the offline sim provider in process, one observation queued)
and ``POST /v1/observations`` with 1,000 calls a request (validated, checked against the split, stored with
the per-unit aggregates; the per-token observe limit is off). Only answered requests (2xx) count in a
cell's throughput and latency; errors are counted apart. The generator shares the machine's cores with the
server, as it would on a 2-core box: the figures are a floor for a dedicated server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

from gateway_bench import _free_port, _pct, _wait  # noqa: E402
from stage_query_bench import _drop_pg, _pg_url  # noqa: E402

DEPLOYMENT = "support-triage"
VARIABLES = {"customer_tier": "gold", "ticket_body": "I was charged twice, refund please"}


def _setup(url: str) -> tuple[str, dict]:
    """The example config applied at a 20% canary, a token; returns (token, an ingest body of 1,000 calls)."""
    from pairshift.apply import apply_path
    from pairshift.registry.models import Deployment
    from pairshift.registry.store import forget_registry, open_registry
    from pairshift.router import Router
    from pairshift.tokens import create_token

    registry = open_registry(url)
    apply_path(registry, REPO / "examples", by="bench")
    with registry.session() as s:
        dep = s.get(Deployment, DEPLOYMENT)
        dep.candidate_prompt, dep.candidate_model = "support-triage@2", "sim-fresh-2025-09"
        dep.canary_percent, dep.migration = 20.0, f"migration-{DEPLOYMENT}"
        s.add(dep)
        token = create_token(s, "bench", "resolve,observe,complete", by="bench").token
    with Router(DEPLOYMENT, registry, refresh_s=0) as router:  # each call as routed: the API checks the split
        calls = []
        for i in range(1_000):
            a = router.resolve(f"ingest-{i}")
            calls.append(
                {"deployment": DEPLOYMENT, "pair": a.pair, "variant": a.variant, "unit": f"ingest-{i}",
                 "latency_ms": 120.0, "input_tokens": 200, "output_tokens": 40, "cost_usd": 0.001,
                 "outcome": "ok", "migration": a.migration}
            )  # fmt: skip
    forget_registry(url)
    return token, {"observations": calls}


async def _cell(base: str, token: str, route: str, clients: int, seconds: float, body: dict | None):
    headers = {"authorization": f"Bearer {token}"}
    latencies: list[float] = []
    errors = 0
    # One pooled AsyncClient per 8 clients: httpx's pool is O(connections) per request, and one pool of 64
    # connections measured the load generator (-85% throughput), not the server.
    pools = [
        httpx.AsyncClient(base_url=base, headers=headers, timeout=30, limits=httpx.Limits(max_connections=8))
        for _ in range(-(-clients // 8))
    ]
    deadline = time.perf_counter() + seconds

    async def one_client(c: int) -> None:
        nonlocal errors
        http = pools[c // 8]
        i = 0
        while time.perf_counter() < deadline:
            i += 1
            started = time.perf_counter()
            if route == "resolve":
                r = await http.get(f"/v1/deployments/{DEPLOYMENT}/resolve", params={"unit": f"c{c}-{i}"})
            elif route == "complete":
                r = await http.post(
                    f"/v1/deployments/{DEPLOYMENT}/complete",
                    json={"unit": f"c{c}-{i}", "variables": VARIABLES},
                )
            else:
                r = await http.post("/v1/observations", json=body)
            if r.status_code >= 400:
                errors += 1
            else:
                latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    try:
        await asyncio.gather(*(one_client(c) for c in range(clients)))
    finally:
        for pool in pools:
            await pool.aclose()
    elapsed = time.perf_counter() - started
    return len(latencies) / elapsed, latencies, errors


def _ms(latencies: list[float], q: float) -> str:
    return f"{_pct(latencies, q):.1f}" if latencies else "n/a"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "api_load.md")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64])
    args = parser.parse_args()
    rows = []
    pg = _pg_url()
    with tempfile.TemporaryDirectory(prefix="pairshift-api-load-") as tmp:
        url = pg or f"sqlite:///{Path(tmp) / 'registry.db'}"
        store = "PostgreSQL" if pg else "SQLite"
        try:
            token, body = _setup(url)
            exe = str(Path(sys.executable).parent / "pairshift")
            # the per-token observe limit (10,000 calls/s by default) would measure the limiter, not the store
            env = {
                **os.environ,
                "PAIRSHIFT_HOME": tmp,
                "PAIRSHIFT_DATABASE_URL": url,
                "PAIRSHIFT_API_OBSERVE_ROWS_PER_MINUTE": "0",
            }
            for workers in args.workers:
                port = _free_port()
                api = subprocess.Popen(
                    [exe, "api", "--port", str(port), "--no-live-status", "--workers", str(workers)],
                    env=env,
                    stdout=subprocess.DEVNULL,
                )
                try:
                    _wait(f"http://127.0.0.1:{port}/healthz", api)
                    base = f"http://127.0.0.1:{port}"
                    asyncio.run(_cell(base, token, "complete", 8, 1.0, None))  # warm every worker
                    for route in ("resolve", "complete", "observations"):
                        for clients in args.clients:
                            rps, lat, errors = asyncio.run(
                                _cell(base, token, route, clients, args.seconds, body)
                            )
                            rows.append((workers, route, clients, rps, lat, errors))
                            print(rows[-1][:4], f"p50 {_ms(lat, 0.5)} ms, {errors} errors", flush=True)
                finally:
                    api.terminate()
                    api.wait(30)
        finally:
            if pg:
                _drop_pg(pg)
    lines = [
        "# pairshift api under concurrent load",
        "",
        f"`.venv/bin/python bench/api_load_bench.py --seconds {args.seconds:g}` on {platform.machine()}, "
        f"{os.cpu_count()} cores (server and load generator share them), Python {platform.python_version()}, "
        f"registry on {store}. Module doc of bench/api_load_bench.py says what each route does. "
        "Ingest rows are calls stored per second (1,000 a request).",
        "",
        "| workers | route | clients | requests/s | p50 ms | p99 ms | errors |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for workers, route, clients, rps, lat, errors in rows:
        shown = f"{rps:,.0f}" if route != "observations" else f"{rps:,.1f} ({rps * 1000:,.0f} calls/s)"
        lines.append(
            f"| {workers} | {route} | {clients} | {shown} | {_ms(lat, 0.5)} | {_ms(lat, 0.99)} | {errors} |"
        )
    best = {
        route: max(r[3] for r in rows if r[1] == route) for route in ("resolve", "complete", "observations")
    }
    lines += [
        "",
        f"Best: resolve {best['resolve']:,.0f}/s, complete {best['complete']:,.0f}/s, ingest "
        f"{best['observations'] * 1000:,.0f} calls/s over HTTP. Mean latency over all cells "
        f"{statistics.fmean(x for r in rows for x in r[4]):.1f} ms.",
        "",
    ]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
