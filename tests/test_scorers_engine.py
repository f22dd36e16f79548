"""Case scoring: weights, thresholds, assert-set, negation and the sync fast path.

Rules from promptfoo "Assertions & metrics" (https://www.promptfoo.dev/docs/configuration/expected-outputs/,
"Weighted assertions" and the test-level `threshold`) and "Deterministic metrics" > "Assert-Set"
(https://promptfoo.dev/docs/configuration/expected-outputs/deterministic/#assert-set), as implemented in
promptfoo src/assertions/assertionsResult.ts.
"""

from __future__ import annotations

from typing import Any

import pytest

from pairshift.datasets import build_case
from pairshift.scorers import Output, ScorerError, score_case, score_case_sync


def _score(asserts: list[dict[str, Any]], text: str, threshold: float | None = None):
    case = build_case({"id": "c", "vars": {}, "assert": asserts, "threshold": threshold}, "t")
    return score_case_sync(case, Output(text=text))


HELLO = {"type": "contains", "value": "hello"}
NO_ERROR = {"type": "not-contains", "value": "error"}
IS_JSON = {"type": "is-json"}


@pytest.mark.parametrize(
    ("asserts", "text", "threshold", "passed", "score"),
    [
        # Weighted mean: contains (w=3) passes, is-json (w=1) fails -> 0.75, case fails (all must pass).
        ([{**HELLO, "weight": 3}, IS_JSON], "hello", None, False, 0.75),
        # Test-level threshold overrides individual failures: 0.75 >= 0.7 passes, 0.75 < 0.8 fails.
        ([{**HELLO, "weight": 3}, IS_JSON], "hello", 0.7, True, 0.75),
        ([{**HELLO, "weight": 3}, IS_JSON], "hello", 0.8, False, 0.75),
        # weight 0: a measurement that cannot fail the case and does not count in the score.
        ([HELLO, {**IS_JSON, "weight": 0}], "hello", None, True, 1.0),
        # All weights 0: promptfoo scores 0 (no weight) but nothing failed.
        ([{**IS_JSON, "weight": 0}], "hello", None, True, 0.0),
        # DET "Assert-Set" example: threshold 0.5, contains hello / not-contains error / is-json (llm-rubric
        # replaced by a deterministic member): 2 of 3 pass -> 0.667 >= 0.5, so the set and the case pass.
        (
            [{"type": "assert-set", "threshold": 0.5, "assert": [HELLO, NO_ERROR, IS_JSON]}],
            "hello",
            None,
            True,
            2 / 3,
        ),
        # Same set, threshold 0.75: the set fails; the case fails.
        (
            [{"type": "assert-set", "threshold": 0.75, "assert": [HELLO, NO_ERROR, IS_JSON]}],
            "hello",
            None,
            False,
            2 / 3,
        ),
        # Without a threshold the set needs every member.
        ([{"type": "assert-set", "assert": [HELLO, IS_JSON]}], "hello", None, False, 0.5),
        # DET "Assert-Set" weights example: the set (weight 2, threshold 0.25) counts as one weighted member
        # (its `similar` member swapped for `equals` so the expected score is exact).
        (
            [
                {
                    "type": "assert-set",
                    "threshold": 0.25,
                    "weight": 2,
                    "metric": "quality_checks",
                    "assert": [
                        {"type": "equals", "value": "expected output"},
                        {"type": "contains", "value": "key phrase"},
                    ],
                },
                IS_JSON,
            ],
            "has key phrase",
            None,
            False,
            (2 * 0.5 + 0) / 3,
        ),
        # Negated set: not-assert-set passes when the set fails, score 1 - set score.
        ([{"type": "not-assert-set", "assert": [HELLO, IS_JSON]}], "hello", None, True, 0.5),
    ],
)
def test_case_score(
    asserts: list[dict[str, Any]], text: str, threshold: float | None, passed: bool, score: float
) -> None:
    result = _score(asserts, text, threshold)
    assert result.passed is passed
    assert result.score == pytest.approx(score, abs=1e-9)


def test_assert_set_results_list_children_after_the_set() -> None:
    result = _score([HELLO, {"type": "assert-set", "metric": "m", "assert": [NO_ERROR, IS_JSON]}], "hello")
    assert [(r.type, r.parent) for r in result.results] == [
        ("contains", None),
        ("assert-set", None),
        ("not-contains", 1),
        ("is-json", 1),
    ]
    assert result.results[1].metric == "m" and not result.results[1].passed


def test_values_are_rendered_with_case_vars() -> None:
    case = build_case(
        {
            "id": "c",
            "vars": {"team": "billing"},
            "assert": [{"type": "json-field", "path": "team", "value": "{{ team }}"}],
        },
        "t",
    )
    assert score_case_sync(case, Output(text='{"team": "billing"}')).passed
    assert not score_case_sync(case, Output(text='{"team": "sales"}')).passed


def test_sync_path_refuses_model_graded_types() -> None:
    case = build_case(
        {
            "id": "c",
            "vars": {},
            "assert": [{"type": "assert-set", "assert": [{"type": "llm-rubric", "value": "is polite"}]}],
        },
        "t",
    )
    with pytest.raises(ScorerError, match="llm-rubric"):
        score_case_sync(case, Output(text="hi"))


async def test_async_path_scores_deterministic_cases_without_a_judge() -> None:
    case = build_case({"id": "c", "vars": {}, "assert": [HELLO]}, "t")
    assert (await score_case(case, Output(text="hello"))).passed
