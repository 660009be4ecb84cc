"""A client's socket in one namespace: what handlers see and act on."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import trio

from ..sansio import (
    Disconnect,
    DisconnectReason,
    Emit,
    LocalProtocolError,
    PreparedEmit,
    ServerConnection,
    prepare_emit,
)
from ._errors import AckTimeout, SocketGone

if TYPE_CHECKING:
    from ..session import EngineSession, HandshakeInfo
    from ._connection import SocketIOConnection
    from ._namespace import Namespace

__all__ = ["Socket"]


class Socket:
    """One client in one namespace.

    Handlers receive it; it sends to its client, joins rooms and disconnects. It
    never exposes frames or the transport.

    Attributes:
        sid: The socket's id in its namespace (the ``sid`` of the CONNECT reply);
            also the name of a room holding just this socket.
        namespace: The namespace's name.
        auth: The CONNECT payload the client sent.
        data: The application's per-socket data (set it in the connect handler).
    """

    __slots__ = ("_connection", "_disconnect_reason", "_namespace", "auth", "data", "sid")

    def __init__(
        self,
        connection: SocketIOConnection,
        namespace: Namespace,
        sid: str,
        auth: dict[str, Any] | None,
    ) -> None:
        self._connection = connection
        self._namespace = namespace
        self.sid = sid
        self.auth = auth
        self.data: dict[str, Any] = {}
        self._disconnect_reason: DisconnectReason | None = None

    def __repr__(self) -> str:
        return f"<Socket {self.namespace} {self.sid} of {self.connection_id}>"

    @property
    def namespace(self) -> str:
        return self._namespace.name

    @property
    def namespace_object(self) -> Namespace:
        """The namespace this socket is in, with its handlers."""
        return self._namespace

    @property
    def connection_id(self) -> str:
        """The Engine.IO session id: one per client connection, shared by its namespaces."""
        return self._connection.session.sid

    @property
    def handshake(self) -> HandshakeInfo:
        """The HTTP request that opened the connection (address, query, headers)."""
        return self._connection.session.info

    @property
    def transport(self) -> str:
        return self._connection.session.transport.value

    @property
    def connected(self) -> bool:
        return self._disconnect_reason is None and not self._connection.session.closed

    @property
    def disconnect_reason(self) -> DisconnectReason | None:
        return self._disconnect_reason

    @property
    def rooms(self) -> frozenset[str]:
        return self._connection.hub.rooms(self.namespace).rooms_of(self)

    def _session(self) -> EngineSession:
        session = self._connection.session
        if not self.connected:
            raise SocketGone(self._disconnect_reason or session.close_reason)
        return session

    async def emit(self, event: str, *args: Any) -> None:
        """Send ``event(*args)`` to this client.

        Waits while the client's backlog is over its bound (backpressure); does not
        checkpoint otherwise.

        Raises:
            SocketGone: the socket is disconnected.
        """
        session = self._session()
        await session.wait_for_room()
        session = self._session()
        try:
            session.send_event(Emit(namespace=self.namespace, name=event, args=args))
        except LocalProtocolError as exc:
            raise SocketGone(session.close_reason) from exc
        self._connection.hub.stats.events_sent(event)

    def emit_nowait(self, event: str, *args: Any) -> None:
        """Send ``event(*args)`` to this client without waiting for room: a client over
        its backlog bound is disconnected (``slow_consumer``), as a broadcast does. For
        notices that must not wait on one slow client, such as a shutdown's.

        Raises:
            SocketGone: the socket is disconnected.
        """
        if not self.connected:
            raise SocketGone(self._disconnect_reason)
        self.send_prepared(prepare_emit(self.namespace, event, args))
        self._connection.hub.stats.events_sent(event)

    async def emit_with_ack(self, event: str, *args: Any, timeout: float) -> tuple[Any, ...]:
        """Send ``event(*args)`` and wait for the client's ack; returns its arguments.

        Raises:
            AckTimeout: no ack within ``timeout`` seconds (a late one is ignored).
            SocketGone: the socket disconnected first; raised at once, not after the
                timeout.
        """
        session = self._session()
        await session.wait_for_room()
        session = self._session()
        core = session.core
        assert isinstance(core, ServerConnection)
        ack_id = core.allocate_ack_id(self.namespace)
        waiter = self._connection.expect_ack(self.namespace, ack_id)
        try:
            session.send_event(Emit(namespace=self.namespace, name=event, args=args, ack_id=ack_id))
            self._connection.hub.stats.events_sent(event)
            with trio.fail_after(timeout):
                return await waiter.wait()
        except trio.TooSlowError:
            self._connection.hub.stats.acks_timed_out += 1
            raise AckTimeout(f"no ack for {event!r} within {timeout} s") from None
        finally:
            self._connection.forget_ack(self.namespace, ack_id)

    def join(self, room: str) -> None:
        if self.connected:
            self._connection.hub.rooms(self.namespace).join(self, room)

    def leave(self, room: str) -> None:
        self._connection.hub.rooms(self.namespace).leave(self, room)

    def disconnect(self, reason: DisconnectReason = DisconnectReason.SERVER_DISCONNECT) -> None:
        """Disconnect this socket from its namespace (the connection stays)."""
        if not self.connected:
            return
        session = self._connection.session
        with contextlib.suppress(LocalProtocolError):
            session.send_event(Disconnect(namespace=self.namespace, reason=reason))
        self._connection.socket_left(self, reason)

    def close_connection(self) -> None:
        """Close the client's whole connection (every namespace of it), cleanly."""
        if self.connected:
            self._connection.session.close(DisconnectReason.SERVER_DISCONNECT)

    def send_prepared(self, prepared: PreparedEmit) -> None:
        """Write a broadcast encoded once (for the hub); never waits."""
        self._connection.session.send_prepared(prepared)

    def _mark_gone(self, reason: DisconnectReason) -> None:
        if self._disconnect_reason is None:
            self._disconnect_reason = reason
