"""JSON Schema validation configured like promptfoo's ajv: ``new Ajv({strictSchema: true})`` + ajv-formats.

- Dialect: draft-07 unless the schema's ``$schema`` names another one the ``jsonschema`` package knows
  (promptfoo's ajv refuses any other ``$schema``; pairshift honours it, a documented departure).
- Strict mode, as ajv: a draft-07 schema with a keyword draft-07 does not define, or a ``format`` that
  ajv-formats does not define, is refused (ajv throws at compile, so promptfoo fails every output).
- ``format`` is asserted, with ajv-formats' "full" definitions (:data:`FORMATS`); the few it defines that
  pairshift does not reproduce (``url``, ``uri-template``, ``json-pointer-uri-fragment``) are refused.
- ``pattern`` and ``patternProperties`` are JavaScript regular expressions with the ``u`` flag, as ajv
  compiles them (not Python's ``re``).
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Iterator
from typing import Any

import jsonschema
from jsonschema import Draft7Validator, FormatChecker
from jsonschema.exceptions import ValidationError
from rfc3986_validator import validate_rfc3986

from pairshift.jscompat.regex import JSRegexError, compile_js, js_test
from pairshift.jscompat.values import JS_WHITESPACE


class SchemaProblem(ValueError):
    """A schema promptfoo's ajv would not compile, or that pairshift cannot check faithfully."""


_DRAFT7_KEYWORDS = frozenset(
    "$id $schema $ref $comment title description default readOnly writeOnly examples multipleOf maximum "
    "exclusiveMaximum minimum exclusiveMinimum maxLength minLength pattern additionalItems items maxItems "
    "minItems uniqueItems contains maxProperties minProperties required additionalProperties definitions "
    "properties patternProperties dependencies propertyNames const enum type format contentMediaType "
    "contentEncoding if then else allOf anyOf oneOf not".split()
)
_SCHEMA_MAPS = ("properties", "patternProperties", "definitions", "dependencies")
_SCHEMA_ONE = ("additionalItems", "additionalProperties", "contains", "propertyNames", "if", "then", "else")
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf")

# ---- ajv-formats "full" formats, each reproduced from its definition --------------------------------

_DATE = re.compile(r"(\d\d\d\d)-(\d\d)-(\d\d)")
_DAYS = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_TIME = re.compile(r"(\d\d):(\d\d):(\d\d(?:\.\d+)?)(z|([+-])(\d\d)(?::?(\d\d))?)?", re.IGNORECASE)
_DATE_TIME_SEPARATOR = re.compile(f"[tT{re.escape(JS_WHITESPACE)}]")
_DURATION = re.compile(r"P(?!$)(?:(\d+Y)?(\d+M)?(\d+D)?(T(?=\d)(\d+H)?(\d+M)?(\d+S)?)?|(\d+W)?)")
_ATEXT = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+"
_EMAIL = re.compile(
    rf"{_ATEXT}(?:\.{_ATEXT})*@(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z0-9](?:[a-z0-9-]*[a-z0-9])?",
    re.IGNORECASE,
)
_HOSTNAME = re.compile(
    r"(?=.{1,253}\.?$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[-0-9a-z]{0,61}[0-9a-z])?)*\.?",
    re.IGNORECASE,
)
_IPV4 = re.compile(r"(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)")
_UUID = re.compile(r"(?:urn:uuid:)?[0-9a-f]{8}-(?:[0-9a-f]{4}-){3}[0-9a-f]{12}", re.IGNORECASE)
_JSON_POINTER = re.compile(r"(?:/(?:[^~/]|~0|~1)*)*", re.DOTALL)
_RELATIVE_JSON_POINTER = re.compile(r"(?:0|[1-9][0-9]*)(?:#|(?:/(?:[^~/]|~0|~1)*)*)", re.DOTALL)
_BASE64_LINE = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _date(text: str) -> bool:
    m = _DATE.fullmatch(text)
    if not m:
        return False
    year, month, day = (int(g) for g in m.groups())
    return 1 <= month <= 12 and 1 <= day <= (29 if month == 2 and _leap(year) else _DAYS[month])


def _time(strict_zone: bool) -> Callable[[str], bool]:
    def check(text: str) -> bool:
        m = _TIME.fullmatch(text)
        if not m:
            return False
        hour, minute, second = int(m[1]), int(m[2]), float(m[3])
        sign = -1 if m[5] == "-" else 1
        zone_h, zone_m = int(m[6] or 0), int(m[7] or 0)
        if zone_h > 23 or zone_m > 59 or (strict_zone and not m[4]):
            return False
        if hour <= 23 and minute <= 59 and second < 60:
            return True
        # A leap second is only valid at 23:59:60 UTC.
        utc_min = minute - zone_m * sign
        utc_hour = hour - zone_h * sign - (1 if utc_min < 0 else 0)
        return utc_hour in (23, -1) and utc_min in (59, -1) and second < 61

    return check


def _date_time(strict_zone: bool) -> Callable[[str], bool]:
    time = _time(strict_zone)

    def check(text: str) -> bool:
        parts = _DATE_TIME_SEPARATOR.split(text)
        return len(parts) == 2 and _date(parts[0]) and time(parts[1])

    return check


def _uri(text: str) -> bool:
    return ("/" in text or ":" in text) and bool(validate_rfc3986(text, rule="URI"))


def _ipv6(text: str) -> bool:
    if "%" in text:  # zone ids are outside the format
        return False
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _regex_format(text: str) -> bool:
    if re.search(r"[^\\]\\Z", text):
        return False
    try:
        compile_js(text, "u")
    except JSRegexError:
        return False
    return True


def _is_integer(value: float) -> bool:
    return isinstance(value, int) or math.isfinite(value) and value.is_integer()


_STRING_FORMATS: dict[str, Callable[[str], bool]] = {
    "date": _date,
    "time": _time(True),
    "date-time": _date_time(True),
    "iso-time": _time(False),
    "iso-date-time": _date_time(False),
    "duration": lambda s: _DURATION.fullmatch(s) is not None,
    "uri": _uri,
    "uri-reference": lambda s: bool(validate_rfc3986(s, rule="URI_reference")),
    "email": lambda s: _EMAIL.fullmatch(s) is not None,
    "hostname": lambda s: _HOSTNAME.fullmatch(s) is not None,
    "ipv4": lambda s: _IPV4.fullmatch(s) is not None,
    "ipv6": _ipv6,
    "regex": _regex_format,
    "uuid": lambda s: _UUID.fullmatch(s) is not None,
    "json-pointer": lambda s: _JSON_POINTER.fullmatch(s) is not None,
    "relative-json-pointer": lambda s: _RELATIVE_JSON_POINTER.fullmatch(s) is not None,
    "byte": lambda s: js_test(_BASE64_LINE, s, "m"),
    "password": lambda s: True,
    "binary": lambda s: True,
}
_NUMBER_FORMATS: dict[str, Callable[[float], bool]] = {
    "int32": lambda n: _is_integer(n) and -(2**31) <= n <= 2**31 - 1,
    "int64": _is_integer,
    "float": lambda n: True,
    "double": lambda n: True,
}
FORMATS = frozenset(_STRING_FORMATS) | frozenset(_NUMBER_FORMATS)
_UNREPRODUCED_FORMATS = frozenset({"url", "uri-template", "json-pointer-uri-fragment"})


def _format_checker() -> FormatChecker:
    checker = FormatChecker(formats=())
    for name, check in _STRING_FORMATS.items():
        checker.checks(name)(lambda v, check=check: not isinstance(v, str) or check(v))
    for name, check in _NUMBER_FORMATS.items():
        checker.checks(name)(
            lambda v, check=check: isinstance(v, bool) or not isinstance(v, (int, float)) or check(v)
        )
    return checker


_FORMAT_CHECKER = _format_checker()

# ---- pattern keywords with JavaScript semantics --------------------------------------------------


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not js_test(pattern, instance, "u"):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(
    validator: Any, patterns: dict, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if js_test(pattern, key, "u"):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _with_js_patterns(cls: type) -> type:
    return jsonschema.validators.extend(cls, {"pattern": _pattern, "patternProperties": _pattern_properties})


# ---- compiling -----------------------------------------------------------------------------------


def _subschemas(schema: dict[str, Any]) -> Iterator[Any]:
    for key in _SCHEMA_MAPS:
        if isinstance(schema.get(key), dict):
            yield from (v for v in schema[key].values() if isinstance(v, (dict, bool)))
    for key in _SCHEMA_ONE + ("not",):
        if key in schema:
            yield schema[key]
    items = schema.get("items")
    yield from items if isinstance(items, list) else [items] if items is not None else []
    for key in _SCHEMA_LISTS:
        yield from schema.get(key) or []


def _strict_problems(schema: Any, draft7: bool) -> Iterator[str]:
    if not isinstance(schema, dict):
        return
    if draft7:
        for key in schema:
            if key not in _DRAFT7_KEYWORDS:
                yield f"unknown keyword {key!r} (promptfoo's ajv refuses it in strict mode)"
    fmt = schema.get("format")
    if isinstance(fmt, str) and fmt in _UNREPRODUCED_FORMATS:
        yield f"format {fmt!r} is not supported by pairshift"
    elif isinstance(fmt, str) and fmt not in FORMATS:
        yield f"unknown format {fmt!r} (ajv-formats does not define it)"
    patterns = [schema["pattern"]] if isinstance(schema.get("pattern"), str) else []
    patterns += list(schema["patternProperties"]) if isinstance(schema.get("patternProperties"), dict) else []
    for pattern in patterns:
        try:
            compile_js(pattern, "u")
        except JSRegexError as exc:
            yield str(exc)
    for sub in _subschemas(schema):
        yield from _strict_problems(sub, draft7)


def compile_schema(schema: Any) -> Any:
    """A validator for ``schema`` (a mapping or a boolean), or :class:`SchemaProblem` naming what is wrong."""
    if not isinstance(schema, (dict, bool)):
        raise SchemaProblem("a JSON Schema must be an object or a boolean")
    declared = schema.get("$schema") if isinstance(schema, dict) else None
    cls = Draft7Validator
    if declared is not None:
        cls = jsonschema.validators.validator_for(schema, default=None)
        if cls is None:
            raise SchemaProblem(f"unknown $schema {declared!r}")
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise SchemaProblem(f"invalid JSON Schema: {exc.message}") from None
    problems = list(_strict_problems(schema, cls is Draft7Validator))
    if problems:
        raise SchemaProblem(problems[0])
    return _with_js_patterns(cls)(schema, format_checker=_FORMAT_CHECKER)


def schema_errors(validator: Any, instance: Any) -> str | None:
    """The first few validation errors as one line, or None when ``instance`` conforms."""
    errors = [e.message for e in validator.iter_errors(instance)]
    return "; ".join(errors[:3]) if errors else None
