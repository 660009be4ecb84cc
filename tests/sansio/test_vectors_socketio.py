"""Socket.IO packets against protocol/vectors/socketio-packets.json."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from replyhq_trio.sansio import ProtocolConfig
from replyhq_trio.sansio.socketio import (
    SocketPacket,
    SocketPacketType,
    decode_packet,
    encode_packet,
    reconstruct_binary,
)

from ._vectors import data_from_json, load

VECTORS = load("socketio-packets.json")["vectors"]
CONFIG = ProtocolConfig()


def _expected(vector: dict[str, Any]) -> SocketPacket:
    packet = vector["packet"]
    return SocketPacket(
        type=SocketPacketType[packet["type"]],
        namespace=packet["namespace"],
        data=data_from_json(packet["data"]),
        id=packet["id"],
    )


def _attachments(vector: dict[str, Any]) -> list[bytes]:
    return [base64.b64decode(item) for item in vector.get("attachments", [])]


def _decode(text: str, attachments: list[bytes]) -> SocketPacket:
    """Decode and reassemble, reporting a binary packet under its plain type as the
    connection does (BINARY_EVENT is how EVENT travels with attachments)."""
    packet = decode_packet(text, CONFIG)
    if packet.type in (SocketPacketType.BINARY_EVENT, SocketPacketType.BINARY_ACK):
        assert packet.attachments == len(attachments)
        plain = (
            SocketPacketType.EVENT
            if packet.type is SocketPacketType.BINARY_EVENT
            else SocketPacketType.ACK
        )
        return SocketPacket(
            type=plain,
            namespace=packet.namespace,
            data=reconstruct_binary(packet.data, attachments),
            id=packet.id,
        )
    assert not attachments
    return packet


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_decodes(vector: dict[str, Any]) -> None:
    assert _decode(vector["text"], _attachments(vector)) == _expected(vector)


@pytest.mark.parametrize(
    "vector", [v for v in VECTORS if not v.get("decode_only")], ids=lambda v: v["name"]
)
def test_encodes(vector: dict[str, Any]) -> None:
    text = vector.get("encoded", vector["text"])
    assert encode_packet(_expected(vector)) == [text, *_attachments(vector)]


def test_decoding_can_start_after_an_engineio_prefix() -> None:
    assert decode_packet('42/admin,3["x"]', CONFIG, 1) == SocketPacket(
        type=SocketPacketType.EVENT, namespace="/admin", data=["x"], id=3
    )


def test_tuples_and_bytearrays_encode_like_lists_and_bytes() -> None:
    packet = SocketPacket(
        type=SocketPacketType.EVENT, data=("up", {"b": bytearray(b"\x01")}, memoryview(b"\x02"))
    )
    assert encode_packet(packet) == [
        '52-["up",{"b":{"_placeholder":true,"num":0}},{"_placeholder":true,"num":1}]',
        b"\x01",
        b"\x02",
    ]
