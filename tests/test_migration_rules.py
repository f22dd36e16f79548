"""MigrationWorkflow's decisions, table-driven: who may decide what and when (`decide`, the approve/reject
signals, promote_now), how a stopped or failed migration ends, what a stage check leads to, which phase
`decide` answers, when a run hands over, and what the status and the ledger keep of an eval."""

import pytest

from pairshift.contracts.evals import ArmReport, DatasetRef, EvalReport
from pairshift.contracts.gates import GateDecision, StageCheck
from pairshift.policy import ApprovalPolicy, Stage
from workflows.migration_rules import (
    StageStep,
    after_check,
    approvals_of,
    eval_evidence,
    eval_summary,
    failed_phase,
    hands_over,
    notice_kind,
    phase_after_decision,
    refuse_decision,
    refuse_privileged,
    rejecter,
    stage_max_hours,
    stopped_phase,
    tally,
    time_left,
)

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
        ("alice", "approve", 0, 1, POLICY, set(), "stale decision: stage 0 was decided already"),
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


@pytest.mark.parametrize("moved, expected", [(True, "rolled_back"), (False, "rejected")])
def test_a_stopped_migration_rolls_back_only_once_traffic_moved(moved, expected):
    assert stopped_phase(moved) == expected


@pytest.mark.parametrize(
    "phase, moved, expected",
    [
        ("evaluating", False, "failed_eval"),
        ("notice", False, "rejected"),
        ("awaiting_approval", False, "rejected"),
        ("canary", True, "rolled_back"),
        ("awaiting_approval", True, "rolled_back"),  # a stage approval: traffic already moved
    ],
)
def test_failed_phase(phase, moved, expected):
    assert failed_phase(phase, moved) == expected


@pytest.mark.parametrize(
    "verdict, phase, moved, expected",
    [
        ("approved", "awaiting_approval", False, "canary"),
        ("approved", "awaiting_approval", True, "canary"),
        ("rejected", "awaiting_approval", False, "rejected"),
        ("rejected", "awaiting_approval", True, "rolled_back"),
        (None, "awaiting_approval", True, "awaiting_approval"),  # more approvals needed
    ],
)
def test_phase_after_decision(verdict, phase, moved, expected):
    assert phase_after_decision(verdict, phase, moved) == expected


@pytest.mark.parametrize(
    "phase, kind",
    [
        ("promoted", "promoted"),
        ("rolled_back", "rolled_back"),
        ("failed_eval", "failed_eval"),
        ("dry_run", "info"),
    ],
)
def test_notice_kind(phase, kind):
    assert notice_kind(phase) == kind


def _check(decision, reasons=()):
    return StageCheck(decision=decision, reasons=list(reasons), min_samples=100, samples={})


SOAK = Stage(percent=5, min_hours=6, max_hours=24)


@pytest.mark.parametrize(
    "check, stage, elapsed, expected",
    [
        (
            _check("breach", ["error rate up"]),
            SOAK,
            1.0,
            StageStep("roll_back", "stage 1 (5%): gate breach: error rate up"),
        ),
        (
            _check("srm", ["split off"]),
            SOAK,
            1.0,
            StageStep("roll_back", "stage 1 (5%): sample ratio mismatch (untrustworthy split): split off"),
        ),
        (_check("pass"), SOAK, 7.0, StageStep("pass")),
        (_check("inconclusive"), SOAK, 7.0, StageStep("soak")),
        (
            _check("inconclusive"),
            SOAK,
            24.0,
            StageStep("ask", "stage 1 is inconclusive after 24 hours: pass it?"),
        ),
        (
            _check("inconclusive"),
            Stage(percent=5, min_hours=2),
            2.0,
            StageStep("ask", "stage 1 is inconclusive after 2 hours: pass it?"),
        ),
        (
            _check("inconclusive"),
            Stage(percent=100, min_hours=2),
            50.0,
            StageStep("soak"),
        ),  # 100%: nothing to ask
    ],
)
def test_after_check(check, stage, elapsed, expected):
    assert after_check(check, index=1, stage=stage, elapsed_hours=elapsed) == expected


def test_stage_clock():
    assert stage_max_hours(SOAK) == 24 and stage_max_hours(Stage(percent=1, min_hours=2)) == 2
    assert time_left(6, 24, 10) == 14 and time_left(6, 24, 30) == 0


@pytest.mark.parametrize(
    "checks, per_run, suggested, busy, expected",
    [
        (399, 400, False, False, False),
        (400, 400, False, False, True),
        (3, 400, True, False, True),
        (400, 400, True, True, False),  # abort, promote_now or pause: handled in this run
    ],
)
def test_hands_over(checks, per_run, suggested, busy, expected):
    assert hands_over(checks=checks, checks_per_run=per_run, suggested=suggested, busy=busy) is expected


def test_votes():
    votes = {"alice": "approve", "bob": "reject", "carol": "approve"}
    assert approvals_of(votes) == 2 and rejecter(votes) == "bob"


def _report():
    arm = dict(
        ci=(0.8, 0.95),
        mean_score=0.9,
        calls=10,
        errors=0,
        cached_calls=0,
        latency_p50_ms=1.0,
        latency_p95_ms=2.0,
        cost_usd=0.0,
        pass_rate=0.9,
    )
    return EvalReport(
        report_id="rep-1",
        deployment="d",
        baseline_pair="p@1+a",
        target_pair="p@1+b",
        dataset=DatasetRef(name="g", hash="h", cases=10),
        epochs=1,
        arms={
            "baseline": ArmReport(pair="p@1+a", run_id="r0", **arm),
            "model_only": ArmReport(pair="p@1+b", run_id="r1", **arm),
        },
        effects={},
        flipped=[],
        flipped_count=0,
        gate=GateDecision(decision="pass", reasons=["ok"]),
        power_note="n",
    )


def test_what_the_status_and_the_ledger_keep_of_an_eval():
    assert eval_summary(None) is None and eval_evidence(None) == {}
    summary = eval_summary(_report())
    assert set(summary) == {
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
    }
    assert summary["gate"] == {"decision": "pass", "reasons": ["ok"]}
    assert eval_evidence(_report()) == {
        "runs": {"baseline": "r0", "model_only": "r1"},
        "gate": "pass",
        "report_id": "rep-1",
    }
