"""Big evals (issue 20 item 1): a 100,000-case x 3-epoch x 4-arm eval keeps every workflow run's history under
Temporal's 10,240-event warning, and the worker's memory as an eval grows.

Writes the section ``## Big evals`` of ``bench/results/scale.md`` (other sections, written by other benches,
are kept). Reported, each with its target:

- the shape of a 100,000 x 3 x 4 eval through EvalWorkflow: runs, events of the largest run, activities. The
  workflow side is the real EvalWorkflow (and ProviderBatchWorkflow) on a Temporal server; the activities are
  the stand-ins of tests/eval_scale_support.py registered under the real names, returning what the real ones
  return, so the 1.2 million calls themselves are not made (the calls are measured in the rows below and in
  bench/results/eval.md). Three plans: online arms on the main queue (automatic batches of 200 cases),
  online arms on rate-limited model queues (a route of 100 calls per batch activity: 33 cases x 3 epochs), and
  every arm through provider batches (10,000 requests each: 30 batches per arm) polled for ~24 hours on the
  time-skipping test server with the default poll tuning (first poll after 30 s, doubling to 600 s);
- the worker's peak RSS (VmHWM of a separate worker process) over a real eval on the fake provider server at
  three sizes (1,000, 5,000 and 20,000 cases). Memory is bounded when it stops growing with the eval: the rule
  is the growth per call between the two largest sizes, both past the sizes at which the worker's bounded
  buffers reach their caps (automatic batches of 200 cases from 5,000 cases on; the report's bootstrap
  arrays of 250,000 weights from 1,250 cases on). The first interval, where those fill, is reported too.

Run: ``.venv/bin/python bench/scale_evals_bench.py`` (``--quick`` for a 10,000-case shape; ``make bench``
runs every bench).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

SECTION = "## Big evals"
N_CASES, EPOCHS, ROUTE_CALLS, BATCH_POLLS = 100_000, 3, 100, 150
RSS_SIZES = (1_000, 5_000, 20_000)  # cases x 1 epoch x 2 arms on the fake provider server
WARN_EVENTS = 10_240
BATCH_CASES: int | None = None  # --batch-cases: fixed cases per batch in the memory runs (None: automatic)


async def _shape(client, plan: str, n_cases: int, time_skipping: bool) -> dict[str, object]:  # type: ignore[no-untyped-def]
    from eval_scale_support import FakeEval, eval_events
    from temporalio.worker import Worker

    from pairshift.contracts.evals import EvalRequest, EvalTuning
    from pairshift.ratelimit import model_task_queue
    from workflows.evals import EVAL_WORKFLOWS, EvalWorkflow

    queue = f"scale-{plan}-{uuid.uuid4().hex[:6]}"
    modes = (
        {a: "batch" for a in ("baseline", "prompt_only", "model_only", "joint")} if plan == "batch" else {}
    )
    fake = FakeEval(
        n_cases=n_cases,
        epochs=EPOCHS,
        modes=modes,
        polls_to_end=BATCH_POLLS,
        calls_per_batch=ROUTE_CALLS if plan == "routed" else None,
    )
    queues = [queue] + ([model_task_queue(queue, f"m{i}") for i in range(4)] if plan == "routed" else [])
    tuning = EvalTuning(parallel_batches=16)
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        workers = [
            Worker(
                client,
                task_queue=q,
                workflows=EVAL_WORKFLOWS if q == queue else [],
                activities=fake.activities(),
                activity_executor=pool,
                max_concurrent_activities=64,
            )
            for q in queues
        ]
        for w in workers:
            asyncio.ensure_future(w.run())
        try:
            handle = await client.start_workflow(
                EvalWorkflow.run,
                EvalRequest(deployment="big", to_model="m3", to_prompt="p@3", tuning=tuning),
                id=f"eval-{queue}",
                task_queue=queue,
            )
            await handle.result()
            progress = await handle.query(EvalWorkflow.progress)
        finally:
            for w in workers:
                await w.shutdown()
    seconds = time.perf_counter() - start
    runs, children = await eval_events(client, handle)
    child_runs = [n for c in children.values() for n in c]
    done = all(p.done == p.total == n_cases * EPOCHS for p in progress.arms.values())
    return {
        "plan": plan,
        "cases": n_cases,
        "runs": len(runs),
        "max_run_events": max(runs),
        "total_events": sum(runs),
        "batch_activities": sum(fake.batches.values()),
        "repeated_ranges": sum(1 for v in fake.batches.values() if v > 1),
        "children": len(children),
        "child_runs": len(child_runs),
        "max_child_run_events": max(child_runs, default=0),
        "polls": sum(fake.polls.values()),
        "complete": done,
        "seconds": round(seconds, 1),
    }


async def _shapes(n_cases: int) -> list[dict[str, object]]:
    from conftest import temporal_bin
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.testing import WorkflowEnvironment

    from pairshift.cli.stack import time_skipping_server_binary

    out = []
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_bin(),
        ui=False,
        data_converter=pydantic_data_converter,
        dev_server_extra_args=["--log-level", "error"],
    )
    try:
        for plan in ("main", "routed"):
            out.append(await _shape(env.client, plan, n_cases, False))
            print(json.dumps(out[-1]), flush=True)
    finally:
        await env.shutdown()
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=time_skipping_server_binary(), data_converter=pydantic_data_converter
    )
    try:
        out.append(await _shape(env.client, "batch", n_cases, True))
        print(json.dumps(out[-1]), flush=True)
    finally:
        await env.shutdown()
    return out


# ---------------------------------------------------------------- worker memory on a real eval

WORKER = """
import asyncio, sys
from pairshift.temporal_client import connect
from worker.main import build_worker
async def main():
    client = await connect()
    async with build_worker(client, task_queue=sys.argv[1]):
        print("ready", flush=True)
        await asyncio.Event().wait()
asyncio.run(main())
"""


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _rss(n_cases: int, tmp: Path, address: str, client) -> dict[str, float]:  # type: ignore[no-untyped-def]
    import eval_bench

    from pairshift.apply import apply_path
    from pairshift.registry.store import open_registry
    from pairshift.settings import get_settings
    from workflows.evals import EvalWorkflow

    eval_bench.CASES = n_cases
    sim = eval_bench._Sim(latency_ms=1.0)
    folder = tmp / f"rss-{n_cases}"
    url = f"sqlite:///{folder}.db"
    env = {**os.environ, "PAIRSHIFT_DATABASE_URL": url, "PAIRSHIFT_TEMPORAL_ADDRESS": address}
    os.environ["PAIRSHIFT_DATABASE_URL"] = url
    get_settings.cache_clear()
    apply_path(open_registry(url), eval_bench._config(folder, sim.base_url, None), by="bench")
    queue = f"rss-{uuid.uuid4().hex[:6]}"
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER, queue],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        idle = _peak_rss_mb(proc.pid)
        start = time.perf_counter()
        request = eval_bench._request(True)
        if BATCH_CASES:  # the same batch size at both sizes: what grows is the eval, not the batch
            request.tuning.batch_cases = BATCH_CASES
        await client.execute_workflow(EvalWorkflow.run, request, id=f"rss-{queue}", task_queue=queue)
        seconds = time.perf_counter() - start
        peak = _peak_rss_mb(proc.pid)
    finally:
        os.killpg(proc.pid, 9)
        proc.wait(10)
        sim.stop()
    from pairshift.ratelimit import batch_ranges

    per_batch = max(hi - lo for lo, hi in batch_ranges(n_cases, BATCH_CASES))
    return {
        "cases": n_cases,
        "calls": 2 * n_cases,
        "batch_cases": per_batch,
        "idle_mb": idle,
        "peak_mb": peak,
        "seconds": seconds,
    }


async def _memory(sizes: tuple[int, ...]) -> list[dict[str, float]]:
    from conftest import temporal_bin
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.testing import WorkflowEnvironment

    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_bin(),
        ui=False,
        data_converter=pydantic_data_converter,
        dev_server_extra_args=["--log-level", "error"],
    )
    address = env.client.service_client.config.target_host
    out = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["PAIRSHIFT_HOME"] = tmp
            for n in sizes:
                out.append(await _rss(n, Path(tmp), address, env.client))
                print(json.dumps(out[-1]), flush=True)
    finally:
        await env.shutdown()
    return out


# ---------------------------------------------------------------- the section


def _shape_lines(cmd: str, shapes: list[dict[str, object]]) -> list[str]:
    names = {
        "main": "online arms, main queue (automatic batches: 200 cases)",
        "routed": f"online arms, rate-limited model queues ({ROUTE_CALLS} calls per batch: "
        f"{ROUTE_CALLS // EPOCHS} cases)",
        "batch": "every arm through provider batches (10,000 requests each: 31 per arm), "
        f"{BATCH_POLLS} polls each (~24 h, time-skipping server)",
    }
    lines = [
        SECTION,
        "",
        f"Command: {cmd} (part of `make bench`). Targets: every workflow run < {WARN_EVENTS:,} events; the "
        "worker's memory bounded (not growing with the eval's size).",
        "",
        f"### Shape of a {shapes[0]['cases']:,}-case x {EPOCHS}-epoch x 4-arm eval",
        "",
        "| plan | EvalWorkflow runs | events, largest run | events, all runs | batch activities | "
        "provider batch children (runs) | events, largest child run | all calls done | seconds |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for s in shapes:
        lines.append(
            f"| {names[str(s['plan'])]} | {s['runs']} | **{s['max_run_events']:,}** | "
            f"{s['total_events']:,} | {s['batch_activities']:,} | {s['children']} ({s['child_runs']}) | "
            f"{s['max_child_run_events']:,} | "
            f"{'yes' if s['complete'] and not s['repeated_ranges'] else 'NO'} | {s['seconds']} |"
        )
    worst = max(max(int(s["max_run_events"]), int(s["max_child_run_events"])) for s in shapes)  # type: ignore[call-overload]
    return lines + [
        "",
        f"- Largest run of any workflow: **{worst:,} events** (target < {WARN_EVENTS:,}: "
        f"{'met' if worst < WARN_EVENTS else 'MISSED'}). A run hands over at `tuning.events_per_run` "
        "(5,000) or when the server suggests continuing as new (this one does past ~4,096 events), and ends "
        "after what it had in flight; the carry is the plan, cursors and counts. A provider batch child "
        "polling for ~24 h stays in one run.",
        "- The workflow side only: the stand-in activities make no calls (a real 100k x 3 x 4 eval at the "
        "sim's CPU-bound ~95 calls/s, bench/results/eval.md, would take ~3.5 hours on this machine).",
        "",
    ]


def _markdown(
    args: argparse.Namespace,
    shapes: list[dict[str, object]],
    memory: list[dict[str, float]],
    phases: list[str] | None = None,
) -> str:
    cmd = "`.venv/bin/python bench/scale_evals_bench.py" + (" --quick`" if args.quick else "`")
    lines = _shape_lines(cmd, shapes) if shapes else []
    lines += [
        "### Worker memory on a real eval (fake provider server, 2 arms x 1 epoch, peak RSS of the worker "
        "process)",
        "",
        "| cases | calls | cases per batch | worker RSS idle (MB) | peak RSS (MB) | peak over idle (MB) | "
        "seconds |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *(
            f"| {m['cases']:,.0f} | {m['calls']:,.0f} | {m['batch_cases']:.0f} | {m['idle_mb']:.0f} | "
            f"{m['peak_mb']:.1f} | {m['peak_mb'] - m['idle_mb']:.1f} | {m['seconds']:.1f} |"
            for m in memory
        ),
    ]
    if len(memory) >= 2:
        slopes = [_per_call_kb(a, b) for a, b in zip(memory, memory[1:], strict=False)]
        last = slopes[-1]
        a, b = memory[-2], memory[-1]
        lines += [
            "",
            "- Growth per call of peak RSS: "
            + ", ".join(
                f"{s:.2f} KB from {x['cases']:,.0f} to {y['cases']:,.0f} cases"
                for s, x, y in zip(slopes, memory, memory[1:], strict=False)
            )
            + f". The rule, between the two largest sizes ({a['cases']:,.0f} -> {b['cases']:,.0f}): "
            f"**{last:.2f} KB per call** (target < 0.5: {'met' if last < 0.5 else '**MISSED**'}); at that "
            f"slope a 100,000 x 3 x 4 eval (1.2 million calls) would add "
            f"~{max(0.0, last) * 1_200_000 / 1024:,.0f} MB.",
            "- What the peak is (a worker sampling /proc/self/status, glibc's mallinfo2 and "
            "sqlite3_memory_used every 2 s, 200-case batches, 1,000 to 100,000 cases): while batches run, RSS"
            " sits ~50-57 MB over idle and nearly flat (~301 MB at 1,000 cases, 305-309 MB through 100,000), "
            "15-22 MB of it freed memory glibc keeps in its per-thread arenas (MALLOC_ARENA_MAX=2 kept ~10 MB"
            " less at 5,000 cases; not set). The peak is the end: `summarize_eval_run` (both arms at once) "
            "and `build_eval_report` hold each arm's per-case arrays (`pairshift.stats.ArmOutcomes`, with "
            "latency, cost and case of every answered call) and the paired bootstrap's sorted copies of them:"
            " ~17 MB over that plateau at 5,000 cases, ~73 MB at 100,000 (malloc in use +36 MB, freed but "
            "kept +32 MB). That is the residual slope, O(calls) numbers, released when the report is done "
            "(after a glibc trim the worker is back at 310 MB). The bootstrap's weight arrays are bounded by "
            "`pairshift.paired._CELLS` (250,000 weights; at 1,000,000 they put the 5,000-case peak at 339 MB,"
            " 323 MB after). SQLite's own memory (every pooled connection's page cache and statements) stays "
            "under 11 MB at every size: the page caches are not the growth.",
        ]
    if phases:
        lines += [
            "",
            "Where it grows, by phase (tracemalloc peak of the Python heap, the engine functions called "
            "directly: `.venv/bin/python bench/eval_memory_profile.py 500 2000`):",
            "",
            *phases,
            "",
            "The batches are bounded (one case range each, at most 200 cases, `parallel_batches` in flight). "
            "`plan_eval` checks that the prompts render a page of 250 cases at a time "
            "(`pairshift.evals.planning.case_pages`); `summarize_eval_run` and `build_eval_report` fold a "
            "run's rows, 500 at a time, into per-case arrays (`pairshift.evals.results.load_arm`, "
            "`pairshift.stats.ArmOutcomes`): O(cases) numbers plus latency, cost and case of each answered "
            "call (tens of bytes per call), never an object per call. The phase peaks are those pages.",
        ]
    return "\n".join(lines) + "\n"


def _per_call_kb(a: dict[str, float], b: dict[str, float]) -> float:
    return (b["peak_mb"] - a["peak_mb"]) * 1024 / max(1.0, b["calls"] - a["calls"])


def _write_section(out: Path, text: str) -> None:
    """Replace this bench's section of ``out`` (or append it), keeping every other section as it is."""
    old = out.read_text() if out.exists() else "# Scale and speed (issue 20)\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    new = pattern.sub(lambda _: text + "\n", old) if pattern.search(old) else old.rstrip("\n") + "\n\n" + text
    out.write_text(new.rstrip("\n") + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scale.md")
    parser.add_argument("--quick", action="store_true", help="a 10,000-case shape and smaller memory runs")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--batch-cases", type=int, help="cases per batch in the memory runs")
    parser.add_argument("--skip-profile", action="store_true", help="no tracemalloc phase table")
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=RSS_SIZES, help="the eval sizes (cases) of the memory runs"
    )
    parser.add_argument(
        "--memory-only",
        action="store_true",
        help="measure memory only; keep the shape table in --out as it is",
    )
    args = parser.parse_args()
    shapes = [] if args.memory_only else asyncio.run(_shapes(10_000 if args.quick else N_CASES))
    sizes = (200, 1_000) if args.quick else tuple(args.sizes)
    global BATCH_CASES
    BATCH_CASES = args.batch_cases
    memory = [] if args.skip_memory else asyncio.run(_memory(sizes))
    phases = None
    if not args.skip_memory and not args.skip_profile:
        done = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "eval_memory_profile.py"), "500", "2000"],
            capture_output=True,
            text=True,
            timeout=1200,
        )
        phases = [line for line in done.stdout.splitlines() if line.startswith("|")]
    text = _markdown(args, shapes, memory, phases)
    if args.memory_only:  # the section's shape part as the last full run wrote it
        kept = re.search(
            rf"^{re.escape(SECTION)}\n.*?(?=^### Worker memory)", args.out.read_text(), re.S | re.M
        )
        text = (kept.group(0) if kept else f"{SECTION}\n\n") + text
    _write_section(args.out, text)
    print(text)
    ok = all(s["complete"] and not s["repeated_ranges"] for s in shapes)
    return 0 if ok and all(int(s["max_run_events"]) < WARN_EVENTS for s in shapes) else 1  # type: ignore[call-overload]


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)  # the Temporal core runtime can abort at interpreter teardown (sdk-python#300)
