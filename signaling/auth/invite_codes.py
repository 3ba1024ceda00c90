"""Short invite codes: what a ``/j/<code>`` link carries instead of a ~450-character token.

Twelve symbols of Crockford's base32 in lower case, grouped ``xxxx-xxxx-xxxx``: 60 random bits,
no U, and on input I/L read as 1 and O as 0, so a code read aloud or retyped from a phone still
works. Only the SHA-256 of the normalised code is stored (signaling/db/invites.py).
"""

from __future__ import annotations

import hashlib
import re
import secrets

ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
SYMBOLS = 12
GROUP = 4
BITS = SYMBOLS * 5
_CONFUSABLE = str.maketrans({"o": "0", "i": "1", "l": "1", "-": None, " ": None})
_IN_PATH = re.compile(r"(/j/)[^\s\"?#]+")
_NORMALISED = re.compile(f"[{ALPHABET}]{{{SYMBOLS}}}")
MAX_INPUT_LENGTH = 64
"Longer input is refused before it is normalised: a code with every separator is 17 characters."


def new_code() -> str:
    """A fresh code, grouped for reading: ``7kq2-mx9d-w4hr``."""
    symbols = "".join(secrets.choice(ALPHABET) for _ in range(SYMBOLS))
    return "-".join(symbols[i : i + GROUP] for i in range(0, SYMBOLS, GROUP))


def normalise(text: str) -> str | None:
    """The code's twelve symbols, or None if ``text`` cannot be a code."""
    if not isinstance(text, str) or len(text) > MAX_INPUT_LENGTH:
        return None
    symbols = text.strip().lower().translate(_CONFUSABLE)
    return symbols if _NORMALISED.fullmatch(symbols) else None


def code_hash(symbols: str) -> str:
    """What the database keeps: a stolen file does not open any link."""
    return hashlib.sha256(symbols.encode("ascii")).hexdigest()


def redact_invite_code(text: str) -> str:
    """``text`` (a path or a log line) with every ``/j/<code>`` blanked: codes are never logged."""
    return _IN_PATH.sub(r"\1<redacted>", text) if "/j/" in text else text
