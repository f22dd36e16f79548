"""Who may decide what, and when: the pure rules behind `decide`, the approve/reject signals and
promote_now."""

import pytest

from pairshift.policy import ApprovalPolicy
from workflows.migration_rules import refuse_decision, refuse_privileged, tally

POLICY = ApprovalPolicy(
    approvers=["alice", "bob", "carol", "U0123ABC"], required=1, separation_of_duties=True
)
OPEN = ApprovalPolicy(approvers=[], separation_of_duties=False)


@pytest.mark.parametrize(
    "by, decision, stage, waiting, policy, voted, expected",
    [
        ("alice", "approve", None, 0, POLICY, set(), None),
        ("alice", "approve", 0, 0, POLICY, set(), None),
        ("U0123ABC", "reject", None, 2, POLICY, set(), None),
        ("mallory", "approve", None, 0, POLICY, set(), "mallory is not an approver"),
        ("carol", "approve", None, 0, POLICY, set(), "carol requested this migration and cannot approve it"),
        ("alice", "approve", 1, 0, POLICY, set(), "stage 1 is not waiting for a decision (stage 0 is)"),
        ("alice", "approve", None, None, POLICY, set(), "no stage is waiting"),
        ("alice", "approve", None, 0, POLICY, {"alice"}, "alice already decided on stage 0"),
        ("anyone", "approve", None, 0, OPEN, set(), None),
        ("carol", "approve", None, 0, OPEN, set(), None),  # separation of duties off
    ],
)
def test_refuse_decision(by, decision, stage, waiting, policy, voted, expected):
    why = refuse_decision(
        by=by,
        decision=decision,
        stage=stage,
        waiting_stage=waiting,
        policy=policy,
        requester="carol",
        voted=voted,
    )
    assert (why is None) if expected is None else (expected in why)


def test_requester_may_still_reject_their_own_migration():
    policy = ApprovalPolicy(approvers=["carol", "alice"], separation_of_duties=True)
    assert (
        refuse_decision(
            by="carol",
            decision="reject",
            stage=None,
            waiting_stage=0,
            policy=policy,
            requester="carol",
            voted=set(),
        )
        is None
    )


@pytest.mark.parametrize(
    "votes, required, expected",
    [
        ({}, 1, None),
        ({"a": "approve"}, 1, "approved"),
        ({"a": "approve"}, 2, None),
        ({"a": "approve", "b": "approve"}, 2, "approved"),
        ({"a": "approve", "b": "reject"}, 1, "rejected"),
    ],
)
def test_tally(votes, required, expected):
    assert tally(votes, required) == expected


def test_promote_now_follows_the_approval_rules():
    assert refuse_privileged(by="alice", policy=POLICY, requester="carol") is None
    assert "not an approver" in refuse_privileged(by="eve", policy=POLICY, requester="carol")
    assert "separation of duties" in refuse_privileged(
        by="carol", policy=ApprovalPolicy(approvers=["carol"]), requester="carol"
    )
