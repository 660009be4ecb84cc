"""Engine.IO packets and long-polling payloads against protocol/vectors/."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from replyhq_trio.sansio.engineio import (
    EnginePacket,
    EnginePacketType,
    decode_packet,
    decode_payload,
    encode_packet,
    encode_payload,
)

from ._vectors import frame, load

PACKETS = load("engineio-packets.json")["vectors"]
PAYLOADS = load("engineio-payloads.json")["vectors"]


def _packet(value: dict[str, Any]) -> EnginePacket:
    packet_type = EnginePacketType[value["type"].upper()]
    if "data_base64" in value:
        return EnginePacket(type=packet_type, data=base64.b64decode(value["data_base64"]))
    return EnginePacket(type=packet_type, data=value["data"])


def _frame(vector: dict[str, Any]) -> str | bytes:
    if "frame_base64" in vector:
        return base64.b64decode(vector["frame_base64"])
    text: str = vector["frame"]
    return text


@pytest.mark.parametrize("vector", PACKETS, ids=[v["name"] for v in PACKETS])
def test_packet_decodes(vector: dict[str, Any]) -> None:
    assert decode_packet(_frame(vector)) == _packet(vector["packet"])


@pytest.mark.parametrize("vector", PACKETS, ids=[v["name"] for v in PACKETS])
def test_packet_encodes(vector: dict[str, Any]) -> None:
    assert encode_packet(_packet(vector["packet"])) == _frame(vector)


@pytest.mark.parametrize("vector", PAYLOADS, ids=[v["name"] for v in PAYLOADS])
def test_payload_decodes(vector: dict[str, Any]) -> None:
    frames = decode_payload(vector["body"], max_packets=1000, max_payload=1_000_000)
    assert frames == [frame(item) for item in vector["frames"]]


@pytest.mark.parametrize(
    "vector", [v for v in PAYLOADS if not v.get("decode_only")], ids=lambda v: v["name"]
)
def test_payload_encodes(vector: dict[str, Any]) -> None:
    assert encode_payload([frame(item) for item in vector["frames"]]) == vector["body"]


def test_binary_packets_must_be_messages() -> None:
    with pytest.raises(TypeError):
        EnginePacket(type=EnginePacketType.PING, data=b"\x01")


def test_payload_packet_limit_is_exact() -> None:
    body = "\x1e".join(["4a"] * 5)
    assert len(decode_payload(body, max_packets=5, max_payload=100)) == 5
