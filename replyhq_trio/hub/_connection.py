"""The Socket.IO layer of one client connection: its sockets, their events, their acks.

The session's reader hands every event here without waiting (:meth:`on_event`).
Acks from the client resolve their waiters at once. Any other event, when nothing of
the socket's is being handled, is handled inline in the WebSocket reader's task: a
handler that does not wait (most do not) then costs no task and no wake-up (measured:
a spawned dispatcher was over a quarter of the CPU of an ack round trip). If it
waits, that task carries it to its end and then the events queued meanwhile, while a
new reader task reads on (see ``EngineSession.hand_over``). On long-polling, and
behind work that waits, events queue, and one dispatcher task runs them in order; it
exists only while there is work.

Each event's work runs in its own copy of the context of the task that reads (or
dispatches), so a context variable a handler sets does not leak into later events.

This is the exception boundary of a connection: a handler that raises is logged
with the connection id and closes that connection only.
"""

from __future__ import annotations

import contextlib
import logging
import types
from collections import deque
from collections.abc import Awaitable, Coroutine, Generator
from contextvars import Context, copy_context
from typing import TYPE_CHECKING, Any

import trio

from ..sansio import (
    Ack,
    Connect,
    ConnectAccepted,
    ConnectRejected,
    Disconnect,
    DisconnectReason,
    Emit,
    Event,
    LocalProtocolError,
    ServerConnection,
    WebSocketCloseCode,
)
from ._errors import ConnectRefused, EventRefused, SocketGone
from ._socket import Socket

if TYPE_CHECKING:
    from ..session import EngineSession
    from ._hub import Hub
    from ._namespace import Route

__all__ = ["SocketIOConnection"]

log = logging.getLogger("replyhq_trio.hub")


class _AckWaiter:
    """One server-to-client emit waiting for its ack."""

    __slots__ = ("_done", "_error", "_result")

    def __init__(self) -> None:
        self._done = trio.Event()
        self._result: tuple[Any, ...] = ()
        self._error: BaseException | None = None

    def resolve(self, args: tuple[Any, ...]) -> None:
        self._result = args
        self._done.set()

    def fail(self, error: BaseException) -> None:
        self._error = error
        self._done.set()

    async def wait(self) -> tuple[Any, ...]:
        await self._done.wait()
        if self._error is not None:
            raise self._error
        return self._result


def _ack_args(result: Any) -> tuple[Any, ...]:
    if result is None:
        return ()
    if isinstance(result, tuple):
        return result
    return (result,)


#: Events of one connection that may wait for their handlers; past it the reader
#: stops reading that client until the dispatcher catches up.
MAX_QUEUED_EVENTS = 64


@types.coroutine
def _resume(
    coro: Coroutine[Any, Any, None], context: Context, trap: Any
) -> Generator[Any, Any, None]:
    # Goes on with a coroutine whose first step already ran (and yielded ``trap``) in
    # this task: passes its yields to Trio and Trio's answers back, as ``await`` would,
    # in the coroutine's own context.
    while True:
        try:
            value = yield trap
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:
            try:
                trap = context.run(coro.throw, exc)
            except StopIteration:
                return
        else:
            try:
                trap = context.run(coro.send, value)
            except StopIteration:
                return


class SocketIOConnection:
    """The session handler of a Socket.IO connection.

    Args:
        hub: Namespaces, rooms and the socket-id generator.
    """

    __slots__ = (
        "_acks",
        "_disconnect_timeout",
        "_dispatching",
        "_leaving",
        "_queue",
        "_room",
        "_session",
        "hub",
        "sockets",
    )

    def __init__(self, hub: Hub, *, disconnect_timeout: float = 2.0) -> None:
        self.hub = hub
        self._disconnect_timeout = disconnect_timeout
        self._session: EngineSession | None = None
        self.sockets: dict[str, Socket] = {}
        self._queue: deque[Event] | None = None  # made on the first event
        self._dispatching = False
        self._acks: dict[tuple[str, int], _AckWaiter] = {}
        self._leaving: dict[str, DisconnectReason] = {}
        self._room: trio.lowlevel.ParkingLot | None = None

    @property
    def session(self) -> EngineSession:
        assert self._session is not None, "attach() the session first"
        return self._session

    def attach(self, session: EngineSession) -> None:
        self._session = session

    # --- from the reader --------------------------------------------------------

    def on_event(self, session: EngineSession, event: Event) -> None:
        if isinstance(event, Ack):
            waiter = self._acks.pop((event.namespace, event.ack_id), None)
            if waiter is not None:
                waiter.resolve(event.args)
            return
        if isinstance(event, Disconnect):
            # Remembered now: if the connection ends before the dispatcher gets to it,
            # the socket still left by the client's choice, not by the transport. And
            # whoever waits for an ack of that namespace learns it now, not at a timeout
            # (the core has already forgotten the ids).
            self._leaving[event.namespace] = event.reason
            self._fail_acks(event.namespace, SocketGone(event.reason))
        if not self._dispatching and session.reading_inline:
            # Nothing of this connection's is being handled: this event's turn is now.
            context = copy_context()
            work = self._handle(event)
            try:
                trap = context.run(work.send, None)
            except StopIteration:
                return
            # It waits: events queue behind it until the reader's task has finished it.
            self._dispatching = True
            session.hand_over(self._carry(work, context, trap))
            return
        if self._queue is None:
            self._queue = deque()
        self._queue.append(event)
        if not self._dispatching:
            self._dispatching = True
            session.start_soon(self._dispatch)

    def is_full(self) -> bool:
        queue = self._queue
        return queue is not None and len(queue) >= MAX_QUEUED_EVENTS

    async def wait_ready(self) -> None:
        queue = self._queue
        while queue is not None and len(queue) >= MAX_QUEUED_EVENTS:
            if self._room is None:
                self._room = trio.lowlevel.ParkingLot()
            await self._room.park()
            queue = self._queue

    async def _carry(self, work: Coroutine[Any, Any, None], context: Context, trap: Any) -> None:
        # In the task that started ``work``: its end, then what queued behind it.
        try:
            await _resume(work, context, trap)
            await self._run_queue()
        finally:
            self._dispatching = False

    async def _dispatch(self) -> None:
        try:
            await self._run_queue()
        finally:
            self._dispatching = False

    async def _run_queue(self) -> None:
        queue = self._queue
        session = self.session
        while queue and not session.closed:
            # Acks go out without waiting: the next event waits instead, so what a
            # client that does not read makes us write stays within the bound.
            await session.wait_for_room()
            event = queue.popleft()
            if self._room is not None and len(queue) < MAX_QUEUED_EVENTS:
                self._room.unpark_all()
            context = copy_context()
            work = self._handle(event)
            try:
                trap = context.run(work.send, None)
            except StopIteration:
                continue
            await _resume(work, context, trap)

    async def _handle(self, event: Event) -> None:
        # The exception boundary of one event, written out here rather than in a
        # wrapper: this runs once per event.
        try:
            if isinstance(event, Emit):
                socket = self.sockets.get(event.namespace)
                if socket is None:
                    return
                self.hub.stats.event_received(event.name)
                route = socket.namespace_object.route(event.name)
                if route is None or route.concurrent:
                    await self._handle_other_emit(socket, event, route)
                    return
                # A route's handler is awaited here, not in a coroutine of its own:
                # the path of nearly every event.
                try:
                    result = await route.handler(socket, event.args)
                except SocketGone:
                    return  # the client left while its event was being handled
                except EventRefused as refused:
                    await self._refused(socket, event, refused)
                    return
                self._reply(socket, event, result)
            elif isinstance(event, Connect):
                await self._handle_connect(event)
            elif isinstance(event, Disconnect):
                socket = self.sockets.get(event.namespace)
                if socket is not None:
                    await self._left(socket, event.reason)
        except Exception:
            self._failed()

    async def _guarded(self, work: Awaitable[None]) -> None:
        # The exception boundary of work that runs in its own task.
        try:
            await work
        except Exception:
            self._failed()

    def _failed(self) -> None:
        # Called from an except block: a bug in a handler closes this connection only.
        log.exception("connection %s: handler failed; closing the connection", self.session.sid)
        self.session.close(DisconnectReason.INTERNAL_ERROR, code=WebSocketCloseCode.INTERNAL_ERROR)

    async def _handle_other_emit(self, socket: Socket, event: Emit, route: Route | None) -> None:
        # An event without a route of its own (on_any), or with a concurrent one.
        if route is not None:
            self.session.start_soon(self._run_concurrent, socket, event, route)
            return
        fallback = socket.namespace_object.any_handler
        if fallback is not None:
            try:
                result = await fallback(socket, event.name, event.args)
            except EventRefused as refused:
                await self._refused(socket, event, refused)
                return
            self._reply(socket, event, result)

    async def _run_concurrent(self, socket: Socket, event: Emit, route: Route) -> None:
        await self._guarded(self._run_route(socket, event, route))

    async def _run_route(self, socket: Socket, event: Emit, route: Route) -> None:
        try:
            result = await route.handler(socket, event.args)
        except SocketGone:
            return  # the client left while its event was being handled
        except EventRefused as refused:
            await self._refused(socket, event, refused)
            return
        self._reply(socket, event, result)

    async def _refused(self, socket: Socket, event: Emit, refused: EventRefused) -> None:
        if event.ack_id is not None:
            self._reply(socket, event, refused.ack)
        elif socket.connected:
            with contextlib.suppress(SocketGone):
                await socket.emit(refused.event, refused.payload)
        if refused.then_disconnect is not None:
            socket.disconnect(refused.then_disconnect)  # after the answer, on the same wire

    def _reply(self, socket: Socket, event: Emit, result: Any) -> None:
        ack_id = event.ack_id
        # socket.connected written out (the socket is one of this connection's): this
        # runs once per ack, and the property reaches the session through two more.
        session = self._session
        if (
            ack_id is None
            or socket.disconnect_reason is not None
            or session is None
            or session.closed
        ):
            return
        # The namespace or connection may have ended meanwhile: nobody waits for it then.
        # (try/except rather than contextlib.suppress: this runs once per ack.)
        try:
            session.send_ack(event.namespace, ack_id, _ack_args(result))
        except LocalProtocolError:
            return

    async def _handle_connect(self, event: Connect) -> None:
        session = self.session
        namespace = self.hub.get_namespace(event.namespace)
        if namespace is None:
            session.send_event(
                ConnectRejected(namespace=event.namespace, message="Invalid namespace")
            )
            return
        socket = Socket(self, namespace, self.hub.new_socket_id(), event.auth)
        if namespace.connect_handler is not None:
            try:
                await namespace.connect_handler(socket, event.auth)
            except ConnectRefused as refusal:
                if not session.closed:
                    session.send_event(
                        ConnectRejected(
                            namespace=event.namespace, message=refusal.message, data=refusal.data
                        )
                    )
                    if refusal.close and not self.sockets:
                        session.close(DisconnectReason.LIMIT_EXCEEDED)
                return
        if session.closed:
            return
        session.send_event(ConnectAccepted(namespace=event.namespace, sid=socket.sid))
        self.sockets[event.namespace] = socket
        self.hub.socket_joined(socket)
        if namespace.connected_handler is not None:
            with contextlib.suppress(SocketGone):
                await namespace.connected_handler(socket)

    # --- leaving ------------------------------------------------------------------

    def socket_left(self, socket: Socket, reason: DisconnectReason) -> None:
        """The server disconnected ``socket``: forget it now, run its handler soon."""
        if self.sockets.get(socket.namespace) is not socket:
            return
        self._forget(socket, reason)
        self.session.start_soon(self._run_disconnect_guarded, socket, reason)

    async def _left(self, socket: Socket, reason: DisconnectReason) -> None:
        self._leaving.pop(socket.namespace, None)
        self._forget(socket, reason)
        await self._run_disconnect(socket, reason)

    def _forget(self, socket: Socket, reason: DisconnectReason) -> None:
        del self.sockets[socket.namespace]
        socket._mark_gone(reason)
        self.hub.socket_left(socket)
        self._fail_acks(socket.namespace, SocketGone(reason))

    def _fail_acks(self, namespace: str, error: SocketGone) -> None:
        for key in [key for key in self._acks if key[0] == namespace]:
            self._acks.pop(key).fail(error)

    async def _run_disconnect_guarded(self, socket: Socket, reason: DisconnectReason) -> None:
        await self._guarded(self._run_disconnect(socket, reason))

    async def _run_disconnect(self, socket: Socket, reason: DisconnectReason) -> None:
        # A disconnect handler cleans up (presence, sessions): it runs to its end even
        # when the connection's tasks are being cancelled, within a deadline.
        handler = socket.namespace_object.disconnect_handler
        if handler is None:
            return
        with trio.CancelScope(shield=True), trio.move_on_after(self._disconnect_timeout):
            await handler(socket, reason)

    async def on_close(self, session: EngineSession, reason: DisconnectReason) -> None:
        """The connection ended: every socket leaves, every pending ack fails."""
        if reason is DisconnectReason.SLOW_CONSUMER:
            self.hub.stats.slow_consumers += 1
        self._queue = None
        if self._room is not None:
            self._room.unpark_all()
        gone = SocketGone(reason)
        for waiter in self._acks.values():
            waiter.fail(gone)
        self._acks.clear()
        departures = [
            (socket, self._leaving.get(socket.namespace, reason))
            for socket in self.sockets.values()
        ]
        for socket, why in departures:
            self._forget(socket, why)
        for socket, why in departures:
            try:
                await self._run_disconnect(socket, why)
            except Exception:
                log.exception("connection %s: disconnect handler failed", session.sid)

    # --- acks -----------------------------------------------------------------------

    def expect_ack(self, namespace: str, ack_id: int) -> _AckWaiter:
        waiter = _AckWaiter()
        self._acks[(namespace, ack_id)] = waiter
        return waiter

    def forget_ack(self, namespace: str, ack_id: int) -> None:
        self._acks.pop((namespace, ack_id), None)
        core = self.session.core
        if isinstance(core, ServerConnection):
            core.forget_ack(namespace, ack_id)
