"""MigrationWorkflow on the time-skipping server with the sim provider and simulated traffic: every way a
migration can end, and the rule that traffic is never left half-moved."""

from __future__ import annotations

import pytest
from migration_harness import (
    TEST_POLICY,
    Traffic,
    apply_small,
    migration_worker,
    skip_until,
    start,
    status,
    until_idle,
    wait_for,
    waiting_on,
)
from sqlmodel import select
from temporalio.client import WorkflowFailureError, WorkflowUpdateFailedError

from pairshift import ledger
from pairshift.contracts.migration import AbortSignal, ApproveSignal, DecideUpdate, RejectSignal
from pairshift.migration_records import audit_log
from pairshift.registry import open_registry
from pairshift.registry.models import Deployment, MigrationRow
from workflows.migration import MigrationWorkflow

SAME = {"error_rate": 0.005, "latency_median_ms": 400, "input_tokens": 200, "output_tokens": 60}
WORSE = {**SAME, "error_rate": 0.20}
BEHAVIOURS = {"sim-classic-2024-06": SAME, "sim-fresh-2025-09": SAME}


@pytest.fixture
def env(pairshift_env, tmp_path):
    apply_small(tmp_path)
    return open_registry()


def deployment() -> Deployment:
    with open_registry().session() as s:
        return s.get(Deployment, "support-triage")


def assert_baseline_only() -> None:
    dep = deployment()
    assert (dep.active_pair, dep.candidate_pair, dep.canary_percent, dep.migration) == (
        "support-triage@1+sim-classic-2024-06",
        None,
        0,
        None,
    )


def audit_events(handle) -> list[str]:
    with open_registry().session() as s:
        return [e.event for e in audit_log(s, handle.id)]


async def approve(handle, by: str, stage: int | None = None):
    return await handle.execute_update(
        MigrationWorkflow.decide, DecideUpdate(by=by, decision="approve", stage=stage)
    )


async def test_happy_path_promotes_after_every_stage(env, time_skipping_env):
    client = time_skipping_env.client
    traffic = Traffic(BEHAVIOURS)
    async with migration_worker(client, traffic=traffic) as tq:
        handle = await start(client, tq)
        st = await wait_for(handle, waiting_on(0))
        assert st.eval["gate"]["decision"] in ("pass", "inconclusive")
        assert set(st.eval["arms"]) == {"baseline", "prompt_only", "model_only", "joint"}
        answer = await approve(handle, "alice")
        assert answer.phase == "canary"
        # stage 0 runs on skipped time (min_hours, checks, traffic) until stage 1 asks (approval: true)
        await skip_until(time_skipping_env, handle, waiting_on(1))
        assert deployment().canary_percent == 20, "stage 0 still holds its split while stage 1 waits"
        await approve(handle, "bob", stage=1)
        result = await handle.result()
        st = await status(handle)  # queries need a worker, even on a closed workflow
    traffic.close()
    assert result.phase == "promoted", result.outcome
    assert (st.stage.index, st.stage.decision) == (2, "pass")
    dep = deployment()
    assert dep.active_pair == "support-triage@2+sim-fresh-2025-09" and dep.candidate_pair is None
    with open_registry().session() as s:
        rows = ledger.history(s, "support-triage")
        assert [r.pair for r in rows] == [
            "support-triage@1+sim-classic-2024-06",
            "support-triage@2+sim-fresh-2025-09",
        ]
        ev = rows[-1].evidence
        assert set(ev["eval"]["runs"]) == {"baseline", "prompt_only", "model_only", "joint"}
        assert [s["stage"] for s in ev["stages"]] == [0, 1, 2]
        assert all(s["elapsed_hours"] >= 0.004 for s in ev["stages"][:2]), "each stage held its min_hours"
        assert [a["by"] for a in ev["approvals"]] == ["alice", "bob"]
        assert s.exec(select(MigrationRow)).one().phase == "promoted"
    events = audit_events(handle)
    for e in ("started", "evaluating", "approve", "stage_started", "promoted"):
        assert e in events, e


async def test_higher_error_candidate_is_rolled_back_in_the_first_stage(env, time_skipping_env):
    client = time_skipping_env.client
    traffic = Traffic({"sim-classic-2024-06": SAME, "sim-fresh-2025-09": WORSE}, per_check=2000)
    async with migration_worker(client, traffic=traffic) as tq:
        handle = await start(client, tq)
        await wait_for(handle, waiting_on(0))
        await approve(handle, "alice")
        result = await handle.result()
    traffic.close()
    assert result.phase == "rolled_back" and "stage 0" in result.outcome and "breach" in result.outcome
    assert_baseline_only()
    for _ in range(100):  # the router serves the baseline to everyone
        traffic.router.refresh()
    assert {traffic.router.resolve(f"u{i}").variant for i in range(1000)} == {"control"}
    with open_registry().session() as s:
        assert ledger.history(s, "support-triage")[-1].reason.startswith("rolled back from support-triage@2")
    assert "baseline_restored" in audit_events(handle)


async def test_cancelling_during_the_canary_restores_the_baseline(pairshift_env, tmp_path, time_skipping_env):
    # The cancel reaches the workflow between two gate checks, never while an activity of its main task
    # runs: the time-skipping server wedges a workflow whose cancel crosses the completion of the activity
    # it cancels (FailedPrecondition "ACTIVITY_UNKNOWN", temporalio/sdk-java#2391; the real server carries
    # on), which hung this test until its timeout when a 3-second check met the cancel. Checks an hour
    # apart (time skips only while the test awaits the result) and a cancel sent once nothing is in flight
    # leave no such crossing.
    hourly = {**TEST_POLICY["canary"], "check_every_minutes": 60}
    hourly["stages"] = [
        {**s, "min_hours": 2, "max_hours": 4} if "min_hours" in s else s for s in hourly["stages"]
    ]
    apply_small(tmp_path, policy={**TEST_POLICY, "canary": hourly})
    client = time_skipping_env.client
    async with migration_worker(client, traffic=None) as tq:  # no traffic: the stage soaks
        handle = await start(client, tq)
        await wait_for(handle, waiting_on(0))
        await approve(handle, "alice")
        await wait_for(handle, lambda st: st.phase == "canary")
        assert deployment().canary_percent == 20
        await until_idle(handle)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    assert_baseline_only()
    events = audit_events(handle)
    assert "baseline_restored" in events and "rolled_back" in events


async def test_abort_restores_the_baseline(env, time_skipping_env):
    client = time_skipping_env.client
    async with migration_worker(client, traffic=None) as tq:
        handle = await start(client, tq)
        await wait_for(handle, waiting_on(0))
        await approve(handle, "alice")
        await wait_for(handle, lambda st: st.phase == "canary")
        await handle.signal(MigrationWorkflow.abort, AbortSignal(by="dave", reason="pager went off"))
        result = await handle.result()
    assert result.phase == "rolled_back" and "aborted by dave: pager went off" in result.outcome
    assert_baseline_only()


async def test_rejecting_a_stage_restores_the_baseline(env, time_skipping_env):
    client = time_skipping_env.client
    traffic = Traffic(BEHAVIOURS)
    async with migration_worker(client, traffic=traffic) as tq:
        handle = await start(client, tq)
        await wait_for(handle, waiting_on(0))
        await approve(handle, "alice")
        # let the first stage run to its end on skipped time, up to the stage-1 approval
        await skip_until(time_skipping_env, handle, waiting_on(1))
        await handle.signal(MigrationWorkflow.reject, RejectSignal(by="bob", comment="numbers look off"))
        result = await handle.result()
    traffic.close()
    assert result.phase == "rolled_back" and "rejected by bob at stage 1" in result.outcome
    assert_baseline_only()
    assert "reject" in audit_events(handle)


async def test_approval_timeout_rejects_and_moves_nothing(env, time_skipping_env):
    client = time_skipping_env.client
    async with migration_worker(client, traffic=None) as tq:
        handle = await start(client, tq)
        await wait_for(handle, waiting_on(0))
        result = await handle.result()  # time skips past reminders to the 1-hour timeout
        st = await status(handle)
    assert result.phase == "rejected" and "no decision within 1 hours" in result.outcome
    assert_baseline_only()
    assert [h.event for h in st.history][:4] == ["started", "evaluating", "eval", "awaiting_approval"]
    events = audit_events(handle)
    assert "rejected" in events


async def test_a_permanently_failing_activity_rolls_back(env, time_skipping_env):
    client = time_skipping_env.client
    async with migration_worker(client, fail_checks=True) as tq:
        handle = await start(client, tq)
        await wait_for(handle, waiting_on(0))
        await approve(handle, "alice")
        result = await handle.result()
    assert result.phase == "rolled_back" and "metrics store unreachable" in result.outcome
    assert_baseline_only()
    assert "baseline_restored" in audit_events(handle)


async def test_gate_checks_outlast_a_registry_outage_of_minutes(env, time_skipping_env):
    """Twelve failed checks in a row (about five minutes of retries): the stage holds, then passes."""
    client = time_skipping_env.client
    traffic = Traffic(BEHAVIOURS)
    async with migration_worker(client, traffic=traffic, fail_first_checks=12) as tq:
        handle = await start(client, tq)
        await wait_for(handle, waiting_on(0))
        await approve(handle, "alice")
        # the retries' backoff (about 5 minutes) and stage 0 run on skipped time
        await skip_until(time_skipping_env, handle, waiting_on(1), step_s=30)
        await approve(handle, "bob", stage=1)
        result = await handle.result()
    traffic.close()
    assert result.phase == "promoted", result.outcome


async def test_decide_refuses_with_the_reason(env, time_skipping_env):
    client = time_skipping_env.client
    async with migration_worker(client, traffic=None) as tq:
        handle = await start(client, tq)
        await wait_for(handle, waiting_on(0))
        cases = [
            (DecideUpdate(by="carol", decision="approve"), "separation of duties"),
            (DecideUpdate(by="mallory", decision="approve"), "not an approver"),
            (DecideUpdate(by="alice", decision="approve", stage=1), "stage 1 is not waiting"),
        ]
        for update, words in cases:
            with pytest.raises(WorkflowUpdateFailedError) as info:
                await handle.execute_update(MigrationWorkflow.decide, update)
            assert words in str(info.value.cause)
        # a UI signal that breaks the policy is ignored and audited
        await handle.signal(MigrationWorkflow.approve, ApproveSignal(by="mallory"))
        policy_two = await status(handle)
        assert policy_two.phase == "awaiting_approval" and policy_two.approvals == []
        await approve(handle, "alice")
        await wait_for(handle, lambda st: st.phase == "canary")
        await handle.signal(MigrationWorkflow.abort, AbortSignal(by="alice"))
        await handle.result()
        st = await status(handle)
    assert [(a.by, a.channel) for a in st.approvals] == [("alice", "cli")]
    events = audit_events(handle)
    assert "approve_ignored" in events


async def test_duplicate_vote_is_refused(pairshift_env, tmp_path, time_skipping_env):
    from migration_harness import TEST_POLICY

    policy = {**TEST_POLICY, "approvals": {**TEST_POLICY["approvals"], "required": 2}}
    apply_small(tmp_path, policy=policy)
    client = time_skipping_env.client
    async with migration_worker(client, traffic=None) as tq:
        handle = await start(client, tq)
        await wait_for(handle, waiting_on(0))
        first = await approve(handle, "alice")
        assert (first.approvals, first.required, first.phase) == (1, 2, "awaiting_approval")
        with pytest.raises(WorkflowUpdateFailedError) as info:
            await approve(handle, "alice")
        assert "alice already decided on stage 0" in str(info.value.cause)
        await handle.signal(MigrationWorkflow.abort, AbortSignal(by="alice"))
        result = await handle.result()
    assert result.phase == "rejected"
    assert_baseline_only()


async def test_failed_eval_gate_moves_nothing(pairshift_env, tmp_path, time_skipping_env):
    from migration_harness import TEST_POLICY

    apply_small(
        tmp_path,
        policy={**TEST_POLICY, "eval": {"epochs": 1, "max_regression": 0.02, "blocking": ["is-json"]}},
    )
    client = time_skipping_env.client
    async with migration_worker(client, traffic=None) as tq:
        handle = await start(client, tq, to_prompt=None)  # the old prompt on the new model: prose around JSON
        result = await handle.result()
    assert result.phase == "failed_eval" and "gate failed" in result.outcome
    assert_baseline_only()


async def test_invalid_request_fails_and_changes_nothing(env, time_skipping_env):
    client = time_skipping_env.client
    async with migration_worker(client, traffic=None) as tq:
        handle = await start(client, tq, to_model="gpt-nope")
        with pytest.raises(WorkflowFailureError) as info:
            await handle.result()
    assert "unknown model 'gpt-nope'" in str(info.value.cause)
    assert_baseline_only()
    with open_registry().session() as s:
        assert s.exec(select(MigrationRow)).all() == []


async def test_a_long_canary_continues_as_new_and_loses_nothing(env, time_skipping_env):
    """Every two gate checks the run hands over to a fresh one: the split, approvals, audit log and stage
    clock carry over, no stage starts twice, and the migration ends as it would have in one run."""
    client = time_skipping_env.client
    traffic = Traffic(BEHAVIOURS)
    async with migration_worker(client, traffic=traffic) as tq:
        handle = await start(client, tq, checks_per_run=2)
        first_run = (await handle.describe()).run_id
        await wait_for(handle, waiting_on(0))
        await approve(handle, "alice")
        await skip_until(time_skipping_env, handle, waiting_on(1))
        await approve(handle, "bob", stage=1)
        result = await handle.result()  # follows the continued runs
        st = await status(handle)
    traffic.close()
    assert result.phase == "promoted", result.outcome
    assert [h.event for h in st.history].count("continued_as_new") >= 2
    assert [(a.by, a.stage) for a in st.approvals] == [("alice", 0), ("bob", 1)]
    events = audit_events(handle)
    assert [e for e in events if e == "stage_started"] == ["stage_started"] * 3, "no stage started twice"
    with open_registry().session() as s:
        (row,) = s.exec(select(MigrationRow)).all()
        assert (row.run_id, row.phase) == (first_run, "promoted")
        assert ledger.history(s, "support-triage")[-1].evidence["run_id"] == first_run
    assert deployment().active_pair == "support-triage@2+sim-fresh-2025-09"
