"""Deterministic assertion checks with promptfoo's semantics (src/assertions/*.ts, "Deterministic metrics").

Each check answers the positive question ("does the output contain X?") as a :class:`Verdict`; the engine
applies ``not-`` by flipping ``passed`` and taking ``1 - score``, which is what promptfoo's handlers do
for these types. JavaScript behaviour the verdicts depend on (RegExp, ``String(number)``, ajv) comes from
:mod:`pairshift.jscompat`. Documented differences from promptfoo (docs/configuration.md, "Differences from
promptfoo"):

- ``similar`` has no embedding model offline: it scores rapidfuzz's token-set ratio / 100 (case and
  punctuation folded) against the threshold (default 0.75) — lexical, not semantic similarity.
- ``contains-json`` and ``json-field`` read strict JSON objects embedded in the text (promptfoo's
  extractor also accepts YAML-ish and truncated objects and misses objects with ``}`` inside a string).
- ``levenshtein`` counts code points (promptfoo counts UTF-16 units: an emoji is two edits).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any, NamedTuple

from pydantic import BaseModel
from rapidfuzz import fuzz, utils
from rapidfuzz.distance import Levenshtein

from pairshift.datasets import Assertion, as_list, parse_schema
from pairshift.jscompat.json_schema import compile_schema, schema_errors
from pairshift.jscompat.regex import js_test
from pairshift.jscompat.values import js_string, js_trim, parse_json, strict_equal
from pairshift.scorers import scripts, text_metrics
from pairshift.scorers.refusal import is_refusal


class Output(BaseModel):
    """What a model call produced, as the scorers see it. ``prompt`` is the rendered prompt, for judges."""

    text: str
    finish_reason: str = "stop"
    latency_ms: float = 0
    cost_usd: float = 0
    error: str | None = None
    prompt: str | None = None
    vars: dict[str, Any] = {}  # the case's vars, for python/javascript assertions' context


class Verdict(NamedTuple):
    """A check's answer. ``grader_error``: the check itself failed, so ``not-`` must not flip it.
    ``fixed_score``: ``not-`` flips ``passed`` but keeps ``score`` (promptfoo's rule for a few cases)."""

    passed: bool
    score: float
    reason: str
    grader_error: bool = False
    fixed_score: bool = False


def _binary(passed: bool, reason_if_failed: str) -> Verdict:
    return Verdict(passed, 1.0 if passed else 0.0, "Assertion passed" if passed else reason_if_failed)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def extract_json_objects(text: str) -> list[Any]:
    """Every JSON object embedded in text, left to right, as promptfoo's extractJsonObjects finds them."""
    decoder = json.JSONDecoder(parse_constant=_no_constant)
    found, index = [], text.find("{")
    while index != -1:
        try:
            obj, end = decoder.raw_decode(text, index)
        except ValueError:
            index = text.find("{", index + 1)
            continue
        found.append(obj)
        index = text.find("{", end)
    return found


def output_json(text: str) -> Any:
    """The output's JSON: the whole text when it parses, else the first embedded object (as contains-json)."""
    try:
        return parse_json(text)
    except ValueError:
        objects = extract_json_objects(text)
        if not objects:
            raise ValueError("output contains no JSON") from None
        return objects[0]


def _schema_errors(schema: Any, instance: Any) -> str | None:
    return schema_errors(compile_schema(schema), instance)


def check_equals(value: Any, a: Assertion, out: Output) -> Verdict:
    if isinstance(value, (dict, list)):
        try:
            same = strict_equal(value, parse_json(out.text))
        except ValueError:
            same = False
        return _binary(same, f"Expected output to equal {json.dumps(value)}")
    want = js_string(value)
    return _binary(out.text == want, f"Expected output {out.text!r} to equal {want!r}")


def _contains(fold: bool, mode: str) -> Callable[[Any, Assertion, Output], Verdict]:
    def check(value: Any, a: Assertion, out: Output) -> Verdict:
        norm: Callable[[str], str] = str.lower if fold else str
        text = norm(out.text)
        needles = [norm(js_string(v)) for v in (as_list(value) if mode != "one" else [value])]
        hits = [n in text for n in needles]
        passed = any(hits) if mode == "any" else all(hits)
        missing = [n for n, hit in zip(needles, hits, strict=True) if not hit]
        wanted = {"one": "", "any": "one of ", "all": "all of "}[mode]
        return _binary(passed, f"Expected output to contain {wanted}{needles}; missing {missing}")

    return check


def check_regex(value: Any, a: Assertion, out: Output) -> Verdict:
    return _binary(js_test(value, out.text), f"Expected output to match regex {value!r}")


def check_starts_with(value: Any, a: Assertion, out: Output) -> Verdict:
    return _binary(out.text.startswith(js_string(value)), f"Expected output to start with {value!r}")


def check_is_json(value: Any, a: Assertion, out: Output) -> Verdict:
    try:
        parsed = parse_json(out.text)
    except ValueError:
        return _binary(False, "Expected output to be valid JSON")
    schema = parse_schema(value)
    errors = _schema_errors(schema, parsed) if schema is not None else None
    return _binary(errors is None, f"JSON does not conform to the provided schema: {errors}")


def check_contains_json(value: Any, a: Assertion, out: Output) -> Verdict:
    objects = extract_json_objects(out.text)
    if not objects:
        return _binary(False, "Expected output to contain valid JSON")
    schema = parse_schema(value)
    if schema is None:
        return _binary(True, "")
    errors = [_schema_errors(schema, obj) for obj in objects]
    return _binary(
        any(e is None for e in errors), f"JSON does not conform to the provided schema: {errors[-1]}"
    )


def check_levenshtein(value: Any, a: Assertion, out: Output) -> Verdict:
    limit = 5 if a.threshold is None else a.threshold
    distance = Levenshtein.distance(out.text, value)
    return _binary(distance <= limit, f"Levenshtein distance {distance} is greater than threshold {limit}")


def lexical_similarity(expected: str, text: str) -> float:
    """The offline stand-in for embedding similarity: token-set ratio in [0, 1]."""
    return fuzz.token_set_ratio(expected, text, processor=utils.default_process) / 100.0


def check_similar(value: Any, a: Assertion, out: Output) -> Verdict:
    threshold = 0.75 if a.threshold is None else a.threshold
    best = max(lexical_similarity(v, out.text) for v in as_list(value))
    passed = best >= threshold - 1e-12
    return Verdict(
        passed, best, f"Lexical similarity {best:.2f} {'>=' if passed else '<'} threshold {threshold}"
    )


def check_is_refusal(value: Any, a: Assertion, out: Output) -> Verdict:
    if out.finish_reason.lower() in {"content_filter", "refusal"}:
        return _binary(
            True, ""
        )  # the provider said so (newer promptfoo reads the provider's refusal flag too)
    if not js_trim(out.text):
        return Verdict(True, 0.0, "Empty response treated as refusal", fixed_score=True)
    return _binary(is_refusal(out.text), "Expected output to be a refusal")


# How promptfoo's providers report a finish reason (src/util/finishReason.ts); pairshift's own value
# "refusal" is what promptfoo calls content_filter. The expected value is compared as written.
_REPORTED_AS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "function_call": "tool_calls",
    "refusal": "content_filter",
}


def check_finish_reason(value: Any, a: Assertion, out: Output) -> Verdict:
    reported = js_trim(out.finish_reason or "").lower()
    if not reported:
        return _binary(False, "Provider did not supply a finish reason")
    got = _REPORTED_AS.get(reported, reported)
    return _binary(got == str(value).lower(), f"Expected finish reason {value!r} but got {got!r}")


def check_latency(value: Any, a: Assertion, out: Output) -> Verdict:
    return _binary(
        out.latency_ms <= a.threshold, f"Latency {out.latency_ms}ms is greater than {a.threshold}ms"
    )


def check_cost(value: Any, a: Assertion, out: Output) -> Verdict:
    if not math.isfinite(out.cost_usd) or out.cost_usd < 0:
        return Verdict(False, 0.0, f"Invalid cost {out.cost_usd}", grader_error=True)
    return _binary(
        out.cost_usd <= a.threshold, f"Cost {out.cost_usd:.2g} is greater than threshold {a.threshold}"
    )


def json_path(document: Any, path: str) -> Any:
    """Follow a dotted path (``a.b.0.c``; digits index lists); raises KeyError when absent."""
    node = document
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.lstrip("-").isdigit() and -len(node) <= int(part) < len(node):
            node = node[int(part)]
        else:
            raise KeyError(part)
    return node


def check_json_field(value: Any, a: Assertion, out: Output) -> Verdict:
    try:
        found = json_path(output_json(out.text), a.path or "")
    except ValueError:
        return _binary(False, "Expected output to contain JSON")
    except KeyError as exc:
        return _binary(False, f"JSON has no field {a.path!r} (missing {exc.args[0]!r})")
    return _binary(
        strict_equal(found, value), f"Expected {a.path} == {json.dumps(value)}, got {json.dumps(found)}"
    )


def check_word_count(value: Any, a: Assertion, out: Output) -> Verdict:
    low, high = text_metrics.word_count_bounds(value)
    words = text_metrics.count_words(out.text)
    passed = (low is None or words >= low) and (high is None or words <= high)
    return _binary(passed, f"Word count {words} is outside [{low}, {high}]")


def _threshold_metric(name: str, default: float, compute: Callable[[Any, str], float]) -> Callable:
    def check(value: Any, a: Assertion, out: Output) -> Verdict:
        threshold = default if a.threshold is None else a.threshold
        score = compute(value, out.text)
        passed = score >= threshold
        return Verdict(
            passed, score, f"{name} score {score:.4f} {'>=' if passed else '<'} threshold {threshold}"
        )

    return check


def check_script(language: str) -> Callable[[Any, Assertion, Output], Verdict]:
    run = scripts.run_python if language == "Python" else scripts.run_javascript

    def check(value: Any, a: Assertion, out: Output) -> Verdict:
        context = {"prompt": out.prompt, "vars": out.vars, "test": {"vars": out.vars}, "config": {}}
        try:
            result = run(value, out.text, context)
            passed, score, reason, kept = scripts.script_verdict(result, a.threshold, language)
        except Exception as exc:  # noqa: BLE001 — promptfoo fails the assertion, and so does not-
            return Verdict(False, 0.0, f"{language} code failed: {exc}", grader_error=True)
        return Verdict(
            passed, score, reason or ("Assertion passed" if passed else "failed"), fixed_score=kept
        )

    return check


CHECKS: dict[str, Callable[[Any, Assertion, Output], Verdict]] = {
    "equals": check_equals,
    "contains": _contains(False, "one"),
    "icontains": _contains(True, "one"),
    "contains-any": _contains(False, "any"),
    "icontains-any": _contains(True, "any"),
    "contains-all": _contains(False, "all"),
    "icontains-all": _contains(True, "all"),
    "regex": check_regex,
    "starts-with": check_starts_with,
    "is-json": check_is_json,
    "contains-json": check_contains_json,
    "levenshtein": check_levenshtein,
    "similar": check_similar,
    "is-refusal": check_is_refusal,
    "finish-reason": check_finish_reason,
    "latency": check_latency,
    "cost": check_cost,
    "json-field": check_json_field,
    "word-count": check_word_count,
    "rouge-n": _threshold_metric("ROUGE-N", 0.75, lambda v, text: text_metrics.rouge_n(text, v)),
    "bleu": _threshold_metric(
        "BLEU", 0.5, lambda v, text: text_metrics.bleu(text, v if isinstance(v, list) else [v])
    ),
    "python": check_script("Python"),
    "javascript": check_script("JavaScript"),
}
