"""Two servers on one in-memory backplane: broadcasts reach the other node's sockets."""

from __future__ import annotations

import pytest
import trio

from replyhq_trio.config import ServerConfig
from replyhq_trio.hub import Broadcast, Hub, InMemoryBus, Socket
from replyhq_trio.server import Server

from .._raw import RawWebSocket, open_websocket
from .._serving import serving

WEBSOCKET = "/v1/socket.io/?EIO=4&transport=websocket"


def _node(bus: InMemoryBus, name: str) -> Server:
    server = Server(
        ServerConfig(port=0, grace_period=0.05, close_timeout=0.2),
        hub=Hub(node_id=name, backplane=bus.backplane()),
    )
    chat = server.namespace("/chat")

    @chat.on_connected
    async def enter(socket: Socket) -> None:
        socket.join("lobby")

    @chat.on("say")
    async def say(socket: Socket, args: tuple[object, ...]) -> None:
        await server.hub.emit("/chat", "said", *args, to="lobby", skip=[socket])

    return server


async def _join(port: int, ws: RawWebSocket) -> None:
    assert isinstance(await ws.receive(), str)
    await ws.send_text("40/chat,")
    accepted = await ws.receive_skipping_pings()
    assert isinstance(accepted, str)
    assert accepted.startswith("40/chat,")


async def test_a_broadcast_reaches_both_nodes_and_skips_the_sender() -> None:
    bus = InMemoryBus()
    with trio.fail_after(10):
        async with (
            serving(_node(bus, "one")) as port_one,
            serving(_node(bus, "two")) as port_two,
            open_websocket(port_one, WEBSOCKET) as alice,
            open_websocket(port_one, WEBSOCKET) as bob,
            open_websocket(port_two, WEBSOCKET) as carol,
        ):
            for port, ws in ((port_one, alice), (port_one, bob), (port_two, carol)):
                await _join(port, ws)
            await alice.send_text('42/chat,["say","hi"]')
            assert await bob.receive_skipping_pings() == '42/chat,["said","hi"]'
            assert await carol.receive_skipping_pings() == '42/chat,["said","hi"]'
            # The sender got nothing: its next message is the answer to a later event.
            await carol.send_text('42/chat,["say","back"]')
            assert await alice.receive_skipping_pings() == '42/chat,["said","back"]'


def test_the_envelope_is_versioned() -> None:
    message = Broadcast(origin="n1", namespace="/chat", event="said", args=("hi",))
    assert message.version == 1
    with pytest.raises(ValueError, match="version 2"):
        Broadcast(version=2, origin="n1", namespace="/chat", event="said")
