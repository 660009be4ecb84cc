"""An in-memory message transport, for client tests on the autojump clock.

Real sockets and the autojump clock do not mix (the clock jumps while bytes are in
flight), so the timing tests run the client over this instead, through
``open_client_on``. The test plays the server with :meth:`server_send` and
:meth:`server_recv`.
"""

from __future__ import annotations

import json
import math
from typing import Any

import trio
import trio_websocket

from ._fake_server import OPEN_PACKET


class MemoryTransport:
    """A ``MessageTransport`` whose other end is the test.

    Args:
        open_packet: Queued as the first message (``None``: nothing is queued).
        client_buffer: How many client messages may wait unread; 0 makes every client
            send wait for :meth:`server_recv`.
    """

    def __init__(
        self, open_packet: dict[str, Any] | None = OPEN_PACKET, *, client_buffer: float = math.inf
    ) -> None:
        self._to_client_send, self._to_client = trio.open_memory_channel[str | bytes](math.inf)
        self._from_client_send, self._from_client = trio.open_memory_channel[str | bytes](
            client_buffer
        )
        self._close_reason: trio_websocket.CloseReason | None = None
        if open_packet is not None:
            self.server_send("0" + json.dumps(open_packet, separators=(",", ":")))

    # --- the client's side (MessageTransport) ----------------------------------------

    async def get_message(self) -> str | bytes:
        try:
            return await self._to_client.receive()
        except trio.EndOfChannel:
            raise trio_websocket.ConnectionClosed(self._close_reason) from None

    async def send_message(self, message: str | bytes) -> None:
        if self._close_reason is not None:
            raise trio_websocket.ConnectionClosed(self._close_reason)
        await self._from_client_send.send(message)

    # --- the test's side ---------------------------------------------------------------

    def server_send(self, *frames: str | bytes) -> None:
        for frame in frames:
            self._to_client_send.send_nowait(frame)

    async def server_recv(self) -> str | bytes:
        return await self._from_client.receive()

    def pending_from_client(self) -> list[str | bytes]:
        """Everything the client sent that the test has not read yet."""
        frames: list[str | bytes] = []
        while True:
            try:
                frames.append(self._from_client.receive_nowait())
            except trio.WouldBlock:
                return frames

    def close(self, code: int = 1000, reason: str | None = None) -> None:
        """Close as the server would: the client reads what was queued, then the end."""
        self._close_reason = trio_websocket.CloseReason(code, reason)
        self._to_client_send.close()
