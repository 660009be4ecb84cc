"""The limits and timers of one Engine.IO / Socket.IO connection."""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["ProtocolConfig"]


def _positive(_instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be positive, got {value!r}")


@attrs.frozen(kw_only=True)
class ProtocolConfig:
    """Every limit and timer the protocol core enforces.

    Each limit is checked before more input is buffered, and each has a test vector
    in ``protocol/vectors/``. Times are in seconds; the handshake advertises the
    intervals in milliseconds.

    Attributes:
        ping_interval: Seconds between the server's pings (Engine.IO ``pingInterval``).
        ping_timeout: Seconds the client has to answer a ping (``pingTimeout``).
        connect_timeout: Seconds a new connection may stay without any namespace
            (Socket.IO CONNECT) before it is closed.
        max_payload: The largest Engine.IO message, WebSocket message or long-polling
            body, in bytes (``maxPayload``).
        max_attachments: The most binary attachments one Socket.IO packet may declare.
        max_ack_id_digits: The longest acknowledgement id, in decimal digits.
        max_payload_packets: The most Engine.IO packets in one long-polling body.
        max_namespaces: The most namespaces one connection may join at once.
        max_json_depth: The deepest nesting of arrays and objects in a JSON payload.
        max_namespace_length: The longest namespace name, in characters.
    """

    ping_interval: float = attrs.field(default=25.0, validator=_positive)
    ping_timeout: float = attrs.field(default=60.0, validator=_positive)
    connect_timeout: float = attrs.field(default=45.0, validator=_positive)
    max_payload: int = attrs.field(default=1_000_000, validator=_positive)
    max_attachments: int = attrs.field(default=10, validator=_positive)
    max_ack_id_digits: int = attrs.field(default=16, validator=_positive)
    max_payload_packets: int = attrs.field(default=1000, validator=_positive)
    max_namespaces: int = attrs.field(default=16, validator=_positive)
    max_json_depth: int = attrs.field(default=32, validator=_positive)
    max_namespace_length: int = attrs.field(default=128, validator=_positive)

    @property
    def ping_interval_ms(self) -> int:
        return round(self.ping_interval * 1000)

    @property
    def ping_timeout_ms(self) -> int:
        return round(self.ping_timeout * 1000)
