"""The write side of one socket: bytes go out in the order they were written.

Measured on this machine (../shared/FANOUT-FINDINGS.md), a writer task fed by a
channel spends most of its CPU on Trio wake-ups, so the fast path writes directly
from the calling task with a non-blocking send. Only what the kernel does not take
becomes a backlog, drained by a writer task that exists only while there is one.
The rules that keep the stream intact:

* while a backlog exists, every write queues behind it (a direct send would jump
  the queue);
* a partial send leaves exactly the unsent tail at the head of the backlog;
* the writer removes a chunk only after the kernel took all of it.

A write never blocks and never raises: a dead socket is reported once through
``on_failure`` and later writes are dropped.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Sequence

import trio

__all__ = ["Outlet"]

# Chunks per writev call; Linux's IOV_MAX is 1024.
_MAX_IOV = 512


class Outlet:
    """Ordered, non-blocking writes to one socket, with a bounded backlog.

    Args:
        sock: The connected, non-blocking socket.
        nursery: Where the writer task runs while a backlog exists (the
            connection's nursery, so it ends with the connection).
        max_backlog: Bytes of backlog above which :attr:`over_limit` is true and
            :meth:`wait_for_room` waits.
        on_failure: Called once when the socket fails (reset, broken pipe).
    """

    # Thousands of idle connections each hold one: slots, and nothing allocated until
    # it is needed (an empty deque alone is ~600 bytes).
    __slots__ = (
        "_backlog",
        "_backlog_bytes",
        "_closed",
        "_empty",
        "_fd",
        "_max_backlog",
        "_nursery",
        "_on_failure",
        "_room",
        "_sock",
        "_writer_running",
        "_writer_scope",
    )

    def __init__(
        self,
        sock: trio.socket.SocketType,
        nursery: trio.Nursery,
        *,
        max_backlog: int,
        on_failure: Callable[[], None],
    ) -> None:
        self._sock = sock
        self._fd = sock.fileno()
        self._nursery = nursery
        self._max_backlog = max_backlog
        self._on_failure = on_failure
        self._backlog: deque[bytes | memoryview] | None = None
        self._backlog_bytes = 0
        self._writer_running = False
        self._room: trio.lowlevel.ParkingLot | None = None
        self._empty: trio.lowlevel.ParkingLot | None = None
        self._closed = False
        self._writer_scope: trio.CancelScope | None = None

    @property
    def backlog_bytes(self) -> int:
        """Bytes written but not yet taken by the kernel."""
        return self._backlog_bytes

    @property
    def over_limit(self) -> bool:
        return self._backlog_bytes > self._max_backlog

    @property
    def closed(self) -> bool:
        return self._closed

    def write(self, data: bytes) -> None:
        """Send ``data`` now if the kernel takes it, else queue it behind the backlog."""
        if self._closed or not data:
            return
        if not self._backlog:
            try:
                sent = os.write(self._fd, data)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._fail()
                return
            if sent == len(data):
                return
            self._enqueue(memoryview(data)[sent:])
        else:
            self._enqueue(data)

    def writev(self, chunks: Sequence[bytes]) -> None:
        """Write several chunks in order, with one system call when the path is clear."""
        if self._closed:
            return
        if len(chunks) == 1:
            self.write(chunks[0])
            return
        if self._backlog:
            for chunk in chunks:
                self._enqueue(chunk)
            return
        if len(chunks) > _MAX_IOV:
            # writev refuses more buffers than IOV_MAX (EINVAL): the first go out now,
            # the rest queue behind them.
            self.writev(chunks[:_MAX_IOV])
            if not self._closed:
                for chunk in chunks[_MAX_IOV:]:
                    self._enqueue(chunk)
            return
        try:
            sent = os.writev(self._fd, chunks)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._fail()
            return
        for chunk in chunks:
            size = len(chunk)
            if sent >= size:
                sent -= size
                continue
            self._enqueue(memoryview(chunk)[sent:] if sent else chunk)
            sent = 0

    def _enqueue(self, chunk: bytes | memoryview) -> None:
        if self._backlog is None:
            self._backlog = deque()
        self._backlog.append(chunk)
        self._backlog_bytes += len(chunk)
        if not self._writer_running:
            self._writer_running = True
            self._nursery.start_soon(self._writer)

    async def _writer(self) -> None:
        """Drain the backlog, then exit (started again by the next backlog)."""
        try:
            with trio.CancelScope() as self._writer_scope:
                await self._drain_backlog()
        finally:
            self._writer_scope = None
            self._writer_running = False
            if not self._backlog and self._empty is not None:
                self._empty.unpark_all()

    async def _drain_backlog(self) -> None:
        backlog = self._backlog
        assert backlog is not None
        while backlog and not self._closed:
            await trio.lowlevel.wait_writable(self._sock)
            chunks = [backlog[i] for i in range(min(len(backlog), _MAX_IOV))]
            try:
                sent = os.writev(self._fd, chunks)
            except BlockingIOError:
                continue
            except OSError:
                self._fail()
                return
            self._backlog_bytes -= sent
            while sent:
                head = backlog[0]
                if sent >= len(head):
                    sent -= len(head)
                    backlog.popleft()
                else:
                    backlog[0] = memoryview(head)[sent:]
                    sent = 0
            if self._backlog_bytes <= self._max_backlog and self._room is not None:
                self._room.unpark_all()

    async def wait_for_room(self) -> None:
        """Wait until the backlog is within its bound (or the outlet closed).

        Does not checkpoint when there is room already: this is on the path of every
        emit to one client.
        """
        while self._backlog_bytes > self._max_backlog and not self._closed:
            if self._room is None:
                self._room = trio.lowlevel.ParkingLot()
            await self._room.park()

    async def drain(self) -> None:
        """Wait until everything written reached the kernel (or the outlet closed)."""
        while self._backlog and not self._closed:
            if self._empty is None:
                self._empty = trio.lowlevel.ParkingLot()
            await self._empty.park()

    def close(self) -> None:
        """Stop writing: later writes are dropped and waiters released."""
        if self._closed:
            return
        self._closed = True
        self._backlog = None
        self._backlog_bytes = 0
        if self._writer_scope is not None:
            self._writer_scope.cancel()
        if self._room is not None:
            self._room.unpark_all()
        if self._empty is not None:
            self._empty.unpark_all()

    def _fail(self) -> None:
        if self._closed:
            return
        self.close()
        self._on_failure()
