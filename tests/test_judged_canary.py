"""Issue 17 items 2 and 4, end to end: a migration whose canary has a judge (``canary.judge``), on the
time-skipping server. The candidate (``sim-drift-2026-07``) passes the golden eval but wraps ~10% of
production outputs in prose; the deployment has no online check, so only the judge can see it: the sim grades
the rubric prompts (1 for one bare JSON object, else 0), the scores feed the stage's ``score`` metric, and the
stage rolls back on the judged drift. The daily cap holds; the judge's spend is a figure in the status query
(``judge``) and the report (per stage); the stage's end posts its quality figures (a ``stage_quality`` notice:
both arms, the judged score with its interval, the judge's spend, examples).

Production requests go through ``Router.complete``, each check interval's traffic sent by the stage-check
activity (as in tests/test_quality_drift_canary.py)."""

from __future__ import annotations

import copy

import pytest
import yaml
from migration_harness import (
    TEST_POLICY,
    RouterTraffic,
    migration_worker,
    small_examples,
    start,
    wait_for,
    waiting_on,
)
from sqlalchemy import func, select
from workflow_fixtures import captured_notices  # noqa: F401 - a fixture

from pairshift import output_samples, stage_quality
from pairshift.apply import apply_path
from pairshift.contracts.migration import DecideUpdate, MigrationStatus
from pairshift.registry import open_registry
from pairshift.registry.models import OutputSample
from pairshift.sim.traffic import production_vars, vars_from_dataset
from workflows.migration import MigrationWorkflow

pytestmark = pytest.mark.e2e

DRIFT = "sim-drift-2026-07"
CAP = 20.0  # dollars a day: the judge stays within it (tests/test_online_judge.py makes one bind)
JUDGE = {
    "model": "sim-classic-2024-06",
    "sample_rate": 1.0,
    "rubric": "The output is one raw JSON object.",
    "max_cost_usd_per_day": CAP,
}


def _config(tmp_path):
    policy = copy.deepcopy(TEST_POLICY)
    policy["eval"].update({"max_regression": 0.02, "blocking": ["is-json"]})
    policy["canary"]["judge"] = JUDGE
    policy["canary"]["stages"][0]["max_hours"] = 0.04  # room for the judge's backlog (200 scored a check)
    policy["notice"] = {"slack_channel": "#llm-migrations"}
    cfg_dir = small_examples(tmp_path / "config", cases=300, policy=policy)
    cfg = yaml.safe_load((cfg_dir / "pairshift.yaml").read_text())
    cfg["models"].append(
        {"id": DRIFT, "provider": "sim", "price": {"input_per_mtok": 3.0, "output_per_mtok": 15.0}}
    )
    cfg["deployments"][0]["redact"] = [r"(?i)order\s*\d+"]
    (cfg_dir / "pairshift.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return cfg_dir


async def test_a_judged_canary_rolls_back_on_a_judged_drift_within_its_cap(
    pairshift_env,
    tmp_path,
    time_skipping_env,
    captured_notices,  # noqa: F811
):
    cfg_dir = _config(tmp_path)
    apply_path(open_registry(), cfg_dir, by="test")
    pool = production_vars(vars_from_dataset(cfg_dir / "datasets" / "support-triage.jsonl"), seed=3)
    traffic = RouterTraffic(lambda i: pool[i % len(pool)])
    client = time_skipping_env.client
    try:
        async with migration_worker(client, replace=[traffic.check_activity()]) as task_queue:
            handle = await start(client, task_queue, to_model=DRIFT, to_prompt="support-triage@2")
            st = await wait_for(handle, waiting_on(0), timeout_s=120)
            assert st.eval is not None and st.eval["gate"]["decision"] == "pass", st.eval["gate"]
            await handle.execute_update(
                MigrationWorkflow.decide, DecideUpdate(by="alice", decision="approve")
            )
            result = await handle.result()
            status = await handle.query(MigrationWorkflow.status, result_type=MigrationStatus)
    finally:
        traffic.close()
    checks = traffic.checks

    # only the judge saw the drift: no call was invalid, the judged score breached
    assert result.phase == "rolled_back" and "score" in result.outcome, result.outcome
    assert checks[-1].decision == "breach" and checks[-1].metrics["score"]["verdict"] == "breach"
    assert (
        checks[-1].metrics["invalid_rate"]["candidate"] == 0 if "invalid_rate" in checks[-1].metrics else True
    )

    # the cap holds: the day's judge spend never passes it, whatever was sampled
    with open_registry().session() as s:
        c = OutputSample.__table__.c
        spent = s.scalar(select(func.sum(c.cost_usd)).where(c.kind == "judge", c.judged_at.is_not(None)))
        judged = s.scalar(select(func.count()).where(c.kind == "judge", c.judged_at.is_not(None)))
    assert 0 < spent <= CAP and judged > 0

    # the judge's spend is a figure: the status query (migrate status --json "judge") and the report
    assert status.judge is not None and status.judge.model == JUDGE["model"] and status.judge.cap_usd == CAP
    (stage,) = status.judge.stages
    assert stage.percent == 20 and stage.judged + stage.unreadable == judged
    assert stage.cost_usd == pytest.approx(spent) and status.judge.spent_today_usd == pytest.approx(spent)
    rates, spend = stage_quality.report_figures(open_registry(), "support-triage", handle.id)
    assert spend == status.judge.stages and rates == []  # nothing invalid: the judge alone saw it
    with open_registry().session() as s:
        key = output_samples.migration_key(s, handle.id)
        figures = {f.variant: f for f in output_samples.stage_figures(s, key)}
    assert figures["control"].score == 1.0 and figures["candidate"].score < 0.97
    text = stage_quality.render_markdown(rates, spend)
    assert f"| 20% | {stage.judged:,} |" in text

    # the stage's end posted its quality figures before the rollback's notice
    kinds = [n.kind for n in captured_notices.notices]
    assert kinds.index("stage_quality") < kinds.index("rolled_back"), kinds
    (notice,) = [n for n in captured_notices.notices if n.kind == "stage_quality"]
    q = notice.quality
    assert q is not None and (q.index, q.percent, q.ended) == (0, 20, "breach") and "score" in q.why
    control, candidate = q.arms
    assert control.judged_score == 1.0 and candidate.judged_score < 0.97
    assert candidate.judged_ci is not None and candidate.judged_ci[0] < candidate.judged_score
    assert q.judge == JUDGE["model"] and q.judge_stage is not None and q.judge_stage.judged == stage.judged
    assert q.judge_spent_today_usd <= CAP and q.judge_cap_usd == CAP
    assert 1 <= len(candidate.examples) <= 2 and candidate.examples[0].why == "judge score 0.00"
    assert "[REDACTED]" in candidate.examples[0].output  # the order number, redacted before it was stored
