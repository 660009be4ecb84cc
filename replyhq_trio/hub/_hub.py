"""The hub: namespaces, rooms, broadcasts and the other nodes, for the whole process.

A broadcast is encoded once (Socket.IO text and WebSocket frame bytes) and handed to
every recipient's session, which writes it without waiting; a recipient that cannot
keep up is disconnected instead of slowing the others. Broadcasts also go to the
other nodes through the backplane.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Callable, Iterable
from typing import Any

import attrs
import trio

from ..ports import Backplane, Broadcast, RoomChange
from ..sansio import DisconnectReason, prepare_emit
from ._backplane import LocalBackplane
from ._errors import AckTimeout, SocketGone
from ._namespace import Namespace
from ._registry import RoomRegistry
from ._socket import Socket
from ._stats import HubStats

__all__ = ["Acks", "Hub"]

log = logging.getLogger("replyhq_trio.hub")

#: Handshake headers never told to other nodes (credentials).
_PRIVATE_HEADERS = frozenset({"authorization", "cookie", "x-api-key", "proxy-authorization"})


@attrs.frozen
class Acks:
    """The answers to a broadcast that asked every recipient for an ack.

    Attributes:
        answers: Each ack's first argument (None for an ack without one), in arrival
            order, from every node.
        complete: Whether every recipient answered in time (False: some did not, or a
            node did not say how many recipients it had).
    """

    answers: list[Any]
    complete: bool


class Hub:
    """Namespaces, rooms and cross-node broadcasts of one process.

    Args:
        node_id: This node's name among the nodes sharing a backplane.
        backplane: How broadcasts reach other nodes (none by default).
        stats: Where connections, disconnections and events are counted (metrics).
    """

    def __init__(
        self,
        *,
        node_id: str | None = None,
        backplane: Backplane | None = None,
        stats: HubStats | None = None,
    ) -> None:
        self.node_id = node_id or secrets.token_hex(6)
        self.backplane: Backplane = backplane or LocalBackplane()
        self.stats = stats or HubStats()
        self._namespaces: dict[str, Namespace] = {}
        self._rooms: dict[str, RoomRegistry[Socket]] = {}
        self._sockets: dict[str, dict[str, Socket]] = {}

    # --- namespaces -----------------------------------------------------------------

    def namespace(self, name: str) -> Namespace:
        """The namespace ``name``, created on first use."""
        namespace = self._namespaces.get(name)
        if namespace is None:
            namespace = self._namespaces[name] = Namespace(name)
            self._rooms[name] = RoomRegistry()
            self._sockets[name] = {}
        return namespace

    def get_namespace(self, name: str) -> Namespace | None:
        return self._namespaces.get(name)

    @property
    def namespaces(self) -> list[str]:
        return list(self._namespaces)

    def rooms(self, namespace: str) -> RoomRegistry[Socket]:
        return self._rooms[namespace]

    def sockets(self, namespace: str) -> list[Socket]:
        return list(self._sockets.get(namespace, {}).values())

    def socket(self, namespace: str, sid: str) -> Socket | None:
        return self._sockets.get(namespace, {}).get(sid)

    def new_socket_id(self) -> str:
        return secrets.token_urlsafe(15)

    def socket_joined(self, socket: Socket) -> None:
        self._sockets[socket.namespace][socket.sid] = socket
        # Every socket is alone in the room named by its id, so broadcasts can target
        # or exclude single sockets, here and on other nodes.
        self._rooms[socket.namespace].join(socket, socket.sid)
        self.stats.socket_connected(socket.namespace)

    def socket_left(self, socket: Socket) -> None:
        if self._sockets[socket.namespace].pop(socket.sid, None) is not None:
            reason = socket.disconnect_reason or DisconnectReason.SERVER_DISCONNECT
            self.stats.socket_disconnected(socket.namespace, reason)
        self._rooms[socket.namespace].leave_all(socket)

    # --- broadcasts -------------------------------------------------------------------

    async def emit(
        self,
        namespace: str,
        event: str,
        *args: Any,
        to: str | Iterable[str] | None = None,
        skip: Iterable[Socket | str] = (),
    ) -> int:
        """Send ``event(*args)`` to sockets of ``namespace`` on every node.

        Args:
            to: A room or rooms (a socket id is a room too); ``None`` means every
                socket of the namespace.
            skip: Sockets (or rooms) that must not receive it, such as the sender.

        Returns:
            How many local sockets it was written to.

        Never waits for a slow client: one over its backlog bound is disconnected.
        """
        broadcast = self._broadcast(namespace, event, args, to, skip)
        delivered = self.deliver(namespace, event, args, broadcast.rooms, broadcast.exclude)
        await self.backplane.publish(broadcast)
        return delivered

    def _broadcast(
        self,
        namespace: str,
        event: str,
        args: tuple[Any, ...],
        to: str | Iterable[str] | None,
        skip: Iterable[Socket | str],
    ) -> Broadcast:
        return Broadcast(
            origin=self.node_id,
            namespace=namespace,
            event=event,
            args=args,
            rooms=(to,) if isinstance(to, str) else tuple(to or ()),
            exclude=tuple(item.sid if isinstance(item, Socket) else item for item in skip),
        )

    def deliver(
        self,
        namespace: str,
        event: str,
        args: tuple[Any, ...],
        rooms: tuple[str, ...],
        exclude: tuple[str, ...],
    ) -> int:
        """Write an event to the local sockets it targets; returns how many."""
        registry = self._rooms.get(namespace)
        if registry is None:
            return 0
        if rooms:
            targets: Iterable[Socket] = registry.select(rooms, exclude)
        elif exclude:
            targets = set(registry.all_members()) - registry.select(exclude)
        else:
            targets = list(registry.all_members())
        prepared = prepare_emit(namespace, event, args)
        count = 0
        for socket in targets:
            socket.send_prepared(prepared)
            count += 1
        if count:
            self.stats.events_sent(event, count)
        return count

    def _targets(
        self, namespace: str, rooms: tuple[str, ...], exclude: tuple[str, ...]
    ) -> list[Socket]:
        registry = self._rooms.get(namespace)
        if registry is None:
            return []
        if rooms:
            return list(registry.select(rooms, exclude))
        if exclude:
            return list(set(registry.all_members()) - registry.select(exclude))
        return list(registry.all_members())

    async def emit_with_acks(
        self,
        namespace: str,
        event: str,
        *args: Any,
        timeout: float,
        to: str | Iterable[str] | None = None,
        skip: Iterable[Socket | str] = (),
    ) -> Acks:
        """Send ``event(*args)`` to sockets of ``namespace`` on every node, asking each
        for an ack; returns once all answered or ``timeout`` passed (see :class:`Acks`).
        """
        broadcast = self._broadcast(namespace, event, args, to, skip)
        answers: list[Any] = []
        local = [0, 0]  # recipients here, their answers
        remote_complete = False

        def counted(count: int) -> None:
            local[0] = count

        def answered(value: Any) -> None:
            local[1] += 1
            answers.append(value)

        async def remote() -> None:
            nonlocal remote_complete
            remote_complete = await self.backplane.ask(
                broadcast, timeout=timeout, answered=answers.append
            )

        async with trio.open_nursery() as nursery:
            nursery.start_soon(remote)
            await self.ask(broadcast, timeout=timeout, counted=counted, answered=answered)
        return Acks(answers, complete=remote_complete and local[1] == local[0])

    # --- what other nodes ask (the backplane's receiver) --------------------------------

    def receive(self, broadcast: Broadcast) -> None:
        """Another node's broadcast, written to this node's sockets."""
        if broadcast.origin == self.node_id:
            return
        self.deliver(
            broadcast.namespace, broadcast.event, broadcast.args, broadcast.rooms, broadcast.exclude
        )

    def has_room(self, namespace: str, room: str) -> bool:
        registry = self._rooms.get(namespace)
        return registry is not None and bool(registry.members(room))

    def room_names(self, namespace: str) -> list[str]:
        registry = self._rooms.get(namespace)
        return list(registry.room_sizes()) if registry is not None else []

    def socket_summaries(
        self, namespace: str, rooms: tuple[str, ...], exclude: tuple[str, ...]
    ) -> list[dict[str, Any]]:
        summaries = []
        for socket in self._targets(namespace, rooms, exclude):
            info = socket.handshake
            headers = {
                name: value
                for name, value in info.headers.items()
                if name.lower() not in _PRIVATE_HEADERS
            }
            summaries.append(
                {
                    "id": socket.sid,
                    # the auth payload holds credentials: never told to other nodes
                    "handshake": {
                        "headers": headers,
                        "address": info.remote_address,
                        "query": dict(info.query),
                        "auth": {},
                    },
                    "rooms": sorted(socket.rooms),
                }
            )
        return summaries

    def change_rooms(self, change: RoomChange) -> None:
        for socket in self._targets(change.namespace, change.rooms, change.exclude):
            for room in change.join:
                socket.join(room)
            for room in change.leave:
                socket.leave(room)
            if change.disconnect:
                if change.close:
                    socket.close_connection()
                else:
                    socket.disconnect()

    async def ask(
        self,
        broadcast: Broadcast,
        *,
        timeout: float,
        counted: Callable[[int], None],
        answered: Callable[[Any], None],
    ) -> None:
        """Send a broadcast to this node's selected sockets, asking each for an ack."""
        targets = self._targets(broadcast.namespace, broadcast.rooms, broadcast.exclude)
        counted(len(targets))

        async def one(socket: Socket) -> None:
            with contextlib.suppress(AckTimeout, SocketGone):
                args = await socket.emit_with_ack(broadcast.event, *broadcast.args, timeout=timeout)
                answered(args[0] if args else None)

        async with trio.open_nursery() as nursery:
            for socket in targets:
                nursery.start_soon(one, socket)

    # --- the hub's own tasks --------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the hub's background work (the backplane subscriber) until cancelled."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self._run_backplane)
            task_status.started()

    async def _run_backplane(self, *, task_status: trio.TaskStatus[None]) -> None:
        await self.backplane.run(self, task_status=task_status)
