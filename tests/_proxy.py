"""A TCP forwarder on 127.0.0.1 that can be taken down and brought back on the same
port: a database server that goes away (every connection reset, new ones refused) and
comes back."""

from __future__ import annotations

import trio


async def _pump(source: trio.SocketStream, sink: trio.SocketStream, done: trio.CancelScope) -> None:
    try:
        while data := await source.receive_some(65536):
            await sink.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        done.cancel()


class TcpProxy:
    def __init__(self, nursery: trio.Nursery, target_port: int) -> None:
        self._nursery = nursery
        self._target_port = target_port
        self._scope: trio.CancelScope | None = None
        self._stopped = trio.Event()
        self.port = 0

    async def up(self) -> None:
        """Listen (on the same port as before, if any) and forward connections."""
        await self._nursery.start(self._serve)

    async def down(self) -> None:
        """Stop listening and reset every forwarded connection."""
        assert self._scope is not None
        self._scope.cancel()
        await self._stopped.wait()

    async def _serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._stopped = trio.Event()
        try:
            with trio.CancelScope() as scope:
                self._scope = scope
                listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
                self.port = listeners[0].socket.getsockname()[1]
                async with trio.open_nursery() as nursery:
                    await nursery.start(trio.serve_listeners, self._forward, listeners)
                    task_status.started()
        finally:
            self._stopped.set()

    async def _forward(self, client: trio.SocketStream) -> None:
        async with client:
            try:
                server = await trio.open_tcp_stream("127.0.0.1", self._target_port)
            except OSError:
                return
            async with server, trio.open_nursery() as nursery:
                nursery.start_soon(_pump, client, server, nursery.cancel_scope)
                nursery.start_soon(_pump, server, client, nursery.cancel_scope)
