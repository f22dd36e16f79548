"""The migration's outbox (issue 23 item 5): the handover never waits on a notice channel, what is undelivered
travels with it, and an audit event the registry refuses is reported instead of blocking the outbox.

Both failed on the code before ``workflow.patched("outbox-carries-undelivered")``: the handover waited for the
held notice (the new run never came while it was held), and a refused audit batch was retried without end
(the migration never ended).
"""

from __future__ import annotations

import asyncio
import threading

from migration_harness import (
    Traffic,
    apply_small,
    migration_worker,
    same_types,
    skip_until,
    start,
    wait_for,
)
from migration_harness import waiting_on as waiting
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.migration import record_audit_events
from activities.notices import send_notice
from pairshift.contracts.migration import AuditBatch, DecideUpdate, RefusedAttempt
from pairshift.contracts.notices import Notice
from pairshift.migration_records import audit_log
from pairshift.registry import open_registry
from workflows.migration import MigrationWorkflow

SAME = {"error_rate": 0.005, "latency_median_ms": 400, "input_tokens": 200, "output_tokens": 60}
ALIKE = {"sim-classic-2024-06": SAME, "sim-fresh-2025-09": SAME}
TOO_LONG = "value too long for the detail column"


async def decide(handle, by: str, decision: str = "approve") -> None:
    await handle.execute_update(MigrationWorkflow.decide, DecideUpdate(by=by, decision=decision))


def audit(workflow_id: str) -> list[tuple[str, str]]:
    with open_registry().session() as s:
        return [(e.event, e.detail.get("detail", "")) for e in audit_log(s, workflow_id)]


class HeldNotice:
    """``send_notice`` whose first delivery of stage 0's ``stage_started`` hangs (its channel is stuck) until
    released; records which run sent that notice each time."""

    def __init__(self) -> None:
        self.entered, self.released = threading.Event(), threading.Event()
        self.runs: list[str] = []

    def activity(self):
        @activity.defn(name="send_notice")
        def held(notice: Notice) -> list[str]:
            if notice.kind == "stage_started" and notice.stage == 0:
                self.runs.append(activity.info().workflow_run_id)
                if len(self.runs) == 1:
                    self.entered.set()
                    self.released.wait(120)
            return send_notice(notice)

        held.__annotations__ = same_types(send_notice)
        return held


async def release_time_held_by_a_closed_run(env) -> None:
    """The time-skipping server locks its clock while an activity runs and unlocks it when the activity ends;
    an activity still running when its run closes (the stuck notice, left behind by the handover) never
    unlocks it (temporalio/sdk-java#1138), so the rest of this test ran in real time (41-46 s, ~30 s of them
    the stages' real waits). Release that one lock after the handover. A server without the leak would then
    see one unlock too many and answer the next one with an error: it fails loudly, it cannot hide a wait."""
    from temporalio.api.testservice.v1 import UnlockTimeSkippingRequest

    await env.client.test_service.unlock_time_skipping(UnlockTimeSkippingRequest())


async def test_a_handover_does_not_wait_for_a_notice(pairshift_env, tmp_path, time_skipping_env):
    """Stage 0's notice is stuck in its channel when the canary continues as new: the handover goes ahead,
    carrying the undelivered notice, and the next run delivers it. (Before: the first run waited for the stuck
    attempt to time out and sent the notice again itself before handing over.)"""
    apply_small(tmp_path)
    client = time_skipping_env.client
    held = HeldNotice()
    traffic = Traffic(ALIKE)
    try:
        async with migration_worker(client, traffic=traffic, replace=[held.activity()]) as tq:
            handle = await start(client, tq, checks_per_run=1)
            await wait_for(handle, waiting(0))
            await decide(handle, "alice")
            assert await asyncio.to_thread(held.entered.wait, 60), "stage 0's notice was never sent"
            first = handle.first_execution_run_id
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 90
            while (await handle.describe()).run_id == first:  # the handover
                assert loop.time() < deadline, "no handover"
                await asyncio.sleep(0.1)
            held.released.set()
            await release_time_held_by_a_closed_run(time_skipping_env)
            await skip_until(time_skipping_env, handle, waiting(1), step_s=3)
            await decide(handle, "bob")
            result = await handle.result()
    finally:
        held.released.set()
        traffic.close()
    assert result.phase == "promoted", result.outcome
    assert held.runs[0] == first and len(held.runs) >= 2
    assert first not in held.runs[1:], "the first run waited for the stuck notice and sent it again itself"
    events = [e for e, _ in audit(handle.id)]
    assert events.count("continued_as_new") >= 1 and events.count("promoted") == 1


async def test_a_refused_audit_event_is_reported_and_the_rest_written(
    pairshift_env, tmp_path, time_skipping_env
):
    """The registry refuses one audit event for good (AuditRefused): the batch is split, every other event is
    written, the refused one is reported as ``audit_refused``, and the migration ends as it would have."""
    apply_small(tmp_path)
    client = time_skipping_env.client

    @activity.defn(name="record_audit_events")
    def refusing(batch: AuditBatch) -> int:
        if any(e.event == "approve_refused" for e in batch.events):
            raise ApplicationError(
                "value too long for the detail column", type="AuditRefused", non_retryable=True
            )
        return record_audit_events(batch)

    refusing.__annotations__ = same_types(record_audit_events)
    async with migration_worker(client, replace=[refusing]) as tq:
        handle = await start(client, tq)
        await wait_for(handle, waiting(0))
        await handle.signal(
            MigrationWorkflow.note_refusal,
            RefusedAttempt(
                by="mallory", decision="approve", reason="not an approver", stage=0, channel="cli"
            ),
        )
        await decide(handle, "bob", "reject")
        result = await asyncio.wait_for(handle.result(), 60)
    assert result.phase == "rejected", result.outcome
    events = audit(handle.id)
    names = [e for e, _ in events]
    assert "approve_refused" not in names
    assert ["reject", "rejected"] == [e for e in names if e in ("reject", "rejected")]
    refused = [d for e, d in events if e == "audit_refused"]
    assert len(refused) == 1 and "approve_refused" in refused[0] and "too long" in refused[0], events
