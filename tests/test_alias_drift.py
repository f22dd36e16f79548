"""AliasDriftWorkflow against the fake provider server: repointing an alias at run time is detected by the
next run, recorded (the alias's resolved snapshot, a ledger row), alerted (a notice) and evaluated (a
model-only eval report of the new snapshot); a run without a move changes nothing; a failing probe is
reported."""

from __future__ import annotations

import concurrent.futures
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from conftest import EXAMPLES, dump_registry
from sim_fixtures import SimHandle
from sqlmodel import select
from temporalio.client import Client
from temporalio.worker import Worker
from workflow_fixtures import CapturedNotices, captured_notices, sqlite_settings  # noqa: F401 - fixtures

from activities.alias_drift import ALL as ALIAS_DRIFT_ACTIVITIES
from activities.evals import EVAL_ACTIVITIES
from activities.notices import send_notice
from pairshift.apply import apply_path
from pairshift.contracts.alias_drift import AliasDriftRequest, AliasDriftResult
from pairshift.evals import load_report
from pairshift.registry import open_registry
from pairshift.registry.models import LedgerEntry, Model
from workflows.alias_drift import AliasDriftWorkflow
from workflows.evals import EvalWorkflow


@pytest.fixture
def drift_registry(sqlite_settings: str, sim_server: SimHandle, tmp_path: Path) -> str:  # noqa: F811 - fixture
    """support-triage on the alias sim-latest, served by the fake server over the Anthropic wire format."""
    example = yaml.safe_load((EXAMPLES / "pairshift.yaml").read_text())
    cases = (EXAMPLES / "datasets" / "support-triage.jsonl").read_text().splitlines(keepends=True)[:12]
    (tmp_path / "cases.jsonl").write_text("".join(cases))
    config = {
        "models": [
            {
                "id": "sim-fresh-2025-09",
                "provider": "anthropic",
                "base_url": sim_server.base_url,
                "aliases": ["sim-latest"],
                "price": {"input_per_mtok": 2.5, "output_per_mtok": 10.0},
            },
            {"id": "sim-classic-2024-06", "provider": "anthropic", "base_url": sim_server.base_url},
        ],
        "prompts": [p for p in example["prompts"] if p["version"] == "1"],
        "datasets": [{"name": "golden", "path": "cases.jsonl"}],
        "policies": [{"name": "drift", "eval": {"epochs": 1}, "notice": {"slack_channel": None}}],
        "deployments": [
            {
                "name": "support-triage",
                "prompt": "support-triage@1",
                "model": "sim-latest",
                "dataset": "golden",
                "policy": "drift",
            },
            {
                "name": "pinned",
                "prompt": "support-triage@1",
                "model": "sim-classic-2024-06",
                "dataset": "golden",
                "policy": "drift",
            },
        ],
    }
    (tmp_path / "pairshift.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    apply_path(open_registry(sqlite_settings), tmp_path / "pairshift.yaml", by="test")
    return sqlite_settings


@pytest.fixture
async def drift_worker(time_skipping_env, drift_registry: str) -> AsyncIterator[tuple[Client, str]]:
    queue = f"drift-{uuid.uuid4().hex[:8]}"
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        async with Worker(
            time_skipping_env.client,
            task_queue=queue,
            activity_executor=pool,
            workflows=[AliasDriftWorkflow, EvalWorkflow],
            activities=[*ALIAS_DRIFT_ACTIVITIES, *EVAL_ACTIVITIES, send_notice],
        ):
            yield time_skipping_env.client, queue


async def drift_run(client: Client, queue: str) -> AliasDriftResult:
    return await client.execute_workflow(
        AliasDriftWorkflow.run,
        AliasDriftRequest(),
        id=f"pairshift-alias-drift-{uuid.uuid4().hex[:8]}",
        task_queue=queue,
    )


async def test_repointed_alias_is_detected_recorded_alerted_and_evaluated(
    drift_worker, drift_registry: str, sim_server: SimHandle, captured_notices: CapturedNotices
) -> None:  # noqa: F811 - fixture
    client, queue = drift_worker
    registry = open_registry(drift_registry)

    quiet = await drift_run(client, queue)
    assert quiet.checked == ["support-triage"] and quiet.drifted == [] and quiet.probe_errors == {}
    unchanged = dump_registry(registry)

    sim_server.repoint("sim-latest", "sim-literal-2025-11")
    moved = await drift_run(client, queue)
    (drift,) = moved.drifted
    assert (drift.alias, drift.from_snapshot, drift.to_snapshot) == (
        "sim-latest",
        "sim-fresh-2025-09",
        "sim-literal-2025-11",
    )
    assert drift.report_id and drift.gate in {"pass", "fail", "inconclusive"} and drift.eval_error is None
    report = load_report(registry, drift.report_id)
    assert {"baseline", "model_only"} <= set(
        report.arms
    ) and "prompt_only" not in report.arms  # joint = model_only
    assert report.target_pair == "support-triage@1+sim-literal-2025-11" and report.dataset.cases == 12
    with registry.session() as s:
        alias = s.get(Model, "sim-latest")
        assert (alias.is_alias, alias.resolved_snapshot) == (True, "sim-literal-2025-11")
        new = s.get(Model, "sim-literal-2025-11")
        assert (new.provider, new.base_url, new.source) == ("anthropic", sim_server.base_url, "observed")
        (entry,) = s.exec(select(LedgerEntry).where(LedgerEntry.reason == "alias-drift")).all()
        assert entry.deployment == "support-triage" and entry.pair == "support-triage@1+sim-latest"
        assert entry.evidence["note"].startswith(
            "alias sim-latest moved from sim-fresh-2025-09 to sim-literal-2025-11 on "
        )
        assert entry.evidence["eval_report"] == drift.report_id
    (alert,) = [n for n in captured_notices.notices if n.kind == "alias_drift"]
    assert alert.deployment == "support-triage" and "moved from sim-fresh-2025-09" in alert.title
    assert dump_registry(registry) != unchanged

    recorded = dump_registry(registry)
    again = await drift_run(client, queue)
    assert again.drifted == [] and again.probe_errors == {}
    assert dump_registry(registry) == recorded  # the move is recorded once


async def test_a_failing_probe_is_reported_and_changes_nothing(
    drift_worker, drift_registry: str, sim_server: SimHandle
) -> None:
    client, queue = drift_worker
    before = dump_registry(open_registry(drift_registry))
    sim_server.retire("sim-latest")
    result = await drift_run(client, queue)
    assert result.drifted == [] and "probe of sim-latest failed" in result.probe_errors["support-triage"]
    assert dump_registry(open_registry(drift_registry)) == before


async def test_drift_is_seen_in_production_observations(
    drift_worker, drift_registry: str, sim_server: SimHandle
) -> None:
    """The probe is one witness; the `model` field recorded on production calls is the other."""
    from pairshift.observations import ObservationIn, store_batch

    client, queue = drift_worker
    registry = open_registry(drift_registry)
    sim_server.retire("sim-latest")  # the probe fails from now on; traffic still tells what answered it
    with registry.session() as s:
        store_batch(
            s,
            [
                ObservationIn(
                    deployment="support-triage",
                    pair="support-triage@1+sim-latest",
                    variant="control",
                    unit="u-1",
                    latency_ms=300,
                    input_tokens=10,
                    output_tokens=5,
                    cost_usd=0.0,
                    outcome="ok",
                    resolved_model="sim-literal-2025-11",
                )
            ],
        )
    result = await drift_run(client, queue)
    (drift,) = result.drifted
    assert (drift.from_snapshot, drift.to_snapshot) == ("sim-fresh-2025-09", "sim-literal-2025-11")
    assert "probe of sim-latest failed" in result.probe_errors["support-triage"]
    with registry.session() as s:
        assert s.get(Model, "sim-latest").resolved_snapshot == "sim-literal-2025-11"
    report = load_report(registry, drift.report_id)
    assert report.baseline_pair == "support-triage@1+sim-fresh-2025-09", (
        "the previous snapshot is the baseline"
    )
