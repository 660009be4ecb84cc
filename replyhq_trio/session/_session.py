"""One Engine.IO session on the server: the protocol core, its transport, its tasks.

The session is where the sans-IO core meets Trio. Every frame from the client goes
through :meth:`EngineSession.receive`; every frame to the client through
:meth:`EngineSession.send_frames` (or :meth:`EngineSession.send_prepared` for a
broadcast encoded once). The transport underneath is a WebSocket (an
:class:`~replyhq_trio.transport.Outlet` for writes, a reader task for reads) or a
long-polling queue, and changes from the second to the first on an upgrade.

Tasks of a session, all in the nursery of :meth:`EngineSession.run`:

* the parent (the task that calls :meth:`EngineSession.run`): sleeps until the core's
  next deadline (a ping is due, a pong is late) and runs it, until the session ends;
  then says goodbye;
* the reader: reads the WebSocket and feeds the core (HTTP requests play its part on
  long-polling). The handler may run an event's work inline, in the reader's task;
  when that work waits, this task keeps it (a suspended coroutine belongs to the task
  that started it) and a new reader task reads on;
* the writer: drains the outlet's backlog, and exists only while there is one.

Server-to-client acks need no task of their own: each waiter has its deadline at
the call site (``trio.fail_after``) and every pending one fails when the session ends.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Awaitable, Callable, Coroutine, Mapping
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
        """An event from the client. Called from the reader: must not block.

        While :attr:`EngineSession.reading_inline` is true (the WebSocket reader feeds
        it), the handler may start the event's work right away in the reader's task.
        If that work waits, the handler passes it to :meth:`EngineSession.hand_over`
        before returning, and must queue later events until that work is done.
        """

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
        "_carry",
        "_close_code",
        "_closed",
        "_config",
        "_ended",
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
        "reading_inline",
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
        # The same as _closed.is_set(), read several times per event: a plain bool.
        self._ended = False
        self._close_code = WebSocketCloseCode.NORMAL
        #: Why the session ended, once it has.
        self.close_reason: DisconnectReason | None = None
        self._timer_scope: trio.CancelScope | None = None
        self._timer_target: float | None = None
        self._reader_scope: trio.CancelScope | None = None
        #: True while the WebSocket reader feeds the handler: its task may run work
        #: inline (see SessionHandler.on_event).
        self.reading_inline = False
        # Work started inline by the handler that waits: the reader's task finishes it.
        self._carry: Coroutine[Any, Any, None] | None = None
        # Only an upgrade uses these two: made when it starts.
        self._released: trio.Event | None = None
        self._upgrade_settled: trio.lowlevel.ParkingLot | None = None

    # --- state ------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._ended

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
        if not frames or self._ended:
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

    def send_ack(self, namespace: str, ack_id: int, args: tuple[Any, ...]) -> None:
        """:meth:`send_event` of an ack, the answer to nearly every event, without the
        event object (see ``ServerConnection.send_ack``)."""
        core = self.core
        assert isinstance(core, ServerConnection)
        websocket = self._websocket
        if websocket is not None and not self._ended:
            # The frame's bytes in one step: no Engine.IO text, no list of frames.
            data = core.send_ack_websocket(namespace, ack_id, args)
            if data is not None:
                websocket.outlet.write(data)
                return
        self.send_frames(core.send_ack(namespace, ack_id, args))

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
        if self._ended:
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

    def hand_over(self, work: Coroutine[Any, Any, None]) -> None:
        """Take work the handler started inline that is now waiting (see SessionHandler).

        Only while :attr:`reading_inline`. The reader stops feeding events, spawns the
        next reader (unless the session is over), and finishes ``work`` in its own
        task. That task is outside the reader's cancel scope from then on: like any
        handler, the work is cancelled only when the session's tasks are.
        """
        assert self.reading_inline
        assert self._carry is None
        self._carry = work

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
        log.info(
            "session %s: protocol error: %s",
            self.sid,
            error,
            extra={"connection_id": self.sid, "reason": error.reply.close.value},
        )
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
            log.info(
                "session %s: %s",
                self.sid,
                closed.reason.value,
                extra={"connection_id": self.sid, "reason": closed.reason.value},
            )
            if self._websocket is not None:
                self._websocket.outlet.write(encode_close(WebSocketCloseCode.NORMAL))
            self._finish(closed.reason)
        else:
            self._retime()

    async def _run_timer(self) -> None:
        """Sleep until the core's next deadline, run it, repeat; returns when the
        session ends. Runs in the parent task, which has nothing else to do meanwhile.
        """
        closed = self._closed
        while not closed.is_set():
            target = self.core.get_timer()
            self._timer_target = target
            with trio.CancelScope(deadline=math.inf if target is None else target) as scope:
                self._timer_scope = scope
                await closed.wait()
            self._timer_scope = None
            if closed.is_set():  # a method call: the session may have ended while asleep
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
        self._ended = True
        self._closed.set()
        self._settle_upgrade()
        if self._polling is not None:
            self._polling.close()
        if self._reader_scope is not None and not self.reading_inline:
            # Not while it feeds the handler: it is running (this is called from
            # there), sees the end itself, and work a handler started inline in its
            # task must not be cancelled for it (a handler in a task of its own is not).
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
        # The reader runs in the session's nursery, like every task that may run a
        # handler: they end with the session, not with this HTTP connection's task.
        self.start_soon(self._read_websocket, websocket)
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
        # Read once per batch of frames: trio.current_time() costs three calls more.
        clock = trio.lowlevel.current_clock()
        with trio.CancelScope() as scope:
            if self.closed:
                return
            self._reader_scope = scope
            while True:
                # Another task's writes (a broadcast) may have filled the backlog
                # while this one waited: checked before every read too.
                if self._dispatch_websocket(decoder, outlet, clock) or outlet.over_limit:
                    work = self._carry
                    if work is not None:
                        # A handler's work waits in this task (started here, it can only
                        # go on here): the next reader takes over, this task finishes it.
                        self._carry = None
                        self._reader_scope = None
                        self.start_soon(self._read_websocket, websocket)
                        await work
                        return
                    if self._ended:
                        return
                    if self.handler.is_full():
                        await self.handler.wait_ready()
                        continue  # frames already read come first
                    if outlet.over_limit:
                        # A client that does not read its answers (acks, pongs) is not
                        # read either: what it makes us write stays within the bound.
                        await outlet.wait_for_room()
                        continue
                await trio.lowlevel.wait_readable(fd)  # the fd: no fileno() call per wait
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

    def _dispatch_websocket(
        self, decoder: FrameDecoder, outlet: Outlet, clock: trio.abc.Clock
    ) -> bool:
        """Feed the frames read so far; whether it stopped for a reason the reader must
        look at (the end, work to carry, a full handler, a backlog over its bound)."""
        now = clock.current_time()
        self.reading_inline = True
        try:
            for message in decoder.events():
                # type() first: nearly every message is text, and `str | bytes` would
                # build a union object per message.
                if type(message) is str or isinstance(message, bytes):
                    self.receive(message, now)
                elif isinstance(message, PingReceived):
                    outlet.write(encode_pong(message.payload))
                elif isinstance(message, CloseReceived):
                    # Echo the close (RFC 6455 5.5.1), then the session is over.
                    code = message.code if message.code != 1005 else WebSocketCloseCode.NORMAL
                    outlet.write(encode_close(code))
                    self.abort(DisconnectReason.CLIENT_CLOSE)
                if (
                    self._ended
                    or self._carry is not None
                    or self.handler.is_full()
                    or outlet.over_limit
                ):
                    return True  # the decoder keeps the rest until there is room
        except RemoteProtocolError as exc:
            self.refuse(exc)
            return True
        finally:
            self.reading_inline = False
        return False

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
            try:
                if websocket is not None:
                    attached = self._attach_websocket(websocket, pending)
                    self._flush()
                    # In a task of the nursery, not this one: handlers it runs inline
                    # must not hold this task's goodbye back when the session ends.
                    nursery.start_soon(self._read_websocket, attached)
                task_status.started()
                await self._run_timer()
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
