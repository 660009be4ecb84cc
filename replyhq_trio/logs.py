"""Logging: readable lines for a console, or one JSON object per line.

Log calls pass what a line is about as ``extra`` context (:data:`CONTEXT`): the
connection, app, device, conversation, namespace, the reason. The JSON format gives each
its own key; the console format appends them as ``key=value``. Secrets never reach a
line: the values of ``api_key``, ``admin_token``, passwords, bearer tokens and the
password of a URL are replaced with ``***`` in everything written, the exception text
included, whatever logged them.
"""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime

import orjson

__all__ = ["CONTEXT", "configure_logging", "redact"]

#: The context keys a log line may carry, in the order they are shown.
CONTEXT = (
    "namespace",
    "connection_id",
    "app_id",
    "device_id",
    "conversation_id",
    "transport",
    "reason",
    "code",
    "limit",
    "retry_after_ms",
    "address",
    "is_online",
    "active_connections",
)

_SECRET = re.compile(
    r"""(?ix)
    (
        ["']?(?:api[_-]?key|admin[_-]?token|password|passwd|secret|token|x-api-key)["']?
        \s*[:=]\s*
        (?:b?["'])?
    )
    [^"'\s,;&}\])]+
    """
)
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"',;]+")
_URL_PASSWORD = re.compile(r"(?i)([a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s/]+(@)")


def redact(text: str) -> str:
    """``text`` with the values of credentials replaced with ``***``."""
    if not any(mark in text for mark in ("=", ":", "earer")):
        return text
    text = _SECRET.sub(r"\1***", text)
    text = _BEARER.sub(r"\1***", text)
    return _URL_PASSWORD.sub(r"\1***\2", text)


def _context(record: logging.LogRecord) -> dict[str, object]:
    values = record.__dict__
    return {
        key: redact(value) if isinstance(value, str) else value
        for key in CONTEXT
        if (value := values.get(key)) is not None
    }


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        # Each text is redacted before encoding: JSON's escaped quotes would hide a
        # key's value from the patterns.
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
            **_context(record),
        }
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return orjson.dumps(entry, default=str).decode()


class _ConsoleFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = _context(record)
        if context:
            line += "".join(f" {key}={value}" for key, value in context.items())
        return redact(line)


def configure_logging(level: str = "info", fmt: str = "console") -> None:
    """Send the server's logs to stderr at ``level`` in ``fmt`` (console or json)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _ConsoleFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
