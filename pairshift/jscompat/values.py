"""JavaScript's conversions of plain values, where promptfoo's verdicts depend on them.

- :func:`js_string` is ``String(value)``: ``String(1e-7)`` is ``"1e-7"``, ``String(4.0)`` is ``"4"``,
  ``String(-0)`` is ``"0"``, ``String(1e21)`` is ``"1e+21"`` (ECMA-262 Number::toString, whose shortest
  round-trip digits are the ones Python's ``repr`` gives);
- :func:`js_trim` and :data:`JS_WHITESPACE` are ``String.prototype.trim`` and ``\\s`` (Unicode spaces and
  line terminators, U+FEFF included; not Python's ``str.strip`` set, which adds U+001C..U+001F);
- :func:`parse_json` is ``JSON.parse`` (no ``NaN``/``Infinity``); :func:`js_number` is ``Number(value)``;
- :func:`split_comma_separated` is promptfoo's reading of a comma-separated assertion value.

Two deliberate departures, both toward what a dataset author wrote: integers beyond 2**53 keep all their
digits (JavaScript rounds them to the nearest double) and ``-0`` equals ``0`` in deep equality.
"""

from __future__ import annotations

import json
import math
import re
from decimal import Decimal
from typing import Any

# ECMA-262 WhiteSpace (TAB VT FF SP NBSP ZWNBSP and category Zs) plus LineTerminator (LF CR LS PS).
JS_WHITESPACE = (
    "\t\n\x0b\x0c\r \xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000\ufeff"
)


def js_trim(text: str) -> str:
    """``text.trim()``."""
    return text.strip(JS_WHITESPACE)


def _number_string(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    # repr gives the shortest digits that round-trip, which is what Number::toString starts from.
    exact = Decimal(repr(abs(value))).normalize().as_tuple()
    digits = "".join(map(str, exact.digits))
    k = len(digits)
    n = k + int(exact.exponent)  # value = 0.<digits> * 10**n
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * -n + digits
    mark = "+" if n - 1 >= 0 else "-"
    body = digits if k == 1 else f"{digits[0]}.{digits[1:]}"
    return f"{sign}{body}e{mark}{abs(n - 1)}"


def js_string(value: Any) -> str:
    """``String(value)`` for values a dataset holds (YAML/JSON scalars, lists, mappings)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)  # all digits, on purpose (see the module docstring)
    if isinstance(value, float):
        return _number_string(value)
    if isinstance(value, list):
        return ",".join("" if item is None else js_string(item) for item in value)
    if isinstance(value, dict):
        return "[object Object]"
    return str(value)


_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_RADIX = re.compile(r"0([xXoObB])([0-9a-fA-F]+)")


def js_number(value: Any) -> float:
    """``Number(value)`` for JSON values (NaN when JavaScript gives NaN)."""
    if value is None or value is False:
        return 0.0
    if value is True:
        return 1.0
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, list):
        return js_number(js_string(value)) if len(value) <= 1 else math.nan
    if not isinstance(value, str):
        return math.nan
    text = js_trim(value)
    if not text:
        return 0.0
    if text.lstrip("+-") == "Infinity":
        return -math.inf if text.startswith("-") else math.inf
    radix = _RADIX.fullmatch(text)
    if radix:
        base = {"x": 16, "o": 8, "b": 2}[radix.group(1).lower()]
        try:
            return float(int(radix.group(2), base))
        except ValueError:
            return math.nan
    return float(text) if _DECIMAL.fullmatch(text) else math.nan


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(text: str) -> Any:
    """``JSON.parse(text)``; raises ValueError (Python's json alone would accept NaN and Infinity)."""
    return json.loads(text, parse_constant=_reject_constant)


def strict_equal(left: Any, right: Any) -> bool:
    """``util.isDeepStrictEqual`` on JSON values: booleans are not numbers, ``1`` equals ``1.0``."""
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(strict_equal(left[k], right[k]) for k in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(strict_equal(a, b) for a, b in zip(left, right, strict=True))
    if isinstance(left, (int, float)) and isinstance(right, (int, float)):
        return left == right
    return type(left) is type(right) and left == right


def _quoted_field(value: str, start: int) -> tuple[str, int]:
    """A ``"``-quoted field from ``start`` (the quote): ``\\"`` ``\\\\`` and ``""`` are escapes."""
    out, i = [], start + 1
    while i < len(value):
        pair = value[i : i + 2]
        if pair in ('\\"', "\\\\", '""'):
            out.append(pair[1])
            i += 2
        elif value[i] == '"':
            return "".join(out), i + 1
        else:
            out.append(value[i])
            i += 1
    raise ValueError("unterminated quoted field in a comma-separated value")


def split_comma_separated(value: str) -> list[str]:
    """promptfoo's comma-separated assertion value (contains-any and friends, CSV cells).

    Items are trimmed; empty items between commas are dropped; a ``"``-quoted item keeps its commas
    and inner spaces and may be empty; after a quoted item only spaces may come before the next comma.
    """
    items: list[str] = []
    i = 0
    while i < len(value):
        while i < len(value) and (value[i] in JS_WHITESPACE or value[i] == ","):
            i += 1
        if i >= len(value):
            break
        if value[i] == '"':
            item, i = _quoted_field(value, i)
            while i < len(value) and value[i] in JS_WHITESPACE:
                i += 1
            if i < len(value) and value[i] != ",":
                raise ValueError("expected a comma after a quoted field in a comma-separated value")
        else:
            end = value.find(",", i)
            end = len(value) if end == -1 else end
            item, i = js_trim(value[i:end]), end
        items.append(item)
    return items
