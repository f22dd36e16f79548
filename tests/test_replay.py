"""Replay tests: today's workflow code must replay every recorded history in tests/histories/ exactly.

Why: a migration lives for days (hour gates, approvals), so a worker deployed mid-migration replays the
history that older code wrote. If the new code would issue different commands (another activity, a timer
moved, a child started elsewhere), Temporal raises a non-determinism error and the migration is stuck.

The rule: once released, any change to workflow logic (workflows/*.py: which activities, timers, children,
signals it waits on, and in what order) goes behind ``workflow.patched("<change-id>")`` so that histories
written by the old code take the old branch; and new histories are recorded for it in the same change
(`python tests/record_histories.py`, which rewrites tests/histories/*.json) so that the new branch is
replayed from then on. Until the first release, re-recording simply replaces the files. After it, keep the
old files (rename them `<name>-<release>.json`; every *.json here is replayed) for as long as migrations
started by that code may still be running. Changes that issue the same commands in the same order (log
text, notice wording, query shape, activity input fields) need no patch; the replay test says which is which.

The last two tests prove this test can fail: the same extra step that breaks replay without a patch replays
cleanly behind ``workflow.patched``.
"""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from activities.migration import record_migration_phase
from pairshift.contracts.migration import MigrationRequest, MigrationResult, PhaseInput, migration_id
from workflows import ALL_WORKFLOWS
from workflows.evals import EvalWorkflow
from workflows.migration import MigrationWorkflow

HISTORIES = Path(__file__).resolve().parent / "histories"
# What tests/record_histories.py writes: every way a migration ends that the recorder covers, and one eval.
# Files named *-before-cancel-safe.json were recorded before workflow.patched("cancel-safe-compensation").
EXPECTED = {
    "migration_promoted",
    "migration_rolled_back",
    "migration_rejected",
    "migration_refused_start",
    "migration_rolled_back_deciding",
    "eval_promoted",
    "watch_cancelled",
    "watch_breached",
    "eval_batch_mode",  # an eval whose arms went through provider batches (issue 18; test_eval_batch_mode.py)
    # issue 20 (test_eval_workflow_scale.py, PAIRSHIFT_RECORD_SCALE_HISTORY=1): an eval that continued as
    # new (its first and last run) and a provider batch child that did (its first and last run)
    "eval_continued_first_run",
    "eval_continued_last_run",
    "provider_batch_continued_first_run",
    "provider_batch_continued_last_run",
    "scan_started",  # a DeprecationScanWorkflow that started a migration and sent a reminder
    # issue 17 item 3 (test_shadow_stage.py, PAIRSHIFT_RECORD_SHADOW_HISTORY=1): rolled back in a shadow stage
    "migration_shadow_rolled_back",
}


def load_history(path: Path) -> WorkflowHistory:
    """A recorded history with the workflow id it ran under (the code derives child ids from it)."""
    data = json.loads(path.read_text())
    return WorkflowHistory.from_json(_workflow_id(data), data)


def _workflow_id(history: dict) -> str:
    started = history["events"][0]["workflowExecutionStartedEventAttributes"]
    if started.get("workflowId"):
        return started["workflowId"]
    if started["workflowType"]["name"] == "DeprecationScanWorkflow":
        return "pairshift-deprecation-scan"  # its children's ids come from the deployments, not from it
    parent = started.get("parentWorkflowExecution")
    if parent and started["workflowType"]["name"] == "StageWatchWorkflow":  # ...-watch-<run id[:8]>-<n>
        return f"{parent['workflowId']}-watch-{parent['runId'][:8]}-1"
    if parent:  # MigrationWorkflow names its EvalWorkflow child <parent id>-eval-<parent run id[:8]>
        return f"{parent['workflowId']}-eval-{parent['runId'][:8]}"
    # The test server leaves workflowId out; a migration's id is migration-<deployment> (PRODUCT §8).
    request = json.loads(base64.b64decode(started["input"]["payloads"][0]["data"]))
    return migration_id(request["deployment"])


def replayer(*workflows: type) -> Replayer:
    return Replayer(workflows=list(workflows) or ALL_WORKFLOWS, data_converter=pydantic_data_converter)


def test_every_recorded_history_is_present() -> None:
    found = {p.stem for p in HISTORIES.glob("*.json")}
    assert EXPECTED <= found, f"missing {sorted(EXPECTED - found)}: run `python tests/record_histories.py`"


@pytest.mark.parametrize("path", sorted(HISTORIES.glob("*.json")), ids=lambda p: p.stem)
async def test_recorded_history_replays_without_nondeterminism(path: Path) -> None:
    history = load_history(path)
    assert history.events, f"{path.name} has no events"
    result = await replayer().replay_workflow(history)  # raises on any non-determinism
    assert result.replay_failure is None


# --- the replay test can fail ------------------------------------------------------------------------


# Test doubles run unsandboxed: the sandbox would re-import this test module (file reads at import time);
# sandboxing has no part in detecting non-determinism, and the real workflows above replay sandboxed.
@workflow.defn(name="MigrationWorkflow", sandboxed=False)
class UnpatchedExtraStep(MigrationWorkflow):
    """Today's workflow plus one activity before the canary, released without a patch."""

    @workflow.run
    async def run(self, req: MigrationRequest) -> MigrationResult:
        return await super().run(req)

    async def _canary(self) -> None:
        await _extra_step()
        await super()._canary()


@workflow.defn(name="MigrationWorkflow", sandboxed=False)
class PatchedExtraStep(MigrationWorkflow):
    """The same change behind workflow.patched: histories from before the change take the old branch."""

    @workflow.run
    async def run(self, req: MigrationRequest) -> MigrationResult:
        return await super().run(req)

    async def _canary(self) -> None:
        if workflow.patched("extra-step-before-canary"):
            await _extra_step()
        await super()._canary()


async def _extra_step() -> None:
    await workflow.execute_activity(
        record_migration_phase,
        PhaseInput(run_id=workflow.info().run_id, phase="canary"),
        start_to_close_timeout=timedelta(seconds=10),
    )


async def test_an_unpatched_change_fails_replay() -> None:
    history = load_history(HISTORIES / "migration_promoted.json")
    with pytest.raises(workflow.NondeterminismError, match="record_migration_phase"):
        await replayer(UnpatchedExtraStep, EvalWorkflow).replay_workflow(history)
    # A path the recording never took cannot catch the change: why every outcome has a recorded history.
    await replayer(UnpatchedExtraStep, EvalWorkflow).replay_workflow(
        load_history(HISTORIES / "migration_rejected.json")
    )


async def test_the_same_change_behind_a_patch_replays() -> None:
    for name in ("migration_promoted", "migration_rolled_back", "migration_rejected"):
        await replayer(PatchedExtraStep, EvalWorkflow).replay_workflow(
            load_history(HISTORIES / f"{name}.json")
        )


# --- both branches of cancel-safe-compensation (issue 23) are replayed ----------------------------------


def _patch_ids(path: Path) -> set[str]:
    """The workflow.patched ids a recorded history carries (its core_patch markers)."""
    ids = set()
    for event in json.loads(path.read_text())["events"]:
        marker = event.get("markerRecordedEventAttributes")
        for detail in (marker or {}).get("details", {}).values():
            for payload in detail.get("payloads", []):
                ids.add(json.loads(base64.b64decode(payload["data"]))["id"])
    return ids


def test_histories_cover_both_sides_of_the_cancel_safe_patch() -> None:
    """Histories from before the patch (``-before-cancel-safe``) replay its old branch, today's its new."""
    from workflows.migration import CANCEL_SAFE_PATCH

    migrations = sorted(HISTORIES.glob("migration_*.json"))
    before = [p for p in migrations if p.stem.endswith("-before-cancel-safe")]
    # a refused start fails before the patch is asked: it carries no marker either way
    after = [p for p in migrations if p not in before and p.stem != "migration_refused_start"]
    assert len(before) >= 4 and len(after) >= 4, [p.name for p in migrations]
    assert all(CANCEL_SAFE_PATCH not in _patch_ids(p) for p in before)
    assert all(CANCEL_SAFE_PATCH in _patch_ids(p) for p in after)


# --- both branches of watch-stage-during-decisions (issue 23 item 4) ------------------------------------


def test_histories_cover_both_sides_of_the_watch_patch() -> None:
    """A decision mid-canary recorded before the patch (``-before-watch-stage``) replays the plain wait;
    today's start a StageWatchWorkflow child, whose own histories (cancelled by the decision, breached) replay
    too."""
    from workflows.migration import WATCH_DECISIONS_PATCH

    before = HISTORIES / "migration_promoted-before-watch-stage.json"
    assert WATCH_DECISIONS_PATCH not in _patch_ids(before)
    for name in ("migration_promoted", "migration_rolled_back_deciding"):
        assert WATCH_DECISIONS_PATCH in _patch_ids(HISTORIES / f"{name}.json"), name
    outcome = json.loads((HISTORIES / "watch_breached.json").read_text())["events"][-1]
    assert outcome["eventType"] == "EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED"
    cancelled = json.loads((HISTORIES / "watch_cancelled.json").read_text())["events"][-1]
    assert cancelled["eventType"] == "EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED"


def test_histories_cover_both_sides_of_the_outbox_patch() -> None:
    """Closes and handovers recorded before ``outbox-carries-undelivered`` (``-before-outbox``) replay the
    waiting outbox; today's replay the one that carries what is undelivered."""
    from workflows.migration_outbox import OUTBOX_PATCH

    before = sorted(HISTORIES.glob("migration_*-before-outbox.json"))
    assert len(before) >= 5, [p.name for p in before]
    for path in before:
        assert OUTBOX_PATCH not in _patch_ids(path), path.name
        today = HISTORIES / path.name.replace("-before-outbox", "")
        assert OUTBOX_PATCH in _patch_ids(today), today.name


def test_histories_cover_both_sides_of_the_eval_continue_as_new_patch() -> None:
    """Evals recorded before ``eval-continue-as-new`` (one run, polls in the eval) replay the old path; the
    continued eval's runs and the provider batch child's replay the new one."""
    from workflows.evals import CONTINUE_AS_NEW_PATCH

    for name in ("eval_promoted", "eval_batch_mode"):
        assert CONTINUE_AS_NEW_PATCH not in _patch_ids(HISTORIES / f"{name}.json"), name
    for name in ("eval_continued_first_run", "eval_continued_last_run"):
        assert CONTINUE_AS_NEW_PATCH in _patch_ids(HISTORIES / f"{name}.json"), name
    for name in ("eval_continued_first_run", "provider_batch_continued_first_run"):
        last = json.loads((HISTORIES / f"{name}.json").read_text())["events"][-1]
        assert last["eventType"] == "EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW", name
    for name in ("eval_continued_last_run", "provider_batch_continued_last_run"):
        last = json.loads((HISTORIES / f"{name}.json").read_text())["events"][-1]
        assert last["eventType"] == "EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED", name


def _activities(path: Path) -> list[str]:
    """The activity types a recorded history scheduled, in order."""
    return [
        e["activityTaskScheduledEventAttributes"]["activityType"]["name"]
        for e in json.loads(path.read_text())["events"]
        if "activityTaskScheduledEventAttributes" in e
    ]


def test_histories_cover_both_sides_of_the_stage_quality_patch() -> None:
    """Stage ends recorded before ``stage-quality-notice`` (``-before-stage-quality``) replay without the
    stage_quality activity; today's read each ended stage's figures (a breach's after the baseline is
    restored, so the figures never delay a rollback) and replay too."""
    from workflows.migration import STAGE_QUALITY_PATCH

    before = sorted(HISTORIES.glob("migration_*-before-stage-quality.json"))
    assert len(before) >= 5, [p.name for p in before]
    for path in before:
        assert STAGE_QUALITY_PATCH not in _patch_ids(path) and "stage_quality" not in _activities(path)
        today = HISTORIES / path.name.replace("-before-stage-quality", "")
        if today.stem == "migration_continued_first_run":  # hands over mid-stage: no stage ends in it
            continue
        assert STAGE_QUALITY_PATCH in _patch_ids(today) and "stage_quality" in _activities(today), today.name
    rolled_back = _activities(HISTORIES / "migration_rolled_back.json")
    assert rolled_back.index("restore_baseline") < rolled_back.index("stage_quality")
    assert _activities(HISTORIES / "migration_promoted.json").count("stage_quality") == 3  # each stage passed
