"""Pure decision rules of MigrationWorkflow (no I/O, no clock): who may decide what, and when.

Kept apart from the workflow so they are table-tested directly, and so the update validator, the signal
handlers and the tests share one definition.
"""

from __future__ import annotations

from typing import Any

from pairshift.policy import ApprovalPolicy


def refuse_decision(
    *,
    by: str,
    decision: str,
    stage: int | None,
    waiting_stage: int | None,
    policy: ApprovalPolicy,
    requester: str,
    voted: set[str],
) -> str | None:
    """Why a decision must be refused, or None when it counts."""
    if waiting_stage is None:
        return "no stage is waiting for a decision"
    if stage is not None and stage != waiting_stage:
        return f"stage {stage} is not waiting for a decision (stage {waiting_stage} is)"
    if policy.approvers and by not in policy.approvers:
        return f"{by} is not an approver in this deployment's policy"
    if decision == "approve" and policy.separation_of_duties and by == requester:
        return f"{by} requested this migration and cannot approve it (separation of duties)"
    if by in voted:
        return f"{by} already decided on stage {waiting_stage}"
    return None


def refuse_privileged(*, by: str, policy: ApprovalPolicy, requester: str) -> str | None:
    """promote_now moves traffic like an approval does, so it follows the approval rules."""
    if policy.approvers and by not in policy.approvers:
        return f"{by} is not an approver in this deployment's policy"
    if policy.separation_of_duties and by == requester:
        return f"{by} requested this migration and cannot promote it (separation of duties)"
    return None


def tally(votes: dict[str, str], required: int) -> str | None:
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


def eval_summary(report: dict[str, Any] | None) -> dict[str, Any] | None:
    """The eval keys the `status` query carries (the full report is the `report` query and the registry)."""
    if report is None:
        return None
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
    return {k: report[k] for k in keep if k in report}


def eval_evidence(report: dict[str, Any] | None) -> dict[str, Any]:
    """What the ledger keeps of an eval: the run of every arm, the gate and the report id."""
    if not report:
        return {}
    return {
        "runs": {arm: a.get("run_id") for arm, a in report.get("arms", {}).items()},
        "gate": report.get("gate", {}).get("decision"),
        "report_id": report.get("report_id"),
    }
