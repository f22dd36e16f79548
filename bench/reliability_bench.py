"""Chaos bench (issue 12): the demo's happy migration, disturbed at random points, against the same migration
undisturbed. Writes ``bench/results/reliability.md``.

Every run is real: a fresh PAIRSHIFT_HOME, the embedded stack as processes (`pairshift server` on a state
file, `pairshift worker`), examples/ applied, simulated production traffic through a router refreshing every
second, the migration started with the demo policy (durations scaled to seconds), every approval given by the
bench as the demo gives it. One disturbance per run, at a point drawn uniformly inside the phase it targets:

- ``worker-eval`` / ``worker-approval`` / ``worker-canary``: the worker's process group SIGKILLed, a fresh
  `pairshift worker` started (during the approval wait the approval is given only after the kill);
- ``temporal``: the Temporal dev server SIGKILLed mid-canary and started again on its state file and port;
- ``registry``: the SQLite registry locked (an exclusive transaction held by another process's connection)
  for ``REGISTRY_OUTAGE_S`` mid-canary;
- ``registry-pg``: the registry on PostgreSQL (a fresh database at 127.0.0.1:5432, reached through a TCP relay
  on 127.0.0.1), every connection refused for ``REGISTRY_OUTAGE_S`` mid-canary (the relay closes its port and
  every open connection, then listens again); skipped, saying so, when PostgreSQL does not answer;
- ``rollback``: the candidate regresses in production (its error rate 0.15, as `pairshift demo --scenario
  regression`), so the canary breaches and rolls back; the worker SIGKILLed at a random point of the canary.
  Its reference is the same regression undisturbed (``rollback-undisturbed``), which rolls back;
- ``provider``: the models served over HTTP by the fake provider server, every call answered 500 or 529 for
  ``PROVIDER_OUTAGE_S`` mid-eval;
- ``slack``: a channel in the policy and the fake Slack answering 503 to every call for the whole migration,
  back once the migration has ended.

Measured per run: the end phase, stages started twice (``stage_started`` audit events per stage), approvals
lost (given and accepted, missing from the final ``status``), the baseline's share of traffic at the end (from
the deployment's split), eval results per arm, and times. ``--runs N`` per scenario; ``--only a,b`` some;
``--jsonl FILE`` appends each run's record and ``--report-only`` renders the table from such a file (run one
run per process to hold a machine-wide lock per run).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the fake Slack

DEPLOYMENT = "support-triage"
TO_MODEL, TO_PROMPT = "sim-fresh-2025-09", "support-triage@2"
BASELINE = ("support-triage@1", "sim-classic-2024-06")
# The registry outage is the 60 s (longer than SQLite's 30 s busy timeout, so writers fail, not just
# wait). The provider outage is scaled from the 2 min to 30 s: the demo's eval lasts tens of seconds,
# so 30 s still covers most of it and many retries of every batch, and each run stays about a minute.
REGISTRY_OUTAGE_S = float(os.environ.get("BENCH_REGISTRY_OUTAGE_S", 60))
PROVIDER_OUTAGE_S = float(os.environ.get("BENCH_PROVIDER_OUTAGE_S", 30))
# Where in a phase a disturbance lands: uniform in [0, window) seconds after the phase is first seen (windows
# chosen within the undisturbed run's phase lengths: eval ~10 s in process, canary stages 14-72 s).
WINDOWS = {"evaluating": 8.0, "awaiting_approval": 4.0, "canary": 25.0}
# A regressing candidate breaches within the first checks of stage 0 (checks every 3 s): the kill lands in
# the first 3 s of the canary (the breach is acted on within ~5 s), before or during the rollback.
ROLLBACK_WINDOW_S = 3.0
RUN_TIMEOUT_S = 300
SCENARIOS = (
    "undisturbed",
    "worker-eval",
    "worker-approval",
    "worker-canary",
    "temporal",
    "registry",
    "registry-pg",
    "provider",
    "slack",
    "rollback-undisturbed",
    "rollback",
)
# What a scenario is compared with: its own reference (the same migration undisturbed), default "undisturbed".
REFERENCE = {"rollback": "rollback-undisturbed"}
PG_ADMIN_URL = os.environ.get("PAIRSHIFT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
LABELS = {
    "undisturbed": "undisturbed (the reference)",
    "worker-eval": "worker SIGKILL during the eval",
    "worker-approval": "worker SIGKILL during the approval wait",
    "worker-canary": "worker SIGKILL during a canary stage",
    "temporal": "Temporal dev server SIGKILL + restart on its state file, mid-canary",
    "registry": f"registry unreachable {REGISTRY_OUTAGE_S:g} s mid-canary (SQLite locked)",
    "registry-pg": (
        f"registry unreachable {REGISTRY_OUTAGE_S:g} s mid-canary (PostgreSQL connections refused)"
    ),
    "rollback-undisturbed": "a regressing candidate, undisturbed (the rollback reference)",
    "rollback": "a regressing candidate (canary breaches, rolls back), worker SIGKILL mid-canary",
    "provider": f"provider 500/529 on every call for {PROVIDER_OUTAGE_S:g} s mid-eval",
    "slack": "Slack API down (503) for the whole migration",
}


@dataclass
class Run:
    scenario: str
    seed: int
    phase: str = "?"
    error: str | None = None
    disturbed_at: str | None = None  # "<phase> +<s>s"
    stages_started: dict[str, int] = field(default_factory=dict)
    approvals_given: list[list[Any]] = field(default_factory=list)
    approvals_final: list[list[Any]] = field(default_factory=list)
    asks: int = 0
    baseline_share: float | None = None
    eval_results: dict[str, int] = field(default_factory=dict)
    to_terminal_s: float | None = None
    to_closed_s: float | None = None
    provider_answered: int | None = None
    slack_posts_after: int | None = None
    notes: list[str] = field(default_factory=list)
    pg_database: str | None = None
    skipped: str | None = None

    @property
    def twice(self) -> int:
        return sum(max(0, n - 1) for n in self.stages_started.values())

    @property
    def lost(self) -> int:
        final = {tuple(a) for a in self.approvals_final}
        return sum(1 for a in self.approvals_given if tuple(a) not in final)


# ----------------------------------------------------------------------------------------- one run


def _config(dst: Path, scenario: str, sim_port: int | None) -> Path:
    import yaml

    shutil.copytree(ROOT / "examples", dst, ignore=shutil.ignore_patterns("*.py"))
    cfg = yaml.safe_load((dst / "pairshift.yaml").read_text())
    if scenario == "provider":  # the same sim snapshots, over HTTP, so calls can fail
        for m in cfg["models"]:
            m.update(provider="anthropic", base_url=f"http://127.0.0.1:{sim_port}")
    for p in cfg["policies"]:
        if p["name"] == "demo" and scenario == "slack":
            p["notice"] = {"slack_channel": "#pairshift-bench"}
        if p["name"] == "demo" and scenario == "worker-approval":  # two votes: one is pending across the kill
            p["approvals"]["required"] = 2
    (dst / "pairshift.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return dst


class Traffic:
    """Production traffic in a thread, ~400 requests/s through a router that refreshes its split every second;
    a batch the registry refuses (locked) is dropped and counted, as an app's telemetry would be."""

    def __init__(self, regression: bool = False) -> None:
        from pairshift.registry import open_registry
        from pairshift.router import Router
        from pairshift.sim.traffic import TrafficGenerator, profile_for

        same = {"error_rate": 0.004, "latency_median_ms": 420, "input_tokens": 60, "output_tokens": 20}
        fresh = {**same, "latency_median_ms": 380, **({"error_rate": 0.15} if regression else {})}
        behaviours = {"sim-classic-2024-06": same, "sim-fresh-2025-09": fresh}
        self.router = Router(DEPLOYMENT, registry=open_registry(), refresh_s=1.0).start()
        self.gen = TrafficGenerator(self.router, profile_for(behaviours, seed=11))
        self.dropped = 0
        self.halt = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.halt.wait(0.25):
            try:
                self.gen.generate(100, spread_s=0.25)
            except Exception:  # noqa: BLE001 - the registry locked: this batch's telemetry is lost
                self.dropped += 1

    def stop(self) -> None:
        self.halt.set()
        self.thread.join(timeout=40)
        self.router.close()


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc/*/stat)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


class Chaos:
    def __init__(self, stack: Any, run: Run, rng: random.Random) -> None:
        self.stack, self.run, self.rng = stack, run, rng
        self.approve = asyncio.Event()  # the bench votes only while this is set
        self.approve.set()
        self.first_vote = asyncio.Event()
        self.hold_after_first_vote = False
        self.workers = 1
        self.seen: dict[str, float] = {}
        self.current = "?"  # the phase of the last status answered
        self.t0 = time.monotonic()
        self.relay: Relay | None = None

    async def phase(self, name: str, window: float | None = None) -> float:
        while name not in self.seen:
            await asyncio.sleep(0.1)
        delay = self.rng.uniform(0, WINDOWS[name] if window is None else window)
        await asyncio.sleep(delay)
        self.run.disturbed_at = f"{name} +{delay:.1f}s (last status: {self.current})"
        return delay

    @property
    def worker_name(self) -> str:
        return "worker" if self.workers == 1 else f"worker-{self.workers}"

    def supervise(self) -> None:
        """Restart a worker that exited by itself (as a supervisor would), and say so: that is a finding."""
        proc = self.stack.procs.get(self.worker_name)
        if proc is not None and proc.poll() is not None:
            self.run.notes.append(f"the worker exited by itself ({proc.returncode}); restarted")
            self.stack.procs.pop(self.worker_name)
            self.workers += 1
            self.stack.start(self.worker_name, "worker")

    def kill_worker(self) -> None:
        name = self.worker_name
        proc = self.stack.procs[name]
        self.stack.stop(name, kill=True)
        assert proc.returncode == -signal.SIGKILL, proc.returncode
        self.workers += 1
        self.stack.start(self.worker_name, "worker")

    def kill_temporal(self) -> None:
        wrapper = self.stack.procs["server"]
        victims = _children(wrapper.pid)  # the temporal binary runs in its own session under the wrapper
        self.stack.stop("server", kill=True)
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in victims:  # reap-free wait until the kernel has the process gone
            while Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid):
                time.sleep(0.05)
        s = self.stack
        s.start("server", "server", "--port", str(s.port), "--ui-port", str(s.ui_port), wait_port=s.port)

    async def disturb(self, scenario: str, sim_url: str | None) -> None:
        if scenario == "worker-eval":
            await self.phase("evaluating")
            self.kill_worker()
        elif scenario == "worker-approval":  # the first of two votes given, the worker dies, the second
            self.hold_after_first_vote = True
            await self.first_vote.wait()
            delay = self.rng.uniform(0, WINDOWS["awaiting_approval"])
            await asyncio.sleep(delay)
            self.run.disturbed_at = f"awaiting_approval, 1 of 2 votes given, +{delay:.1f}s"
            self.kill_worker()
            self.approve.set()
        elif scenario == "worker-canary":
            await self.phase("canary")
            self.kill_worker()
        elif scenario == "rollback":  # before or while the breach is acted on (the first checks of stage 0)
            await self.phase("canary", window=ROLLBACK_WINDOW_S)
            self.kill_worker()
        elif scenario == "temporal":
            await self.phase("canary")
            await asyncio.to_thread(self.kill_temporal)
        elif scenario == "registry":
            await self.phase("canary")
            await asyncio.to_thread(_lock_registry, REGISTRY_OUTAGE_S)
        elif scenario == "registry-pg":
            await self.phase("canary")
            await asyncio.to_thread(self.relay.refuse_for, REGISTRY_OUTAGE_S)
        elif scenario == "provider":
            await self.phase("evaluating")
            await _sim_faults(sim_url, {"*": {"error_500": 0.5, "overloaded_529": 0.5}})
            await asyncio.sleep(PROVIDER_OUTAGE_S)
            await _sim_faults(sim_url, {})


class Relay:
    """A TCP relay 127.0.0.1:<port> -> ``target`` in a thread; :meth:`refuse_for` makes the registry
    unreachable as a PostgreSQL outage does: the port refuses connections and every open connection is cut."""

    def __init__(self, target: tuple[str, int]) -> None:
        from pairshift.embedded import free_port

        self.target, self.port = target, free_port()
        self.loop = asyncio.new_event_loop()
        self.server: asyncio.AbstractServer | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._call(self._listen())

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    async def _listen(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.writers -= {writer, up_writer}

    async def _close(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in list(self.writers):
            w.transport.abort()
        self.writers.clear()
        await self.server.wait_closed()

    def refuse_for(self, seconds: float) -> None:
        self._call(self._close())
        time.sleep(seconds)  # the outage itself: connections to the port are refused
        self._call(self._listen())

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._call(self._close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


def _pg_database() -> str | None:
    """A fresh PostgreSQL database for one run (its URL), or None when 127.0.0.1:5432 does not answer."""
    from pairshift.embedded import port_open

    if not port_open(5432):
        return None
    import uuid

    import psycopg

    name = f"pairshift_chaos_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def _pg_drop(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:", 1)[1].split("\n", 1)[0].lower()
    except (OSError, IndexError):
        return "gone"


def _lock_registry(seconds: float) -> None:
    from pairshift.settings import get_settings

    path = get_settings().home / "registry.db"
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        time.sleep(seconds)  # the outage itself
        conn.execute("ROLLBACK")
    finally:
        conn.close()


async def _sim_faults(url: str | None, faults: dict) -> None:
    import httpx

    async with httpx.AsyncClient() as http:
        (await http.post(f"{url}/_admin/settings", json={"faults": faults})).raise_for_status()


async def _follow(handle: Any, chaos: Chaos, run: Run) -> Any:
    from pairshift.contracts.migration import TERMINAL_PHASES, DecideUpdate
    from workflows.migration import MigrationWorkflow

    voters = ("demo-approver", "alice")
    answered: set[str] = set()
    while True:
        chaos.supervise()
        try:
            st = await handle.query(MigrationWorkflow.status, rpc_timeout=timedelta(seconds=5))
        except Exception:  # noqa: BLE001 - no worker or no server right now: ask again
            await asyncio.sleep(0.25)
            continue
        chaos.seen.setdefault(st.phase, time.monotonic())
        chaos.current = st.phase
        if st.phase in TERMINAL_PHASES:
            return st
        if st.waiting and chaos.approve.is_set():
            given = {(by, stage) for by, stage in run.approvals_given}
            by = next((v for v in voters if (v, st.waiting.stage) not in given), None)
            if st.waiting.key not in answered:
                answered.add(st.waiting.key)
                run.asks += 1
            if by is not None:
                try:
                    await asyncio.wait_for(
                        handle.execute_update(
                            MigrationWorkflow.decide,
                            DecideUpdate(by=by, decision="approve", channel="cli", comment="bench"),
                        ),
                        timeout=60,
                    )
                    run.approvals_given.append([by, st.waiting.stage])
                    if chaos.hold_after_first_vote and not chaos.first_vote.is_set():
                        chaos.approve.clear()
                        chaos.first_vote.set()
                except Exception as exc:  # noqa: BLE001 - asked again on the next round
                    run.notes.append(f"approval retried: {type(exc).__name__}")
        await asyncio.sleep(0.25)


def _stage_of(stage: int | None, detail: str) -> int | None:
    """The stage of a ``stage_started`` audit event: its column, else its text ("stage 1: 50% to ...")."""
    if stage is not None:
        return stage
    m = re.match(r"stage (\d+)", detail)
    return int(m.group(1)) if m else None


def _measure(run: Run, wf_id: str, st: Any) -> None:
    from sqlalchemy import func
    from sqlmodel import select

    from pairshift.migration_records import audit_log
    from pairshift.registry import open_registry
    from pairshift.registry.models import Deployment, EvalResult, EvalRun

    with open_registry().session() as s:
        events = audit_log(s, wf_id)
        started = Counter(
            _stage_of(e.stage, e.detail.get("detail", "")) for e in events if e.event == "stage_started"
        )
        run.stages_started = {str(k): n for k, n in sorted(started.items())}
        dep = s.get(Deployment, DEPLOYMENT)
        on_baseline = (dep.active_prompt, dep.active_model) == BASELINE
        share = (100.0 - dep.canary_percent) if dep.candidate_model else 100.0
        run.baseline_share = share if on_baseline else (dep.canary_percent if dep.candidate_model else 0.0)
        for r in s.exec(select(EvalRun).where(EvalRun.migration == wf_id)).all():
            run.eval_results[r.arm] = s.exec(
                select(func.count()).select_from(EvalResult).where(EvalResult.run_id == r.id)
            ).one()
    run.approvals_final = [[a.by, a.stage] for a in st.approvals]


async def _run(scenario: str, seed: int, home: Path, run: Run) -> None:
    from temporalio.service import RPCError, RPCStatusCode

    from pairshift.apply import apply_path
    from pairshift.cli.migration import start_migration
    from pairshift.contracts.migration import MigrationRequest
    from pairshift.embedded import EmbeddedStack, free_port
    from pairshift.registry import open_registry
    from pairshift.settings import get_settings
    from pairshift.temporal_client import connect

    os.environ["PAIRSHIFT_HOME"] = str(home)
    os.environ.pop("PAIRSHIFT_DATABASE_URL", None)
    relay = None
    if scenario == "registry-pg":
        run.pg_database = _pg_database()
        if run.pg_database is None:
            raise Skipped("PostgreSQL does not answer on 127.0.0.1:5432")
        relay = Relay(("127.0.0.1", 5432))
        base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("127.0.0.1:5432", f"127.0.0.1:{relay.port}")
        os.environ["PAIRSHIFT_DATABASE_URL"] = f"{base}/{run.pg_database}"
    get_settings.cache_clear()
    fake_slack = None
    if scenario == "slack":
        from fake_slack import FakeSlack

        fake_slack = FakeSlack().start()
        fake_slack.fail_next(10**6, 503)
        os.environ.update(SLACK_BOT_TOKEN=fake_slack.token, PAIRSHIFT_SLACK_API_URL=fake_slack.base_url)
    stack = EmbeddedStack(home)
    sim_port = free_port() if scenario == "provider" else None
    try:
        with stack:
            sim_url = None
            if sim_port:
                stack.start("sim", "sim", "serve", "--port", str(sim_port), wait_port=sim_port)
                sim_url = f"http://127.0.0.1:{sim_port}"
            os.environ["PAIRSHIFT_TEMPORAL_ADDRESS"] = stack.address
            get_settings.cache_clear()
            apply_path(open_registry(), _config(home / "config", scenario, sim_port), by="bench")
            traffic = Traffic(regression=scenario.startswith("rollback"))
            rng = random.Random(seed)
            chaos = Chaos(stack, run, rng)
            chaos.relay = relay
            try:
                req = MigrationRequest(
                    deployment=DEPLOYMENT,
                    to_model=TO_MODEL,
                    to_prompt=TO_PROMPT,
                    reason="manual",
                    requested_by="demo-requester",
                )
                handle = await start_migration(req)
                began = time.monotonic()
                disturbance = asyncio.create_task(chaos.disturb(scenario, sim_url))
                st = await asyncio.wait_for(_follow(handle, chaos, run), RUN_TIMEOUT_S)
                run.to_terminal_s = time.monotonic() - began
                if not disturbance.done():
                    run.notes.append("the migration ended before the disturbance's point")
                    disturbance.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await disturbance
            finally:
                traffic.stop()
            run.phase = st.phase
            if fake_slack is not None:
                before = len(fake_slack.calls_to("chat.postMessage"))
                fake_slack.clear_failures()
                run.notes.append(f"slack calls while down: {len(fake_slack.calls)} (all refused)")
                assert before == 0
            client = await connect()
            h = client.get_workflow_handle(handle.id)
            deadline = time.monotonic() + RUN_TIMEOUT_S
            while (await h.describe()).status.name == "RUNNING" and time.monotonic() < deadline:
                await asyncio.sleep(0.25)
            run.to_closed_s = time.monotonic() - began
            if fake_slack is not None:
                # Notices still undelivered at the end go to a detached NoticeDeliveryWorkflow
                # (workflows/migration_outbox.py), which keeps retrying after the migration has closed: count
                # the posts once it has ended too (a first version counted at the close and saw 0 of 11).
                run_id = (await h.describe()).run_id or ""
                delivery = client.get_workflow_handle(f"{handle.id}-notices-{run_id[:8]}")
                try:
                    await asyncio.wait_for(delivery.result(), max(1.0, deadline - time.monotonic()))
                    run.notes.append(
                        f"a NoticeDeliveryWorkflow delivered the rest, "
                        f"{time.monotonic() - began - run.to_closed_s:.0f} s after the close"
                    )
                except RPCError as err:
                    if err.status != RPCStatusCode.NOT_FOUND:  # not found: all went out before the end
                        raise
                except TimeoutError:
                    run.error = f"notices still undelivered {RUN_TIMEOUT_S} s after the migration ended"
                run.slack_posts_after = len(fake_slack.calls_to("chat.postMessage"))
            if sim_url:
                import httpx

                async with httpx.AsyncClient() as http:
                    answers = (await http.get(f"{sim_url}/_admin/answers")).json()["answers"]
                run.provider_answered = sum(answers.values())
            _measure(run, handle.id, st)
    finally:
        if fake_slack is not None:
            fake_slack.stop()
            for k in ("SLACK_BOT_TOKEN", "PAIRSHIFT_SLACK_API_URL"):
                os.environ.pop(k, None)
        if relay is not None:
            relay.stop()


class Skipped(Exception):
    """The scenario cannot run on this machine (why is said in the report)."""


def one_run(scenario: str, seed: int) -> Run:
    from pairshift.registry.store import forget_registry
    from pairshift.settings import get_settings

    run = Run(scenario=scenario, seed=seed)
    home = Path(tempfile.mkdtemp(prefix=f"pairshift-chaos-{scenario}-"))
    try:
        asyncio.run(_run(scenario, seed, home, run))
    except Skipped as why:
        run.skipped = str(why)
    except Exception as exc:  # noqa: BLE001 - a run that breaks is a finding, recorded as such
        run.error = f"{type(exc).__name__}: {exc}"[:300]
    finally:
        forget_registry(get_settings().registry_url)
        os.environ.pop("PAIRSHIFT_DATABASE_URL", None)
        get_settings.cache_clear()
        if run.pg_database:
            _pg_drop(run.pg_database)
        if run.error is None:
            shutil.rmtree(home, ignore_errors=True)
        else:
            run.notes.append(f"state kept in {home}")
    return run


# ----------------------------------------------------------------------------------------- the report


def _reference_outcome(runs: list[Run], reference: str, default: str) -> str:
    ref = [r for r in runs if r.scenario == reference and r.error is None and not r.skipped]
    return Counter(r.phase for r in ref).most_common(1)[0][0] if ref else default


def render(runs: list[Run]) -> str:
    expected = _reference_outcome(runs, "undisturbed", "promoted")
    rollback_expected = _reference_outcome(runs, "rollback-undisturbed", "rolled_back")

    def expected_for(scenario: str) -> str:
        return rollback_expected if scenario.startswith("rollback") else expected

    lines = [
        "# Reliability: chaos figures",
        "",
        "`make bench` (bench/reliability_bench.py). Each run: a fresh PAIRSHIFT_HOME, the embedded stack",
        "as processes (Temporal dev server on a state file, `pairshift worker`), examples/ applied, the",
        "demo's happy migration (v1 on sim-classic -> v2 on sim-fresh, demo policy: durations in seconds,",
        "checks every 3 s), ~400 requests/s of simulated production traffic through a router refreshing",
        "every second, approvals given by the bench. Each disturbance lands at a point drawn uniformly",
        "inside the phase it targets (seeded; the point is in the per-run table). Outages: registry",
        f"{REGISTRY_OUTAGE_S:g} s (the issue's 60 s), provider {PROVIDER_OUTAGE_S:g} s (the issue's 2 min,",
        "scaled to the demo's eval of tens of seconds); a demo stage lasts 14-72 s and checks every 3 s.",
        "",
        f"Undisturbed outcome: **{expected}**; the regressing candidate undisturbed: **{rollback_expected}**"
        " (the rollback rows are compared with it).",
        "",
        "| scenario | runs | same outcome as undisturbed | stages started twice | approvals lost "
        "| traffic on the baseline at the end | median time to end (s) "
        "| median time to workflow closed (s) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for scenario in SCENARIOS:
        rs = [r for r in runs if r.scenario == scenario and not r.skipped]
        skipped = [r for r in runs if r.scenario == scenario and r.skipped]
        if skipped and not rs:
            lines.append(f"| {LABELS[scenario]} | 0 | skipped: {skipped[0].skipped} | - | - | - | - | - |")
        if not rs:
            continue
        same = sum(1 for r in rs if r.error is None and r.phase == expected_for(scenario))
        shares = sorted({f"{r.baseline_share:g}%" for r in rs if r.baseline_share is not None})
        ends = sorted(r.to_terminal_s for r in rs if r.to_terminal_s is not None)
        closed = sorted(r.to_closed_s for r in rs if r.to_closed_s is not None)
        lines.append(
            f"| {LABELS[scenario]} | {len(rs)} | {same}/{len(rs)} | {sum(r.twice for r in rs)} "
            f"| {sum(r.lost for r in rs)} | {', '.join(shares) or '-'} "
            f"| {_median(ends)} | {_median(closed)} |"
        )
    lines += [
        "",
        "Traffic on the baseline at the end: the promoted migration leaves 0% on the baseline (100% on v2 +",
        "sim-fresh); a rollback must leave 100%.",
        "",
        "Approvals lost: votes the bench gave and the workflow accepted that are missing from its final",
        "`status`. Stages started twice: `stage_started` audit events beyond one per stage.",
        "",
        "## Every run",
        "",
        "| scenario | seed | end | disturbed at | stages started | approvals given / in status | asks "
        "| eval results per arm | end (s) | closed (s) | notes |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in runs:
        if r.skipped:
            continue
        extra = list(r.notes)
        if r.provider_answered is not None:
            stored = sum(r.eval_results.values())
            extra.append(f"fake provider answered {r.provider_answered} calls for {stored} results stored")
            if stored > r.provider_answered:
                extra.append(f"so at least {stored - r.provider_answered} results are stored provider errors")
        if r.slack_posts_after is not None:
            extra.append(f"{r.slack_posts_after} Slack messages posted after Slack came back")
        if r.error:
            extra.append(f"ERROR {r.error}")
        arms = ", ".join(f"{k} {v}" for k, v in sorted(r.eval_results.items()))
        lines.append(
            f"| {r.scenario} | {r.seed} | {r.phase} | {r.disturbed_at or '-'} "
            f"| {json.dumps(r.stages_started)} | {len(r.approvals_given)} / {len(r.approvals_final)} "
            f"| {r.asks} | {arms} | {_num(r.to_terminal_s)} | {_num(r.to_closed_s)} "
            f"| {'; '.join(extra).replace('|', '/')} |"
        )
    return "\n".join(lines) + "\n"


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def _median(vs: list[float]) -> str:
    if not vs:
        return "-"
    n = len(vs)
    return f"{(vs[n // 2] if n % 2 else (vs[n // 2 - 1] + vs[n // 2]) / 2):.0f}"


def _load(path: Path) -> list[Run]:
    if not path.exists():
        return []
    return [Run(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "reliability.md")
    ap.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_RUNS", 5)))
    ap.add_argument("--only", default="", help="comma-separated scenarios (default: all)")
    ap.add_argument("--jsonl", type=Path, default=None, help="append each run here; the report reads it all")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    chosen = [s for s in args.only.split(",") if s] or list(SCENARIOS)
    unknown = sorted(set(chosen) - set(SCENARIOS))
    if unknown:
        print(f"unknown scenarios {unknown}; choose from {', '.join(SCENARIOS)}", file=sys.stderr)
        return 2
    runs = _load(args.jsonl) if args.jsonl else []
    if not args.report_only:
        master = random.Random(args.seed)
        for scenario in chosen:
            for i in range(args.runs):
                seed = master.randrange(10**6)
                print(f"== {scenario} run {i + 1}/{args.runs} seed {seed}", flush=True)
                run = one_run(scenario, seed)
                status = f"{run.phase} at {run.disturbed_at} twice={run.twice} lost={run.lost}"
                print(f"   {status} {run.error or ''}", flush=True)
                runs.append(run)
                if args.jsonl:
                    with args.jsonl.open("a") as f:
                        f.write(json.dumps(asdict(run)) + "\n")
    args.out.write_text(render(runs))
    print(f"wrote {args.out}")
    bad = [r for r in runs if r.error or r.twice or r.lost]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
