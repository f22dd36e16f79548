"""Decisions name their stage, and a promotion that committed but lost its answer (issue 23 item 6).

- An approve/reject signal carries the stage it was made for: one for an earlier stage (sent late, or by a
  script that read an old status) is ignored and audited with the reason, and the stage waiting still waits.
  Before ``workflow.patched("signals-carry-stage")`` the stale approval of stage 0 started stage 1.
- ``promote_pair`` commits and its answer is lost (the worker dies, the connection drops): the retry finds the
  deployment promoted by this migration and answers without a second ledger row; the migration is promoted.
"""

from __future__ import annotations

from migration_harness import (
    Traffic,
    apply_small,
    migration_worker,
    same_types,
    skip_until,
    start,
    wait_for,
    waiting_on,
)
from temporalio import activity

from activities.migration import promote_pair
from pairshift import ledger
from pairshift.contracts.migration import ApproveSignal, DecideUpdate, PromoteInput
from pairshift.migration_records import audit_log
from pairshift.registry import open_registry
from pairshift.registry.models import Deployment
from workflows.migration import MigrationWorkflow

SAME = {"error_rate": 0.005, "latency_median_ms": 400, "input_tokens": 200, "output_tokens": 60}
ALIKE = {"sim-classic-2024-06": SAME, "sim-fresh-2025-09": SAME}
CANDIDATE = "support-triage@2+sim-fresh-2025-09"


async def decide(handle, by: str) -> None:
    await handle.execute_update(MigrationWorkflow.decide, DecideUpdate(by=by, decision="approve"))


def audit(workflow_id: str) -> list[tuple[str, str | None, str]]:
    with open_registry().session() as s:
        return [(e.event, e.actor, e.detail.get("detail", "")) for e in audit_log(s, workflow_id)]


async def test_a_stale_signal_for_an_earlier_stage_is_ignored(pairshift_env, tmp_path, time_skipping_env):
    apply_small(tmp_path)
    client = time_skipping_env.client
    traffic = Traffic(ALIKE)
    try:
        async with migration_worker(client, traffic=traffic) as tq:
            handle = await start(client, tq)
            await wait_for(handle, waiting_on(0))
            await handle.execute_update(
                MigrationWorkflow.decide, DecideUpdate(by="alice", decision="approve")
            )
            await skip_until(time_skipping_env, handle, waiting_on(1))  # stage 0 on skipped time
            await handle.signal(MigrationWorkflow.approve, ApproveSignal(by="bob", stage=0))
            st = await wait_for(handle, lambda st: st.history[-1].event == "approve_ignored")
            assert st.phase == "awaiting_approval" and st.waiting.stage == 1, "the stale approval counted"
            await handle.signal(MigrationWorkflow.approve, ApproveSignal(by="bob", stage=1))
            result = await handle.result()
    finally:
        traffic.close()
    assert result.phase == "promoted", result.outcome
    ignored = [d for e, a, d in audit(handle.id) if e == "approve_ignored"]
    assert ignored == [
        "stale decision: stage 0 was decided already and stage 1 is waiting now "
        "(a decision counts only for the stage it names)"
    ]


async def test_a_promotion_that_lost_its_answer_is_promoted_once(pairshift_env, tmp_path, time_skipping_env):
    apply_small(tmp_path)
    client = time_skipping_env.client
    calls: list[bool] = []

    @activity.defn(name="promote_pair")
    def commits_then_loses_the_answer(inp: PromoteInput) -> bool:
        changed = promote_pair(inp)
        calls.append(changed)
        if len(calls) == 1:
            raise ConnectionError("the connection dropped after the commit")
        return changed

    commits_then_loses_the_answer.__annotations__ = same_types(promote_pair)
    traffic = Traffic(ALIKE)
    try:
        async with migration_worker(client, traffic=traffic, replace=[commits_then_loses_the_answer]) as tq:
            handle = await start(client, tq)
            await wait_for(handle, waiting_on(0))
            await handle.execute_update(
                MigrationWorkflow.decide, DecideUpdate(by="alice", decision="approve")
            )
            await skip_until(time_skipping_env, handle, waiting_on(1))  # stage 0 on skipped time
            await decide(handle, "bob")
            result = await handle.result()
    finally:
        traffic.close()
    assert result.phase == "promoted", result.outcome
    assert calls == [True, False], "the retry found it promoted and changed nothing"
    with open_registry().session() as s:
        dep = s.get(Deployment, "support-triage")
        assert (dep.active_pair, dep.migration, dep.canary_percent) == (CANDIDATE, None, 0)
        rows = ledger.history(s, "support-triage")
    assert [r.pair for r in rows].count(CANDIDATE) == 1, "one ledger row for the promotion"
    events = [e for e, _, _ in audit(handle.id)]
    assert events.count("promoted") == 1 and "rolled_back" not in events
