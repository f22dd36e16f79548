"""The golden-dataset case model, the checks every case passes at import, and the content hash (PRODUCT §5).

Everything is checked at import: an unknown assertion type, a malformed case, a bad regex or JSON Schema,
an out-of-range threshold or a duplicate id raises :class:`DatasetError` naming file, case and type, so a
case can never pass silently because pairshift did not understand it. The importers
(:mod:`~pairshift.datasets.formats`, :mod:`~pairshift.datasets.promptfoo`) all end in :func:`build_case`.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import yaml
from jinja2 import TemplateError
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pairshift.jscompat.json_schema import compile_schema
from pairshift.jscompat.regex import compile_js
from pairshift.jscompat.values import split_comma_separated

DETERMINISTIC_TYPES = frozenset(
    {
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
        "is-refusal",
        "finish-reason",
        "latency",
        "cost",
        "json-field",
        "word-count",
        "rouge-n",
        "bleu",
        "python",
        "javascript",
    }
)
MODEL_GRADED_TYPES = frozenset(
    {"llm-rubric", "model-graded-closedqa", "factuality", "model-graded-factuality"}
)
KNOWN_ASSERTION_TYPES: frozenset[str] = DETERMINISTIC_TYPES | MODEL_GRADED_TYPES | {"assert-set"}
# promptfoo types pairshift knows by name but cannot run (code, external services, other parsers).
PROMPTFOO_UNSUPPORTED_TYPES = frozenset(
    {
        "ruby",
        "webhook",
        "gleu",
        "meteor",
        "classifier",
        "moderation",
        "perplexity",
        "perplexity-score",
        "is-xml",
        "contains-xml",
        "is-sql",
        "contains-sql",
        "is-html",
        "contains-html",
        "answer-relevance",
        "context-faithfulness",
        "context-recall",
        "context-relevance",
        "g-eval",
        "select-best",
        "max-score",
        "tool-call-f1",
        "is-valid-function-call",
        "is-valid-openai-function-call",
        "is-valid-openai-tools-call",
        "pi",
        "guardrails",
        "ends-with",
    }
)
_FRACTION_THRESHOLD = {
    "similar",
    "llm-rubric",
    "assert-set",
    "rouge-n",
    "bleu",
}  # threshold is a score in [0, 1]
_NONNEGATIVE_THRESHOLD = {"levenshtein", "latency", "cost"}  # max distance, ms, USD
LIST_TYPES = {"contains-any", "contains-all", "icontains-any", "icontains-all"}
_STRING_TYPES = {
    "regex",
    "starts-with",
    "levenshtein",
    "finish-reason",
    "model-graded-closedqa",
    "rouge-n",
    "python",
    "javascript",
}
# nunjucks (promptfoo) renders an undefined variable as "", which jinja2's default Undefined also does.
_JINJA = SandboxedEnvironment(autoescape=False)


class DatasetError(ValueError):
    """A dataset file or case pairshift refuses; the message names the file, the case and the problem."""


class Assertion(BaseModel):
    """One promptfoo-style assertion; ``type`` may carry ``not-``; an ``assert-set`` holds ``assert``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    type: str
    value: Any = None
    threshold: float | None = None
    weight: float = 1.0
    metric: str | None = None
    path: str | None = None  # json-field: dotted path into the output's JSON (PRODUCT §5)
    assert_: list[Assertion] | None = Field(default=None, alias="assert")

    @property
    def inverse(self) -> bool:
        return self.type.startswith("not-")

    @property
    def base_type(self) -> str:
        return base_type(self.type)


class Case(BaseModel):
    """One golden-dataset case. ``threshold`` is promptfoo's test-level threshold (see scorers.engine)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    id: str = Field(min_length=1)
    vars: dict[str, Any]
    expected: str | None = None
    assert_: list[Assertion] = Field(default_factory=list, alias="assert")
    tags: list[str] = Field(default_factory=list)
    threshold: float | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


def base_type(assertion_type: str) -> str:
    """``not-contains`` -> ``contains``."""
    return assertion_type.removeprefix("not-")


def render_value(value: Any, variables: dict[str, Any]) -> Any:
    """Render template strings in an assertion value with the case vars, as promptfoo does with nunjucks."""
    if isinstance(value, str) and ("{{" in value or "{%" in value):
        return _JINJA.from_string(value).render(**variables)
    if isinstance(value, list):
        return [render_value(item, variables) for item in value]
    return value


def as_list(value: Any) -> list[Any]:
    """A list value, or promptfoo's comma-separated string form (``"..."`` quotes keep commas and spaces)."""
    if isinstance(value, str):
        return split_comma_separated(value)
    if isinstance(value, list):
        return value
    raise ValueError("value must be a list of strings or a comma-separated string")


def parse_schema(value: Any) -> dict[str, Any] | bool | None:
    """The JSON Schema of an is-json / contains-json value (YAML or JSON text allowed), checked, or None."""
    if value is None or value == "":
        return None
    schema = yaml.safe_load(value) if isinstance(value, str) else value
    if not isinstance(schema, (dict, bool)):
        raise ValueError("value must be a JSON Schema (an object)")
    compile_schema(schema)  # SchemaProblem is a ValueError naming the problem
    return schema


def check_assertion(a: Assertion, variables: dict[str, Any], *, nested: bool = False) -> None:
    """Raise ValueError naming the problem when pairshift cannot score this assertion faithfully."""
    kind = a.base_type
    if kind not in KNOWN_ASSERTION_TYPES:
        why = (
            "a promptfoo type pairshift does not support"
            if kind in PROMPTFOO_UNSUPPORTED_TYPES
            else "unknown"
        )
        raise ValueError(f"assertion type {a.type!r} is {why}")
    _check_numbers(a, kind)
    if kind == "assert-set":
        if nested:
            raise ValueError("assert-set cannot be nested inside another assert-set")
        if not a.assert_:
            raise ValueError("assert-set needs a non-empty `assert` list")
        for child in a.assert_:
            try:
                check_assertion(child, variables, nested=True)
            except ValueError as exc:
                raise ValueError(f"inside assert-set, {child.type!r}: {exc}") from None
        return
    if a.assert_ is not None:
        raise ValueError("`assert` is only allowed on assert-set")
    try:
        value = render_value(a.value, variables)
    except TemplateError as exc:
        raise ValueError(f"bad template in value: {exc}") from None
    _check_value(a, kind, value)


def _check_numbers(a: Assertion, kind: str) -> None:
    if not math.isfinite(a.weight) or a.weight < 0:
        raise ValueError(f"weight must be a finite number >= 0, got {a.weight}")
    t = a.threshold
    if t is not None and not math.isfinite(t):
        raise ValueError("threshold must be a finite number")
    if t is not None and kind in _FRACTION_THRESHOLD and not 0 <= t <= 1:
        raise ValueError(f"threshold {t} out of range [0, 1]")
    if t is not None and kind in _NONNEGATIVE_THRESHOLD and t < 0:
        raise ValueError(f"threshold {t} must be >= 0")
    if t is None and kind in {"latency", "cost"}:
        raise ValueError("needs a threshold (max ms for latency, max USD for cost)")


def _check_value(a: Assertion, kind: str, value: Any) -> None:
    # Imported here: the scorers import this module for Case and Assertion.
    from pairshift.scorers.scripts import require_node
    from pairshift.scorers.text_metrics import word_count_bounds

    if kind in {"contains", "icontains"}:
        if not (isinstance(value, str) and value) and not _is_number(value):
            raise ValueError("value must be a non-empty string or a number")
    elif kind in LIST_TYPES:
        if not value or not as_list(value):
            raise ValueError("value must be a non-empty list")
    elif kind in _STRING_TYPES or kind in MODEL_GRADED_TYPES - {"llm-rubric"}:
        if not isinstance(value, str) or not value:
            raise ValueError("value must be a non-empty string")
        if kind == "javascript":
            require_node()
        if kind == "regex":
            try:
                compile_js(value)
            except ValueError as exc:
                raise ValueError(f"bad regex {value!r}: {exc}") from None
    elif kind == "llm-rubric" and not (isinstance(value, (str, dict)) and value):
        raise ValueError("value must be the rubric (a non-empty string)")
    elif kind in {"is-json", "contains-json"}:
        parse_schema(value)
    elif kind == "similar" and not (value and all(isinstance(v, str) for v in as_list(value))):
        raise ValueError("value must be a string or a list of strings")
    elif kind == "equals" and value is None:
        raise ValueError("value is required")
    elif kind == "word-count":
        word_count_bounds(value)
    elif kind == "bleu" and not _strings(value):
        raise ValueError("value must be the reference (a string) or a list of references")
    elif kind == "json-field" and (not a.path or "value" not in a.model_fields_set):
        raise ValueError("needs `path` (dotted) and `value`")


def _strings(value: Any) -> bool:
    """A non-empty string, or a non-empty list of non-empty strings."""
    items = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    return bool(items) and all(isinstance(v, str) and v for v in items)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _one_line(exc: ValidationError) -> str:
    parts = [f"{'.'.join(str(p) for p in e['loc']) or 'case'}: {e['msg']}" for e in exc.errors()[:3]]
    return "; ".join(parts)


def build_case(raw: dict[str, Any], where: str) -> Case:
    """Validate one raw case (pairshift shape) fully; ``where`` names the file and case for errors."""
    label = f"{where}, case {raw['id']!r}" if isinstance(raw.get("id"), str) else f"{where}"
    if not isinstance(raw.get("vars"), dict):
        problem = "missing `vars`" if "vars" not in raw else "`vars` must be an object"
        raise DatasetError(f"{label}: {problem}")
    if _is_number(raw.get("expected")):
        raw = {**raw, "expected": str(raw["expected"])}
    try:
        case = Case.model_validate(raw)
    except ValidationError as exc:
        raise DatasetError(f"{label}: {_one_line(exc)}") from None
    if not case.assert_:
        raise DatasetError(f"{label}: no assertions (the case would always pass)")
    if case.threshold is not None and not 0 <= case.threshold <= 1:
        raise DatasetError(f"{label}: threshold {case.threshold} out of range [0, 1]")
    for index, a in enumerate(case.assert_, 1):
        try:
            check_assertion(a, case.vars)
        except ValueError as exc:
            raise DatasetError(f"{label}: assertion {index} ({a.type}): {exc}") from None
    return case


def unique_cases(cases: list[Case], path: Path) -> list[Case]:
    """``cases`` unchanged, or a DatasetError naming the first duplicate id."""
    seen: set[str] = set()
    for case in cases:
        if case.id in seen:
            raise DatasetError(f"{path}: case {case.id!r}: duplicate case id")
        seen.add(case.id)
    return cases


def dataset_hash(cases: list[Case]) -> str:
    """sha256 (hex) of a canonical JSON of the cases: order-sensitive; key order, default values ignored."""
    payload = [case.model_dump(mode="json", by_alias=True, exclude_defaults=True) for case in cases]
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()
