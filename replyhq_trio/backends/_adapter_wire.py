"""The wire format of the official ``@socket.io/redis-adapter`` (8.x, classic mode) and
``@socket.io/redis-emitter``: channel names, msgpack envelopes, request types.

Per namespace ``nsp`` and channel key ``K``: broadcasts on ``K#nsp#`` (``K#nsp#room#`` for
exactly one room) as msgpack ``[uid, {type: 2, data: [event, ...args], nsp}, {rooms,
except, flags}]``; requests on ``K-request#nsp#`` and answers on ``K-response#nsp#`` or the
asker's ``K-response#nsp#uid#``, as JSON (starting with ``{``) or msgpack (anything else;
always msgpack when they carry event data, which may be binary).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import attrs
import msgpack
import orjson
import trio

from ..ports import Broadcast, RoomChange

__all__ = [
    "ALL_ROOMS",
    "BROADCAST",
    "BROADCAST_ACK",
    "BROADCAST_CLIENT_COUNT",
    "REMOTE_DISCONNECT",
    "REMOTE_FETCH",
    "REMOTE_JOIN",
    "REMOTE_LEAVE",
    "SERVER_SIDE_EMIT",
    "SOCKETS",
    "Ask",
    "Channels",
    "ask_request",
    "asked_broadcast",
    "broadcast_message",
    "decode",
    "decode_broadcast",
    "encode_response",
    "event_of",
    "new_id",
    "opts_of",
    "pack",
    "room_change",
    "rooms_of",
    "unpack",
]

# The adapter's request types.
SOCKETS = 0
ALL_ROOMS = 1
REMOTE_JOIN = 2
REMOTE_LEAVE = 3
REMOTE_DISCONNECT = 4
REMOTE_FETCH = 5
SERVER_SIDE_EMIT = 6
BROADCAST = 7
BROADCAST_CLIENT_COUNT = 8
BROADCAST_ACK = 9

EVENT = 2
BINARY_EVENT = 5


@attrs.frozen
class Channels:
    broadcast: str
    request: str
    response: str
    own_response: str

    @classmethod
    def of(cls, key: str, namespace: str, uid: str) -> Channels:
        return cls(
            broadcast=f"{key}#{namespace}#",
            request=f"{key}-request#{namespace}#",
            response=f"{key}-response#{namespace}#",
            own_response=f"{key}-response#{namespace}#{uid}#",
        )


class Ask:
    """A broadcast asking other nodes' sockets for acks, waiting for their answers."""

    def __init__(self, servers: int, answered: Callable[[Any], None]) -> None:
        self.servers = servers
        self.counted = 0
        self.expected = 0
        self.acks = 0
        self.answered = answered
        self.done = trio.Event()

    def on_response(self, response: dict[str, Any]) -> None:
        kind = response.get("type")
        if kind == BROADCAST_CLIENT_COUNT and isinstance(response.get("clientCount"), int):
            self.counted += 1
            self.expected += response["clientCount"]
        elif kind == BROADCAST_ACK:
            self.acks += 1
            self.answered(response.get("packet"))
        if self.counted >= self.servers and self.acks >= self.expected:
            self.done.set()


def new_id() -> str:
    return secrets.token_urlsafe(9)


def decode(data: bytes) -> Any:
    """A request or response: JSON when it starts with ``{``, else msgpack."""
    if data[:1] == b"{":
        return orjson.loads(data)
    return unpack(data)


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(
        data, raw=False, strict_map_key=False, timestamp=3, unicode_errors="replace"
    )


def pack(value: Any) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def rooms_of(value: Any) -> tuple[str, ...]:
    """Rooms as the adapter sends them: strings, or numbers (Node allows those)."""
    if not isinstance(value, list):
        raise ValueError("rooms: not an array")
    rooms = []
    for room in value:
        if isinstance(room, bool) or not isinstance(room, str | int | float):
            raise ValueError("rooms: not a string")
        rooms.append(room if isinstance(room, str) else str(room))
    return tuple(rooms)


def opts_of(value: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if not isinstance(value, dict):
        raise ValueError("opts: not a map")
    return rooms_of(value.get("rooms", [])), rooms_of(value.get("except", []))


def event_of(packet: Any, namespace: str) -> tuple[str, tuple[Any, ...]] | None:
    """The event of an adapter packet, or None for another namespace's."""
    if not isinstance(packet, dict):
        raise ValueError("packet: not a map")
    if packet.get("nsp", "/") != namespace:
        return None
    if packet.get("type") not in (EVENT, BINARY_EVENT):
        raise ValueError(f"packet: type {packet.get('type')!r} is not an event")
    data = packet.get("data")
    if not isinstance(data, list) or not data or not isinstance(data[0], str):
        raise ValueError("packet: data is not [event, ...args]")
    return data[0], tuple(data[1:])


def broadcast_message(uid: str, broadcast: Broadcast) -> tuple[str, bytes]:
    """What to append to the namespace's broadcast channel (the room, for exactly one),
    and the message."""
    suffix = broadcast.rooms[0] + "#" if len(broadcast.rooms) == 1 else ""
    message = pack(
        [
            uid,
            {"type": EVENT, "data": [broadcast.event, *broadcast.args], "nsp": broadcast.namespace},
            {"rooms": list(broadcast.rooms), "except": list(broadcast.exclude), "flags": {}},
        ]
    )
    return suffix, message


def decode_broadcast(data: bytes, namespace: str, own_uid: str) -> Broadcast | None:
    """Another node's broadcast to ``namespace``; None for this node's own, or another
    namespace's.

    Raises:
        ValueError: not the adapter's format (msgpack's own errors too).
    """
    message = unpack(data)
    if not isinstance(message, list) or len(message) != 3:
        raise ValueError("a broadcast is not [uid, packet, opts]")
    uid, packet, opts = message
    if uid == own_uid:
        return None
    event = event_of(packet, namespace)
    if event is None:
        return None
    rooms, exclude = opts_of(opts)
    return Broadcast(
        origin=str(uid),
        namespace=namespace,
        event=event[0],
        args=event[1],
        rooms=rooms,
        exclude=exclude,
    )


def ask_request(uid: str, request_id: str, broadcast: Broadcast, timeout: float) -> bytes:
    """A BROADCAST request: the broadcast, asking every recipient for an ack."""
    return pack(
        {
            "uid": uid,
            "requestId": request_id,
            "type": BROADCAST,
            "packet": {
                "type": EVENT,
                "data": [broadcast.event, *broadcast.args],
                "nsp": broadcast.namespace,
            },
            "opts": {
                "rooms": list(broadcast.rooms),
                "except": list(broadcast.exclude),
                "flags": {"timeout": round(timeout * 1000)},
            },
        }
    )


def asked_broadcast(namespace: str, request: dict[str, Any]) -> tuple[Broadcast, float] | None:
    """The broadcast of a BROADCAST request and how long its asker waits (seconds)."""
    event = event_of(request.get("packet"), namespace)
    if event is None or not isinstance(request.get("requestId"), str):
        return None
    options = request.get("opts", {})
    rooms, exclude = opts_of(options)
    flags = options.get("flags", {})
    timeout_ms = flags.get("timeout") if isinstance(flags, dict) else None
    timeout = timeout_ms / 1000 if isinstance(timeout_ms, int | float) else 5.0
    broadcast = Broadcast(
        origin=str(request.get("uid")),
        namespace=namespace,
        event=event[0],
        args=event[1],
        rooms=rooms,
        exclude=exclude,
    )
    return broadcast, timeout


def room_change(namespace: str, kind: int, request: dict[str, Any]) -> RoomChange | None:
    """The :class:`RoomChange` of a REMOTE_JOIN, REMOTE_LEAVE or REMOTE_DISCONNECT; None
    for the pre-8.x form addressed to one socket by id (no longer sent)."""
    if "opts" not in request:
        return None
    rooms, exclude = opts_of(request["opts"])
    listed = request.get("rooms", [])
    targets = rooms_of(listed if isinstance(listed, list) else [listed])
    return RoomChange(
        namespace=namespace,
        rooms=rooms,
        exclude=exclude,
        join=targets if kind == REMOTE_JOIN else (),
        leave=targets if kind == REMOTE_LEAVE else (),
        disconnect=kind == REMOTE_DISCONNECT,
        close=bool(request.get("close")),
    )


def encode_response(body: dict[str, Any]) -> bytes:
    """An answer: msgpack when it carries a client's ack (it may be binary), else JSON."""
    if body.get("type") == BROADCAST_ACK:
        return pack(body)
    return orjson.dumps(body)
