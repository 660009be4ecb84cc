"""A scripted Socket.IO server for client tests: trio-websocket on 127.0.0.1, port 0.

Each accepted connection becomes a :class:`Peer` that the test drives frame by
frame, so the assertions are on the literal frames the client sends.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio_websocket

from replyhq_trio.client import Client, Socket, open_client

#: An open packet with the protocol's default intervals; tests copy and adjust it.
OPEN_PACKET: dict[str, Any] = {
    "sid": "eio-1",
    "upgrades": [],
    "pingInterval": 25000,
    "pingTimeout": 20000,
    "maxPayload": 1000000,
}


class Peer:
    """The server's end of one client connection."""

    def __init__(
        self, ws: trio_websocket.WebSocketConnection, path: str, headers: dict[str, str]
    ) -> None:
        self.ws = ws
        self.path = path
        self.headers = headers

    async def send(self, *frames: str | bytes) -> None:
        for frame in frames:
            await self.ws.send_message(frame)

    async def recv(self) -> str | bytes:
        return await self.ws.get_message()

    async def expect(self, *frames: str | bytes) -> None:
        for frame in frames:
            assert await self.recv() == frame

    async def accept_namespace(self, namespace: str = "/client", sid: str = "ns-1") -> Any:
        """Read the client's CONNECT for ``namespace``, accept it, return its auth."""
        head = "40" if namespace == "/" else f"40{namespace},"
        frame = await self.recv()
        assert isinstance(frame, str)
        assert frame.startswith(head), frame
        auth = json.loads(frame[len(head) :]) if frame[len(head) :] else None
        await self.send(head + json.dumps({"sid": sid}, separators=(",", ":")))
        return auth

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        await self.ws.aclose(code, reason)

    async def close_code(self) -> int | None:
        """Wait for the client to close; return the close code it sent."""
        try:
            while True:
                await self.ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            return exc.reason.code if exc.reason is not None else None


class FakeServer:
    """Accepts WebSockets, sends :attr:`open_packet` (unless ``send_open`` is off) and
    hands each connection to the test through :meth:`accept`."""

    def __init__(self) -> None:
        self.url = ""
        self.port = 0
        self.open_packet = dict(OPEN_PACKET)
        self.send_open = True
        self.reject_status: int | None = None
        self._accepted_send, self._accepted = trio.open_memory_channel[Peer](16)

    async def accept(self) -> Peer:
        return await self._accepted.receive()

    async def handler(self, request: trio_websocket.WebSocketRequest) -> None:
        if self.reject_status is not None:
            await request.reject(self.reject_status)
            return
        headers = {name.decode(): value.decode() for name, value in request.headers}
        ws = await request.accept()
        if self.send_open:
            await ws.send_message("0" + json.dumps(self.open_packet, separators=(",", ":")))
        await self._accepted_send.send(Peer(ws, request.path, headers))
        # trio-websocket closes the connection when the handler returns; the test
        # decides when it ends, and the fixture's nursery cancels this at teardown.
        await trio.sleep_forever()


@asynccontextmanager
async def joined(
    server: FakeServer, *namespaces: str
) -> AsyncIterator[tuple[Client, Peer, list[Socket]]]:
    """A client joined to ``namespaces`` (default ``/client``), and the server's peer."""
    async with open_client(server.url) as client:
        peer = await server.accept()
        sockets = []
        for index, namespace in enumerate(namespaces or ("/client",)):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(peer.accept_namespace, namespace, f"ns-{index}")
                sockets.append(await client.connect(namespace))
        yield client, peer, sockets
