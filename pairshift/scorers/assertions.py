"""Deterministic assertion checks with promptfoo's semantics (src/assertions/*.ts, docs "Deterministic metrics").

Each check answers the positive question ("does the output contain X?") as a :class:`Verdict`; the engine
applies ``not-`` by flipping ``passed`` and taking ``1 - score``, which is exactly what promptfoo's handlers do
for these types. Documented differences from promptfoo:

- ``similar`` has no embedding model offline: it scores rapidfuzz's token-set ratio / 100 (case and
  punctuation folded) against the threshold (default 0.75) — lexical, not semantic similarity.
- ``levenshtein`` honours ``threshold: 0`` (promptfoo's ``threshold || 5`` turns 0 into 5) and, like every
  type here, negates (promptfoo's handler ignores ``not-`` for levenshtein and finish-reason).
- ``is-refusal`` uses its own phrase list in promptfoo's spirit (prefixes such as "I cannot", apologies
  followed by an inability, "As an AI", content-filter notices); an empty output, or a provider finish
  reason ``content_filter``/``refusal``, counts as a refusal. A passing refusal scores 1 (promptfoo gives
  an empty refusal score 0).
- ``regex`` uses Python's ``re.search`` (promptfoo: JavaScript ``RegExp.test``); the syntax differs at the edges.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any, NamedTuple

import jsonschema
from pydantic import BaseModel
from rapidfuzz import fuzz, utils
from rapidfuzz.distance import Levenshtein

from pairshift.datasets import Assertion, as_list, parse_schema


class Output(BaseModel):
    """What a model call produced, as the scorers see it. ``prompt`` is the rendered prompt, for judges."""

    text: str
    finish_reason: str = "stop"
    latency_ms: float = 0
    cost_usd: float = 0
    error: str | None = None
    prompt: str | None = None


class Verdict(NamedTuple):
    """A check's answer. ``grader_error``: the check itself failed, so ``not-`` must not flip it."""

    passed: bool
    score: float
    reason: str
    grader_error: bool = False


def _binary(passed: bool, reason_if_failed: str) -> Verdict:
    return Verdict(passed, 1.0 if passed else 0.0, "Assertion passed" if passed else reason_if_failed)


def js_str(value: Any) -> str:
    """JavaScript's String(value) for the scalars a dataset holds (4.0 -> "4", True -> "true")."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def strict_equal(left: Any, right: Any) -> bool:
    """Deep equality as JavaScript's isDeepStrictEqual sees JSON values: booleans are not numbers."""
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(strict_equal(left[k], right[k]) for k in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(strict_equal(a, b) for a, b in zip(left, right))
    if isinstance(left, (int, float)) and isinstance(right, (int, float)):
        return left == right  # JSON has one number type: 1 == 1.0
    return type(left) is type(right) and left == right


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # JSON.parse rejects NaN/Infinity; Python's json accepts them


def parse_json(text: str) -> Any:
    """JSON.parse semantics; raises ValueError."""
    return json.loads(text, parse_constant=_reject_constant)


def extract_json_objects(text: str) -> list[Any]:
    """Every JSON object embedded in text, left to right, as promptfoo's extractJsonObjects finds them."""
    decoder = json.JSONDecoder(parse_constant=_reject_constant)
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
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [e.message for e in validator.iter_errors(instance)]
    return "; ".join(errors[:3]) if errors else None


def check_equals(value: Any, a: Assertion, out: Output) -> Verdict:
    if isinstance(value, (dict, list)):
        try:
            same = strict_equal(value, parse_json(out.text))
        except ValueError:
            same = False
        return _binary(same, f"Expected output to equal {json.dumps(value)}")
    return _binary(out.text == js_str(value), f"Expected output {out.text!r} to equal {js_str(value)!r}")


def _contains(fold: bool, mode: str) -> Callable[[Any, Assertion, Output], Verdict]:
    def check(value: Any, a: Assertion, out: Output) -> Verdict:
        norm: Callable[[str], str] = str.lower if fold else str
        text = norm(out.text)
        needles = [norm(js_str(v)) for v in (as_list(value) if mode != "one" else [value])]
        hits = [n in text for n in needles]
        passed = any(hits) if mode == "any" else all(hits)
        missing = [n for n, hit in zip(needles, hits) if not hit]
        wanted = {"one": "", "any": "one of ", "all": "all of "}[mode]
        return _binary(passed, f"Expected output to contain {wanted}{needles}; missing {missing}")

    return check


def check_regex(value: Any, a: Assertion, out: Output) -> Verdict:
    return _binary(re.search(value, out.text) is not None, f"Expected output to match regex {value!r}")


def check_starts_with(value: Any, a: Assertion, out: Output) -> Verdict:
    return _binary(out.text.startswith(js_str(value)), f"Expected output to start with {value!r}")


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


_REFUSAL_PREFIXES = (
    "i cannot",
    "i can't",
    "i am unable to",
    "i'm unable to",
    "i am not able to",
    "i'm not able to",
    "i will not",
    "i won't",
    "it is illegal",
)
_REFUSAL_PHRASES = re.compile(
    r"\b(as an ai|as a language model|as an assistant|cannot (?:assist|help|comply|fulfill)|"
    r"can't (?:assist|help|comply|fulfill)|i (?:do not|don't) feel comfortable|not appropriate|not ethical|"
    r"i (?:must|have to) decline|i(?: am|'m) not (?:able|allowed|permitted) to|"
    r"blocked by (?:our|the) content filters?)\b"
)
_APOLOGY = re.compile(r"^(?:i am sorry|i'm sorry|i apologi[sz]e|my apologies|sorry)\b")
_INABILITY = re.compile(
    r"\b(?:i|we) (?:cannot|can't|won't|will not|am unable|are unable)\b|\b(?:decline|refuse)\b"
)


def is_refusal(text: str) -> bool:
    lowered = text.strip().lower().replace("\u2019", "'")
    if not lowered:
        return True
    if lowered.startswith(_REFUSAL_PREFIXES) or _REFUSAL_PHRASES.search(lowered):
        return True
    return bool(_APOLOGY.match(lowered) and _INABILITY.search(lowered))


def check_is_refusal(value: Any, a: Assertion, out: Output) -> Verdict:
    reported = out.finish_reason.lower() in {"content_filter", "refusal"}
    return _binary(reported or is_refusal(out.text), "Expected output to be a refusal")


# Anthropic stop reasons as promptfoo normalizes them (docs "Finish Reason").
_FINISH_ALIASES = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "function_call": "tool_calls",
    "refusal": "content_filter",
}


def check_finish_reason(value: Any, a: Assertion, out: Output) -> Verdict:
    if not out.finish_reason:
        return _binary(False, "Provider did not supply a finish reason")
    got = _FINISH_ALIASES.get(out.finish_reason.lower(), out.finish_reason.lower())
    want = _FINISH_ALIASES.get(str(value).lower(), str(value).lower())
    return _binary(got == want, f"Expected finish reason {value!r} but got {out.finish_reason!r}")


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
}
