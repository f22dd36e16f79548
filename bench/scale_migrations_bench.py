"""Many migrations (issue 20 item 2): a deprecation scan that starts one migration per deployment on a
retiring snapshot, all at once, against the fake provider server with a rate limit per model.

Writes the section ``## Many migrations`` of ``bench/results/scale.md`` (other sections of the file, written
by other benches, are kept). Reported, each with its target:

- migrations started by one scan and evals finished (target: all of them);
- the provider's 429s per model (target: 0; the fleet-wide per-model limit is a Temporal task-queue rate
  shared by every worker, :mod:`pairshift.ratelimit`, so the provider's limit should never answer);
- time from the scan's start until every eval is done, against the ideal at the rate limit (the calls on the
  busiest model divided by its rate);
- Slack: messages posted in the channel (target: 1, the deprecation's digest, :mod:`pairshift.slack.digest`),
  replies in its thread and edits of the digest message.

Setup, all on 127.0.0.1 and this machine: the fake provider server in its own process (``latency_ms``, a
sliding-window rate limit on both snapshots), a Temporal dev server (one partition per task queue, as
``pairshift server`` runs it), one ``pairshift worker`` process (the main queue and one queue per
rate-limited model, as in production), a fake Slack Web API in this process, and a SQLite registry holding N
deployments on ``sim-classic-2024-06`` (retiring within the scan's lead; replacement ``sim-fresh-2025-09``),
each with its own prompt (so no deployment's eval is answered from another's response cache), one small golden
dataset and a policy asking for approval after the eval with notices in one Slack channel. The scan is the
real DeprecationScanWorkflow; each migration the real MigrationWorkflow with its EvalWorkflow child (baseline
and candidate arm, ``CASES`` cases x 1 epoch each: the smallest honest eval; the dataset's assertions are
deterministic, so no judge calls). The run stops when every migration waits for its approval (or failed its
eval); nobody approves.

Run: ``.venv/bin/python bench/scale_migrations_bench.py`` (defaults: 200 migrations, 5 cases, 10 calls/s per
model, 20 ms latency, ``limits.calls_per_batch: 5``; ``-n``, ``--cases``, ``--rate``, ``--calls-per-batch``
to change them; ``--calls-per-batch 0`` keeps the batch size pairshift derives from the rate).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

OLD, NEW = "sim-classic-2024-06", "sim-fresh-2025-09"
CHANNEL = "#llm-migrations"
SECTION = "## Many migrations"
N, CASES, RATE_PER_S, LATENCY_MS, WINDOW_S = 200, 5, 10.0, 20.0, 10.0
TODAY = date(2026, 12, 1)
RETIRES = TODAY + timedelta(days=30)
DONE = {"awaiting_approval", "canary", "promoted", "rolled_back", "rejected", "failed_eval", "failed"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(
    folder: Path, n: int, cases: int, sim_url: str, rate_per_s: float, calls_per_batch: int | None
) -> Path:
    """N deployments on the retiring snapshot, each with its own prompt version of the example's."""
    import yaml

    examples = ROOT / "examples"
    src = yaml.safe_load((examples / "pairshift.yaml").read_text())
    prompt = next(p for p in src["prompts"] if p["version"] == "1")
    limits: dict[str, float] = {"requests_per_minute": rate_per_s * 60, "concurrency": 16}
    if calls_per_batch:
        limits["calls_per_batch"] = calls_per_batch
    models = [
        {
            "id": OLD,
            "provider": "anthropic",
            "base_url": sim_url,
            "price": {"input_per_mtok": 3.0, "output_per_mtok": 15.0},
            "retires_on": RETIRES.isoformat(),
            "replacement": NEW,
            "limits": limits,
        },
        {
            "id": NEW,
            "provider": "anthropic",
            "base_url": sim_url,
            "price": {"input_per_mtok": 2.5, "output_per_mtok": 10.0},
            "limits": limits,
        },
    ]
    people = [
        {"name": "alice", "slack": "U_ALICE", "email": "alice@example.com"},
        {"name": "bob", "slack": "U_BOB", "email": "bob@example.com"},
    ]
    policy = {
        "name": "fleet",
        "eval": {
            "epochs": 1,
            "max_regression": 0.5,
            "blocking": [],
            "max_cost_ratio": 5,
            "max_latency_p95_ratio": 5,
        },
        "canary": {
            "stages": [{"percent": 20, "min_hours": 1, "max_hours": 2}, {"percent": 100}],
            "check_every_minutes": 5,
        },
        "approvals": {"approvers": ["alice", "bob"], "required": 1, "timeout_hours": 48},
        "notice": {"slack_channel": CHANNEL},
    }
    names = [f"app-{i:03d}" for i in range(n)]
    prompts = [
        {**prompt, "name": name, "system": f"{prompt['system']} (Answers for the {name} service.)"}
        for name in names
    ]
    deployments = [
        {
            "name": name,
            "prompt": f"{name}@1",
            "model": OLD,
            "dataset": "support-triage-golden",
            "policy": "fleet",
        }
        for name in names
    ]
    cfg = {
        "people": people,
        "models": models,
        "prompts": prompts,
        "datasets": [{"name": "support-triage-golden", "path": "datasets/support-triage.jsonl"}],
        "policies": [policy],
        "deployments": deployments,
    }
    (folder / "datasets").mkdir(parents=True, exist_ok=True)
    lines = (examples / "datasets" / "support-triage.jsonl").read_text().splitlines(keepends=True)
    (folder / "datasets" / "support-triage.jsonl").write_text("".join(lines[:cases]))
    (folder / "pairshift.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return folder


class _Sim:
    """The fake provider server in its own process, a sliding-window limit on both snapshots."""

    def __init__(self, rate_per_s: float, latency_ms: float) -> None:
        import httpx

        port = _free_port()
        limit = {"requests": int(rate_per_s * WINDOW_S), "per_seconds": WINDOW_S}
        settings = {"latency_ms": latency_ms, "rate_limits": {OLD: limit, NEW: limit}}
        code = f"from pairshift.sim.server import serve; serve(port={port}, **{settings!r})"
        self.proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
        self.base_url = f"http://127.0.0.1:{port}"
        self.http = httpx.Client(base_url=self.base_url, timeout=10)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.http.get("/_admin/stats")
                return
            except httpx.TransportError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("the fake provider server did not start") from None
                time.sleep(0.1)  # a server starting in another process: nothing to await

    def stats(self) -> dict[str, dict[str, float]]:
        return self.http.get("/_admin/stats").json()["models"]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _failed(url: str) -> list[str]:
    """What the migrations that did not reach their approval say (phase and summary), for the report."""
    from sqlmodel import select

    from pairshift.registry.models import MigrationRow
    from pairshift.registry.store import open_registry

    with open_registry(url).session() as s:
        rows = s.exec(select(MigrationRow).where(MigrationRow.phase != "awaiting_approval")).all()
        return [f"{r.deployment}: {r.phase} {r.summary}"[:300] for r in rows]


def _phases(url: str) -> Counter[str]:
    from sqlmodel import select

    from pairshift.registry.models import MigrationRow
    from pairshift.registry.store import open_registry

    with open_registry(url).session() as s:
        return Counter(r.phase for r in s.exec(select(MigrationRow)).all())


async def _run(args: argparse.Namespace, home: Path) -> dict[str, object]:
    from conftest import temporal_bin
    from fake_slack import FakeSlack
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.testing import WorkflowEnvironment

    from pairshift.apply import apply_path
    from pairshift.contracts.deprecation_scan import ScanRequest
    from pairshift.registry.store import open_registry
    from workflows.deprecation_scan import DeprecationScanWorkflow

    url = f"sqlite:///{home / 'registry.db'}"
    sim = _Sim(args.rate, args.latency_ms)
    slack = FakeSlack().start()
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_bin(),
        ui=False,
        data_converter=pydantic_data_converter,
        dev_server_extra_args=[
            "--log-level",
            "error",
            "--dynamic-config-value",
            "matching.numTaskqueueReadPartitions=1",
            "--dynamic-config-value",
            "matching.numTaskqueueWritePartitions=1",
        ],
    )
    queue = f"pairshift-bench-{uuid.uuid4().hex[:6]}"
    worker = None
    try:
        apply_path(
            open_registry(url),
            _config(home / "config", args.n, args.cases, sim.base_url, args.rate, args.calls_per_batch),
            by="bench",
        )
        address = env.client.service_client.config.target_host
        worker_env = {
            **os.environ,
            "PAIRSHIFT_HOME": str(home),
            "PAIRSHIFT_DATABASE_URL": url,
            "PAIRSHIFT_TEMPORAL_ADDRESS": address,
            "PAIRSHIFT_TASK_QUEUE": queue,
            "SLACK_BOT_TOKEN": slack.token,
            "PAIRSHIFT_SLACK_API_URL": slack.base_url,
        }
        exe = str(Path(sys.executable).parent / "pairshift")
        log = (home / "worker.log").open("w")
        worker = subprocess.Popen([exe, "worker"], env=worker_env, stdout=log, stderr=subprocess.STDOUT)
        started = time.perf_counter()
        handle = await env.client.start_workflow(
            DeprecationScanWorkflow.run,
            ScanRequest(today=TODAY, lead_days=60),
            id=f"bench-scan-{uuid.uuid4().hex[:6]}",
            task_queue=queue,
        )
        scan_task = asyncio.ensure_future(handle.result())
        scanned_s: float | None = None
        deadline = started + args.timeout
        phases: Counter[str] = Counter()
        while time.perf_counter() < deadline:  # the migrations run while the scan still starts others
            if scanned_s is None and scan_task.done():
                scanned_s = time.perf_counter() - started
            phases = _phases(url)
            if sum(phases.values()) >= args.n and all(p in DONE for p in phases.elements()):
                break
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited with {worker.returncode}: see {home / 'worker.log'}")
            await asyncio.sleep(0.5)  # another process's progress, read from the registry
        evals_s = time.perf_counter() - started
        scan = await scan_task
        if scanned_s is None:
            scanned_s = time.perf_counter() - started
        stats = sim.stats()
        await asyncio.sleep(5)  # the last notices' Slack posts (retried activities) settle
        posts = slack.calls_to("chat.postMessage")
        return {
            "failed": _failed(url),
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "started": len(scan.started),
            "scan_s": scanned_s,
            "evals_s": evals_s,
            "phases": dict(phases),
            "complete": all(p in DONE for p in phases.elements())
            and sum(phases.values()) >= len(scan.started),
            "calls": {m: stats.get(m, {}).get("ok", 0) for m in (OLD, NEW)},
            "429": {m: stats.get(m, {}).get("rate_limited", 0) for m in (OLD, NEW)},
            "channel_posts": sum(1 for p in posts if not p.get("thread_ts")),
            "thread_replies": sum(1 for p in posts if p.get("thread_ts")),
            "broadcast": sum(1 for p in posts if str(p.get("reply_broadcast")).lower() == "true"),
            "updates": len(slack.calls_to("chat.update")),
            "roots": [p.get("text", "")[:120] for p in posts if not p.get("thread_ts")][:3],
        }
    finally:
        if worker is not None and worker.poll() is None:
            worker.terminate()
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                worker.kill()
        await env.shutdown()
        slack.stop()
        sim.stop()


def _label(args: argparse.Namespace) -> str:
    per_batch = (
        f"calls_per_batch {args.calls_per_batch}"
        if args.calls_per_batch
        else f"calls_per_batch from the rate ({_derived_per_batch(args.rate)})"
    )
    return (
        f"### {args.n} migrations, {args.cases} cases each, {args.rate:g} calls/s per snapshot, {per_batch}"
    )


def _derived_per_batch(rate: float) -> int:
    from pairshift.ratelimit import calls_per_batch

    return calls_per_batch({"requests_per_minute": rate * 60}) or 0


def _markdown(args: argparse.Namespace, r: dict[str, object]) -> str:
    calls: dict[str, int] = r["calls"]  # type: ignore[assignment]
    limited: dict[str, int] = r["429"]  # type: ignore[assignment]
    ideal = max(calls.values()) / args.rate
    per_batch = args.calls_per_batch or _derived_per_batch(args.rate)
    cmd = (
        f"`.venv/bin/python bench/scale_migrations_bench.py -n {args.n} --cases {args.cases} "
        f"--rate {args.rate:g} --latency-ms {args.latency_ms:g} --calls-per-batch {args.calls_per_batch}`"
    )
    phases = ", ".join(f"{k} {v}" for k, v in sorted(r["phases"].items()))  # type: ignore[union-attr]
    done = sum(v for k, v in r["phases"].items() if k in DONE)  # type: ignore[union-attr]
    return "\n".join(
        [
            _label(args),
            "",
            f"{cmd} on {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"{r['when']}: {args.latency_ms:g} ms provider latency; each model queue at "
            f"{args.rate / per_batch:.3g} batch activities/s ({per_batch} calls per batch).",
            "",
            "| figure | measured | target |",
            "| --- | ---: | --- |",
            f"| migrations started by the scan | {r['started']} | {args.n} |",
            f"| evals done (awaiting approval or past the eval) | {done} ({phases}) | {args.n} |",
            f"| provider calls `{OLD}` / `{NEW}` | {calls[OLD]} / {calls[NEW]} | "
            f"{args.n * (args.cases + 1)} each ({args.cases} cases + 1 preflight per eval) |",
            f"| provider 429s `{OLD}` / `{NEW}` | {limited[OLD]} / {limited[NEW]} | 0 |",
            f"| the scan workflow's run (plan, {r['started']} child starts, reminders) "
            f"| {r['scan_s']:.1f} s | |",
            f"| time from the scan's start until every eval is done | {r['evals_s']:.1f} s | |",
            f"| ideal at the rate limit (busiest snapshot's calls / {args.rate:g} per s) | {ideal:.1f} s | |",
            f"| share of the ideal (ideal / measured) | {ideal / r['evals_s']:.2f} | |",  # type: ignore[operator]
            f"| Slack messages posted in the channel | {r['channel_posts']} | 1 (the digest) |",
            f"| replies in the digest's thread (of them broadcast) | {r['thread_replies']} "
            f"({r['broadcast']}) | in the thread, none broadcast |",
            f"| edits of the digest message (`chat.update`) | {r['updates']} | |",
            "",
        ]
    )


INTRO = f"""{SECTION}

Issue 20 item 2, `bench/scale_migrations_bench.py` (its module doc has the setup): one real
DeprecationScanWorkflow over N deployments on the retiring `{OLD}` (replacement
`{NEW}`), each migration the real MigrationWorkflow and EvalWorkflow (baseline and candidate arm, the
smallest honest eval: a few golden cases x 1 epoch, deterministic assertions), against the fake provider
server with a sliding-window limit per snapshot; one `pairshift worker` process (main queue + one queue per
rate-limited model), a Temporal dev server (one partition per queue), a fake Slack Web API, a SQLite
registry. The run ends when every migration waits for its approval. Each run below is one configuration.
"""


def _write_section(out: Path, text: str) -> None:
    """Replace this run's subsection of the ``## Many migrations`` section of ``out`` (or add it), keeping
    every other section and subsection of the file as it is (other benches write other sections)."""
    old = out.read_text() if out.exists() else "# Scale and speed (issue 20)\n"
    section = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    found = section.search(old)
    body = found.group(0).rstrip("\n") + "\n" if found else INTRO
    heading = text.splitlines()[0]
    sub = re.compile(rf"^{re.escape(heading)}\n.*?(?=^### |\Z)", re.S | re.M)
    if sub.search(body):
        body = sub.sub(lambda _: text.rstrip("\n") + "\n\n", body)
    else:
        body = body.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n"
    if found:
        new = old[: found.start()] + body.rstrip("\n") + "\n\n" + old[found.end() :]
    else:
        new = old.rstrip("\n") + "\n\n" + body
    out.write_text(new.rstrip("\n") + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scale.md")
    parser.add_argument("-n", type=int, default=N, help="deployments (= migrations)")
    parser.add_argument("--cases", type=int, default=CASES, help="golden cases per eval")
    parser.add_argument("--rate", type=float, default=RATE_PER_S, help="calls/s allowed per snapshot")
    parser.add_argument("--latency-ms", type=float, default=LATENCY_MS)
    parser.add_argument(
        "--calls-per-batch",
        type=int,
        default=None,
        help="the snapshots' limits.calls_per_batch (default: one arm's calls, --cases, as a fleet of small "
        "evals is configured; 0 = derived from the rate, as pairshift.ratelimit does by default)",
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for the evals")
    args = parser.parse_args()
    if args.calls_per_batch is None:
        args.calls_per_batch = args.cases
    with tempfile.TemporaryDirectory(prefix="pairshift-scale-") as tmp:
        os.environ["PAIRSHIFT_HOME"] = tmp
        result = asyncio.run(_run(args, Path(tmp)))
    print(json.dumps(result, indent=2))
    _write_section(args.out, _markdown(args, result))
    return 0 if result["complete"] else 1


if __name__ == "__main__":
    sys.exit(main())
