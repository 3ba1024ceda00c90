"""How ``endolink serve`` writes its log: readable lines (the default) or one JSON object per
line (``ENDOLINK_LOG_FORMAT=json``) for a log shipper. The JSON form carries the same message
plus the record's structured extras; ``json.dumps`` escapes every control character, so a value
cannot start a forged line. What is never logged (tokens, names) is docs/operations.md's list.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

_STANDARD = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}
"Attributes every LogRecord has: anything else was passed as ``extra=`` and is kept..."
_RAW_REQUEST = frozenset({"first_request_line", "request_header", "response_header"})
"""...but for aiohttp's access-log extras holding the raw request: the message carries the same
text after the redaction filters (query-string tokens, short-link codes) ran on it."""


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", ...extras, "exception"?}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in _RAW_REQUEST and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)  # ASCII: no raw line or paragraph separator


def configure_logging(log_format: str) -> None:
    """The root handler of ``serve`` (stderr), in ``text`` or ``json``."""
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT, datefmt="%H:%M:%S"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
