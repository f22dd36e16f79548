"""MigrationWorkflow: one durable migration of a deployment from its active pair to a target pair.

Contract (PRODUCT §8): notice -> evaluating (the 2x2, as the child EvalWorkflow) -> awaiting_approval ->
canary (stage by stage, each held for min_hours with durable timers and checked every
check_every_minutes against concurrent control) -> promoted | rolled_back | rejected | failed_eval.

Messages (:mod:`workflows.migration_messages`): signals ``approve``, ``reject``, ``pause``, ``resume``,
``abort``, ``promote_now`` (the Temporal UI path: never refused, but a signal that breaks the policy is
ignored and audited); update ``decide`` (the CLI and Slack path: its validator refuses an unknown approver,
the requester, a stage not waiting, a second vote); ``note_refusal`` (clients report a refused update so the
audit log has it); queries ``status`` and ``report``. Its types are in :mod:`pairshift.contracts.migration`,
its decisions in :mod:`workflows.migration_rules`.

Compensation always: once traffic has moved, every way out — gate breach, rejection, abort, cancellation,
an activity failing for good — restores 100% baseline before the workflow completes, and says why.
Since ``workflow.patched(CANCEL_SAFE_PATCH)`` (issue 23) this survives cancellation at every await: traffic
counts as moved before the split activity is scheduled; the activities that move traffic (and the one that
records the migration) are waited for through a cancel (``WAIT_CANCELLATION_COMPLETED``), so the workflow
knows what committed; a cancel that reaches an activity or the eval child is a cancel, not a failure; the
ending runs once, outside any except block and shielded from a further cancel. A cancelled migration
restores the baseline, records ``rolled_back`` (``rejected`` before traffic moved) and then ends CANCELED; a
cancel that arrives while the promotion commits finds it committed: the migration ends ``promoted``
(COMPLETED) and the audit log says ``cancel_too_late``. An abort during the eval cancels the eval child at
once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from pairshift.contracts.evals import EvalReport, EvalRequest
    from pairshift.contracts.gates import StageCheck
    from pairshift.contracts.migration import (
        AbortSignal,
        Approval,
        Decision,
        HistoryEvent,
        MigrationCarry,
        MigrationPlan,
        MigrationRequest,
        MigrationResult,
        Phase,
        PhaseInput,
        PrepareInput,
        PromoteInput,
        RestoreInput,
        SplitInput,
        StageCheckInput,
        StageOutcome,
        StageStatus,
        StageWatchInput,
        StageWatchResult,
        Waiting,
        check_stage,
        prepare_migration,
        promote_pair,
        record_migration_phase,
        restore_baseline,
        set_canary_split,
    )
    from pairshift.contracts.quality import JudgeStatus, StageEnd, StageQualityInput, stage_quality
    from pairshift.policy import Stage
    from workflows import migration_rules as rules
    from workflows.evals import EvalWorkflow
    from workflows.migration_messages import MigrationMessages
    from workflows.migration_outbox import (
        COMPENSATE,
        FINAL,
        GATE,
        MOVE,
        OUTBOX_PATCH,
        REGISTRY,
        RESTORE,
        MigrationOutbox,
    )
    from workflows.stage_watch import StageWatchWorkflow


# Compensation survives cancellation (issue 23): traffic-moving activities are waited for through a cancel,
# traffic counts as moved before the split is scheduled, a cancel that reached an activity or the child is a
# cancel, and _finish runs once, shielded, outside any except block. Histories from before replay the old run.
CANCEL_SAFE_PATCH = "cancel-safe-compensation"
# Gates keep watching the live split while a person decides mid-canary (issue 23 item 4): a StageWatchWorkflow
# child checks it, and its breach rolls back. (A first version, "gates-watch-decisions", checked from the
# decision loop itself and was reverted: see workflows/stage_watch.py.)
WATCH_DECISIONS_PATCH = "watch-stage-during-decisions"
# Shadow stages (issue 17 item 3): a stage {shadow: P} sets a 0% split that mirrors P% of units' control
# requests to the candidate, and its checks judge the mirrored pairs. Asked only for a shadow stage, so the
# histories of policies without one carry no marker.
SHADOW_PATCH = "shadow-stage"
# A live stage that ends (passes, breaches, or asks a human) posts its quality figures in the migration's
# thread (issue 17 item 4): the stage_quality activity reads them, a stage_quality notice carries them. A
# breach's figures are read after the baseline is restored, so they never delay the rollback.
STAGE_QUALITY_PATCH = "stage-quality-notice"
# A shadow stage's end posts its figures too (issue 17 item 4): the pairwise win rate with its interval and
# side-by-side examples. Asked only when a shadow stage ends, so histories without one carry no marker.
SHADOW_QUALITY_PATCH = "shadow-stage-quality"
# How long a stage's figures may take: they are a notice, so a registry that cannot answer skips them. A
# few indexed reads take under a second: a short start-to-close means a killed worker costs seconds.
QUALITY = dict(
    start_to_close_timeout=timedelta(seconds=20),
    schedule_to_close_timeout=timedelta(minutes=2),
    retry_policy=RetryPolicy(maximum_attempts=3, maximum_interval=timedelta(seconds=30)),
)


class _ContinueAsNew(Exception):
    """A long stage hands over to a fresh run (between two gate checks, never while a human decides)."""

    def __init__(self, stage_index: int, since: datetime) -> None:
        super().__init__(f"continue as new at stage {stage_index}")
        self.stage_index, self.since = stage_index, since


class _Stop(Exception):
    """Ends the migration early: rejected, aborted, breached, timed out."""

    def __init__(self, phase: Phase, why: str) -> None:
        super().__init__(why)
        self.phase, self.why = phase, why


@workflow.defn
class MigrationWorkflow(MigrationMessages, MigrationOutbox):
    """One migration of a deployment to a target pair: notice, eval, approval, staged canary, promotion.

    Takes a :class:`MigrationRequest`; returns a :class:`MigrationResult` whose phase is promoted,
    rolled_back, rejected, failed_eval or dry_run. Waits on approvals (``decide`` update, ``approve`` and
    ``reject`` signals) and on durable stage timers; ``pause``, ``resume``, ``abort`` and ``promote_now``
    steer the canary. The module docstring states the contract; :mod:`workflows.migration_rules` decides.
    """

    def __init__(self) -> None:
        self.req: MigrationRequest | None = None
        self.plan: MigrationPlan | None = None
        self.phase: Phase = "notice"
        self.outcome: str | None = None
        self.stage: StageStatus | None = None
        self.waiting: Waiting | None = None
        # decision key (start-k to start stage k, pass-k to pass it) -> voter -> decision
        self.votes: dict[str, dict[str, Decision]] = {}
        self.approvals: list[Approval] = []
        self.history: list[HistoryEvent] = []
        self.eval_report: EvalReport | None = None
        self.paused = False
        self.abort_req: AbortSignal | None = None
        self.promote_now_by: str | None = None
        self.traffic_moved = False
        self.stage_log: list[StageOutcome] = []
        self._init_outbox()
        self._origin_run_id: str | None = None  # the first run's id, kept across continue-as-new
        self._checks = 0  # gate checks in this run
        self._runs = 1
        self._safe = True  # CANCEL_SAFE_PATCH; run() sets it from workflow.patched
        self._ending: tuple[Phase, str] | None = None  # the first ending stands (since CANCEL_SAFE_PATCH)
        self._finished: set[str] = set()  # which of _finish's one-time steps are done
        self._ended_by: str | None = None  # who ended it (abort, reject), named on the rollback ledger row
        self._live: tuple[int, Stage, datetime] | None = None  # the stage whose split is live, and since when
        self._watches = 0  # StageWatchWorkflow children started by this run (their ids count them)
        self._quality_due: StageQualityInput | None = None  # a breached stage's figures, read once restored
        self.judge_status: JudgeStatus | None = None  # the canary judge's spend, as the last check read it

    # ------------------------------------------------------------------ run

    @workflow.run
    async def run(self, req: MigrationRequest) -> MigrationResult:
        self.req = req
        self._refuse_forged_start(req)
        self._origin_run_id = req.resume.origin_run_id if req.resume else workflow.info().run_id
        if req.resume:
            self._restore(req.resume)
        self._safe = workflow.patched(CANCEL_SAFE_PATCH)
        self._outbox_carry = self._safe and workflow.patched(OUTBOX_PATCH)
        outbox = self._start_outbox()
        if not self._safe:
            return await self._run_before_cancel_safe(req, outbox)
        handover: _ContinueAsNew | None = None
        failure: ActivityError | ChildWorkflowError | None = None
        ending: _Stop | None = None
        cancelled = False
        try:
            ending = await self._migrate()
        except _ContinueAsNew as exc:
            handover = exc
        except asyncio.CancelledError:
            cancelled = True
        except (ActivityError, ChildWorkflowError) as exc:
            if is_cancelled_exception(exc) or self._cancel_requested():
                cancelled = True  # a cancel that reached an activity or the eval child is still a cancel
            else:
                failure = exc
        # Nothing below runs inside an except block: a further cancel cannot escape the compensation.
        if handover is not None:
            self._event("continued_as_new", f"run {self._runs + 1} holds stage {handover.stage_index}")
            # the audit log and notices: flushed before the handover, or (OUTBOX_PATCH) carried by it
            await self._shielded(self._close(outbox, handover=True))
            if not self._cancel_requested():
                workflow.continue_as_new(req.model_copy(update={"resume": self._carry(handover)}))
            cancelled, outbox = True, self._reopen_outbox()  # cancelled during the handover: compensate here
        if failure is not None and self.plan is None:  # invalid request: nothing was recorded or moved
            raise ApplicationError(rules.root_cause(failure), type="InvalidMigration", non_retryable=True)
        if cancelled:
            reason = workflow.cancellation_reason()
            ending = _Stop(
                rules.stopped_phase(self.traffic_moved),
                "the workflow was cancelled" + (f": {reason}" if reason else ""),
            )
        elif failure is not None:
            ending = _Stop(
                rules.failed_phase(self.phase, self.traffic_moved),
                f"{rules.root_cause(failure)} (failed for good)",
            )
        if ending is not None and self.plan is not None:
            await self._shielded(self._finish(ending.phase, ending.why))
        await self._shielded(self._close(outbox))
        if cancelled:
            raise asyncio.CancelledError("the workflow was cancelled; " + (self.outcome or "nothing moved"))
        return self._result()

    async def _run_before_cancel_safe(
        self, req: MigrationRequest, outbox: list[asyncio.Task]
    ) -> MigrationResult:
        """The run as recorded before CANCEL_SAFE_PATCH: histories written by that code replay here."""
        try:
            await self._migrate_before_cancel_safe()
        except _ContinueAsNew as handover:
            self._event("continued_as_new", f"run {self._runs + 1} holds stage {handover.stage_index}")
            await self._close(outbox)  # the audit log and notices are flushed before the handover
            workflow.continue_as_new(req.model_copy(update={"resume": self._carry(handover)}))
        except asyncio.CancelledError:
            await self._finish(rules.stopped_phase(self.traffic_moved), "the workflow was cancelled")
            await self._close(outbox)
            raise
        except (ActivityError, ChildWorkflowError) as exc:
            if self.plan is None:  # invalid request: nothing was recorded or moved
                raise ApplicationError(
                    rules.root_cause(exc), type="InvalidMigration", non_retryable=True
                ) from None
            phase = rules.failed_phase(self.phase, self.traffic_moved)
            await self._finish(phase, f"{rules.root_cause(exc)} (failed for good)")
        await self._close(outbox)
        return self._result()

    def _result(self) -> MigrationResult:
        return MigrationResult(
            id=workflow.info().workflow_id,
            deployment=self.req.deployment,
            phase=self.phase,
            from_pair=self.plan and self.plan.from_pair,
            to_pair=self.plan and self.plan.to_pair,
            outcome=self.outcome or "",
        )

    async def _migrate(self) -> _Stop | None:
        """The process: prepare, evaluate, approve, canary stage by stage, promote; returns how it ended.

        Raises only what ends it without a decision of its own (a cancel, an activity failing for good, a
        handover); :meth:`run` then finishes it outside any except block.
        """
        resume = self.req.resume
        try:
            if resume is None:
                await self._prepare()
                await self._evaluate()
                if self.req.dry_run:
                    self._check_abort()
                    return _Stop("dry_run", "dry run: evaluated, nothing moved")
                await self._decision(0, "approve the canary", key="start-0")
                await self._canary()
            else:  # a continued run holds the stage its predecessor was in
                await self._canary(start=resume.stage_index, resumed_since=resume.stage_since)
            return _Stop("promoted", await self._promote())
        except _Stop as stop:
            return stop

    async def _migrate_before_cancel_safe(self) -> None:
        resume = self.req.resume
        try:
            if resume is None:
                await self._prepare()
                await self._evaluate()
                if self.req.dry_run:
                    return await self._finish("dry_run", "dry run: evaluated, nothing moved")
                await self._decision(0, "approve the canary", key="start-0")
                await self._canary()
            else:  # a continued run holds the stage its predecessor was in
                await self._canary(start=resume.stage_index, resumed_since=resume.stage_since)
            await self._finish("promoted", await self._promote())
        except _Stop as stop:
            await self._finish(stop.phase, stop.why)

    # ------------------------------------------------------------------ phases

    async def _prepare(self) -> None:
        """Resolve the request into the plan (an invalid one fails here, before anything is recorded)."""
        req, info = self.req, workflow.info()
        self.plan = await workflow.execute_activity(
            prepare_migration,
            PrepareInput.of(req, workflow_id=info.workflow_id, run_id=info.run_id),
            **(MOVE if self._safe else REGISTRY),
        )
        self._check_cancel()  # the migration is recorded: a cancel that waited for it finishes it
        self._event(
            "started",
            f"{self.plan.from_pair} -> {self.plan.to_pair} ({req.reason}) by {req.requested_by}",
            actor=req.requested_by,
        )
        self._notify(
            "migration_started",
            f"Migration of {req.deployment} started: {self.plan.from_pair} -> "
            f"{self.plan.to_pair} ({req.reason}, requested by {req.requested_by})",
        )

    async def _set_phase(self, phase: Phase, **summary: Any) -> None:
        self.phase = phase
        self._event(phase, "phase changed")
        await workflow.execute_activity(
            record_migration_phase,
            PhaseInput(run_id=self._origin_run_id, phase=phase, summary=summary or None),
            **REGISTRY,
        )

    async def _evaluate(self) -> None:
        await self._set_phase("evaluating")
        pol = self.plan.policy
        request = EvalRequest(  # the plan flows on: the eval runs the pairs and dataset resolved at the start
            deployment=self.plan.deployment,
            from_model=self.plan.from_model,
            to_model=self.plan.to_model,
            to_prompt=self.plan.to_prompt,
            dataset=self.plan.dataset,
            epochs=pol.eval.epochs,
            migration=workflow.info().workflow_id,
            requested_by=self.req.requested_by,
            eval_policy=pol.eval,
        )
        child_id = f"{workflow.info().workflow_id}-eval-{workflow.info().run_id[:8]}"
        if self._safe:
            report = await self._eval_child(request, child_id)
        else:
            report = await workflow.execute_child_workflow(EvalWorkflow.run, request, id=child_id)
        self.eval_report = report
        gate = report.gate
        self._event("eval", f"gate {gate.decision}: " + "; ".join(gate.reasons[:3]))
        self._notify(
            "eval_summary",
            f"Eval of {self.plan.to_pair}: gate {gate.decision}",
            text="\n".join(gate.reasons),
            facts={"gate": gate.decision, "report_id": report.report_id},
            asks=gate.decision != "fail" and not self.req.dry_run,
            stage=0,
        )
        await workflow.execute_activity(
            record_migration_phase,
            PhaseInput(
                run_id=self._origin_run_id,
                phase=self.phase,
                summary={"gate": gate.decision, "report_id": report.report_id},
            ),
            **REGISTRY,
        )
        if gate.decision == "fail":
            raise _Stop("failed_eval", "eval gate failed: " + "; ".join(gate.reasons))

    async def _eval_child(self, request: EvalRequest, child_id: str) -> EvalReport:
        """The eval child (since CANCEL_SAFE_PATCH): an abort cancels it at once, and so does a cancel."""
        child = await workflow.start_child_workflow(EvalWorkflow.run, request, id=child_id)
        try:
            await workflow.wait_condition(lambda: child.done() or self._aborting())
        except asyncio.CancelledError:
            child.cancel()
            await self._shielded(self._settle(child))
            raise
        if not child.done():  # aborted: stop spending on the arms
            child.cancel()
            await self._shielded(self._settle(child))
            self._check_abort()
        report = await child
        self._check_cancel()
        return report

    @staticmethod
    async def _settle(child: Any) -> None:
        try:
            await child
        except (ChildWorkflowError, asyncio.CancelledError):
            pass

    async def _decision(self, stage: int, why: str, *, key: str) -> None:
        """Wait for approvals of ``key`` (start-k or pass-k) with reminders; a timeout rejects."""
        if self._safe:
            self._check_abort()  # no approval asked for after an abort
            try:
                return await self._decide_on(stage, why, key=key)
            finally:
                self.waiting = None  # however the wait ends, no late vote is taken for it
        return await self._decide_on(stage, why, key=key)

    async def _decide_on(self, stage: int, why: str, *, key: str, watch: Any = None) -> None:
        if watch is None and self._safe and self.traffic_moved and self._live:
            if workflow.patched(WATCH_DECISIONS_PATCH):
                return await self._decide_watching(stage, why, key=key)
        ap = self.plan.policy.approvals
        self.waiting = Waiting(stage=stage, key=key, why=why, since=workflow.now())
        previous = self.phase
        self._notify(
            "approval_requested", f"{self.req.deployment}: {why} (stage {stage})", asks=True, stage=stage
        )
        await self._set_phase("awaiting_approval")
        deadline = workflow.now() + timedelta(hours=ap.timeout_hours)
        while (verdict := rules.tally(self.votes.get(key, {}), ap.required)) is None:
            left = (deadline - workflow.now()).total_seconds() / 3600
            if left <= 0:
                raise _Stop(
                    rules.stopped_phase(self.traffic_moved),
                    f"no decision within {ap.timeout_hours:g} hours: rejected by timeout",
                )
            if await self._wait(
                lambda: (
                    rules.tally(self.votes.get(key, {}), ap.required) is not None
                    or self._aborting()
                    or (watch is not None and watch.done())
                ),
                hours=min(ap.remind_every_hours, left),
            ):
                self._check_abort()
                if watch is not None and watch.done():
                    self._watch_ended(watch)
                continue
            if (deadline - workflow.now()).total_seconds() > 0:
                self._notify(
                    "approval_reminder",
                    f"Reminder: {self.req.deployment} waits for a decision on stage {stage} ({why})",
                    asks=True,
                    stage=stage,
                )
        self.waiting = None
        if verdict == "rejected":
            by = rules.rejecter(self.votes[key])
            self._ended_by = self._ended_by or by
            raise _Stop(rules.stopped_phase(self.traffic_moved), f"rejected by {by} at stage {stage}")
        if previous == "canary":
            await self._set_phase("canary")

    async def _decide_watching(self, stage: int, why: str, *, key: str) -> None:
        """A decision mid-canary (since WATCH_DECISIONS_PATCH): the stage whose split is live stays watched by
        a StageWatchWorkflow child while the person decides, and its breach rolls back without waiting for
        them. The wait itself is :meth:`_decide_on`'s (see workflows/stage_watch.py for why a child)."""
        k, live, since = self._live
        self._watches += 1
        info = workflow.info()
        watch = await workflow.start_child_workflow(
            StageWatchWorkflow.run,
            StageWatchInput(
                check=StageCheckInput(
                    deployment=self.req.deployment,
                    migration=self._split_key(),
                    since=since,
                    percent=live.percent,
                    canary=self.plan.policy.canary,
                    elapsed_hours=self.stage.elapsed_hours,
                    min_hours=live.min_hours,
                    shadow=self._shadow_of(live),
                ),
                index=k,
                stage=live,
            ),
            id=f"{info.workflow_id}-watch-{info.run_id[:8]}-{self._watches}",
        )
        stopped = False
        try:
            await self._decide_on(stage, why, key=key, watch=watch)
        finally:
            if not watch.done():  # decided, aborted, timed out or cancelled: the watch has no more to do
                stopped = True
                watch.cancel()
                await self._shielded(self._settle(watch))
        if not stopped:  # it ended by itself in the workflow task that brought the decision
            self._watch_ended(watch)

    def _watch_ended(self, watch: Any) -> None:
        """A watch that returned by itself breached (one that failed for good raises ChildWorkflowError)."""
        try:
            breach: StageWatchResult = watch.result()
        except ChildWorkflowError:
            if self._cancel_requested():
                return  # cancelled with the workflow: the cancel is what ends it
            raise
        self.stage.elapsed_hours = breach.elapsed_hours
        self._record_check(breach.check, rules.stage_max_hours(self._live[1]))
        k, live, since = self._live
        self._quality_due = self._stage_quality_input(k, live, since, "breach", breach.why)
        raise _Stop("rolled_back", f"{breach.why} (while waiting for a decision)")

    async def _canary(self, start: int = 0, resumed_since: datetime | None = None) -> None:
        stages = self.plan.policy.canary.stages
        for k, stage in enumerate(stages):
            if k < start:
                continue
            if self.promote_now_by:
                self._event("promote_now", f"remaining stages skipped by {self.promote_now_by}")
                return
            if k == start and resumed_since is not None:
                since = resumed_since  # a continued run holds the stage it was in; the split never moved
            else:
                since = await self._start_stage(k, stage)
            self._live = (k, stage, since)
            decision = await self._hold(k, stage, since)
            self.stage_log.append(
                StageOutcome(
                    stage=k,
                    percent=stage.percent,
                    decision=decision,
                    elapsed_hours=round(self.stage.elapsed_hours, 4),
                    samples=self.stage.samples,
                )
            )
            self._notify(
                "stage_passed",
                f"{self.req.deployment}: stage {k} ({stage.label}) {decision}",
                stage=k,
                facts={"percent": stage.percent, "samples": self.stage.samples},
            )

    async def _start_stage(self, k: int, stage: Stage) -> datetime:
        if stage.approval and k > 0:
            await self._decision(k, f"start stage {k} ({stage.label})", key=f"start-{k}")
        shadow = self._shadow_of(stage)
        if self._safe:
            self._check_abort()  # an abort or cancel that came during the approval moves nothing
            self.traffic_moved = True  # before scheduling: an attempt may commit whatever the workflow sees
        since = await workflow.execute_activity(
            set_canary_split,
            SplitInput(
                deployment=self.req.deployment,
                migration=self._split_key(),
                prompt=self.plan.to_prompt,
                model=self.plan.to_model,
                percent=stage.percent,
                shadow=shadow or 0.0,
            ),
            **(MOVE if self._safe else REGISTRY),
        )
        self.traffic_moved = True
        self._check_cancel()  # a cancel that waited for the split: the split is live, compensate
        self.stage = StageStatus(
            index=k,
            percent=stage.percent,
            started_at=since,
            min_hours=stage.min_hours,
            max_hours=stage.max_hours,
            shadow=shadow,
        )
        if self.phase != "canary":
            await self._set_phase("canary")
        if shadow is None:
            self._event("stage_started", f"stage {k}: {stage.percent:g}% to {self.plan.to_pair}")
            self._notify(
                "stage_started",
                f"{self.req.deployment}: stage {k} started, {stage.percent:g}% on {self.plan.to_pair}",
                stage=k,
                facts={"percent": stage.percent},
            )
        else:
            said = f"{shadow:g}% of units' requests mirrored to {self.plan.to_pair}, none served by it"
            self._event("stage_started", f"shadow stage {k}: {said}")
            self._notify(
                "stage_started",
                f"{self.req.deployment}: shadow stage {k} started, {said}",
                stage=k,
                facts={"percent": 0, "shadow": shadow},
            )
        return since

    async def _hold(self, k: int, stage: Stage, since: datetime) -> str:
        """Hold the stage, checking every check_every_minutes: breach rolls back, pass moves on."""
        canary_pol = self.plan.policy.canary
        every_h = canary_pol.check_every_minutes / 60
        max_h = rules.stage_max_hours(stage)
        while True:
            t0 = workflow.now()
            await self._wait(
                lambda: self._aborting() or self.paused or bool(self.promote_now_by), hours=every_h
            )
            self.stage.elapsed_hours += (workflow.now() - t0).total_seconds() / 3600
            self._check_abort()
            if self.promote_now_by:
                return f"promoted now by {self.promote_now_by}"
            if self.paused:
                await self._hold_paused(k, canary_pol.max_pause_hours)
                continue
            check = await workflow.execute_activity(
                check_stage,
                StageCheckInput(
                    deployment=self.req.deployment,
                    migration=self._split_key(),
                    since=since,
                    percent=stage.percent,
                    canary=canary_pol,
                    elapsed_hours=self.stage.elapsed_hours,
                    min_hours=stage.min_hours,
                    shadow=self._shadow_of(stage),
                ),
                **GATE,
            )
            self._record_check(check, max_h)
            step = rules.after_check(check, index=k, stage=stage, elapsed_hours=self.stage.elapsed_hours)
            await self._stage_ended(k, stage, since, step.action, step.why)
            if step.action == "roll_back":
                raise _Stop("rolled_back", step.why)
            if step.action == "pass":
                return "passed"
            if step.action == "ask":
                await self._decision(k, step.why, key=f"pass-{k}")
                return "passed by a human decision"
            self._checks += 1
            # patched: a run recorded before continue-as-new existed keeps scheduling timers where it did
            if rules.hands_over(
                checks=self._checks,
                checks_per_run=self.req.checks_per_run,
                suggested=workflow.info().is_continue_as_new_suggested(),
                busy=self._aborting() or bool(self.promote_now_by) or self.paused,
            ) and workflow.patched("continue-as-new"):
                raise _ContinueAsNew(k, since)

    async def _hold_paused(self, k: int, limit: float | None) -> None:
        """Wait out a pause; one that lasts ``limit`` hours (canary.max_pause_hours) ends by asking a person
        whether the stage carries on (a rejection, or no answer in time, rolls back)."""
        self.stage.paused = True
        patched = limit is not None and workflow.patched("pause-limit")  # asked only where it can matter
        if patched:
            resumed = await self._wait(lambda: not self.paused or self._aborting(), hours=limit)
        else:
            await workflow.wait_condition(lambda: not self.paused or self._aborting())
            resumed = True
        self.stage.paused = False
        self._check_abort()
        if not resumed:
            self.paused = False
            self._event("pause_expired", f"stage {k} paused for {limit:g} hours: a person decides")
            await self._decision(
                k,
                f"stage {k} was paused for {limit:g} hours: carry on with it?",
                key=f"pause-{k}-{workflow.now().isoformat()}",
            )

    async def _stage_ended(self, k: int, stage: Stage, since: datetime, action: str, why: str) -> None:
        """A gate check that ends the stage posts its figures (since STAGE_QUALITY_PATCH): a pass or a
        question to a human at once, a breach once the baseline is restored (:meth:`_finish`)."""
        ended: dict[str, StageEnd] = {"roll_back": "breach", "pass": "passed", "ask": "asks"}
        if action not in ended:
            return
        due = self._stage_quality_input(k, stage, since, ended[action], why)
        if due is not None and action == "roll_back":
            self._quality_due = due
        elif due is not None:
            await self._post_stage_quality(due)

    def _stage_quality_input(
        self, k: int, stage: Stage, since: datetime, ended: StageEnd, why: str
    ) -> StageQualityInput | None:
        """What the stage_quality activity reads of a stage that ended now; None before the patch (a shadow
        stage: before SHADOW_QUALITY_PATCH) or when the figures are not pairshift's own (canary.source
        prometheus)."""
        canary = self.plan.policy.canary
        if canary.source != "builtin":
            return None
        if stage.shadow is not None:  # histories of shadow stages before SHADOW_QUALITY_PATCH posted none
            if self._shadow_of(stage) is None or not workflow.patched(SHADOW_QUALITY_PATCH):
                return None
        elif not workflow.patched(STAGE_QUALITY_PATCH):
            return None
        return StageQualityInput(
            deployment=self.req.deployment,
            migration=self._split_key(),
            index=k,
            percent=stage.percent,
            since=since,
            until=workflow.now(),
            ended=ended,
            why=why,
            judge=canary.judge.model if canary.judge else None,
            judge_cap_usd=canary.judge.max_cost_usd_per_day if canary.judge else None,
            shadow=stage.shadow,
        )

    async def _post_stage_quality(self, due: StageQualityInput) -> None:
        """Read the stage's figures and post them in the thread; a registry that cannot answer skips them."""
        try:
            quality = await workflow.execute_activity(stage_quality, due, **QUALITY)
        except ActivityError as exc:
            if is_cancelled_exception(exc):
                raise
            self._event("stage_quality_skipped", f"stage {due.index}: {rules.root_cause(exc)}")
            return
        said = {"breach": "breached its gate", "passed": "passed its gate", "asks": "asks a human"}
        share = f"{due.percent:g}%" if due.shadow is None else f"shadow {due.shadow:g}%"
        self._notify(
            "stage_quality",
            f"{self.req.deployment}: stage {due.index} ({share}) {said.get(due.ended, due.ended)}: "
            "quality figures",
            stage=due.index,
            quality=quality,
        )

    def _record_check(self, check: StageCheck, max_h: float) -> None:
        if check.judge is not None:
            self.judge_status = check.judge
        self.stage.samples = dict(check.samples)
        self.stage.decision = check.decision
        self.stage.gate = {
            "decision": check.decision,
            "reasons": check.reasons,
            "min_samples": check.min_samples,
        }
        self.stage.time_left_hours = rules.time_left(self.stage.min_hours, max_h, self.stage.elapsed_hours)

    async def _promote(self) -> str:
        evidence = {
            "run_id": self._origin_run_id,
            "eval": rules.eval_evidence(self.eval_report),
            "stages": [s.model_dump(mode="json") for s in self.stage_log],
            "approvals": [a.model_dump(mode="json") for a in self.approvals],
        }
        await workflow.execute_activity(
            promote_pair,
            PromoteInput(
                deployment=self.req.deployment,
                migration=self._split_key(),
                prompt=self.plan.to_prompt,
                model=self.plan.to_model,
                by=self.req.requested_by,
                reason=self.req.reason,
                evidence=evidence,
            ),
            **(MOVE if self._safe else REGISTRY),
        )
        self.traffic_moved = False  # the new pair is the baseline now: nothing to compensate
        if self._safe and self._cancel_requested():
            self._event("cancel_too_late", "the promotion had committed when the cancel arrived: it stands")
        return f"{self.plan.to_pair} is the active pair of {self.req.deployment}"

    async def _finish(self, phase: Phase, why: str) -> None:
        """The one way out: compensate if traffic moved, then record, audit and notify the outcome.

        Idempotent: the first ending's phase and reason stand; the restore, the terminal event, the terminal
        record and the notice each happen once, whatever fails and whoever calls again. :meth:`run` calls it
        shielded, outside any except block, so a further cancel cannot interrupt it.
        """
        if not self._safe:
            return await self._finish_before_cancel_safe(phase, why)
        if self._ending is None:
            self._ending = (phase, why)
        phase, why = self._ending
        if self.traffic_moved:
            await self._restore_baseline(why)
        if self._quality_due is not None:  # a breached stage's figures, before the outcome's notice
            due, self._quality_due = self._quality_due, None
            await self._post_stage_quality(due)
        self.waiting = None
        if "event" not in self._finished:
            self._finished.add("event")
            self.phase, self.outcome = phase, why
            self._event(phase, why)
        if self.plan is None:
            return
        if "record" not in self._finished:
            self._finished.add("record")
            try:
                await workflow.execute_activity(
                    record_migration_phase,
                    PhaseInput(
                        run_id=self._origin_run_id, phase=phase, summary={"outcome": why}, finished=True
                    ),
                    **FINAL,
                )
            except ActivityError as exc:  # refused for good: the audit log says so, the notice still goes
                self._event(
                    "record_failed", f"the terminal phase {phase} was not recorded: {rules.root_cause(exc)}"
                )
        if "notice" not in self._finished:
            self._finished.add("notice")
            self._notify(rules.notice_kind(phase), f"{self.req.deployment}: {phase.replace('_', ' ')}: {why}")

    async def _restore_baseline(self, why: str) -> None:
        """100% back on the baseline (since CANCEL_SAFE_PATCH): waited for, retried, never dropped."""
        try:
            changed = await workflow.execute_activity(
                restore_baseline,
                RestoreInput(
                    deployment=self.req.deployment,
                    migration=self._split_key(),
                    reason=why,
                    by=self._ended_by or self.req.requested_by,
                    evidence={
                        "run_id": self._origin_run_id,
                        "stages": [s.model_dump(mode="json") for s in self.stage_log],
                    },
                ),
                **RESTORE,
            )
        except ActivityError as exc:  # cannot succeed (the deployment is gone): loud, paged, recorded
            msg = f"the baseline could not be restored: {rules.root_cause(exc)}"
            self._event("restore_failed", msg)
            self._notify("rolled_back", f"{self.req.deployment}: RESTORE FAILED, act now: {msg}")
            self.traffic_moved = False
            self._ending = (self._ending[0], f"{self._ending[1]}; {msg}")
            return
        self.traffic_moved = False
        if changed:
            self._event("baseline_restored", f"100% on {self.plan.from_pair}")
        else:  # the split never took effect, or another migration owns it: nothing of this one was live
            self._event(
                "baseline_unchanged", f"nothing of this migration was live; 100% on {self.plan.from_pair}"
            )

    async def _finish_before_cancel_safe(self, phase: Phase, why: str) -> None:
        if self.traffic_moved:
            await workflow.execute_activity(
                restore_baseline,
                RestoreInput(
                    deployment=self.req.deployment,
                    migration=self._split_key(),
                    reason=why,
                    by=self.req.requested_by,
                    evidence={
                        "run_id": self._origin_run_id,
                        "stages": [s.model_dump(mode="json") for s in self.stage_log],
                    },
                ),
                **COMPENSATE,
            )
            self.traffic_moved = False
            self._event("baseline_restored", f"100% on {self.plan.from_pair}")
        self.phase, self.outcome, self.waiting = phase, why, None
        self._event(phase, why)
        if self.plan is not None:
            await workflow.execute_activity(
                record_migration_phase,
                PhaseInput(run_id=self._origin_run_id, phase=phase, summary={"outcome": why}, finished=True),
                **REGISTRY,
            )
            self._notify(rules.notice_kind(phase), f"{self.req.deployment}: {phase.replace('_', ' ')}: {why}")

    # ------------------------------------------------------------------ helpers

    def _refuse_forged_start(self, req: MigrationRequest) -> None:
        """A start carrying ``resume`` or an inline ``policy`` fails at once: nothing recorded or moved.

        The patch is asked only when the input is refused, so other histories carry no marker; histories
        recorded before it (none of which was refused) replay through the old path."""
        info = workflow.info()
        why = rules.refuse_start(
            req, continued_run_id=info.continued_run_id, first_run_id=info.first_execution_run_id
        )
        if why and workflow.patched("refuse-forged-start"):
            raise ApplicationError(why, type="InvalidMigration", non_retryable=True)

    async def _shielded(self, work: Awaitable[Any]) -> Any:
        """Run ``work`` to its end: a cancel of the workflow meanwhile cannot interrupt it (it is honoured
        after, by :meth:`run`)."""
        task = asyncio.ensure_future(work)
        while True:
            try:
                return await asyncio.shield(task)
            except asyncio.CancelledError:
                if task.cancelled():
                    raise
                current = asyncio.current_task()
                if current is not None:
                    current.uncancel()

    def _cancel_requested(self) -> bool:
        return workflow.cancellation_reason() is not None

    def _check_cancel(self) -> None:
        """A cancel that an activity's outcome was waited for (MOVE) is honoured right after it."""
        if self._safe and self._cancel_requested():
            raise asyncio.CancelledError("the workflow was cancelled")

    def _carry(self, handover: _ContinueAsNew) -> MigrationCarry:
        return MigrationCarry(
            origin_run_id=self._origin_run_id,
            plan=self.plan,
            eval_report=self.eval_report,
            stage_index=handover.stage_index,
            stage_since=handover.since,
            stage_elapsed_hours=self.stage.elapsed_hours,
            votes=self.votes,
            approvals=self.approvals,
            history=self.history,
            stage_log=self.stage_log,
            seq=self._seq,
            paused=self.paused,
            abort=self.abort_req,
            promote_now_by=self.promote_now_by,
            runs=self._runs + 1,
            notices=self._notices if self._outbox_carry else [],
            audit=self._audit if self._outbox_carry else [],
            judge=self.judge_status,
        )  # signals that arrived during the handover travel with it

    def _restore(self, c: MigrationCarry) -> None:
        self.plan = c.plan
        self.eval_report, self.votes, self.approvals = c.eval_report, c.votes, c.approvals
        self.history, self.stage_log, self._seq, self.paused, self._runs = (
            c.history,
            c.stage_log,
            c.seq,
            c.paused,
            c.runs,
        )
        self.abort_req, self.promote_now_by = c.abort, c.promote_now_by
        self.judge_status = c.judge
        self._notices, self._audit = list(c.notices), list(c.audit)  # undelivered by the previous run
        stage = self.plan.policy.canary.stages[c.stage_index]
        self.stage = StageStatus(
            index=c.stage_index,
            percent=stage.percent,
            started_at=c.stage_since,
            min_hours=stage.min_hours,
            max_hours=stage.max_hours,
            elapsed_hours=c.stage_elapsed_hours,
            shadow=stage.shadow,
        )
        self.phase, self.traffic_moved = "canary", True

    async def _wait(self, cond: Callable[[], bool], *, hours: float) -> bool:
        """True if ``cond`` became true, False when ``hours`` passed first (a durable timer)."""
        try:
            await workflow.wait_condition(cond, timeout=timedelta(hours=max(hours, 1e-6)))
            return True
        except TimeoutError:
            return False

    def _shadow_of(self, stage: Stage) -> float | None:
        """The mirror share of a shadow stage (SHADOW_PATCH), None for a live one."""
        if stage.shadow is None or not workflow.patched(SHADOW_PATCH):
            return None
        return stage.shadow

    def _split_key(self) -> str:
        """Owns the deployment's split and seeds unit bucketing: unique per run, so each migration draws its
        canary units afresh (the workflow id repeats across migrations of a deployment)."""
        info = workflow.info()
        return f"{info.workflow_id}/{self._origin_run_id}"

    def _aborting(self) -> bool:
        return self.abort_req is not None

    def _check_abort(self) -> None:
        self._check_cancel()
        if self.abort_req is not None:
            self._ended_by = self._ended_by or self.abort_req.by
            raise _Stop(
                rules.stopped_phase(self.traffic_moved),
                f"aborted by {self.abort_req.by}: {self.abort_req.reason}",
            )
