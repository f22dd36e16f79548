"""StageWatchWorkflow: the gate keeps checking a live canary stage while a person decides (issue 23 item 4).

MigrationWorkflow starts it as a child when it asks a person mid-canary (the previous stage's split stays
live meanwhile) and cancels it once the decision is made; it returns by itself only on a breach, which rolls
the migration back without waiting for the person.

Why a child and not timers in the migration's own decision loop (the first version, reverted): a decision
(an update or signal) and a check timer that land in the same workflow task must give the same commands live
and on replay, and they need not. Seen in tests/test_migration_crash.py after kill (c): the timer fired while
no worker ran and the second approval came with the workflow task that followed; the new worker applied the
firing in an activation of its own, before the approval and with the previous task's clock, so the loop found
no check due, re-armed a timer (id 7) and cancelled it when the approval came in the same task (nothing of it
reached the history). Replay applies the approval and the firing in one activation, approval first, and never
creates that timer: "Timer fired event did not have expected timer id 7, it was 8". No loop over a person's
decision can be deterministic across that split, since what it must do on a firing alone (check, re-arm)
differs from what it must do on a decision. So the frequent timers and checks live in a history no person
writes to, the migration waits on the decision as before (timers of hours), and the only new event its own
history gets is the child's end.

The loop never reads the clock: each wake is one ``check_every_minutes`` timer, counted, so a firing applied
early or late issues the same commands.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from pairshift.contracts.migration import StageWatchInput, StageWatchResult, check_stage
    from workflows import migration_rules as rules
    from workflows.migration_outbox import GATE


@workflow.defn
class StageWatchWorkflow:
    """Check a live stage every ``check_every_minutes``; return on a breach, run until cancelled otherwise."""

    @workflow.run
    async def run(self, w: StageWatchInput) -> StageWatchResult:
        every_m = w.check.canary.check_every_minutes
        elapsed, checks = w.check.elapsed_hours, 0
        while True:
            await workflow.sleep(timedelta(minutes=every_m))
            elapsed += every_m / 60
            check = await workflow.execute_activity(
                check_stage, w.check.model_copy(update={"elapsed_hours": elapsed}), **GATE
            )
            checks += 1
            step = rules.after_check(check, index=w.index, stage=w.stage, elapsed_hours=elapsed)
            if step.action == "roll_back":  # a pass or an inconclusive stage waits for the person
                return StageWatchResult(why=step.why, check=check, checks=checks, elapsed_hours=elapsed)
