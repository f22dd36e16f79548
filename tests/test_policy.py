"""The policy schema refuses what would make a gate meaningless, naming the field."""

import pytest
from pydantic import ValidationError

from pairshift.policy import Policy, format_validation_error


def test_defaults_are_the_documented_policy():
    p = Policy()
    assert [s.percent for s in p.canary.stages] == [1, 5, 20, 50, 100]
    assert p.canary.stages[2].approval is True
    assert p.eval.blocking == ["is-json"] and p.eval.max_regression == 0.02
    assert p.canary.min_samples == "auto" and p.approvals.separation_of_duties


@pytest.mark.parametrize(
    "spec, field, words",
    [
        ({"canary": {"stages": [{"percent": 120}]}}, "canary.stages.0.percent", "less than or equal to 100"),
        (
            {"canary": {"stages": [{"percent": 0}]}},
            "canary.stages.0",
            "percent: Input should be greater than 0",
        ),
        (
            {"canary": {"stages": [{"percent": 5, "min_hours": 3, "max_hours": 2}]}},
            "canary.stages.0",
            "less than min_hours",
        ),
        ({"canary": {"stages": []}}, "canary.stages", "at least 1 item"),
        (
            {"canary": {"metrics": {"p99_vibes": {"max_ratio": 2}}}},
            "canary.metrics.p99_vibes",
            "Extra inputs",
        ),
        ({"canary": {"stages": [{"percent": 20}, {"percent": 5}]}}, "canary.stages", "must be greater than"),
        ({"canary": {"min_samples": 0}}, "canary.min_samples", "positive"),
        ({"eval": {"epochs": 0}}, "eval.epochs", "greater than or equal to 1"),
        ({"eval": {"mode": "cheap"}}, "eval.mode", "'online', 'batch' or 'auto'"),
        (
            {"eval": {"mode": "auto", "batch_min_calls": 0}},
            "eval.batch_min_calls",
            "greater than or equal to 1",
        ),
        ({"approvals": {"approvers": ["a"], "required": 2}}, "approvals", "exceeds"),
        ({"notice": {"slack": "#x"}}, "notice.slack", "Extra inputs"),
    ],
)
def test_invalid_policies_name_the_field(spec, field, words):
    with pytest.raises(ValidationError) as info:
        Policy.model_validate(spec)
    line = format_validation_error(info.value, "policy default")
    assert f"policy default: {field}" in line and words in line
    assert "\n" not in line


def test_fractional_durations_allowed_for_demos():
    p = Policy.model_validate(
        {"canary": {"stages": [{"percent": 50, "min_hours": 0.001}], "check_every_minutes": 0.01}}
    )
    assert p.canary.stages[0].min_hours == 0.001


JUDGE = {"model": "sim-strict-2026-05", "sample_rate": 0.1, "rubric": "bare JSON", "max_cost_usd_per_day": 1}


@pytest.mark.parametrize(
    "stages, words",
    [
        ([{"shadow": 5, "percent": 5}], "live (percent) or shadow (shadow), not both"),
        ([{"percent": 5}, {"shadow": 5}], "shadow stages come before the first live stage"),
        ([{"shadow": 5}, {"shadow": 2}, {"percent": 5}], "shadow 2 must be greater than stage 0's 5"),
        ([{"shadow": 0.001}], "routes no unit"),
        ([{"shadow": 120}], "less than or equal to 100"),
    ],
)
def test_shadow_stages_are_refused_where_they_mean_nothing(stages, words):
    with pytest.raises(ValidationError) as info:
        Policy.model_validate({"canary": {"stages": stages, "judge": JUDGE}})
    assert words in format_validation_error(info.value, "policy p")


def test_a_shadow_stage_needs_a_judge_and_the_default_policy_gains_one_with_a_judge():
    with pytest.raises(
        ValidationError, match="a shadow stage is judged pairwise against control: set canary.judge"
    ):
        Policy.model_validate({"canary": {"stages": [{"shadow": 5}, {"percent": 5}]}})
    with_judge = Policy.model_validate({"canary": {"judge": JUDGE}})
    first = with_judge.canary.stages[0]
    assert (first.shadow, first.percent, first.min_hours, first.label) == (5, 0, 2, "shadow 5%")
    assert [s.percent for s in with_judge.canary.stages[1:]] == [1, 5, 20, 50, 100]
    assert Policy.model_validate(with_judge.model_dump()) == with_judge, "a dumped policy reads back the same"
    assert all(s.shadow is None for s in Policy().canary.stages), "no judge: no shadow stage"
    explicit = Policy.model_validate({"canary": {"judge": JUDGE, "stages": [{"percent": 10}]}})
    assert [s.percent for s in explicit.canary.stages] == [10], "stages given: kept as given"
    budget = with_judge.canary.shadow_budget
    assert (budget.max_calls_per_hour, budget.max_cost_usd_per_hour, budget.max_queued) == (1000, 1.0, 100)
