"""Presence, sessions and rate limits of a single node, in memory (no Redis
configured)."""

from __future__ import annotations

import collections
import secrets

import trio

from ..ports import Limit, PresenceChange, Report, Session

__all__ = ["MemoryPresence", "MemoryRateLimiter", "new_node_id"]

#: Hits between two sweeps of the windows no event is left in, at least.
_SWEEP_EVERY = 1024


def new_node_id() -> str:
    """A node id that no other process (here or on another host) picks."""
    return f"node_{secrets.token_hex(6)}"


class MemoryPresence:
    """:class:`~replyhq_trio.ports.Presence` for one node: nothing is shared, nothing
    expires, no node can die without this one (it is the only one)."""

    def __init__(self, node_id: str | None = None) -> None:
        self._node_id = node_id or new_node_id()
        self._sessions: dict[str, Session] = {}  # by connection id, in connect order
        self._devices: dict[tuple[str, str], set[str]] = {}

    @property
    def node_id(self) -> str:
        return self._node_id

    async def connect(self, session: Session) -> PresenceChange | None:
        await trio.lowlevel.checkpoint()
        if session.connection_id in self._sessions:
            return None
        self._sessions[session.connection_id] = session
        key = (session.app_id, session.device_id)
        connections = self._devices.setdefault(key, set())
        connections.add(session.connection_id)
        if len(connections) != 1:
            return None
        return PresenceChange(
            app_id=session.app_id, device_id=session.device_id, is_online=True, active_connections=1
        )

    async def disconnect(self, session: Session) -> PresenceChange | None:
        await trio.lowlevel.checkpoint()
        if self._sessions.pop(session.connection_id, None) is None:
            return None
        key = (session.app_id, session.device_id)
        connections = self._devices[key]
        connections.discard(session.connection_id)
        if connections:
            return None
        del self._devices[key]
        return PresenceChange(
            app_id=session.app_id,
            device_id=session.device_id,
            is_online=False,
            active_connections=0,
        )

    async def sessions(self, app_id: str) -> list[Session]:
        await trio.lowlevel.checkpoint()
        return [s for s in self._sessions.values() if s.app_id == app_id]

    async def active_connections(self, app_id: str, device_id: str) -> int:
        await trio.lowlevel.checkpoint()
        return len(self._devices.get((app_id, device_id), ()))

    async def check(self) -> None:
        await trio.lowlevel.checkpoint()  # nothing shared that could be away

    async def run(
        self, report: Report, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        await trio.sleep_forever()


class MemoryRateLimiter:
    """:class:`~replyhq_trio.ports.RateLimiter` of one node: a log of event times per key
    (a sliding window), on Trio's clock.

    Memory stays bounded by what is live: windows left empty are swept now and then,
    after as many hits as there were windows at the last sweep (amortised O(1) per hit,
    no task).
    """

    def __init__(self) -> None:
        self._windows: dict[tuple[str, str], tuple[Limit, collections.deque[float]]] = {}
        self._hits = 0
        self._sweep_at = _SWEEP_EVERY

    def __len__(self) -> int:
        """Windows held (those with events in them, and some not swept yet)."""
        return len(self._windows)

    async def hit(self, limit: Limit, key: str) -> float:
        await trio.lowlevel.checkpoint()
        now = trio.current_time()
        times = self._times(limit, key, now)
        if len(times) >= limit.count:
            return times[0] + limit.window - now
        times.append(now)
        self._hits += 1
        if self._hits >= self._sweep_at:
            self._sweep(now)
        return 0.0

    async def wait_time(self, limit: Limit, key: str) -> float:
        await trio.lowlevel.checkpoint()
        now = trio.current_time()
        times = self._times(limit, key, now)
        return times[0] + limit.window - now if len(times) >= limit.count else 0.0

    def _times(self, limit: Limit, key: str, now: float) -> collections.deque[float]:
        entry = self._windows.get((limit.name, key))
        if entry is None or entry[0] != limit:  # new, or the limit was reconfigured
            entry = self._windows[(limit.name, key)] = (limit, collections.deque())
        times = entry[1]
        oldest = now - limit.window
        while times and times[0] <= oldest:
            times.popleft()
        return times

    def _sweep(self, now: float) -> None:
        self._hits = 0
        stale = [
            name
            for name, (limit, times) in self._windows.items()
            if not times or times[-1] <= now - limit.window
        ]
        for name in stale:
            del self._windows[name]
        self._sweep_at = max(_SWEEP_EVERY, len(self._windows))
