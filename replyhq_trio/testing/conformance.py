"""The application the official Socket.IO and Engine.IO protocol test suites expect.

socketio/engine.io-protocol and socketio/socket.io-protocol (their ``test-suite/``
folders) drive a server on port 3000 configured like their reference servers: a bare
Engine.IO echo at ``/engine.io/``, and at ``/socket.io/`` the namespaces ``/`` and
``/custom`` (any other is refused), ping interval 300 ms, ping timeout 200 ms,
maxPayload 1,000,000, a 1 s connect timeout and any origin.
"""

from __future__ import annotations

from typing import Any

from ..config import ServerConfig
from ..sansio import Message, ProtocolConfig
from ..server import Server
from ..session import EngineSession

__all__ = ["build_conformance_server", "conformance_config"]


def conformance_config(*, host: str = "127.0.0.1", port: int = 3000) -> ServerConfig:
    return ServerConfig(
        host=host,
        port=port,
        path="/socket.io/",
        protocol=ProtocolConfig(
            ping_interval=0.3, ping_timeout=0.2, connect_timeout=1.0, max_payload=1_000_000
        ),
        cors_origins=("*",),
    )


class _Echo:
    """Sends every Engine.IO message straight back."""

    def on_message(self, session: EngineSession, data: str | bytes) -> None:
        session.send_event(Message(data=data))


def build_conformance_server(config: ServerConfig) -> Server:
    server = Server(config)
    server.mount_engine_app("/engine.io/", _Echo())

    main = server.namespace("/")

    @main.on_connected
    async def greet(socket: Any) -> None:
        await socket.emit("auth", socket.auth or {})

    @main.on("message")
    async def message(socket: Any, args: tuple[Any, ...]) -> None:
        await socket.emit("message-back", *args)

    @main.on("message-with-ack")
    async def message_with_ack(socket: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return args

    custom = server.namespace("/custom")

    @custom.on_connected
    async def greet_custom(socket: Any) -> None:
        await socket.emit("auth", socket.auth or {})

    return server
