"""Model-graded assertions with a fake judge (no network).

Reply formats follow promptfoo "Model-graded metrics" (https://www.promptfoo.dev/docs/configuration/
expected-outputs/model-graded/): llm-rubric JSON {pass, score, reason}, closedqa Y/N, factuality A-E.
"""

from __future__ import annotations

from typing import Any

import pytest

from pairshift.datasets import build_case
from pairshift.scorers import Output, ScorerError, score_case


class FakeJudge:
    """Answers with canned replies and records the prompts it was sent."""

    def __init__(self, *replies: str) -> None:
        self.replies = list(replies)
        self.prompts: list[str] = []

    async def __call__(self, prompt: str) -> str:
        self.prompts.append(prompt)
        return self.replies.pop(0)


def _case(assertion: dict[str, Any]):
    return build_case({"id": "c", "vars": {"input": "Capital of France?"}, "assert": [assertion]}, "t")


@pytest.mark.parametrize(
    ("assertion", "reply", "passed", "score"),
    [
        (
            {"type": "llm-rubric", "value": "Does not promise a refund"},
            '{"reason": "ok", "pass": true, "score": 0.9}',
            True,
            0.9,
        ),
        (
            {"type": "llm-rubric", "value": "x"},
            'Sure! ```json\n{"pass": false, "score": 0.2, "reason": "no"}\n```',
            False,
            0.2,
        ),
        # PRODUCT §5 example: threshold 0.8 — a passing reply below the threshold fails.
        ({"type": "llm-rubric", "value": "x", "threshold": 0.8}, '{"pass": true, "score": 0.7}', False, 0.7),
        ({"type": "llm-rubric", "value": "x"}, '{"pass": "yes"}', True, 1.0),
        ({"type": "not-llm-rubric", "value": "x"}, '{"pass": true, "score": 0.9}', False, pytest.approx(0.1)),
        ({"type": "model-graded-closedqa", "value": "names Paris"}, "It says Paris.\nY", True, 1.0),
        ({"type": "model-graded-closedqa", "value": "names Paris"}, "No mention.\nN", False, 0.0),
        (
            {"type": "factuality", "value": "Paris is the capital"},
            '{"category": "C", "reason": "same"}',
            True,
            1.0,
        ),
        (
            {"type": "factuality", "value": "Paris is the capital"},
            '{"category": "D", "reason": "disagrees"}',
            False,
            0.0,
        ),
        (
            {"type": "factuality", "value": "Paris is the capital"},
            "(B) The submission adds detail.",
            True,
            1.0,
        ),
    ],
)
async def test_judge_reply_is_read_like_promptfoo(
    assertion: dict[str, Any], reply: str, passed: bool, score: Any
) -> None:
    judge = FakeJudge(reply)
    result = (await score_case(_case(assertion), Output(text="Paris"), judge=judge)).results[0]
    assert result.passed is passed and result.score == score
    assert len(judge.prompts) == 1 and "Paris" in judge.prompts[0]


@pytest.mark.parametrize(
    "assertion",
    [
        {"type": "not-llm-rubric", "value": "x"},
        {"type": "not-model-graded-closedqa", "value": "x"},
        {"type": "not-factuality", "value": "x"},
    ],
)
async def test_unreadable_reply_fails_even_when_negated(assertion: dict[str, Any]) -> None:
    result = (
        await score_case(_case(assertion), Output(text="Paris"), judge=FakeJudge("I think so?"))
    ).results[0]
    assert not result.passed and result.score == 0


async def test_judge_sees_rubric_task_and_expert_answer() -> None:
    judge = FakeJudge('{"category": "A"}', "Y")
    case = build_case(
        {
            "id": "c",
            "vars": {"q": "x"},
            "assert": [
                {"type": "factuality", "value": "EXPERT-{{ q }}"},
                {"type": "model-graded-closedqa", "value": "CRIT"},
            ],
        },
        "t",
    )
    result = await score_case(case, Output(text="SUBMISSION", prompt="THE-PROMPT"), judge=judge)
    assert result.passed
    assert all("THE-PROMPT" in p and "SUBMISSION" in p for p in judge.prompts)
    assert any("EXPERT-x" in p for p in judge.prompts) and any("CRIT" in p for p in judge.prompts)


async def test_missing_judge_is_a_clear_error() -> None:
    with pytest.raises(ScorerError, match="needs a judge"):
        await score_case(_case({"type": "llm-rubric", "value": "x"}), Output(text="Paris"))


async def test_errored_output_does_not_call_the_judge() -> None:
    judge = FakeJudge()
    result = await score_case(
        _case({"type": "llm-rubric", "value": "x"}), Output(text="", error="timeout"), judge=judge
    )
    assert not result.passed and judge.prompts == []
