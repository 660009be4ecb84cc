"""Commands to Redis from many tasks, written in batches on one connection of their own.

Whoever sends does not wait: commands queue (bounded) and a writer task takes everything
queued so far and writes it at once (one system call and one round trip for a burst of
broadcasts from many sockets in the same tick). A reader task matches the replies, in
order, to the commands that want one. A lost connection is opened again with backoff;
commands queued meanwhile wait in the queue, and past its bound are dropped and counted.
"""

from __future__ import annotations

import collections
import logging
from typing import NoReturn

import trio

from ..ports import BackplaneStats
from ._resp import FAILURES, Address, Reply, RespConnection, RespError, first_failure

__all__ = ["Publisher"]

log = logging.getLogger("replyhq_trio.backplane")


class _Pending:
    """A command's reply, awaited by whoever sent the command."""

    def __init__(self) -> None:
        self.value: Reply = None
        self.done = trio.Event()

    def set(self, value: Reply) -> None:
        self.value = value
        self.done.set()


class Publisher:
    """The publishing side of the backplane.

    Args:
        address: The Redis server.
        name: The connection's name in Redis (``CLIENT LIST``).
        stats: Where published and dropped messages are counted.
        queue: Commands waiting to be written, at most.
        batch: Commands written at once, at most.
    """

    def __init__(
        self,
        address: Address,
        *,
        name: str,
        stats: BackplaneStats,
        queue: int,
        batch: int,
        connect_timeout: float,
        reconnect_min: float,
        reconnect_max: float,
    ) -> None:
        self._address = address
        self._name = name
        self._stats = stats
        self._batch = batch
        self._connect_timeout = connect_timeout
        self._reconnect = (reconnect_min, reconnect_max)
        self._send, self._queue = trio.open_memory_channel[tuple[bytes, _Pending | None]](queue)
        self._queue_size = queue
        self._dropping = False
        self.up = False

    def send(self, command: bytes) -> None:
        """Queue a command whose reply nobody needs (a PUBLISH); never waits."""
        if self._put(command, None):
            self._stats.published += 1

    async def call(self, command: bytes, *, timeout: float) -> Reply:
        """Queue a command and wait for its reply; None when none came in time."""
        pending = _Pending()
        if self._put(command, pending):
            with trio.move_on_after(timeout):
                await pending.done.wait()
        return pending.value

    def _put(self, command: bytes, pending: _Pending | None) -> bool:
        try:
            self._send.send_nowait((command, pending))
        except trio.WouldBlock:
            self._stats.dropped += 1
            if not self._dropping:
                self._dropping = True
                log.warning(
                    "dropping messages to other nodes: %d already wait for Redis at %s",
                    self._queue_size,
                    self._address.describe(),
                )
            return False
        return True

    async def run(self) -> NoReturn:
        low, high = self._reconnect
        delay = low
        where = self._address.describe()
        while True:
            try:
                with trio.fail_after(self._connect_timeout):
                    connection = await RespConnection.open(self._address, name=self._name)
            except FAILURES as exc:
                log.debug("cannot publish to Redis at %s: %s", where, exc)
                await trio.sleep(delay)
                delay = min(delay * 2, high)
                continue
            delay = low
            self.up = True
            waiting: collections.deque[_Pending | None] = collections.deque()
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._read_replies, connection, waiting)
                    await self._write_commands(connection, waiting)
            except* FAILURES as failures:
                log.warning(
                    "lost the publishing connection to Redis at %s: %s",
                    where,
                    first_failure(failures),
                )
            finally:
                self.up = False
                for pending in waiting:  # their replies will not come
                    if pending is not None:
                        pending.set(None)
                await connection.aclose()

    async def _write_commands(
        self, connection: RespConnection, waiting: collections.deque[_Pending | None]
    ) -> None:
        async for first, first_pending in self._queue:
            parts = [first]
            waiting.append(first_pending)
            while len(parts) < self._batch:
                try:
                    command, pending = self._queue.receive_nowait()
                except trio.WouldBlock:
                    break
                parts.append(command)
                waiting.append(pending)
            await connection.send(b"".join(parts))
            if self._dropping and len(parts) < self._batch:
                self._dropping = False
                log.info(
                    "messages to other nodes flow again through Redis at %s",
                    self._address.describe(),
                )

    async def _read_replies(
        self, connection: RespConnection, waiting: collections.deque[_Pending | None]
    ) -> NoReturn:
        while True:
            value = await connection.read()
            pending = waiting.popleft() if waiting else None
            if pending is not None:
                pending.set(value)
            elif isinstance(value, RespError):
                log.warning("Redis refused a publish: %s", value)
