"""The composition root: the nursery tree of a running server, and its shutdown.

::

    serve()                               the server's root nursery
    ├── hub.run()                         backplane subscriber (outlives the connections)
    └── connections nursery
        ├── accepting: serve_listeners    cancelled first at shutdown
        ├── one task per TCP connection   HTTP keep-alive; a WebSocket session runs here
        └── one task per polling session  (HTTP requests feed it)

Shutdown (after hypercorn): stop accepting; set ``draining`` and run the drain hooks
(the chat layer tells clients to reconnect elsewhere); give sessions until the grace
deadline to leave; close the rest cleanly (DISCONNECT per namespace, then the
Engine.IO close or a WebSocket close 1001); cancel what remains; the hub goes last.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Protocol

import trio

from .config import ServerConfig
from .http import Admission, EngineIOEndpoint, FrontDoor, Router, SessionTable
from .hub import Hub, Namespace, SocketIOConnection
from .sansio import (
    DisconnectReason,
    EngineConnection,
    Event,
    Message,
    ServerConnection,
    Transport,
    WebSocketCloseCode,
)
from .session import EngineSession, HandshakeInfo
from .transport import CorsPolicy, RouteHandler, give_back_memory

__all__ = ["EngineApp", "Server", "serve_until_signalled"]

log = logging.getLogger("replyhq_trio.server")

DrainHook = Callable[[], Awaitable[None]]
#: A background task of the application, started before connections are accepted and
#: cancelled after the last one is gone: ``async def run(*, task_status)``.
Service = Callable[..., Awaitable[None]]


class EngineApp(Protocol):
    """A bare Engine.IO application (no Socket.IO): gets every message of a session."""

    def on_message(self, session: EngineSession, data: str | bytes) -> None: ...


class _EngineAppHandler:
    def __init__(self, app: EngineApp) -> None:
        self._app = app

    def on_event(self, session: EngineSession, event: Event) -> None:
        if isinstance(event, Message):
            self._app.on_message(session, event.data)

    def is_full(self) -> bool:
        return False  # messages are answered as they come: nothing queues

    async def wait_ready(self) -> None:
        await trio.lowlevel.checkpoint()

    async def on_close(self, session: EngineSession, reason: DisconnectReason) -> None:
        pass


class Server:
    """A Socket.IO server on one port, with HTTP routes beside it.

    Args:
        config: Settings (port, path, limits, timeouts).
        hub: The hub (namespaces, rooms, backplane); a single-node one by default.
    """

    def __init__(self, config: ServerConfig, *, hub: Hub | None = None) -> None:
        self.config = config
        self.hub = hub or Hub()
        self.router = Router()
        self.sessions = SessionTable(config.max_connections)
        self._engine_apps: dict[str, EngineApp] = {}
        self._drain_hooks: list[DrainHook] = []
        self._services: list[Service] = []
        self._admission: Admission | None = None
        self._stop = trio.Event()
        self._draining = False
        #: The port listened on, once serving (useful with port 0).
        self.port: int | None = None

    # --- what the application registers -------------------------------------------

    def namespace(self, name: str) -> Namespace:
        return self.hub.namespace(name)

    def route(
        self, method: str, path: str, *, prefix: bool = False, while_draining: bool = False
    ) -> Callable[[RouteHandler], RouteHandler]:
        """Register an HTTP handler on the server's port.

        Args:
            prefix: ``path`` is a prefix; the handler reads the rest of the path.
            while_draining: Keep serving it during a shutdown (health checks); other
                routes answer 503 ``SHUTTING_DOWN`` then.
        """

        def register(handler: RouteHandler) -> RouteHandler:
            self.router.add(method, path, handler, prefix=prefix, while_draining=while_draining)
            return handler

        return register

    def mount_engine_app(self, path: str, app: EngineApp) -> None:
        """Serve a bare Engine.IO application at ``path`` (beside Socket.IO's path)."""
        self._engine_apps["/" + path.strip("/") + "/"] = app

    def add_service(self, service: Service) -> Service:
        """Run ``service`` beside the server: started (``await nursery.start``) before the
        first connection is accepted, cancelled once the last one is gone."""
        self._services.append(service)
        return service

    def admit_with(self, admission: Admission) -> Admission:
        """Ask ``admission`` before opening a long-polling session on the Socket.IO path:
        it is given the peer (``host:port``) and the request's headers, and answers the
        seconds it must wait, and
        a wait above 0 is refused with 429 and ``Retry-After``. (A WebSocket opens
        without it: the application refuses its namespace CONNECT instead, which a
        WebSocket-only client reports better than a failed upgrade.)"""
        self._admission = admission
        return admission

    def on_drain(self, hook: DrainHook) -> DrainHook:
        """Run ``hook`` when a shutdown begins, before the grace period counts down."""
        self._drain_hooks.append(hook)
        return hook

    @property
    def draining(self) -> bool:
        return self._draining

    @property
    def stopping(self) -> bool:
        """Whether a shutdown was asked for."""
        return self._stop.is_set()

    def shutdown(self) -> None:
        """Begin a graceful shutdown; :meth:`serve` returns when it is complete."""
        self._stop.set()

    # --- sessions ------------------------------------------------------------------

    def _socketio_session(
        self, sid: str, transport: Transport, info: HandshakeInfo
    ) -> EngineSession:
        core = ServerConnection(
            sid=sid, transport=transport, config=self.config.protocol, now=trio.current_time()
        )
        handler = SocketIOConnection(self.hub, disconnect_timeout=self.config.close_timeout)
        session = EngineSession(core=core, handler=handler, config=self.config, info=info)
        handler.attach(session)
        return session

    def _engine_session_factory(
        self, app: EngineApp
    ) -> Callable[[str, Transport, HandshakeInfo], EngineSession]:
        def make(sid: str, transport: Transport, info: HandshakeInfo) -> EngineSession:
            core = EngineConnection(
                sid=sid, transport=transport, config=self.config.protocol, now=trio.current_time()
            )
            return EngineSession(
                core=core, handler=_EngineAppHandler(app), config=self.config, info=info
            )

        return make

    # --- running -----------------------------------------------------------------------

    async def serve(
        self,
        *,
        listeners: Sequence[trio.abc.Listener[trio.SocketStream]] | None = None,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen and serve until :meth:`shutdown`, then shut down gracefully.

        Args:
            listeners: Where connections come from; by default TCP on the configured
                host and port. (Tests pass listeners of socket pairs.)

        ``task_status.started`` receives the port once the server accepts connections
        (0 with listeners that have none).
        """
        async with trio.open_nursery() as root:
            await root.start(self.hub.run)
            if self.config.trim_interval:
                root.start_soon(give_back_memory, self.config.trim_interval)
            for service in self._services:
                await root.start(service)
            async with trio.open_nursery() as connections:
                front_door = self._front_door(connections)
                if listeners is None:
                    tcp = await trio.open_tcp_listeners(self.config.port, host=self.config.host)
                    self.port = tcp[0].socket.getsockname()[1]
                    listeners = tcp
                else:
                    self.port = 0
                accepting = trio.CancelScope()
                connections.start_soon(self._accept, accepting, front_door, listeners, connections)
                log.info("listening on %s:%s", self.config.host, self.port)
                task_status.started(self.port)
                await self._stop.wait()
                await self._shut_down(accepting, connections)
            root.cancel_scope.cancel()

    def _front_door(self, connections: trio.Nursery) -> FrontDoor:
        cors = CorsPolicy(self.config.cors_origins)

        def endpoint(
            factory: Callable[[str, Transport, HandshakeInfo], EngineSession],
            admission: Admission | None = None,
        ) -> EngineIOEndpoint:
            return EngineIOEndpoint(
                config=self.config,
                table=self.sessions,
                factory=factory,
                sessions_nursery=connections,
                cors=cors,
                draining=lambda: self._draining,
                admission=admission,
            )

        endpoints = {self.config.path: endpoint(self._socketio_session, self._admission)}
        for path, app in self._engine_apps.items():
            endpoints[path] = endpoint(self._engine_session_factory(app))
        return FrontDoor(
            self.config, endpoints=endpoints, router=self.router, draining=lambda: self._draining
        )

    async def _accept(
        self,
        scope: trio.CancelScope,
        front_door: FrontDoor,
        listeners: Sequence[trio.abc.Listener[trio.SocketStream]],
        connections: trio.Nursery,
    ) -> None:
        with scope:
            await trio.serve_listeners(
                front_door.handle, list(listeners), handler_nursery=connections
            )

    async def _shut_down(self, accepting: trio.CancelScope, connections: trio.Nursery) -> None:
        grace = self.config.grace_period
        deadline = trio.current_time() + grace
        log.info(
            "shutting down: no new connections; %s s for %d sessions to leave",
            grace,
            len(self.sessions),
        )
        accepting.cancel()
        self._draining = True
        with trio.move_on_at(deadline):
            for hook in self._drain_hooks:
                try:
                    await hook()
                except Exception:
                    # A failing hook (Redis down, say) must not cost the clients their
                    # grace period; the next hook and the drain go on.
                    log.exception("a drain hook failed")
        with trio.move_on_at(deadline):
            await self.sessions.wait_empty()
        remaining = list(self.sessions)
        if remaining:
            log.info("grace period over: closing %d sessions", len(remaining))
        for session in remaining:
            session.close(DisconnectReason.SERVER_SHUTDOWN, code=WebSocketCloseCode.GOING_AWAY)
        with trio.move_on_after(self.config.close_timeout):
            await self.sessions.wait_empty()
        connections.cancel_scope.cancel()


async def serve_until_signalled(
    server: Server, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully; a second signal exits at once."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch_signals, signals, server)
            await nursery.start(_serve_then_stop, server, nursery.cancel_scope)


async def _serve_then_stop(
    server: Server, stop: trio.CancelScope, *, task_status: trio.TaskStatus[int]
) -> None:
    await server.serve(task_status=task_status)
    stop.cancel()  # the signal watcher's job is done


async def _watch_signals(signals: AsyncIterator[int], server: Server) -> None:
    async for signum in signals:
        if server.stopping:
            log.warning("second signal (%s): exiting now", signal.Signals(signum).name)
            os._exit(128 + signum)
        log.info("signal %s: graceful shutdown", signal.Signals(signum).name)
        server.shutdown()
