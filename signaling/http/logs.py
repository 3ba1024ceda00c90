"""Log hygiene for everything the outside world can put into a log line.

* ``loggable(text)``: a path, header or any other client-controlled text as one safe line —
  control characters (``%0a`` decodes to a newline that would forge a second line), lone
  surrogates (undecodable bytes) and line separators escaped; tokens redacted: ``token=``,
  ``access_token=``, ``jwt=``, ``t=`` (media tokens) in a query, anything shaped like a JSON Web
  Token wherever it is, and short links' codes (``/j/<code>``).
* ``install_log_hygiene()``: filters on aiohttp's loggers. ``aiohttp.access`` lines (and the
  values they carry as ``extra`` for structured formatters) pass through ``loggable``.
  ``aiohttp.server`` records with a traceback become one line: a request the HTTP parser refused
  (bad request line, bad header, line too long) is a ``WARNING`` naming the refusal (or stays
  ``DEBUG``, where aiohttp files a first request that is no HTTP at all, e.g. TLS); anything
  else stays an ``ERROR`` naming the exception type and where it was raised. A traceback's
  values (headers, bodies) may hold tokens or patient data, so none is written.
"""

from __future__ import annotations

import logging
import re
import traceback
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError

from signaling.auth.invite_codes import redact_invite_code

REDACTED = "<redacted>"
TOKEN_QUERY_NAMES = ("token", "access_token", "jwt", "t")
_TOKEN_IN_QUERY = re.compile(r"([?&](?:" + "|".join(TOKEN_QUERY_NAMES) + r")=)[^&\s\"]*", re.I)
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
}


def loggable(text: str) -> str:
    """``text`` as one log line with no token in it (see the module doc)."""
    text = _UNSAFE.sub(_escape, text)
    text = _JWT.sub(REDACTED, _TOKEN_IN_QUERY.sub(r"\1" + REDACTED, text))
    return redact_invite_code(text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


class _AccessLogHygiene(logging.Filter):
    """Every access log line, and each value it carries as ``extra``, through ``loggable``."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        record.msg, record.args = loggable(message), None
        for key, value in list(vars(record).items()):
            if key not in _RECORD_FIELDS:
                setattr(record, key, _clean(value))
        return True


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return loggable(value)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


class _OneLineServerErrors(logging.Filter):
    """aiohttp's ``Error handling request`` with a traceback → one line without one."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.exc_info or record.exc_info[1] is None:
            return True
        exc = record.exc_info[1]
        if isinstance(exc, HttpProcessingError):
            if record.levelno > logging.WARNING:  # aiohttp logs TLS-on-HTTP noise at DEBUG
                record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg = "HTTP request refused by the parser (%d %s): %s"
            first_line = next(iter(str(exc.message).splitlines()), "")
            record.args = (exc.code, type(exc).__name__, loggable(first_line))
        else:
            record.msg = "%s: %s at %s"
            record.args = (loggable(record.getMessage()), type(exc).__name__, raised_at(exc))
        record.exc_info, record.exc_text = None, None
        return True


def raised_at(exc: BaseException) -> str:
    """``file:line`` where ``exc`` was raised: enough to find the bug, no values in it."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "?"
    last = frames[-1]
    return f"{last.filename.rpartition('/')[2]}:{last.lineno}"


_ACCESS = _AccessLogHygiene()
_SERVER = _OneLineServerErrors()


def install_log_hygiene() -> None:
    """Idempotent: every app made in this process shares the two filters."""
    for name, log_filter in (("aiohttp.access", _ACCESS), ("aiohttp.server", _SERVER)):
        logger = logging.getLogger(name)
        if log_filter not in logger.filters:
            logger.addFilter(log_filter)
