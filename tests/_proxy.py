"""TCP forwarders on 127.0.0.1 between the tests and a database server.

:class:`TcpProxy` can be taken down and brought back on the same port: a server that goes
away (every connection reset, new ones refused) and comes back. :class:`StallProxy` can
stall: a network partition, where packets are dropped and nothing is reset, so both ends
keep their connections open and wait."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

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


class StallProxy:
    """Forwards connections to ``target_port`` until :meth:`stall`, and again after
    :meth:`resume`. Open it with :func:`open_stall_proxy`.

    While stalled nothing moves in either direction and nothing is closed: what a
    forwarded connection receives, a close or a reset included, is held (as TCP would
    retransmit it) and passed on after :meth:`resume`; a new connection is accepted (the
    kernel does that) but not connected to the target until then."""

    def __init__(self, target_port: int) -> None:
        self._target_port = target_port
        self._flowing = trio.Event()
        self._flowing.set()
        self.port = 0

    @property
    def stalled(self) -> bool:
        return not self._flowing.is_set()

    def stall(self) -> None:
        if not self.stalled:
            self._flowing = trio.Event()

    def resume(self) -> None:
        self._flowing.set()

    async def _forward(self, client: trio.SocketStream) -> None:
        async with client:
            await self._flowing.wait()
            try:
                server = await trio.open_tcp_stream("127.0.0.1", self._target_port)
            except OSError:
                return
            async with server, trio.open_nursery() as nursery:
                nursery.start_soon(self._pump, client, server, nursery.cancel_scope)
                nursery.start_soon(self._pump, server, client, nursery.cancel_scope)

    async def _pump(
        self, source: trio.SocketStream, sink: trio.SocketStream, done: trio.CancelScope
    ) -> None:
        try:
            while True:
                try:
                    data = await source.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""  # a reset: passed on as a close, once flowing
                await self._flowing.wait()
                if not data:
                    return
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            done.cancel()


@asynccontextmanager
async def open_stall_proxy(target_port: int) -> AsyncIterator[StallProxy]:
    """A :class:`StallProxy` listening on a free port of 127.0.0.1 for the block; its
    connections are closed when the block ends."""
    proxy = StallProxy(target_port)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    proxy.port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, proxy._forward, listeners)
        try:
            yield proxy
        finally:
            nursery.cancel_scope.cancel()
