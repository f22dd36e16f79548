"""A migration of a `prompt: external` deployment, end to end on the time-skipping server: the app's gateway
traffic is captured into a dataset, MigrationWorkflow plans a model-only change for the prompt version the app
states (X-Pairshift-Prompt), evaluates baseline and model_only on the captured requests, canaries gateway
traffic (sticky per unit, the stated version recorded on each call) and promotes; the ledger says which prompt
versions the app stated on the new pair."""

from __future__ import annotations

import concurrent.futures
import uuid

import httpx
import pytest
import yaml
from conftest import api_token
from migration_harness import small_examples, start, status, wait_for, waiting_on
from sqlalchemy import select
from temporalio import activity
from temporalio.worker import Worker

from activities import ALL_ACTIVITIES
from activities.migration import check_stage
from pairshift import ledger
from pairshift.api import create_app
from pairshift.apply import apply_path
from pairshift.capture import finish_capture, start_capture
from pairshift.contracts.gates import StageCheck
from pairshift.contracts.migration import DecideUpdate, StageCheckInput
from pairshift.registry import open_registry
from pairshift.registry.models import Deployment, EvalRun, MigrationRow, Observation
from pairshift.resolver import InvalidRequest, resolve
from pairshift.sim.server import serve_in_thread
from workflows import ALL_WORKFLOWS
from workflows.migration import MigrationWorkflow

pytestmark = pytest.mark.e2e

APP = "chat-app"
STATED = "chat-app@7"  # the app's own prompt version, stated in X-Pairshift-Prompt
SYSTEM = (
    "You triage support tickets. Output only a raw JSON object, no prose, no code fences, with exactly the "
    'keys "severity" (low|medium|high|urgent) and "team" (billing|technical|account|shipping).'
)
TICKETS = ["I was charged twice, refund please", "The app crashes on login", "Where is my parcel?"]


class Gateway:
    """`pairshift api` on a free port; ``send`` posts OpenAI-wire requests as the app would."""

    def __init__(self) -> None:
        self.app = create_app(open_registry())
        self.server, self.thread, port = serve_in_thread(self.app, lifespan="on")
        token = api_token(open_registry(), "complete")
        self.http = httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"authorization": f"Bearer {token}"}
        )
        self.sent = 0
        self.variants: dict[str, set[str]] = {}

    def send(self, n: int, units: int = 100_000) -> None:
        state = self.app.state.pairshift
        if APP in state.routers:
            assert state.routers[APP].refresh(), "the stage's split now (the API refreshes every few s)"
        for _ in range(n):
            unit = f"user-{self.sent % units}"
            self.sent += 1
            ticket = f"{TICKETS[self.sent % len(TICKETS)]} (order {self.sent})"
            body = {
                "model": APP,
                "user": unit,
                "temperature": 0,
                "messages": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": f"Tier: gold\nTicket: {ticket}"},
                ],
            }
            r = self.http.post("/v1/chat/completions", json=body, headers={"x-pairshift-prompt": STATED})
            assert r.status_code == 200, r.text
            self.variants.setdefault(unit, set()).add(r.headers["x-pairshift-variant"])
        state.routers[APP].flush_samples()
        state.flush_observations()

    def close(self) -> None:
        self.http.close()
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def gateway(pairshift_env, tmp_path):
    cfg_dir = small_examples(tmp_path / "config")
    cfg = yaml.safe_load((cfg_dir / "pairshift.yaml").read_text())
    cfg["deployments"].append(
        {"name": APP, "prompt": "external", "model": "sim-classic-2024-06", "policy": "test"}
    )
    (cfg_dir / "pairshift.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    apply_path(open_registry(), cfg_dir, by="test")
    gw = Gateway()
    yield gw
    gw.close()


def test_an_external_deployment_refuses_a_prompt_change_and_needs_captured_evidence(gateway):
    with open_registry().session() as s:
        with pytest.raises(InvalidRequest, match="no golden dataset: capture one"):
            resolve(s, deployment=APP, to_model="sim-fresh-2025-09")
        with pytest.raises(InvalidRequest, match="changes its model only"):
            resolve(s, deployment=APP, to_model="sim-fresh-2025-09", to_prompt="support-triage@2")


async def test_a_model_only_migration_of_gateway_traffic_promotes(gateway, time_skipping_env):
    with open_registry().session() as s:
        capture = start_capture(s, APP, rate=1.0, max_cases=12, by="test").id
    gateway.send(20)  # before the migration: all control, captured with the control's answers
    with open_registry().session() as s:
        version = finish_capture(s, capture).id

    @activity.defn(name="check_stage")
    def check(inp: StageCheckInput) -> StageCheck:
        # Traffic comes with the stage loop's checks only: the watcher's checks during a decision run beside
        # the split change, and calls routed at the old percent but stored after it count in the new stage
        # (a known gap: ingest attributes calls to the stage live when they arrive).
        if activity.info().workflow_type != "StageWatchWorkflow":
            gateway.send(300)
        return check_stage(inp)

    client = time_skipping_env.client
    activities = [
        a for a in ALL_ACTIVITIES if getattr(a, "__temporal_activity_definition").name != "check_stage"
    ]
    worker_tq = f"pairshift-test-{uuid.uuid4().hex[:8]}"
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        async with Worker(
            client,
            task_queue=worker_tq,
            workflows=ALL_WORKFLOWS,
            activities=[*activities, check],
            activity_executor=pool,
            max_concurrent_activities=8,
        ):
            handle = await start(
                client, worker_tq, deployment=APP, to_model="sim-fresh-2025-09", to_prompt=None
            )
            st = await wait_for(handle, waiting_on(0), timeout_s=120)
            arms = st.eval["arms"]  # a model-only change: joint is model_only (PRODUCT §11)
            assert set(arms) == {"baseline", "model_only", "joint"} and arms["joint"] == arms["model_only"]
            assert st.eval["dataset"]["name"] == f"{APP}-captured"
            assert st.eval["gate"]["decision"] in ("pass", "inconclusive"), st.eval["gate"]
            assert (st.from_pair, st.to_pair) == (
                "external+sim-classic-2024-06",
                "external+sim-fresh-2025-09",
            )
            await handle.execute_update(
                MigrationWorkflow.decide, DecideUpdate(by="alice", decision="approve")
            )
            await time_skipping_env.sleep(120)
            await wait_for(handle, waiting_on(1), timeout_s=120)
            await handle.execute_update(
                MigrationWorkflow.decide, DecideUpdate(by="bob", decision="approve", stage=1)
            )
            result = await handle.result()
            st = await status(handle)
    assert result.phase == "promoted", result.outcome
    assert all(len(v) == 1 for v in gateway.variants.values()), "sticky per unit within a stage"
    with open_registry().session() as s:
        dep = s.get(Deployment, APP)
        assert (dep.active_pair, dep.candidate_pair, dep.prompt_external) == (
            "external+sim-fresh-2025-09",
            None,
            True,
        )
        runs = list(s.scalars(select(EvalRun).where(EvalRun.migration == handle.id)))
        assert {r.arm for r in runs} == {"baseline", "model_only"}
        assert {r.dataset_version for r in runs} == {version}
        row = s.scalars(select(MigrationRow).where(MigrationRow.workflow_id == handle.id)).one()
        assert row.summary["app_prompt"] == STATED
        served = list(
            s.scalars(
                select(Observation).where(
                    Observation.migration.startswith(f"{handle.id}/"),  # the split's key: workflow/run
                    Observation.variant == "candidate",
                )
            )
        )
        assert served and {o.prompt_version for o in served} == {STATED}
        assert {o.pair for o in served} == {"external+sim-fresh-2025-09"}
        assert {o.resolved_model for o in served} == {"sim-fresh-2025-09"}
        last = ledger.history(s, APP)[-1]
        assert last.pair == "external+sim-fresh-2025-09" and last.evidence["app_prompts"] == [STATED]
