"""JSON from outside (REST bodies, WebSocket messages): parsed only if it is plain, shallow JSON.

``json.loads`` recurses once per nesting level, so ``[[[[...]]]]`` a thousand deep raised
``RecursionError`` (a 500) and, near the stack's end, could fail anywhere. The nesting depth is
counted first, outside strings, in one regular-expression pass; NaN and Infinity (not JSON) and
numbers past Python's digit limit are refused too. Nothing the protocol sends is deeper than
``MAX_DEPTH``. ``holds_lone_surrogate`` finds ``"\\ud800"``: valid JSON, but no Unicode text
(SQLite and PyJWT fail on it); REST bodies refuse it, WebSocket messages check their own fields.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_DEPTH = 16
"Deepest nesting of objects and arrays accepted (a mark's points are 3 levels deep)."

_STRING = re.compile(r'"(?:[^"\\]++|\\.?)*+"?', re.DOTALL)
"""A string, possessively: no backtracking, so an unterminated ``"\\"\\"\\"…`` costs one pass
(with plain quantifiers every quote rescanned to the end: 64 KiB took 41 s on the loop)."""
_BRACKET = re.compile(r"[\[\]{}]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class JsonInputError(ValueError):
    """Not acceptable JSON; the reason never quotes the input."""


def load_json(raw: str | bytes) -> Any:
    """The parsed value, or ``JsonInputError`` saying what is wrong with it."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise JsonInputError("not JSON: not UTF-8 text") from None
    if nesting_depth(raw) > MAX_DEPTH:
        raise JsonInputError(f"not JSON we accept: nested deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise JsonInputError(f"not JSON: {exc.msg} at character {exc.pos}") from None
    except (ValueError, RecursionError):
        # NaN/Infinity, integers beyond Python's digit limit.
        raise JsonInputError("not JSON: unsupported number") from None


def holds_lone_surrogate(value: Any) -> bool:
    """Whether a parsed value has a key or string with half a surrogate pair in it."""
    return bool(_LONE_SURROGATE.search(json.dumps(value, ensure_ascii=False)))


def nesting_depth(text: str) -> int:
    """How deep ``[`` and ``{`` nest outside strings (unbalanced input counts what it opens)."""
    depth = deepest = 0
    for bracket in _BRACKET.finditer(_STRING.sub("", text)):
        if bracket.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
