"""The application the interop tests drive: small, and exercising every server API."""

from __future__ import annotations

from typing import Any

from replyhq_trio.config import ServerConfig
from replyhq_trio.hub import ConnectRefused, Socket
from replyhq_trio.sansio import DisconnectReason, ProtocolConfig
from replyhq_trio.server import Server

NAMESPACE = "/test"
SECRET = "s3cret"


def build_app(*, port: int = 0) -> Server:
    config = ServerConfig(
        port=port,
        protocol=ProtocolConfig(ping_interval=1.0, ping_timeout=2.0),
        grace_period=0.1,
        close_timeout=0.5,
    )
    server = Server(config)
    hub = server.hub
    test = server.namespace(NAMESPACE)

    @test.on_connect
    async def authenticate(socket: Socket, auth: dict[str, Any] | None) -> None:
        if not auth or "token" not in auth:
            raise ConnectRefused("MISSING_PARAMS")
        if auth["token"] != SECRET:
            raise ConnectRefused("INVALID_CREDENTIALS", {"code": 1})
        socket.data["name"] = auth.get("name", socket.sid)

    @test.on_connected
    async def hello(socket: Socket) -> None:
        await socket.emit("hello", {"sid": socket.sid, "name": socket.data["name"]})

    @test.on("echo")
    async def echo(socket: Socket, args: tuple[Any, ...]) -> None:
        await socket.emit("echo", *args)

    @test.on("ack")
    async def ack(socket: Socket, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return args

    @test.on("join")
    async def join(socket: Socket, args: tuple[Any, ...]) -> bool:
        socket.join(str(args[0]))
        return True

    @test.on("say")
    async def say(socket: Socket, args: tuple[Any, ...]) -> int:
        room, *words = args
        return await hub.emit(
            NAMESPACE, "said", socket.data["name"], *words, to=str(room), skip=[socket]
        )

    @test.on("ask")
    async def ask(socket: Socket, args: tuple[Any, ...]) -> None:
        answer = await socket.emit_with_ack("question", *args, timeout=5)
        await socket.emit("answer", *answer)

    @test.on("kick")
    async def kick(socket: Socket, args: tuple[Any, ...]) -> None:
        socket.disconnect()

    @test.on("drop")
    async def drop(socket: Socket, args: tuple[Any, ...]) -> None:
        # The transport dies without a goodbye: clients reconnect on their own.
        hub_session = socket._connection.session
        hub_session.abort(DisconnectReason.TRANSPORT_ERROR)

    @test.on("boom")
    async def boom(socket: Socket, args: tuple[Any, ...]) -> None:
        raise RuntimeError("a bug in a handler")

    @test.on_disconnect
    async def gone(socket: Socket, reason: DisconnectReason) -> None:
        await hub.emit(NAMESPACE, "left", socket.data.get("name"), reason.value, to="watchers")

    return server
