"""The seam between nodes: broadcasts published by one hub reach the others.

A single node uses :class:`LocalBackplane`, which publishes nowhere. Tests of
cross-node behaviour use :class:`InMemoryBus`, several hubs in one process; the
Redis backplane implements the same protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn, Protocol

import attrs
import trio

__all__ = ["Backplane", "Broadcast", "InMemoryBus", "LocalBackplane"]

ENVELOPE_VERSION = 1


def _check_version(_instance: object, _attribute: attrs.Attribute[Any], value: int) -> None:
    if value != ENVELOPE_VERSION:
        raise ValueError(f"unsupported broadcast envelope version {value}")


@attrs.frozen(kw_only=True)
class Broadcast:
    """One event for the sockets of other nodes: a versioned, typed envelope.

    Attributes:
        origin: The node that published it (which does not deliver it twice).
        rooms: The rooms it goes to; empty means every socket of the namespace.
        exclude: Rooms whose sockets must not get it (a socket is in the room named
            by its id, so this also excludes single sockets).
    """

    version: int = attrs.field(default=ENVELOPE_VERSION, validator=_check_version)
    origin: str
    namespace: str
    event: str
    args: tuple[Any, ...] = ()
    rooms: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()


#: Called with every broadcast of another node; delivers it to local sockets.
Deliver = Callable[[Broadcast], None]


class Backplane(Protocol):
    async def run(self, deliver: Deliver, *, task_status: trio.TaskStatus[None]) -> None:
        """Receive other nodes' broadcasts until cancelled; ready once subscribed."""

    async def publish(self, broadcast: Broadcast) -> None:
        """Send a broadcast to the other nodes."""


class LocalBackplane:
    """A single node: nothing to receive, nowhere to publish."""

    async def run(self, deliver: Deliver, *, task_status: trio.TaskStatus[None]) -> NoReturn:
        task_status.started()
        await trio.sleep_forever()

    async def publish(self, broadcast: Broadcast) -> None:
        pass


class InMemoryBus:
    """Several hubs of one process, connected as if through a shared broker."""

    def __init__(self) -> None:
        self._subscribers: list[Deliver] = []

    def backplane(self) -> Backplane:
        return _BusMember(self)

    def _publish(self, broadcast: Broadcast) -> None:
        for deliver in list(self._subscribers):
            deliver(broadcast)


class _BusMember:
    def __init__(self, bus: InMemoryBus) -> None:
        self._bus = bus

    async def run(self, deliver: Deliver, *, task_status: trio.TaskStatus[None]) -> NoReturn:
        self._bus._subscribers.append(deliver)
        try:
            task_status.started()
            await trio.sleep_forever()
        finally:
            self._bus._subscribers.remove(deliver)

    async def publish(self, broadcast: Broadcast) -> None:
        self._bus._publish(broadcast)
