"""Eval throughput benchmark: does an eval run as fast as the provider's rate limit allows?

Against the fake provider server (``pairshift.sim.server``, Anthropic wire format, fixed latency, a rate
limit on the model) it runs a prompt-only eval of 1,000 cases x 1 epoch x 2 arms = 2,000 calls, all on one
model, and reports:

- through EvalWorkflow on a local Temporal dev server: calls/s divided by the rate limit (the ceiling),
  and the 429s the server sent;
- the same eval by direct calls of the same engine functions without Temporal: Temporal's overhead;
- the same pair again without a rate limit (latency- and concurrency-bound), where overhead shows most;
- a cached re-run's time (the baseline is reused and the other arm comes from the response cache).

Run: ``python bench/eval_bench.py --out bench/results/eval.md`` (``make bench`` runs every bench).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

CASES, LATENCY_MS, RATE_PER_S, WINDOW_S, CONCURRENCY = 1000, 50.0, 50, 10.0, 16
MODEL = "sim-classic-2024-06"


def _config(folder: Path, base_url: str, rpm: float | None) -> Path:
    """The example config, sim-classic behind the fake server, 1,000 cases (300 examples repeated)."""
    import yaml
    from test_evals_support import EXAMPLES

    config = yaml.safe_load((EXAMPLES / "pairshift.yaml").read_text())
    limits: dict[str, float] = {"concurrency": CONCURRENCY} | ({"requests_per_minute": rpm} if rpm else {})
    for model in config["models"]:
        model.update(provider="anthropic", base_url=base_url, limits=limits)
    source = [
        json.loads(line) for line in (EXAMPLES / "datasets/support-triage.jsonl").read_text().splitlines()
    ]
    (folder / "datasets").mkdir(parents=True, exist_ok=True)
    with (folder / "datasets/support-triage.jsonl").open("w") as out:
        for i in range(CASES):
            out.write(json.dumps(source[i % len(source)] | {"id": f"case-{i:04d}"}) + "\n")
    (folder / "pairshift.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder / "pairshift.yaml"


def _request(no_cache: bool):  # type: ignore[no-untyped-def]
    from pairshift.contracts.evals import EvalRequest

    return EvalRequest(
        deployment="support-triage",
        to_model=MODEL,
        to_prompt="support-triage@2",
        epochs=1,
        no_cache=no_cache,
        requested_by="bench",
    )


class _Sim:
    """``pairshift sim serve`` in its own process (so it does not compete with the worker for the GIL)."""

    def __init__(self, **settings: object) -> None:
        import socket
        import subprocess

        import httpx

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        code = f"from pairshift.sim.server import serve; serve(port={port}, **{settings!r})"
        self.proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
        self.base_url = f"http://127.0.0.1:{port}"
        self.http = httpx.Client(base_url=self.base_url, timeout=10)
        deadline = time.monotonic() + 30
        while True:  # poll until the server answers
            try:
                self.http.get("/_admin/stats")
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("the fake provider server did not start") from None
                time.sleep(0.1)

    def stats(self) -> dict[str, float]:
        return self.http.get("/_admin/stats").json()["models"].get(MODEL, {})

    def reset(self) -> None:
        self.http.post("/_admin/reset", json={}).raise_for_status()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


async def _via_temporal(client, queue: str, no_cache: bool) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    from workflows.evals import EvalWorkflow

    start = time.perf_counter()
    report = await client.execute_workflow(
        EvalWorkflow.run, _request(no_cache), id=f"bench-{uuid.uuid4().hex[:8]}", task_queue=queue
    )
    return time.perf_counter() - start, report


async def _direct(registry) -> float:  # type: ignore[no-untyped-def]
    """The same engine functions, in-process, with the workflow's default parallelism of batches."""
    from pairshift import evals

    start = time.perf_counter()
    plan = evals.plan_eval(registry, _request(True), uuid.uuid4().hex)
    gate = asyncio.Semaphore(evals.EvalTuning().parallel_batches)

    async def one(spec):  # type: ignore[no-untyped-def]
        async with gate:
            await evals.run_batch(registry, spec)

    await asyncio.gather(
        *(
            one(evals.BatchSpec(run_id=a.run_id, start=lo, stop=hi, no_cache=True))
            for a in plan.arms
            for lo, hi in evals.batch_ranges(plan.n_cases)
        )
    )
    evals.build_report(registry, plan, [evals.summarize_run(registry, a.run_id) for a in plan.arms])
    return time.perf_counter() - start


async def _scenario(tmp: Path, sim, client, queue: str, rpm: float | None) -> dict[str, float]:  # type: ignore[no-untyped-def]
    from pairshift.apply import apply_path
    from pairshift.ratelimit import reset_limiters
    from pairshift.registry.store import open_registry
    from pairshift.settings import get_settings

    url = f"sqlite:///{tmp / f'registry-{uuid.uuid4().hex[:6]}.db'}"
    os.environ["PAIRSHIFT_DATABASE_URL"] = url
    get_settings.cache_clear()
    registry = open_registry(url)
    apply_path(registry, _config(tmp / uuid.uuid4().hex[:6], sim.base_url, rpm), by="bench")
    out: dict[str, float] = {}
    for phase in ("temporal", "direct"):
        sim.reset()
        reset_limiters()
        seconds = (
            (await _via_temporal(client, queue, True))[0] if phase == "temporal" else await _direct(registry)
        )
        stats = sim.stats()
        out[f"{phase}_s"], out[f"{phase}_429"], out[f"{phase}_ok"] = (
            seconds,
            stats.get("rate_limited", 0),
            stats["ok"],
        )
    sim.reset()
    out["cached_s"], report = await _via_temporal(client, queue, False)
    out["cached_calls"] = sum(a.cached_calls for n, a in report.arms.items() if n != "joint")  # type: ignore[attr-defined]
    out["cached_provider_calls"] = sim.stats().get("ok", 0)
    return out


def model_queue_worker(client, queue: str, rpm: float):  # type: ignore[no-untyped-def]
    """The worker of the rate-limited model's own task queue, where its eval batches go (pairshift.ratelimit):
    without it a rate-limited eval waits forever."""
    from pairshift.ratelimit import model_queue_rates
    from worker.main import build_model_queue_worker

    limits = {"concurrency": CONCURRENCY, "requests_per_minute": rpm}
    ((model_queue, rate),) = model_queue_rates(queue, [(MODEL, limits)]).items()
    return build_model_queue_worker(client, model_queue, rate)


async def _main() -> dict[str, dict[str, float]]:
    from conftest import temporal_bin
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.testing import WorkflowEnvironment

    from pairshift.cli.stack import ONE_PARTITION_PER_QUEUE
    from worker.main import build_worker

    limit = {MODEL: {"requests": int(RATE_PER_S * WINDOW_S), "per_seconds": WINDOW_S}}
    limited, unlimited = _Sim(latency_ms=LATENCY_MS, rate_limits=limit), _Sim(latency_ms=LATENCY_MS)
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_bin(),
        ui=False,
        data_converter=pydantic_data_converter,
        dev_server_extra_args=["--log-level", "error", *ONE_PARTITION_PER_QUEUE],  # as `pairshift server`
    )
    queue = f"bench-{uuid.uuid4().hex[:6]}"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["PAIRSHIFT_HOME"] = tmp
            async with (
                build_worker(env.client, task_queue=queue),
                model_queue_worker(env.client, queue, RATE_PER_S * 60),
            ):
                return {
                    "rate-limited": await _scenario(Path(tmp), limited, env.client, queue, RATE_PER_S * 60),
                    "unlimited": await _scenario(Path(tmp), unlimited, env.client, queue, None),
                }
    finally:
        await env.shutdown()
        limited.stop()
        unlimited.stop()


def _markdown(r: dict[str, dict[str, float]]) -> str:
    lim, free = r["rate-limited"], r["unlimited"]
    calls = 2 * CASES
    overhead = lambda s: (s["temporal_s"] - s["direct_s"]) / s["direct_s"]  # noqa: E731
    return (
        "\n".join(
            [
                "# Eval throughput benchmark",
                "",
                f"{calls:,} calls (prompt-only eval: {CASES:,} cases x 1 epoch x 2 arms, one model) against "
                f"the fake provider server (Anthropic wire format, {LATENCY_MS:.0f} ms per answer), "
                f"{CONCURRENCY} concurrent calls per model, batches of {min(200, max(10, -(-CASES // 25)))} "
                "cases, 8 batch activities in flight.",
                "",
                "| scenario | path | seconds | calls/s | of ceiling | 429s | provider calls |",
                "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
                *(
                    f"| rate limit {RATE_PER_S}/s ({int(RATE_PER_S * WINDOW_S)} per {WINDOW_S:g} s window) "
                    f"| {p} | {lim[f'{p}_s']:.2f} | {calls / lim[f'{p}_s']:.1f} | "
                    f"{calls / lim[f'{p}_s'] / RATE_PER_S:.3f} | {lim[f'{p}_429']:.0f} | "
                    f"{lim[f'{p}_ok']:.0f} |"
                    for p in ("temporal", "direct")
                ),
                *(
                    f"| no rate limit | {p} | {free[f'{p}_s']:.2f} | {calls / free[f'{p}_s']:.1f} | - | "
                    f"{free[f'{p}_429']:.0f} | {free[f'{p}_ok']:.0f} |"
                    for p in ("temporal", "direct")
                ),
                "",
                "- Achieved / ceiling (through Temporal, rate-limited): "
                f"**{calls / lim['temporal_s'] / RATE_PER_S:.3f}** (target >= 0.9); 429s received: "
                f"**{lim['temporal_429']:.0f}**.",
                f"- Temporal overhead vs direct calls: **{overhead(lim) * 100:+.1f}%** rate-limited, "
                f"**{overhead(free) * 100:+.1f}%** unlimited (target < 15%).",
                f"- Cached re-run: **{lim['cached_s']:.2f} s** with {lim['cached_provider_calls']:.0f} "
                f"provider calls (baseline reused, {lim['cached_calls']:.0f} calls from the response cache).",
                "",
                "The ceiling counts the whole eval (planning, summaries and the report included) against "
                "the rate limit. The rate limit is set below this machine's CPU-bound throughput (the "
                "unlimited rows) so that the limiter, not the CPU, is what the first rows measure.",
            ]
        )
        + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/eval.md")
    args = parser.parse_args()
    results = asyncio.run(_main())
    text = _markdown(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    os._exit(0)  # the Temporal core runtime can abort at interpreter teardown (sdk-python#300)
