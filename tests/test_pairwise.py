"""Pairwise judging (pairshift.pairwise): the prompt, the reply parser and the two-order pair score."""

from __future__ import annotations

import itertools

import pytest

from pairshift.output_samples import JUDGE_TEXT_MAX
from pairshift.pairwise import PAIRWISE_TEXT_MAX, REPLY_MAX, pair_score, pairwise_prompt, parse_preference


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('{"winner": "A"}', "A"),
        ('{"winner": "B"}', "B"),
        ('{"winner": "tie"}', "tie"),
        ('{"winner": "b"}', "B"),
        ('{"winner": " Tie "}', "tie"),
        ('{"winner": "draw"}', "tie"),
        ('```json\n{"winner": "A"}\n```', "A"),
        ('Both are fine, but B cites the source.\n{"reason": "cites {source}", "winner": "B"}', "B"),
        ("{winner: A}", "A"),  # the YAML flow form, as the eval judge's parser reads it
        ('{"reason": "first"} then {"winner": "B"}', "B"),  # the first object with a winner counts
        ('{"winner": "A"', "A"),  # JSON cut short
        ("The winner: B.", "B"),
        ("'winner': 'tie'", "tie"),
        ("B", "B"),
        ('"A".', "A"),
        ("```\ntie\n```", "tie"),
        # unreadable: never guessed
        ("", None),
        ("A is better than B", None),
        ('{"winner": "C"}', None),
        ('{"winner": 1}', None),
        ('{"winner": null}', None),
        ('{"winner": ["A"]}', None),
        ('{"reason": "no verdict"}', None),
        ('{"winner": "A or B"}', None),
        ("I cannot decide.", None),
    ],
)
def test_parse_preference(reply: str, expected: str | None) -> None:
    assert parse_preference(reply) == expected


def test_parse_preference_reads_a_bounded_prefix_of_a_hostile_reply() -> None:
    assert parse_preference("{" * 50_000) is None
    assert parse_preference("x" * REPLY_MAX + '{"winner": "A"}') is None  # beyond what is read
    assert parse_preference(" " * 100 + '{"winner": "A"}' + "}" * 50_000) == "A"
    assert parse_preference('{"a":' * 5_000) is None  # nested past the recursion limit
    assert parse_preference("[" * 50_000) is None
    assert parse_preference(None) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("as_a", "as_b", "score"),
    [
        ("A", "B", 1.0),  # the candidate wins in both orders
        ("B", "A", 0.0),  # control wins in both orders
        ("A", "A", 0.5),  # a judge that always says A: position bias, no preference
        ("B", "B", 0.5),  # always B
        ("tie", "tie", 0.5),
        ("A", "tie", 0.75),
        ("tie", "B", 0.75),
        ("B", "tie", 0.25),
        ("tie", "A", 0.25),
        # either order unreadable: the pair is dropped, never scored from one position
        (None, "B", None),
        ("A", None, None),
        (None, None, None),
    ],
)
def test_pair_score(as_a: str | None, as_b: str | None, score: float | None) -> None:
    assert pair_score(as_a, as_b) == score  # type: ignore[arg-type]


def test_a_position_biased_judge_scores_every_candidate_one_half() -> None:
    """Whatever the outputs, a judge that answers by position scores 0.5 in both directions."""
    for position in ("A", "B"):
        assert pair_score(position, position) == 0.5  # type: ignore[arg-type]
    # the same two judged prompts score control (shown as A in the second) as 1 - the candidate's score
    prefs = ("A", "B", "tie")
    for as_a, as_b in itertools.product(prefs, prefs):
        control = pair_score(as_b, as_a)  # type: ignore[arg-type]
        assert control is not None
        assert pair_score(as_a, as_b) == pytest.approx(1.0 - control)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["a", "C", "", "winner", 1, True])
def test_pair_score_refuses_what_is_not_a_preference(bad: object) -> None:
    with pytest.raises(ValueError, match="must be 'A', 'B', 'tie' or None"):
        pair_score(bad, "A")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="candidate_as_b"):
        pair_score("A", bad)  # type: ignore[arg-type]


def test_pairwise_prompt_shows_first_as_a_and_bounds_every_text() -> None:
    prompt = pairwise_prompt("be concise", "what is 2+2?", "four", "4")
    assert prompt.index("<Output A>\nfour\n") < prompt.index("<Output B>\n4\n")
    assert "be concise" in prompt and "what is 2+2?" in prompt
    assert '{"winner": "A"}' in prompt and '{"winner": "tie"}' in prompt

    assert PAIRWISE_TEXT_MAX == JUDGE_TEXT_MAX
    huge = pairwise_prompt("r" * 10**6, "i" * 10**6, "a" * 10**6, "b" * 10**6)
    assert len(huge) < 4 * PAIRWISE_TEXT_MAX + 1_000
    for letter in "riab":
        assert letter * (PAIRWISE_TEXT_MAX - 1) + "…" in huge
