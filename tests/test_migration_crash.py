"""A migration survives its worker being killed (PRODUCT §8: "a worker killed at any moment resumes where it
was; no stage is repeated, no approval lost").

Everything is real: `pairshift server` (Temporal dev server) and `pairshift worker` processes (EmbeddedStack),
examples/ applied to the stack's registry with seconds-long stages, and simulated production traffic written
to the registry every half second while the canary runs. One migration, three SIGKILLs of the worker's whole
process group, a fresh `pairshift worker` after each:

(a) during evaluation, with the EvalWorkflow child mid-arm;
(b) during canary stage 0, between two gate checks;
(c) while stage 1 waits for approval, after the first of the two required approvals was given.

It must end as an uninterrupted run does (test_migration_workflow's happy path, test_temporal_ui): promoted,
the target pair active, one ledger row for the promotion; every `stage_started` audit event exactly once per
stage; the eval stored once per (arm, case, epoch) by a single child run; and the approval given before kill
(c) still in the `status` query and the audit log, counting towards the two required.

Progress is read by polling the `status` query and `describe()`, never by sleeping on a guess.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from migration_harness import TEST_POLICY, small_examples
from sqlalchemy import func
from sqlmodel import select
from temporalio.client import Client, WorkflowHandle

from pairshift import ledger
from pairshift.apply import apply_path
from pairshift.contracts.migration import DecideUpdate, MigrationRequest, MigrationStatus, migration_id
from pairshift.embedded import EmbeddedStack
from pairshift.migration_records import audit_log
from pairshift.registry import open_registry
from pairshift.registry.models import Deployment, EvalResult, EvalRun
from pairshift.router import Router
from pairshift.settings import TASK_QUEUE
from pairshift.sim.traffic import TrafficGenerator, profile_for
from pairshift.temporal_client import connect
from workflows.migration import MigrationWorkflow

pytestmark = pytest.mark.e2e  # pairshift server and workers as processes, SIGKILLed

DEPLOYMENT = "support-triage"
FROM_PAIR = "support-triage@1+sim-classic-2024-06"
TO_PAIR = "support-triage@2+sim-fresh-2025-09"
CASES = 300  # enough sim calls (4 arms x 300) that the eval is still running when the worker dies
ARMS = ("baseline", "prompt_only", "model_only", "joint")
# TEST_POLICY with 7-second stages and two approvals per decision, so one vote can be pending across a kill.
POLICY: dict[str, Any] = {
    **TEST_POLICY,
    "canary": {
        **TEST_POLICY["canary"],
        "stages": [
            {"percent": 20, "min_hours": 0.002, "max_hours": 0.02},
            {"percent": 50, "min_hours": 0.002, "max_hours": 0.02, "approval": True},
            {"percent": 100},
        ],
    },
    "approvals": {**TEST_POLICY["approvals"], "required": 2},
}
ALIKE = {"error_rate": 0.002, "latency_median_ms": 400, "input_tokens": 200, "output_tokens": 60}
TRAFFIC_PER_TICK = 200
# How long the migration may take to move on after a kill. Measured: ~32 s after (a) (the in-flight eval batch
# is retried after its 30 s heartbeat timeout), ~10 s after (b) and (c) (workflow tasks wait out the dead
# worker's 10 s sticky schedule-to-start timeout). The bound also covers the rare kill that lands inside a
# gate check, which is retried only when its 120 s start_to_close timeout expires.
AFTER_KILL_S = 180


@pytest.fixture
def stack(pairshift_env: Path, tmp_path: Path):
    with EmbeddedStack(pairshift_env) as running:
        apply_path(
            open_registry(), small_examples(tmp_path / "config", cases=CASES, policy=POLICY), by="test"
        )
        yield running


async def poll(
    handle: WorkflowHandle, until: Callable[[MigrationStatus], bool], what: str, timeout_s: float = 60
) -> MigrationStatus:
    """Query `status` until ``until`` holds; a query that finds no live worker yet is simply asked again."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last: MigrationStatus | None = None
    while True:
        with contextlib.suppress(Exception):  # no worker on the queue yet, or the query timed out: ask again
            last = await handle.query(MigrationWorkflow.status, rpc_timeout=timedelta(seconds=5))
            if until(last):
                return last
        if loop.time() > deadline:
            tail = [f"{h.event}: {h.detail[:60]}" for h in last.history[-5:]] if last else None
            raise AssertionError(
                f"{what}: not reached in {timeout_s:.0f}s; last phase "
                f"{last and last.phase}, history tail {tail}"
            )
        await asyncio.sleep(0.2)


async def quiet(handle: WorkflowHandle, timeout_s: float = 30) -> None:
    """Until no activity and no workflow task is in flight, so the kill lands between steps (see kill())."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        raw = (await handle.describe()).raw_description
        if not raw.pending_activities and not raw.HasField("pending_workflow_task"):
            return
        assert loop.time() < deadline, f"the migration never went idle: {raw.pending_activities}"
        await asyncio.sleep(0.05)


def kill(stack: EmbeddedStack, name: str, successor: str) -> None:
    """SIGKILL the worker's process group and start a fresh `pairshift worker`.

    Kills (b) and (c) are timed between activities (``quiet``): the migration's short activities carry no
    heartbeat, so one killed in flight is retried only when its start_to_close timeout (60-120 s) expires;
    correct, but it would make this test minutes long.
    """
    proc = stack.procs[name]
    stack.stop(name, kill=True)
    assert proc.returncode == -signal.SIGKILL, f"{name} was not killed: {proc.returncode}"
    stack.start(successor, "worker")


def eval_results() -> int:
    with open_registry().session() as s:
        return s.exec(select(func.count()).select_from(EvalResult)).one()


def audit(wf_id: str) -> list[tuple[str, str | None, int | None, str]]:
    with open_registry().session() as s:
        return [(e.event, e.actor, e.stage, e.detail.get("detail", "")) for e in audit_log(s, wf_id)]


async def traffic_until(stop: asyncio.Event) -> None:
    """Production traffic: a batch of requests through the deployment's router every half second."""
    router = Router(DEPLOYMENT, registry=open_registry(), refresh_s=3600).start()
    gen = TrafficGenerator(
        router, profile_for({"sim-classic-2024-06": ALIKE, "sim-fresh-2025-09": ALIKE}, seed=5)
    )
    try:
        while not stop.is_set():
            await asyncio.to_thread(gen.generate, TRAFFIC_PER_TICK)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)  # the traffic's pace, not a wait for a condition
    finally:
        router.close()


async def decide(handle: WorkflowHandle, by: str, stage: int) -> Any:
    return await handle.execute_update(
        MigrationWorkflow.decide, DecideUpdate(by=by, decision="approve", stage=stage)
    )


async def worker_identities(handle: WorkflowHandle) -> set[str]:
    """Which worker processes completed this workflow's tasks (pid@host each)."""
    history = await handle.fetch_history()
    return {
        e.workflow_task_completed_event_attributes.identity
        for e in history.events
        if e.HasField("workflow_task_completed_event_attributes")
    }


class Migration:
    """The migration under test, its stack, and the test's timings (printed for whoever tunes them)."""

    def __init__(self, stack: EmbeddedStack, handle: WorkflowHandle) -> None:
        self.stack, self.handle, self.id = stack, handle, handle.id
        self.began = asyncio.get_running_loop().time()

    def lap(self, what: str) -> None:
        print(f"{asyncio.get_running_loop().time() - self.began:6.1f}s {what}", flush=True)

    async def kill_during_eval(self) -> None:
        """(a) once the arms have stored some results, long before they are done."""
        await poll(self.handle, lambda st: st.phase == "evaluating", "evaluating")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while eval_results() < 50:
            assert loop.time() < deadline, "the eval stored no results"
            await asyncio.sleep(0.05)
        kill(self.stack, "worker", "worker-2")
        at_kill = eval_results()
        assert at_kill < len(ARMS) * CASES, "the eval finished before the kill; raise CASES"
        self.lap(f"kill (a): {at_kill} of {len(ARMS) * CASES} eval results stored")
        st = await poll(self.handle, lambda st: st.phase == "awaiting_approval", "eval resumed", AFTER_KILL_S)
        self.lap("eval resumed and done")
        assert st.eval["gate"]["decision"] in ("pass", "inconclusive"), st.eval["gate"]
        with open_registry().session() as s:
            runs = s.exec(select(EvalRun).where(EvalRun.migration == self.id)).all()
            assert sorted(r.arm for r in runs) == sorted(ARMS), (
                "one eval run per arm: the child was not restarted"
            )
            for run in runs:
                stored = s.exec(
                    select(func.count()).select_from(EvalResult).where(EvalResult.run_id == run.id)
                ).one()
                assert stored == CASES, f"{run.arm}: {stored} results for {CASES} cases x 1 epoch"

    async def kill_during_canary(self) -> None:
        """(b) in stage 0, between two gate checks, once a check has seen the candidate's traffic."""
        await decide(self.handle, "alice", 0)
        assert (await decide(self.handle, "bob", 0)).phase == "canary"
        await poll(
            self.handle,
            lambda st: (
                st.phase == "canary"
                and st.stage is not None
                and st.stage.index == 0
                and st.stage.samples["candidate"] > 0
            ),
            "stage 0 checked",
        )
        await quiet(self.handle)
        kill(self.stack, "worker-2", "worker-3")
        self.lap("kill (b)")
        with open_registry().session() as s:
            assert s.get(Deployment, DEPLOYMENT).canary_percent == 20, "the split holds while no worker runs"

    async def kill_while_awaiting_approval(self) -> None:
        """(c) stage 1 needs two approvals: alice's arrives, the worker dies, bob's completes the pair."""
        await poll(
            self.handle,
            lambda st: st.phase == "awaiting_approval" and st.waiting is not None and st.waiting.stage == 1,
            "stage 1 waits",
            AFTER_KILL_S,
        )
        self.lap("stage 0 passed; stage 1 waits")
        first = await decide(self.handle, "alice", 1)
        assert (first.approvals, first.required, first.phase) == (1, 2, "awaiting_approval")
        await quiet(self.handle)
        kill(self.stack, "worker-3", "worker-4")
        self.lap("kill (c)")
        st = await poll(self.handle, lambda st: True, "status after kill (c)", AFTER_KILL_S)
        self.lap("status answered after kill (c)")
        assert st.phase == "awaiting_approval" and st.waiting.stage == 1
        assert [(a.by, a.stage) for a in st.approvals] == [("alice", 0), ("bob", 0), ("alice", 1)]
        assert ("approve", "alice", 1) in [e[:3] for e in audit(self.id)]
        second = await decide(self.handle, "bob", 1)
        assert (second.approvals, second.phase) == (2, "canary"), "alice's vote from before the kill counts"

    async def assert_promoted_once(self) -> None:
        with open_registry().session() as s:
            dep = s.get(Deployment, DEPLOYMENT)
            assert (dep.active_pair, dep.candidate_pair, dep.canary_percent) == (TO_PAIR, None, 0)
            rows = ledger.history(s, DEPLOYMENT)
        assert [r.pair for r in rows] == [FROM_PAIR, TO_PAIR], "one ledger row for the promotion, no rollback"
        assert [s["stage"] for s in rows[-1].evidence["stages"]] == [0, 1, 2]
        events = audit(self.id)
        started = Counter(
            int(re.match(r"stage (\d+):", d).group(1)) for e, _, _, d in events if e == "stage_started"
        )
        assert started == {0: 1, 1: 1, 2: 1}, f"each stage started exactly once: {started}"
        approvals = [(actor, stage) for e, actor, stage, _ in events if e == "approve"]
        assert approvals == APPROVALS, "no approval lost or doubled in the audit log"
        assert [e for e, *_ in events].count("promoted") == 1
        st = await self.handle.query(MigrationWorkflow.status)
        assert [(a.by, a.stage) for a in st.approvals] == APPROVALS
        assert len(await worker_identities(self.handle)) >= 4, (
            "the workflow moved to a new worker after every kill"
        )


APPROVALS = [("alice", 0), ("bob", 0), ("alice", 1), ("bob", 1)]


@pytest.mark.timeout(420)
async def test_migration_survives_worker_kills_in_eval_canary_and_approval(stack: EmbeddedStack):
    client: Client = await connect(stack.address)
    handle = await client.start_workflow(
        MigrationWorkflow.run,
        MigrationRequest(
            deployment=DEPLOYMENT,
            to_model="sim-fresh-2025-09",
            to_prompt="support-triage@2",
            requested_by="carol",
        ),
        id=migration_id(DEPLOYMENT),
        task_queue=TASK_QUEUE,
        task_timeout=timedelta(seconds=5),
    )
    run = Migration(stack, handle)
    await run.kill_during_eval()
    stop = asyncio.Event()
    traffic = asyncio.create_task(traffic_until(stop))
    try:
        await run.kill_during_canary()
        await run.kill_while_awaiting_approval()
        result = await handle.result()
        run.lap("promoted")
    finally:
        stop.set()
        await traffic
    assert result.phase == "promoted", result.outcome
    await run.assert_promoted_once()
