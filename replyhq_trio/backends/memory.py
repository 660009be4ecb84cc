"""Presence and sessions of a single node, in memory (no Redis configured)."""

from __future__ import annotations

import secrets

import trio

from ..ports import PresenceChange, Report, Session

__all__ = ["MemoryPresence", "new_node_id"]


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
