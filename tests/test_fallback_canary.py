"""A candidate whose snapshot is retired mid-canary: every request is answered by the fallback chain, the rows
say `fallback`, the gate counts them as the candidate's errors, breaches, and the migration rolls back."""

from __future__ import annotations

import asyncio
import concurrent.futures
import uuid

import pytest
from migration_harness import apply_small, start, wait_for, waiting_on
from sqlalchemy import select
from temporalio import activity
from temporalio.worker import Worker

from activities import ALL_ACTIVITIES
from activities.migration import check_stage
from pairshift.contracts.gates import StageCheck
from pairshift.contracts.migration import DecideUpdate, StageCheckInput
from pairshift.registry import open_registry
from pairshift.registry.models import Deployment, Model, Observation
from pairshift.router import Router
from workflows import ALL_WORKFLOWS
from workflows.migration import MigrationWorkflow

pytestmark = pytest.mark.e2e

GPT = "gpt-4o-2024-08-06"  # the candidate's snapshot, served by the HTTP sim until it is retired
VARIABLES = {"customer_tier": "gold", "ticket_body": "I was charged twice, refund please"}


class Production:
    """Requests through Router.complete, as an app would send them; counts what users got."""

    def __init__(self) -> None:
        self.router = Router("support-triage", registry=open_registry(), refresh_s=0).start()
        self.answered = self.failed = 0
        self.sent = 0

    def send(self, n: int) -> None:
        self.router.refresh()

        async def burst() -> None:
            for _ in range(n):
                self.sent += 1
                try:
                    await self.router.complete(f"user-{self.sent}", VARIABLES)
                except Exception:  # noqa: BLE001 - a user who got an error
                    self.failed += 1
                else:
                    self.answered += 1

        asyncio.run(burst())
        self.router.writer.flush()


async def test_a_snapshot_retired_mid_canary_is_served_by_the_chain_and_rolled_back(
    pairshift_env, tmp_path, sim_server, time_skipping_env
):
    apply_small(tmp_path)
    with open_registry().session() as s:
        s.add(
            Model(
                id=GPT,
                provider="openai",
                base_url=sim_server.openai_base_url,
                request_rules={"max_attempts": 1},
            )
        )
        dep = s.get(Deployment, "support-triage")
        dep.fallback = ["sim-fresh-2025-09"]
        s.add(dep)
    production = Production()

    @activity.defn(name="check_stage")
    def check(inp: StageCheckInput) -> StageCheck:
        if activity.info().workflow_type != "StageWatchWorkflow":  # as in test_external_migration
            production.send(600)
        return check_stage(inp)

    activities = [
        a for a in ALL_ACTIVITIES if getattr(a, "__temporal_activity_definition").name != "check_stage"
    ]
    client = time_skipping_env.client
    task_queue = f"pairshift-test-{uuid.uuid4().hex[:8]}"
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        async with Worker(
            client,
            task_queue=task_queue,
            workflows=ALL_WORKFLOWS,
            activities=[*activities, check],
            activity_executor=pool,
            max_concurrent_activities=16,
        ):
            handle = await start(client, task_queue, to_model=GPT)
            await wait_for(handle, waiting_on(0), timeout_s=120)
            sim_server.retire(GPT)  # the provider retires the candidate's snapshot while it canaries
            await handle.execute_update(
                MigrationWorkflow.decide, DecideUpdate(decision="approve", by="alice")
            )
            result = await handle.result()
    production.router.close()
    assert result.phase == "rolled_back" and "breach" in result.outcome, result.outcome
    assert production.failed == 0 and production.answered == production.sent > 0
    with open_registry().session() as s:
        rows = list(s.scalars(select(Observation).where(Observation.variant == "candidate")))
    assert rows and {o.outcome for o in rows} == {"fallback"}
    assert {o.served_pair for o in rows} == {"support-triage@2+sim-fresh-2025-09"}
    assert {o.pair for o in rows} == {f"support-triage@2+{GPT}"}
