"""Sessions and presence as the dashboard sees them (CONTRACT.md "Presence and
sessions"): every ``/client`` connection is a session, aggregated per device into
presence; admins of the app hear ``session:connect``, ``session:disconnect`` and, on
each 0 <-> 1 crossing only, ``presence:change`` — in that order."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import trio

from ..hub import Hub, Socket
from ..ports import Presence, PresenceChange, Session, SessionEnded
from ._service import app_room, timestamp

__all__ = ["Sessions", "session_payload"]

log = logging.getLogger("replyhq_trio.chat")

ADMIN = "/admin"


def session_payload(session: Session) -> dict[str, Any]:
    """A session as ``sessions:list`` lists it."""
    return {
        "connection_id": session.connection_id,
        "device_id": session.device_id,
        "connected_at": timestamp(session.connected_at),
        "node_id": session.node_id,
    }


class Sessions:
    """Registers ``/client`` connections with the presence backend and tells admins."""

    def __init__(self, *, hub: Hub, presence: Presence) -> None:
        self.hub = hub
        self.presence = presence

    async def started(self, socket: Socket) -> None:
        """A device connected: register it, then tell the app's admins."""
        session = Session(
            connection_id=socket.sid,
            app_id=socket.data["app_id"],
            device_id=socket.data["device_id"],
            connected_at=datetime.now(UTC),
            node_id=self.presence.node_id,
        )
        socket.data["session"] = session
        # The disconnect handler may run while this awaits (the client left at once):
        # it waits for this event, so that the session is never removed before it is
        # registered (a ghost) and admins hear connect before disconnect. Shielded: the
        # backend bounds its own calls, and a registration half done would be a ghost.
        registered = socket.data["session_registered"] = trio.Event()
        with trio.CancelScope(shield=True):
            try:
                await self._register(session)
            finally:
                registered.set()

    async def _register(self, session: Session) -> None:
        change = await self.presence.connect(session)
        await self.hub.emit(
            ADMIN,
            "session:connect",
            {
                "app_id": session.app_id,
                "device_id": session.device_id,
                "connection_id": session.connection_id,
                "connected_at": timestamp(session.connected_at),
            },
            to=app_room(session.app_id),
        )
        if change is not None:
            await self._presence_changed(change)

    async def ended(self, socket: Socket, reason: str) -> None:
        """A device's connection ended: unregister it, then tell the app's admins."""
        session = socket.data.pop("session", None)
        if not isinstance(session, Session):
            return  # refused before it was registered
        # Runs to its end even when the connection's scope is being cancelled: a
        # session left registered would show a ghost device online.
        with trio.CancelScope(shield=True):
            await socket.data["session_registered"].wait()
            change = await self.presence.disconnect(session)
            await self._session_ended(session, reason, change)

    async def list(self, app_id: str) -> list[dict[str, Any]]:
        return [session_payload(s) for s in await self.presence.sessions(app_id)]

    async def _session_ended(
        self, session: Session, reason: str, change: PresenceChange | None
    ) -> None:
        await self.hub.emit(
            ADMIN,
            "session:disconnect",
            {
                "app_id": session.app_id,
                "device_id": session.device_id,
                "connection_id": session.connection_id,
                "reason": reason,
            },
            to=app_room(session.app_id),
        )
        if change is not None:
            await self._presence_changed(change)

    async def _presence_changed(self, change: PresenceChange) -> None:
        log.info(
            "device %s",
            "online" if change.is_online else "offline",
            extra={
                "app_id": change.app_id,
                "device_id": change.device_id,
                "is_online": change.is_online,
                "active_connections": change.active_connections,
            },
        )
        await self.hub.emit(
            ADMIN,
            "presence:change",
            {
                "app_id": change.app_id,
                "device_id": change.device_id,
                "is_online": change.is_online,
                "active_connections": change.active_connections,
            },
            to=app_room(change.app_id),
        )

    async def _reported(self, event: SessionEnded | PresenceChange) -> None:
        if isinstance(event, SessionEnded):
            log.info(
                "session %s of device %s ended: %s",
                event.session.connection_id,
                event.session.device_id,
                event.reason,
            )
            await self._session_ended(event.session, event.reason, event.change)
        else:
            await self._presence_changed(event)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The presence backend's background work, its findings told to admins."""
        await self.presence.run(self._reported, task_status=task_status)
