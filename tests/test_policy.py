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
        ({"canary": {"stages": [{"percent": 0}]}}, "canary.stages.0.percent", "greater than 0"),
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
