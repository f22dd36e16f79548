"""Golden datasets: the case model, the importers and the content hash (PRODUCT §5).

Formats read by :func:`load_dataset`:

- pairshift JSONL (§5): one case a line, ``{"id", "vars", "expected"?, "assert", "tags"?, "threshold"?}``;
- OpenAI Evals JSONL (``{"input", "ideal"}``), see :func:`load_openai_evals`;
- plain CSV: columns are vars, ``__expected``/``__expectedN`` cells are assertions in promptfoo's cell syntax;
- promptfoo ``promptfooconfig.yaml``: ``tests`` (inline, ``file://`` files or globs of yaml/json/jsonl/csv),
  ``defaultTest`` merged into every test as promptfoo does (vars and options overlaid, asserts prepended,
  threshold and metadata inherited), string-list vars expanded into one test per combination.

Everything is checked at import: an unknown assertion type, a malformed case, a bad regex or JSON Schema,
an out-of-range threshold or a duplicate id raises :class:`DatasetError` naming file, case and type, so a
case can never pass silently because pairshift did not understand it. What pairshift cannot honour (JavaScript
or Python assertions, prompt prefixes, transforms, scenarios) is refused by name; keys that only pick
promptfoo's prompts, providers or grader are ignored because pairshift takes the pair and the judge from
its registry.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import itertools
import json
import math
import re
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import yaml
from jinja2 import TemplateError
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, ValidationError

DETERMINISTIC_TYPES = frozenset({
    "equals", "contains", "icontains", "contains-any", "contains-all", "icontains-any", "icontains-all",
    "regex", "starts-with", "is-json", "contains-json", "levenshtein", "similar", "is-refusal",
    "finish-reason", "latency", "cost", "json-field",
})
MODEL_GRADED_TYPES = frozenset({"llm-rubric", "model-graded-closedqa", "factuality", "model-graded-factuality"})
KNOWN_ASSERTION_TYPES: frozenset[str] = DETERMINISTIC_TYPES | MODEL_GRADED_TYPES | {"assert-set"}
# promptfoo types pairshift knows by name but cannot run (code, external services, other parsers).
PROMPTFOO_UNSUPPORTED_TYPES = frozenset({
    "javascript", "python", "ruby", "webhook", "rouge-n", "bleu", "gleu", "meteor", "classifier", "moderation",
    "perplexity", "perplexity-score", "is-xml", "contains-xml", "is-sql", "contains-sql", "is-html",
    "contains-html", "answer-relevance", "context-faithfulness", "context-recall", "context-relevance",
    "g-eval", "select-best", "max-score", "word-count", "tool-call-f1", "is-valid-function-call",
    "is-valid-openai-function-call", "is-valid-openai-tools-call", "pi", "guardrails", "ends-with",
})
_FRACTION_THRESHOLD = {"similar", "llm-rubric", "assert-set"}  # threshold is a score in [0, 1]
_NONNEGATIVE_THRESHOLD = {"levenshtein", "latency", "cost"}    # max distance, ms, USD
_LIST_TYPES = {"contains-any", "contains-all", "icontains-any", "icontains-all"}
_STRING_TYPES = {"regex", "starts-with", "levenshtein", "finish-reason", "model-graded-closedqa"}
_CASE_KEYS = {"id", "vars", "expected", "assert", "tags", "threshold", "metadata"}
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
    return assertion_type[4:] if assertion_type.startswith("not-") else assertion_type


def render_value(value: Any, variables: dict[str, Any]) -> Any:
    """Render template strings in an assertion value with the case vars, as promptfoo does with nunjucks."""
    if isinstance(value, str) and ("{{" in value or "{%" in value):
        return _JINJA.from_string(value).render(**variables)
    if isinstance(value, list):
        return [render_value(item, variables) for item in value]
    return value


def as_list(value: Any) -> list[str]:
    """A list value, or promptfoo's comma-separated string form (quotes allowed around items with commas)."""
    if isinstance(value, str):
        return [item.strip() for item in next(csv.reader([value], skipinitialspace=True), []) if item.strip()]
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
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ValueError(f"invalid JSON Schema: {exc.message}") from None
    return schema


def check_assertion(a: Assertion, variables: dict[str, Any], *, nested: bool = False) -> None:
    """Raise ValueError naming the problem when pairshift cannot score this assertion faithfully."""
    kind = a.base_type
    if kind not in KNOWN_ASSERTION_TYPES:
        why = "a promptfoo type pairshift does not support" if kind in PROMPTFOO_UNSUPPORTED_TYPES else "unknown"
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
    if kind in {"contains", "icontains"}:
        if not (isinstance(value, str) and value) and not _is_number(value):
            raise ValueError("value must be a non-empty string or a number")
    elif kind in _LIST_TYPES:
        if not value or not as_list(value):
            raise ValueError("value must be a non-empty list")
    elif kind in _STRING_TYPES or kind in MODEL_GRADED_TYPES - {"llm-rubric"}:
        if not isinstance(value, str) or not value:
            raise ValueError("value must be a non-empty string")
        if kind == "regex":
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"bad regex {value!r}: {exc}") from None
    elif kind == "llm-rubric" and not (isinstance(value, (str, dict)) and value):
        raise ValueError("value must be the rubric (a non-empty string)")
    elif kind in {"is-json", "contains-json"}:
        parse_schema(value)
    elif kind == "similar" and not (value and all(isinstance(v, str) for v in as_list(value))):
        raise ValueError("value must be a string or a list of strings")
    elif kind == "equals" and value is None:
        raise ValueError("value is required")
    elif kind == "json-field" and (not a.path or "value" not in a.model_fields_set):
        raise ValueError("needs `path` (dotted) and `value`")


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


def _unique(cases: list[Case], path: Path) -> list[Case]:
    seen: set[str] = set()
    for case in cases:
        if case.id in seen:
            raise DatasetError(f"{path}: case {case.id!r}: duplicate case id")
        seen.add(case.id)
    return cases


def _json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
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


def load_jsonl(path: Path) -> list[Case]:
    """pairshift JSONL (PRODUCT §5): every line needs ``id`` and ``vars``."""
    cases = []
    for number, item in _json_lines(Path(path)):
        where = f"{path}: line {number}"
        if not isinstance(item.get("id"), str) or not item["id"]:
            raise DatasetError(f"{where}: missing `id` (a non-empty string)")
        unknown = sorted(set(item) - _CASE_KEYS)
        if unknown:
            raise DatasetError(f"{where}, case {item['id']!r}: unknown key {unknown[0]!r}")
        cases.append(build_case(item, where))
    return _unique(cases, Path(path))


def load_openai_evals(path: Path, *, mode: str = "includes") -> list[Case]:
    """OpenAI Evals samples ``{"input", "ideal"}``, one a line.

    ``input`` (a string or a list of chat messages) becomes vars ``{"input": last user text, "messages": [...]}``;
    ``expected`` is ``ideal`` (the first one when a list). The assertion follows the openai/evals class
    chosen by ``mode``: ``includes`` (default; ``Includes``: the output contains any ideal, case-sensitive)
    -> ``contains-any``; ``match`` (``Match``: the output starts with any ideal) -> an anchored ``regex``.
    """
    if mode not in {"includes", "match"}:
        raise ValueError(f"mode must be 'includes' or 'match', got {mode!r}")
    cases = []
    for number, item in _json_lines(Path(path)):
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
        raw = {"id": str(item.get("id") or f"case-{len(cases) + 1:04d}"), "vars": {"input": text, "messages": messages},
               "expected": ideals[0], "assert": [check]}
        cases.append(build_case(raw, where))
    return _unique(cases, Path(path))


def load_csv(path: Path) -> list[Case]:
    """Plain CSV: vars columns, promptfoo's ``__expected`` cells, ``__description`` as id (else case-NNNN)."""
    return _cases_from_tests(list(_csv_tests(Path(path))), {}, Path(path))


def load_promptfoo(path: Path) -> list[Case]:
    """A promptfoo config (or a bare YAML list of tests); see the module docstring for what is supported."""
    path = Path(path)
    doc = _read_structured(path)
    default: Any = {}
    if isinstance(doc, list):
        spec: Any = doc
    elif isinstance(doc, dict):
        for key in doc:
            if key not in _PF_TOP_HANDLED | _PF_TOP_IGNORED:
                raise DatasetError(f"{path}: unsupported promptfoo key {key!r}")
        spec, default = doc.get("tests"), doc.get("defaultTest") or {}
        if isinstance(default, str):
            default = _read_structured(_resolve_ref(default, path.parent, path)[0])
        if not isinstance(default, dict):
            raise DatasetError(f"{path}: `defaultTest` must be a mapping")
    else:
        raise DatasetError(f"{path}: expected a promptfoo config mapping or a list of tests")
    if spec is None:
        raise DatasetError(f"{path}: no `tests`")
    tests = list(_expand_test_spec(spec, path))
    return _cases_from_tests(tests, default, path)


# Top-level promptfoo keys: the first set is imported; the second only configures promptfoo's own run
# (prompts, providers, output) and is ignored because pairshift takes the pair from its registry.
_PF_TOP_HANDLED = {"tests", "defaultTest"}
_PF_TOP_IGNORED = {"description", "prompts", "providers", "outputPath", "sharing", "env", "evaluateOptions",
                   "commandLineOptions", "writeLatestResults", "tags", "metadata", "derivedMetrics"}
_PF_TEST_KEYS = {"description", "vars", "assert", "options", "threshold", "metadata"}
# Test `options`: `provider` picks promptfoo's grader (pairshift's judge comes from the registry) and
# `runSerially`/`disableConversationVar` only steer promptfoo's runner, so they are ignored; every other
# option (prefix, suffix, transform, postprocess, rubricPrompt, ...) changes what is scored and is refused.
_PF_OPTIONS_IGNORED = {"provider", "runSerially", "disableConversationVar", "disableVarExpansion"}


def _read_structured(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read: {str(exc).splitlines()[0]}") from None


def _resolve_ref(ref: str, base: Path, origin: Path) -> list[Path]:
    if not ref.startswith("file://"):
        raise DatasetError(f"{origin}: unsupported test source {ref!r} (only file:// paths and globs)")
    pattern = str(base / ref[len("file://"):])
    found = sorted(Path(p) for p in glob.glob(pattern)) if glob.has_magic(pattern) else [Path(pattern)]
    if not found or not all(p.is_file() for p in found):
        raise DatasetError(f"{origin}: {ref} matches no file")
    return found


def _expand_test_spec(spec: Any, origin: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (where, promptfoo test dict) from inline tests and file:// references, in order."""
    for number, entry in enumerate(spec if isinstance(spec, list) else [spec], 1):
        if isinstance(entry, dict):
            yield f"{origin}: test {number}", entry
            continue
        if not isinstance(entry, str):
            raise DatasetError(f"{origin}: test {number}: a test must be a mapping or a file:// reference")
        for file in _resolve_ref(entry, origin.parent, origin):
            if file.suffix == ".csv":
                yield from _csv_tests(file)
            elif file.suffix == ".jsonl":
                yield from ((f"{file}: line {n}", item) for n, item in _json_lines(file))
            elif file.suffix in {".yaml", ".yml", ".json"}:
                items = _read_structured(file)
                items = items if isinstance(items, list) else [items]
                for n, item in enumerate(items, 1):
                    if not isinstance(item, dict):
                        raise DatasetError(f"{file}: test {n}: a test must be a mapping")
                    yield f"{file}: test {n}", item
            else:
                raise DatasetError(f"{origin}: {file.name}: unsupported test file type (yaml, json, jsonl, csv)")


def _merge_default(test: dict[str, Any], default: dict[str, Any], where: str) -> dict[str, Any]:
    """promptfoo's defaultTest semantics: vars/options/metadata overlaid, asserts prepended, threshold inherited."""
    for key in test:
        if key not in _PF_TEST_KEYS:
            raise DatasetError(f"{where}: unsupported promptfoo test key {key!r}")
    merged: dict[str, Any] = {}
    for key in ("vars", "options", "metadata"):
        part_d, part_t = default.get(key) or {}, test.get(key) or {}
        if not isinstance(part_d, dict) or not isinstance(part_t, dict):
            raise DatasetError(f"{where}: `{key}` must be a mapping")
        merged[key] = {**part_d, **part_t}
    merged["assert"] = list(default.get("assert") or []) + list(test.get("assert") or [])
    merged["threshold"] = test.get("threshold", default.get("threshold"))
    merged["description"] = test.get("description")
    for option in merged["options"]:
        if option not in _PF_OPTIONS_IGNORED:
            raise DatasetError(f"{where}: promptfoo option {option!r} is not supported")
    return merged


def _var_combinations(variables: dict[str, Any]) -> list[dict[str, Any]]:
    """promptfoo expands a var holding a list of strings into one test per value (cartesian product)."""
    choices = [v if isinstance(v, list) and v and all(isinstance(x, str) for x in v) else [v]
               for v in variables.values()]
    return [dict(zip(variables, combo)) for combo in itertools.product(*choices)]


def _load_value_file(value: Any, base: Path, where: str) -> Any:
    """Inline a ``file://`` assertion value as promptfoo does (JSON/YAML parsed, other files as text)."""
    if not (isinstance(value, str) and value.startswith("file://")):
        return value
    file = base / value[len("file://"):]
    if file.suffix in {".js", ".ts", ".mjs", ".cjs", ".py", ".rb"} or ":" in file.name:
        raise DatasetError(f"{where}: script value {value!r} is not supported (pairshift runs no user code)")
    if not file.is_file():
        raise DatasetError(f"{where}: value file {value!r} not found")
    return _read_structured(file) if file.suffix in {".json", ".yaml", ".yml"} else file.read_text("utf-8")


def _clean_assertion(raw: Any, base: Path, where: str) -> Any:
    if not isinstance(raw, dict):
        return raw  # pydantic names the problem
    # `provider` on an assertion picks promptfoo's grader; pairshift's judge comes from the registry.
    out = {k: v for k, v in raw.items() if k != "provider"}
    if "value" in out:
        out["value"] = _load_value_file(out["value"], base, where)
    if isinstance(out.get("assert"), list):
        out["assert"] = [_clean_assertion(child, base, where) for child in out["assert"]]
    return out


def _tags(metadata: dict[str, Any]) -> list[str]:
    tags = metadata.get("tags", [])
    return [t.strip() for t in tags.split(",") if t.strip()] if isinstance(tags, str) else [str(t) for t in tags]


def _cases_from_tests(tests: list[tuple[str, dict[str, Any]]], default: dict[str, Any], origin: Path) -> list[Case]:
    cases: list[Case] = []
    base_default = {**default, "assert": [_clean_assertion(a, origin.parent, f"{origin}: defaultTest")
                                          for a in default.get("assert") or []]}
    for where, test in tests:
        test = {**test, "assert": [_clean_assertion(a, origin.parent, where) for a in test.get("assert") or []]}
        merged = _merge_default(test, base_default, where)
        expand = not merged["options"].get("disableVarExpansion")
        combos = _var_combinations(merged["vars"]) if expand else [merged["vars"]]
        for n, variables in enumerate(combos, 1):
            name = merged["description"]
            case_id = str(name) if name else f"case-{len(cases) + 1:04d}"
            if name and len(combos) > 1:
                case_id = f"{name} #{n}"
            raw = {"id": case_id, "vars": variables, "assert": merged["assert"], "tags": _tags(merged["metadata"]),
                   "threshold": merged["threshold"], "metadata": merged["metadata"]}
            cases.append(build_case(raw, where))
    return _unique(cases, origin)


_CELL_TYPES = sorted(KNOWN_ASSERTION_TYPES | PROMPTFOO_UNSUPPORTED_TYPES, key=len, reverse=True)
_CELL_RE = re.compile(
    r"^(not-)?(" + "|".join(map(re.escape, _CELL_TYPES)) + r")(?:\((\d+(?:\.\d+)?)\))?(?::([\s\S]*))?$")
_SCRIPT_PREFIXES = ("javascript:", "fn:", "eval:", "python:", "ruby:")


def assertion_from_cell(cell: str) -> dict[str, Any]:
    """promptfoo's ``__expected`` cell syntax -> an assertion dict (raises ValueError for scripts).

    ``Paris`` -> equals; ``contains: Paris``; ``not-icontains:x``; ``similar(0.8):text``; ``grade:``/``llm-rubric:``
    -> llm-rubric; ``contains-any: a, b`` -> a list. Values are stripped of surrounding spaces (promptfoo's own
    examples write ``contains: Hello``). ``similar`` without ``(t)`` gets promptfoo's CSV default 0.8; other
    types keep their own defaults (promptfoo's CSV code would give levenshtein/latency a 0.75 threshold).
    """
    if cell.startswith(_SCRIPT_PREFIXES) or re.match(r"^file://.*\.(js|ts|py|rb)(:|$)", cell):
        raise ValueError(f"script assertion {cell[:40]!r} is not supported (pairshift runs no user code)")
    for prefix in ("grade:", "llm-rubric:"):
        if cell.startswith(prefix):
            return {"type": "llm-rubric", "value": cell[len(prefix):].strip()}
    match = _CELL_RE.match(cell)
    if not match:
        return {"type": "equals", "value": cell}
    negate, kind, threshold, value = match.groups()
    value = (value or "").strip()
    out: dict[str, Any] = {"type": f"{negate or ''}{kind}", "value": value or None}
    if kind in _LIST_TYPES:
        out["value"] = [v.strip() for v in value.split(",") if v.strip()]
    if threshold is not None or kind == "similar":
        out["threshold"] = float(threshold) if threshold is not None else 0.8
    return out


def _csv_tests(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
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
            name = key[len("__metadata:"):]
            list_form = name.endswith("[]")
            value = [v.replace("\\,", ",").strip() for v in re.split(r"(?<!\\),", cell)] if list_form else cell
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


def load_dataset(path: Path) -> list[Case]:
    """Load any supported dataset file, choosing the importer by suffix and, for JSONL, by content."""
    path = Path(path)
    if path.suffix == ".csv":
        return load_csv(path)
    if path.suffix in {".yaml", ".yml", ".json"}:
        return load_promptfoo(path)
    if path.suffix == ".jsonl":
        first = next(_json_lines(path), None)
        if first is not None and "input" in first[1] and "vars" not in first[1]:
            return load_openai_evals(path)
        return load_jsonl(path)
    raise DatasetError(f"{path}: unsupported dataset file type {path.suffix!r} (jsonl, csv, yaml)")


def dataset_hash(cases: list[Case]) -> str:
    """sha256 (hex) of a canonical JSON of the cases: order-sensitive, key order and default values ignored."""
    payload = [case.model_dump(mode="json", by_alias=True, exclude_defaults=True) for case in cases]
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()
