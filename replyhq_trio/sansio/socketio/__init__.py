"""Socket.IO v5 packets (the default parser) and binary placeholders."""

from ._packets import RESERVED_EVENT_NAMES as RESERVED_EVENT_NAMES
from ._packets import DecodedFields as DecodedFields
from ._packets import SocketPacket as SocketPacket
from ._packets import SocketPacketType as SocketPacketType
from ._packets import decode_fields as decode_fields
from ._packets import decode_packet as decode_packet
from ._packets import deconstruct_binary as deconstruct_binary
from ._packets import encode_message as encode_message
from ._packets import encode_packet as encode_packet
from ._packets import reconstruct_binary as reconstruct_binary

__all__ = [
    "RESERVED_EVENT_NAMES",
    "DecodedFields",
    "SocketPacket",
    "SocketPacketType",
    "decode_fields",
    "decode_packet",
    "deconstruct_binary",
    "encode_message",
    "encode_packet",
    "reconstruct_binary",
]
