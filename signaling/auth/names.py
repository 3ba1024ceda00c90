"""Display names: who a participant is, as the coordinator or the person typed it.

A name is personal data. It travels in the token (``name`` claim), the invites table, presence,
chat, marks and the audit trail, and never into a log line, a TURN username or an id: those use
the random identity (``clinic-1a2b3c4d``). Every way in — REST, CLI, the WebSocket ``auth`` —
checks it with ``display_name``, whose reasons never quote the value.
"""

from __future__ import annotations

import argparse
import unicodedata

MAX_NAME_LENGTH = 64
_REFUSED_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
"Control characters, lone surrogates and line/paragraph separators: a name is one plain line."


class InvalidName(ValueError):
    """The name cannot be used; the message says why (without quoting it)."""


def display_name(value: object, what: str = "name") -> str:
    """``value`` trimmed, or ``InvalidName``: a string, not empty, at most 64 characters, no
    control characters."""
    if not isinstance(value, str):
        raise InvalidName(f"{what} must be text")
    name = value.strip()
    if not name:
        raise InvalidName(f"{what} is empty")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidName(f"{what} is longer than {MAX_NAME_LENGTH} characters")
    if any(unicodedata.category(c) in _REFUSED_CATEGORIES for c in name):
        raise InvalidName(f"{what} contains control characters (such as a line break or tab)")
    return name


def name_argument(text: str) -> str:
    """``display_name`` for argparse (``--clinic-name``...): a usage error saying what is wrong."""
    try:
        return display_name(text)
    except InvalidName as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
