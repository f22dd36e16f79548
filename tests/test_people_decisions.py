"""Approvals compare persons, whatever channel a decision came through; approvals.channels says where
approvals may come from; a pause is recorded with who sent it and ends, after canary.max_pause_hours, by
asking for a decision (issue 15, Build 5). On the time-skipping server with the harness's people: alice
(U_ALICE, alice@example.com), bob (U_BOB, bob@example.com), carol (carol@example.com)."""

from __future__ import annotations

import pytest
from migration_harness import (
    TEST_POLICY,
    Traffic,
    apply_small,
    migration_worker,
    start,
    status,
    wait_for,
    waiting_on,
)
from temporalio.client import WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from pairshift.contracts.migration import ApproveSignal, DecideUpdate, PauseSignal
from pairshift.migration_records import audit_log
from pairshift.people import People, Person
from pairshift.policy import ApprovalPolicy
from pairshift.registry import open_registry
from pairshift.registry.models import Deployment
from workflows import ALL_WORKFLOWS
from workflows.migration import MigrationWorkflow
from workflows.migration_rules import refuse_decision, refuse_privileged, signal_channel, voter

SAME = {"error_rate": 0.005, "latency_median_ms": 400, "input_tokens": 200, "output_tokens": 60}
BEHAVIOURS = {"sim-classic-2024-06": SAME, "sim-fresh-2025-09": SAME}
BASELINE = "support-triage@1+sim-classic-2024-06"


async def refused(handle, update: DecideUpdate) -> str:
    with pytest.raises(WorkflowUpdateFailedError) as info:
        await handle.execute_update(MigrationWorkflow.decide, update)
    return str(info.value.cause)


async def test_persons_not_strings_and_only_the_policys_channels(pairshift_env, tmp_path, time_skipping_env):
    approvals = {**TEST_POLICY["approvals"], "required": 2, "channels": ["slack"]}
    apply_small(tmp_path, policy={**TEST_POLICY, "approvals": approvals})
    client = time_skipping_env.client
    async with migration_worker(client, traffic=None) as tq:
        handle = await start(client, tq, requested_by="bob")  # bob on the CLI (--as bob)
        await wait_for(handle, waiting_on(0))
        # bob approving his own migration as his Slack user: the same person
        why = await refused(handle, DecideUpdate(by="U_BOB", decision="approve", channel="slack"))
        assert "separation of duties: U_BOB and bob are both bob" in why
        # the CLI is not an approval channel of this policy
        why = await refused(handle, DecideUpdate(by="alice", decision="approve", channel="cli"))
        assert "approvals through cli are not accepted" in why
        # a signal claiming to be Slack counts as the Temporal UI, which this policy does not accept
        await handle.signal(MigrationWorkflow.approve, ApproveSignal(by="alice", channel="slack"))
        st = await wait_for(handle, lambda st: st.history[-1].event == "approve_ignored")
        assert "approvals through temporal-ui are not accepted" in st.history[-1].detail
        answer = await handle.execute_update(
            MigrationWorkflow.decide, DecideUpdate(by="U_ALICE", decision="approve", channel="slack")
        )
        assert (answer.approvals, answer.required) == (1, 2)
        # alice again, by her email: one person, one vote
        why = await refused(handle, DecideUpdate(by="Alice@Example.com", decision="approve", channel="slack"))
        assert "already decided on stage 0 (as alice)" in why
        # a rejection counts from any channel (it moves no traffic)
        await handle.execute_update(
            MigrationWorkflow.decide, DecideUpdate(by="carol@example.com", decision="reject", channel="cli")
        )
        result = await handle.result()
        st = await status(handle)
    assert result.phase == "rejected" and "rejected by carol" in result.outcome
    assert [(a.by, a.person, a.channel) for a in st.approvals] == [
        ("U_ALICE", "alice", "slack"),
        ("carol@example.com", "carol", "cli"),
    ]


async def test_a_pause_is_recorded_with_who_and_ends_by_asking(pairshift_env, tmp_path, time_skipping_env):
    canary = {**TEST_POLICY["canary"], "check_every_minutes": 60, "max_pause_hours": 2}
    canary["stages"] = [{"percent": 20, "min_hours": 10}, {"percent": 100}]
    apply_small(tmp_path, policy={**TEST_POLICY, "canary": canary})
    client = time_skipping_env.client
    traffic = Traffic(BEHAVIOURS)
    async with migration_worker(client, traffic=traffic) as tq:
        handle = await start(client, tq)
        await wait_for(handle, waiting_on(0))
        await handle.execute_update(MigrationWorkflow.decide, DecideUpdate(by="alice", decision="approve"))
        await wait_for(handle, lambda st: st.phase == "canary")
        await handle.signal(MigrationWorkflow.pause, PauseSignal(by="dave", channel="cli"))
        # the pause outlasts max_pause_hours on skipped time: a person is asked, nobody answers in time
        result = await handle.result()
        st = await status(handle)
        history = await handle.fetch_history()
    traffic.close()
    # the pause limit is behind workflow.patched: its history replays on today's code
    replay = await Replayer(workflows=ALL_WORKFLOWS, data_converter=pydantic_data_converter).replay_workflow(
        history
    )
    assert replay.replay_failure is None
    events = [h.event for h in st.history]
    assert "pause_expired" in events and events.index("pause_expired") < events.index("awaiting_approval", 4)
    assert result.phase == "rolled_back" and "no decision within" in result.outcome
    with open_registry().session() as s:
        pause = next(e for e in audit_log(s, handle.id) if e.event == "pause")
        assert (pause.actor, pause.channel) == ("dave", "cli")
        assert s.get(Deployment, "support-triage").active_pair == BASELINE


PEOPLE = People(
    people=(
        Person(name="alice", slack="U_ALICE", email="alice@example.com"),
        Person(name="bob", slack="U_BOB", email="bob@example.com", temporal="bob@corp"),
    )
)
NAMED = ApprovalPolicy(approvers=["alice", "bob"], channels=["slack", "cli"])


@pytest.mark.parametrize(
    "by, decision, policy, channel, voted, expected",
    [
        ("alice", "approve", NAMED, "cli", set(), None),
        ("U_ALICE", "approve", NAMED, "slack", set(), None),
        ("ALICE@example.com", "approve", NAMED, "slack", set(), None),
        ("U_BOB", "approve", NAMED, "slack", set(), "U_BOB and carol"),  # not the requester: see below
        (
            "bob@corp",
            "approve",
            NAMED,
            "temporal-ui",
            set(),
            "approvals through temporal-ui are not accepted",
        ),
        ("bob@corp", "reject", NAMED, "temporal-ui", set(), None),  # rejections from any channel
        ("mallory", "approve", NAMED, "cli", set(), "mallory is not an approver"),
        ("U_ALICE", "approve", NAMED, "slack", {"alice"}, "already decided on stage 0 (as alice)"),
        ("eve", "approve", ApprovalPolicy(approvers=[]), "cli", set(), "names no approvers"),
        ("eve", "approve", ApprovalPolicy(approvers="anyone"), "cli", set(), None),
        ("one", "approve", ApprovalPolicy(approvers="anyone"), "cli", set(), None),
    ],
)
def test_refuse_decision_compares_persons(by, decision, policy, channel, voted, expected):
    requester = "carol"
    if expected == "U_BOB and carol":  # bob requested as bob@corp, approves as his Slack user
        requester, expected = "bob@corp", "separation of duties: U_BOB and bob@corp are both bob"
    why = refuse_decision(
        by=by,
        decision=decision,
        stage=None,
        waiting_stage=0,
        policy=policy,
        requester=requester,
        voted=voted,
        people=PEOPLE,
        channel=channel,
    )
    assert (why is None) if expected is None else (expected in why), why


def test_plans_recorded_before_people_compare_names_as_sent():
    legacy = dict(stage=None, waiting_stage=0, requester="bob", voted=set(), people=None, channel="cli")
    assert refuse_decision(by="U_BOB", decision="approve", policy=NAMED, **legacy) is not None  # not listed
    assert (
        refuse_decision(by="eve", decision="approve", policy=ApprovalPolicy(approvers=[]), **legacy) is None
    )
    assert (
        refuse_decision(by="eve", decision="approve", policy=ApprovalPolicy(approvers="anyone"), **legacy)
        is None
    )


def test_promote_now_and_signals():
    assert "separation of duties" in refuse_privileged(
        by="U_BOB", policy=NAMED, requester="bob", people=PEOPLE, channel="cli"
    )
    assert (
        refuse_privileged(by="U_ALICE", policy=NAMED, requester="bob", people=PEOPLE, channel="cli") is None
    )
    assert signal_channel("slack") == "temporal-ui" and signal_channel("cli") == "cli"
    assert voter("Alice@Example.com", PEOPLE) == "alice" and voter("Alice", None) == "Alice"
