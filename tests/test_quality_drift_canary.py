"""Issue 17 item 1, done when: a sim snapshot that passes the golden eval but wraps ~10% of production-like
outputs in prose (``sim-drift-2026-07``: tickets quoting an order number) is caught by ``invalid_rate`` in a
live stage when there is no shadow stage, and the migration's report shows the failing check with a few
example outputs, redacted by the deployment's rules and bounded in length.

MigrationWorkflow on the time-skipping server (the stage's hours are skipped); the eval policy is strict
(``blocking: [is-json]``, a 2-point margin), so only production traffic can show the regression; production
requests go through ``Router.complete``, each check interval's traffic sent by the stage-check activity."""

from __future__ import annotations

import copy
import re

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
from sqlalchemy import select

from pairshift import output_samples
from pairshift.apply import apply_path
from pairshift.contracts.migration import DecideUpdate
from pairshift.registry import open_registry
from pairshift.registry.models import Observation, OutputSample
from pairshift.sim.traffic import production_vars, vars_from_dataset
from workflows.migration import MigrationWorkflow

pytestmark = pytest.mark.e2e

DRIFT = "sim-drift-2026-07"


def _config(tmp_path):
    policy = copy.deepcopy(TEST_POLICY)
    policy["eval"].update({"max_regression": 0.02, "blocking": ["is-json"]})  # strict: as the default
    cfg_dir = small_examples(tmp_path / "config", cases=300, policy=policy)
    cfg = yaml.safe_load((cfg_dir / "pairshift.yaml").read_text())
    cfg["models"].append(
        {"id": DRIFT, "provider": "sim", "price": {"input_per_mtok": 3.0, "output_per_mtok": 15.0}}
    )
    dep = cfg["deployments"][0]
    dep["online_checks"] = [{"type": "is-json", "metric": "raw-json"}]
    dep["redact"] = [r"(?i)order\s*\d+"]  # order numbers are customer data here
    (cfg_dir / "pairshift.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return cfg_dir


async def test_a_snapshot_passing_the_golden_eval_but_wrapping_production_outputs_is_rolled_back(
    pairshift_env, tmp_path, time_skipping_env
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
    finally:
        traffic.close()
    checks = traffic.checks
    assert result.phase == "rolled_back" and "invalid_rate" in result.outcome, result.outcome
    assert checks[-1].decision == "breach"
    with open_registry().session() as s:
        candidate = list(s.scalars(select(Observation).where(Observation.variant == "candidate")))
        control = list(s.scalars(select(Observation).where(Observation.variant == "control")))
        stored = list(s.scalars(select(OutputSample)))
    report = output_samples.canary_quality(open_registry(), "support-triage", handle.id)
    quality = report.checks
    (ctrl, cand) = sorted(report.stages, key=lambda f: f.variant != "control")
    assert [ctrl.percent, ctrl.variant, cand.variant] == [20, "control", "candidate"]
    assert ctrl.invalid_rate == 0 and 0.04 < cand.invalid_rate < 0.2 and cand.invalid_ci[0] > 0
    with open_registry().session() as s:
        assert output_samples.migration_key(s, handle.id) == candidate[0].migration
    invalid = [o for o in candidate if o.outcome == "invalid"]
    assert 0.04 < len(invalid) / len(candidate) < 0.2, "about a tenth of production outputs are wrapped"
    assert {o.outcome for o in control} == {"ok"}
    top = quality["candidate"][0]
    assert top.check.startswith("online check raw-json: ") and top.calls == len(invalid)
    assert 1 <= len(top.examples) <= output_samples.PER_CHECK
    for ex in top.examples:
        assert ex["output"].startswith("Triage for [REDACTED]:"), ex
        assert "[REDACTED]" in ex["input"] and not re.search(r"order\s*\d", ex["input"] + ex["output"], re.I)
    assert all(
        len(x.input) <= output_samples.TEXT_MAX and len(x.output) <= output_samples.TEXT_MAX for x in stored
    )
    assert len(stored) <= output_samples.PER_CHECK, "a few per check, not every invalid output"
    text = output_samples.render_markdown(quality, report.stages)
    assert "| 20% | candidate |" in text
    assert "candidate: online check raw-json" in text and "Triage for [REDACTED]" in text
