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
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError

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
        Waiting,
        check_stage,
        prepare_migration,
        promote_pair,
        record_migration_phase,
        restore_baseline,
        set_canary_split,
    )
    from pairshift.policy import Stage
    from workflows import migration_rules as rules
    from workflows.evals import EvalWorkflow
    from workflows.migration_messages import MigrationMessages
    from workflows.migration_outbox import COMPENSATE, GATE, REGISTRY, MigrationOutbox


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

    # ------------------------------------------------------------------ run

    @workflow.run
    async def run(self, req: MigrationRequest) -> MigrationResult:
        self.req = req
        self._refuse_forged_start(req)
        self._origin_run_id = req.resume.origin_run_id if req.resume else workflow.info().run_id
        if req.resume:
            self._restore(req.resume)
        outbox = self._start_outbox()
        try:
            await self._migrate()
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
        return MigrationResult(
            id=workflow.info().workflow_id,
            deployment=req.deployment,
            phase=self.phase,
            from_pair=self.plan and self.plan.from_pair,
            to_pair=self.plan and self.plan.to_pair,
            outcome=self.outcome or "",
        )

    async def _migrate(self) -> None:
        """The process: prepare, evaluate, approve, canary stage by stage, promote; any stop ends it."""
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
            await self._promote()
        except _Stop as stop:
            await self._finish(stop.phase, stop.why)

    # ------------------------------------------------------------------ phases

    async def _prepare(self) -> None:
        """Resolve the request into the plan (an invalid one fails here, before anything is recorded)."""
        req, info = self.req, workflow.info()
        self.plan = await workflow.execute_activity(
            prepare_migration,
            PrepareInput.of(req, workflow_id=info.workflow_id, run_id=info.run_id),
            **REGISTRY,
        )
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
        report = await workflow.execute_child_workflow(
            EvalWorkflow.run,
            EvalRequest(  # the plan flows on: the eval runs the pairs and dataset resolved at the start
                deployment=self.plan.deployment,
                from_model=self.plan.from_model,
                to_model=self.plan.to_model,
                to_prompt=self.plan.to_prompt,
                dataset=self.plan.dataset,
                epochs=pol.eval.epochs,
                migration=workflow.info().workflow_id,
                requested_by=self.req.requested_by,
                eval_policy=pol.eval,
            ),
            id=f"{workflow.info().workflow_id}-eval-{workflow.info().run_id[:8]}",
        )
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

    async def _decision(self, stage: int, why: str, *, key: str) -> None:
        """Wait for approvals of ``key`` (start-k or pass-k) with reminders; a timeout rejects."""
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
                lambda: rules.tally(self.votes.get(key, {}), ap.required) is not None or self._aborting(),
                hours=min(ap.remind_every_hours, left),
            ):
                self._check_abort()
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
            raise _Stop(rules.stopped_phase(self.traffic_moved), f"rejected by {by} at stage {stage}")
        if previous == "canary":
            await self._set_phase("canary")

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
                f"{self.req.deployment}: stage {k} ({stage.percent:g}%) {decision}",
                stage=k,
                facts={"percent": stage.percent, "samples": self.stage.samples},
            )

    async def _start_stage(self, k: int, stage: Stage) -> datetime:
        if stage.approval and k > 0:
            await self._decision(k, f"start stage {k} ({stage.percent:g}%)", key=f"start-{k}")
        since = await workflow.execute_activity(
            set_canary_split,
            SplitInput(
                deployment=self.req.deployment,
                migration=self._split_key(),
                prompt=self.plan.to_prompt,
                model=self.plan.to_model,
                percent=stage.percent,
            ),
            **REGISTRY,
        )
        self.traffic_moved = True
        self.stage = StageStatus(
            index=k,
            percent=stage.percent,
            started_at=since,
            min_hours=stage.min_hours,
            max_hours=stage.max_hours,
        )
        if self.phase != "canary":
            await self._set_phase("canary")
        self._event("stage_started", f"stage {k}: {stage.percent:g}% to {self.plan.to_pair}")
        self._notify(
            "stage_started",
            f"{self.req.deployment}: stage {k} started, {stage.percent:g}% on {self.plan.to_pair}",
            stage=k,
            facts={"percent": stage.percent},
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
                ),
                **GATE,
            )
            self._record_check(check, max_h)
            step = rules.after_check(check, index=k, stage=stage, elapsed_hours=self.stage.elapsed_hours)
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

    def _record_check(self, check: StageCheck, max_h: float) -> None:
        self.stage.samples = dict(check.samples)
        self.stage.decision = check.decision
        self.stage.gate = {
            "decision": check.decision,
            "reasons": check.reasons,
            "min_samples": check.min_samples,
        }
        self.stage.time_left_hours = rules.time_left(self.stage.min_hours, max_h, self.stage.elapsed_hours)

    async def _promote(self) -> None:
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
            **REGISTRY,
        )
        self.traffic_moved = False  # the new pair is the baseline now: nothing to compensate
        await self._finish("promoted", f"{self.plan.to_pair} is the active pair of {self.req.deployment}")

    async def _finish(self, phase: Phase, why: str) -> None:
        """The one way out: compensate if traffic moved, then record, audit and notify the outcome."""
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
        stage = self.plan.policy.canary.stages[c.stage_index]
        self.stage = StageStatus(
            index=c.stage_index,
            percent=stage.percent,
            started_at=c.stage_since,
            min_hours=stage.min_hours,
            max_hours=stage.max_hours,
            elapsed_hours=c.stage_elapsed_hours,
        )
        self.phase, self.traffic_moved = "canary", True

    async def _wait(self, cond: Callable[[], bool], *, hours: float) -> bool:
        """True if ``cond`` became true, False when ``hours`` passed first (a durable timer)."""
        try:
            await workflow.wait_condition(cond, timeout=timedelta(hours=max(hours, 1e-6)))
            return True
        except TimeoutError:
            return False

    def _split_key(self) -> str:
        """Owns the deployment's split and seeds unit bucketing: unique per run, so each migration draws its
        canary units afresh (the workflow id repeats across migrations of a deployment)."""
        info = workflow.info()
        return f"{info.workflow_id}/{self._origin_run_id}"

    def _aborting(self) -> bool:
        return self.abort_req is not None

    def _check_abort(self) -> None:
        if self.abort_req is not None:
            raise _Stop(
                rules.stopped_phase(self.traffic_moved),
                f"aborted by {self.abort_req.by}: {self.abort_req.reason}",
            )
