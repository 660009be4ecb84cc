"""The backplanes that need no broker: a single node's, and an in-process bus for tests
of several hubs. The seam itself (:class:`~replyhq_trio.ports.Backplane`,
:class:`~replyhq_trio.ports.Broadcast`) is in :mod:`replyhq_trio.ports`; the Redis one
in :mod:`replyhq_trio.backends.redis_backplane`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

import trio

from ..ports import Backplane, Broadcast, Receiver

__all__ = ["InMemoryBus", "LocalBackplane"]


class LocalBackplane:
    """A single node: nothing to receive, nowhere to publish, nobody else to ask."""

    async def run(self, receiver: Receiver, *, task_status: trio.TaskStatus[None]) -> NoReturn:
        task_status.started()
        await trio.sleep_forever()

    async def publish(self, broadcast: Broadcast) -> None:
        pass

    async def ask(
        self, broadcast: Broadcast, *, timeout: float, answered: Callable[[Any], None]
    ) -> bool:
        await trio.lowlevel.checkpoint()
        return True

    async def check(self) -> None:
        await trio.lowlevel.checkpoint()


class InMemoryBus:
    """Several hubs of one process, connected as if through a shared broker."""

    def __init__(self) -> None:
        self._members: list[Receiver] = []

    def backplane(self) -> Backplane:
        return _BusMember(self)


class _BusMember:
    def __init__(self, bus: InMemoryBus) -> None:
        self._bus = bus
        self._me: Receiver | None = None

    def _others(self) -> list[Receiver]:
        return [member for member in self._bus._members if member is not self._me]

    async def run(self, receiver: Receiver, *, task_status: trio.TaskStatus[None]) -> NoReturn:
        self._me = receiver
        self._bus._members.append(receiver)
        try:
            task_status.started()
            await trio.sleep_forever()
        finally:
            self._bus._members.remove(receiver)

    async def publish(self, broadcast: Broadcast) -> None:
        for member in self._others():
            member.receive(broadcast)

    async def ask(
        self, broadcast: Broadcast, *, timeout: float, answered: Callable[[Any], None]
    ) -> bool:
        expected: list[int] = []
        acks = 0

        def counted(count: int) -> None:
            expected.append(count)

        def one(value: Any) -> None:
            nonlocal acks
            acks += 1
            answered(value)

        others = self._others()
        async with trio.open_nursery() as nursery:
            for member in others:
                nursery.start_soon(
                    lambda m: m.ask(broadcast, timeout=timeout, counted=counted, answered=one),
                    member,
                )
        return len(expected) == len(others) and acks == sum(expected)

    async def check(self) -> None:
        await trio.lowlevel.checkpoint()
