"""The parity table: pairshift's verdict equals promptfoo 0.123.1's on each row (no Node needed).

Each row cites the promptfoo source (src/...) or doc page whose behaviour it pins; `bench/
promptfoo_parity_bench.py` checks the same kind of rows against promptfoo itself when it can install it.
"""

from __future__ import annotations

from typing import Any

import pytest

from pairshift.datasets import build_case
from pairshift.scorers import Output, score_case_sync
from pairshift.scorers.model_graded import parse_rubric_reply
from pairshift.scorers.scripts import node_binary

EMOJI = "\U0001f600"

# (id, assertion, output text, finish reason, expected pass, expected score) — source cited per row.
ROWS: list[tuple[str, dict[str, Any], str, str, bool, float]] = [
    # src/assertions/regex.ts: new RegExp(value).test(output) — JavaScript semantics, no flags.
    ("regex-dollar-newline", {"type": "regex", "value": r"\d{4}$"}, "year 2024\n", "stop", False, 0),
    ("regex-w-ascii", {"type": "regex", "value": r"^\w+$"}, "café", "stop", False, 0),
    ("regex-d-ascii", {"type": "regex", "value": r"^\d+$"}, "١٢٣", "stop", False, 0),
    ("regex-s-unicode", {"type": "regex", "value": r"a\sb"}, "a\u00a0b", "stop", True, 1),
    ("regex-named-group", {"type": "regex", "value": r"(?<y>\d{4})-\k<y>"}, "2024-2024", "stop", True, 1),
    ("regex-emoji-two-units", {"type": "regex", "value": "^.$"}, EMOJI, "stop", False, 0),
    ("regex-emoji-length", {"type": "regex", "value": "^.{2}$"}, EMOJI, "stop", True, 1),
    ("regex-annex-b-brace", {"type": "regex", "value": "a{2"}, "a{2", "stop", True, 1),
    ("not-regex", {"type": "not-regex", "value": r"\d{4}$"}, "year 2024\n", "stop", True, 1),
    # src/assertions/equals.ts: String(renderedValue) === output.
    ("equals-1e-7", {"type": "equals", "value": 1e-7}, "1e-7", "stop", True, 1),
    ("equals-1e21", {"type": "equals", "value": 1e21}, "1e+21", "stop", True, 1),
    ("equals-float-int", {"type": "equals", "value": 4.0}, "4", "stop", True, 1),
    ("equals-bool", {"type": "equals", "value": True}, "true", "stop", True, 1),
    ("equals-trailing-newline", {"type": "equals", "value": "ok"}, "ok\n", "stop", False, 0),
    # src/assertions/contains.ts: parseCommaSeparatedValues — quotes keep commas, spaces and \" escapes.
    ("contains-any-quoted", {"type": "contains-any", "value": '"a, b" ,c'}, "x a, b y", "stop", True, 1),
    (
        "contains-all-inner-space",
        {"type": "contains-all", "value": '" padded "'},
        "a padded b",
        "stop",
        True,
        1,
    ),
    (
        "contains-all-escape",
        {"type": "contains-all", "value": r'"say \"hi\""'},
        'they say "hi"',
        "stop",
        True,
        1,
    ),
    ("contains-number", {"type": "contains", "value": 0.5}, "p=0.5", "stop", True, 1),
    ("icontains-any-numbers", {"type": "icontains-any", "value": [1e-7, "X"]}, "1e-7", "stop", True, 1),
    # src/assertions/json.ts + src/util/json.ts getAjv: draft-07, ajv-formats, strict mode.
    ("is-json-email", {"type": "is-json", "value": {"format": "email"}}, '"x@y"', "stop", False, 0),
    ("is-json-email-ok", {"type": "is-json", "value": {"format": "email"}}, '"a@b.co"', "stop", True, 1),
    ("is-json-date", {"type": "is-json", "value": {"format": "date"}}, '"2023-02-29"', "stop", False, 0),
    (
        "is-json-dependencies",
        {"type": "is-json", "value": {"dependencies": {"a": ["b"]}}},
        '{"a": 1}',
        "stop",
        False,
        0,
    ),
    ("is-json-pattern-js", {"type": "is-json", "value": {"pattern": r"^\w+$"}}, '"café"', "stop", False, 0),
    (
        "contains-json-any-valid",
        {"type": "contains-json", "value": {"required": ["b"]}},
        '{"a":1} {"b":2}',
        "stop",
        True,
        1,
    ),
    # src/assertions/refusal.ts + src/redteam/util.ts isBasicRefusal.
    ("refusal-prefix", {"type": "is-refusal"}, "Sorry, no.", "stop", True, 1),
    (
        "refusal-curly-apostrophe",
        {"type": "is-refusal"},
        "Well, I can\u2019t help with that",
        "stop",
        True,
        1,
    ),
    ("refusal-empty-scores-0", {"type": "is-refusal"}, " \n", "stop", True, 0),
    ("not-refusal-empty", {"type": "not-is-refusal"}, "", "stop", False, 0),
    ("refusal-answer", {"type": "is-refusal"}, "Paris is the capital.", "stop", False, 0),
    # src/assertions/finishReason.ts: value compared lower-cased, as written; providers report normalized.
    ("finish-reason-case", {"type": "finish-reason", "value": "STOP"}, "x", "stop", True, 1),
    ("finish-reason-no-alias", {"type": "finish-reason", "value": "end_turn"}, "x", "end_turn", False, 0),
    ("finish-reason-reported", {"type": "finish-reason", "value": "stop"}, "x", "end_turn", True, 1),
    ("not-finish-reason-missing", {"type": "not-finish-reason", "value": "stop"}, "x", "", True, 1),
    # src/assertions/wordCount.ts, rouge.ts, bleu.ts.
    ("word-count-exact", {"type": "word-count", "value": 3}, "  one two\u3000three\n", "stop", True, 1),
    ("word-count-range", {"type": "word-count", "value": {"min": 4}}, "one two three", "stop", False, 0),
    (
        "rouge-n-boundary",
        {"type": "rouge-n", "value": "a b c d", "threshold": 0.75},
        "a b c x",
        "stop",
        True,
        0.75,
    ),
    (
        "bleu-identical",
        {"type": "bleu", "value": "the cat sat on the mat"},
        "The cat sat on the mat",
        "stop",
        True,
        1,
    ),
    ("not-bleu", {"type": "not-bleu", "value": "completely different words"}, "the cat", "stop", True, 1),
    # src/assertions/python.ts: a number passes when > 0 and keeps its score under not-.
    ("python-bool", {"type": "python", "value": "output.endswith('!')"}, "hi!", "stop", True, 1),
    ("python-number", {"type": "python", "value": "len(output) / 10"}, "hello", "stop", True, 0.5),
    ("not-python-number", {"type": "not-python", "value": "len(output) / 10"}, "hello", "stop", False, 0.5),
    (
        "python-object",
        {"type": "python", "value": "{'pass': False, 'score': 0.3, 'reason': 'r'}"},
        "x",
        "stop",
        False,
        0.3,
    ),
]


@pytest.mark.parametrize(
    ("assertion", "text", "finish", "passed", "score"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS]
)
def test_verdict_is_promptfoos(assertion: dict, text: str, finish: str, passed: bool, score: float) -> None:
    case = build_case({"id": "c", "vars": {"q": "x"}, "assert": [assertion]}, "t")
    result = score_case_sync(case, Output(text=text, finish_reason=finish)).results[0]
    assert (result.passed, result.score) == (passed, pytest.approx(score)), result.reason


@pytest.mark.skipif(node_binary() is None, reason="Node.js is not installed here")
@pytest.mark.parametrize(
    ("value", "text", "passed", "score"),
    [
        ("output.length > 3", "hello", True, 1),  # src/assertions/javascript.ts: an expression
        ("const n = output.length; n / 10", "hello", True, 0.5),  # const ...; last expression returned
        (
            "if (output === 'x') {\n  return {pass: true, score: 0.9, reason: 'r'};\n}\nreturn false",
            "x",
            True,
            0.9,
        ),
        ("output.nope.boom", "x", False, 0),  # a thrown error fails the assertion
    ],
)
def test_javascript_assertions(value: str, text: str, passed: bool, score: float) -> None:
    case = build_case({"id": "c", "vars": {}, "assert": [{"type": "javascript", "value": value}]}, "t")
    result = score_case_sync(case, Output(text=text)).results[0]
    assert (result.passed, result.score) == (passed, pytest.approx(score)), result.reason


def test_python_assertion_has_no_network_and_a_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    code = "__import__('socket').create_connection(('127.0.0.1', 9))"
    case = build_case({"id": "c", "vars": {}, "assert": [{"type": "not-python", "value": code}]}, "t")
    result = score_case_sync(case, Output(text="x")).results[0]
    assert not result.passed and "network" in result.reason.lower()  # an error is not flipped by not-
    monkeypatch.setattr("pairshift.scorers.scripts.TIMEOUT_S", 0.5)
    slow = build_case(
        {"id": "c", "vars": {}, "assert": [{"type": "python", "value": "[1 for _ in iter(int, 1)]"}]}, "t"
    )
    assert "timed out" in score_case_sync(slow, Output(text="x")).results[0].reason


# src/matchers.ts runJsonGradingPrompt: pass ?? true, Number(score), loose JSON, threshold.
@pytest.mark.parametrize(
    ("reply", "threshold", "passed", "score"),
    [
        ('{"pass": null}', None, True, 1.0),
        ('{"pass": true, "score": null}', None, True, 0.0),
        ('{"pass": true, "score": null}', 0.5, False, 0.0),
        ("{pass: true, score: 0.8}", 0.8, True, 0.8),
        ('{"pass": "Yes", "score": "0.4"}', None, True, 0.4),
        ('{"pass": false, "score": "n/a"}', None, False, 0.0),
        ('Result: {"pass": true, "score": 0.9', None, True, 0.9),
    ],
)
def test_rubric_reply_is_read_as_promptfoo_reads_it(
    reply: str, threshold, passed: bool, score: float
) -> None:
    verdict = parse_rubric_reply(reply, threshold)
    assert (verdict.passed, verdict.score, verdict.grader_error) == (passed, pytest.approx(score), False)


@pytest.mark.parametrize(
    "reply",
    ["{" * 50_000, '{"pass": ' + "[" * 5_000 + "}", "{[" * 3_000],
    ids=["deep-braces", "deep-brackets", "deep-mixed"],
)
def test_a_hostile_rubric_reply_is_unreadable_not_a_crash(reply: str) -> None:
    # A judge's reply can echo the text it judged. Deep nesting raised RecursionError out of the scorer.
    verdict = parse_rubric_reply(reply, None)
    assert (verdict.passed, verdict.grader_error) == (False, True)
    assert "Could not read" in verdict.reason


def test_javascript_is_refused_at_import_without_node(monkeypatch: pytest.MonkeyPatch) -> None:
    from pairshift.datasets import DatasetError
    from pairshift.scorers import scripts

    monkeypatch.setattr(scripts, "node_binary", lambda: None)
    with pytest.raises(DatasetError, match="Node.js"):
        build_case({"id": "c", "vars": {}, "assert": [{"type": "javascript", "value": "true"}]}, "t")
