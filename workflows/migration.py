"""MigrationWorkflow: one durable migration of a deployment from its active pair to a target pair.

Contract (PRODUCT §8): notice -> evaluating (the 2x2, as the child EvalWorkflow) -> awaiting_approval ->
canary (stage by stage, each held for min_hours with durable timers and checked every
check_every_minutes against concurrent control) -> promoted | rolled_back | rejected | failed_eval.

Messages: signals ``approve``, ``reject``, ``pause``, ``resume``, ``abort``, ``promote_now`` (the Temporal UI
path: never refused, but a signal that breaks the policy is ignored and audited); update ``decide`` (the
CLI and Slack path: its validator refuses an unknown approver, the requester, a stage not waiting, a
second vote); ``note_refusal`` (clients report a refused update so the audit log has it); queries
``status`` and ``report``.

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
    from activities.migration import (
        PhaseInput,
        PrepareInput,
        PromoteInput,
        RestoreInput,
        SplitInput,
        StageCheckInput,
        check_stage,
        prepare_migration,
        promote_pair,
        record_migration_phase,
        restore_baseline,
        set_canary_split,
    )
    from pairshift.contracts.migration import (
        AbortSignal,
        Approval,
        ApproveSignal,
        DecideResult,
        DecideUpdate,
        HistoryEvent,
        MigrationCarry,
        MigrationRequest,
        MigrationResult,
        MigrationStatus,
        PauseSignal,
        PromoteNowSignal,
        RefusedAttempt,
        RejectSignal,
        ResumeSignal,
        StageStatus,
        Waiting,
    )
    from pairshift.gates import StageCheck
    from pairshift.migration_records import MigrationPlan
    from pairshift.policy import Stage
    from workflows.evals import EvalRequest, EvalWorkflow
    from workflows.migration_outbox import COMPENSATE, GATE, REGISTRY, MigrationOutbox
    from workflows.migration_rules import (
        eval_evidence,
        eval_summary,
        refuse_decision,
        refuse_privileged,
        root_cause,
        tally,
    )


class _ContinueAsNew(Exception):
    """A long stage hands over to a fresh run (between two gate checks, never while a human decides)."""

    def __init__(self, stage_index: int, since: datetime) -> None:
        super().__init__(f"continue as new at stage {stage_index}")
        self.stage_index, self.since = stage_index, since


class _Stop(Exception):
    """Ends the migration early: rejected, aborted, breached, timed out."""

    def __init__(self, phase: str, why: str) -> None:
        super().__init__(why)
        self.phase, self.why = phase, why


@workflow.defn
class MigrationWorkflow(MigrationOutbox):
    def __init__(self) -> None:
        self.req: MigrationRequest | None = None
        self.plan: MigrationPlan | None = None
        self.phase = "notice"
        self.outcome: str | None = None
        self.stage: StageStatus | None = None
        self.waiting: Waiting | None = None
        self.votes: dict[str, dict[str, str]] = {}  # decision key (start-k / pass-k) -> voter -> decision
        self.approvals: list[Approval] = []
        self.history: list[HistoryEvent] = []
        self.eval_report: dict[str, Any] | None = None
        self.paused = False
        self.abort_req: AbortSignal | None = None
        self.promote_now_by: str | None = None
        self.traffic_moved = False
        self.stage_log: list[dict[str, Any]] = []
        self._init_outbox()
        self._origin_run_id: str | None = None  # the first run's id, kept across continue-as-new
        self._checks = 0  # gate checks in this run
        self._runs = 1

    # ------------------------------------------------------------------ run

    @workflow.run
    async def run(self, req: MigrationRequest) -> MigrationResult:
        self.req = req
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
            await self._finish(
                "rolled_back" if self.traffic_moved else "rejected", "the workflow was cancelled"
            )
            await self._close(outbox)
            raise
        except (ActivityError, ChildWorkflowError) as exc:
            if self.plan is None:  # invalid request: nothing was recorded or moved
                raise ApplicationError(root_cause(exc), type="InvalidMigration", non_retryable=True) from None
            phase = (
                "rolled_back"
                if self.traffic_moved
                else ("failed_eval" if self.phase == "evaluating" else "rejected")
            )
            await self._finish(phase, f"{root_cause(exc)} (failed for good)")
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
        if self.req.resume is not None:
            try:
                await self._canary(
                    start=self.req.resume.stage_index, resumed_since=self.req.resume.stage_since
                )
                await self._promote()
            except _Stop as stop:
                await self._finish(stop.phase, stop.why)
            return
        req, info = self.req, workflow.info()
        self.plan = await workflow.execute_activity(
            prepare_migration,
            PrepareInput(
                workflow_id=info.workflow_id,
                run_id=info.run_id,
                deployment=req.deployment,
                to_model=req.to_model,
                to_prompt=req.to_prompt,
                policy=req.policy,
                reason=req.reason,
                requested_by=req.requested_by,
            ),
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
        try:
            await self._evaluate()
            if req.dry_run:
                return await self._finish("dry_run", "dry run: evaluated, nothing moved")
            await self._decision(0, "approve the canary", key="start-0")
            await self._canary()
            await self._promote()
        except _Stop as stop:
            await self._finish(stop.phase, stop.why)

    # ------------------------------------------------------------------ phases

    async def _set_phase(self, phase: str, **summary: Any) -> None:
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
            EvalRequest(
                deployment=self.req.deployment,
                to_model=self.plan.to_model,
                to_prompt=self.plan.to_prompt,
                epochs=pol.eval.epochs,
                migration=workflow.info().workflow_id,
                requested_by=self.req.requested_by,
                eval_policy=pol.eval,
            ),
            id=f"{workflow.info().workflow_id}-eval-{workflow.info().run_id[:8]}",
        )
        self.eval_report = report.model_dump(mode="json")
        gate = report.gate
        self._event("eval", f"gate {gate.decision}: " + "; ".join(gate.reasons[:3]))
        self._notify(
            "eval_summary",
            f"Eval of {self.plan.to_pair}: gate {gate.decision}",
            text="\n".join(gate.reasons),
            facts={"gate": gate.decision, "report_id": getattr(report, "report_id", None)},
            asks=gate.decision != "fail" and not self.req.dry_run,
            stage=0,
        )
        await workflow.execute_activity(
            record_migration_phase,
            PhaseInput(
                run_id=self._origin_run_id,
                phase=self.phase,
                summary={"gate": gate.decision, "report_id": getattr(report, "report_id", None)},
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
        while (verdict := tally(self.votes.get(key, {}), ap.required)) is None:
            left = (deadline - workflow.now()).total_seconds() / 3600
            if left <= 0:
                raise _Stop(
                    "rolled_back" if self.traffic_moved else "rejected",
                    f"no decision within {ap.timeout_hours:g} hours: rejected by timeout",
                )
            if await self._wait(
                lambda: tally(self.votes.get(key, {}), ap.required) is not None or self._aborting(),
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
            by = next(b for b, v in self.votes[key].items() if v == "reject")
            raise _Stop(
                "rolled_back" if self.traffic_moved else "rejected", f"rejected by {by} at stage {stage}"
            )
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
                {
                    "stage": k,
                    "percent": stage.percent,
                    "decision": decision,
                    "elapsed_hours": round(self.stage.elapsed_hours, 4),
                    "samples": self.stage.samples,
                }
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

    async def _hold(self, k: int, stage: Stage, since) -> str:
        """Hold the stage, checking every check_every_minutes: breach rolls back, pass moves on."""
        canary_pol = self.plan.policy.canary
        every_h = canary_pol.check_every_minutes / 60
        max_h = stage.max_hours if stage.max_hours is not None else stage.min_hours
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
                self.stage.paused = True
                await workflow.wait_condition(lambda: not self.paused or self._aborting())
                self.stage.paused = False
                self._check_abort()
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
            if check.decision in ("breach", "srm"):
                what = (
                    "gate breach"
                    if check.decision == "breach"
                    else "sample ratio mismatch (untrustworthy split)"
                )
                raise _Stop(
                    "rolled_back", f"stage {k} ({stage.percent:g}%): {what}: " + "; ".join(check.reasons)
                )
            if check.decision == "pass":
                return "passed"
            if self.stage.elapsed_hours >= max_h and stage.percent < 100:
                await self._decision(
                    k, f"stage {k} is inconclusive after {max_h:g} hours: pass it?", key=f"pass-{k}"
                )
                return "passed by a human decision"
            self._checks += 1
            handover = (
                self._checks >= self.req.checks_per_run or workflow.info().is_continue_as_new_suggested()
            )
            # patched: a run recorded before continue-as-new existed keeps scheduling timers where it did
            if (
                handover
                and not (self._aborting() or self.promote_now_by or self.paused)
                and workflow.patched("continue-as-new")
            ):
                raise _ContinueAsNew(k, since)

    def _record_check(self, check: StageCheck, max_h: float) -> None:
        self.stage.samples = dict(check.samples)
        self.stage.decision = check.decision
        self.stage.gate = {
            "decision": check.decision,
            "reasons": check.reasons,
            "min_samples": check.min_samples,
        }
        self.stage.time_left_hours = max(0.0, max(self.stage.min_hours, max_h) - self.stage.elapsed_hours)

    async def _promote(self) -> None:
        evidence = {
            "run_id": self._origin_run_id,
            "eval": eval_evidence(self.eval_report),
            "stages": self.stage_log,
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

    async def _finish(self, phase: str, why: str) -> None:
        """The one way out: compensate if traffic moved, then record, audit and notify the outcome."""
        if self.traffic_moved:
            await workflow.execute_activity(
                restore_baseline,
                RestoreInput(
                    deployment=self.req.deployment,
                    migration=self._split_key(),
                    reason=why,
                    by=self.req.requested_by,
                    evidence={"run_id": self._origin_run_id, "stages": self.stage_log},
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
            kind = phase if phase in ("promoted", "rolled_back", "rejected", "failed_eval") else "info"
            self._notify(kind, f"{self.req.deployment}: {phase.replace('_', ' ')}: {why}")

    # ------------------------------------------------------------------ helpers

    def _carry(self, handover: _ContinueAsNew) -> MigrationCarry:
        return MigrationCarry(
            origin_run_id=self._origin_run_id,
            plan=self.plan.model_dump(mode="json"),
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
        self.plan = MigrationPlan.model_validate(c.plan)
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
                "rolled_back" if self.traffic_moved else "rejected",
                f"aborted by {self.abort_req.by}: {self.abort_req.reason}",
            )

    # ------------------------------------------------------------------ messages

    def _decide(self, by: str, decision: str, channel: str, stage: int | None, comment: str | None) -> None:
        k, key = self.waiting.stage, self.waiting.key
        self.votes.setdefault(key, {})[by] = decision
        self.approvals.append(
            Approval(by=by, decision=decision, at=workflow.now(), channel=channel, stage=k, comment=comment)
        )
        self._event(decision, comment or "", actor=by, channel=channel, stage=k)
        done = {"approve": "approved", "reject": "rejected"}[decision]
        self._notify("decision", f"{self.req.deployment}: {done} by {by} (stage {k}, via {channel})", stage=k)

    def _refusal(self, by: str, decision: str, channel: str, stage: int | None) -> str | None:
        if self.plan is None:
            return "the migration is not ready for decisions yet"
        return refuse_decision(
            by=by,
            decision=decision,
            stage=stage,
            waiting_stage=self.waiting.stage if self.waiting else None,
            policy=self.plan.policy.approvals,
            requester=self.req.requested_by,
            voted=set(self.votes.get(self.waiting.key, {})) if self.waiting else set(),
        )

    def _signal_decision(self, sig: ApproveSignal | RejectSignal, decision: str) -> None:
        why = self._refusal(sig.by, decision, sig.channel, None)
        if why:
            self._event(f"{decision}_ignored", why, actor=sig.by, channel=sig.channel, accepted=False)
        else:
            self._decide(sig.by, decision, sig.channel, None, sig.comment)

    @workflow.signal
    def approve(self, sig: ApproveSignal) -> None:
        self._signal_decision(sig, "approve")

    @workflow.signal
    def reject(self, sig: RejectSignal) -> None:
        self._signal_decision(sig, "reject")

    @workflow.signal
    def pause(self, sig: PauseSignal) -> None:
        self.paused = True
        self._event("pause", "", actor=sig.by, channel=sig.channel)

    @workflow.signal
    def resume(self, sig: ResumeSignal) -> None:
        self.paused = False
        self._event("resume", "", actor=sig.by, channel=sig.channel)

    @workflow.signal
    def abort(self, sig: AbortSignal) -> None:
        self.abort_req = self.abort_req or sig
        self._event("abort", sig.reason, actor=sig.by, channel=sig.channel)

    @workflow.signal
    def promote_now(self, sig: PromoteNowSignal) -> None:
        why = (
            refuse_privileged(by=sig.by, policy=self.plan.policy.approvals, requester=self.req.requested_by)
            if self.plan
            else "the migration is not ready"
        )
        if why or self.phase != "canary":
            self._event(
                "promote_now_ignored",
                why or f"not in canary (phase {self.phase})",
                actor=sig.by,
                channel=sig.channel,
                accepted=False,
            )
            return
        self.promote_now_by = sig.by
        self._event("promote_now", "", actor=sig.by, channel=sig.channel)

    @workflow.signal
    def note_refusal(self, attempt: RefusedAttempt) -> None:
        self._event(
            f"{attempt.decision}_refused",
            attempt.reason,
            actor=attempt.by,
            channel=attempt.channel,
            stage=attempt.stage,
            accepted=False,
        )

    @workflow.update
    def decide(self, d: DecideUpdate) -> DecideResult:
        stage, key = self.waiting.stage, self.waiting.key
        self._decide(d.by, d.decision, d.channel, d.stage, d.comment)
        required = self.plan.policy.approvals.required
        verdict = tally(self.votes.get(key, {}), required)
        rejected = "rolled_back" if self.traffic_moved else "rejected"
        phase = (
            {"approved": "canary", "rejected": rejected}.get(verdict, self.phase) if verdict else self.phase
        )
        return DecideResult(
            phase=phase,
            stage=stage,
            required=required,
            approvals=sum(1 for v in self.votes.get(key, {}).values() if v == "approve"),
        )

    @decide.validator
    def _validate_decide(self, d: DecideUpdate) -> None:
        why = self._refusal(d.by, d.decision, d.channel, d.stage)
        if why:
            raise ValueError(why)

    @workflow.query
    def status(self) -> MigrationStatus:
        req = self.req
        return MigrationStatus(
            id=workflow.info().workflow_id,
            deployment=req.deployment if req else "",
            phase=self.phase,
            reason=req.reason if req else "",
            requested_by=req.requested_by if req else "",
            from_pair=self.plan.from_pair if self.plan else None,
            to_pair=self.plan.to_pair if self.plan else None,
            eval=eval_summary(self.eval_report),
            stage=self.stage,
            waiting=self.waiting,
            approvals=self.approvals,
            history=self.history,
            outcome=self.outcome,
        )

    @workflow.query
    def report(self) -> dict[str, Any] | None:
        return self.eval_report
