"""Pure decision rules of MigrationWorkflow (no I/O, no clock): who may decide what, where each step leads.

Kept apart from the workflow so they are table-tested directly, and so the run method, the update validator,
the signal handlers and the tests share one definition: who may decide (:func:`refuse_decision`,
:func:`refuse_privileged`, :func:`tally`), how a migration that stops ends (:func:`stopped_phase`,
:func:`failed_phase`), what a stage check leads to (:func:`after_check`), which phase ``decide`` answers
(:func:`phase_after_decision`), when a run hands over (:func:`hands_over`), and what the status query and the
ledger keep of an eval (:func:`eval_summary`, :func:`eval_evidence`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pairshift.contracts.evals import EvalReport
from pairshift.contracts.gates import StageCheck
from pairshift.contracts.migration import Decision, MigrationRequest, Phase
from pairshift.contracts.notices import NoticeKind
from pairshift.people import People
from pairshift.policy import ApprovalPolicy, Stage

OUTCOME_NOTICES: frozenset[Phase] = frozenset({"promoted", "rolled_back", "rejected", "failed_eval"})


def refuse_start(
    req: MigrationRequest, *, continued_run_id: str | None, first_run_id: str | None
) -> str | None:
    """Why a run must refuse its input before it does anything, or None.

    ``resume`` (the continue-as-new carry) is accepted only by a run that Temporal started as the
    continuation of another (``continued_run_id`` set, which no client can set) and whose carry names the
    first run of this very chain as its origin: a start from the Web UI or any client that carries one is
    refused. ``policy`` (an inline policy) is refused on a fresh start: policies are registry objects that
    a deployment names, so the policy that gated a migration is the one the registry and ledger show.
    """
    if req.resume is not None:
        if continued_run_id is None:
            return (
                "resume: refused: the continue-as-new carry is internal; only a run's own continuation "
                "carries it (leave resume out of a start; nothing was recorded or moved)"
            )
        if req.resume.origin_run_id != first_run_id:
            return (
                f"resume: refused: the carry names run {req.resume.origin_run_id!r} as its origin, "
                f"but this chain of runs began with {first_run_id!r}"
            )
        return None
    if req.policy is not None:
        return (
            "policy: an inline policy is refused: policies are registry objects (pairshift apply) that a "
            "deployment names, so the policy that gates a migration is on record (leave policy out)"
        )
    return None


def refuse_decision(
    *,
    by: str,
    decision: str,
    stage: int | None,
    waiting_stage: int | None,
    policy: ApprovalPolicy,
    requester: str,
    voted: set[str],
    people: People | None = None,
    channel: str | None = None,
) -> str | None:
    """Why a decision must be refused, or None when it counts.

    ``voted`` holds who decided already, as :func:`voter` names them. With ``people`` (every plan since
    people joined identities), identities are compared as persons, whatever channel each came through, and an
    approval must come through one of the policy's ``channels``; without (a plan recorded before), names are
    compared as sent and an empty approver list lets anyone decide, as they were then."""
    if waiting_stage is None:
        return "no stage is waiting for a decision" + (f" (this one is for stage {stage})" if stage else "")
    if stage is not None and stage < waiting_stage:
        return (
            f"stale decision: stage {stage} was decided already and stage {waiting_stage} is waiting now "
            f"(a decision counts only for the stage it names)"
        )
    if stage is not None and stage != waiting_stage:
        return f"stage {stage} is not waiting for a decision (stage {waiting_stage} is)"
    why = _refuse_person(
        by=by,
        approving=decision == "approve",
        policy=policy,
        requester=requester,
        people=people,
        channel=channel,
        what="approve",
    )
    if why:
        return why
    if voter(by, people) in voted:
        return f"{by} already decided on stage {waiting_stage}" + _as_person(by, people)
    return None


def refuse_privileged(
    *,
    by: str,
    policy: ApprovalPolicy,
    requester: str,
    people: People | None = None,
    channel: str | None = None,
) -> str | None:
    """promote_now moves traffic like an approval does, so it follows the approval rules."""
    return _refuse_person(
        by=by,
        approving=True,
        policy=policy,
        requester=requester,
        people=people,
        channel=channel,
        what="promote",
    )


def voter(by: str, people: People | None) -> str:
    """Who a vote counts for: the person behind ``by`` (plans with people), else ``by`` as sent."""
    return people.key(by) if people is not None else by


def signal_channel(claimed: str) -> str:
    """The channel a *signal* counts as. Slack's path is the ``decide`` update, sent by ``pairshift api``
    once Slack's signature is verified: a signal claiming ``slack`` came from a Temporal client or the Web
    UI, and counts as ``temporal-ui``."""
    return "temporal-ui" if claimed == "slack" else claimed


def _as_person(by: str, people: People | None) -> str:
    key = voter(by, people)
    return f" (as {key})" if people is not None and people.find(by) is not None and key != by else ""


def _refuse_person(
    *,
    by: str,
    approving: bool,
    policy: ApprovalPolicy,
    requester: str,
    people: People | None,
    channel: str | None,
    what: str,
) -> str | None:
    if people is None:  # a plan recorded before people: names as sent; no approvers listed = anyone
        if policy.named and by not in policy.named:
            return f"{by} is not an approver in this deployment's policy"
        if approving and policy.separation_of_duties and by == requester:
            return f"{by} requested this migration and cannot {what} it (separation of duties)"
        return None
    if approving and channel is not None and channel not in policy.channels:
        return (
            f"approvals through {channel} are not accepted by this deployment's policy "
            f"(approvals.channels: {', '.join(policy.channels)})"
        )
    if not policy.anyone:
        if not policy.named:
            return (
                "this deployment's policy names no approvers, so nobody may let traffic move "
                "(name people in approvals.approvers, or write approvers: anyone)"
            )
        if voter(by, people) not in policy.named:
            return f"{by} is not an approver in this deployment's policy"
    if approving and policy.separation_of_duties and people.same(by, requester):
        return (
            f"{by} requested this migration and cannot {what} it (separation of duties"
            + (f": {by} and {requester} are both {people.key(by)}" if by != requester else "")
            + ")"
        )
    return None


def tally(votes: dict[str, Decision], required: int) -> Literal["approved", "rejected"] | None:
    """'approved' with enough distinct approvals, 'rejected' on any rejection, else None (still waiting)."""
    if any(v == "reject" for v in votes.values()):
        return "rejected"
    if sum(1 for v in votes.values() if v == "approve") >= required:
        return "approved"
    return None


def root_cause(exc: BaseException) -> str:
    """The innermost cause's message: an activity failure wraps the error the user needs to read."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return str(exc)


def stopped_phase(traffic_moved: bool) -> Phase:
    """How a migration stopped by a person, a timeout, an abort or a cancellation ends.

    Once traffic moved, the baseline is restored: ``rolled_back``; before, nothing happened: ``rejected``.
    """
    return "rolled_back" if traffic_moved else "rejected"


def failed_phase(phase: Phase, traffic_moved: bool) -> Phase:
    """How a migration ends when an activity or the eval fails for good while in ``phase``."""
    if traffic_moved:
        return "rolled_back"
    return "failed_eval" if phase == "evaluating" else "rejected"


def phase_after_decision(
    verdict: Literal["approved", "rejected"] | None, phase: Phase, traffic_moved: bool
) -> Phase:
    """The phase ``decide`` answers with: canary once approved, the stop phase once rejected, else as is."""
    if verdict == "approved":
        return "canary"
    if verdict == "rejected":
        return stopped_phase(traffic_moved)
    return phase


def notice_kind(phase: Phase) -> NoticeKind:
    """The notice an ended migration sends: its outcome's own kind, or ``info`` (a dry run)."""
    return phase if phase in OUTCOME_NOTICES else "info"  # type: ignore[return-value]


def stage_max_hours(stage: Stage) -> float:
    """When an inconclusive stage goes to a human: its ``max_hours``, or ``min_hours`` when it has none."""
    return stage.max_hours if stage.max_hours is not None else stage.min_hours


def time_left(min_hours: float, max_hours: float, elapsed_hours: float) -> float:
    """Hours until the stage's gate is due (the later of min and max hours), never negative."""
    return max(0.0, max(min_hours, max_hours) - elapsed_hours)


@dataclass(frozen=True)
class StageStep:
    """What a stage check leads to: ``roll_back`` (with why), ``pass``, ``ask`` a human, or ``soak`` on."""

    action: Literal["roll_back", "pass", "ask", "soak"]
    why: str = ""


def after_check(check: StageCheck, *, index: int, stage: Stage, elapsed_hours: float) -> StageStep:
    """The next step of stage ``index`` after a gate check, ``elapsed_hours`` into the stage."""
    if check.decision in ("breach", "srm"):
        what = "gate breach" if check.decision == "breach" else "sample ratio mismatch (untrustworthy split)"
        return StageStep("roll_back", f"stage {index} ({stage.label}): {what}: " + "; ".join(check.reasons))
    if check.decision == "pass":
        return StageStep("pass")
    if elapsed_hours >= stage_max_hours(stage) and stage.percent < 100:
        return StageStep(
            "ask", f"stage {index} is inconclusive after {stage_max_hours(stage):g} hours: pass it?"
        )
    return StageStep("soak")


def hands_over(*, checks: int, checks_per_run: int, suggested: bool, busy: bool) -> bool:
    """Whether a long stage continues as new now: enough checks in this run (or Temporal suggests it), and
    no abort, promote_now or pause pending (those are handled in this run)."""
    return (checks >= checks_per_run or suggested) and not busy


def approvals_of(votes: dict[str, Decision]) -> int:
    """How many distinct people approved."""
    return sum(1 for v in votes.values() if v == "approve")


def rejecter(votes: dict[str, Decision]) -> str:
    """Who rejected (the first of them); only called once :func:`tally` said ``rejected``."""
    return next(by for by, v in votes.items() if v == "reject")


def eval_summary(report: EvalReport | None) -> dict[str, Any] | None:
    """The eval keys the `status` query carries (the full report is the `report` query and the registry)."""
    if report is None:
        return None
    dumped = report.model_dump(mode="json")
    keep = (
        "deployment",
        "baseline_pair",
        "target_pair",
        "dataset",
        "epochs",
        "arms",
        "effects",
        "gate",
        "flipped_count",
        "report_id",
        "power_note",
    )
    return {k: dumped[k] for k in keep if k in dumped}


def eval_evidence(report: EvalReport | None) -> dict[str, Any]:
    """What the ledger keeps of an eval: the run of every arm, the gate and the report id."""
    if report is None:
        return {}
    evidence: dict[str, Any] = {
        "runs": {arm: a.run_id for arm, a in report.arms.items()},
        "gate": report.gate.decision,
        "report_id": report.report_id,
    }
    # Only when some were dropped, so the evidence of reports without request rules is unchanged.
    dropped = {arm: a.dropped_params for arm, a in report.arms.items() if a.dropped_params}
    if dropped:
        evidence["dropped_params"] = dropped
    return evidence
