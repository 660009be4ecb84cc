"""One connected namespace: emit, acks both ways, and the inbound event queue."""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from ..sansio import LocalProtocolError
from ..sansio.socketio import RESERVED_EVENT_NAMES, SocketPacket, SocketPacketType
from ._errors import AckTimeout, ConnectionClosed, Disconnected, DisconnectReason, fresh

__all__ = ["Received", "Socket"]

#: Sends one Socket.IO packet on the connection (the client's serialised sender).
SendPacket = Callable[[SocketPacket], Awaitable[None]]


@attrs.frozen(kw_only=True)
class Received:
    """An event the server emitted on a namespace.

    Attributes:
        name: The event name.
        args: Its arguments; binary attachments are back in place as ``bytes``.
        ack_id: The id the server asked an acknowledgement for, or ``None``.
    """

    name: str
    args: tuple[Any, ...]
    ack_id: int | None = None
    _socket: Socket = attrs.field(repr=False, eq=False, alias="socket")

    async def ack(self, *args: Any) -> None:
        """Answer the server's acknowledgement request with ``args``.

        Raises:
            LocalProtocolError: the server asked for no acknowledgement.
            Disconnected: the namespace (or the connection) has ended.

        Cancellation: as :meth:`Socket.emit`.
        """
        if self.ack_id is None:
            raise LocalProtocolError(f"the server asked no ack for {self.name!r}")
        await self._socket.send_ack(self.ack_id, *args)


class _AckWaiter:
    # An Event and a result slot: the cheapest one-shot future Trio offers.
    __slots__ = ("args", "done", "error")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.args: tuple[Any, ...] | None = None
        self.error: Disconnected | None = None


class Socket:
    """One namespace joined over a :class:`Client`; made by :meth:`Client.connect`.

    Inbound events wait in a bounded queue (``queue_size`` of the client). When it is
    full the connection's reader waits for :meth:`receive`, which also holds back
    acks, pings and every other namespace: read your sockets, or the connection
    ends in a ping timeout (on both sides). Events skipped by :meth:`wait_for` are
    kept, in order, in an unbounded buffer that :meth:`receive` and :meth:`wait_for`
    read first. Use one consuming task per socket.

    After the namespace ends, the events that arrived before are still returned;
    then :meth:`receive` raises :class:`Disconnected` (or :class:`ConnectionClosed`).

    Attributes:
        namespace: The namespace, e.g. ``"/client"``.
        sid: The namespace's session id from the server's CONNECT reply.
    """

    def __init__(
        self,
        namespace: str,
        sid: str | None,
        *,
        send: SendPacket,
        forget: Callable[[str], None],
        queue_size: int,
    ) -> None:
        self.namespace = namespace
        self.sid = sid
        self._send = send
        self._forget = forget
        self._inbox_send, self._inbox = trio.open_memory_channel[Received](queue_size)
        self._skipped: collections.deque[Received] = collections.deque()
        self._acks: dict[int, _AckWaiter] = {}
        self._next_ack_id = 0
        self._ended: Disconnected | None = None

    @property
    def connected(self) -> bool:
        """Whether the namespace is still connected."""
        return self._ended is None

    def __repr__(self) -> str:
        state = "connected" if self._ended is None else self._ended.reason
        return f"<Socket {self.namespace} sid={self.sid!r} {state}>"

    # --- sending --------------------------------------------------------------------

    async def emit(self, event: str, *args: Any) -> None:
        """Emit ``event`` with ``args`` (JSON values; ``bytes`` become attachments).

        Returns once the frames are handed to the WebSocket. If cancelled while
        waiting for its turn, nothing was sent; if cancelled while writing, the
        connection ends (``transport_error``), since the server may hold half a packet.

        Raises:
            Disconnected: the namespace has ended (:class:`ConnectionClosed`: the
                whole connection).
            LocalProtocolError: a reserved event name, or arguments that are not JSON.
        """
        self._check_can_emit(event)
        await self._send(
            SocketPacket(type=SocketPacketType.EVENT, namespace=self.namespace, data=[event, *args])
        )

    async def emit_with_ack(
        self, event: str, *args: Any, timeout: float | None = 10.0
    ) -> tuple[Any, ...]:
        """Emit ``event`` and wait for the server's acknowledgement.

        Ack ids count from 0 per namespace, as the reference client's do.

        Returns:
            The acknowledgement's arguments.

        Raises:
            AckTimeout: none arrived within ``timeout`` seconds (a late one is dropped).
            Disconnected: the namespace or the connection ended, before or while
                waiting; a waiter fails as soon as that happens, not at the timeout.
            LocalProtocolError: as for :meth:`emit`.

        If cancelled, the acknowledgement is no longer awaited (and dropped if it comes).
        """
        self._check_can_emit(event)
        ack_id = self._next_ack_id
        self._next_ack_id += 1
        waiter = _AckWaiter()
        self._acks[ack_id] = waiter
        try:
            await self._send(
                SocketPacket(
                    type=SocketPacketType.EVENT,
                    namespace=self.namespace,
                    data=[event, *args],
                    id=ack_id,
                )
            )
            with trio.move_on_after(timeout if timeout is not None else float("inf")):
                await waiter.done.wait()
        finally:
            del self._acks[ack_id]
        if waiter.args is not None:
            return waiter.args
        if waiter.error is not None:
            raise fresh(waiter.error)
        raise AckTimeout(f"no ack for {event!r} on {self.namespace} within {timeout} s")

    async def send_ack(self, ack_id: int, *args: Any) -> None:
        """Acknowledge the server's event ``ack_id`` (see :meth:`Received.ack`).

        Raises and behaves under cancellation as :meth:`emit` does.
        """
        if self._ended is not None:
            raise fresh(self._ended)
        await self._send(
            SocketPacket(
                type=SocketPacketType.ACK, namespace=self.namespace, data=list(args), id=ack_id
            )
        )

    async def disconnect(self) -> None:
        """Leave the namespace (Socket.IO DISCONNECT); the connection stays.

        Idempotent. Pending :meth:`emit_with_ack` calls fail with :class:`Disconnected`
        at once. If cancelled, the namespace is left on this side; the server may not
        have been told.
        """
        if self._ended is not None:
            await trio.lowlevel.checkpoint()
            return
        self.end(Disconnected(DisconnectReason.CLIENT_DISCONNECT, self.namespace))
        self._forget(self.namespace)
        # The connection ending (ConnectionClosed) leaves every namespace anyway.
        with contextlib.suppress(ConnectionClosed):
            await self._send(
                SocketPacket(type=SocketPacketType.DISCONNECT, namespace=self.namespace)
            )

    def _check_can_emit(self, event: str) -> None:
        if self._ended is not None:
            raise fresh(self._ended)
        if event in RESERVED_EVENT_NAMES:
            # The server would close the whole connection (PROTOCOL.md section 3).
            raise LocalProtocolError(f"{event!r} is a reserved event name")

    # --- receiving ------------------------------------------------------------------

    async def receive(self) -> Received:
        """The next event from the server, skipped ones (see :meth:`wait_for`) first.

        Raises:
            Disconnected: the namespace ended and every earlier event was returned
                (:class:`ConnectionClosed` when the whole connection ended).

        If cancelled, no event is lost.
        """
        if self._skipped:
            await trio.lowlevel.checkpoint()
            return self._skipped.popleft()
        return await self._next_from_inbox()

    async def wait_for(self, event: str, *, timeout: float | None = None) -> Received:
        """The next event named ``event``; the others are kept for :meth:`receive`.

        Raises:
            trio.TooSlowError: none arrived within ``timeout`` seconds.
            Disconnected: the namespace ended first.

        If cancelled (or timed out), every event it read stays buffered, in order.
        """
        for index, received in enumerate(self._skipped):
            if received.name == event:
                del self._skipped[index]
                await trio.lowlevel.checkpoint()
                return received
        with trio.fail_after(timeout if timeout is not None else float("inf")):
            while True:
                received = await self._next_from_inbox()
                if received.name == event:
                    return received
                self._skipped.append(received)

    async def _next_from_inbox(self) -> Received:
        try:
            return await self._inbox.receive()
        except trio.EndOfChannel:
            assert self._ended is not None
            raise fresh(self._ended) from None

    # --- driven by the client's reader ----------------------------------------------

    async def deliver(self, received: Received) -> None:
        """Queue an inbound event, waiting while the queue is full (the reader's side)."""
        # ClosedResourceError: the namespace ended (maybe while we waited), so nobody
        # will read the event.
        with contextlib.suppress(trio.ClosedResourceError):
            try:
                self._inbox_send.send_nowait(received)
            except trio.WouldBlock:
                await self._inbox_send.send(received)

    def resolve_ack(self, ack_id: int, args: tuple[Any, ...]) -> None:
        """Wake the :meth:`emit_with_ack` waiting for ``ack_id``; a late ack is dropped."""
        waiter = self._acks.get(ack_id)
        if waiter is not None and not waiter.done.is_set():
            waiter.args = args
            waiter.done.set()

    def end(self, error: Disconnected) -> None:
        """Record why the namespace ended, fail every ack waiter, close the queue.

        The first reason wins; later calls do nothing.
        """
        if self._ended is not None:
            return
        self._ended = error
        self._inbox_send.close()
        for waiter in self._acks.values():
            if not waiter.done.is_set():
                waiter.error = error
                waiter.done.set()
