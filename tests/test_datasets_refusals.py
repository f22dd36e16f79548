"""Malformed cases and unsupported assertions are refused at import, naming file, case and type."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pairshift.datasets import (
    DatasetError,
    load_csv,
    load_dataset,
    load_jsonl,
    load_openai_evals,
    load_promptfoo,
)


def _jsonl(tmp_path: Path, *cases: dict) -> Path:
    path = tmp_path / "golden.jsonl"
    path.write_text("".join(json.dumps(c) + "\n" for c in cases))
    return path


def _case(*asserts: dict, **extra) -> dict:
    return {"id": "c-7", "vars": {"q": "x"}, "assert": list(asserts), **extra}


@pytest.mark.parametrize(
    ("case", "needles"),
    [
        (_case({"type": "contians", "value": "x"}), ["c-7", "contians", "unknown"]),
        (
            _case({"type": "not-webhook", "value": "http://127.0.0.1:9/grade"}),
            ["c-7", "not-webhook", "does not support"],
        ),
        (_case({"type": "regex", "value": "(unclosed"}), ["c-7", "regex", "bad regex"]),
        (_case({"type": "similar", "value": "x", "threshold": 1.5}), ["c-7", "similar", "out of range"]),
        (
            _case({"type": "llm-rubric", "value": "x", "threshold": -0.1}),
            ["c-7", "llm-rubric", "out of range"],
        ),
        (_case({"type": "levenshtein", "value": "x", "threshold": -1}), ["c-7", "levenshtein", ">= 0"]),
        (_case({"type": "contains", "value": "x", "weight": -2}), ["c-7", "contains", "weight"]),
        (_case({"type": "assert-set", "threshold": 0.5}), ["c-7", "assert-set", "`assert`"]),
        (
            _case(
                {"type": "assert-set", "assert": [{"type": "assert-set", "assert": [{"type": "is-json"}]}]}
            ),
            ["c-7", "assert-set", "nested"],
        ),
        (
            _case({"type": "assert-set", "assert": [{"type": "bogus"}]}),
            ["c-7", "assert-set", "'bogus'", "unknown"],
        ),
        (_case({"type": "is-json", "value": {"type": "objekt"}}), ["c-7", "is-json", "JSON Schema"]),
        (_case({"type": "latency"}), ["c-7", "latency", "threshold"]),
        (_case({"type": "json-field", "value": "high"}), ["c-7", "json-field", "path"]),
        (_case({"type": "contains"}), ["c-7", "contains", "value"]),
        (_case({"type": "contains", "value": "{{ unclosed"}), ["c-7", "contains", "template"]),
        (_case({"type": "contains", "value": "x", "transform": "output.trim()"}), ["c-7", "transform"]),
        (_case(), ["c-7", "no assertions"]),
        ({"vars": {}, "assert": [{"type": "is-json"}]}, ["line 1", "missing `id`"]),
        ({"id": "c-7", "assert": [{"type": "is-json"}]}, ["c-7", "missing `vars`"]),
        ({"id": "c-7", "vars": ["x"], "assert": [{"type": "is-json"}]}, ["c-7", "`vars` must be an object"]),
        (_case({"type": "is-json"}, tgas=["x"]), ["c-7", "unknown key 'tgas'"]),
    ],
)
def test_bad_case_is_refused_naming_case_and_type(tmp_path: Path, case: dict, needles: list[str]) -> None:
    path = _jsonl(tmp_path, case)
    with pytest.raises(DatasetError) as err:
        load_jsonl(path)
    message = str(err.value)
    assert str(path) in message and "\n" not in message
    for needle in needles:
        assert needle in message


def test_duplicate_ids_are_refused(tmp_path: Path) -> None:
    path = _jsonl(tmp_path, _case({"type": "is-json"}), _case({"type": "is-json"}))
    with pytest.raises(DatasetError, match="'c-7': duplicate case id"):
        load_jsonl(path)


def test_non_json_line_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "golden.jsonl"
    path.write_text(json.dumps(_case({"type": "is-json"})) + "\n{not json\n")
    with pytest.raises(DatasetError, match="line 2: not JSON"):
        load_dataset(path)


@pytest.mark.parametrize(
    ("header", "row", "needles"),
    [
        ("q,__expected", "x,ruby: output.length < 10", ["row 2", "__expected", "script"]),
        ("q,__expected", "x,file://check.py", ["row 2", "script"]),
        ("q,__expected", "x,gleu: hello", ["row 2", "gleu", "does not support"]),
        ("q,__expected,__prefix", "x,4,Answer: ", ["row 2", "__prefix", "not supported"]),
        ("q,__expected,__threshold", "x,4,high", ["row 2", "__threshold", "not a number"]),
        ("q,__expected", "x,regex:(bad", ["row 2", "regex", "bad regex"]),
        ("q", "x", ["row 2", "no assertions"]),
    ],
)
def test_bad_csv_rows_are_refused(tmp_path: Path, header: str, row: str, needles: list[str]) -> None:
    path = tmp_path / "cases.csv"
    path.write_text(f"{header}\n{row}\n")
    with pytest.raises(DatasetError) as err:
        load_csv(path)
    assert str(path) in str(err.value)
    for needle in needles:
        assert needle in str(err.value)


@pytest.mark.parametrize(
    ("config", "needles"),
    [
        (
            "tests:\n  - vars: {q: x}\n    assert: [{type: webhook, value: 'http://127.0.0.1:9'}]\n",
            ["test 1", "webhook"],
        ),
        (
            "tests:\n  - description: d1\n    vars: {q: x}\n    assert: [{type: equals}]\n",
            ["'d1'", "equals", "value"],
        ),
        ("scenarios: []\ntests: []\n", ["scenarios"]),
        (
            "tests:\n  - vars: {q: x}\n    options: {transform: output.trim()}\n    assert: [{type: "
            "is-json}]\n",
            ["test 1", "transform"],
        ),
        (
            "tests:\n  - vars: {q: x}\n    provider: openai:gpt-4o\n    assert: [{type: is-json}]\n",
            ["test 1", "provider"],
        ),
        ("tests: file://missing.yaml\n", ["missing.yaml", "matches no file"]),
        ("tests: huggingface://datasets/cais/mmlu\n", ["huggingface", "unsupported test source"]),
        (
            "tests:\n  - description: same\n    vars: {q: x}\n    assert: [{type: is-json}]\n"
            "  - description: same\n    vars: {q: y}\n    assert: [{type: is-json}]\n",
            ["'same'", "duplicate"],
        ),
        (
            "defaultTest:\n  assert: [{type: contains, value: x}]\ntests:\n  - vars: {q: x}\n"
            "    assert: [{type: contains, value: {{ bad }}]\n",
            ["cannot read"],
        ),
        (
            "tests:\n  - vars: {q: x}\n    assert: [{type: equals, value: file://check.py}]\n",
            ["test 1", "check.py"],
        ),
    ],
)
def test_bad_promptfoo_configs_are_refused(tmp_path: Path, config: str, needles: list[str]) -> None:
    path = tmp_path / "promptfooconfig.yaml"
    path.write_text(config)
    with pytest.raises(DatasetError) as err:
        load_promptfoo(path)
    assert str(path) in str(err.value)
    for needle in needles:
        assert needle in str(err.value)


def test_default_test_assertions_are_checked_too(tmp_path: Path) -> None:
    path = tmp_path / "promptfooconfig.yaml"
    path.write_text("defaultTest:\n  assert: [{type: contans, value: x}]\ntests:\n  - vars: {q: x}\n")
    with pytest.raises(DatasetError, match=r"test 1, case 'case-[0-9a-f]{12}': assertion 1 \(contans\)"):
        load_promptfoo(path)


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ({"input": "hi"}, "`ideal`"),
        ({"input": 3, "ideal": "x"}, "`input`"),
        ({"input": "hi", "ideal": ""}, "`ideal`"),
    ],
)
def test_bad_openai_evals_samples_are_refused(tmp_path: Path, line: dict, needle: str) -> None:
    path = tmp_path / "samples.jsonl"
    path.write_text(json.dumps(line) + "\n")
    with pytest.raises(DatasetError, match=f"line 1: {needle}"):
        load_openai_evals(path)


def test_unknown_file_type_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="unsupported dataset file type"):
        load_dataset(tmp_path / "cases.xlsx")
