"""JavaScript ``new RegExp(pattern).test(text)`` (no flags), on the ``regress`` engine (ECMA-262, Annex B).

``regress`` implements ECMAScript's grammar and matching (named groups, lookbehind, ASCII ``\\w``/``\\d``,
Unicode ``\\s``, ``$`` only at the very end, Annex B's lenient escapes), but it matches code points while a
RegExp without the ``u`` flag matches UTF-16 code units: ``/^.$/`` rejects an emoji (two units) and
``/^.{0,10}$/`` counts it twice. To keep that, both the text and the pattern are rewritten so that every
UTF-16 surrogate becomes one private character: an astral character becomes two of them, a lone surrogate
(or a ``\\uD83D`` escape in the pattern) one. The private characters are the last 2,048 code points of
plane 16, which themselves are astral and so never reach the engine unmapped.
"""

from __future__ import annotations

import re
from functools import lru_cache

import regress

_SURROGATE_BASE = 0xD800
_STANDIN_BASE = 0x10F800  # U+10F800..U+10FFFF stand for the 2,048 surrogate code units U+D800..U+DFFF
_NEEDS_MAPPING = re.compile("[\ud800-\udfff\U00010000-\U0010ffff]")
_SURROGATE_ESCAPE = re.compile(r"\\(\\|u[dD][89a-fA-F][0-9a-fA-F]{2})")


def _standin(unit: int) -> str:
    return chr(_STANDIN_BASE + unit - _SURROGATE_BASE)


def _code_units(match: re.Match[str]) -> str:
    point = ord(match.group())
    if point < 0x10000:  # a lone surrogate already is one code unit
        return _standin(point)
    point -= 0x10000
    return _standin(0xD800 + (point >> 10)) + _standin(0xDC00 + (point & 0x3FF))


def as_code_units(text: str) -> str:
    """``text`` with each UTF-16 surrogate code unit as one character (BMP text is returned as is)."""
    return _NEEDS_MAPPING.sub(_code_units, text)


def _pattern_units(pattern: str) -> str:
    def escape(match: re.Match[str]) -> str:
        body = match.group(1)
        return match.group() if body == "\\" else _standin(int(body[1:], 16))

    # Literal characters first: the stand-ins the escapes become are astral and must not be mapped again.
    return _SURROGATE_ESCAPE.sub(escape, as_code_units(pattern))


class JSRegexError(ValueError):
    """The pattern is not a valid JavaScript regular expression (``new RegExp`` would throw)."""


@lru_cache(maxsize=512)
def compile_js(pattern: str, flags: str = "") -> regress.Regex:
    """Compile ``pattern`` as ``new RegExp(pattern, flags)`` does; raises :class:`JSRegexError`.

    Without ``u`` in ``flags`` the pattern works on UTF-16 code units (give the text through
    :func:`as_code_units`, as :func:`js_test` does); with ``u`` it works on code points.
    """
    source = pattern if "u" in flags else _pattern_units(pattern)
    try:
        return regress.Regex(source, flags or None)
    except regress.RegressError as exc:
        raise JSRegexError(f"invalid JavaScript regular expression /{pattern}/{flags}: {exc}") from None


def js_test(pattern: str, text: str, flags: str = "") -> bool:
    """``new RegExp(pattern, flags).test(text)`` (``flags`` without ``g``/``y``: no lastIndex state)."""
    subject = text if "u" in flags else as_code_units(text)
    return compile_js(pattern, flags).find(subject) is not None
