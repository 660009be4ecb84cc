"""One Engine.IO connection: the reader task, the serialised sender, namespaces."""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Any

import trio
import trio_websocket

from ..sansio import LocalProtocolError, ProtocolConfig, RemoteProtocolError
from ..sansio.socketio import (
    SocketPacket,
    SocketPacketType,
    decode_fields,
    encode_message,
    reconstruct_binary,
)
from ._engineio import MessageTransport
from ._errors import (
    ClientError,
    ConnectFailed,
    ConnectionClosed,
    ConnectRefused,
    Disconnected,
    DisconnectReason,
    fresh,
)
from ._socket import Received, Socket

__all__ = ["Client"]

_T = SocketPacketType
#: The decoder's limits, the server's defaults: our server sends nothing beyond them,
#: so a packet over one is a server bug worth failing loudly on.
_LIMITS = ProtocolConfig()


class _PendingConnect:
    __slots__ = ("abandoned", "done", "early", "error", "socket")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.socket: Socket | None = None
        self.error: ClientError | None = None
        # Events that came before the CONNECT reply (name, args, ack id). The
        # reference client buffers them too ("receiveBuffer"), and python-socketio
        # sends what its connect handler emits before it sends the CONNECT.
        self.early: list[tuple[str, tuple[Any, ...], int | None]] = []
        # Its caller stopped waiting after the CONNECT went out: a late acceptance
        # is answered with a DISCONNECT so that both sides agree.
        self.abandoned = False


class Client:
    """One Engine.IO connection, over which namespaces are joined.

    Made by :func:`open_client` (or :func:`open_client_on`); its reader task lives in
    the nursery of that context, so nothing outlives it. The reader answers each ping
    ``2`` with ``3`` at once, and declares the connection dead when no ping came for
    ``pingInterval + pingTimeout`` (Engine.IO v4, "Heartbeat").

    Attributes:
        sid: The Engine.IO session id.
        open_packet: The handshake, parsed: ``sid``, ``pingInterval``, ``pingTimeout``...
        shutdown_delay: ``reconnect_delay_ms`` of the last ``server:shutdown`` event, in
            seconds, or ``None``. The event itself is delivered like any other.
    """

    def __init__(
        self, transport: MessageTransport, open_packet: dict[str, Any], *, queue_size: int
    ) -> None:
        self.open_packet = open_packet
        self.sid: str = open_packet["sid"]
        self.shutdown_delay: float | None = None
        self._transport = transport
        self._queue_size = queue_size
        self._heartbeat_window = (open_packet["pingInterval"] + open_packet["pingTimeout"]) / 1000
        self._sockets: dict[str, Socket] = {}
        self._pending: dict[str, _PendingConnect] = {}
        # Every packet goes out under this lock so that a binary packet's frames are
        # never interleaved with another's; FIFO keeps packets in the order asked.
        # (Pongs skip it: they may come between attachments, PROTOCOL.md section 3.)
        self._send_lock = trio.StrictFIFOLock()
        self._closed: ConnectionClosed | None = None
        self._ended = trio.Event()
        self._reader_scope = trio.CancelScope()
        self._partial: tuple[SocketPacketType, str, Any, int | None, int] | None = None
        self._attachments: list[bytes] = []

    @property
    def sockets(self) -> Mapping[str, Socket]:
        """The connected namespaces (read-only)."""
        return types.MappingProxyType(self._sockets)

    @property
    def closed(self) -> ConnectionClosed | None:
        """Why the connection ended, or ``None`` while it is open."""
        return self._closed

    async def wait_closed(self) -> ConnectionClosed:
        """Wait until the connection ends; returns why (the server's close code in it)."""
        await self._ended.wait()
        assert self._closed is not None
        return self._closed

    def __repr__(self) -> str:
        state = "open" if self._closed is None else self._closed.reason
        return f"<Client sid={self.sid!r} {state} namespaces={list(self._sockets)}>"

    async def connect(
        self, namespace: str = "/", auth: Any = None, *, timeout: float | None = 10.0
    ) -> Socket:
        """Join ``namespace`` (Socket.IO CONNECT with ``auth``) and wait for the reply.

        Raises:
            ConnectRefused: the server answered CONNECT_ERROR.
            ConnectFailed: no reply within ``timeout`` seconds.
            ConnectionClosed: the connection ended first.
            LocalProtocolError: the namespace is joined, or being joined, already.

        If cancelled or timed out after the CONNECT went out, a late acceptance is
        answered with a DISCONNECT, and the namespace cannot be joined again until then.
        """
        if self._closed is not None:
            raise fresh(self._closed)
        if not namespace.startswith("/"):
            raise LocalProtocolError(f"a namespace starts with '/': {namespace!r}")
        if namespace in self._sockets or namespace in self._pending:
            raise LocalProtocolError(f"{namespace} is already connected or connecting")
        pending = _PendingConnect()
        self._pending[namespace] = pending
        sent = False
        try:
            await self._send_packet(SocketPacket(type=_T.CONNECT, namespace=namespace, data=auth))
            sent = True
            with trio.move_on_after(timeout if timeout is not None else float("inf")):
                await pending.done.wait()
        finally:
            if not pending.done.is_set():
                if sent:
                    pending.abandoned = True
                else:
                    del self._pending[namespace]
        if pending.socket is not None:
            return pending.socket
        if pending.error is not None:
            raise fresh(pending.error)
        raise ConnectFailed(f"no reply to CONNECT {namespace} within {timeout} s")

    # --- sending --------------------------------------------------------------------

    async def _send_packet(self, packet: SocketPacket) -> None:
        frames = encode_message(packet.type, packet.namespace, packet.data, packet.id)
        async with self._send_lock:
            if self._closed is not None:
                raise fresh(self._closed)
            sent = 0
            try:
                for frame in frames:
                    await self._transport.send_message(frame)
                    sent += 1
            except trio_websocket.ConnectionClosed as exc:
                raise fresh(self._end(_closed_by_websocket(exc.reason))) from None
            finally:
                if sent < len(frames):
                    # Interrupted (even by Cancelled) with part of the packet written:
                    # the server now expects the rest, so nothing else can follow.
                    self._end(
                        ConnectionClosed(
                            DisconnectReason.TRANSPORT_ERROR, detail="a send was interrupted"
                        )
                    )

    def _forget(self, namespace: str) -> None:
        self._sockets.pop(namespace, None)

    def _end(self, error: ConnectionClosed) -> ConnectionClosed:
        # Record why the connection ended (the first reason wins), stop the reader and
        # fail everyone waiting: sockets, ack waiters, pending CONNECTs. Synchronous,
        # so it can run in a finally of a cancelled task.
        if self._closed is not None:
            return self._closed
        self._closed = error
        self._ended.set()
        self._reader_scope.cancel()
        for socket in self._sockets.values():
            socket.end(error)
        self._sockets.clear()
        for pending in self._pending.values():
            if not pending.done.is_set():
                pending.error = error
                pending.done.set()
        self._pending.clear()
        return error

    # --- the reader -----------------------------------------------------------------

    async def _run_reader(self) -> None:
        # Never raises for anything the server or the network does: it records why the
        # connection ended, which every later call reports. Cancelled (the context was
        # left, or a send failed), it just stops: whoever cancelled it recorded why.
        with self._reader_scope:
            try:
                end = await self._read_until_closed()
            except trio_websocket.ConnectionClosed as exc:
                end = _closed_by_websocket(exc.reason)
            except RemoteProtocolError as exc:
                # The core's reply says how to close: 1002, or 1008 for a limit.
                end = ConnectionClosed(
                    DisconnectReason.PROTOCOL_ERROR,
                    code=exc.reply.websocket_close_code,
                    detail=str(exc),
                )
            except ConnectionClosed:
                return  # a send of the reader's failed; _send_packet recorded why
            self._end(end)

    async def _read_until_closed(self) -> ConnectionClosed:
        window = self._heartbeat_window
        with trio.CancelScope(deadline=trio.current_time() + window) as heartbeat:
            while True:
                frame = await self._transport.get_message()
                if isinstance(frame, bytes):
                    await self._receive_attachment(frame)
                    continue
                kind = frame[:1]
                if kind == "4":
                    await self._receive_packet(frame)
                elif kind == "2":
                    heartbeat.deadline = trio.current_time() + window
                    await self._transport.send_message("3" + frame[1:])
                elif kind == "1":
                    return ConnectionClosed(
                        DisconnectReason.SERVER_CLOSE, detail="Engine.IO close packet"
                    )
                elif kind != "6":  # a noop needs nothing
                    raise RemoteProtocolError(f"unexpected Engine.IO packet {frame[:16]!r}")
        return ConnectionClosed(DisconnectReason.PING_TIMEOUT, detail=f"no ping for {window} s")

    async def _receive_packet(self, frame: str) -> None:
        if self._partial is not None:
            raise RemoteProtocolError("text packet while binary attachments were expected")
        kind, namespace, data, ack_id, count = decode_fields(frame, _LIMITS, 1)
        if kind is _T.BINARY_EVENT or kind is _T.BINARY_ACK:
            if count:
                self._partial = (kind, namespace, data, ack_id, count)
                return
            data = reconstruct_binary(data, [])
        await self._dispatch(kind, namespace, data, ack_id)

    async def _receive_attachment(self, frame: bytes) -> None:
        if self._partial is None:
            raise RemoteProtocolError("binary message without a binary packet")
        self._attachments.append(frame)
        kind, namespace, data, ack_id, count = self._partial
        if len(self._attachments) == count:
            attachments, self._attachments, self._partial = self._attachments, [], None
            await self._dispatch(kind, namespace, reconstruct_binary(data, attachments), ack_id)

    async def _dispatch(
        self, kind: SocketPacketType, namespace: str, data: Any, ack_id: int | None
    ) -> None:
        if kind is _T.EVENT or kind is _T.BINARY_EVENT:
            name = data[0]
            if name == "server:shutdown":
                self._note_shutdown(data)
            socket = self._sockets.get(namespace)
            if socket is not None:
                await socket.deliver(
                    Received(name=name, args=tuple(data[1:]), ack_id=ack_id, socket=socket)
                )
            elif (pending := self._pending.get(namespace)) is not None:
                pending.early.append((name, tuple(data[1:]), ack_id))
            # Otherwise we left the namespace while this was in flight: drop it.
        elif kind is _T.ACK or kind is _T.BINARY_ACK:
            socket = self._sockets.get(namespace)
            if socket is not None:
                assert ack_id is not None  # the decoder refuses an ACK without one
                socket.resolve_ack(ack_id, tuple(data))
        elif kind is _T.DISCONNECT:
            socket = self._sockets.pop(namespace, None)
            if socket is not None:
                socket.end(Disconnected(DisconnectReason.SERVER_DISCONNECT, namespace))
        else:
            await self._connect_reply(kind, namespace, data)

    async def _connect_reply(self, kind: SocketPacketType, namespace: str, data: Any) -> None:
        pending = self._pending.pop(namespace, None)
        if pending is None:
            raise RemoteProtocolError(f"{kind.name} for {namespace}, which was not asked for")
        if kind is _T.CONNECT_ERROR:
            # {"message", "data"?} in v5; a bare string from older servers.
            if isinstance(data, dict):
                pending.error = ConnectRefused(str(data.get("message")), data.get("data"))
            else:
                pending.error = ConnectRefused(str(data))
            pending.done.set()
            return
        if pending.abandoned:
            await self._send_packet(SocketPacket(type=_T.DISCONNECT, namespace=namespace))
            return
        sid = data.get("sid") if isinstance(data, dict) else None
        socket = Socket(
            namespace,
            sid if isinstance(sid, str) else None,
            send=self._send_packet,
            forget=self._forget,
            queue_size=self._queue_size,
        )
        self._sockets[namespace] = socket
        pending.socket = socket
        pending.done.set()
        for name, args, ack_id in pending.early:
            await socket.deliver(Received(name=name, args=args, ack_id=ack_id, socket=socket))

    def _note_shutdown(self, data: list[Any]) -> None:
        payload = data[1] if len(data) > 1 else None
        delay = payload.get("reconnect_delay_ms") if isinstance(payload, dict) else None
        if isinstance(delay, int | float) and not isinstance(delay, bool) and delay >= 0:
            self.shutdown_delay = delay / 1000


def _closed_by_websocket(reason: trio_websocket.CloseReason | None) -> ConnectionClosed:
    if reason is None or reason.code == 1006:  # 1006: no close frame (RFC 6455 7.1.5)
        return ConnectionClosed(DisconnectReason.TRANSPORT_CLOSE, code=1006)
    return ConnectionClosed(DisconnectReason.SERVER_CLOSE, code=reason.code, detail=reason.reason)
