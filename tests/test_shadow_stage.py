"""Issue 17 item 3, done when: a sim snapshot that passes the golden eval but wraps ~10% of production-like
outputs in prose (``sim-drift-2026-07``) is caught by the shadow stage with 0 user requests served by the
candidate.

MigrationWorkflow on the time-skipping server (the stage's hours are skipped), the strict eval of the drift
test (tests/test_quality_drift_canary.py), and a policy whose first stage is ``{shadow: 50}`` with a canary
judge. Production requests go through ``Router.complete``, each check interval's traffic sent by the
stage-check activity; the router mirrors half the units' requests to the candidate in the background, and the
check's pairwise judge round compares both outputs of each mirrored request, in both orders."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml
from migration_harness import (
    TEST_POLICY,
    RouterTraffic,
    migration_worker,
    small_examples,
    wait_for,
    waiting_on,
)
from sqlalchemy import select
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer
from workflow_fixtures import captured_notices  # noqa: F401 - a fixture

from pairshift.apply import apply_path
from pairshift.contracts.migration import DecideUpdate, MigrationRequest, migration_id
from pairshift.registry import open_registry
from pairshift.registry.models import Deployment, Observation, ShadowPair
from pairshift.sim.traffic import production_vars, vars_from_dataset
from workflows import ALL_WORKFLOWS
from workflows.migration import MigrationWorkflow

pytestmark = pytest.mark.e2e

HISTORY = Path(__file__).resolve().parent / "histories" / "migration_shadow_rolled_back.json"
RECORD = bool(os.environ.get("PAIRSHIFT_RECORD_SHADOW_HISTORY"))  # refresh the kept copy (test_replay.py)

DRIFT = "sim-drift-2026-07"
JUDGE = {
    "model": "sim-classic-2024-06",
    "sample_rate": 0.05,
    "rubric": "The output is one raw JSON object and nothing else.",
    "max_cost_usd_per_day": 5,
}


def _config(tmp_path):
    policy = copy.deepcopy(TEST_POLICY)
    policy["eval"].update({"max_regression": 0.02, "blocking": ["is-json"]})  # strict: as the default
    canary = policy["canary"]
    canary["stages"] = [{"shadow": 50, "min_hours": 0.004, "max_hours": 0.02}, *canary["stages"]]
    canary["judge"] = JUDGE
    canary["shadow_budget"] = {"max_calls_per_hour": 100_000, "max_cost_usd_per_hour": 100}
    cfg_dir = small_examples(tmp_path / "config", cases=300, policy=policy)
    cfg = yaml.safe_load((cfg_dir / "pairshift.yaml").read_text())
    cfg["models"].append(
        {"id": DRIFT, "provider": "sim", "price": {"input_per_mtok": 3.0, "output_per_mtok": 15.0}}
    )
    dep = cfg["deployments"][0]
    dep["online_checks"] = [{"type": "is-json", "metric": "raw-json"}]
    dep["redact"] = [r"(?i)order\s*\d+"]
    (cfg_dir / "pairshift.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return cfg_dir


async def test_a_snapshot_wrapping_production_outputs_is_caught_in_the_shadow_stage_serving_nobody(
    pairshift_env,
    tmp_path,
    time_skipping_env,
    captured_notices,  # noqa: F811
):
    cfg_dir = _config(tmp_path)
    apply_path(open_registry(), cfg_dir, by="test")
    pool = production_vars(vars_from_dataset(cfg_dir / "datasets" / "support-triage.jsonl"), seed=3)
    splits: list[tuple[float, float]] = []

    def control_only(served) -> None:
        assert served.assignment.variant == "control"

    traffic = RouterTraffic(
        lambda i: pool[i % len(pool)],
        on_check=lambda router: splits.append((router.split.percent, router.split.mirror_threshold / 100)),
        on_served=control_only,
        wait_for_mirror=True,
    )
    client = time_skipping_env.client
    try:
        async with migration_worker(client, replace=[traffic.check_activity()]) as task_queue:
            # the id a migration of support-triage has by default (test_replay.py reads histories under it)
            handle = await client.start_workflow(
                MigrationWorkflow.run,
                MigrationRequest(
                    deployment="support-triage",
                    to_model=DRIFT,
                    to_prompt="support-triage@2",
                    requested_by="carol",
                ),
                id=migration_id("support-triage"),
                task_queue=task_queue,
            )
            st = await wait_for(handle, waiting_on(0), timeout_s=120)
            assert st.eval is not None and st.eval["gate"]["decision"] == "pass", st.eval["gate"]
            await handle.execute_update(
                MigrationWorkflow.decide, DecideUpdate(by="alice", decision="approve")
            )
            result = await handle.result()
            status = await handle.query(MigrationWorkflow.status)
            history = await handle.fetch_history()
    finally:
        traffic.close()
    checks = traffic.checks
    # the shadow branch (workflow.patched("shadow-stage")) replays deterministically; kept for test_replay.py
    replayed = await Replayer(
        workflows=ALL_WORKFLOWS, data_converter=pydantic_data_converter
    ).replay_workflow(history)
    assert replayed.replay_failure is None
    if RECORD:
        HISTORY.write_text(history.to_json())
    assert result.phase == "rolled_back" and "stage 0 (shadow 50%): gate breach" in result.outcome, (
        result.outcome
    )
    assert set(splits) == {(0.0, 50.0)}, "every check ran in the shadow stage: 0% served, 50% mirrored"
    breach = checks[-1]
    assert breach.decision == "breach"
    assert breach.metrics["invalid_rate"]["verdict"] == "breach", breach.reasons
    assert breach.metrics["win_rate"]["candidate"] < 0.5, breach.metrics["win_rate"]
    assert "invalid_rate" in result.outcome and "win_rate" in result.outcome, result.outcome
    with open_registry().session() as s:
        served_by_candidate = s.scalar(
            select(Observation.id).where(Observation.variant == "candidate").limit(1)
        )
        control = list(s.scalars(select(Observation.outcome).where(Observation.variant == "control")))
        pairs = list(s.scalars(select(ShadowPair)))
        dep = s.get(Deployment, "support-triage")
    assert served_by_candidate is None, "0 user requests served by the candidate"
    assert len(control) == traffic.sent and set(control) == {"ok"}
    assert 0.3 * traffic.sent < len(pairs) < 0.7 * traffic.sent, "about half the units mirrored"
    invalid = [p for p in pairs if p.candidate_outcome == "invalid"]
    assert 0.04 < len(invalid) / len(pairs) < 0.2, "about a tenth of mirrored outputs are wrapped"
    judged = [p for p in pairs if p.score is not None]
    assert judged and all(p.score == 0.0 for p in judged if p in invalid), "wrapped output loses both orders"
    assert {p.score for p in judged if p.candidate_outcome == "ok"} == {0.5}, "identical JSON: ties"
    assert (dep.canary_percent, dep.shadow_percent, dep.candidate_model) == (0.0, 0.0, None), "restored"
    assert status.stage is not None and status.stage.shadow == 50 and status.stage.percent == 0
    from pairshift import shadow_report

    (fig,) = shadow_report.shadow_figures(open_registry(), handle.id)  # migrate report's shadow section
    assert fig.shadow == 50 and fig.mirrored == len(pairs) and fig.losses > 0 and fig.wins == 0
    assert fig.win_rate_ci is not None and fig.win_rate_ci[1] < 0.5, "the candidate shown worse than control"
    assert fig.control.invalid_rate == 0 and fig.candidate.invalid_ci[0] > 0
    assert fig.examples and fig.examples[0]["candidate"].startswith("Triage for [REDACTED]:")

    # the stage's end posted its figures in the thread (SHADOW_QUALITY_PATCH) before the rollback's notice
    kinds = [n.kind for n in captured_notices.notices]
    assert kinds.index("stage_quality") < kinds.index("rolled_back"), kinds
    (notice,) = [n for n in captured_notices.notices if n.kind == "stage_quality"]
    q = notice.quality
    assert q is not None and q.shadow is not None and (q.index, q.ended) == (0, "breach"), q
    assert "stage 0 (shadow 50%) breached its gate" in notice.title
    assert (q.shadow.shadow, q.shadow.mirrored, q.shadow.losses) == (50, fig.mirrored, fig.losses)
    assert q.shadow.win_rate_ci == fig.win_rate_ci and q.shadow.examples, "the report's win rate and interval"
    assert q.shadow.examples[0].candidate.startswith("Triage for [REDACTED]:")
    assert [a.calls for a in q.arms] == [fig.control.calls, fig.candidate.calls]
    assert q.judge_stage is not None and q.judge_stage.judged == fig.judged
