"""Clients that speak the wire by hand: HTTP/1.1 requests and WebSocket frames.

The raw WebSocket client is what the Kotlin SDK does: open the socket with an HTTP
upgrade, then read and write RFC 6455 frames itself (masked, as a client must).
"""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import attrs
import h11
import trio

from replyhq_trio.sansio.websocket import (
    CloseReceived,
    FrameDecoder,
    Opcode,
    PingReceived,
    PongReceived,
    Role,
    WebSocketEvent,
    encode_frame,
)

HOST = "127.0.0.1"


@attrs.frozen
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()


async def http(
    port: int,
    method: str,
    target: str,
    body: bytes = b"",
    headers: Sequence[tuple[str, str | bytes]] | None = None,
) -> HttpResponse:
    """One request on a new connection."""
    stream = await trio.open_tcp_stream(HOST, port)
    async with stream:
        return await http_on(stream, method, target, body, headers)


async def http_on(
    stream: trio.SocketStream,
    method: str,
    target: str,
    body: bytes = b"",
    headers: Sequence[tuple[str, str | bytes]] | None = None,
) -> HttpResponse:
    conn = h11.Connection(h11.CLIENT)
    all_headers = [
        (name.encode(), value if isinstance(value, bytes) else value.encode())
        for name, value in [("host", HOST), ("content-length", str(len(body))), *(headers or [])]
    ]
    data = conn.send(h11.Request(method=method, target=target, headers=all_headers))
    assert data is not None
    if body:
        more = conn.send(h11.Data(data=body))
        assert more is not None
        data += more
    end = conn.send(h11.EndOfMessage())
    assert end is not None
    await stream.send_all(data + end)
    status = 0
    response_headers: dict[str, str] = {}
    chunks: list[bytes] = []
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(65536))
            continue
        if isinstance(event, h11.Response):
            status = event.status_code
            response_headers = {k.decode(): v.decode() for k, v in event.headers}
        elif isinstance(event, h11.Data):
            chunks.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            break
    return HttpResponse(status, response_headers, b"".join(chunks))


class WebSocketRejected(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"handshake answered {status}")
        self.status = status


class RawWebSocket:
    """A WebSocket client reading and writing frames by hand."""

    def __init__(self, stream: trio.SocketStream, pending: bytes) -> None:
        self.stream = stream
        self._decoder = FrameDecoder(role=Role.CLIENT, max_message_size=10_000_000)
        self._decoder.receive_data(pending)
        self._events = self._decoder.events()
        self.closed: CloseReceived | None = None

    async def send_text(self, text: str) -> None:
        await self.stream.send_all(encode_frame(Opcode.TEXT, text.encode(), mask=os.urandom(4)))

    async def send_binary(self, data: bytes) -> None:
        await self.stream.send_all(encode_frame(Opcode.BINARY, data, mask=os.urandom(4)))

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def send_close(self, code: int = 1000) -> None:
        await self.stream.send_all(
            encode_frame(Opcode.CLOSE, code.to_bytes(2, "big"), mask=os.urandom(4))
        )

    async def next_frame(self) -> WebSocketEvent:
        """The next message or control frame; raises EOFError when the TCP stream ends."""
        while True:
            for event in self._decoder.events():
                if isinstance(event, CloseReceived):
                    self.closed = event
                return event
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError
            self._decoder.receive_data(data)

    async def receive(self) -> str | bytes:
        """The next message, answering pings; raises EOFError / ConnectionError at the end."""
        while True:
            event = await self.next_frame()
            if isinstance(event, str | bytes):
                return event
            if isinstance(event, PingReceived):
                await self.stream.send_all(
                    encode_frame(Opcode.PONG, event.payload, mask=os.urandom(4))
                )
            elif isinstance(event, CloseReceived):
                raise ConnectionError(f"closed by the server: {event.code} {event.reason}")
            elif isinstance(event, PongReceived):
                continue

    async def receive_skipping_pings(self) -> str | bytes:
        """The next message that is not an Engine.IO ping (answered with a pong)."""
        while True:
            message = await self.receive()
            if message == "2":
                await self.send_text("3")
                continue
            return message

    async def wait_closed(self) -> int:
        """Read until the server closes; returns its close code (1006 for a bare EOF)."""
        while True:
            try:
                event = await self.next_frame()
            except (EOFError, trio.BrokenResourceError):
                return 1006
            if isinstance(event, CloseReceived):
                return event.code


async def websocket_handshake(
    stream: trio.SocketStream, target: str, headers: list[tuple[str, str]] | None = None
) -> RawWebSocket:
    """Upgrade ``stream`` to a WebSocket (RFC 6455 opening handshake, by hand)."""
    key = base64.b64encode(os.urandom(16)).decode()
    conn = h11.Connection(h11.CLIENT)
    request = h11.Request(
        method="GET",
        target=target,
        headers=[
            ("host", HOST),
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-key", key),
            ("sec-websocket-version", "13"),
            *(headers or []),
        ],
    )
    data = conn.send(request)
    end = conn.send(h11.EndOfMessage())
    assert data is not None
    assert end is not None
    await stream.send_all(data + end)
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(65536))
            continue
        if isinstance(event, h11.InformationalResponse) and event.status_code == 101:
            break
        if isinstance(event, h11.Response):
            raise WebSocketRejected(event.status_code)
    pending, _ = conn.trailing_data
    return RawWebSocket(stream, bytes(pending))


@asynccontextmanager
async def open_websocket(
    port: int, target: str, headers: list[tuple[str, str]] | None = None
) -> AsyncIterator[RawWebSocket]:
    stream = await trio.open_tcp_stream(HOST, port)
    async with stream:
        yield await websocket_handshake(stream, target, headers)
