"""Issue 17 item 1 in a live stage: a candidate snapshot whose eval was let through (a lax eval policy) but
that wraps JSON in prose on real requests is caught by its online checks: the outputs it serves are `invalid`
naming the check, the canary's invalid_rate breaches against control, and the migration rolls back
(MigrationWorkflow on the time-skipping server, production requests through Router.complete)."""

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
from sqlalchemy import select

from pairshift.apply import apply_path
from pairshift.contracts.migration import DecideUpdate
from pairshift.registry import open_registry
from pairshift.registry.models import Deployment, Observation
from workflows.migration import MigrationWorkflow

pytestmark = pytest.mark.e2e

TICKETS = ["I was charged twice, refund please", "The app crashes on login", "Where is my parcel?"]


async def test_a_candidate_wrapping_json_in_prose_breaches_invalid_rate_and_rolls_back(
    pairshift_env, tmp_path, time_skipping_env
):
    policy = copy.deepcopy(TEST_POLICY)
    policy["eval"]["max_regression"] = 1.0  # the eval lets the candidate through: the canary must catch it
    cfg_dir = small_examples(tmp_path / "config", policy=policy)
    cfg = yaml.safe_load((cfg_dir / "pairshift.yaml").read_text())
    cfg["deployments"][0]["online_checks"] = [{"type": "is-json", "metric": "raw-json"}]
    (cfg_dir / "pairshift.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    apply_path(open_registry(), cfg_dir, by="test")
    traffic = RouterTraffic(
        lambda i: {"customer_tier": "gold", "ticket_body": f"{TICKETS[i % 3]} (order {i})"}
    )
    client = time_skipping_env.client
    try:
        async with migration_worker(client, replace=[traffic.check_activity()]) as task_queue:
            # model only: prompt v1 asks for JSON without "no prose", which sim-fresh wraps in prose
            handle = await start(client, task_queue, to_model="sim-fresh-2025-09", to_prompt=None)
            await wait_for(handle, waiting_on(0), timeout_s=120)
            await handle.execute_update(
                MigrationWorkflow.decide, DecideUpdate(by="alice", decision="approve")
            )
            result = await handle.result()
    finally:
        traffic.close()
    checks = traffic.checks
    assert result.phase == "rolled_back" and "invalid_rate" in result.outcome, result.outcome
    with open_registry().session() as s:
        dep = s.get(Deployment, "support-triage")
        assert dep.candidate_pair is None and dep.canary_percent == 0
        rows = list(s.scalars(select(Observation).where(Observation.variant == "candidate")))
        control = list(s.scalars(select(Observation).where(Observation.variant == "control")))
    invalid = [o for o in rows if o.outcome == "invalid"]
    assert invalid and all(o.detail.startswith("online check raw-json: ") for o in invalid)
    assert {o.outcome for o in control} == {"ok"}, "control's outputs pass the same checks"
    breach = next(c for c in checks if c.decision == "breach")
    named = [r for r in breach.reasons if r.startswith("top reasons candidate outputs were invalid: ")]
    assert named and "online check raw-json: " in named[0] and " calls)" in named[0], breach.reasons
