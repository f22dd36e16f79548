"""Deterministic assertion types give promptfoo's verdicts.

Each row cites the promptfoo docs example it mirrors. Pages:
- DET = "Deterministic metrics", https://promptfoo.dev/docs/configuration/expected-outputs/deterministic/
- EVALJSON = "LLM evaluation techniques for JSON outputs", https://promptfoo.dev/docs/guides/evaluate-json
Expected verdicts follow promptfoo's handlers (src/assertions/*.ts); documented pairshift differences are
marked "pairshift:".
"""

from __future__ import annotations

from typing import Any

import pytest

from pairshift.datasets import build_case
from pairshift.scorers import Output, score_case_sync

# DET "Contains-JSON" / "Is-JSON": the latitude/longitude schema example.
LATLON_SCHEMA = {
    "required": ["latitude", "longitude"],
    "type": "object",
    "properties": {
        "latitude": {"type": "number", "minimum": -90, "maximum": 90},
        "longitude": {"type": "number", "minimum": -180, "maximum": 180},
    },
}
LATLON_YAML = (
    "required: [latitude, longitude]\ntype: object\nproperties:\n  latitude: {type: number, maximum: 90}\n"
)


def _verdict(assertion: dict[str, Any], text: str, **output: Any) -> tuple[bool, float]:
    case = build_case(
        {"id": "c", "vars": {"expected": "foobar", "reason": "stop"}, "assert": [assertion]}, "t"
    )
    result = score_case_sync(case, Output(text=text, **output)).results[0]
    return result.passed, result.score


ROWS: list[tuple[str, dict[str, Any], str, dict[str, Any], bool]] = [
    # DET "Contains": value 'The expected substring'; numbers are converted to strings.
    (
        "contains",
        {"type": "contains", "value": "The expected substring"},
        "x The expected substring y",
        {},
        True,
    ),
    (
        "contains-case",
        {"type": "contains", "value": "The expected substring"},
        "the expected substring",
        {},
        False,
    ),
    ("contains-number", {"type": "contains", "value": 0}, "value 0 here", {}, True),
    (
        "icontains",
        {"type": "icontains", "value": "The expected substring"},
        "THE EXPECTED SUBSTRING",
        {},
        True,
    ),
    ("not-contains", {"type": "not-contains", "value": "error"}, "all good", {}, True),
    ("not-contains-fail", {"type": "not-contains", "value": "error"}, "an error", {}, False),
    # DET "Contains-All" / "Contains-Any": Value 1..3; the '1,000' / 'in stock' list example.
    (
        "contains-all",
        {"type": "contains-all", "value": ["Value 1", "Value 2", "Value 3"]},
        "Value 1 Value 2 Value 3",
        {},
        True,
    ),
    (
        "contains-all-missing",
        {"type": "contains-all", "value": ["Value 1", "Value 2", "Value 3"]},
        "Value 1 Value 3",
        {},
        False,
    ),
    (
        "contains-all-comma",
        {"type": "contains-all", "value": ["1,000", "in stock"]},
        "1,000 units in stock",
        {},
        True,
    ),
    (
        "contains-any",
        {"type": "contains-any", "value": ["Value 1", "Value 2", "Value 3"]},
        "only Value 2",
        {},
        True,
    ),
    ("contains-any-none", {"type": "contains-any", "value": ["Value 1", "Value 2"]}, "nothing", {}, False),
    ("contains-any-csv-string", {"type": "contains-any", "value": "Paris, London"}, "to London", {}, True),
    ("icontains-any", {"type": "icontains-any", "value": ["value 1", "VALUE 9"]}, "Value 1", {}, True),
    (
        "icontains-all",
        {"type": "icontains-all", "value": ["VALUE 1", "value 2"]},
        "Value 1 and Value 2",
        {},
        True,
    ),
    (
        "not-icontains-any",
        {"type": "not-icontains-any", "value": ["refund"]},
        "We will REFUND you",
        {},
        False,
    ),
    # DET "Regex": "\\d{4}" matches a 4-digit number.
    ("regex", {"type": "regex", "value": "\\d{4}"}, "year 2024", {}, True),
    ("regex-miss", {"type": "regex", "value": "\\d{4}"}, "year 24", {}, False),
    ("not-regex", {"type": "not-regex", "value": "\\d{4}"}, "year 24", {}, True),
    # DET "Starts-With": value 'Yes'.
    ("starts-with", {"type": "starts-with", "value": "Yes"}, "Yes, indeed", {}, True),
    ("starts-with-late", {"type": "starts-with", "value": "Yes"}, "Well, Yes", {}, False),
    # DET "Equality": 'The expected output', and the JSON form {'key': 'value'} (deep equality).
    ("equals", {"type": "equals", "value": "The expected output"}, "The expected output", {}, True),
    ("equals-space", {"type": "equals", "value": "The expected output"}, "The expected output ", {}, False),
    ("equals-json", {"type": "equals", "value": {"key": "value"}}, '{ "key" : "value" }', {}, True),
    ("equals-json-other", {"type": "equals", "value": {"key": "value"}}, '{"key": "other"}', {}, False),
    ("not-equals-json-nonjson", {"type": "not-equals", "value": {"key": "value"}}, "not json", {}, True),
    # DET "Is-JSON" (with and without the latitude/longitude schema).
    ("is-json", {"type": "is-json"}, '{"a": 1}', {}, True),
    ("is-json-fenced", {"type": "is-json"}, 'Here: {"a": 1}', {}, False),
    ("is-json-nan", {"type": "is-json"}, "NaN", {}, False),
    (
        "is-json-schema",
        {"type": "is-json", "value": LATLON_SCHEMA},
        '{"latitude": 1.5, "longitude": 2}',
        {},
        True,
    ),
    (
        "is-json-schema-range",
        {"type": "is-json", "value": LATLON_SCHEMA},
        '{"latitude": 100, "longitude": 2}',
        {},
        False,
    ),
    (
        "is-json-schema-yaml",
        {"type": "is-json", "value": LATLON_YAML},
        '{"latitude": 95, "longitude": 0}',
        {},
        False,
    ),
    ("not-is-json", {"type": "not-is-json"}, "plain text", {}, True),
    # DET "Contains-JSON": JSON inside prose; EVALJSON for the schema on an embedded object.
    ("contains-json", {"type": "contains-json"}, 'Sure: {"a": [1, 2]} hope it helps', {}, True),
    ("contains-json-none", {"type": "contains-json"}, "no json {here", {}, False),
    (
        "contains-json-schema",
        {"type": "contains-json", "value": LATLON_SCHEMA},
        'a {"x": 1} then {"latitude": 1, "longitude": 2}',
        {},
        True,
    ),
    (
        "contains-json-schema-bad",
        {"type": "contains-json", "value": LATLON_SCHEMA},
        'a {"latitude": "n"}',
        {},
        False,
    ),
    (
        "not-contains-json-schema",
        {"type": "not-contains-json", "value": LATLON_SCHEMA},
        '{"latitude": "n"}',
        {},
        True,
    ),
    # DET "Levenshtein distance": 'hello world' within 5; '{{expected}}' with threshold 2 (vars: foobar).
    (
        "levenshtein",
        {"type": "levenshtein", "threshold": 5, "value": "hello world"},
        "hallo wurld!",
        {},
        True,
    ),
    (
        "levenshtein-far",
        {"type": "levenshtein", "threshold": 5, "value": "hello world"},
        "goodbye moon",
        {},
        False,
    ),
    ("levenshtein-var", {"type": "levenshtein", "threshold": 2, "value": "{{expected}}"}, "foobaz", {}, True),
    ("levenshtein-default-5", {"type": "levenshtein", "value": "kitten"}, "sitting", {}, True),
    # pairshift: threshold 0 means exact (promptfoo's `threshold || 5` would allow 5 edits).
    ("levenshtein-zero", {"type": "levenshtein", "threshold": 0, "value": "kitten"}, "sitten", {}, False),
    # DET "Finish Reason": value stop; Anthropic end_turn normalizes to stop; case-insensitive.
    ("finish-reason", {"type": "finish-reason", "value": "stop"}, "x", {"finish_reason": "end_turn"}, True),
    (
        "finish-reason-length",
        {"type": "finish-reason", "value": "length"},
        "x",
        {"finish_reason": "stop"},
        False,
    ),
    (
        "finish-reason-var",
        {"type": "finish-reason", "value": "{{reason}}"},
        "x",
        {"finish_reason": "STOP"},
        True,
    ),
    # DET "Latency": threshold 5000 ms.
    ("latency", {"type": "latency", "threshold": 5000}, "x", {"latency_ms": 4999}, True),
    ("latency-slow", {"type": "latency", "threshold": 5000}, "x", {"latency_ms": 5001}, False),
    ("not-latency", {"type": "not-latency", "threshold": 5000}, "x", {"latency_ms": 5001}, True),
    # DET "Cost": threshold 0.001 USD.
    ("cost", {"type": "cost", "threshold": 0.001}, "x", {"cost_usd": 0.0009}, True),
    ("cost-high", {"type": "cost", "threshold": 0.001}, "x", {"cost_usd": 0.002}, False),
    # DET "Is-Refusal": refusals pass is-refusal; 'What is 2+2?' answered passes not-is-refusal.
    ("is-refusal", {"type": "is-refusal"}, "I cannot assist with that.", {}, True),
    ("is-refusal-as-ai", {"type": "is-refusal"}, "As an AI, I must decline.", {}, True),
    ("is-refusal-empty", {"type": "is-refusal"}, "   ", {}, True),
    ("is-refusal-filter", {"type": "is-refusal"}, "partial", {"finish_reason": "content_filter"}, True),
    ("not-is-refusal", {"type": "not-is-refusal"}, "2 + 2 = 4", {}, True),
    ("not-is-refusal-fail", {"type": "not-is-refusal"}, "I'm sorry, but I can't help with that.", {}, False),
    # DET "Similar": threshold 0.8 (default 0.75), list of values passes when any is close.
    # pairshift: lexical token-set similarity stands in for embeddings.
    (
        "similar",
        {"type": "similar", "value": "The expected output", "threshold": 0.8},
        "the EXPECTED output!",
        {},
        True,
    ),
    ("similar-list", {"type": "similar", "value": ["Nope", "Expected output"]}, "expected output", {}, True),
    ("similar-far", {"type": "similar", "value": "The expected output"}, "bananas grow on trees", {}, False),
    (
        "not-similar",
        {"type": "not-similar", "value": ["Nope", "Expected output"]},
        "expected output",
        {},
        False,
    ),
    # PRODUCT §5 json-field: dotted path into the output JSON (extracted as contains-json does).
    (
        "json-field",
        {"type": "json-field", "path": "severity", "value": "high"},
        '{"severity": "high"}',
        {},
        True,
    ),
    (
        "json-field-nested",
        {"type": "json-field", "path": "a.b.1", "value": 2},
        'ok {"a": {"b": [1, 2.0]}}',
        {},
        True,
    ),
    (
        "json-field-wrong",
        {"type": "json-field", "path": "severity", "value": "high"},
        '{"severity": "low"}',
        {},
        False,
    ),
    (
        "json-field-missing",
        {"type": "json-field", "path": "team", "value": "x"},
        '{"severity": "low"}',
        {},
        False,
    ),
    ("json-field-bool-not-1", {"type": "json-field", "path": "ok", "value": 1}, '{"ok": true}', {}, False),
    (
        "not-json-field",
        {"type": "not-json-field", "path": "severity", "value": "high"},
        '{"severity": "low"}',
        {},
        True,
    ),
]


@pytest.mark.parametrize(
    ("assertion", "text", "output", "expected"), [row[1:] for row in ROWS], ids=[row[0] for row in ROWS]
)
def test_verdict_matches_promptfoo(
    assertion: dict[str, Any], text: str, output: dict[str, Any], expected: bool
) -> None:
    passed, score = _verdict(assertion, text, **output)
    assert passed is expected
    # similar scores a similarity; promptfoo scores an empty refusal 0 (tests/test_promptfoo_parity.py).
    if assertion["type"].removeprefix("not-") != "similar" and text.strip():
        assert score == (1.0 if expected else 0.0)


def test_similar_scores_are_complementary_under_negation() -> None:
    # promptfoo matchers/similarity.ts: not-similar scores 1 - similarity.
    _, positive = _verdict({"type": "similar", "value": "red apple pie"}, "green apple pie")
    _, negative = _verdict({"type": "not-similar", "value": "red apple pie"}, "green apple pie")
    assert 0 < positive < 1 and negative == pytest.approx(1 - positive)


def test_error_output_fails_every_assertion_even_negated() -> None:
    case = build_case(
        {
            "id": "c",
            "vars": {},
            "assert": [{"type": "not-contains", "value": "x"}, {"type": "is-refusal", "weight": 0}],
        },
        "t",
    )
    score = score_case_sync(case, Output(text="", error="HTTP 529 overloaded"))
    assert not score.passed and score.score == 0
    assert all(not r.passed and r.score == 0 and "529" in r.reason for r in score.results)
