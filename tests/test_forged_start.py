"""A MigrationWorkflow start is the public input the Temporal Web UI's Start Workflow form sends: it may not
carry the continue-as-new carry (``resume``) nor an inline ``policy`` (issue 15, Build 4).

The review's two attacks, replayed as the UI sends them (plain JSON) on the time-skipping server: a forged
``resume`` that named an unregistered model and ``promote_now_by: mallory`` reached ``promoted``; an inline
policy with no approvers and no separation of duties let the requester approve herself into the canary. Both
now fail at once naming the field, and change nothing: the deployment, its ledger, the migrations table, the
audit log. The refusal sits behind ``workflow.patched``: its history replays, and so does every recorded one
(tests/test_replay.py)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from migration_harness import apply_small, migration_worker
from sqlmodel import select
from temporalio.client import WorkflowFailureError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from pairshift import ledger
from pairshift.contracts.migration import MigrationCarry, MigrationPlan, MigrationRequest
from pairshift.migration_records import audit_log
from pairshift.policy import Policy
from pairshift.registry import open_registry
from pairshift.registry.models import Deployment, MigrationRow
from workflows import ALL_WORKFLOWS
from workflows.migration_rules import refuse_start

START = {"deployment": "support-triage", "to_model": "sim-fresh-2025-09", "requested_by": "mallory"}
FORGED_RESUME: dict[str, Any] = {
    "origin_run_id": "forged",
    "plan": {
        "deployment": "support-triage",
        "from_prompt": "support-triage@1",
        "from_model": "sim-classic-2024-06",
        "to_prompt": "support-triage@1",
        "to_model": "totally-unregistered-model",
        "dataset": None,
        "policy": {"name": "default"},
    },
    "stage_index": 0,
    "stage_since": "2026-01-01T00:00:00Z",
    "stage_elapsed_hours": 0,
    "promote_now_by": "mallory",
}
INLINE_POLICY: dict[str, Any] = {
    "approvals": {"approvers": [], "separation_of_duties": False},
    "canary": {"stages": [{"percent": 100}]},
}


@pytest.fixture
def env(pairshift_env, tmp_path):
    apply_small(tmp_path)
    return open_registry()


def snapshot() -> dict[str, Any]:
    """Everything a start could change: the deployment row, its ledger, migrations, audit events."""
    with open_registry().session() as s:
        dep = s.get(Deployment, "support-triage")
        return {
            "deployment": dep.model_dump(),
            "ledger": [(r.pair, r.reason, r.evidence) for r in ledger.history(s, "support-triage")],
            "migrations": s.exec(select(MigrationRow)).all(),
        }


async def refused(client, tq: str, start: dict[str, Any]) -> tuple[str, Any]:
    """Start ``start`` as raw JSON (as the Web UI does); the refusal's message and the closed handle."""
    handle = await client.start_workflow(
        "MigrationWorkflow", start, id=f"migration-support-triage-{uuid.uuid4().hex[:6]}", task_queue=tq
    )
    with pytest.raises(WorkflowFailureError) as info:
        await handle.result()
    return info.value.cause.message, handle


@pytest.mark.parametrize(
    "start, field, words",
    [
        ({**START, "resume": FORGED_RESUME}, "resume", ["continue-as-new carry is internal"]),
        ({**START, "policy": INLINE_POLICY}, "policy", ["inline policy is refused"]),
        ({**START, "policy": {}}, "policy", ["inline policy is refused"]),
    ],
    ids=["forged-resume", "inline-policy", "empty-inline-policy"],
)
async def test_a_forged_start_is_refused_naming_the_field_and_changes_nothing(
    env, time_skipping_env, start, field, words
):
    before = snapshot()
    async with migration_worker(time_skipping_env.client, traffic=None) as tq:
        message, handle = await refused(time_skipping_env.client, tq, start)
        history = await handle.fetch_history()
    assert message.startswith(f"{field}: "), message
    for w in words:
        assert w in message
    assert snapshot() == before, "a refused start changed the registry"
    with open_registry().session() as s:
        assert audit_log(s, handle.id) == []
    # Only the refusal ran: no activity was scheduled, no child, no timer.
    kinds = {e.WhichOneof("attributes") for e in history.events}
    assert not any("activity" in k or "child" in k or "timer" in k for k in kinds), kinds
    # ...and its history replays on today's code (the refusal is behind workflow.patched).
    replay = await Replayer(workflows=ALL_WORKFLOWS, data_converter=pydantic_data_converter).replay_workflow(
        history
    )
    assert replay.replay_failure is None


def _carry(origin: str) -> MigrationCarry:
    plan = MigrationPlan(
        deployment="d",
        from_prompt="p@1",
        from_model="a",
        to_prompt="p@1",
        to_model="b",
        dataset=None,
        policy=Policy(),
    )
    return MigrationCarry(
        origin_run_id=origin,
        plan=plan,
        stage_index=0,
        stage_since=datetime(2026, 1, 1, tzinfo=UTC),
        stage_elapsed_hours=0,
    )


@pytest.mark.parametrize(
    "resume, policy, continued, first, expected",
    [
        (None, None, None, "r1", None),  # a plain start
        ("r1", None, "r3", "r1", None),  # a continuation of this chain
        ("r1", {"a": 1}, "r3", "r1", None),  # a continuation of a migration started before the refusal
        ("r1", None, None, "r1", "resume: refused: the continue-as-new carry is internal"),
        ("forged", None, "r3", "r1", "resume: refused: the carry names run 'forged' as its origin"),
        (None, {}, None, "r1", "policy: an inline policy is refused"),
        (None, {"approvals": {}}, "r0", "r1", "policy: an inline policy is refused"),  # a cron/retry rerun
    ],
)
def test_refuse_start(resume, policy, continued, first, expected):
    req = MigrationRequest(
        deployment="d", to_model="b", policy=policy, resume=_carry(resume) if resume else None
    )
    why = refuse_start(req, continued_run_id=continued, first_run_id=first)
    assert (why is None) if expected is None else why.startswith(expected), why
