"""A listener of socket pairs: real sockets without a network port.

The server's write path needs real socket file descriptors; tests that run on the
autojump clock need nothing in flight on the network while time jumps. A socket
pair gives both.
"""

from __future__ import annotations

import trio


class SocketPairListener(trio.abc.Listener[trio.SocketStream]):
    """Hands the server one end of each pair made by :meth:`connect`."""

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[trio.SocketStream](100)

    async def connect(self) -> trio.SocketStream:
        """A new connection to the server; returns the client's end."""
        client, server = trio.socket.socketpair()
        try:
            await self._send.send(trio.SocketStream(server))
        except BaseException:
            client.close()
            server.close()
            raise
        return trio.SocketStream(client)

    async def accept(self) -> trio.SocketStream:
        return await self._receive.receive()

    async def aclose(self) -> None:
        # Connections nobody accepted are closed, as a listening socket would reset them.
        while True:
            try:
                stream = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
            stream.socket.close()
        await self._receive.aclose()
