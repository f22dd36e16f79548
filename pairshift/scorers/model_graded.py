"""Model-graded assertions (llm-rubric, model-graded-closedqa, factuality) judged by a registry judge model.

The judge is any ``async (prompt: str) -> str`` callable; choosing it (a different model family from the
model under test) is the caller's business. The grading prompts are pairshift's own wording; the replies
are read the way promptfoo reads them (src/matchers/llmGrading.ts, rubric.ts):

- llm-rubric: the first object of the reply, ``{"pass", "score", "reason"}``, read loosely as promptfoo's
  extractor does (``{pass: true}``, a missing closing brace); a missing or null ``pass`` means true, a
  non-boolean one passes when it reads true/yes/pass/y; a ``score`` that is not a number is
  JavaScript's ``Number(score)`` when finite (``null`` is 0), else ``Number(pass)``; with a ``threshold``
  the score must also reach it. Under ``not-`` the score becomes ``1 - score``, clamped to [0, 1].
- model-graded-closedqa: the reply's last character ``Y`` passes, ``N`` fails.
- factuality: ``{"category": "A".."E"}``, or the legacy answer line promptfoo's format prescribes: the reply's
  first or last line opens with the option, ``(B)`` / ``B)`` / ``Answer: B`` (a letter in parentheses
  anywhere else, like ``(see above)``, is not an answer); D (disagreement) fails, A/B/C/E pass.

A reply that cannot be read is a grader error: the assertion fails and ``not-`` does not turn it into a pass.
An exception raised by the judge propagates, so the calling activity can retry the call.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Awaitable, Callable
from typing import Any

import yaml

from pairshift.datasets import Assertion, Case
from pairshift.jscompat.values import js_number, js_string
from pairshift.scorers.assertions import Output, Verdict, extract_json_objects

Judge = Callable[[str], Awaitable[str]]

_FACTUALITY_SCORES = {"A": 1.0, "B": 1.0, "C": 1.0, "D": 0.0, "E": 1.0}
_FACTUALITY_MEANING = {
    "A": "the submission is a subset of the expert answer and consistent with it",
    "B": "the submission is a superset of the expert answer and consistent with it",
    "C": "the submission has the same details as the expert answer",
    "D": "the submission disagrees with the expert answer",
    "E": "the answers differ, but not in ways that matter for factuality",
}


class ScorerError(RuntimeError):
    """A case cannot be scored as asked (no judge for a model-graded type, a sync call with one)."""


def rubric_prompt(rubric: Any, output: str) -> str:
    rubric_text = rubric if isinstance(rubric, str) else json.dumps(rubric)
    return (
        "You grade an AI system's output against a rubric.\n\n"
        f"<Output>\n{output}\n</Output>\n\n<Rubric>\n{rubric_text}\n</Rubric>\n\n"
        "Decide whether the output satisfies the rubric. Answer with one JSON object and nothing else:\n"
        '{"reason": "<one or two sentences>", "pass": true or false, "score": <0.0 to 1.0>}'
    )


def closedqa_prompt(task: str, criterion: str, output: str) -> str:
    return (
        "You assess a submitted answer against a criterion.\n\n"
        f"[Task]: {task}\n\n[Submission]: {output}\n\n[Criterion]: {criterion}\n\n"
        "Does the submission meet the criterion? Reason step by step, then write the single letter Y or N "
        "alone on the last line."
    )


def factuality_prompt(question: str, expert: str, output: str) -> str:
    choices = "\n".join(f"({k}) {v}" for k, v in _FACTUALITY_MEANING.items())
    return (
        "You compare the factual content of a submitted answer with an expert answer; ignore style, "
        "grammar and punctuation.\n\n"
        f"[Question]: {question}\n\n[Expert]: {expert}\n\n[Submission]: {output}\n\n"
        f"Choose one:\n{choices}\n\n"
        'Answer with one JSON object and nothing else: {"category": "<A-E>", "reason": "<why>"}'
    )


def grading_prompts_version() -> str:
    """A digest of the grading prompts' wording: a graded result is evidence of the prompt that graded it."""
    probe = "\x00".join(
        [rubric_prompt("R", "O"), closedqa_prompt("T", "C", "O"), factuality_prompt("Q", "E", "O")]
    )
    return hashlib.sha256(probe.encode()).hexdigest()[:16]


# A judge's reply is model output and may echo the hostile text it judged. Both parsers recurse per nesting
# level (a reply of 1,000 "{" raised RecursionError out of the scorer), and the brace scan below restarts at
# every "{": an object nested deeper than this is not a verdict, so a span stops being read past it.
MAX_REPLY_DEPTH = 64


def _loose_object(candidate: str) -> Any:
    try:
        return json.loads(candidate)
    except (ValueError, RecursionError):
        pass
    try:
        return yaml.safe_load(candidate)  # the YAML flow form reads {pass: true} as promptfoo's js-yaml does
    except (yaml.YAMLError, RecursionError):
        return None


def loose_json_objects(text: str) -> list[Any]:
    """Objects in a judge's reply the way promptfoo's extractJsonObjects finds them (src/util/json.ts).

    From each ``{``, braces are counted (strings are not special) and the span is read once balanced, or at
    the end of the text with the missing ``}`` added; ``//`` comments are not handled. Unlike promptfoo, a
    span nested deeper than ``MAX_REPLY_DEPTH`` is given up (no verdict is that deep), which keeps the scan
    linear in the reply's length.
    """
    found: list[Any] = []
    i = 0
    while i < len(text):
        if text[i] != "{":
            i += 1
            continue
        depth, j = 1, i + 1
        while j < len(text) and depth > 0:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
            if depth > MAX_REPLY_DEPTH:
                break
            if depth == 0 or j == len(text):
                obj = _loose_object(text[i:j] + "}" * depth)
                if isinstance(obj, dict):
                    found.append(obj)
                    i = j - 1
                    break
                if depth == 0:
                    break
        i += 1
    return found


def parse_rubric_reply(reply: str, threshold: float | None) -> Verdict:
    objects = loose_json_objects(reply)
    if not objects:
        return Verdict(False, 0.0, f"Could not read the judge's llm-rubric reply: {reply[:200]!r}", True)
    parsed = objects[0]
    passed: Any = True if parsed.get("pass") is None else parsed["pass"]
    if not isinstance(passed, bool):
        passed = re.fullmatch(r"true|yes|pass|y", js_string(passed), re.IGNORECASE) is not None
    score: Any = parsed.get("score")
    if "score" not in parsed:  # undefined: Number(undefined) is NaN
        score = float(passed)
    elif isinstance(score, bool) or not isinstance(score, (int, float)):
        number = js_number(score)
        score = number if math.isfinite(number) else float(passed)
    if threshold is not None:
        passed = passed and score >= threshold
    reason = str(parsed.get("reason") or ("Grading passed" if passed else f"Score {score} below {threshold}"))
    return Verdict(passed, float(score), reason)


def parse_closedqa_reply(reply: str) -> Verdict:
    tail = reply.rstrip()
    if tail.endswith("Y"):
        return Verdict(True, 1.0, f"The submission meets the criterion: {reply}")
    if tail.endswith("N"):
        return Verdict(False, 0.0, f"The submission does not meet the criterion: {reply}")
    return Verdict(False, 0.0, f"The judge's closedqa reply ends in neither Y nor N: {reply[:200]!r}", True)


_ANSWER_LINE = re.compile(r"(?:answer\s*:\s*)?\(?([A-E])(?:\)|\s*$|[.:]\s)", re.IGNORECASE)


def factuality_answer_line(reply: str) -> str | None:
    """The option of a legacy factuality reply: its first or last non-empty line opens with it, else None."""
    lines = [line.strip() for line in reply.splitlines() if line.strip()]
    for line in dict.fromkeys(lines[:1] + lines[-1:]):
        found = _ANSWER_LINE.match(line)  # options are capitals: "a) first, ..." opens a list, not an answer
        if found and (found.group(1).isupper() or found.group(0).lower().startswith("answer")):
            return found.group(1).upper()
    return None


def parse_factuality_reply(reply: str) -> Verdict:
    category, reason = None, ""
    for obj in extract_json_objects(reply):
        if isinstance(obj, dict) and isinstance(obj.get("category"), str):
            category, reason = obj["category"].strip().upper(), str(obj.get("reason") or "")
            break
    if category is None:
        category = factuality_answer_line(reply)
    if category not in _FACTUALITY_SCORES:
        return Verdict(False, 0.0, f"The judge's factuality reply has no category A-E: {reply[:200]!r}", True)
    score = _FACTUALITY_SCORES[category]
    return Verdict(score > 0, score, reason or f"Category {category}: {_FACTUALITY_MEANING[category]}")


def _task_text(case: Case, output: Output) -> str:
    if output.prompt:
        return output.prompt
    task = case.vars.get("input")
    return task if isinstance(task, str) else json.dumps(case.vars, ensure_ascii=False, sort_keys=True)


async def grade(a: Assertion, value: Any, case: Case, output: Output, judge: Judge | None) -> Verdict:
    """Ask the judge about one model-graded assertion (positive sense; the engine applies ``not-``)."""
    if judge is None:
        raise ScorerError(f"case {case.id!r}: assertion {a.type!r} needs a judge model, and none was given")
    kind = a.base_type
    if kind == "llm-rubric":
        return parse_rubric_reply(await judge(rubric_prompt(value, output.text)), a.threshold)
    if kind == "model-graded-closedqa":
        return parse_closedqa_reply(
            await judge(closedqa_prompt(_task_text(case, output), value, output.text))
        )
    if kind in {"factuality", "model-graded-factuality"}:
        return parse_factuality_reply(
            await judge(factuality_prompt(_task_text(case, output), value, output.text))
        )
    raise ScorerError(f"case {case.id!r}: {a.type!r} is not a model-graded assertion")
