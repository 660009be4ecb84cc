"""Engine.IO v4 packets and long-polling payloads.

A packet is a type digit followed by its data (``"4hello"``); a binary message is
the raw bytes. A long-polling body joins packets with the record separator
``\\x1e`` and carries binary messages as ``b`` + base64 (Engine.IO v4 spec,
"Packet encoding"). These functions are pure and symmetric: the same codec serves
the server core, the test clients and the vectors in ``protocol/vectors/``.
"""

from __future__ import annotations

import base64
import binascii
import enum
from collections.abc import Sequence

import attrs

from .._errors import RemoteProtocolError, WebSocketCloseCode, limit_exceeded
from .._types import Frame

__all__ = [
    "RECORD_SEPARATOR",
    "EnginePacket",
    "EnginePacketType",
    "decode_packet",
    "decode_payload",
    "encode_packet",
    "encode_payload",
]

#: Separates the packets of a long-polling body.
RECORD_SEPARATOR = "\x1e"


class EnginePacketType(enum.IntEnum):
    OPEN = 0
    CLOSE = 1
    PING = 2
    PONG = 3
    MESSAGE = 4
    UPGRADE = 5
    NOOP = 6


_TYPE_BY_CHAR = {str(int(t)): t for t in EnginePacketType}


@attrs.frozen(kw_only=True)
class EnginePacket:
    """One Engine.IO packet. Only MESSAGE packets may carry ``bytes``."""

    type: EnginePacketType
    data: str | bytes = ""

    def __attrs_post_init__(self) -> None:
        if isinstance(self.data, bytes) and self.type is not EnginePacketType.MESSAGE:
            raise TypeError("only MESSAGE packets carry binary data")


def encode_packet(packet: EnginePacket) -> Frame:
    """Encode a packet as one transport frame (text, or bytes for binary messages)."""
    if isinstance(packet.data, bytes):
        return packet.data
    return f"{int(packet.type)}{packet.data}"


def decode_packet(frame: Frame) -> EnginePacket:
    """Decode one transport frame.

    Raises:
        RemoteProtocolError: empty frame or unknown packet type.
    """
    if isinstance(frame, bytes):
        return EnginePacket(type=EnginePacketType.MESSAGE, data=frame)
    packet_type = _TYPE_BY_CHAR.get(frame[:1])
    if packet_type is None:
        raise RemoteProtocolError(f"unknown Engine.IO packet type in {frame[:16]!r}")
    return EnginePacket(type=packet_type, data=frame[1:])


def encode_payload(frames: Sequence[Frame]) -> str:
    """Join frames into one long-polling body; binary frames become ``b`` + base64."""
    return RECORD_SEPARATOR.join(
        frame if isinstance(frame, str) else "b" + base64.b64encode(frame).decode("ascii")
        for frame in frames
    )


def decode_payload(body: str, *, max_packets: int, max_payload: int) -> list[Frame]:
    """Split a long-polling body into frames, decoding base64 records.

    The size is checked before anything is allocated, and the split stops one record
    past ``max_packets``, so an abusive body costs at most that much.

    Raises:
        RemoteProtocolError: the body is empty, too large (HTTP 413), has more than
            ``max_packets`` records, or a ``b`` record is not valid base64.
    """
    if len(body) > max_payload:
        raise limit_exceeded(
            f"payload exceeds {max_payload} bytes",
            http_status=413,
            websocket_close_code=WebSocketCloseCode.MESSAGE_TOO_BIG,
        )
    if not body:
        raise RemoteProtocolError("empty payload")
    frames: list[Frame] = list(body.split(RECORD_SEPARATOR, max_packets))
    if len(frames) > max_packets:
        raise limit_exceeded(f"payload holds more than {max_packets} packets")
    for index, record in enumerate(frames):
        if record[:1] == "b":
            try:
                frames[index] = base64.b64decode(record[1:], validate=True)
            except (binascii.Error, ValueError):
                raise RemoteProtocolError("invalid base64 binary packet in payload") from None
    return frames
