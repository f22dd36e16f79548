"""A harness for MigrationWorkflow tests: a small copy of examples/, a worker whose stage-check activity first
sends one check interval's worth of simulated production traffic (so traffic follows Temporal's skipped
clock), and helpers to wait for a phase by polling the `status` query."""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import shutil
import threading
import typing
import uuid
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from activities import ALL_ACTIVITIES
from activities.migration import check_stage
from pairshift.apply import apply_path
from pairshift.contracts.gates import StageCheck
from pairshift.contracts.migration import MigrationRequest, MigrationStatus, StageCheckInput
from pairshift.registry import open_registry
from pairshift.router import Router
from pairshift.sim.traffic import TrafficGenerator, profile_for
from workflows import ALL_WORKFLOWS
from workflows.migration import MigrationWorkflow

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# Stages of seconds, an approval before stage 1, three approvers, separation of duties.
TEST_POLICY: dict[str, Any] = {
    "eval": {
        "epochs": 1,
        "max_regression": 0.5,
        "blocking": [],
        "max_cost_ratio": 5,
        "max_latency_p95_ratio": 5,
    },
    "canary": {
        "stages": [
            {"percent": 20, "min_hours": 0.004, "max_hours": 0.02},
            {"percent": 50, "min_hours": 0.004, "max_hours": 0.02, "approval": True},
            {"percent": 100},
        ],
        "check_every_minutes": 0.05,
        "min_samples": 100,
    },
    "approvals": {
        "approvers": ["alice", "bob", "carol"],
        "required": 1,
        "separation_of_duties": True,
        "timeout_hours": 1,
        "remind_every_hours": 0.25,
    },
}


PEOPLE: list[dict[str, str]] = [
    {"name": "alice", "slack": "U_ALICE", "email": "alice@example.com"},
    {"name": "bob", "slack": "U_BOB", "email": "bob@example.com"},
    {"name": "carol", "email": "carol@example.com"},
]


def small_examples(dst: Path, cases: int = 30, policy: dict[str, Any] | None = None) -> Path:
    """examples/ with the first ``cases`` cases, and the deployment on ``policy`` (default TEST_POLICY)."""
    import yaml

    shutil.copytree(EXAMPLES, dst, ignore=shutil.ignore_patterns("*.py"))
    data = dst / "datasets" / "support-triage.jsonl"
    data.write_text("".join(data.read_text().splitlines(keepends=True)[:cases]))
    # libyaml's C loader and dumper (the same safe YAML): the pure-Python ones took ~0.4 s of every migration
    # test's setup.
    cfg = yaml.load((dst / "pairshift.yaml").read_text(), Loader=yaml.CSafeLoader)
    ours = {p["name"] for p in PEOPLE}  # the example names alice too: ours (with Slack and email) wins
    cfg["people"] = [p for p in cfg.get("people", []) if p["name"] not in ours] + PEOPLE
    cfg["policies"].append({"name": "test", **(policy or TEST_POLICY)})
    cfg["deployments"][0]["policy"] = "test"
    (dst / "pairshift.yaml").write_text(yaml.dump(cfg, Dumper=yaml.CSafeDumper, sort_keys=False))
    return dst


class Traffic:
    """Per-check simulated traffic: ``per_check`` requests through a router of the deployment."""

    def __init__(self, behaviours: dict[str, dict[str, Any]], per_check: int = 2000) -> None:
        self.router = Router("support-triage", registry=open_registry(), refresh_s=3600).start()
        self.gen = TrafficGenerator(self.router, profile_for(behaviours, seed=7))
        self.per_check = per_check

    def close(self) -> None:
        self.router.close()


class RouterTraffic:
    """Real requests through ``Router.complete`` before each canary check (the app's own path: online checks,
    the judge's samples, shadow mirroring): ``per_check`` of them, user ``user-N`` sending ``variables(N)``.
    A StageWatchWorkflow's checks (during an approval wait) send nothing. ``checks`` keeps every verdict;
    ``on_check(router)`` runs after the router's refresh, ``on_served(served)`` sees each answer."""

    def __init__(
        self,
        variables: Callable[[int], dict[str, Any]],
        per_check: int = 300,
        *,
        on_check: Callable[[Router], None] | None = None,
        on_served: Callable[[Any], None] | None = None,
        wait_for_mirror: bool = False,
    ) -> None:
        self.router = Router("support-triage", registry=open_registry(), refresh_s=0).start()
        self.variables, self.per_check = variables, per_check
        self.on_check, self.on_served, self.wait_for_mirror = on_check, on_served, wait_for_mirror
        self.sent = 0
        self.checks: list[StageCheck] = []

    async def _burst(self) -> None:
        for _ in range(self.per_check):
            self.sent += 1
            served = await self.router.complete(f"user-{self.sent}", self.variables(self.sent))
            if self.on_served is not None:
                self.on_served(served)

    def check_activity(self) -> Callable:
        @activity.defn(name="check_stage")
        def check(inp: StageCheckInput) -> StageCheck:
            self.router.refresh()
            if self.on_check is not None:
                self.on_check(self.router)
            if activity.info().workflow_type != "StageWatchWorkflow":
                asyncio.run(self._burst())
                if self.wait_for_mirror:
                    assert self.router.mirror.wait_idle(30)
                self.router.flush_samples()
                self.router.writer.flush()
            self.checks.append(check_stage(inp))
            return self.checks[-1]

        return check

    def close(self) -> None:
        self.router.close()


def check_with_traffic(traffic: Traffic | None, fail: bool = False, fail_first: int = 0) -> Callable:
    failures = [fail_first]

    @activity.defn(name="check_stage")
    def _check(inp: StageCheckInput) -> StageCheck:
        if fail or failures[0] > 0:
            failures[0] -= 1
            raise RuntimeError("metrics store unreachable")
        if traffic is not None:
            traffic.gen.generate(traffic.per_check)
        return check_stage(inp)

    return _check


def activity_name(fn: Callable) -> str:
    return getattr(fn, "__temporal_activity_definition").name


def same_types(fn: Callable) -> dict[str, Any]:
    """Annotations for a one-argument stand-in ``(inp)`` of activity ``fn`` (its input type decodes it)."""
    hints = typing.get_type_hints(fn)
    (arg,) = [n for n in inspect.signature(fn).parameters]
    return {"inp": hints[arg], "return": hints.get("return")}


class Gate:
    """Holds the first call of activity ``name`` whose input ``match``es until the test ``open``s it (at most
    ``hold_s`` real seconds), so a test can cancel or abort while exactly that activity runs; ``fail_while``
    makes every call fail until it is cleared (a registry outage)."""

    def __init__(self, name: str, match: Callable[[Any], bool] = lambda _: True, hold_s: float = 60) -> None:
        self.name, self.match, self.hold_s = name, match, hold_s
        self.entered, self.released = threading.Event(), threading.Event()
        self.fail_while = threading.Event()
        self.calls = 0
        self._used = False

    def wrap(self, fn: Callable) -> Callable:
        def gated(inp):
            self.calls += 1
            if self.fail_while.is_set():
                raise RuntimeError("registry unreachable")
            if not self._used and self.match(inp):
                self._used = True
                self.entered.set()
                self.released.wait(self.hold_s)
            return fn(inp)

        gated.__annotations__ = same_types(fn)
        gated.__name__ = fn.__name__
        return activity.defn(name=self.name)(gated)

    async def wait_entered(self, timeout_s: float = 60) -> None:
        ok = await asyncio.get_running_loop().run_in_executor(None, self.entered.wait, timeout_s)
        assert ok, f"{self.name} was never called with a matching input"

    def open(self) -> None:
        self.released.set()


@asynccontextmanager
async def migration_worker(
    client: Client,
    *,
    traffic: Traffic | None = None,
    fail_checks: bool = False,
    fail_first_checks: int = 0,
    gates: list[Gate] = (),
    replace: list[Callable] = (),
):
    """A worker of every workflow and activity on a fresh task queue; ``check_stage`` runs ``traffic`` first,
    ``gates`` hold or fail an activity, ``replace`` swaps in stand-ins (matched by activity name)."""
    activities = [
        a for a in ALL_ACTIVITIES if getattr(a, "__temporal_activity_definition").name != "check_stage"
    ]
    activities.append(check_with_traffic(traffic, fail_checks, fail_first_checks))
    swaps = {activity_name(a): a for a in replace}
    activities = [swaps.get(activity_name(a), a) for a in activities]
    for gate in gates:
        activities = [gate.wrap(a) if activity_name(a) == gate.name else a for a in activities]
    task_queue = f"pairshift-test-{uuid.uuid4().hex[:8]}"
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        async with Worker(
            client,
            task_queue=task_queue,
            workflows=ALL_WORKFLOWS,
            activities=activities,
            activity_executor=pool,
            max_concurrent_activities=16,
        ):
            yield task_queue


def apply_small(tmp_path: Path, **kw: Any) -> None:
    apply_path(open_registry(), small_examples(tmp_path / "config", **kw), by="test")


async def start(client: Client, task_queue: str, **kw: Any) -> WorkflowHandle:
    req = MigrationRequest(
        **{
            "deployment": "support-triage",
            "to_model": "sim-fresh-2025-09",
            "to_prompt": "support-triage@2",
            "requested_by": "carol",
            **kw,
        }
    )
    return await client.start_workflow(
        MigrationWorkflow.run,
        req,
        id=f"migration-support-triage-{uuid.uuid4().hex[:6]}",
        task_queue=task_queue,
    )


async def status(handle: WorkflowHandle) -> MigrationStatus:
    return await handle.query(MigrationWorkflow.status)


async def wait_for(
    handle: WorkflowHandle, pred: Callable[[MigrationStatus], bool], timeout_s: float = 60
) -> MigrationStatus:
    """Poll the status query until ``pred`` holds (real time: the time-skipping server does not skip here)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        st = await status(handle)
        if pred(st):
            return st
        if loop.time() > deadline:
            raise AssertionError(
                f"condition not reached; last status: phase={st.phase} waiting={st.waiting} "
                f"history={[h.event for h in st.history][-8:]} gate={st.stage.gate if st.stage else None}"
            )
        await asyncio.sleep(0.05)


async def skip_until(
    env: Any,
    handle: WorkflowHandle,
    pred: Callable[[MigrationStatus], bool],
    step_s: float = 15,
    limit_s: float = 1800,
) -> MigrationStatus:
    """Skip time ``step_s`` at a time (the time-skipping server) until ``pred`` holds, at most ``limit_s``.

    Skipping a fixed long span overshoots: every check interval skipped after the condition holds (a stage
    watched during an approval wait) generates its traffic for nothing.
    """
    skipped = 0.0
    while not pred(st := await status(handle)):
        assert skipped < limit_s, f"not reached after {skipped:g} s of skipped time: phase {st.phase}"
        await env.sleep(step_s)
        skipped += step_s
    return st


def waiting_on(stage: int) -> Callable[[MigrationStatus], bool]:
    return lambda st: st.phase == "awaiting_approval" and st.waiting is not None and st.waiting.stage == stage


async def until_idle(handle: WorkflowHandle, timeout_s: float = 30) -> None:
    """Poll ``describe()`` until no activity and no workflow task of the migration is in flight."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        raw = (await handle.describe()).raw_description
        if not raw.pending_activities and not raw.HasField("pending_workflow_task"):
            return
        assert loop.time() < deadline, f"the migration never went idle: {raw.pending_activities}"
        await asyncio.sleep(0.05)
