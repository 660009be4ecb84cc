"""One Engine.IO session on the server: the protocol core, its transport, its tasks.

The session is where the sans-IO core meets Trio. Every frame from the client goes
through :meth:`EngineSession.receive`; every frame to the client through
:meth:`EngineSession.send_frames` (or :meth:`EngineSession.send_prepared` for a
broadcast encoded once). The transport underneath is a WebSocket (an
:class:`~replyhq_trio.transport.Outlet` for writes, a reader task for reads) or a
long-polling queue, and changes from the second to the first on an upgrade.

Tasks of a session, all in the nursery of :meth:`EngineSession.run`:

* the reader: reads the WebSocket and feeds the core (in the parent task for a
  WebSocket session; a child after an upgrade; HTTP requests play its part on
  long-polling);
* the timer: sleeps until the core's next deadline (a ping is due, a pong is late),
  then runs it;
* the writer: drains the outlet's backlog, and exists only while there is one.

Server-to-client acks need no task of their own: each waiter has its deadline at
the call site (``trio.fail_after``) and every pending one fails when the session ends.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import attrs
import trio

from ..config import ServerConfig
from ..sansio import (
    CloseConnection,
    ConnectionClosed,
    DisconnectReason,
    EngineConnection,
    Event,
    Frame,
    LocalProtocolError,
    PreparedEmit,
    RemoteProtocolError,
    ServerConnection,
    Transport,
    UpgradeState,
    WebSocketCloseCode,
)
from ..sansio.websocket import (
    CloseReceived,
    FrameDecoder,
    PingReceived,
    Role,
    encode_binary,
    encode_close,
    encode_pong,
    encode_text,
)
from ..transport import Outlet, PollingQueue

__all__ = ["CoreConnection", "EngineSession", "HandshakeInfo", "SessionHandler"]

log = logging.getLogger("replyhq_trio.session")

_READ_SIZE = 65536


class CoreConnection(Protocol):
    """What the session needs of a protocol core (ServerConnection or EngineConnection)."""

    @property
    def sid(self) -> str: ...
    @property
    def closed(self) -> bool: ...
    @property
    def transport(self) -> Transport: ...

    def receive_frame(self, frame: Frame, now: float) -> Event | None: ...
    def frames_to_send(self) -> list[Frame]: ...
    def get_timer(self) -> float | None: ...
    def handle_timer(self, now: float) -> ConnectionClosed | None: ...
    def send(self, event: Any) -> list[Frame]: ...
    def transport_closed(self, reason: DisconnectReason = ...) -> ConnectionClosed | None: ...
    def send_failed(self) -> ConnectionClosed | None: ...
    def begin_upgrade(self) -> None: ...
    def receive_probe_frame(self, frame: Frame, now: float) -> list[Frame]: ...
    def abort_upgrade(self) -> None: ...


class SessionHandler(Protocol):
    """What runs above a session: the Socket.IO layer, or a bare Engine.IO app."""

    def on_event(self, session: EngineSession, event: Event) -> None:
        """An event from the client. Called from the reader: must not block."""

    def is_full(self) -> bool:
        """Whether the handler has as much unhandled input as it accepts (backpressure).

        The reader stops feeding it frames, and stops reading the client, until
        :meth:`wait_ready` returns: a client that sends faster than its events are
        handled is slowed by TCP instead of growing a queue.
        """

    async def wait_ready(self) -> None:
        """Wait until the handler accepts input again; at once when it does."""

    async def on_close(self, session: EngineSession, reason: DisconnectReason) -> None:
        """The session ended; called once, shielded, with a deadline."""


@attrs.frozen(kw_only=True)
class HandshakeInfo:
    """What the handshake request said, for the application (logs, auth, limits)."""

    remote_address: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    transport: Transport


@attrs.define(eq=False)
class _WebSocket:
    stream: trio.SocketStream
    decoder: FrameDecoder
    outlet: Outlet


class EngineSession:
    """One client's Engine.IO session and its transport.

    Args:
        core: The protocol core for this session.
        handler: Receives the core's events and the end of the session.
        config: Server settings (backlog bound, close timeout).
        info: The handshake request.
    """

    __slots__ = (
        "_close_code",
        "_closed",
        "_config",
        "_nursery",
        "_polling",
        "_reader_scope",
        "_released",
        "_timer_scope",
        "_timer_target",
        "_upgrade_settled",
        "_websocket",
        "close_reason",
        "core",
        "handler",
        "info",
        "sid",
    )

    def __init__(
        self,
        *,
        core: CoreConnection,
        handler: SessionHandler,
        config: ServerConfig,
        info: HandshakeInfo,
    ) -> None:
        self.core = core
        self.sid = core.sid
        self.handler = handler
        self.info = info
        self._config = config
        self._websocket: _WebSocket | None = None
        self._polling: PollingQueue | None = None
        if core.transport is Transport.POLLING:
            self._polling = PollingQueue(max_bytes=config.max_backlog_bytes)
        self._nursery: trio.Nursery | None = None
        self._closed = trio.Event()
        self._close_code = WebSocketCloseCode.NORMAL
        #: Why the session ended, once it has.
        self.close_reason: DisconnectReason | None = None
        self._timer_scope: trio.CancelScope | None = None
        self._timer_target: float | None = None
        self._reader_scope: trio.CancelScope | None = None
        # Only an upgrade uses these two: made when it starts.
        self._released: trio.Event | None = None
        self._upgrade_settled: trio.lowlevel.ParkingLot | None = None

    # --- state ------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    @property
    def transport(self) -> Transport:
        return Transport.WEBSOCKET if self._websocket is not None else Transport.POLLING

    @property
    def polling(self) -> PollingQueue | None:
        """The long-polling queue while the session polls, else ``None``."""
        return self._polling

    @property
    def backlog_bytes(self) -> int:
        if self._websocket is not None:
            return self._websocket.outlet.backlog_bytes
        return self._polling.queued_bytes if self._polling is not None else 0

    async def wait_closed(self) -> None:
        await self._closed.wait()

    # --- output -----------------------------------------------------------------

    def send_frames(self, frames: list[Frame]) -> None:
        """Write Engine.IO frames to the client, in order, without blocking."""
        if not frames or self.closed:
            return
        websocket = self._websocket
        if websocket is not None:
            if len(frames) == 1:  # nearly every packet: no list, no writev
                frame = frames[0]
                websocket.outlet.write(
                    encode_text(frame) if isinstance(frame, str) else encode_binary(frame)
                )
            else:
                websocket.outlet.writev(
                    [encode_text(f) if isinstance(f, str) else encode_binary(f) for f in frames]
                )
        elif self._polling is not None:
            self._polling.push(frames)

    def send_event(self, event: Event) -> None:
        """Encode ``event`` with the core and write it.

        Raises:
            LocalProtocolError: the event is illegal now (see ``ServerConnection.send``).
        """
        self.send_frames(self.core.send(event))

    def send_prepared(self, prepared: PreparedEmit) -> None:
        """Deliver a broadcast encoded once; never waits.

        A client whose backlog is over its bound is disconnected (``slow_consumer``)
        rather than allowed to grow memory or slow the broadcaster.
        """
        core = self.core
        if not isinstance(core, ServerConnection) or not core.is_connected(prepared.namespace):
            return
        websocket = self._websocket
        if websocket is not None:
            if websocket.outlet.over_limit:
                self.abort(DisconnectReason.SLOW_CONSUMER)
                return
            websocket.outlet.write(prepared.websocket_bytes)
        elif self._polling is not None:
            if self._polling.over_limit:
                self.abort(DisconnectReason.SLOW_CONSUMER)
                return
            self._polling.push(core.send_prepared(prepared))

    async def wait_for_room(self) -> None:
        """Wait while the client's backlog is over its bound (an emit to one client)."""
        websocket = self._websocket
        if websocket is not None:
            await websocket.outlet.wait_for_room()
        elif self._polling is not None:
            await self._polling.wait_for_room()

    def _flush(self) -> None:
        frames = self.core.frames_to_send()
        if frames:
            self.send_frames(frames)

    # --- input ------------------------------------------------------------------

    def receive(self, frame: Frame, now: float) -> RemoteProtocolError | None:
        """Feed one frame of the session's transport to the core and act on the result.

        Returns the protocol error the frame caused (already acted on), for a caller
        that answers over HTTP.
        """
        if self.closed:
            return None
        try:
            event = self.core.receive_frame(frame, now)
        except RemoteProtocolError as exc:
            self.refuse(exc)
            return exc
        except LocalProtocolError:
            return None  # the core closed in the meantime; the session is ending
        if event is None or isinstance(event, ConnectionClosed):
            # Only frames that are not events (a pong, a close) queue frames of the
            # core's own or move its timer; the events of every message skip this.
            self._flush()
            if event is not None:
                self._finish(event.reason)
                return None
            self._retime()
            return None
        self.handler.on_event(self, event)
        return None

    async def wait_ready(self) -> None:
        """Wait while the handler has too much unhandled input (see SessionHandler)."""
        if self.handler.is_full():
            await self.handler.wait_ready()

    def refuse(self, error: RemoteProtocolError) -> None:
        """Act on a protocol error: send its reply, and close if it is fatal."""
        if self.closed:
            return
        frames = list(error.reply.frames)
        if error.reply.close is not None and self._polling is not None and "1" not in frames:
            frames.append("1")  # a pending poll learns the session is over, not a noop
        self.send_frames(frames)
        if error.reply.close is None:
            return
        log.info("session %s: protocol error: %s", self.sid, error)
        self._close_code = WebSocketCloseCode(error.reply.websocket_close_code)
        if self._websocket is not None:
            self._websocket.outlet.write(encode_close(self._close_code))
        if not self.core.closed:
            self.core.transport_closed(error.reply.close)
        self._finish(error.reply.close)

    # --- timers -----------------------------------------------------------------

    def _retime(self) -> None:
        # The timer task sleeps until the core's deadline; a pong moves it.
        target = self.core.get_timer()
        if target != self._timer_target:
            self._timer_target = target
            if self._timer_scope is not None:
                self._timer_scope.deadline = math.inf if target is None else target

    def catch_up(self, now: float) -> None:
        """Run the core's timer now if its deadline has passed."""
        target = self.core.get_timer()
        if target is not None and target <= now and not self.closed:
            self._on_timer(now)

    def _on_timer(self, now: float) -> None:
        closed = self.core.handle_timer(now)
        self._flush()
        if closed is not None:
            log.info("session %s: %s", self.sid, closed.reason.value)
            if self._websocket is not None:
                self._websocket.outlet.write(encode_close(WebSocketCloseCode.NORMAL))
            self._finish(closed.reason)
        else:
            self._retime()

    async def _run_timer(self) -> None:
        """Sleep until the core's next deadline, run it, repeat; ends with the session."""
        while not self.closed:
            target = self.core.get_timer()
            if target is None:
                return
            self._timer_target = target
            with trio.CancelScope(deadline=target) as scope:
                self._timer_scope = scope
                await trio.sleep_forever()
            self._timer_scope = None
            if self._closed.is_set():  # a method call: the session may have ended while asleep
                return
            self._on_timer(trio.current_time())

    # --- closing ----------------------------------------------------------------

    def close(
        self,
        reason: DisconnectReason = DisconnectReason.SERVER_DISCONNECT,
        *,
        code: int = WebSocketCloseCode.NORMAL,
    ) -> None:
        """End the session from the server's side, cleanly.

        Sends a Socket.IO DISCONNECT for every joined namespace, then the Engine.IO
        close (on long-polling) or a WebSocket close frame with ``code``. Returns at
        once; :meth:`run` finishes the close.
        """
        if self.closed:
            return
        self.send_frames(self.core.send(CloseConnection(reason=reason)))
        self._close_code = WebSocketCloseCode(code)
        if self._websocket is not None:
            self._websocket.outlet.write(encode_close(code))
        self._finish(reason)

    def abort(self, reason: DisconnectReason) -> None:
        """End the session without a goodbye (the transport failed, or cannot keep up)."""
        if self.closed:
            return
        if not self.core.closed:
            self.core.transport_closed(reason)
        if self._websocket is not None:
            self._websocket.outlet.close()
        self._finish(reason)

    def _finish(self, reason: DisconnectReason) -> None:
        if self.closed:
            return
        self.close_reason = reason
        self._closed.set()
        self._settle_upgrade()
        if self._polling is not None:
            self._polling.close()
        if self._reader_scope is not None:
            self._reader_scope.cancel()
        if self._timer_scope is not None:
            self._timer_scope.cancel()

    def start_soon(self, fn: Callable[..., Awaitable[object]], *args: object) -> None:
        """Run a task in the session's nursery: it ends when the session does."""
        if self._nursery is None or self.closed:
            return
        self._nursery.start_soon(fn, *args)

    def _outlet_failed(self) -> None:
        if not self.closed:
            self.core.send_failed()
            self._finish(DisconnectReason.TRANSPORT_ERROR)

    # --- the WebSocket ------------------------------------------------------------

    def _attach_websocket(self, stream: trio.SocketStream, pending: bytes) -> _WebSocket:
        assert self._nursery is not None
        outlet = Outlet(
            stream.socket,
            self._nursery,
            max_backlog=self._config.max_backlog_bytes,
            on_failure=self._outlet_failed,
        )
        decoder = FrameDecoder(role=Role.SERVER, max_message_size=self._config.protocol.max_payload)
        if pending:
            decoder.receive_data(pending)
        websocket = _WebSocket(stream=stream, decoder=decoder, outlet=outlet)
        self._websocket = websocket
        return websocket

    async def serve_upgraded(self, stream: trio.SocketStream, decoder: FrameDecoder) -> None:
        """Carry the session on the WebSocket an upgrade completed on.

        Runs in the task that owns ``stream`` (the one that accepted it), reading
        until the session ends, then waits until the session released the transport
        (its goodbye written), so the stream outlives every write to it. Frames still
        queued for long-polling go out on the WebSocket first.
        """
        websocket = self._attach_websocket(stream, b"")
        websocket.decoder = decoder
        polling = self._polling
        if polling is not None:
            # Noops only end polls (the probe's one was for the pending GET); the
            # rest was meant for the client and goes first on the WebSocket.
            leftover = [frame for frame in polling.take() if frame != "6"]
            polling.close()
            self._polling = None
            self.send_frames(leftover)
        await self._read_websocket(websocket)
        if self._released is not None:
            await self._released.wait()

    async def _read_websocket(self, websocket: _WebSocket) -> None:
        """Read the WebSocket and feed the core until either side ends the session.

        Waits for readability, then reads with one non-blocking system call: the
        stream's ``receive_some`` tries a read first, which on a request-response
        connection almost always fails with EAGAIN before waiting (measured: 22 %
        more acks per second this way).
        """
        sock = websocket.stream.socket
        fd = sock.fileno()
        decoder = websocket.decoder
        outlet = websocket.outlet
        with trio.CancelScope() as scope:
            self._reader_scope = scope
            if self.closed:
                return
            while True:
                self._dispatch_websocket(decoder, outlet)
                if self._closed.is_set():
                    return
                if self.handler.is_full():
                    await self.handler.wait_ready()
                    continue  # frames already read come first
                if outlet.over_limit:
                    # A client that does not read its answers (acks, pongs) is not read
                    # either: what it makes us write stays within the backlog's bound.
                    await outlet.wait_for_room()
                    continue
                await trio.lowlevel.wait_readable(sock)
                try:
                    data = os.read(fd, _READ_SIZE)
                except BlockingIOError:
                    continue
                except OSError:
                    self.abort(DisconnectReason.TRANSPORT_ERROR)
                    return
                if not data:
                    self.abort(DisconnectReason.TRANSPORT_CLOSE)
                    return
                decoder.receive_data(data)

    def _dispatch_websocket(self, decoder: FrameDecoder, outlet: Outlet) -> None:
        now = trio.current_time()
        try:
            for message in decoder.events():
                if isinstance(message, str | bytes):
                    self.receive(message, now)
                elif isinstance(message, PingReceived):
                    outlet.write(encode_pong(message.payload))
                elif isinstance(message, CloseReceived):
                    # Echo the close (RFC 6455 5.5.1), then the session is over.
                    code = message.code if message.code != 1005 else WebSocketCloseCode.NORMAL
                    outlet.write(encode_close(code))
                    self.abort(DisconnectReason.CLIENT_CLOSE)
                if self.closed or self.handler.is_full() or outlet.over_limit:
                    return  # the decoder keeps the rest until there is room
        except RemoteProtocolError as exc:
            self.refuse(exc)

    # --- the session's life -------------------------------------------------------

    async def run(
        self,
        *,
        websocket: trio.SocketStream | None = None,
        pending: bytes = b"",
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run the session until it ends; the caller's task is its parent.

        Args:
            websocket: The stream of a WebSocket session, read in this task. Without
                it the session is long-polling (HTTP requests feed it) until an
                upgrade hands it a WebSocket.
            pending: Bytes read past the WebSocket handshake.

        On cancellation (a shutdown past its grace period) the session still closes
        its transport and tells its handler, shielded and within ``close_timeout``.
        """
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._run_timer)
            try:
                if websocket is not None:
                    attached = self._attach_websocket(websocket, pending)
                    self._flush()
                    task_status.started()
                    await self._read_websocket(attached)
                else:
                    task_status.started()
                await self._closed.wait()
            finally:
                if not self.closed:
                    self.close(DisconnectReason.SERVER_SHUTDOWN, code=WebSocketCloseCode.GOING_AWAY)
                # One deadline for the whole goodbye: the transport's last bytes and the
                # handler's disconnect work run side by side, shielded from a shutdown's
                # cancellation but never longer than close_timeout together.
                with (
                    trio.CancelScope(shield=True),
                    trio.move_on_after(self._config.close_timeout),
                ):
                    async with trio.open_nursery() as goodbye:
                        goodbye.start_soon(self._release_transport)
                        goodbye.start_soon(
                            self.handler.on_close,
                            self,
                            self.close_reason or DisconnectReason.TRANSPORT_CLOSE,
                        )
                if self._websocket is not None:
                    self._websocket.outlet.close()
                if self._released is not None:
                    self._released.set()
                nursery.cancel_scope.cancel()

    async def _release_transport(self) -> None:
        websocket = self._websocket
        if websocket is None:
            if self._polling is not None and self.close_reason is DisconnectReason.CLIENT_CLOSE:
                # The noop owed to the client's concurrent poll (see the endpoint).
                await self._polling.wait_taken()
            return
        try:
            if not websocket.outlet.closed:
                await websocket.outlet.drain()
        finally:
            # Closed even when the drain is cut short: an emit parked for room must be
            # released, and the socket must not wait for a reader that is gone.
            websocket.outlet.close()
            await websocket.stream.aclose()

    # --- the upgrade ------------------------------------------------------------------

    def begin_upgrade(self) -> None:
        """A WebSocket with this sid arrived. Raises LocalProtocolError if refused."""
        if self.closed:
            raise LocalProtocolError("the session is closed")
        self.core.begin_upgrade()
        self._released = trio.Event()
        self._upgrade_settled = trio.lowlevel.ParkingLot()

    def receive_probe(self, frame: Frame, now: float) -> list[Frame]:
        """A frame of the probing WebSocket; returns the frames to write on it."""
        try:
            replies = self.core.receive_probe_frame(frame, now)
        finally:
            if not self.upgrading:
                self._settle_upgrade()
        self._flush()
        return replies

    def abort_upgrade(self) -> None:
        if not self.core.closed:
            self.core.abort_upgrade()
        self._settle_upgrade()

    @property
    def upgrading(self) -> bool:
        """Whether a WebSocket is being probed for an upgrade."""
        core = self.core
        return isinstance(core, ServerConnection | EngineConnection) and core.upgrade_state in (
            UpgradeState.PROBING,
            UpgradeState.PROBED,
        )

    async def wait_upgrade_settled(self) -> None:
        """Wait until the upgrade under way completes or is abandoned."""
        while self.upgrading and not self.closed and self._upgrade_settled is not None:
            await self._upgrade_settled.park()

    def _settle_upgrade(self) -> None:
        if self._upgrade_settled is not None:
            self._upgrade_settled.unpark_all()
