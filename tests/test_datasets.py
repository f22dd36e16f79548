"""Importers: pairshift JSONL, OpenAI Evals JSONL, plain CSV and promptfoo configs; the content hash.

promptfoo references: "Test Case Configuration" (https://www.promptfoo.dev/docs/configuration/test-cases/:
file:// tests, globs, CSV `__expected` cells, `__metadata:*`, `__config:__expectedN:*`) and the
`defaultTest` semantics of promptfoo's evaluator (vars overlaid, asserts prepended, threshold inherited).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from pairshift.datasets import (
    KNOWN_ASSERTION_TYPES,
    assertion_from_cell,
    dataset_hash,
    load_csv,
    load_dataset,
    load_jsonl,
    load_openai_evals,
    load_promptfoo,
)

DATA = Path(__file__).parent / "data" / "datasets"


def test_pairshift_jsonl_product_example() -> None:
    cases = load_jsonl(DATA / "pairshift.jsonl")
    assert [c.id for c in cases] == ["refund-001", "login-002"]
    first = cases[0]
    assert first.tags == ["billing"] and first.expected.startswith('{"severity"')
    assert [a.type for a in first.assert_] == ["is-json", "json-field", "not-icontains", "llm-rubric"]
    assert first.assert_[1].path == "severity" and first.assert_[3].threshold == 0.8
    assert cases[1].assert_[1].assert_[1].value == "^\\{"
    assert load_dataset(DATA / "pairshift.jsonl") == cases


def test_openai_evals_maps_input_ideal_to_vars_and_contains_any() -> None:
    cases = load_openai_evals(DATA / "openai_evals.jsonl")
    chat, plain = cases
    assert chat.id == "case-0001" and chat.vars["input"] == "What is the capital of France?"
    assert chat.vars["messages"][0] == {"role": "system", "content": "Answer briefly."}
    assert (
        chat.expected == "Paris"
        and chat.assert_[0].type == "contains-any"
        and chat.assert_[0].value == ["Paris"]
    )
    assert plain.vars["messages"] == [{"role": "user", "content": "Name a primary colour."}]
    assert plain.assert_[0].value == ["red", "blue", "yellow"] and plain.expected == "red"
    assert load_dataset(DATA / "openai_evals.jsonl") == cases


def test_openai_evals_match_mode_is_an_anchored_regex() -> None:
    case = load_openai_evals(DATA / "openai_evals.jsonl", mode="match")[1]
    assert case.assert_[0].type == "regex" and case.assert_[0].value == "^(?:red|blue|yellow)"


def test_plain_csv_with_expected_columns() -> None:
    cases = load_csv(DATA / "plain.csv")
    assert [c.id for c in cases] == ["math-1", "geo-1"]
    math_case, geo = cases
    assert math_case.vars == {"question": "What is 2+2?", "tier": "free"}
    assert [(a.type, a.value) for a in math_case.assert_] == [("equals", "4"), ("not-contains", "five")]
    assert math_case.tags == ["math", "easy"]
    assert [(a.type, a.value) for a in geo.assert_] == [
        ("contains", "Paris"),
        ("icontains-any", ["paris", "lutetia"]),
    ]


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("Paris", {"type": "equals", "value": "Paris"}),
        ("contains:Paris", {"type": "contains", "value": "Paris"}),
        ("factuality:The capital is Paris", {"type": "factuality", "value": "The capital is Paris"}),
        ("similar(0.8):Hello there", {"type": "similar", "value": "Hello there", "threshold": 0.8}),
        ("similar:Hello", {"type": "similar", "value": "Hello", "threshold": 0.8}),
        ("contains-any: <b>,</span>", {"type": "contains-any", "value": ["<b>", "</span>"]}),
        (
            "llm-rubric: Provides weather information",
            {"type": "llm-rubric", "value": "Provides weather information"},
        ),
        ("grade: polite", {"type": "llm-rubric", "value": "polite"}),
        ("not-regex:^\\d+$", {"type": "not-regex", "value": "^\\d+$"}),
        ("is-json", {"type": "is-json", "value": None}),
        ("Answer: 42", {"type": "equals", "value": "Answer: 42"}),
    ],
)
def test_expected_cell_syntax(cell: str, expected: dict) -> None:
    # Rows from the "Values without a type prefix default to equals" table of the Test Case docs.
    assert assertion_from_cell(cell) == expected


def test_promptfoo_config_default_test_files_globs_and_csv() -> None:
    cases = load_promptfoo(DATA / "promptfoo" / "promptfooconfig.yaml")
    by_id = {c.id: c for c in cases}
    ids = [c.id for c in cases]
    assert [ids[0], ids[3], ids[5]] == ["inline-gold", "from-yaml", "from-jsonl"]
    # unnamed tests are named by a hash of their content, stable when tests are inserted (issue 24)
    assert all(re.fullmatch(r"case-[0-9a-f]{12}", ids[i]) for i in (1, 2, 4)) and len(set(ids)) == 6
    gold = by_id["inline-gold"]
    assert gold.vars == {"customer_tier": "gold", "ticket_body": "refund please"}
    assert [a.type for a in gold.assert_] == ["is-json", "json-field"] and gold.threshold == 0.5
    # a list-of-strings var expands into one case per value, defaultTest vars filled in
    assert by_id[ids[1]].vars == {"customer_tier": "free", "ticket_body": "a"}
    assert by_id[ids[2]].vars["ticket_body"] == "b"
    yaml_case = by_id["from-yaml"]
    assert yaml_case.threshold == 0.9 and yaml_case.tags == ["bug", "mobile"]
    assert yaml_case.assert_[1].value == {
        "type": "object",
        "required": ["severity"],
    }  # file:// schema inlined
    csv_case = by_id[ids[4]]
    assert [(a.type, a.metric, a.weight) for a in csv_case.assert_] == [
        ("is-json", None, 1.0),
        ("contains-any", "routing", 1.0),
        ("similar", "routing", 2.0),
    ]
    assert csv_case.assert_[2].threshold == 0.6
    assert by_id["from-jsonl"].assert_[1].value == "billing"
    assert load_dataset(DATA / "promptfoo" / "promptfooconfig.yaml") == cases


def test_dataset_hash_is_canonical_and_order_sensitive(tmp_path: Path) -> None:
    cases = load_jsonl(DATA / "pairshift.jsonl")
    digest = dataset_hash(cases)
    assert len(digest) == 64 and digest == dataset_hash(load_jsonl(DATA / "pairshift.jsonl"))
    assert dataset_hash(list(reversed(cases))) != digest
    changed = [cases[0].model_copy(update={"tags": ["other"]}), cases[1]]
    assert dataset_hash(changed) != digest
    # Same content written with other key order, spacing and an explicit default weight: same hash.
    line = (
        '{"assert": [{"weight": 1, "type": "contains", "value": "x"}], "vars": {"b": 1, "a": 2}, "id": "k"}\n'
    )
    other = '{"id":"k","vars":{"a":2,"b":1},"assert":[{"type":"contains","value":"x"}]}\n'
    (tmp_path / "a.jsonl").write_text(line)
    (tmp_path / "b.jsonl").write_text(other)
    assert dataset_hash(load_jsonl(tmp_path / "a.jsonl")) == dataset_hash(load_jsonl(tmp_path / "b.jsonl"))


def test_known_types_cover_product_section_5() -> None:
    product = {
        "equals",
        "contains",
        "icontains",
        "contains-any",
        "contains-all",
        "icontains-any",
        "icontains-all",
        "regex",
        "starts-with",
        "is-json",
        "contains-json",
        "levenshtein",
        "similar",
        "llm-rubric",
        "model-graded-closedqa",
        "factuality",
        "is-refusal",
        "finish-reason",
        "latency",
        "cost",
        "assert-set",
        "json-field",
    }
    assert product <= KNOWN_ASSERTION_TYPES


def test_promptfoo_config_copied_elsewhere_resolves_files_relative_to_itself(tmp_path: Path) -> None:
    shutil.copytree(DATA / "promptfoo", tmp_path / "pf")
    assert len(load_promptfoo(tmp_path / "pf" / "promptfooconfig.yaml")) == 6
