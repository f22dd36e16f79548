"""Pairwise judging for a shadow stage: which of two outputs to the same input better satisfies a rubric.

A shadow stage mirrors a share of control's requests to the candidate pair without serving its answers; a
judge then compares the two outputs for the same input. Judges favour a position (often the first answer
shown), so every pair is judged twice, once with the candidate shown as ``A`` and once as ``B``, and the
candidate's score for the input is the mean of the two orders' outcomes (win 1, tie 0.5, loss 0). A judge that
always names the same position then scores every pair 0.5, exactly what an identical candidate scores:
position bias cancels instead of posing as a quality difference. The shadow gate
(:func:`pairshift.gates.shadow_gate`) compares the candidate's mean pair score, clustered by unit, with 0.5.

Pure functions (no I/O): the prompt (texts cut with :func:`pairshift.output_samples.bounded`, as the canary
judge's), the reply parser (tolerant like the eval judge's: code fences, prose around the JSON, the YAML flow
form, in bounded time), and the pair score.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pairshift.output_samples import JUDGE_TEXT_MAX, bounded
from pairshift.scorers.assertions import extract_json_objects

Preference = Literal["A", "B", "tie"]

PAIRWISE_TEXT_MAX = JUDGE_TEXT_MAX  # characters of the input, of each output and of the rubric shown
REPLY_MAX = 4000  # characters of a judge's reply read (a verdict is one short object)
_WORDS: dict[str, Preference] = {
    "a": "A",
    "b": "B",
    "tie": "tie",
    "draw": "tie",
    "equal": "tie",
    "both": "tie",
    "neither": "tie",
}
_LOOSE_WINNER = re.compile(r"""["']?\bwinner["']?\s*:\s*["']?([A-Za-z]+)""", re.IGNORECASE)
_FENCE = re.compile(r"^\s*```[\w-]*\s*|\s*```\s*$")
_OUTCOME: dict[str, float] = {"win": 1.0, "tie": 0.5, "loss": 0.0}


def pairwise_prompt(rubric: str, input_text: str, first: str, second: str) -> str:
    """The judge's prompt: ``first`` is shown as output A, ``second`` as B; each text cut to
    :data:`PAIRWISE_TEXT_MAX` characters (the rubric too)."""
    return (
        "You compare two AI system outputs to the same input against a rubric.\n\n"
        f"<Input>\n{bounded(input_text, PAIRWISE_TEXT_MAX)}\n</Input>\n\n"
        f"<Output A>\n{bounded(first, PAIRWISE_TEXT_MAX)}\n</Output A>\n\n"
        f"<Output B>\n{bounded(second, PAIRWISE_TEXT_MAX)}\n</Output B>\n\n"
        f"<Rubric>\n{bounded(rubric, PAIRWISE_TEXT_MAX)}\n</Rubric>\n\n"
        "Decide which output better satisfies the rubric; the order in which they are shown says nothing "
        'about their quality. Answer "tie" when neither is better. Answer with one JSON object and '
        'nothing else: {"winner": "A"} or {"winner": "B"} or {"winner": "tie"}'
    )


def _word(value: object) -> Preference | None:
    if not isinstance(value, str):
        return None
    return _WORDS.get(value.strip().strip("\"'.").strip().lower())


def _objects(text: str) -> list[Any]:
    try:
        return extract_json_objects(text)
    except RecursionError:  # a reply of thousands of nested brackets: not a verdict
        return []


def parse_preference(reply: str) -> Preference | None:
    """The judge's verdict, or None when the reply cannot be read.

    Reads the first JSON object carrying a ``winner`` key anywhere in the reply (code fences and prose around
    it are fine, as for the eval judge, :func:`pairshift.scorers.assertions.extract_json_objects`); failing
    that, the first ``winner: X`` (the YAML flow form ``{winner: A}``, or JSON cut short); failing that, a
    reply that is only ``A``, ``B`` or ``tie`` (fences, quotes and a full stop allowed). Winner values are
    case-insensitive; ``draw``, ``equal``, ``both`` and ``neither`` read as a tie. Anything else (no winner,
    an unknown one such as ``C``) is None: the pair is unreadable, never guessed. Only the first
    :data:`REPLY_MAX` characters are read, in milliseconds whatever they hold (the ``winner:`` pattern stands
    in for the eval judge's YAML fallback, which parses every brace-balanced span).
    """
    if not isinstance(reply, str):
        return None
    text = reply[:REPLY_MAX]
    for obj in _objects(text):
        if isinstance(obj, dict) and "winner" in obj:
            return _word(obj["winner"])
    loose = _LOOSE_WINNER.search(text)
    if loose is not None:
        return _word(loose.group(1))
    return _word(_FENCE.sub("", text))


def _outcome(shown_as: str, preference: Preference) -> str:
    if preference == "tie":
        return "tie"
    return "win" if preference == shown_as else "loss"


def pair_score(candidate_as_a: Preference | None, candidate_as_b: Preference | None) -> float | None:
    """The candidate's score for one input from the two orders of one pair, in {0, 0.25, 0.5, 0.75, 1}.

    ``candidate_as_a``: the judge's verdict with the candidate shown as A (control as B);
    ``candidate_as_b``: with the candidate shown as B. Each order scores the candidate win 1, tie 0.5, loss 0;
    the pair's score is their mean, so a judge that always answers "A" (or always "B") scores 0.5.

    None when either order is unreadable: keeping the readable order alone would score the pair from one
    position only, and the position the judge favours would then count as a win or a loss (the position
    bias the two orders are there to cancel). The pair is dropped instead, and counted as unreadable.
    """
    for name, value in (("candidate_as_a", candidate_as_a), ("candidate_as_b", candidate_as_b)):
        if value is not None and value not in _WORDS.values():
            raise ValueError(f"{name} must be 'A', 'B', 'tie' or None, got {value!r}")
    if candidate_as_a is None or candidate_as_b is None:
        return None
    first = _OUTCOME[_outcome("A", candidate_as_a)]
    second = _OUTCOME[_outcome("B", candidate_as_b)]
    return (first + second) / 2
