"""Reading dataset files into raw rows: JSON lines, and CSV rows in promptfoo's ``__expected`` cell syntax.

Rows come out as plain dicts (a pairshift case, or a promptfoo test) with ``where`` naming file and line for
errors; turning them into checked cases is :func:`pairshift.datasets.cases.build_case`'s job. Both
:mod:`~pairshift.datasets.formats` and :mod:`~pairshift.datasets.promptfoo` read files through here (a
promptfoo config may reference JSONL and CSV test files).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pairshift.datasets.cases import (
    KNOWN_ASSERTION_TYPES,
    LIST_TYPES,
    PROMPTFOO_UNSUPPORTED_TYPES,
    DatasetError,
)
from pairshift.jscompat.values import split_comma_separated


def json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) of every non-blank line; a line that is not a JSON object is a DatasetError."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read: {exc}") from None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}: line {number}: not JSON: {exc.msg}") from None
        if not isinstance(item, dict):
            raise DatasetError(f"{path}: line {number}: a case must be a JSON object")
        yield number, item


_CELL_TYPES = sorted(KNOWN_ASSERTION_TYPES | PROMPTFOO_UNSUPPORTED_TYPES, key=len, reverse=True)
_CELL_RE = re.compile(
    r"^(not-)?(" + "|".join(map(re.escape, _CELL_TYPES)) + r")(?:\((\d+(?:\.\d+)?)\))?(?::([\s\S]*))?$"
)
_SCRIPT_PREFIXES = {
    "javascript:": "javascript",
    "fn:": "javascript",
    "eval:": "javascript",
    "python:": "python",
}


def assertion_from_cell(cell: str) -> dict[str, Any]:
    """promptfoo's ``__expected`` cell syntax -> an assertion dict (raises ValueError for scripts).

    ``Paris`` -> equals; ``contains: Paris``; ``not-icontains:x``; ``similar(0.8):text``;
    ``grade:``/``llm-rubric:`` -> llm-rubric; ``contains-any: a, b`` -> a list. Values are stripped of
    surrounding spaces (promptfoo's own examples write ``contains: Hello``). ``similar`` without ``(t)`` gets
    promptfoo's CSV default 0.8; other types keep their own defaults (promptfoo's CSV code would give
    levenshtein/latency a 0.75 threshold).
    """
    for prefix, kind in _SCRIPT_PREFIXES.items():
        if cell.startswith(prefix):
            return {"type": kind, "value": cell[len(prefix) :].strip()}
    if cell.startswith("ruby:") or re.match(r"^file://.*\.(js|ts|py|rb)(:|$)", cell):
        raise ValueError(f"script assertion {cell[:40]!r} is not supported (only inline python/javascript)")
    for prefix in ("grade:", "llm-rubric:"):
        if cell.startswith(prefix):
            return {"type": "llm-rubric", "value": cell[len(prefix) :].strip()}
    match = _CELL_RE.match(cell)
    if not match:
        return {"type": "equals", "value": cell}
    negate, kind, threshold, value = match.groups()
    value = (value or "").strip()
    out: dict[str, Any] = {"type": f"{negate or ''}{kind}", "value": value or None}
    if kind in LIST_TYPES:
        out["value"] = split_comma_separated(value)
    if threshold is not None or kind == "similar":
        out["threshold"] = float(threshold) if threshold is not None else 0.8
    return out


def csv_tests(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Rows of a promptfoo-style CSV as (where, promptfoo test dict)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read: {exc}") from None
    first = text.split("\n", 1)[0]
    delimiter = "\t" if "\t" in first and "," not in first else ","  # promptfoo reads TSV too
    reader = csv.DictReader(text.splitlines(keepends=True), delimiter=delimiter)
    for row in reader:
        where = f"{path}: row {reader.line_num}"
        yield where, _csv_row_to_test(row, where)


def _csv_row_to_test(row: dict[str, Any], where: str) -> dict[str, Any]:
    variables: dict[str, Any] = {}
    expected: dict[str, dict[str, Any]] = {}
    configs: list[tuple[str, str, str]] = []
    test: dict[str, Any] = {"metadata": {}}
    metric = None
    for key, cell in row.items():
        if key is None:
            raise DatasetError(f"{where}: more cells than header columns")
        cell = cell or ""
        if key.startswith("__expected"):
            if cell.strip():
                try:
                    expected[key] = assertion_from_cell(cell)
                except ValueError as exc:
                    raise DatasetError(f"{where}: column {key}: {exc}") from None
        elif key == "__description":
            test["description"] = cell or None
        elif key == "__metric":
            metric = cell or None
        elif key == "__threshold":
            test["threshold"] = _float(cell, where, key) if cell.strip() else None
        elif key == "__tags":
            test["metadata"]["tags"] = cell
        elif key.startswith("__metadata:"):
            name = key[len("__metadata:") :]
            list_form = name.endswith("[]")
            value = (
                [v.replace("\\,", ",").strip() for v in re.split(r"(?<!\\),", cell)] if list_form else cell
            )
            test["metadata"][name.removesuffix("[]")] = value
        elif key.startswith("__config:"):
            _, column, option = key.split(":", 2) if key.count(":") >= 2 else (key, "", "")
            configs.append((column, option, cell))
        elif key.startswith("__"):
            raise DatasetError(f"{where}: column {key} is not supported")
        else:
            variables[key] = cell
    for column, option, cell in configs:
        if option not in {"threshold", "weight", "metric"} or not cell.strip():
            raise DatasetError(f"{where}: config column {column}:{option} is not supported")
        for name, assertion in expected.items():
            if column in {"__expected", name}:
                assertion[option] = cell if option == "metric" else _float(cell, where, column)
    if metric:
        for assertion in expected.values():
            assertion.setdefault("metric", metric)
    return {**test, "vars": variables, "assert": list(expected.values())}


def _float(cell: str, where: str, column: str) -> float:
    try:
        return float(cell)
    except ValueError:
        raise DatasetError(f"{where}: column {column}: {cell!r} is not a number") from None
