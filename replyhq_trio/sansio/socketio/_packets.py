"""Socket.IO v5 packets: the default parser's text grammar and binary placeholders.

Grammar (socket.io-protocol, "Packet encoding")::

    <type>[<attachments>-][<namespace>,][<ack id>][<JSON payload>]
    + one binary frame per attachment

The namespace is written only when it is not ``/``. A binary packet's payload holds
``{"_placeholder": true, "num": n}`` where the n-th attachment goes. What payload
each type may carry follows the reference parser's ``isPayloadValid``.
"""

from __future__ import annotations

import enum
from typing import Any

import attrs

from .. import _json
from .._config import ProtocolConfig
from .._errors import LocalProtocolError, RemoteProtocolError, limit_exceeded
from .._types import Frame, JSONValue

__all__ = [
    "RESERVED_EVENT_NAMES",
    "SocketPacket",
    "SocketPacketType",
    "decode_packet",
    "deconstruct_binary",
    "encode_packet",
    "reconstruct_binary",
]


class SocketPacketType(enum.IntEnum):
    CONNECT = 0
    DISCONNECT = 1
    EVENT = 2
    ACK = 3
    CONNECT_ERROR = 4
    BINARY_EVENT = 5
    BINARY_ACK = 6


_TYPE_BY_CHAR = {str(int(t)): t for t in SocketPacketType}
_BINARY_TYPES = (SocketPacketType.BINARY_EVENT, SocketPacketType.BINARY_ACK)

#: Event names a client may not emit: the reference client uses them for its own
#: lifecycle, so a packet carrying one is a protocol error.
RESERVED_EVENT_NAMES = frozenset(
    ("connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener")
)


@attrs.frozen(kw_only=True)
class SocketPacket:
    """One Socket.IO packet.

    Attributes:
        type: The packet type. Encoding an EVENT or ACK whose data holds ``bytes``
            produces a BINARY_EVENT or BINARY_ACK.
        namespace: Starts with ``/``.
        data: The JSON payload: an object or ``None`` for CONNECT, ``None`` for
            DISCONNECT, an object for CONNECT_ERROR, a list for the others.
        id: The acknowledgement id, or ``None``.
        attachments: For a decoded binary packet, how many binary frames follow;
            its data still holds the placeholders until :func:`reconstruct_binary`.
    """

    type: SocketPacketType
    namespace: str = "/"
    data: JSONValue = None
    id: int | None = None
    attachments: int = 0


# --- encoding -----------------------------------------------------------------------


def encode_packet(packet: SocketPacket) -> list[Frame]:
    """Encode a packet: its text, then one ``bytes`` frame per attachment.

    The text is the Socket.IO packet alone; the Engine.IO layer prefixes ``4``
    (:func:`encode_message` does both).

    Raises:
        LocalProtocolError: the data cannot be encoded (not JSON, or binary in a
            packet type that cannot carry it).
    """
    text, attachments = _encode(packet.type, packet.namespace, packet.data, packet.id)
    return [text, *attachments]


def encode_message(
    packet_type: SocketPacketType, namespace: str, data: Any, packet_id: int | None = None
) -> list[Frame]:
    """A packet as the Engine.IO frames that carry it: ``"4"`` + its text, then its
    attachments as binary messages. No packet object is built (the send path's form).

    Raises:
        LocalProtocolError: as :func:`encode_packet`.
    """
    text, attachments = _encode(packet_type, namespace, data, packet_id)
    return ["4" + text, *attachments]


def _encode(
    packet_type: SocketPacketType, namespace: str, data: Any, packet_id: int | None
) -> tuple[str, list[bytes]]:
    attachments: list[bytes] = []
    payload = ""
    if data is not None:
        try:
            payload = _json.dumps(data)
        except LocalProtocolError:
            # orjson refuses bytes: only then is the payload walked for attachments,
            # so packets without binary data pay nothing for the feature.
            stripped, attachments = deconstruct_binary(data)
            if not attachments:
                raise
            payload = _json.dumps(stripped)
    if attachments or packet_type in _BINARY_TYPES:
        if packet_type is SocketPacketType.EVENT:
            packet_type = SocketPacketType.BINARY_EVENT
        elif packet_type is SocketPacketType.ACK:
            packet_type = SocketPacketType.BINARY_ACK
        elif packet_type not in _BINARY_TYPES:
            raise LocalProtocolError(f"{packet_type.name} packets cannot carry binary data")
        head = f"{int(packet_type)}{len(attachments)}-"
    else:
        head = _HEADS[packet_type]
    if namespace != "/":
        head += namespace + ","
    if packet_id is not None:
        head += str(packet_id)
    return head + payload, attachments


_HEADS = {t: str(int(t)) for t in SocketPacketType}


def deconstruct_binary(data: Any) -> tuple[Any, list[bytes]]:
    """Replace every ``bytes`` value with a placeholder; return the attachments in order."""
    attachments: list[bytes] = []
    return _deconstruct(data, attachments), attachments


def _deconstruct(data: Any, attachments: list[bytes]) -> Any:
    if isinstance(data, bytes | bytearray | memoryview):
        attachments.append(bytes(data))
        return {"_placeholder": True, "num": len(attachments) - 1}
    if isinstance(data, list | tuple):
        return [_deconstruct(item, attachments) for item in data]
    if isinstance(data, dict):
        return {key: _deconstruct(value, attachments) for key, value in data.items()}
    return data


# --- decoding -----------------------------------------------------------------------


def decode_packet(text: str, config: ProtocolConfig, start: int = 0) -> SocketPacket:
    """Decode the text of one Socket.IO packet, beginning at ``text[start]``.

    ``start`` lets the caller skip the Engine.IO ``4`` without copying the string.
    Binary packets come back with ``attachments`` set and placeholders in place.

    Raises:
        RemoteProtocolError: anything the reference parser rejects, or a limit of
            ``config`` exceeded (attachments, ack id digits, namespace length, JSON
            depth).
    """
    packet_type, namespace, data, packet_id, attachments = decode_fields(text, config, start)
    return SocketPacket(
        type=packet_type, namespace=namespace, data=data, id=packet_id, attachments=attachments
    )


#: What :func:`decode_fields` returns: type, namespace, data, ack id, attachment count.
DecodedFields = tuple[SocketPacketType, str, Any, int | None, int]


def decode_fields(text: str, config: ProtocolConfig, start: int = 0) -> DecodedFields:
    """:func:`decode_packet` without building the packet object.

    The connection's receive path uses this: a frozen attrs instance per packet was
    measured at a quarter of the decoding time.
    """
    packet_type = _TYPE_BY_CHAR.get(text[start : start + 1])
    if packet_type is None:
        raise RemoteProtocolError(f"unknown Socket.IO packet type in {text[start : start + 16]!r}")
    index = start + 1
    end = len(text)

    attachments = 0
    if packet_type in _BINARY_TYPES:
        digits_end = index
        while digits_end < end and "0" <= text[digits_end] <= "9":
            digits_end += 1
            if digits_end - index > len(str(config.max_attachments)):
                raise limit_exceeded(
                    f"binary packet declares more than {config.max_attachments} attachments"
                )
        if digits_end == index or text[digits_end : digits_end + 1] != "-":
            raise RemoteProtocolError("binary packet without a valid attachment count")
        attachments = int(text[index:digits_end])
        dash = digits_end
        if attachments > config.max_attachments:
            raise limit_exceeded(
                f"binary packet declares {attachments} attachments, over the limit of "
                f"{config.max_attachments}"
            )
        index = dash + 1

    namespace = "/"
    if index < end and text[index] == "/":
        comma = text.find(",", index, index + config.max_namespace_length + 1)
        if comma == -1:
            if end - index > config.max_namespace_length:
                raise limit_exceeded(
                    f"namespace longer than {config.max_namespace_length} characters"
                )
            namespace = text[index:]
            index = end
        else:
            namespace = text[index:comma]
            index = comma + 1

    packet_id: int | None = None
    id_start = index
    while index < end and "0" <= text[index] <= "9":
        index += 1
        if index - id_start > config.max_ack_id_digits:
            raise limit_exceeded(f"ack id longer than {config.max_ack_id_digits} digits")
    if index > id_start:
        packet_id = int(text[id_start:index])

    data: Any = None
    if index < end:
        data = _json.loads(text[index:], config.max_json_depth)
        has_data = True
    else:
        has_data = False
    _check_payload(packet_type, data, has_data, packet_id)
    return packet_type, namespace, data, packet_id, attachments


def _check_payload(
    packet_type: SocketPacketType, data: Any, has_data: bool, packet_id: int | None
) -> None:
    # The reference parser's isPayloadValid, plus: only EVENT and ACK carry ids, and
    # an ACK must carry one.
    if packet_type is SocketPacketType.CONNECT:
        ok = not has_data or type(data) is dict
    elif packet_type is SocketPacketType.DISCONNECT:
        ok = not has_data
    elif packet_type is SocketPacketType.CONNECT_ERROR:
        ok = has_data and (type(data) is dict or type(data) is str)
    elif packet_type is SocketPacketType.EVENT or packet_type is SocketPacketType.BINARY_EVENT:
        ok = (
            type(data) is list
            and len(data) > 0
            and type(data[0]) is str
            and data[0] not in RESERVED_EVENT_NAMES
        )
    else:  # ACK, BINARY_ACK
        ok = type(data) is list and packet_id is not None
    if not ok:
        raise RemoteProtocolError(f"invalid payload for a {packet_type.name} packet")
    if packet_id is not None and packet_type not in _ACKABLE:
        raise RemoteProtocolError(f"a {packet_type.name} packet cannot carry an ack id")


_ACKABLE = frozenset(
    (
        SocketPacketType.EVENT,
        SocketPacketType.BINARY_EVENT,
        SocketPacketType.ACK,
        SocketPacketType.BINARY_ACK,
    )
)


def reconstruct_binary(data: Any, attachments: list[bytes]) -> Any:
    """Put the attachments back where their placeholders are.

    Raises:
        RemoteProtocolError: a placeholder refers to an attachment that does not exist.
    """
    if type(data) is list:
        return [reconstruct_binary(item, attachments) for item in data]
    if type(data) is dict:
        if data.get("_placeholder") is True:
            num = data.get("num")
            if type(num) is int and 0 <= num < len(attachments):
                return attachments[num]
            raise RemoteProtocolError(f"placeholder refers to a missing attachment: {num!r}")
        return {key: reconstruct_binary(value, attachments) for key, value in data.items()}
    return data
