"""Pure decision rules of MigrationWorkflow (no I/O, no clock): who may decide what, and when.

Kept apart from the workflow so they are table-tested directly, and so the update validator, the signal
handlers and the tests share one definition.
"""

from __future__ import annotations

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
