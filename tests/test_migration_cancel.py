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
    Traffic,
    apply_small,
    migration_worker,
    same_types,
    skip_until,
    start,
    status,
    until_idle,
    wait_for,
    waiting_on,
)
from sqlmodel import select
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import CancelledError

from pairshift import ledger
from pairshift.contracts.migration import AbortSignal, DecideUpdate, PauseSignal, PromoteNowSignal
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


async def test_cancel_during_the_handover_restores_instead_of_leaving_the_split(brisk_env, time_skipping_env):
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


@pytest.fixture
def brisk_env(pairshift_env, tmp_path):
    apply_small(tmp_path, policy=BRISK)
    return open_registry()


Step = Callable[[WorkflowHandle, Any], Awaitable[None]]


# --- restore and split refusals (item 6) ---------------------------------------------------------------


def _split_input(migration: str, percent: float = 20):
    from pairshift.contracts.migration import SplitInput

    return SplitInput(
        deployment="support-triage",
        migration=migration,
        prompt="support-triage@2",
        model="sim-fresh-2025-09",
        percent=percent,
    )


def test_restore_of_a_split_another_migration_owns_changes_nothing_and_ends(env):
    """Another migration's split is not this one's: the restore ends (False) instead of retrying forever."""
    from activities.migration import restore_baseline, set_canary_split
    from pairshift.contracts.migration import RestoreInput

    set_canary_split(_split_input("other/run"))
    assert (
        restore_baseline(
            RestoreInput(deployment="support-triage", migration="mine/run", reason="abort", by="bob")
        )
        is False
    )
    assert deployment().migration == "other/run", "the other migration's split is untouched"


def test_a_phase_write_read_before_the_ending_cannot_undo_it(registry, monkeypatch):
    """A phase record that read the row before the ending committed and writes after it (an activity the
    cancel left running) changes nothing: the matrix's "record awaiting_approval 1-cancel" ended with the row
    back at awaiting_approval, finished (seen once in ~40 runs; here the interleaving is forced)."""
    from pairshift import migration_records
    from pairshift.migration_records import record_phase

    with registry.session() as s:
        s.add(
            MigrationRow(
                run_id="r1",
                workflow_id="migration-x",
                deployment="support-triage",
                from_pair=BASELINE,
                to_pair=CANDIDATE,
                reason="manual",
                requested_by="carol",
                phase="canary",
            )
        )
    real, ended = migration_records.utcnow, []

    def ending_commits_meanwhile():  # called by the late write between its read and its write
        if not ended:
            ended.append(True)
            with registry.session() as other:
                record_phase(other, run_id="r1", phase="rolled_back", finished=True)
        return real()

    monkeypatch.setattr(migration_records, "utcnow", ending_commits_meanwhile)
    with registry.session() as s:
        record_phase(s, run_id="r1", phase="awaiting_approval", summary={"late": True})
    with registry.session() as s:
        row = s.get(MigrationRow, "r1")
        assert ended and (row.phase, row.finished_at is not None) == ("rolled_back", True)
        assert "late" not in (row.summary or {})


def test_impossible_restore_and_split_conflicts_are_not_retried(env):
    from temporalio.exceptions import ApplicationError

    from activities.migration import restore_baseline, set_canary_split
    from pairshift.contracts.migration import RestoreInput

    with pytest.raises(ApplicationError) as info:
        restore_baseline(
            RestoreInput(deployment="no-such-deployment", migration="mine/run", reason="abort", by="bob")
        )
    assert (info.value.type, info.value.non_retryable) == ("RestoreImpossible", True)
    set_canary_split(_split_input("other/run"))
    with pytest.raises(ApplicationError) as info:
        set_canary_split(_split_input("mine/run"))
    assert (info.value.type, info.value.non_retryable) == ("SplitConflict", True)


async def test_a_split_refused_for_another_migration_ends_without_touching_it(env, time_skipping_env):
    """Traffic counts as moved before the split is scheduled; when the split is refused (another migration
    owns the deployment), the restore finds nothing of this migration live and the workflow ends."""
    from activities.migration import set_canary_split

    async with migration_worker(time_skipping_env.client) as tq:
        handle = await start(time_skipping_env.client, tq)
        await wait_for(handle, waiting_on(0))
        set_canary_split(_split_input("other/run", percent=5))
        await approve(handle, "alice")
        end = await ending(handle)
    assert "being migrated by other/run" in end.outcome and "baseline_unchanged" in end.events, end
    assert deployment().migration == "other/run" and deployment().canary_percent == 5


# --- the matrix: cancel, and separately abort, at every await of the workflow ----------------------------

# Stage 0 passes within seconds of real time on traffic (the stage-1 points wait for it without skipping time
# while an activity is held).
QUICK = {
    **TEST_POLICY,
    "canary": {
        **TEST_POLICY["canary"],
        "stages": [
            {"percent": 20, "min_hours": 0.0003, "max_hours": 0.01},
            {"percent": 50, "min_hours": 0.004, "max_hours": 0.02, "approval": True},
            {"percent": 100},
        ],
        "check_every_minutes": 0.01,
    },
}
# Time skips only while a test awaits a result or sleeps on the test server: the points past stage 0 skip
# its checks one interval at a time (waiting on the status query, stage 0 took its 1-2 s in real time).
QUICK_CHECK_S = 0.6
# TEST_POLICY with a check every 0.3 s instead of 3 s (stages as long): the points held at the first check or
# at the handover after it reach it ten times sooner, in real time (the server skips no time while the test
# acts).
BRISK = {**TEST_POLICY, "canary": {**TEST_POLICY["canary"], "check_every_minutes": 0.005}}
# The matrix is about where a cancel lands, not about the eval's evidence: 10 cases (not 30) make an eval
# whose gate passes as the 30-case one does, in a third of the time, at each of the 38 cases.
MATRIX_CASES = 10
POLICIES = {
    "test": TEST_POLICY,
    "hourly": {**TEST_POLICY, "canary": HOURLY},
    "quick": QUICK,
    "brisk": BRISK,
}


@dataclass
class Point:
    """One await of MigrationWorkflow: the activity held there (or None: a timer or a wait) and how to get
    there. ``ended_by`` names what ends it when that is not the cancel or abort under test."""

    name: str
    gate: Callable[[], Gate] | None
    reach: Callable[[WorkflowHandle, Any, Gate | None], Awaitable[None]]
    policy: str = "test"
    traffic: bool = False
    start: dict[str, Any] = field(default_factory=dict)
    ended_by: str | None = None  # "promote": promoted stands; "other": the other signal ended it first


def nth(match: Callable[[Any], bool], n: int) -> Callable[[Any], bool]:
    seen = [0]

    def m(inp: Any) -> bool:
        if match(inp):
            seen[0] += 1
            return seen[0] == n
        return False

    return m


async def held(handle, env, gate):
    await gate.wait_entered()


async def at_canary_then_held(handle, env, gate):
    await to_canary(handle)
    await gate.wait_entered()


async def approval_wait_0(handle, env, gate):
    await wait_for(handle, waiting_on(0))
    await until_idle(handle)


async def hold_timer(handle, env, gate):
    await to_canary(handle)
    await wait_for(handle, lambda st: st.phase == "canary" and st.stage is not None)
    await until_idle(handle)


async def paused(handle, env, gate):
    await hold_timer(handle, env, gate)
    await handle.signal(MigrationWorkflow.pause, PauseSignal(by="bob"))
    await wait_for(handle, lambda st: st.stage.paused)
    await until_idle(handle)


async def approval_wait_1(handle, env, gate):
    await to_canary(handle)
    await skip_until(env, handle, waiting_on(1), step_s=QUICK_CHECK_S)
    await until_idle(handle)


async def stage_1_held(handle, env, gate):
    await to_canary(handle)
    await skip_until(env, handle, waiting_on(1), step_s=QUICK_CHECK_S)
    await approve(handle, "bob", stage=1)
    await gate.wait_entered()


async def stage_1_asked_held(handle, env, gate):
    await to_canary(handle)
    await skip_until(env, handle, lambda _: gate.entered.is_set(), step_s=QUICK_CHECK_S)


async def promoting(handle, env, gate):
    await hold_timer(handle, env, gate)
    await handle.signal(MigrationWorkflow.promote_now, PromoteNowSignal(by="bob"))
    await gate.wait_entered()


async def ending_held(handle, env, gate):
    """Another ending is under way (set by the test: the other of cancel and abort) when this one lands."""
    await hold_timer(handle, env, gate)


def phase_record(phase: str, n: int = 1, **kw: Any) -> Callable[[], Gate]:
    return lambda: Gate("record_migration_phase", nth(phase_is(phase, **kw), n))


POINTS = [
    Point("prepare_migration", lambda: Gate("prepare_migration"), held),
    Point("record evaluating", phase_record("evaluating"), held),
    Point("eval child", lambda: Gate("plan_eval"), held),
    Point("record eval gate", phase_record("evaluating", 2), held),
    Point("record awaiting_approval 0", phase_record("awaiting_approval"), held),
    Point("approval wait 0", None, approval_wait_0),
    Point("set_canary_split 20%", lambda: Gate("set_canary_split"), at_canary_then_held),
    Point("record canary", phase_record("canary"), at_canary_then_held),
    Point(
        "stage notice in flight",
        lambda: Gate("send_notice", lambda n: n.kind == "stage_started"),
        at_canary_then_held,
        policy="hourly",
    ),
    Point("hold timer", None, hold_timer, policy="hourly"),
    Point("paused", None, paused, policy="hourly"),
    Point("check_stage", lambda: Gate("check_stage"), at_canary_then_held, policy="brisk"),
    Point(
        "record awaiting_approval 1",
        phase_record("awaiting_approval", 2),
        stage_1_asked_held,
        policy="quick",
        traffic=True,
    ),
    Point("approval wait 1", None, approval_wait_1, policy="quick", traffic=True),
    Point(
        "set_canary_split 50%",
        lambda: Gate("set_canary_split", lambda i: i.percent == 50),
        stage_1_held,
        policy="quick",
        traffic=True,
    ),
    Point(
        "handover",
        lambda: Gate("record_audit_events", lambda b: any(e.event == "continued_as_new" for e in b.events)),
        at_canary_then_held,
        policy="brisk",
        start={"checks_per_run": 1},
    ),
    Point("promote_pair", lambda: Gate("promote_pair"), promoting, policy="hourly", ended_by="promote"),
    Point(
        "restore_baseline", lambda: Gate("restore_baseline"), ending_held, policy="hourly", ended_by="other"
    ),
    Point(
        "record the ending",
        phase_record("rolled_back", finished=True),
        ending_held,
        policy="hourly",
        ended_by="other",
    ),
]


@pytest.mark.parametrize("kind", ["cancel", "abort"])
@pytest.mark.parametrize("point", POINTS, ids=lambda p: p.name)
async def test_matrix_cancel_or_abort_at_every_await(point, kind, pairshift_env, tmp_path, time_skipping_env):
    apply_small(tmp_path, policy=POLICIES[point.policy], cases=MATRIX_CASES)
    client = time_skipping_env.client
    gate = point.gate() if point.gate else None
    traffic = Traffic(BEHAVIOURS) if point.traffic else None
    try:
        async with migration_worker(client, traffic=traffic, gates=[gate] if gate else []) as tq:
            handle = await start(client, tq, **point.start)
            await point.reach(handle, time_skipping_env, gate)
            first, second = (cancel_it, abort_it) if kind == "cancel" else (abort_it, cancel_it)
            if point.ended_by == "other":  # the other ends it first; this one lands during its ending
                await second(handle)
                await gate.wait_entered()
            await first(handle)
            if gate:
                gate.open()
            end = await ending(handle)
    finally:
        if gate:
            gate.open()
        if traffic:
            traffic.close()
    assert_records_agree(end)
    cancelled_first = kind == "cancel" if point.ended_by != "other" else kind == "abort"
    if point.ended_by == "promote":
        assert (end.phase, end.cancelled) == ("promoted", False), end
    elif cancelled_first:
        assert end.cancelled and "the workflow was cancelled" in end.outcome, end
    else:
        assert not end.cancelled and "aborted by bob: pager went off" in end.outcome, end
    if end.phase == "rolled_back":
        with open_registry().session() as s:
            rollback = ledger.history(s, "support-triage")[-1]
        assert rollback.by == ("bob" if not cancelled_first else "carol"), rollback.by


async def cancel_it(handle: WorkflowHandle) -> None:
    await handle.cancel()
    await cancel_taken(handle)


async def abort_it(handle: WorkflowHandle) -> None:
    await abort(handle)
    await until_signal_taken(handle)


# --- gates keep watching while a person decides (item 4) ------------------------------------------------


async def test_a_breach_while_a_person_decides_rolls_back(pairshift_env, tmp_path, time_skipping_env):
    """Stage 0 passes, stage 1 waits for approval with stage 0's 20% still live; the candidate then breaks:
    the gate, still checking, rolls back without waiting for the person (before: an hour unwatched, then a
    timeout)."""
    from pairshift.sim.traffic import TrafficGenerator, profile_for

    apply_small(tmp_path, policy=QUICK)
    traffic = Traffic(BEHAVIOURS)
    try:
        async with migration_worker(time_skipping_env.client, traffic=traffic) as tq:
            handle = await start(time_skipping_env.client, tq)
            await to_canary(handle)
            await skip_until(time_skipping_env, handle, waiting_on(1), step_s=QUICK_CHECK_S)
            worse = {**BEHAVIOURS, "sim-fresh-2025-09": {**SAME, "error_rate": 0.3}}
            traffic.gen = TrafficGenerator(traffic.router, profile_for(worse, seed=11))
            end = await ending(handle)
    finally:
        traffic.close()
    assert end.phase == "rolled_back" and "while waiting for a decision" in end.outcome, end
    assert_records_agree(end)
