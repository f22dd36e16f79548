"""Record the workflow histories that tests/test_replay.py replays: `python tests/record_histories.py`.

Runs five migrations of the small examples/ copy (20 cases, epochs 1, the harness's seconds-long TEST_POLICY)
on the time-skipping test server, in-process, each on a fresh registry and a fresh server:

- ``migration_promoted``: approved (update), paused and resumed in stage 0, stage 1 approved (signal),
  promoted;
- ``migration_rolled_back``: a candidate with a 20% error rate, rolled back by the stage-0 gate;
- ``migration_rolled_back_deciding``: the candidate breaks while stage 1 waits for a decision: the
  StageWatchWorkflow child (``watch_breached``) sees the breach and the migration rolls back;
- ``migration_rejected``: an ignored signal from a non-approver, then rejected (update) before any traffic
  moved;
- ``migration_continued_first_run`` / ``_last_run``: a canary that continues as new every two gate checks;
- ``migration_refused_start``: a start carrying an inline policy, refused before anything runs;

and writes ``(await handle.fetch_history()).to_json()`` of each MigrationWorkflow, and of the promoted one's
EvalWorkflow child (``eval_promoted``) and StageWatchWorkflow child (``watch_cancelled``, cancelled once the
stage-1 approval came), to ``tests/histories/<name>.json``. Each scenario asserts the outcome
it is named after, so a re-recording that drifted fails here instead of recording the wrong thing.

Re-record whenever workflow code changes on purpose, in the same change (see tests/test_replay.py).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

# Run as a script, so its folder is on sys.path and the test harness beside it imports.
from migration_harness import Traffic, apply_small, migration_worker, wait_for, waiting_on
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from pairshift.contracts.migration import (
    ApproveSignal,
    DecideUpdate,
    MigrationRequest,
    PauseSignal,
    ResumeSignal,
    migration_id,
)
from pairshift.registry.store import forget_registry
from pairshift.settings import get_settings
from pairshift.sim.traffic import TrafficGenerator, profile_for
from workflows.migration import MigrationWorkflow

TESTS = Path(__file__).resolve().parent
HISTORIES = TESTS / "histories"
DEPLOYMENT = "support-triage"
CASES = 20
MAX_BYTES = 1_000_000
SAME = {"error_rate": 0.005, "latency_median_ms": 400, "input_tokens": 200, "output_tokens": 60}
ALIKE = {"sim-classic-2024-06": SAME, "sim-fresh-2025-09": SAME}
WORSE = {"sim-classic-2024-06": SAME, "sim-fresh-2025-09": {**SAME, "error_rate": 0.20}}

Recorded = dict[str, WorkflowHandle]  # file name -> handle of a closed workflow


async def _start(client: Client, task_queue: str) -> WorkflowHandle:
    # The product's own id (one live migration per deployment): the replay test derives it from the file.
    req = MigrationRequest(
        deployment=DEPLOYMENT,
        to_model="sim-fresh-2025-09",
        to_prompt="support-triage@2",
        requested_by="carol",
    )
    return await client.start_workflow(
        MigrationWorkflow.run, req, id=migration_id(DEPLOYMENT), task_queue=task_queue
    )


async def _decide(handle: WorkflowHandle, by: str, decision: str = "approve") -> None:
    await handle.execute_update(MigrationWorkflow.decide, DecideUpdate(by=by, decision=decision))


async def _expect(handle: WorkflowHandle, phase: str) -> None:
    result = await handle.result()
    if result.phase != phase:
        raise SystemExit(f"{handle.id}: expected {phase}, got {result.phase} ({result.outcome})")


async def promoted(env: WorkflowEnvironment) -> Recorded:
    traffic = Traffic(ALIKE)
    try:
        async with migration_worker(env.client, traffic=traffic) as tq:
            handle = await _start(env.client, tq)
            await wait_for(handle, waiting_on(0))
            await _decide(handle, "alice")
            await wait_for(handle, lambda st: st.phase == "canary")
            await handle.signal(MigrationWorkflow.pause, PauseSignal(by="alice"))
            await wait_for(handle, lambda st: st.stage is not None and st.stage.paused)
            await handle.signal(MigrationWorkflow.resume, ResumeSignal(by="alice"))
            await env.sleep(120)  # stage 0 on skipped time, up to the stage-1 approval
            await wait_for(handle, waiting_on(1))
            await handle.signal(
                MigrationWorkflow.approve, ApproveSignal(by="bob", comment="numbers look fine")
            )
            await _expect(handle, "promoted")
            run_id = (await handle.describe()).run_id
            child = env.client.get_workflow_handle(f"{handle.id}-eval-{run_id[:8]}")
            await child.result()
            watch = env.client.get_workflow_handle(f"{handle.id}-watch-{run_id[:8]}-1")
    finally:
        traffic.close()
    return {"migration_promoted": handle, "eval_promoted": child, "watch_cancelled": watch}


async def rolled_back(env: WorkflowEnvironment) -> Recorded:
    traffic = Traffic(WORSE)
    try:
        async with migration_worker(env.client, traffic=traffic) as tq:
            handle = await _start(env.client, tq)
            await wait_for(handle, waiting_on(0))
            await _decide(handle, "alice")
            await _expect(handle, "rolled_back")
    finally:
        traffic.close()
    return {"migration_rolled_back": handle}


async def rolled_back_deciding(env: WorkflowEnvironment) -> Recorded:
    """Stage 0 passes; while stage 1 waits for a decision, the candidate breaks: the watch rolls it back."""
    traffic = Traffic(ALIKE)
    try:
        async with migration_worker(env.client, traffic=traffic) as tq:
            handle = await _start(env.client, tq)
            await wait_for(handle, waiting_on(0))
            await _decide(handle, "alice")
            await env.sleep(120)
            await wait_for(handle, waiting_on(1))
            traffic.gen = TrafficGenerator(traffic.router, profile_for(WORSE, seed=11))
            await _expect(handle, "rolled_back")
            run_id = (await handle.describe()).run_id
            watch = env.client.get_workflow_handle(f"{handle.id}-watch-{run_id[:8]}-1")
    finally:
        traffic.close()
    return {"migration_rolled_back_deciding": handle, "watch_breached": watch}


async def continued(env: WorkflowEnvironment) -> Recorded:
    """A canary that continues as new every two gate checks: its first run (to the handover), its last."""
    traffic = Traffic(ALIKE)
    try:
        async with migration_worker(env.client, traffic=traffic) as tq:
            req = MigrationRequest(
                deployment=DEPLOYMENT,
                to_model="sim-fresh-2025-09",
                to_prompt="support-triage@2",
                requested_by="carol",
                checks_per_run=2,
            )
            handle = await env.client.start_workflow(
                MigrationWorkflow.run, req, id=migration_id(DEPLOYMENT), task_queue=tq
            )
            await wait_for(handle, waiting_on(0))
            await _decide(handle, "alice")
            await env.sleep(120)
            await wait_for(handle, waiting_on(1))
            await _decide(handle, "bob")
            await _expect(handle, "promoted")
            first = env.client.get_workflow_handle(handle.id, run_id=handle.first_execution_run_id)
            last = env.client.get_workflow_handle(handle.id)  # no run id: the latest run
    finally:
        traffic.close()
    return {"migration_continued_first_run": first, "migration_continued_last_run": last}


async def rejected(env: WorkflowEnvironment) -> Recorded:
    async with migration_worker(env.client, traffic=None) as tq:
        handle = await _start(env.client, tq)
        await wait_for(handle, waiting_on(0))
        await handle.signal(
            MigrationWorkflow.approve, ApproveSignal(by="mallory")
        )  # not an approver: ignored
        await wait_for(handle, lambda st: st.history[-1].event == "approve_ignored")
        await _decide(handle, "bob", "reject")
        await _expect(handle, "rejected")
    return {"migration_rejected": handle}


async def refused(env: WorkflowEnvironment) -> Recorded:
    """A start from the Web UI with an inline policy: refused before anything runs."""
    async with migration_worker(env.client, traffic=None) as tq:
        start = {
            "deployment": DEPLOYMENT,
            "to_model": "sim-fresh-2025-09",
            "requested_by": "mallory",
            "policy": {"approvals": {"approvers": [], "separation_of_duties": False}},
        }
        handle = await env.client.start_workflow(
            "MigrationWorkflow", start, id=migration_id(DEPLOYMENT), task_queue=tq
        )
        try:
            await handle.result()
        except WorkflowFailureError as exc:
            if not str(exc.cause).startswith("InvalidMigration: policy:"):
                raise SystemExit(f"{handle.id}: refused for another reason: {exc.cause}") from None
        else:
            raise SystemExit(f"{handle.id}: an inline policy was not refused")
    return {"migration_refused_start": handle}


async def record(scenario: Callable[[WorkflowEnvironment], Awaitable[Recorded]], out: Path) -> list[Path]:
    """Run one scenario on its own registry and its own time-skipping server; write its histories."""
    with tempfile.TemporaryDirectory(prefix="pairshift-record-") as tmp:
        os.environ["PAIRSHIFT_HOME"] = str(Path(tmp) / "home")
        os.environ.pop("PAIRSHIFT_DATABASE_URL", None)
        get_settings.cache_clear()
        apply_small(Path(tmp), cases=CASES)
        env = await WorkflowEnvironment.start_time_skipping(
            test_server_existing_path=_test_server(), data_converter=pydantic_data_converter
        )
        try:
            recorded = await scenario(env)
            written = []
            for name, handle in recorded.items():
                text = (await handle.fetch_history()).to_json()
                if len(text.encode()) > MAX_BYTES:
                    raise SystemExit(f"{name}: history is {len(text.encode()):,} bytes, over {MAX_BYTES:,}")
                path = out / f"{name}.json"
                path.write_text(text)
                written.append(path)
            return written
        finally:
            await env.shutdown()
            forget_registry(get_settings().registry_url)
            get_settings.cache_clear()


async def scan(env: WorkflowEnvironment) -> Recorded:
    """A deprecation scan 36 days before the example's snapshot retires: it starts the deployment's
    migration (a child that outlives the scan) and sends the due reminder."""
    from datetime import date

    from pairshift.contracts.deprecation_scan import ScanRequest
    from workflows.deprecation_scan import DeprecationScanWorkflow

    async with migration_worker(env.client, traffic=None) as tq:
        with env.auto_time_skipping_disabled():  # the live migration child would be skipped to its end
            handle = await env.client.start_workflow(
                DeprecationScanWorkflow.run,
                ScanRequest(today=date(2026, 12, 1)),
                id="pairshift-deprecation-scan",
                task_queue=tq,
            )
            result = await handle.result()
        if [m.deployment for m in result.started] != [DEPLOYMENT] or not result.reminders:
            raise SystemExit(f"{handle.id}: expected one migration started and a reminder, got {result}")
        await env.client.get_workflow_handle(migration_id(DEPLOYMENT)).terminate("recorded the scan")
    return {"scan_started": handle}


def _test_server() -> str:
    from pairshift.cli.stack import time_skipping_server_binary

    return time_skipping_server_binary()


SCENARIOS = (promoted, rolled_back, rolled_back_deciding, rejected, continued, refused, scan)


async def main(names: list[str]) -> int:
    """Record every scenario, or only those named (``python tests/record_histories.py refused``)."""
    HISTORIES.mkdir(exist_ok=True)
    unknown = set(names) - {s.__name__ for s in SCENARIOS}
    if unknown:
        raise SystemExit(
            f"unknown scenario(s) {sorted(unknown)}: choose from {[s.__name__ for s in SCENARIOS]}"
        )
    for scenario in (s for s in SCENARIOS if not names or s.__name__ in names):
        began = time.monotonic()
        for path in await record(scenario, HISTORIES):
            print(
                f"wrote {path.relative_to(TESTS.parent)} ({path.stat().st_size:,} bytes, "
                f"{time.monotonic() - began:.1f}s)",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    code = asyncio.run(main(sys.argv[1:]))
    sys.stdout.flush()
    sys.stderr.flush()
    # The Temporal core runtime can abort in PyGILState_Release at interpreter teardown (sdk-python#300) after
    # all work is done; leave with the script's own status instead. Failures above raise before this line.
    os._exit(code)
