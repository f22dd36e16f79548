"""Issue 24, item 8: the factuality answer line, what an errored call costs, shares that route nobody."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pairshift.paired import paired_ratio
from pairshift.policy import Policy
from pairshift.scorers.model_graded import parse_factuality_reply
from pairshift.stats import CaseOutcome, summarize_arm


@pytest.mark.parametrize(
    ("reply", "category"),
    [
        ("(B) The submission adds detail.", "B"),
        ("Both say Paris.\n(C)", "C"),
        ("Answer: D", "D"),
        ("E", "E"),
        ('{"category": "A", "reason": "subset"}', "A"),
    ],
)
def test_factuality_reads_the_answer_line(reply: str, category: str) -> None:
    verdict = parse_factuality_reply(reply)
    assert not verdict.grader_error and verdict.passed is (category != "D")
    assert category in verdict.reason or verdict.reason


@pytest.mark.parametrize(
    "reply",
    [
        "The submission disagrees with the expert (see above).",
        "I compared both (see above).\nThey differ on the date.",
        "a) the dates differ\nb) the city matches",
        "A great answer overall, though it names the wrong city.",
    ],
)
def test_factuality_letters_outside_the_answer_line_are_not_answers(reply: str) -> None:
    """Old parser: any "[a-e])" anywhere, so "(see above)" read as category E, a pass."""
    verdict = parse_factuality_reply(reply)
    assert verdict.grader_error and not verdict.passed


def _calls(cost: float, errors: int, ok: int) -> list[CaseOutcome]:
    return [
        CaseOutcome(
            case_id=f"c{i}",
            epoch=1,
            passed=i >= errors,
            score=1.0,
            cost_usd=0.0 if i < errors else cost,
            latency_ms=10.0,
            error=i < errors,
        )
        for i in range(errors + ok)
    ]


def test_errored_calls_do_not_make_an_arm_cheaper() -> None:
    """Old code: cost per call over every call, an errored one at 0: the arm with errors looked cheaper."""
    clean, flaky = summarize_arm(_calls(0.01, 0, 10)), summarize_arm(_calls(0.01, 5, 5))
    assert clean.cost_per_case == pytest.approx(0.01)
    assert flaky.cost_per_case == pytest.approx(0.01)
    assert summarize_arm(_calls(0.01, 3, 0)).cost_per_case == 0.0


def test_paired_cost_ratio_leaves_errored_calls_out() -> None:
    ratio = paired_ratio(_calls(0.01, 0, 10), _calls(0.01, 5, 5), "cost", 0.95, resamples=200)
    assert ratio is not None and ratio.ratio == pytest.approx(1.0)


@pytest.mark.parametrize("percent", [0.004, 0.005, 0.001])
def test_a_share_that_rounds_to_no_bucket_is_refused(percent: float) -> None:
    with pytest.raises(ValidationError, match="routes no unit"):
        Policy.model_validate({"name": "p", "canary": {"stages": [{"percent": percent}, {"percent": 100}]}})


def test_the_smallest_routable_share_is_kept() -> None:
    policy = Policy.model_validate({"name": "p", "canary": {"stages": [{"percent": 0.01}, {"percent": 100}]}})
    assert policy.canary.stages[0].percent == 0.01
