"""Log set-up for the command line: readable lines through rich, or one JSON object a line.

JSON (``--log-format json``) is for log collectors (Loki, CloudWatch, Elasticsearch...): each
record is one line with ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``pid``,
``message``, ``exception`` when there is one, and any ``extra=`` fields the code attached
(the worker's start line carries its ``settings``).
"""

from __future__ import annotations

import logging
import sys
from datetime import datetime, timezone
from typing import Any

import msgspec

from .errors import ConfigurationError

FORMATS = ("text", "json")
#: Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (a traceback is a field, not more lines)."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in doc:
                doc[key] = value
        # Whatever an extra holds, the line is written: what JSON cannot hold becomes repr().
        return msgspec.json.encode(doc, enc_hook=repr).decode()


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Send every log record to stderr, as text (rich on a terminal) or as JSON lines."""
    if fmt not in FORMATS:
        raise ConfigurationError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    handler: logging.Handler
    if fmt == "json":
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
    elif sys.stderr.isatty():
        from rich.logging import RichHandler

        handler = RichHandler(show_path=False, rich_tracebacks=True, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler()
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
