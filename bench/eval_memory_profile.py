"""Where an eval's memory goes, by phase: tracemalloc's peak of the Python heap while the engine functions run
directly (no Temporal), on the in-process sim provider, for a prompt-only eval of N cases x 1 epoch x 2 arms.

Run: ``.venv/bin/python bench/eval_memory_profile.py 500 2000`` (not part of ``make bench``; the figures are
quoted in bench/results/scale.md, Big evals).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import tracemalloc
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]


async def _phases(n_cases: int) -> dict[str, float]:
    import eval_bench
    import yaml

    from pairshift import evals
    from pairshift.apply import apply_path
    from pairshift.registry.store import open_registry
    from pairshift.settings import get_settings

    eval_bench.CASES = n_cases
    tmp = Path(tempfile.mkdtemp())
    os.environ["PAIRSHIFT_HOME"] = str(tmp)
    url = f"sqlite:///{tmp}/registry.db"
    os.environ["PAIRSHIFT_DATABASE_URL"] = url
    get_settings.cache_clear()
    config = eval_bench._config(tmp / "config", "http://unused", None)
    data = yaml.safe_load(config.read_text())
    for model in data["models"]:
        model.update(provider="sim", limits={"concurrency": 16})
        model.pop("base_url", None)
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    registry = open_registry(url)
    apply_path(registry, config, by="profile")
    peaks: dict[str, float] = {}

    def mark(phase: str) -> None:
        peaks[phase] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.reset_peak()

    tracemalloc.start()
    plan = evals.plan_eval(registry, eval_bench._request(True), uuid.uuid4().hex)
    mark("plan")
    gate = asyncio.Semaphore(evals.EvalTuning().parallel_batches)

    async def one(spec: evals.BatchSpec) -> None:
        async with gate:
            await evals.run_batch(registry, spec)

    ranges = evals.batch_ranges(plan.n_cases)
    specs = [
        evals.BatchSpec(run_id=a.run_id, start=lo, stop=hi, no_cache=True)
        for a in plan.arms
        for lo, hi in ranges
    ]
    await asyncio.gather(*(one(s) for s in specs))
    mark("batches")
    summaries = [evals.summarize_run(registry, a.run_id) for a in plan.arms]
    mark("summaries")
    evals.build_report(registry, plan, summaries)
    mark("report")
    tracemalloc.stop()
    return peaks


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [500, 2000]
    print("| cases | calls | plan MB | batches MB | summaries MB | report MB |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for n in sizes:
        p = asyncio.run(_phases(n))
        print(
            f"| {n:,} | {2 * n:,} | {p['plan']:.1f} | {p['batches']:.1f} | {p['summaries']:.1f} | "
            f"{p['report']:.1f} |"
        )


if __name__ == "__main__":
    main()
