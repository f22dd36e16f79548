"""DeprecationScanWorkflow on the time-skipping server: 100 daily scans of a snapshot retiring in 45 days
start one migration per affected deployment and send each reminder once; `schedules install` twice leaves one
Schedule each (dev server).

MigrationWorkflow is a stand-in registered under its name: it records the migration as the real one's first
activity does (the real ``prepare_migration``), then stays live until signalled, so both "a live migration is
left alone" and "a finished deprecation migration is not started again" are exercised.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import uuid
from collections.abc import AsyncIterator
from datetime import date, timedelta

import pytest
from sqlmodel import select
from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, ScheduleOverlapPolicy
from temporalio.worker import Worker
from test_provider_calendar import calendar_cli  # noqa: F401 - fixture
from workflow_fixtures import CapturedNotices, captured_notices, sqlite_settings  # noqa: F401 - fixtures

from pairshift.registry import open_registry
from pairshift.registry.models import (
    Dataset,
    DatasetVersion,
    Deployment,
    MigrationRow,
    Model,
    PolicyRow,
    PromptVersion,
    Reminder,
)
from pairshift.settings import get_settings

with workflow.unsafe.imports_passed_through():
    from activities.deprecation_scan import ALL as DEPRECATION_ACTIVITIES
    from activities.migration import prepare_migration, record_migration_phase
    from activities.notices import send_notice
    from pairshift.cli.provider_calendar import (
        DRIFT_SCHEDULE,
        RETENTION_SCHEDULE,
        SCAN_SCHEDULE,
        install_schedules,
    )
    from pairshift.contracts.deprecation_scan import ScanRequest, ScanResult
    from pairshift.contracts.migration import MigrationRequest, PhaseInput, PrepareInput
    from workflows.deprecation_scan import DeprecationScanWorkflow

D0 = date(2026, 3, 1)
RETIRES = D0 + timedelta(days=45)
STEP = dict(start_to_close_timeout=timedelta(seconds=30))


@workflow.defn(name="MigrationWorkflow", sandboxed=False)  # a test double: the module imports pytest fixtures
class StandInMigration:
    """Records the migration like the real workflow's first step, then stays live until ``finish``."""

    def __init__(self) -> None:
        self.finished = False

    @workflow.signal
    def finish(self) -> None:
        self.finished = True

    @workflow.run
    async def run(self, req: MigrationRequest) -> str:
        info = workflow.info()
        if req.requested_by != "blocker":  # the blocker only occupies the id, like a migration just starting
            await workflow.execute_activity(
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
                **STEP,
            )
        await workflow.wait_condition(lambda: self.finished)
        if req.requested_by != "blocker":
            await workflow.execute_activity(
                record_migration_phase,
                PhaseInput(run_id=info.run_id, phase="rejected", finished=True),
                **STEP,
            )
        return "rejected"


@pytest.fixture
def scan_registry(sqlite_settings: str) -> str:  # noqa: F811 - fixture
    """a, b on the retiring snapshot; c on its replacement; d on it through an alias but without a dataset."""
    with open_registry(sqlite_settings).session() as s:
        s.add(
            Model(
                id="old-2024",
                provider="sim",
                aliases=["old-latest"],
                retires_on=RETIRES,
                replacement="new-2025",
            )
        )
        s.add(Model(id="new-2025", provider="sim"))
        # A migration is resolved against its dataset, so the golden dataset exists (its cases do not matter).
        s.add(DatasetVersion(id="golden@1", name="golden", version="1", content_hash="g", n_cases=0))
        s.add(Dataset(name="golden", current_version="golden@1"))
        s.add(
            PromptVersion(
                id="p@1", name="p", version="1", template="{{ x }}", variables=["x"], content_hash="h"
            )
        )
        s.add(
            PolicyRow(
                name="default", spec={"name": "default", "notice": {"slack_channel": None}}, content_hash="d"
            )
        )
        for name, model, dataset in (
            ("a", "old-2024", "golden"),
            ("b", "old-2024", "golden"),
            ("c", "new-2025", "golden"),
            ("d", "old-latest", None),
        ):
            s.add(Deployment(name=name, active_prompt="p@1", active_model=model, dataset=dataset))
    return sqlite_settings


@pytest.fixture
async def scan_worker(time_skipping_env, scan_registry: str) -> AsyncIterator[tuple[Client, str]]:
    queue = f"scan-{uuid.uuid4().hex[:8]}"
    activities = [*DEPRECATION_ACTIVITIES, send_notice, prepare_migration, record_migration_phase]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        async with Worker(
            time_skipping_env.client,
            task_queue=queue,
            activity_executor=pool,
            activities=activities,
            workflows=[DeprecationScanWorkflow, StandInMigration],
        ):
            yield time_skipping_env.client, queue


async def scan(client: Client, queue: str, day: date) -> ScanResult:
    return await client.execute_workflow(
        DeprecationScanWorkflow.run,
        ScanRequest(today=day),
        id=f"scan-{uuid.uuid4().hex[:8]}",
        task_queue=queue,
    )


async def test_hundred_daily_scans_start_once_and_remind_once(
    scan_worker, scan_registry: str, time_skipping_env, captured_notices: CapturedNotices
) -> None:  # noqa: F811 - fixture
    # The scan's days are its input, not the server's clock; left on, time skipping would jump the live
    # stand-ins to their execution timeout while a scan's result is awaited.
    with time_skipping_env.auto_time_skipping_disabled():
        await _hundred_scans(*scan_worker)
    _assert_once_each(scan_registry, captured_notices)


async def _hundred_scans(client: Client, queue: str) -> None:
    blocker = await client.start_workflow(
        "MigrationWorkflow",
        MigrationRequest(deployment="b", to_model="new-2025", requested_by="blocker"),
        id="migration-b",
        task_queue=queue,
    )
    started: list[str] = []
    for day in range(100):
        result = await scan(client, queue, D0 + timedelta(days=day))
        started += [m.deployment for m in result.started]
        if day == 0:
            assert [m.id for m in result.started] == ["migration-a"] and result.already_running == ["b"]
            assert result.blocked == {"d": "deployment d has no golden dataset: a migration needs evidence"}
            await blocker.signal("finish")
            await blocker.result()
        if (
            day == 10
        ):  # the live migrations end (rejected): they were deprecation migrations, so none restarts
            for dep in ("a", "b"):
                handle = client.get_workflow_handle(f"migration-{dep}")
                await handle.signal(StandInMigration.finish)
                assert await handle.result() == "rejected"
        if day >= 45:
            assert {f.deployment for f in result.flags} == {"a", "b", "d"}
    assert sorted(started) == ["a", "b"]


def _assert_once_each(scan_registry: str, captured: CapturedNotices) -> None:
    with open_registry(scan_registry).session() as s:
        rows = s.exec(select(MigrationRow)).all()
        assert sorted((m.deployment, m.reason, m.requested_by) for m in rows) == [
            ("a", "deprecation", "pairshift-deprecation-scan"),
            ("b", "deprecation", "pairshift-deprecation-scan"),
        ]
        assert len(s.exec(select(Reminder)).all()) == 3 * 7
    reminders = [n for n in captured.notices if n.kind == "deprecation_reminder"]
    sent = sorted((n.deployment, n.facts["threshold_days"]) for n in reminders)
    assert sent == sorted((d, t) for d in "abd" for t in (60, 30, 14, 7, 3, 1, 0))
    first_a = next(n for n in reminders if n.deployment == "a")
    assert (
        first_a.migration == "migration-a"
        and "started migration migration-a towards new-2025" in first_a.text
    )
    assert all(n.asks_decision for n in reminders if n.deployment == "d")
    assert "c" not in {n.deployment for n in captured.notices}


async def test_cli_scan_prints_what_it_did(
    scan_worker,
    calendar_cli,
    time_skipping_env,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, queue = scan_worker
    monkeypatch.setenv(
        "PAIRSHIFT_TEMPORAL_ADDRESS", time_skipping_env.client.service_client.config.target_host
    )
    monkeypatch.setenv("PAIRSHIFT_TASK_QUEUE", queue)
    get_settings.cache_clear()
    day = (RETIRES - timedelta(days=20)).isoformat()
    out = await asyncio.to_thread(calendar_cli, "deprecations", "scan", "--today", day, "--json")
    assert out.code == 0, out.err
    data = out.json()
    assert [m["id"] for m in data["started"]] == ["migration-a", "migration-b"]
    assert sorted((r["deployment"], r["days_before"]) for r in data["reminders"]) == [
        ("a", 30),
        ("b", 30),
        ("d", 30),
    ]
    human = await asyncio.to_thread(calendar_cli, "deprecations", "scan", "--today", day)
    assert human.code == 0 and "a: a migration is already running, left alone" in human.out
    assert "d: not started: deployment d has no golden dataset" in human.out
    for dep in ("a", "b"):  # leave nothing running on the session's server
        await client.get_workflow_handle(f"migration-{dep}").signal(StandInMigration.finish)
    bad = await asyncio.to_thread(calendar_cli, "deprecations", "scan", "--today", "someday")
    assert bad.code == 2 and "--today: 'someday' is not a date" in bad.err


async def _listed(client: Client, ids: set[str]) -> list[str]:
    """Schedule ids the server lists (visibility is eventually consistent: poll until all of ``ids`` show)."""
    for _ in range(100):
        listed = [s.id async for s in await client.list_schedules()]
        if ids <= set(listed):
            return listed
        await asyncio.sleep(0.1)
    return listed


async def test_schedules_install_twice_leaves_one_schedule_each(
    dev_env,
    calendar_cli,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = dev_env.client
    queue = f"sched-{uuid.uuid4().hex[:8]}"
    first = await install_schedules(client, task_queue=queue)
    assert first == {SCAN_SCHEDULE: "installed", DRIFT_SCHEDULE: "installed", RETENTION_SCHEDULE: "installed"}
    monkeypatch.setenv("PAIRSHIFT_TEMPORAL_ADDRESS", client.service_client.config.target_host)
    get_settings.cache_clear()
    again = await asyncio.to_thread(calendar_cli, "schedules", "install", "--json")
    assert again.code == 0, again.err
    assert again.json() == [
        {"id": SCAN_SCHEDULE, "status": "already installed"},
        {"id": DRIFT_SCHEDULE, "status": "already installed"},
        {"id": RETENTION_SCHEDULE, "status": "already installed"},
    ]
    try:
        listed = await _listed(client, {SCAN_SCHEDULE, DRIFT_SCHEDULE, RETENTION_SCHEDULE})
        assert [listed.count(i) for i in (SCAN_SCHEDULE, DRIFT_SCHEDULE, RETENTION_SCHEDULE)] == [1, 1, 1]
        retention = await client.get_schedule_handle(RETENTION_SCHEDULE).describe()
        assert retention.schedule.action.workflow == "RetentionWorkflow"
        desc = await client.get_schedule_handle(SCAN_SCHEDULE).describe()
        assert desc.schedule.policy.overlap == ScheduleOverlapPolicy.SKIP
        assert desc.schedule.policy.catchup_window == timedelta(days=1)
        assert desc.schedule.spec.intervals[0].every == timedelta(days=1)
        assert desc.schedule.action.workflow == "DeprecationScanWorkflow"
        assert desc.schedule.action.task_queue == queue  # the second install changed nothing
    finally:
        for schedule_id in (SCAN_SCHEDULE, DRIFT_SCHEDULE, RETENTION_SCHEDULE):
            await client.get_schedule_handle(schedule_id).delete()


async def test_a_scan_starts_its_migrations_together_and_sends_its_reminders_together(
    scan_worker, scan_registry: str, time_skipping_env, captured_notices: CapturedNotices
) -> None:  # noqa: F811 - fixture
    """A snapshot many deployments use (issue 20 item 2, bench/scale_migrations_bench.py): every migration is
    started by one workflow task and every reminder sent from one, not one task after another (a scan over 200
    deployments took 180 s on a busy worker while the first migrations already ran)."""
    with open_registry(scan_registry).session() as s:
        for i in range(30):
            s.add(
                Deployment(name=f"f{i:02d}", active_prompt="p@1", active_model="old-2024", dataset="golden")
            )
    client, queue = scan_worker
    with time_skipping_env.auto_time_skipping_disabled():
        handle = await client.start_workflow(
            DeprecationScanWorkflow.run,
            ScanRequest(today=RETIRES - timedelta(days=20)),
            id=f"scan-{uuid.uuid4().hex[:8]}",
            task_queue=queue,
        )
        result = await handle.result()
        for started in result.started:  # leave nothing running on the session's server
            await client.get_workflow_handle(started.id).signal(StandInMigration.finish)
    assert len(result.started) == 32 and len(result.reminders) == 33
    events = (await handle.fetch_history()).events
    starts = {
        e.start_child_workflow_execution_initiated_event_attributes.workflow_task_completed_event_id
        for e in events
        if e.event_type == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED
    }
    notices = [
        e.activity_task_scheduled_event_attributes
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == "send_notice"
    ]
    assert len(starts) == 1, f"the 32 migrations were started by {len(starts)} workflow tasks"
    assert len(notices) == 33 and len({n.workflow_task_completed_event_id for n in notices}) == 1
    assert sum(n.kind == "deprecation_reminder" for n in captured_notices.notices) == 33
