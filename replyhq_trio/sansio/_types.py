"""Type aliases shared by the sans-IO modules."""

from __future__ import annotations

from typing import Any, TypeAlias

__all__ = ["Frame", "JSONValue"]

#: One Engine.IO packet as a transport carries it: ``str`` for a text packet
#: (``"4hello"``), ``bytes`` for a binary message. A WebSocket frame carries one;
#: a long-polling body carries several (see :func:`decode_payload`).
Frame: TypeAlias = str | bytes

#: A decoded JSON value; Socket.IO payloads may also hold ``bytes`` (attachments).
JSONValue: TypeAlias = Any
