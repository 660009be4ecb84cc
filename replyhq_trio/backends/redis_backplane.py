"""Broadcasts between nodes through Redis pub/sub, in the wire format of the official
``@socket.io/redis-adapter`` (8.x, classic mode): a fleet may mix these nodes with Node.js
socket.io servers, and ``@socket.io/redis-emitter`` can publish into it.

Per namespace ``nsp`` and channel key ``K`` (``socket.io`` by default):

``K#nsp#`` and ``K#nsp#room#``
    broadcasts: msgpack ``[uid, {type: 2, data: [event, ...args], nsp}, {rooms, except,
    flags}]``, on the per-room channel when there is exactly one room. Every node
    PSUBSCRIBEs ``K#nsp#*``.
``K-request#nsp#``
    requests (JSON, or msgpack when it carries event data): room changes, fetching
    sockets, listing rooms, server-side events, broadcasts asking for acks. The number of
    nodes is the number of subscribers of this channel (PUBSUB NUMSUB).
``K-response#nsp#`` and ``K-response#nsp#uid#``
    answers; this node answers on the asker's own channel.

Both connections (one publishing, pipelined; one subscribed) are this module's own RESP
connections in Trio (:mod:`._resp`). Lost connections come back with backoff and every
subscription is restored; meanwhile local sockets still get local broadcasts and
:meth:`RedisBackplane.check` fails (``/readyz``). Every few seconds the node publishes a
probe to a room only it knows, through the same pattern subscription as every broadcast:
when its own probes stop coming back, it is deaf, says so and subscribes again.
"""

from __future__ import annotations

import collections
import logging
import secrets
from collections.abc import Callable
from typing import Any

import attrs
import msgpack
import orjson
import trio

from ..ports import BackplaneStats, BackplaneUnavailable, Broadcast, Receiver, RoomChange
from ._resp import Reply, RespConnection, RespError, encode_command, parse_redis_url

__all__ = ["RedisBackplane", "RedisBackplaneConfig"]

log = logging.getLogger("replyhq_trio.backplane")

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

_EVENT = 2
_BINARY_EVENT = 5
_FAILURES = (OSError, RespError, trio.EndOfChannel, trio.BrokenResourceError, trio.TooSlowError)


@attrs.frozen(kw_only=True)
class RedisBackplaneConfig:
    """Timings and sizes of the Redis backplane.

    Attributes:
        key: The channels' prefix (the adapter's ``key`` option): every node of a fleet,
            Node.js ones included, must use the same.
        connect_timeout: Seconds to connect and subscribe.
        reconnect_min, reconnect_max: Backoff between attempts while Redis is away.
        probe_interval: Seconds between probes of this node's own subscription.
        probe_misses: Probe intervals without hearing itself after which the node takes
            itself for deaf and subscribes again.
        queue: Broadcasts waiting to be published (beyond it, while Redis is slow or
            away, new ones are dropped and counted: local sockets got them already).
        batch: Commands written to Redis at once, at most.
        requests_timeout: Seconds to wait for Redis to count the nodes.
    """

    key: str = "socket.io"
    connect_timeout: float = 5.0
    reconnect_min: float = 0.1
    reconnect_max: float = 5.0
    probe_interval: float = 2.0
    probe_misses: int = 3
    queue: int = 10_000
    batch: int = 512
    requests_timeout: float = 5.0


@attrs.frozen
class _Channels:
    broadcast: str
    request: str
    response: str
    own_response: str

    @classmethod
    def of(cls, key: str, namespace: str, uid: str) -> _Channels:
        return cls(
            broadcast=f"{key}#{namespace}#",
            request=f"{key}-request#{namespace}#",
            response=f"{key}-response#{namespace}#",
            own_response=f"{key}-response#{namespace}#{uid}#",
        )


class _Reply:
    """A command's reply, awaited by whoever sent the command."""

    def __init__(self) -> None:
        self.value: Reply = None
        self.done = trio.Event()

    def set(self, value: Reply) -> None:
        self.value = value
        self.done.set()


class _Ask:
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


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first failure of a group (nurseries group what they raise), for a log line."""
    first: BaseException = group
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first


def _new_id() -> str:
    return secrets.token_urlsafe(9)


def _decode(data: bytes) -> Any:
    """A request or response: JSON when it starts with ``{``, else msgpack."""
    if data[:1] == b"{":
        return orjson.loads(data)
    return _unpack(data)


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(
        data, raw=False, strict_map_key=False, timestamp=3, unicode_errors="replace"
    )


def _pack(value: Any) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def _rooms(value: Any) -> tuple[str, ...]:
    """Rooms as the adapter sends them: strings, or numbers (Node allows those)."""
    if not isinstance(value, list):
        raise ValueError("rooms: not an array")
    rooms = []
    for room in value:
        if isinstance(room, bool) or not isinstance(room, str | int | float):
            raise ValueError("rooms: not a string")
        rooms.append(room if isinstance(room, str) else str(room))
    return tuple(rooms)


def _opts(value: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if not isinstance(value, dict):
        raise ValueError("opts: not a map")
    return _rooms(value.get("rooms", [])), _rooms(value.get("except", []))


def _event(packet: Any, namespace: str) -> tuple[str, tuple[Any, ...]] | None:
    """The event of an adapter packet, or None for another namespace's."""
    if not isinstance(packet, dict):
        raise ValueError("packet: not a map")
    if packet.get("nsp", "/") != namespace:
        return None
    if packet.get("type") not in (_EVENT, _BINARY_EVENT):
        raise ValueError(f"packet: type {packet.get('type')!r} is not an event")
    data = packet.get("data")
    if not isinstance(data, list) or not data or not isinstance(data[0], str):
        raise ValueError("packet: data is not [event, ...args]")
    return data[0], tuple(data[1:])


class RedisBackplane:
    """:class:`~replyhq_trio.ports.Backplane` through Redis, speaking the official
    Socket.IO Redis adapter's protocol (see the module's text).

    Args:
        redis_url: ``redis://[user:password@]host[:port][/db]``, ``rediss://`` or
            ``unix://`` (pub/sub ignores the database number).
        config: Timings, sizes, and the channel key.
        uid: This node's id on the wire (random by default; unique per process).
    """

    def __init__(
        self,
        redis_url: str,
        *,
        config: RedisBackplaneConfig | None = None,
        uid: str | None = None,
    ) -> None:
        self._address = parse_redis_url(redis_url)
        self._config = config or RedisBackplaneConfig()
        self.uid = uid or _new_id()
        self.stats = BackplaneStats()
        self._send, self._queue = trio.open_memory_channel[tuple[bytes, _Reply | None]](
            self._config.queue
        )
        self._channels: dict[str, _Channels] = {}
        self._asks: dict[str, _Ask] = {}
        self._receiver: Receiver | None = None
        self._subscribed = False
        self._publishing = False
        self._heard_at = 0.0
        self._connection_scope: trio.CancelScope | None = None
        self._dropping = False
        self._probe_room = f"replyhq:probe:{self.uid}"

    @property
    def where(self) -> str:
        return self._address.describe()

    def _channels_of(self, namespace: str) -> _Channels:
        channels = self._channels.get(namespace)
        if channels is None:
            channels = self._channels[namespace] = _Channels.of(
                self._config.key, namespace, self.uid
            )
        return channels

    # --- the backplane ------------------------------------------------------------------

    async def run(self, receiver: Receiver, *, task_status: trio.TaskStatus[None]) -> None:
        self._receiver = receiver
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._publisher)
            await nursery.start(self._subscriber)
            nursery.start_soon(self._prober)
            task_status.started()

    async def publish(self, broadcast: Broadcast) -> None:
        channels = self._channels_of(broadcast.namespace)
        channel = channels.broadcast
        if len(broadcast.rooms) == 1:
            channel += broadcast.rooms[0] + "#"
        message = _pack(
            [
                self.uid,
                {
                    "type": _EVENT,
                    "data": [broadcast.event, *broadcast.args],
                    "nsp": broadcast.namespace,
                },
                {"rooms": list(broadcast.rooms), "except": list(broadcast.exclude), "flags": {}},
            ]
        )
        self._enqueue(encode_command("PUBLISH", channel, message))

    async def ask(
        self, broadcast: Broadcast, *, timeout: float, answered: Callable[[Any], None]
    ) -> bool:
        channels = self._channels_of(broadcast.namespace)
        others = await self._server_count(channels) - 1
        if others <= 0:
            return others == 0
        request_id = _new_id()
        ask = self._asks[request_id] = _Ask(others, answered)
        try:
            request = {
                "uid": self.uid,
                "requestId": request_id,
                "type": BROADCAST,
                "packet": {
                    "type": _EVENT,
                    "data": [broadcast.event, *broadcast.args],
                    "nsp": broadcast.namespace,
                },
                "opts": {
                    "rooms": list(broadcast.rooms),
                    "except": list(broadcast.exclude),
                    "flags": {"timeout": round(timeout * 1000)},
                },
            }
            self._enqueue(encode_command("PUBLISH", channels.request, _pack(request)))
            with trio.move_on_after(timeout):
                await ask.done.wait()
            return ask.done.is_set()
        finally:
            del self._asks[request_id]

    async def check(self) -> None:
        await trio.lowlevel.checkpoint()
        if not self._subscribed:
            raise BackplaneUnavailable(f"not subscribed to Redis at {self.where}")
        if not self._publishing:
            raise BackplaneUnavailable(f"cannot publish to Redis at {self.where}")

    async def server_count(self, namespace: str) -> int:
        """How many nodes (this one included) serve ``namespace``, by Redis's count of
        the request channel's subscribers; 0 when Redis does not answer."""
        return await self._server_count(self._channels_of(namespace))

    # --- publishing ---------------------------------------------------------------------

    def _enqueue(self, command: bytes, reply: _Reply | None = None) -> None:
        try:
            self._send.send_nowait((command, reply))
        except trio.WouldBlock:
            self.stats.dropped += 1
            if not self._dropping:
                self._dropping = True
                log.warning(
                    "dropping broadcasts to other nodes: %d wait for Redis at %s",
                    self._config.queue,
                    self.where,
                )
            if reply is not None:
                reply.set(None)
            return
        if reply is None:
            self.stats.published += 1

    async def _server_count(self, channels: _Channels) -> int:
        reply = _Reply()
        self._enqueue(encode_command("PUBSUB", "NUMSUB", channels.request), reply)
        with trio.move_on_after(self._config.requests_timeout):
            await reply.done.wait()
        value = reply.value
        if isinstance(value, list) and len(value) == 2 and isinstance(value[1], int):
            return value[1]
        return 0

    async def _publisher(self) -> None:
        config = self._config
        delay = config.reconnect_min
        while True:
            try:
                with trio.fail_after(config.connect_timeout):
                    connection = await RespConnection.open(
                        self._address, name=f"replyhq-pub-{self.uid}"
                    )
            except _FAILURES as exc:
                log.debug("cannot publish to Redis at %s: %s", self.where, exc)
                await trio.sleep(delay)
                delay = min(delay * 2, config.reconnect_max)
                continue
            delay = config.reconnect_min
            self._publishing = True
            waiting: collections.deque[_Reply | None] = collections.deque()
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._read_replies, connection, waiting)
                    await self._write_commands(connection, waiting)
            except* _FAILURES as failures:
                log.warning(
                    "lost the publishing connection to Redis at %s: %s",
                    self.where,
                    _first(failures),
                )
            finally:
                self._publishing = False
                for reply in waiting:
                    if reply is not None:
                        reply.set(None)
                await connection.aclose()

    async def _write_commands(
        self, connection: RespConnection, waiting: collections.deque[_Reply | None]
    ) -> None:
        batch_size = self._config.batch
        async for first, first_reply in self._queue:
            parts = [first]
            waiting.append(first_reply)
            while len(parts) < batch_size:
                try:
                    command, reply = self._queue.receive_nowait()
                except trio.WouldBlock:
                    break
                parts.append(command)
                waiting.append(reply)
            await connection.send(b"".join(parts))
            if self._dropping and len(parts) < batch_size:
                self._dropping = False
                log.info("broadcasts to other nodes flow again through Redis at %s", self.where)

    async def _read_replies(
        self, connection: RespConnection, waiting: collections.deque[_Reply | None]
    ) -> None:
        while True:
            value = await connection.read()
            reply = waiting.popleft() if waiting else None
            if reply is not None:
                reply.set(value)
            elif isinstance(value, RespError):
                log.warning("Redis refused a publish: %s", value)

    # --- subscribing ---------------------------------------------------------------------

    async def _subscriber(self, *, task_status: trio.TaskStatus[None]) -> None:
        config = self._config
        delay = config.reconnect_min
        ready: list[trio.TaskStatus[None]] = [task_status]  # told once, by whoever first can
        warned = False
        while True:
            scope = trio.CancelScope()
            try:
                with scope:
                    self._connection_scope = scope
                    await self._subscribe_and_listen(ready)
            except* _FAILURES as failures:
                if not warned:
                    warned = True
                    log.warning(
                        "Redis at %s is unreachable (%s): broadcasts reach this node's "
                        "sockets only until it is back",
                        self.where,
                        _first(failures),
                    )
            finally:
                if self._subscribed:
                    delay = config.reconnect_min
                    warned = False
                self._subscribed = False
                self._connection_scope = None
            if ready:
                ready.pop().started()  # the node serves its own sockets meanwhile
            if scope.cancelled_caught:  # deaf: subscribe again at once
                continue
            self.stats.reconnects += 1
            await trio.sleep(delay)
            delay = min(delay * 2, config.reconnect_max)

    async def _subscribe_and_listen(self, ready: list[trio.TaskStatus[None]]) -> None:
        receiver = self._receiver
        assert receiver is not None
        with trio.fail_after(self._config.connect_timeout):
            connection = await RespConnection.open(self._address, name=f"replyhq-sub-{self.uid}")
        try:
            commands = []
            for namespace in receiver.namespaces:
                channels = self._channels_of(namespace)
                commands.append(encode_command("PSUBSCRIBE", channels.broadcast + "*"))
                commands.append(
                    encode_command(
                        "SUBSCRIBE", channels.request, channels.response, channels.own_response
                    )
                )
            expected = 4 * len(receiver.namespaces)
            with trio.fail_after(self._config.connect_timeout):
                await connection.send(b"".join(commands))
                confirmed = 0
                while confirmed < expected:
                    push = await connection.read()
                    if isinstance(push, RespError):
                        raise push
                    if isinstance(push, list) and push[:1] in ([b"subscribe"], [b"psubscribe"]):
                        confirmed += 1
            self._subscribed = True
            self.stats.subscriptions += 1
            self._heard_at = trio.current_time()
            log.info(
                "subscribed to Redis at %s for %s (node %s)",
                self.where,
                ", ".join(receiver.namespaces),
                self.uid,
            )
            if ready:
                ready.pop().started()
            async with trio.open_nursery() as nursery:
                while True:
                    self._dispatch(await connection.read(), nursery)
        finally:
            await connection.aclose()

    async def _prober(self) -> None:
        config = self._config
        sequence = 0
        while True:
            await trio.sleep(config.probe_interval)
            receiver = self._receiver
            if not self._subscribed or receiver is None or not receiver.namespaces:
                continue
            silent = trio.current_time() - self._heard_at
            if silent > config.probe_interval * config.probe_misses:
                self.stats.resubscribed += 1
                log.warning(
                    "this node has not heard its own probes through Redis at %s for %.1f s: "
                    "subscribing again",
                    self.where,
                    silent,
                )
                if self._connection_scope is not None:
                    self._connection_scope.cancel()
                continue
            sequence += 1
            namespace = receiver.namespaces[0]
            channel = f"{self._channels_of(namespace).broadcast}{self._probe_room}#"
            probe = [
                self.uid,
                {"type": _EVENT, "data": ["replyhq:probe", sequence], "nsp": namespace},
                {"rooms": [self._probe_room], "except": [], "flags": {}},
            ]
            self._enqueue(encode_command("PUBLISH", channel, _pack(probe)))

    # --- what comes in --------------------------------------------------------------------

    def _dispatch(self, push: Reply, nursery: trio.Nursery) -> None:
        if not isinstance(push, list) or len(push) < 3:
            return
        kind = push[0]
        try:
            if kind == b"pmessage" and len(push) == 4:
                channel, data = push[2], push[3]
                if isinstance(channel, bytes) and isinstance(data, bytes):
                    self._on_broadcast(channel.decode("utf-8", "replace"), data)
            elif kind == b"message":
                channel, data = push[1], push[2]
                if isinstance(channel, bytes) and isinstance(data, bytes):
                    self._on_message(channel.decode("utf-8", "replace"), data, nursery)
        except (ValueError, TypeError, KeyError, msgpack.ExtraData, msgpack.FormatError) as exc:
            self.stats.malformed += 1
            log.warning("ignored a malformed message from Redis: %s: %s", type(exc).__name__, exc)

    def _namespace_of(self, channel: str, attribute: str) -> str | None:
        for namespace, channels in self._channels.items():
            name = getattr(channels, attribute)
            if channel.startswith(name):
                return namespace
        return None

    def _on_broadcast(self, channel: str, data: bytes) -> None:
        namespace = self._namespace_of(channel, "broadcast")
        if namespace is None:
            return
        room = channel[len(self._channels[namespace].broadcast) : -1]
        if room == self._probe_room:
            self._heard_at = trio.current_time()
            return
        receiver = self._receiver
        assert receiver is not None
        if room and not receiver.has_room(namespace, room):
            return  # nobody here: not even worth decoding
        message = _unpack(data)
        if not isinstance(message, list) or len(message) != 3:
            raise ValueError("a broadcast is not [uid, packet, opts]")
        uid, packet, opts = message
        if uid == self.uid:
            return  # ours: delivered here already
        event = _event(packet, namespace)
        if event is None:
            return
        rooms, exclude = _opts(opts)
        self.stats.received += 1
        receiver.receive(
            Broadcast(
                origin=str(uid),
                namespace=namespace,
                event=event[0],
                args=event[1],
                rooms=rooms,
                exclude=exclude,
            )
        )

    def _on_message(self, channel: str, data: bytes, nursery: trio.Nursery) -> None:
        for namespace, channels in self._channels.items():
            if channel == channels.request:
                self._on_request(namespace, _decode(data), nursery)
                return
            if channel in (channels.response, channels.own_response):
                response = _decode(data)
                if isinstance(response, dict):
                    ask = self._asks.get(str(response.get("requestId")))
                    if ask is not None:
                        ask.on_response(response)
                return

    def _respond(self, namespace: str, request: dict[str, Any], body: dict[str, Any]) -> None:
        channels = self._channels[namespace]
        asker = request.get("uid")
        channel = (
            f"{self._config.key}-response#{namespace}#{asker}#"
            if isinstance(asker, str) and asker
            else channels.response
        )
        binary = body.get("type") == BROADCAST_ACK
        payload = _pack(body) if binary else orjson.dumps(body)
        self._enqueue(encode_command("PUBLISH", channel, payload))

    def _on_request(self, namespace: str, request: Any, nursery: trio.Nursery) -> None:
        if not isinstance(request, dict):
            raise ValueError("a request is not a map")
        receiver = self._receiver
        assert receiver is not None
        kind = request.get("type")
        request_id = request.get("requestId")
        mine = request.get("uid") == self.uid
        if kind in (REMOTE_JOIN, REMOTE_LEAVE, REMOTE_DISCONNECT):
            self._change_rooms(namespace, kind, request)
        elif mine:
            return  # the asker answers its own requests itself
        elif kind == ALL_ROOMS:
            self._respond(
                namespace,
                request,
                {"requestId": request_id, "rooms": receiver.room_names(namespace)},
            )
        elif kind == REMOTE_FETCH:
            rooms, exclude = _opts(request.get("opts", {}))
            sockets = receiver.socket_summaries(namespace, rooms, exclude)
            self._respond(namespace, request, {"requestId": request_id, "sockets": sockets})
        elif kind == SOCKETS:
            rooms = _rooms(request.get("rooms", []))
            summaries = receiver.socket_summaries(namespace, rooms, ())
            ids = [summary["id"] for summary in summaries]
            self._respond(namespace, request, {"requestId": request_id, "sockets": ids})
        elif kind == SERVER_SIDE_EMIT:
            # This server has no server-side event handlers; an asker waiting for every
            # node's answer gets an empty one rather than a timeout.
            if request_id is not None:
                self._respond(
                    namespace, request, {"type": SERVER_SIDE_EMIT, "requestId": request_id}
                )
        elif kind == BROADCAST:
            event = _event(request.get("packet"), namespace)
            if event is None or not isinstance(request_id, str):
                return
            rooms, exclude = _opts(request.get("opts", {}))
            flags = request.get("opts", {}).get("flags", {})
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
            nursery.start_soon(self._answer_ask, namespace, request, broadcast, timeout)

    def _change_rooms(self, namespace: str, kind: int, request: dict[str, Any]) -> None:
        receiver = self._receiver
        assert receiver is not None
        if "opts" not in request:
            return  # the pre-8.x form, addressed to one socket by id: not sent any more
        rooms, exclude = _opts(request["opts"])
        listed = request.get("rooms", [])
        targets = _rooms(listed if isinstance(listed, list) else [listed])
        receiver.change_rooms(
            RoomChange(
                namespace=namespace,
                rooms=rooms,
                exclude=exclude,
                join=targets if kind == REMOTE_JOIN else (),
                leave=targets if kind == REMOTE_LEAVE else (),
                disconnect=kind == REMOTE_DISCONNECT,
                close=bool(request.get("close")),
            )
        )

    async def _answer_ask(
        self, namespace: str, request: dict[str, Any], broadcast: Broadcast, timeout: float
    ) -> None:
        receiver = self._receiver
        assert receiver is not None
        request_id = request["requestId"]

        def counted(count: int) -> None:
            self._respond(
                namespace,
                request,
                {"type": BROADCAST_CLIENT_COUNT, "requestId": request_id, "clientCount": count},
            )

        def answered(value: Any) -> None:
            self._respond(
                namespace,
                request,
                {"type": BROADCAST_ACK, "requestId": request_id, "packet": value},
            )

        await receiver.ask(broadcast, timeout=timeout, counted=counted, answered=answered)
