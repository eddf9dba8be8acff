"""Log output for ``pushwire serve``: plain text lines or JSON lines.

The server logs through the standard ``logging`` module (logger ``pushwire.server``); one
line per connection opened and closed carries the connection id, the peer address and the
close code as record attributes (``conn``, ``peer``, ``code``), which the JSON format
turns into fields so that log pipelines need no parsing; so is the effective configuration
logged at start (``config``).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import TextIO

#: Record attributes copied into JSON lines when present.
FIELDS = ("conn", "peer", "code", "config")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, the FIELDS present, exc."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in FIELDS:
            if hasattr(record, name):
                line[name] = getattr(record, name)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(
    fmt: str = "text", level: str | int = "INFO", stream: TextIO | None = None
) -> None:
    """Send the ``pushwire`` loggers to ``stream`` (stderr) in ``fmt`` ("text" or "json")."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("pushwire")
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper() if isinstance(level, str) else level)
    logger.propagate = False
