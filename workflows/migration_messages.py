"""The messages of MigrationWorkflow: its signals, its ``decide`` update and validator, its queries.

Mixed into :class:`workflows.migration.MigrationWorkflow` (which holds the state these read and change).
Signals are the Temporal UI's path and cannot be refused, so one that breaks the policy is ignored and
audited; ``decide`` is the CLI's and Slack's path, and its validator refuses what the policy does not allow.
Who may decide what is :mod:`workflows.migration_rules`'.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from pairshift.contracts.evals import EvalReport
    from pairshift.contracts.migration import (
        AbortSignal,
        Approval,
        ApproveSignal,
        DecideResult,
        DecideUpdate,
        Decision,
        MigrationStatus,
        PauseSignal,
        PromoteNowSignal,
        RefusedAttempt,
        RejectSignal,
        ResumeSignal,
    )
    from workflows import migration_rules as rules


# Since this patch an approve/reject signal that names a stage is ignored (and audited) unless that stage is
# the one waiting: a stale decision made for an earlier stage cannot count for the next.
SIGNAL_STAGE_PATCH = "signals-carry-stage"


class MigrationMessages:
    """Handlers of MigrationWorkflow's messages; expects the workflow's state (``plan``, ``waiting``,
    ``votes``, ``approvals``, ``phase``...) and its outbox (``_event``, ``_notify``)."""

    def _people(self):
        return self.plan.people if self.plan is not None else None

    def _decide(self, by: str, decision: Decision, channel: str, comment: str | None) -> None:
        k, key = self.waiting.stage, self.waiting.key
        people = self._people()
        self.votes.setdefault(key, {})[rules.voter(by, people)] = decision
        person = people.find(by) if people is not None else None
        self.approvals.append(
            Approval(
                by=by,
                decision=decision,
                at=workflow.now(),
                channel=channel,
                stage=k,
                comment=comment,
                person=person.name if person else None,
            )
        )
        self._event(decision, comment or "", actor=by, channel=channel, stage=k)
        done = {"approve": "approved", "reject": "rejected"}[decision]
        self._notify("decision", f"{self.req.deployment}: {done} by {by} (stage {k}, via {channel})", stage=k)

    def _refusal(self, by: str, decision: Decision, stage: int | None, channel: str | None) -> str | None:
        if self.plan is None:
            return "the migration is not ready for decisions yet"
        ending = getattr(self, "_ending", None)
        if self.waiting is None and ending is not None:  # a late vote: say what the migration really is
            return f"no stage is waiting for a decision: the migration ends {ending[0].replace('_', ' ')}"
        return rules.refuse_decision(
            by=by,
            decision=decision,
            stage=stage,
            waiting_stage=self.waiting.stage if self.waiting else None,
            policy=self.plan.policy.approvals,
            requester=self.req.requested_by,
            voted=set(self.votes.get(self.waiting.key, {})) if self.waiting else set(),
            people=self._people(),
            channel=channel,
        )

    def _signal_decision(self, sig: ApproveSignal | RejectSignal, decision: Decision) -> None:
        channel = rules.signal_channel(sig.channel) if self._people() is not None else sig.channel
        # a signal that names its stage decides that stage only (the patch is asked only when it names one:
        # signals recorded before never did)
        stage = sig.stage if sig.stage is not None and workflow.patched(SIGNAL_STAGE_PATCH) else None
        why = self._refusal(sig.by, decision, stage, channel)
        if why:
            self._event(f"{decision}_ignored", why, actor=sig.by, channel=channel, accepted=False)
        else:
            self._decide(sig.by, decision, channel, sig.comment)

    @workflow.signal
    def approve(self, sig: ApproveSignal) -> None:
        """Approve the waiting decision; ignored (and audited) when the policy forbids it."""
        self._signal_decision(sig, "approve")

    @workflow.signal
    def reject(self, sig: RejectSignal) -> None:
        """Reject the waiting decision; ignored (and audited) when the policy forbids it."""
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
        """End the migration at the next step; the first abort's reason is kept."""
        self.abort_req = self.abort_req or sig
        self._event("abort", sig.reason, actor=sig.by, channel=sig.channel)

    @workflow.signal
    def promote_now(self, sig: PromoteNowSignal) -> None:
        """Skip the remaining stages (an approver, during the canary); else ignored."""
        channel = rules.signal_channel(sig.channel) if self._people() is not None else sig.channel
        why = (
            rules.refuse_privileged(
                by=sig.by,
                policy=self.plan.policy.approvals,
                requester=self.req.requested_by,
                people=self._people(),
                channel=channel,
            )
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
        """Audit a ``decide`` call the validator refused (a validator cannot write: the client reports it)."""
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
        """Record a decision and answer the phase it leads to (the validator refused what is not allowed)."""
        stage, key = self.waiting.stage, self.waiting.key
        self._decide(d.by, d.decision, d.channel, d.comment)
        required = self.plan.policy.approvals.required
        votes = self.votes.get(key, {})
        return DecideResult(
            phase=rules.phase_after_decision(rules.tally(votes, required), self.phase, self.traffic_moved),
            stage=stage,
            required=required,
            approvals=rules.approvals_of(votes),
        )

    @decide.validator
    def _validate_decide(self, d: DecideUpdate) -> None:
        why = self._refusal(d.by, d.decision, d.stage, d.channel)
        if why:
            raise ValueError(why)

    @workflow.query
    def status(self) -> MigrationStatus:
        """Phase, stage, gate, approvals and history: ``migrate status`` (PRODUCT §11)."""
        req = self.req
        return MigrationStatus(
            id=workflow.info().workflow_id,
            deployment=req.deployment if req else "",
            phase=self.phase,
            reason=req.reason if req else "",
            requested_by=req.requested_by if req else "",
            from_pair=self.plan.from_pair if self.plan else None,
            to_pair=self.plan.to_pair if self.plan else None,
            eval=rules.eval_summary(self.eval_report),
            stage=self.stage,
            waiting=self.waiting,
            approvals=self.approvals,
            history=self.history,
            outcome=self.outcome,
            judge=getattr(self, "judge_status", None),
        )

    @workflow.query
    def report(self) -> EvalReport | None:
        """The eval report (capped flipped cases; the full one is in the registry)."""
        return self.eval_report
