"""What the Redis presence keeps and derives: its key names, one lock per device with
calls in progress on this node, and the values read back from its scripts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import attrs
import orjson
import trio

from ..ports import PresenceChange, Session

__all__ = ["DeviceLocks", "Keys", "ms", "offline", "oldest_first", "online", "quads", "unpacked"]


@attrs.frozen
class Keys:
    prefix: str

    def conn(self, connection_id: str) -> str:
        return f"{self.prefix}presence:conn:{connection_id}"

    def device(self, app_id: str, device_id: str) -> str:
        return f"{self.prefix}presence:device:{app_id}:{device_id}"

    def session(self, connection_id: str) -> str:
        return f"{self.prefix}session:{connection_id}"

    def app(self, app_id: str) -> str:
        return f"{self.prefix}sessions:app:{app_id}"

    def node(self, node_id: str) -> str:
        return f"{self.prefix}node:{node_id}"

    def node_conns(self, node_id: str) -> str:
        return f"{self.prefix}node:{node_id}:conns"

    @property
    def nodes(self) -> str:
        return f"{self.prefix}nodes"

    @property
    def epoch(self) -> str:
        return f"{self.prefix}presence:epoch"

    def offline_claim(self, epoch: str, app_id: str, device_id: str) -> str:
        return f"{self.prefix}presence:offline-claim:{epoch}:{app_id}:{device_id}"


class DeviceLocks:
    """One lock per device with calls in progress on this node; dropped when unused."""

    def __init__(self) -> None:
        self._held: dict[tuple[str, str], tuple[trio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, app_id: str, device_id: str) -> AsyncIterator[None]:
        key = (app_id, device_id)
        lock, users = self._held.get(key, (None, 0))
        if lock is None:
            lock = trio.Lock()
        self._held[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            users = self._held[key][1] - 1
            if users:
                self._held[key] = (lock, users)
            else:
                del self._held[key]


def ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def quads(flat: Sequence[Any]) -> Iterator[tuple[str, str, int, int]]:
    """The ``{id, packed, removed, size}`` groups of a removal script's reply."""
    for i in range(0, len(flat) - 3, 4):
        yield str(flat[i]), str(flat[i + 1]), int(flat[i + 2]), int(flat[i + 3])


def online(session: Session, size: int) -> PresenceChange:
    return PresenceChange(
        app_id=session.app_id, device_id=session.device_id, is_online=True, active_connections=size
    )


def offline(app_id: str, device_id: str) -> PresenceChange:
    return PresenceChange(app_id=app_id, device_id=device_id, is_online=False, active_connections=0)


def unpacked(connection_id: str, packed: str, node_id: str) -> Session:
    """A session from its entry in a node's conns hash."""
    app_id, device_id, connected_at, _ = orjson.loads(packed)
    return Session(
        connection_id=connection_id,
        app_id=str(app_id),
        device_id=str(device_id),
        connected_at=datetime.fromisoformat(str(connected_at)),
        node_id=node_id,
    )


def oldest_first(sessions: list[Session]) -> list[Session]:
    # timestamp(): a naive time (another node's, however unlikely) cannot break the sort
    return sorted(sessions, key=lambda s: (s.connected_at.timestamp(), s.connection_id))
