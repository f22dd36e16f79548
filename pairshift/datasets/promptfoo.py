"""The promptfoo importer: ``promptfooconfig.yaml`` (or a bare list of tests) into checked cases.

``tests`` may be inline, ``file://`` files or globs of yaml/json/jsonl/csv; ``defaultTest`` is merged into
every test as promptfoo does (vars and options overlaid, asserts prepended, threshold and metadata inherited),
and string-list vars are expanded into one test per combination. A ``file://`` var is loaded as promptfoo
does (JSON/YAML parsed, other files as text; scripts refused), confined to the config's folder. A test
without a ``description`` gets a stable id from its content (``case-`` + a hash of its vars and asserts), so
inserting a test does not renumber the others and case ids line up across dataset versions. What pairshift
cannot honour (JavaScript or Python assertions, prompt prefixes, transforms, scenarios) is refused by name;
keys that only pick promptfoo's prompts, providers or grader are ignored because pairshift takes the pair and
the judge from its registry. :func:`cases_from_tests` is also how a plain CSV (promptfoo's CSV test format)
becomes cases.
"""

from __future__ import annotations

import glob
import hashlib
import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from pairshift.config_files import UnsafeFile, confined, load_yaml, read_capped
from pairshift.datasets.cases import Case, DatasetError, build_case, unique_cases
from pairshift.datasets.readers import csv_tests, json_lines

# Top-level promptfoo keys: the first set is imported; the second only configures promptfoo's own run
# (prompts, providers, output) and is ignored because pairshift takes the pair from its registry.
_PF_TOP_HANDLED = {"tests", "defaultTest"}
_PF_TOP_IGNORED = {
    "description",
    "prompts",
    "providers",
    "outputPath",
    "sharing",
    "env",
    "evaluateOptions",
    "commandLineOptions",
    "writeLatestResults",
    "tags",
    "metadata",
    "derivedMetrics",
}
_PF_TEST_KEYS = {"description", "vars", "assert", "options", "threshold", "metadata"}
# Test `options`: `provider` picks promptfoo's grader (pairshift's judge comes from the registry) and
# `runSerially`/`disableConversationVar` only steer promptfoo's runner, so they are ignored; every other
# option (prefix, suffix, transform, postprocess, rubricPrompt, ...) changes what is scored and is refused.
_PF_OPTIONS_IGNORED = {"provider", "runSerially", "disableConversationVar", "disableVarExpansion"}


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
    return cases_from_tests(tests, default, path)


def _read_structured(path: Path) -> Any:
    try:
        text = read_capped(path)
        return json.loads(text) if path.suffix == ".json" else load_yaml(text)
    except (OSError, UnsafeFile, yaml.YAMLError, json.JSONDecodeError, RecursionError) as exc:
        raise DatasetError(f"{path}: cannot read: {str(exc).splitlines()[0]}") from None


def _inside(base: Path, ref: str, origin: Path | str) -> Path:
    """A ``file://`` reference as a path inside the promptfoo config's folder, or a DatasetError."""
    try:
        return confined(base, ref)
    except UnsafeFile as exc:
        raise DatasetError(f"{origin}: {exc}") from None


def _resolve_ref(ref: str, base: Path, origin: Path) -> list[Path]:
    if not ref.startswith("file://"):
        raise DatasetError(f"{origin}: unsupported test source {ref!r} (only file:// paths and globs)")
    pattern = str(_inside(base, ref, origin))
    found = sorted(Path(p) for p in glob.glob(pattern)) if glob.has_magic(pattern) else [Path(pattern)]
    root = base.resolve()
    if any(not p.resolve().is_relative_to(root) for p in found):  # a symlink out of the folder
        raise DatasetError(
            f"{origin}: {ref} points outside {base}: references stay inside the config's folder"
        )
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
                yield from csv_tests(file)
            elif file.suffix == ".jsonl":
                yield from ((f"{file}: line {n}", item) for n, item in json_lines(file))
            elif file.suffix in {".yaml", ".yml", ".json"}:
                items = _read_structured(file)
                items = items if isinstance(items, list) else [items]
                for n, item in enumerate(items, 1):
                    if not isinstance(item, dict):
                        raise DatasetError(f"{file}: test {n}: a test must be a mapping")
                    yield f"{file}: test {n}", item
            else:
                raise DatasetError(
                    f"{origin}: {file.name}: unsupported test file type (yaml, json, jsonl, csv)"
                )


def _merge_default(test: dict[str, Any], default: dict[str, Any], where: str) -> dict[str, Any]:
    """promptfoo's defaultTest: vars/options/metadata overlaid, asserts prepended, threshold inherited."""
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
    choices = [
        v if isinstance(v, list) and v and all(isinstance(x, str) for x in v) else [v]
        for v in variables.values()
    ]
    return [dict(zip(variables, combo, strict=True)) for combo in itertools.product(*choices)]


def _load_value_file(value: Any, base: Path, where: str) -> Any:
    """Inline a ``file://`` value (assertion or var) as promptfoo does (JSON/YAML parsed, else text)."""
    if not (isinstance(value, str) and value.startswith("file://")):
        return value
    file = _inside(base, value, where)
    if file.suffix in {".js", ".ts", ".mjs", ".cjs", ".py", ".rb"} or ":" in file.name:
        raise DatasetError(f"{where}: script value {value!r} is not supported (pairshift runs no user code)")
    if not file.is_file():
        raise DatasetError(f"{where}: value file {value!r} not found")
    if file.suffix in {".json", ".yaml", ".yml"}:
        return _read_structured(file)
    try:
        return read_capped(file)
    except UnsafeFile as exc:
        raise DatasetError(f"{where}: {exc}") from None


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
    return (
        [t.strip() for t in tags.split(",") if t.strip()] if isinstance(tags, str) else [str(t) for t in tags]
    )


def content_id(variables: dict[str, Any], merged: dict[str, Any], taken: set[str]) -> str:
    """A stable id of an unnamed test: a hash of what it asks and checks (a twin gets ``-2``, ``-3``...)."""
    blob = json.dumps(
        {"vars": variables, "assert": merged["assert"], "threshold": merged["threshold"]},
        sort_keys=True,
        default=str,
        ensure_ascii=False,
    )
    base = f"case-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"
    case_id, n = base, 1
    while case_id in taken:
        n += 1
        case_id = f"{base}-{n}"
    return case_id


def cases_from_tests(
    tests: list[tuple[str, dict[str, Any]]], default: dict[str, Any], origin: Path
) -> list[Case]:
    """promptfoo tests (``where``, test dict) with ``default`` merged in, as checked cases with unique ids."""
    cases: list[Case] = []
    base_default = {
        **default,
        "assert": [
            _clean_assertion(a, origin.parent, f"{origin}: defaultTest") for a in default.get("assert") or []
        ],
    }
    for where, test in tests:
        test = {
            **test,
            "assert": [_clean_assertion(a, origin.parent, where) for a in test.get("assert") or []],
        }
        merged = _merge_default(test, base_default, where)
        expand = not merged["options"].get("disableVarExpansion")
        combos = _var_combinations(merged["vars"]) if expand else [merged["vars"]]
        for n, variables in enumerate(combos, 1):
            variables = {
                k: _load_value_file(v, origin.parent, f"{where}: vars.{k}") for k, v in variables.items()
            }
            name = merged["description"]
            case_id = str(name) if name else content_id(variables, merged, {c.id for c in cases})
            if name and len(combos) > 1:
                case_id = f"{name} #{n}"
            raw = {
                "id": case_id,
                "vars": variables,
                "assert": merged["assert"],
                "tags": _tags(merged["metadata"]),
                "threshold": merged["threshold"],
                "metadata": merged["metadata"],
            }
            cases.append(build_case(raw, where))
    return unique_cases(cases, origin)
