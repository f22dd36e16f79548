"""The Temporal UI path (PRODUCT §1, §8), in a real browser: a person starts a migration from the Web UI's
Start Workflow form, approves it from the workflow page's Send a Signal form, and the migration proceeds to
promotion.

Everything is real: `pairshift server` (the Temporal dev server with its Web UI) and `pairshift worker` as
processes (EmbeddedStack), the examples/ config with its seconds-long `demo` policy, headless Chromium driving
the UI, and simulated production traffic written to the registry while the canary runs. The test reads
progress through the `status` query (polling, never sleeping on a guess).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import browser
import pytest
from browser import (
    browser_page,
    expect_execution_status,
    require_chromium,
    send_signal,
    snapshot,
    start_workflow,
)

from pairshift import ledger
from pairshift.apply import apply_path
from pairshift.contracts.migration import MigrationStatus, migration_id
from pairshift.embedded import EmbeddedStack, port_open
from pairshift.migration_records import audit_log
from pairshift.registry import open_registry
from pairshift.registry.models import Deployment
from pairshift.router import Router
from pairshift.settings import TASK_QUEUE
from pairshift.sim.traffic import TrafficGenerator, profile_for
from pairshift.temporal_client import connect
from workflows.migration import MigrationWorkflow

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DEPLOYMENT = "support-triage"
FROM_PAIR = "support-triage@1+sim-classic-2024-06"
TO_PAIR = "support-triage@2+sim-fresh-2025-09"
# PRODUCT §8's input, as a person would type it into the form; the requester is not the approver.
REQUEST = {
    "deployment": DEPLOYMENT,
    "to_model": "sim-fresh-2025-09",
    "to_prompt": "support-triage@2",
    "reason": "manual",
    "requested_by": "bob",
    "policy": None,
    "dry_run": False,
}
APPROVAL = {"by": "alice", "channel": "temporal-ui"}
# Both pairs behave alike in production, so every canary stage is non-inferior and passes at min_hours.
ALIKE = {"error_rate": 0.002, "latency_median_ms": 400, "input_tokens": 200, "output_tokens": 60}
TRAFFIC_PER_POLL = 300


@pytest.fixture
def stack(pairshift_env: Path):
    require_chromium()  # before starting anything: a skip must not leave processes behind
    with EmbeddedStack(pairshift_env) as running:
        apply_path(open_registry(), EXAMPLES, by="test")
        yield running


async def wait_for_ui(stack: EmbeddedStack, timeout_s: float = 60) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not port_open(stack.ui_port):
        assert loop.time() < deadline, f"the Web UI did not listen on {stack.ui_port}; see {stack.log_dir}"
        await asyncio.sleep(0.1)


async def wait_for_worker(client, timeout_s: float = 60) -> None:
    """Until the worker process polls the `pairshift` task queue (the UI's form checks for it too)."""
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

    req = DescribeTaskQueueRequest(
        namespace=client.namespace,
        task_queue=TaskQueue(name=TASK_QUEUE),
        task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not (await client.workflow_service.describe_task_queue(req)).pollers:
        assert loop.time() < deadline, "the worker process never polled the task queue"
        await asyncio.sleep(0.2)


async def poll_status(
    handle,
    until: Callable[[MigrationStatus], bool],
    *,
    timeout_s: float,
    between: Callable[[MigrationStatus], None] | None = None,
) -> MigrationStatus:
    """Query `status` until ``until`` holds; ``between`` runs after each miss (e.g. to send traffic)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last: MigrationStatus | None = None
    while True:
        try:
            last = await handle.query(MigrationWorkflow.status)
        except Exception as exc:  # noqa: BLE001 - not started yet, or the worker is busy: ask again
            if loop.time() > deadline:
                raise AssertionError(f"no status from the workflow: {exc}") from exc
        if last is not None and until(last):
            return last
        if loop.time() > deadline:
            tail = [f"{h.event} {h.detail[:80]}" for h in last.history[-6:]] if last else []
            raise AssertionError(
                f"timed out; last phase {last and last.phase}, history tail {tail}, "
                f"gate {last and last.stage and last.stage.gate}"
            )
        if between and last is not None:
            between(last)
        await asyncio.sleep(0.2)


@pytest.mark.e2e
@pytest.mark.timeout(240)
async def test_start_and_approve_a_migration_from_the_temporal_ui(stack: EmbeddedStack, tmp_path: Path):
    await wait_for_ui(stack)
    shots = tmp_path / "screenshots"
    wf_id = migration_id(DEPLOYMENT)
    client = await connect(stack.address)
    await wait_for_worker(client)
    handle = client.get_workflow_handle(wf_id)
    router = Router(DEPLOYMENT, registry=open_registry(), refresh_s=3600).start()
    traffic = TrafficGenerator(
        router, profile_for({"sim-classic-2024-06": ALIKE, "sim-fresh-2025-09": ALIKE}, seed=11)
    )

    def production_traffic(st: MigrationStatus) -> None:
        if st.phase == "canary":
            traffic.generate(TRAFFIC_PER_POLL)

    try:
        async with browser_page(shots) as page:
            await start_workflow(
                page,
                stack.ui_url,
                namespace="default",
                workflow_id=wf_id,
                task_queue=TASK_QUEUE,
                workflow_type="MigrationWorkflow",
                payload=REQUEST,
            )
            st = await poll_status(handle, lambda s: s.phase == "awaiting_approval", timeout_s=90)
            assert st.requested_by == "bob" and (st.from_pair, st.to_pair) == (FROM_PAIR, TO_PAIR)
            assert st.eval["gate"]["decision"] in ("pass", "inconclusive"), st.eval["gate"]
            assert st.approvals == []

            await send_signal(
                page, stack.ui_url, namespace="default", workflow_id=wf_id, signal="approve", payload=APPROVAL
            )
            st = await poll_status(handle, lambda s: s.phase != "awaiting_approval", timeout_s=30)
            assert st.phase == "canary", f"the approval did not start the canary: {st.history[-3:]}"
            assert [(a.by, a.channel, a.decision, a.stage) for a in st.approvals] == [
                ("alice", "temporal-ui", "approve", 0)
            ]

            st = await poll_status(
                handle,
                lambda s: s.phase not in ("canary", "awaiting_approval"),
                timeout_s=150,
                between=production_traffic,
            )
            assert st.phase == "promoted", f"{st.phase}: {st.outcome}"
            await expect_execution_status(
                page, stack.ui_url, namespace="default", workflow_id=wf_id, status="Completed"
            )
            await snapshot(page, shots, "promoted")
    finally:
        router.close()

    reg = open_registry()
    with reg.session() as s:
        dep = s.get(Deployment, DEPLOYMENT)
        assert (dep.active_pair, dep.candidate_pair) == (TO_PAIR, None)
        assert [r.pair for r in ledger.history(s, DEPLOYMENT)] == [FROM_PAIR, TO_PAIR]
        approvals = [(e.actor, e.channel, e.accepted) for e in audit_log(s, wf_id) if e.event == "approve"]
    assert approvals == [("alice", "temporal-ui", True)], (
        "the audit log records alice's approval via temporal-ui"
    )


@pytest.mark.parametrize("ci, outcome", [("", pytest.skip.Exception), ("true", pytest.fail.Exception)])
def test_a_missing_browser_skips_on_a_laptop_and_fails_under_ci(ci, outcome, monkeypatch, tmp_path):
    monkeypatch.setattr(browser, "CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="chromium"):
        browser.require_chromium()
