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

import logging
from collections.abc import Callable
from typing import Any

import attrs
import msgpack
import trio

from ..ports import BackplaneStats, BackplaneUnavailable, Broadcast, Receiver
from . import _adapter_wire as wire
from ._redis_publisher import Publisher
from ._resp import (
    FAILURES,
    Reply,
    RespConnection,
    RespError,
    encode_command,
    first_failure,
    parse_redis_url,
)

__all__ = ["RedisBackplane", "RedisBackplaneConfig"]

log = logging.getLogger("replyhq_trio.backplane")


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
        self.uid = uid or wire.new_id()
        self.stats = BackplaneStats()
        config = self._config
        self._publisher = Publisher(
            self._address,
            name=f"replyhq-pub-{self.uid}",
            stats=self.stats,
            queue=config.queue,
            batch=config.batch,
            connect_timeout=config.connect_timeout,
            reconnect_min=config.reconnect_min,
            reconnect_max=config.reconnect_max,
        )
        self._channels: dict[str, wire.Channels] = {}
        self._asks: dict[str, wire.Ask] = {}
        self._receiver: Receiver | None = None
        self._subscribed = False
        self._heard_at = 0.0
        self._connection_scope: trio.CancelScope | None = None
        self._probe_room = f"replyhq:probe:{self.uid}"

    @property
    def where(self) -> str:
        return self._address.describe()

    def _channels_of(self, namespace: str) -> wire.Channels:
        channels = self._channels.get(namespace)
        if channels is None:
            channels = self._channels[namespace] = wire.Channels.of(
                self._config.key, namespace, self.uid
            )
        return channels

    # --- the backplane ------------------------------------------------------------------

    async def run(self, receiver: Receiver, *, task_status: trio.TaskStatus[None]) -> None:
        self._receiver = receiver
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._publisher.run)
            await nursery.start(self._subscriber)
            nursery.start_soon(self._prober)
            task_status.started()

    async def publish(self, broadcast: Broadcast) -> None:
        suffix, message = wire.broadcast_message(self.uid, broadcast)
        channel = self._channels_of(broadcast.namespace).broadcast + suffix
        self._publisher.send(encode_command("PUBLISH", channel, message))

    async def ask(
        self, broadcast: Broadcast, *, timeout: float, answered: Callable[[Any], None]
    ) -> bool:
        channels = self._channels_of(broadcast.namespace)
        others = await self._server_count(channels) - 1
        if others <= 0:
            return others == 0
        request_id = wire.new_id()
        ask = self._asks[request_id] = wire.Ask(others, answered)
        try:
            request = wire.ask_request(self.uid, request_id, broadcast, timeout)
            self._publisher.send(encode_command("PUBLISH", channels.request, request))
            with trio.move_on_after(timeout):
                await ask.done.wait()
            return ask.done.is_set()
        finally:
            del self._asks[request_id]

    async def check(self) -> None:
        await trio.lowlevel.checkpoint()
        if not self._subscribed:
            raise BackplaneUnavailable(f"not subscribed to Redis at {self.where}")
        if not self._publisher.up:
            raise BackplaneUnavailable(f"cannot publish to Redis at {self.where}")

    async def server_count(self, namespace: str) -> int:
        """How many nodes (this one included) serve ``namespace``, by Redis's count of
        the request channel's subscribers; 0 when Redis does not answer."""
        return await self._server_count(self._channels_of(namespace))

    async def _server_count(self, channels: wire.Channels) -> int:
        value = await self._publisher.call(
            encode_command("PUBSUB", "NUMSUB", channels.request),
            timeout=self._config.requests_timeout,
        )
        if isinstance(value, list) and len(value) == 2 and isinstance(value[1], int):
            return value[1]
        return 0

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
            except* FAILURES as failures:
                if not warned:
                    warned = True
                    log.warning(
                        "Redis at %s is unreachable (%s): broadcasts reach this node's "
                        "sockets only until it is back",
                        self.where,
                        first_failure(failures),
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
            probe = Broadcast(
                origin=self.uid,
                namespace=namespace,
                event="replyhq:probe",
                args=(sequence,),
                rooms=(self._probe_room,),
            )
            _suffix, message = wire.broadcast_message(self.uid, probe)
            self._publisher.send(encode_command("PUBLISH", channel, message))

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
        broadcast = wire.decode_broadcast(data, namespace, self.uid)
        if broadcast is not None:  # None: ours (delivered here already), or not for us
            self.stats.received += 1
            receiver.receive(broadcast)

    def _on_message(self, channel: str, data: bytes, nursery: trio.Nursery) -> None:
        for namespace, channels in self._channels.items():
            if channel == channels.request:
                self._on_request(namespace, wire.decode(data), nursery)
                return
            if channel in (channels.response, channels.own_response):
                response = wire.decode(data)
                if isinstance(response, dict):
                    ask = self._asks.get(str(response.get("requestId")))
                    if ask is not None:
                        ask.on_response(response)
                return

    def _respond(self, namespace: str, request: dict[str, Any], body: dict[str, Any]) -> None:
        asker = request.get("uid")
        channel = (
            f"{self._config.key}-response#{namespace}#{asker}#"
            if isinstance(asker, str) and asker
            else self._channels[namespace].response
        )
        self._publisher.send(encode_command("PUBLISH", channel, wire.encode_response(body)))

    def _on_request(self, namespace: str, request: Any, nursery: trio.Nursery) -> None:
        if not isinstance(request, dict):
            raise ValueError("a request is not a map")
        receiver = self._receiver
        assert receiver is not None
        kind = request.get("type")
        request_id = request.get("requestId")
        if kind in (wire.REMOTE_JOIN, wire.REMOTE_LEAVE, wire.REMOTE_DISCONNECT):
            change = wire.room_change(namespace, kind, request)
            if change is not None:
                receiver.change_rooms(change)
        elif request.get("uid") == self.uid:
            return  # the asker answers its own requests itself
        elif kind == wire.ALL_ROOMS:
            rooms = receiver.room_names(namespace)
            self._respond(namespace, request, {"requestId": request_id, "rooms": rooms})
        elif kind == wire.REMOTE_FETCH:
            selected, exclude = wire.opts_of(request.get("opts", {}))
            sockets = receiver.socket_summaries(namespace, selected, exclude)
            self._respond(namespace, request, {"requestId": request_id, "sockets": sockets})
        elif kind == wire.SOCKETS:
            selected = wire.rooms_of(request.get("rooms", []))
            ids = [s["id"] for s in receiver.socket_summaries(namespace, selected, ())]
            self._respond(namespace, request, {"requestId": request_id, "sockets": ids})
        elif kind == wire.SERVER_SIDE_EMIT:
            # This server has no server-side event handlers; an asker waiting for every
            # node's answer gets an empty one rather than a timeout.
            if request_id is not None:
                answer = {"type": wire.SERVER_SIDE_EMIT, "requestId": request_id}
                self._respond(namespace, request, answer)
        elif kind == wire.BROADCAST:
            asked = wire.asked_broadcast(namespace, request)
            if asked is not None:
                nursery.start_soon(self._answer_ask, namespace, request, *asked)

    async def _answer_ask(
        self, namespace: str, request: dict[str, Any], broadcast: Broadcast, timeout: float
    ) -> None:
        receiver = self._receiver
        assert receiver is not None
        request_id = request["requestId"]

        def counted(count: int) -> None:
            answer = {
                "type": wire.BROADCAST_CLIENT_COUNT,
                "requestId": request_id,
                "clientCount": count,
            }
            self._respond(namespace, request, answer)

        def answered(value: Any) -> None:
            answer = {"type": wire.BROADCAST_ACK, "requestId": request_id, "packet": value}
            self._respond(namespace, request, answer)

        await receiver.ask(broadcast, timeout=timeout, counted=counted, answered=answered)
