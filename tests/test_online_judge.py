"""The canary's sampled judge (issue 17 item 2): sampled outputs of both arms, redacted, scored by the judge
between gate checks; the scores feed the stage's score metric; the judge's cost is reported and its daily cap
holds; a judge of the same family as a model under test is warned about."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from datetime import timedelta

import pytest
import yaml
from migration_harness import TEST_POLICY, small_examples
from pydantic import ValidationError
from sqlalchemy import func, select

from pairshift import online_judge, output_samples, split
from pairshift.apply import apply_path
from pairshift.gates import latency_ranks
from pairshift.observations import stage_stats
from pairshift.policy import CanaryPolicy, Policy
from pairshift.providers import CallParams, Message
from pairshift.registry import open_registry
from pairshift.registry.models import OutputSample, utcnow
from pairshift.router import Router
from pairshift.sim.snapshots import simulate
from pairshift.sim.traffic import production_vars, vars_from_dataset

JUDGE = {
    "model": "sim-classic-2024-06",
    "sample_rate": 1.0,
    "rubric": "The output is one raw JSON object.",
    "max_cost_usd_per_day": 5.0,
}
MIGRATION = "migration-support-triage/run-1"


def test_policy_judge_fields_and_refusals() -> None:
    canary = CanaryPolicy.model_validate({"judge": JUDGE})
    assert canary.judge is not None and canary.judge.sample_rate == 1.0
    with pytest.raises(ValidationError, match="feeds the score metric"):
        CanaryPolicy.model_validate({"judge": JUDGE, "metrics": {"score": None}})
    for bad in ({"sample_rate": 0}, {"max_cost_usd_per_day": 0}, {"rubric": ""}):
        with pytest.raises(ValidationError):
            CanaryPolicy.model_validate({"judge": {**JUDGE, **bad}})
    assert Policy().canary.judge is None


def test_the_sim_grades_a_rubric_prompt_by_whether_the_output_is_one_json_object() -> None:
    def grade(output: str) -> str:
        prompt = online_judge.judge_prompt("raw JSON", '{"ticket_body": "Ticket: x"}', output)
        return simulate(
            "sim-classic-2024-06", None, [Message(role="user", content=prompt)], CallParams()
        ).text

    assert '"score": 1.0' in grade('{"severity": "low", "team": "billing"}')
    assert '"score": 0.0' in grade('Triage for order 1:\n```json\n{"team": "billing"}\n```')


def _setup(tmp_path, judge: dict) -> Router:
    policy = copy.deepcopy(TEST_POLICY)
    policy["canary"]["judge"] = judge
    cfg_dir = small_examples(tmp_path / "config", policy=policy)
    cfg = yaml.safe_load((cfg_dir / "pairshift.yaml").read_text())
    cfg["models"].append({"id": "sim-drift-2026-07", "provider": "sim"})
    cfg["deployments"][0]["redact"] = [r"(?i)order\s*\d+"]
    (cfg_dir / "pairshift.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    reg = open_registry()
    apply_path(reg, cfg_dir, by="test")
    with reg.session() as s:
        split.set_split(
            s,
            deployment="support-triage",
            migration=MIGRATION,
            prompt="support-triage@2",
            model="sim-drift-2026-07",
            percent=50,
        )
    pool = production_vars(vars_from_dataset(cfg_dir / "datasets" / "support-triage.jsonl"), seed=5)
    router = Router("support-triage", registry=reg, refresh_s=0).start()

    async def traffic() -> None:
        for i in range(400):
            await router.complete(f"user-{i}", pool[i % len(pool)])

    asyncio.run(traffic())
    router.flush_samples()
    router.writer.flush()
    return router


def test_judge_scores_samples_of_both_arms_into_the_score_metric(pairshift_env, tmp_path) -> None:
    router = _setup(tmp_path, JUDGE)
    reg = open_registry()
    with reg.session() as s:
        stored = list(s.scalars(select(OutputSample).where(OutputSample.kind == "judge")))
    assert len(stored) == 400 and {x.variant for x in stored} == {"control", "candidate"}
    assert not any("order " in x.input.lower() + x.output.lower() for x in stored), "redacted"
    canary = CanaryPolicy.model_validate({"judge": JUDGE})
    now = utcnow()
    rounds = []
    for _ in range(2):  # at most JUDGED_PER_CHECK a round
        rounds.append(
            asyncio.run(
                online_judge.judge_round(
                    reg,
                    "support-triage",
                    MIGRATION,
                    canary.judge,
                    now=now,
                    under_test=("sim-classic-2024-06", "sim-drift-2026-07"),
                )
            )
        )
    assert sum(r.judged for r in rounds) == 400 and rounds[0].cost_usd > 0
    assert rounds[-1].spent_today_usd == pytest.approx(sum(r.cost_usd for r in rounds))
    reasons = rounds[0].reasons()
    assert reasons[0].startswith("judge sim-classic-2024-06: 200 sampled output(s) scored this check ($")
    assert "of the $5 daily cap spent today" in reasons[0]
    assert any("same family" in r for r in reasons), "a sim judge grading sim models is warned about"
    with reg.session() as s:
        stats = stage_stats(s, MIGRATION, 50.0, ranks_for=lambda n: latency_ranks(canary, n))
    assert stats["control"].score.n > 0 and stats["candidate"].score.n > 0
    control_mean, _ = stats["control"].score.estimate("bounded")
    candidate_mean, _ = stats["candidate"].score.estimate("bounded")
    assert control_mean == 1.0 and 0.8 < candidate_mean < 0.97, "drift wraps ~10% of production outputs"
    with reg.session() as s:
        figures = {f.variant: f for f in output_samples.stage_figures(s, MIGRATION)}
    cand = figures["candidate"]
    assert cand.score == pytest.approx(candidate_mean) and cand.scored == cand.calls  # every call sampled
    assert figures["candidate"].score_ci[0] < candidate_mean < figures["candidate"].score_ci[1]
    assert "| 50% | candidate |" in output_samples.render_markdown({}, list(figures.values()))
    router.close()


def test_the_daily_cap_holds(pairshift_env, tmp_path) -> None:
    cap = 0.02  # a few judge calls' worth at sim-classic's prices
    router = _setup(tmp_path, {**JUDGE, "max_cost_usd_per_day": cap})
    reg = open_registry()
    judge = CanaryPolicy.model_validate({"judge": {**JUDGE, "max_cost_usd_per_day": cap}}).judge
    now = utcnow()
    first = asyncio.run(online_judge.judge_round(reg, "support-triage", MIGRATION, judge, now=now))
    assert first.capped and 0 < first.judged < 400 and first.waiting > 0
    assert first.spent_today_usd <= cap
    assert any("daily cap reached" in r for r in first.reasons())
    again = asyncio.run(online_judge.judge_round(reg, "support-triage", MIGRATION, judge, now=now))
    assert again.judged == 0 and again.capped and again.spent_today_usd == first.spent_today_usd
    with reg.session() as s:
        spent = s.scalar(select(func.sum(OutputSample.cost_usd)))
    assert spent <= cap, "what the judge was paid today stays within the cap"
    tomorrow = asyncio.run(
        online_judge.judge_round(reg, "support-triage", MIGRATION, judge, now=now + timedelta(days=1))
    )
    assert tomorrow.judged > 0 and tomorrow.spent_today_usd <= cap
    router.close()


def test_a_gate_check_runs_a_judge_round_and_reports_its_cost(pairshift_env, tmp_path) -> None:
    from temporalio.testing import ActivityEnvironment

    from activities.migration import check_stage
    from pairshift.contracts.migration import StageCheckInput

    router = _setup(tmp_path, JUDGE)
    policy = copy.deepcopy(TEST_POLICY)["canary"]
    canary = CanaryPolicy.model_validate({**policy, "judge": JUDGE})
    inp = StageCheckInput(
        deployment="support-triage",
        migration=MIGRATION,
        since=utcnow() - timedelta(hours=1),
        percent=50,
        canary=canary,
        elapsed_hours=1,
        min_hours=0.004,
    )
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, workflow_type="StageWatchWorkflow")
    watched = env.run(check_stage, inp)
    assert not any(r.startswith("judge ") for r in watched.reasons), "a StageWatch's checks do not judge"
    env.info = dataclasses.replace(env.info, workflow_type="MigrationWorkflow")
    check = env.run(check_stage, inp)
    assert any(r.startswith("judge sim-classic-2024-06: 200 sampled output(s) scored") for r in check.reasons)
    score = check.metrics["score"]
    assert score["control"] == 1.0 and score["candidate"] < 1.0, score
    router.close()


def test_apply_refuses_an_unknown_canary_judge(pairshift_env, tmp_path) -> None:
    from pairshift.config import ConfigError

    policy = copy.deepcopy(TEST_POLICY)
    policy["canary"]["judge"] = {**JUDGE, "model": "no-such-judge"}
    with pytest.raises(ConfigError, match=r"canary\.judge\.model.*judge no-such-judge is not a known model"):
        apply_path(open_registry(), small_examples(tmp_path / "config", policy=policy), by="test")


def test_a_round_stops_starting_calls_when_its_time_is_up(pairshift_env, tmp_path) -> None:
    router = _setup(tmp_path, JUDGE)
    judge = CanaryPolicy.model_validate({"judge": JUDGE}).judge
    done = asyncio.run(
        online_judge.judge_round(open_registry(), "support-triage", MIGRATION, judge, now=utcnow(), seconds=0)
    )
    assert done.judged == 1 and done.waiting == 199  # the first call starts at once, no second one
    router.close()
