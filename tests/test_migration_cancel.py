"""Never half-moved (issue 23): whatever cancels or aborts a migration, at whichever await, the registry's
active pair and split, the migration row, the ledger, the audit log and the workflow's end agree.

Each test holds one activity of the migration (a :class:`migration_harness.Gate`) or waits for one timer or
approval wait, then cancels the workflow (or sends ``abort``) and only then lets the activity finish: the
cancel always lands while that await is in flight. On the time-skipping server the activity is released only
once the workflow has taken the cancel (a task completed after the cancel request), never in the same
workflow task: the server wedges a workflow whose cancel of an activity crosses that activity's completion
(temporalio/sdk-java#2391).

The findings of the issue each have a test here that failed on the code before ``cancel-safe-compensation``;
the matrix at the end cancels and aborts at every await of the workflow.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from migration_harness import (
    TEST_POLICY,
    Gate,
    apply_small,
    migration_worker,
    same_types,
    start,
    status,
    wait_for,
    waiting_on,
)
from sqlmodel import select
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import CancelledError

from pairshift import ledger
from pairshift.contracts.migration import AbortSignal, DecideUpdate, PromoteNowSignal
from pairshift.migration_records import audit_log
from pairshift.registry import open_registry
from pairshift.registry.models import Deployment, MigrationRow
from workflows.migration import MigrationWorkflow

SAME = {"error_rate": 0.005, "latency_median_ms": 400, "input_tokens": 200, "output_tokens": 60}
BEHAVIOURS = {"sim-classic-2024-06": SAME, "sim-fresh-2025-09": SAME}
BASELINE = "support-triage@1+sim-classic-2024-06"
CANDIDATE = "support-triage@2+sim-fresh-2025-09"
TERMINAL = {"promoted", "rolled_back", "rejected", "failed_eval", "dry_run"}

# Checks an hour apart: a stage soaks on its timer while the test acts (time skips only when asked).
HOURLY = {**TEST_POLICY["canary"], "check_every_minutes": 60}
HOURLY["stages"] = [
    {**s, "min_hours": 2, "max_hours": 4} if "min_hours" in s else s for s in HOURLY["stages"]
]


# --- what every ending must satisfy ------------------------------------------------------------------


@dataclass
class Ending:
    phase: str  # the workflow's final phase (status query)
    cancelled: bool  # the workflow execution ended CANCELED
    outcome: str = ""
    events: list[str] = field(default_factory=list)


def deployment() -> Deployment:
    with open_registry().session() as s:
        return s.get(Deployment, "support-triage")


def audit_events(handle: WorkflowHandle) -> list[str]:
    with open_registry().session() as s:
        return [e.event for e in audit_log(s, handle.id)]


async def ending(handle: WorkflowHandle) -> Ending:
    """Wait for the workflow to close and read how it ended."""
    try:
        result = await handle.result()
        cancelled = False
    except WorkflowFailureError as err:
        assert isinstance(err.cause, CancelledError), f"failed instead of ending: {err.cause!r}"
        cancelled = True
    desc = await handle.describe()
    assert desc.status == (
        WorkflowExecutionStatus.CANCELED if cancelled else WorkflowExecutionStatus.COMPLETED
    )
    st = await status(handle)
    if not cancelled:
        assert (result.phase, result.outcome) == (st.phase, st.outcome)
    return Ending(st.phase, cancelled, st.outcome or "", audit_events(handle))


def assert_records_agree(end: Ending) -> None:
    """The registry's active pair and split, the migration row, the ledger and the audit log say one thing."""
    dep = deployment()
    with open_registry().session() as s:
        rows = s.exec(select(MigrationRow)).all()
        entries = ledger.history(s, "support-triage")
    reasons = [e.reason for e in entries[1:]]
    rollbacks = [r for r in reasons if r.startswith("rolled back from")]
    assert end.phase in TERMINAL, f"ended in phase {end.phase}"
    if end.phase == "promoted":
        assert (dep.active_pair, dep.candidate_pair, dep.canary_percent, dep.migration) == (
            CANDIDATE,
            None,
            0,
            None,
        )
        assert entries[-1].pair == CANDIDATE and not rollbacks, reasons
        assert not end.cancelled
    else:
        assert (dep.active_pair, dep.candidate_pair, dep.canary_percent, dep.migration) == (
            BASELINE,
            None,
            0,
            None,
        ), f"half-moved: {end.phase} but {dep.candidate_pair} at {dep.canary_percent}%"
        assert all(e.pair == BASELINE for e in entries), reasons
        assert len(rollbacks) <= 1, reasons
        assert bool(rollbacks) == ("baseline_restored" in end.events)
        if rollbacks:
            assert end.phase == "rolled_back"
    if rows:
        (row,) = rows
        assert (row.phase, row.finished_at is not None) == (end.phase, True), (row.phase, row.finished_at)
    terminal = [e for e in end.events if e in TERMINAL]
    assert terminal == [end.phase], f"terminal events {terminal} for {end.phase}"
    assert "(failed for good)" not in end.outcome or not end.cancelled


# --- driving a migration to one await ----------------------------------------------------------------


async def cancel_taken(handle: WorkflowHandle, timeout_s: float = 30) -> None:
    """Poll the history until the workflow has completed a task after the cancel request (or closed)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        events = [e.event_type async for e in handle.fetch_history_events()]
        if EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED in events:
            after = events[events.index(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED) :]
            if EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED in after:
                return
        assert loop.time() < deadline, "the workflow never took the cancel"
        await asyncio.sleep(0.05)


async def approve(handle: WorkflowHandle, by: str, stage: int | None = None) -> None:
    await handle.execute_update(
        MigrationWorkflow.decide, DecideUpdate(by=by, decision="approve", stage=stage)
    )


async def to_canary(handle: WorkflowHandle) -> None:
    await wait_for(handle, waiting_on(0))
    await approve(handle, "alice")


async def abort(handle: WorkflowHandle) -> None:
    await handle.signal(MigrationWorkflow.abort, AbortSignal(by="bob", reason="pager went off"))


def phase_is(phase: str, *, finished: bool = False) -> Callable[[Any], bool]:
    return lambda inp: inp.phase == phase and inp.finished == finished


# --- the findings of issue 23, each failing on the code before the patch ----------------------------


async def test_cancel_while_the_split_is_set_restores_it(env, time_skipping_env):
    """The split committed while the cancel waited: the workflow knew traffic moved, and restored it."""
    gate = Gate("set_canary_split")
    async with migration_worker(time_skipping_env.client, gates=[gate]) as tq:
        handle = await start(time_skipping_env.client, tq)
        await to_canary(handle)
        await gate.wait_entered()
        await handle.cancel()
        await cancel_taken(handle)
        gate.open()
        end = await ending(handle)
    assert (end.cancelled, end.phase) == (True, "rolled_back"), end
    assert_records_agree(end)


async def test_a_split_attempt_that_commits_then_loses_its_answer_is_restored(env, time_skipping_env):
    """An attempt commits but its answer is lost (a timeout after the commit), every later one fails for good:
    the split is live although the activity failed, and it is restored."""
    split = CommitThenFail("set_canary_split")
    async with migration_worker(time_skipping_env.client, gates=[split]) as tq:
        handle = await start(time_skipping_env.client, tq)
        await to_canary(handle)
        end = await ending(handle)
    assert split.calls > 1 and end.phase == "rolled_back", end
    assert "failed for good" in end.outcome and "baseline_restored" in end.events
    assert_records_agree(end)


class CommitThenFail:
    """An activity whose first attempt commits and then fails, and whose later attempts all fail."""

    def __init__(self, name: str) -> None:
        self.name, self.calls = name, 0

    def wrap(self, fn: Callable) -> Callable:
        def attempt(inp):
            self.calls += 1
            if self.calls == 1:
                fn(inp)
            raise RuntimeError("registry unreachable")

        attempt.__annotations__ = same_types(fn)
        return activity.defn(name=self.name)(attempt)


async def test_cancel_while_promoting_ends_promoted_and_says_so(hourly_env, time_skipping_env):
    """The promote committed while the cancel waited: promoted, one promote row, no rollback after it."""
    gate = Gate("promote_pair")
    async with migration_worker(time_skipping_env.client, gates=[gate]) as tq:
        handle = await start(time_skipping_env.client, tq)
        await to_canary(handle)
        await wait_for(handle, lambda st: st.phase == "canary")
        await handle.signal(MigrationWorkflow.promote_now, PromoteNowSignal(by="bob"))
        await gate.wait_entered()
        await handle.cancel()
        await cancel_taken(handle)
        gate.open()
        end = await ending(handle)
    assert (end.cancelled, end.phase) == (False, "promoted"), end
    assert "cancel_too_late" in end.events
    assert_records_agree(end)


async def test_cancel_during_the_handover_restores_instead_of_leaving_the_split(env, time_skipping_env):
    """The cancel lands while the handover flushes its audit log: the run compensates, never hands over."""
    gate = Gate("record_audit_events", lambda batch: any(e.event == "continued_as_new" for e in batch.events))
    async with migration_worker(time_skipping_env.client, gates=[gate]) as tq:
        handle = await start(time_skipping_env.client, tq, checks_per_run=1)
        await to_canary(handle)
        await gate.wait_entered()
        await handle.cancel()
        await cancel_taken(handle)
        gate.open()
        end = await ending(handle)
    assert (end.cancelled, end.phase) == (True, "rolled_back"), end
    assert "continued_as_new" in end.events, "the handover's own event is in the audit log"
    assert_records_agree(end)


async def test_cancel_while_the_restore_retries_through_an_outage(env, time_skipping_env):
    """A gate check fails for good, the restore retries while the registry is down, the operator cancels:
    the restore still happens once the registry answers."""
    gate = Gate("restore_baseline")
    gate.fail_while.set()
    async with migration_worker(time_skipping_env.client, fail_checks=True, gates=[gate]) as tq:
        handle = await start(time_skipping_env.client, tq)
        await to_canary(handle)
        await wait_for(handle, lambda st: st.phase == "canary")
        await time_skipping_env.sleep(20 * 60)  # the check's 15 minutes of retries, then restore attempts
        assert gate.calls >= 1, "the restore never started"
        await handle.cancel()
        await cancel_taken(handle)
        gate.fail_while.clear()
        gate.open()
        end = await ending(handle)
    assert end.phase == "rolled_back" and "metrics store unreachable" in end.outcome, end
    assert_records_agree(end)


async def test_cancel_during_the_eval_cancels_not_fails(env, time_skipping_env):
    """A cancel during the eval child ends the workflow CANCELED, never 'failed_eval (failed for good)'."""
    gate = Gate("plan_eval")
    async with migration_worker(time_skipping_env.client, gates=[gate]) as tq:
        handle = await start(time_skipping_env.client, tq)
        await gate.wait_entered()
        await handle.cancel()
        await cancel_taken(handle)
        gate.open()
        end = await ending(handle)
    assert (end.cancelled, end.phase) == (True, "rejected"), end
    assert "failed for good" not in end.outcome
    assert_records_agree(end)


async def test_cancel_before_the_plan_is_a_cancel_not_an_invalid_migration(env, time_skipping_env):
    gate = Gate("prepare_migration")
    async with migration_worker(time_skipping_env.client, gates=[gate]) as tq:
        handle = await start(time_skipping_env.client, tq)
        await gate.wait_entered()
        await handle.cancel()
        await cancel_taken(handle)
        gate.open()
        end = await ending(handle)
    assert end.cancelled, end
    assert_records_agree(end)  # the row prepare recorded is finished, not left running for the daily scan


async def test_abort_during_the_eval_cancels_the_child_and_asks_nobody(env, time_skipping_env, monkeypatch):
    gate = Gate("plan_eval")
    async with migration_worker(time_skipping_env.client, gates=[gate]) as tq:
        handle = await start(time_skipping_env.client, tq)
        await gate.wait_entered()
        await abort(handle)
        await until_signal_taken(handle)
        gate.open()
        end = await ending(handle)
        child_id = f"{handle.id}-eval-{(await handle.describe()).run_id[:8]}"
        child = await time_skipping_env.client.get_workflow_handle(child_id).describe()
    assert end.phase == "rejected" and "aborted by bob" in end.outcome, end
    assert child.status == WorkflowExecutionStatus.CANCELED, "the eval stops spending at once"
    assert "eval" not in end.events and "awaiting_approval" not in end.events
    assert_records_agree(end)


async def test_a_late_vote_after_an_abort_is_refused_with_the_real_phase(env, time_skipping_env):
    gate = Gate("record_audit_events", lambda batch: any(e.event == "abort" for e in batch.events))
    async with migration_worker(time_skipping_env.client, gates=[gate]) as tq:
        handle = await start(time_skipping_env.client, tq)
        await wait_for(handle, waiting_on(0))
        await abort(handle)
        await wait_for(handle, lambda st: st.waiting is None)
        with pytest.raises(Exception) as info:
            await approve(handle, "alice")
        gate.open()
        end = await ending(handle)
    assert "the migration ends rejected" in str(info.value.cause), info.value
    assert_records_agree(end)


async def until_signal_taken(handle: WorkflowHandle, timeout_s: float = 30) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        events = [e.event_type async for e in handle.fetch_history_events()]
        if EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED in events:
            after = events[events.index(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED) :]
            if EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED in after:
                return
        assert loop.time() < deadline, "the workflow never took the signal"
        await asyncio.sleep(0.05)


# --- fixtures ------------------------------------------------------------------------------------------


@pytest.fixture
def env(pairshift_env, tmp_path):
    apply_small(tmp_path)
    return open_registry()


@pytest.fixture
def hourly_env(pairshift_env, tmp_path):
    apply_small(tmp_path, policy={**TEST_POLICY, "canary": HOURLY})
    return open_registry()


Step = Callable[[WorkflowHandle, Any], Awaitable[None]]
