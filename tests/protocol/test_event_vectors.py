"""protocol/vectors/replyhq-events.json: one packet per ReplyHQ event, codec and schema agree."""

from __future__ import annotations

from typing import Any

import pytest

from replyhq_trio.sansio import ProtocolConfig
from replyhq_trio.sansio.socketio import (
    SocketPacket,
    SocketPacketType,
    decode_packet,
    encode_packet,
)
from tests.sansio._vectors import load

from ._schemas import INDEX, validator

VECTORS: list[dict[str, Any]] = load("replyhq-events.json")["vectors"]


def _packet(vector: dict[str, Any]) -> SocketPacket:
    packet = vector["packet"]
    return SocketPacket(
        type=SocketPacketType[packet["type"]],
        namespace=packet["namespace"],
        data=packet["data"],
        id=packet["id"],
    )


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_packet_codec_both_ways(vector: dict[str, Any]) -> None:
    assert decode_packet(vector["text"], ProtocolConfig()) == _packet(vector)
    assert encode_packet(_packet(vector)) == [vector["text"]]


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_payload_satisfies_its_schema(vector: dict[str, Any]) -> None:
    data = vector["packet"]["data"]
    if vector["schema"] is None:
        assert data == [vector["event"]]  # an event without payload
        return
    if vector["packet"]["type"] in ("CONNECT", "CONNECT_ERROR"):
        instance = data
    elif vector["packet"]["type"] == "ACK":
        (instance,) = data
    else:
        (_name, instance) = data
    validator(vector["schema"]).validate(instance)


@pytest.mark.parametrize("namespace", ["client", "admin"])
def test_every_event_of_the_index_has_a_vector(namespace: str) -> None:
    section = INDEX[namespace]
    have = {
        (v["direction"], v["event"], bool(v.get("ack")))
        for v in VECTORS
        if v["namespace"] == "/" + namespace
    }
    for direction in ("client_to_server", "server_to_client"):
        for event, entry in section[direction].items():
            assert (direction, event, False) in have, f"{namespace} {direction} {event}"
            if entry.get("ack"):
                assert ("server_to_client", event, True) in have, f"{namespace} {event} ack"
    assert ("client_to_server", "CONNECT", False) in have
    assert ("server_to_client", "CONNECT_ERROR", False) in have
