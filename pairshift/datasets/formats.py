"""Dataset file formats and :func:`load_dataset`, which picks the importer for a file (PRODUCT §5).

- pairshift JSONL (§5): one case a line, ``{"id", "vars", "expected"?, "assert", "tags"?, "threshold"?}``;
- OpenAI Evals JSONL (``{"input", "ideal"}``), see :func:`load_openai_evals`;
- plain CSV: columns are vars, ``__expected``/``__expectedN`` cells are assertions in promptfoo's cell syntax;
- promptfoo ``promptfooconfig.yaml``: see :mod:`pairshift.datasets.promptfoo`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pairshift.datasets.cases import Case, DatasetError, build_case, unique_cases
from pairshift.datasets.promptfoo import cases_from_tests, load_promptfoo
from pairshift.datasets.readers import csv_tests, json_lines

_CASE_KEYS = {"id", "vars", "expected", "assert", "tags", "threshold", "metadata"}


def load_jsonl(path: Path) -> list[Case]:
    """pairshift JSONL (PRODUCT §5): every line needs ``id`` and ``vars``."""
    cases = []
    for number, item in json_lines(Path(path)):
        where = f"{path}: line {number}"
        if not isinstance(item.get("id"), str) or not item["id"]:
            raise DatasetError(f"{where}: missing `id` (a non-empty string)")
        unknown = sorted(set(item) - _CASE_KEYS)
        if unknown:
            raise DatasetError(f"{where}, case {item['id']!r}: unknown key {unknown[0]!r}")
        cases.append(build_case(item, where))
    return unique_cases(cases, Path(path))


def load_openai_evals(path: Path, *, mode: str = "includes") -> list[Case]:
    """OpenAI Evals samples ``{"input", "ideal"}``, one a line.

    ``input`` (a string or a list of chat messages) becomes vars ``{"input": last user text, "messages":
    [...]}``; ``expected`` is ``ideal`` (the first one when a list). The assertion follows the openai/evals
    class chosen by ``mode``: ``includes`` (default; ``Includes``: the output contains any ideal,
    case-sensitive) -> ``contains-any``; ``match`` (``Match``: the output starts with any ideal) -> an
    anchored ``regex``.
    """
    if mode not in {"includes", "match"}:
        raise ValueError(f"mode must be 'includes' or 'match', got {mode!r}")
    cases = []
    for number, item in json_lines(Path(path)):
        where = f"{path}: line {number}"
        messages, ideal = item.get("input"), item.get("ideal")
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        if not (isinstance(messages, list) and messages and all(isinstance(m, dict) for m in messages)):
            raise DatasetError(f"{where}: `input` must be a string or a non-empty list of chat messages")
        ideals = [ideal] if isinstance(ideal, str) else ideal
        if not (isinstance(ideals, list) and ideals and all(isinstance(i, str) and i for i in ideals)):
            raise DatasetError(f"{where}: `ideal` must be a non-empty string or list of strings")
        users = [m.get("content") for m in messages if m.get("role") == "user"]
        text = users[-1] if users else messages[-1].get("content")
        check: dict[str, Any] = {"type": "contains-any", "value": ideals}
        if mode == "match":
            check = {"type": "regex", "value": "^(?:" + "|".join(re.escape(i) for i in ideals) + ")"}
        raw = {
            "id": str(item.get("id") or f"case-{len(cases) + 1:04d}"),
            "vars": {"input": text, "messages": messages},
            "expected": ideals[0],
            "assert": [check],
        }
        cases.append(build_case(raw, where))
    return unique_cases(cases, Path(path))


def load_csv(path: Path) -> list[Case]:
    """Plain CSV: vars columns, promptfoo's ``__expected`` cells, ``__description`` as id (else case-NNNN)."""
    return cases_from_tests(list(csv_tests(Path(path))), {}, Path(path))


def load_dataset(path: Path) -> list[Case]:
    """Load any supported dataset file, choosing the importer by suffix and, for JSONL, by content."""
    path = Path(path)
    if path.suffix == ".csv":
        return load_csv(path)
    if path.suffix in {".yaml", ".yml", ".json"}:
        return load_promptfoo(path)
    if path.suffix == ".jsonl":
        first = next(json_lines(path), None)
        if first is not None and "input" in first[1] and "vars" not in first[1]:
            return load_openai_evals(path)
        return load_jsonl(path)
    raise DatasetError(f"{path}: unsupported dataset file type {path.suffix!r} (jsonl, csv, yaml)")
